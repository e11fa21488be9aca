/*
 * ivm.h — the C ABI of libivm: isolated V8 JavaScript for any language.
 *
 * This header is the complete reference of the C interface: what it does not
 * declare is not API. It contains no V8 type and no inline function, and it
 * compiles as C99 and as C++.
 *
 * ## Model
 *
 * An *isolate* is an independent JavaScript VM with its own heap, memory limit
 * and timeouts. A *context* is a global object (a realm) inside one isolate. A
 * *script* is code compiled once for an isolate and run in any of its contexts.
 * A *value* is a host-side copy of a JavaScript value that belongs to no isolate.
 * An *error* describes why a call failed.
 *
 * ## Handles and lifetimes
 *
 * Every object is an opaque handle. Each has two lifetime verbs:
 *
 *   - `ivm_<object>_dispose()` / `_release()` ends the engine object (idempotent,
 *     any thread). The handle stays valid; later calls on it return an error of
 *     kind IVM_ERROR_DISPOSED. Using a disposed handle is never undefined
 *     behaviour.
 *   - `ivm_<object>_free()` frees the handle itself, exactly once; NULL is a
 *     no-op. It never blocks on a busy isolate: teardown that needs the isolate
 *     is queued and done by the next thread that holds it. After free, the
 *     pointer must not be used again.
 *
 * Handles share ownership of what they need, so they may be freed in any order:
 * a context keeps its isolate alive; an isolate whose last handle is freed is
 * disposed.
 *
 * ## Errors
 *
 * A fallible call returns an owned `ivm_error_t *`: NULL means success. The
 * caller reads it with the ivm_error_* getters and frees it with
 * ivm_error_free(). Outputs are written only on success.
 *
 * ## Strings
 *
 * Strings cross the ABI as (pointer, length) pairs of UTF-8 bytes and need not
 * be NUL-terminated. JavaScript strings may contain lone UTF-16 surrogates; they
 * are encoded as WTF-8 (the 3-byte form of the surrogate code point) in both
 * directions, so every JavaScript string survives a round trip. Getters return
 * borrowed pointers that stay valid until their owner is freed.
 *
 * ## Threads
 *
 * Each function documents which threads may call it. Calls into one isolate
 * are serialised: a call waits while another thread runs JavaScript in the same
 * isolate, and never interleaves with it. Calls into different isolates run in
 * parallel. The V8 platform starts lazily and thread-safely on first use.
 *
 * ## Versioning
 *
 * Option and output structs begin with `struct_size`, set by the caller to the
 * sizeof it was compiled with; fields are only ever appended, and a field
 * beyond an older caller's struct_size reads as its default. Enumerations are
 * fixed-width integers whose values are append-only: treat an unknown error kind
 * as a generic error and an unknown value kind as unsupported. A shipped
 * function never changes; a new behaviour gets a new name (`_v2`).
 */
#ifndef IVM_H
#define IVM_H

#ifndef IVM_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

#if defined(IVM_BUILDING_LIBRARY) && !defined(IVM_CDEF)
#define IVM_API __attribute__((visibility("default")))
#else
#define IVM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* Version                                                                   */
/* ------------------------------------------------------------------------- */

#define IVM_VERSION_MAJOR 0
#define IVM_VERSION_MINOR 2
#define IVM_VERSION_PATCH 0
/** MAJOR * 1000000 + MINOR * 1000 + PATCH of this header. */
#define IVM_VERSION_NUMBER 2000

/**
 * The version of the loaded library, as IVM_VERSION_NUMBER. Compare it with the
 * header's to detect a mismatched installation.
 * Threads: any. Since: 0.1
 */
IVM_API uint32_t ivm_version(void);

/**
 * The version of the V8 engine libivm runs on, e.g. "10.2.154.26", as a static
 * NUL-terminated string.
 * Threads: any. Since: 0.1
 */
IVM_API const char *ivm_v8_version(void);

/* ------------------------------------------------------------------------- */
/* Errors                                                                    */
/* ------------------------------------------------------------------------- */

typedef struct ivm_error ivm_error_t;

/** Why a call failed. Values are ABI: append only. */
typedef uint32_t ivm_error_kind_t;
enum {
  /** JavaScript threw; name, message and stack describe the thrown value. */
  IVM_ERROR_JS_EXCEPTION = 1,
  /** The call's timeout expired; the isolate stays usable. */
  IVM_ERROR_TIMEOUT = 2,
  /** The isolate ran past its memory limit; it has been disposed. */
  IVM_ERROR_MEMORY_LIMIT = 3,
  /** The isolate is disposed, or the context/script was released. */
  IVM_ERROR_DISPOSED = 4,
  /** An argument was invalid (NULL handle, bad option, foreign context...). */
  IVM_ERROR_INVALID_ARGUMENT = 5,
  /** A bug or resource failure inside libivm. */
  IVM_ERROR_INTERNAL = 6,
  /** An asynchronous job was cancelled before or while it ran. */
  IVM_ERROR_CANCELLED = 7,
  /** Execution was stopped by ivm_isolate_terminate(). */
  IVM_ERROR_TERMINATED = 8,
  /** A value cannot leave the isolate in the requested form. */
  IVM_ERROR_TRANSFER = 9,
  /**
   * A synchronous call that could deadlock was refused: code running for an
   * asynchronous job (on a pool thread, e.g. a host callback or a done
   * callback) may not block on a different isolate.
   */
  IVM_ERROR_DEADLOCK = 10
};

/** The kind of `err`. Threads: any. Since: 0.1 */
IVM_API ivm_error_kind_t ivm_error_kind(const ivm_error_t *err);

/**
 * The error message, e.g. "Script execution timed out." or the JavaScript
 * error's `message`. Borrowed; valid until ivm_error_free(err).
 * Threads: any. Since: 0.1
 */
IVM_API void ivm_error_message(const ivm_error_t *err, const char **out,
                               size_t *out_len);

/**
 * For IVM_ERROR_JS_EXCEPTION: the thrown object's `name` ("TypeError"...), read
 * from a data property of the object or its prototypes (never a getter); empty
 * when it has none, when a primitive was thrown, and for other kinds.
 * Borrowed. Threads: any. Since: 0.1
 */
IVM_API void ivm_error_name(const ivm_error_t *err, const char **out,
                            size_t *out_len);

/**
 * For IVM_ERROR_JS_EXCEPTION: the JavaScript stack, "Name: message" followed by
 * one "    at ..." line per frame, with script names and 1-based line:column.
 * It is built by libivm from the captured frames and never runs JavaScript (so
 * `Error.prepareStackTrace` and `stack` getters have no effect). Empty for other
 * kinds. Borrowed. Threads: any. Since: 0.1
 */
