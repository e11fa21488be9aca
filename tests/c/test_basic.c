/* test_basic.c — uses libivm through ivm.h alone, as any other language would:
 * creates an isolate, evaluates, reads results and errors, checks timeouts,
 * disposal and leaks. Exit status 0 on success; prints "N passed, N failed". */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include "ivm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "check.h"

static ivm_error_t *eval(ivm_context_t *ctx, const char *code, ivm_value_t **out) {
  return ivm_context_eval(ctx, code, strlen(code), NULL, NULL, NULL, out, NULL);
}

static int str_eq(const char *p, size_t n, const char *expect) {
  return n == strlen(expect) && memcmp(p, expect, n) == 0;
}

/* An asynchronous job's outcome, reported on a libivm pool thread. */
struct outcome {
  volatile int done;
  uint64_t job;
  double number;
  ivm_error_kind_t error_kind;
};

static void on_done(void *user_data, const ivm_completion_t *c) {
  struct outcome *o = (struct outcome *)user_data;
  o->job = c->job;
  if (c->error) {
    o->error_kind = ivm_error_kind(c->error);
    ivm_error_free(c->error);
  } else if (c->kind == IVM_COMPLETION_VALUE) {
    o->number = ivm_value_number(c->result.value);
    ivm_value_free(c->result.value);
  }
  __atomic_store_n(&o->done, 1, __ATOMIC_RELEASE);
}

/* A done callback that makes a synchronous call into another isolate. */
struct reentry {
  volatile int done;
  ivm_context_t *other;
  ivm_error_kind_t kind;
};

static void on_done_reenter(void *user_data, const ivm_completion_t *c) {
  struct reentry *r = (struct reentry *)user_data;
  ivm_value_t *v = NULL;
  ivm_error_t *err = ivm_context_eval(r->other, "1", 1, NULL, NULL, NULL, &v, NULL);
  r->kind = err ? ivm_error_kind(err) : 0;
  ivm_error_free(err);
  ivm_value_free(v);
  ivm_value_free(c->result.value);
  ivm_error_free(c->error);
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
}

static void wait_for(struct outcome *o) {
  while (!__atomic_load_n(&o->done, __ATOMIC_ACQUIRE)) {
  }
}

