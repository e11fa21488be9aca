// worker_process.cc — one ivm-worker process seen from the host: spawning it
// (only fds 0-3 reach it), the handshake, requests, the cause of its death,
// and the ABI of "Processes" in ivm.h (ivm_process_group_*).
//
// The host never trusts the worker: frames go through wire::FrameBuffer and
// every field is checked; anything malformed or unexpected kills the worker
// with the cause "protocol violation: ...". The I/O thread (worker_io.cc)
// calls the On*() methods; everything the callers' threads share with it is
// under mu_.
#include "worker_process.h"

#include "internal.h"
#include "host_exit.h"
#include "options.h"
#include "remote.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>

extern char** environ;

namespace ivm {

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

namespace {

// IVM_WORKER_PATH, else ivm-worker beside the libivm.so this code is in.
std::string WorkerPath() {
  const char* env = getenv("IVM_WORKER_PATH");
  if (env != nullptr && *env != '\0') return env;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&ivm_process_group_new), &info) != 0 &&
      info.dli_fname != nullptr) {
    std::string lib = info.dli_fname;
    size_t slash = lib.rfind('/');
    return (slash == std::string::npos ? std::string(".") : lib.substr(0, slash)) +
           "/ivm-worker";
  }
  return "ivm-worker";
}

std::string Errno(const char* what, int err) {
  return std::string(what) + ": " + strerror(err);
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

// ---------------------------------------------------------------------------
// Start

int SpawnWorker(const char* path, char* const argv[], int sock, int err, pid_t* pid) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (err >= 0) {
    posix_spawn_file_actions_adddup2(&fa, err, 2);
  } else {
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&fa, sock, wire::kChannelFd);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
  posix_spawn_file_actions_addclosefrom_np(&fa, wire::kChannelFd + 1);
#endif
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  int rc = posix_spawn(pid, path, &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc;
}

ivm_error_t* WorkerProcess::Spawn(const char* path, bool use_zygote) {
  int sv[2], ep[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return MakeError(IVM_ERROR_INTERNAL, Errno("socketpair", errno));
  }
  if (pipe2(ep, O_CLOEXEC) != 0) {
    int err = errno;
    close(sv[0]);
    close(sv[1]);
    return MakeError(IVM_ERROR_INTERNAL, Errno("pipe2", err));
  }
  // The child's ends sit above 3 so that each dup2 below makes a real copy
  // (a dup2 onto itself would keep CLOEXEC); every other host descriptor is
  // closed by closefrom or CLOEXEC.
  int child_sock = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
  int child_err = fcntl(ep[1], F_DUPFD_CLOEXEC, 10);
  close(sv[1]);
  close(ep[1]);
  pid_t pid = -1;
  int rc = (child_sock < 0 || child_err < 0) ? EMFILE : 0;
  // The default worker is forked from the zygote (zygote.cc) when it can be.
  bool forked = rc == 0 && use_zygote && ZygoteFork(path, child_sock, child_err, &pid);
  if (rc == 0 && !forked) {
    char* argv[] = {const_cast<char*>(path), nullptr};
    rc = SpawnWorker(path, argv, child_sock, child_err, &pid);
  }
  if (child_sock >= 0) close(child_sock);
  if (child_err >= 0) close(child_err);
  if (rc != 0) {
    close(sv[0]);
    close(ep[0]);
    return MakeError(IVM_ERROR_INTERNAL,
                     "cannot start the worker " + std::string(path) + ": " + strerror(rc));
  }
  pid_ = pid;
  sock_ = sv[0];
  err_ = ep[0];
  SetNonBlocking(sock_);
  SetNonBlocking(err_);
  rlimit no_core = {0, 0};
  prlimit(pid, RLIMIT_CORE, &no_core, nullptr);
  if (limits_.cpu_limit_s != 0) {
    // Past the soft limit SIGXCPU ends it; the hard limit is SIGKILL.
    rlimit cpu = {limits_.cpu_limit_s, static_cast<rlim_t>(limits_.cpu_limit_s) + 1};
    prlimit(pid, RLIMIT_CPU, &cpu, nullptr);
  }
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd_ >= 0) fcntl(pidfd_, F_SETFD, FD_CLOEXEC);
  return nullptr;
}

