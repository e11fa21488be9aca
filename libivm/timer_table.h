// timer_table.h — the timers of one context (setTimeout & co., host_timers.cc):
// what is pending, when each is due, and what runs it. Nothing here is ABI.
#ifndef IVM_TIMER_TABLE_H
#define IVM_TIMER_TABLE_H

#include "internal.h"

#include <set>
#include <tuple>

namespace ivm {

// The pending timers of one context. Registered with its isolate (disposal
// closes it) and closed when its context is released (CloseTimers). The
// timer functions carry its anchor, a JavaScript object whose internal field
// points here until the table closes.
//
// Timers touch V8 only with the isolate locked; the timer thread only reads
// the few fields under `mutex_` (what is armed, whether a job is queued).
class TimerTable final : public Resource {
 public:
  static constexpr size_t kMaxPending = 100000;
  // Per-callback timeout of a timer job's callback whose timer inherited no
  // deadline (it was set by a call without a timeout).
  static constexpr int64_t kUndeadlinedNs = 10LL * 1000 * 1000 * 1000;

  // Makes the table of `context` and returns its anchor (isolate locked,
  // context entered).
  static v8::MaybeLocal<v8::Object> Create(IsolateHolder& holder, v8::Isolate* isolate,
                                           v8::Local<v8::Context> context);
  // The table an anchor points to (nullptr once closed).
  static TimerTable* FromAnchor(v8::Local<v8::Value> anchor);
  // The table of `context` (nullptr: none, or closed).
  static TimerTable* Of(v8::Isolate* isolate, v8::Local<v8::Context> context);

  struct Request {
    v8::Local<v8::Function> fn;
    v8::Local<v8::Array> args;   // empty: none
    int64_t delay_ms = 0;
    bool repeat = false;
    bool immediate = false;      // setImmediate: no nesting clamp
  };
  // Adds a timer; its id, or 0 when kMaxPending timers are pending.
  uint64_t Add(v8::Isolate* isolate, const Request& request);
  void Clear(v8::Isolate* isolate, uint64_t id);

  // Runs the timers of this context that are due now, inside `call` (whose
  // timeout covers them): a call that waits for its promise on its thread.
  // Whether any was due.
  bool RunDue(v8::Isolate* isolate, v8::Local<v8::Context> context, const CallState& call);

  // Cancels every timer and lets go of every V8 handle (isolate locked).
  void Close();
  void ResetLocked() override { Close(); }
  ~TimerTable() override;

 private:
  struct Timer {
    v8::Global<v8::Function> fn;
    v8::Global<v8::Array> args;
    int64_t due_ns = 0;
    uint64_t seq = 0;
    int64_t interval_ns = 0;
    int64_t deadline_ns = 0;   // inherited from the call that set it; 0: none
    int nesting = 0;
    bool repeat = false;
  };
  using Key = std::tuple<int64_t, uint64_t, uint64_t>;   // (due, seq, id)
  // The scope of one timer's callback and the microtasks after it (Fire sets
  // running_*): restores what ran before (timers fire inside other calls).
  struct Running {
    explicit Running(TimerTable& t)
        : table(t), call(t.running_call_), deadline(t.running_deadline_),
          nesting(t.running_nesting_) {}
    ~Running() {
      table.running_call_ = call;
      table.running_deadline_ = deadline;
      table.running_nesting_ = nesting;
    }
    TimerTable& table;
    const CallState* call;
    int64_t deadline;
    int nesting;
  };

  explicit TimerTable(IsolateHolder& holder) : holder_(holder) {}
  void Insert(uint64_t id, Timer& timer);
  std::vector<uint64_t> DueNow(size_t limit) const;
  // Runs timer `id` (if it is still pending) with `context` entered, inside
  // a Running scope of the caller's.
  void Fire(v8::Isolate* isolate, v8::Local<v8::Context> context, const CallState& call,
            v8::TryCatch& try_catch, uint64_t id);
  void Reschedule(uint64_t id, int64_t started_ns);
  // The timer thread: the earliest timer is due.
  void OnDue();
  // A pool thread: the job the timer thread queued.
  void RunJob(const std::shared_ptr<IsolateHolder>& holder);
  ivm_error_t* RunOne(uint64_t id);
  // Reports a callback that its timeout stopped (`why`: the call's error).
  void ReportTimedOut(const std::string& why);
  void Rearm();
  void ArmLocked(int64_t due_ns);

  friend void CloseTimers(v8::Isolate* isolate, v8::Local<v8::Context> context);
  IsolateHolder& holder_;
  std::weak_ptr<IsolateHolder> weak_holder_;   // for the timer thread and jobs
  std::weak_ptr<TimerTable> self_;
  v8::Global<v8::Context> context_;
  v8::Global<v8::Object> anchor_;
  std::unordered_map<uint64_t, Timer> timers_;   // isolate locked
  std::set<Key> order_;                           // isolate locked
  uint64_t next_id_ = 1, next_seq_ = 1;
  // The timer running now (isolate locked): what the timers it sets inherit.
  const CallState* running_call_ = nullptr;
  int64_t running_deadline_ = 0;
  int running_nesting_ = 0;

  std::atomic<bool> closed_{false};
  std::mutex mutex_;
  bool job_queued_ = false;
  uint64_t armed_id_ = 0;     // the timer thread's timer
  int64_t armed_due_ = 0;
  int64_t retry_ns_ = 0;      // backing off while a synchronous call holds the isolate
};

// promise_wait.cc: a call waiting for its promise on its thread runs the due
// timers of its context (a no-op for a context without timers). Whether any
// was due.
bool RunDueTimers(v8::Isolate* isolate, v8::Local<v8::Context> context, const CallState& call);
// ContextRecord::ResetLocked: the context is released; its timers end.
void CloseTimers(v8::Isolate* isolate, v8::Local<v8::Context> context);
// A timer or microtask callback threw: reported as an unhandled rejection of
// `context` (its on_unhandled_rejection hook, at the end of the call).
void ReportCallbackError(v8::Isolate* isolate, v8::Local<v8::Context> context,
                         v8::Local<v8::Value> exception);

}  // namespace ivm

#endif  // IVM_TIMER_TABLE_H
