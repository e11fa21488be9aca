/*
 * ivm.h — the C ABI of libivm: isolated V8 JavaScript for any language.
 *
 * This header is the complete reference of the C interface: what it does not
 * declare is not API. It contains no V8 type and no inline function, and it
 * compiles as C99 and as C++. Read it top to bottom: every section uses only
 * what the sections above it declare.
 *
 * ## Model
 *
 * An *isolate* is an independent JavaScript VM with its own heap, memory limit
 * and timeouts. A *context* is a global object (a realm) inside one isolate. A
 * *script* is code compiled once for an isolate and run in any of its contexts.
 * A *value* is a host-side copy of a JavaScript value that belongs to no isolate.
 * A *reference* is a handle to a value that stays inside its isolate. A
 * *callback* is a host function that JavaScript can call. An *error* describes
 * why a call failed.
 *
 * ## Handles and lifetimes
 *
 * Every object is an opaque handle (all declared in "Handles" below). Each has
 * two lifetime verbs:
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
 * An isolate handle may in future live in another process (a worker) behind
 * these same functions. The ABI is shaped for that: callers hold only opaque
 * handles; every struct is plain data that either side can fill; no pointer
 * into an isolate's memory outlives the call that produced it (borrowed
 * pointers point into handles and values owned by the caller's process).
 *
 * ## Parameters
 *
 * Parameters come in one order: the object, the inputs, the options, the
 * callbacks with their `user_data`, then the outputs. Outputs are pointers
 * named `out` (`x_out` when there are several) and are written only on
 * success. Options are three structs, one per kind of decision, each NULL for
 * its defaults:
 *
 *   - ivm_source_options_t: where code comes from (file name, offsets);
 *   - ivm_run_options_t:    how long a call may run;
 *   - ivm_result_options_t: in which form the result comes back.
 *
 * A call takes exactly the options it uses.
 *
 * ## Errors
 *
 * A fallible call returns an owned `ivm_error_t *`: NULL means success. The
 * caller reads it with the ivm_error_* getters and frees it with
 * ivm_error_free(). Every function documents, in the same three lines:
 *
 *   Threads: which threads may call it;
 *   Blocks:  what it may wait for ("never", or which wait);
 *   Errors:  the error kinds it returns (without the IVM_ERROR_ prefix), or
 *            "none" for functions that cannot fail;
 *
 * followed by the version that introduced it in its current form (Since).
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
 * Calls into one isolate are serialised: a call waits while another thread
 * runs JavaScript in the same isolate, and never interleaves with it. Calls
 * into different isolates run in parallel. The V8 platform starts lazily and
 * thread-safely on first use.
 *
 * ## Versioning
 *
 * Option and output structs begin with `struct_size`, set by the caller to the
 * sizeof it was compiled with; fields are only ever appended, and a field
 * beyond an older caller's struct_size reads as its default. Enumerations are
 * fixed-width integers whose values are append-only: treat an unknown error kind
 * as a generic error and an unknown value kind as unsupported. After 1.0, a
 * shipped function never changes; a new behaviour gets a new name (`_v2`).
 *
 * ## Changes in 0.13
 *
 *   - No change to the interface. Behavioural changes:
 *     - A thread that calls isolates synchronously (not one of libivm's own)
 *       keeps the first one it calls while in no other entered in V8 between
 *       its calls; a synchronous call then costs about a sixth less. Disposing
 *       of that isolate from another thread, or from inside another isolate's
 *       call, frees V8's isolate at that thread's next call or end instead of
 *       at once (ivm_isolate_dispose). IVM_KEEP_ENTRY=0 in the environment
 *       turns this off.
 *
 * ## Changes in 0.12
 *
 *   - No change to the interface. Behavioural changes:
 *     - ivm_interrupt_on_signal(): a signal stops only the synchronous calls
 *       that began before it came. A call that began after it (the signal's
 *       call ended before libivm's watcher thread read it) is no longer
 *       cancelled or terminated for it.
 *     - Isolates in a worker process: after a synchronous EVAL, script RUN or
 *       Reference operation, the worker's pool thread that sent the reply
 *       reads the channel for a short while and runs the next synchronous
 *       call itself (docs/process.md, "The reading is lent to synchronous
 *       calls"). A CANCEL, TERMINATE or PING is read at most 1-2 ms late while
 *       such a call runs, and always after the call it follows has started.
 *     - A deref_into(release=True) attachment (IVM_ATTACH_RELEASE) used a
 *       second time on a worker-hosted isolate fails with IVM_ERROR_DISPOSED
 *       ("Reference has been released"), as inline, not INVALID_ARGUMENT.
 *     - Translating V8's serializer output reuses the previous object's key
 *       at the same position when its bytes are the same.
 *
 * ## Changes in 0.11
 *
 *   - No change to the interface. Behavioural changes:
 *     - The buffers of large copies (64 KiB to 4 MiB: V8's serializer output,
 *       copy streams) are kept from one copy to the next, at most three per
 *       process (about 12 MiB), instead of being returned to malloc and
 *       faulted in again by the next copy.
 *     - A call's own time accounting (its wall time, host code's spans) reads
 *       the CPU's time stamp counter where the kernel's clock source is the
 *       TSC; deadlines and timers still use CLOCK_MONOTONIC.
 *     - Isolates in a worker process: a synchronous call leaves the channel
 *       paused for 1-2 ms after its reply, for the next synchronous call; a
 *       frame the worker sends unasked meanwhile (a timer's console line)
 *       waits that long. The worker's reader waits in poll().
 *   - Behind the interface: a copy stream that is a single ExternalCopy or
 *       Reference marker is read without parsing it.
 *
 * ## Changes in 0.10
 *
 *   - No change to the interface. Behavioural changes:
 *     - An isolate's young generation is larger (semi-spaces of the largest
 *       power of two within 1/32 of the memory limit, at most 8 MiB; V8 gives
 *       1 MiB at 128 MB), taken from the old generation: the heap limit is
 *       still the memory limit, but long-lived data fits in a little less
 *       (about 104 MiB at 128 MB, where it was 110).
 *     - The JSON text of a `_json(text)` copy stream is parsed from a string
 *       on V8's heap; it was an external string, which kept its text until a
 *       full GC.
 *     - The worker's seccomp filter allows restart_syscall: a worker stopped
 *       and continued (SIGSTOP, SIGCONT) while in a timed wait was killed.
 *     - ivm_context_eval_async's documentation now says that it may block for
 *       an isolate in a worker process, while the request is written.
 *   - Behind the interface: a cross-isolate call through a Reference object
 *     passes undefined, null, booleans and numbers without host values, and
 *     a thread's parked lock keeps its block of V8 handles.
 *
 * ## Changes in 0.9
 *
 *   - The copy format has one more stream form, `_json(text)`: the whole
 *     stream is JSON text that the receiving isolate parses with JSON.parse
 *     (at most 2 MiB of text; docs/values.md, "The copy format"). ivm's
 *     Python side writes it for plain data; streams read back out of an
 *     isolate never have it.
 *   - Behind the interface: idle pool threads yield the core between the
 *     checks of their short poll for work (IVM_POOL_SPIN_YIELD=0 restores the
 *     pausing poll), a completion queue's eventfd is written after its lock is
 *     released, and the timer thread fires timeouts without the kernel's
 *     50 us timer slack. A synchronous call reads the clock once less.
 *
 * ## Changes in 0.8
 *
 *   - No change to the interface. Behind it: calls cost less (a synchronous
 *     call through a Reference object in another inline isolate allocates
 *     nothing for primitives; a call's bookkeeping takes no pthread mutex),
 *     copies are made faster, an isolate is created without V8's snapshot
 *     checksum (ivm's own checksums guard user snapshots and code caches; code
 *     caches made by 0.7 are rejected and remade), and a JavaScript getter that
 *     releases a Reference object during its own call no longer crashes the
 *     process.
 *
 * ## Changes in 0.7
 *
 *   - IVM_RESULT_INSPECT: a call's result as the text of node's
 *     util.inspect(value), made by the host console's formatter without
 *     running the value's JavaScript (getters, Proxy traps).
 *   - A timer job's callback stopped by its timeout is reported to the
 *     context's rejection hook as an unhandled rejection (an Error saying so)
 *     instead of being dropped silently.
 *   - The CPU profiler works for isolates in worker processes:
 *     ivm_isolate_start_cpu_profiler(), ivm_isolate_stop_cpu_profiler() and
 *     their _async twins record in the worker and return the same JSON (they
 *     no longer fail with INVALID_ARGUMENT there). Profiles of programs that
 *     link libivm at start-up (ivm-worker among them) have samples again.
 *   - A transferred ArrayBuffer (IVM_RESULT_TRANSFER_OUT, then
 *     IVM_COPY_INTO_TRANSFER_IN) takes its memory budget with it: it leaves
 *     the sender's externally_allocated_size when detached. No ABI change.
 *   - The inspector (section "Inspector"): ivm_isolate_options_t gains
 *     `inspector`; ivm_inspector_session_new(), _dispatch() and _free()
 *     speak the Chrome DevTools protocol with V8's inspector, for
 *     inline isolates and for isolates in worker processes alike.
 *   - A synchronous call into a worker's isolate made on libivm's I/O thread
 *     (where a worker inspector's on_message runs) fails with INVALID_ARGUMENT;
 *     it waited for itself forever before.
 *
 * ## Changes in 0.6
 *
 *   - Opt-in host basics per context: ivm_context_options_t's `reserved`
 *     field is now `host`, a set of IVM_HOST_* bits (console, timers,
 *     encoding, web globals; 0, the default, keeps the context bare), and
 *     the struct gains `console` and `console_max_bytes`. They work for
 *     isolates in worker processes too (docs/host.md).
 *   - A worker that floods its host with host callback calls (more waiting
 *     on the host than the callback backlog of docs/wire-protocol.md allows)
 *     is killed as a protocol violation (CRASHED).
 *     IVM_DEBUG_HOOK_REPEAT_CALLBACK tests it. In a worker, the JavaScript
 *     that leaves an unhandled rejection waits for the context's rejection
 *     hook to run on the host, as inline: the hook may call the isolate
 *     synchronously from any rejection (nested, as inline).
 *   - ivm_interrupt_on_signal() stops only the innermost synchronous call to
 *     a worker-hosted isolate: one nested in a host callback of an outer call
 *     ends as inline (the outer call sees what the callback makes of it), and
 *     the outer call is no longer cancelled with it.
 *   - Strings and copy streams larger than a frame (16 MiB) cross into and
 *     out of workers: like large buffers, those of 256 KiB or more travel in
 *     shared memory beside the frame.
 *   - Snapshots: ivm_snapshot_create() runs scripts in a fresh isolate and
 *     serializes its heap (ivm_snapshot_data(), ivm_snapshot_free());
 *     ivm_isolate_options_t gains `snapshot` and `snapshot_len`, whose
 *     isolates start with those globals. ivm's own header (magic, ivm and V8
 *     versions, flags, checksum) is checked before V8 sees the bytes.
 *     Snapshots are made in a throw-away worker with IVM_PLACEMENT_PROCESS
 *     (ivm_snapshot_options_t), and worker-hosted isolates start from them.
 *   - The CPU profiler: ivm_isolate_start_cpu_profiler(),
 *     ivm_isolate_stop_cpu_profiler() (a DevTools `Profiler.Profile` as JSON
 *     text) and their _async twins, with ivm_cpu_profiler_options_t (inline
 *     isolates only in 0.6; workers' too since 0.7).
 *
 * ## Changes in 0.5
 *   - References into an isolate in a worker process work as inline ones:
 *     ivm_context_global(), IVM_RESULT_REFERENCE results and every
 *     ivm_reference_* operation. ExternalCopies cross into and out of
 *     workers (IVM_RESULT_EXTERNAL_COPY results, copies as arguments), and
 *     large buffers cross in shared memory (no 16 MiB limit for them).
 *   - The error kind IVM_ERROR_CROSS_PROCESS: a Reference refused because it
 *     would cross between processes (inline <-> worker, worker <-> worker).
 *   - A copy in a worker's REPLY is checked for the copy format's shape before
 *     anything decodes it; one that fails is the worker's crash (CRASHED).
 *     IVM_DEBUG_HOOK_FORGE_VALUE tests it.
 *   - IVM_ATTACH_RELEASE: a deref'd reference attachment releases its
 *     reference once its value has entered the isolate.
 *   - ivm_interrupt_on_signal() also stops synchronous calls to worker-hosted
 *     isolates (it cancels them in their worker), and workers ignore SIGINT.
 *   - ivm_isolate_options_t gains `on_catastrophic_error` and
 *     `on_catastrophic_error_data` (ivm_catastrophic_error_fn): a worker's
 *     crash, or inline V8's fatal-error and out-of-memory handlers, report
 *     their cause once.
 *   - Host callbacks (ivm_value_attach_callback(), also with
 *     IVM_ATTACH_AS_REFERENCE) cross into isolates in worker processes: the
 *     worker's JavaScript calls them over the channel; they run on the host
 *     thread waiting for the call (see "Processes"). ivm_call_job().
 *   - ivm_context_options_t's `import_hook` and `on_unhandled_rejection` work
 *     for contexts of isolates in worker processes (they were refused).
 *   - ES modules and code caches work in worker-hosted isolates: every
 *     ivm_module_* call and the cache options of compile_script and
 *     compile_module. For such isolates the embedder's resolve
 *     function runs in the host, on the instantiating call's thread (also for
 *     ivm_module_instantiate_async); see "Processes".
 *   - Import attributes (V8 10.2's import assertions, `assert {type: "json"}`,
 *     now parsed): ivm_module_dependency_attribute_count() and
 *     ivm_module_dependency_attribute(); ivm_module_instantiate_v2() and its
 *     async twin take an ivm_module_resolve_request_fn, which gets the import
 *     request's index instead of its specifier.
 *   - ivm_module_namespace_async(), the queued twin of ivm_module_namespace().
 *
 * ## Changes in 0.4
 *
 *   - Isolates can live in a worker process: ivm_isolate_options_t gains
 *     `placement` and `group`; ivm_isolate_pid().
 *   - Modules: ivm_isolate_compile_module() and the ivm_module_* calls, with
 *     IVM_COMPLETION_MODULE; ivm_context_options_t gains `import_hook` and
 *     `on_unhandled_rejection`.
 *   - Code caches: ivm_isolate_compile_script() and its async twin take an
 *     ivm_cache_options_t after the source options;
 *     ivm_script_cached_data() and ivm_script_cached_data_rejected().
 *
 * ## Changes in 0.3
 *
 *   - The header reads in dependency order, with every handle declared once
 *     at the top, and every function documents Threads, Blocks and Errors.
 *   - ivm_eval_options_t and ivm_script_options_t are replaced by three
 *     option structs: ivm_source_options_t (eval, eval_closure,
 *     compile_script), ivm_run_options_t (every call that runs JavaScript) and
 *     ivm_result_options_t (calls that return a JavaScript value). The
 *     IVM_EVAL_* result flags are renamed IVM_RESULT_* (same values).
 *   - `primitive_out` left the options: it is the last parameter of the
 *     synchronous calls that return a value (NULL: not used).
 *   - IVM_EVAL_UNSAFE_INHERIT is the `flags` parameter of ivm_reference_get()
 *     (IVM_GET_UNSAFE_INHERIT).
 *   - ivm_reference_set() and ivm_reference_delete() take no result options:
 *     their result is always a boolean.
 *   - ivm_done_fn receives a typed ivm_completion_t (its `kind` says which
 *     member of `result` is set) instead of `void *result`;
 *     ivm_completion_queue_done() has the same signature.
 *   - ivm_completion_queue_new(fd_out, out): the output handle comes last.
 *   - `out_job` parameters are named `job_out`.
 *   - Processes: ivm_process_group_t is a sandboxed worker process
 *     (ivm-worker) that libivm starts, watches and reports on; its death is
 *     the new error kind IVM_ERROR_CRASHED. Isolates do not live in worker
 *     processes yet.
 *
 * ## Contents
 *
 *   Handles          every opaque type and struct name
 *   Version          ivm_version, ivm_v8_version
 *   Errors           ivm_error_*: kinds, getters, host errors
 *   Isolates         ivm_isolate_*: create, dispose, terminate, statistics
 *   Processes        ivm_process_group_*: sandboxed worker processes, crashes
 *   Call options     ivm_source_options_t, ivm_run_options_t, ivm_result_options_t
 *   Snapshots        ivm_snapshot_create: heaps made once, loaded by new isolates
 *   Contexts         ivm_isolate_create_context, ivm_context_eval[_closure]
 *   Scripts          ivm_isolate_compile_script, ivm_script_run
 *   Modules          ivm_isolate_compile_module, ivm_module_instantiate,
 *                    ivm_module_evaluate, ivm_module_namespace
 *   Values           ivm_value_*: kinds, getters, constructors, ivm_primitive_t
 *   Async jobs       ivm_done_fn, ivm_completion_t, the *_async twins,
 *                    cancellation, completion queues
 *   CPU profiler     ivm_isolate_start_cpu_profiler, ivm_isolate_stop_cpu_profiler
 *   References       ivm_reference_*: get, set, delete, apply
 *   Callbacks        ivm_callback_*, ivm_call_*, ivm_deferred_*
 *   Copies           structured copies and their attachments, ExternalCopy
 *   Signals          ivm_interrupt_on_signal
 *   Diagnostics      ivm_debug_live_objects, test hooks of worker processes
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
/* Handles                                                                   */
/* ------------------------------------------------------------------------- */

