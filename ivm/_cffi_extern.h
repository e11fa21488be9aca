/* Python functions that libivm calls back (cffi extern "Python"); appended to the cdef. */
extern "Python" void _ivm_py_done(void *user_data, uint64_t job, void *result, ivm_error_t *error);
