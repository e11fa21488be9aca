/* test_values.c — values across the C ABI, through ivm.h alone: structured copies
 * and ExternalCopies moved between isolates (with and without transfer), host
 * functions called from JavaScript (arguments, results, errors, tokens,
 * user_data, finalizers), deferred host results, and References. Ends with no
 * live libivm object and no external-copy memory left.
 * Exit status 0 on success; prints "N passed, M failed". */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include "ivm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "eval.h"

/* The stream of a value that is its lone attachment: pickle protocol 5,
 * `ivm._copy._att(0)`. */
static const char LONE_ATTACHMENT[] = "\x80\x05" "civm._copy\n_att\nK\x00\x85R.";
#define LONE_ATTACHMENT_LEN (sizeof LONE_ATTACHMENT - 1)

static const char OBJECT_SRC[] =
    "({a: [1, 2, 'x'], m: new Map([[1, 'one']]), b: new Uint8Array([1,2,3]).buffer})";
static const char OBJECT_CHECK[] =
    "return $0.a.length === 3 && $0.a[0] === 1 && $0.a[2] === 'x' && "
    "$0.m instanceof Map && $0.m.get(1) === 'one' && "
    "$0.b instanceof ArrayBuffer && $0.b.byteLength === 3 && new Uint8Array($0.b)[2] === 3";

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int str_eq(const char *p, size_t n, const char *expect) {
  return n == strlen(expect) && memcmp(p, expect, n) == 0;
}

static ivm_value_t *new_cstring(const char *s) {
  return ivm_value_new_string(s, strlen(s));
}

/* Evaluates `code`; returns 1 if it succeeds with boolean true. */
static int eval_true(ivm_context_t *ctx, const char *code) {
  ivm_value_t *v = NULL;
  ivm_error_t *err = eval_flags(ctx, code, 0, 0, &v);
  int ok = err == NULL && ivm_value_kind(v) == IVM_VALUE_BOOLEAN && ivm_value_boolean(v) == 1;
  if (err) {
    const char *m;
    size_t n;
    ivm_error_message(err, &m, &n);
    fprintf(stderr, "  eval of %s failed: kind %u: %.*s\n", code, (unsigned)ivm_error_kind(err),
            (int)n, m);
  }
  ivm_error_free(err);
  ivm_value_free(v);
  return ok;
}

/* Evaluates `code`; returns its number (NaN on failure or for other kinds). */
static double eval_number(ivm_context_t *ctx, const char *code) {
  ivm_value_t *v = NULL;
  ivm_error_t *err = eval_flags(ctx, code, 0, 0, &v);
  double d = err == NULL ? ivm_value_number(v) : NAN;
  ivm_error_free(err);
  ivm_value_free(v);
  return d;
}

/* Runs `code` as a closure in `ctx` with the one argument `arg`; returns 1 if
 * it returns boolean true, 0 otherwise; `*kind_out` gets the error kind (0: none). */
static int closure_true(ivm_context_t *ctx, const char *code, ivm_value_t *arg,
                        ivm_error_kind_t *kind_out) {
  ivm_value_t *args[1];
  ivm_value_t *v = NULL;
  args[0] = arg;
  ivm_error_t *err =
      ivm_context_eval_closure(ctx, code, strlen(code), args, 1, NULL, NULL, NULL, &v, NULL);
  int ok = err == NULL && ivm_value_kind(v) == IVM_VALUE_BOOLEAN && ivm_value_boolean(v) == 1;
  if (kind_out) *kind_out = err ? ivm_error_kind(err) : 0;
  ivm_error_free(err);
  ivm_value_free(v);
  return ok;
}

static uint64_t copy_size(ivm_external_copy_t *copy, uint64_t *byte_length,
                          ivm_error_kind_t *kind_out) {
  uint64_t size = 0;
  ivm_error_t *err = ivm_external_copy_size(copy, &size, byte_length);
  *kind_out = err ? ivm_error_kind(err) : 0;
  ivm_error_free(err);
  return size;
}

/* An asynchronous job's outcome, reported on a libivm pool thread. */
struct outcome {
  int done; /* atomically updated */
  uint64_t job;
  ivm_error_kind_t error_kind;
  int string_ok;
};