/** Why a call failed ("Errors"). */
typedef struct ivm_error ivm_error_t;
/** A JavaScript VM ("Isolates"). */
typedef struct ivm_isolate ivm_isolate_t;
/** A global object inside an isolate ("Contexts"). */
typedef struct ivm_context ivm_context_t;
/** Code compiled for an isolate ("Scripts"). */
typedef struct ivm_script ivm_script_t;
/** An ES module compiled for an isolate ("Modules"). */
typedef struct ivm_module ivm_module_t;
/** A host-side JavaScript value, belonging to no isolate ("Values"). */
typedef struct ivm_value ivm_value_t;
/** A queue of finished asynchronous jobs for an event loop ("Async jobs"). */
typedef struct ivm_completion_queue ivm_completion_queue_t;
/** A value that stays inside its isolate ("References"). */
typedef struct ivm_reference ivm_reference_t;
/** A host function that JavaScript can call ("Callbacks"). */
typedef struct ivm_callback ivm_callback_t;
/** The arguments of one call of a host function; valid during the call. */
typedef struct ivm_call ivm_call_t;
/** A host function's promised result ("Callbacks"). */
typedef struct ivm_deferred ivm_deferred_t;
/** A structured copy that belongs to no isolate ("Copies"). */
typedef struct ivm_external_copy ivm_external_copy_t;
/** A sandboxed worker process ("Processes"). */
typedef struct ivm_process_group ivm_process_group_t;
/** A serialized heap made by ivm_snapshot_create ("Snapshots"). Since: 0.6 */
typedef struct ivm_snapshot ivm_snapshot_t;
/** A Chrome DevTools protocol session with an isolate's inspector ("Inspector").
 * Since: 0.7 */
typedef struct ivm_inspector_session ivm_inspector_session_t;

/* Plain-data structs, defined in their sections. */
typedef struct ivm_isolate_options ivm_isolate_options_t;
typedef struct ivm_heap_statistics ivm_heap_statistics_t;
typedef struct ivm_process_group_options ivm_process_group_options_t;
typedef struct ivm_source_options ivm_source_options_t;
typedef struct ivm_cache_options ivm_cache_options_t;
typedef struct ivm_run_options ivm_run_options_t;
typedef struct ivm_result_options ivm_result_options_t;
typedef struct ivm_context_options ivm_context_options_t;
typedef struct ivm_primitive ivm_primitive_t;
typedef struct ivm_completion ivm_completion_t;
typedef struct ivm_snapshot_script ivm_snapshot_script_t;
typedef struct ivm_snapshot_options ivm_snapshot_options_t;
typedef struct ivm_cpu_profiler_options ivm_cpu_profiler_options_t;
typedef struct ivm_inspector_session_options ivm_inspector_session_options_t;

/* ------------------------------------------------------------------------- */
/* Version                                                                   */
/* ------------------------------------------------------------------------- */

#define IVM_VERSION_MAJOR 0
#define IVM_VERSION_MINOR 13
#define IVM_VERSION_PATCH 0
/** MAJOR * 1000000 + MINOR * 1000 + PATCH of this header. */
#define IVM_VERSION_NUMBER 13000

/**
 * The version of the loaded library, as IVM_VERSION_NUMBER. Compare it with the
 * header's to detect a mismatched installation.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API uint32_t ivm_version(void);

/**
 * The version of the V8 engine libivm runs on, e.g. "10.2.154.26", as a static
 * NUL-terminated string.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API const char *ivm_v8_version(void);

/* ------------------------------------------------------------------------- */
/* Errors                                                                    */
/* ------------------------------------------------------------------------- */

/** Why a call failed. Values are ABI: append only. */
typedef uint32_t ivm_error_kind_t;
enum {
  /** JavaScript threw; name, message and stack describe the thrown value. */
  IVM_ERROR_JS_EXCEPTION = 1,
  /** The call's timeout expired; the isolate stays usable. */
  IVM_ERROR_TIMEOUT = 2,
  /** The isolate ran past its memory limit; it has been disposed. */
  IVM_ERROR_MEMORY_LIMIT = 3,
  /** The isolate is disposed, or the context/script/reference was released. */
  IVM_ERROR_DISPOSED = 4,
  /** An argument was invalid (NULL handle, bad option, foreign context...). */
  IVM_ERROR_INVALID_ARGUMENT = 5,
  /** A bug or resource failure inside libivm. */
  IVM_ERROR_INTERNAL = 6,
  /** An asynchronous job was cancelled before or while it ran. */
  IVM_ERROR_CANCELLED = 7,
  /** Execution was stopped by ivm_isolate_terminate() or a signal. */
  IVM_ERROR_TERMINATED = 8,
  /** A value cannot leave (or enter) the isolate in the requested form. */
  IVM_ERROR_TRANSFER = 9,
  /**
   * A synchronous call that could deadlock was refused: code running for an
   * asynchronous job (on a pool thread, e.g. a host callback or a done
   * callback) may not block on a different isolate, and no thread may wait
   * for an isolate in a way that closes a cycle of waiting threads.
   */
  IVM_ERROR_DEADLOCK = 10,
  /**
   * The worker process behind the handle died: it was killed (by a signal,
   * the sandbox, the OOM killer or libivm for misbehaving) or it exited. The
   * message is the cause: the signal or exit status, then the end of the
   * worker's stderr (V8's fatal message). Later calls fail the same way. Since: 0.3
   */
  IVM_ERROR_CRASHED = 11,
  /**
   * A Reference would cross between processes: a Reference of an inline
   * isolate passed to an isolate in a worker process, one into a worker
   * passed to an inline isolate or to another worker's isolate. References
   * work only within their own process (isolates of one worker share one);
   * pass a copy instead. Since: 0.5
   */
  IVM_ERROR_CROSS_PROCESS = 12
};

/** The kind of `err`. Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API ivm_error_kind_t ivm_error_kind(const ivm_error_t *err);

/**
 * The error message, e.g. "Script execution timed out." or the JavaScript
 * error's `message`. Borrowed; valid until ivm_error_free(err).
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_error_message(const ivm_error_t *err, const char **out,
                               size_t *out_len);

/**
 * For IVM_ERROR_JS_EXCEPTION: the thrown object's `name` ("TypeError"...), read
 * from a data property of the object or its prototypes (never a getter); empty
 * when it has none, when a primitive was thrown, and for other kinds.
 * Borrowed.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_error_name(const ivm_error_t *err, const char **out,
                            size_t *out_len);

/**
 * For IVM_ERROR_JS_EXCEPTION: the JavaScript stack, "Name: message" followed by
 * one "    at ..." line per frame, with script names and 1-based line:column.
 * It is built by libivm from the captured frames and never runs JavaScript (so
 * `Error.prepareStackTrace` and `stack` getters have no effect). An error that
 * crossed isolates keeps each isolate's frames, separated by
 * "    at (<ivm boundary>)" lines (since 0.4). For IVM_ERROR_TIMEOUT (since 0.4):
 * where the JavaScript was stopped, the message followed by its frames, or empty
 * when no JavaScript was running then. Empty for other kinds. Borrowed.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_error_stack(const ivm_error_t *err, const char **out,
                             size_t *out_len);

/**
 * For IVM_ERROR_JS_EXCEPTION: 1 if a non-Error primitive was thrown (`throw 1`),
 * in which case the message is its string form; 0 otherwise.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API int ivm_error_thrown_primitive(const ivm_error_t *err);

/** Frees `err`; NULL is a no-op. The shared error of a call stopped by a
 * signal (ivm_interrupt_on_signal) is left as it is (since 0.4).
 * Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API void ivm_error_free(ivm_error_t *err);

enum {
  /** ivm_error_new_host: stop all JavaScript of the isolate instead of
   * throwing (the host is shutting down: an interrupt). The outermost call
   * fails with IVM_ERROR_TERMINATED carrying the token. Since: 0.2 */
  IVM_HOST_ERROR_ABORT = 1
};

/**
 * An error for a host function (ivm_host_fn, "Callbacks") to return:
 * JavaScript sees an Error with `name` ("TypeError", "RangeError", ... pick
 * the matching constructor) and `message`. A non-zero `token` travels with the
 * thrown Error: if it ends the host's outermost call, that call's error has
 * the same token (ivm_error_host_token()), so the host can recognise its own
 * error. `flags`: IVM_HOST_ERROR_*. NULL only when memory is exhausted.
 * Threads: any. Blocks: never. Errors: none (it returns a new error). Since: 0.2
 */
IVM_API ivm_error_t *ivm_error_new_host(const char *name, size_t name_len,
                                        const char *message, size_t message_len,
                                        uint64_t token, uint32_t flags);

/** The host token of an error (0: none).
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API uint64_t ivm_error_host_token(const ivm_error_t *err);

/* ------------------------------------------------------------------------- */
/* Isolates                                                                  */
/* ------------------------------------------------------------------------- */

/** The smallest memory limit an isolate accepts: 8 MiB. */
#define IVM_MEMORY_LIMIT_MIN 8388608

/**
 * Receives the cause of an isolate's catastrophic end, as UTF-8 text of
 * `cause_len` bytes (not NUL-terminated), valid during the call. Called at
 * most once per isolate, and never once ivm_isolate_dispose() has returned.
 *
 *   - In a worker process: the worker died without being disposed (V8
 *     aborted, a signal, the OOM killer, the sandbox, a protocol violation,
 *     a worker that stopped answering). `cause` is the message of the
 *     IVM_ERROR_CRASHED errors its calls fail with. Every isolate of a
 *     crashed group with a callback is called.
 *   - Inline: V8's fatal-error or out-of-memory handler ran (an allocation
 *     past the unwind room, say): `cause` is V8's ("Fatal javascript OOM in
 *     ...", "V8 fatal error in ...: ..."). The process ends right after: V8's
 *     message goes to stderr and the process aborts, as without a callback.
 *     V8's internal CHECK failures abort without calling it.
 *
 * Threads: in a worker, a thread libivm starts for the call (never one that
 *          libivm waits for, so it may call libivm, even start a new worker);
 *          inline, the thread that ran into the error (the process is ending:
 *          do as little as possible, call nothing of this isolate).
 * Blocks:  ivm_isolate_dispose() of the isolate waits for a call of it that
 *          runs on another thread. Since: 0.4
 */
typedef void (*ivm_catastrophic_error_fn)(void *user_data, const char *cause,
                                          size_t cause_len);

struct ivm_isolate_options {
  size_t struct_size;    /**< sizeof(ivm_isolate_options_t) as compiled */
  /**
   * Memory limit in bytes (0: the default, 128 MiB; at least
   * IVM_MEMORY_LIMIT_MIN). It bounds the JavaScript heap and, separately, the
   * memory of ArrayBuffers. Past it, the running call fails with
   * IVM_ERROR_MEMORY_LIMIT and the isolate is disposed (ArrayBuffer
   * allocations past it throw a JavaScript RangeError instead). While the
   * call unwinds, the heap may grow to at most the limit plus max(limit,
   * 256 MiB) (since 0.4; before, the room was counted from the limit and one
   * large builtin allocation aborted the process). An allocation that does
   * not fit even there, or that V8 refuses outright (an array longer than V8
   * allows), aborts the process: only a worker process contains it.
   */
  uint64_t memory_limit;
  /**
   * Where the isolate lives (IVM_PLACEMENT_*; 0: inline, in this process).
   * Ignored when `group` is set. Since: 0.4
   */
  uint32_t placement;
  /**
   * NULL, or the process group (a worker process) the isolate lives in; the
   * group is borrowed and must not be disposed while the isolate is in use
   * (its isolates then fail with IVM_ERROR_DISPOSED). Several isolates may
   * share a group; a crash of the worker takes all of them. Since: 0.4
   */
  ivm_process_group_t *group;
  /**
   * NULL, or called once with the cause when the isolate ends
   * catastrophically (see ivm_catastrophic_error_fn), with
   * `on_catastrophic_error_data`. Since: 0.4
   */
  ivm_catastrophic_error_fn on_catastrophic_error;
  /** Passed to on_catastrophic_error. Since: 0.4 */
  void *on_catastrophic_error_data;
  /**
   * NULL, or the bytes of a snapshot (ivm_snapshot_data() of one made by
   * ivm_snapshot_create() in a libivm of this version and V8 build, possibly
   * stored and read back), `snapshot_len` long: every context of the isolate
   * starts with the globals the snapshot's scripts left. Borrowed for the
   * call (the isolate keeps a copy). The bytes are checked (ivm's header, its
   * checksum, V8's version) before V8 sees them: garbage, a truncated
   * snapshot or one of another ivm or V8 build fails with INVALID_ARGUMENT.
   * For an isolate in a worker, the host checks it, sends it (at most
   * 16 MiB, else INVALID_ARGUMENT) and the worker checks it again. Since: 0.6
   */
  const char *snapshot;
  /** The length of `snapshot` in bytes. Since: 0.6 */
  size_t snapshot_len;
  /**
   * Non-zero: the isolate has V8's inspector, and ivm_inspector_session_new()
   * may connect Chrome DevTools protocol sessions to it ("Inspector"). Its
   * contexts are reported to the inspector, and `console` calls reach it.
   * Inline or in a worker process (placement or group) alike.
   * Since: 0.7
   */
  uint32_t inspector;
};

