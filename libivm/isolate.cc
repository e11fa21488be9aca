// isolate.cc — one V8 isolate: its memory limits, the serialisation of calls,
// termination (timeouts, ivm_isolate_terminate, disposal) and teardown.
//
// Limits. The heap is bounded by V8's resource constraints (of which the young generation
// takes about 3/32, up to 24 MiB: SizeYoungGeneration); when V8 is about
// to exceed them it calls NearHeapLimit, which marks the isolate out of memory,
// terminates its JavaScript and grants V8 room to unwind (returning the old
// limit would make V8 abort the whole process): half again what the heap
// holds now, at least 32 MiB, at most the unwind cap (limit + max(limit,
// 256 MiB)). The call then fails with
// IVM_ERROR_MEMORY_LIMIT and the isolate is disposed. ArrayBuffer memory comes
// from a per-isolate allocator with its own budget (the same limit;
// buffers.cc): a refused allocation is a JavaScript RangeError. Memory that
// bypasses the allocator (WebAssembly memories) is checked at the end of each
// call and at each GC.
//
// Termination. Every call on the stack has a CallState; timers, terminate
// requests and disposal mark the calls they stop, under state_mutex_, and call
// TerminateExecution. When a call ends it cancels the termination unless an
// outer call is still marked, so a late timer never kills an unrelated call and
// an inner call's timeout does not end the outer call.
#include "remote.h"
#include "catastrophic.h"
#include "internal.h"
#include "inspector.h"
#include "profiler.h"
#include "snapshot.h"
#include "jobs.h"
#include "options.h"

#include <algorithm>
#include <unordered_map>
#include <condition_variable>
#include <cstdlib>
#include <cstring>

