/* The fast way out of an isolate: a copy stream (docs/values.md, "The copy format") read into
 * Python objects in one C loop, for the opcodes libivm's writers use for data.
 *
 * ivm_py_load_install() makes ivm._copy.LOAD_FAST, a CPython builtin: LOAD_FAST(stream), the
 * stream a bytes-like object, returns the value that ivm._copy's pickle reader (_Reader)
 * would return, or NotImplemented (before any exception) and the reader then reads the
 * stream itself. It reads PROTO, FRAME, STOP, NONE, NEWTRUE, NEWFALSE, BININT, BININT1,
 * BININT2, LONG1, BINFLOAT, SHORT_BINUNICODE, BINUNICODE, BINUNICODE8 (WTF-8, as pickle:
 * "surrogatepass"), EMPTY_LIST, EMPTY_DICT, EMPTY_TUPLE, EMPTY_SET, MARK, APPEND(S),
 * SETITEM(S), ADDITEMS, TUPLE, TUPLE1-3, POP, the memo opcodes, GLOBAL of the names in
 * ivm._copy._ALLOWED and REDUCE, each as pickle's C unpickler does; anything else (another
 * opcode or name, attachments, a malformed stream, an error of any step) gives
 * NotImplemented, so that pickle makes the value or raises its own error; only an
 * interrupt (an exception that is not an Exception) or a MemoryError is raised here. The names called
 * are pure functions of their arguments, so a call made here before pickle repeats it has no
 * effect of its own. Replaces pickle's opcode loop for the common case: no Python file
 * object, no per-opcode dispatch through the Unpickler's generic stack.
 *
 * tools/gen_cffi.py (--fast) hands the part above the "definitions" line to cffi's cdef and
 * the whole file to its set_source, after #include "ivm.h" and ivm/_cffi_fast.c (meson.build
 * lists that first), whose ivm_py_copy_install it uses.
 */
/* Makes ivm._copy.LOAD_FAST (above), reading ivm._copy._ALLOWED. Takes the GIL; 1 on
 * success, 0 when an import or allocation failed (the exception printed). */
int ivm_py_load_install(void);
/* --- definitions --- */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define IVM_PY_LOAD_MAX_MEMO (1u << 24)   /* a larger PUT index: pickle's own reader */

static PyObject *ivm_py_load_names; /* ivm._copy._ALLOWED: name -> callable */

typedef struct {
  const unsigned char *p, *end;
  PyObject **stack;
  Py_ssize_t len, cap;
  Py_ssize_t *marks;
  Py_ssize_t nmarks, marks_cap;
  PyObject **memo;
  size_t memo_len, memo_cap;
} ivm_py_load_t;

static int ivm_py_load_push(ivm_py_load_t *r, PyObject *o) { /* steals o */
  if (o == NULL) return 0;
  if (r->len == r->cap) {
    Py_ssize_t cap = r->cap ? 2 * r->cap : 256;
    PyObject **s = (PyObject **)PyMem_Realloc(r->stack, (size_t)cap * sizeof *s);
    if (s == NULL) {
      Py_DECREF(o);
      return 0;
    }
    r->stack = s;
    r->cap = cap;
  }
  r->stack[r->len++] = o;
  return 1;
}

/* The stack height below which items belong to an open mark. */
static Py_ssize_t ivm_py_load_fence(const ivm_py_load_t *r) {
  return r->nmarks ? r->marks[r->nmarks - 1] : 0;
}

/* Pops the last mark: its height, or -1 when there is none. */
static Py_ssize_t ivm_py_load_marker(ivm_py_load_t *r) {
  return r->nmarks ? r->marks[--r->nmarks] : -1;
}

static int ivm_py_load_need(const ivm_py_load_t *r, size_t n) {
  return (size_t)(r->end - r->p) >= n;
}

static uint64_t ivm_py_load_le(ivm_py_load_t *r, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | r->p[i];
  r->p += n;
  return v;
}

/* Only the next index (as libivm's writers and pickle's own write them): any other, which
 * pickle numbers differently or refuses, is left to pickle's reader. */
