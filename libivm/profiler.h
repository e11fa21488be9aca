// profiler.h — an isolate's CPU profiles (profiler.cc). Nothing here is ABI.
#ifndef IVM_PROFILER_H
#define IVM_PROFILER_H

#include "internal.h"

#include <v8-profiler.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

namespace ivm {

// The CPU profiles recording in one isolate, by title. V8's sampler samples
// the thread that started it, so whenever an outermost call begins on
// another thread, Follow() stops V8's profiles, keeps what they recorded and
// restarts them on that thread; Stop() joins the parts. Every method runs
// with the isolate locked (owner thread), and a HandleScope open.
class CpuProfiles {
 public:
  // One profile's accumulated samples (profiler.cc).
  struct Tree;

  CpuProfiles();
  ~CpuProfiles();
  CpuProfiles(const CpuProfiles&) = delete;
  CpuProfiles& operator=(const CpuProfiles&) = delete;

  bool active() const { return profiler_ != nullptr; }
  ivm_error_t* Start(v8::Isolate* isolate, const std::string& title, int interval_us);
  // The profile as DevTools JSON (Profiler.Profile).
  ivm_error_t* Stop(v8::Isolate* isolate, const std::string& title, std::string* json);
  // An outermost call begins on this thread: the sampler follows it.
  void Follow(v8::Isolate* isolate);
  // Ends every profile (the isolate is being disposed: locked and entered).
  void Dispose(v8::Isolate* isolate);

 private:
  struct Entry {
    int interval_us = 0;
    uint64_t id = 0;   // V8's title: "ivm-<id>" (the embedder's title may be anything)
    std::unique_ptr<Tree> tree;
  };
  void StartV8(v8::Isolate* isolate, const Entry& entry);
  void StopV8(v8::Isolate* isolate, Entry& entry);

  v8::CpuProfiler* profiler_ = nullptr;
  std::thread::id thread_;
  std::map<std::string, Entry> profiles_;
  uint64_t next_id_ = 1;
};

}  // namespace ivm

#endif  // IVM_PROFILER_H