IVM_API void ivm_error_stack(const ivm_error_t *err, const char **out,
                             size_t *out_len);

/**
 * For IVM_ERROR_JS_EXCEPTION: 1 if a non-Error primitive was thrown (`throw 1`),
 * in which case the message is its string form; 0 otherwise.
 * Threads: any. Since: 0.1
 */
IVM_API int ivm_error_thrown_primitive(const ivm_error_t *err);

/** Frees `err`; NULL is a no-op. Threads: any. Since: 0.1 */
IVM_API void ivm_error_free(ivm_error_t *err);

/* ------------------------------------------------------------------------- */
/* Values                                                                    */
/* ------------------------------------------------------------------------- */

/**
 * A host-side JavaScript value, owned by the caller, belonging to no isolate.
 * Values are immutable after creation and may be read from any thread.
 * Future versions add kinds (structured copies, external copies, references)
 * without changing the existing ones.
 */
typedef struct ivm_value ivm_value_t;
/** An ExternalCopy handle (see "Structured copies and external copies"). */
typedef struct ivm_external_copy ivm_external_copy_t;
/** A Reference handle (see "References"). */
typedef struct ivm_reference ivm_reference_t;

typedef uint32_t ivm_value_kind_t;
enum {
  IVM_VALUE_UNDEFINED = 1,
  IVM_VALUE_NULL = 2,
  IVM_VALUE_BOOLEAN = 3,
  /** An IEEE-754 double (NaN, infinities and -0 preserved). */
  IVM_VALUE_NUMBER = 4,
  /** An arbitrary-precision integer, as a sign and 64-bit words. */
  IVM_VALUE_BIGINT = 5,
  /** A string, as WTF-8. */
  IVM_VALUE_STRING = 6,
  /**
   * A structured copy of any copyable value: a byte stream in the ivm copy
   * format (docs/values.md: a subset of Python's pickle protocol 5) plus
   * attachments the stream refers to by index: ArrayBuffer contents and,
   * in values made by the host, ExternalCopy markers. Since: 0.2
   */
  IVM_VALUE_SERIALIZED = 7,
  /** An ExternalCopy (ivm_value_external_copy()); entering an isolate, it
   * becomes an ExternalCopy object (copy(), copyInto(), release()). Since: 0.2 */
  IVM_VALUE_EXTERNAL_COPY = 8,
  /** A Reference to a value inside an isolate (ivm_value_reference());
   * entering an isolate, it becomes a Reference object. Since: 0.2 */
  IVM_VALUE_REFERENCE = 9
};

/** The kind of `value`. Threads: any. Since: 0.1 */
IVM_API ivm_value_kind_t ivm_value_kind(const ivm_value_t *value);

/** For IVM_VALUE_BOOLEAN: 0 or 1; otherwise 0. Threads: any. Since: 0.1 */
IVM_API int ivm_value_boolean(const ivm_value_t *value);

/** For IVM_VALUE_NUMBER: the number; otherwise NaN. Threads: any. Since: 0.1 */
IVM_API double ivm_value_number(const ivm_value_t *value);

/**
 * For IVM_VALUE_STRING: the WTF-8 bytes (borrowed, valid until the value is
 * freed); otherwise an empty string. Threads: any. Since: 0.1
 */
IVM_API void ivm_value_string(const ivm_value_t *value, const char **out,
                              size_t *out_len);

/**
 * For IVM_VALUE_BIGINT: `*negative_out` is 1 for a negative number, and
 * `*words_out` / `*count_out` give the magnitude as little-endian 64-bit words
 * (least significant first; zero has no words). Borrowed. Otherwise zero.
 * Threads: any. Since: 0.1
 */
IVM_API void ivm_value_bigint(const ivm_value_t *value, int *negative_out,
                              const uint64_t **words_out, size_t *count_out);

/** New values. Threads: any. Never NULL unless memory is exhausted. Since: 0.1 */
IVM_API ivm_value_t *ivm_value_new_undefined(void);
IVM_API ivm_value_t *ivm_value_new_null(void);
IVM_API ivm_value_t *ivm_value_new_boolean(int b);
IVM_API ivm_value_t *ivm_value_new_number(double d);
/** `data`: WTF-8 of `len` bytes (copied). Since: 0.1 */
IVM_API ivm_value_t *ivm_value_new_string(const char *data, size_t len);
/** Magnitude as little-endian 64-bit words (copied). Since: 0.1 */
IVM_API ivm_value_t *ivm_value_new_bigint(int negative, const uint64_t *words,
                                          size_t count);

/** Frees `value`; NULL is a no-op. Threads: any. Since: 0.1 */
IVM_API void ivm_value_free(ivm_value_t *value);

/**
 * A primitive in the caller's memory: results of synchronous calls
 * (ivm_eval_options_t.primitive_out) and arguments of host functions
 * (ivm_call_view()) without allocating an ivm_value_t. `kind` is an
 * IVM_VALUE_* kind, or 0 when the value is not given here. Since: 0.2
 */
typedef struct ivm_primitive {
  ivm_value_kind_t kind;
  int32_t boolean;       /**< IVM_VALUE_BOOLEAN: 0 or 1 */
  double number;         /**< IVM_VALUE_NUMBER */
  const char *data;      /**< IVM_VALUE_STRING (arguments only): WTF-8, borrowed */
  size_t len;
} ivm_primitive_t;

/* ------------------------------------------------------------------------- */
/* Structured copies and external copies                                     */
/* ------------------------------------------------------------------------- */

/**
 * For IVM_VALUE_SERIALIZED: the stream (borrowed, valid until the value is
 * freed); otherwise empty. Threads: any. Since: 0.2
 */
IVM_API void ivm_value_serialized(const ivm_value_t *value, const char **out,
                                  size_t *out_len);

/** For IVM_VALUE_SERIALIZED: the number of attachments; otherwise 0. Since: 0.2 */
IVM_API size_t ivm_value_attachment_count(const ivm_value_t *value);

/**
 * For IVM_VALUE_SERIALIZED: the bytes of buffer attachment `index` (the
 * contents of an ArrayBuffer or SharedArrayBuffer the stream names with
 * `_buf(index)` or `_sab(index)`). Borrowed, valid until the value is freed.
 * Errors: INVALID_ARGUMENT (not a buffer attachment). Threads: any. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_buffer(const ivm_value_t *value, size_t index,
                                      const void **data_out, size_t *len_out);

enum {
  /** ivm_value_attachment_kind(): ArrayBuffer or SharedArrayBuffer bytes. */
  IVM_ATTACHMENT_BUFFER = 1,
  /** An ExternalCopy (ivm_value_attachment_copy()). */
  IVM_ATTACHMENT_COPY = 2,
  /** A Reference (ivm_value_attachment_reference()). */
  IVM_ATTACHMENT_REFERENCE = 3,
  /** A host function or host Reference. */
  IVM_ATTACHMENT_CALLBACK = 4
};