/** ivm_isolate_options_t.placement. Values are ABI: append only. */
enum {
  /** In this process (the default). */
  IVM_PLACEMENT_INLINE = 0,
  /** In a new worker process of its own (section "Processes"), started by
   * ivm_isolate_new() and ended when the isolate is disposed or freed. */
  IVM_PLACEMENT_PROCESS = 1
};

#ifndef IVM_CDEF
#define IVM_ISOLATE_OPTIONS_INIT { sizeof(ivm_isolate_options_t), 0, 0, NULL, NULL, NULL, NULL, 0, 0 }
#endif

/**
 * Creates an isolate, inline or in a worker process (`placement`, `group`).
 *
 * @param opts      NULL for defaults, or initialised with IVM_ISOLATE_OPTIONS_INIT.
 * @param[out] out  on success, a new handle the caller frees (ivm_isolate_free).
 * @return NULL on success, otherwise a new error owned by the caller.
 * Threads: any.
 * Blocks:  never inline; in a worker, until the worker (a new one: some
 *          30-40 ms on a quiet machine) has created the isolate.
 * Errors:  INVALID_ARGUMENT (a bad option or snapshot), INTERNAL; in a worker
 *          also CRASHED, DISPOSED (a disposed group). Since: 0.1 (worker
 *          placement: 0.4, snapshots: 0.6)
 */
IVM_API ivm_error_t *ivm_isolate_new(const ivm_isolate_options_t *opts,
                                     ivm_isolate_t **out);

/**
 * The process id of the worker `iso` lives in; 0 for an inline isolate (and
 * for NULL). The id stays readable once the worker is dead.
 * Threads: any. Blocks: never. Errors: none. Since: 0.4
 */
IVM_API int64_t ivm_isolate_pid(const ivm_isolate_t *iso);

/**
 * Disposes the isolate: running JavaScript is terminated (the running call
 * fails with IVM_ERROR_DISPOSED), queued jobs fail with IVM_ERROR_DISPOSED,
 * then the VM and everything in it is freed. Idempotent. From inside a call
 * running in this isolate (a host callback), the disposal is only requested
 * and completes when the outermost call returns. So it is too when the running
 * call is in host code (a host function, a host reference's operation), which
 * termination cannot stop and which may wait for the disposing thread, and
 * that has not returned within 100 ms (since 0.4): the call fails with
 * IVM_ERROR_DISPOSED once the host code returns.
 * A thread that makes synchronous calls keeps one isolate entered in V8
 * between them (since 0.13), and only that thread can leave it: disposed from
 * another thread (or from inside another isolate's call), the isolate's
 * handles fail at once, but the emptied VM's memory is freed by that thread
 * at its next synchronous call, its next asynchronous call, its next
 * ivm_debug_live_objects or its end.
 * Threads: any.
 * Blocks:  waits for the running call's JavaScript to unwind; for host code it
 *          is in, at most 100 ms.
 * Errors:  INVALID_ARGUMENT (NULL). Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_dispose(ivm_isolate_t *iso);

/** 1 if `iso` is disposed (by a call, a memory-limit failure or
 * ivm_isolate_dispose), else 0.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API int ivm_isolate_is_disposed(const ivm_isolate_t *iso);

/**
 * Terminates the JavaScript running in `iso`, if any: the running call fails
 * with IVM_ERROR_TERMINATED and the isolate stays usable. Does not affect later
 * calls.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_isolate_terminate(ivm_isolate_t *iso);

/** Frees the handle; disposes the isolate if no other handle uses it.
 * NULL is a no-op. Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API void ivm_isolate_free(ivm_isolate_t *iso);

/** V8 heap statistics of an isolate, in bytes (counts for contexts). */
struct ivm_heap_statistics {
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
  /** ArrayBuffer bytes currently charged to the isolate's budget (libivm's
   *  limited allocator; since 0.7 a transferred buffer leaves the sender's
   *  budget when it is detached and is charged to the isolate adopting it). */
  uint64_t externally_allocated_size;
};

/**
 * Reads the heap statistics of `iso` into `*out`, whose struct_size the caller
 * sets.
 * Threads: any.
 * Blocks:  waits while the isolate runs another call.
 * Errors:  DISPOSED, INVALID_ARGUMENT, DEADLOCK. Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_heap_statistics(ivm_isolate_t *iso,
                                                 ivm_heap_statistics_t *out);

/**
 * Time spent running JavaScript in `iso` so far, in nanoseconds: CPU time of
 * the threads that ran it and wall-clock time. Includes the call in progress
 * only once it returns. Either out pointer may be NULL. The CPU time leaves
 * out host functions called from JavaScript (JavaScript they run in `iso` is
 * counted): it is the smaller of the threads' CPU time and the wall-clock time
 * outside host functions. The wall-clock time is that of whole calls (since 0.4).
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_isolate_times(const ivm_isolate_t *iso, uint64_t *cpu_ns_out,
                               uint64_t *wall_ns_out);

/**
 * The number of live handles (contexts, scripts, references) that keep
 * objects of this isolate alive, not counting the isolate handles themselves.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API uint64_t ivm_isolate_reference_count(const ivm_isolate_t *iso);

/* ------------------------------------------------------------------------- */
/* Processes                                                                 */
/* ------------------------------------------------------------------------- */

/*
 * A *process group* is a worker process, `ivm-worker`, that libivm starts
 * beside libivm.so (or at $IVM_WORKER_PATH) and serves over a private
 * channel. Once V8 is up, the worker sandboxes itself: it closes every other
 * descriptor, sets no_new_privs and installs a seccomp filter that allows no
 * opening of files, no sockets, no exec and no fork; a forbidden system call
 * kills it. When the worker dies for any reason, every pending and later call
 * on the group fails with IVM_ERROR_CRASHED and the cause; the host process is
 * never hurt. libivm reaps the worker and closes its descriptors itself (no
 * SIGCHLD handler is installed).
 *
 * Isolates live in a worker when ivm_isolate_options_t names a `group` (several
 * isolates share its worker, and its crash) or `placement` =
 * IVM_PLACEMENT_PROCESS (a worker of its own, ended with the isolate). Their
 * handles are the same types, and every isolate, context and script call
 * keeps its semantics, outputs and error kinds (timeouts, terminate,
 * cancellation and memory limits run in the worker), plus:
 * - CRASHED: the worker died; pending and later calls fail with the cause.
 *   A worker that stops answering (no REPLY by a call's timeout plus 2 s, and
 *   then no answer to a PING within 2 s; calls without a timeout are checked
 *   every 2 s) is killed and reported the same way.
 * - References: ivm_context_global(), IVM_RESULT_REFERENCE results and
 *   every ivm_reference_* operation on them behave as inline (since 0.5);
 *   each operation is one round trip to the worker. Inside the worker,
 *   JavaScript runs as an asynchronous job, so a Reference object there that
 *   points into another isolate of the same group refuses its synchronous
 *   calls (getSync, applySync...) with DEADLOCK, as inline asynchronous jobs
 *   do; its promise forms work.
 * - CROSS_PROCESS (since 0.5): a Reference crosses only within its own
 *   process. One of an inline isolate passed to a worker's isolate, one into
 *   a worker passed to an inline isolate or to another worker's isolate
 *   (as an argument, a value to set, inside a copy) fails with
 *   IVM_ERROR_CROSS_PROCESS. Isolates of one group share a process.
 * - ExternalCopies live in the host and cross by content (since 0.5): one
 *   passed in (as a value, a copy_into marker or an object inside a copy)
 *   becomes an ExternalCopy of the worker with the same value and flags;
 *   IVM_RESULT_EXTERNAL_COPY results become new host ExternalCopies.
 *   TRANSFER_IN and TRANSFER_OUT still consume the source copy or detach the
 *   buffers.
 * - Buffers of 256 KiB or more (up to 16 per call or result, each below
 *   4 GiB) cross in shared memory (sealed memfds), not in the channel's
 *   frames (since 0.5): written once by the sender; a worker's arrives in the
 *   host without a further copy.
 * - Host callbacks cross (Since: 0.5): attached to an argument, they become
 *   functions (or host References) of the worker's JavaScript, which call them
 *   over the channel. The host function runs on the thread waiting for the
 *   call that runs that JavaScript (the caller's, for synchronous calls), or
 *   on a libivm runner thread for asynchronous calls and queued work (never
 *   on the I/O thread); it may call back into the same isolate synchronously,
 *   as deep as inline, and defer its result (ivm_call_defer()). Its errors,
 *   tokens and IVM_HOST_ERROR_ABORT behave as inline. ivm_call_job() is 0.
 *   A callback is kept until the worker's function is collected or its
 *   isolate goes (or the worker dies). If the worker dies while a callback
 *   runs, its result is dropped and the call fails with CRASHED. A context's
 *   `import_hook` and `on_unhandled_rejection` are called the same way (the
 *   worker's JavaScript waits for the rejection hook, as inline, since 0.6).
 *   A host function's
 *   arguments and result cross as a call's values do (References into its
 *   own worker, ExternalCopies, large buffers in shared memory).
 * - TRANSFER: host callbacks do not leave a worker, nor do References or
 *   ExternalCopies inside a copy a worker sends (a result, a host function's
 *   argument). A CALL or result whose inline data exceeds a frame (16 MiB)
 *   fails with TRANSFER too; strings, copy streams and buffers of 256 KiB or
 *   more travel beside the frame in shared memory (up to 16 per frame).
 * - Modules: every ivm_module_* call works, with two differences. The host
 *   walks the import graph itself (the compile reported each module's
 *   specifiers) and sends the worker the resolved table: `resolve` runs in
 *   the host on the instantiating call's thread, also for
 *   ivm_module_instantiate_async (which then calls it before it returns).
 *   ivm_module_namespace works as inline (a Reference into the worker). Since: 0.5
 * - Code caches cross as bytes and are checked by the worker's libivm exactly
 *   as inline; a cache made inline works in a worker and back. A cache a
 *   worker produced is only as trustworthy as that worker (see
 *   ivm_cache_options_t). Since: 0.5
 * - Blocks: synchronous calls wait on the caller's thread for the worker's
 *   answer; asynchronous ones hold no thread (libivm's I/O thread calls
 *   `done`). ivm_isolate_times() reports the times of the last answered call.
 */

struct ivm_process_group_options {
  size_t struct_size;          /**< sizeof(ivm_process_group_options_t) as compiled */
  /** How long the worker may take to start (ms); past it, it is killed and
   * ivm_process_group_new() fails with IVM_ERROR_CRASHED. 0: 10 000. */
  uint32_t startup_timeout_ms;
  /** Resident memory limit in MiB, checked by libivm every 20 ms; past it,
   * the worker is killed. 0: none. */
  uint32_t max_rss_mb;
  /** CPU time limit in seconds for the whole worker (RLIMIT_CPU); past it,
   * the worker dies of SIGXCPU. 0: none. */
  uint32_t cpu_limit_s;
};

#ifndef IVM_CDEF
#define IVM_PROCESS_GROUP_OPTIONS_INIT { sizeof(ivm_process_group_options_t), 0, 0, 0 }
#endif

/**
 * Starts a worker process and waits until it is ready (sandboxed and
 * answering).
 *
 * @param opts      NULL for defaults, or initialised with
 *                  IVM_PROCESS_GROUP_OPTIONS_INIT.
 * @param[out] out  on success, a new handle the caller frees
 *                  (ivm_process_group_free).
 * Threads: any.
 * Blocks:  until the worker is ready, or dies, or its start-up timeout passes.
 * Errors:  CRASHED (it died or hung while starting: the cause says which),
 *          INVALID_ARGUMENT, INTERNAL (it could not be started). Since: 0.3
 */
IVM_API ivm_error_t *ivm_process_group_new(const ivm_process_group_options_t *opts,
                                           ivm_process_group_t **out);

/** The worker's process id, also once it is dead (when the id may have been
 * reused); 0 for NULL.
 * Threads: any. Blocks: never. Errors: none. Since: 0.3 */
IVM_API int64_t ivm_process_group_pid(const ivm_process_group_t *group);

/**
 * Asks the worker to answer, to check that it is alive and serving.
 *
 * @param run  NULL, or its timeout_ns: past it the call fails with
 *             IVM_ERROR_TIMEOUT and the worker is left as it is.
 * Threads: any.
 * Blocks:  until the worker answers, dies or the timeout passes.
 * Errors:  CRASHED, DISPOSED, TIMEOUT, INVALID_ARGUMENT. Since: 0.3
 */
IVM_API ivm_error_t *ivm_process_group_ping(ivm_process_group_t *group,
                                            const ivm_run_options_t *run);

/**
 * NULL while the worker is alive; once it has died, a new error of kind
 * IVM_ERROR_CRASHED whose message is the cause; after
 * ivm_process_group_dispose() (of a worker that had not crashed before),
 * IVM_ERROR_DISPOSED. Death is noticed within milliseconds.
 * Threads: any. Blocks: never. Errors: CRASHED, DISPOSED, INVALID_ARGUMENT. Since: 0.3
 */
IVM_API ivm_error_t *ivm_process_group_status(const ivm_process_group_t *group);

/**
 * Ends the worker: asks it to exit, and kills it if it has not within 200 ms.
 * Later calls fail with IVM_ERROR_DISPOSED. Idempotent.
 * Threads: any.
 * Blocks:  until the worker is gone (at most the 200 ms grace, then the kill).
 * Errors:  INVALID_ARGUMENT (NULL). Since: 0.3
 */
IVM_API ivm_error_t *ivm_process_group_dispose(ivm_process_group_t *group);

