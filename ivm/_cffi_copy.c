/* ExternalCopy's C paths, compiled into ivm's cffi extension right after ivm/_cffi_fast.c,
 * whose ivm_py_result, ivm_py_call, ivm_py_general, ivm_py_bool_keywords, ivm_py_classify
 * and ivm_py_slot_offset these use, and which calls them (declared there):
 *   - ExternalCopy.copy_into as a C method (ivm_py_copy_into_method);
 *   - an external_copy=True result of a C call path as an ExternalCopy (ivm_py_copy_result);
 *   - a CopyInto marker's value for Reference.set_sync's C method (ivm_py_marker).
 * Each makes its Python objects as the Python code does (a cffi pointer that ffi.gc frees,
 * in a slot of an instance made without __init__, as cls.__new__ does) with no Python frame
 * and no cffi call: after a 64 MiB fill every line of code is cold, and bench/run.py's move
 * pays for each one.
 *
 * tools/gen_cffi.py (--fast) hands the part above the "definitions" line to cffi's cdef and
 * the whole file to its set_source (meson.build lists it after ivm/_cffi_fast.c).
 */
/* `value`'s address if it is a marker as ivm_external_copy_copy_into() makes it (the stream
 * `_att(0)` and one copy attachment), else 0: what Reference.set_sync's C method checks of a
 * CopyInto's value, which may be any `ivm_value_t *` (CopyInto is a public class). */
uintptr_t ivm_py_marker_address(const ivm_value_t *value);

/* --- definitions --- */

uintptr_t ivm_py_marker_address(const ivm_value_t *value) {
  static const char stream[] = "\x80\x05" "civm._copy\n_att\nK\x00\x85R."; /* (copy.h's) */
  const char *data = NULL;
  size_t len = 0;
  if (value == NULL || ivm_value_kind(value) != IVM_VALUE_SERIALIZED ||
      ivm_value_attachment_count(value) != 1 ||
      ivm_value_attachment_kind(value, 0) != IVM_ATTACHMENT_COPY) {
    return 0;
  }
  ivm_value_serialized(value, &data, &len);
  if (len != sizeof stream - 1 || memcmp(data, stream, len) != 0) return 0;
  return (uintptr_t)value;
}

/* A new instance of the class `type` (made as cls.__new__(cls) makes it: no __init__) whose
 * slot at `offset` holds a cffi pointer of the ctype `ctype` to `p`, which ffi.gc frees with
 * `free_fn` (a cffi function) when the pointer object goes. NULL (an exception set) when
 * Python failed; `p` is then freed with `free_c`. */
static PyObject *ivm_py_owning(PyObject *type, Py_ssize_t offset, PyObject *ctype, void *p,
                               PyObject *free_fn, void (*free_c)(void *)) {
  PyObject *raw, *owner, *o;
  Py_INCREF(type); /* (the allocations below may run a __del__ that imports ivm again) */
  raw = _cffi_from_c_pointer((char *)p, (struct _cffi_ctypedescr *)ctype);
  owner = raw != NULL ? PyObject_CallFunctionObjArgs(ivm_py_call.gc, raw, free_fn, NULL) : NULL;
  o = owner != NULL ? ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 0) : NULL;
  Py_XDECREF(raw);
  Py_DECREF(type);
  if (o == NULL) {
    if (owner == NULL) free_c(p); /* (else the owner frees it as it goes) */
    Py_XDECREF(owner);
    return NULL;
  }
  *(PyObject **)((char *)o + offset) = owner; /* (the slot is empty: tp_alloc zeroes it) */
  return o;
}

static void ivm_py_free_copy(void *p) { ivm_external_copy_free((ivm_external_copy_t *)p); }
static void ivm_py_free_value(void *p) { ivm_value_free((ivm_value_t *)p); }