/** The kind of attachment `index` (IVM_ATTACHMENT_*; 0 if none). Since: 0.2 */
IVM_API uint32_t ivm_value_attachment_kind(const ivm_value_t *value, size_t index);

/** For an IVM_ATTACHMENT_REFERENCE: a new handle. Errors: INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_value_attachment_reference(const ivm_value_t *value, size_t index,
                                                    ivm_reference_t **out);

/** For an IVM_ATTACHMENT_COPY: a new handle. Errors: INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_value_attachment_copy(const ivm_value_t *value, size_t index,
                                               ivm_external_copy_t **out);

/**
 * A new IVM_VALUE_SERIALIZED value from `len` bytes of stream (copied), with
 * no attachments yet. The stream is checked when the value enters an isolate.
 * Threads: any. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_new_serialized(const char *stream, size_t len,
                                              ivm_value_t **out);

enum {
  /** ivm_value_attach_buffer: do not copy `data`; it must stay valid and
   * unchanged until the value is freed. Since: 0.2 */
  IVM_ATTACH_BORROW = 1,
  /** ivm_value_attach_reference: insert the referenced value itself (only in
   * the reference's own isolate) rather than a reference object. Since: 0.2 */
  IVM_ATTACH_DEREF = 2,
  /** ivm_value_attach_callback: enter as a Reference object, not a function. */
  IVM_ATTACH_AS_REFERENCE = 4,
  /** With IVM_ATTACH_AS_REFERENCE: the host value is not callable. */
  IVM_ATTACH_NOT_CALLABLE = 8
};

/**
 * Appends a buffer attachment (ArrayBuffer contents) to a serialized value
 * and writes its index to `*index_out`. `data` is copied unless `flags` has
 * IVM_ATTACH_BORROW. Threads: any, not concurrently with other uses of the
 * value. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_buffer(ivm_value_t *value, const void *data,
                                             size_t len, uint32_t flags,
                                             size_t *index_out);

/**
 * An ExternalCopy: a structured copy that belongs to no isolate and can be
 * inserted into any isolate any number of times. Its memory counts toward
 * ivm_external_copy_total_size() until it is released (and every value made
 * from it is freed).
 */
/* (ivm_external_copy_t is declared with the values, above.) */

enum {
  /** Release the ExternalCopy once the marker is made (it can be used once). */
  IVM_COPY_INTO_RELEASE = 1,
  /**
   * Move the copy's transferred ArrayBuffers into the receiving isolate
   * instead of copying them: the marker can be inserted once, and the
   * ExternalCopy is released.
   */
  IVM_COPY_INTO_TRANSFER_IN = 2,
  /** ivm_value_attach_copy: enter as an ExternalCopy object (with copy(),
   * copyInto() and release()), not as the copied value. */
  IVM_COPY_AS_OBJECT = 4
};

/**
 * Appends an ExternalCopy marker to a serialized value (the stream names it
 * with `_att(index)`): when the value enters an isolate, the marker becomes
 * the copy's JavaScript value. `flags`: IVM_COPY_INTO_*.
 * Threads: any. Errors: DISPOSED (released copy), INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_copy(ivm_value_t *value, ivm_external_copy_t *copy,
                                           uint32_t flags, size_t *index_out);

/**
 * Appends to `value` the attachment of `marker`, a value made by
 * ivm_external_copy_copy_into() (the stream of `value` then names it with
 * `_att(index)`). `marker` is borrowed and stays usable.
 * Threads: any. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_marker(ivm_value_t *value, const ivm_value_t *marker,
                                             size_t *index_out);

/**
 * A value that becomes `copy`'s JavaScript value when it enters an isolate
 * (an IVM_VALUE_SERIALIZED value naming it `_att(0)`). `flags`: IVM_COPY_INTO_*.
 * Threads: any. Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_copy_into(ivm_external_copy_t *copy, uint32_t flags,
                                                 ivm_value_t **out);

/**
 * A new ExternalCopy of a host value: a serialized value (its buffers are
 * shared with the copy; borrowed ones are copied) or a primitive. `flags`:
 * 0 (reserved). Threads: any. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_new(const ivm_value_t *value, uint32_t flags,
                                           ivm_external_copy_t **out);

/**
 * For IVM_VALUE_EXTERNAL_COPY values (from IVM_EVAL_EXTERNAL_COPY): a new
 * handle to the copy, which the caller frees. Threads: any.
 * Errors: INVALID_ARGUMENT (another kind). Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_external_copy(const ivm_value_t *value,
                                             ivm_external_copy_t **out);

/**
 * The copy's value for the host: a new value (IVM_VALUE_SERIALIZED, or a
 * primitive kind) the caller frees. Buffers are shared with the copy, not
 * duplicated. Threads: any. Errors: DISPOSED. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_read(ivm_external_copy_t *copy, ivm_value_t **out);

/**
 * `*size_out`: the bytes the copy holds (stream and buffers);
 * `*byte_length_out`: the bytes of its buffers alone. Either may be NULL.
 * Threads: any. Errors: DISPOSED. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_size(ivm_external_copy_t *copy, uint64_t *size_out,
                                            uint64_t *byte_length_out);

/**
 * Releases the copy: later uses fail with DISPOSED; its memory is freed once
 * no marker made from it remains. Idempotent. Threads: any. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_release(ivm_external_copy_t *copy);

/** Frees the handle (releasing it); NULL is a no-op. Threads: any. Since: 0.2 */
IVM_API void ivm_external_copy_free(ivm_external_copy_t *copy);

/** Bytes held by all live external copies in the process. Threads: any. Since: 0.2 */
IVM_API uint64_t ivm_external_copy_total_size(void);

/**
 * Sets the largest structured copy (stream plus buffers) libivm makes of a
 * JavaScript value, in bytes; larger copies fail with IVM_ERROR_TRANSFER.
 * 0 restores the default (2 GiB). Returns the previous limit.
 * Threads: any. Since: 0.2
 */
IVM_API uint64_t ivm_set_copy_limit(uint64_t bytes);

/* ------------------------------------------------------------------------- */
/* Isolates                                                                  */
/* ------------------------------------------------------------------------- */

typedef struct ivm_isolate ivm_isolate_t;
typedef struct ivm_context ivm_context_t;
typedef struct ivm_script ivm_script_t;