namespace ivm {

namespace {
constexpr uint64_t kDefaultLimit = 128ull << 20;
constexpr uint64_t kMaxLimit = 1ull << 40;
constexpr size_t kHeapSlack = 32u << 20;
// The most a heap may hold while a call unwinds from its memory limit: the
// limit plus max(limit, 256 MiB) (ivm.h, ivm_isolate_options_t).
constexpr uint64_t kUnwindFloor = 256ull << 20;
size_t UnwindCap(uint64_t limit) {
  return static_cast<size_t>(limit + std::max(limit, kUnwindFloor));
}
// The young generation: two semi-spaces and a large-object space of one semi-space each,
// the semi-space the largest power of two (V8 rounds it up to one) within 1/32 of the
// limit, at most 8 MiB, and never smaller than V8's own choice; the old generation gives up
// what the young one gains, so that the heap's total stays the limit. V8 gives a 128 MiB heap
// 1 MiB semi-spaces, which one copy of a few MiB of objects (JSON.parse of bench/run.py's
// 10,000 rows allocates about 2 MiB) overflows midway: every such copy was scavenged while
// half built and partly promoted. With 4 MiB semi-spaces there are about a quarter as many
// scavenges (each has a fixed cost: tasks, roots, the remembered set), about +10% wall for
// that round trip, though the objects copied cost about the same (~1M instructions less).
// The semi-spaces grow to that size only when the isolate allocates that much between
// collections.
constexpr uint64_t kSemiSpaceShare = 32;
constexpr size_t kMaxSemiSpace = 8u << 20;
void SizeYoungGeneration(v8::ResourceConstraints& constraints, uint64_t limit) {
  size_t young = constraints.max_young_generation_size_in_bytes();
  size_t old = constraints.max_old_generation_size_in_bytes();
  size_t semi = kMaxSemiSpace;
  while (semi > limit / kSemiSpaceShare) semi /= 2;
  size_t wanted = 3 * semi;
  if (wanted <= young || old <= 2 * (wanted - young)) return;
  constraints.set_max_young_generation_size_in_bytes(wanted);
  constraints.set_max_old_generation_size_in_bytes(old - (wanted - young));
}
// A host span that began at `since` (CallClockNs). Never negative, even from the counters of
// two CPUs, should the thread move: a negative span would make JavaScript's time exceed
// the call's.
int64_t HostSpanNs(int64_t since) { return std::max<int64_t>(CallClockNs() - since, 0); }
constexpr int64_t kLongCallNs = 200 * 1000;
constexpr int64_t kPumpIntervalNs = 1000 * 1000;
// A timed-out call's JavaScript that reaches no interrupt check this long
// after its timeout (it is in host code, or waits) is stopped without its
// frames being read.
constexpr int64_t kTimeoutFallbackNs = 20 * 1000 * 1000;
// How long a disposal from another thread waits for host code the running
// call is in before leaving the disposal to that call.
constexpr int64_t kDisposeHostWaitNs = 100 * 1000 * 1000;
}  // namespace

ivm_error_t* IsolateHolder::Create(uint64_t memory_limit, std::shared_ptr<IsolateHolder>* out,
                                   std::shared_ptr<CatastrophicReport> report,
                                   std::string_view snapshot, bool inspector) {
  if (memory_limit == 0) memory_limit = kDefaultLimit;
  if (memory_limit < IVM_MEMORY_LIMIT_MIN) {
    return InvalidArgument("memory_limit must be at least 8 MB");
  }
  if (memory_limit > kMaxLimit) return InvalidArgument("memory_limit is too large");
  EnsurePlatform();
  std::string_view blob;
  if (!snapshot.empty()) {
    if (ivm_error_t* err = snapshot::Check(snapshot, &blob)) return err;
  }
  static std::atomic<uint64_t> next_unique_id{1};
  std::shared_ptr<IsolateHolder> holder(new IsolateHolder());
  holder->unique_id_ = next_unique_id.fetch_add(1);
  holder->memory_limit_ = memory_limit;
  holder->catastrophic = std::move(report);
  v8::Isolate::CreateParams params;
  params.array_buffer_allocator_shared = holder->NewAllocator(static_cast<size_t>(memory_limit));
  params.constraints.ConfigureDefaultsFromHeapSize(0, static_cast<size_t>(memory_limit));
  SizeYoungGeneration(params.constraints, memory_limit);
  if (!blob.empty()) {
    // V8 reads the blob whenever a context is made: it lives as long as the isolate.
    holder->snapshot_ = std::make_shared<SnapshotBlob>();
    holder->snapshot_->bytes.assign(blob);
    holder->snapshot_->data = {holder->snapshot_->bytes.data(),
                               static_cast<int>(holder->snapshot_->bytes.size())};
    params.snapshot_blob = &holder->snapshot_->data;
  }
  v8::Isolate* isolate = v8::Isolate::New(params);
  if (isolate == nullptr) return MakeError(IVM_ERROR_INTERNAL, "V8 could not create an isolate");
  holder->isolate_ = isolate;
  // Slot 0: the holder of an isolate, for callbacks. (Slot 1: wrapper.cc's
  // templates.)
  isolate->SetData(0, holder.get());
  {
    v8::Locker locker(isolate);
    v8::Isolate::Scope scope(isolate);
    isolate->AddNearHeapLimitCallback(NearHeapLimit, holder.get());
    isolate->AddGCEpilogueCallback(AfterGC, holder.get());
    isolate->SetMicrotasksPolicy(v8::MicrotasksPolicy::kExplicit);
    isolate->SetCaptureStackTraceForUncaughtExceptions(true, 16, v8::StackTrace::kDetailed);
    InstallModuleHooks(isolate);
    if (holder->catastrophic) InstallFatalHandlers(isolate);
    if (inspector) {
      v8::HandleScope handles(isolate);
      holder->inspector_ = Inspector::Create(*holder);
    }
  }
  *out = std::move(holder);
  return nullptr;
}

IsolateHolder::~IsolateHolder() {
  if (isolate_ != nullptr) WaitForPoolLocks(*this);
  std::unique_lock<std::recursive_timed_mutex> lock(exec_mutex_);
  DisposeLocked();
}

size_t IsolateHolder::NearHeapLimit(void* data, size_t current, size_t initial) {
  (void)initial;
  auto* self = static_cast<IsolateHolder*>(data);
  self->oom_.store(true);
  self->isolate_->TerminateExecution();
  // Room to unwind; the isolate is disposed as soon as the call returns. The
  // room is measured from what the heap holds now, not from the old limit: a
  // builtin (Array.from, JSON.stringify, spreading) can grow the heap far
  // past the limit in one step, and a grant below that is an abort ("Reached
  // heap limit"). It never exceeds the unwind cap; past it, V8 aborts.
  v8::HeapStatistics stats;
  self->isolate_->GetHeapStatistics(&stats);
  size_t used = std::max(current, stats.total_heap_size());
  size_t grant = std::min(used + std::max(used / 2, kHeapSlack), UnwindCap(self->memory_limit_));
  return std::max(grant, current);
}

int64_t IsolateHolder::CheckExternalMemory() {
  // V8 accounts every ArrayBuffer backing store here, including WebAssembly
  // memories that never went through our allocator. (Adjusting by 0 only
  // reads the counter.)
  RestoreHiddenFreed();
  int64_t external = isolate_->AdjustAmountOfExternalAllocatedMemory(0) - pinned_bytes_.load();
  if (external > 0 && static_cast<uint64_t>(external) > memory_limit_ + array_buffer_bytes()) {
    oom_.store(true);
  }
  // A large object (a string of hundreds of MB, flattened) can be allocated
  // past the heap limit without V8 calling NearHeapLimit. Reading the heap's
  // figures costs about a microsecond: only a call that ran long enough to
  // allocate much (kLongCallNs: a few MB at most otherwise) is checked here;
  // the GC epilogue checks the rest.
  int64_t now = oom_.load() ? 0 : CallClockNs();
  if (now != 0 && now - call_wall_start_ > kLongCallNs && OverHeapLimit(isolate_)) oom_.store(true);
  return now;
}

bool IsolateHolder::OverHeapLimit(v8::Isolate* isolate) {
  v8::HeapStatistics s;
  isolate->GetHeapStatistics(&s);
  return s.used_heap_size() > s.heap_size_limit();
}

void IsolateHolder::AfterGC(v8::Isolate* isolate, v8::GCType, v8::GCCallbackFlags, void* data) {
  auto* self = static_cast<IsolateHolder*>(data);
  if (self->oom_.load() || !OverHeapLimit(isolate)) return;
  self->oom_.store(true);
  std::lock_guard<SpinMutex> lock(self->state_mutex_);
  if (!self->active_.empty()) isolate->TerminateExecution();
}

void IsolateHolder::ReportPinned(int64_t bytes) {
  if (isolate_ == nullptr || bytes == 0) return;
  pinned_bytes_.fetch_add(bytes);
  isolate_->AdjustAmountOfExternalAllocatedMemory(bytes);
}

CpuProfiles& IsolateHolder::cpu_profiles() {
  if (!cpu_profiles_) cpu_profiles_ = std::make_shared<CpuProfiles>();
  return *cpu_profiles_;
}

v8::Local<v8::Context> IsolateHolder::CompileContextLocked() {
  if (compile_context_.IsEmpty()) {
    v8::Local<v8::Context> context = v8::Context::New(isolate_);
    compile_context_.Reset(isolate_, context);
    // Scripts are compiled here: the inspector reports them with this context.
    if (inspector_) inspector_->ContextCreated(context, "ivm compile context", false);
    return context;
  }
  return compile_context_.Get(isolate_);
}

ivm_error_t* IsolateHolder::Begin(CallState& call, uint64_t timeout_ns, uint64_t job) {
  if (oom_.load()) {
    return MakeError(IVM_ERROR_MEMORY_LIMIT,
                     "Isolate was disposed during execution due to memory limit");
  }
  if (dispose_requested_.load()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  if (depth_ == 0) {
    DrainReleasedLocked();
    owner_.store(std::this_thread::get_id(), std::memory_order_release);
    // V8's sampler must sample the thread running the JavaScript.
    if (cpu_profiles_ && cpu_profiles_->active()) cpu_profiles_->Follow(isolate_);
    interrupt_listed_ = job == 0 && interrupt::Enter(*this);
    call_wall_start_ = CallClockNs();
    // Reading the thread CPU clock is a system call (about 0.4 us), as long
    // as a short call itself. Short calls count their wall time as CPU time;
    // once a call has run long, the next ones read the CPU clock.
    if (cpu_clock_) call_cpu_start_ = ThreadCpuNs();
    in_host_ = false;
    host_ns_ = 0;
  } else if (in_host_) {
    // Host code calls back in: its span ends here, JavaScript's resumes.
    host_ns_ += HostSpanNs(host_since_);
    in_host_ = false;
    call.from_host = true;
  }
  ++depth_;
  call.primitive_out = PrimitiveOutScope::Claim();
  call.id = next_call_id_++;   // (exec_mutex_ held: no locked instruction)
  call.job_id = job;
  {
    std::lock_guard<SpinMutex> lock(state_mutex_);
    active_.push_back(&call);
    if (call.job_id != 0 && cancel_running_.load() == call.job_id) {
      FlagStop(call.cancelled);
      isolate_->TerminateExecution();
    }
  }
  call.deadline_ns = timeout_ns == 0 ? 0 : timers::DeadlineAfter(timeout_ns);
  // (No deadline, no timer: a weak pointer costs two atomic operations.)
  if (call.deadline_ns != 0) {
    call.timer_id = watchdog::Arm(weak_from_this(), call.id, call.deadline_ns);
  }
  return nullptr;
}

void IsolateHolder::End(CallState& call) {
  watchdog::Disarm(call.timer_id);
  {
    std::lock_guard<SpinMutex> lock(state_mutex_);
    active_.pop_back();
    bool outer_stopped = false;
    for (CallState* c : active_) outer_stopped |= c->timed_out || c->terminated || c->cancelled;
    stop_flagged_.store(outer_stopped, std::memory_order_release);
    if (oom_.load() || dispose_requested_.load() || state_.load() != kAlive) {
      // Everything on the stack unwinds; the isolate is going away.
    } else if (outer_stopped) {
      isolate_->TerminateExecution();
    } else if (call.timed_out || call.terminated || call.cancelled ||
               isolate_->IsExecutionTerminating()) {
      isolate_->CancelTerminateExecution();
    }
  }
  if (--depth_ > 0 && call.from_host) {
    in_host_ = true;   // back in the host code that made this call
    host_since_ = CallClockNs();
  }
  if (depth_ == 0) {
    int64_t end = call.end_ns != 0 ? call.end_ns : CallClockNs();
    // (Never negative, even from the counters of two CPUs, should the thread move.)
    int64_t wall = std::max<int64_t>(end - call_wall_start_, 0);
    // Host code's spans are timed on the wall clock (reading the thread CPU
    // clock around every host callback would double their cost). JavaScript's
    // CPU time is at most its wall time, and at most the thread's CPU time,
    // host code's included: the smaller is exact unless both JavaScript and
    // host code spent time off the CPU.
    int64_t js_wall = wall - host_ns_;
    int64_t cpu = cpu_clock_ ? std::min(ThreadCpuNs() - call_cpu_start_, js_wall) : js_wall;
    AddRelaxed(cpu_ns_, static_cast<uint64_t>(std::max<int64_t>(cpu, 0)));
    AddRelaxed(wall_ns_, static_cast<uint64_t>(wall));
    cpu_clock_ = wall > kLongCallNs;
    owner_.store(std::thread::id(), std::memory_order_release);
    if (interrupt_listed_) interrupt::Leave(*this);
    DrainReleasedLocked();
  }
}

ivm_error_t* IsolateHolder::Fail(v8::Local<v8::Context> context, const v8::TryCatch& try_catch,
                                 const CallState& call) {
  if (oom_.load()) {
    return MakeError(IVM_ERROR_MEMORY_LIMIT,
                     "Isolate was disposed during execution due to memory limit");
  }
  if (dispose_requested_.load() || state_.load() != kAlive) {
    return MakeError(IVM_ERROR_DISPOSED, "Isolate was disposed during execution");
  }
  bool timed_out = false, terminated = false, cancelled = false;
  {
    std::lock_guard<SpinMutex> lock(state_mutex_);
    for (CallState* c : active_) {
      timed_out |= c->timed_out;
      terminated |= c->terminated;
      cancelled |= c->cancelled;
    }
    timed_out |= call.timed_out;
    terminated |= call.terminated;
    cancelled |= call.cancelled;
  }
  if (cancelled) return MakeError(IVM_ERROR_CANCELLED, "The call was cancelled");
  if (timed_out) {
    ivm_error_t* err = MakeError(IVM_ERROR_TIMEOUT, kTimeoutMessage);
    std::lock_guard<SpinMutex> lock(state_mutex_);
    err->stack = call.stopped_at;
    for (CallState* c : active_) {
      if (err->stack.empty()) err->stack = c->stopped_at;
    }
    if (!err->stack.empty()) err->stack = kTimeoutMessage + err->stack;
    return err;
  }
  if (terminated || try_catch.HasTerminated() || isolate_->IsExecutionTerminating()) {
    return MakeError(IVM_ERROR_TERMINATED, "Script execution was terminated.");
  }
  if (!try_catch.HasCaught()) {
    return MakeError(IVM_ERROR_INTERNAL, "JavaScript failed without an exception");
  }
  return ErrorFromException(isolate_, context, try_catch);
}

void IsolateHolder::Settle(const CallState& call) {
  if (depth_ != 1) return;   // the outermost call settles
  // Foreground tasks (GC housekeeping, FinalizationRegistry cleanup, async
  // WebAssembly compilation) need not run after every call: at most once per
  // millisecond keeps tight loops of small calls cheap.
  if (call_wall_start_ - last_pump_ns_ >= kPumpIntervalNs) {
    last_pump_ns_ = call_wall_start_;
    PumpTasks(call);
  }
  if (!Stopped(call)) isolate_->PerformMicrotaskCheckpoint();
}

void IsolateHolder::PumpTasks(const CallState& call) {
  v8::Platform* platform = EnsurePlatform();
  for (int i = 0; i < 1000; ++i) {
    // A task may run JavaScript (FinalizationRegistry callbacks): once the
    // call is stopped, no further task may start, or it would run unbounded
    // (the termination was consumed by the task it stopped).
    if (Stopped(call)) break;
    if (!v8::platform::PumpMessageLoop(platform, isolate_,
                                       v8::platform::MessageLoopBehavior::kDoNotWait)) {
      break;
    }
  }
}

bool IsolateHolder::Stopped(const CallState& call) {
  if (oom_.load() || dispose_requested_.load() || state_.load() != kAlive) return true;
  // No call on the stack has been told to stop (a flag set from now on is seen by the next
  // check, as it would be had it come just after the lock below).
  if (!stop_flagged_.load(std::memory_order_acquire)) return false;
  std::lock_guard<SpinMutex> lock(state_mutex_);
  if (call.timed_out || call.terminated || call.cancelled) return true;
  for (CallState* c : active_) {
    if (c->timed_out || c->terminated || c->cancelled) return true;
  }
  return false;
}

void IsolateHolder::OnTimeout(uint64_t call_id) {
  std::lock_guard<SpinMutex> lock(state_mutex_);
  for (CallState* c : active_) {
    if (c->id == call_id) {
      FlagStop(c->timed_out);
      // V8 handles a termination before other interrupts: asking for both
      // would unwind the stack before it could be read.
      isolate_->RequestInterrupt(StopTimedOut, this);
      std::weak_ptr<IsolateHolder> weak = weak_from_this();
      timers::Arm(MonotonicNs() + kTimeoutFallbackNs, [weak, call_id] {
        if (auto h = weak.lock()) h->StopTimedOutFallback(call_id);
      });
      return;
    }
  }
}

void IsolateHolder::StopTimedOut(v8::Isolate* isolate, void* data) {
  auto* self = static_cast<IsolateHolder*>(data);
  auto pending = [self](CallState* c) { return c->timed_out && !c->timeout_stopped; };
  {
    std::lock_guard<SpinMutex> lock(self->state_mutex_);
    // None: the call ended first (or the fallback stopped it), and a late
    // interrupt must not stop the next call.
    if (std::none_of(self->active_.begin(), self->active_.end(), pending)) return;
  }
  // Outside the mutex: reading frames allocates, and a GC takes it (AfterGC).
  std::string frames;
  AppendCurrentFrames(isolate, frames);
  std::lock_guard<SpinMutex> lock(self->state_mutex_);
  bool stop = false;
  for (CallState* c : self->active_) {
    if (!pending(c)) continue;
    c->timeout_stopped = stop = true;
    c->stopped_at = frames;
  }
  if (stop) isolate->TerminateExecution();
}

void IsolateHolder::StopTimedOutFallback(uint64_t call_id) {
  std::lock_guard<SpinMutex> lock(state_mutex_);
  for (CallState* c : active_) {
    if (c->id == call_id && !c->timeout_stopped) {
      c->timeout_stopped = true;
      isolate_->TerminateExecution();
    }
  }
}

void IsolateHolder::AbortFromHost(uint64_t token) {
  if (abort_token_ == 0) abort_token_ = token;
  Terminate();
  // Termination is noticed at V8's next interrupt check, which the calling
  // code might not reach before running more statements: entering a script
  // here makes the check now, and the termination unwinds from this call.
  v8::HandleScope scope(isolate_);
  v8::Local<v8::Context> context = isolate_->GetCurrentContext();
  if (context.IsEmpty()) return;
  v8::Local<v8::Script> script;
  if (v8::Script::Compile(context, v8::String::NewFromUtf8Literal(isolate_, "0")).ToLocal(&script)) {
    (void)script->Run(context);
  }
}

void IsolateHolder::ReleaseLater(Resource* resource) {
  std::lock_guard<std::mutex> lock(resources_mutex_);
  auto it = resources_.find(resource);
  if (it == resources_.end()) return;
  resource->released_.store(true);
  if (resource->counted_) DropRef();
  to_release_.push_back(std::move(it->second));
  resources_.erase(it);
  has_released_.store(true, std::memory_order_release);
}

void IsolateHolder::Terminate(uint64_t signal) {
  std::lock_guard<SpinMutex> lock(state_mutex_);
  if (active_.empty()) return;
  // (interrupt_since_ is written before a call enters active_, under this mutex.)
  if (signal != 0 && interrupt_since_.load(std::memory_order_relaxed) >= signal) return;
  for (CallState* c : active_) FlagStop(c->terminated);
  isolate_->TerminateExecution();
}

ivm_error_t* IsolateHolder::Dispose() {
  FinishHandedOverEntry();   // (an earlier isolate this thread kept entered)
  if (state_.load() == kDisposed) return nullptr;
  if (owner_.load() == std::this_thread::get_id()) {
    // Called from inside a call on this thread (a host callback): finish when
    // the outermost call returns.
    dispose_requested_.store(true);
    Terminate();
    return nullptr;
  }
  int expected = kAlive;
  state_.compare_exchange_strong(expected, kDisposing);
  jobs_.FailAll(IVM_ERROR_DISPOSED, kDisposedMessage);
  {
    std::lock_guard<SpinMutex> lock(state_mutex_);
    if (!active_.empty()) {
      for (CallState* c : active_) FlagStop(c->terminated);
      isolate_->TerminateExecution();
    }
  }
  WaitForPoolLocks(*this);
  // The running call, if any, now ends with DISPOSED and disposes of the
  // isolate itself when it returns (Run).
  dispose_requested_.store(true);
  std::unique_lock<std::recursive_timed_mutex> lock(exec_mutex_, std::defer_lock);
  int64_t in_host_since = 0;
  while (!lock.try_lock_for(std::chrono::milliseconds(1))) {
    // Host code that termination cannot stop may wait for this very thread
    // (an event loop that must run an async host function, or an isolate
    // disposing of this one from its own callback): it is given a short time
    // (most host code returns in it, and the isolate is gone when this
    // returns), then not waited for.
    if (host_depth_.load() == 0) {
      in_host_since = 0;
    } else if (in_host_since == 0) {
      in_host_since = MonotonicNs();
    } else if (MonotonicNs() - in_host_since > kDisposeHostWaitNs) {
      return nullptr;
    }
  }
  DisposeLocked();
  return nullptr;
}

bool IsolateHolder::EnterHost() {
  bool was_host = in_host_;
  if (!was_host) host_since_ = CallClockNs();
  in_host_ = true;
  host_depth_.fetch_add(1);
  return was_host;
}

void IsolateHolder::LeaveHost(bool was_host) {
  host_depth_.fetch_sub(1);
  if (!was_host) host_ns_ += HostSpanNs(host_since_);
  in_host_ = was_host;
}

void IsolateHolder::DisposeLocked() {
  interrupt::Forget(*this);   // (also when disposed before: the destructor's call)
  if (isolate_ == nullptr) return;
  state_.store(kDisposing);
  std::vector<std::shared_ptr<Resource>> all;
  {
    std::lock_guard<std::mutex> lock(resources_mutex_);
    for (auto& entry : resources_) all.push_back(std::move(entry.second));
    resources_.clear();
    for (auto& r : to_release_) all.push_back(std::move(r));
    to_release_.clear();
  }
  GiveBackThreadLock(*this);   // (leaves this thread's kept entry, if it can)
  // Still entered by a thread that keeps it (isolate_entry.cc): V8's disposal
  // may be left to that thread, when this holder is gone.
  std::shared_ptr<KeptEntry> kept = std::move(kept_entry_);
  {
    v8::Locker locker(isolate_);
    if (kept && LeaveOwnEntry(*this)) kept.reset();   // (its parked lock was given back)
    v8::Isolate::Scope scope(isolate_);
    for (auto& r : all) {
      if (!r->released_.exchange(true) && r->counted_) DropRef();
      r->ResetLocked();
    }
    compile_context_.Reset();
    if (cpu_profiles_) cpu_profiles_->Dispose(isolate_);
    if (inspector_) {
      v8::HandleScope handles(isolate_);
      inspector_->DisposeLocked();
    }
    if (kept) {
      // Its keeper may not call again for long: what it keeps is an empty heap.
      // (Every handle with a weak callback was a resource, reset above.)
      isolate_->LowMemoryNotification();
      isolate_->RemoveNearHeapLimitCallback(NearHeapLimit, 0);
      isolate_->RemoveGCEpilogueCallback(AfterGC, this);
      isolate_->SetData(0, nullptr);
    }
  }
  v8::Isolate* isolate = isolate_;
  {
    std::lock_guard<SpinMutex> lock(state_mutex_);
    isolate_ = nullptr;
  }
  if (!kept || !HandOverEntry(std::move(kept), snapshot_)) DisposeV8Isolate(isolate);
  state_.store(kDisposed);
  jobs_.FailAll(IVM_ERROR_DISPOSED, kDisposedMessage);
}

void IsolateHolder::CancelRunning(uint64_t job_id) {
  cancel_running_.store(job_id);
  std::lock_guard<SpinMutex> lock(state_mutex_);
  bool found = false;
  for (CallState* c : active_) {
    if (c->job_id == job_id) {
      FlagStop(c->cancelled);
      found = true;
    }
  }
  if (found && isolate_ != nullptr) isolate_->TerminateExecution();
}

void IsolateHolder::Register(const std::shared_ptr<Resource>& resource, bool counted) {
  std::lock_guard<std::mutex> lock(resources_mutex_);
  resource->counted_ = counted;
  resources_.emplace(resource.get(), resource);
  if (counted) AddRef();
}

void IsolateHolder::Release(const std::shared_ptr<Resource>& resource) {
  {
    std::lock_guard<std::mutex> lock(resources_mutex_);
    auto it = resources_.find(resource.get());
    if (it == resources_.end()) return;   // already released, or disposed
    resource->released_.store(true);
    if (resource->counted_) DropRef();
    to_release_.push_back(std::move(it->second));
    resources_.erase(it);
    has_released_.store(true, std::memory_order_release);
  }
  // Reset now if nobody is using the isolate; otherwise the next call does.
  if (exec_mutex_.try_lock()) {
    if (isolate_ != nullptr && !disposed()) {
      v8::Locker locker(isolate_);
      v8::Isolate::Scope scope(isolate_);
      DrainReleasedLocked();
    }
    exec_mutex_.unlock();
  }
}

void IsolateHolder::DrainReleasedLocked() {
  if (!has_released_.load(std::memory_order_acquire)) return;
  std::vector<std::shared_ptr<Resource>> list;
  {
    has_released_.store(false, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(resources_mutex_);
    if (to_release_.empty()) return;
    list.swap(to_release_);
  }
  for (auto& r : list) r->ResetLocked();
}

void IsolateHolder::Times(uint64_t* cpu_ns, uint64_t* wall_ns) const {
  if (cpu_ns) *cpu_ns = cpu_ns_.load();
  if (wall_ns) *wall_ns = wall_ns_.load();
}

ivm_error_t* ReadHeapStatistics(IsolateHolder& holder, ivm_heap_statistics_t* full) {
  return holder.Locked([&](v8::Isolate* isolate) -> ivm_error_t* {
    v8::HeapStatistics s;
    isolate->GetHeapStatistics(&s);
    full->total_heap_size = s.total_heap_size();
    full->total_heap_size_executable = s.total_heap_size_executable();
    full->total_physical_size = s.total_physical_size();
    full->total_available_size = s.total_available_size();
    full->used_heap_size = s.used_heap_size();
    full->heap_size_limit = s.heap_size_limit();
    full->malloced_memory = s.malloced_memory();
    full->peak_malloced_memory = s.peak_malloced_memory();
    full->does_zap_garbage = s.does_zap_garbage();
    full->number_of_native_contexts = s.number_of_native_contexts();
    full->number_of_detached_contexts = s.number_of_detached_contexts();
    full->total_global_handles_size = s.total_global_handles_size();
    full->used_global_handles_size = s.used_global_handles_size();
    full->external_memory = s.external_memory();
    full->externally_allocated_size = holder.array_buffer_bytes();
    return nullptr;
  });
}

}  // namespace ivm

// ---------------------------------------------------------------------------
// ABI

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_isolate_new(const ivm_isolate_options_t* opts, ivm_isolate_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (out == nullptr) return InvalidArgument("out is NULL");
    ivm_isolate_options_t o = IVM_ISOLATE_OPTIONS_INIT;
    if (ivm_error_t* err = ivm::ReadStruct(opts, &o)) return err;
    if (o.placement != IVM_PLACEMENT_INLINE && o.placement != IVM_PLACEMENT_PROCESS) {
      return InvalidArgument("unknown placement " + std::to_string(o.placement));
    }
    if (o.snapshot == nullptr && o.snapshot_len != 0) return InvalidArgument("snapshot is NULL");
    if (o.snapshot != nullptr && o.snapshot_len == 0) return InvalidArgument("the snapshot is empty");
    if (o.snapshot != nullptr && (o.placement != IVM_PLACEMENT_INLINE || o.group != nullptr)) {
      std::string_view blob;   // refused here, before a worker starts (it checks again)
      if (ivm_error_t* err = ivm::snapshot::Check({o.snapshot, o.snapshot_len}, &blob)) return err;
    }
    auto shell = std::make_unique<ivm_isolate>();
    ivm_error_t* err =
        o.placement != IVM_PLACEMENT_INLINE || o.group != nullptr
            ? ivm::remote::NewIsolate(o, &shell->remote)
            : ivm::IsolateHolder::Create(
                  o.memory_limit, &shell->holder,
                  ivm::CatastrophicReport::Make(o.on_catastrophic_error,
                                                o.on_catastrophic_error_data),
                  std::string_view(o.snapshot ? o.snapshot : "", o.snapshot_len),
                  o.inspector != 0);
    if (err) return err;
    *out = shell.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_isolate_dispose(ivm_isolate_t* iso) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr) return InvalidArgument("isolate is NULL");
    if (iso->remote) return ivm::remote::Dispose(*iso->remote);
    return iso->holder->Dispose();
  });
}