/** Frees the handle, ending the worker as ivm_process_group_dispose() does
 * but without waiting for it. NULL is a no-op.
 * Threads: any. Blocks: never. Errors: none. Since: 0.3 */
IVM_API void ivm_process_group_free(ivm_process_group_t *group);

/* ------------------------------------------------------------------------- */
/* Call options                                                              */
/* ------------------------------------------------------------------------- */

/*
 * One option struct per kind of decision; a call takes those it uses, and
 * NULL gives the defaults. Each starts with struct_size and has an _INIT
 * macro; fields are only appended.
 */

/** Where code comes from: eval, eval_closure and compile_script. */
struct ivm_source_options {
  size_t struct_size;    /**< sizeof(ivm_source_options_t) as compiled */
  /** Script name shown in stacks (WTF-8); NULL: the call's default name. */
  const char *filename;
  size_t filename_len;
  int32_t line_offset;   /**< added to line numbers (0-based) */
  int32_t column_offset; /**< added to first-line column numbers */
};

/** How long a call may run: every call that runs JavaScript. */
struct ivm_run_options {
  size_t struct_size;    /**< sizeof(ivm_run_options_t) as compiled */
  /** Time limit in nanoseconds for the whole call (microtasks and an awaited
   * promise included); 0: none. Past it, the call fails with
   * IVM_ERROR_TIMEOUT and the isolate stays usable. */
  uint64_t timeout_ns;
};

/** In which form the result comes back: calls that return a JavaScript value. */
struct ivm_result_options {
  size_t struct_size;    /**< sizeof(ivm_result_options_t) as compiled */
  uint32_t flags;        /**< IVM_RESULT_* */
};

/**
 * The code cache of a compile (compile_script, compile_module). Cache data is
 * V8's compiled code in ivm's wrapping, which names the ivm and V8 builds, the
 * kind of code and a hash of its source: data for another build, kind or
 * source, or corrupt data, is refused before V8 sees it, and the code is
 * compiled as if none had been given (the compiled handle reports it as
 * rejected). It is checked against accidents, not attacks: cache data must
 * never come from an untrusted party (a crafted cache runs arbitrary code in
 * V8, see CVE-2022-39266). That includes a worker-hosted isolate whose
 * JavaScript may be hostile: data it produced came from its worker, so do not
 * give it to inline isolates or to other workers. Since: 0.4
 */
struct ivm_cache_options {
  size_t struct_size;    /**< sizeof(ivm_cache_options_t) as compiled */
  /** Cache data from an earlier compile of the same source; NULL: none
   * (non-NULL with data_len 0 is data, and rejected). Borrowed for the call
   * (the _async twins copy it). */
  const char *data;
  size_t data_len;
  uint32_t flags;        /**< IVM_CACHE_* */
};

/** ivm_cache_options_t.flags. */
enum {
  /** Produce cache data for this code (ivm_script_cached_data). */
  IVM_CACHE_PRODUCE = 1
};

#ifndef IVM_CDEF
#define IVM_SOURCE_OPTIONS_INIT { sizeof(ivm_source_options_t), NULL, 0, 0, 0 }
#define IVM_CACHE_OPTIONS_INIT { sizeof(ivm_cache_options_t), NULL, 0, 0 }
#define IVM_RUN_OPTIONS_INIT { sizeof(ivm_run_options_t), 0 }
#define IVM_RESULT_OPTIONS_INIT { sizeof(ivm_result_options_t), 0 }
#endif

/**
 * ivm_result_options_t.flags. Without any of them, only primitives
 * (undefined, null, booleans, numbers, BigInts, strings) leave the isolate;
 * any other result fails with IVM_ERROR_TRANSFER naming its type. COPY,
 * EXTERNAL_COPY and REFERENCE are exclusive.
 */
enum {
  /**
   * If the result is a promise, wait inside the isolate until it settles and
   * return its value (a rejection fails with IVM_ERROR_JS_EXCEPTION). While
   * waiting, the isolate's pending tasks and microtasks run; the call's
   * timeout covers the whole wait. Since: 0.1
   */
  IVM_RESULT_PROMISE = 1,
  /**
   * Return any copyable value as a structured copy (IVM_VALUE_SERIALIZED;
   * primitives keep their own kinds). Since: 0.2
   */
  IVM_RESULT_COPY = 2,
  /** Return an IVM_VALUE_EXTERNAL_COPY (made without leaving libivm). Since: 0.2 */
  IVM_RESULT_EXTERNAL_COPY = 4,
  /**
   * With IVM_RESULT_COPY or IVM_RESULT_EXTERNAL_COPY: detach the ArrayBuffers
   * of the result and move their memory into the copy instead of copying it.
   * Non-detachable buffers (WebAssembly memory) fail with TRANSFER. Since: 0.2
   */
  IVM_RESULT_TRANSFER_OUT = 8,
  /** Return an IVM_VALUE_REFERENCE to the result, which stays in the isolate. Since: 0.2 */
  IVM_RESULT_REFERENCE = 16,
  /** Discard the result (return undefined), whatever it is: for calls made
   * only for their effects. Since: 0.2 */
  IVM_RESULT_DISCARD = 32,
  /**
   * Return the text of node's `util.inspect(value)` as an IVM_VALUE_STRING,
   * for any value (strings quoted, nesting to depth 2, cycles, Maps, errors
   * with their stacks, at most about 1 MiB of text). It runs no JavaScript of
   * the value's: getters show as [Getter], Proxies as their targets without
   * running traps. It is the formatter of the host console (docs/host.md).
   * Exclusive with COPY, EXTERNAL_COPY, REFERENCE and DISCARD. Since: 0.7
   */
  IVM_RESULT_INSPECT = 64
};

/* ------------------------------------------------------------------------- */
/* Snapshots                                                                 */
/* ------------------------------------------------------------------------- */

/*
 * A *snapshot* is the heap of a fresh isolate after some scripts ran in it
 * (libraries, their set-up), serialized by V8. An isolate created from it
 * (ivm_isolate_options_t.snapshot) starts every context with those globals
 * without running the scripts again, which is faster for large libraries.
 * Only what V8 can serialize may be left in the heap: plain JavaScript
 * objects, functions, classes, arrays, strings, Maps, Sets, typed arrays and
 * their (non-shared) buffers... V8 aborts the process on others (Intl
 * objects, FinalizationRegistry cells): create snapshots in a worker
 * (IVM_PLACEMENT_PROCESS), where that is an error. While the scripts run,
 * V8 does not install SharedArrayBuffer, Atomics and WebAssembly on the
 * global; contexts of the new isolate have them.
 */

/** One script run by ivm_snapshot_create(). Since: 0.6 */
struct ivm_snapshot_script {
  /** UTF-8 source of `code_len` bytes; need not be NUL-terminated. */
  const char *code;
  size_t code_len;
  /** The name stack traces show (NULL: "<snapshot>"). */
  const char *filename;
  size_t filename_len;
};

/** Options of ivm_snapshot_create(). Since: 0.6 */
struct ivm_snapshot_options {
  size_t struct_size;    /**< sizeof(ivm_snapshot_options_t) as compiled */
  /** NULL, or UTF-8 code of `warmup_len` bytes run after the scripts in a
   * throw-away context, so that the snapshot keeps the code it compiled
   * (its own globals are not kept). */
  const char *warmup;
  size_t warmup_len;
  /** Time limit in nanoseconds for the scripts and the warm-up; 0: none. */
  uint64_t timeout_ns;
  /**
   * Where the scripts run and V8 serializes the heap (IVM_PLACEMENT_*):
   * IVM_PLACEMENT_PROCESS in a throw-away worker process (see "Processes"),
   * where V8 aborting on something it cannot serialize ends only the worker
   * and the call fails with INVALID_ARGUMENT and V8's message (a worker
   * costs some 30-40 ms more); IVM_PLACEMENT_INLINE (0) in this process,
   * where such a heap aborts the process.
   */
  uint32_t placement;
};

#ifndef IVM_CDEF
#define IVM_SNAPSHOT_OPTIONS_INIT { sizeof(ivm_snapshot_options_t), NULL, 0, 0, 0 }
#endif

/**
 * Runs `scripts` in order as classic scripts in the one context of a new,
 * throw-away isolate (microtasks run after each), then serializes its heap.
 * The isolate's heap may grow to 1 GiB (past it: MEMORY_LIMIT).
 *
 * @param scripts   `count` scripts; borrowed for the call.
 * @param opts      NULL for defaults, or initialised with IVM_SNAPSHOT_OPTIONS_INIT.
 * @param[out] out  on success, a new snapshot the caller frees (ivm_snapshot_free).
 * @return NULL on success, otherwise a new error owned by the caller.
 * Threads: any.
 * Blocks:  while the scripts run and V8 serializes the heap (and, with
 *          IVM_PLACEMENT_PROCESS, while a worker starts).
 * Errors:  JS_EXCEPTION (a script threw), TIMEOUT, MEMORY_LIMIT,
 *          INVALID_ARGUMENT (bad arguments; in a worker, a heap V8 cannot
 *          serialize), TRANSFER (in a worker, a snapshot over 16 MiB),
 *          INTERNAL. Since: 0.6
 */
IVM_API ivm_error_t *ivm_snapshot_create(const ivm_snapshot_script_t *scripts, size_t count,
                                         const ivm_snapshot_options_t *opts,
                                         ivm_snapshot_t **out);

/**
 * The bytes of `snapshot` (ivm's header, then V8's blob), borrowed until the
 * snapshot is freed; pass them (or a stored copy) as
 * ivm_isolate_options_t.snapshot.
 * Threads: any. Blocks: never. Errors: none. Since: 0.6
 */
IVM_API void ivm_snapshot_data(const ivm_snapshot_t *snapshot, const char **out,
                               size_t *out_len);

/** Frees a snapshot; NULL is a no-op. Isolates created from it keep their own
 * copy. Threads: any. Blocks: never. Errors: none. Since: 0.6 */
IVM_API void ivm_snapshot_free(ivm_snapshot_t *snapshot);

/* ------------------------------------------------------------------------- */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------- */

/**
 * The host basics a context may opt into (ivm_context_options_t.host): globals
 * that browsers and node offer and that the bare ECMAScript global lacks. Each
 * is implemented inside libivm and reaches no host resource but the one named
 * (docs/host.md has each one's threat note). Since: 0.6
 */
enum {
  /** `console` (log, info, warn, error, debug, trace, assert, dir, time,
   * timeEnd, timeLog, count, countReset): each call formats its arguments
   * inside the isolate, as node's util.inspect does, and hands one line to
   * ivm_context_options_t.console. */
  IVM_HOST_CONSOLE = 0x1u,
  /** setTimeout, setInterval, clearTimeout, clearInterval, setImmediate,
   * clearImmediate and queueMicrotask, on the isolate's own queue. A due
   * timer runs in a call waiting for its promise on its thread, or else as a
   * job of its own (queued by libivm's timer thread; no thread waits). A
   * timer inherits the deadline of the call that set it and never runs past
   * it; one set without a deadline runs each callback under a 10 s timeout.
   * What a callback throws goes to the context's on_unhandled_rejection.
   * At most 100,000 pending timers per context (then a RangeError); release
   * and disposal cancel them (docs/host.md, "Timers"). */
  IVM_HOST_TIMERS = 0x2u,
  /** TextEncoder, TextDecoder (utf-8, utf-16le), atob and btoa. */
  IVM_HOST_ENCODING = 0x4u,
  /** structuredClone, performance.now, crypto.getRandomValues and
   * crypto.randomUUID (from the operating system's generator). */
  IVM_HOST_WEB = 0x8u
};

struct ivm_context_options {
  size_t struct_size; /**< sizeof(ivm_context_options_t) as compiled */
  /** 0 (a bare context), or IVM_HOST_* bits; unknown bits fail the call with
   * INVALID_ARGUMENT. Since: 0.6 (the field was `reserved`, always 0) */
  uint32_t host;
  /**
   * NULL, or the host function that `import()` in this context calls, with
   * the specifier and the importing script's or module's name (both strings).
   * What it returns (for an async callback: what its promise resolves to)
   * settles `import()`: normally the module's namespace, which the host gets
   * by resolving, instantiating and evaluating the module (e.g. a reference
   * to ivm_module_namespace() passed back with IVM_ATTACH_DEREF). A throw
   * rejects `import()`. Without one, `import()` rejects with a TypeError.
   * Borrowed for the call: the context keeps its own share. Since: 0.4
   */
  ivm_callback_t *import_hook;
  /**
   * NULL, or the host function called with (reason, revoked) for each promise
   * of this context rejected with no handler: at the end of the call that ran
   * the JavaScript, after its microtasks, never for the call's own result
   * promise, and without changing the call's outcome. `reason` is the
   * rejection value when it can be copied, else its string; `revoked` is true
   * when a handler was added to an already reported promise. Borrowed for the
   * call. Since: 0.4
   */
  ivm_callback_t *on_unhandled_rejection;
  /**
   * With IVM_HOST_CONSOLE: NULL (each line goes to the process's standard
   * error, as "level: text"), or the host function called with two strings,
   * (level, text), once per console call and in the order of the calls; level
   * is one of "log", "info", "warn", "error", "debug", "trace", "assert",
   * "dir", "time", "count". Its result is ignored, and so is its failure.
   * Threads: where the JavaScript runs (for a worker-hosted isolate: the host
   * thread waiting for the call, as for any host callback). Borrowed for the
   * call. Since: 0.6
   */
  ivm_callback_t *console;
  /** The most UTF-8 bytes of one console call's text; longer text is cut
   * (at a character boundary) and ends with "… [truncated to N bytes]", N
   * being this limit. 0: 16384. Since: 0.6 */
  uint32_t console_max_bytes;
};

#ifndef IVM_CDEF
#define IVM_CONTEXT_OPTIONS_INIT { sizeof(ivm_context_options_t), 0, NULL, NULL, NULL, 0 }
#endif

/**
 * Creates a new context (a fresh global object) in `iso`.
 *
 * @param opts      NULL for defaults.
 * @param[out] out  on success, a new handle the caller frees (ivm_context_free).
 * Threads: any.
 * Blocks:  waits while the isolate runs another call.
 * Errors:  DISPOSED, MEMORY_LIMIT, INVALID_ARGUMENT (also for unknown `host`
 *          bits), DEADLOCK, TERMINATED. Since: 0.1
 */
IVM_API ivm_error_t *ivm_isolate_create_context(ivm_isolate_t *iso,
                                                const ivm_context_options_t *opts,
                                                ivm_context_t **out);

