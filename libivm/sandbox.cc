// sandbox.cc — what ivm-worker does to itself once V8 is up (docs/process.md):
// close every descriptor but its channels, PR_SET_NO_NEW_PRIVS, and a seccomp
// filter written as raw BPF (no libseccomp at run time) that allows only the
// system calls a running V8 needs. Everything else — open, socket, connect,
// execve, fork, ptrace... — kills the whole process with SIGSYS, which the
// host reports as the sandbox stopping a forbidden call.
#include "sandbox.h"

#include <dlfcn.h>
#include <stdio.h>

#include <atomic>

#include <dirent.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <vector>

namespace ivm::sandbox {

namespace {

#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
constexpr uint32_t kX32Bit = 0x40000000u;   // x32 syscalls share the arch value
#elif defined(__aarch64__)
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
#error "ivm-worker's sandbox knows x86_64 and aarch64 only"
#endif

// The system calls a sandboxed worker makes: I/O on descriptors it already
// holds, memory management (V8's heap and JIT), threads (V8's platform),
// signals, clocks and randomness. Nothing that names a path or makes a
// descriptor, but anonymous memfds (memfd_create) for large results. Found by running the worker under strace (docs/process.md).
const long kAllowed[] = {
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_recvmsg, SYS_sendmsg,
    SYS_recvfrom, SYS_sendto, SYS_close, SYS_lseek, SYS_fstat,
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_madvise, SYS_mremap, SYS_brk, SYS_mincore,
    SYS_futex, SYS_set_robust_list, SYS_get_robust_list, SYS_sched_yield,
    SYS_sched_getaffinity, SYS_getpid, SYS_gettid, SYS_exit, SYS_exit_group,
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack,
    SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep,
    SYS_gettimeofday, SYS_getrusage, SYS_getrandom,
    // A wait with a timeout (futex, clock_nanosleep, poll) interrupted by SIGSTOP and
    // resumed by SIGCONT (a shell's Ctrl-Z, fg) continues through restart_syscall.
    SYS_restart_syscall,
    SYS_pkey_alloc, SYS_pkey_free, SYS_pkey_mprotect,   // V8's WebAssembly code
#ifdef SYS_rseq
    SYS_rseq,
#endif
#ifdef SYS_poll
    SYS_poll,
#endif
    SYS_ppoll,
    // rref: a large buffer in a result leaves in an anonymous memfd (no path;
    // the host seals it before it maps it).
    SYS_memfd_create,
};

// A tiny assembler: jumps name labels, resolved into BPF's relative offsets.
class Program {
 public:
  enum Label { kAllow, kKill, kNoSys, kLabels };

  void Load(uint32_t offset) { Emit(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset), -1, -1); }
  // if (A == k) goto jt; else goto jf (-1: the next instruction)
  void JumpIfEqual(uint32_t k, int jt, int jf = -1) {
    Emit(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, k, 0, 0), jt, jf);
  }
  void JumpIfAtLeast(uint32_t k, int jt) {
    Emit(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, k, 0, 0), jt, -1);
  }
  void JumpIfAnyBit(uint32_t k, int jt, int jf) {
    Emit(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, k, 0, 0), jt, jf);
  }
  void Return(uint32_t action) { Emit(BPF_STMT(BPF_RET | BPF_K, action), -1, -1); }
  void Bind(Label label) { labels_[label] = code_.size(); }
  int NewLabel() {
    labels_.push_back(0);
    return static_cast<int>(labels_.size()) - 1;
  }
  void Bind(int label) { labels_[static_cast<size_t>(label)] = code_.size(); }

  // Resolves the jumps; false if one is out of BPF's 8-bit reach.
  bool Resolve(std::vector<sock_filter>* out) {
    for (size_t i = 0; i < code_.size(); ++i) {
      for (int which = 0; which < 2; ++which) {
        int label = which == 0 ? jt_[i] : jf_[i];
        if (label < 0) continue;
        size_t target = labels_[static_cast<size_t>(label)];
        if (target <= i || target - i - 1 > 255) return false;
        uint8_t off = static_cast<uint8_t>(target - i - 1);
        if (which == 0) code_[i].jt = off;
        else code_[i].jf = off;
      }
    }
    *out = code_;
    return true;
  }

 private:
  void Emit(sock_filter f, int jt, int jf) {
    code_.push_back(f);
    jt_.push_back(jt);
    jf_.push_back(jf);
  }
  std::vector<sock_filter> code_;
  std::vector<int> jt_, jf_;
  std::vector<size_t> labels_ = std::vector<size_t>(kLabels, 0);
};

constexpr uint32_t kNrOffset = offsetof(struct seccomp_data, nr);
constexpr uint32_t kArchOffset = offsetof(struct seccomp_data, arch);
// The low 32 bits of argument `i` (little-endian).
constexpr uint32_t ArgLow(int i) {
  return static_cast<uint32_t>(offsetof(struct seccomp_data, args) + 8 * i);
}

