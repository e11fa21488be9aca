/* C helpers compiled into ivm's cffi extension: the synchronous calls that return a value,
 * each made and classified in one C call (ivm/_call.py is their one Python caller), the
 * builtin APPLY_FAST (Reference.apply_sync without options: arguments, call and result in
 * one C call), the C methods that stand for Reference.apply_sync, Context.eval_sync,
 * Script.run_sync and Reference.set_sync (ivm_py_install_method: the call without options
 * with no Python frame). The host function of sync Callbacks (ivm_py_host_call) is in
 * ivm/_cffi_host.c.
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
/* The same calls with every option at its default (NULL option structs, no receiver): each
 * pointer argument fewer is one conversion fewer in cffi's wrapper (about 120 instructions). */
int64_t ivm_py_eval_plain(ivm_context_t *ctx, const char *code, size_t code_len);
int64_t ivm_py_script_run_plain(ivm_script_t *script, ivm_context_t *ctx);
/* Makes ivm._call.APPLY_FAST, a CPython builtin (not a cffi function) for the common
 * Reference.apply_sync(None, arguments): APPLY_FAST(address, arguments), `address` the
 * ivm_reference_t * as an int (Reference._addr) and `arguments` a list or tuple. When every
 * argument is an int within +-(2**53 - 1), a float, a str, a bool, None or ivm.undefined
 * (exact types: no subclass) and there are at most IVM_PY_FAST_ARGS, it converts them,
 * calls ivm_reference_apply with the GIL released and no options, and returns its result:
 * a primitive converted here, anything else (and errors) from ivm._call.finish(). Otherwise
 * it returns ivm._call.SLOW before any call, and Python takes the general path. Takes the
 * GIL; 1 on success, 0 when an import or allocation failed (the exception printed). */
int ivm_py_install(void);
/* Replaces the method `name` ("apply_sync", "eval_sync", "run_sync", "set_sync" or
 * "copy_into") of the class `cls` of ivm's `module` by a C method (a method descriptor) that makes the plain call
 * (no options) itself, as the Python method does, without a Python frame around it:
 * Reference.apply_sync as APPLY_FAST, Context.eval_sync(code) with code an exact str (and no
 * keywords, or only result flags given as True or False in a combination Python accepts:
 * external_copy=True, transfer_out=True), Script.run_sync(context) with context an exact
 * ivm.Context, Reference.set_sync(key, value) with an exact str or safe int key and a value
 * APPLY_FAST converts or a CopyInto marker made by copy_into (passed as its own value,
 * borrowed, its owner held during the call: ivm_py_marker_address), and
 * ExternalCopy.copy_into with its flags given as True or False (ivm/_cffi_copy.c). Every other
 * call (other options or keywords, another type, SLOW) goes to the class's `_<name>`, the method with the full signature, with the same arguments.
 * `doc` (copied) is its __doc__ with the text signature that inspect reads. Once per method,
 * after ivm_py_install; same return. */
int ivm_py_install_method(const char *module, const char *cls, const char *name, const char *doc);
/* Replaces the property `name` of the class `cls` of ivm's `module` by a C getter (a getset
 * descriptor) that returns the instance's slot `slot` when it holds anything but None, and
 * otherwise what the instance's method `make` returns (which fills the slot): a cached
 * attribute read with no Python frame. `doc` (copied) is its __doc__. Takes the GIL; after
 * ivm_py_install; 1, or 0 (the exception printed). */
int ivm_py_install_getter(const char *module, const char *cls, const char *name, const char *slot,
                          const char *make, const char *doc);


/* --- definitions --- */

#include <structmember.h> /* PyMemberDef, T_OBJECT_EX (Python < 3.12): ivm_py_slot_offset */

static _Thread_local ivm_py_result_t ivm_py_result;

ivm_py_result_t *ivm_py_last(void) { return &ivm_py_result; }

#define IVM_PY_MAX_SAFE 9007199254740991.0 /* 2**53 - 1 */

/* Whether a JavaScript number is a Python int (integral, safe, and not -0: docs/values.md;
 * ivm._value.js_number is the same rule in Python). */
static int ivm_py_is_int(double x) {
  /* -0 is not an int: its sign would be lost (1 / x is -inf for it). */
  return x >= -IVM_PY_MAX_SAFE && x <= IVM_PY_MAX_SAFE && x == (double)(int64_t)x &&
         (x != 0 || 1 / x > 0);
}

/* Whether the exact int `o` is a safe integer, a JavaScript number (else a BigInt: ivm._copy's
 * rule), its value in *v; leaves no exception set. Also ivm/_cffi_json.c's, which is compiled
 * after this file into the same source. */
