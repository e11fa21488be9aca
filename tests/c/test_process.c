/* test_process.c — worker processes through ivm.h alone: start a process
 * group, check its sandbox from /proc, ping it, see a killed worker reported
 * as IVM_ERROR_CRASHED with its signal, and dispose; then an isolate hosted
 * in a worker of its own, until its worker is killed. Exit status 0 on success;
 * prints "N passed, N failed". Finds ivm-worker beside libivm.so (or at
 * $IVM_WORKER_PATH). */
#define _POSIX_C_SOURCE 200809L /* kill, nanosleep */
#include "ivm.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "check.h"

/* Whether `err` has `kind` and a message containing `needle`; frees it. */
static int error_is(ivm_error_t *err, ivm_error_kind_t kind, const char *needle) {
  const char *msg;
  size_t len;
  char buf[4096];
  int ok;
  if (err == NULL) return 0;
  ivm_error_message(err, &msg, &len);
  if (len >= sizeof buf) len = sizeof buf - 1;
  memcpy(buf, msg, len);
  buf[len] = '\0';
  ok = ivm_error_kind(err) == kind && strstr(buf, needle) != NULL;
  if (!ok) fprintf(stderr, "unexpected error %u: %s\n", (unsigned)ivm_error_kind(err), buf);
  ivm_error_free(err);
  return ok;
}

/* The value of the line "key:\t..." in /proc/PID/status, or -1. */
static long status_field(long long pid, const char *key) {
  char path[64], line[256];
  long value = -1;
  size_t n = strlen(key);
  FILE *f;
  snprintf(path, sizeof path, "/proc/%lld/status", pid);
  f = fopen(path, "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, n) == 0 && line[n] == ':') {
      sscanf(line + n + 1, "%ld", &value);
      break;
    }
  }
  fclose(f);
  return value;
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static void test_spawn_ping_dispose(void) {
  ivm_process_group_options_t opts = IVM_PROCESS_GROUP_OPTIONS_INIT;
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  ivm_process_group_t *group = NULL;
  long long pid;
  opts.startup_timeout_ms = 60000;
  CHECK(ivm_process_group_new(&opts, &group) == NULL);
  if (group == NULL) return;
  pid = (long long)ivm_process_group_pid(group);
  CHECK(pid > 0);
  CHECK(status_field(pid, "Seccomp") == 2);
  CHECK(status_field(pid, "NoNewPrivs") == 1);
  CHECK(ivm_process_group_ping(group, NULL) == NULL);
  run.timeout_ns = 60ull * 1000000000ull;
  CHECK(ivm_process_group_ping(group, &run) == NULL);
  CHECK(ivm_process_group_status(group) == NULL);
  /* The default worker has no test hooks. */
  CHECK(error_is(ivm_debug_process_group_hook(group, IVM_DEBUG_HOOK_OPEN_FILE, NULL, 0),
                 IVM_ERROR_INVALID_ARGUMENT, "no test hooks"));
  CHECK(ivm_process_group_dispose(group) == NULL);
  CHECK(ivm_process_group_dispose(group) == NULL); /* idempotent */
  CHECK(error_is(ivm_process_group_ping(group, NULL), IVM_ERROR_DISPOSED, "disposed"));
  CHECK(error_is(ivm_process_group_status(group), IVM_ERROR_DISPOSED, "disposed"));
  ivm_process_group_free(group);
}

static void test_killed_worker_is_reported(void) {
  ivm_process_group_t *group = NULL;
  ivm_error_t *status = NULL;
  int i;
  CHECK(ivm_process_group_new(NULL, &group) == NULL);
  if (group == NULL) return;
  CHECK(kill((pid_t)ivm_process_group_pid(group), SIGKILL) == 0);
  for (i = 0; i < 60000 && (status = ivm_process_group_status(group)) == NULL; i++) {
    sleep_ms(1);
  }
  CHECK(error_is(status, IVM_ERROR_CRASHED, "SIGKILL"));
  CHECK(error_is(ivm_process_group_ping(group, NULL), IVM_ERROR_CRASHED, "SIGKILL"));
  CHECK(ivm_process_group_dispose(group) == NULL);
  /* It crashed before it was disposed: the crash stays its status. */
  CHECK(error_is(ivm_process_group_status(group), IVM_ERROR_CRASHED, "SIGKILL"));
  ivm_process_group_free(group);
}

static void test_arguments(void) {
  ivm_process_group_options_t bad = IVM_PROCESS_GROUP_OPTIONS_INIT;
  ivm_process_group_t *group = NULL;
  bad.struct_size = 1;
  CHECK(error_is(ivm_process_group_new(&bad, &group), IVM_ERROR_INVALID_ARGUMENT, ""));
  CHECK(error_is(ivm_process_group_new(NULL, NULL), IVM_ERROR_INVALID_ARGUMENT, ""));
  CHECK(error_is(ivm_process_group_ping(NULL, NULL), IVM_ERROR_INVALID_ARGUMENT, ""));
  CHECK(error_is(ivm_process_group_status(NULL), IVM_ERROR_INVALID_ARGUMENT, ""));
  CHECK(error_is(ivm_process_group_dispose(NULL), IVM_ERROR_INVALID_ARGUMENT, ""));
  CHECK(ivm_process_group_pid(NULL) == 0);
  ivm_process_group_free(NULL);
  {
    ivm_isolate_options_t iso_opts = IVM_ISOLATE_OPTIONS_INIT;
    ivm_isolate_t *iso = NULL;
    iso_opts.placement = 7;
    CHECK(error_is(ivm_isolate_new(&iso_opts, &iso), IVM_ERROR_INVALID_ARGUMENT, "placement"));
    CHECK(iso == NULL);
    CHECK(ivm_isolate_pid(NULL) == 0);
  }
}