ivm_error_t* WorkerProcess::Start(const WorkerLimits& limits,
                                  std::shared_ptr<WorkerProcess>* out) {
  std::shared_ptr<WorkerProcess> worker(new WorkerProcess());
  worker->limits_ = limits;
  const char* env = getenv("IVM_WORKER_PATH");
  bool use_zygote = env == nullptr || *env == '\0';
  std::string path = WorkerPath();
  if (ivm_error_t* err = worker->Spawn(path.c_str(), use_zygote)) return err;
  worker->ArmDeadline(NowNs() + static_cast<int64_t>(limits.startup_timeout_ms) * 1000000,
                      "did not start within " + std::to_string(limits.startup_timeout_ms) +
                          " ms");
  RegisterWorker(worker);
  if (ivm_error_t* err = worker->WaitForHello()) return err;
  *out = std::move(worker);
  return nullptr;
}

ivm_error_t* WorkerProcess::WaitForHello() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return hello_ || dead_; });
  if (!dead_) return nullptr;
  return MakeError(IVM_ERROR_CRASHED, cause_);
}

WorkerProcess::~WorkerProcess() {
  for (int* fd : {&sock_, &err_, &pidfd_}) {
    if (*fd >= 0) close(*fd);
  }
}

void WorkerProcess::ArmDeadline(int64_t at_ns, std::string reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (dead_) return;
    deadline_ns_ = at_ns;
    deadline_reason_ = std::move(reason);
  }
  WakeIoThread();
}

// ---------------------------------------------------------------------------
// Requests

bool WorkerProcess::Send(const std::string& frame, const wire::Fds& fds) {
  std::lock_guard<std::mutex> lock(send_mu_);
  size_t done = 0;
  while (done < frame.size()) {
    if (sock_ < 0) return false;
    ssize_t n = done == 0 && !fds.empty()   // the descriptors go with the first byte
                    ? wire::SendWithFds(sock_, frame, fds, MSG_NOSIGNAL | MSG_DONTWAIT)
                    : send(sock_, frame.data() + done, frame.size() - done,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      // A worker that stops reading fills the socket; its death (or the
      // shutdown() when it is found dead) wakes this poll.
      pollfd p = {sock_, POLLOUT, 0};
      poll(&p, 1, 50);
    } else {
      return false;
    }
  }
  return true;
}

ivm_error_t* WorkerProcess::DeadErrorLocked() const {
  if (dead_ && crashed_before_dispose_) return MakeError(IVM_ERROR_CRASHED, cause_);
  if (disposed_) return MakeError(IVM_ERROR_DISPOSED, "the process group is disposed");
  return nullptr;
}