static int ivm_py_safe_int(PyObject *o, long long *v) {
  int overflow = 0;
  *v = PyLong_AsLongLongAndOverflow(o, &overflow);
  if (overflow || (*v == -1 && PyErr_Occurred()) || *v < -(long long)IVM_PY_MAX_SAFE ||
      *v > (long long)IVM_PY_MAX_SAFE) {
    PyErr_Clear();
    return 0;
  }
  return 1;
}

/* Makes `def` a builtin of ivm._copy (being imported: sys.modules has it) under its own name,
 * after reading ivm._copy._ALLOWED into *allowed if that is given. For ivm/_cffi_json.c and
 * ivm/_cffi_load.c, compiled after this file into the same source. Takes the GIL; 1 on
 * success, 0 when an import or allocation failed (the exception printed). */
/* Runs an installer (it makes builtins in an ivm module) with the GIL taken; a failure is
 * printed, since it is reported to Python only as an ImportError. */
static int ivm_py_install_with_gil(int (*install_locked)(void)) {
  PyGILState_STATE gil = PyGILState_Ensure();
  int ok = install_locked();
  if (!ok) PyErr_Print();
  PyGILState_Release(gil);
  return ok;
}

static int ivm_py_copy_install(PyMethodDef *def, PyObject **allowed) {
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject *copy = PyImport_ImportModule("ivm._copy");
  PyObject *fn = NULL;
  int ok = copy != NULL;
  if (ok && allowed != NULL) {
    Py_XSETREF(*allowed, PyObject_GetAttrString(copy, "_ALLOWED"));
    ok = *allowed != NULL && PyDict_Check(*allowed);
  }
  if (ok) {
    fn = PyCFunction_NewEx(def, NULL, NULL);
    ok = fn != NULL && PyObject_SetAttrString(copy, def->ml_name, fn) == 0;
  }
  if (!ok) PyErr_Print();
  Py_XDECREF(fn);
  Py_XDECREF(copy);
  PyGILState_Release(gil);
  return ok;
}

static int64_t ivm_py_classify(ivm_error_t *err) {
  ivm_py_result_t *res = &ivm_py_result;
  if (err != NULL) {
    res->kind = IVM_PY_ERROR;
    res->error = err;
    return IVM_PY_NOT_INTEGER;
  }
  res->kind = (int32_t)res->slot.kind;
  if (res->slot.kind != IVM_VALUE_NUMBER) return IVM_PY_NOT_INTEGER;
  if (ivm_py_is_int(res->slot.number)) return (int64_t)res->slot.number;
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

int64_t ivm_py_eval_plain(ivm_context_t *ctx, const char *code, size_t code_len) {
  return ivm_py_eval(ctx, code, code_len, NULL, NULL, NULL);
}

int64_t ivm_py_script_run_plain(ivm_script_t *script, ivm_context_t *ctx) {
  return ivm_py_script_run(script, ctx, NULL, NULL);
}

#define IVM_PY_FAST_ARGS 8

/* A new reference to the Python value of a primitive as ivm._value.take makes it (the
 * JS-number rule of ivm_py_is_int, WTF-8 strings with lone surrogates kept; `undefined` is
 * ivm.undefined). NULL with an exception set when Python failed, NULL with none for a kind
 * that is not a primitive. */
static PyObject *ivm_py_primitive(const ivm_primitive_t *p, PyObject *undefined) {
  switch ((int)p->kind) {
    case IVM_VALUE_NUMBER:
      if (ivm_py_is_int(p->number)) return PyLong_FromLongLong((long long)p->number);
      return PyFloat_FromDouble(p->number);
    case IVM_VALUE_STRING:
      return PyUnicode_DecodeUTF8(p->data, (Py_ssize_t)p->len, "surrogatepass");
    case IVM_VALUE_BOOLEAN:
      return PyBool_FromLong(p->boolean);
    case IVM_VALUE_NULL:
      Py_RETURN_NONE;
    case IVM_VALUE_UNDEFINED:
      Py_INCREF(undefined);
      return undefined;
    default:
      return NULL;
  }
}

/* ivm_py_primitive of a value (borrowed): the same NULLs, and NULL with no exception for
 * any kind but undefined, null, a boolean, a number or a string. */
static PyObject *ivm_py_value_primitive(const ivm_value_t *v, PyObject *undefined) {
  ivm_primitive_t p;
  memset(&p, 0, sizeof p);
  p.kind = ivm_value_kind(v);
  switch ((int)p.kind) {
    case IVM_VALUE_NUMBER:
      p.number = ivm_value_number(v);
      break;
    case IVM_VALUE_BOOLEAN:
      p.boolean = ivm_value_boolean(v);
      break;
    case IVM_VALUE_STRING:
      ivm_value_string(v, &p.data, &p.len);
      break;
    case IVM_VALUE_UNDEFINED:
    case IVM_VALUE_NULL:
      break;
    default:
      return NULL;
  }
  return ivm_py_primitive(&p, undefined);
}

/* --- APPLY_FAST: Reference.apply_sync(None, arguments) as one builtin --- */

#define IVM_PY_SMALL_MIN (-128)
#define IVM_PY_SMALL_MAX 1023

/* What APPLY_FAST reads from Python, and the immutable libivm values that arguments share
 * (a sync call borrows its arguments), all made once by ivm_py_install under the GIL. */
static struct {
  PyObject *finish;     /* ivm._call.finish */
  PyObject *slow;       /* ivm._call.SLOW */
  PyObject *undefined;  /* ivm.undefined */
  PyObject *apply_full, *eval_full, *run_full, *set_full; /* Reference._apply_sync, ... */
  PyObject *copy_into_full; /* ExternalCopy._copy_into */
  PyObject *context_type;   /* ivm.Context */
  PyObject *address_name;   /* "_address" */
  Py_ssize_t addr_offset;   /* where a Handle keeps its slot `_addr` (0: not yet known) */
  /* ivm/_cffi_copy.c's, read by ivm_py_external_copy_install (copy_ready: all read) */
  PyObject *copy_into_type, *external_copy_type; /* ivm._external_copy's classes */
  PyObject *gc, *value_ctype, *copy_ctype;       /* ffi.gc, ffi.typeof("ivm_value_t *"), ... */
  PyObject *value_free, *copy_free;              /* lib.ivm_value_free, ... */
  Py_ssize_t value_offset, ptr_offset;           /* CopyInto's slot _value, Handle's _ptr */
  int copy_ready;
  ivm_value_t *null_value, *undefined_value, *true_value, *false_value;
  ivm_value_t *small[IVM_PY_SMALL_MAX - IVM_PY_SMALL_MIN + 1];
} ivm_py_call;

/* The WTF-8 bytes of the str `o` (lone surrogates pass, as code_bytes() lets them): an ASCII
 * str's own data (valid while `o` lives), else the data of *keep, a new bytes object the caller
 * releases. 0: an exception is set. */
static int ivm_py_utf8(PyObject *o, const char **data, Py_ssize_t *len, PyObject **keep) {
  *keep = NULL;
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(o) < 0) return 0;
#endif
  if (PyUnicode_IS_ASCII(o)) {
    *data = (const char *)PyUnicode_DATA(o);
    *len = PyUnicode_GET_LENGTH(o);
    return 1;
  }
  *keep = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass");
  if (*keep == NULL) return 0;
  *data = PyBytes_AS_STRING(*keep);
  *len = PyBytes_GET_SIZE(*keep);
  return 1;
}

