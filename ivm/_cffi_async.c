/* The common awaited call in C: ivm._async's two builtins, made by ivm_py_async_install().
 *
 * EVAL_START(context, code, queue, waiters, waiter) submits Context.eval(code) with every
 * option at its default: `context` an ivm Handle (its handle from the slot `_addr`, as the C
 * methods of ivm/_cffi_fast.c read it), `code` an exact str (its bytes read in place when
 * ASCII), `queue` the address of a completion queue (an int). It calls
 * ivm_context_eval_async with ivm_completion_queue_done (the GIL released, as cffi does: a
 * worker-process isolate's submit may block on its channel), stores `waiter` under the job's id in
 * the dict `waiters`, and returns that id. A refused call raises as ivm._call.finish() does
 * (the error reported through this thread's record of ivm/_cffi_fast.c).
 *
 * DRAIN_FAST(buffer, start, n, waiters) completes, in order, the completions buffer[start],
 * buffer[start + 1], ... (`buffer` the address of an ivm_completion_t array, an int) that
 * it can, and returns the index of the first it leaves to Python (n when none), which then
 * completes that one and calls again from the next. It completes a completion when it is a
 * value (no error), its waiter in `waiters` converts with ivm._value.take (an asyncio
 * (future, take) tuple or future alone, or an ivm._async._TrioWaiter whose `convert` is
 * take: any waiter that is neither a tuple nor a _TrioWaiter is a future), and the value
 * is a primitive or a string: the value is converted here (the conversion take makes), freed,
 * the waiter removed from `waiters`, and the outcome handed over as the Python path does (an
 * asyncio future that is done already, e.g. cancelled, is skipped; a trio waiter's
 * succeed()). Anything else (errors, other kinds and values, other converters, an unknown
 * job, a conversion that fails) is left untouched, waiter included, for Python. An exception
 * raised by the future or waiter propagates, as it would from the Python loop.
 *
 * tools/gen_cffi.py (--fast) hands the part above the "definitions" line to cffi's cdef and
 * the whole file to its set_source, after ivm/_cffi_fast.c (meson.build lists that first),
 * whose ivm_py_value_primitive, ivm_py_utf8, ivm_py_slot_offset and record it uses.
 */
/* Makes ivm._async.EVAL_START and ivm._async.DRAIN_FAST (above), reading ivm._value.take,
 * ivm._value.undefined, ivm._async._TrioWaiter and ivm._handle.Handle. Call once ivm._async
 * defines _TrioWaiter, and after ivm_py_install (ivm._call is imported). Takes the GIL; 1 on
 * success, 0 when an import or allocation failed (the exception printed). */
int ivm_py_async_install(void);
/* --- definitions --- */

static struct {
  PyObject *take;         /* ivm._value.take */
  PyObject *undefined;    /* ivm.undefined */
  PyObject *trio_waiter;  /* ivm._async._TrioWaiter */
  PyObject *handle_type;  /* ivm._handle.Handle */
  Py_ssize_t addr_offset; /* Handle's slot `_addr` */
  PyObject *done, *set_result, *convert, *succeed; /* method and attribute names */
} ivm_py_async;

/* The address in the int `o` (NULL: an exception is set). */
static void *ivm_py_async_addr(PyObject *o, const char *what) {
  void *p = PyLong_AsVoidPtr(o);
  if (p == NULL && !PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "ivm: no %s", what);
  return p;
}

