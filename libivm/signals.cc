// signals.cc — signal-driven termination (ivm_interrupt_on_signal): Ctrl-C
// stops the synchronous JavaScript of the thread that asked for it.
//
// The signal handler only writes a byte to a pipe (async-signal-safe) and
// chains to the previous handler; a watcher thread reads the pipe and
// terminates the synchronous calls running on the interrupted thread (a
// worker-hosted isolate's call is cancelled in its worker: EnterCall).
#include "internal.h"

#include <algorithm>
#include <csignal>
#include <functional>
#include <map>
#include <unordered_map>
#include <unistd.h>

namespace ivm {
namespace interrupt {
namespace {

struct State {
  std::mutex mutex;
  // The isolates with a call on `thread` that hold no slot of g_slots (other live
  // isolates called on `thread` keep them all): each is alive while it is listed (Enter
  // at the start of its outermost call, Leave at the end), so a plain pointer is enough.
  std::vector<IsolateHolder*> running;
  // EnterCall's, by token (innermost last), each with g_raised when its call began.
  std::map<uint64_t, std::pair<std::function<void()>, uint64_t>> stops;
  uint64_t next_token = 1;
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
// Signals received, counted by the handler itself: the watcher reads its pipe a thread
// wake-up later (tens of microseconds), when the call the signal came in may have ended
// and the thread's next call begun; that one must not be cancelled for it.
std::atomic<uint64_t> g_raised{0};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "g_raised is counted in a handler");
std::atomic<std::thread::id> g_thread{};   // the thread whose calls a signal stops

// The common listing, without a lock: isolates that had an outermost call on g_thread,
// one per slot (nullptr: free). Enter claims a free slot with a CAS, once: the isolate
// keeps it (IsolateHolder::interrupt_slot_) until Forget, at its disposal, and each later
// call only sets and clears its flag interrupt_running_ (plain stores: the watcher stops
// the isolates whose flag it reads set). Forget clears the slot, then waits while the
// watcher is reading the slots (g_reading), so the watcher never touches a holder that
// Forget has let go. Both sides use sequentially consistent operations: either the
// watcher sees the cleared slot, or Forget sees g_reading set and waits (Dekker's
// pattern). The watcher reads rarely (one pass per signal), so Forget almost never waits.
// (Past kSlots isolates, the others are listed in State::running per call, under its
// mutex.)
constexpr int kSlots = 16;
std::atomic<IsolateHolder*> g_slots[kSlots] = {};
std::atomic<bool> g_reading{false};

void Handler(int signum, siginfo_t* info, void* ucontext) {
  int saved_errno = errno;
  State& s = state();
  char byte = static_cast<char>(signum);
  // Counted once its byte is written: g_signals never falls behind for good. (In the
  // moment between the two, a call that begins counts as begun before the signal.)
  if (write(s.pipe_w, &byte, 1) == 1) g_raised.fetch_add(1);
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

// Whether `holder`'s call began before signal number `n` came (a later one is not stopped
// for it).
bool Before(IsolateHolder& holder, uint64_t n) {
  return holder.interrupt_since().load(std::memory_order_relaxed) < n;
}

void Watch(int fd) {
  char byte;
  for (;;) {
    ssize_t n = read(fd, &byte, 1);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    const uint64_t signal_number = g_signals.fetch_add(1) + 1;
    std::vector<std::shared_ptr<IsolateHolder>> targets;
    g_reading.store(true);
    for (auto& slot : g_slots) {
      IsolateHolder* h = slot.load();
      if (!h || !h->interrupt_running().load() || !Before(*h, signal_number)) continue;
      if (auto owner = h->weak_from_this().lock()) targets.push_back(std::move(owner));
    }
    g_reading.store(false);
    {
      State& s = state();
      std::lock_guard<std::mutex> lock(s.mutex);
      for (IsolateHolder* h : s.running) {
        if (!Before(*h, signal_number)) continue;
        if (auto owner = h->weak_from_this().lock()) targets.push_back(std::move(owner));
      }
      // Under the lock: what a stop refers to lives until its LeaveCall. Only the
      // innermost worker call stops: one nested in a host callback of an outer one
      // ends with KeyboardInterrupt in that callback, which the outer call then sees
      // as inline does (the callback's own exception), not as a cancellation.
      // A call that began after this signal came (its count already included it) is
      // not stopped for it.
      if (!s.stops.empty() && s.stops.rbegin()->second.second < signal_number) {
        s.stops.rbegin()->second.first();
      }
    }
    for (auto& h : targets) h->Terminate(signal_number);
  }
}

}  // namespace

ivm_error_t* Lock(std::unique_lock<std::recursive_timed_mutex>& lock) {
  if (lock.try_lock()) return nullptr;
  if (!g_enabled.load(std::memory_order_relaxed) ||
      std::this_thread::get_id() != g_thread.load(std::memory_order_relaxed)) {
    lock.lock();
    return nullptr;
  }
  // Signals that come while this waits (g_raised: one that came before and that the
  // watcher reads only now is not this wait's).
  uint64_t seen = g_raised.load();
  while (!lock.try_lock_for(std::chrono::milliseconds(20))) {
    if (g_raised.load() != seen) return Static();
  }
  return nullptr;
}

uint64_t Signals() { return g_signals.load(std::memory_order_acquire); }

ivm_error_t* Static() {
  // Never freed, and not counted in ivm_debug_live_objects.
  static ivm_error_t* const error = [] {
    auto* e = new ivm_error_t();
    g_live_objects.fetch_sub(1, std::memory_order_relaxed);
    e->kind = IVM_ERROR_TERMINATED;
    e->message = "Script execution was terminated.";
    return e;
  }();
  return error;
}

ivm_error_t* Substitute(ivm_error_t* error, uint64_t seen) {
  if (error->kind != IVM_ERROR_TERMINATED || error->host_abort || error == Static() ||
      !g_enabled.load(std::memory_order_relaxed) || Signals() == seen ||
      std::this_thread::get_id() != g_thread.load(std::memory_order_relaxed)) {
    return error;
  }
  delete error;
  return Static();
}

bool Enter(IsolateHolder& holder) {
  if (!g_enabled.load(std::memory_order_relaxed)) return false;
  if (std::this_thread::get_id() != g_thread.load(std::memory_order_relaxed)) return false;
  holder.interrupt_since().store(g_raised.load(), std::memory_order_relaxed);
  // (interrupt_slot_ is written only here and in Forget, under the holder's exec_mutex_.)
  for (int i = 0; holder.interrupt_slot() < 0 && i < kSlots; ++i) {
    IsolateHolder* expected = nullptr;
    if (g_slots[i].load(std::memory_order_relaxed) == nullptr &&
        g_slots[i].compare_exchange_strong(expected, &holder)) {
      holder.interrupt_slot() = i;
    }
  }
  if (holder.interrupt_slot() >= 0) {
    holder.interrupt_running().store(true, std::memory_order_release);
    return true;
  }
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.running.push_back(&holder);
  return true;
}

void Leave(IsolateHolder& holder) {
  if (holder.interrupt_slot() >= 0) {   // it stays listed: the watcher skips it now
    holder.interrupt_running().store(false, std::memory_order_release);
    return;
  }
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = std::find(s.running.rbegin(), s.running.rend(), &holder);
  if (it != s.running.rend()) s.running.erase(std::next(it).base());
}

void Forget(IsolateHolder& holder) {
  int i = holder.interrupt_slot();
  if (i < 0) return;
  holder.interrupt_slot() = -1;
  holder.interrupt_running().store(false);
  g_slots[i].store(nullptr);
  while (g_reading.load()) std::this_thread::yield();
}

uint64_t EnterCall(std::function<void()> stop) {
  if (!g_enabled.load(std::memory_order_relaxed)) return 0;
  State& s = state();
  if (std::this_thread::get_id() != g_thread.load(std::memory_order_relaxed)) return 0;
  std::lock_guard<std::mutex> lock(s.mutex);
  uint64_t token = s.next_token++;
  s.stops.emplace(token, std::make_pair(std::move(stop), g_raised.load()));
  return token;
}

void LeaveCall(uint64_t token) {
  if (token == 0) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.stops.erase(token);
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
  g_thread.store(std::this_thread::get_id());
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