/** The smallest memory limit an isolate accepts: 8 MiB. */
#define IVM_MEMORY_LIMIT_MIN 8388608

typedef struct ivm_isolate_options {
  size_t struct_size;    /**< sizeof(ivm_isolate_options_t) as compiled */
  /**
   * Memory limit in bytes (0: the default, 128 MiB; at least
   * IVM_MEMORY_LIMIT_MIN). It bounds the JavaScript heap and, separately, the
   * memory of ArrayBuffers. Past it, the running call fails with
   * IVM_ERROR_MEMORY_LIMIT and the isolate is disposed (ArrayBuffer
   * allocations past it throw a JavaScript RangeError instead).
   */
  uint64_t memory_limit;
} ivm_isolate_options_t;

#ifndef IVM_CDEF
#define IVM_ISOLATE_OPTIONS_INIT { sizeof(ivm_isolate_options_t), 0 }
#endif

/**
 * Creates an isolate.
 *
 * @param opts      NULL for defaults, or initialised with IVM_ISOLATE_OPTIONS_INIT.
 * @param[out] out  on success, a new handle the caller frees (ivm_isolate_free).
 * @return NULL on success, otherwise a new error owned by the caller.
 * Threads: any. Errors: INVALID_ARGUMENT, INTERNAL. Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_new(const ivm_isolate_options_t *opts,
                                     ivm_isolate_t **out);

/**
 * Disposes the isolate: running JavaScript is terminated (the running call
 * fails with IVM_ERROR_DISPOSED), then the VM and everything in it is freed.
 * Idempotent. Waits for the running call to unwind.
 * Threads: any, except from inside a call running in this isolate (a host
 * callback), where the disposal is only requested and completes when the
 * outermost call returns. Errors: none today (INTERNAL reserved). Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_dispose(ivm_isolate_t *iso);

/** 1 if `iso` is disposed (by a call, a memory-limit failure or
 * ivm_isolate_dispose), else 0. Threads: any. Since: 0.1 */
IVM_API int ivm_isolate_is_disposed(const ivm_isolate_t *iso);

/**
 * Terminates the JavaScript running in `iso`, if any: the running call fails
 * with IVM_ERROR_TERMINATED and the isolate stays usable. Does not affect later
 * calls. Never blocks.
 * Threads: any. Since: 0.1
 */
IVM_API void ivm_isolate_terminate(ivm_isolate_t *iso);

/** Frees the handle; disposes the isolate if no other handle uses it.
 * NULL is a no-op. Threads: any. Since: 0.1 */
IVM_API void ivm_isolate_free(ivm_isolate_t *iso);

/** V8 heap statistics of an isolate, in bytes (counts for contexts). */
typedef struct ivm_heap_statistics {
  size_t struct_size; /**< set by the caller: sizeof as compiled */
  uint64_t total_heap_size;
  uint64_t total_heap_size_executable;
  uint64_t total_physical_size;
  uint64_t total_available_size;
  uint64_t used_heap_size;
  uint64_t heap_size_limit;
  uint64_t malloced_memory;
  uint64_t peak_malloced_memory;
  uint64_t does_zap_garbage;
  uint64_t number_of_native_contexts;
  uint64_t number_of_detached_contexts;
  uint64_t total_global_handles_size;
  uint64_t used_global_handles_size;
  /** Memory V8 accounts outside its heap (ArrayBuffers, WebAssembly). */
  uint64_t external_memory;
  /** ArrayBuffer bytes currently allocated through libivm's limited allocator. */
  uint64_t externally_allocated_size;
} ivm_heap_statistics_t;

/**
 * Reads the heap statistics of `iso` into `*out`, whose struct_size the caller
 * sets. Threads: any; waits while the isolate runs another call.
 * Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_heap_statistics(ivm_isolate_t *iso,
                                                 ivm_heap_statistics_t *out);

/**
 * Time spent running JavaScript in `iso` so far, in nanoseconds: CPU time of
 * the threads that ran it and wall-clock time. Includes the call in progress
 * only once it returns. Either out pointer may be NULL.
 * Threads: any; never blocks. Since: 0.1
 */
IVM_API void ivm_isolate_times(const ivm_isolate_t *iso, uint64_t *cpu_ns_out,
                               uint64_t *wall_ns_out);

/**
 * The number of live handles (contexts, scripts) that keep objects of this
 * isolate alive, not counting the isolate handles themselves.
 * Threads: any; never blocks. Since: 0.1
 */
IVM_API uint64_t ivm_isolate_reference_count(const ivm_isolate_t *iso);

/* ------------------------------------------------------------------------- */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------- */

typedef struct ivm_context_options {
  size_t struct_size; /**< sizeof(ivm_context_options_t) as compiled */
  uint32_t reserved;  /**< 0; room for future flags (e.g. inspector) */
} ivm_context_options_t;

#ifndef IVM_CDEF
#define IVM_CONTEXT_OPTIONS_INIT { sizeof(ivm_context_options_t), 0 }
#endif

/**
 * Creates a new context (a fresh global object) in `iso`.
 *
 * @param opts      NULL for defaults.
 * @param[out] out  on success, a new handle the caller frees (ivm_context_free).
 * Threads: any; waits while the isolate runs another call.
 * Errors: DISPOSED, MEMORY_LIMIT, INVALID_ARGUMENT. Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_create_context(ivm_isolate_t *iso,
                                                const ivm_context_options_t *opts,
                                                ivm_context_t **out);

/** Options of an evaluation or a script run. */
typedef struct ivm_eval_options {
  size_t struct_size;   /**< sizeof(ivm_eval_options_t) as compiled */
  /** Time limit in nanoseconds for the whole call (microtasks included); 0: none. */
  uint64_t timeout_ns;
  /** Script name shown in stacks (WTF-8); NULL: "<eval>". Ignored by script runs. */
  const char *filename;
  size_t filename_len;
  /** Added to line and column numbers of the code (0-based). Ignored by runs. */
  int32_t line_offset;
  int32_t column_offset;
  /** IVM_EVAL_* flags. Since: 0.1 */
  uint32_t flags;
  /**
   * Synchronous calls: when not NULL and the result is undefined, null, a
   * boolean or a number, it is written here and `*out` is set to NULL (no
   * value to free); otherwise `primitive_out->kind` is set to 0. Ignored by
   * queued (_async) calls. Since: 0.2
   */
  ivm_primitive_t *primitive_out;
} ivm_eval_options_t;

