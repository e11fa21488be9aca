// timer_table.cc — the timers of one context and what runs them
// (docs/host.md, "Timers").
//
// Ordering: timers run in order of due time, then of creation (a repeating
// timer counts as created anew each time it is rescheduled).
//
// Where a due timer runs:
// - In a call waiting for its promise on its thread (a synchronous call, or
//   one nested in a host callback): WaitForPromise runs its context's due
//   timers (RunDueTimers), under that call's timeout.
// - Otherwise in a timer job: the process's timer thread (timers.cc) queues
//   one job on the isolate's FIFO when the context's earliest timer is due;
//   no thread waits meanwhile. The job runs the timers due then (at most
//   kBatch; the rest in a later job, at the back of the queue), each as a call
//   of its own whose timeout is what is left of the timer's deadline, or
//   kUndeadlinedNs for a timer without one. While a synchronous call holds
//   the isolate the job does not wait for it: it tries again later (1 ms,
//   doubling to 16 ms).
//
// Deadlines: a timer inherits the deadline of the call that set it (or of
// the timer whose callback set it), so everything a call with a timeout
// starts ends by that call's deadline: a timer that would come due after it
// never runs, and an endless setInterval ends there.
#include "timer_table.h"

#include "context.h"

#include <algorithm>

namespace ivm {

namespace {
constexpr size_t kBatch = 64;
constexpr int64_t kMs = 1000 * 1000;
constexpr int64_t kRetryMaxNs = 16 * kMs;
// The timeout of the job that reports a timed-out callback (ReportTimedOut).
constexpr uint64_t kReportNs = 1000 * kMs;
// HTML's timer nesting: past 5 levels, shorter delays become 4 ms.
constexpr int kNestingLimit = 5;
constexpr int64_t kNestedMinNs = 4 * kMs;

v8::Local<v8::Private> AnchorKey(v8::Isolate* isolate) {
  return v8::Private::ForApi(
      isolate, v8::String::NewFromUtf8Literal(isolate, "ivm:timers",
                                              v8::NewStringType::kInternalized));
}
}  // namespace

v8::MaybeLocal<v8::Object> TimerTable::Create(IsolateHolder& holder, v8::Isolate* isolate,
                                              v8::Local<v8::Context> context) {
  v8::Local<v8::ObjectTemplate> tpl = v8::ObjectTemplate::New(isolate);
  tpl->SetInternalFieldCount(1);
  v8::Local<v8::Object> anchor;
  if (!tpl->NewInstance(context).ToLocal(&anchor)) return {};
  std::shared_ptr<TimerTable> table(new TimerTable(holder));
  table->self_ = table;
  table->weak_holder_ = holder.weak_from_this();
  if (!context->Global()->SetPrivate(context, AnchorKey(isolate), anchor).FromMaybe(false)) {
    return {};
  }
  anchor->SetAlignedPointerInInternalField(0, table.get());
  table->context_.Reset(isolate, context);
  table->anchor_.Reset(isolate, anchor);
  holder.Register(table, false);
  return anchor;
}

TimerTable* TimerTable::FromAnchor(v8::Local<v8::Value> anchor) {
  if (anchor.IsEmpty() || !anchor->IsObject()) return nullptr;
  v8::Local<v8::Object> obj = anchor.As<v8::Object>();
  if (obj->InternalFieldCount() != 1) return nullptr;
  return static_cast<TimerTable*>(obj->GetAlignedPointerFromInternalField(0));
}

TimerTable* TimerTable::Of(v8::Isolate* isolate, v8::Local<v8::Context> context) {
  v8::Local<v8::Value> anchor;
  if (!context->Global()->GetPrivate(context, AnchorKey(isolate)).ToLocal(&anchor)) {
    return nullptr;
  }
  return FromAnchor(anchor);
}

TimerTable::~TimerTable() { timers::Disarm(armed_id_); }

uint64_t TimerTable::Add(v8::Isolate* isolate, const Request& r) {
  if (timers_.size() >= kMaxPending) return 0;
  const CallState* call = holder_.CurrentCall();
  Timer t;
  // Inside a timer's callback, its deadline; otherwise the running call's.
  bool in_timer = running_call_ != nullptr && running_call_ == call;
  t.deadline_ns = in_timer ? running_deadline_ : (call != nullptr ? call->deadline_ns : 0);
  int parent = in_timer ? running_nesting_ : 0;
  int64_t delay_ns = r.delay_ms * kMs;
  if (!r.immediate && parent > kNestingLimit) delay_ns = std::max(delay_ns, kNestedMinNs);
  t.nesting = parent + 1;
  t.interval_ns = delay_ns;
  t.repeat = r.repeat;
  t.due_ns = MonotonicNs() + delay_ns;
  uint64_t id = next_id_++;
  // Due after its deadline: it would never run (clearing it is a no-op).
  if (t.deadline_ns != 0 && t.due_ns > t.deadline_ns) return id;
  t.fn.Reset(isolate, r.fn);
  if (!r.args.IsEmpty()) t.args.Reset(isolate, r.args);
  Insert(id, timers_.emplace(id, std::move(t)).first->second);
  return id;
}

void TimerTable::Insert(uint64_t id, Timer& timer) {
  timer.seq = next_seq_++;
  auto it = order_.emplace(timer.due_ns, timer.seq, id).first;
  if (it == order_.begin()) Rearm();
}

void TimerTable::Clear(v8::Isolate*, uint64_t id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  order_.erase(Key(it->second.due_ns, it->second.seq, id));
  timers_.erase(it);   // (its Globals reset: the isolate is locked)
}

std::vector<uint64_t> TimerTable::DueNow(size_t limit) const {
  std::vector<uint64_t> due;
  int64_t now = MonotonicNs();
  for (auto it = order_.begin(); it != order_.end() && due.size() < limit; ++it) {
    if (std::get<0>(*it) > now) break;
    due.push_back(std::get<2>(*it));
  }
  return due;
}

void TimerTable::Fire(v8::Isolate* isolate, v8::Local<v8::Context> context,
                      const CallState& call, v8::TryCatch& try_catch, uint64_t id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;   // cleared by an earlier callback
  Timer& t = it->second;
  order_.erase(Key(t.due_ns, t.seq, id));
  int64_t started = MonotonicNs();
  if (t.deadline_ns != 0 && started >= t.deadline_ns) {   // its call's time is up
    timers_.erase(it);
    return;
  }
  v8::Local<v8::Function> fn = t.fn.Get(isolate);
  std::vector<v8::Local<v8::Value>> argv;
  if (!t.args.IsEmpty()) {
    v8::Local<v8::Array> args = t.args.Get(isolate);
    argv.resize(args->Length());
    for (uint32_t i = 0; i < argv.size(); ++i) {
      if (!args->Get(context, i).ToLocal(&argv[i])) argv[i] = v8::Undefined(isolate);
    }
  }
  bool repeat = t.repeat;
  running_call_ = &call;   // until the caller's Running ends (after the microtasks)
  running_deadline_ = t.deadline_ns;
  running_nesting_ = t.nesting;
  if (!repeat) timers_.erase(it);   // `t` is gone
  v8::MaybeLocal<v8::Value> result =
      fn->Call(context, context->Global(), static_cast<int>(argv.size()), argv.data());
  if (try_catch.HasTerminated() || isolate->IsExecutionTerminating() || holder_.Stopped(call)) {
    if (repeat) Clear(isolate, id);   // stopped: an interval ends
    return;
  }
  if (result.IsEmpty() && try_catch.HasCaught()) {
    ReportCallbackError(isolate, context, try_catch.Exception());
    try_catch.Reset();
  }
  if (repeat) Reschedule(id, started);
}

void TimerTable::Reschedule(uint64_t id, int64_t started_ns) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;   // its callback cleared it
  Timer& t = it->second;
  if (t.nesting > kNestingLimit) t.interval_ns = std::max(t.interval_ns, kNestedMinNs);
  ++t.nesting;
  t.due_ns = started_ns + t.interval_ns;
  if (t.deadline_ns != 0 && t.due_ns > t.deadline_ns) {
    timers_.erase(it);
    return;
  }
  Insert(id, t);
}

