/* test_devtools.c — snapshots and the CPU profiler through ivm.h alone:
 * a snapshot made inline and in a worker, isolates started from it (inline and
 * in a worker), bad snapshots refused, a throwing script, and a CPU profile's
 * JSON. Ends with no live libivm object.
 * Exit status 0 on success; prints "N passed, M failed". */
#include "ivm.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

static const char LIB[] = "function twice(n) { return 2 * n; } var state = {list: [1, 2, 3]};";

static int kind_of(ivm_error_t *err, ivm_error_kind_t kind) {
  int ok = err != NULL && ivm_error_kind(err) == kind;
  ivm_error_free(err);
  return ok;
}

static ivm_snapshot_t *make(uint32_t placement) {
  ivm_snapshot_script_t script = {LIB, strlen(LIB), "lib.js", 6};
  ivm_snapshot_options_t opts = IVM_SNAPSHOT_OPTIONS_INIT;
  opts.placement = placement;
  ivm_snapshot_t *snap = NULL;
  CHECK(ivm_snapshot_create(&script, 1, &opts, &snap) == NULL && snap != NULL);
  return snap;
}

/* Evaluates `code` in a new context of an isolate made from `data`; its number. */
static double eval_in_snapshot(const char *data, size_t len, uint32_t placement) {
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  opts.snapshot = data;
  opts.snapshot_len = len;
  opts.placement = placement;
  ivm_isolate_t *iso = NULL;
  ivm_context_t *ctx = NULL;
  ivm_value_t *out = NULL;
  double result = -1;
  if (ivm_isolate_new(&opts, &iso) == NULL && ivm_isolate_create_context(iso, NULL, &ctx) == NULL) {
    const char code[] = "twice(20) + state.list.length - 1";
    if (ivm_context_eval(ctx, code, strlen(code), NULL, NULL, NULL, &out, NULL) == NULL) {
      result = ivm_value_number(out);
    }
  }
  ivm_value_free(out);
  ivm_context_free(ctx);
  ivm_isolate_free(iso);
  return result;
}

static void test_snapshots(void) {
  ivm_snapshot_t *inl = make(IVM_PLACEMENT_INLINE), *remote = make(IVM_PLACEMENT_PROCESS);
  const char *data = NULL;
  size_t len = 0;
  ivm_snapshot_data(inl, &data, &len);
  CHECK(len > 1000 && memcmp(data, "IVMS", 4) == 0);
  CHECK(eval_in_snapshot(data, len, IVM_PLACEMENT_INLINE) == 42);
  CHECK(eval_in_snapshot(data, len, IVM_PLACEMENT_PROCESS) == 42);
  const char *rdata = NULL;
  size_t rlen = 0;
  ivm_snapshot_data(remote, &rdata, &rlen);
  CHECK(eval_in_snapshot(rdata, rlen, IVM_PLACEMENT_INLINE) == 42);

  /* Truncated, and garbage: refused (INVALID_ARGUMENT) before V8 sees them. */
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  ivm_isolate_t *iso = NULL;
  opts.snapshot = data;
  opts.snapshot_len = len - 1;
  CHECK(kind_of(ivm_isolate_new(&opts, &iso), IVM_ERROR_INVALID_ARGUMENT) && iso == NULL);
  opts.snapshot = "garbage garbage garbage garbage garbage garbage garbage garbage garbage";
  opts.snapshot_len = strlen(opts.snapshot);
  CHECK(kind_of(ivm_isolate_new(&opts, &iso), IVM_ERROR_INVALID_ARGUMENT) && iso == NULL);
  opts.snapshot = NULL;
  opts.snapshot_len = 5;
  CHECK(kind_of(ivm_isolate_new(&opts, &iso), IVM_ERROR_INVALID_ARGUMENT) && iso == NULL);
  ivm_snapshot_free(inl);
  ivm_snapshot_free(remote);
  ivm_snapshot_free(NULL);

  /* A throwing script; a bad placement. */
  ivm_snapshot_script_t bad = {"throw new Error('no')", 21, NULL, 0};
  ivm_snapshot_t *snap = NULL;
  CHECK(kind_of(ivm_snapshot_create(&bad, 1, NULL, &snap), IVM_ERROR_JS_EXCEPTION) && snap == NULL);
  ivm_snapshot_options_t sopts = IVM_SNAPSHOT_OPTIONS_INIT;
  sopts.placement = 7;
  CHECK(kind_of(ivm_snapshot_create(NULL, 0, &sopts, &snap), IVM_ERROR_INVALID_ARGUMENT));
  CHECK(kind_of(ivm_snapshot_create(NULL, 1, NULL, &snap), IVM_ERROR_INVALID_ARGUMENT));
}