enum {
  /**
   * If the completion value is a promise, wait inside the isolate until it
   * settles and return its value (a rejection fails with
   * IVM_ERROR_JS_EXCEPTION). While waiting, the isolate's pending tasks and
   * microtasks run; the call's timeout covers the whole wait.
   */
  IVM_EVAL_PROMISE = 1,
  /**
   * Return any copyable value as a structured copy (IVM_VALUE_SERIALIZED;
   * primitives keep their own kinds). Without a transfer flag, only
   * primitives leave the isolate and anything else fails with
   * IVM_ERROR_TRANSFER. Since: 0.2
   */
  IVM_EVAL_COPY = 2,
  /** Return an IVM_VALUE_EXTERNAL_COPY (made without leaving libivm). Since: 0.2 */
  IVM_EVAL_EXTERNAL_COPY = 4,
  /**
   * With IVM_EVAL_COPY or IVM_EVAL_EXTERNAL_COPY: detach the ArrayBuffers of
   * the result and move their memory into the copy instead of copying it.
   * Non-detachable buffers (WebAssembly memory) fail with TRANSFER. Since: 0.2
   */
  IVM_EVAL_TRANSFER_OUT = 8,
  /** Return an IVM_VALUE_REFERENCE to the result, which stays in the isolate. Since: 0.2 */
  IVM_EVAL_REFERENCE = 16,
  /** Discard the result (return undefined), whatever it is: for calls made
   * only for their effects. Since: 0.2 */
  IVM_EVAL_DISCARD = 32,
  /**
   * ivm_reference_get: follow the prototype chain (isolated-vm's
   * `unsafeInherit`). Without it, only own properties are read: an inherited
   * property (possibly planted on a prototype by the isolate's code) reads
   * as undefined. Since: 0.2
   */
  IVM_EVAL_UNSAFE_INHERIT = 64
};

#ifndef IVM_CDEF
#define IVM_EVAL_OPTIONS_INIT { sizeof(ivm_eval_options_t), 0, NULL, 0, 0, 0, 0, NULL }
#endif

/**
 * Compiles and runs `code` in `ctx` and returns its completion value.
 *
 * @param ctx       context to run in; borrowed.
 * @param code      WTF-8 source of `code_len` bytes.
 * @param opts      NULL for defaults, or initialised with IVM_EVAL_OPTIONS_INIT.
 * @param[out] out  on success, a new value the caller frees (ivm_value_free).
 * @return NULL on success, otherwise a new error owned by the caller.
 * Without a transfer flag (IVM_EVAL_COPY, IVM_EVAL_EXTERNAL_COPY) only
 * primitives (undefined, null, booleans, numbers, BigInts, strings) leave the
 * isolate; any other result fails with IVM_ERROR_TRANSFER naming its type.
 * Threads: any; waits while the isolate runs another call (never interleaves).
 * Errors: JS_EXCEPTION, TIMEOUT, MEMORY_LIMIT, DISPOSED, TERMINATED, TRANSFER,
 * INVALID_ARGUMENT. Since: 0.1
 */
IVM_API ivm_error_t *ivm_context_eval(ivm_context_t *ctx, const char *code,
                                      size_t code_len,
                                      const ivm_eval_options_t *opts,
                                      ivm_value_t **out);

/**
 * Compiles `code` as the body of a function whose parameters are named $0,
 * $1, ... and calls it with `args` (`nargs` values, each converted into the
 * isolate: primitives, structured copies, external copies); returns its
 * result as ivm_context_eval() does (`opts->flags` apply to it; filename and
 * offsets name the code). The compiled function is cached per context.
 * `args` are borrowed.
 * Threads: any; waits while the isolate runs another call.
 * Errors: as ivm_context_eval(). Since: 0.2
 */
IVM_API ivm_error_t *ivm_context_eval_closure(ivm_context_t *ctx, const char *code,
                                              size_t code_len,
                                              ivm_value_t *const *args, size_t nargs,
                                              const ivm_eval_options_t *opts,
                                              ivm_value_t **out);

/**
 * Releases the context: its global object is dropped and later calls on `ctx`
 * fail with IVM_ERROR_DISPOSED. Idempotent.
 * Threads: any; never blocks (if the isolate is busy, the global object is
 * dropped when its current call ends).
 * Errors: none today. Since: 0.1
 */
IVM_API ivm_error_t *ivm_context_release(ivm_context_t *ctx);

/** Frees the handle (releasing the context if needed); NULL is a no-op.
 * Never blocks. Threads: any. Since: 0.1 */
IVM_API void ivm_context_free(ivm_context_t *ctx);

/* ------------------------------------------------------------------------- */
/* Scripts                                                                   */
/* ------------------------------------------------------------------------- */

typedef struct ivm_script_options {
  size_t struct_size;   /**< sizeof(ivm_script_options_t) as compiled */
  /** Script name shown in stacks (WTF-8); NULL: "<isolated-vm>". */
  const char *filename;
  size_t filename_len;
  int32_t line_offset;  /**< added to line numbers (0-based) */
  int32_t column_offset; /**< added to first-line column numbers */
} ivm_script_options_t;

#ifndef IVM_CDEF
#define IVM_SCRIPT_OPTIONS_INIT { sizeof(ivm_script_options_t), NULL, 0, 0, 0 }
#endif

/**
 * Compiles `code` once for `iso`; the script can then run in any of its
 * contexts. A syntax error fails with IVM_ERROR_JS_EXCEPTION (name
 * "SyntaxError", the stack naming the file and line).
 * Threads: any; waits while the isolate runs another call.
 * Errors: JS_EXCEPTION, DISPOSED, MEMORY_LIMIT, INVALID_ARGUMENT. Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_compile_script(ivm_isolate_t *iso,
                                                const char *code, size_t code_len,
                                                const ivm_script_options_t *opts,
                                                ivm_script_t **out);

/**
 * Runs `script` in `ctx`, which must belong to the same isolate
 * (INVALID_ARGUMENT otherwise), and returns its completion value as
 * ivm_context_eval() does. Only `timeout_ns` of `opts` is used.
 * Threads: any; waits while the isolate runs another call.
 * Errors: as ivm_context_eval(). Since: 0.1
 */
IVM_API ivm_error_t *ivm_script_run(ivm_script_t *script, ivm_context_t *ctx,
                                    const ivm_eval_options_t *opts,
                                    ivm_value_t **out);

/** Releases the compiled script; later runs fail with IVM_ERROR_DISPOSED.
 * Idempotent. Threads: any. Since: 0.1 */
IVM_API ivm_error_t *ivm_script_release(ivm_script_t *script);

/** Frees the handle; NULL is a no-op. Never blocks. Threads: any. Since: 0.1 */
IVM_API void ivm_script_free(ivm_script_t *script);

/* ------------------------------------------------------------------------- */
/* Asynchronous calls                                                        */
/* ------------------------------------------------------------------------- */

