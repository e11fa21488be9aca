// executor.cc — where and when isolate work runs: clocks, the pool that runs
// asynchronous jobs, the watchdog thread that fires call timeouts, and the
// per-thread isolate locks.
//
// Asynchronous jobs are queued per isolate (FIFO, IsolateHolder::Submit). An
// isolate with queued jobs is put once on the pool's ready list; a pool thread
// takes it, runs a bounded batch of its jobs under the isolate's lock, and
// puts it back at the end of the list if more remain. So at most one thread is
// inside an isolate, jobs of one isolate run in submission order, and no
// thread exists per pending call. The pool has (cores + 1) threads, started on
// demand, and lives until the process exits.
//
// One watchdog thread serves every isolate: a timed call arms a timer (a
// deadline and the call's id); when a deadline passes, the watchdog asks the
// isolate to stop that call, which terminates its JavaScript only if the call
// is still running (ids, not pointers, cross threads). The thread starts with
// the first timed call and lives until the process exits.
#include "internal.h"

#include <condition_variable>
#include <csignal>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <ctime>
#include <algorithm>
#include <deque>
#include <map>

namespace ivm {

int64_t ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

namespace pool {
namespace {

thread_local uint64_t t_job = 0;
thread_local IsolateHolder* t_job_holder = nullptr;

struct State {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::shared_ptr<IsolateHolder>> ready;
  std::atomic<size_t> ready_count{0};
  int threads = 0;
  int idle = 0;            // threads waiting on cv
  int wakeups = 0;         // of those, notified but not yet awake
  bool spinning = false;   // one idle thread polls before sleeping
};

// How long an idle pool thread polls for new work before it sleeps: waking a
// sleeping thread costs tens of microseconds on a VM, more than most jobs.
constexpr int64_t kSpinNs = 50 * 1000;
constexpr int kExtraThreads = 1;   // threads = cores + 1

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

void Worker() {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  for (;;) {
    while (s.ready.empty()) {
      if (!s.spinning) {
        s.spinning = true;
        lock.unlock();
        int64_t until = MonotonicNs() + kSpinNs;
        while (s.ready_count.load(std::memory_order_acquire) == 0 && MonotonicNs() < until) {
          CpuRelax();
        }
        lock.lock();
        s.spinning = false;
        if (!s.ready.empty()) break;
      }
      ++s.idle;
      s.cv.wait(lock);
      --s.idle;
      if (s.wakeups > 0) --s.wakeups;
    }
    std::shared_ptr<IsolateHolder> holder = std::move(s.ready.front());
    s.ready.pop_front();
    s.ready_count.fetch_sub(1, std::memory_order_relaxed);
    lock.unlock();
    bool more = holder->ServeQueue();
    if (!more) holder.reset();   // may dispose the isolate: outside the lock
    lock.lock();
    if (more) {
      s.ready.push_back(std::move(holder));
      s.ready_count.fetch_add(1, std::memory_order_release);
    }
  }
}

}  // namespace

void Schedule(std::shared_ptr<IsolateHolder> holder) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.ready.push_back(std::move(holder));
  s.ready_count.fetch_add(1, std::memory_order_release);
  // hardware_concurrency() reads /sys on every call: once is enough.
  static const int max_threads =
      static_cast<int>(std::max(2u, std::thread::hardware_concurrency())) + kExtraThreads;
  // Threads already on their way to the ready list: the polling one (it
  // re-checks under the lock before sleeping) and those woken but not yet
  // running. Each ready isolate needs one; a wake-up is never spent twice.
  size_t coming = static_cast<size_t>((s.spinning ? 1 : 0) + s.wakeups);
  if (s.ready.size() <= coming) return;
  if (s.idle > s.wakeups) {
    ++s.wakeups;
    s.cv.notify_one();
  } else if (s.threads < max_threads) {
    ++s.threads;
    std::thread(Worker).detach();
  }
  // Otherwise every thread is busy; the first to finish takes it.
}

uint64_t CurrentJob() { return t_job; }
IsolateHolder* CurrentHolder() { return t_job_holder; }
void SetCurrentJob(uint64_t job_id, IsolateHolder* holder) {
  t_job = job_id;
  t_job_holder = holder;
}

}  // namespace pool