/* A str argument as a new libivm string, or NULL. */
static ivm_value_t *ivm_py_str_arg(PyObject *o) {
  PyObject *bytes;
  const char *data;
  Py_ssize_t len;
  ivm_value_t *v;
  if (!ivm_py_utf8(o, &data, &len, &bytes)) {
    PyErr_Clear();
    return NULL;
  }
  v = ivm_value_new_string(data, (size_t)len);
  Py_XDECREF(bytes);
  return v;
}

/* The libivm value of the argument `o`: a shared one (*owned = 0) or a new one (*owned = 1);
 * NULL when this path does not convert `o` (the general path then does, or raises). Runs no
 * Python code. The int rule is ivm._copy.to_value's: a safe int is a number, others BigInts. */
static ivm_value_t *ivm_py_arg(PyObject *o, int *owned) {
  long long v;
  *owned = 0;
  if (PyLong_CheckExact(o)) {
    if (!ivm_py_safe_int(o, &v)) return NULL;
    if (v >= IVM_PY_SMALL_MIN && v <= IVM_PY_SMALL_MAX) return ivm_py_call.small[v - IVM_PY_SMALL_MIN];
    *owned = 1;
    return ivm_value_new_number((double)v);
  }
  if (PyFloat_CheckExact(o)) {
    *owned = 1;
    return ivm_value_new_number(PyFloat_AS_DOUBLE(o));
  }
  if (PyUnicode_CheckExact(o)) {
    *owned = 1;
    return ivm_py_str_arg(o);
  }
  if (o == Py_None) return ivm_py_call.null_value;
  if (o == Py_True) return ivm_py_call.true_value;
  if (o == Py_False) return ivm_py_call.false_value;
  if (o == ivm_py_call.undefined) return ivm_py_call.undefined_value;
  return NULL;
}

/* ivm/_cffi_copy.c's (compiled after this file): an external_copy=True result (in res->value,
 * which it frees) as a new ExternalCopy; CopyInto's value for set_sync; copy_into's method;
 * what they read from Python. */
static PyObject *ivm_py_copy_result(ivm_py_result_t *res);
static PyObject *ivm_py_marker(PyObject *o, ivm_value_t **value);
static PyObject *ivm_py_copy_into_method(PyObject *self, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames);
static int ivm_py_external_copy_install(void);