/**
 * Compiles and runs `code` in `ctx` and returns its completion value.
 *
 * @param ctx            context to run in; borrowed.
 * @param code           WTF-8 source of `code_len` bytes.
 * @param source         NULL, or where the code comes from (default name "<eval>").
 * @param run            NULL, or the timeout.
 * @param result         NULL, or the form of the result (IVM_RESULT_*).
 * @param[out] out       on success, a new value the caller frees (ivm_value_free),
 *                       or NULL when the result went to `primitive_out`.
 * @param[out] primitive_out  NULL, or a slot that receives an undefined, null,
 *                       boolean or number result without allocating a value:
 *                       then `*out` is NULL. For other results its kind is set
 *                       to 0 and `*out` holds the value.
 * @return NULL on success, otherwise a new error owned by the caller.
 * Threads: any; the JavaScript runs on the calling thread.
 * Blocks:  waits while the isolate runs another call (never interleaves), then
 *          runs until the code (and with IVM_RESULT_PROMISE, its promise) ends.
 * Errors:  JS_EXCEPTION, TIMEOUT, MEMORY_LIMIT, DISPOSED, TERMINATED, TRANSFER,
 *          INVALID_ARGUMENT, DEADLOCK. Since: 0.3
 */
IVM_API ivm_error_t *ivm_context_eval(ivm_context_t *ctx, const char *code,
                                      size_t code_len,
                                      const ivm_source_options_t *source,
                                      const ivm_run_options_t *run,
                                      const ivm_result_options_t *result,
                                      ivm_value_t **out, ivm_primitive_t *primitive_out);

/**
 * Compiles `code` as the body of a function whose parameters are named $0,
 * $1, ... and calls it with `args` (`nargs` values, each converted into the
 * isolate: primitives, structured copies, external copies, references); returns
 * its result as ivm_context_eval() does. The default name is "<eval_closure>".
 * The compiled function is cached per context. `args` are borrowed.
 * Threads: any; the JavaScript runs on the calling thread.
 * Blocks:  as ivm_context_eval().
 * Errors:  as ivm_context_eval(). Since: 0.3
 */
IVM_API ivm_error_t *ivm_context_eval_closure(ivm_context_t *ctx, const char *code,
                                              size_t code_len,
                                              ivm_value_t *const *args, size_t nargs,
                                              const ivm_source_options_t *source,
                                              const ivm_run_options_t *run,
                                              const ivm_result_options_t *result,
                                              ivm_value_t **out,
                                              ivm_primitive_t *primitive_out);

/**
 * Releases the context: its global object is dropped and later calls on `ctx`
 * fail with IVM_ERROR_DISPOSED. Idempotent. If the isolate is busy, the
 * global object is dropped when its current call ends.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL). Since: 0.1
 */
IVM_API ivm_error_t *ivm_context_release(ivm_context_t *ctx);

/** Frees the handle (releasing the context once no queued job needs it);
 * NULL is a no-op. Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API void ivm_context_free(ivm_context_t *ctx);

/* ------------------------------------------------------------------------- */
/* Scripts                                                                   */
/* ------------------------------------------------------------------------- */

/**
 * Compiles `code` once for `iso` (default name "<isolated-vm>"); the script
 * can then run in any of its contexts. A syntax error fails with
 * IVM_ERROR_JS_EXCEPTION (name "SyntaxError", the stack naming the file and
 * line).
 * Threads: any.
 * Blocks:  waits while the isolate runs another call.
 * Errors:  JS_EXCEPTION, DISPOSED, MEMORY_LIMIT, INVALID_ARGUMENT, DEADLOCK,
 *          TERMINATED. Since: 0.3
 */
IVM_API ivm_error_t *ivm_isolate_compile_script(ivm_isolate_t *iso,
                                                const char *code, size_t code_len,
                                                const ivm_source_options_t *source,
                                                const ivm_cache_options_t *cache,
                                                ivm_script_t **out);

/**
 * The cache data produced by the compile (IVM_CACHE_PRODUCE), for later
 * compiles of the same source (ivm_cache_options_t); empty when none was
 * asked for or V8 gave none. Borrowed: valid until the handle is freed.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL). Since: 0.4
 */
IVM_API ivm_error_t *ivm_script_cached_data(const ivm_script_t *script, const char **out,
                                            size_t *out_len);

/** 1 if the compile was given cache data and did not use it (foreign,
 * stale or corrupt), else 0.
 * Threads: any. Blocks: never. Errors: none. Since: 0.4 */
IVM_API int ivm_script_cached_data_rejected(const ivm_script_t *script);

/**
 * Runs `script` in `ctx`, which must belong to the same isolate
 * (INVALID_ARGUMENT otherwise), and returns its completion value as
 * ivm_context_eval() does (`out`, `primitive_out`).
 * Threads: any; the JavaScript runs on the calling thread.
 * Blocks:  as ivm_context_eval().
 * Errors:  as ivm_context_eval(). Since: 0.3
 */
IVM_API ivm_error_t *ivm_script_run(ivm_script_t *script, ivm_context_t *ctx,
                                    const ivm_run_options_t *run,
                                    const ivm_result_options_t *result,
                                    ivm_value_t **out, ivm_primitive_t *primitive_out);

/** Releases the compiled script; later runs fail with IVM_ERROR_DISPOSED.
 * Idempotent. Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL).
 * Since: 0.1 */
IVM_API ivm_error_t *ivm_script_release(ivm_script_t *script);

/** Frees the handle; NULL is a no-op.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API void ivm_script_free(ivm_script_t *script);

/* ------------------------------------------------------------------------- */
/* Modules                                                                   */
/* ------------------------------------------------------------------------- */

/*
 * An ES module is compiled for an isolate, then instantiated in one of its
 * contexts (its imports are linked to other modules of the same isolate),
 * then evaluated there. A module belongs to the context it was instantiated
 * in from then on; it cannot be instantiated again, nor linked from another
 * context. Module code is strict and may use top-level await.
 */

/**
 * Compiles `code` as an ES module for `iso` (default name "<module>").
 * A syntax error fails with IVM_ERROR_JS_EXCEPTION ("SyntaxError").
 * Threads: any.
 * Blocks:  waits while the isolate runs another call.
 * Errors:  JS_EXCEPTION, DISPOSED, MEMORY_LIMIT, INVALID_ARGUMENT, DEADLOCK,
 *          TERMINATED. Since: 0.4
 */
IVM_API ivm_error_t *ivm_isolate_compile_module(ivm_isolate_t *iso,
                                                const char *code, size_t code_len,
                                                const ivm_source_options_t *source,
                                                const ivm_cache_options_t *cache,
                                                ivm_module_t **out);

/** As ivm_script_cached_data(), for a module. Since: 0.4 */
IVM_API ivm_error_t *ivm_module_cached_data(const ivm_module_t *module, const char **out,
                                            size_t *out_len);

/** As ivm_script_cached_data_rejected(), for a module. Since: 0.4 */
IVM_API int ivm_module_cached_data_rejected(const ivm_module_t *module);

/**
 * The number of the module's import requests (`import ... from "x"` and
 * `export ... from "x"`, each specifier once per request, in source order).
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL). Since: 0.4
 */
IVM_API ivm_error_t *ivm_module_dependency_count(const ivm_module_t *module,
                                                 size_t *count_out);

/**
 * The specifier of import request `index` (< ivm_module_dependency_count),
 * UTF-8, borrowed: valid until the handle is freed.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.4
 */
IVM_API ivm_error_t *ivm_module_dependency_specifier(const ivm_module_t *module,
                                                     size_t index, const char **out,
                                                     size_t *out_len);

/**
 * Resolves one import while a module graph is instantiated: sets `*out` to
 * the module that `specifier` names when imported by `referrer`. `referrer`
 * is the handle given to ivm_module_instantiate() or one this function
 * returned before. `*out` stays owned by the caller of instantiate and must
 * stay alive until instantiate returns. Returning an error (owned by libivm
 * from then on) fails the instantiation with that error.
 * Runs on the thread of the instantiating call (for the async twin, a pool
 * thread) while the isolate is locked: it must not call into the isolate.
 */
typedef ivm_error_t *(*ivm_module_resolve_fn)(void *user_data, const char *specifier,
                                              size_t specifier_len,
                                              ivm_module_t *referrer,
                                              ivm_module_t **out);

/**
 * The number of import attributes of import request `index` (V8 10.2's import
 * assertions: `import j from "./a.json" assert {type: "json"}` has one).
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.5
 */
IVM_API ivm_error_t *ivm_module_dependency_attribute_count(const ivm_module_t *module,
                                                          size_t index, size_t *count_out);

/**
 * Import attribute `attribute` (< ivm_module_dependency_attribute_count) of
 * import request `index`: its key and value, UTF-8, borrowed: valid until the
 * handle is freed. Attributes are in source order.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.5
 */
IVM_API ivm_error_t *ivm_module_dependency_attribute(const ivm_module_t *module, size_t index,
                                                    size_t attribute, const char **key_out,
                                                    size_t *key_len_out, const char **value_out,
                                                    size_t *value_len_out);

/**
 * As ivm_module_resolve_fn, for ivm_module_instantiate_v2(): resolves import
 * request `request` of `referrer` (its index for ivm_module_dependency_specifier()
 * and ivm_module_dependency_attribute()), so that imports of one specifier
 * with different attributes can be told apart. Since: 0.5
 */
typedef ivm_error_t *(*ivm_module_resolve_request_fn)(void *user_data, ivm_module_t *referrer,
                                                      size_t request, ivm_module_t **out);

/**
 * Instantiates `module` and, through `resolve`, every module it imports, in
 * `ctx` (same isolate). Modules already instantiated in `ctx` may be linked
 * again; a module instantiated in another context may not.
 * Threads: any; `resolve` runs on the calling thread.
 * Blocks:  waits while the isolate runs another call.
 * Errors:  JS_EXCEPTION (V8 refused the link, e.g. a missing export),
 *          INVALID_ARGUMENT (already instantiated, a module of another
 *          isolate or context, `resolve` gave NULL), what `resolve` returned,
 *          DISPOSED, MEMORY_LIMIT, DEADLOCK, TERMINATED. Since: 0.4
 */
IVM_API ivm_error_t *ivm_module_instantiate(ivm_module_t *module, ivm_context_t *ctx,
                                            ivm_module_resolve_fn resolve,
                                            void *user_data);

/** As ivm_module_instantiate(), with a resolve function that gets each import
 * request's index (and so its attributes). Since: 0.5 */
IVM_API ivm_error_t *ivm_module_instantiate_v2(ivm_module_t *module, ivm_context_t *ctx,
                                               ivm_module_resolve_request_fn resolve,
                                               void *user_data);

/**
 * Evaluates an instantiated module (and its imports) in its context. The
 * completion value is the evaluation's promise; with IVM_RESULT_PROMISE the
 * call waits until it settles (top-level await; the timeout covers the whole
 * wait) and a rejection fails with IVM_ERROR_JS_EXCEPTION. Evaluating again
 * gives the first evaluation's outcome.
 * Threads: any; the JavaScript runs on the calling thread.
 * Blocks:  as ivm_context_eval().
 * Errors:  as ivm_context_eval(); INVALID_ARGUMENT before instantiation.
 *          Since: 0.4
 */
IVM_API ivm_error_t *ivm_module_evaluate(ivm_module_t *module, const ivm_run_options_t *run,
                                         const ivm_result_options_t *result,
                                         ivm_value_t **out, ivm_primitive_t *primitive_out);

/**
 * The module namespace object (its exports) of an instantiated module, in
 * the form `result` asks for (IVM_RESULT_REFERENCE for a reference).
 * Threads: any. Blocks: waits while the isolate runs another call.
 * Errors:  INVALID_ARGUMENT (not instantiated), TRANSFER, DISPOSED,
 *          DEADLOCK. Since: 0.4 (in a worker-hosted isolate: 0.5)
 */
IVM_API ivm_error_t *ivm_module_namespace(ivm_module_t *module,
                                          const ivm_result_options_t *result,
                                          ivm_value_t **out);

/**
 * Sets what `import.meta` holds in the module: the own properties of `meta`
 * (a copy of an object, e.g. {url: "file:///a.mjs"}), copied in when the
 * module first uses `import.meta`. Takes ownership of `meta`, also on error.
 * Call it before evaluating the module: later calls have no effect on an
 * `import.meta` already in use.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL). Since: 0.4
 */
IVM_API ivm_error_t *ivm_module_set_meta(ivm_module_t *module, ivm_value_t *meta);

/** Releases the module; later calls fail with IVM_ERROR_DISPOSED. Modules
 * that import it keep what they linked. Idempotent.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL). Since: 0.4 */
IVM_API ivm_error_t *ivm_module_release(ivm_module_t *module);

/** Frees the handle; NULL is a no-op.
 * Threads: any. Blocks: never. Errors: none. Since: 0.4 */
IVM_API void ivm_module_free(ivm_module_t *module);

/* ------------------------------------------------------------------------- */
/* Values                                                                    */
/* ------------------------------------------------------------------------- */

/*
 * An ivm_value_t is a host-side JavaScript value, owned by the caller,
 * belonging to no isolate. Values are immutable after creation (except for
 * appending attachments, "Copies") and may be read from any thread. Future
 * versions add kinds without changing the existing ones.
 */

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
   * attachments the stream refers to by index ("Copies"). Since: 0.2
   */
  IVM_VALUE_SERIALIZED = 7,
  /** An ExternalCopy (ivm_value_external_copy()); entering an isolate, it
   * becomes an ExternalCopy object (copy(), copyInto(), release()). Since: 0.2 */
  IVM_VALUE_EXTERNAL_COPY = 8,
  /** A Reference to a value inside an isolate (ivm_value_reference());
   * entering an isolate, it becomes a Reference object. Since: 0.2 */
  IVM_VALUE_REFERENCE = 9
};

/** The kind of `value`. Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API ivm_value_kind_t ivm_value_kind(const ivm_value_t *value);

/** For IVM_VALUE_BOOLEAN: 0 or 1; otherwise 0.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API int ivm_value_boolean(const ivm_value_t *value);

/** For IVM_VALUE_NUMBER: the number; otherwise NaN.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API double ivm_value_number(const ivm_value_t *value);

/**
 * For IVM_VALUE_STRING: the WTF-8 bytes (borrowed, valid until the value is
 * freed); otherwise an empty string.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_value_string(const ivm_value_t *value, const char **out,
                              size_t *out_len);

/**
 * For IVM_VALUE_BIGINT: `*negative_out` is 1 for a negative number, and
 * `*words_out` / `*count_out` give the magnitude as little-endian 64-bit words
 * (least significant first; zero has no words). Borrowed. Otherwise zero.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_value_bigint(const ivm_value_t *value, int *negative_out,
                              const uint64_t **words_out, size_t *count_out);

/**
 * New values. `data` (WTF-8 of `len` bytes) and `words` (the magnitude as
 * little-endian 64-bit words) are copied. NULL only when memory is exhausted.
 * Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API ivm_value_t *ivm_value_new_undefined(void);
IVM_API ivm_value_t *ivm_value_new_null(void);
IVM_API ivm_value_t *ivm_value_new_boolean(int b);
IVM_API ivm_value_t *ivm_value_new_number(double d);
IVM_API ivm_value_t *ivm_value_new_string(const char *data, size_t len);
IVM_API ivm_value_t *ivm_value_new_bigint(int negative, const uint64_t *words,
                                          size_t count);

/** Frees `value`; NULL is a no-op.
 * Threads: any. Blocks: only when the value holds the last hold on an isolate
 * whose handles are all gone (a copy with a Reference or a Callback into it):
 * that isolate is then disposed of on this thread, which takes milliseconds for
 * a big heap. Errors: none. Since: 0.1 */
