/* The fast way into an isolate for plain data: a Python value written as JSON text in one C
 * pass, inside a copy stream that names ivm._copy._json (docs/values.md, "The copy format").
 *
 * ivm_py_json_install() makes ivm._copy.JSON_STREAM, a CPython builtin: JSON_STREAM(obj)
 * returns the whole stream as bytes,
 *     PROTO 5, GLOBAL "ivm._copy" "_json", BINBYTES8 <text>, TUPLE1, REDUCE, STOP,
 * and JSON_STREAM(obj, into), `into` a writable buffer of a pointer's size (ffi.buffer of an
 * ivm_value_t **), makes an owned ivm_value_t of that stream, writes its pointer into `into`
 * and returns True: the text goes from the writer's buffer to libivm with no bytes object
 * in between,
 * when obj is plain JSON data: exact dicts whose keys are all exact strs, exact lists, exact
 * strs, ints within +-(2**53 - 1) (bool, True and False), finite floats and None, with no
 * dict or list met twice (shared or cyclic), at most IVM_PY_JSON_MAX_DEPTH containers deep
 * and at most IVM_PY_JSON_MAX_TEXT bytes of text (a str counted at its longest escaped form
 * while it is written). For anything else it returns None (before
 * any exception), and ivm._copy writes the copy format with pickle as before. The text is
 * Latin-1: code points above U+00FF, lone surrogates included, are \u escapes. Floats are
 * written so that JSON.parse and Python's json.loads both read back the same double
 * (integral ones end in ".0"). libivm's reader (libivm/copy_json.cc) gives the text to V8's
 * JSON.parse; Python's readers refuse the name (only isolates read it). Replaces pickle's writer and libivm's
 * transcoder for the common case: one pass instead of two.
 *
 * tools/gen_cffi.py (--fast) hands the part above the "definitions" line to cffi's cdef and
 * the whole file to its set_source, after #include "ivm.h" and ivm/_cffi_fast.c (meson.build
 * lists that first), whose ivm_py_safe_int and ivm_py_copy_install it uses.
 */
/* Makes ivm._copy.JSON_STREAM (above). Takes the GIL; 1 on success, 0 when an import or
 * allocation failed (the exception printed). */
int ivm_py_json_install(void);
/* --- definitions --- */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IVM_PY_JSON_MAX_DEPTH 200          /* libivm's transcoder's bound (copy_json.cc) */
#define IVM_PY_JSON_MAX_TEXT (2u << 20)    /* libivm's bound for a _json stream's text */
#define IVM_PY_JSON_KEYS 64                /* the key cache's entries (32 pairs) */

static const char ivm_py_json_head[] = "\x80\x05" "civm._copy\n_json\n" "\x8e";
#define IVM_PY_JSON_HEAD_LEN (sizeof ivm_py_json_head - 1)
#define IVM_PY_JSON_PREFIX (IVM_PY_JSON_HEAD_LEN + 8) /* the head and BINBYTES8's length */

typedef struct {
  char *s;
  size_t n, cap;
  int failed;   /* out of memory */
  /* the dicts and lists met so far: an open-addressing set of pointers, whose slots of
   * another generation (an earlier call's) are empty */
  struct ivm_py_json_seen { uintptr_t p; size_t gen; } *seen;
  size_t seen_cap, seen_n, gen;
  /* dict keys written so far, by object (each alive while the walk runs): where their
   * text is in s, to copy it from there when the same str is a key again */
  struct { PyObject *key; size_t at, len; } keys[IVM_PY_JSON_KEYS];
} ivm_py_json_t;

static int ivm_py_json_room(ivm_py_json_t *w, size_t k) {
  /* the bound first, whatever the buffer kept from an earlier call holds: whether a value
   * is written as JSON must not depend on the calls before it */
  if (w->n + k > IVM_PY_JSON_PREFIX + IVM_PY_JSON_MAX_TEXT + 3) return 0; /* too long */
  if (w->cap - w->n >= k) return 1;
  size_t cap = 2 * w->cap + k;
  char *s = (char *)realloc(w->s, cap);
  if (s == NULL) {
    w->failed = 1;
    return 0;
  }
  w->s = s;
  w->cap = cap;
  return 1;
}