/* The Python result of the call just made (its error: `err`), from this thread's record `res`
 * (&ivm_py_result, which the caller has at hand: one thread-local lookup fewer): a primitive
 * or a string converted here, an external copy by ivm_py_copy_result; anything else, and an
 * error, by ivm._call.finish. */
static PyObject *ivm_py_outcome(ivm_py_result_t *res, ivm_error_t *err) {
  PyObject *r;
  if (err == NULL) {
    if (res->slot.kind == 0) { /* not in the slot: a value, converted here if a string */
      ivm_value_kind_t kind = ivm_value_kind(res->value);
      if (kind == IVM_VALUE_STRING) {
        r = ivm_py_value_primitive(res->value, ivm_py_call.undefined);
        ivm_value_free(res->value);
        res->value = NULL;
        return r;
      }
      if (kind == IVM_VALUE_EXTERNAL_COPY && ivm_py_call.copy_ready) {
        return ivm_py_copy_result(res);
      }
    } else if (res->slot.kind != IVM_VALUE_STRING) { /* (a result's slot holds no string) */
      r = ivm_py_primitive(&res->slot, ivm_py_call.undefined);
      if (r != NULL || PyErr_Occurred()) return r;
    }
  }
  ivm_py_classify(err);
  return PyObject_CallNoArgs(ivm_py_call.finish);
}

/* The call of APPLY_FAST with the reference `ref` and `seq` (any object): its result, NULL
 * (an exception set), or ivm_py_call.slow (a new reference) before any call. */
static PyObject *ivm_py_apply_call(ivm_reference_t *ref, PyObject *seq) {
  ivm_value_t *argv[IVM_PY_FAST_ARGS];
  int owned[IVM_PY_FAST_ARGS];
  ivm_py_result_t *res = &ivm_py_result;
  PyObject **items;
  Py_ssize_t n, i, j;
  ivm_error_t *err;
  if (!PyList_CheckExact(seq) && !PyTuple_CheckExact(seq)) goto slow;
  n = PySequence_Fast_GET_SIZE(seq);
  if (n > IVM_PY_FAST_ARGS) goto slow;
  items = PySequence_Fast_ITEMS(seq);
  for (i = 0; i < n; ++i) {
    argv[i] = ivm_py_arg(items[i], &owned[i]);
    if (argv[i] == NULL) {
      for (j = 0; j < i; ++j) {
        if (owned[j]) ivm_value_free(argv[j]);
      }
      goto slow;
    }
  }
  Py_BEGIN_ALLOW_THREADS
  err = ivm_reference_apply(ref, NULL, argv, (size_t)n, NULL, NULL, &res->value, &res->slot);
  Py_END_ALLOW_THREADS
  for (i = 0; i < n; ++i) {
    if (owned[i]) ivm_value_free(argv[i]);
  }
  return ivm_py_outcome(res, err);
slow:
  Py_INCREF(ivm_py_call.slow);
  return ivm_py_call.slow;
}

static PyObject *ivm_py_apply_fast(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  ivm_reference_t *ref;
  (void)module;
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "APPLY_FAST(address, arguments)");
    return NULL;
  }
  ref = (ivm_reference_t *)PyLong_AsVoidPtr(args[0]);
  if (ref == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "APPLY_FAST: no reference");
    return NULL;
  }
  return ivm_py_apply_call(ref, args[1]);
}

static PyMethodDef ivm_py_apply_fast_def = {
    "APPLY_FAST", (PyCFunction)(void (*)(void))ivm_py_apply_fast, METH_FASTCALL,
    "APPLY_FAST(address, arguments): Reference.apply_sync(None, arguments) (ivm/_cffi_fast.c)"};

/* The shared argument values (once: they live as long as the process). */
static int ivm_py_shared_values(void) {
  int i;
  if (ivm_py_call.null_value != NULL) return 1;
  for (i = IVM_PY_SMALL_MIN; i <= IVM_PY_SMALL_MAX; ++i) {
    ivm_py_call.small[i - IVM_PY_SMALL_MIN] = ivm_value_new_number((double)i);
    if (ivm_py_call.small[i - IVM_PY_SMALL_MIN] == NULL) return 0;
  }
  ivm_py_call.undefined_value = ivm_value_new_undefined();
  ivm_py_call.true_value = ivm_value_new_boolean(1);
  ivm_py_call.false_value = ivm_value_new_boolean(0);
  if (ivm_py_call.undefined_value == NULL || ivm_py_call.true_value == NULL ||
      ivm_py_call.false_value == NULL) {
    return 0;
  }
  ivm_py_call.null_value = ivm_value_new_null(); /* last: it marks the set complete */
  return ivm_py_call.null_value != NULL;
}

