// wire_fd.cc — descriptors beside frames (SCM_RIGHTS) and the sealed memfds
// that carry large buffers between the host and a worker (wire.h, "rref").
// Compiled into both libivm and ivm-worker. The receiver seals a memfd
// itself before it maps it, so no worker can change the bytes afterwards (the
// worker trusts its host's, and its sandbox allows no fcntl).
#include "wire.h"

#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ivm::wire {

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

uint32_t FdCountOf(const std::string& frame) {
  if (frame.size() < kHeaderSize) return 0;
  uint16_t flags = static_cast<uint16_t>(static_cast<uint8_t>(frame[6]) |
                                         (static_cast<uint8_t>(frame[7]) << 8));
  return flags & kFlagFdCountMask;
}

void MarkSyncCall(std::string& frame) {
  if (frame.size() < kHeaderSize || frame[4] != static_cast<char>(kCall) || frame[5] != 0) return;
  frame[6] = static_cast<char>(static_cast<uint8_t>(frame[6]) | kFlagSyncCall);
}

long InputPoll::Read(int sock, int64_t spin_ns, char* buf, size_t len, Fds* fds,
                     bool* truncated) {
  *truncated = false;
  if (spin_ns <= 0 || pause_ > 0) {
    if (spin_ns > 0) --pause_;
    errno = EAGAIN;
    return -1;
  }
  auto now = [] {   // (ivm-worker has no MonotonicNs: it does not build timers.cc)
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
  };
  int64_t until = now() + spin_ns;
  for (;;) {
    long n = RecvWithFds(sock, buf, len, MSG_DONTWAIT, fds, truncated);
    if (n >= 0 || errno != EAGAIN) {   // input, an end or an error: the caller sees which
      misses_ = 0;
      return n;
    }
    if (now() >= until) break;
    sched_yield();
  }
  if (++misses_ >= 4) {
    misses_ = 0;
    pause_ = 64;
  }
  errno = EAGAIN;
  return -1;
}

int64_t SpinFromEnv(const char* name, int64_t default_us) {
  const char* env = getenv(name);
  if (env == nullptr || *env == '\0') return default_us * 1000;
  char* end = nullptr;
  long long v = strtoll(env, &end, 10);
  return (*end == '\0' && v >= 0 && v <= 10000) ? static_cast<int64_t>(v) * 1000
                                                : default_us * 1000;
}

long SendWithFds(int sock, const std::string& frame, const Fds& fds, int flags) {
  iovec iov = {const_cast<char*>(frame.data()), frame.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!fds.empty() && fds.size() <= kMaxFds) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    for (size_t i = 0; i < fds.size(); ++i) {
      int fd = fds[i]->get();
      memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
    }
  }
  return sendmsg(sock, &msg, flags);
}

long RecvWithFds(int sock, char* buf, size_t len, int flags, Fds* fds, bool* truncated) {
  iovec iov = {buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds->push_back(std::make_shared<Fd>(fd));
    }
  }
  *truncated = n >= 0 && (msg.msg_flags & MSG_CTRUNC) != 0;
  return n;
}

std::shared_ptr<Fd> BufferFd(const void* data, size_t len) {
  int raw = memfd_create("ivm-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (raw < 0) return nullptr;
  auto fd = std::make_shared<Fd>(raw);
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(raw, p + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return nullptr;
    done += static_cast<size_t>(n);
  }
  return fd;
}

void* MapSealedBuffer(const Fd& fd, uint64_t len, bool seal) {
  constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
  if (seal && fcntl(fd.get(), F_ADD_SEALS, kSeals) != 0) {
    // Sealed already (by this side's own sender, or twice): the seals must hold.
    int seals = fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0 || (seals & kSeals) != kSeals) return nullptr;
  }
  struct stat st;   // (only the host: glibc's fstat is a call the sandbox refuses)
  if (seal && (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))) return nullptr;
  off_t size = lseek(fd.get(), 0, SEEK_END);
  if (size < 0 || static_cast<uint64_t>(size) != len || len == 0 || len > kMaxFdBuffer) {
    return nullptr;
  }
  // Private and writable: whoever ends up owning the bytes (an ArrayBuffer)
  // may write them; the writes stay in this process, never reach the memfd.
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
  return p == MAP_FAILED ? nullptr : p;
}

void UnmapBuffer(const void* data, uint64_t len) {
  if (data != nullptr) munmap(const_cast<void*>(data), len);
}

}  // namespace ivm::wire