static PyObject *ivm_py_eval_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  ivm_py_result_t *res = &ivm_py_result;
  PyObject *addr, *bytes, *key;
  const char *data;
  Py_ssize_t len;
  ivm_context_t *ctx;
  void *queue;
  uint64_t job = 0;
  ivm_error_t *err;
  (void)module;
  if (nargs != 5 || !PyDict_CheckExact(args[3])) {
    PyErr_SetString(PyExc_TypeError, "EVAL_START(context, code, queue, waiters, waiter)");
    return NULL;
  }
  if (!PyObject_TypeCheck(args[0], (PyTypeObject *)ivm_py_async.handle_type)) {
    PyErr_SetString(PyExc_TypeError, "EVAL_START: context must be an ivm handle");
    return NULL;
  }
  if (!PyUnicode_CheckExact(args[1])) {
    PyErr_SetString(PyExc_TypeError, "EVAL_START: code must be a str");
    return NULL;
  }
  addr = *(PyObject **)((char *)args[0] + ivm_py_async.addr_offset);
  if (addr != NULL) {
    Py_INCREF(addr);
  } else { /* Handle._address() sets the slot on first use */
    addr = PyObject_CallMethod(args[0], "_address", NULL);
    if (addr == NULL) return NULL;
  }
  ctx = (ivm_context_t *)ivm_py_async_addr(addr, "handle");
  Py_DECREF(addr);
  if (ctx == NULL) return NULL;
  queue = ivm_py_async_addr(args[2], "completion queue");
  if (queue == NULL) return NULL;
  /* (args[1], whose data an ASCII code is, is held by the caller during the call) */
  if (!ivm_py_utf8(args[1], &data, &len, &bytes)) return NULL;
  /* Without the GIL, as cffi calls it: the submit of a worker-process isolate's call sends
   * its frame, which blocks while the worker does not read. */
  Py_BEGIN_ALLOW_THREADS
  err = ivm_context_eval_async(ctx, data, (size_t)len, NULL, NULL, NULL, ivm_completion_queue_done,
                               queue, &job);
  Py_END_ALLOW_THREADS
  Py_XDECREF(bytes);
  if (err != NULL) {
    res->kind = IVM_PY_ERROR;
    res->error = err;
    return PyObject_CallNoArgs(ivm_py_call.finish); /* raises it */
  }
  key = PyLong_FromUnsignedLongLong(job);
  if (key != NULL && PyDict_SetItem(args[3], key, args[4]) < 0) Py_CLEAR(key);
  return key;
}

/* Whether `waiter` converts with take; -1: an exception is set. */
static int ivm_py_async_takes(PyObject *waiter) {
  PyObject *convert;
  int takes;
  if (PyTuple_CheckExact(waiter)) {
    return PyTuple_GET_SIZE(waiter) == 2 && PyTuple_GET_ITEM(waiter, 1) == ivm_py_async.take;
  }
  if ((PyObject *)Py_TYPE(waiter) != ivm_py_async.trio_waiter) return 1; /* a future alone */
  convert = PyObject_GetAttr(waiter, ivm_py_async.convert);
  if (convert == NULL) return -1;
  takes = convert == ivm_py_async.take;
  Py_DECREF(convert);
  return takes;
}

/* Hands `value` to `waiter` (held by the caller): 0, or -1 with an exception set. */
static int ivm_py_async_settle(PyObject *waiter, PyObject *value) {
  PyObject *future, *done, *r;
  int is_done;
  if ((PyObject *)Py_TYPE(waiter) == ivm_py_async.trio_waiter) {
    r = PyObject_CallMethodOneArg(waiter, ivm_py_async.succeed, value);
  } else {
    future = PyTuple_CheckExact(waiter) ? PyTuple_GET_ITEM(waiter, 0) : waiter;
    done = PyObject_CallMethodNoArgs(future, ivm_py_async.done);
    if (done == NULL) return -1;
    is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done < 0) return -1;
    if (is_done) return 0; /* cancelled meanwhile: the outcome is dropped */
    r = PyObject_CallMethodOneArg(future, ivm_py_async.set_result, value);
  }
  Py_XDECREF(r);
  return r != NULL ? 0 : -1;
}

/* One completion: 1 when completed here, 0 when left to Python, -1 on an exception. */
static int ivm_py_async_complete(ivm_completion_t *c, PyObject *waiters) {
  PyObject *key, *waiter, *value;
  int takes, ok;
  if (c->error != NULL || c->kind != IVM_COMPLETION_VALUE || c->result.value == NULL) return 0;
  key = PyLong_FromUnsignedLongLong(c->job);
  if (key == NULL) return -1;
  waiter = PyDict_GetItemWithError(waiters, key);
  if (waiter == NULL) {
    Py_DECREF(key);
    return PyErr_Occurred() ? -1 : 0;
  }
  Py_INCREF(waiter); /* held from here: reading a trio waiter's `convert` runs Python */
  takes = ivm_py_async_takes(waiter);
  value = takes > 0 ? ivm_py_value_primitive(c->result.value, ivm_py_async.undefined) : NULL;
  if (value == NULL) {
    /* (takes > 0: another kind, or a failed conversion: take() converts it, and its error
     * reaches the waiter) */
    if (takes > 0) PyErr_Clear();
    Py_DECREF(waiter);
    Py_DECREF(key);
    return takes < 0 ? -1 : 0;
  }
  ok = PyDict_DelItem(waiters, key) == 0;
  Py_DECREF(key);
  if (ok) {
    ivm_value_free(c->result.value); /* converted: ours to free, as take() would */
    c->result.value = NULL;
    ok = ivm_py_async_settle(waiter, value) == 0;
  }
  Py_DECREF(value);
  Py_DECREF(waiter);
  return ok ? 1 : -1;
}