/*
 * Every blocking call that runs in an isolate has an `_async` twin that
 * queues the work and returns at once. Each isolate has a FIFO queue of jobs,
 * served by a small shared pool of native threads (cores + 1): jobs of one
 * isolate run one at a time in submission order; jobs of different isolates
 * run in parallel. Synchronous calls still run on the caller's thread; one
 * made while the isolate runs a job waits for that job to end. Code running
 * for a job (on a pool thread) may not make a synchronous call into a
 * different isolate: that could deadlock the pool, and fails with
 * IVM_ERROR_DEADLOCK.
 */

/**
 * Reports the end of asynchronous job `job`, exactly once, even for cancelled
 * jobs and disposed isolates. Exactly one of `result` and `error` is non-NULL;
 * the callee owns it. `result` is an `ivm_value_t *` for evaluations and runs,
 * an `ivm_context_t *` for ivm_isolate_create_context_async, an
 * `ivm_script_t *` for ivm_isolate_compile_script_async and an
 * `ivm_heap_statistics_t *` for ivm_isolate_heap_statistics_async.
 * Runs on a pool thread (or, for a job dropped by ivm_isolate_cancel_job or a
 * disposal, on the thread that made that call); must not block or call back
 * into the isolate synchronously. Job ids are unique in the process.
 */
typedef void (*ivm_done_fn)(void *user_data, uint64_t job, void *result,
                            ivm_error_t *error);

/**
 * Queues ivm_context_eval(). `code`, `opts` and the filename are copied.
 *
 * @param done       called once with the outcome (ivm_done_fn).
 * @param user_data  passed to `done`.
 * @param[out] out_job  may be NULL; the job's id for ivm_isolate_cancel_job.
 * @return NULL when queued (done will fire), otherwise an error (done will
 * not fire). Threads: any; never blocks. Errors: INVALID_ARGUMENT. Since: 0.1
 */
IVM_API ivm_error_t *ivm_context_eval_async(ivm_context_t *ctx, const char *code,
                                            size_t code_len,
                                            const ivm_eval_options_t *opts,
                                            ivm_done_fn done, void *user_data,
                                            uint64_t *out_job);

/**
 * Queues ivm_context_eval_closure(); as ivm_context_eval_async(). Takes
 * ownership of the `nargs` values in `args` (even when it fails); the array
 * itself is borrowed. Since: 0.2
 */
IVM_API ivm_error_t *ivm_context_eval_closure_async(ivm_context_t *ctx, const char *code,
                                                    size_t code_len, ivm_value_t **args,
                                                    size_t nargs,
                                                    const ivm_eval_options_t *opts,
                                                    ivm_done_fn done, void *user_data,
                                                    uint64_t *out_job);

/** Queues ivm_script_run(); as ivm_context_eval_async(). Since: 0.1 */
IVM_API ivm_error_t *ivm_script_run_async(ivm_script_t *script, ivm_context_t *ctx,
                                          const ivm_eval_options_t *opts,
                                          ivm_done_fn done, void *user_data,
                                          uint64_t *out_job);

/** Queues ivm_isolate_create_context(); as ivm_context_eval_async(). Since: 0.1 */
IVM_API ivm_error_t *ivm_isolate_create_context_async(ivm_isolate_t *iso,
                                                      const ivm_context_options_t *opts,
                                                      ivm_done_fn done, void *user_data,
                                                      uint64_t *out_job);

/** Queues ivm_isolate_compile_script(); as ivm_context_eval_async(). Since: 0.1 */
IVM_API ivm_error_t *ivm_isolate_compile_script_async(ivm_isolate_t *iso,
                                                      const char *code, size_t code_len,
                                                      const ivm_script_options_t *opts,
                                                      ivm_done_fn done, void *user_data,
                                                      uint64_t *out_job);

/**
 * Queues ivm_isolate_heap_statistics(); as ivm_context_eval_async(). The result
 * is a complete `ivm_heap_statistics_t *` (struct_size = its sizeof), freed with
 * ivm_heap_statistics_free(). Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_heap_statistics_async(ivm_isolate_t *iso,
                                                       ivm_done_fn done, void *user_data,
                                                       uint64_t *out_job);

/** Frees heap statistics made by ivm_isolate_heap_statistics_async(); NULL is a
 * no-op. Threads: any. Since: 0.1 */
IVM_API void ivm_heap_statistics_free(ivm_heap_statistics_t *stats);

/**
 * Cancels job `job` of `iso`: a queued job is dropped (its done gets
 * IVM_ERROR_CANCELLED at once, on this thread); a running one has its
 * JavaScript terminated (done gets IVM_ERROR_CANCELLED unless it had already
 * finished); a finished or unknown job is left alone. The isolate stays usable.
 * Threads: any; never blocks on the isolate. Since: 0.1
 */
IVM_API void ivm_isolate_cancel_job(ivm_isolate_t *iso, uint64_t job);

/**
 * A completion queue: a ready-made ivm_done_fn target for event loops. Jobs
 * submitted with `done` = ivm_completion_queue_done and `user_data` = the
 * queue push their outcome into it without calling into the host; its file
 * descriptor becomes readable when completions are waiting, and the loop's
 * thread pops them in batches. One wake-up serves many completions.
 */
typedef struct ivm_completion_queue ivm_completion_queue_t;

/** One finished job, as popped from a completion queue (ownership as for
 * ivm_done_fn: exactly one of result and error is non-NULL, and the caller
 * owns it). */
typedef struct ivm_completion {
  uint64_t job;
  void *result;
  ivm_error_t *error;
} ivm_completion_t;

/**
 * Creates a completion queue. `*fd_out` receives a file descriptor (owned by
 * the queue; poll it for reading, never read or close it) that is readable
 * while completions are waiting.
 * Threads: any. Errors: INVALID_ARGUMENT, INTERNAL. Since: 0.1
 */
IVM_API ivm_error_t *ivm_completion_queue_new(ivm_completion_queue_t **out,
                                              int *fd_out);

/**
 * The ivm_done_fn of completion queues: pass it as `done` with the queue as
 * `user_data`. The queue stays alive until every job submitted to it has
 * completed. Threads: any (libivm calls it). Since: 0.1
 */
IVM_API void ivm_completion_queue_done(void *queue, uint64_t job, void *result,
                                       ivm_error_t *error);

/**
 * Moves up to `capacity` waiting completions into `out` (oldest first) and
 * returns how many; the file descriptor stops being readable once the queue
 * is empty. Threads: any, one at a time per queue. Since: 0.1
 */
IVM_API size_t ivm_completion_queue_pop(ivm_completion_queue_t *queue,
                                        ivm_completion_t *out, size_t capacity);