static int ivm_py_install_locked(void) {
  PyObject *call = PyImport_ImportModule("ivm._call"); /* importing: sys.modules has it */
  PyObject *value = PyImport_ImportModule("ivm._value");
  PyObject *fn = NULL;
  int ok = 0;
  if (call == NULL || value == NULL) goto done;
  Py_XSETREF(ivm_py_call.finish, PyObject_GetAttrString(call, "finish"));
  Py_XSETREF(ivm_py_call.slow, PyObject_GetAttrString(call, "SLOW"));
  Py_XSETREF(ivm_py_call.undefined, PyObject_GetAttrString(value, "undefined"));
  if (ivm_py_call.finish == NULL || ivm_py_call.slow == NULL || ivm_py_call.undefined == NULL)
    goto done;
  if (!ivm_py_shared_values()) {
    PyErr_NoMemory();
    goto done;
  }
  fn = PyCFunction_NewEx(&ivm_py_apply_fast_def, NULL, NULL);
  ok = fn != NULL && PyObject_SetAttrString(call, "APPLY_FAST", fn) == 0;
done:
  Py_XDECREF(fn);
  Py_XDECREF(call);
  Py_XDECREF(value);
  return ok;
}

int ivm_py_install(void) { return ivm_py_install_with_gil(ivm_py_install_locked); }

/* --- apply_sync, eval_sync and run_sync as C methods --- */

/* full(self, *args, **kwargs): every call a C method leaves to Python. */
static PyObject *ivm_py_general(PyObject *full, PyObject *self, PyObject *const *args,
                                Py_ssize_t nargs, PyObject *kwnames) {
  PyObject *small[12], **stack = small, *r;
  Py_ssize_t total = nargs + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
  if (total + 1 > (Py_ssize_t)(sizeof small / sizeof small[0])) {
    stack = (PyObject **)PyMem_Malloc((size_t)(total + 1) * sizeof(PyObject *));
    if (stack == NULL) return PyErr_NoMemory();
  }
  stack[0] = self;
  if (total > 0) memcpy(stack + 1, args, (size_t)total * sizeof(PyObject *));
  r = PyObject_Vectorcall(full, stack, (size_t)nargs + 1, kwnames);
  if (stack != small) PyMem_Free(stack);
  return r;
}

/* The handle of `h` (an ivm Handle: the method descriptors admit only their class) from its
 * slot `_addr`, which Handle._address() sets on first use; NULL: an exception is set. */
static void *ivm_py_handle(PyObject *h) {
  PyObject *addr = *(PyObject **)((char *)h + ivm_py_call.addr_offset);
  void *p;
  if (addr != NULL) {
    p = PyLong_AsVoidPtr(addr);
  } else {
    addr = PyObject_CallMethodNoArgs(h, ivm_py_call.address_name);
    if (addr == NULL) return NULL;
    p = PyLong_AsVoidPtr(addr);
    Py_DECREF(addr);
  }
  if (p == NULL && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "ivm: no handle");
  return p;
}

static PyObject *ivm_py_apply_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
  static PyObject *empty;
  ivm_reference_t *ref;
  PyObject *r;
  if (kwnames != NULL || nargs < 1 || nargs > 2 || args[0] != Py_None) {
    return ivm_py_general(ivm_py_call.apply_full, self, args, nargs, kwnames);
  }
  if (empty == NULL && (empty = PyTuple_New(0)) == NULL) return NULL;
  ref = (ivm_reference_t *)ivm_py_handle(self);
  if (ref == NULL) return NULL;
  r = ivm_py_apply_call(ref, nargs == 2 ? args[1] : empty);
  if (r != ivm_py_call.slow) return r;
  Py_DECREF(r);
  return ivm_py_general(ivm_py_call.apply_full, self, args, nargs, kwnames);
}

/* Whether each keyword of `kwnames` (NULL: none; values `kwargs`) is one of the `count` names
 * `names`, given once, exactly True or False: *flags then holds the `bits` of those given
 * True. The caller keeps `interned` (static, `count` entries) for the names, interned on the
 * first call. 0, with no exception set, for any other keyword or value (and out of memory):
 * the Python method then takes the call. */
static int ivm_py_bool_keywords(PyObject *kwnames, PyObject *const *kwargs, int count,
                                const char *const *names, const uint32_t *bits,
                                PyObject **interned, uint32_t *flags) {
  uint32_t seen = 0;
  Py_ssize_t i, n = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
  int k;
  *flags = 0;
  for (k = 0; k < count; ++k) {
    if (interned[k] == NULL && (interned[k] = PyUnicode_InternFromString(names[k])) == NULL) {
      PyErr_Clear();
      return 0;
    }
  }
  for (i = 0; i < n; ++i) {
    PyObject *name = PyTuple_GET_ITEM(kwnames, i);
    for (k = 0; k < count && name != interned[k]; ++k) {
    }
    if (k == count || (seen & bits[k]) || (kwargs[i] != Py_True && kwargs[i] != Py_False)) {
      return 0;
    }
    seen |= bits[k];
    if (kwargs[i] == Py_True) *flags |= bits[k];
  }
  return 1;
}