IVM_API int ivm_isolate_is_disposed(const ivm_isolate_t* iso) {
  if (iso != nullptr && iso->remote) return iso->remote->disposed() ? 1 : 0;
  return iso == nullptr || iso->holder->disposed() ? 1 : 0;
}

IVM_API int64_t ivm_isolate_pid(const ivm_isolate_t* iso) {
  return iso != nullptr && iso->remote ? iso->remote->pid() : 0;
}

IVM_API void ivm_isolate_terminate(ivm_isolate_t* iso) {
  if (iso == nullptr) return;
  if (iso->remote) {
    try {
      ivm::remote::Terminate(*iso->remote);
    } catch (...) {
    }
    return;
  }
  iso->holder->Terminate();
}

IVM_API void ivm_isolate_free(ivm_isolate_t* iso) {
  if (iso == nullptr) return;
  // The isolate may now be torn down on any thread (when its last context or
  // reference goes): this thread's parked lock goes first (never waits).
  if (iso->holder) {   // (an isolate in a worker has no inline engine)
    iso->holder->Orphan();
    try {
      ivm::GiveBackThreadLock(*iso->holder);
      // Kept alive by others (contexts, References): collect its garbage once, so that
      // the References it holds into other isolates go (ivm::EnqueueCollect).
      if (iso->holder.use_count() > 1 && !iso->holder->disposed()) ivm::EnqueueCollect(iso->holder);
    } catch (...) {
    }
  }
  ivm::FreeHandle(iso);
}

