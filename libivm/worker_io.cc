// worker_io.cc — the one host thread that serves every worker process
// (epoll): it reads their frames and routes answers to waiters, keeps the
// tail of their stderr, watches their deaths through pidfds, reaps them,
// closes their descriptors and records the cause; and it enforces deadlines
// (start-up, exit grace) and max_rss_mb.
//
// Nothing a worker sends is trusted. A frame that is malformed, oversized,
// unexpected or carries descriptors kills the worker ("protocol violation").
#include "worker_process.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

namespace ivm {

namespace {

constexpr int64_t kRssIntervalNs = 20 * 1000 * 1000;
constexpr int64_t kPollIntervalNs = 10 * 1000 * 1000;   // without pidfd
// While workers exist the loop ticks at least this often, so that a call's
// liveness check (due 2 s or more after it starts) never needs a wake-up of
// its own: waking this thread for each call cost the host an eventfd write
// and a thread switch per round trip. Checks run up to this much late.
constexpr int64_t kIdleTickNs = 500 * 1000 * 1000;
// How long a caller leaves the channel paused after its REPLY (ReadHere):
// frames the worker sends unasked meanwhile (a host callback of JavaScript
// that no call runs, such as a timer's) wait that long at most.
constexpr int64_t kPauseNs = 1000 * 1000;
// For this long into a caller's read the I/O thread keeps looking every
// kPauseNs (a loop of short calls); after it, it leaves the caller alone.
constexpr int64_t kPauseLookNs = 20 * 1000 * 1000;

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::atomic<std::thread::id> g_io_thread{};
char g_zygote_tag;   // the epoll tag of the zygote's pidfd (zygote.cc)

class IoLoop {
 public:
  static IoLoop& Get() {
    static IoLoop* loop = new IoLoop();   // never destroyed: its thread runs until exit
    return *loop;
  }

  void Add(const std::shared_ptr<WorkerProcess>& worker) {
    std::lock_guard<std::mutex> lock(mu_);
    workers_.push_back(worker);
    for (int w = 0; w < WorkerProcess::kWatches; ++w) {
      auto which = static_cast<WorkerProcess::Watch>(w);
      int fd = worker->watch_fd(which);
      if (fd < 0) continue;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = worker->watch_tag(which);
      epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    }
    Wake();
  }

  // Watches `fd` for one readable event, reported with `tag`.
  void WatchOnce(int fd, void* tag) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.ptr = tag;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  }

  void Remove(int fd) {
    if (fd >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  }

  // Stops reporting `fd`'s input (a caller reads it: ReadHere) without
  // removing it: one EPOLL_CTL_MOD each way costs a third of a DEL and an ADD.
  // The kernel keeps EPOLLHUP and EPOLLERR in any mask; EPOLLONESHOT makes
  // those fire once, not on every wait while the caller finishes.
  // The tag stays: a hang-up reported meanwhile reaches the channel's handler
  // (which leaves the channel to a caller that is reading it).
  void Pause(int fd, void* tag) {
    epoll_event ev{};
    ev.events = EPOLLONESHOT;
    ev.data.ptr = tag;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
  }

  // Undoes Pause (input already waiting is reported at once).
  void Resume(int fd, void* tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = tag;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
  }

  void Wake() {
    uint64_t one = 1;
    ssize_t n = write(wakefd_, &one, sizeof one);
    (void)n;   // a full counter wakes the loop anyway
  }

 private:
  IoLoop() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev);
    std::thread([this] {
      g_io_thread.store(std::this_thread::get_id());
      Run();
    }).detach();
  }