static int ivm_py_json_put(ivm_py_json_t *w, char c) {
  if (w->n == w->cap && !ivm_py_json_room(w, 1)) return 0;
  w->s[w->n++] = c;
  return 1;
}

static size_t ivm_py_json_slot(uintptr_t p, size_t cap) {
  return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ull) & (cap - 1);
}

/* 1 the first time `o` is met, 0 after (or out of memory). */
static int ivm_py_json_first(ivm_py_json_t *w, PyObject *o) {
  struct ivm_py_json_seen *seen = w->seen;
  size_t gen = w->gen, mask = w->seen_cap - 1, h;
  if (2 * (w->seen_n + 1) > w->seen_cap) {
    size_t cap = w->seen_cap ? 2 * w->seen_cap : 1024, i;
    struct ivm_py_json_seen *t = (struct ivm_py_json_seen *)calloc(cap, sizeof *t);
    if (t == NULL) {
      w->failed = 1;
      return 0;
    }
    for (i = 0; i < w->seen_cap; ++i) {
      if (seen[i].gen == gen) {
        h = ivm_py_json_slot(seen[i].p, cap);
        while (t[h].gen == gen) h = (h + 1) & (cap - 1);
        t[h] = seen[i];
      }
    }
    free(seen);
    w->seen = seen = t;
    w->seen_cap = cap;
    mask = cap - 1;
  }
  uintptr_t p = (uintptr_t)o;
  for (h = ivm_py_json_slot(p, w->seen_cap); seen[h].gen == gen; h = (h + 1) & mask) {
    if (seen[h].p == p) return 0;
  }
  seen[h].p = p;
  seen[h].gen = gen;
  ++w->seen_n;
  return 1;
}

static void ivm_py_json_escape(char *out, uint32_t unit) {
  static const char hex[] = "0123456789abcdef";
  out[0] = '\\';
  out[1] = 'u';
  out[2] = hex[(unit >> 12) & 15];
  out[3] = hex[(unit >> 8) & 15];
  out[4] = hex[(unit >> 4) & 15];
  out[5] = hex[unit & 15];
}

static int ivm_py_json_str(ivm_py_json_t *w, PyObject *o) {
  if (PyUnicode_READY(o) < 0) {   /* a legacy str (Python < 3.12): pickle's writer decides */
    PyErr_Clear();
    return 0;
  }
  Py_ssize_t len = PyUnicode_GET_LENGTH(o), i;
  int kind = PyUnicode_KIND(o);
  const void *data = PyUnicode_DATA(o);
  /* at most 6 bytes per code point (an escape), 12 for the astral ones of a 4-byte str (a
   * surrogate pair's escapes), and the quotes */
  size_t most = (kind == PyUnicode_4BYTE_KIND ? 12 : 6) * (size_t)len + 2;
  if ((size_t)len > IVM_PY_JSON_MAX_TEXT || !ivm_py_json_room(w, most)) return 0;
  char *out = w->s + w->n;
  *out++ = '"';
  if (kind == PyUnicode_1BYTE_KIND) {
    const unsigned char *s = (const unsigned char *)data;
    for (i = 0; i < len; ++i) {
      unsigned char c = s[i];
      if (c >= 0x20 && c != '"' && c != '\\') {
        *out++ = (char)c;
      } else if (c == '"' || c == '\\') {
        *out++ = '\\';
        *out++ = (char)c;
      } else {
        ivm_py_json_escape(out, c);
        out += 6;
      }
    }
  } else {
    for (i = 0; i < len; ++i) {
      Py_UCS4 c = PyUnicode_READ(kind, data, i);
      if (c >= 0x20 && c < 0x100 && c != '"' && c != '\\') {
        *out++ = (char)c;
      } else if (c == '"' || c == '\\') {
        *out++ = '\\';
        *out++ = (char)c;
      } else if (c < 0x10000) {   /* controls, U+0100 and above, lone surrogates */
        ivm_py_json_escape(out, c);
        out += 6;
      } else {
        c -= 0x10000;
        ivm_py_json_escape(out, 0xD800 + (c >> 10));
        ivm_py_json_escape(out + 6, 0xDC00 + (c & 0x3FF));
        out += 12;
      }
    }
  }
  *out++ = '"';
  w->n = (size_t)(out - w->s);
  return 1;
}