/* A done callback that stores its completion (the test waits for it). */
struct done_slot {
  volatile int done;
  ivm_completion_t completion;
};

static void store_done(void *user_data, const ivm_completion_t *c) {
  struct done_slot *slot = (struct done_slot *)user_data;
  slot->completion = *c;
  __atomic_store_n(&slot->done, 1, __ATOMIC_RELEASE);
}

static int wait_done(struct done_slot *slot) {
  int i;
  for (i = 0; i < 60000 && !__atomic_load_n(&slot->done, __ATOMIC_ACQUIRE); i++) sleep_ms(1);
  return slot->done;
}

/* on_catastrophic_error: counts its calls and keeps whether the cause names
 * the signal. */
struct crash_report {
  volatile int calls;
  volatile int names_sigkill;
};

static void on_crash(void *user_data, const char *cause, size_t len) {
  struct crash_report *r = (struct crash_report *)user_data;
  char buf[256];
  if (len >= sizeof buf) len = sizeof buf - 1;
  memcpy(buf, cause, len);
  buf[len] = '\0';
  r->names_sigkill = strstr(buf, "SIGKILL") != NULL;
  __atomic_add_fetch(&r->calls, 1, __ATOMIC_RELEASE);
}

/* An isolate in a worker of its own, through the same calls as inline. */
static void test_worker_hosted_isolate(void) {
  struct crash_report report = {0, 0};
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  ivm_isolate_t *iso = NULL;
  ivm_context_t *ctx = NULL;
  ivm_script_t *script = NULL;
  ivm_value_t *value = NULL;
  ivm_primitive_t prim;
  ivm_heap_statistics_t stats;
  struct done_slot slot;
  long long pid;
  opts.placement = IVM_PLACEMENT_PROCESS;
  opts.memory_limit = 32u << 20;
  opts.on_catastrophic_error = on_crash;
  opts.on_catastrophic_error_data = &report;
  CHECK(ivm_isolate_new(&opts, &iso) == NULL);
  if (iso == NULL) return;
  pid = (long long)ivm_isolate_pid(iso);
  CHECK(pid > 0);
  CHECK(status_field(pid, "Seccomp") == 2);
  CHECK(ivm_isolate_create_context(iso, NULL, &ctx) == NULL);
  CHECK(ivm_context_eval(ctx, "6 * 7", 5, NULL, NULL, NULL, &value, &prim) == NULL);
  CHECK(value == NULL && prim.kind == IVM_VALUE_NUMBER && prim.number == 42);
  CHECK(ivm_context_eval(ctx, "'w' + 'orker'", 13, NULL, NULL, NULL, &value, NULL) == NULL);
  if (value != NULL) {
    const char *s;
    size_t n;
    ivm_value_string(value, &s, &n);
    CHECK(n == 6 && memcmp(s, "worker", 6) == 0);
    ivm_value_free(value);
    value = NULL;
  }
  CHECK(error_is(ivm_context_eval(ctx, "throw new Error('boom')", 23, NULL, NULL, NULL, &value,
                                  NULL),
                 IVM_ERROR_JS_EXCEPTION, "boom"));
  CHECK(ivm_isolate_compile_script(iso, "1 + 1", 5, NULL, NULL, &script) == NULL);
  CHECK(ivm_script_run(script, ctx, NULL, NULL, &value, &prim) == NULL);
  CHECK(prim.kind == IVM_VALUE_NUMBER && prim.number == 2);
  memset(&stats, 0, sizeof stats);
  stats.struct_size = sizeof stats;
  CHECK(ivm_isolate_heap_statistics(iso, &stats) == NULL);
  CHECK(stats.used_heap_size > 0);
  memset(&slot, 0, sizeof slot);
  CHECK(ivm_context_eval_async(ctx, "'async'", 7, NULL, NULL, NULL, store_done, &slot, NULL) ==
        NULL);
  CHECK(wait_done(&slot) && slot.completion.kind == IVM_COMPLETION_VALUE);
  ivm_value_free(slot.completion.result.value);
  /* A killed worker fails later calls with its cause. */
  CHECK(kill((pid_t)pid, SIGKILL) == 0);
  CHECK(error_is(ivm_context_eval(ctx, "1", 1, NULL, NULL, NULL, &value, NULL),
                 IVM_ERROR_CRASHED, "SIGKILL"));
  memset(&slot, 0, sizeof slot);
  CHECK(ivm_context_eval_async(ctx, "1", 1, NULL, NULL, NULL, store_done, &slot, NULL) == NULL);
  CHECK(wait_done(&slot) && error_is(slot.completion.error, IVM_ERROR_CRASHED, "SIGKILL"));
  CHECK(ivm_isolate_is_disposed(iso) == 1);
  {
    int i;   /* reported once, on a thread of libivm's */
    for (i = 0; i < 10000 && __atomic_load_n(&report.calls, __ATOMIC_ACQUIRE) == 0; i++) {
      sleep_ms(1);
    }
  }
  CHECK(ivm_isolate_dispose(iso) == NULL);
  CHECK(report.calls == 1 && report.names_sigkill);
  ivm_script_free(script);
  ivm_context_free(ctx);
  ivm_isolate_free(iso);
}

int main(void) {
  uint64_t baseline = ivm_debug_live_objects();
  test_spawn_ping_dispose();
  test_killed_worker_is_reported();
  test_arguments();
  test_worker_hosted_isolate();
  CHECK(ivm_debug_live_objects() == baseline);
  return report();
}