static int ivm_py_load_memo_put(ivm_py_load_t *r, size_t index) {
  if (r->len <= ivm_py_load_fence(r) || index != r->memo_len || index >= IVM_PY_LOAD_MAX_MEMO) {
    return 0;
  }
  if (index >= r->memo_cap) {
    size_t cap = r->memo_cap ? r->memo_cap : 256;
    while (cap <= index) cap *= 2;
    PyObject **m = (PyObject **)PyMem_Realloc(r->memo, cap * sizeof *m);
    if (m == NULL) return 0;
    memset(m + r->memo_cap, 0, (cap - r->memo_cap) * sizeof *m);
    r->memo = m;
    r->memo_cap = cap;
  }
  PyObject *top = r->stack[r->len - 1];
  Py_INCREF(top);
  Py_XSETREF(r->memo[index], top);
  if (index >= r->memo_len) r->memo_len = index + 1;
  return 1;
}

static int ivm_py_load_memo_get(ivm_py_load_t *r, size_t index) {
  if (index >= r->memo_len || r->memo[index] == NULL) return 0;
  Py_INCREF(r->memo[index]);
  return ivm_py_load_push(r, r->memo[index]);
}

/* Whether s[0, n) is all ASCII (eight bytes at a time). */
static int ivm_py_load_ascii(const unsigned char *s, size_t n) {
  uint64_t high = 0, w;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, s + i, 8);
    high |= w;
  }
  for (; i < n; ++i) high |= s[i];
  return (high & 0x8080808080808080ull) == 0;
}

static int ivm_py_load_str(ivm_py_load_t *r, int width) {
  if (!ivm_py_load_need(r, (size_t)width)) return 0;
  uint64_t n = ivm_py_load_le(r, width);
  if (!ivm_py_load_need(r, n) || n > PY_SSIZE_T_MAX) return 0;
  const char *s = (const char *)r->p;
  r->p += n;
  /* ASCII (keys, most text) is its own str: made directly, as the decoder would make it.
   * The empty and one-character strs are the decoder's (shared) ones. */
  if (n > 1 && ivm_py_load_ascii((const unsigned char *)s, n)) {
    PyObject *str = PyUnicode_New((Py_ssize_t)n, 127);
    if (str == NULL) return 0;
    memcpy(PyUnicode_DATA(str), s, n);
    return ivm_py_load_push(r, str);
  }
  return ivm_py_load_push(r, PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "surrogatepass"));
}

/* APPEND(S), SETITEM(S), ADDITEMS: the items from height x go into the container below. */
static int ivm_py_load_add(ivm_py_load_t *r, Py_ssize_t x, char op) {
  Py_ssize_t i;
  if (x > r->len || x <= ivm_py_load_fence(r)) return 0;
  PyObject *target = r->stack[x - 1];
  if (op == 'a') {   /* APPEND(S) */
    if (!PyList_CheckExact(target)) return 0;
    for (i = x; i < r->len; ++i) {
      if (PyList_Append(target, r->stack[i]) < 0) return 0;
    }
  } else if (op == 's') {   /* SETITEM(S) */
    if ((r->len - x) % 2 != 0) return 0;
    if (PyDict_CheckExact(target)) {
      for (i = x; i < r->len; i += 2) {
        if (PyDict_SetItem(target, r->stack[i], r->stack[i + 1]) < 0) return 0;
      }
    } else {   /* a JSMap: pickle calls __setitem__ */
      for (i = x; i < r->len; i += 2) {
        if (PyObject_SetItem(target, r->stack[i], r->stack[i + 1]) < 0) return 0;
      }
    }
  } else {   /* ADDITEMS */
    if (!PySet_CheckExact(target)) return 0;
    for (i = x; i < r->len; ++i) {
      if (PySet_Add(target, r->stack[i]) < 0) return 0;
    }
  }
  while (r->len > x) Py_DECREF(r->stack[--r->len]);
  return 1;
}

/* TUPLE (from a mark) and TUPLE1-3: the items from height x as one tuple. */
static int ivm_py_load_tuple(ivm_py_load_t *r, Py_ssize_t x) {
  if (x < ivm_py_load_fence(r) || x > r->len) return 0;
  PyObject *t = PyTuple_New(r->len - x);
  if (t == NULL) return 0;
  for (Py_ssize_t i = x; i < r->len; ++i) PyTuple_SET_ITEM(t, i - x, r->stack[i]);
  r->len = x;
  return ivm_py_load_push(r, t);
}

