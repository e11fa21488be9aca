// job_queue.cc — the jobs of one isolate: a FIFO of queued jobs served by the
// pool, the running one (cancellation), and parked jobs.
//
// Parking. A job whose call waits for a promise (IVM_RESULT_PROMISE) does not
// hold its pool thread while the promise is pending: its call ends, the job
// moves to `waiting_`, and the isolate takes other calls (a synchronous call
// from an async host callback included). The job is woken, and queued again
// at the back of the FIFO, when its promise settles (a reaction on the
// promise calls Wake), when its deadline passes (Expire), or when it is
// cancelled; its continuation then reports the outcome. While jobs are
// parked, a poll timer queues pump jobs (backing off from kPollMinNs to
// kPollMaxNs) so that work V8 finishes in the background (WebAssembly
// compilation, Atomics.waitAsync) reaches the isolate.
#include "internal.h"

#include <algorithm>

namespace ivm {

namespace {
constexpr int kBatch = 32;   // jobs per turn on a pool thread
constexpr int64_t kPollMinNs = 100 * 1000;
constexpr int64_t kPollMaxNs = 4 * 1000 * 1000;
}  // namespace

void JobQueue::PushLocked(std::unique_ptr<Job> job, bool* schedule) {
  queue_.push_back(std::move(job));
  if (!scheduled_) scheduled_ = *schedule = true;
}

void JobQueue::Submit(std::unique_ptr<Job> job) {
  // A thread that makes only asynchronous calls now (an event loop's) still disposes of
  // the isolate it kept entered, once disposed elsewhere (isolate_entry.cc).
  FinishHandedOverEntry();
  if (holder_.disposed()) {
    job->Fail(MakeError(IVM_ERROR_DISPOSED, kDisposedMessage));
    return;
  }
  bool schedule = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    PushLocked(std::move(job), &schedule);
  }
  if (schedule) pool::Schedule(holder_.shared_from_this());
  // A disposal that raced with the push must not strand the job.
  if (holder_.disposed()) FailAll(IVM_ERROR_DISPOSED, kDisposedMessage);
}

bool JobQueue::Serve() {
  // A bounded batch, then back of the line: isolates share the pool fairly.
  for (int i = 0; i < kBatch; ++i) {
    std::unique_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty()) {
        scheduled_ = false;
        pool::NoteFinishing();
        return false;
      }
      job = std::move(queue_.front());
      queue_.pop_front();
      running_job_ = job->id();
      running_pump_ = job->pump;
    }
    pool::SetCurrentJob(job->id(), &holder_);
    job->Run();
    pool::SetCurrentJob(0, nullptr);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_job_ = 0;
      running_pump_ = false;
    }
    holder_.ClearCancelRunning();
    if (job->parked()) {
      Park(std::move(job));
    } else {
      // A call that prepared to park but failed after all (e.g. it ran out
      // of memory while unwinding) leaves its entry behind.
      std::shared_ptr<ParkedPromise> stale;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = waiting_.find(job->id());
        if (it != waiting_.end()) {
          stale = std::move(it->second.promise);
          waiting_.erase(it);
        }
      }
      if (stale) holder_.Release(stale);
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (queue_.empty()) {
    scheduled_ = false;
    pool::NoteFinishing();
    return false;
  }
  return true;
}

void JobQueue::Cancel(uint64_t job_id) {
  if (job_id == 0) return;
  std::unique_ptr<Job> dropped;
  bool running = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = std::find_if(queue_.begin(), queue_.end(),
                           [&](const std::unique_ptr<Job>& j) { return j->id() == job_id; });
    if (it != queue_.end()) {
      dropped = std::move(*it);
      queue_.erase(it);
    } else if (auto w = waiting_.find(job_id); w != waiting_.end()) {
      w->second.promise->cancelled.store(true);
      StopPumpLocked();
      WakeLocked(w);
      return;
    } else {
      running = running_job_ == job_id;
    }
  }
  if (dropped) {
    dropped->Fail(MakeError(IVM_ERROR_CANCELLED, "The call was cancelled"));
  } else if (running) {
    holder_.CancelRunning(job_id);
  }
}