// A pool thread that blocks on another isolate could wait for a job queued
// behind its own: every pool thread may end up waiting (isolated-vm's rule).
namespace {
std::mutex g_wait_mutex;
std::unordered_map<std::thread::id, const IsolateHolder*>& Waiting() {
  static auto* waiting = new std::unordered_map<std::thread::id, const IsolateHolder*>();
  return *waiting;
}
}  // namespace

WaitScope::WaitScope(const IsolateHolder* target) {
  std::thread::id me = std::this_thread::get_id();
  std::lock_guard<std::mutex> lock(g_wait_mutex);
  auto& waiting = Waiting();
  const IsolateHolder* current = target;
  for (int i = 0; i < 256 && current != nullptr; ++i) {
    std::thread::id owner = current->owner();
    if (owner == std::thread::id()) break;
    if (owner == me) {
      deadlock_ = true;
      return;
    }
    auto it = waiting.find(owner);
    current = it == waiting.end() ? nullptr : it->second;
  }
  waiting[me] = target;
}

WaitScope::~WaitScope() {
  if (deadlock_) return;
  std::lock_guard<std::mutex> lock(g_wait_mutex);
  Waiting().erase(std::this_thread::get_id());
}

ivm_error_t* RefuseFromPool(const IsolateHolder* target) {
  if (pool::t_job == 0 || pool::t_job_holder == target) return nullptr;
  return MakeError(IVM_ERROR_DEADLOCK,
                   "A synchronous call into another isolate was refused: it was made from "
                   "code running for an asynchronous call (on ivm's thread pool) and could "
                   "deadlock; use the asynchronous API there");
}

namespace watchdog {
namespace {

struct Entry {
  std::weak_ptr<IsolateHolder> holder;
  uint64_t call_id;
};

struct State {
  std::mutex mutex;
  std::condition_variable cv;
  std::map<std::pair<int64_t, uint64_t>, Entry> queue;   // (deadline, timer id)
  std::unordered_map<uint64_t, int64_t> deadlines;        // timer id -> deadline
  uint64_t next_id = 1;
  bool started = false;
};

// Leaked on purpose: the thread may still wait on it while the process exits.
State& state() {
  static State* s = new State();
  return *s;
}

void Loop() {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  for (;;) {
    if (s.queue.empty()) {
      s.cv.wait(lock);
      continue;
    }
    auto first = s.queue.begin();
    int64_t now = MonotonicNs();
    if (first->first.first > now) {
      s.cv.wait_for(lock, std::chrono::nanoseconds(first->first.first - now));
      continue;
    }
    Entry entry = first->second;
    s.deadlines.erase(first->first.second);
    s.queue.erase(first);
    lock.unlock();
    if (auto holder = entry.holder.lock()) holder->OnTimeout(entry.call_id);
    lock.lock();
  }
}

}  // namespace

uint64_t Arm(std::weak_ptr<IsolateHolder> holder, uint64_t call_id, uint64_t timeout_ns) {
  if (timeout_ns == 0) return 0;
  State& s = state();
  int64_t deadline = MonotonicNs() + static_cast<int64_t>(
      std::min<uint64_t>(timeout_ns, static_cast<uint64_t>(INT64_MAX / 2)));
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.started) {
    std::thread(Loop).detach();
    s.started = true;
  }
  uint64_t id = s.next_id++;
  bool earliest = s.queue.empty() || deadline < s.queue.begin()->first.first;
  s.queue.emplace(std::make_pair(deadline, id), Entry{std::move(holder), call_id});
  s.deadlines.emplace(id, deadline);
  if (earliest) s.cv.notify_one();
  return id;
}

