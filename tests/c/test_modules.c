/* test_modules.c — ES modules through ivm.h alone: one module imports another
 * through a resolve callback, evaluates, and its namespace is read through a
 * reference; misuse gives errors; the same graph in a worker-hosted isolate.
 * Exit status 0 on success. */
#define _POSIX_C_SOURCE 200809L
#include "ivm.h"

#include <string.h>
#include <time.h>

#include "check.h"

struct graph {
  ivm_module_t *main;
  ivm_module_t *lib;
  int calls;
};

static ivm_error_t *resolve(void *user_data, const char *specifier, size_t len,
                            ivm_module_t *referrer, ivm_module_t **out) {
  struct graph *g = user_data;
  g->calls++;
  if (referrer == g->main && len == 3 && memcmp(specifier, "lib", 3) == 0) {
    *out = g->lib;
    return NULL;
  }
  return ivm_error_new_host("Error", 5, "unknown module", 14, 0, 0);
}

static ivm_module_t *compile(ivm_isolate_t *iso, const char *code) {
  ivm_module_t *m = NULL;
  ivm_error_t *err = ivm_isolate_compile_module(iso, code, strlen(code), NULL, NULL, &m);
  CHECK(err == NULL);
  ivm_error_free(err);
  return m;
}

static double read_export(ivm_module_t *m, const char *name) {
  ivm_result_options_t as_ref = IVM_RESULT_OPTIONS_INIT;
  as_ref.flags = IVM_RESULT_REFERENCE;
  ivm_value_t *ns = NULL, *v = NULL;
  ivm_reference_t *ref = NULL;
  double result = -1;
  if (ivm_module_namespace(m, &as_ref, &ns) == NULL && ivm_value_reference(ns, &ref) == NULL) {
    ivm_value_t *key = ivm_value_new_string(name, strlen(name));
    if (ivm_reference_get(ref, key, 0, NULL, NULL, &v, NULL) == NULL) {
      result = ivm_value_number(v);
    }
    ivm_value_free(key);
  }
  ivm_value_free(v);
  ivm_reference_free(ref);
  ivm_value_free(ns);
  return result;
}

/* For the worker: resolves "lib" to `lib`, "null" to nothing, "inline" to a
 * module of another (inline) isolate. */
struct remote_graph {
  ivm_module_t *lib;
  ivm_module_t *foreign;
  int calls;
};

static ivm_error_t *remote_resolve(void *user_data, const char *specifier, size_t len,
                                   ivm_module_t *referrer, ivm_module_t **out) {
  struct remote_graph *g = user_data;
  (void)referrer;
  g->calls++;
  if (len == 3 && memcmp(specifier, "lib", 3) == 0) *out = g->lib;
  if (len == 6 && memcmp(specifier, "inline", 6) == 0) *out = g->foreign;
  return NULL;
}

struct done_slot {
  int done;
  ivm_completion_kind_t kind;
  ivm_error_kind_t error;
};

static void on_done(void *user_data, const ivm_completion_t *c) {
  struct done_slot *slot = user_data;
  slot->kind = c->kind;
  slot->error = c->error != NULL ? ivm_error_kind(c->error) : 0;
  ivm_error_free(c->error);
  if (c->kind == IVM_COMPLETION_VALUE) ivm_value_free(c->result.value);
  __atomic_store_n(&slot->done, 1, __ATOMIC_RELEASE);
}

static int error_kind(ivm_error_t *err) {
  int kind = err != NULL ? (int)ivm_error_kind(err) : 0;
  ivm_error_free(err);
  return kind;
}

