// catastrophic.cc — on_catastrophic_error (ivm.h, ivm_isolate_options_t): the
// one report of an isolate's catastrophic end. For an isolate in a worker, the
// worker's death (the I/O thread hands the cause to a thread of its own, so
// the embedder's code may wait for the I/O thread, by starting a new worker
// say). Inline, V8's fatal-error and out-of-memory handlers: the process is
// about to end, so the callback runs on the failing thread, then V8's usual
// message is printed and the process aborts, as without a handler.
#include "catastrophic.h"

#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

namespace ivm {

std::shared_ptr<CatastrophicReport> CatastrophicReport::Make(ivm_catastrophic_error_fn fn,
                                                             void* user_data) {
  if (fn == nullptr) return nullptr;
  return std::make_shared<CatastrophicReport>(fn, user_data);
}

bool CatastrophicReport::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != kArmed) return false;
  state_ = kRunning;
  runner_ = std::this_thread::get_id();
  return true;
}

void CatastrophicReport::Run(const std::string& cause) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    runner_ = std::this_thread::get_id();
  }
  try {
    fn_(user_data_, cause.data(), cause.size());
  } catch (...) {
  }
  std::lock_guard<std::mutex> lock(mu_);
  state_ = kDone;
  cv_.notify_all();
}

void CatastrophicReport::ReportNow(const std::string& cause) {
  if (Start()) Run(cause);
}

void CatastrophicReport::ReportLater(std::string cause) {
  if (!Start()) return;
  std::shared_ptr<CatastrophicReport> self = shared_from_this();
  try {
    std::thread([self, cause = std::move(cause)] { self->Run(cause); }).detach();
  } catch (...) {   // no thread: not reported, but never left running
    std::lock_guard<std::mutex> lock(mu_);
    state_ = kDone;
    cv_.notify_all();
  }
}

void CatastrophicReport::Disarm(bool wait) {
  std::unique_lock<std::mutex> lock(mu_);
  if (state_ == kArmed) state_ = kDone;
  if (wait && runner_ != std::this_thread::get_id()) {
    cv_.wait(lock, [&] { return state_ == kDone; });
  }
}

namespace {

CatastrophicReport* ReportOfCurrentIsolate() {
  v8::Isolate* isolate = v8::Isolate::TryGetCurrent();
  auto* holder = isolate != nullptr ? static_cast<IsolateHolder*>(isolate->GetData(0)) : nullptr;
  // An isolate this thread only keeps entered between its calls (isolate_entry.cc) is
  // not the one that failed.
  if (holder != nullptr && KeptEntered(isolate) && holder->owner() != std::this_thread::get_id()) {
    return nullptr;
  }
  return holder != nullptr ? holder->catastrophic.get() : nullptr;
}

[[noreturn]] void OnFatalError(const char* location, const char* message) {
  std::string where = location != nullptr ? location : "";
  std::string what = message != nullptr ? message : "";
  if (CatastrophicReport* report = ReportOfCurrentIsolate()) {
    report->ReportNow("V8 fatal error in " + where + ": " + what);
  }
  fprintf(stderr, "\n#\n# Fatal error in %s\n# %s\n#\n\n", where.c_str(), what.c_str());
  fflush(stderr);
  abort();
}

[[noreturn]] void OutOfMemory(const char* location, bool is_heap_oom, const char* detail) {
  const char* kind = is_heap_oom ? "javascript" : "process";
  std::string where = location != nullptr ? location : "";
  if (detail != nullptr && *detail != '\0') where += std::string(" (") + detail + ")";
  if (CatastrophicReport* report = ReportOfCurrentIsolate()) {
    report->ReportNow(std::string("Fatal ") + kind + " OOM in " + where);
  }
  fprintf(stderr, "\n#\n# Fatal %s OOM in %s\n#\n\n", kind, where.c_str());
  fflush(stderr);
  abort();
}

// V8 11 passes the details in a struct (V8 10: a flag).
#if V8_MAJOR_VERSION >= 11
[[noreturn]] void OnOutOfMemory(const char* location, const v8::OOMDetails& details) {
  OutOfMemory(location, details.is_heap_oom, details.detail);
}
#else
[[noreturn]] void OnOutOfMemory(const char* location, bool is_heap_oom) {
  OutOfMemory(location, is_heap_oom, nullptr);
}
#endif

}  // namespace

void InstallFatalHandlers(v8::Isolate* isolate) {
  isolate->SetFatalErrorHandler(OnFatalError);
  isolate->SetOOMErrorHandler(OnOutOfMemory);
}

}  // namespace ivm
