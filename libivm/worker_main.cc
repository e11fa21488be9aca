// worker_main.cc — ivm-worker: an ABI server for one host (docs/process.md).
//
// The host starts it with its channel (a Unix stream socket) as fd 3, stdin
// and stdout on /dev/null and stderr on a pipe the host keeps a tail of. It
// starts V8 and warms it up, closes every other descriptor, sandboxes itself
// (no new privileges, seccomp), says HELLO and serves frames. No Python runs
// here.
#include "sandbox.h"
#include "worker_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <thread>

namespace {

int Fail(const char* stage, const std::string& why) {
  fprintf(stderr, "ivm-worker: %s: %s\n", stage, why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  struct stat st;
  if (fstat(ivm::wire::kChannelFd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return Fail("start-up", "fd 3 is not a socket: ivm-worker is started by libivm only");
  }
  // Ctrl-C in a terminal signals the whole foreground process group, worker
  // (and zygote) included: the host decides what an interrupt stops (it
  // cancels the call).
  signal(SIGINT, SIG_IGN);
  // A zygote (started by libivm with the argument --zygote) returns here only
  // in each worker it forks, the libraries already loaded and relocated.
  if (argc == 2 && strcmp(argv[1], "--zygote") == 0) {
    ivm::worker::RunZygote(ivm::wire::kChannelFd);
    memset(argv[1], 0, strlen(argv[1]));   // ps shows a worker, not a zygote
  }
  signal(SIGPIPE, SIG_IGN);
  // libivm's idle pool threads poll for work 30 us (pool.cc, SpinNs), or what
  // the host's IVM_WORKER_POOL_SPIN_NS (inherited) says, yielding the core
  // between checks: the host and its workers share few cores, and a poll that
  // pauses instead kept a core from the thread that would bring the work.
  const char* pool_spin = getenv("IVM_WORKER_POOL_SPIN_NS");
  setenv("IVM_POOL_SPIN_NS", pool_spin != nullptr && *pool_spin != '\0' ? pool_spin : "30000", 1);
  setenv("IVM_POOL_SPIN_YIELD", "1", 1);
  // Its calls run on pool threads, which keep no isolate entered; its other
  // threads keep none either (isolate_entry.cc).
  setenv("IVM_KEEP_ENTRY", "0", 1);
#ifdef IVM_WORKER_TEST_HOOKS
  // Test builds only: a worker that never finishes starting.
  if (getenv("IVM_WORKER_TEST_HANG") != nullptr) {
    for (;;) pause();
  }
#endif
  // ICU's data is libicudata's, in memory. With $ICU_DATA set, ICU first
  // looks for a file in that directory at each first use of a locale's data
  // (collation, formats...): after the warm-up the sandbox forbids that (the
  // first such Intl call would kill the worker), so the worker ignores it.
  unsetenv("ICU_DATA");
  std::string why;
  if (!ivm::worker::WarmUp(&why)) return Fail("start-up", why);
  if (!ivm::sandbox::CloseDescriptorsAbove(ivm::wire::kChannelFd, &why)) {
    return Fail("sandbox", why);
  }
  if (!ivm::sandbox::Apply(&why)) return Fail("sandbox", why);
  ivm::worker::Channel channel(ivm::wire::kChannelFd);
  if (!ivm::worker::SendHello(channel)) return 0;   // the host is gone
  // Served from a thread of its own: glibc finds the main thread's stack by
  // reading /proc/self/maps (pthread_getattr_np, which V8 calls when it sets
  // up an isolate on a thread), and the sandbox allows no open.
  int status = 0;
  std::thread([&] { status = ivm::worker::Serve(channel); }).join();
  fflush(stderr);
  _exit(status);   // no static destructors: V8's threads are still running
}