IVM_API void ivm_value_free(ivm_value_t *value);

/**
 * A primitive in the caller's memory: results of synchronous calls
 * (`primitive_out`) and arguments of host functions (ivm_call_view()) without
 * allocating an ivm_value_t. `kind` is an IVM_VALUE_* kind, or 0 when the
 * value is not given here. Since: 0.2
 */
struct ivm_primitive {
  ivm_value_kind_t kind;
  int32_t boolean;       /**< IVM_VALUE_BOOLEAN: 0 or 1 */
  double number;         /**< IVM_VALUE_NUMBER */
  const char *data;      /**< IVM_VALUE_STRING (arguments only): WTF-8, borrowed
                              for the duration of the host function's call */
  size_t len;
};

/* ------------------------------------------------------------------------- */
/* Async jobs                                                                */
/* ------------------------------------------------------------------------- */

/*
 * Every call that runs in an isolate has an `_async` twin that queues the
 * work as a *job* and returns at once. Each isolate has a FIFO queue of jobs,
 * served by a small shared pool of native threads (cores + 1): jobs of one
 * isolate run one at a time in submission order; jobs of different isolates
 * run in parallel. Synchronous calls still run on the caller's thread; one
 * made while the isolate runs a job waits for that job to end. Code running
 * for a job (on a pool thread) may not make a synchronous call into a
 * different isolate: that could deadlock the pool, and fails with
 * IVM_ERROR_DEADLOCK.
 *
 * The twins copy what they borrow (code, file names) before returning, and
 * take ownership of the values passed in, even when they fail. Their result
 * options are those of the synchronous call; they have no `primitive_out`.
 */

/**
 * Which member of ivm_completion_t.result is set. Values are ABI: append only.
 * Named IVM_COMPLETION_*, apart from the IVM_RESULT_* flags, which say in
 * which form a call returns its result.
 */
typedef uint32_t ivm_completion_kind_t;
enum {
  /** No result: the job failed (`error` is set). */
  IVM_COMPLETION_NONE = 0,
  /** `result.value`: evaluations, script runs and reference operations. */
  IVM_COMPLETION_VALUE = 1,
  /** `result.context`: ivm_isolate_create_context_async(). */
  IVM_COMPLETION_CONTEXT = 2,
  /** `result.script`: ivm_isolate_compile_script_async(). */
  IVM_COMPLETION_SCRIPT = 3,
  /** `result.heap_statistics`: ivm_isolate_heap_statistics_async(). */
  IVM_COMPLETION_HEAP_STATISTICS = 4,
  /** `result.module`: ivm_isolate_compile_module_async(). Since: 0.4 */
  IVM_COMPLETION_MODULE = 5
};

/**
 * The outcome of one job. Exactly one of the result and `error` is set: on
 * success `kind` names the member of `result` that holds a new object (the
 * receiver owns it and frees it with its ivm_*_free); on failure `kind` is
 * IVM_COMPLETION_NONE and `error` is a new error the receiver owns. The
 * union stays pointer-sized as kinds are added, so arrays of completions
 * keep their layout: this struct never grows.
 */
struct ivm_completion {
  uint64_t job;                 /**< the job's id, unique in the process */
  ivm_completion_kind_t kind;   /**< IVM_COMPLETION_* */
  union {
    ivm_value_t *value;
    ivm_context_t *context;
    ivm_script_t *script;
    ivm_heap_statistics_t *heap_statistics;
    ivm_module_t *module;
  } result;
  ivm_error_t *error;
};

/**
 * Reports the end of a job, exactly once, even for cancelled jobs and
 * disposed isolates. `completion` is borrowed for the call; ownership of its
 * result or error moves to the callee.
 * Runs on a pool thread (or, for a job dropped by ivm_isolate_cancel_job or a
 * disposal, on the thread that made that call); must not block or call back
 * into the isolate synchronously.
 */
typedef void (*ivm_done_fn)(void *user_data, const ivm_completion_t *completion);

/**
 * Queues ivm_context_eval(). `code`, the options and the filename are copied.
 *
 * @param done       called once with the outcome (ivm_done_fn); its result is
 *                   an IVM_COMPLETION_VALUE.
 * @param user_data  passed to `done`.
 * @param[out] job_out  may be NULL; the job's id for ivm_isolate_cancel_job.
 * @return NULL when queued (done will fire), otherwise an error (done will
 * not fire).
 * Threads: any. Blocks: not for an isolate in this process; for one in a
 * worker process (docs/process.md), while the request is written to the
 * worker's channel (a worker that stops reading it is killed, as that file's
 * "A worker that stops answering" says), so a caller should not hold a lock
 * that other threads need meanwhile.
 * Errors: INVALID_ARGUMENT. Since: 0.3
 */
IVM_API ivm_error_t *ivm_context_eval_async(ivm_context_t *ctx, const char *code,
                                            size_t code_len,
                                            const ivm_source_options_t *source,
                                            const ivm_run_options_t *run,
                                            const ivm_result_options_t *result,
                                            ivm_done_fn done, void *user_data,
                                            uint64_t *job_out);

/**
 * Queues ivm_context_eval_closure(); as ivm_context_eval_async(). Takes
 * ownership of the `nargs` values in `args` (even when it fails); the array
 * itself is borrowed.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.3
 */
IVM_API ivm_error_t *ivm_context_eval_closure_async(ivm_context_t *ctx, const char *code,
                                                    size_t code_len, ivm_value_t **args,
                                                    size_t nargs,
                                                    const ivm_source_options_t *source,
                                                    const ivm_run_options_t *run,
                                                    const ivm_result_options_t *result,
                                                    ivm_done_fn done, void *user_data,
                                                    uint64_t *job_out);

/** Queues ivm_script_run(); as ivm_context_eval_async().
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.3 */
IVM_API ivm_error_t *ivm_script_run_async(ivm_script_t *script, ivm_context_t *ctx,
                                          const ivm_run_options_t *run,
                                          const ivm_result_options_t *result,
                                          ivm_done_fn done, void *user_data,
                                          uint64_t *job_out);

/** Queues ivm_isolate_create_context(); the result is an IVM_COMPLETION_CONTEXT.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.3 */
IVM_API ivm_error_t *ivm_isolate_create_context_async(ivm_isolate_t *iso,
                                                      const ivm_context_options_t *opts,
                                                      ivm_done_fn done, void *user_data,
                                                      uint64_t *job_out);

/** Queues ivm_isolate_compile_script(); the result is an IVM_COMPLETION_SCRIPT.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.3 */
IVM_API ivm_error_t *ivm_isolate_compile_script_async(ivm_isolate_t *iso,
                                                      const char *code, size_t code_len,
                                                      const ivm_source_options_t *source,
                                                      const ivm_cache_options_t *cache,
                                                      ivm_done_fn done, void *user_data,
                                                      uint64_t *job_out);


/** Queues ivm_isolate_compile_module(); the result is an IVM_COMPLETION_MODULE.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.4 */
IVM_API ivm_error_t *ivm_isolate_compile_module_async(ivm_isolate_t *iso,
                                                      const char *code, size_t code_len,
                                                      const ivm_source_options_t *source,
                                                      const ivm_cache_options_t *cache,
                                                      ivm_done_fn done, void *user_data,
                                                      uint64_t *job_out);

/** Queues ivm_module_instantiate(); the result is an IVM_COMPLETION_VALUE
 * holding `undefined`. `resolve` runs on a pool thread; `resolve_data` and the
 * modules it returns must stay valid until `done` has been called. `module`
 * and `ctx` may be freed meanwhile; `resolve` then still receives `module`'s
 * address as the root's `referrer` (a key only: not to be used). For an
 * isolate in a worker, `resolve` runs on the calling thread before this
 * returns, and a failure it finds is reported through `done` (Since: 0.5).
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.4 */
IVM_API ivm_error_t *ivm_module_instantiate_async(ivm_module_t *module, ivm_context_t *ctx,
                                                  ivm_module_resolve_fn resolve,
                                                  void *resolve_data, ivm_done_fn done,
                                                  void *user_data, uint64_t *job_out);

/** Queues ivm_module_instantiate_v2(); as ivm_module_instantiate_async().
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.5 */
IVM_API ivm_error_t *ivm_module_instantiate_v2_async(ivm_module_t *module, ivm_context_t *ctx,
                                                     ivm_module_resolve_request_fn resolve,
                                                     void *resolve_data, ivm_done_fn done,
                                                     void *user_data, uint64_t *job_out);

/** Queues ivm_module_evaluate(); as ivm_context_eval_async().
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.4 */
IVM_API ivm_error_t *ivm_module_evaluate_async(ivm_module_t *module,
                                               const ivm_run_options_t *run,
                                               const ivm_result_options_t *result,
                                               ivm_done_fn done, void *user_data,
                                               uint64_t *job_out);

/** Queues ivm_module_namespace(); as ivm_context_eval_async(). Since: 0.5 */
IVM_API ivm_error_t *ivm_module_namespace_async(ivm_module_t *module,
                                                const ivm_result_options_t *result,
                                                ivm_done_fn done, void *user_data,
                                                uint64_t *job_out);

/**
 * Queues ivm_isolate_heap_statistics(); the result is an
 * IVM_COMPLETION_HEAP_STATISTICS: a complete `ivm_heap_statistics_t`
 * (struct_size = its sizeof), freed with ivm_heap_statistics_free().
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.3
 */
IVM_API ivm_error_t *ivm_isolate_heap_statistics_async(ivm_isolate_t *iso,
                                                       ivm_done_fn done, void *user_data,
                                                       uint64_t *job_out);

/** Frees heap statistics made by ivm_isolate_heap_statistics_async(); NULL is a
 * no-op. Threads: any. Blocks: never. Errors: none. Since: 0.1 */
IVM_API void ivm_heap_statistics_free(ivm_heap_statistics_t *stats);

/**
 * Cancels job `job` of `iso`: a queued job is dropped (its done gets
 * IVM_ERROR_CANCELLED at once, on this thread); a running one has its
 * JavaScript terminated (done gets IVM_ERROR_CANCELLED unless it had already
 * finished); a finished or unknown job is left alone. The isolate stays usable.
 * Threads: any. Blocks: never (not even on a busy isolate). Errors: none.
 * Since: 0.1
 */
IVM_API void ivm_isolate_cancel_job(ivm_isolate_t *iso, uint64_t job);

/*
 * A completion queue is a ready-made ivm_done_fn target for event loops. Jobs
 * submitted with `done` = ivm_completion_queue_done and `user_data` = the
 * queue push their outcome into it without calling into the host; its file
 * descriptor becomes readable when completions are waiting, and the loop's
 * thread pops them in batches. One wake-up serves many completions.
 */

/**
 * Creates a completion queue. `*fd_out` receives a file descriptor (owned by
 * the queue; poll it for reading, never read or close it) that is readable
 * while completions are waiting.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT, INTERNAL. Since: 0.3
 */
IVM_API ivm_error_t *ivm_completion_queue_new(int *fd_out, ivm_completion_queue_t **out);

/**
 * The ivm_done_fn of completion queues: pass it as `done` with the queue as
 * `user_data`. The queue stays alive until every job submitted to it has
 * completed. Calling it directly pushes `*completion` (taking ownership of
 * its result or error).
 * Threads: any (libivm calls it). Blocks: never. Errors: none. Since: 0.3
 */
IVM_API void ivm_completion_queue_done(void *queue, const ivm_completion_t *completion);

/**
 * Moves up to `capacity` waiting completions into `out` (oldest first) and
 * returns how many; the caller owns their results and errors. The file
 * descriptor stops being readable once the queue is empty.
 * Threads: any, one at a time per queue. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API size_t ivm_completion_queue_pop(ivm_completion_queue_t *queue,
                                        ivm_completion_t *out, size_t capacity);

/**
 * Frees the handle. Waiting completions, and those of jobs still running,
 * are freed by libivm; the file descriptor is closed once no job can use it.
 * NULL is a no-op. Threads: any. Blocks: never. Errors: none. Since: 0.1
 */
IVM_API void ivm_completion_queue_free(ivm_completion_queue_t *queue);

/* ------------------------------------------------------------------------- */
/* CPU profiler                                                              */
/* ------------------------------------------------------------------------- */

/*
 * V8's sampling CPU profiler, per isolate. Several profiles (by title) may
 * record at once. A profile is returned as JSON text in the shape of the
 * DevTools protocol's `Profiler.Profile` (`nodes` with `id`, `callFrame`
 * {functionName, scriptId, url, lineNumber, columnNumber} (0-based),
 * `hitCount` and `children`; `startTime`, `endTime`, `samples` and
 * `timeDeltas` in microseconds), which Chrome DevTools opens as a
 * `.cpuprofile` file. V8 samples the thread that runs the isolate's
 * JavaScript; when calls move to another thread (a pool thread, another
 * host thread), libivm moves the sampler with them and joins the parts into
 * one profile.
 */

/** Options of ivm_isolate_start_cpu_profiler(). Since: 0.6 */
struct ivm_cpu_profiler_options {
  size_t struct_size;              /**< sizeof(ivm_cpu_profiler_options_t) as compiled */
  /** Time between samples in nanoseconds (0: 1 ms); at least 50 us, rounded
   * to whole microseconds. */
  uint64_t sampling_interval_ns;
};

#ifndef IVM_CDEF
#define IVM_CPU_PROFILER_OPTIONS_INIT { sizeof(ivm_cpu_profiler_options_t), 0 }
#endif

/**
 * Starts recording a CPU profile named `title` in `iso`.
 *
 * @param title     UTF-8 name of `title_len` bytes (may be empty).
 * @param opts      NULL for defaults, or initialised with IVM_CPU_PROFILER_OPTIONS_INIT.
 * @return NULL on success, otherwise a new error owned by the caller.
 * Threads: any. Blocks: waits while the isolate runs another call.
 * Errors:  INVALID_ARGUMENT (a profile of that title is recording, a bad
 *          interval), DISPOSED, DEADLOCK; for an isolate in a worker process
 *          (recorded there since 0.7), CRASHED. Since: 0.6
 */
IVM_API ivm_error_t *ivm_isolate_start_cpu_profiler(ivm_isolate_t *iso, const char *title,
                                                    size_t title_len,
                                                    const ivm_cpu_profiler_options_t *opts);