void JobQueue::FailAll(ivm_error_kind_t kind, const char* message) {
  std::deque<std::unique_ptr<Job>> jobs;
  std::vector<uint64_t> timers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs.swap(queue_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (it->second.job) {
        jobs.push_back(std::move(it->second.job));
        timers.push_back(it->second.timer);
        it = waiting_.erase(it);
      } else {
        ++it;   // its job is running: it fails when it tries to park
      }
    }
  }
  for (uint64_t t : timers) timers::Disarm(t);
  for (auto& job : jobs) job->Fail(MakeError(kind, message));
}

void JobQueue::ExpectPark(uint64_t job_id, std::shared_ptr<ParkedPromise> promise) {
  std::lock_guard<std::mutex> lock(mutex_);
  Waiting& w = waiting_[job_id];
  w.promise = std::move(promise);
  w.woken = false;
}

void JobQueue::Park(std::unique_ptr<Job> job) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto it = waiting_.find(job->id());
  if (it == waiting_.end() || holder_.disposed()) {
    // Disposed while the call was ending (FailAll left it to us). Failed
    // outside the lock, as FailAll fails its jobs: its done callback may
    // submit (a worker's Ops::Done takes Ops' mutex, which Ops::Submit holds
    // while Submit takes this one).
    if (it != waiting_.end()) waiting_.erase(it);
    lock.unlock();
    job->Fail(MakeError(IVM_ERROR_DISPOSED, kDisposedMessage));
    return;
  }
  Waiting& w = it->second;
  w.job = std::move(job);
  if (w.woken) {   // settled while the call was ending
    WakeLocked(it);
    return;
  }
  if (int64_t deadline = w.promise->deadline_ns) {
    std::weak_ptr<IsolateHolder> weak = holder_.weak_from_this();
    uint64_t id = w.job->id();
    w.timer = timers::Arm(deadline, [weak, id] {
      if (auto h = weak.lock()) h->jobs().Expire(id);
    });
  }
  poll_interval_ns_ = kPollMinNs;
  ArmPollLocked();
}

void JobQueue::WakeLocked(std::unordered_map<uint64_t, Waiting>::iterator it) {
  Waiting& w = it->second;
  if (!w.job) {
    w.woken = true;   // Park() queues it once the call has ended
    return;
  }
  timers::Disarm(w.timer);
  bool schedule = false;
  PushLocked(std::move(w.job), &schedule);
  waiting_.erase(it);
  poll_interval_ns_ = kPollMinNs;
  if (schedule) pool::Schedule(holder_.shared_from_this());
}

void JobQueue::Wake(uint64_t job_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = waiting_.find(job_id);
  if (it != waiting_.end()) WakeLocked(it);
}

void JobQueue::Expire(uint64_t job_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = waiting_.find(job_id);
  if (it == waiting_.end()) return;
  it->second.promise->timed_out.store(true);
  StopPumpLocked();
  WakeLocked(it);
}

void JobQueue::StopPumpLocked() {
  // JavaScript that a pump job runs (reactions to a parked promise, say) ran
  // under the waiting call's limits before parking existed: stop it.
  if (running_pump_) holder_.CancelRunning(running_job_);
}

void JobQueue::ArmPollLocked() {
  if (poll_armed_) return;
  poll_armed_ = true;
  std::weak_ptr<IsolateHolder> weak = holder_.weak_from_this();
  timers::Arm(MonotonicNs() + poll_interval_ns_, [weak] {
    if (auto h = weak.lock()) h->jobs().Poll();
  });
}

void JobQueue::Poll() {
  bool pump = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    poll_armed_ = false;
    bool parked = std::any_of(waiting_.begin(), waiting_.end(),
                              [](const auto& entry) { return entry.second.job != nullptr; });
    if (!parked || holder_.disposed()) return;
    pump = queue_.empty() && running_job_ == 0;   // a running call pumps by itself
    poll_interval_ns_ = std::min(poll_interval_ns_ * 2, kPollMaxNs);
    ArmPollLocked();
  }
  if (pump) EnqueuePump(holder_.shared_from_this());
}

}  // namespace ivm
