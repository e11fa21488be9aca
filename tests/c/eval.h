/* eval.h — the evaluation helper of the C test programs that pass result
 * flags and a timeout. */
#ifndef IVM_TEST_EVAL_H
#define IVM_TEST_EVAL_H

#include "ivm.h"

#include <string.h>

static inline ivm_error_t *eval_flags(ivm_context_t *ctx, const char *code, uint32_t flags,
                                      uint64_t timeout_ns, ivm_value_t **out) {
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  run.timeout_ns = timeout_ns;
  result.flags = flags;
  return ivm_context_eval(ctx, code, strlen(code), NULL, &run, &result, out, NULL);
}

#endif
