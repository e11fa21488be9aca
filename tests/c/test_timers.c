/* test_timers.c — IVM_HOST_TIMERS through ivm.h alone: a synchronous call
 * waiting for a timer, timers that run with no call (an async call parked on
 * one), the timeout that ends an endless setInterval, a string callback
 * refused, and disposal with timers pending, leaving no object behind.
 * Exit status 0 on success; prints "N passed, N failed". */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include "ivm.h"

#include <string.h>
#include <time.h>

#include "check.h"
#include "eval.h"

/* A number, or -1 for an error or another kind. */
static double number(ivm_context_t *ctx, const char *code, uint32_t flags) {
  ivm_value_t *v = NULL;
  ivm_error_t *err = eval_flags(ctx, code, flags, 0, &v);
  double n = -1;
  if (err == NULL && ivm_value_kind(v) == IVM_VALUE_NUMBER) n = ivm_value_number(v);
  ivm_error_free(err);
  ivm_value_free(v);
  return n;
}

static ivm_error_kind_t error_kind(ivm_context_t *ctx, const char *code, uint64_t timeout_ns,
                                   uint32_t flags) {
  ivm_value_t *v = NULL;
  ivm_error_t *err = eval_flags(ctx, code, flags, timeout_ns, &v);
  ivm_error_kind_t kind = err ? ivm_error_kind(err) : 0;
  ivm_error_free(err);
  ivm_value_free(v);
  return kind;
}

static void nap_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

struct outcome {
  volatile int done;
  double number;
};

static void on_done(void *user_data, const ivm_completion_t *c) {
  struct outcome *o = (struct outcome *)user_data;
  if (c->error == NULL && c->kind == IVM_COMPLETION_VALUE &&
      ivm_value_kind(c->result.value) == IVM_VALUE_NUMBER) {
    o->number = ivm_value_number(c->result.value);
  }
  ivm_error_free(c->error);
  if (c->kind == IVM_COMPLETION_VALUE) ivm_value_free(c->result.value);
  __atomic_store_n(&o->done, 1, __ATOMIC_RELEASE);
}

int main(void) {
  ivm_isolate_t *iso = NULL;
  CHECK(ivm_isolate_new(NULL, &iso) == NULL);
  ivm_context_options_t copts = IVM_CONTEXT_OPTIONS_INIT;
  copts.host = IVM_HOST_TIMERS;
  ivm_context_t *ctx = NULL;
  CHECK(ivm_isolate_create_context(iso, &copts, &ctx) == NULL);

  /* A synchronous call waits for the timers its promise needs. */
  CHECK(number(ctx, "new Promise(r => setTimeout(r, 5, 42))", IVM_RESULT_PROMISE) == 42);
  /* Timers run with no call active. */
  CHECK(number(ctx, "globalThis.n = 0; setTimeout(() => { n = 7 }, 1); n", 0) == 0);
  for (int i = 0; i < 5000 && number(ctx, "n", 0) != 7; i++) nap_ms(1);
  CHECK(number(ctx, "n", 0) == 7);

  /* An asynchronous call parks on its promise; a timer job settles it. */
  struct outcome o = {0, 0};
  const char *code = "new Promise(r => setInterval(() => { if (++n === 10) r(n) }, 1))";
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  result.flags = IVM_RESULT_PROMISE;
  CHECK(ivm_context_eval_async(ctx, code, strlen(code), NULL, NULL, &result, on_done, &o,
                               NULL) == NULL);
  for (int i = 0; i < 60000 && !__atomic_load_n(&o.done, __ATOMIC_ACQUIRE); i++) nap_ms(1);
  CHECK(o.done && o.number == 10);

  /* Must hold: an endless setInterval and a promise that never settles end at the
   * call's timeout, and the interval with it. */
  CHECK(error_kind(ctx, "setInterval(() => {}, 1); new Promise(() => {})", 100000000,
                   IVM_RESULT_PROMISE) == IVM_ERROR_TIMEOUT);
  CHECK(error_kind(ctx, "setTimeout('1', 0)", 0, 0) == IVM_ERROR_JS_EXCEPTION);

  /* Disposal with timers pending (and a busy one running in a timer job). */
  CHECK(number(ctx, "for (let i = 0; i < 1000; i++) setTimeout(() => {}, i % 50);"
                    "setTimeout(() => { while (true) {} }, 0); 1", 0) == 1);
  nap_ms(20);
  CHECK(ivm_isolate_dispose(iso) == NULL);
  CHECK(error_kind(ctx, "1", 0, 0) == IVM_ERROR_DISPOSED);
  ivm_context_free(ctx);
  ivm_isolate_free(iso);
  for (int i = 0; i < 1000 && ivm_debug_live_objects() != 0; i++) nap_ms(1);
  CHECK(ivm_debug_live_objects() == 0);
  return report();
}