/**
 * Stops the CPU profile named `title` and returns it as JSON text (see above).
 *
 * @param[out] out  on success, a new string value the caller frees (ivm_value_free).
 * Threads: any. Blocks: waits while the isolate runs another call.
 * Errors:  INVALID_ARGUMENT (no profile of that title is recording), DISPOSED,
 *          DEADLOCK; for an isolate in a worker process, CRASHED, and TRANSFER
 *          for a profile over 16 MiB. Since: 0.6
 */
IVM_API ivm_error_t *ivm_isolate_stop_cpu_profiler(ivm_isolate_t *iso, const char *title,
                                                   size_t title_len, ivm_value_t **out);

/** Queues ivm_isolate_start_cpu_profiler(); the result is an
 * IVM_COMPLETION_VALUE (undefined). Threads: any. Blocks: never.
 * Errors: INVALID_ARGUMENT (as the job's outcome, or at once for NULL
 * arguments); CRASHED for a worker's isolate. Since: 0.6 */
IVM_API ivm_error_t *ivm_isolate_start_cpu_profiler_async(
    ivm_isolate_t *iso, const char *title, size_t title_len,
    const ivm_cpu_profiler_options_t *opts, ivm_done_fn done, void *user_data,
    uint64_t *job_out);

/** Queues ivm_isolate_stop_cpu_profiler(); the result is an
 * IVM_COMPLETION_VALUE (the JSON string). Threads: any. Blocks: never.
 * Errors: as ivm_isolate_start_cpu_profiler_async(). Since: 0.6 */
IVM_API ivm_error_t *ivm_isolate_stop_cpu_profiler_async(ivm_isolate_t *iso, const char *title,
                                                         size_t title_len, ivm_done_fn done,
                                                         void *user_data, uint64_t *job_out);

/* ------------------------------------------------------------------------- */
/* Inspector                                                                 */
/* ------------------------------------------------------------------------- */

/*
 * V8's inspector, for isolates created with ivm_isolate_options_t.inspector:
 * sessions speak the Chrome DevTools protocol (JSON text, one message per
 * call) with the isolate, as a DevTools front end does with node or Chrome.
 * Messages are queued and run with the isolate locked, on the thread that
 * has it: while JavaScript is paused (a breakpoint, `debugger;`, a step), the
 * paused call's thread serves them; while JavaScript runs, an interrupt does;
 * when the isolate is idle, a job on its queue does. While paused, the
 * isolate's other calls wait, as they wait for any running call; the paused
 * call's timeout, ivm_isolate_terminate(), cancellation and disposal still
 * end it. Contexts appear as execution contexts; scripts keep their filename
 * as their URL (Debugger.setBreakpointByUrl). The inspector must never face
 * an untrusted peer: the protocol evaluates any JavaScript in the isolate.
 *
 * An isolate in a worker process has its inspector in the worker: messages
 * cross the worker's channel both ways (docs/wire-protocol.md, ops 120-129),
 * and dispatching never waits for the worker, even while its JavaScript is
 * paused. Messages from the worker are bounded (IVM_INSPECTOR_MAX_MESSAGE;
 * a larger response becomes an error response); a malformed one kills the
 * worker as any protocol violation does. A worker that dies while paused
 * fails the paused call with CRASHED, and its sessions' dispatches then fail
 * with DISPOSED.
 */

/** ivm_inspector_message_fn's `kind`. Values are ABI: append only. */
enum {
  /** The answer to a command: `call_id` is the command's `id`. */
  IVM_INSPECTOR_RESPONSE = 1,
  /** An event (Debugger.paused, Runtime.consoleAPICalled...); `call_id` is 0. */
  IVM_INSPECTOR_NOTIFICATION = 2
};

/**
 * Receives one protocol message of `message_len` bytes of UTF-8 JSON (not
 * NUL-terminated, valid during the call), of `kind` IVM_INSPECTOR_*.
 * Threads: the thread that runs the isolate at that moment (a caller's, a
 * pool thread); it holds the isolate, so the function must not block nor
 * call into that isolate (queue the message for another thread). For an
 * isolate in a worker process: libivm's I/O thread, which reads every
 * worker's channel, in the order the worker sent them; the same rules hold
 * (dispatching and freeing sessions are fine; a synchronous call into an
 * isolate of any worker fails there with INVALID_ARGUMENT, as it could only
 * wait for itself). Never called once
 * ivm_inspector_session_free() has returned. Since: 0.7
 */
typedef void (*ivm_inspector_message_fn)(void *user_data, uint32_t kind, int32_t call_id,
                                         const char *message, size_t message_len);

/** Options of ivm_inspector_session_new(). Since: 0.7 */
struct ivm_inspector_session_options {
  size_t struct_size;                  /**< sizeof(ivm_inspector_session_options_t) as compiled */
  ivm_inspector_message_fn on_message; /**< required: receives responses and notifications */
  void *user_data;                     /**< passed to on_message */
};

#ifndef IVM_CDEF
#define IVM_INSPECTOR_SESSION_OPTIONS_INIT { sizeof(ivm_inspector_session_options_t), NULL, NULL }
#endif

/** The largest protocol message ivm_inspector_session_dispatch() accepts: 4 MiB. */
#define IVM_INSPECTOR_MAX_MESSAGE 4194304

/**
 * Connects a new protocol session to the inspector of `iso`. Several
 * sessions may be connected at once. The connection itself is queued (as a
 * message is): messages dispatched after this call are served after it.
 *
 * @param opts      required, initialised with IVM_INSPECTOR_SESSION_OPTIONS_INIT,
 *                  with `on_message` set.
 * @param[out] out  on success, a new handle the caller frees (ivm_inspector_session_free).
 * @return NULL on success, otherwise a new error owned by the caller.
 * Threads: any. Blocks: never.
 * Errors:  INVALID_ARGUMENT (NULL arguments, no on_message, an isolate made
 *          without `inspector`), DISPOSED.
 *          Since: 0.7
 */
IVM_API ivm_error_t *ivm_inspector_session_new(ivm_isolate_t *iso,
                                               const ivm_inspector_session_options_t *opts,
                                               ivm_inspector_session_t **out);

/**
 * Queues one protocol message (UTF-8 JSON text of `len` bytes; invalid UTF-8
 * is replaced) for the session; its response and any notifications arrive
 * through on_message. A message V8 cannot parse, or a method it does not
 * know, gets a protocol error response as usual.
 *
 * @return NULL when queued, otherwise a new error owned by the caller.
 * Threads: any. Blocks: never.
 * Errors:  INVALID_ARGUMENT (NULL arguments, a message longer than
 *          IVM_INSPECTOR_MAX_MESSAGE), DISPOSED (the session was freed or
 *          disconnected, or its isolate is disposed). Since: 0.7
 */
IVM_API ivm_error_t *ivm_inspector_session_dispatch(ivm_inspector_session_t *session,
                                                    const char *message, size_t len);

/**
 * Disconnects the session (queued: if JavaScript is paused for this session
 * only, it resumes) and frees the handle. on_message is never called once
 * this returns (a call running on another thread is waited for; from inside
 * on_message itself, it is not called again). NULL is a no-op.
 * Threads: any. Blocks: while on_message runs on another thread. Errors: none.
 * Since: 0.7
 */
IVM_API void ivm_inspector_session_free(ivm_inspector_session_t *session);

/* ------------------------------------------------------------------------- */
/* References                                                                */
/* ------------------------------------------------------------------------- */

/*
 * A reference is a handle to a value that stays inside its isolate (objects,
 * functions, anything). Operations through it are calls into that isolate,
 * run in the context where the reference was made, with a timeout (run
 * options) and, when they return the value they reach, result options.
 * Values going in (keys, values, receivers, arguments) are host values:
 * primitives, structured copies, markers. Releasing the reference (or
 * disposing its isolate) makes later operations fail with IVM_ERROR_DISPOSED.
 */

/** A new reference to the global object of `ctx`.
 * Threads: any. Blocks: waits while the isolate runs another call (in a
 * worker: for the worker's answer).
 * Errors: DISPOSED, INVALID_ARGUMENT, DEADLOCK, CRASHED. Since: 0.2 */
IVM_API ivm_error_t *ivm_context_global(ivm_context_t *ctx, ivm_reference_t **out);

/** `typeof` the referenced value ("object", "function", ...), fixed when the
 * reference was made. Borrowed.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API void ivm_reference_typeof(const ivm_reference_t *ref, const char **out,
                                  size_t *out_len);

/** ivm_reference_get() flags. */
enum {
  /**
   * Follow the prototype chain (isolated-vm's `unsafeInherit`). Without it,
   * only own properties are read: an inherited property (possibly planted on
   * a prototype by the isolate's code) reads as undefined. Since: 0.3
   */
  IVM_GET_UNSAFE_INHERIT = 1
};

/**
 * `value[key]` (getters run); with `key` NULL, the referenced value itself
 * (e.g. with IVM_RESULT_COPY: a copy of it). `flags`: IVM_GET_*. The result
 * comes back as from ivm_context_eval() (`out`, `primitive_out`).
 * Threads: any; the JavaScript runs on the calling thread.
 * Blocks:  as ivm_context_eval().
 * Errors:  as ivm_context_eval(); a TypeError (JS_EXCEPTION) if the value is
 *          not an object. Since: 0.3
 */
IVM_API ivm_error_t *ivm_reference_get(ivm_reference_t *ref, const ivm_value_t *key,
                                       uint32_t flags, const ivm_run_options_t *run,
                                       const ivm_result_options_t *result,
                                       ivm_value_t **out, ivm_primitive_t *primitive_out);

/** `value[key] = v` (setters run); the result is a boolean: whether it was set.
 * Threads: any. Blocks: as ivm_context_eval(). Errors: as ivm_reference_get().
 * Since: 0.3 */
IVM_API ivm_error_t *ivm_reference_set(ivm_reference_t *ref, const ivm_value_t *key,
                                       const ivm_value_t *v, const ivm_run_options_t *run,
                                       ivm_value_t **out, ivm_primitive_t *primitive_out);

/** `delete value[key]`; the result is a boolean.
 * Threads: any. Blocks: as ivm_context_eval(). Errors: as ivm_reference_get().
 * Since: 0.3 */
IVM_API ivm_error_t *ivm_reference_delete(ivm_reference_t *ref, const ivm_value_t *key,
                                          const ivm_run_options_t *run,
                                          ivm_value_t **out, ivm_primitive_t *primitive_out);

/**
 * Calls the referenced function with `receiver` as `this` (NULL: undefined)
 * and `nargs` arguments (borrowed); the result comes back as from
 * ivm_context_eval().
 * Threads: any; the JavaScript runs on the calling thread.
 * Blocks:  as ivm_context_eval().
 * Errors:  as ivm_context_eval(); a TypeError (JS_EXCEPTION) if it is not a
 *          function. Since: 0.3
 */
IVM_API ivm_error_t *ivm_reference_apply(ivm_reference_t *ref, const ivm_value_t *receiver,
                                         ivm_value_t *const *args, size_t nargs,
                                         const ivm_run_options_t *run,
                                         const ivm_result_options_t *result,
                                         ivm_value_t **out, ivm_primitive_t *primitive_out);

/**
 * Queued twins of the operations above ("Async jobs"); their results are
 * IVM_COMPLETION_VALUE. They take ownership of the values passed in (key,
 * value, receiver, arguments), even when they fail.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.3
 */
IVM_API ivm_error_t *ivm_reference_get_async(ivm_reference_t *ref, ivm_value_t *key,
                                             uint32_t flags, const ivm_run_options_t *run,
                                             const ivm_result_options_t *result,
                                             ivm_done_fn done, void *user_data,
                                             uint64_t *job_out);
IVM_API ivm_error_t *ivm_reference_set_async(ivm_reference_t *ref, ivm_value_t *key,
                                             ivm_value_t *v, const ivm_run_options_t *run,
                                             ivm_done_fn done, void *user_data,
                                             uint64_t *job_out);
IVM_API ivm_error_t *ivm_reference_delete_async(ivm_reference_t *ref, ivm_value_t *key,
                                                const ivm_run_options_t *run,
                                                ivm_done_fn done, void *user_data,
                                                uint64_t *job_out);
IVM_API ivm_error_t *ivm_reference_apply_async(ivm_reference_t *ref, ivm_value_t *receiver,
                                               ivm_value_t **args, size_t nargs,
                                               const ivm_run_options_t *run,
                                               const ivm_result_options_t *result,
                                               ivm_done_fn done, void *user_data,
                                               uint64_t *job_out);

/** ivm_isolate_cancel_job() for a job queued through `ref`.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API void ivm_reference_cancel_job(ivm_reference_t *ref, uint64_t job);

/** Releases the reference (idempotent).
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL). Since: 0.2 */
IVM_API ivm_error_t *ivm_reference_release(ivm_reference_t *ref);

/** Frees the handle; the value is released once no handle, value or queued
 * job holds it. NULL is a no-op.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API void ivm_reference_free(ivm_reference_t *ref);

/** For IVM_VALUE_REFERENCE values: a new handle.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_value_reference(const ivm_value_t *value, ivm_reference_t **out);

/* ------------------------------------------------------------------------- */
/* Callbacks: host functions called from JavaScript                          */
/* ------------------------------------------------------------------------- */

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
 * A new callback. Inserted into an isolate (ivm_value_attach_callback(),
 * "Copies"), it becomes a JavaScript function calling `fn(user_data, ...)`.
 * `finalize` (may be NULL) runs once, on any thread, when the handle is freed
 * and no JavaScript function made from it remains; also when this call fails.
 * `flags`: 0.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_callback_new(ivm_host_fn fn, void *user_data,
                                      void (*finalize)(void *user_data), uint32_t flags,
                                      ivm_callback_t **out);

/** Frees the handle; NULL is a no-op.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API void ivm_callback_free(ivm_callback_t *cb);

/** ivm_call_op(): which operation a call of a host function is. */
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

/** Which operation a call is (IVM_CALL_*). During the call.
 * Threads: the host function's. Blocks: never. Errors: none. Since: 0.2 */
IVM_API uint32_t ivm_call_op(const ivm_call_t *call);

/** The number of arguments. During the call.
 * Threads: the host function's. Blocks: never. Errors: none. Since: 0.2 */
IVM_API size_t ivm_call_argc(const ivm_call_t *call);

/** The asynchronous job (the `job_out` of an *_async call) whose JavaScript
 * made this call, also inside calls nested in that job's host functions; 0
 * when JavaScript runs in a synchronous call or an internal job (settling a
 * deferred result), and for calls from a worker's JavaScript.
 * During the call.
 * Threads: the host function's. Blocks: never. Errors: none. Since: 0.5 */
IVM_API uint64_t ivm_call_job(const ivm_call_t *call);

