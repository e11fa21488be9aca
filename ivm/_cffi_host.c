/* The host function of sync Callbacks (ivm/_callback.py), compiled into ivm's cffi extension
 * after ivm/_cffi_fast.c, whose ivm_py_result, ivm_py_is_int, ivm_py_safe_int,
 * ivm_py_primitive, ivm_py_value_primitive and IVM_PY_FAST_ARGS it uses.
 *
 * tools/gen_cffi.py (--fast) hands the part above the "definitions" line to cffi's cdef and
 * the whole file to its set_source (meson.build lists ivm/_cffi_fast.c first).
 */
/* The ivm_host_fn of Callback(mode="sync") (its user_data is the Callback's cffi handle, a
 * key of ivm._callback._live). The common call runs without cffi's callback machinery:
 * arguments that are numbers, strings, booleans, null or undefined become Python objects
 * here, the function is called through the C API, and an int (safe), float or None result
 * goes back in the call's primitive slot. Everything else is handed to Python: other
 * arguments to _ivm_py_host_fn (the whole call), other results and exceptions to
 * _ivm_py_host_finish (ivm._callback._tls.pending holds the value, for this thread).
 * Runs on the thread running the JavaScript; takes the GIL. */
ivm_error_t *ivm_py_host_call(void *user_data, ivm_call_t *call, ivm_value_t **out);
/* The Callback `user_data` is finalized: ivm_py_host_call forgets its function (it keeps the
 * last one it called). Takes the GIL. */
void ivm_py_host_forget(void *user_data);

/* --- definitions --- */

/* --- the host function of sync Callbacks --- */

/* cffi's extern "Python" functions (ivm/_cffi_extern.h), defined further down by cffi. */
static ivm_error_t *_ivm_py_host_fn(void *user_data, ivm_call_t *call, ivm_value_t **out);
static ivm_error_t *_ivm_py_host_finish(int failed, ivm_value_t **out);


/* What the fast path reads from Python, looked up once (under the GIL). */
static struct {
  PyObject *tls;        /* ivm._callback._tls (a threading.local) */
  PyObject *live;       /* ivm._callback._live */
  PyObject *errors;     /* the module ivm._errors */
  PyObject *errors_dict;   /* its namespace (borrowed): _saved_limit is read there */
  PyObject *undefined;  /* ivm.undefined */
  PyObject *fn_name, *pending_name, *saved_limit_name, *restore_name;
  /* The last Callback called: its handle (a reference, so that its address, the
   * user_data, cannot be another handle's while it is kept) and its function, until
   * ivm_py_host_forget (its finalization) lets go of them. */
  void *last_user_data;
  PyObject *last_handle, *last_fn;
} ivm_py_host;

static int ivm_py_host_init(void) {
  PyObject *callback, *value;
  if (ivm_py_host.live != NULL) return 1;
  callback = PyImport_ImportModule("ivm._callback");
  ivm_py_host.errors = PyImport_ImportModule("ivm._errors");
  value = PyImport_ImportModule("ivm._value");
  if (callback == NULL || ivm_py_host.errors == NULL || value == NULL) {
    Py_XDECREF(callback);
    Py_XDECREF(value);
    return 0;
  }
  ivm_py_host.undefined = PyObject_GetAttrString(value, "undefined");
  Py_DECREF(value);
  ivm_py_host.fn_name = PyUnicode_InternFromString("fn");
  ivm_py_host.pending_name = PyUnicode_InternFromString("pending");
  ivm_py_host.saved_limit_name = PyUnicode_InternFromString("_saved_limit");
  ivm_py_host.restore_name = PyUnicode_InternFromString("restore_recursion_limit");
  if (ivm_py_host.undefined == NULL || ivm_py_host.fn_name == NULL ||
      ivm_py_host.pending_name == NULL || ivm_py_host.saved_limit_name == NULL ||
      ivm_py_host.restore_name == NULL) {
    return 0;
  }
  ivm_py_host.errors_dict = PyModule_GetDict(ivm_py_host.errors);
  ivm_py_host.tls = PyObject_GetAttrString(callback, "_tls");
  ivm_py_host.live = PyObject_GetAttrString(callback, "_live");
  Py_DECREF(callback);
  return ivm_py_host.errors_dict != NULL && ivm_py_host.tls != NULL &&
         ivm_py_host.live != NULL && PyDict_Check(ivm_py_host.live);
}

/* The function of the Callback `user_data` (a new reference), or NULL (no exception set). */
static PyObject *ivm_py_host_function(void *user_data) {
  PyObject *key, *entry, *handle, *fn, *old_handle, *old_fn;
  if (user_data == ivm_py_host.last_user_data) {
    Py_INCREF(ivm_py_host.last_fn);
    return ivm_py_host.last_fn;
  }
  key = PyLong_FromVoidPtr(user_data);
  if (key == NULL) {
    PyErr_Clear();
    return NULL;
  }
  entry = PyDict_GetItemWithError(ivm_py_host.live, key); /* borrowed: (state, handle) */
  Py_DECREF(key);
  if (entry == NULL || !PyTuple_Check(entry) || PyTuple_Size(entry) != 2) {
    PyErr_Clear();
    return NULL;
  }
  handle = PyTuple_GetItem(entry, 1);
  fn = PyObject_GetAttr(PyTuple_GetItem(entry, 0), ivm_py_host.fn_name);
  if (fn == NULL) {
    PyErr_Clear();
    return NULL;
  }
  old_handle = ivm_py_host.last_handle;
  old_fn = ivm_py_host.last_fn;
  Py_INCREF(handle);
  Py_INCREF(fn);
  ivm_py_host.last_user_data = user_data;
  ivm_py_host.last_handle = handle;
  ivm_py_host.last_fn = fn;
  Py_XDECREF(old_handle); /* (after the update: a finalizer may call back in) */
  Py_XDECREF(old_fn);
  return fn; /* getattr's reference */
}

