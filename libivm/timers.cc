// timers.cc — clocks, and the one timer thread of the process.
//
// One thread serves every timer: call timeouts (the watchdog), the deadlines
// and polls of parked jobs, and the pool's starvation checks. A timer is a
// deadline and a function; the function runs on the timer thread, without
// the timer lock, and must not block. A timed call arms a timer that names
// the call by id; when it fires, the isolate stops that call only if it is
// still running (ids, not pointers, cross threads). The thread starts with
// the first timer and lives until the process exits.
#include "internal.h"
#include "host_exit.h"

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>

#include <sys/prctl.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

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

// CallClockNs: the time stamp counter scaled to nanoseconds. Until it is calibrated (the
// first kCalibrationNs after InitCallClock), and where it cannot be trusted, it is
// MonotonicNs itself; once calibrated it continues from MonotonicNs at that moment, at the
// rate measured over the calibration (within a few parts per million: two clock reads'
// error over 20 ms), so a span that straddles the switch stays right.
namespace {
constexpr int64_t kCalibrationNs = 20 * 1000 * 1000;

struct CallClockScale {
  int64_t base_ns;
  uint64_t base_tsc;
  double ns_per_tick;
};

std::atomic<bool> g_tsc_usable{false};
int64_t g_anchor_ns = 0;   // written before g_tsc_usable is set, then read-only
uint64_t g_anchor_tsc = 0;
std::atomic<const CallClockScale*> g_call_clock{nullptr};   // never freed once set

uint64_t Tsc() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return 0;
#endif
}

// Whether the kernel keeps its own clocks with the TSC: it then found it constant-rate and
// synchronized across CPUs (otherwise it marks it unstable and uses another clock source).
bool KernelClockIsTsc() {
#if defined(__x86_64__)
  FILE* f = std::fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
  if (f == nullptr) return false;
  char name[32] = {};
  bool tsc = std::fgets(name, sizeof name, f) != nullptr && std::strcmp(name, "tsc\n") == 0;
  std::fclose(f);
  return tsc;
#else
  return false;
#endif
}

// Both clocks read at (nearly) one moment: the monotonic clock between two counter reads,
// the closest of a few tries (a preemption between the reads would skew the rate for the
// rest of the process).
void ReadBoth(int64_t* ns, uint64_t* tsc) {
  uint64_t best = UINT64_MAX;
  *ns = 0;
  *tsc = 0;
  for (int i = 0; i < 5; ++i) {
    uint64_t before = Tsc();
    int64_t mono = MonotonicNs();
    uint64_t after = Tsc();
    if (after >= before && after - before < best) {
      best = after - before;
      *ns = mono;
      *tsc = before + best / 2;
    }
  }
  if (best == UINT64_MAX) {   // (a counter that went back each time)
    *tsc = Tsc();
    *ns = MonotonicNs();
  }
}

// The counter read now, in the call clock's nanoseconds. A counter behind the scale's base
// (another CPU's, read just after the calibration; or a counter reset, as by a suspend) reads
// the monotonic clock instead, which is right, and close to the base in the first case.
int64_t FromTsc(const CallClockScale* s) {
  int64_t ticks = static_cast<int64_t>(Tsc() - s->base_tsc);
  if (ticks < 0) return MonotonicNs();
  return s->base_ns + static_cast<int64_t>(static_cast<double>(ticks) * s->ns_per_tick);
}

// Calibrates the counter once kCalibrationNs have passed since the anchor (the first
// caller past it publishes the scale; later ones use it).
const CallClockScale* Calibrate(int64_t now_ns) {
  if (now_ns - g_anchor_ns < kCalibrationNs) return nullptr;
  int64_t end_ns;
  uint64_t end_tsc;
  ReadBoth(&end_ns, &end_tsc);
  if (end_tsc <= g_anchor_tsc || end_ns <= g_anchor_ns) return nullptr;
  auto* scale = new CallClockScale{
      end_ns, end_tsc,
      static_cast<double>(end_ns - g_anchor_ns) / static_cast<double>(end_tsc - g_anchor_tsc)};
  const CallClockScale* expected = nullptr;
  if (g_call_clock.compare_exchange_strong(expected, scale, std::memory_order_acq_rel)) {
    return scale;
  }
  delete scale;
  return expected;
}
}  // namespace