  // Ticks every worker; drops those whose death is processed. Returns the
  // epoll timeout in ms (-1: none).
  int TickAll() {
    // Until this tick has planned, a WakeIoThreadBy wakes the loop (an extra
    // turn) rather than being overwritten by a plan made without it.
    planned_.store(INT64_MIN, std::memory_order_relaxed);
    std::vector<std::shared_ptr<WorkerProcess>> workers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      workers = workers_;
    }
    int64_t now = NowNs(), next = 0;
    for (auto& w : workers) {
      int64_t at = w->Tick(now);
      if (at != 0 && (next == 0 || at < next)) next = at;
    }
    if (!workers.empty() && (next == 0 || next > now + kIdleTickNs)) next = now + kIdleTickNs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::erase_if(workers_, [](const auto& w) { return w->finished(); });
    }
    int64_t plan = next == 0 ? INT64_MAX : next, seen = INT64_MIN;
    if (!planned_.compare_exchange_strong(seen, plan, std::memory_order_relaxed)) {
      return 0;   // asked for meanwhile: tick again at once
    }
    if (next == 0) return -1;
    int64_t ms = (next - NowNs() + 999999) / 1000000;
    return ms < 0 ? 0 : static_cast<int>(ms > 60000 ? 60000 : ms);
  }

  void Run() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);   // signals belong to the host's threads
    epoll_event events[64];
    int timeout = -1;
    for (;;) {
      int n = epoll_wait(epfd_, events, 64, timeout);
      for (int i = 0; i < n; ++i) {
        if (events[i].data.ptr == nullptr) {
          uint64_t count;
          ssize_t r = read(wakefd_, &count, sizeof count);
          (void)r;
          continue;
        }
        if (events[i].data.ptr == &g_zygote_tag) {
          ZygoteExited();
          continue;
        }
        // Workers leave workers_ only in TickAll below, after this batch, so
        // the tag's owner is alive.
        WorkerProcess::Watch which;
        WorkerProcess* w = WorkerProcess::FromTag(events[i].data.ptr, &which);
        if (w->finished()) continue;
        if (which == WorkerProcess::kChannel) w->OnChannelReadable();
        else if (which == WorkerProcess::kStderr) w->OnStderrReadable();
        else w->OnMaybeExited();
      }
      timeout = TickAll();
    }
  }

  int epfd_ = -1, wakefd_ = -1;

 public:
  // When the loop will tick next (INT64_MAX: not before an event).
  std::atomic<int64_t> planned_{INT64_MAX};

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<WorkerProcess>> workers_;
};

}  // namespace

void RegisterWorker(const std::shared_ptr<WorkerProcess>& worker) { IoLoop::Get().Add(worker); }

void WakeIoThread() { IoLoop::Get().Wake(); }

void WatchZygote(int pidfd) { IoLoop::Get().WatchOnce(pidfd, &g_zygote_tag); }

void UnwatchZygote(int pidfd) { IoLoop::Get().Remove(pidfd); }

bool OnIoThread() { return g_io_thread.load() == std::this_thread::get_id(); }

void WakeIoThreadBy(int64_t at_ns) {
  IoLoop& loop = IoLoop::Get();
  int64_t planned = loop.planned_.load(std::memory_order_relaxed);
  if (planned == INT64_MIN) {   // a tick is planning: it ticks again instead
    if (loop.planned_.compare_exchange_strong(planned, at_ns, std::memory_order_relaxed)) return;
  }
  if (at_ns < planned) {
    loop.planned_.store(at_ns, std::memory_order_relaxed);
    loop.Wake();
  }
}

int WorkerProcess::watch_fd(Watch w) const {
  return w == kChannel ? sock_ : w == kStderr ? err_ : pidfd_;
}

WorkerProcess* WorkerProcess::FromTag(void* tag, Watch* which) {
  auto* t = static_cast<Tag*>(tag);
  *which = t->which;
  return t->owner;
}

// ---------------------------------------------------------------------------
// Frames

void WorkerProcess::ProtocolViolation(const std::string& why) {
  if (channel_bad_) return;
  channel_bad_ = true;
  IoLoop::Get().Remove(sock_);
  std::lock_guard<std::mutex> lock(mu_);
  KillLocked("protocol violation: " + why);
}

