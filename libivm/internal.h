// internal.h — declarations shared by libivm's sources. Nothing here is ABI.
#ifndef IVM_INTERNAL_H
#define IVM_INTERNAL_H

#include "ivm.h"
#include "v8compat.h"
#include "jobs.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

// ---------------------------------------------------------------------------
// Leak accounting (ivm_debug_live_objects)

namespace ivm {
extern std::atomic<uint64_t> g_live_objects;
struct LiveCounted {
  LiveCounted() noexcept { g_live_objects.fetch_add(1, std::memory_order_relaxed); }
  LiveCounted(const LiveCounted&) noexcept : LiveCounted() {}
  LiveCounted& operator=(const LiveCounted&) noexcept { return *this; }
  ~LiveCounted() { g_live_objects.fetch_sub(1, std::memory_order_relaxed); }
};
}  // namespace ivm

// ---------------------------------------------------------------------------
// ABI structs (opaque to callers)

struct ivm_error : ivm::LiveCounted {
  ivm_error_kind_t kind = IVM_ERROR_INTERNAL;
  std::string message;
  std::string name;
  std::string stack;
  bool thrown_primitive = false;
  uint64_t host_token = 0;   // set by the host (ivm_error_new_host)
  bool host_abort = false;   // IVM_HOST_ERROR_ABORT
};

namespace ivm {
struct Serialized;
class CopyData;
struct ReferenceData;
}  // namespace ivm

struct ivm_value : ivm::LiveCounted {
  ivm_value_kind_t kind = IVM_VALUE_UNDEFINED;
  bool boolean = false;
  bool negative = false;
  double number = 0;
  std::string str;
  std::vector<uint64_t> words;
  std::shared_ptr<ivm::Serialized> serialized;   // IVM_VALUE_SERIALIZED
  std::shared_ptr<ivm::CopyData> copy;           // IVM_VALUE_EXTERNAL_COPY
  std::shared_ptr<ivm::ReferenceData> reference; // IVM_VALUE_REFERENCE
};

