// zygote.cc — the host's side of `ivm-worker --zygote` (worker_zygote.cc):
// one process per host that has loaded and relocated the worker's libraries,
// started with the first worker and forking every later one, so that a
// worker's start skips exec, dynamic linking and the libraries' static
// initialisers (about half its cold start), and the workers share those
// relocated pages. The forked worker is the host's child (CLONE_PARENT): it
// is reaped, watched and reported exactly like a spawned one.
//
// The zygote only serves the default worker (not $IVM_WORKER_PATH, which
// tests point at ivm-worker-test), and any failure falls back to
// posix_spawn. It ends when this process closes its control socket (at exit,
// or when it is replaced); a zygote that dies is reaped at once by the I/O
// thread (its pidfd), and restarted by the next worker start.
#include "worker_process.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mutex>
#include <string>

namespace ivm {

namespace {

constexpr int kAnswerTimeoutMs = 5000;

struct Zygote {
  std::mutex mu;
  std::string path;
  pid_t pid = -1;
  int ctl = -1;
  int pidfd = -1;        // watched by the I/O thread, which reaps a zygote that ends
  pid_t owner = -1;      // the process that started it (a fork of it must not use it)
  bool broken = false;   // it could not be started: posix_spawn from then on
};

Zygote& zygote() {
  static Zygote* z = new Zygote();   // leaked: workers may start during exit
  return *z;
}

// Whether the zygote has ended (it is reaped if so). Without its exit status
// (SIGCHLD ignored: the kernel reaps), whether it still exists.
bool DeadLocked(Zygote& z) {
  int r = waitpid(z.pid, nullptr, WNOHANG);
  return r == z.pid || (r < 0 && kill(z.pid, 0) != 0);
}

void StopLocked(Zygote& z) {
  if (z.ctl >= 0) close(z.ctl);
  z.ctl = -1;
  if (z.pidfd >= 0) {
    if (z.owner == getpid()) UnwatchZygote(z.pidfd);   // (a fork shares the epoll set)
    close(z.pidfd);
  }
  z.pidfd = -1;
  if (z.pid > 0 && z.owner == getpid()) {
    kill(z.pid, SIGKILL);
    for (int i = 0; i < 200 && !DeadLocked(z); ++i) usleep(500);   // at most 100 ms
  }
  z.pid = -1;
}

bool StartLocked(Zygote& z, const std::string& path) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  int child = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);   // above 3: dup2 makes a real copy
  close(sv[1]);
  char zygote_arg[] = "--zygote";
  char* argv[] = {const_cast<char*>(path.c_str()), zygote_arg, nullptr};
  pid_t pid = -1;
  int rc = child < 0 ? EMFILE : SpawnWorker(path.c_str(), argv, child, -1, &pid);
  if (child >= 0) close(child);
  if (rc != 0) {
    close(sv[0]);
    return false;
  }
  rlimit no_core = {0, 0};   // inherited by every worker it forks
  prlimit(pid, RLIMIT_CORE, &no_core, nullptr);
  z.pid = pid;
  z.ctl = sv[0];
  z.pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));   // CLOEXEC; -1: not reaped early
  if (z.pidfd >= 0) WatchZygote(z.pidfd);
  z.path = path;
  z.owner = getpid();
  return true;
}

// Sends one request and reads the pid; false (the zygote is then stopped) on
// any failure.
bool RequestLocked(Zygote& z, int sock, int err, pid_t* pid) {
  char byte = 'F';
  iovec iov = {&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(2 * sizeof(int));
  int fds[2] = {sock, err};
  memcpy(CMSG_DATA(c), fds, sizeof fds);
  ssize_t n;
  do {
    n = sendmsg(z.ctl, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  int32_t answer = 0;
  size_t got = 0;
  while (n == 1 && got < sizeof answer) {
    pollfd p = {z.ctl, POLLIN, 0};
    if (poll(&p, 1, kAnswerTimeoutMs) <= 0) break;
    ssize_t r = recv(z.ctl, reinterpret_cast<char*>(&answer) + got, sizeof answer - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  if (got == sizeof answer && answer > 0) {
    *pid = answer;
    return true;
  }
  StopLocked(z);
  return false;
}

}  // namespace

void ZygoteExited() {
  Zygote& z = zygote();
  std::unique_lock<std::mutex> lock(z.mu, std::try_to_lock);
  // Busy: a worker start holds it, and finds it dead itself (its request fails).
  if (!lock.owns_lock() || z.pid <= 0 || z.owner != getpid()) return;
  if (DeadLocked(z)) {
    z.pid = -1;   // reaped now
    StopLocked(z);
  }
}

bool ZygoteFork(const std::string& path, int sock, int err, pid_t* pid) {
  Zygote& z = zygote();
  std::lock_guard<std::mutex> lock(z.mu);
  if (z.broken) return false;
  if (z.pid > 0) {
    if (z.owner != getpid() || DeadLocked(z)) {
      z.pid = -1;   // a fork's copy of our zygote (not its to use), or reaped now
      StopLocked(z);
    } else if (z.path != path) {
      StopLocked(z);
    }
  }
  if (z.pid < 0 && !StartLocked(z, path)) {
    z.broken = true;
    return false;
  }
  return RequestLocked(z, sock, err, pid);
}

}  // namespace ivm