void Disarm(uint64_t timer_id) {
  if (timer_id == 0) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.deadlines.find(timer_id);
  if (it == s.deadlines.end()) return;   // already fired
  s.queue.erase(std::make_pair(it->second, timer_id));
  s.deadlines.erase(it);
}

}  // namespace watchdog
}  // namespace ivm

// ---------------------------------------------------------------------------
// ThreadLockScope

namespace ivm {

struct Parked {
  std::weak_ptr<IsolateHolder> holder;
  uint64_t holder_id = 0;
  v8::Isolate* isolate = nullptr;
  int depth = 0;   // > 0 while this thread holds the lock
  // Constructed in place; destroyed only while the isolate is alive.
  alignas(v8::Locker) unsigned char locker[sizeof(v8::Locker)];
  alignas(v8::Unlocker) unsigned char unlocker[sizeof(v8::Unlocker)];
  v8::Locker* Locker() { return reinterpret_cast<v8::Locker*>(locker); }
  v8::Unlocker* Unlocker() { return reinterpret_cast<v8::Unlocker*>(unlocker); }
};

namespace {

// A parked lock whose isolate is disposed refers to freed V8 state: it is
// dropped without running its destructors.
bool Stale(Parked* p) {
  auto holder = p->holder.lock();
  return !holder || holder->disposed();
}

constexpr size_t kMaxParked = 16;

struct ThreadLocks {
  std::vector<Parked*> parked;

  Parked* Find(uint64_t id) {
    for (Parked* p : parked) {
      if (p->holder_id == id) return p;
    }
    return nullptr;
  }

  // Drops stale locks; past kMaxParked, also gives back the oldest idle ones
  // (if their isolate is free right now) so that a thread serving many
  // isolates keeps V8 state for a few only.
  void Sweep() {
    std::vector<Parked*> keep;
    size_t excess = parked.size() >= kMaxParked ? parked.size() - kMaxParked / 2 : 0;
    for (Parked* p : parked) {
      if (p->depth == 0 && Stale(p)) {
        delete p;
      } else if (excess > 0 && p->depth == 0 && Unpark(p)) {
        --excess;
        delete p;
      } else {
        keep.push_back(p);
      }
    }
    parked.swap(keep);
  }

  static bool Unpark(Parked* p) {
    auto holder = p->holder.lock();
    if (!holder) return true;
    std::unique_lock<std::recursive_timed_mutex> lock(holder->exec_mutex(), std::try_to_lock);
    if (!lock.owns_lock()) return false;
    if (!holder->disposed()) {
      p->Unlocker()->~Unlocker();
      p->Locker()->~Locker();
    }
    return true;
  }

