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

namespace ivm {

// What a call into the host does when the host ends its thread: park it for
// good (kPark), or let the unwind go on (kUnwind: no libivm or V8 frame
// above that needs to end).
enum class OnHostExit { kPark, kUnwind };

// Runs `call`; any other C++ exception it throws runs `on_exception` (inside
// the handler, so `throw;` there rethrows it). The one catch of
// abi::__forced_unwind binds a reference to an exception that has no C++
// object, which UBSan's null check would report: this small function is not
// instrumented (GCC ignores no_sanitize("null") there; "undefined" works).
// `call` and `on_exception` are functions of their own, still instrumented.
template <class Call, class OnException>
__attribute__((no_sanitize("undefined"))) inline void CallIntoHost(OnHostExit on_exit, Call&& call,
                                                              OnException&& on_exception) {
  try {
    call();
  } catch (abi::__forced_unwind&) {
    if (on_exit == OnHostExit::kPark) ParkForExit();
    throw;
  } catch (...) {
    on_exception();
  }
}

}  // namespace ivm

#endif  // IVM_HOST_EXIT_H