void WorkerProcess::OnChannelReadable() {
  std::unique_lock<std::mutex> reading(read_mu_, std::try_to_lock);
  if (reading.owns_lock()) ReadChannel(false);   // else a caller thread reads it (ReadHere)
}

bool WorkerProcess::ReadChannel(bool block) {
  if (channel_bad_ || channel_closed_ || sock_ < 0) return false;
  // Not a thread_local: 64 KiB of static TLS (libivm linked at start-up) is
  // reserved on every thread's stack, and thread stacks smaller than that
  // (V8's CPU profiler's: 64 KiB) could no longer be created.
  constexpr size_t kReadSize = 64 * 1024;
  if (!read_buf_) read_buf_ = std::make_unique<char[]>(kReadSize);
  char* buf = read_buf_.get();
  for (int round = 0; round < 16; ++round) {   // then let other workers have a turn
    bool truncated = false;
    // (The socket is non-blocking: a blocking read spins, then sleeps in poll().)
    ssize_t n = block && round == 0 ? SpinForInput(buf, kReadSize, &truncated) : -1;
    bool read_now = !(block && round == 0) || (n < 0 && errno == EAGAIN);
    if (block && round == 0 && read_now) {
      pollfd p{sock_, POLLIN, 0};
      if (poll(&p, 1, -1) < 0 && errno == EINTR) continue;   // (another error: the read tells)
    }
    if (read_now) {
      n = wire::RecvWithFds(sock_, buf, kReadSize, MSG_DONTWAIT, &in_fds_, &truncated);
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    // Descriptors come with the first bytes of the frame that claims them
    // (OnFrame); more than two frames' worth waiting is a violation.
    if (truncated || in_fds_.size() > 2 * wire::kMaxFds) {
      in_fds_.clear();
      ProtocolViolation("descriptors sent that no frame claims");
      return false;
    }
    if (n <= 0) {
      // End of stream (or a broken one): the worker closed its channel. Its
      // death normally follows at once; if it does not, it is killed.
      channel_closed_ = true;
      IoLoop::Get().Remove(sock_);
      ArmDeadline(NowNs() + kExitGraceNs, "closed its channel");
      return false;
    }
    in_.Append(buf, static_cast<size_t>(n));
    wire::Frame frame;
    std::string why;
    for (;;) {
      wire::FrameBuffer::Result r = in_.Next(&frame, &why);
      if (r == wire::FrameBuffer::kNeedMore) break;
      if (r == wire::FrameBuffer::kBad) {
        ProtocolViolation(why);
        return false;
      }
      OnFrame(frame);
      if (channel_bad_) return false;
    }
    // A short read emptied the socket: no second recvmsg just to see EAGAIN
    // (epoll is level-triggered, so anything that arrives later wakes us).
    if (static_cast<size_t>(n) < kReadSize) return true;
  }
  return true;
}

// How long a caller reading its own REPLY (ReadHere) tries to read the channel
// before it sleeps in poll(): a worker answers a short call in a few tens of
// microseconds, and a sleeping thread's wake-up costs about as much again
// (more on a busy VM). IVM_WORKER_SPIN_US overrides the 40 us (read once; 0:
// sleep at once; at most 10000). The read that finds the REPLY is the read
// itself (wire::InputPoll::Read), not a poll() before it.
ssize_t WorkerProcess::SpinForInput(char* buf, size_t len, bool* truncated) {
  static const int64_t spin = wire::SpinFromEnv("IVM_WORKER_SPIN_US", 40);
  return input_poll_.Read(sock_, spin, buf, len, &in_fds_, truncated);
}

namespace {

// IVM_WORKER_DIRECT_READ=0 turns direct reading off (read once; for
// measuring it against the I/O thread's reading).
bool DirectReadEnabled() {
  static const bool enabled = [] {
    const char* env = getenv("IVM_WORKER_DIRECT_READ");
    return env == nullptr || strcmp(env, "0") != 0;
  }();
  return enabled;
}

}  // namespace

bool WorkerProcess::CanReadHereLocked() const {
  return DirectReadEnabled() && !caller_reading_ && !read_here_ended_ && hello_ && !dead_ &&
         sock_ >= 0 && !OnIoThread();
}

bool WorkerProcess::TakeChannelLocked(std::unique_lock<std::mutex>& lock) {
  if (!CanReadHereLocked()) return false;
  caller_reading_ = true;
  if (std::exchange(paused_, false)) return true;   // as the last caller left it
  lock.unlock();
  IoLoop::Get().Pause(sock_, watch_tag(kChannel));   // stable while caller_reading_ (FinishLocked)
  lock.lock();
  return true;
}

void WorkerProcess::ReadHere(Waiter& waiter, std::unique_lock<std::mutex>& lock, bool taken) {
  caller_reading_ = true;
  reading_since_ = NowNs();
  bool pause = !taken && !std::exchange(paused_, false);
  lock.unlock();
  IoLoop& loop = IoLoop::Get();
  if (pause) loop.Pause(sock_, watch_tag(kChannel));   // stable until close_after_read_ is seen below
  bool ended = false;
  {
    // The I/O thread may be reading it right now (and may even read our
    // REPLY): we wait for it, then check before every blocking read.
    std::lock_guard<std::mutex> reading(read_mu_);
    for (;;) {
      {
        std::lock_guard<std::mutex> state(mu_);
        if (waiter.done || !waiter.callbacks.empty() || dead_) break;
      }
      // Ended or broken: the I/O thread processes the death as usual.
      if (!ReadChannel(true)) {
        ended = true;
        break;
      }
    }
  }
  lock.lock();
  caller_reading_ = false;
  if (ended) read_here_ended_ = true;   // later waits leave it to the I/O thread
  if (close_after_read_) {   // it died meanwhile (FinishLocked left sock_ to us)
    std::lock_guard<std::mutex> send_lock(send_mu_);
    close(sock_);
    in_fds_.clear();
    sock_ = -1;
  } else if (!channel_bad_ && !channel_closed_ && !dead_ && waiter.done && pending_.empty() &&
             async_.empty()) {
    // Back to the I/O thread, but paused for a while: a loop of synchronous
    // calls then pays no epoll_ctl per call, and the I/O thread wakes (for
    // this) at most once per kPauseNs. Only when nothing else waits for an
    // answer (and no host callback is to run before this call's REPLY).
    paused_ = true;
    resume_at_ = NowNs() + kPauseNs;
    WakeIoThreadBy(resume_at_);
  } else if (!channel_bad_ && !channel_closed_ && !dead_) {
    loop.Resume(sock_, watch_tag(kChannel));   // back to the I/O thread
  }
  if (dead_ && !handoff_.empty()) {   // the I/O thread is done with it: run them here
    std::deque<std::pair<ReplyFn, wire::Frame>> calls;
    calls.swap(handoff_);
    lock.unlock();
    for (auto& [fn, frame] : calls) fn(&frame, nullptr);
    lock.lock();
  }
}

void WorkerProcess::ResumeIfPausedLocked() {
  if (!std::exchange(paused_, false) || dead_ || sock_ < 0) return;
  IoLoop::Get().Resume(sock_, watch_tag(kChannel));   // (under mu_: never after a Pause)
}

void WorkerProcess::RunHandoff() {
  std::deque<std::pair<ReplyFn, wire::Frame>> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    calls.swap(handoff_);
  }
  for (auto& [fn, frame] : calls) fn(&frame, nullptr);
}