  ~ThreadLocks() {
    // Thread (or process) exit: give back the locks of isolates that are alive
    // and free now. Never wait: at process exit a pool thread may be running
    // endless JavaScript in the isolate, and waiting would hang the exit. A
    // lock that cannot be given back stays with V8's thread state, which the
    // isolate's disposal frees.
    for (Parked* p : parked) {
      if (p->depth == 0) Unpark(p);
      delete p;
    }
  }
};

thread_local ThreadLocks t_locks;

}  // namespace

// V8 assumes it may use about 1 MB of stack below where it is entered. On a
// thread with a smaller stack (Python's threading.stack_size), deep recursion
// would run off the end instead of throwing a RangeError: lift the limit so
// that V8 stops 128 KB above the real end of this thread's stack. The limit is
// part of the thread state V8 archives with the parked lock.
// The lowest address of this thread's stack, or 0 if unknown. Read once per
// thread: for the main thread, glibc finds it by parsing /proc/self/maps.
uintptr_t StackLow() {
  thread_local uintptr_t low = [] {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return uintptr_t{0};
    void* addr = nullptr;
    size_t size = 0;
    int rc = pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
    return rc == 0 ? reinterpret_cast<uintptr_t>(addr) : uintptr_t{0};
  }();
  return low;
}

void LimitStack(v8::Isolate* isolate) {
  constexpr uintptr_t kMargin = 128 * 1024;
  constexpr uintptr_t kV8StackSize = 984 * 1024;   // V8's default --stack-size
  uintptr_t low = StackLow();
  if (low == 0) return;
  auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  if (here < low + kMargin) return;
  uintptr_t safe = low + kMargin;
  if (here - kV8StackSize < safe) isolate->SetStackLimit(safe);
}

ThreadLockScope::ThreadLockScope(IsolateHolder& holder) {
  ThreadLocks& locks = t_locks;
  Parked* p = locks.Find(holder.unique_id());
  if (p == nullptr) {
    if (locks.parked.size() >= 8) locks.Sweep();
    p = new Parked();
    p->holder = holder.weak_from_this();
    p->holder_id = holder.unique_id();
    p->isolate = holder.isolate();
    new (p->locker) v8::Locker(p->isolate);
    p->depth = 1;
    locks.parked.push_back(p);
    LimitStack(p->isolate);
  } else if (p->depth++ == 0) {
    p->Unlocker()->~Unlocker();   // takes the lock back, restoring our state
  }
  parked_ = p;
}

ThreadLockScope::~ThreadLockScope() {
  Parked* p = parked_;
  if (--p->depth == 0) new (p->unlocker) v8::Unlocker(p->isolate);
}

}  // namespace ivm

// ---------------------------------------------------------------------------
// Signals: the signal handler only writes a byte to a pipe (async-signal-safe)
// and chains to the previous handler; a watcher thread reads the pipe and
// terminates the synchronous calls running on the interrupted thread.

namespace ivm {
namespace interrupt {
namespace {

struct State {
  std::mutex mutex;
  std::vector<std::weak_ptr<IsolateHolder>> running;   // calls on `thread`
  std::thread::id thread;
  int pipe_w = -1;
  struct sigaction previous[65];
  bool installed[65] = {};
};

State& state() {
  static State* s = new State();
  return *s;
}

std::atomic<bool> g_enabled{false};
std::atomic<uint64_t> g_signals{0};   // signals seen by the watcher

void Handler(int signum, siginfo_t* info, void* ucontext) {
  int saved_errno = errno;
  State& s = state();
  char byte = static_cast<char>(signum);
  ssize_t ignored = write(s.pipe_w, &byte, 1);
  (void)ignored;
  errno = saved_errno;
  if (signum <= 0 || signum > 64) return;
  const struct sigaction& prev = s.previous[signum];
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) prev.sa_sigaction(signum, info, ucontext);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler) {
    prev.sa_handler(signum);
  } else if (prev.sa_handler == SIG_DFL) {
    // Nobody else handles it: the default action, as if we were not here.
    signal(signum, SIG_DFL);
    raise(signum);
  }
}

void Watch(int fd) {
  char byte;
  for (;;) {
    ssize_t n = read(fd, &byte, 1);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    g_signals.fetch_add(1);
    std::vector<std::shared_ptr<IsolateHolder>> targets;
    {
      State& s = state();
      std::lock_guard<std::mutex> lock(s.mutex);
      for (auto& w : s.running) {
        if (auto h = w.lock()) targets.push_back(std::move(h));
      }
    }
    for (auto& h : targets) h->Terminate();
  }
}

}  // namespace

ivm_error_t* Lock(std::unique_lock<std::recursive_timed_mutex>& lock) {
  if (lock.try_lock()) return nullptr;
  if (!g_enabled.load(std::memory_order_relaxed) ||
      std::this_thread::get_id() != state().thread) {
    lock.lock();
    return nullptr;
  }
  uint64_t seen = g_signals.load();
  while (!lock.try_lock_for(std::chrono::milliseconds(20))) {
    if (g_signals.load() != seen) {
      return MakeError(IVM_ERROR_TERMINATED, "Interrupted while waiting for the isolate");
    }
  }
  return nullptr;
}