/* The same calls on an isolate in a worker: the host runs the resolver. */
static void test_in_a_worker(void) {
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  ivm_isolate_t *iso = NULL, *inline_iso = NULL;
  ivm_context_t *ctx = NULL;
  ivm_value_t *out = NULL;
  ivm_primitive_t prim;
  struct remote_graph g = {0};
  struct done_slot slot = {0};
  uint64_t job = 0;
  size_t count = 0;
  int i;
  opts.placement = IVM_PLACEMENT_PROCESS;
  CHECK(ivm_isolate_new(&opts, &iso) == NULL);
  CHECK(ivm_isolate_new(NULL, &inline_iso) == NULL);
  if (iso == NULL || inline_iso == NULL) return;
  CHECK(ivm_isolate_create_context(iso, NULL, &ctx) == NULL);
  g.lib = compile(iso, "export const x = 40;");
  g.foreign = compile(inline_iso, "export const x = 1;");
  ivm_module_t *main_m = compile(iso, "import {x} from 'lib'; globalThis.y = x + await 2;");
  ivm_module_t *none = compile(iso, "import 'null';");
  ivm_module_t *other = compile(iso, "import 'inline';");
  CHECK(ivm_module_dependency_count(main_m, &count) == NULL && count == 1);

  CHECK(error_kind(ivm_module_instantiate(none, ctx, remote_resolve, &g)) ==
        IVM_ERROR_INVALID_ARGUMENT);
  CHECK(error_kind(ivm_module_instantiate(other, ctx, remote_resolve, &g)) ==
        IVM_ERROR_INVALID_ARGUMENT);
  CHECK(error_kind(ivm_module_instantiate(g.foreign, ctx, remote_resolve, &g)) ==
        IVM_ERROR_INVALID_ARGUMENT);
  /* The async twin reports through `done`, as inline. */
  CHECK(ivm_module_instantiate_async(none, ctx, remote_resolve, &g, on_done, &slot, &job) == NULL);
  CHECK(slot.done && slot.error == IVM_ERROR_INVALID_ARGUMENT);
  slot.done = 0;
  CHECK(ivm_module_instantiate_async(main_m, ctx, remote_resolve, &g, on_done, &slot, &job) ==
        NULL);
  for (i = 0; i < 60000 && !__atomic_load_n(&slot.done, __ATOMIC_ACQUIRE); i++) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  CHECK(slot.done && slot.error == 0 && slot.kind == IVM_COMPLETION_VALUE);
  CHECK(error_kind(ivm_module_instantiate(main_m, ctx, remote_resolve, &g)) ==
        IVM_ERROR_INVALID_ARGUMENT);

  ivm_result_options_t wait = IVM_RESULT_OPTIONS_INIT;
  wait.flags = IVM_RESULT_PROMISE;
  CHECK(ivm_module_evaluate(main_m, NULL, &wait, &out, NULL) == NULL);
  ivm_value_free(out);
  out = NULL;
  CHECK(ivm_context_eval(ctx, "y", 1, NULL, NULL, NULL, &out, &prim) == NULL);
  CHECK(out == NULL && prim.kind == IVM_VALUE_NUMBER && prim.number == 42);
  ivm_result_options_t as_ref = IVM_RESULT_OPTIONS_INIT;
  as_ref.flags = IVM_RESULT_REFERENCE;   /* a reference into the worker */
  CHECK(ivm_module_namespace(main_m, &as_ref, &out) == NULL);
  CHECK(out != NULL && ivm_value_kind(out) == IVM_VALUE_REFERENCE);
  ivm_value_free(out);
  out = NULL;

  CHECK(ivm_module_release(g.lib) == NULL);
  CHECK(error_kind(ivm_module_evaluate(g.lib, NULL, NULL, &out, NULL)) == IVM_ERROR_DISPOSED);
  ivm_module_free(main_m);
  ivm_module_free(none);
  ivm_module_free(other);
  ivm_module_free(g.lib);
  ivm_module_free(g.foreign);
  ivm_context_free(ctx);
  ivm_isolate_free(iso);
  ivm_isolate_free(inline_iso);
}

/* Import attributes reach a v2 resolve function through the request index. */
struct attr_graph {
  ivm_module_t *json, *code;
  int calls;
};

static ivm_error_t *resolve_request(void *user_data, ivm_module_t *referrer, size_t request,
                                    ivm_module_t **out) {
  struct attr_graph *g = user_data;
  size_t n = 0;
  ivm_error_t *err = ivm_module_dependency_attribute_count(referrer, request, &n);
  g->calls++;
  if (err != NULL) return err;
  *out = n == 1 ? g->json : g->code;
  return NULL;
}