IVM_API ivm_error_t* ivm_isolate_heap_statistics(ivm_isolate_t* iso, ivm_heap_statistics_t* out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || out == nullptr) return InvalidArgument("isolate or out is NULL");
    if (!ivm::ValidStructSize(out->struct_size)) return InvalidArgument("bad struct_size");
    ivm_heap_statistics_t full{};
    ivm_error_t* err = iso->remote ? ivm::remote::HeapStatistics(iso->remote, &full)
                                   : ivm::ReadHeapStatistics(*iso->holder, &full);
    if (err) return err;
    size_t size = out->struct_size;
    full.struct_size = size;
    std::memcpy(out, &full, std::min(size, sizeof full));
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_isolate_heap_statistics_async(ivm_isolate_t* iso, ivm_done_fn done,
                                                       void* user_data, uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || done == nullptr) return InvalidArgument("isolate or done is NULL");
    if (iso->remote) return ivm::remote::HeapStatisticsAsync(iso->remote, done, user_data, job_out);
    std::shared_ptr<ivm::IsolateHolder> holder = iso->holder;
    return ivm::Enqueue(
        holder, IVM_COMPLETION_HEAP_STATISTICS, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          auto stats = std::make_unique<ivm_heap_statistics_t>();
          if (ivm_error_t* err = ivm::ReadHeapStatistics(*holder, stats.get())) return err;
          stats->struct_size = sizeof *stats;
          c->result.heap_statistics = stats.release();
          return nullptr;
        },
        job_out);
  });
}

IVM_API void ivm_heap_statistics_free(ivm_heap_statistics_t* stats) { delete stats; }

IVM_API void ivm_isolate_cancel_job(ivm_isolate_t* iso, uint64_t job) {
  if (iso == nullptr) return;
  try {
    if (iso->remote) return ivm::remote::CancelJob(*iso->remote, job);
    iso->holder->jobs().Cancel(job);
  } catch (...) {
  }
}

IVM_API void ivm_isolate_times(const ivm_isolate_t* iso, uint64_t* cpu_ns_out,
                               uint64_t* wall_ns_out) {
  if (iso == nullptr) {
    if (cpu_ns_out) *cpu_ns_out = 0;
    if (wall_ns_out) *wall_ns_out = 0;
    return;
  }
  if (iso->remote) return iso->remote->Times(cpu_ns_out, wall_ns_out);
  iso->holder->Times(cpu_ns_out, wall_ns_out);
}

IVM_API uint64_t ivm_isolate_reference_count(const ivm_isolate_t* iso) {
  if (iso != nullptr && iso->remote) return iso->remote->live_objects().load();
  return iso ? iso->holder->ReferenceCount() : 0;
}

}  // extern "C"