static int ivm_py_load_global(ivm_py_load_t *r) {
  const unsigned char *nl1 = memchr(r->p, '\n', (size_t)(r->end - r->p)), *nl2;
  if (nl1 == NULL) return 0;
  nl2 = memchr(nl1 + 1, '\n', (size_t)(r->end - nl1 - 1));
  if (nl2 == NULL) return 0;
  if (nl1 - r->p != 9 || memcmp(r->p, "ivm._copy", 9) != 0) return 0;
  PyObject *name = PyUnicode_DecodeUTF8((const char *)nl1 + 1, nl2 - nl1 - 1, "strict");
  if (name == NULL) return 0;
  PyObject *fn = PyDict_GetItemWithError(ivm_py_load_names, name);
  Py_DECREF(name);
  if (fn == NULL) return 0;   /* _buf, _sab, _att (the reader's own) or not a name */
  r->p = nl2 + 1;
  Py_INCREF(fn);
  return ivm_py_load_push(r, fn);
}

static int ivm_py_load_reduce(ivm_py_load_t *r) {
  if (r->len - 2 < ivm_py_load_fence(r)) return 0;
  PyObject *args = r->stack[r->len - 1], *fn = r->stack[r->len - 2];
  if (!PyTuple_CheckExact(args)) return 0;
  PyObject *value = PyObject_Call(fn, args, NULL);
  if (value == NULL) return 0;
  r->len -= 2;
  Py_DECREF(args);
  Py_DECREF(fn);
  return ivm_py_load_push(r, value);
}

/* One opcode; 0 to give up. */
static int ivm_py_load_step(ivm_py_load_t *r, unsigned char c) {
  Py_ssize_t x;
  switch (c) {
    case 0x80:   /* PROTO */
      if (!ivm_py_load_need(r, 1) || *r->p > 5) return 0;
      r->p += 1;
      return 1;
    case 0x95: {   /* FRAME */
      if (!ivm_py_load_need(r, 8)) return 0;
      uint64_t n = ivm_py_load_le(r, 8);
      return ivm_py_load_need(r, n);
    }
    case 'N': Py_INCREF(Py_None); return ivm_py_load_push(r, Py_None);
    case 0x88: Py_INCREF(Py_True); return ivm_py_load_push(r, Py_True);
    case 0x89: Py_INCREF(Py_False); return ivm_py_load_push(r, Py_False);
    case 'J':   /* BININT */
      if (!ivm_py_load_need(r, 4)) return 0;
      return ivm_py_load_push(r, PyLong_FromLong((int32_t)(uint32_t)ivm_py_load_le(r, 4)));
    case 'K':   /* BININT1 */
      if (!ivm_py_load_need(r, 1)) return 0;
      return ivm_py_load_push(r, PyLong_FromLong((long)ivm_py_load_le(r, 1)));
    case 'M':   /* BININT2 */
      if (!ivm_py_load_need(r, 2)) return 0;
      return ivm_py_load_push(r, PyLong_FromLong((long)ivm_py_load_le(r, 2)));
    case 0x8a: {   /* LONG1 */
      if (!ivm_py_load_need(r, 1)) return 0;
      size_t n = (size_t)ivm_py_load_le(r, 1);
      if (!ivm_py_load_need(r, n)) return 0;
      PyObject *v = n ? _PyLong_FromByteArray(r->p, n, 1, 1) : PyLong_FromLong(0);
      r->p += n;
      return ivm_py_load_push(r, v);
    }
    case 'G': {   /* BINFLOAT: big-endian */
      uint64_t bits = 0;
      double d;
      if (!ivm_py_load_need(r, 8)) return 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | r->p[i];
      r->p += 8;
      memcpy(&d, &bits, 8);
      return ivm_py_load_push(r, PyFloat_FromDouble(d));
    }
    case 0x8c: return ivm_py_load_str(r, 1);   /* SHORT_BINUNICODE */
    case 'X': return ivm_py_load_str(r, 4);    /* BINUNICODE */
    case 0x8d: return ivm_py_load_str(r, 8);   /* BINUNICODE8 */
    case ']': return ivm_py_load_push(r, PyList_New(0));
    case '}': return ivm_py_load_push(r, PyDict_New());
    case ')': return ivm_py_load_push(r, PyTuple_New(0));
    case 0x8f: return ivm_py_load_push(r, PySet_New(NULL));   /* EMPTY_SET */
    case '(':   /* MARK */
      if (r->nmarks == r->marks_cap) {
        Py_ssize_t cap = r->marks_cap ? 2 * r->marks_cap : 64;
        Py_ssize_t *m = (Py_ssize_t *)PyMem_Realloc(r->marks, (size_t)cap * sizeof *m);
        if (m == NULL) return 0;
        r->marks = m;
        r->marks_cap = cap;
      }
      r->marks[r->nmarks++] = r->len;
      return 1;
    case 'a': return ivm_py_load_add(r, r->len - 1, 'a');   /* APPEND */
    case 'e': return (x = ivm_py_load_marker(r)) >= 0 && ivm_py_load_add(r, x, 'a');
    case 's': return ivm_py_load_add(r, r->len - 2, 's');   /* SETITEM */
    case 'u': return (x = ivm_py_load_marker(r)) >= 0 && ivm_py_load_add(r, x, 's');
    case 0x90: return (x = ivm_py_load_marker(r)) >= 0 && ivm_py_load_add(r, x, 'i');
    case 't': return (x = ivm_py_load_marker(r)) >= 0 && ivm_py_load_tuple(r, x);
    case 0x85: return ivm_py_load_tuple(r, r->len - 1);   /* TUPLE1 */
    case 0x86: return ivm_py_load_tuple(r, r->len - 2);
    case 0x87: return ivm_py_load_tuple(r, r->len - 3);
    case '0':   /* POP: the top item, or the mark on top */
      if (r->nmarks && r->marks[r->nmarks - 1] == r->len) {
        --r->nmarks;
        return 1;
      }
      if (r->len <= ivm_py_load_fence(r)) return 0;
      Py_DECREF(r->stack[--r->len]);
      return 1;
    case 0x94: return ivm_py_load_memo_put(r, r->memo_len);   /* MEMOIZE */
    case 'q':   /* BINPUT */
      return ivm_py_load_need(r, 1) && ivm_py_load_memo_put(r, (size_t)ivm_py_load_le(r, 1));
    case 'r':   /* LONG_BINPUT */
      return ivm_py_load_need(r, 4) && ivm_py_load_memo_put(r, (size_t)ivm_py_load_le(r, 4));
    case 'h':   /* BINGET */
      return ivm_py_load_need(r, 1) && ivm_py_load_memo_get(r, (size_t)ivm_py_load_le(r, 1));
    case 'j':   /* LONG_BINGET */
      return ivm_py_load_need(r, 4) && ivm_py_load_memo_get(r, (size_t)ivm_py_load_le(r, 4));
    case 'c': return ivm_py_load_global(r);   /* GLOBAL */
    case 'R': return ivm_py_load_reduce(r);   /* REDUCE */
    default: return 0;
  }
}