static PyObject *ivm_py_copy_result(ivm_py_result_t *res) {
  ivm_external_copy_t *copy = NULL;
  ivm_error_t *err = ivm_value_external_copy(res->value, &copy);
  ivm_value_free(res->value);
  res->value = NULL;
  if (err != NULL) { /* (not seen: the kind was checked) */
    ivm_error_free(err);
    PyErr_SetString(PyExc_RuntimeError, "ivm: an external copy result without its copy");
    return NULL;
  }
  return ivm_py_owning(ivm_py_call.external_copy_type, ivm_py_call.ptr_offset,
                       ivm_py_call.copy_ctype, copy, ivm_py_call.copy_free, ivm_py_free_copy);
}

/* cffi's conversion of the pointer object `owner` (a cdata of `ctype` or one cffi converts to
 * it, as for a cffi call's argument: `void *` too) to its address; NULL with an exception set
 * for any other object, and NULL with none for a NULL pointer. `owner` is held meanwhile: a
 * conversion that warns (cffi 1.x, for a `char *`) runs Python code, which may drop it. */
static void *ivm_py_pointer(PyObject *owner, PyObject *ctype) {
  void *p;
  Py_INCREF(owner);
  p = _cffi_to_c_pointer(owner, (struct _cffi_ctypedescr *)ctype);
  Py_DECREF(owner);
  return p;
}

/* ExternalCopy.copy_into(*, release=False, transfer_in=False) with each keyword given exactly
 * True or False; any other call goes to ExternalCopy._copy_into, which refuses it (that of
 * the object's own class when it comes from an import of ivm before the newest one). */
static PyObject *ivm_py_copy_into_python(PyObject *self, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames) {
  PyObject *full, *r;
  if (ivm_py_call.copy_ready &&
      PyObject_TypeCheck(self, (PyTypeObject *)ivm_py_call.external_copy_type)) {
    return ivm_py_general(ivm_py_call.copy_into_full, self, args, nargs, kwnames);
  }
  full = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_copy_into");
  if (full == NULL) return NULL;
  r = ivm_py_general(full, self, args, nargs, kwnames);
  Py_DECREF(full);
  return r;
}

static PyObject *ivm_py_copy_into_method(PyObject *self, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const names[] = {"release", "transfer_in"};
  static const uint32_t bits[] = {IVM_COPY_INTO_RELEASE, IVM_COPY_INTO_TRANSFER_IN};
  static PyObject *interned[2];
  ivm_external_copy_t *copy;
  PyObject *owner;
  ivm_value_t *out = NULL;
  ivm_error_t *err;
  uint32_t flags = 0;
  int plain = nargs == 0 && ivm_py_bool_keywords(kwnames, args, 2, names, bits, interned, &flags);
  /* From the slot _ptr, not ivm_py_handle: a new ExternalCopy has no _addr yet, and its
   * Python method Handle._address costs more than the whole call (cold, after a big fill). */
  owner = ivm_py_call.copy_ready ? *(PyObject **)((char *)self + ivm_py_call.ptr_offset) : NULL;
  if (!plain || owner == NULL ||
      !PyObject_TypeCheck(self, (PyTypeObject *)ivm_py_call.external_copy_type)) {
    return ivm_py_copy_into_python(self, args, nargs, kwnames);
  }
  copy = (ivm_external_copy_t *)ivm_py_pointer(owner, ivm_py_call.copy_ctype);
  if (copy == NULL && PyErr_Occurred()) return NULL; /* (ffi.NULL: libivm refuses it) */
  err = ivm_external_copy_copy_into(copy, flags, &out); /* (blocks never, runs no Python) */
  if (err != NULL) {
    ivm_py_classify(err);
    return PyObject_CallNoArgs(ivm_py_call.finish); /* (raises it) */
  }
  return ivm_py_owning(ivm_py_call.copy_into_type, ivm_py_call.value_offset,
                       ivm_py_call.value_ctype, out, ivm_py_call.value_free, ivm_py_free_value);
}

