/* test_inspector.c — V8's inspector through ivm.h alone: a session pauses a
 * call on `debugger;` (the call runs on a thread of its own), evaluates an
 * expression in the paused frame, resumes, and the call's result arrives; a
 * paused call's timeout ends it; bad arguments are refused. Ends with no live
 * libivm object. Exit status 0 on success; prints "N passed, M failed". */
#define _POSIX_C_SOURCE 200809L
#include "ivm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

/* Every message a session received, one after another, NUL-separated. */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static char inbox[1 << 20];
static size_t inbox_len;

static void on_message(void *user_data, uint32_t kind, int32_t call_id, const char *message,
                       size_t len) {
  (void)user_data;
  (void)call_id;
  (void)kind;
  pthread_mutex_lock(&mutex);
  if (inbox_len + len + 1 < sizeof inbox) {
    memcpy(inbox + inbox_len, message, len);
    inbox_len += len;
    inbox[inbox_len++] = '\0';
  }
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&mutex);
}

/* Waits (at most 20 s) for a message containing `needle`; a copy of it, or NULL. */
static char *wait_for(const char *needle) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 20;
  char *found = NULL;
  pthread_mutex_lock(&mutex);
  for (;;) {
    for (size_t at = 0; at < inbox_len; at += strlen(inbox + at) + 1) {
      if (strstr(inbox + at, needle) != NULL) {
        found = strdup(inbox + at);
        break;
      }
    }
    if (found != NULL || pthread_cond_timedwait(&cond, &mutex, &until) != 0) break;
  }
  pthread_mutex_unlock(&mutex);
  return found;
}

static void post(ivm_inspector_session_t *session, const char *json) {
  ivm_error_t *err = ivm_inspector_session_dispatch(session, json, strlen(json));
  CHECK(err == NULL);
  ivm_error_free(err);
}

struct call {
  ivm_context_t *ctx;
  const char *code;
  uint64_t timeout_ns;
  double result;
  ivm_error_kind_t error;
};

static void *run_call(void *arg) {
  struct call *c = arg;
  ivm_source_options_t source = IVM_SOURCE_OPTIONS_INIT;
  source.filename = "paused.js";
  source.filename_len = strlen(source.filename);
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  run.timeout_ns = c->timeout_ns;
  ivm_value_t *out = NULL;
  ivm_error_t *err = ivm_context_eval(c->ctx, c->code, strlen(c->code), &source, &run, NULL, &out, NULL);
  c->error = err ? ivm_error_kind(err) : 0;
  c->result = out ? ivm_value_number(out) : -1;
  ivm_error_free(err);
  ivm_value_free(out);
  return NULL;
}

static void test_pause_evaluate_resume(ivm_isolate_t *iso, ivm_context_t *ctx) {
  ivm_inspector_session_options_t opts = IVM_INSPECTOR_SESSION_OPTIONS_INIT;
  opts.on_message = on_message;
  ivm_inspector_session_t *session = NULL;
  CHECK(ivm_inspector_session_new(iso, &opts, &session) == NULL && session != NULL);
  post(session, "{\"id\":1,\"method\":\"Runtime.enable\"}");
  post(session, "{\"id\":2,\"method\":\"Debugger.enable\"}");
  char *msg = wait_for("\"id\":2,");
  CHECK(msg != NULL);
  free(msg);
  msg = wait_for("Runtime.executionContextCreated");
  CHECK(msg != NULL && strstr(msg, "ivm context") != NULL);
  free(msg);

  struct call c = {ctx, "var x = 41;\ndebugger;\nx + 1", 0, 0, 0};
  pthread_t thread;
  pthread_create(&thread, NULL, run_call, &c);
  char *paused = wait_for("Debugger.paused");
  CHECK(paused != NULL);
  const char *id = paused ? strstr(paused, "\"callFrameId\":\"") : NULL;
  CHECK(id != NULL);
  if (id != NULL) {
    id += strlen("\"callFrameId\":\"");
    const char *end = strchr(id, '"');
    char request[512];
    snprintf(request, sizeof request,
             "{\"id\":3,\"method\":\"Debugger.evaluateOnCallFrame\","
             "\"params\":{\"callFrameId\":\"%.*s\",\"expression\":\"x * 2\"}}",
             (int)(end - id), id);
    post(session, request);
    msg = wait_for("\"id\":3,");
    CHECK(msg != NULL && strstr(msg, "\"value\":82") != NULL);
    free(msg);
    /* The location: line 1 (0-based) of paused.js. */
    CHECK(strstr(paused, "\"lineNumber\":1") != NULL);
  }
  free(paused);
  post(session, "{\"id\":4,\"method\":\"Debugger.resume\"}");
  pthread_join(thread, NULL);
  CHECK(c.error == 0 && c.result == 42);

  /* A paused call's timeout still ends it; the isolate stays usable. */
  struct call t = {ctx, "debugger; 1", 200000000, 0, 0};
  pthread_create(&thread, NULL, run_call, &t);
  pthread_join(thread, NULL);
  CHECK(t.error == IVM_ERROR_TIMEOUT);
  struct call after = {ctx, "6 * 7", 0, 0, 0};
  run_call(&after);
  CHECK(after.error == 0 && after.result == 42);

  /* A message too long is refused; a malformed one gets a protocol error. */
  static char big[IVM_INSPECTOR_MAX_MESSAGE + 1];
  memset(big, ' ', sizeof big);
  ivm_error_t *err = ivm_inspector_session_dispatch(session, big, sizeof big);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT);
  ivm_error_free(err);
  post(session, "{not json");
  msg = wait_for("\"error\"");
  CHECK(msg != NULL);
  free(msg);
  ivm_inspector_session_free(session);
  ivm_inspector_session_free(NULL);
}