namespace ivm {

// ---------------------------------------------------------------------------
// errors.cc

ivm_error_t* MakeError(ivm_error_kind_t kind, std::string message);
inline ivm_error_t* InvalidArgument(std::string message) {
  return MakeError(IVM_ERROR_INVALID_ARGUMENT, std::move(message));
}
// The error for a JS exception caught by `try_catch`. Runs no JavaScript.
ivm_error_t* ErrorFromException(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                const v8::TryCatch& try_catch);
// The error for a thrown (or rejected) value. Runs no JavaScript.
ivm_error_t* ErrorFromValue(v8::Isolate* isolate, v8::Local<v8::Context> context,
                            v8::Local<v8::Value> exception, v8::Local<v8::Message> message);
// Appends the frames of the JavaScript running now on this thread in
// `isolate` ("\n    at fn (file:line:column)" each, innermost first, at most
// 16). Runs no JavaScript.
void AppendCurrentFrames(v8::Isolate* isolate, std::string& out);

// A new Error object for `name`: made by the constructor of that name for
// Error, TypeError, RangeError, SyntaxError and ReferenceError; otherwise an
// Error whose own (non-enumerable) `name` is `name`. Runs no JavaScript.
v8::Local<v8::Object> NewError(v8::Isolate* isolate, v8::Local<v8::Context> context,
                               const std::string& name, v8::Local<v8::String> message);

extern const char kTimeoutMessage[];
extern const char kDisposedMessage[];

// Runs `fn` (returning ivm_error_t*) and turns any C++ exception into an
// INTERNAL error: nothing unwinds through the C ABI.
template <class F>
ivm_error_t* Guard(F&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return MakeError(IVM_ERROR_INTERNAL, "out of memory in libivm");
  } catch (const std::exception& e) {
    return MakeError(IVM_ERROR_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return MakeError(IVM_ERROR_INTERNAL, "internal error");
  }
}

// The body of an ivm_<handle>_free: NULL is a no-op, and nothing a
// destructor throws (a lease queuing its release) unwinds through the C ABI.
template <class T>
void FreeHandle(T* handle) noexcept {
  if (handle == nullptr) return;
  try {
    delete handle;
  } catch (...) {
  }
}

// A code point (lone surrogates included: WTF-8) appended to `out` as UTF-8.
inline void AppendCodePoint(std::string& out, uint32_t u) {
  if (u < 0x80) {
    out.push_back(static_cast<char>(u));
  } else if (u < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (u >> 6)));
    out.push_back(static_cast<char>(0x80 | (u & 0x3F)));
  } else if (u < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (u >> 12)));
    out.push_back(static_cast<char>(0x80 | ((u >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (u & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (u >> 18)));
    out.push_back(static_cast<char>(0x80 | ((u >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((u >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (u & 0x3F)));
  }
}

// ---------------------------------------------------------------------------
// platform.cc

v8::Platform* EnsurePlatform();

// module.cc: the isolate's hooks for import() (isolate locked, at creation).
void InstallModuleHooks(v8::Isolate* isolate);

// buffers.cc: malloc'd memory for ArrayBuffers; a few large freed blocks
// are kept for reuse.
void FreeMemory(void* data, size_t length);
void* AllocateMemory(size_t length, bool zeroed);

// ---------------------------------------------------------------------------
// value.cc

// Whether a new heap allocation of about `bytes` fits in the isolate's heap
// limit, with room to spare: V8 aborts the process on some allocations it
// cannot satisfy, so values entering an isolate are checked first. Cheap
// below kRoomCheckBytes (not checked).
constexpr size_t kRoomCheckBytes = 1u << 20;
bool HeapHasRoom(v8::Isolate* isolate, size_t bytes);
// The error for a value of `bytes` that HeapHasRoom refused (TRANSFER).
ivm_error_t* NoRoomError(size_t bytes);

// A V8 string from WTF-8 bytes; empty (with *error set) if it cannot be made,
// if it is too long for V8, or if it does not fit in the isolate's heap limit.
// `internalize`: make it an internalized string (cheaper as a property key).
v8::MaybeLocal<v8::String> NewString(v8::Isolate* isolate, const char* data, size_t len,
                                     ivm_error_t** error, bool internalize = false);
// A host value from a V8 value; only primitives are accepted.
ivm_error_t* ValueFromV8(v8::Isolate* isolate, v8::Local<v8::Context> context,
                         v8::Local<v8::Value> value, ivm_value_t** out);
// The same into `v`, a new value (kind undefined) that the caller owns, with
// no allocation for a number, boolean, undefined or null.
ivm_error_t* FillValueFromV8(v8::Isolate* isolate, v8::Local<v8::Value> value, ivm_value_t* v);
// Describes a primitive host value in `out` (kind 0 if it is none, or a
// string when `strings` is false). Returns whether it did.
bool FillPrimitive(const ivm_value_t* value, ivm_primitive_t* out, bool strings);
// For a synchronous call given a primitive_out (may be NULL): moves a
// primitive result there (freeing *out, which becomes NULL). A NULL *out was
// delivered there already (PrimitiveOutScope) and is left alone.
void DeliverPrimitive(ivm_primitive_t* primitive_out, ivm_value_t** out);
// The primitive_out of a synchronous ABI call on an inline isolate (or of a
// synchronous call through a Reference object, wrapper.cc), from just before
// it runs until the call it makes claims it (IsolateHolder::Begin: the next call to
// begin on this thread, which is that call's). Its CompleteCall then writes an
// undefined, null, boolean or number result there without making an ivm_value_t
// (`*out` stays NULL). On exit the scope puts back what was pending before it (none,
// unless host code runs it inside another such call).
class PrimitiveOutScope {
 public:
  explicit PrimitiveOutScope(ivm_primitive_t* out);
  ~PrimitiveOutScope();
  PrimitiveOutScope(const PrimitiveOutScope&) = delete;
  PrimitiveOutScope& operator=(const PrimitiveOutScope&) = delete;
  static ivm_primitive_t* Claim();   // NULL: none pending

 private:
  ivm_primitive_t** slot_;   // this thread's pending slot
  ivm_primitive_t* saved_;
};
// Writes `value` into `out` if it is undefined, null, a boolean or a number.
bool FillPrimitiveFromV8(v8::Local<v8::Value> value, ivm_primitive_t* out);
// A number as a V8 value: an integer that fits 32 bits (not -0) through
// v8::Integer::New, a small integer without entering the VM; others through
// v8::Number::New. The same value either way.
inline v8::Local<v8::Value> NumberToV8(v8::Isolate* isolate, double d) {
  if (d >= -2147483648.0 && d <= 2147483647.0 && d == static_cast<double>(static_cast<int32_t>(d)) &&
      !(d == 0 && std::signbit(d))) {
    return v8::Integer::New(isolate, static_cast<int32_t>(d));
  }
  return v8::Number::New(isolate, d);
}
// An undefined, null, boolean or number primitive (FillPrimitiveFromV8's) as a
// V8 value; any other kind gives undefined.
inline v8::Local<v8::Value> PrimitiveToV8(v8::Isolate* isolate, const ivm_primitive_t& p) {
  switch (p.kind) {
    case IVM_VALUE_NUMBER: return NumberToV8(isolate, p.number);
    case IVM_VALUE_BOOLEAN: return v8::Boolean::New(isolate, p.boolean != 0);
    case IVM_VALUE_NULL: return v8::Null(isolate);
    default: return v8::Undefined(isolate);
  }
}
// A short type description ("Object", "Array", "Function", "Symbol", ...),
// computed without running JavaScript.
std::string DescribeType(v8::Isolate* isolate, v8::Local<v8::Value> value);

// ---------------------------------------------------------------------------
// isolate.cc

// A lock for a few instructions' bookkeeping that is almost never contended (an isolate's
// list of calls on its stack, taken twice per call): one atomic exchange takes it, one
// store gives it back, where a pthread mutex costs a call and two locked instructions. A
// waiter yields its core between tries; nothing may block while holding it.
class SpinMutex {
 public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) std::this_thread::yield();
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// Adds to a counter that one thread at a time writes, under a lock that orders the writers
// (an isolate's time counters): no locked instruction; readers still see whole values.
inline void AddRelaxed(std::atomic<uint64_t>& counter, uint64_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

class IsolateHolder;
class CatastrophicReport;
class CpuProfiles;   // profiler.h
class Inspector;     // inspector.h

// Something that holds V8 handles of an isolate (a context, a script). Its
// handles must be reset while the isolate is locked and before it is disposed.
class Resource : public LiveCounted {
 public:
  virtual ~Resource() = default;
  // Called with the isolate locked and entered, at most once.
  virtual void ResetLocked() = 0;
  bool released() const { return released_.load(std::memory_order_acquire); }

 protected:
  friend class IsolateHolder;
  std::atomic<bool> released_{false};
  bool counted_ = true;   // set by Register
};

// The state of one call running in an isolate (stack allocated). Flags are
// written under IsolateHolder's state mutex.
struct CallState {
  bool timed_out = false;
  bool terminated = false;   // by ivm_isolate_terminate or a disposal
  bool cancelled = false;    // its asynchronous job was cancelled
  bool from_host = false;    // a nested call made by host code (owner thread)
  bool timeout_stopped = false;   // its timeout's termination was requested
  std::string stopped_at;    // the frames JavaScript was in when its timeout stopped it
  uint64_t id = 0;
  uint64_t timer_id = 0;
  uint64_t job_id = 0;       // the asynchronous job it runs for, or 0
  int64_t deadline_ns = 0;   // MonotonicNs when it times out, 0: never
  ivm_primitive_t* primitive_out = nullptr;   // PrimitiveOutScope's, claimed by Begin
  // When the call's result was final, if nothing ran after the clock read that
  // found it (CompleteCall): the end of its wall time, saving End a clock read.
  // 0: End reads the clock.
  mutable int64_t end_ns = 0;
};

ivm_error_t* ReadHeapStatistics(IsolateHolder& holder, ivm_heap_statistics_t* full);

// A job's call waiting for a promise without a thread (JobQueue parking,
// promise_wait.cc). Registered with its isolate: disposal drops its handles.
struct ParkedPromise final : public Resource {
  void ResetLocked() override {
    promise.Reset();
    context.Reset();
  }
  v8::Global<v8::Promise> promise;
  v8::Global<v8::Context> context;
  uint32_t flags = 0;          // the call's IVM_RESULT_* flags
  int64_t deadline_ns = 0;     // the call's deadline (MonotonicNs), 0: none
  std::atomic<bool> timed_out{false};
  std::atomic<bool> cancelled{false};
};

// ---------------------------------------------------------------------------
// isolate_entry.cc: an isolate kept entered between a thread's calls.

// A snapshot an isolate starts from: V8 reads `data` (pointing into `bytes`) whenever a
// context is made, and keeps a pointer to it for the isolate's life.
struct SnapshotBlob {
  std::string bytes;
  v8::StartupData data{nullptr, 0};
};

// One thread's entry into one isolate, kept between its calls (ThreadLockScope).
// Shared by the thread (ThreadLocks) and the isolate (IsolateHolder::kept_entry).
struct KeptEntry {
  enum State : int {
    kKept,         // entered by its thread
    kHandedOver,   // the isolate is disposed: its thread leaves and disposes of V8's isolate
    kAbandoned,    // its thread ended without leaving: the isolate's disposal leaves it
    kDone,         // left
  };
  KeptEntry(v8::Isolate* entered, std::weak_ptr<IsolateHolder> of, uint64_t id)
      : isolate(entered), holder(std::move(of)), holder_id(id) {}
  v8::Isolate* const isolate;
  const std::weak_ptr<IsolateHolder> holder;
  // The holder's unique_id: a parked lock is matched by it, never by the isolate's address,
  // which V8 reuses for a later isolate while a stale lock of the freed one is still listed.
  const uint64_t holder_id;
  std::atomic<int> state{kKept};
  std::shared_ptr<SnapshotBlob> snapshot;   // the disposed isolate's snapshot blob, if any
};

bool KeepEntriesEnabled();
// With the isolate locked by this thread, for the first time in this call: enters
// it for good if the rules allow (isolate_entry.cc), else NULL.
std::shared_ptr<KeptEntry> KeepEntry(IsolateHolder& holder);
// With the isolate locked by this thread (its keeper): leaves the entry, unless
// the thread is inside another isolate's call (false: still kept).
bool LeaveEntry(IsolateHolder& holder, std::shared_ptr<KeptEntry>& kept);
// Disposal (exec_mutex_ held, isolate unlocked), of an isolate `kept` entered:
// true if its keeper now disposes of V8's isolate (or nobody can).
// `snapshot`: the isolate's, shared with the keeper when it hands over.
bool HandOverEntry(std::shared_ptr<KeptEntry> kept, std::shared_ptr<SnapshotBlob> snapshot);
// The keeper of a handed-over entry: leaves it and disposes of V8's isolate.
// False (nothing done) while the thread is inside another isolate's call,
// unless `thread_ends`. Resets `kept` when done.
bool FinishEntry(std::shared_ptr<KeptEntry>& kept, bool thread_ends);
// This thread's kept entry, if its isolate was disposed meanwhile (thread_lock.cc).
// Called where a thread starts a call of any isolate, before locking it, and
// by ivm_debug_live_objects.
void FinishHandedOverEntry();
// With `holder`'s isolate locked by this thread: leaves this thread's kept entry
// if it is into that isolate and the thread is in no other call (thread_lock.cc).
bool LeaveOwnEntry(IsolateHolder& holder);
// The keeper of a handed-over entry, in no call: leaves it through its parked
// lock on the isolate, if it has one (thread_lock.cc; false: none).
bool LeaveParkedEntry(const KeptEntry& kept);
// Whether this thread keeps `isolate` entered (thread_lock.cc).
bool KeptEntered(v8::Isolate* isolate);
// The keeper's thread ends without having left the entry. Resets `kept`.
void AbandonEntry(std::shared_ptr<KeptEntry>& kept);
// The platform forgets an isolate's foreground tasks.
void ForgetPlatformTasks(v8::Isolate* isolate);
// V8's disposal of an isolate no thread is in (the platform forgets it first).
void DisposeV8Isolate(v8::Isolate* isolate);

// Owns one v8::Isolate. Shared by every handle that needs the isolate.
class IsolateHolder : public std::enable_shared_from_this<IsolateHolder> {
 public:
  // `report`: on_catastrophic_error, or NULL (catastrophic.cc).
  // `snapshot`: empty, or ivm_isolate_options_t.snapshot (checked here).
  // `inspector`: with V8's inspector (inspector.h).
  static ivm_error_t* Create(uint64_t memory_limit, std::shared_ptr<IsolateHolder>* out,
                             std::shared_ptr<CatastrophicReport> report = nullptr,
                             std::string_view snapshot = {}, bool inspector = false);
  ~IsolateHolder();

  v8::Isolate* isolate() const { return isolate_; }
  // Set at creation (before any JavaScript), read by V8's fatal handlers.
  std::shared_ptr<CatastrophicReport> catastrophic;
  bool disposed() const { return state_.load(std::memory_order_acquire) != kAlive; }
  uint64_t memory_limit() const { return memory_limit_; }

  // Runs `body(isolate)` with the isolate locked and entered and a HandleScope
  // open, under a timeout (0: none). Serialised with every other call.
  // `body` returns an error or NULL; the failures of the call itself (timeout,
  // termination, disposal, memory limit) are classified by Fail().
  template <class F>
  ivm_error_t* Run(uint64_t timeout_ns, F&& body);

  // The error for a call whose JavaScript did not complete normally.
  ivm_error_t* Fail(v8::Local<v8::Context> context, const v8::TryCatch& try_catch,
                    const CallState& call);
  // Runs pending foreground tasks and microtasks (the end of a call's JS).
  void Settle(const CallState& call);
  // Runs the isolate's pending foreground tasks until `call` is stopped.
  void PumpTasks(const CallState& call);
  // Marks the isolate out of memory if memory outside the heap that bypassed
  // the allocator (WebAssembly memories), or large objects in the heap, put it
  // over its limit. Returns the call clock it read (CallClockNs; 0: none).
  int64_t CheckExternalMemory();
  // Whether `call` (or a call around it) has been told to stop.
  bool Stopped(const CallState& call);

  ivm_error_t* Dispose();
  // Runs `fn(isolate)` with the isolate locked and entered but outside any
  // call (no timing, no timeout): for bookkeeping such as heap statistics.
  template <class F>
  ivm_error_t* Locked(F&& fn);
  // A context for work that needs one but belongs to no user context
  // (compiling scripts). Isolate locked.
  v8::Local<v8::Context> CompileContextLocked();
  // Stops the running calls. `signal` (signals.cc's number of a signal, else 0): only a
  // call that began before that signal came.
  void Terminate(uint64_t signal = 0);
  // `counted`: whether it counts in ReferenceCount (a handle's record does;
  // a function that lives and dies with its context does not).
  void Register(const std::shared_ptr<Resource>& resource, bool counted = true);
  // Releases `resource` without touching V8 now (from a GC callback); it is
  // dropped at the start or end of the next call.
  void ReleaseLater(Resource* resource);
  // The innermost call running on the owner thread (nullptr: none).
  const CallState* CurrentCall() const { return active_.empty() ? nullptr : active_.back(); }
  // A host function asked to stop all JavaScript (KeyboardInterrupt...):
  // terminates every call; the outermost one's error carries `token`.
  void AbortFromHost(uint64_t token);
  // Releases `resource` now if the isolate can be locked without waiting,
  // otherwise at the start or end of the next call.
  void Release(const std::shared_ptr<Resource>& resource);

  void Times(uint64_t* cpu_ns, uint64_t* wall_ns) const;
  // Host code (a host function, a host reference's operation) runs inside a
  // call, on the owner thread, between EnterHost and LeaveHost (HostScope):
  // its time is not counted as JavaScript's CPU time, and a disposal from
  // another thread does not wait for it (termination cannot stop it, and it
  // may wait for the disposing thread: an event loop).
  bool EnterHost();
  void LeaveHost(bool was_host);
  uint64_t ReferenceCount() const { return ref_count_.load(std::memory_order_relaxed); }
  void AddRef() { ref_count_.fetch_add(1, std::memory_order_relaxed); }
  void DropRef() { ref_count_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t NextId() { return next_id_.fetch_add(1, std::memory_order_relaxed); }
  // Unique for the life of the process (never reused, unlike addresses).
  uint64_t unique_id() const { return unique_id_; }
  // The thread inside the isolate's outermost call (default id: none).
  std::thread::id owner() const { return owner_.load(); }
  std::recursive_timed_mutex& exec_mutex() { return exec_mutex_; }
  // Pool threads that keep a parked lock on this isolate (GiveBackThreadLock).
  std::atomic<int>& pool_parked() { return pool_parked_; }
  // The entry a thread keeps in this isolate (isolate_entry.cc), or NULL. exec_mutex_ held.
  std::shared_ptr<KeptEntry>& kept_entry() { return kept_entry_; }
  // signals.cc's listing of this isolate (interrupt::Enter, Leave, Forget).
  int& interrupt_slot() { return interrupt_slot_; }
  std::atomic<bool>& interrupt_running() { return interrupt_running_; }
  // The signals received when its outermost call on that thread began (signals.cc).
  std::atomic<uint64_t>& interrupt_since() { return interrupt_since_; }
  // The isolate's handle (ivm_isolate_t) is freed: nobody will dispose it, so
  // its teardown may run on any thread, when the last context, script or
  // reference goes. Threads then stop parking their locks on it (a parked
  // lock whose isolate is torn down on another thread leaks its V8 state).
  // Another isolate kept alive by a Reference object in this one (about an
  // idle isolate's size, kPinnedIsolateBytes): reported to V8 as external
  // memory, so that this isolate's garbage collector runs as such objects add
  // up and frees the unreachable ones (an isolate with a small heap might
  // otherwise keep thousands of dropped isolates). Not part of the memory
  // limit. Isolate locked; negative when the object goes.
  void ReportPinned(int64_t bytes);
  bool orphaned() const { return orphaned_.load(std::memory_order_acquire); }
  void Orphan() { orphaned_.store(true, std::memory_order_release); }
  size_t array_buffer_bytes() const;
  // ArrayBuffer memory within the isolate's budget: a new store holding a
  // copy of `data`, or an existing store adopted without copying. Null when
  // the budget does not allow it.
  std::shared_ptr<v8::BackingStore> NewBuffer(const void* data, size_t length);
  // A moved store (another isolate's, detached there: MoveOutBuffer) as an
  // ArrayBuffer of this isolate, without copying. Its bytes are charged to
  // this isolate's budget (collecting garbage once when the budget is short)
  // but kept out of V8's external-memory count, whose growth would otherwise
  // start a full collection every second 64 MiB move: the budget, not that
  // heuristic, decides when such buffers must be collected. Empty when the
  // budget does not allow it. Isolate locked.
  v8::MaybeLocal<v8::ArrayBuffer> AdoptBuffer(std::shared_ptr<v8::BackingStore> store);
  // A store leaving this isolate for good (an ArrayBuffer detached by a
  // transfer): its bytes leave this isolate's budget now, and its eventual
  // free (wherever it ends) is not charged here again. Any thread.
  void MoveOutBuffer(const std::shared_ptr<v8::BackingStore>& store);
  // The memory of another isolate's SharedArrayBuffer, shared, and charged to
  // this isolate's budget while this isolate uses it. Null: over budget.
  std::shared_ptr<v8::BackingStore> ShareBuffer(std::shared_ptr<v8::BackingStore> store);

  // Watchdog entry point: the call `call_id` ran out of time. The JavaScript
  // is stopped on its own thread (StopTimedOut), which first reads where it
  // is; if it reaches no interrupt check within kTimeoutFallbackNs (it is in
  // host code, or waits), it is stopped from here.
  void OnTimeout(uint64_t call_id);
  static void StopTimedOut(v8::Isolate* isolate, void* data);
  void StopTimedOutFallback(uint64_t call_id);

  // The isolate's asynchronous jobs.
  JobQueue& jobs() { return jobs_; }
  // Its CPU profiles (made on first use). Isolate locked.
  CpuProfiles& cpu_profiles();
  // Its inspector, or nullptr (made at creation; lives as long as the holder,
  // its V8 side ends with the isolate).
  Inspector* inspector() const { return inspector_.get(); }
  // Stops the calls of running job `job_id` (they fail with CANCELLED).
  void CancelRunning(uint64_t job_id);
  void ClearCancelRunning() { cancel_running_.store(0); }
  // Calls on the owner thread's stack (owner thread only).
  int depth() const { return depth_; }
  // The host's abort token of the outermost call, taken once (owner thread).
  uint64_t TakeAbortToken() {
    uint64_t t = abort_token_;
    abort_token_ = 0;
    return t;
  }

 private:
  enum State { kAlive = 0, kDisposing = 1, kDisposed = 2 };
  class Allocator;
  // Makes allocator_ (buffers.cc), for V8's CreateParams.
  std::shared_ptr<v8::ArrayBuffer::Allocator> NewAllocator(size_t limit);
  IsolateHolder() : jobs_(*this) {}
  // The deleter of a buffer that another isolate's store backs (AdoptBuffer,
  // ShareBuffer): gives its bytes back to this isolate's budget.
  static void UnreserveOwner(void* data, size_t length, void* owner);
  // Gives V8's external-memory count back the adopted bytes it took off when
  // it freed their stores (AdoptBuffer). Isolate locked.
  void RestoreHiddenFreed();
  static size_t NearHeapLimit(void* data, size_t current, size_t initial);
  // The heap's used size past its limit (which V8 itself lets large objects
  // pass): checked after each GC and at the end of long calls.
  static bool OverHeapLimit(v8::Isolate* isolate);
  static void AfterGC(v8::Isolate* isolate, v8::GCType type, v8::GCCallbackFlags flags,
                      void* data);

  // `job`: pool::CurrentJob() (the asynchronous job this thread runs, or 0).
  ivm_error_t* Begin(CallState& call, uint64_t timeout_ns, uint64_t job);
  void End(CallState& call);
  void DrainReleasedLocked();
  void DisposeLocked();   // exec_mutex_ held, no call running

  v8::Isolate* isolate_ = nullptr;
  std::shared_ptr<Allocator> allocator_;
  // V8's blob of a snapshot and the StartupData V8 keeps a pointer to, or null. Shared
  // with a kept entry the disposal is handed over to (KeptEntry::snapshot).
  std::shared_ptr<SnapshotBlob> snapshot_;
  std::shared_ptr<CpuProfiles> cpu_profiles_;   // isolate locked
  std::shared_ptr<Inspector> inspector_;
  std::shared_ptr<KeptEntry> kept_entry_;   // exec_mutex_ held
  uint64_t memory_limit_ = 0;
  std::atomic<int> state_{kAlive};
  std::atomic<bool> oom_{false};
  std::atomic<bool> dispose_requested_{false};
  std::atomic<int> pool_parked_{0};
  std::atomic<bool> orphaned_{false};
  std::atomic<int64_t> pinned_bytes_{0};

  // Serialises calls; recursive so that a host callback can call back in.
  std::recursive_timed_mutex exec_mutex_;
  std::atomic<std::thread::id> owner_{};
  int depth_ = 0;   // calls on the stack of the owner thread
  bool interrupt_listed_ = false;   // the outermost call is in interrupt::Enter's list
  int interrupt_slot_ = -1;   // its slot in signals.cc's listing (exec_mutex_), -1: none
  std::atomic<bool> interrupt_running_{false};   // listed there, and in a call on its thread
  std::atomic<uint64_t> interrupt_since_{0};

  // Guards active_ (the calls on the stack, outermost first) and termination.
  SpinMutex state_mutex_;
  std::vector<CallState*> active_;
  // Whether a call in active_ may have been told to stop (set under state_mutex_ with the
  // call's flag; recomputed as a call ends): while it is false, Stopped() needs no lock.
  std::atomic<bool> stop_flagged_{false};
  // Marks `call` (in active_, state_mutex_ held) as told to stop; `flag` is one of its flags.
  void FlagStop(bool& flag) {
    flag = true;
    stop_flagged_.store(true, std::memory_order_release);
  }

  std::mutex resources_mutex_;
  std::unordered_map<Resource*, std::shared_ptr<Resource>> resources_;
  std::vector<std::shared_ptr<Resource>> to_release_;
  std::atomic<bool> has_released_{false};
  int64_t last_pump_ns_ = 0;

  v8::Global<v8::Context> compile_context_;
  std::atomic<uint64_t> cpu_ns_{0}, wall_ns_{0};

  JobQueue jobs_;
  std::atomic<uint64_t> cancel_running_{0};   // a running job being cancelled
  std::atomic<uint64_t> ref_count_{0};
  std::atomic<uint64_t> next_id_{1};
  uint64_t next_call_id_ = 1;   // CallState ids: Begin, under exec_mutex_
  uint64_t unique_id_ = 0;
  bool cpu_clock_ = false;   // measure the current call with the thread CPU clock
  int64_t call_cpu_start_ = 0, call_wall_start_ = 0;
  // Host code inside the current outermost call (owner thread): whether the
  // innermost frame is host code, since when, and the wall time it took so far.
  bool in_host_ = false;
  int64_t host_since_ = 0, host_ns_ = 0;
  std::atomic<int> host_depth_{0};   // host frames on the stack (read by Dispose)
  uint64_t abort_token_ = 0;   // owner thread
};

// The span of host code called from JavaScript (IsolateHolder::EnterHost).
class HostScope {
 public:
  explicit HostScope(IsolateHolder& holder) : holder_(holder), was_host_(holder.EnterHost()) {}
  ~HostScope() { holder_.LeaveHost(was_host_); }
  HostScope(const HostScope&) = delete;
  HostScope& operator=(const HostScope&) = delete;

 private:
  IsolateHolder& holder_;
  bool was_host_;
};

// ---------------------------------------------------------------------------
// signals.cc

// Signal-driven termination of the synchronous calls of one thread.
namespace interrupt {
// An outermost call starts on this thread: whether `holder` was listed (the watched
// thread), in which case Leave() must unlist it when the call ends. Both run under the
// holder's exec_mutex_. An isolate keeps the lock-free listing Enter gave it between its
// calls (it is then skipped) until Forget, which its disposal calls.
bool Enter(IsolateHolder& holder);
void Leave(IsolateHolder& holder);
void Forget(IsolateHolder& holder);
// The same for a call that waits for another process (a worker-hosted
// isolate's synchronous call): on the signal, the watcher thread runs `stop`
// (which must not block for long). Returns 0 when this thread is not the
// watched one, otherwise a token for LeaveCall.
uint64_t EnterCall(std::function<void()> stop);
void LeaveCall(uint64_t token);
// Takes `lock`; on the watched thread, gives up with TERMINATED if the signal
// arrives while it waits for a busy isolate.
ivm_error_t* Lock(std::unique_lock<std::recursive_timed_mutex>& lock);
// Signals seen so far (read before a call, passed to Substitute after it).
uint64_t Signals();
// The error of an outermost call: on the watched thread, a TERMINATED error of
// a call that a signal stopped (`seen`: Signals() before the call) is freed
// and replaced by the shared static one (Static), which ivm_error_free
// ignores. A host runtime raises its own exception as such a call returns
// (Python's KeyboardInterrupt), before it can free the error: nothing leaks.
ivm_error_t* Substitute(ivm_error_t* error, uint64_t seen);
ivm_error_t* Static();
}  // namespace interrupt

// ---------------------------------------------------------------------------
// timers.cc

namespace timers {
// Runs `fn` on the timer thread at `deadline_ns` (MonotonicNs); returns the
// timer's id. `fn` must not block.
uint64_t Arm(int64_t deadline_ns, std::function<void()> fn);
// Cancels a timer that has not fired (0 and fired ids are ignored).
void Disarm(uint64_t timer_id);
// MonotonicNs() + timeout_ns, saturated.
int64_t DeadlineAfter(uint64_t timeout_ns);
}  // namespace timers

// Call timeouts: asks the isolate to stop call `call_id` at its deadline.
namespace watchdog {
uint64_t Arm(std::weak_ptr<IsolateHolder> holder, uint64_t call_id, int64_t deadline_ns);
void Disarm(uint64_t timer_id);
}  // namespace watchdog

int64_t ThreadCpuNs();
int64_t MonotonicNs();
// The clock of a call's own time accounting (its wall time, its host code's spans, when
// to pump tasks and whether it ran long): MonotonicNs's nanoseconds, read from the CPU's
// time stamp counter where the kernel's clocks use it (about 9 ns where clock_gettime
// takes 22, read twice per call; timers.cc). Only spans between two of its readings mean
// anything: deadlines and timers use MonotonicNs. InitCallClock (once, from
// EnsurePlatform, before a sandbox forbids opening files) decides whether the counter is
// used.
void InitCallClock();
int64_t CallClockNs();

// Locks and unlocks an isolate for the current thread. Equivalent to a
// v8::Locker, but cheap to repeat: each thread keeps one v8::Locker per
// isolate it has used, parked behind a v8::Unlocker between calls, so that
// V8 archives the thread's state instead of freeing and rebuilding it on
// every call. Parked locks are dropped when the thread exits or, without
// touching V8, when their isolate has been disposed.
class ThreadLockScope {
 public:
  explicit ThreadLockScope(IsolateHolder& holder);
  ~ThreadLockScope();
  ThreadLockScope(const ThreadLockScope&) = delete;
  ThreadLockScope& operator=(const ThreadLockScope&) = delete;
  // Once the isolate is entered: keeps a handle scope open under this
  // thread's calls until the lock is given back, so that the outermost call's
  // own scope neither allocates nor frees a block of handles (thread_lock.cc).
  void KeepHandleBlock();

 private:
  void Release();   // ends the lock for good (the isolate is orphaned or going)
  struct Parked* parked_;
  IsolateHolder* holder_;
};

// Gives back this thread's parked lock on `holder`'s isolate, if it has one
// and the isolate is free right now (never waits). V8 frees a thread's state
// (its handle blocks, its regexp stack...) only when that thread ends its
// top-level Locker: an isolate disposed while another thread keeps a parked
// lock on it leaks that thread's state (about 10 KB). So the disposing thread
// gives back its own first; a pool thread keeps one only while it polls for
// more work, and gives it back before it sleeps or serves another isolate;
// and disposal waits briefly for pool threads that still keep one
// (WaitForPoolLocks).
// An orphaned isolate (IsolateHolder::orphaned) is never kept parked: the
// thread that frees the isolate's handle gives its lock back then, and a
// call that ends on an orphaned or disposing isolate unlocks it fully.
// Returns false if this thread still keeps one (busy, or inside a call).
bool GiveBackThreadLock(IsolateHolder& holder);
void WaitForPoolLocks(IsolateHolder& holder);
// A pool thread, idle: gives back its parked locks that a disposal waits for
// (the isolate may be mid-destruction, out of reach of weak pointers).
void GiveBackRequestedLocks();

// ---------------------------------------------------------------------------
// thread_lock.cc (and IsolateHolder::Run)

ivm_error_t* RefuseFromPool(const IsolateHolder* target);

// Registers the current thread as waiting for `target`, and
// tells whether that wait would close a cycle of waiting threads.
class WaitScope {
 public:
  explicit WaitScope(const IsolateHolder* target);
  ~WaitScope();
  WaitScope(const WaitScope&) = delete;
  WaitScope& operator=(const WaitScope&) = delete;
  bool deadlock() const { return deadlock_; }

 private:
  bool deadlock_ = false;
};

template <class F>
ivm_error_t* IsolateHolder::Run(uint64_t timeout_ns, F&& body) {
  FinishHandedOverEntry();
  if (disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  const uint64_t job = pool::CurrentJob();   // read once: Begin takes it
  if (job != 0) {
    if (ivm_error_t* refused = RefuseFromPool(this)) return refused;
  }
  const uint64_t signals_seen = interrupt::Signals();
  std::unique_lock<std::recursive_timed_mutex> lock(exec_mutex_, std::defer_lock);
  if (!lock.try_lock()) {
    // Busy: wait, unless waiting closes a cycle of threads each inside one
    // isolate and waiting for the next (A -> B on one thread, B -> A on
    // another), which would never end.
    WaitScope wait(this);
    if (wait.deadlock()) {
      return MakeError(IVM_ERROR_DEADLOCK,
                       "A synchronous call into another isolate was refused: that isolate is "
                       "running a call that waits for an isolate this thread is inside");
    }
    if (ivm_error_t* interrupted = interrupt::Lock(lock)) return interrupted;
  }
  if (disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  ivm_error_t* error = nullptr;
  {
    ThreadLockScope thread_lock(*this);
    v8::Isolate::Scope isolate_scope(isolate_);
    thread_lock.KeepHandleBlock();
    v8::HandleScope handle_scope(isolate_);
    CallState call;
    error = Begin(call, timeout_ns, job);
    if (error == nullptr) {
      error = body(isolate_, call);
      End(call);
    }
    if (error == nullptr && oom_.load()) {
      // The limit was hit where no JavaScript could be stopped (e.g. while
      // creating a context): the result cannot be trusted.
      error = MakeError(IVM_ERROR_MEMORY_LIMIT,
                        "Isolate was disposed during execution due to memory limit");
    }
  }
  if (depth_ == 0) {
    uint64_t token = TakeAbortToken();
    if (token != 0 && error != nullptr && error->kind == IVM_ERROR_TERMINATED) {
      error->host_token = token;
      error->host_abort = true;
    }
  }
  if (depth_ == 0 && (oom_.load() || dispose_requested_.load())) DisposeLocked();
  if (depth_ == 0 && error != nullptr) error = interrupt::Substitute(error, signals_seen);
  return error;
}

template <class F>
ivm_error_t* IsolateHolder::Locked(F&& fn) {
  FinishHandedOverEntry();
  if (disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  if (ivm_error_t* refused = RefuseFromPool(this)) return refused;
  std::unique_lock<std::recursive_timed_mutex> lock(exec_mutex_);
  if (disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  ThreadLockScope thread_lock(*this);
  v8::Isolate::Scope isolate_scope(isolate_);
  v8::HandleScope handle_scope(isolate_);
  return fn(isolate_);
}

}  // namespace ivm

namespace ivm {
class RemoteIsolate;
struct RemoteObject;
}  // namespace ivm

// The handle shells of the ABI. An isolate lives inline (`holder`) or in a
// worker process (`remote`, remote.h); exactly one is set.
struct ivm_isolate : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::RemoteIsolate> remote;
};

#endif  // IVM_INTERNAL_H