namespace {

bool ValidHello(const std::string& payload, std::string* why) {
  wire::Reader r(payload);
  uint32_t magic = 0, protocol = 0, version = 0;
  std::string_view v8;
  if (!r.U32(&magic) || !r.U32(&protocol) || !r.U32(&version) || !r.Bytes(&v8, 64) ||
      !r.Done()) {
    *why = "malformed HELLO";
  } else if (magic != wire::kMagic) {
    *why = "HELLO without the magic number";
  } else if (protocol != wire::kProtocolVersion) {
    *why = "HELLO with protocol version " + std::to_string(protocol) + ", expected " +
           std::to_string(wire::kProtocolVersion);
  } else if (version != ivm_version()) {
    *why = "the worker is libivm " + std::to_string(version) + ", the host " +
           std::to_string(ivm_version());
  } else {
    return true;
  }
  return false;
}

// The common head of a REPLY: status and message. The rest is the op's (for
// remote isolates, checked by remote_isolate.cc, which kills a worker whose
// reply is malformed).
bool ValidReply(const std::string& payload) {
  wire::Reader r(payload);
  uint32_t status = 0;
  std::string_view message;
  return r.U32(&status) && r.Bytes(&message) &&
         (status == wire::kStatusOk ||
          (status >= IVM_ERROR_JS_EXCEPTION && status <= IVM_ERROR_CROSS_PROCESS));
}

}  // namespace

