/* test_modules.c — ES modules through ivm.h alone: one module imports another
 * through a resolve callback, evaluates, and its namespace is read through a
 * reference; misuse gives errors. Exit status 0 on success. */
#include "ivm.h"

#include <string.h>

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
  ivm_error_t *err = ivm_isolate_compile_module(iso, code, strlen(code), NULL, &m);
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

int main(void) {
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