int main(void) {
  const char *s;
  size_t n;
  ivm_value_t *v = NULL;
  ivm_error_t *err;

  CHECK(ivm_version() == IVM_VERSION_NUMBER);
  CHECK(strncmp(ivm_v8_version(), "1", 1) == 0);

  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  opts.memory_limit = 64u << 20;
  ivm_isolate_t *iso = NULL;
  err = ivm_isolate_new(&opts, &iso);
  CHECK(err == NULL && iso != NULL);

  opts.memory_limit = 1024;
  ivm_isolate_t *tiny = NULL;
  err = ivm_isolate_new(&opts, &tiny);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT && tiny == NULL);
  ivm_error_free(err);

  ivm_context_t *ctx = NULL;
  err = ivm_isolate_create_context(iso, NULL, &ctx);
  CHECK(err == NULL && ctx != NULL);

  /* A number. */
  err = eval(ctx, "6 * 7", &v);
  CHECK(err == NULL);
  CHECK(ivm_value_kind(v) == IVM_VALUE_NUMBER && ivm_value_number(v) == 42.0);
  ivm_value_free(v);

  /* A string with a non-ASCII character. */
  err = eval(ctx, "'h\\u00e9llo'", &v);
  CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_STRING);
  ivm_value_string(v, &s, &n);
  CHECK(str_eq(s, n, "h\xc3\xa9llo"));
  ivm_value_free(v);

  /* A primitive result in the caller's slot: no value to free. */
  ivm_primitive_t prim;
  v = NULL;
  err = ivm_context_eval(ctx, "0.5", 3, NULL, NULL, NULL, &v, &prim);
  CHECK(err == NULL && v == NULL && prim.kind == IVM_VALUE_NUMBER && prim.number == 0.5);
  err = ivm_context_eval(ctx, "'s'", 3, NULL, NULL, NULL, &v, &prim);
  CHECK(err == NULL && v != NULL && prim.kind == 0 && ivm_value_kind(v) == IVM_VALUE_STRING);
  ivm_value_free(v);

  /* A thrown error: kind, name, message and a stack naming the file. */
  ivm_source_options_t source = IVM_SOURCE_OPTIONS_INIT;
  source.filename = "file:///c-test.js";
  source.filename_len = strlen(source.filename);
  const char *bad = "\n  throw new TypeError('nope')";
  err = ivm_context_eval(ctx, bad, strlen(bad), &source, NULL, NULL, &v, NULL);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_JS_EXCEPTION);
  ivm_error_name(err, &s, &n);
  CHECK(str_eq(s, n, "TypeError"));
  ivm_error_message(err, &s, &n);
  CHECK(str_eq(s, n, "nope"));
  ivm_error_stack(err, &s, &n);
  CHECK(n > 0 && strstr(s, "file:///c-test.js:2:") != NULL);
  ivm_error_free(err);

  /* A timeout leaves the isolate usable. */
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  run.timeout_ns = 20 * 1000 * 1000;
  const char *loop = "while (true) {}";
  err = ivm_context_eval(ctx, loop, strlen(loop), NULL, &run, NULL, &v, NULL);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_TIMEOUT);
  ivm_error_free(err);
  err = eval(ctx, "1 + 1", &v);
  CHECK(err == NULL && ivm_value_number(v) == 2.0);
  ivm_value_free(v);

  /* Objects do not leave the isolate without a transfer option. */
  err = eval(ctx, "({})", &v);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_TRANSFER);
  ivm_error_free(err);

  /* A precompiled script. */
  ivm_script_t *script = NULL;
  const char *code = "40 + 2";
  err = ivm_isolate_compile_script(iso, code, strlen(code), NULL, NULL, &script);
  CHECK(err == NULL);
  err = ivm_script_run(script, ctx, NULL, NULL, &v, NULL);
  CHECK(err == NULL && ivm_value_number(v) == 42.0);
  ivm_value_free(v);
  CHECK(ivm_isolate_reference_count(iso) == 2);

  /* Asynchronous evaluation: a C callback with user_data reports the outcome. */
  struct outcome first = {0, 0, 0, 0}, second = {0, 0, 0, 0};
  uint64_t job1 = 0, job2 = 0;
  err = ivm_context_eval_async(ctx, "21 * 2", 6, NULL, NULL, NULL, on_done, &first, &job1);
  CHECK(err == NULL && job1 != 0);
  err = ivm_context_eval_async(ctx, "throw 1", 7, NULL, NULL, NULL, on_done, &second, &job2);
  CHECK(err == NULL && job2 != 0 && job2 != job1);
  wait_for(&first);
  wait_for(&second);
  CHECK(first.job == job1 && first.number == 42.0 && first.error_kind == 0);
  CHECK(second.job == job2 && second.error_kind == IVM_ERROR_JS_EXCEPTION);

  /* Cancelling a running job terminates it; the isolate stays usable. */
  struct outcome looping = {0, 0, 0, 0};
  uint64_t job3 = 0;
  err = ivm_context_eval_async(ctx, loop, strlen(loop), NULL, NULL, NULL, on_done, &looping,
                               &job3);
  CHECK(err == NULL);
  ivm_isolate_cancel_job(iso, job3);
  wait_for(&looping);
  CHECK(looping.error_kind == IVM_ERROR_CANCELLED);

  /* Code running for a job may not block on another isolate (deadlock). */
  ivm_isolate_t *iso2 = NULL;
  ivm_context_t *ctx2 = NULL;
  CHECK(ivm_isolate_new(NULL, &iso2) == NULL);
  CHECK(ivm_isolate_create_context(iso2, NULL, &ctx2) == NULL);
  struct reentry reentry = {0, ctx2, 0};
  err = ivm_context_eval_async(ctx, "1", 1, NULL, NULL, NULL, on_done_reenter, &reentry, NULL);
  CHECK(err == NULL);
  while (!__atomic_load_n(&reentry.done, __ATOMIC_ACQUIRE)) {
  }
  CHECK(reentry.kind == IVM_ERROR_DEADLOCK);
  /* ... but the same isolate is fine. */
  struct reentry same = {0, ctx, 0};
  err = ivm_context_eval_async(ctx, "1", 1, NULL, NULL, NULL, on_done_reenter, &same, NULL);
  CHECK(err == NULL);
  while (!__atomic_load_n(&same.done, __ATOMIC_ACQUIRE)) {
  }
  CHECK(same.kind == 0);
  ivm_context_free(ctx2);
  ivm_isolate_free(iso2);

  /* A completion queue collects outcomes for an event loop to pop. */
  ivm_completion_queue_t *queue = NULL;
  int fd = -1;
  err = ivm_completion_queue_new(&fd, &queue);
  CHECK(err == NULL && queue != NULL && fd >= 0);
  uint64_t job4 = 0;
  err = ivm_context_eval_async(ctx, "'queued'", 8, NULL, NULL, NULL, ivm_completion_queue_done,
                               queue, &job4);
  CHECK(err == NULL);
  ivm_completion_t completion;
  while (ivm_completion_queue_pop(queue, &completion, 1) == 0) {
  }
  CHECK(completion.job == job4 && completion.error == NULL);
  CHECK(completion.kind == IVM_COMPLETION_VALUE && completion.result.value != NULL);
  ivm_value_string(completion.result.value, &s, &n);
  CHECK(str_eq(s, n, "queued"));
  ivm_value_free(completion.result.value);
  /* Each kind of job names the member of its result. */
  ivm_completion_t typed[3];
  size_t got = 0;
  CHECK(ivm_isolate_create_context_async(iso, NULL, ivm_completion_queue_done, queue, NULL) == NULL);
  CHECK(ivm_isolate_compile_script_async(iso, "1", 1, NULL, NULL, ivm_completion_queue_done, queue,
                                         NULL) == NULL);
  CHECK(ivm_isolate_heap_statistics_async(iso, ivm_completion_queue_done, queue, NULL) == NULL);
  while (got < 3) got += ivm_completion_queue_pop(queue, typed + got, 3 - got);
  CHECK(typed[0].kind == IVM_COMPLETION_CONTEXT && typed[0].result.context != NULL);
  CHECK(typed[1].kind == IVM_COMPLETION_SCRIPT && typed[1].result.script != NULL);
  CHECK(typed[2].kind == IVM_COMPLETION_HEAP_STATISTICS &&
        typed[2].result.heap_statistics->used_heap_size > 0);
  ivm_context_free(typed[0].result.context);
  ivm_script_free(typed[1].result.script);
  ivm_heap_statistics_free(typed[2].result.heap_statistics);
  /* A failed job: no result, an error. */
  CHECK(ivm_context_eval_async(ctx, "throw 2", 7, NULL, NULL, NULL, ivm_completion_queue_done,
                               queue, NULL) == NULL);
  while (ivm_completion_queue_pop(queue, &completion, 1) == 0) {
  }
  CHECK(completion.kind == IVM_COMPLETION_NONE && completion.error != NULL &&
        ivm_error_kind(completion.error) == IVM_ERROR_JS_EXCEPTION);
  ivm_error_free(completion.error);
  /* Freed with a job still queued behind a long one: libivm frees its outcome. */
  err = ivm_context_eval_async(ctx, "1", 1, NULL, NULL, NULL, ivm_completion_queue_done, queue,
                               NULL);
  CHECK(err == NULL);
  ivm_completion_queue_free(queue);

  /* Heap statistics with the caller's struct size. */
  ivm_heap_statistics_t stats;
  memset(&stats, 0, sizeof stats);
  stats.struct_size = sizeof stats;
  err = ivm_isolate_heap_statistics(iso, &stats);
  CHECK(err == NULL && stats.used_heap_size > 0 && stats.heap_size_limit > 0);

  /* Disposal: later calls fail with DISPOSED, never crash. */
  CHECK(ivm_isolate_dispose(iso) == NULL);
  CHECK(ivm_isolate_dispose(iso) == NULL);
  CHECK(ivm_isolate_is_disposed(iso) == 1);
  err = eval(ctx, "1", &v);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED);
  ivm_error_free(err);
  err = ivm_script_run(script, ctx, NULL, NULL, &v, NULL);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED);
  ivm_error_free(err);

  ivm_script_free(script);
  ivm_context_free(ctx);
  ivm_isolate_free(iso);
  /* A pool thread may still be finishing a job it took before the disposal. */
  for (int i = 0; i < 1000 && ivm_debug_live_objects() != 0; i++) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  CHECK(ivm_debug_live_objects() == 0);

  return report();
}