void WorkerProcess::OnFrame(wire::Frame& frame) {
  const wire::Header& h = frame.header;
  std::string why;
  if (h.fd_count() != 0) {   // rref: large buffers of a REPLY's or CALLBACK's values
    if ((h.kind != wire::kReply && h.kind != wire::kCallback) || h.fd_count() > in_fds_.size()) {
      return ProtocolViolation(std::string("a ") + wire::KindName(h.kind) +
                               " frame claims descriptors it did not send");
    }
    frame.fds.assign(in_fds_.begin(), in_fds_.begin() + h.fd_count());
    in_fds_.erase(in_fds_.begin(), in_fds_.begin() + h.fd_count());
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (h.kind == wire::kHello) {
    if (hello_) why = "a second HELLO";
    else if (!ValidHello(frame.payload, &why)) {}
    else {
      hello_ = true;
      deadline_ns_ = 0;
      cv_.notify_all();
      return;
    }
  } else if (!hello_) {
    why = std::string("a ") + wire::KindName(h.kind) + " frame before HELLO";
  } else if (h.kind == wire::kPong && h.id == liveness_ping_ && liveness_ping_ != 0 &&
             frame.payload.empty()) {
    // Alive and answering: the overdue calls get another grace period.
    liveness_ping_ = 0;
    int64_t later = NowNs() + kCallGraceNs;
    for (auto& [id, waiter] : pending_) {
      if (waiter->check_at != 0) waiter->check_at = later;
    }
    for (auto& [id, call] : async_) {
      if (call.check_at != 0) call.check_at = later;
    }
    return;
  } else if (h.kind == wire::kReply && async_.count(h.id) != 0) {
    auto it = async_.find(h.id);
    if (ValidReply(frame.payload)) {
      ReplyFn fn = std::move(it->second.fn);
      async_.erase(it);
      if (!OnIoThread()) {   // read by a caller thread: its function runs on the I/O thread
        handoff_.emplace_back(std::move(fn), std::move(frame));
        lock.unlock();
        WakeIoThread();
        return;
      }
      lock.unlock();
      fn(&frame, nullptr);
      return;
    }
    why = "a malformed REPLY (id " + std::to_string(h.id) + ")";
  } else if (h.kind == wire::kCallback) {   // remote_callbacks.cc
    lock.unlock();
    return OnCallbackFrame(frame);
  } else if (h.kind == wire::kPong || h.kind == wire::kReply) {
    auto it = pending_.find(h.id);
    if (it != pending_.end() && it->second->kind == h.kind &&
        (h.kind == wire::kPong ? frame.payload.empty() : ValidReply(frame.payload))) {
      it->second->reply = std::move(frame);
      it->second->done = true;
      pending_.erase(it);
      cv_.notify_all();
      return;
    }
    if (it == pending_.end() && abandoned_.erase(h.id) != 0) return;   // too late
    why = std::string(it == pending_.end() ? "an unexpected " : "a malformed ") +
          wire::KindName(h.kind) + " (id " + std::to_string(h.id) + ")";
  } else {
    why = std::string("a ") + wire::KindName(h.kind) + " frame, which workers never send";
  }
  lock.unlock();
  ProtocolViolation(why);
}

// ---------------------------------------------------------------------------
// stderr, death, deadlines

void WorkerProcess::OnStderrReadable() {
  if (err_ < 0) return;
  char buf[4096];
  for (int round = 0; round < 16; ++round) {
    ssize_t n = read(err_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      IoLoop::Get().Remove(err_);
      close(err_);
      err_ = -1;
      return;
    }
    stderr_tail_.append(buf, static_cast<size_t>(n));
    if (stderr_tail_.size() > kStderrTail) {
      stderr_tail_.erase(0, stderr_tail_.size() - kStderrTail);
    }
  }
}

void WorkerProcess::KillLocked(const std::string& reason) {
  if (reaped_ || dead_) return;
  siginfo_t info{};
  // A process that already ended on its own keeps its own cause.
  if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
      info.si_pid == pid_) {
    return;
  }
  if (kill_reason_.empty()) kill_reason_ = reason;
  if (pidfd_ < 0 || syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0) != 0) {
    kill(pid_, SIGKILL);
  }
}