void Enter(IsolateHolder& holder) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  State& s = state();
  if (std::this_thread::get_id() != s.thread) return;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.running.push_back(holder.weak_from_this());
}

void Leave(IsolateHolder& holder) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  State& s = state();
  if (std::this_thread::get_id() != s.thread) return;
  std::lock_guard<std::mutex> lock(s.mutex);
  for (auto it = s.running.rbegin(); it != s.running.rend(); ++it) {
    if (it->lock().get() == &holder || it->expired()) {
      s.running.erase(std::next(it).base());
      break;
    }
  }
}

ivm_error_t* Install(int signum) {
  if (signum <= 0 || signum > 64) return InvalidArgument("bad signal number");
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.pipe_w < 0) {
    int fds[2];
    if (pipe(fds) != 0) return MakeError(IVM_ERROR_INTERNAL, "pipe() failed");
    s.pipe_w = fds[1];
    std::thread(Watch, fds[0]).detach();
  }
  struct sigaction current;
  if (sigaction(signum, nullptr, &current) != 0) {
    return MakeError(IVM_ERROR_INTERNAL, "sigaction() failed");
  }
  s.thread = std::this_thread::get_id();
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == Handler) {
    g_enabled.store(true);
    return nullptr;   // already ours
  }
  struct sigaction ours {};
  ours.sa_sigaction = Handler;
  ours.sa_flags = SA_SIGINFO | SA_ONSTACK | (current.sa_flags & SA_RESTART);
  sigemptyset(&ours.sa_mask);
  s.previous[signum] = current;
  if (sigaction(signum, &ours, nullptr) != 0) {
    return MakeError(IVM_ERROR_INTERNAL, "sigaction() failed");
  }
  s.installed[signum] = true;
  g_enabled.store(true);
  return nullptr;
}

}  // namespace interrupt
}  // namespace ivm

extern "C" IVM_API ivm_error_t* ivm_interrupt_on_signal(int signum) {
  return ivm::Guard([&] { return ivm::interrupt::Install(signum); });
}

// ---------------------------------------------------------------------------
// Jobs and completion queues

struct ivm_completion_queue {};   // the ABI name of ivm::CompletionQueue (its base)

namespace ivm {

class CompletionQueue : public ivm_completion_queue, public LiveCounted {
 public:
  struct Item {
    ivm_completion_t completion;
    void (*free_result)(void*);
  };

  static ivm_error_t* Create(CompletionQueue** out, int* fd) {
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) return MakeError(IVM_ERROR_INTERNAL, "eventfd() failed");
    auto* q = new CompletionQueue();
    q->fd_ = efd;
    *fd = efd;
    *out = q;
    return nullptr;
  }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  void Push(uint64_t job, void* result, ivm_error_t* error, void (*free_result)(void*)) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (owned_) {
        bool was_empty = items_.empty();
        items_.push_back(Item{{job, result, error}, free_result});
        count_.store(items_.size(), std::memory_order_release);
        if (was_empty) {
          uint64_t one = 1;
          ssize_t n = write(fd_, &one, sizeof one);
          (void)n;
        }
        return;
      }
    }
    Discard(Item{{job, result, error}, free_result});   // nobody will pop it
  }

  size_t Pop(ivm_completion_t* out, size_t capacity) {
    if (count_.load(std::memory_order_acquire) == 0) return 0;   // polling stays cheap
    std::lock_guard<std::mutex> lock(mutex_);
    size_t n = std::min(capacity, items_.size());
    for (size_t i = 0; i < n; ++i) out[i] = items_[i].completion;
    items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(n));
    count_.store(items_.size(), std::memory_order_release);
    if (n > 0 && items_.empty()) {
      uint64_t count;
      ssize_t r = read(fd_, &count, sizeof count);   // no longer readable
      (void)r;
    }
    return n;
  }

  void Disown() {
    std::vector<Item> items;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      owned_ = false;
      items.swap(items_);
      count_.store(0);
    }
    for (auto& item : items) Discard(item);
    Unref();
  }

 private:
  CompletionQueue() = default;
  ~CompletionQueue() {
    if (fd_ >= 0) close(fd_);
  }
  static void Discard(const Item& item) {
    if (item.completion.result && item.free_result) item.free_result(item.completion.result);
    ivm_error_free(item.completion.error);
  }

  std::mutex mutex_;
  std::vector<Item> items_;
  std::atomic<size_t> count_{0};
  std::atomic<int> refs_{1};   // the owner's handle + one per pending job
  bool owned_ = true;
  int fd_ = -1;
};

