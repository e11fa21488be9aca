// thread_lock.cc — which thread may hold which isolate: per-thread V8 locks
// kept parked between calls (ThreadLockScope), and deadlock detection for
// threads that wait for a busy isolate (WaitScope, RefuseFromPool).
#include "internal.h"

#include <pthread.h>

#include <algorithm>

namespace ivm {

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
  if (pool::CurrentJob() == 0 || pool::CurrentHolder() == target) return nullptr;
  return MakeError(IVM_ERROR_DEADLOCK,
                   "A synchronous call into another isolate was refused: it was made from "
                   "code running for an asynchronous call (on ivm's thread pool) and could "
                   "deadlock; use the asynchronous API there");
}

struct Parked {
  std::weak_ptr<IsolateHolder> holder;
  uint64_t holder_id = 0;
  v8::Isolate* isolate = nullptr;
  int depth = 0;   // > 0 while this thread holds the lock
  bool pool = false;   // counted in the holder's pool_parked()
  // Constructed in place; destroyed only while the isolate is alive.
  alignas(v8::Locker) unsigned char locker[sizeof(v8::Locker)];
  alignas(v8::Unlocker) unsigned char unlocker[sizeof(v8::Unlocker)];
  // A handle scope kept open under every call's own while the lock is parked
  // (KeepHandleBlock), holding one handle: the thread's first block of
  // handles stays allocated, where each outermost call's scope would take it
  // (HandleScope::Extend) and give it back (DeleteExtensions). V8 archives it
  // with the thread's state. Closed before the Locker ends (Release).
  alignas(v8::HandleScope) unsigned char scope[sizeof(v8::HandleScope)];
  bool scope_open = false;
  std::shared_ptr<KeptEntry>* kept = nullptr;   // the thread's (ThreadLocks::kept)
  v8::Locker* Locker() { return reinterpret_cast<v8::Locker*>(locker); }
  v8::Unlocker* Unlocker() { return reinterpret_cast<v8::Unlocker*>(unlocker); }
  // Ends this thread's top-level lock (held: not behind the Unlocker), and
  // with it V8's state for this thread; first leaves the thread's kept entry
  // if it is into this isolate (isolate_entry.cc).
  void Release(IsolateHolder& holder, std::shared_ptr<KeptEntry>& kept) {
    if (kept && kept->holder_id == holder_id) LeaveEntry(holder, kept);
    End();
  }
  // Closes the kept handle scope, then ends the top-level Locker.
  void End() {
    if (scope_open) {
      reinterpret_cast<v8::HandleScope*>(scope)->~HandleScope();
      scope_open = false;
    }
    Locker()->~Locker();
  }
};

namespace {

// Holders a sweep locked from weak pointers: released once the sweep is done.
// The last owner of an isolate may be such a pointer, and its destruction
// (DisposeLocked, GiveBackThreadLock) changes this thread's list of locks.
using HeldHolders = std::vector<std::shared_ptr<IsolateHolder>>;

// A parked lock whose isolate is disposed refers to freed V8 state: it is
// dropped without running its destructors.
bool Stale(Parked* p, HeldHolders& held) {
  auto holder = p->holder.lock();
  if (!holder) return true;
  held.push_back(holder);
  return holder->disposed();
}

constexpr size_t kMaxParked = 16;

struct ThreadLocks;
// &t_locks (below) once this thread has used it: a pointer with a constant
// initializer costs one TLS lookup, where t_locks (it has a destructor) also
// needs its guard's. Cleared when t_locks is destroyed.
thread_local ThreadLocks* t_locks_used = nullptr;

struct ThreadLocks {
  std::vector<Parked*> parked;
  std::shared_ptr<KeptEntry> kept;   // this thread's kept entry, if any

  Parked* Find(uint64_t id) {
    for (Parked* p : parked) {
      if (p->holder_id == id) return p;
    }
    return nullptr;
  }

  // Drops stale locks; past kMaxParked, also gives back the oldest idle ones
  // (if their isolate is free right now) so that a thread serving many
  // isolates keeps V8 state for a few only. The isolate it keeps entered keeps
  // its lock.
  void Sweep() {
    HeldHolders held;
    std::vector<Parked*> keep;
    size_t excess = parked.size() >= kMaxParked ? parked.size() - kMaxParked / 2 : 0;
    for (Parked* p : parked) {
      // (The lock of the isolate this thread keeps entered stays: LeaveEntry, or
      // FinishEntry once handed over, gives it back.)
      bool entered = kept && kept->holder_id == p->holder_id;
      if (p->depth == 0 && !entered && Stale(p, held)) {
        delete p;
      } else if (excess > 0 && p->depth == 0 && !entered && Unpark(p, kept, held)) {
        --excess;
        delete p;
      } else {
        keep.push_back(p);
      }
    }
    parked.swap(keep);
  }