/* The result options of eval_sync's keywords `kwnames` (values `kwargs`) when each is one of
 * its result flags (promise, copy, external_copy, transfer_out, reference) given exactly True
 * or False, in a combination that Context._eval_sync accepts (ivm._options.result_flags: at
 * most one of copy, external_copy and reference; transfer_out only with copy or
 * external_copy); NULL for every other call, which Python then makes, refusing what it must.
 * One immutable struct per combination (made under the GIL, only read by libivm). */
static const ivm_result_options_t *ivm_py_result_flags(PyObject *kwnames, PyObject *const *kwargs) {
  static const char *const names[] = {"promise", "copy", "external_copy", "transfer_out",
                                      "reference"};
  static const uint32_t bits[] = {IVM_RESULT_PROMISE, IVM_RESULT_COPY, IVM_RESULT_EXTERNAL_COPY,
                                  IVM_RESULT_TRANSFER_OUT, IVM_RESULT_REFERENCE};
  static PyObject *interned[5];
  enum { ALL = IVM_RESULT_PROMISE | IVM_RESULT_COPY | IVM_RESULT_EXTERNAL_COPY |
               IVM_RESULT_TRANSFER_OUT | IVM_RESULT_REFERENCE };
  /* indexed by `flags`, a subset of ALL: ALL must stay the low bits (a new flag grows it) */
  _Static_assert((ALL & (ALL + 1)) == 0 && ALL < 64, "result flags: one entry each");
  static ivm_result_options_t options[ALL + 1];
  uint32_t flags;
  int k;
  if (!ivm_py_bool_keywords(kwnames, kwargs, 5, names, bits, interned, &flags)) return NULL;
  k = !!(flags & IVM_RESULT_COPY) + !!(flags & IVM_RESULT_EXTERNAL_COPY) +
      !!(flags & IVM_RESULT_REFERENCE);
  if (k > 1 || ((flags & IVM_RESULT_TRANSFER_OUT) &&
                !(flags & (IVM_RESULT_COPY | IVM_RESULT_EXTERNAL_COPY)))) {
    return NULL;
  }
  if (options[flags].struct_size == 0) { /* written once, before its first use */
    options[flags].flags = flags;
    options[flags].struct_size = sizeof(ivm_result_options_t);
  }
  return &options[flags];
}

static PyObject *ivm_py_eval_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames) {
  ivm_py_result_t *res = &ivm_py_result;
  const ivm_result_options_t *result = NULL;
  PyObject *bytes;
  const char *data;
  Py_ssize_t len;
  ivm_context_t *ctx;
  ivm_error_t *err;
  if (nargs != 1 || !PyUnicode_CheckExact(args[0]) ||
      (kwnames != NULL && (result = ivm_py_result_flags(kwnames, args + 1)) == NULL)) {
    return ivm_py_general(ivm_py_call.eval_full, self, args, nargs, kwnames);
  }
  ctx = (ivm_context_t *)ivm_py_handle(self);
  if (ctx == NULL) return NULL;
  /* (args[0], whose data an ASCII code is, is held by the caller during the call) */
  if (!ivm_py_utf8(args[0], &data, &len, &bytes)) return NULL;
  Py_BEGIN_ALLOW_THREADS
  err = ivm_context_eval(ctx, data, (size_t)len, NULL, NULL, result, &res->value, &res->slot);
  Py_END_ALLOW_THREADS
  Py_XDECREF(bytes);
  return ivm_py_outcome(res, err);
}

static PyObject *ivm_py_run_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
  ivm_py_result_t *res = &ivm_py_result;
  ivm_script_t *script;
  ivm_context_t *ctx;
  ivm_error_t *err;
  if (kwnames != NULL || nargs != 1 || (PyObject *)Py_TYPE(args[0]) != ivm_py_call.context_type) {
    return ivm_py_general(ivm_py_call.run_full, self, args, nargs, kwnames);
  }
  script = (ivm_script_t *)ivm_py_handle(self);
  ctx = script != NULL ? (ivm_context_t *)ivm_py_handle(args[0]) : NULL;
  if (ctx == NULL) return NULL;
  Py_BEGIN_ALLOW_THREADS
  err = ivm_script_run(script, ctx, NULL, NULL, &res->value, &res->slot);
  Py_END_ALLOW_THREADS
  return ivm_py_outcome(res, err);
}

/* set_sync(key, value) without options: a str or safe-int key, and a value that ivm_py_arg
 * converts or a CopyInto marker; every other call (and any conversion this path does not
 * make) goes to Reference._set_sync, which converts or refuses it. The result is
 * JavaScript's boolean. */