static void test_attributes(uint32_t placement) {
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  ivm_isolate_t *iso = NULL;
  ivm_context_t *ctx = NULL;
  ivm_value_t *out = NULL;
  ivm_primitive_t prim;
  struct attr_graph g = {0};
  size_t n = 9, key_len = 0, value_len = 0;
  const char *key = NULL, *value = NULL;
  opts.placement = placement;
  CHECK(ivm_isolate_new(&opts, &iso) == NULL);
  if (iso == NULL) return;
  CHECK(ivm_isolate_create_context(iso, NULL, &ctx) == NULL);
  ivm_module_t *m = compile(iso, "import a from 'x' assert {type: 'json'};\n"
                                 "import b from 'x'; globalThis.r = 10 * a + b;");
  CHECK(ivm_module_dependency_count(m, &n) == NULL && n == 2);
  CHECK(ivm_module_dependency_attribute_count(m, 0, &n) == NULL && n == 1);
  CHECK(ivm_module_dependency_attribute(m, 0, 0, &key, &key_len, &value, &value_len) == NULL &&
        key_len == 4 && memcmp(key, "type", 4) == 0 && value_len == 4 &&
        memcmp(value, "json", 4) == 0);
  CHECK(ivm_module_dependency_attribute_count(m, 1, &n) == NULL && n == 0);
  CHECK(error_kind(ivm_module_dependency_attribute(m, 1, 0, &key, &key_len, &value,
                                                   &value_len)) == IVM_ERROR_INVALID_ARGUMENT);
  CHECK(error_kind(ivm_module_dependency_attribute_count(m, 2, &n)) ==
        IVM_ERROR_INVALID_ARGUMENT);
  g.json = compile(iso, "export default 1;");
  g.code = compile(iso, "export default 2;");
  CHECK(ivm_module_instantiate_v2(m, ctx, resolve_request, &g) == NULL && g.calls == 2);
  ivm_result_options_t wait = IVM_RESULT_OPTIONS_INIT;
  wait.flags = IVM_RESULT_PROMISE;
  CHECK(ivm_module_evaluate(m, NULL, &wait, &out, NULL) == NULL);
  ivm_value_free(out);
  out = NULL;
  CHECK(ivm_context_eval(ctx, "r", 1, NULL, NULL, NULL, &out, &prim) == NULL);
  CHECK(out == NULL && prim.kind == IVM_VALUE_NUMBER && prim.number == 12);
  ivm_module_free(m);
  ivm_module_free(g.json);
  ivm_module_free(g.code);
  ivm_context_free(ctx);
  ivm_isolate_free(iso);
}

int main(void) {
  uint64_t baseline = ivm_debug_live_objects();
  test_in_a_worker();
  test_attributes(IVM_PLACEMENT_INLINE);
  test_attributes(IVM_PLACEMENT_PROCESS);
  CHECK(ivm_debug_live_objects() == baseline);
  ivm_isolate_t *iso = NULL;
  ivm_context_t *ctx = NULL;
  CHECK(ivm_isolate_new(NULL, &iso) == NULL);
  CHECK(ivm_isolate_create_context(iso, NULL, &ctx) == NULL);

  struct graph g = {0};
  g.main = compile(iso, "import {x, f} from 'lib'; export const y = x + f() + await 1;");
  g.lib = compile(iso, "export const x = 20; export function f() { return x + 1; }");
  size_t count = 0;
  const char *spec = NULL;
  size_t spec_len = 0;
  CHECK(ivm_module_dependency_count(g.main, &count) == NULL && count == 1);
  CHECK(ivm_module_dependency_specifier(g.main, 0, &spec, &spec_len) == NULL &&
        spec_len == 3 && memcmp(spec, "lib", 3) == 0);
  ivm_error_t *err = ivm_module_dependency_specifier(g.main, 1, &spec, &spec_len);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT);
  ivm_error_free(err);

  /* Before instantiation: evaluation is refused. */
  ivm_value_t *out = NULL;
  err = ivm_module_evaluate(g.main, NULL, NULL, &out, NULL);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_INVALID_ARGUMENT);
  ivm_error_free(err);

  CHECK(ivm_module_instantiate(g.main, ctx, resolve, &g) == NULL);
  CHECK(g.calls == 1);
  ivm_result_options_t wait = IVM_RESULT_OPTIONS_INIT;
  wait.flags = IVM_RESULT_PROMISE;
  CHECK(ivm_module_evaluate(g.main, NULL, &wait, &out, NULL) == NULL);
  CHECK(out != NULL && ivm_value_kind(out) == IVM_VALUE_UNDEFINED);
  ivm_value_free(out);
  CHECK(read_export(g.main, "y") == 42);
  CHECK(read_export(g.lib, "x") == 20);

  /* A resolver's error is the instantiation's error. */
  ivm_module_t *bad = compile(iso, "import 'nowhere';");
  err = ivm_module_instantiate(bad, ctx, resolve, &g);
  CHECK(err != NULL && ivm_error_kind(err) == IVM_ERROR_JS_EXCEPTION);
  ivm_error_free(err);

  CHECK(ivm_module_release(g.lib) == NULL);
  CHECK(ivm_module_release(g.lib) == NULL);
  ivm_module_free(bad);
  ivm_module_free(g.main);
  ivm_module_free(g.lib);
  ivm_module_free(NULL);
  ivm_context_free(ctx);
  CHECK(ivm_isolate_dispose(iso) == NULL);
  ivm_isolate_free(iso);
  return report();
}