bool BuildFilter(std::vector<sock_filter>* out) {
  Program p;
  int clone_label = p.NewLabel(), tgkill_label = p.NewLabel(), prctl_label = p.NewLabel();
  p.Load(kArchOffset);
  p.JumpIfEqual(kArch, -1, Program::kKill);
  p.Load(kNrOffset);
#if defined(__x86_64__)
  p.JumpIfAtLeast(kX32Bit, Program::kKill);
#endif
  p.JumpIfEqual(SYS_clone, clone_label);
  p.JumpIfEqual(SYS_tgkill, tgkill_label);
  p.JumpIfEqual(SYS_prctl, prctl_label);
#ifdef SYS_clone3
  // glibc falls back to clone(), whose flags a filter can read.
  p.JumpIfEqual(SYS_clone3, Program::kNoSys);
#endif
  for (long nr : kAllowed) p.JumpIfEqual(static_cast<uint32_t>(nr), Program::kAllow);
  p.Return(SECCOMP_RET_KILL_PROCESS);

  // clone: threads only (CLONE_THREAD), never a new process.
  p.Bind(clone_label);
  p.Load(ArgLow(0));
  p.JumpIfAnyBit(CLONE_THREAD, Program::kAllow, Program::kKill);
  // tgkill: signals to this process only (abort() raises SIGABRT this way).
  p.Bind(tgkill_label);
  p.Load(ArgLow(0));
  p.JumpIfEqual(static_cast<uint32_t>(getpid()), Program::kAllow, Program::kKill);
  // prctl: naming threads, and the timer thread's timer slack (timers.cc: a
  // timeout fires on time; it concerns the calling thread's own waits only).
  p.Bind(prctl_label);
  p.Load(ArgLow(0));
  p.JumpIfEqual(PR_SET_NAME, Program::kAllow);
  p.JumpIfEqual(PR_SET_TIMERSLACK, Program::kAllow);
  p.JumpIfEqual(PR_GET_NAME, Program::kAllow, Program::kKill);

  p.Bind(Program::kKill);
  p.Return(SECCOMP_RET_KILL_PROCESS);
  p.Bind(Program::kNoSys);
  p.Return(SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
  p.Bind(Program::kAllow);
  p.Return(SECCOMP_RET_ALLOW);
  return p.Resolve(out);
}

}  // namespace

bool CloseDescriptorsAbove(int last_kept, std::string* why) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, static_cast<unsigned>(last_kept + 1), ~0u, 0u) == 0) {
    return true;
  }
#endif
  // Older kernels: walk /proc/self/fd (still allowed: the filter is not on).
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) {
    *why = std::string("cannot list /proc/self/fd: ") + strerror(errno);
    return false;
  }
  std::vector<int> fds;
  while (dirent* entry = readdir(dir)) {
    int fd = atoi(entry->d_name);
    if (fd > last_kept && fd != dirfd(dir)) fds.push_back(fd);
  }
  closedir(dir);
  for (int fd : fds) close(fd);
  return true;
}

namespace {
std::atomic<bool> g_applied{false};
}  // namespace

bool Apply(std::string* why) {
  g_applied.store(true);   // before the filter: no thread may still try
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    *why = std::string("PR_SET_NO_NEW_PRIVS failed: ") + strerror(errno);
    return false;
  }
  std::vector<sock_filter> filter;
  if (!BuildFilter(&filter)) {
    *why = "the seccomp filter does not assemble (a jump is out of reach)";
    return false;
  }
  sock_fprog prog{};
  prog.len = static_cast<unsigned short>(filter.size());
  prog.filter = filter.data();
  // TSYNC: V8's platform threads exist already and must be filtered too.
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
  if (rc != 0) {
    *why = rc > 0 ? "seccomp TSYNC failed: thread " + std::to_string(rc) + " cannot sync"
                  : std::string("seccomp failed: ") + strerror(errno);
    return false;
  }
  return true;
}

}  // namespace ivm::sandbox

// V8 reads /proc/self/maps (with fopen) when it places a new isolate's code
// range and no freed range of that size is at hand (CodeRangeAddressHint):
// only a hint, and V8 does without when fopen fails. Once sandboxed, opening
// would kill the worker, so this fopen, which the executable exports in front
// of libc's (meson.build), fails that one open instead. Every other open
// still reaches libc and the filter.
// (Named by assembler label: with _FILE_OFFSET_BITS=64, <stdio.h> renames a
// C-level `fopen` to fopen64, and libnode calls fopen itself.)
extern "C" __attribute__((visibility("default"))) FILE* SandboxFopen(const char* path,
                                                                     const char* mode)
    __asm__("fopen");
extern "C" FILE* SandboxFopen(const char* path, const char* mode) {
  if (ivm::sandbox::g_applied.load(std::memory_order_relaxed) && path != nullptr &&
      strcmp(path, "/proc/self/maps") == 0) {
    errno = EACCES;
    return nullptr;
  }
  using Fopen = FILE* (*)(const char*, const char*);
  static Fopen real = reinterpret_cast<Fopen>(dlsym(RTLD_NEXT, "fopen"));
  if (real == nullptr) {
    errno = ENOSYS;
    return nullptr;
  }
  return real(path, mode);
}