ivm_error_t* WorkerProcess::Request(uint64_t id, uint16_t answer_kind, const std::string& frame,
                                    uint64_t timeout_ns, wire::Frame* reply, int64_t check_at,
                                    const wire::Fds& fds) {
  // Its answer would never be read: this thread holds the channels' reading.
  if (answer_kind != 0 && (OnIoThread() || remote::InInspectorHandler())) {
    return MakeError(IVM_ERROR_INVALID_ARGUMENT,
                     "a synchronous call into a worker's isolate from an inspector message "
                     "handler of a worker's isolate (run where the worker's messages are "
                     "read) would wait for itself; hand it to another thread");
  }
  Waiter waiter;
  waiter.kind = answer_kind;
  waiter.check_at = check_at;
  bool taken = false;   // this thread reads the channel (ReadHere), from before the send
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (ivm_error_t* err = DeadErrorLocked()) return err;
    if (answer_kind != 0) pending_[id] = &waiter;
    if (answer_kind != 0 && timeout_ns == 0) taken = TakeChannelLocked(lock);
    if (answer_kind != 0 && !taken) ResumeIfPausedLocked();   // the I/O thread reads it
  }
  if (check_at != 0) WakeIoThreadBy(check_at);   // it recomputes its next tick
  bool sent = Send(frame, fds);   // on failure the worker is dying: its death wakes us below
  std::unique_lock<std::mutex> lock(mu_);
  if (answer_kind == 0) return sent ? nullptr : DeadErrorLocked();
  auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
  for (;;) {
    if (taken) {   // first, whatever came: it gives the channel back when it returns
      taken = false;
      ReadHere(waiter, lock, true);
      continue;
    }
    // The call's JavaScript called a host callback (none run once the worker is being killed).
    if (!waiter.callbacks.empty() && kill_reason_.empty()) {
      wire::Frame callback = std::move(waiter.callbacks.front());
      waiter.callbacks.pop_front();
      lock.unlock();
      RunCallback(callback);
      lock.lock();
      continue;
    }
    if (waiter.done || dead_) break;
    if (timeout_ns == 0 && CanReadHereLocked()) {
      ReadHere(waiter, lock);   // reads its own REPLY (worker_io.cc)
    } else if (timeout_ns == 0) {
      cv_.wait(lock);
    } else if (cv_.wait_until(lock, until) == std::cv_status::timeout) {
      break;
    }
  }
  pending_.erase(id);
  for (const wire::Frame& callback : waiter.callbacks) LeaveBacklogLocked(callback);
  if (waiter.done) {
    *reply = std::move(waiter.reply);
    return nullptr;
  }
  if (ivm_error_t* err = DeadErrorLocked()) return err;
  if (abandoned_.size() >= 4096) abandoned_.clear();
  abandoned_.insert(id);   // its answer may still come, and is not a violation
  return MakeError(IVM_ERROR_TIMEOUT, "the worker did not answer in time");
}

ivm_error_t* WorkerProcess::Ping(uint64_t timeout_ns) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
  }
  wire::Frame reply;
  return Request(id, wire::kPong, wire::Writer(wire::kPing, id).Finish(), timeout_ns, &reply);
}

ivm_error_t* WorkerProcess::TestHook(uint32_t action, std::string_view data) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
  }
  std::string frame =
      wire::Writer(wire::kCall, id).U32(wire::kOpTestHook).U32(action).Bytes(data).Finish();
  if (frame.empty()) return InvalidArgument("data is too large for one frame");
  uint16_t answer = action == IVM_DEBUG_HOOK_SEND_BYTES ? 0 : wire::kReply;
  wire::Frame reply;
  if (ivm_error_t* err = Request(id, answer, frame, 0, &reply)) return err;
  if (answer == 0) return nullptr;
  // The I/O thread checked the shape: u32 status (0 or a known kind), message.
  wire::Reader reader(reply.payload);
  uint32_t status = 0;
  std::string_view message;
  reader.U32(&status);
  reader.Bytes(&message);
  if (status == wire::kStatusOk) return nullptr;
  return MakeError(status, std::string(message));
}

ivm_error_t* WorkerProcess::Status() {
  std::lock_guard<std::mutex> lock(mu_);
  return DeadErrorLocked();
}

void WorkerProcess::Dispose(bool wait) {
  bool alive;
  {
    std::lock_guard<std::mutex> lock(mu_);
    alive = !disposed_ && !dead_;
    disposed_ = true;
  }
  if (alive) {
    Send(wire::Writer(wire::kExit).Finish());
    ArmDeadline(NowNs() + kExitGraceNs, "did not exit within 200 ms of EXIT");
  }
  if (!wait) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return dead_; });
}

// ---------------------------------------------------------------------------
// Remote isolates' calls

uint64_t WorkerProcess::NextId() {
  std::lock_guard<std::mutex> lock(mu_);
  return next_id_++;
}

int64_t WorkerProcess::CheckAt(uint64_t timeout_ns) {
  uint64_t limit = static_cast<uint64_t>(INT64_MAX / 2);
  return NowNs() + static_cast<int64_t>(timeout_ns > limit ? limit : timeout_ns) + kCallGraceNs;
}

ivm_error_t* WorkerProcess::Call(uint64_t id, const std::string& frame, uint64_t timeout_ns,
                                 wire::Frame* reply, const wire::Fds& fds) {
  if (frame.empty()) return MakeError(IVM_ERROR_TRANSFER, "the call is too large for one frame");
  return Request(id, wire::kReply, frame, 0, reply, CheckAt(timeout_ns), fds);
}