static void test_refusals(void) {
  ivm_isolate_t *plain = NULL;
  CHECK(ivm_isolate_new(NULL, &plain) == NULL);
  ivm_inspector_session_options_t opts = IVM_INSPECTOR_SESSION_OPTIONS_INIT;
  opts.on_message = on_message;
  ivm_inspector_session_t *session = NULL;
  ivm_error_t *err = ivm_inspector_session_new(plain, &opts, &session);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT && session == NULL);
  ivm_error_free(err);
  err = ivm_inspector_session_new(NULL, &opts, &session);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT);
  ivm_error_free(err);
  err = ivm_inspector_session_dispatch(NULL, "{}", 2);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT);
  ivm_error_free(err);
  ivm_isolate_free(plain);

  /* An isolate in a worker process: its inspector answers across the channel. */
  ivm_isolate_options_t iopts = IVM_ISOLATE_OPTIONS_INIT;
  iopts.inspector = 1;
  iopts.placement = IVM_PLACEMENT_PROCESS;
  ivm_isolate_t *remote = NULL;
  CHECK(ivm_isolate_new(&iopts, &remote) == NULL && remote != NULL);
  ivm_context_t *remote_ctx = NULL;   /* where Runtime.evaluate runs */
  CHECK(ivm_isolate_create_context(remote, NULL, &remote_ctx) == NULL);
  CHECK(ivm_inspector_session_new(remote, &opts, &session) == NULL);
  post(session, "{\"id\":77,\"method\":\"Runtime.evaluate\","
                "\"params\":{\"expression\":\"'re'+'mote'\"}}");
  char *answer = wait_for("\"remote\"");
  CHECK(answer != NULL && strstr(answer, "\"id\":77") != NULL);
  free(answer);
  ivm_inspector_session_free(session);
  ivm_context_free(remote_ctx);
  ivm_error_free(ivm_isolate_dispose(remote));
  ivm_isolate_free(remote);

  /* A disposed isolate's session is refused too. */
  iopts.placement = IVM_PLACEMENT_INLINE;
  ivm_isolate_t *iso = NULL;
  CHECK(ivm_isolate_new(&iopts, &iso) == NULL);
  CHECK(ivm_inspector_session_new(iso, &opts, &session) == NULL);
  ivm_error_free(ivm_isolate_dispose(iso));
  err = ivm_inspector_session_dispatch(session, "{}", 2);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED);
  ivm_error_free(err);
  ivm_inspector_session_free(session);
  ivm_isolate_free(iso);
}

int main(void) {
  uint64_t baseline = ivm_debug_live_objects();
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  opts.inspector = 1;
  ivm_isolate_t *iso = NULL;
  ivm_context_t *ctx = NULL;
  CHECK(ivm_isolate_new(&opts, &iso) == NULL);
  CHECK(ivm_isolate_create_context(iso, NULL, &ctx) == NULL);
  test_pause_evaluate_resume(iso, ctx);
  ivm_context_free(ctx);
  ivm_error_free(ivm_isolate_dispose(iso));
  ivm_isolate_free(iso);
  test_refusals();
  CHECK(ivm_debug_live_objects() == baseline);
  return report();
}
