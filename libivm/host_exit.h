// host_exit.h — threads that a host ends while it shuts down.
//
// CPython ends any thread that needs its interpreter lock once finalization
// has begun (PyThread_exit_thread: pthread_exit, a forced unwind,
// abi::__forced_unwind). libivm calls into the host from its own threads
// (host functions on pool threads, finalizers, completion callbacks): such an
// unwind can neither be swallowed by a catch (...) (glibc aborts: "FATAL:
// exception not rethrown") nor cross V8's frames above those calls. Every
// catch (...) that may see it on such a path parks the thread instead, for
// good: the process is exiting. Nothing here is ABI.
#ifndef IVM_HOST_EXIT_H
#define IVM_HOST_EXIT_H

#include <chrono>
#include <cxxabi.h>
#include <thread>

namespace ivm {

[[noreturn]] inline void ParkForExit() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
}

}  // namespace ivm

// Use before a catch (...) around a call into the host:
//   try { fn(); } IVM_PARK_ON_HOST_EXIT catch (...) { ... }
#define IVM_PARK_ON_HOST_EXIT \
  catch (abi::__forced_unwind&) { ::ivm::ParkForExit(); }

#endif  // IVM_HOST_EXIT_H
