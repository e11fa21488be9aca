/* C helpers compiled into ivm's cffi extension: the synchronous calls that return a value,
 * each made and classified in one C call (ivm/_call.py is their one Python caller).
 *
 * Each returns its result when it is a number that Python shows as an int (integral, within
 * +-(2**53 - 1), and not -0: docs/values.md), as an int64_t; otherwise IVM_PY_NOT_INTEGER,
 * and ivm_py_last() then holds the outcome. That record is this thread's, and is rewritten
 * by the next of these calls on the thread (a nested call, from a host function, is read
 * before the call around it returns): read it right after the call.
 *
 * tools/gen_cffi.py (--fast) hands the part above the "definitions" line to cffi's cdef and
 * the whole file to its set_source, after #include "ivm.h". The cdef part must stay what
 * cffi parses: typedefs, enums, constants and prototypes.
 */
typedef struct ivm_py_result {
  int32_t kind;           /* IVM_PY_ERROR; 0: `value` holds the result; else an IVM_VALUE_* */
  ivm_primitive_t slot;   /* the call's primitive_out: undefined, null, a boolean or a number */
  ivm_value_t *value;     /* kind 0: the result, owned by the caller */
  ivm_error_t *error;     /* IVM_PY_ERROR: the call's error, owned by the caller */
} ivm_py_result_t;

enum { IVM_PY_ERROR = -1 };
#define IVM_PY_NOT_INTEGER 9007199254740992 /* 2**53: never a safe integer */

int64_t ivm_py_eval(ivm_context_t *ctx, const char *code, size_t code_len,
                    const ivm_source_options_t *source, const ivm_run_options_t *run,
                    const ivm_result_options_t *result);
int64_t ivm_py_script_run(ivm_script_t *script, ivm_context_t *ctx, const ivm_run_options_t *run,
                          const ivm_result_options_t *result);
int64_t ivm_py_apply(ivm_reference_t *ref, const ivm_value_t *receiver, ivm_value_t *const *args,
                     size_t nargs, const ivm_run_options_t *run,
                     const ivm_result_options_t *result);
ivm_py_result_t *ivm_py_last(void);

/* --- definitions --- */

static _Thread_local ivm_py_result_t ivm_py_result;

ivm_py_result_t *ivm_py_last(void) { return &ivm_py_result; }

static int64_t ivm_py_classify(ivm_error_t *err) {
  const double max_safe = 9007199254740991.0; /* 2**53 - 1 */
  ivm_py_result_t *res = &ivm_py_result;
  double x;
  if (err != NULL) {
    res->kind = IVM_PY_ERROR;
    res->error = err;
    return IVM_PY_NOT_INTEGER;
  }
  res->kind = (int32_t)res->slot.kind;
  if (res->slot.kind != IVM_VALUE_NUMBER) return IVM_PY_NOT_INTEGER;
  x = res->slot.number;
  /* -0 is not an int: its sign would be lost (1 / x is -inf for it). */
  if (x >= -max_safe && x <= max_safe && x == (double)(int64_t)x && (x != 0 || 1 / x > 0)) {
    return (int64_t)x;
  }
  return IVM_PY_NOT_INTEGER;
}

int64_t ivm_py_eval(ivm_context_t *ctx, const char *code, size_t code_len,
                    const ivm_source_options_t *source, const ivm_run_options_t *run,
                    const ivm_result_options_t *result) {
  ivm_py_result_t *res = &ivm_py_result;
  return ivm_py_classify(
      ivm_context_eval(ctx, code, code_len, source, run, result, &res->value, &res->slot));
}

int64_t ivm_py_script_run(ivm_script_t *script, ivm_context_t *ctx, const ivm_run_options_t *run,
                          const ivm_result_options_t *result) {
  ivm_py_result_t *res = &ivm_py_result;
  return ivm_py_classify(ivm_script_run(script, ctx, run, result, &res->value, &res->slot));
}

int64_t ivm_py_apply(ivm_reference_t *ref, const ivm_value_t *receiver, ivm_value_t *const *args,
                     size_t nargs, const ivm_run_options_t *run,
                     const ivm_result_options_t *result) {
  ivm_py_result_t *res = &ivm_py_result;
  return ivm_py_classify(
      ivm_reference_apply(ref, receiver, args, nargs, run, result, &res->value, &res->slot));
}