std::string WorkerProcess::CauseLocked(int wait_status, bool have_status) const {
  std::string cause = "worker process " + std::to_string(pid_);
  if (!kill_reason_.empty()) {
    cause += " " + kill_reason_ + ", so the host killed it (SIGKILL)";
  } else if (!have_status) {
    cause += " ended (its exit status was collected by someone else)";
  } else if (WIFEXITED(wait_status)) {
    cause += " exited with status " + std::to_string(WEXITSTATUS(wait_status));
  } else if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    cause += " was killed by signal " + std::to_string(sig) + " (" + SignalName(sig) + ")";
    if (sig == SIGSYS) cause += ": the sandbox (seccomp) stopped a forbidden system call";
    if (sig == SIGXCPU) cause += ": it ran past its CPU time limit (RLIMIT_CPU)";
  }
  std::string tail = stderr_tail_;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (!tail.empty()) cause += "; its stderr ends with:\n" + tail;
  return cause;
}

void WorkerProcess::OnMaybeExited() {
  siginfo_t info{};
  int rc = waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
  if (rc == 0 && info.si_pid == 0) return;   // still running
  // What it wrote before dying: its last frames, its last words.
  OnChannelReadable();
  while (err_ >= 0) {
    int before = err_;
    size_t size = stderr_tail_.size();
    OnStderrReadable();
    if (err_ == before && stderr_tail_.size() == size) break;   // EAGAIN: nothing left
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    int status = 0;
    bool have = waitpid(pid_, &status, WNOHANG) == pid_;
    reaped_ = true;
    FinishLocked(CauseLocked(status, have));
  }
  FailAsync();
  NotifyDeath();
  DropCallbacks();
}