  static bool Unpark(Parked* p, std::shared_ptr<KeptEntry>& kept, HeldHolders& held) {
    auto holder = p->holder.lock();
    if (!holder) return true;
    held.push_back(holder);
    std::unique_lock<std::recursive_timed_mutex> lock(holder->exec_mutex(), std::try_to_lock);
    if (!lock.owns_lock()) return false;
    if (!holder->disposed()) {
      p->Unlocker()->~Unlocker();
      p->Release(*holder, kept);
    }
    return true;
  }

  // A kept entry whose isolate was disposed meanwhile (handed over): left, and
  // V8's isolate disposed of, unless the thread is inside another isolate's
  // call and does not end.
  void FinishHandedOver(bool thread_ends) {
    if (kept && kept->state.load(std::memory_order_acquire) == KeptEntry::kHandedOver) {
      FinishEntry(kept, thread_ends);
    }
  }

  // The thread ends with its kept entry still there (its parked lock was given
  // back inside another isolate's call): left now if the isolate is free.
  void LeaveIdleEntry(HeldHolders& held) {
    if (kept->state.load(std::memory_order_acquire) != KeptEntry::kKept) return;
    auto holder = kept->holder.lock();
    if (!holder) return;
    held.push_back(holder);
    std::unique_lock<std::recursive_timed_mutex> lock(holder->exec_mutex(), std::try_to_lock);
    if (!lock.owns_lock() || holder->disposed()) return;
    v8::Locker locker(kept->isolate);
    LeaveEntry(*holder, kept);
  }

  ~ThreadLocks() {
    t_locks_used = nullptr;
    // Thread (or process) exit: give back the locks of isolates that are alive
    // and free now. Never wait: at process exit a pool thread may be running
    // endless JavaScript in the isolate, and waiting would hang the exit. A
    // lock that cannot be given back stays with V8's thread state, which the
    // isolate's disposal frees.
    FinishHandedOver(true);   // first: through its parked lock (LeaveParkedEntry)
    HeldHolders held;
    std::vector<Parked*> mine;
    mine.swap(parked);   // (an isolate torn down meanwhile looks for its lock here)
    for (Parked* p : mine) {
      if (p->depth == 0) Unpark(p, kept, held);
      delete p;
    }
    if (kept) LeaveIdleEntry(held);
    if (kept) AbandonEntry(kept);   // (disposes of it if it was handed over)
  }
};

thread_local ThreadLocks t_locks;
ThreadLocks& Locks() {
  if (ThreadLocks* locks = t_locks_used) return *locks;
  t_locks_used = &t_locks;
  return t_locks;
}

}  // namespace

void FinishHandedOverEntry() {
  if (ThreadLocks* locks = t_locks_used) locks->FinishHandedOver(false);
}

bool LeaveParkedEntry(const KeptEntry& kept) {
  std::vector<Parked*>& parked = t_locks.parked;
  for (auto it = parked.begin(); it != parked.end(); ++it) {
    Parked* p = *it;
    if (p->holder_id != kept.holder_id || p->depth != 0) continue;
    v8::Isolate* isolate = p->isolate;
    // Taking the lock back restores this thread's archived state, which the
    // top-level Locker's end then frees (a new Locker would archive it again,
    // where V8's disposal does not look for it: 572 bytes leaked).
    p->Unlocker()->~Unlocker();
    isolate->Exit();
    p->End();
    delete p;
    parked.erase(it);
    return true;
  }
  return false;
}

bool KeptEntered(v8::Isolate* isolate) {
  ThreadLocks* locks = t_locks_used;
  return locks != nullptr && locks->kept && locks->kept->isolate == isolate;
}

bool LeaveOwnEntry(IsolateHolder& holder) {
  ThreadLocks* locks = t_locks_used;
  if (locks == nullptr || !locks->kept || locks->kept->holder_id != holder.unique_id()) {
    return false;
  }
  return LeaveEntry(holder, locks->kept);
}

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
  ThreadLocks& locks = Locks();
  Parked* p = locks.Find(holder.unique_id());
  if (p == nullptr) {
    if (locks.parked.size() >= 8) locks.Sweep();
    p = new Parked();
    p->holder = holder.weak_from_this();
    p->holder_id = holder.unique_id();
    p->isolate = holder.isolate();
    p->pool = pool::CurrentJob() != 0;
    p->kept = &locks.kept;
    if (p->pool) holder.pool_parked().fetch_add(1);
    new (p->locker) v8::Locker(p->isolate);
    p->depth = 1;
    locks.parked.push_back(p);
    LimitStack(p->isolate);
  } else if (p->depth++ == 0) {
    p->Unlocker()->~Unlocker();   // takes the lock back, restoring our state
  }
  parked_ = p;
  holder_ = &holder;
  if (p->depth == 1 && !locks.kept && !p->pool) locks.kept = KeepEntry(holder);
}

