/* Python functions that libivm calls back (cffi extern "Python"); appended to the cdef. */
extern "Python" void _ivm_py_done(void *user_data, const ivm_completion_t *completion);
extern "Python" ivm_error_t *_ivm_py_host_fn(void *user_data, ivm_call_t *call, ivm_value_t **out);
extern "Python" void _ivm_py_callback_finalize(void *user_data);
extern "Python" ivm_error_t *_ivm_py_resolve(void *user_data, ivm_module_t *referrer, size_t request, ivm_module_t **out);
extern "Python" void _ivm_py_catastrophic(void *user_data, const char *cause, size_t cause_len);
extern "Python" void _ivm_py_inspector_message(void *user_data, uint32_t kind, int32_t call_id, const char *message, size_t message_len);
extern "Python" ivm_error_t *_ivm_py_host_finish(int failed, ivm_value_t **out);