/* u in decimal at out; returns the number of digits (two at a time from a table). */
static size_t ivm_py_json_digits(char *out, uint64_t u) {
  static const char pairs[] =
      "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
      "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
      "8081828384858687888990919293949596979899";
  size_t n = 1, i;
  for (uint64_t v = u; v >= 10; v /= 10) ++n;
  i = n;
  while (u >= 100) {
    unsigned k = (unsigned)(u % 100) * 2;
    u /= 100;
    out[--i] = pairs[k + 1];
    out[--i] = pairs[k];
  }
  if (u >= 10) {
    out[--i] = pairs[u * 2 + 1];
    out[--i] = pairs[u * 2];
  } else {
    out[--i] = (char)('0' + u);
  }
  return n;
}

/* A double that is a multiple of 2**-10 below 2**43 in magnitude (1.5, -0.25, 7.0) as its
 * exact decimal expansion (integral ones as "7.0"); 0 for every other double (and -0). */
static size_t ivm_py_json_short_float(double d, char *out) {
  double a = fabs(d), scaled;
  char *p = out;
  uint64_t n, frac;
  if (!(a < 8796093022208.0) || (a == 0 && signbit(d))) return 0;
  scaled = a * 1024.0;
  if (scaled != floor(scaled)) return 0;
  n = (uint64_t)scaled;
  frac = n & 1023u;
  if (d < 0) *p++ = '-';
  p += ivm_py_json_digits(p, n >> 10);
  *p++ = '.';
  if (frac == 0) {
    *p++ = '0';
  } else {
    /* frac / 2**10 = odd / 2**k (k = 10 - trailing zero bits) = odd * 5**k / 10**k: exactly
     * k digits after the point, the last one a 5 */
    int k = 10 - __builtin_ctzll(frac), i;
    uint64_t v = frac >> (10 - k);
    for (i = 0; i < k; ++i) v *= 5;
    for (i = k - 1; i >= 0; --i, v /= 10) p[i] = (char)('0' + v % 10);
    p += k;
  }
  return (size_t)(p - out);
}

static int ivm_py_json_value(ivm_py_json_t *w, PyObject *o, int depth);

static int ivm_py_json_float(ivm_py_json_t *w, double d) {
  char buf[40];
  size_t k;
  if (!isfinite(d) || !ivm_py_json_room(w, 40)) return 0;
  k = ivm_py_json_short_float(d, buf);
  if (k == 0) {   /* Python's repr: the shortest form that reads back exactly */
    char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL) {
      PyErr_Clear();
      w->failed = 1;
      return 0;
    }
    k = strlen(r);
    if (k < sizeof buf) memcpy(buf, r, k);
    PyMem_Free(r);
    if (k >= sizeof buf) return 0;
  }
  memcpy(w->s + w->n, buf, k);
  w->n += k;
  return 1;
}

static int ivm_py_json_int(ivm_py_json_t *w, PyObject *o) {
  long long v;
  char *out;
  unsigned long long u;
  if (!ivm_py_safe_int(o, &v)) return 0; /* a BigInt */
  if (!ivm_py_json_room(w, 24)) return 0;
  out = w->s + w->n;
  if (v < 0) *out++ = '-';
  u = v < 0 ? (unsigned long long)(-v) : (unsigned long long)v;
  out += ivm_py_json_digits(out, u);
  w->n = (size_t)(out - w->s);
  return 1;
}

static int ivm_py_json_literal(ivm_py_json_t *w, const char *s, size_t k) {
  if (!ivm_py_json_room(w, k)) return 0;
  memcpy(w->s + w->n, s, k);
  w->n += k;
  return 1;
}

/* A dict's key: from the cache when this str was a key before. The cache is two-way (a
 * key's pair of entries, chosen by the top 5 bits of a multiplicative hash: 32 pairs; a new
 * key goes first, the one it displaces second), so that two keys of one shape of rows that
 * fall into the same pair both stay. */