namespace {
std::atomic<uint64_t> g_next_job{1};
}

Job::Job(ivm_done_fn done, void* user_data, void (*free_result)(void*), Work work)
    : id_(g_next_job.fetch_add(1, std::memory_order_relaxed)),
      done_(done),
      user_data_(user_data),
      free_result_(free_result),
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
  void* result = nullptr;
  ivm_error_t* error = Guard([&] { return work_(&result); });
  if (error != nullptr && result != nullptr && free_result_ != nullptr) {
    free_result_(result);   // never both: the error wins
    result = nullptr;
  }
  Report(result, error);
}

void Job::Report(void* result, ivm_error_t* error) {
  if (reported_) {   // never twice; should not happen
    if (result && free_result_) free_result_(result);
    ivm_error_free(error);
    return;
  }
  reported_ = true;
  if (queue_ != nullptr) {
    queue_->Push(id_, result, error, free_result_);
  } else {
    done_(user_data_, id_, result, error);
  }
}

ivm_error_t* Enqueue(const std::shared_ptr<IsolateHolder>& holder, ivm_done_fn done,
                     void* user_data, void (*free_result)(void*), Job::Work work,
                     uint64_t* out_job) {
  auto job = std::make_unique<Job>(done, user_data, free_result, std::move(work));
  if (out_job) *out_job = job->id();
  holder->Submit(std::move(job));
  return nullptr;
}

void FreeValue(void* value) { ivm_value_free(static_cast<ivm_value_t*>(value)); }
void FreeContext(void* context) { ivm_context_free(static_cast<ivm_context_t*>(context)); }
void FreeScript(void* script) { ivm_script_free(static_cast<ivm_script_t*>(script)); }

}  // namespace ivm

extern "C" {

IVM_API ivm_error_t* ivm_completion_queue_new(ivm_completion_queue_t** out, int* fd_out) {
  return ivm::Guard([&]() -> ivm_error_t* {
    if (out == nullptr || fd_out == nullptr) return ivm::InvalidArgument("out or fd_out is NULL");
    ivm::CompletionQueue* q = nullptr;
    if (ivm_error_t* err = ivm::CompletionQueue::Create(&q, fd_out)) return err;
    *out = q;
    return nullptr;
  });
}

IVM_API void ivm_completion_queue_done(void* queue, uint64_t job, void* result,
                                       ivm_error_t* error) {
  // Jobs bypass this (they know how to free their results); a direct call
  // can only hand over values.
  if (queue == nullptr) return;
  auto* q = static_cast<ivm::CompletionQueue*>(static_cast<ivm_completion_queue*>(queue));
  q->Push(job, result, error, ivm::FreeValue);
}

IVM_API size_t ivm_completion_queue_pop(ivm_completion_queue_t* queue, ivm_completion_t* out,
                                        size_t capacity) {
  if (queue == nullptr || out == nullptr) return 0;
  try {
    return static_cast<ivm::CompletionQueue*>(queue)->Pop(out, capacity);
  } catch (...) {
    return 0;
  }
}

IVM_API void ivm_completion_queue_free(ivm_completion_queue_t* queue) {
  if (queue == nullptr) return;
  try {
    static_cast<ivm::CompletionQueue*>(queue)->Disown();
  } catch (...) {
  }
}

}  // extern "C"
