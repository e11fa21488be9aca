// promise_wait.cc — a call that waits for its result's promise to settle
// (IVM_RESULT_PROMISE).
//
// A synchronous call, or a call nested inside another, waits on its thread:
// it runs the isolate's tasks and microtasks until the promise settles,
// and the due timers of its context (timer_table.cc), napping briefly (10 µs
// doubling to 1 ms) when nothing is ready, and checks
// after each step whether it was stopped. An asynchronous job's outermost
// call parks instead (JobQueue, job_queue.cc): a reaction on the promise
// wakes the job, whose continuation re-enters the isolate and finishes the
// call as if it had waited. Either way the call's timeout covers the whole
// wait, and a rejection fails the call with its JavaScript error.
#include "context.h"
#include "timer_table.h"

#include <ctime>

namespace ivm {

namespace {

// The promise reaction of a parked job: wakes it (its id is the data).
void OnSettled(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  auto* holder = static_cast<IsolateHolder*>(isolate->GetData(0));
  v8::Local<v8::Value> data = info.Data();
  if (holder == nullptr || !data->IsBigInt()) return;
  holder->jobs().Wake(data.As<v8::BigInt>()->Uint64Value());
}

// The continuation of a parked job.
ivm_error_t* Resume(const std::shared_ptr<IsolateHolder>& holder,
                    const std::shared_ptr<ParkedPromise>& parked, ivm_value_t** out) {
  struct Drop {
    const std::shared_ptr<IsolateHolder>& holder;
    const std::shared_ptr<ParkedPromise>& parked;
    ~Drop() { holder->Release(parked); }
  } drop{holder, parked};
  if (parked->cancelled.load()) return MakeError(IVM_ERROR_CANCELLED, "The call was cancelled");
  uint64_t timeout_ns = 0;
  if (parked->deadline_ns != 0) {
    int64_t left = parked->deadline_ns - MonotonicNs();
    if (parked->timed_out.load() || left <= 0) return MakeError(IVM_ERROR_TIMEOUT, kTimeoutMessage);
    timeout_ns = static_cast<uint64_t>(left);
  }
  return RunInContext(*holder, timeout_ns, *parked, kDisposedMessage,
                      [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                          v8::TryCatch& try_catch, CallState& call) -> ivm_error_t* {
    v8::Local<v8::Value> promise = parked->promise.Get(isolate);
    return CompleteCall(*holder, isolate, context, try_catch, call, promise, parked->flags, out);
  });
}

}  // namespace

bool CanPark(IsolateHolder& holder, const CallState& call) {
  return call.job_id != 0 && pool::CurrentHolder() == &holder && holder.depth() == 1;
}

bool Park(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
          const CallState& call, v8::Local<v8::Promise> promise, uint32_t flags) {
  auto parked = std::make_shared<ParkedPromise>();
  parked->promise.Reset(isolate, promise);
  parked->context.Reset(isolate, context);
  parked->flags = flags;
  parked->deadline_ns = call.deadline_ns;
  v8::Local<v8::Function> on_settled;
  if (!v8::Function::New(context, OnSettled, v8::BigInt::NewFromUnsigned(isolate, call.job_id))
           .ToLocal(&on_settled) ||
      promise->Then(context, on_settled, on_settled).IsEmpty()) {
    return false;   // stopped meanwhile (a timeout, say): the caller finds out
  }
  holder.Register(parked);
  holder.jobs().ExpectPark(call.job_id, parked);
  std::shared_ptr<IsolateHolder> self = holder.shared_from_this();
  pool::Park([self, parked](ivm_completion_t* c) -> ivm_error_t* {
    return Resume(self, parked, &c->result.value);
  });
  return true;
}

ivm_error_t* WaitForPromise(IsolateHolder& holder, v8::Isolate* isolate,
                            v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                            const CallState& call, v8::Local<v8::Promise> promise) {
  int64_t nap_ns = 10 * 1000;
  while (promise->State() == v8::Promise::kPending) {
    holder.PumpTasks(call);
    if (!holder.Stopped(call)) isolate->PerformMicrotaskCheckpoint();
    bool timers_ran = !holder.Stopped(call) && RunDueTimers(isolate, context, call);
    holder.CheckExternalMemory();
    if (try_catch.HasTerminated() || isolate->IsExecutionTerminating() || holder.Stopped(call)) {
      return holder.Fail(context, try_catch, call);
    }
    if (promise->State() != v8::Promise::kPending) break;
    if (timers_ran) {   // more may be due at once
      nap_ns = 10 * 1000;
      continue;
    }
    // Nothing ready: wait for delayed tasks, background work or the deadline.
    timespec ts{0, static_cast<long>(nap_ns)};
    nanosleep(&ts, nullptr);
    nap_ns = std::min<int64_t>(nap_ns * 2, 1000 * 1000);
  }
  if (promise->State() == v8::Promise::kRejected) {
    return ErrorFromValue(isolate, context, promise->Result(),
                          v8::Exception::CreateMessage(isolate, promise->Result()));
  }
  return nullptr;
}

}  // namespace ivm
