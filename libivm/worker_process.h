// worker_process.h — the host side of one ivm-worker process: spawning it,
// its handshake, requests and their replies, its death and its cause
// (worker_process.cc), served by the one I/O thread of all workers
// (worker_io.cc). Nothing here is ABI. docs/process.md has the design.
#ifndef IVM_WORKER_PROCESS_H
#define IVM_WORKER_PROCESS_H

#include "ivm.h"
#include "wire.h"

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace ivm {

namespace remote {
class CallbackTable;   // remote_callbacks.cc
std::shared_ptr<CallbackTable> NewCallbackTable();
}  // namespace remote

struct WorkerLimits {
  uint32_t startup_timeout_ms = 10000;
  uint32_t max_rss_mb = 0;      // 0: none
  uint32_t cpu_limit_s = 0;     // 0: none (RLIMIT_CPU)
};

// How long a worker has to exit after EXIT before it is killed.
constexpr int64_t kExitGraceNs = 200 * 1000 * 1000;
// How long past a call's timeout a worker may take to answer (and then, a
// PING) before it is killed as unresponsive.
constexpr int64_t kCallGraceNs = 2000LL * 1000 * 1000;
// The most of a worker's stderr kept for the crash cause.
constexpr size_t kStderrTail = 8 * 1024;
// A worker's backlog on the host: its host callback calls (CALLBACK frames
// that invoke or notify) received and not yet answered or run. Past any of
// these bounds the worker is killed as a flood (a protocol violation), so a
// worker never makes the host buffer without bound. A well-behaved worker
// stays far below them: each of its threads waits for each call it makes
// (invoke, or kOpCallbackNotifyWait).
constexpr size_t kMaxCallbackBacklog = 4096;
constexpr size_t kMaxCallbackBacklogBytes = 256u << 20;
constexpr size_t kMaxCallbackBacklogFds = 256;

int64_t NowNs();   // CLOCK_MONOTONIC

class WorkerProcess : public std::enable_shared_from_this<WorkerProcess> {
 public:
  // Spawns a worker and waits for its HELLO (or its death, or the start-up
  // timeout, after which it is killed). Errors: CRASHED, INTERNAL.
  static ivm_error_t* Start(const WorkerLimits& limits, std::shared_ptr<WorkerProcess>* out);
  ~WorkerProcess();

  pid_t pid() const { return pid_; }
  // PING, waiting for PONG; timeout_ns 0: until it answers or dies.
  ivm_error_t* Ping(uint64_t timeout_ns);
  // A test-only CALL (IVM_DEBUG_HOOK_*): waits for the reply or the death,
  // except for SEND_BYTES, which is not answered.
  ivm_error_t* TestHook(uint32_t action, std::string_view data);
  // NULL while alive; CRASHED with the cause once dead; DISPOSED once disposed
  // (unless it had crashed before).
  ivm_error_t* Status();
  // Sends EXIT and has the I/O thread kill the worker after kExitGraceNs;
  // `wait`: until it is gone. Idempotent.
  void Dispose(bool wait);

  // ---- Remote isolates (remote_isolate.cc). ----
  // Receives a REPLY: exactly one of `reply` and `error` is set, and the
  // function owns `error`.
  using ReplyFn = std::function<void(wire::Frame* reply, ivm_error_t* error)>;
  uint64_t NextId();
  // Sends CALL frame `frame` (whose id is `id`) and waits for its REPLY, or
  // the worker's death (CRASHED, or DISPOSED once disposed). `timeout_ns` is
  // the call's own timeout (0: none): once it and kCallGraceNs have passed
  // without a REPLY (and then every kCallGraceNs: a heartbeat), the worker
  // must answer a PING within kCallGraceNs or be killed ("stopped
  // answering"). A worker busy running JavaScript still answers.
  // `fds`: the descriptors the frame carries (its header counts them).
  ivm_error_t* Call(uint64_t id, const std::string& frame, uint64_t timeout_ns,
                    wire::Frame* reply, const wire::Fds& fds = wire::Fds());
  // The same without waiting: `fn` runs once, on the I/O thread when the
  // REPLY arrives or the worker dies, or on this thread if it is dead already.
  void CallAsync(uint64_t id, const std::string& frame, uint64_t timeout_ns, ReplyFn fn,
                 const wire::Fds& fds = wire::Fds());
  // Sends a frame that is never answered (no-reply ops, CANCEL). Dropped if
  // the worker is dead.
  void Post(const std::string& frame);
  // `fn` runs once with the cause if the worker crashes (dies before it is
  // disposed): on the I/O thread, or on this one if it has crashed already.
  // It must not wait. Returns the id RemoveDeathListener takes.
  using DeathFn = std::function<void(const std::string& cause)>;
  uint64_t AddDeathListener(DeathFn fn);
  void RemoveDeathListener(uint64_t id);
  // A caller found a REPLY malformed: the worker is killed as for a protocol
  // violation, and the returned CRASHED error says why.
  ivm_error_t* BadReply(const std::string& why);

  // ---- Host callbacks (remote_callbacks.cc). ----
  // The host callbacks this worker holds, by id.
  remote::CallbackTable& callback_table() { return *callbacks_; }
  // I/O thread: a CALLBACK frame. An invocation goes to the thread waiting
  // for its CALL, or to a runner thread for an asynchronous one.
  void OnCallbackFrame(wire::Frame& frame);
  // Runs the host function of an invocation and sends its CALLBACK_REPLY.
  void RunCallback(const wire::Frame& frame);
  // The worker died: its callbacks are dropped (not on the I/O thread).
  void DropCallbacks();
  // A CALLBACK frame joins or leaves the worker's backlog (kMaxCallbackBacklog);
  // joining fails (says why) past a bound.
  bool JoinBacklogLocked(const wire::Frame& frame, std::string* why);
  void LeaveBacklogLocked(const wire::Frame& frame);

  // ---- The I/O thread's side (worker_io.cc calls these on its thread). ----
  enum Watch { kChannel, kStderr, kPidfd, kWatches };
  int watch_fd(Watch w) const;
  void* watch_tag(Watch w) { return &tags_[w]; }
  static WorkerProcess* FromTag(void* tag, Watch* which);
  void OnChannelReadable();
  void OnStderrReadable();
  // Reaps the process if it has exited; then fails every waiter.
  void OnMaybeExited();
  // Acts on deadlines (start-up, exit grace, max_rss_mb); returns the next
  // time it needs a tick (0: none).
  int64_t Tick(int64_t now_ns);
  bool finished() const { return finished_; }

 private:
  WorkerProcess() = default;
  // `use_zygote`: fork it from the zygote if there is one (zygote.cc).
  ivm_error_t* Spawn(const char* path, bool use_zygote);
  ivm_error_t* WaitForHello();
  // Reads the channel and handles its frames, unless a caller thread reads
  // it (read_mu_). `block`: the first read waits for bytes (a caller thread
  // reading its own REPLY); else only what is there. false once the channel
  // has ended or broken.
  bool ReadChannel(bool block);
  struct Waiter {
    uint16_t kind = 0;     // the answer expected: PONG or REPLY
    bool done = false;
    int64_t check_at = 0;  // past it, a PING checks that the worker answers (0: never)
    wire::Frame reply;
    std::deque<wire::Frame> callbacks;   // CALLBACK frames to run on the waiting thread
  };
  struct AsyncCall {
    ReplyFn fn;
    int64_t check_at = 0;
  };
  ivm_error_t* Request(uint64_t id, uint16_t answer_kind, const std::string& frame,
                       uint64_t timeout_ns, wire::Frame* reply, int64_t check_at = 0,
                       const wire::Fds& fds = wire::Fds());
  static int64_t CheckAt(uint64_t timeout_ns);
  void FailAsync();
  void NotifyDeath();
  int64_t CheckLivenessLocked(int64_t now);
  bool Send(const std::string& frame, const wire::Fds& fds = wire::Fds());
  // For the I/O thread, which must never wait to send (it is what reads the
  // worker's answers): sends a small frame whole if the channel takes it
  // now, else nothing (false).
  bool TrySend(const std::string& frame);
  void FlushDeferredLocked();
  ivm_error_t* DeadErrorLocked() const;
  void KillLocked(const std::string& reason);
  void OnFrame(wire::Frame& frame);
  // Direct reading (worker_io.cc): a synchronous caller that nobody else
  // reads for takes the channel off the I/O thread and reads its REPLY
  // itself, which saves the I/O thread's wake-up and its wake-up of the
  // caller (two thread switches per call). Under `lock` (mu_); returns once
  // the waiter is done, has callbacks to run, or the channel ended, with the
  // channel given back to the I/O thread and `lock` held again.
  // TakeChannelLocked takes the channel (CanReadHereLocked) before the CALL
  // is sent, so that a quick REPLY never reaches the I/O thread first; its
  // ReadHere then says `taken`. Both under `lock`.
  // A caller leaves the channel paused when it is done (paused_): the next
  // synchronous call takes it as it is, which saves both epoll_ctl calls.
  // The I/O thread resumes it kPauseNs later if no caller came, and whatever
  // waits for the I/O thread's reading (asynchronous calls, posted frames,
  // PING) resumes it at once (ResumeIfPausedLocked).
  bool CanReadHereLocked() const;
  bool TakeChannelLocked(std::unique_lock<std::mutex>& lock);
  void ResumeIfPausedLocked();
  void ReadHere(Waiter& waiter, std::unique_lock<std::mutex>& lock, bool taken = false);
  // ReadHere's blocking read first tries non-blocking reads of the channel for
  // a short while (IVM_WORKER_SPIN_US), unless recent spins kept missing;
  // returns the read that got something (wire::InputPoll::Read), or -1 with
  // errno EAGAIN. Under read_mu_.
  ssize_t SpinForInput(char* buf, size_t len, bool* truncated);
  // I/O thread: the REPLYs of asynchronous calls that a caller thread read
  // (their functions run here, as for any REPLY).
  void RunHandoff();
  void ProtocolViolation(const std::string& why);
  void ReadStderrLocked();
  std::string CauseLocked(int wait_status, bool have_status) const;
  void FinishLocked(std::string cause);
  void ArmDeadline(int64_t at_ns, std::string reason);

  struct Tag {
    WorkerProcess* owner;
    Watch which;
  };
  Tag tags_[kWatches] = {{this, kChannel}, {this, kStderr}, {this, kPidfd}};

  WorkerLimits limits_;
  pid_t pid_ = -1;
  int pidfd_ = -1;    // -1 without pidfd support: the I/O thread polls
  int sock_ = -1;     // closed under send_mu_
  int err_ = -1;      // the read end of the worker's stderr

  std::mutex send_mu_;   // serialises writers; guards sock_'s lifetime
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool hello_ = false;
  bool reaped_ = false;
  bool dead_ = false;
  bool disposed_ = false;
  bool crashed_before_dispose_ = false;
  bool channel_closed_ = false;
  std::string cause_;
  std::string kill_reason_;      // why the host killed it, if it did
  int64_t deadline_ns_ = 0;      // kill at this time (0: none), for:
  std::string deadline_reason_;
  int64_t next_rss_check_ns_ = 0;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Waiter*> pending_;
  std::unordered_set<uint64_t> abandoned_;   // timed-out ids whose answer may come late
  std::unordered_map<uint64_t, AsyncCall> async_;   // CallAsync's, by id
  std::unordered_map<uint64_t, DeathFn> death_listeners_;
  std::vector<std::string> deferred_;   // no-reply frames the I/O thread could not send yet
  int64_t send_blocked_since_ = 0;      // the I/O thread could not PING since then (0: could)
  uint64_t liveness_ping_ = 0;       // the id of a PING checking an overdue call
  int64_t liveness_deadline_ = 0;    // its answer is due by then

  std::shared_ptr<remote::CallbackTable> callbacks_ = remote::NewCallbackTable();
  // The callback backlog: frames, payload bytes and descriptors (under mu_).
  size_t backlog_frames_ = 0, backlog_bytes_ = 0, backlog_fds_ = 0;

  // Direct reading (under mu_): a caller thread reads the channel; sock_
  // stays open until it gives the channel back (close_after_read_).
  bool caller_reading_ = false;
  int64_t reading_since_ = 0;      // when the caller reading it began (NowNs)
  bool close_after_read_ = false;
  bool read_here_ended_ = false;   // a caller saw the channel end: no more direct reading
  bool paused_ = false;            // left paused by the last caller, nobody reading
  int64_t resume_at_ = 0;          // when the I/O thread resumes it then
  // Asynchronous calls whose REPLY a caller thread read, for the I/O thread.
  std::deque<std::pair<ReplyFn, wire::Frame>> handoff_;

  // The reader's alone: the I/O thread, or a caller thread reading its own
  // REPLY, whichever holds read_mu_.
  std::mutex read_mu_;
  std::unique_ptr<char[]> read_buf_;   // 64 KiB, made on the first read
  wire::FrameBuffer in_;
  wire::Fds in_fds_;   // received, not yet claimed by a frame
  bool channel_bad_ = false;
  wire::InputPoll input_poll_;   // SpinForInput's
  std::string stderr_tail_;
  bool finished_ = false;
};

// process_group.cc: the worker of a process group handle.
std::shared_ptr<WorkerProcess> GroupWorker(const ivm_process_group_t* group);

// zygote.cc: forks a worker of `path` from the zygote (started on first use)
// with `sock` as its channel and `err` as its stderr; false when there is no
// usable zygote (the caller then spawns the worker itself).
bool ZygoteFork(const std::string& path, int sock, int err, pid_t* pid);
// Spawns `path` with `argv` as a worker or zygote: stdin and stdout on /dev/null,
// stderr on `err` (-1: /dev/null), `sock` as wire::kChannelFd, every other
// descriptor closed, no signal blocked and each at its default action (the host's
// masks and ignored signals stay in the host). Returns 0 or an errno value.
int SpawnWorker(const char* path, char* const argv[], int sock, int err, pid_t* pid);

// zygote.cc: the zygote's pidfd became readable (it ended): reap it now, unless
// a worker start holds the zygote (which then finds it dead itself). I/O thread.
void ZygoteExited();

// worker_io.cc: the single I/O thread. Register() hands it a started worker;
// it keeps the worker alive until its death is processed.
void RegisterWorker(const std::shared_ptr<WorkerProcess>& worker);
// The I/O thread calls ZygoteExited() once `pidfd` is readable; until unwatched
// (before the pidfd is closed).
void WatchZygote(int pidfd);
void UnwatchZygote(int pidfd);
// Makes the I/O thread recompute its deadlines.
void WakeIoThread();
// The same, unless it will tick by `at_ns` anyway (cheap to call per request).
void WakeIoThreadBy(int64_t at_ns);
// Whether the calling thread is the I/O thread.
bool OnIoThread();

}  // namespace ivm

#endif  // IVM_WORKER_PROCESS_H