static int ivm_py_json_key(ivm_py_json_t *w, PyObject *key) {
  size_t pair = (size_t)((((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ull) >> 59) * 2, at = w->n, i;
  for (int way = 0; way < 2; ++way) {
    if (w->keys[pair + way].key != key) continue;
    size_t len = w->keys[pair + way].len;
    if (!ivm_py_json_room(w, len)) return 0;
    char *to = w->s + w->n;
    const char *from = w->s + w->keys[pair + way].at;
    if (len <= 16) {   /* short keys: cheaper than a call to memcpy */
      for (i = 0; i < len; ++i) to[i] = from[i];
    } else {
      memcpy(to, from, len);
    }
    w->n += len;
    return 1;
  }
  if (!ivm_py_json_str(w, key)) return 0;
  w->keys[pair + 1] = w->keys[pair];
  w->keys[pair].key = key;
  w->keys[pair].at = at;
  w->keys[pair].len = w->n - at;
  return 1;
}

static int ivm_py_json_dict(ivm_py_json_t *w, PyObject *o, int depth) {
  Py_ssize_t pos = 0;
  PyObject *key, *value;
  int first = 1;
  if (!ivm_py_json_put(w, '{')) return 0;
  while (PyDict_Next(o, &pos, &key, &value)) {
    if (!PyUnicode_CheckExact(key)) return 0;   /* a Map */
    if (!first && !ivm_py_json_put(w, ',')) return 0;
    first = 0;
    if (!ivm_py_json_key(w, key) || !ivm_py_json_put(w, ':') ||
        !ivm_py_json_value(w, value, depth)) {
      return 0;
    }
  }
  return ivm_py_json_put(w, '}');
}

static int ivm_py_json_list(ivm_py_json_t *w, PyObject *o, int depth) {
  Py_ssize_t i;
  if (!ivm_py_json_put(w, '[')) return 0;
  for (i = 0; i < PyList_GET_SIZE(o); ++i) {
    if (i && !ivm_py_json_put(w, ',')) return 0;
    if (!ivm_py_json_value(w, PyList_GET_ITEM(o, i), depth)) return 0;
  }
  return ivm_py_json_put(w, ']');
}

static int ivm_py_json_value(ivm_py_json_t *w, PyObject *o, int depth) {
  PyTypeObject *t = Py_TYPE(o);
  if (t == &PyUnicode_Type) return ivm_py_json_str(w, o);
  if (t == &PyLong_Type) return ivm_py_json_int(w, o);
  if (t == &PyFloat_Type) return ivm_py_json_float(w, PyFloat_AS_DOUBLE(o));
  if (o == Py_True) return ivm_py_json_literal(w, "true", 4);
  if (o == Py_False) return ivm_py_json_literal(w, "false", 5);
  if (o == Py_None) return ivm_py_json_literal(w, "null", 4);
  if (t != &PyDict_Type && t != &PyList_Type) return 0;
  /* A container whose one reference is the one it was reached through (its parent's item,
   * the parent itself met once) cannot be met again: only the others go into the set. */
  if (depth >= IVM_PY_JSON_MAX_DEPTH || (Py_REFCNT(o) != 1 && !ivm_py_json_first(w, o))) return 0;
  return t == &PyDict_Type ? ivm_py_json_dict(w, o, depth + 1) : ivm_py_json_list(w, o, depth + 1);
}

/* The writer's buffer and pointer set, kept from one call to the next (up to these sizes):
 * a large value is not written into freshly grown (and page-faulted) memory every time.
 * Only one call uses them at a time; a call made while they are in use (none is: the
 * writer runs no Python code) would take new ones. Guarded by the GIL. */
#define IVM_PY_JSON_KEEP_TEXT (4u << 20)
#define IVM_PY_JSON_KEEP_SEEN (1u << 16)
static struct {
  char *s;
  size_t cap;
  struct ivm_py_json_seen *seen;
  size_t seen_cap, gen;
  int busy;
} ivm_py_json_kept;

/* The stream w->s[0, w->n) as JSON_STREAM returns it: bytes, or with `into`, a new
 * ivm_value_t made of it, its pointer written into `into` (then True). */
static PyObject *ivm_py_json_result(const ivm_py_json_t *w, PyObject *into) {
  Py_buffer view;
  ivm_value_t *value = NULL;
  ivm_error_t *err;
  if (into == NULL) return PyBytes_FromStringAndSize(w->s, (Py_ssize_t)w->n);
  if (PyObject_GetBuffer(into, &view, PyBUF_WRITABLE) < 0) return NULL;
  if ((size_t)view.len < sizeof value) {
    PyBuffer_Release(&view);
    PyErr_SetString(PyExc_ValueError, "JSON_STREAM: the buffer cannot hold a pointer");
    return NULL;
  }
  err = ivm_value_new_serialized(w->s, w->n, &value);
  if (err != NULL) {
    ivm_error_free(err);
    PyBuffer_Release(&view);
    return PyErr_NoMemory();
  }
  memcpy(view.buf, &value, sizeof value);
  PyBuffer_Release(&view);
  Py_RETURN_TRUE;
}

static PyObject *ivm_py_json_stream(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  ivm_py_json_t w;
  PyObject *out = NULL, *obj, *into;
  size_t text, i;
  int kept = !ivm_py_json_kept.busy;
  (void)self;
  if (nargs < 1 || nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "JSON_STREAM(obj[, into]) takes one or two arguments");
    return NULL;
  }
  obj = args[0];
  into = nargs == 2 ? args[1] : NULL;
  if (Py_TYPE(obj) != &PyDict_Type && Py_TYPE(obj) != &PyList_Type) Py_RETURN_NONE;
  memset(&w, 0, sizeof w);
  w.gen = 1;
  if (kept) {
    ivm_py_json_kept.busy = 1;
    w.s = ivm_py_json_kept.s;
    w.cap = ivm_py_json_kept.cap;
    w.seen = ivm_py_json_kept.seen;
    w.seen_cap = ivm_py_json_kept.seen_cap;
    w.gen = ++ivm_py_json_kept.gen;   /* the slots of earlier calls are empty */
  }
  w.n = 0;
  if (ivm_py_json_room(&w, 4096) && ivm_py_json_literal(&w, ivm_py_json_head, IVM_PY_JSON_HEAD_LEN)) {
    w.n = IVM_PY_JSON_PREFIX;
    if (ivm_py_json_value(&w, obj, 0) && w.n - IVM_PY_JSON_PREFIX <= IVM_PY_JSON_MAX_TEXT &&
        ivm_py_json_literal(&w, "\x85R.", 3)) {
      text = w.n - IVM_PY_JSON_PREFIX - 3;
      for (i = 0; i < 8; ++i) w.s[IVM_PY_JSON_HEAD_LEN + i] = (char)((text >> (8 * i)) & 0xff);
      out = ivm_py_json_result(&w, into);
    } else if (w.failed) {
      PyErr_NoMemory();
    } else {
      out = Py_None;
      Py_INCREF(out);
    }
  } else {
    PyErr_NoMemory();
  }
  if (kept && w.cap <= IVM_PY_JSON_KEEP_TEXT) {
    ivm_py_json_kept.s = w.s;
    ivm_py_json_kept.cap = w.cap;
  } else {
    free(w.s);
    if (kept) ivm_py_json_kept.s = NULL, ivm_py_json_kept.cap = 0;
  }
  if (kept && w.seen_cap <= IVM_PY_JSON_KEEP_SEEN) {
    ivm_py_json_kept.seen = w.seen;
    ivm_py_json_kept.seen_cap = w.seen_cap;
  } else {
    free(w.seen);
    if (kept) ivm_py_json_kept.seen = NULL, ivm_py_json_kept.seen_cap = 0;
  }
  if (kept) ivm_py_json_kept.busy = 0;
  return out;
}

static PyMethodDef ivm_py_json_def = {
    "JSON_STREAM", (PyCFunction)(void (*)(void))ivm_py_json_stream, METH_FASTCALL,
    "JSON_STREAM(obj[, into]): obj's copy stream as JSON text, or None (ivm/_cffi_json.c)"};

int ivm_py_json_install(void) { return ivm_py_copy_install(&ivm_py_json_def, NULL); }