ThreadLockScope::~ThreadLockScope() {
  Parked* p = parked_;
  if (--p->depth != 0) return;
  if (!holder_->orphaned() && !holder_->disposed() && holder_->inspector() == nullptr) {
    new (p->unlocker) v8::Unlocker(p->isolate);
  } else {
    Release();
  }
}

void ThreadLockScope::Release() {
  Parked* p = parked_;
  // Nobody holds the isolate's handle, or another thread is disposing it: its
  // teardown may come on another thread, so this thread's V8 state is freed
  // now (the top-level Locker's end). An isolate with an inspector is never
  // parked either: V8 10.2 crashes restoring a thread's archived state once
  // its debugger has break points (Debug::RestoreDebug re-applies them while
  // the restoring thread is not set up yet).
  p->Release(*holder_, *p->kept);
  if (p->pool) holder_->pool_parked().fetch_sub(1);
  std::vector<Parked*>& parked = t_locks.parked;
  parked.erase(std::find(parked.begin(), parked.end(), p));
  delete p;
}

void ThreadLockScope::KeepHandleBlock() {
  Parked* p = parked_;
  // Only in this thread's outermost lock scope on the isolate, where no
  // handle scope of the isolate is open on this thread: it must close last.
  if (p->scope_open || p->depth != 1) return;
  ::new (p->scope) v8::HandleScope(p->isolate);
  p->scope_open = true;
  v8::Integer::New(p->isolate, 0);   // a handle: the scope's block is allocated now
}

bool GiveBackThreadLock(IsolateHolder& holder) {
  std::vector<Parked*>& parked = t_locks.parked;
  for (auto it = parked.begin(); it != parked.end(); ++it) {
    Parked* p = *it;
    if (p->holder_id != holder.unique_id()) continue;
    if (p->depth != 0) return false;   // still inside a call on this thread
    // Never wait: the isolate may be busy on another thread for long.
    std::unique_lock<std::recursive_timed_mutex> lock(holder.exec_mutex(), std::try_to_lock);
    if (!lock.owns_lock() || holder.isolate() == nullptr) return false;
    // Taking the lock back restores this thread's archived V8 state; the
    // top-level Locker's end then frees it.
    p->Unlocker()->~Unlocker();
    p->Release(holder, t_locks.kept);
    if (p->pool) holder.pool_parked().fetch_sub(1);
    delete p;
    parked.erase(it);
    return true;
  }
  return true;
}

namespace {
// Isolates whose disposal waits for pool threads' parked locks (by unique
// id). An entry stays valid while it is listed: WaitForPoolLocks removes it,
// under the mutex, before the isolate goes.
std::mutex g_requests_mutex;
std::unordered_map<uint64_t, IsolateHolder*> g_requests;
}  // namespace

void WaitForPoolLocks(IsolateHolder& holder) {
  // A pool thread gives its lock back within its polling time (pool.cc's
  // kSpinNs, 50 µs) or when woken; one busy elsewhere or descheduled is not
  // waited for past this bound (its state then leaks, but nothing breaks).
  constexpr int64_t kMaxWaitNs = 2 * 1000 * 1000;
  GiveBackThreadLock(holder);   // this thread's own, if it is a pool thread
  if (holder.pool_parked().load() == 0) return;
  {
    std::lock_guard<std::mutex> lock(g_requests_mutex);
    g_requests[holder.unique_id()] = &holder;
  }
  pool::WakeIdle();
  int64_t until = MonotonicNs() + kMaxWaitNs;
  while (holder.pool_parked().load() > 0 && MonotonicNs() < until) {
    std::this_thread::yield();
  }
  std::lock_guard<std::mutex> lock(g_requests_mutex);
  g_requests.erase(holder.unique_id());
}

void GiveBackRequestedLocks() {
  std::lock_guard<std::mutex> lock(g_requests_mutex);
  if (g_requests.empty()) return;
  std::vector<IsolateHolder*> wanted;
  for (Parked* p : t_locks.parked) {
    auto it = g_requests.find(p->holder_id);
    if (it != g_requests.end()) wanted.push_back(it->second);
  }
  for (IsolateHolder* holder : wanted) GiveBackThreadLock(*holder);
}

}  // namespace ivm