bool TimerTable::RunDue(v8::Isolate* isolate, v8::Local<v8::Context> context,
                        const CallState& call) {
  if (order_.empty() || std::get<0>(*order_.begin()) > MonotonicNs()) return false;
  for (uint64_t id : DueNow(kBatch)) {
    if (holder_.Stopped(call) || isolate->IsExecutionTerminating() || closed_.load()) break;
    v8::HandleScope scope(isolate);
    v8::TryCatch try_catch(isolate);
    Running running(*this);
    Fire(isolate, context, call, try_catch, id);
    if (!holder_.Stopped(call) && !try_catch.HasTerminated()) {
      isolate->PerformMicrotaskCheckpoint();
    }
  }
  Rearm();
  return true;
}

bool RunDueTimers(v8::Isolate* isolate, v8::Local<v8::Context> context, const CallState& call) {
  TimerTable* table = TimerTable::Of(isolate, context);
  return table != nullptr && table->RunDue(isolate, context, call);
}

void TimerTable::Rearm() {
  if (closed_.load()) return;
  int64_t earliest = order_.empty() ? 0 : std::get<0>(*order_.begin());
  std::lock_guard<std::mutex> lock(mutex_);
  if (earliest == 0 || job_queued_) return;   // a queued job rearms when it has run
  ArmLocked(earliest);
}