static PyObject *ivm_py_drain_fast(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  ivm_completion_t *buffer;
  Py_ssize_t i, n;
  int r;
  (void)module;
  if (nargs != 4 || !PyDict_CheckExact(args[3])) {
    PyErr_SetString(PyExc_TypeError, "DRAIN_FAST(buffer, start, n, waiters)");
    return NULL;
  }
  buffer = (ivm_completion_t *)ivm_py_async_addr(args[0], "buffer");
  if (buffer == NULL) return NULL;
  i = PyLong_AsSsize_t(args[1]);
  n = PyLong_AsSsize_t(args[2]);
  if ((i == -1 || n == -1) && PyErr_Occurred()) return NULL;
  for (; i < n; ++i) {
    r = ivm_py_async_complete(&buffer[i], args[3]);
    if (r < 0) return NULL;
    if (r == 0) break;
  }
  return PyLong_FromSsize_t(i < n ? i : n);
}

static PyMethodDef ivm_py_async_defs[] = {
    {"EVAL_START", (PyCFunction)(void (*)(void))ivm_py_eval_start, METH_FASTCALL,
     "EVAL_START(context, code, queue, waiters, waiter): submits Context.eval(code) "
     "(ivm/_cffi_async.c)"},
    {"DRAIN_FAST", (PyCFunction)(void (*)(void))ivm_py_drain_fast, METH_FASTCALL,
     "DRAIN_FAST(buffer, start, n, waiters): completes what it can of buffer[start:n] "
     "(ivm/_cffi_async.c)"},
};

static int ivm_py_async_install_locked(void) {
  PyObject *async = PyImport_ImportModule("ivm._async"); /* importing: sys.modules has it */
  PyObject *value = PyImport_ImportModule("ivm._value");
  PyObject *handle = PyImport_ImportModule("ivm._handle");
  PyObject *fn;
  size_t i;
  int ok = 0;
  if (async == NULL || value == NULL || handle == NULL) goto done;
  Py_XSETREF(ivm_py_async.take, PyObject_GetAttrString(value, "take"));
  Py_XSETREF(ivm_py_async.undefined, PyObject_GetAttrString(value, "undefined"));
  Py_XSETREF(ivm_py_async.trio_waiter, PyObject_GetAttrString(async, "_TrioWaiter"));
  Py_XSETREF(ivm_py_async.handle_type, PyObject_GetAttrString(handle, "Handle"));
  if (ivm_py_async.take == NULL || ivm_py_async.undefined == NULL ||
      ivm_py_async.trio_waiter == NULL || ivm_py_async.handle_type == NULL ||
      !PyType_Check(ivm_py_async.handle_type) || ivm_py_call.finish == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "ivm: _async's C path");
    goto done;
  }
  ivm_py_async.addr_offset = ivm_py_slot_offset(ivm_py_async.handle_type, "_addr");
  if (ivm_py_async.addr_offset == 0) goto done;
  if (ivm_py_async.done == NULL) {
    ivm_py_async.done = PyUnicode_InternFromString("done");
    ivm_py_async.set_result = PyUnicode_InternFromString("set_result");
    ivm_py_async.convert = PyUnicode_InternFromString("convert");
    ivm_py_async.succeed = PyUnicode_InternFromString("succeed");
    if (ivm_py_async.done == NULL || ivm_py_async.set_result == NULL ||
        ivm_py_async.convert == NULL || ivm_py_async.succeed == NULL) {
      goto done;
    }
  }
  ok = 1;
  for (i = 0; ok && i < sizeof ivm_py_async_defs / sizeof ivm_py_async_defs[0]; ++i) {
    fn = PyCFunction_NewEx(&ivm_py_async_defs[i], NULL, NULL);
    ok = fn != NULL && PyObject_SetAttrString(async, ivm_py_async_defs[i].ml_name, fn) == 0;
    Py_XDECREF(fn);
  }
done:
  Py_XDECREF(async);
  Py_XDECREF(value);
  Py_XDECREF(handle);
  return ok;
}

int ivm_py_async_install(void) { return ivm_py_install_with_gil(ivm_py_async_install_locked); }
