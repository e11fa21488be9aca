// worker_zygote.cc — `ivm-worker --zygote`: a process that has loaded and
// relocated ivm-worker's libraries (libnode, ICU, OpenSSL: most of a cold
// start) and forks workers from that state on its host's request
// (docs/process.md, "Life of a worker"). The host's side is zygote.cc.
//
// It never starts V8 and never runs a thread, so a fork is safe. Each
// request on fd 3 is one byte with two descriptors (SCM_RIGHTS): the new
// worker's channel and the write end of its stderr pipe. The zygote forks
// with CLONE_PARENT (x86_64 and aarch64), so the worker is a child of the host (which reaps it
// and watches its pidfd as for any worker), and answers with the worker's
// pid as an int32 (a negative errno when the fork failed). In the worker,
// RunZygote returns with the channel on fd 3 and stderr on fd 2; the worker
// then starts as one spawned directly would. End of stream: the zygote exits.
#include "worker_server.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ivm::worker {

namespace {

// One request: the byte and exactly two descriptors. False at end of stream
// or on anything else (the host never sends anything else).
bool ReadRequest(int fd, int fds[2]) {
  char byte;
  iovec iov = {&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  cmsghdr* c = n == 1 ? CMSG_FIRSTHDR(&msg) : nullptr;
  if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
      c->cmsg_len != CMSG_LEN(2 * sizeof(int)) || (msg.msg_flags & MSG_CTRUNC)) {
    return false;
  }
  memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
  return true;
}

// fork() as glibc does it, but with CLONE_PARENT: glibc's record of the
// thread's id (whose address the kernel keeps as the clear-child-tid
// address) is set to the child's, so that raise(), abort() and mutexes in
// the worker act on the worker. -1 with errno when it cannot.
long ForkForHost() {
  int* tid = nullptr;
  if (prctl(PR_GET_TID_ADDRESS, &tid) != 0 || tid == nullptr) return -1;
  unsigned long flags = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD;
#if defined(__x86_64__)
  return syscall(SYS_clone, flags, 0, nullptr, tid, 0);
#elif defined(__aarch64__)
  return syscall(SYS_clone, flags, 0, nullptr, 0, tid);
#else
  errno = ENOSYS;
  return -1;
#endif
}

void Answer(int fd, int32_t value) {
  ssize_t n;
  do {
    n = send(fd, &value, sizeof value, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
}

}  // namespace

void RunZygote(int control) {
  for (;;) {
    int fds[2];
    if (!ReadRequest(control, fds)) _exit(0);
    long pid = ForkForHost();
    if (pid == 0) {
      // The worker: its channel replaces the zygote's (fd 3), its stderr pipe
      // is fd 2; the received copies are closed (they are CLOEXEC, and the
      // worker closes every descriptor above 3 before it serves).
      if (dup2(fds[0], wire::kChannelFd) < 0 || dup2(fds[1], 2) < 0) _exit(3);
      close(fds[0]);
      close(fds[1]);
      return;
    }
    Answer(control, pid > 0 ? static_cast<int32_t>(pid) : -errno);
    close(fds[0]);
    close(fds[1]);
  }
}

}  // namespace ivm::worker