void TimerTable::ArmLocked(int64_t due_ns) {
  if (closed_.load() || (armed_id_ != 0 && armed_due_ <= due_ns)) return;
  timers::Disarm(armed_id_);
  std::weak_ptr<TimerTable> weak = self_;
  armed_due_ = due_ns;
  armed_id_ = timers::Arm(due_ns, [weak] {
    if (std::shared_ptr<TimerTable> table = weak.lock()) table->OnDue();
  });
}

void TimerTable::OnDue() {
  std::shared_ptr<IsolateHolder> holder;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_id_ = 0;
    armed_due_ = 0;
    if (closed_.load() || job_queued_) return;
    holder = weak_holder_.lock();
    if (!holder || holder->disposed()) return;
    job_queued_ = true;
  }
  std::weak_ptr<TimerTable> weak = self_;
  std::weak_ptr<IsolateHolder> weak_holder = holder;   // a queued job keeps nothing alive
  EnqueueInternal(holder, [weak, weak_holder](ivm_completion_t*) -> ivm_error_t* {
    std::shared_ptr<IsolateHolder> h = weak_holder.lock();
    std::shared_ptr<TimerTable> table = weak.lock();
    if (h && table && !h->disposed()) table->RunJob(h);
    return nullptr;
  });
}

void TimerTable::RunJob(const std::shared_ptr<IsolateHolder>& holder) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_queued_ = false;
    if (closed_.load()) return;
  }
  // A synchronous call holds the isolate (it runs the timers itself if it
  // waits for a promise): come back later rather than hold this thread.
  std::unique_lock<std::recursive_timed_mutex> busy(holder->exec_mutex(), std::try_to_lock);
  if (!busy.owns_lock()) {
    std::lock_guard<std::mutex> lock(mutex_);
    retry_ns_ = std::min(retry_ns_ == 0 ? kMs : retry_ns_ * 2, kRetryMaxNs);
    ArmLocked(MonotonicNs() + retry_ns_);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    retry_ns_ = 0;
  }
  for (uint64_t id : DueNow(kBatch)) {
    if (closed_.load() || holder->disposed()) return;
    if (ivm_error_t* err = RunOne(id)) {
      ivm_error_kind_t kind = err->kind;
      if (kind == IVM_ERROR_TIMEOUT) ReportTimedOut(err->message);
      ivm_error_free(err);
      if (kind == IVM_ERROR_DISPOSED || kind == IVM_ERROR_MEMORY_LIMIT) return;
    }
  }
  if (!holder->disposed()) Rearm();
}