static PyObject *ivm_py_load_fast(PyObject *self, PyObject *arg) {
  Py_buffer view;
  ivm_py_load_t r;
  PyObject *result = NULL;
  (void)self;
  if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
  memset(&r, 0, sizeof r);
  r.p = (const unsigned char *)view.buf;
  r.end = r.p + view.len;
  while (r.p < r.end) {
    unsigned char c = *r.p++;
    if (c == '.') {   /* STOP */
      if (r.len > ivm_py_load_fence(&r)) {
        result = r.stack[--r.len];
      }
      break;
    }
    if (!ivm_py_load_step(&r, c)) break;
  }
  while (r.len > 0) Py_DECREF(r.stack[--r.len]);
  for (size_t i = 0; i < r.memo_len; ++i) Py_XDECREF(r.memo[i]);
  PyMem_Free(r.stack);
  PyMem_Free(r.marks);
  PyMem_Free(r.memo);
  PyBuffer_Release(&view);
  if (result == NULL) {
    /* An interrupt (KeyboardInterrupt, SystemExit: not an Exception) or a MemoryError
     * raised by a call here is the caller's, as it would be from pickle's reader; for
     * anything else pickle's reader decides, and raises its own errors. */
    PyObject *err = PyErr_Occurred();
    if (err != NULL && (!PyErr_GivenExceptionMatches(err, PyExc_Exception) ||
                        PyErr_GivenExceptionMatches(err, PyExc_MemoryError))) {
      return NULL;
    }
    PyErr_Clear();
    Py_RETURN_NOTIMPLEMENTED;
  }
  return result;
}

static PyMethodDef ivm_py_load_def = {
    "LOAD_FAST", (PyCFunction)ivm_py_load_fast, METH_O,
    "LOAD_FAST(stream): the value of a copy stream, or NotImplemented (ivm/_cffi_load.c)"};

int ivm_py_load_install(void) { return ivm_py_copy_install(&ivm_py_load_def, &ivm_py_load_names); }