/**
 * Frees the handle. Waiting completions, and those of jobs still running,
 * are freed by libivm; the file descriptor is closed once no job can use it.
 * NULL is a no-op. Threads: any. Since: 0.1
 */
IVM_API void ivm_completion_queue_free(ivm_completion_queue_t *queue);

/* ------------------------------------------------------------------------- */
/* Signals                                                                   */
/* ------------------------------------------------------------------------- */

/**
 * Makes the signal `signum` (typically SIGINT) stop JavaScript: when it
 * arrives, the synchronous calls running on the thread that called this
 * function are terminated (they fail with IVM_ERROR_TERMINATED), and then the
 * handler that was installed before is invoked, so the host still sees the
 * signal (Python raises KeyboardInterrupt). If a later sigaction() replaces
 * libivm's handler, call this again. Calling it again for the same signal from
 * the same thread is a no-op.
 * Threads: any (usually the main thread). Errors: INVALID_ARGUMENT, INTERNAL.
 * Since: 0.1
 */
IVM_API ivm_error_t *ivm_interrupt_on_signal(int signum);

/* ------------------------------------------------------------------------- */
/* References                                                                */
/* ------------------------------------------------------------------------- */

/**
 * A Reference: a handle to a value that stays inside its isolate (objects,
 * functions, anything). Operations through it are calls into that isolate,
 * run in the context where the reference was made, with an eval's options:
 * `opts->timeout_ns` limits the call and `opts->flags` (IVM_EVAL_COPY,
 * IVM_EVAL_EXTERNAL_COPY, IVM_EVAL_REFERENCE, IVM_EVAL_PROMISE) say how the
 * result comes back (filename and offsets are ignored). Values going in
 * (keys, values, receivers, arguments) are host values: primitives,
 * structured copies, markers. Releasing the reference (or disposing its
 * isolate) makes later operations fail with IVM_ERROR_DISPOSED.
 */
/* (ivm_reference_t is declared with the values, above.) */

/** A new reference to the global object of `ctx`. Threads: any; waits for a
 * busy isolate. Errors: DISPOSED. Since: 0.2 */
IVM_API ivm_error_t *ivm_context_global(ivm_context_t *ctx, ivm_reference_t **out);

/** `typeof` the referenced value ("object", "function", ...), fixed when the
 * reference was made. Borrowed. Threads: any; never blocks. Since: 0.2 */
IVM_API void ivm_reference_typeof(const ivm_reference_t *ref, const char **out,
                                  size_t *out_len);

/**
 * `value[key]` (getters run); with `key` NULL, the referenced value itself
 * (e.g. with IVM_EVAL_COPY: a copy of it).
 * Threads: any; waits for a busy isolate. Errors: as ivm_context_eval(); a
 * TypeError (JS_EXCEPTION) if the value is not an object. Since: 0.2
 */
IVM_API ivm_error_t *ivm_reference_get(ivm_reference_t *ref, const ivm_value_t *key,
                                       const ivm_eval_options_t *opts, ivm_value_t **out);

/** `value[key] = v` (setters run); `*out` is a boolean value: whether it was
 * set. Errors: as ivm_reference_get(). Since: 0.2 */
IVM_API ivm_error_t *ivm_reference_set(ivm_reference_t *ref, const ivm_value_t *key,
                                       const ivm_value_t *v, const ivm_eval_options_t *opts,
                                       ivm_value_t **out);

/** `delete value[key]`; `*out` is a boolean value. Since: 0.2 */
IVM_API ivm_error_t *ivm_reference_delete(ivm_reference_t *ref, const ivm_value_t *key,
                                          const ivm_eval_options_t *opts, ivm_value_t **out);

/**
 * Calls the referenced function with `receiver` as `this` (NULL: undefined)
 * and `nargs` arguments (borrowed). A TypeError (JS_EXCEPTION) if it is not a
 * function. Since: 0.2
 */
IVM_API ivm_error_t *ivm_reference_apply(ivm_reference_t *ref, const ivm_value_t *receiver,
                                         ivm_value_t *const *args, size_t nargs,
                                         const ivm_eval_options_t *opts, ivm_value_t **out);

/**
 * Queued twins of the operations above (see ivm_context_eval_async()). They
 * take ownership of the values passed in (key, value, receiver, arguments),
 * even when they fail. Since: 0.2
 */
IVM_API ivm_error_t *ivm_reference_get_async(ivm_reference_t *ref, ivm_value_t *key,
                                             const ivm_eval_options_t *opts, ivm_done_fn done,
                                             void *user_data, uint64_t *out_job);
IVM_API ivm_error_t *ivm_reference_set_async(ivm_reference_t *ref, ivm_value_t *key,
                                             ivm_value_t *v, const ivm_eval_options_t *opts,
                                             ivm_done_fn done, void *user_data,
                                             uint64_t *out_job);
IVM_API ivm_error_t *ivm_reference_delete_async(ivm_reference_t *ref, ivm_value_t *key,
                                                const ivm_eval_options_t *opts,
                                                ivm_done_fn done, void *user_data,
                                                uint64_t *out_job);
IVM_API ivm_error_t *ivm_reference_apply_async(ivm_reference_t *ref, ivm_value_t *receiver,
                                               ivm_value_t **args, size_t nargs,
                                               const ivm_eval_options_t *opts,
                                               ivm_done_fn done, void *user_data,
                                               uint64_t *out_job);

/** ivm_isolate_cancel_job() for a job queued through `ref`. Since: 0.2 */
IVM_API void ivm_reference_cancel_job(ivm_reference_t *ref, uint64_t job);

/** Releases the reference (idempotent); never blocks. Threads: any. Since: 0.2 */
IVM_API ivm_error_t *ivm_reference_release(ivm_reference_t *ref);

/** Frees the handle; the value is released once no handle, value or queued
 * job holds it. NULL is a no-op. Threads: any. Since: 0.2 */
IVM_API void ivm_reference_free(ivm_reference_t *ref);

/** For IVM_VALUE_REFERENCE values: a new handle. Errors: INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_value_reference(const ivm_value_t *value, ivm_reference_t **out);

/**
 * Appends a reference attachment to a serialized value (named `_att(index)`
 * in the stream). It enters an isolate as a Reference object with
 * isolated-vm's JavaScript API (getSync, setSync, applySync, apply,
 * applyIgnored, applySyncPromise, copySync, deref, derefInto, release,
 * typeof), through which JavaScript there calls into the reference's
 * isolate. With IVM_ATTACH_DEREF it enters as the referenced value itself,
 * which only its own isolate accepts (TRANSFER otherwise).
 * Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_reference(ivm_value_t *value, ivm_reference_t *ref,
                                                uint32_t flags, size_t *index_out);

/* ------------------------------------------------------------------------- */
/* Callbacks: host functions called from JavaScript                          */
/* ------------------------------------------------------------------------- */