/**
 * The call's arguments as primitives (`*argc_out` of them; kind 0 for an
 * argument that is not a primitive: read it with ivm_call_arg()), and in
 * `*result_out` a slot for a primitive result: setting its kind (undefined,
 * null, boolean or number) and returning NULL with `*out` unset makes that
 * the call's result. Valid during the call.
 * Threads: the host function's. Blocks: never. Errors: none. Since: 0.2
 */
IVM_API const ivm_primitive_t *ivm_call_view(ivm_call_t *call, size_t *argc_out,
                                             ivm_primitive_t **result_out);

/** Argument `index` as a host value (a primitive or a structured copy;
 * borrowed, valid during the call); NULL past the end.
 * Threads: the host function's. Blocks: never. Errors: none. Since: 0.2 */
IVM_API const ivm_value_t *ivm_call_arg(const ivm_call_t *call, size_t index);

/**
 * Makes the call's JavaScript result a promise, settled later (from any
 * thread) with ivm_deferred_resolve() or ivm_deferred_reject(). Once per
 * call. The promise settles inside the isolate: during a call waiting on it
 * (IVM_RESULT_PROMISE), or in a queued job.
 * Threads: the host function's. Blocks: never. Errors: INVALID_ARGUMENT.
 * Since: 0.2
 */
IVM_API ivm_error_t *ivm_call_defer(ivm_call_t *call, ivm_deferred_t **out);

/** Resolves the promise with `value` (owned; NULL: undefined). Once.
 * Threads: any. Blocks: never. Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_deferred_resolve(ivm_deferred_t *d, ivm_value_t *value);

/** Rejects the promise with an Error made from `error` (owned). Once.
 * Threads: any. Blocks: never. Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_deferred_reject(ivm_deferred_t *d, ivm_error_t *error);

/** Frees the handle; an unsettled promise is rejected.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API void ivm_deferred_free(ivm_deferred_t *d);

/* ------------------------------------------------------------------------- */
/* Copies: structured copies, their attachments, and external copies         */
/* ------------------------------------------------------------------------- */

/*
 * An IVM_VALUE_SERIALIZED value is a stream in the ivm copy format plus
 * attachments the stream names by index: buffers (`_buf(i)`, `_sab(i)`:
 * ArrayBuffer and SharedArrayBuffer contents) and objects (`_att(i)`:
 * ExternalCopies, References, callbacks). The host builds one with
 * ivm_value_new_serialized() and the ivm_value_attach_* functions, and reads
 * one with ivm_value_serialized() and the ivm_value_attachment_* functions.
 */

/**
 * For IVM_VALUE_SERIALIZED: the stream (borrowed, valid until the value is
 * freed); otherwise empty.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2
 */
IVM_API void ivm_value_serialized(const ivm_value_t *value, const char **out,
                                  size_t *out_len);

/** For IVM_VALUE_SERIALIZED: the number of attachments; otherwise 0.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API size_t ivm_value_attachment_count(const ivm_value_t *value);

/** ivm_value_attachment_kind(). */
enum {
  /** ArrayBuffer or SharedArrayBuffer bytes (ivm_value_buffer()). */
  IVM_ATTACHMENT_BUFFER = 1,
  /** An ExternalCopy (ivm_value_attachment_copy()). */
  IVM_ATTACHMENT_COPY = 2,
  /** A Reference (ivm_value_attachment_reference()). */
  IVM_ATTACHMENT_REFERENCE = 3,
  /** A host function or host Reference. */
  IVM_ATTACHMENT_CALLBACK = 4
};

/** The kind of attachment `index` (IVM_ATTACHMENT_*; 0 if none).
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API uint32_t ivm_value_attachment_kind(const ivm_value_t *value, size_t index);

/**
 * For IVM_VALUE_SERIALIZED: the bytes of buffer attachment `index` (the
 * contents of an ArrayBuffer or SharedArrayBuffer the stream names with
 * `_buf(index)` or `_sab(index)`). Borrowed, valid until the value is freed.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (not a buffer
 * attachment). Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_buffer(const ivm_value_t *value, size_t index,
                                      const void **data_out, size_t *len_out);

/** For an IVM_ATTACHMENT_REFERENCE: a new handle.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_value_attachment_reference(const ivm_value_t *value, size_t index,
                                                    ivm_reference_t **out);

/** For an IVM_ATTACHMENT_COPY: a new handle.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2 */
IVM_API ivm_error_t *ivm_value_attachment_copy(const ivm_value_t *value, size_t index,
                                               ivm_external_copy_t **out);

/**
 * A new IVM_VALUE_SERIALIZED value from `len` bytes of stream (copied), with
 * no attachments yet. The stream is checked when the value enters an isolate.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_new_serialized(const char *stream, size_t len,
                                              ivm_value_t **out);

/** The flags of the ivm_value_attach_* functions. */
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
  IVM_ATTACH_NOT_CALLABLE = 8,
  /** ivm_value_attach_reference with IVM_ATTACH_DEREF: release the
   * reference once its value has entered the isolate (isolated-vm's
   * `derefInto({release: true})`). Since: 0.5 */
  IVM_ATTACH_RELEASE = 16
};

/**
 * Appends a buffer attachment (ArrayBuffer contents) to a serialized value
 * and writes its index to `*index_out`. `data` is copied unless `flags` has
 * IVM_ATTACH_BORROW.
 * Threads: any, not concurrently with other uses of the value.
 * Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_buffer(ivm_value_t *value, const void *data,
                                             size_t len, uint32_t flags,
                                             size_t *index_out);

/**
 * Appends a reference attachment to a serialized value (named `_att(index)`
 * in the stream). It enters an isolate as a Reference object with
 * isolated-vm's JavaScript API (getSync, setSync, applySync, apply,
 * applyIgnored, applySyncPromise, copySync, deref, derefInto, release,
 * typeof), through which JavaScript there calls into the reference's
 * isolate. With IVM_ATTACH_DEREF it enters as the referenced value itself,
 * which only its own isolate accepts (TRANSFER otherwise).
 * Threads: any, not concurrently with other uses of the value.
 * Blocks: never. Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_reference(ivm_value_t *value, ivm_reference_t *ref,
                                                uint32_t flags, size_t *index_out);

/**
 * Appends a callback attachment to a serialized value (`_att(index)` in the
 * stream): it enters an isolate as a function calling the host function, or
 * with IVM_ATTACH_AS_REFERENCE as a Reference object (isolated-vm's
 * `new ivm.Reference(hostFunction)`) whose applySync, apply, applyIgnored,
 * applySyncPromise, copySync and copy call the host function with
 * ivm_call_op() saying which (`typeof` is "function", or "object" with
 * IVM_ATTACH_NOT_CALLABLE).
 * Threads: any, not concurrently with other uses of the value.
 * Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_callback(ivm_value_t *value, ivm_callback_t *cb,
                                               uint32_t flags, size_t *index_out);

/*
 * An ExternalCopy is a structured copy that belongs to no isolate and can be
 * inserted into any isolate any number of times. Its memory counts toward
 * ivm_external_copy_total_size() until it is released (and every value made
 * from it is freed).
 */

/** The flags of ivm_external_copy_copy_into() and ivm_value_attach_copy(). */
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
 * A new ExternalCopy of a host value: a serialized value (its buffers are
 * shared with the copy; borrowed ones are copied) or a primitive. `flags`:
 * 0 (reserved).
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_new(const ivm_value_t *value, uint32_t flags,
                                           ivm_external_copy_t **out);

/**
 * For IVM_VALUE_EXTERNAL_COPY values (from IVM_RESULT_EXTERNAL_COPY): a new
 * handle to the copy, which the caller frees.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (another kind). Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_external_copy(const ivm_value_t *value,
                                             ivm_external_copy_t **out);

/**
 * The copy's value for the host: a new value (IVM_VALUE_SERIALIZED, or a
 * primitive kind) the caller frees. Buffers are shared with the copy, not
 * duplicated.
 * Threads: any. Blocks: never. Errors: DISPOSED. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_read(ivm_external_copy_t *copy, ivm_value_t **out);

/**
 * A value that becomes `copy`'s JavaScript value when it enters an isolate
 * (an IVM_VALUE_SERIALIZED value naming it `_att(0)`). `flags`: IVM_COPY_INTO_*.
 * Threads: any. Blocks: never. Errors: DISPOSED, INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_copy_into(ivm_external_copy_t *copy, uint32_t flags,
                                                 ivm_value_t **out);

/**
 * Appends an ExternalCopy marker to a serialized value (the stream names it
 * with `_att(index)`): when the value enters an isolate, the marker becomes
 * the copy's JavaScript value. `flags`: IVM_COPY_INTO_*, IVM_COPY_AS_OBJECT.
 * Threads: any, not concurrently with other uses of the value.
 * Blocks: never. Errors: DISPOSED (released copy), INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_copy(ivm_value_t *value, ivm_external_copy_t *copy,
                                           uint32_t flags, size_t *index_out);

/**
 * Appends to `value` the attachment of `marker`, a value made by
 * ivm_external_copy_copy_into() (the stream of `value` then names it with
 * `_att(index)`). `marker` is borrowed and stays usable.
 * Threads: any, not concurrently with other uses of the value.
 * Blocks: never. Errors: INVALID_ARGUMENT. Since: 0.2
 */
IVM_API ivm_error_t *ivm_value_attach_marker(ivm_value_t *value, const ivm_value_t *marker,
                                             size_t *index_out);

/**
 * `*size_out`: the bytes the copy holds (stream and buffers);
 * `*byte_length_out`: the bytes of its buffers alone. Either may be NULL.
 * Threads: any. Blocks: never. Errors: DISPOSED. Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_size(ivm_external_copy_t *copy, uint64_t *size_out,
                                            uint64_t *byte_length_out);

/**
 * Releases the copy: later uses fail with DISPOSED; its memory is freed once
 * no marker made from it remains. Idempotent.
 * Threads: any. Blocks: never. Errors: INVALID_ARGUMENT (NULL). Since: 0.2
 */
IVM_API ivm_error_t *ivm_external_copy_release(ivm_external_copy_t *copy);

/** Frees the handle (releasing it); NULL is a no-op.
 * Threads: any. Blocks: as ivm_value_free(), when the copy goes with it.
 * Errors: none. Since: 0.2 */
IVM_API void ivm_external_copy_free(ivm_external_copy_t *copy);

/** Bytes held by all live external copies in the process.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2 */
IVM_API uint64_t ivm_external_copy_total_size(void);

/**
 * Sets the largest structured copy (stream plus buffers) libivm makes of a
 * JavaScript value, in bytes; larger copies fail with IVM_ERROR_TRANSFER.
 * 0 restores the default (2 GiB). Returns the previous limit.
 * Threads: any. Blocks: never. Errors: none. Since: 0.2
 */
IVM_API uint64_t ivm_set_copy_limit(uint64_t bytes);

/* ------------------------------------------------------------------------- */
/* Signals                                                                   */
/* ------------------------------------------------------------------------- */

/**
 * Makes the signal `signum` (typically SIGINT) stop JavaScript: when it
 * arrives, the synchronous calls running on the thread that called this
 * function are terminated (they fail with IVM_ERROR_TERMINATED; a call that
 * began after the signal came is not, since 0.12), and then the
 * handler that was installed before is invoked, so the host still sees the
 * signal (Python raises KeyboardInterrupt). A synchronous call to a
 * worker-hosted isolate is cancelled in its worker instead (IVM_ERROR_CANCELLED;
 * its JavaScript stops there, the isolate stays usable); worker processes
 * ignore the signal themselves, so a terminal's Ctrl-C, which reaches the
 * whole process group, leaves them running. If a later sigaction() replaces
 * libivm's handler, call this again. Calling it again for the same signal from
 * the same thread is a no-op.
 * The error of such a stopped call (returned by the outermost synchronous call
 * on that thread) is one shared, static object that ivm_error_free ignores
 * (since 0.4): a host that raises its own exception as the call returns, before
 * it could free the error (Python's KeyboardInterrupt), leaks nothing.
 * Threads: any (usually the main thread). Blocks: never.
 * Errors: INVALID_ARGUMENT, INTERNAL. Since: 0.1
 */
IVM_API ivm_error_t *ivm_interrupt_on_signal(int signum);

/* ------------------------------------------------------------------------- */
/* Diagnostics                                                               */
/* ------------------------------------------------------------------------- */

/**
 * The number of live libivm objects (handles, values and errors) in the
 * process. For leak tests.
 *
 * An isolate that the calling thread kept entered and that another thread
 * has since disposed of (see ivm_isolate_dispose) is counted until the
 * keeping thread's next call of libivm finishes its disposal; this function
 * is such a call, so a leak check on that thread sees it gone.
 * Threads: any. Blocks: never (it may finish one such disposal, which frees
 * an emptied heap). Errors: none. Since: 0.1
 */
IVM_API uint64_t ivm_debug_live_objects(void);

/**
 * Test hooks: what ivm_debug_process_group_hook() asks a test worker to do.
 * Only `ivm-worker-test` (a build of the worker for libivm's own tests,
 * chosen with IVM_WORKER_PATH) performs them; the default worker has none
 * and answers INVALID_ARGUMENT. A test worker also hangs before starting
 * when IVM_WORKER_TEST_HANG is set in its environment.
 */
enum {
  IVM_DEBUG_HOOK_OPEN_FILE = 1,  /**< open("/etc/passwd"): the sandbox kills it */
  IVM_DEBUG_HOOK_SOCKET = 2,     /**< socket(): the sandbox kills it */
  IVM_DEBUG_HOOK_SEND_BYTES = 3, /**< write `data` raw to the channel; no answer */
  IVM_DEBUG_HOOK_EXIT = 4,       /**< write `data` to stderr, then exit(1) */
  IVM_DEBUG_HOOK_ABORT = 5,      /**< write `data` to stderr, then abort() */
  IVM_DEBUG_HOOK_EVAL = 6,       /**< evaluate `data` in a new isolate; the
                                      error is the call's error */
  IVM_DEBUG_HOOK_FORGE_VALUE = 7, /**< the worker's next value result is a
                                      copy whose stream is `data` (since 0.5) */
  IVM_DEBUG_HOOK_REPEAT_CALLBACK = 8 /**< the worker sends its next host callback
                                      call `data` (a little-endian u32) times
                                      (since 0.6) */
};

/**
 * Makes a test worker do `action` (IVM_DEBUG_HOOK_*) with `data`. For libivm's
 * tests only.
 * Threads: any.
 * Blocks:  until the worker answers or dies (SEND_BYTES: until sent).
 * Errors:  CRASHED, DISPOSED, INVALID_ARGUMENT, and what the action fails with.
 * Since: 0.3
 */
IVM_API ivm_error_t *ivm_debug_process_group_hook(ivm_process_group_t *group,
                                                  uint32_t action, const char *data,
                                                  size_t data_len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* IVM_H */