ivm_error_t* TimerTable::RunOne(uint64_t id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return nullptr;
  uint64_t timeout_ns = kUndeadlinedNs;
  if (int64_t deadline = it->second.deadline_ns) {
    int64_t left = deadline - MonotonicNs();
    timeout_ns = left > 0 ? static_cast<uint64_t>(left) : 0;   // 0: Fire drops it, runs nothing
  }
  return holder_.Run(timeout_ns, [&](v8::Isolate* isolate, CallState& call) -> ivm_error_t* {
    if (closed_.load()) return nullptr;
    v8::Local<v8::Context> context = context_.Get(isolate);
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    {
      Running running(*this);
      Fire(isolate, context, call, try_catch, id);
      if (!holder_.Stopped(call) && !try_catch.HasTerminated()) {
        isolate->PerformMicrotaskCheckpoint();
      }
    }
    holder_.CheckExternalMemory();
    if (try_catch.HasTerminated() || isolate->IsExecutionTerminating() || holder_.Stopped(call)) {
      return holder_.Fail(context, try_catch, call);
    }
    FlushRejections(holder_, isolate, context, call);
    return nullptr;
  });
}

void TimerTable::ReportTimedOut(const std::string& why) {
  // No call waits for a timer job: what stopped its callback is reported as
  // what it threw would be, an unhandled rejection of its context (an Error
  // made now, under a short timeout of its own).
  ivm_error_t* err = holder_.Run(kReportNs, [&](v8::Isolate* isolate, CallState& call) -> ivm_error_t* {
    if (closed_.load()) return nullptr;
    v8::Local<v8::Context> context = context_.Get(isolate);
    v8::Context::Scope context_scope(context);
    std::string text = "a timer's callback was stopped by its timeout: " + why;
    v8::Local<v8::String> message;
    if (!v8::String::NewFromUtf8(isolate, text.data(), v8::NewStringType::kNormal,
                                 static_cast<int>(text.size()))
             .ToLocal(&message)) {
      return nullptr;
    }
    ReportCallbackError(isolate, context, v8::Exception::Error(message));
    FlushRejections(holder_, isolate, context, call);
    return nullptr;
  });
  if (err != nullptr) ivm_error_free(err);
}

void TimerTable::Close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_.exchange(true)) return;
    timers::Disarm(armed_id_);
    armed_id_ = 0;
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr && !anchor_.IsEmpty()) {
    v8::HandleScope scope(isolate);
    anchor_.Get(isolate)->SetAlignedPointerInInternalField(0, nullptr);
  }
  anchor_.Reset();
  context_.Reset();
  order_.clear();
  timers_.clear();
}

void CloseTimers(v8::Isolate* isolate, v8::Local<v8::Context> context) {
  TimerTable* table = TimerTable::Of(isolate, context);
  if (table == nullptr) return;
  table->Close();
  table->holder_.ReleaseLater(table);   // freed by the next call (or disposal)
}

void ReportCallbackError(v8::Isolate* isolate, v8::Local<v8::Context> context,
                         v8::Local<v8::Value> exception) {
  // A promise rejected with no handler: the context's rejection tracking
  // (rejections.cc) reports it at the end of the call.
  v8::TryCatch try_catch(isolate);
  v8::Local<v8::Promise::Resolver> resolver;
  if (v8::Promise::Resolver::New(context).ToLocal(&resolver)) {
    resolver->Reject(context, exception).IsJust();
  }
}

}  // namespace ivm