/** A host function that JavaScript can call (made with ivm_callback_new()). */
typedef struct ivm_callback ivm_callback_t;
/** The arguments of one call of a host function; valid during the call. */
typedef struct ivm_call ivm_call_t;
/** A host function's promised result (ivm_call_defer()). */
typedef struct ivm_deferred ivm_deferred_t;

/**
 * A host function. Runs on the thread running the JavaScript that calls it
 * (the caller's thread for synchronous calls, a pool thread for queued ones),
 * with the isolate locked: it may call back into the same isolate
 * synchronously, not into another one from a pool thread (DEADLOCK).
 * Return NULL and set `*out` to a new value (ownership moves to libivm; NULL
 * or unset: undefined), or return an error (ownership moves too): JavaScript
 * sees a thrown Error with its name and message (see ivm_error_new_host()).
 * After ivm_call_defer(), `*out` is ignored and JavaScript gets a promise.
 */
typedef ivm_error_t *(*ivm_host_fn)(void *user_data, ivm_call_t *call, ivm_value_t **out);

/**
 * A new callback. Inserted into an isolate (ivm_value_attach_callback()), it
 * becomes a JavaScript function calling `fn(user_data, ...)`. `finalize`
 * (may be NULL) runs once, on any thread, when the handle is freed and no
 * JavaScript function made from it remains; also when this call fails.
 * `flags`: 0. Threads: any. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_callback_new(ivm_host_fn fn, void *user_data,
                                      void (*finalize)(void *user_data), uint32_t flags,
                                      ivm_callback_t **out);

/** Frees the handle; NULL is a no-op. Threads: any. Since: 0.2 */
IVM_API void ivm_callback_free(ivm_callback_t *cb);

/**
 * Appends a callback attachment to a serialized value (`_att(index)` in the
 * stream): it enters an isolate as a function calling the host function, or
 * with IVM_ATTACH_AS_REFERENCE as a Reference object (isolated-vm's
 * `new ivm.Reference(hostFunction)`) whose applySync, apply, applyIgnored,
 * applySyncPromise, copySync and copy call the host function with
 * ivm_call_op() saying which (`typeof` is "function", or "object" with
 * IVM_ATTACH_NOT_CALLABLE). Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_callback(ivm_value_t *value, ivm_callback_t *cb,
                                               uint32_t flags, size_t *index_out);

enum {
  /** A plain call of a callback's function. */
  IVM_CALL_CALL = 0,
  /** applySync of a host Reference: return the result. */
  IVM_CALL_APPLY = 1,
  /** apply of a host Reference: JavaScript wants a promise (ivm_call_defer()). */
  IVM_CALL_APPLY_ASYNC = 2,
  /** applyIgnored of a host Reference: JavaScript ignores the result. */
  IVM_CALL_APPLY_IGNORED = 3,
  /** applySyncPromise of a host Reference: block until the host's
   * asynchronous function has finished, then return its result. */
  IVM_CALL_APPLY_SYNC_PROMISE = 4,
  /** copySync/copy of a host Reference: return a copy of the host value. */
  IVM_CALL_COPY = 5
};

/** Which operation a call is (IVM_CALL_*). Since: 0.2 */
IVM_API uint32_t ivm_call_op(const ivm_call_t *call);

/** The number of arguments. Since: 0.2 */
IVM_API size_t ivm_call_argc(const ivm_call_t *call);

/**
 * The call's arguments as primitives (`*argc_out` of them; kind 0 for an
 * argument that is not a primitive: read it with ivm_call_arg()), and in
 * `*result_out` a slot for a primitive result: setting its kind (undefined,
 * null, boolean or number) and returning NULL with `*out` unset makes that
 * the call's result. Valid during the call. Since: 0.2
 */
IVM_API const ivm_primitive_t *ivm_call_view(ivm_call_t *call, size_t *argc_out,
                                             ivm_primitive_t **result_out);

/** Argument `index` as a host value (a primitive or a structured copy;
 * borrowed, valid during the call); NULL past the end. Since: 0.2 */
IVM_API const ivm_value_t *ivm_call_arg(const ivm_call_t *call, size_t index);

/**
 * Makes the call's JavaScript result a promise, settled later (from any
 * thread) with ivm_deferred_resolve() or ivm_deferred_reject(). Once per
 * call. The promise settles inside the isolate: during a call waiting on it
 * (IVM_EVAL_PROMISE), or in a queued job. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_call_defer(ivm_call_t *call, ivm_deferred_t **out);

/** Resolves the promise with `value` (owned; NULL: undefined). Once.
 * Threads: any; never blocks. Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_deferred_resolve(ivm_deferred_t *d, ivm_value_t *value);

/** Rejects the promise with an Error made from `error` (owned). Once. Since: 0.2 */
IVM_API ivm_error_t *ivm_deferred_reject(ivm_deferred_t *d, ivm_error_t *error);

/** Frees the handle; an unsettled promise is rejected. Threads: any. Since: 0.2 */
IVM_API void ivm_deferred_free(ivm_deferred_t *d);

enum {
  /** ivm_error_new_host: stop all JavaScript of the isolate instead of
   * throwing (the host is shutting down: an interrupt). The outermost call
   * fails with IVM_ERROR_TERMINATED carrying the token. Since: 0.2 */
  IVM_HOST_ERROR_ABORT = 1
};

/**
 * An error for a host function to return: JavaScript sees an Error with
 * `name` ("TypeError", "RangeError", ... pick the matching constructor) and
 * `message`. A non-zero `token` travels with the thrown Error: if it ends the
 * host's outermost call, that call's error has the same token
 * (ivm_error_host_token()), so the host can recognise its own error.
 * NULL only when memory is exhausted. Threads: any. Since: 0.2
 */
IVM_API ivm_error_t *ivm_error_new_host(const char *name, size_t name_len,
                                        const char *message, size_t message_len,
                                        uint64_t token, uint32_t flags);

/** The host token of an error (0: none). Threads: any. Since: 0.2 */
IVM_API uint64_t ivm_error_host_token(const ivm_error_t *err);

/* ------------------------------------------------------------------------- */
/* Diagnostics                                                               */
/* ------------------------------------------------------------------------- */

/**
 * The number of live libivm objects (handles, values and errors) in the
 * process. For leak tests. Threads: any. Since: 0.1
 */
IVM_API uint64_t ivm_debug_live_objects(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* IVM_H */
