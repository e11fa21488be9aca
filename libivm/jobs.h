// jobs.h — asynchronous jobs: the Job (one queued call, reported exactly
// once), each isolate's JobQueue (FIFO, with parked jobs waiting on promises)
// and the shared pool of native threads that serves the queues (pool.cc,
// job_queue.cc). Nothing here is ABI.
#ifndef IVM_JOBS_H
#define IVM_JOBS_H

#include "ivm.h"

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace ivm {

class IsolateHolder;
class CompletionQueue;
struct ParkedPromise;

// One asynchronous job, queued on an isolate and run by the pool. Its outcome
// is reported exactly once through the caller's ivm_done_fn.
class Job {
 public:
  // Sets the member of `completion->result` that the job's kind names, or
  // returns an error (and leaves it unset or frees it).
  using Work = std::function<ivm_error_t*(ivm_completion_t* completion)>;
  // `kind`: the IVM_COMPLETION_* of the job's result (NONE for internal jobs
  // that have none).
  Job(ivm_completion_kind_t kind, ivm_done_fn done, void* user_data, Work work);
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  uint64_t id() const { return id_; }
  // Does the work (or, for a parked job, its continuation) and reports the
  // outcome, unless the work parked the job (pool::Park): then it reports
  // when it resumes.
  void Run();
  // Reports `error` instead of running.
  void Fail(ivm_error_t* error);
  bool parked() const { return parked_; }
  // A job that only runs the isolate's pending tasks and microtasks on behalf
  // of parked jobs: stopped when one of them expires or is cancelled.
  bool pump = false;

 private:
  void Report(ivm_completion_t& completion);
  uint64_t id_;
  ivm_completion_kind_t kind_;
  ivm_done_fn done_;
  void* user_data_;
  Work work_;       // kept until the job reports: it owns what the call uses
  Work resume_;     // set while parked: finishes the job
  bool parked_ = false;
  CompletionQueue* queue_ = nullptr;   // user_data_, when done_ is the queue's
  bool reported_ = false;
};

// Queues `work` as a job of `holder` whose result is of `kind` and that
// reports through `done`; writes its id to `job_out` (may be NULL). Returns
// NULL (the job is queued).
ivm_error_t* Enqueue(const std::shared_ptr<IsolateHolder>& holder, ivm_completion_kind_t kind,
                     ivm_done_fn done, void* user_data, Job::Work work, uint64_t* job_out);
// Queues `work` as a job of `holder` whose outcome is dropped (libivm's own
// jobs: timers, pumps, collections).
void EnqueueInternal(const std::shared_ptr<IsolateHolder>& holder, Job::Work work,
                     bool pump = false);
// Queues a job that runs `holder`'s pending foreground tasks and microtasks
// (deferred results, parked promises). Its outcome is dropped.
void EnqueuePump(const std::shared_ptr<IsolateHolder>& holder);
// Queues a job that runs a full garbage collection in `holder`'s isolate (its
// outcome is dropped): for an isolate whose handle was freed while other
// isolates' References keep it alive. Nothing else may ever run there to
// collect the garbage References it holds into other isolates, and two such
// isolates would keep each other alive for ever.
void EnqueueCollect(const std::shared_ptr<IsolateHolder>& holder);

// Frees what a completion owns (its result, by kind, and its error): for
// outcomes nobody will receive.
void FreeCompletion(const ivm_completion_t& completion);

// The jobs of one isolate: a FIFO of queued jobs, the one running, and the
// parked ones (waiting for a promise, holding no thread).
class JobQueue {
 public:
  explicit JobQueue(IsolateHolder& holder) : holder_(holder) {}
  // Queues `job`; the shared pool runs it. Fails it at once with DISPOSED
  // when the isolate is disposed.
  void Submit(std::unique_ptr<Job> job);
  // Drops a queued job (reported as CANCELLED), wakes a parked one to report
  // CANCELLED, or stops a running one.
  void Cancel(uint64_t job_id);
  // Pool thread: runs a batch of queued jobs; returns true if more remain.
  bool Serve();
  // Fails every queued and parked job (disposal).
  void FailAll(ivm_error_kind_t kind, const char* message);

  // Parking. The running job `job_id` is about to park on `promise` (called
  // from inside its call, isolate locked): once the job's work returns, the
  // job waits without a thread until Wake().
  void ExpectPark(uint64_t job_id, std::shared_ptr<ParkedPromise> promise);
  // The promise of parked job `job_id` settled (or it expired, or was
  // cancelled: see ParkedPromise): queue its continuation. Any thread.
  void Wake(uint64_t job_id);
  // The watchdog: parked job `job_id` ran out of time.
  void Expire(uint64_t job_id);

 private:
  struct Waiting {
    std::shared_ptr<ParkedPromise> promise;
    std::unique_ptr<Job> job;   // null until the job's work has returned
    bool woken = false;
    uint64_t timer = 0;
  };
  void Park(std::unique_ptr<Job> job);
  void WakeLocked(std::unordered_map<uint64_t, Waiting>::iterator it);
  void PushLocked(std::unique_ptr<Job> job, bool* schedule);
  void StopPumpLocked();
  void Poll();
  void ArmPollLocked();

  IsolateHolder& holder_;
  std::mutex mutex_;
  std::deque<std::unique_ptr<Job>> queue_;
  bool scheduled_ = false;          // in the pool's ready list or being served
  uint64_t running_job_ = 0;
  bool running_pump_ = false;
  std::unordered_map<uint64_t, Waiting> waiting_;
  bool poll_armed_ = false;
  int64_t poll_interval_ns_ = 0;
};

namespace pool {
// Asks a pool thread to serve `holder`'s queue.
void Schedule(std::shared_ptr<IsolateHolder> holder);
// Wakes every sleeping pool thread, so that each gives back the parked lock
// it could not give back before it slept (WaitForPoolLocks).
void WakeIdle();
// The job the current thread is running (0 outside pool jobs).
uint64_t CurrentJob();
// The isolate whose job the current thread runs (nullptr outside jobs).
IsolateHolder* CurrentHolder();
void SetCurrentJob(uint64_t job_id, IsolateHolder* holder);
// Pool thread, with the ending queue's lock held: the queue it serves just ran
// empty, and this thread is on its way back to the ready list (Schedule counts
// it as coming rather than waking another thread for the next job).
void NoteFinishing();
// From inside the current job's work: park the job; `resume` finishes it
// later (JobQueue::Wake queues it again).
void Park(Job::Work resume);
}  // namespace pool

}  // namespace ivm

#endif  // IVM_JOBS_H