void WorkerProcess::FinishLocked(std::string cause) {
  dead_ = true;
  crashed_before_dispose_ = !disposed_;
  cause_ = std::move(cause);
  IoLoop& loop = IoLoop::Get();
  loop.Remove(pidfd_);
  loop.Remove(err_);
  loop.Remove(sock_);
  for (int* fd : {&pidfd_, &err_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (sock_ >= 0 && caller_reading_) {
    shutdown(sock_, SHUT_RDWR);   // ends its read; it closes sock_ when it is done
    close_after_read_ = true;
  } else if (sock_ >= 0) {
    shutdown(sock_, SHUT_RDWR);   // wakes a writer waiting for room
    std::lock_guard<std::mutex> send_lock(send_mu_);
    close(sock_);
    in_fds_.clear();
    sock_ = -1;
  }
  finished_ = true;
  cv_.notify_all();
}

int64_t WorkerProcess::Tick(int64_t now) {
  RunHandoff();
  if (pidfd_ < 0 && !finished_) OnMaybeExited();   // no pidfd: poll
  std::lock_guard<std::mutex> lock(mu_);
  if (dead_) return 0;
  int64_t next = pidfd_ < 0 ? now + kPollIntervalNs : 0;
  auto earliest = [&](int64_t at) {
    if (next == 0 || at < next) next = at;
  };
  if (deadline_ns_ != 0 && now >= deadline_ns_) {
    deadline_ns_ = 0;
    KillLocked(deadline_reason_);
  } else if (deadline_ns_ != 0) {
    earliest(deadline_ns_);
  }
  FlushDeferredLocked();
  if (!deferred_.empty()) earliest(now + 10 * 1000 * 1000);
  if (paused_ && !caller_reading_ && now >= resume_at_) ResumeIfPausedLocked();
  if (paused_) {
    earliest(resume_at_);
  } else if (caller_reading_ && now - reading_since_ < kPauseLookNs) {
    // It will likely leave the channel paused: plan to look then, so that its
    // WakeIoThreadBy (once per call in a loop of calls) need not wake us. Not
    // for a long call: its one WakeIoThreadBy at the end wakes us instead.
    earliest(now + kPauseNs);
  }
  int64_t check = CheckLivenessLocked(now);
  if (check != 0) earliest(check);
  if (limits_.max_rss_mb != 0) {
    if (now >= next_rss_check_ns_) {
      next_rss_check_ns_ = now + kRssIntervalNs;
      char path[64];
      snprintf(path, sizeof path, "/proc/%d/statm", static_cast<int>(pid_));
      FILE* f = fopen(path, "re");
      unsigned long size = 0, resident = 0;
      if (f != nullptr && fscanf(f, "%lu %lu", &size, &resident) == 2) {
        uint64_t mib = resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) >> 20;
        if (mib > limits_.max_rss_mb) {
          KillLocked("exceeded max_rss_mb=" + std::to_string(limits_.max_rss_mb) + " (" +
                     std::to_string(mib) + " MiB resident)");
        }
      }
      if (f != nullptr) fclose(f);
    }
    earliest(next_rss_check_ns_);
  }
  return next;
}

// Calls past their timeout and grace: PING the worker; kill it if it does not
// answer within kCallGraceNs. Returns when to look again (0: no need).
int64_t WorkerProcess::CheckLivenessLocked(int64_t now) {
  int64_t due = 0;
  auto consider = [&](int64_t at) {
    if (at != 0 && (due == 0 || at < due)) due = at;
  };
  for (auto& [id, waiter] : pending_) consider(waiter->check_at);
  for (auto& [id, call] : async_) consider(call.check_at);
  if (due == 0) {
    if (liveness_ping_ != 0) abandoned_.insert(liveness_ping_);   // its PONG may still come
    liveness_ping_ = 0;
    return 0;
  }
  if (liveness_ping_ != 0) {
    if (now < liveness_deadline_) return liveness_deadline_;
    KillLocked("stopped answering (a call ran " +
               std::to_string(kCallGraceNs / 1000000) +
               " ms past its timeout and a PING got no answer within as long)");
    return 0;
  }
  if (now < due) return due;
  uint64_t id = next_id_;
  if (!TrySend(wire::Writer(wire::kPing, id).Finish())) {
    // The channel is full or busy: a worker that does not read it for as
    // long as it may take to answer is stuck too.
    if (send_blocked_since_ == 0) send_blocked_since_ = now;
    if (now - send_blocked_since_ >= kCallGraceNs) {
      KillLocked("stopped reading its channel (a call ran past its timeout)");
      return 0;
    }
    return now + 10 * 1000 * 1000;
  }
  send_blocked_since_ = 0;
  liveness_ping_ = next_id_++;
  liveness_deadline_ = now + kCallGraceNs;
  return liveness_deadline_;
}

}  // namespace ivm
