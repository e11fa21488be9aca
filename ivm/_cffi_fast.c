/* C helpers compiled into ivm's cffi extension: the synchronous calls that return a value,
 * each made and classified in one C call (ivm/_call.py is their one Python caller).
 *
 * tools/gen_cffi.py (--fast) hands the part above the "definitions" line to cffi's cdef and
 * the whole file to its set_source, after #include "ivm.h". The cdef part must stay what
 * cffi parses: typedefs, enums and prototypes.
 */
typedef struct ivm_py_result {
  ivm_primitive_t slot;   /* the primitive_out of the call */
  int64_t integer;        /* IVM_PY_INTEGER: the number, as an integer */
  ivm_error_t *error;     /* IVM_PY_ERROR: the call's error (owned by the caller) */
} ivm_py_result_t;

/* What a call returned, beyond the IVM_VALUE_* kinds of ivm_primitive_t (0: `out` holds
 * a value). A number is IVM_PY_INTEGER when Python shows it as an int: integral, within
 * +-(2**53 - 1), and not -0 (docs/values.md); any other number is IVM_VALUE_NUMBER. */
enum { IVM_PY_ERROR = -1, IVM_PY_INTEGER = 100 };

int ivm_py_eval(ivm_context_t *ctx, const char *code, size_t code_len,
                const ivm_source_options_t *source, const ivm_run_options_t *run,
                const ivm_result_options_t *result, ivm_value_t **out, ivm_py_result_t *res);
int ivm_py_script_run(ivm_script_t *script, ivm_context_t *ctx, const ivm_run_options_t *run,
                      const ivm_result_options_t *result, ivm_value_t **out,
                      ivm_py_result_t *res);
int ivm_py_apply(ivm_reference_t *ref, const ivm_value_t *receiver, ivm_value_t *const *args,
                 size_t nargs, const ivm_run_options_t *run, const ivm_result_options_t *result,
                 ivm_value_t **out, ivm_py_result_t *res);

/* --- definitions --- */

static int ivm_py_classify(ivm_error_t *err, ivm_py_result_t *res) {
  const double max_safe = 9007199254740991.0; /* 2**53 - 1 */
  double x;
  if (err != NULL) {
    res->error = err;
    return IVM_PY_ERROR;
  }
  if (res->slot.kind != IVM_VALUE_NUMBER) return (int)res->slot.kind;
  x = res->slot.number;
  /* -0 is not an int: its sign bit would be lost (1/x is -inf for it). */
  if (x >= -max_safe && x <= max_safe && x == (double)(int64_t)x && (x != 0 || 1 / x > 0)) {
    res->integer = (int64_t)x;
    return IVM_PY_INTEGER;
  }
  return IVM_VALUE_NUMBER;
}

int ivm_py_eval(ivm_context_t *ctx, const char *code, size_t code_len,
                const ivm_source_options_t *source, const ivm_run_options_t *run,
                const ivm_result_options_t *result, ivm_value_t **out, ivm_py_result_t *res) {
  return ivm_py_classify(
      ivm_context_eval(ctx, code, code_len, source, run, result, out, &res->slot), res);
}

int ivm_py_script_run(ivm_script_t *script, ivm_context_t *ctx, const ivm_run_options_t *run,
                      const ivm_result_options_t *result, ivm_value_t **out,
                      ivm_py_result_t *res) {
  return ivm_py_classify(ivm_script_run(script, ctx, run, result, out, &res->slot), res);
}

int ivm_py_apply(ivm_reference_t *ref, const ivm_value_t *receiver, ivm_value_t *const *args,
                 size_t nargs, const ivm_run_options_t *run, const ivm_result_options_t *result,
                 ivm_value_t **out, ivm_py_result_t *res) {
  return ivm_py_classify(
      ivm_reference_apply(ref, receiver, args, nargs, run, result, out, &res->slot), res);
}
