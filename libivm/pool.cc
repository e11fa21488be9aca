// pool.cc — where asynchronous jobs run: the Job (one queued call and its
// single report) and the shared pool of native threads that serves isolates'
// job queues.
//
// Asynchronous jobs are queued per isolate (FIFO, JobQueue). An isolate with
// queued jobs is put once on the pool's ready list; a pool thread takes it,
// runs a bounded batch of its jobs under the isolate's lock, and puts it back
// at the end of the list if more remain. So at most one thread is inside an
// isolate, jobs of one isolate run in submission order, and no thread exists
// per pending call.
//
// Size. The pool has a base of (cores + 1) threads, started on demand. A job
// that runs long JavaScript holds its thread, so a few slow isolates could
// starve every other isolate's jobs: when an isolate has waited on the ready
// list for kStarvedNs while no thread was free, one more thread starts (and
// again every kStarvedNs while that lasts), up to kGrowthFactor times the
// base. A thread beyond the base that finds no work for kIdleExitNs exits.
#include "internal.h"
#include "completion_queue.h"

#include <condition_variable>
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <sched.h>
#include <string.h>

namespace ivm {

namespace pool {
namespace {

thread_local uint64_t t_job = 0;
thread_local IsolateHolder* t_job_holder = nullptr;
thread_local Job::Work* t_park = nullptr;   // set by Park() during a job's work

struct Ready {
  std::shared_ptr<IsolateHolder> holder;
  int64_t since;   // when it joined the list (MonotonicNs)
};

struct State {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<Ready> ready;
  std::atomic<size_t> ready_count{0};
  int threads = 0;
  int idle = 0;            // threads waiting on cv
  int wakeups = 0;         // of those, notified but not yet awake
  bool spinning = false;   // one idle thread polls before sleeping
  // Threads whose queue just ran empty, on their way back to the ready list
  // (set under a job queue's lock, so atomic; cleared under `mutex`).
  std::atomic<int> finishing{0};
  bool check_armed = false;   // a starvation check is pending (timers)
  uint64_t give_back_calls = 0;   // WakeIdle calls: idle threads give back parked locks
};

// How long an idle pool thread polls for new work before it sleeps: waking a
// sleeping thread costs tens of microseconds on a VM, more than most jobs.
constexpr int64_t kSpinNs = 50 * 1000;
// IVM_POOL_SPIN_NS overrides it (read once; 0: sleep at once). ivm-worker sets
// 30 us (or the host's IVM_WORKER_POOL_SPIN_NS): there the next job comes a
// round trip through the host later.
int64_t SpinNs() {
  static const int64_t spin = [] {
    const char* env = getenv("IVM_POOL_SPIN_NS");
    if (env == nullptr || *env == '\0') return kSpinNs;
    char* end = nullptr;
    long long v = strtoll(env, &end, 10);
    return (*end == '\0' && v >= 0 && v <= 10 * 1000 * 1000) ? static_cast<int64_t>(v) : kSpinNs;
  }();
  return spin;
}
// The poll yields the core between checks (sched_yield) rather than pausing.
// The thread it waits for is often on the same core: the event loop's thread
// that submits the next job, or (in ivm-worker) the host's round trip. A
// pausing poll keeps that thread off the core until the poll ends or the
// kernel preempts it, while a yield lets it run at once and costs about as
// little when nothing else wants the core. On 2 shared cores (load 2.7-3.5) a
// loop of awaited ctx.eval("1+1") took 92-135 us per call with the pausing
// poll and 21-22 us with the yielding one, for a third of the CPU time.
// IVM_POOL_SPIN_YIELD=0 restores the pausing poll (read once).
bool SpinYields() {
  static const bool yields = [] {
    const char* env = getenv("IVM_POOL_SPIN_YIELD");
    return env == nullptr || strcmp(env, "0") != 0;
  }();
  return yields;
}
constexpr int kExtraThreads = 1;   // base threads = cores + 1
constexpr int kGrowthFactor = 8;   // at most 8 x base threads
constexpr int64_t kStarvedNs = 10 * 1000 * 1000;
constexpr int64_t kIdleExitNs = 5ll * 1000 * 1000 * 1000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

State& state() {
  static State* s = new State();   // leaked: pool threads outlive static destruction
  return *s;
}

int BaseThreads() {
  // hardware_concurrency() reads /sys on every call: once is enough.
  static const int base =
      static_cast<int>(std::max(2u, std::thread::hardware_concurrency())) + kExtraThreads;
  return base;
}

void Push(State& s, std::shared_ptr<IsolateHolder> holder) {
  s.ready.push_back(Ready{std::move(holder), MonotonicNs()});
  s.ready_count.fetch_add(1, std::memory_order_release);
}

// Gives back this thread's parked lock on the isolate it served last, if it
// still exists (GiveBackThreadLock); `last` is kept if it could not.
void LeaveIsolate(std::weak_ptr<IsolateHolder>& last) {
  std::shared_ptr<IsolateHolder> holder = last.lock();
  if (!holder || GiveBackThreadLock(*holder)) last.reset();
}

// Waits (lock held) until the ready list has work. Returns false when this
// thread, one beyond the base, has been idle long enough to exit. Before it
// sleeps, the thread leaves the isolate it served `last`.
bool WaitForWork(State& s, std::unique_lock<std::mutex>& lock,
                 std::weak_ptr<IsolateHolder>& last) {
  bool leave = true;
  uint64_t calls_seen = s.give_back_calls;
  while (s.ready.empty()) {
    if (!s.spinning) {
      s.spinning = true;
      lock.unlock();
      int64_t until = MonotonicNs() + SpinNs();
      while (s.ready_count.load(std::memory_order_acquire) == 0 && MonotonicNs() < until) {
        if (SpinYields()) {
          sched_yield();
        } else {
          CpuRelax();
        }
      }
      lock.lock();
      s.spinning = false;
      if (!s.ready.empty()) break;
    }
    if (leave || calls_seen != s.give_back_calls) {
      calls_seen = s.give_back_calls;
      lock.unlock();
      LeaveIsolate(last);
      GiveBackRequestedLocks();
      lock.lock();
      leave = false;
      continue;   // work may have come meanwhile
    }
    ++s.idle;
    bool timed_out = false;
    if (s.threads > BaseThreads()) {
      timed_out = s.cv.wait_for(lock, std::chrono::nanoseconds(kIdleExitNs)) ==
                  std::cv_status::timeout;
    } else {
      s.cv.wait(lock);
    }
    --s.idle;
    if (s.wakeups > 0) {
      --s.wakeups;
    } else if (timed_out && s.ready.empty() && s.threads > BaseThreads()) {
      --s.threads;
      return false;
    }
  }
  return true;
}

void Worker() {
  State& s = state();
  std::weak_ptr<IsolateHolder> last;   // whose parked lock this thread may keep
  std::unique_lock<std::mutex> lock(s.mutex);
  while (WaitForWork(s, lock, last)) {
    std::shared_ptr<IsolateHolder> holder = std::move(s.ready.front().holder);
    s.ready.pop_front();
    s.ready_count.fetch_sub(1, std::memory_order_relaxed);
    lock.unlock();
    if (last.lock() != holder) {
      LeaveIsolate(last);
      last = holder;
    }
    bool more = holder->jobs().Serve();
    if (!more) {
      if (holder->disposed()) LeaveIsolate(last);
      holder.reset();   // may dispose the isolate: outside the lock
    }
    lock.lock();
    if (more) {
      Push(s, std::move(holder));
    } else {
      s.finishing.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

void ArmStarvationCheck(State& s, int64_t at);

// Timer thread: an isolate has waited while every thread was busy.
void CheckStarvation() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.check_armed = false;
  if (s.ready.empty()) return;
  int64_t now = MonotonicNs();
  int64_t waited = now - s.ready.front().since;
  bool nobody_coming = s.idle <= s.wakeups && !s.spinning;
  if (waited >= kStarvedNs && nobody_coming && s.threads < BaseThreads() * kGrowthFactor) {
    ++s.threads;
    std::thread(Worker).detach();
  }
  ArmStarvationCheck(s, now + kStarvedNs);
}

void ArmStarvationCheck(State& s, int64_t at) {
  if (s.check_armed) return;
  s.check_armed = true;
  timers::Arm(at, CheckStarvation);
}

}  // namespace

void Schedule(std::shared_ptr<IsolateHolder> holder) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  Push(s, std::move(holder));
  // Threads already on their way to the ready list: the polling one (it
  // re-checks under the lock before sleeping) and those woken but not yet
  // running. Each ready isolate needs one; a wake-up is never spent twice.
  // A thread whose queue just ran empty is about to check the list too (the
  // common case for a loop of awaited calls: waking a second thread there
  // costs a futex wake and, on few cores, preempts the first).
  size_t coming = static_cast<size_t>((s.spinning ? 1 : 0) + s.wakeups +
                                      s.finishing.load(std::memory_order_relaxed));
  if (s.ready.size() <= coming) return;
  if (s.idle > s.wakeups) {
    ++s.wakeups;
    s.cv.notify_one();
  } else if (s.threads < BaseThreads()) {
    ++s.threads;
    std::thread(Worker).detach();
  } else {
    // Every thread is busy; the first to finish takes it, unless they all
    // stay busy for long.
    ArmStarvationCheck(s, s.ready.front().since + kStarvedNs);
  }
}

void WakeIdle() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  ++s.give_back_calls;
  s.cv.notify_all();
}

uint64_t CurrentJob() { return t_job; }
IsolateHolder* CurrentHolder() { return t_job_holder; }
void SetCurrentJob(uint64_t job_id, IsolateHolder* holder) {
  t_job = job_id;
  t_job_holder = holder;
}

void NoteFinishing() { state().finishing.fetch_add(1, std::memory_order_relaxed); }

void Park(Job::Work resume) {
  if (t_park != nullptr) *t_park = std::move(resume);
}

}  // namespace pool

namespace {
std::atomic<uint64_t> g_next_job{1};
}

void FreeCompletion(const ivm_completion_t& c) {
  switch (c.kind) {
    case IVM_COMPLETION_VALUE:
      ivm_value_free(c.result.value);
      break;
    case IVM_COMPLETION_CONTEXT:
      ivm_context_free(c.result.context);
      break;
    case IVM_COMPLETION_SCRIPT:
      ivm_script_free(c.result.script);
      break;
    case IVM_COMPLETION_MODULE:
      ivm_module_free(c.result.module);
      break;
    case IVM_COMPLETION_HEAP_STATISTICS:
      ivm_heap_statistics_free(c.result.heap_statistics);
      break;
    default:
      break;
  }
  ivm_error_free(c.error);
}

Job::Job(ivm_completion_kind_t kind, ivm_done_fn done, void* user_data, Work work)
    : id_(g_next_job.fetch_add(1, std::memory_order_relaxed)),
      kind_(kind),
      done_(done),
      user_data_(user_data),
      work_(std::move(work)) {
  if (done_ == ivm_completion_queue_done && user_data_ != nullptr) {
    queue_ = static_cast<CompletionQueue*>(static_cast<ivm_completion_queue*>(user_data_));
    queue_->Ref();   // the queue outlives every job that reports to it
  }
}

Job::~Job() {
  if (queue_ != nullptr) queue_->Unref();
}

void Job::Run() {
  ivm_completion_t c{};
  c.kind = kind_;   // the member the work sets
  Work park;
  Work resume = std::move(resume_);
  resume_ = nullptr;
  parked_ = false;
  pool::t_park = &park;
  c.error = Guard([&] { return resume ? resume(&c) : work_(&c); });
  pool::t_park = nullptr;
  // Only calls that return a value wait for promises, and so park.
  if (park && c.error == nullptr && kind_ == IVM_COMPLETION_VALUE && c.result.value == nullptr) {
    parked_ = true;   // reports when it resumes
    resume_ = std::move(park);
    return;
  }
  // What the call owned goes before its outcome is reported: once the host
  // has the outcome it may exit, and dropping a host function's last use
  // calls its finalizer (host code, which must not run after the host ended).
  resume = nullptr;
  if (c.error != nullptr) {   // never both: the error wins
    ivm_error_t* error = c.error;
    c.error = nullptr;
    FreeCompletion(c);
    c = ivm_completion_t{};
    c.error = error;
  }
  Report(c);
}

void Job::Fail(ivm_error_t* error) {
  ivm_completion_t c{};
  c.error = error;
  Report(c);
}

void Job::Report(ivm_completion_t& c) {
  c.job = id_;
  if (c.error != nullptr) c.kind = IVM_COMPLETION_NONE;
  if (reported_) {   // never twice; should not happen
    FreeCompletion(c);
    return;
  }
  reported_ = true;
  work_ = nullptr;   // see Run
  resume_ = nullptr;
  if (queue_ != nullptr) {
    queue_->Push(c);
  } else {
    done_(user_data_, &c);
  }
}

ivm_error_t* Enqueue(const std::shared_ptr<IsolateHolder>& holder, ivm_completion_kind_t kind,
                     ivm_done_fn done, void* user_data, Job::Work work, uint64_t* job_out) {
  auto job = std::make_unique<Job>(kind, done, user_data, std::move(work));
  if (job_out) *job_out = job->id();
  holder->jobs().Submit(std::move(job));
  return nullptr;
}

namespace {
void IgnoreOutcome(void*, const ivm_completion_t* c) { FreeCompletion(*c); }
}  // namespace

void EnqueueInternal(const std::shared_ptr<IsolateHolder>& holder, Job::Work work, bool pump) {
  auto job = std::make_unique<Job>(IVM_COMPLETION_NONE, IgnoreOutcome, nullptr, std::move(work));
  job->pump = pump;
  holder->jobs().Submit(std::move(job));
}

void EnqueuePump(const std::shared_ptr<IsolateHolder>& holder) {
  EnqueueInternal(
      holder,
      [holder](ivm_completion_t*) -> ivm_error_t* {
        return holder->Run(0, [&](v8::Isolate* isolate, CallState& call) -> ivm_error_t* {
          holder->PumpTasks(call);
          if (!holder->Stopped(call)) isolate->PerformMicrotaskCheckpoint();
          return nullptr;
        });
      },
      true);
}

void EnqueueCollect(const std::shared_ptr<IsolateHolder>& holder) {
  std::weak_ptr<IsolateHolder> weak = holder;   // the job does not keep the isolate alive
  EnqueueInternal(holder, [weak](ivm_completion_t*) -> ivm_error_t* {
    std::shared_ptr<IsolateHolder> holder = weak.lock();
    // Owned by nobody but the pool thread serving it and this job: its teardown,
    // which releases all it holds, comes as the pool lets go. No collection then.
    if (!holder || holder->disposed() || holder.use_count() <= 2) return nullptr;
    return holder->Run(0, [&](v8::Isolate* isolate, CallState&) -> ivm_error_t* {
      isolate->LowMemoryNotification();
      return nullptr;
    });
  });
}

}  // namespace ivm
