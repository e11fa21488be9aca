// catastrophic.h — ivm_isolate_options_t.on_catastrophic_error: the report of
// an isolate's catastrophic end, a worker's death or (inline) V8's fatal-error
// and out-of-memory handlers just before the process ends (catastrophic.cc).
// Nothing here is ABI.
#ifndef IVM_CATASTROPHIC_H
#define IVM_CATASTROPHIC_H

#include "ivm.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace v8 {
class Isolate;
}

namespace ivm {

// One isolate's callback; it is called at most once.
class CatastrophicReport : public std::enable_shared_from_this<CatastrophicReport> {
 public:
  CatastrophicReport(ivm_catastrophic_error_fn fn, void* user_data)
      : fn_(fn), user_data_(user_data) {}
  // NULL when `fn` is NULL (no callback: nothing to report).
  static std::shared_ptr<CatastrophicReport> Make(ivm_catastrophic_error_fn fn, void* user_data);

  // Calls the callback on this thread (inline: the process ends right after).
  void ReportNow(const std::string& cause);
  // Calls it on a new thread of its own (a worker's death, seen by the I/O
  // thread, which must not wait for the embedder's code).
  void ReportLater(std::string cause);
  // No call starts after this; waits for one running on another thread
  // when `wait` (never from the I/O thread, which that call may wait for).
  void Disarm(bool wait);

 private:
  bool Start();   // armed -> running, on this thread
  void Run(const std::string& cause);

  enum State { kArmed, kRunning, kDone };
  ivm_catastrophic_error_fn fn_;
  void* user_data_;
  std::mutex mu_;
  std::condition_variable cv_;
  State state_ = kArmed;
  std::thread::id runner_;
};

// For an inline isolate with a report: V8's fatal-error and out-of-memory
// handlers call it (on the failing thread), print V8's own message and abort.
void InstallFatalHandlers(v8::Isolate* isolate);

}  // namespace ivm

#endif  // IVM_CATASTROPHIC_H