static void on_done(void *user_data, const ivm_completion_t *c) {
  struct outcome *o = (struct outcome *)user_data;
  const char *s;
  size_t n;
  o->job = c->job;
  if (c->error) {
    o->error_kind = ivm_error_kind(c->error);
    ivm_error_free(c->error);
  } else {
    ivm_value_string(c->result.value, &s, &n);
    o->string_ok = c->kind == IVM_COMPLETION_VALUE && str_eq(s, n, "late");
    ivm_value_free(c->result.value);
  }
  __atomic_store_n(&o->done, 1, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------- */
/* A host function                                                           */
/* ------------------------------------------------------------------------- */

struct host {
  ivm_context_t *ctx; /* for 'reenter' */
  double reentered;
  int calls;
  int bad_user_data;
  int finalized; /* atomically updated: finalize may run on any thread */
  ivm_deferred_t *deferred;
  ivm_deferred_t *pending;
  ivm_error_kind_t second_defer_kind;
  /* What the last 'args' call saw. */
  size_t argc;
  ivm_value_kind_t kinds[4];
  double number;
  int string_ok;
  int past_end_null;
};

static void host_finalize(void *user_data) {
  struct host *h = (struct host *)user_data;
  __atomic_add_fetch(&h->finalized, 1, __ATOMIC_ACQ_REL);
}

/* f(op, ...): 'add' a b -> a + b; 'args' ... -> records the arguments and
 * returns 'ok'; 'throw' -> a RangeError 'bad' with token 42; 'defer' -> a
 * promise settled from C; anything else -> undefined. */
static ivm_error_t *host_fn(void *user_data, ivm_call_t *call, ivm_value_t **out) {
  static struct host *expected;
  struct host *h = (struct host *)user_data;
  if (expected == NULL) expected = h;
  if (h != expected) h->bad_user_data++;
  h->calls++;
  const ivm_value_t *op = ivm_call_arg(call, 0);
  const char *s;
  size_t n;
  if (op == NULL || ivm_value_kind(op) != IVM_VALUE_STRING) {
    return ivm_error_new_host("TypeError", 9, "op must be a string", 19, 0, 0);
  }
  ivm_value_string(op, &s, &n);
  if (str_eq(s, n, "add")) {
    const ivm_value_t *a = ivm_call_arg(call, 1), *b = ivm_call_arg(call, 2);
    if (a == NULL || b == NULL) return ivm_error_new_host("TypeError", 9, "argc", 4, 0, 0);
    *out = ivm_value_new_number(ivm_value_number(a) + ivm_value_number(b));
    return NULL;
  }
  if (str_eq(s, n, "args")) {
    size_t i;
    h->argc = ivm_call_argc(call);
    for (i = 0; i < 4; i++) {
      const ivm_value_t *a = ivm_call_arg(call, i);
      h->kinds[i] = a ? ivm_value_kind(a) : 0;
    }
    h->number = ivm_value_number(ivm_call_arg(call, 1));
    if (ivm_call_arg(call, 2) != NULL) {
      ivm_value_string(ivm_call_arg(call, 2), &s, &n);
      h->string_ok = str_eq(s, n, "h\xc3\xa9llo");
    }
    h->past_end_null = ivm_call_arg(call, h->argc) == NULL;
    *out = ivm_value_new_string("ok", 2);
    return NULL;
  }
  if (str_eq(s, n, "buf")) {
    /* An ArrayBuffer made on the host: the stream `_buf(0)` and one attachment. */
    static const char stream[] = "\x80\x05" "civm._copy\n_buf\nK\x00\x85R.";
    ivm_value_t *v = NULL;
    size_t index = 99;
    ivm_error_t *err = ivm_value_new_serialized(stream, sizeof stream - 1, &v);
    if (err) return err;
    err = ivm_value_attach_buffer(v, "\11\12\13\14", 4, 0, &index);
    if (err) {
      ivm_value_free(v);
      return err;
    }
    *out = v;
    return NULL;
  }
  if (str_eq(s, n, "reenter")) {
    /* Back into the same isolate, synchronously, from inside the call. */
    ivm_value_t *v = NULL;
    ivm_error_t *err = ivm_context_eval(h->ctx, "6 * 7", 5, NULL, NULL, NULL, &v, NULL);
    if (err) return err;
    h->reentered = ivm_value_number(v);
    *out = v;
    return NULL;
  }
  if (str_eq(s, n, "custom")) {
    return ivm_error_new_host("MyError", 7, "mine", 4, 0, 0);
  }
  if (str_eq(s, n, "abort")) {
    return ivm_error_new_host("Error", 5, "stop", 4, 99, IVM_HOST_ERROR_ABORT);
  }
  if (str_eq(s, n, "throw")) {
    return ivm_error_new_host("RangeError", 10, "bad", 3, 42, 0);
  }
  if (str_eq(s, n, "defer")) {
    ivm_deferred_t *d = NULL, *again = NULL;
    ivm_error_t *err = ivm_call_defer(call, &d);
    if (err) return err;
    __atomic_store_n(&h->deferred, d, __ATOMIC_RELEASE);
    /* Once per call. */
    err = ivm_call_defer(call, &again);
    h->second_defer_kind = err ? ivm_error_kind(err) : 0;
    ivm_error_free(err);
    if (again) ivm_deferred_free(again);
    *out = ivm_value_new_number(-1); /* ignored after ivm_call_defer */
    return NULL;
  }
  return NULL;
}

/* Sets global `name` of `ctx` to a function made from `cb`. */
static int install_callback(ivm_context_t *ctx, ivm_callback_t *cb, const char *name) {
  ivm_value_t *fn = NULL, *key = NULL, *set = NULL;
  ivm_reference_t *global = NULL;
  size_t index = 99;
  int ok = 1;
  ivm_error_t *err = ivm_value_new_serialized(LONE_ATTACHMENT, LONE_ATTACHMENT_LEN, &fn);
  ok &= err == NULL && fn != NULL && ivm_value_kind(fn) == IVM_VALUE_SERIALIZED;
  ivm_error_free(err);
  err = ivm_value_attach_callback(fn, cb, 0, &index);
  ok &= err == NULL && index == 0 && ivm_value_attachment_count(fn) == 1;
  ivm_error_free(err);
  err = ivm_context_global(ctx, &global);
  ok &= err == NULL && global != NULL;
  ivm_error_free(err);
  key = new_cstring(name);
  err = ivm_reference_set(global, key, fn, NULL, &set, NULL);
  ok &= err == NULL && ivm_value_kind(set) == IVM_VALUE_BOOLEAN && ivm_value_boolean(set) == 1;
  if (err) {
    const char *m;
    size_t n;
    ivm_error_message(err, &m, &n);
    fprintf(stderr, "  setting %s failed: kind %u: %.*s\n", name, (unsigned)ivm_error_kind(err),
            (int)n, m);
  }
  ivm_error_free(err);
  ivm_value_free(set);
  ivm_value_free(key);
  ivm_value_free(fn);
  ivm_reference_free(global);
  return ok;
}

int main(void) {
  const char *s;
  size_t n;
  ivm_value_t *v = NULL;
  ivm_error_t *err;
  ivm_error_kind_t kind;
  const uint64_t start_live = ivm_debug_live_objects();
  const uint64_t start_total = ivm_external_copy_total_size();

  ivm_isolate_t *iso_a = NULL, *iso_b = NULL;
  ivm_context_t *a = NULL, *b = NULL;
  CHECK(ivm_isolate_new(NULL, &iso_a) == NULL && iso_a != NULL);
  CHECK(ivm_isolate_new(NULL, &iso_b) == NULL && iso_b != NULL);
  CHECK(ivm_isolate_create_context(iso_a, NULL, &a) == NULL && a != NULL);
  CHECK(ivm_isolate_create_context(iso_b, NULL, &b) == NULL && b != NULL);

  /* ---- 1. An ExternalCopy from isolate A inserted into isolate B ---------- */
  {
    ivm_external_copy_t *copy = NULL;
    ivm_value_t *marker = NULL, *read = NULL;
    uint64_t size, byte_length = 0;
    const void *data;
    size_t len;

    err = eval_flags(a, OBJECT_SRC, IVM_RESULT_EXTERNAL_COPY, 0, &v);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_EXTERNAL_COPY);
    ivm_error_free(err);
    err = ivm_value_external_copy(v, &copy);
    CHECK(err == NULL && copy != NULL);
    ivm_error_free(err);
    ivm_value_free(v);

    size = copy_size(copy, &byte_length, &kind);
    CHECK(kind == 0 && size > 3 && byte_length == 3);
    CHECK(ivm_external_copy_total_size() >= start_total + size);

    /* Its host view: a structured copy whose buffer attachment holds 1, 2, 3. */
    err = ivm_external_copy_read(copy, &read);
    CHECK(err == NULL && ivm_value_kind(read) == IVM_VALUE_SERIALIZED);
    ivm_error_free(err);
    data = NULL;
    len = 0;
    err = ivm_value_buffer(read, 0, &data, &len);
    CHECK(err == NULL && len == 3 && data != NULL && memcmp(data, "\1\2\3", 3) == 0);
    ivm_error_free(err);
    ivm_value_free(read);

    err = ivm_external_copy_copy_into(copy, 0, &marker);
    CHECK(err == NULL && marker != NULL);
    ivm_error_free(err);
    /* ivm.h: "an IVM_VALUE_SERIALIZED value naming it `_att(0)`". */
    CHECK(ivm_value_kind(marker) == IVM_VALUE_SERIALIZED);

    /* The marker can also be attached to a value of the host's own. */
    {
      static const char pair[] = "\x80\x05" "civm._copy\n_att\nK\x00\x85R"
                                 "civm._copy\n_att\nK\x01\x85R\x86.";
      ivm_value_t *two = NULL;
      size_t i0 = 99, i1 = 99;
      err = ivm_value_new_serialized(pair, sizeof pair - 1, &two);
      CHECK(err == NULL);
      ivm_error_free(err);
      err = ivm_value_attach_marker(two, marker, &i0);
      CHECK(err == NULL && i0 == 0);
      ivm_error_free(err);
      err = ivm_value_attach_marker(two, marker, &i1);
      CHECK(err == NULL && i1 == 1);
      ivm_error_free(err);
      CHECK(closure_true(b, "return Array.isArray($0) && $0.length === 2 && $0[0] !== $0[1] && "
                            "$0[0].m.get(1) === 'one' && new Uint8Array($0[1].b)[0] === 1",
                         two, &kind) && kind == 0);
      ivm_value_free(two);
    }

    CHECK(closure_true(b, OBJECT_CHECK, marker, &kind) && kind == 0);
    /* A marker without flags can be inserted any number of times, each time fresh. */
    CHECK(closure_true(b, "$0.a.push(4); return $0.a.length === 4", marker, &kind));
    CHECK(closure_true(b, OBJECT_CHECK, marker, &kind));

    /* Released: the handle reports DISPOSED; the marker made before still works. */
    CHECK(ivm_external_copy_release(copy) == NULL);
    CHECK(ivm_external_copy_release(copy) == NULL);
    copy_size(copy, NULL, &kind);
    CHECK(kind == IVM_ERROR_DISPOSED);
    ivm_value_t *m2 = NULL;
    err = ivm_external_copy_copy_into(copy, 0, &m2);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED && m2 == NULL);
    ivm_error_free(err);
    err = ivm_external_copy_read(copy, &read);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED);
    ivm_error_free(err);
    CHECK(closure_true(b, OBJECT_CHECK, marker, &kind));

    ivm_value_free(marker);
    ivm_external_copy_free(copy);
    CHECK(ivm_external_copy_total_size() == start_total);
  }

  /* ---- 1b. A structured copy (IVM_RESULT_COPY) --------------------------------- */
  {
    const void *data = NULL;
    size_t len = 0;
    err = eval_flags(a, OBJECT_SRC, IVM_RESULT_COPY, 0, &v);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_SERIALIZED);
    ivm_error_free(err);
    ivm_value_serialized(v, &s, &n);
    CHECK(n > 2 && (unsigned char)s[0] == 0x80 && s[n - 1] == '.');
    CHECK(ivm_value_attachment_count(v) == 1);
    err = ivm_value_buffer(v, 0, &data, &len);
    CHECK(err == NULL && len == 3 && data != NULL && memcmp(data, "\1\2\3", 3) == 0);
    ivm_error_free(err);
    err = ivm_value_buffer(v, 1, &data, &len);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT);
    ivm_error_free(err);
    /* It enters another isolate as an equal value. */
    CHECK(closure_true(b, OBJECT_CHECK, v, &kind) && kind == 0);
    /* As do the copy of the copy, and a copy made from it on the host. */
    ivm_external_copy_t *copy = NULL;
    err = ivm_external_copy_new(v, 0, &copy);
    CHECK(err == NULL && copy != NULL);
    ivm_error_free(err);
    ivm_value_free(v);
    ivm_value_t *marker = NULL;
    err = ivm_external_copy_copy_into(copy, IVM_COPY_INTO_RELEASE, &marker);
    CHECK(err == NULL && marker != NULL);
    ivm_error_free(err);
    copy_size(copy, NULL, &kind);
    CHECK(kind == IVM_ERROR_DISPOSED); /* IVM_COPY_INTO_RELEASE */
    CHECK(closure_true(b, OBJECT_CHECK, marker, &kind) && kind == 0);
    ivm_value_free(marker);
    ivm_external_copy_free(copy);
    CHECK(ivm_external_copy_total_size() == start_total);
  }

  /* ---- 1b'. An ExternalCopy of a host primitive (ivm.h: "a serialized value ... or a
   * primitive") ------------------------------------------------------------- */
  {
    ivm_value_t *num = ivm_value_new_number(1.25), *marker = NULL;
    ivm_external_copy_t *copy = NULL;
    err = ivm_external_copy_new(num, 0, &copy);
    CHECK(err == NULL && copy != NULL);
    ivm_error_free(err);
    if (copy != NULL) {
      err = ivm_external_copy_copy_into(copy, 0, &marker);
      CHECK(err == NULL && closure_true(b, "return $0 === 1.25", marker, &kind));
      ivm_error_free(err);
      ivm_value_free(marker);
      ivm_external_copy_free(copy);
    }
    ivm_value_free(num);
    CHECK(ivm_external_copy_total_size() == start_total);
  }

  /* ---- 1c. Transfer out of A, transfer into B ------------------------------- */
  {
    ivm_external_copy_t *copy = NULL;
    ivm_value_t *marker = NULL;
    uint64_t byte_length = 0;
    err = eval_flags(a, "globalThis.buf = new Uint8Array([4, 5, 6]).buffer; ({buf})",
                     IVM_RESULT_EXTERNAL_COPY | IVM_RESULT_TRANSFER_OUT, 0, &v);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_EXTERNAL_COPY);
    ivm_error_free(err);
    CHECK(eval_true(a, "buf.byteLength === 0"));
    err = ivm_value_external_copy(v, &copy);
    CHECK(err == NULL && copy != NULL);
    ivm_error_free(err);
    ivm_value_free(v);
    copy_size(copy, &byte_length, &kind);
    CHECK(kind == 0 && byte_length == 3);

    err = ivm_external_copy_copy_into(copy, IVM_COPY_INTO_TRANSFER_IN, &marker);
    CHECK(err == NULL && marker != NULL);
    ivm_error_free(err);
    CHECK(closure_true(b, "globalThis.moved = $0.buf; return new Uint8Array($0.buf).join() === '4,5,6'",
                       marker, &kind) && kind == 0);
    /* The marker can be inserted once. */
    CHECK(!closure_true(b, "return true", marker, &kind) && kind == IVM_ERROR_TRANSFER);
    /* ... and the ExternalCopy is released. */
    copy_size(copy, NULL, &kind);
    CHECK(kind == IVM_ERROR_DISPOSED);
    CHECK(eval_true(b, "moved.byteLength === 3"));
    ivm_value_free(marker);
    ivm_external_copy_free(copy);
    CHECK(ivm_external_copy_total_size() == start_total);

    /* IVM_RESULT_COPY with IVM_RESULT_TRANSFER_OUT detaches as well. */
    const void *data = NULL;
    size_t len = 0;
    err = eval_flags(a, "globalThis.buf2 = new Uint8Array([7, 8]).buffer; buf2",
                     IVM_RESULT_COPY | IVM_RESULT_TRANSFER_OUT, 0, &v);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_SERIALIZED);
    ivm_error_free(err);
    err = ivm_value_buffer(v, 0, &data, &len);
    CHECK(err == NULL && len == 2 && memcmp(data, "\7\10", 2) == 0);
    ivm_error_free(err);
    ivm_value_free(v);
    CHECK(eval_true(a, "buf2.byteLength === 0"));
  }

  /* ---- 2. A C host function called from JavaScript -------------------------- */
  struct host host;
  memset(&host, 0, sizeof host);
  {
    ivm_callback_t *cb = NULL;
    err = ivm_callback_new(host_fn, &host, host_finalize, 0, &cb);
    CHECK(err == NULL && cb != NULL);
    ivm_error_free(err);
    CHECK(install_callback(a, cb, "f"));
    /* The handle can go: the JavaScript function keeps the callback alive. */
    ivm_callback_free(cb);
    CHECK(__atomic_load_n(&host.finalized, __ATOMIC_ACQUIRE) == 0);

    CHECK(eval_true(a, "typeof f === 'function'"));
    CHECK(eval_number(a, "f('add', 2, 3)") == 5.0);
    CHECK(eval_true(a, "f('args', 1.5, 'h\\u00e9llo') === 'ok'"));
    CHECK(host.argc == 3);
    CHECK(host.kinds[0] == IVM_VALUE_STRING && host.kinds[1] == IVM_VALUE_NUMBER &&
          host.kinds[2] == IVM_VALUE_STRING && host.kinds[3] == 0);
    CHECK(host.number == 1.5 && host.string_ok && host.past_end_null);
    CHECK(eval_true(a, "f('args', true, null, [1, {x: 2}]) === 'ok'"));
    CHECK(host.argc == 4 && host.kinds[1] == IVM_VALUE_BOOLEAN && host.kinds[2] == IVM_VALUE_NULL &&
          host.kinds[3] == IVM_VALUE_SERIALIZED);
    CHECK(eval_true(a, "f('nothing') === undefined"));

    /* A host error caught by JavaScript. */
    CHECK(eval_true(a, "(() => { try { f('throw'); return false; } catch (e) {"
                       " return e instanceof RangeError && e.message === 'bad'; } })()"));
    /* ... and uncaught: the host sees its token. */
    err = eval_flags(a, "f('throw')", 0, 0, &v);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_JS_EXCEPTION);
    CHECK(err != NULL && ivm_error_host_token(err) == 42);
    ivm_error_name(err, &s, &n);
    CHECK(str_eq(s, n, "RangeError"));
    ivm_error_message(err, &s, &n);
    CHECK(str_eq(s, n, "bad"));
    ivm_error_free(err);
    /* A JavaScript error has no token. */
    err = eval_flags(a, "throw new RangeError('bad')", 0, 0, &v);
    CHECK(err != NULL && ivm_error_host_token(err) == 0);
    ivm_error_free(err);
    CHECK(host.bad_user_data == 0 && host.calls == 6);

    /* A structured copy made on the host as the result. */
    CHECK(eval_true(a, "(() => { const b = f('buf'); return b instanceof ArrayBuffer && "
                       "new Uint8Array(b).join() === '9,10,11,12'; })()"));
    /* Re-entering the same isolate from the host function. */
    host.ctx = a;
    CHECK(eval_number(a, "f('reenter') + 1") == 43.0);
    CHECK(host.reentered == 42.0);
    /* An error name without a constructor becomes the `name` of an Error. */
    CHECK(eval_true(a, "(() => { try { f('custom'); } catch (e) {"
                       " return e instanceof Error && e.name === 'MyError' && e.message === 'mine'; } })()"));
    /* IVM_HOST_ERROR_ABORT: JavaScript cannot catch it; the call ends TERMINATED with the token. */
    err = eval_flags(a, "globalThis.after = 0; try { f('abort'); } catch (e) {} after = 1; 'ran'", 0, 0, &v);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_TERMINATED);
    CHECK(err != NULL && ivm_error_host_token(err) == 99);
    ivm_error_free(err);
    CHECK(eval_true(a, "after === 0")); /* ... and the isolate stays usable */
    CHECK(host.calls == 10);

    /* A callback never inserted is finalized when its handle is freed. */
    struct host unused;
    memset(&unused, 0, sizeof unused);
    ivm_callback_t *lone = NULL;
    CHECK(ivm_callback_new(host_fn, &unused, host_finalize, 0, &lone) == NULL);
    CHECK(__atomic_load_n(&unused.finalized, __ATOMIC_ACQUIRE) == 0);
    ivm_callback_free(lone);
    CHECK(__atomic_load_n(&unused.finalized, __ATOMIC_ACQUIRE) == 1);

    /* A failed ivm_callback_new still finalizes, once. */
    struct host other;
    memset(&other, 0, sizeof other);
    ivm_callback_t *none = NULL;
    err = ivm_callback_new(NULL, &other, host_finalize, 0, &none);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT && none == NULL);
    ivm_error_free(err);
    CHECK(__atomic_load_n(&other.finalized, __ATOMIC_ACQUIRE) == 1);
  }

  /* ---- 3. A deferred host result -------------------------------------------- */
  {
    ivm_run_options_t prun = IVM_RUN_OPTIONS_INIT;
    ivm_result_options_t presult = IVM_RESULT_OPTIONS_INIT;
    prun.timeout_ns = 5ull * 1000 * 1000 * 1000;
    presult.flags = IVM_RESULT_PROMISE;

    CHECK(eval_true(a, "globalThis.p = f('defer'); p instanceof Promise"));
    CHECK(host.deferred != NULL);
    CHECK(host.second_defer_kind == IVM_ERROR_INVALID_ARGUMENT);
    ivm_deferred_t *d = host.deferred;
    host.deferred = NULL;
    CHECK(ivm_deferred_resolve(d, ivm_value_new_number(7)) == NULL);
    /* Once. */
    err = ivm_deferred_resolve(d, ivm_value_new_number(8));
    CHECK(err != NULL);
    ivm_error_free(err);
    ivm_deferred_free(d);
    err = ivm_context_eval(a, "p", 1, NULL, &prun, &presult, &v, NULL);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_NUMBER && ivm_value_number(v) == 7.0);
    ivm_error_free(err);
    ivm_value_free(v);

    /* Rejected from C with a host error. */
    CHECK(eval_true(a, "globalThis.q = f('defer'); true"));
    d = host.deferred;
    host.deferred = NULL;
    CHECK(d != NULL);
    CHECK(ivm_deferred_reject(d, ivm_error_new_host("TypeError", 9, "later", 5, 7, 0)) == NULL);
    ivm_deferred_free(d);
    err = ivm_context_eval(a, "q", 1, NULL, &prun, &presult, &v, NULL);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_JS_EXCEPTION);
    ivm_error_name(err, &s, &n);
    CHECK(str_eq(s, n, "TypeError"));
    ivm_error_message(err, &s, &n);
    CHECK(str_eq(s, n, "later"));
    CHECK(err != NULL && ivm_error_host_token(err) == 7);
    ivm_error_free(err);

    /* Freed unsettled: the promise is rejected. */
    CHECK(eval_true(a, "globalThis.r = f('defer'); true"));
    d = host.deferred;
    host.deferred = NULL;
    ivm_deferred_free(d);
    s = "r.then(() => 'resolved', () => 'rejected')";
    err = ivm_context_eval(a, s, strlen(s), NULL, &prun, &presult, &v, NULL);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_STRING);
    ivm_value_string(v, &s, &n);
    CHECK(str_eq(s, n, "rejected"));
    ivm_error_free(err);
    ivm_value_free(v);
    CHECK(host.calls == 13);

    /* Settled from this thread while a queued job waits on the promise. */
    struct outcome o;
    memset(&o, 0, sizeof o);
    uint64_t job = 0;
    s = "f('defer')";
    err = ivm_context_eval_async(a, s, strlen(s), NULL, &prun, &presult, on_done, &o, &job);
    CHECK(err == NULL);
    ivm_error_free(err);
    for (int i = 0; i < 5000 && __atomic_load_n(&host.deferred, __ATOMIC_ACQUIRE) == NULL; i++) {
      sleep_ms(1);
    }
    d = __atomic_load_n(&host.deferred, __ATOMIC_ACQUIRE);
    host.deferred = NULL;
    CHECK(d != NULL);
    CHECK(__atomic_load_n(&o.done, __ATOMIC_ACQUIRE) == 0);
    CHECK(ivm_deferred_resolve(d, new_cstring("late")) == NULL);
    ivm_deferred_free(d);
    for (int i = 0; i < 5000 && !__atomic_load_n(&o.done, __ATOMIC_ACQUIRE); i++) sleep_ms(1);
    CHECK(o.done && o.job == job && o.error_kind == 0 && o.string_ok);

    /* A deferred outliving its isolate. */
    CHECK(eval_true(a, "globalThis.z = f('defer'); true"));
    host.pending = host.deferred;
    host.deferred = NULL;
  }

  /* ---- 4. References --------------------------------------------------------- */
  {
    ivm_reference_t *ref = NULL;
    ivm_value_t *args[2], *out = NULL;
    err = eval_flags(b, "(a, b) => a + b", IVM_RESULT_REFERENCE, 0, &v);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_REFERENCE);
    ivm_error_free(err);
    err = ivm_value_reference(v, &ref);
    CHECK(err == NULL && ref != NULL);
    ivm_error_free(err);
    ivm_value_free(v);
    ivm_reference_typeof(ref, &s, &n);
    CHECK(str_eq(s, n, "function"));

    args[0] = ivm_value_new_number(2);
    args[1] = ivm_value_new_number(3);
    err = ivm_reference_apply(ref, NULL, args, 2, NULL, NULL, &out, NULL);
    CHECK(err == NULL && ivm_value_kind(out) == IVM_VALUE_NUMBER && ivm_value_number(out) == 5.0);
    ivm_error_free(err);
    ivm_value_free(out);
    out = NULL;
    ivm_value_free(args[0]);
    ivm_value_free(args[1]);
    args[0] = new_cstring("a");
    args[1] = new_cstring("b");
    err = ivm_reference_apply(ref, NULL, args, 2, NULL, NULL, &out, NULL);
    ivm_value_string(out, &s, &n);
    CHECK(err == NULL && str_eq(s, n, "ab"));
    ivm_error_free(err);
    ivm_value_free(out);
    out = NULL;

    /* Not an ivm_value_reference: INVALID_ARGUMENT. */
    ivm_reference_t *bogus = NULL;
    err = ivm_value_reference(args[0], &bogus);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT && bogus == NULL);
    ivm_error_free(err);

    CHECK(ivm_reference_release(ref) == NULL);
    CHECK(ivm_reference_release(ref) == NULL);
    err = ivm_reference_apply(ref, NULL, args, 2, NULL, NULL, &out, NULL);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED && out == NULL);
    ivm_error_free(err);
    ivm_reference_typeof(ref, &s, &n);
    CHECK(str_eq(s, n, "function"));
    ivm_value_free(args[0]);
    ivm_value_free(args[1]);
    ivm_reference_free(ref);

    /* A reference to the global object: get, and a reference result. */
    ivm_reference_t *global = NULL, *math = NULL;
    ivm_result_options_t ropts = IVM_RESULT_OPTIONS_INIT;
    ropts.flags = IVM_RESULT_REFERENCE;
    CHECK(ivm_context_global(b, &global) == NULL);
    ivm_reference_typeof(global, &s, &n);
    CHECK(str_eq(s, n, "object"));
    ivm_value_t *key = new_cstring("Math");
    err = ivm_reference_get(global, key, 0, NULL, &ropts, &v, NULL);
    CHECK(err == NULL && ivm_value_kind(v) == IVM_VALUE_REFERENCE);
    ivm_error_free(err);
    CHECK(ivm_value_reference(v, &math) == NULL);
    ivm_value_free(v);
    ivm_value_free(key);
    key = new_cstring("PI");
    err = ivm_reference_get(math, key, 0, NULL, NULL, &v, NULL);
    CHECK(err == NULL && fabs(ivm_value_number(v) - 3.14159265358979) < 1e-9);
    ivm_error_free(err);
    ivm_value_free(v);
    ivm_value_free(key);
    ivm_reference_free(math);
    /* Disposing the isolate makes the reference DISPOSED. */
    CHECK(ivm_isolate_dispose(iso_b) == NULL);
    key = new_cstring("Math");
    err = ivm_reference_get(global, key, 0, NULL, NULL, &v, NULL);
    CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED);
    ivm_error_free(err);
    ivm_value_free(key);
    ivm_reference_free(global);
  }

  /* ---- 2b. The finalizer runs once the isolate holding the function is gone -- */
  CHECK(__atomic_load_n(&host.finalized, __ATOMIC_ACQUIRE) == 0);
  CHECK(ivm_isolate_dispose(iso_a) == NULL);
  err = ivm_deferred_resolve(host.pending, ivm_value_new_number(1));
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_DISPOSED);
  ivm_error_free(err);
  ivm_deferred_free(host.pending);
  ivm_context_free(a);
  ivm_isolate_free(iso_a);
  for (int i = 0; i < 1000 && __atomic_load_n(&host.finalized, __ATOMIC_ACQUIRE) == 0; i++) {
    sleep_ms(1);
  }
  CHECK(__atomic_load_n(&host.finalized, __ATOMIC_ACQUIRE) == 1);

  ivm_context_free(b);
  ivm_isolate_free(iso_b);

  /* ---- 5. Nothing left ------------------------------------------------------- */
  for (int i = 0; i < 1000 && ivm_debug_live_objects() != start_live; i++) sleep_ms(1);
  CHECK(ivm_debug_live_objects() == start_live);
  CHECK(ivm_external_copy_total_size() == start_total);
  sleep_ms(50);
  CHECK(__atomic_load_n(&host.finalized, __ATOMIC_ACQUIRE) == 1);

  return report();
}