void ivm_py_host_forget(void *user_data) {
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject *handle = NULL, *fn = NULL;
  if (user_data != NULL && user_data == ivm_py_host.last_user_data) {
    handle = ivm_py_host.last_handle;
    fn = ivm_py_host.last_fn;
    ivm_py_host.last_user_data = NULL;
    ivm_py_host.last_handle = NULL;
    ivm_py_host.last_fn = NULL;
  }
  Py_XDECREF(handle);
  Py_XDECREF(fn);
  PyGILState_Release(gil);
}

/* Hands `value` (stolen) to _ivm_py_host_finish: a result to convert, or (failed) the
 * exception the function raised. */
static ivm_error_t *ivm_py_host_hand_over(int failed, PyObject *value, ivm_value_t **out) {
  int set = PyObject_SetAttr(ivm_py_host.tls, ivm_py_host.pending_name, value);
  Py_DECREF(value);
  if (set < 0) PyErr_Clear(); /* _ivm_py_host_finish then reports a missing value */
  return _ivm_py_host_finish(failed, out);
}

/* The pending exception, normalized, with its traceback (a new reference). */
static PyObject *ivm_py_host_exception(void) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value != NULL && tb != NULL) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  if (value == NULL) {
    Py_INCREF(Py_None);
    value = Py_None;
  }
  return value;
}

/* The result `r` (stolen) into the call's primitive slot, or to Python. */
static ivm_error_t *ivm_py_host_result(PyObject *r, ivm_primitive_t *slot, ivm_value_t **out) {
  long long v;
  if (PyLong_CheckExact(r)) {
    if (ivm_py_safe_int(r, &v)) {
      slot->kind = IVM_VALUE_NUMBER;
      slot->number = (double)v;
      Py_DECREF(r);
      return NULL;
    }
  } else if (PyFloat_CheckExact(r)) {
    slot->kind = IVM_VALUE_NUMBER;
    slot->number = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return NULL;
  } else if (r == Py_None) {
    slot->kind = IVM_VALUE_NULL;
    Py_DECREF(r);
    return NULL;
  }
  return ivm_py_host_hand_over(0, r, out);
}

/* Puts the recursion limit back if an error raised it (ivm._errors.restore_recursion_limit). */
static void ivm_py_host_restore_limit(void) {
  /* (A read of the module's dict: a third of a getattr's cost.) */
  PyObject *saved = PyDict_GetItemWithError(ivm_py_host.errors_dict, ivm_py_host.saved_limit_name);
  PyObject *r;
  if (saved != NULL && PyObject_IsTrue(saved) == 1) {
    r = PyObject_CallMethodObjArgs(ivm_py_host.errors, ivm_py_host.restore_name, NULL);
    Py_XDECREF(r);
  }
  PyErr_Clear();
}

ivm_error_t *ivm_py_host_call(void *user_data, ivm_call_t *call, ivm_value_t **out) {
  size_t argc = 0, i;
  ivm_primitive_t *slot = NULL;
  const ivm_primitive_t *view = ivm_call_view(call, &argc, &slot);
  PyGILState_STATE gil;
  PyObject *fn, *args, *r;
  ivm_error_t *err;
  if (argc > IVM_PY_FAST_ARGS || slot == NULL) return _ivm_py_host_fn(user_data, call, out);
  for (i = 0; i < argc; ++i) {
    ivm_value_kind_t k = view[i].kind;
    if (k != IVM_VALUE_NUMBER && k != IVM_VALUE_STRING && k != IVM_VALUE_BOOLEAN &&
        k != IVM_VALUE_NULL && k != IVM_VALUE_UNDEFINED) {
      return _ivm_py_host_fn(user_data, call, out);
    }
  }
  /* A thread without a Python thread state gets one from cffi's callback machinery, which
   * keeps it for the thread's later calls (PyGILState_Ensure alone would make and drop one
   * per call). */
  if (PyGILState_GetThisThreadState() == NULL) return _ivm_py_host_fn(user_data, call, out);
  gil = PyGILState_Ensure();
  fn = ivm_py_host_init() ? ivm_py_host_function(user_data) : NULL;
  if (fn == NULL) {
    PyErr_Clear();
    PyGILState_Release(gil);
    return _ivm_py_host_fn(user_data, call, out);
  }
  args = PyTuple_New((Py_ssize_t)argc);
  for (i = 0; args != NULL && i < argc; ++i) {
    /* (every kind let through above is a primitive: NULL means an exception) */
    PyObject *a = ivm_py_primitive(&view[i], ivm_py_host.undefined);
    if (a == NULL || PyTuple_SetItem(args, (Py_ssize_t)i, a) < 0) Py_CLEAR(args);
  }
  r = args != NULL ? PyObject_Call(fn, args, NULL) : NULL;
  Py_XDECREF(args);
  Py_DECREF(fn);
  if (r == NULL) {
    err = ivm_py_host_hand_over(1, ivm_py_host_exception(), out);
  } else {
    err = ivm_py_host_result(r, slot, out);
    if (err == NULL) ivm_py_host_restore_limit();
  }
  PyGILState_Release(gil);
  return err;
}