/* For a CopyInto marker `o` whose value copy_into() made: a new reference to that value's
 * cffi object (its owner), which the caller holds until the call is over (the value is
 * borrowed: a sync call borrows its arguments), and the value in *value. NULL (no exception
 * set) for any other object. */
static PyObject *ivm_py_marker(PyObject *o, ivm_value_t **value) {
  PyObject *owner;
  if ((PyObject *)Py_TYPE(o) != ivm_py_call.copy_into_type) return NULL;
  if (!ivm_py_call.copy_ready) return NULL;
  owner = *(PyObject **)((char *)o + ivm_py_call.value_offset);
  if (owner == NULL) return NULL; /* (made by CopyInto.__new__ alone) */
  Py_INCREF(owner);
  *value = (ivm_value_t *)ivm_py_pointer(owner, ivm_py_call.value_ctype);
  if (*value == NULL || ivm_py_marker_address(*value) == 0) {
    PyErr_Clear(); /* (the general path converts or refuses it) */
    Py_DECREF(owner);
    return NULL;
  }
  return owner;
}

/* Reads what the functions above need (once per import of ivm: ivm._external_copy's classes
 * are made again), and sets them all only if every one was read. 1, or 0 with an exception
 * set. */
static int ivm_py_external_copy_install(void) {
  PyObject *module = PyImport_ImportModule("ivm._external_copy"); /* importing: in sys.modules */
  PyObject *ffi_module = module != NULL ? PyImport_ImportModule("ivm._ffi") : NULL;
  PyObject *ffi = ffi_module != NULL ? PyObject_GetAttrString(ffi_module, "ffi") : NULL;
  PyObject *lib = ffi != NULL ? PyObject_GetAttrString(ffi_module, "lib") : NULL;
  PyObject *got[7] = {NULL};
  PyObject **slots[7] = {&ivm_py_call.copy_into_type, &ivm_py_call.external_copy_type,
                         &ivm_py_call.gc, &ivm_py_call.value_ctype, &ivm_py_call.copy_ctype,
                         &ivm_py_call.value_free, &ivm_py_call.copy_free};
  Py_ssize_t value_offset = 0, ptr_offset = 0;
  int i, ok = 0;
  if (lib == NULL) goto done;
  if ((got[0] = PyObject_GetAttrString(module, "CopyInto")) == NULL ||
      (got[1] = PyObject_GetAttrString(module, "ExternalCopy")) == NULL ||
      (got[2] = PyObject_GetAttrString(ffi, "gc")) == NULL ||
      (got[3] = PyObject_CallMethod(ffi, "typeof", "s", "ivm_value_t *")) == NULL ||
      (got[4] = PyObject_CallMethod(ffi, "typeof", "s", "ivm_external_copy_t *")) == NULL ||
      (got[5] = PyObject_GetAttrString(lib, "ivm_value_free")) == NULL ||
      (got[6] = PyObject_GetAttrString(lib, "ivm_external_copy_free")) == NULL) {
    goto done;
  }
  if (!PyType_Check(got[0]) || !PyType_Check(got[1])) {
    PyErr_SetString(PyExc_TypeError, "ivm: CopyInto and ExternalCopy must be classes");
    goto done;
  }
  if ((value_offset = ivm_py_slot_offset(got[0], "_value")) == 0 ||
      (ptr_offset = ivm_py_slot_offset(got[1], "_ptr")) == 0) {
    goto done;
  }
  for (i = 0; i < 7; ++i) {
    Py_XSETREF(*slots[i], got[i]);
    got[i] = NULL;
  }
  ivm_py_call.value_offset = value_offset;
  ivm_py_call.ptr_offset = ptr_offset;
  ivm_py_call.copy_ready = ok = 1;
done:
  for (i = 0; i < 7; ++i) Py_XDECREF(got[i]);
  Py_XDECREF(lib);
  Py_XDECREF(ffi);
  Py_XDECREF(ffi_module);
  Py_XDECREF(module);
  return ok;
}