void WorkerProcess::CallAsync(uint64_t id, const std::string& frame, uint64_t timeout_ns,
                              ReplyFn fn, const wire::Fds& fds) {
  if (frame.empty()) {
    fn(nullptr, MakeError(IVM_ERROR_TRANSFER, "the call is too large for one frame"));
    return;
  }
  int64_t check_at = CheckAt(timeout_ns);
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (ivm_error_t* err = DeadErrorLocked()) {
      lock.unlock();
      fn(nullptr, err);
      return;
    }
    async_[id] = AsyncCall{std::move(fn), check_at};
    ResumeIfPausedLocked();   // its REPLY is the I/O thread's to read
  }
  WakeIoThreadBy(check_at);
  Send(frame, fds);   // on failure the worker is dying: its death fails the call
}

void WorkerProcess::Post(const std::string& frame) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (dead_) return;
    ResumeIfPausedLocked();   // what it causes (inspector messages...) is read at once
    // (A handle's last owner may be an async completion on the I/O thread.)
    if (OnIoThread() && (!deferred_.empty() || !TrySend(frame))) {
      deferred_.push_back(frame);
      return;
    }
  }
  if (!OnIoThread()) Send(frame);
}

bool WorkerProcess::TrySend(const std::string& frame) {
  std::unique_lock<std::mutex> lock(send_mu_, std::try_to_lock);
  if (!lock.owns_lock() || sock_ < 0) return false;
  ssize_t n = send(sock_, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n == static_cast<ssize_t>(frame.size())) return true;
  if (n > 0) {   // never for these small frames; finish it rather than break the stream
    lock.unlock();
    Send(frame.substr(static_cast<size_t>(n)));   // the rest, or the worker is gone
    return true;
  }
  return false;
}

// I/O thread: sends what Post could not, in order, as far as the channel takes it.
void WorkerProcess::FlushDeferredLocked() {
  size_t sent = 0;
  while (sent < deferred_.size() && TrySend(deferred_[sent])) ++sent;
  deferred_.erase(deferred_.begin(), deferred_.begin() + static_cast<std::ptrdiff_t>(sent));
}

uint64_t WorkerProcess::AddDeathListener(DeathFn fn) {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t id = next_id_++;
  if (!dead_) {
    death_listeners_.emplace(id, std::move(fn));
    return id;
  }
  bool crashed = crashed_before_dispose_;
  std::string cause = cause_;
  lock.unlock();
  if (crashed) fn(cause);
  return id;
}

void WorkerProcess::RemoveDeathListener(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  death_listeners_.erase(id);
}

// I/O thread, once the worker is dead and its calls failed.
void WorkerProcess::NotifyDeath() {
  std::unordered_map<uint64_t, DeathFn> listeners;
  std::string cause;
  bool crashed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    listeners.swap(death_listeners_);
    crashed = crashed_before_dispose_;
    cause = cause_;
  }
  if (!crashed) return;
  for (auto& [id, fn] : listeners) {
    try {
      fn(cause);
    } catch (...) {
    }
  }
}

ivm_error_t* WorkerProcess::BadReply(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  KillLocked("protocol violation: " + why);
  return MakeError(IVM_ERROR_CRASHED, "worker process " + std::to_string(pid_) +
                                          " sent a malformed reply (" + why +
                                          "), so the host killed it (SIGKILL)");
}

// The worker is dead: every call still waiting for a REPLY fails.
void WorkerProcess::FailAsync() {
  std::unordered_map<uint64_t, AsyncCall> calls;
  ivm_error_t* proto = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    calls.swap(async_);
    proto = DeadErrorLocked();
    if (proto == nullptr) proto = MakeError(IVM_ERROR_CRASHED, cause_);
  }
  for (auto& entry : calls) {
    AsyncCall& call = entry.second;   // (clang's lambdas cannot capture structured bindings)
    ivm_error_t* err = MakeError(proto->kind, proto->message);
    CallIntoHost(OnHostExit::kPark, [&] { call.fn(nullptr, err); }, [] {});
  }
  ivm_error_free(proto);
}

}  // namespace ivm