static PyObject *ivm_py_set_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
  ivm_py_result_t *res = &ivm_py_result;
  ivm_reference_t *ref;
  ivm_value_t *key, *value = NULL;
  PyObject *own;
  int key_owned, value_owned = 0;
  ivm_error_t *err;
  if (kwnames != NULL || nargs != 2 ||
      (!PyUnicode_CheckExact(args[0]) && !PyLong_CheckExact(args[0]))) {
    return ivm_py_general(ivm_py_call.set_full, self, args, nargs, kwnames);
  }
  /* First, as it may run Python code (Handle._address); the marker's reading below runs
   * none (and the handle lives as long as `self` anyway). */
  ref = (ivm_reference_t *)ivm_py_handle(self);
  if (ref == NULL) return NULL;
  own = ivm_py_marker(args[1], &value);
  if (own == NULL && (value = ivm_py_arg(args[1], &value_owned)) == NULL) {
    return ivm_py_general(ivm_py_call.set_full, self, args, nargs, kwnames);
  }
  key = ivm_py_arg(args[0], &key_owned);
  if (key == NULL) {
    if (value_owned) ivm_value_free(value);
    Py_XDECREF(own);
    return ivm_py_general(ivm_py_call.set_full, self, args, nargs, kwnames);
  }
  Py_BEGIN_ALLOW_THREADS
  err = ivm_reference_set(ref, key, value, NULL, &res->value, &res->slot);
  Py_END_ALLOW_THREADS
  if (key_owned) ivm_value_free(key);
  if (value_owned) ivm_value_free(value);
  Py_XDECREF(own);
  return ivm_py_outcome(res, err);
}

#define IVM_PY_METHOD_FLAGS (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef ivm_py_methods[] = {
    {"apply_sync", (PyCFunction)(void (*)(void))ivm_py_apply_method, IVM_PY_METHOD_FLAGS, NULL},
    {"eval_sync", (PyCFunction)(void (*)(void))ivm_py_eval_method, IVM_PY_METHOD_FLAGS, NULL},
    {"run_sync", (PyCFunction)(void (*)(void))ivm_py_run_method, IVM_PY_METHOD_FLAGS, NULL},
    {"set_sync", (PyCFunction)(void (*)(void))ivm_py_set_method, IVM_PY_METHOD_FLAGS, NULL},
    {"copy_into", (PyCFunction)(void (*)(void))ivm_py_copy_into_method, IVM_PY_METHOD_FLAGS,
     NULL},
};

/* The offset of the slot `name` (an object member: __slots__) in instances of `type` (0: an
 * exception is set). */
static Py_ssize_t ivm_py_slot_offset(PyObject *type, const char *name) {
  PyObject *member = PyObject_GetAttrString(type, name); /* the member descriptor */
  Py_ssize_t offset = 0;
  if (member != NULL && Py_TYPE(member) == &PyMemberDescr_Type &&
      ((PyMemberDescrObject *)member)->d_member->type == T_OBJECT_EX) {
    offset = ((PyMemberDescrObject *)member)->d_member->offset;
  } else if (member != NULL) {
    PyErr_Format(PyExc_TypeError, "ivm: %s is not a slot", name);
  }
  Py_XDECREF(member);
  return offset;
}

static int ivm_py_install_method_locked(const char *module_name, const char *cls,
                                        const char *name, const char *doc) {
  PyObject *module = PyImport_ImportModule(module_name); /* importing: in sys.modules */
  PyObject *type = NULL, *method = NULL, **full = NULL;
  PyObject *other = NULL; /* the module of Context */
  PyObject **fulls[] = {&ivm_py_call.apply_full, &ivm_py_call.eval_full, &ivm_py_call.run_full,
                        &ivm_py_call.set_full, &ivm_py_call.copy_into_full};
  PyMethodDef *def = NULL;
  char full_name[32], *doc_copy;
  size_t i;
  int ok = 0;
  for (i = 0; i < sizeof ivm_py_methods / sizeof ivm_py_methods[0]; ++i) {
    if (strcmp(ivm_py_methods[i].ml_name, name) == 0) {
      def = &ivm_py_methods[i];
      full = fulls[i];
    }
  }
  if (module == NULL || def == NULL || ivm_py_call.finish == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "ivm: no such C method");
    goto done;
  }
  type = PyObject_GetAttrString(module, cls);
  if (type == NULL || !PyType_Check(type)) goto done;
  if (full == &ivm_py_call.run_full) {
    other = PyImport_ImportModule("ivm._context");
    if (other == NULL) goto done;
    Py_XSETREF(ivm_py_call.context_type, PyObject_GetAttrString(other, "Context"));
    if (ivm_py_call.context_type == NULL || !PyType_Check(ivm_py_call.context_type)) goto done;
  }
  /* (also the outcome of every call's external_copy=True result, ivm_py_copy_result) */
  if ((full == &ivm_py_call.set_full || full == &ivm_py_call.copy_into_full) &&
      !ivm_py_external_copy_install()) {
    goto done;
  }
  snprintf(full_name, sizeof full_name, "_%s", name);
  Py_XSETREF(*full, PyObject_GetAttrString(type, full_name));
  if (ivm_py_call.address_name == NULL) {
    ivm_py_call.address_name = PyUnicode_InternFromString("_address");
  }
  if (ivm_py_call.addr_offset == 0) ivm_py_call.addr_offset = ivm_py_slot_offset(type, "_addr");
  if (*full == NULL || ivm_py_call.address_name == NULL || ivm_py_call.addr_offset == 0 ||
      ivm_py_slot_offset(type, "_addr") != ivm_py_call.addr_offset) {
    goto done;
  }
  /* An import of ivm after sys.modules was purged of it installs again, on the new classes:
   * the calls left to Python go to the newest, and the first doc string stays. */
  if (def->ml_doc == NULL) {
    doc_copy = (char *)PyMem_RawMalloc(strlen(doc) + 1); /* lives as long as the method */
    if (doc_copy == NULL) {
      PyErr_NoMemory();
      goto done;
    }
    memcpy(doc_copy, doc, strlen(doc) + 1);
    def->ml_doc = doc_copy;
  }
  method = PyDescr_NewMethod((PyTypeObject *)type, def);
  ok = method != NULL && PyObject_SetAttrString(type, name, method) == 0;