void InitCallClock() {
  if (!KernelClockIsTsc()) return;
  ReadBoth(&g_anchor_ns, &g_anchor_tsc);
  g_tsc_usable.store(true, std::memory_order_release);
}

int64_t CallClockNs() {
  if (const CallClockScale* s = g_call_clock.load(std::memory_order_acquire)) return FromTsc(s);
  int64_t now = MonotonicNs();
  if (g_tsc_usable.load(std::memory_order_acquire)) {
    if (const CallClockScale* s = Calibrate(now)) return FromTsc(s);
  }
  return now;
}

namespace timers {
namespace {

struct State {
  std::mutex mutex;
  std::condition_variable cv;
  std::map<std::pair<int64_t, uint64_t>, std::function<void()>> queue;   // (deadline, id)
  std::unordered_map<uint64_t, int64_t> deadlines;                         // id -> deadline
  uint64_t next_id = 1;
  bool started = false;
};

// Leaked on purpose: the thread may still wait on it while the process exits.
State& state() {
  static State* s = new State();
  return *s;
}

void Loop() {
  // Timer slack (50 us by default) lets the kernel fire this thread's waits
  // that much late, to batch wake-ups; a timeout is an overshoot. 1 ns: on
  // time. (eval_sync("while (true) {}", timeout=0.001) overshot 110-115 us
  // in the median here, 2 shared cores under load; see the commit.)
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
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
    std::function<void()> fn = std::move(first->second);
    s.deadlines.erase(first->first.second);
    s.queue.erase(first);
    lock.unlock();
    // (fn may free the last owner of an isolate: its teardown calls the host)
    CallIntoHost(OnHostExit::kPark, [&] { fn(); }, [] {});
    fn = nullptr;   // whatever it holds is released outside the lock
    lock.lock();
  }
}

}  // namespace

uint64_t Arm(int64_t deadline_ns, std::function<void()> fn) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.started) {
    std::thread(Loop).detach();
    s.started = true;
  }
  uint64_t id = s.next_id++;
  bool earliest = s.queue.empty() || deadline_ns < s.queue.begin()->first.first;
  s.queue.emplace(std::make_pair(deadline_ns, id), std::move(fn));
  s.deadlines.emplace(id, deadline_ns);
  if (earliest) s.cv.notify_one();
  return id;
}

void Disarm(uint64_t timer_id) {
  if (timer_id == 0) return;
  State& s = state();
  std::function<void()> fn;   // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.deadlines.find(timer_id);
  if (it == s.deadlines.end()) return;   // already fired
  auto entry = s.queue.find(std::make_pair(it->second, timer_id));
  fn = std::move(entry->second);
  s.queue.erase(entry);
  s.deadlines.erase(it);
}

int64_t DeadlineAfter(uint64_t timeout_ns) {
  return MonotonicNs() +
         static_cast<int64_t>(std::min<uint64_t>(timeout_ns, static_cast<uint64_t>(INT64_MAX / 2)));
}

}  // namespace timers

namespace watchdog {

uint64_t Arm(std::weak_ptr<IsolateHolder> holder, uint64_t call_id, int64_t deadline_ns) {
  if (deadline_ns == 0) return 0;
  return timers::Arm(deadline_ns, [holder = std::move(holder), call_id] {
    if (auto h = holder.lock()) h->OnTimeout(call_id);
  });
}

void Disarm(uint64_t timer_id) { timers::Disarm(timer_id); }

}  // namespace watchdog
}  // namespace ivm