static const char kHotCode[] = "function hotLoop() { let s = 0; const t = Date.now(); "
                               "while (Date.now() - t < 50) s += s % 7; return s; } hotLoop(); 1";

/* A profile of kHotCode (run as hot.js): DevTools JSON with samples. Until 0.7, in a
 * program linked with libivm at start-up (this one, ivm-worker), libivm's 64 KiB of static
 * TLS kept V8's profiler thread (64 KiB of stack) from starting: no samples. */
static void check_profile(ivm_value_t *profile) {
  const char *json = NULL;
  size_t n = 0;
  ivm_value_string(profile, &json, &n);
  CHECK(json != NULL && n > 0 && memcmp(json, "{\"nodes\":[", 10) == 0);
  const char *samples = json != NULL ? strstr(json, "\"samples\":[") : NULL;
  CHECK(samples != NULL && samples[11] >= '1' && samples[11] <= '9');
  CHECK(json != NULL && strstr(json, "\"url\":\"hot.js\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"timeDeltas\":[") != NULL);
}

/* Profiles kHotCode in `ctx` of `iso` under `title` (one character): the calls, their
 * errors (a second start, a second stop) and the profile. */
static void profile_hot_code(ivm_isolate_t *iso, ivm_context_t *ctx, const char *title) {
  ivm_cpu_profiler_options_t opts = IVM_CPU_PROFILER_OPTIONS_INIT;
  opts.sampling_interval_ns = 200000;
  CHECK(ivm_isolate_start_cpu_profiler(iso, title, 1, &opts) == NULL);
  CHECK(kind_of(ivm_isolate_start_cpu_profiler(iso, title, 1, NULL), IVM_ERROR_INVALID_ARGUMENT));
  ivm_source_options_t src = IVM_SOURCE_OPTIONS_INIT;
  src.filename = "hot.js";
  src.filename_len = 6;
  ivm_value_t *out = NULL;
  CHECK(ivm_context_eval(ctx, kHotCode, strlen(kHotCode), &src, NULL, NULL, &out, NULL) == NULL);
  ivm_value_free(out);
  out = NULL;
  CHECK(ivm_isolate_stop_cpu_profiler(iso, title, 1, &out) == NULL);
  check_profile(out);
  ivm_value_free(out);
  out = NULL;
  CHECK(kind_of(ivm_isolate_stop_cpu_profiler(iso, title, 1, &out), IVM_ERROR_INVALID_ARGUMENT));
}

static void test_profiler(void) {
  ivm_isolate_t *iso = NULL;
  ivm_context_t *ctx = NULL;
  CHECK(ivm_isolate_new(NULL, &iso) == NULL);
  CHECK(ivm_isolate_create_context(iso, NULL, &ctx) == NULL);
  profile_hot_code(iso, ctx, "p");
  ivm_cpu_profiler_options_t opts = IVM_CPU_PROFILER_OPTIONS_INIT;
  opts.sampling_interval_ns = 1000;   /* below 50 us */
  CHECK(kind_of(ivm_isolate_start_cpu_profiler(iso, "q", 1, &opts), IVM_ERROR_INVALID_ARGUMENT));
  CHECK(ivm_isolate_start_cpu_profiler(iso, "left", 4, NULL) == NULL);   /* disposed recording */
  ivm_context_free(ctx);
  ivm_isolate_free(iso);
}

/* The same in a worker process: recorded there, the JSON comes back. */
static void test_profiler_in_worker(void) {
  ivm_isolate_options_t o = IVM_ISOLATE_OPTIONS_INIT;
  o.placement = IVM_PLACEMENT_PROCESS;
  ivm_isolate_t *iso = NULL;
  ivm_context_t *ctx = NULL;
  CHECK(ivm_isolate_new(&o, &iso) == NULL);
  if (iso == NULL) return;
  CHECK(ivm_isolate_create_context(iso, NULL, &ctx) == NULL);
  profile_hot_code(iso, ctx, "w");
  ivm_context_free(ctx);
  CHECK(ivm_isolate_dispose(iso) == NULL);
  ivm_isolate_free(iso);
}

int main(void) {
  uint64_t baseline = ivm_debug_live_objects();
  test_snapshots();
  test_profiler();
  test_profiler_in_worker();
  CHECK(ivm_debug_live_objects() == baseline);
  return report();
}