done:
  Py_XDECREF(method);
  Py_XDECREF(other);
  Py_XDECREF(type);
  Py_XDECREF(module);
  return ok;
}

int ivm_py_install_method(const char *module, const char *cls, const char *name, const char *doc) {
  PyGILState_STATE gil = PyGILState_Ensure();
  int ok = ivm_py_install_method_locked(module, cls, name, doc);
  if (!ok && PyErr_Occurred()) PyErr_Print();
  PyGILState_Release(gil);
  return ok;
}

/* --- a cached attribute as a C getter --- */

typedef struct ivm_py_getter {
  PyGetSetDef def;
  Py_ssize_t offset; /* the slot's */
  PyObject *make;    /* the method's name */
  struct ivm_py_getter *next;
} ivm_py_getter_t;

/* Every getter installed, each kept for the process's life (one per class, per import of ivm:
 * a class of an earlier import may go, its descriptor with it, and the memory stays listed). */
static ivm_py_getter_t *ivm_py_getters;

static PyObject *ivm_py_slot_getter(PyObject *self, void *closure) {
  ivm_py_getter_t *g = (ivm_py_getter_t *)closure;
  /* (the descriptor admits only instances of its class) */
  PyObject *v = *(PyObject **)((char *)self + g->offset);
  if (v != NULL && v != Py_None) {
    Py_INCREF(v);
    return v;
  }
  return PyObject_CallMethodNoArgs(self, g->make);
}

static int ivm_py_install_getter_locked(const char *module_name, const char *cls,
                                        const char *name, const char *slot, const char *make,
                                        const char *doc) {
  PyObject *module = PyImport_ImportModule(module_name); /* importing: in sys.modules */
  PyObject *type = module != NULL ? PyObject_GetAttrString(module, cls) : NULL;
  PyObject *descr = NULL;
  ivm_py_getter_t *g = (ivm_py_getter_t *)PyMem_RawCalloc(1, sizeof *g);
  char *strings = (char *)PyMem_RawMalloc(strlen(name) + strlen(doc) + 2);
  int ok = 0;
  if (g == NULL || strings == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  if (type == NULL || !PyType_Check(type)) goto done;
  if ((g->offset = ivm_py_slot_offset(type, slot)) == 0) goto done;
  if ((g->make = PyUnicode_InternFromString(make)) == NULL) goto done;
  memcpy(strings, name, strlen(name) + 1);
  memcpy(strings + strlen(name) + 1, doc, strlen(doc) + 1);
  g->def.name = strings;
  g->def.get = ivm_py_slot_getter;
  g->def.doc = strings + strlen(name) + 1;
  g->def.closure = g;
  descr = PyDescr_NewGetSet((PyTypeObject *)type, &g->def);
  ok = descr != NULL && PyObject_SetAttrString(type, name, descr) == 0;
  if (ok) {
    g->next = ivm_py_getters;
    ivm_py_getters = g;
  }
done:
  Py_XDECREF(descr); /* (first: it points to g->def) */
  if (!ok) {
    if (g != NULL) Py_XDECREF(g->make);
    PyMem_RawFree(g);
    PyMem_RawFree(strings);
  }
  Py_XDECREF(type);
  Py_XDECREF(module);
  return ok;
}

int ivm_py_install_getter(const char *module, const char *cls, const char *name, const char *slot,
                          const char *make, const char *doc) {
  PyGILState_STATE gil = PyGILState_Ensure();
  int ok = ivm_py_install_getter_locked(module, cls, name, slot, make, doc);
  if (!ok) PyErr_Print();
  PyGILState_Release(gil);
  return ok;
}
