// profiler.cc — V8's sampling CPU profiler per isolate, its profiles joined
// across the threads that run the isolate, and their DevTools JSON form
// (Profiler.Profile: nodes, startTime, endTime, samples, timeDeltas).
#include "profiler.h"

#include "options.h"
#include "remote.h"

#include <v8-profiler.h>

#include <signal.h>

#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace ivm {

namespace {

constexpr int kMinIntervalUs = 50;
constexpr int kDefaultIntervalUs = 1000;

// Where a node's function is (1-based line and column, as V8 gives them).
struct Frame {
  std::string function, url;
  int script_id = 0, line = 0, column = 0;
  // The same function, where a position V8 did not know (0: code logged
  // when a part of the profile started has none) matches any.
  bool Matches(const Frame& o) const {
    bool position = line == 0 || o.line == 0 || (line == o.line && column == o.column);
    return script_id == o.script_id && position && function == o.function && url == o.url;
  }
};

Frame FrameOf(const v8::CpuProfileNode* node) {
  Frame f;
  f.function = node->GetFunctionNameStr();
  f.url = node->GetScriptResourceNameStr();
  f.script_id = node->GetScriptId();
  f.line = node->GetLineNumber();
  f.column = node->GetColumnNumber();
  return f;
}

void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out.append(buf);
    } else {
      out.push_back(ch);   // UTF-8 (WTF-8 for lone surrogates) passes through
    }
  }
  out.push_back('"');
}

void IgnoreProfSignal(int) {}

// V8's sampler signals its thread with SIGPROF and, once its last profiler
// is gone, puts back the handler it found. A SIGPROF still on its way then
// (the sampler moves between threads with the calls) would meet the default
// action, which ends the process: the handler V8 finds, and restores, is a
// no-op. Only installed where nobody else handles SIGPROF.
void KeepProfSignalHarmless() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (sigaction(SIGPROF, nullptr, &old) != 0 || old.sa_handler != SIG_DFL ||
        (old.sa_flags & SA_SIGINFO) != 0) {
      return;
    }
    struct sigaction sa {};
    sa.sa_handler = IgnoreProfSignal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, nullptr);
  });
}

// A profiler sampling this thread.
v8::CpuProfiler* NewProfiler(v8::Isolate* isolate) {
  KeepProfSignalHarmless();
  v8::CpuProfiler* profiler = v8::CpuProfiler::New(isolate, v8::kDebugNaming, v8::kLazyLogging);
  profiler->SetSamplingInterval(kMinIntervalUs);
  return profiler;
}

}  // namespace

struct CpuProfiles::Tree {
  struct Node {
    Frame frame;
    uint64_t hits = 0;
    std::vector<uint32_t> children;
  };
  std::vector<Node> nodes;        // [0]: the root
  std::vector<uint32_t> samples;  // node indices
  std::vector<int64_t> stamps;    // microseconds
  int64_t start = -1, end = 0;

  // The child of `parent` at `frame`, made if new.
  uint32_t Child(uint32_t parent, Frame frame) {
    for (uint32_t c : nodes[parent].children) {
      Frame& known = nodes[c].frame;
      if (!known.Matches(frame)) continue;
      if (known.line == 0) {
        known.line = frame.line;
        known.column = frame.column;
      }
      return c;
    }
    nodes.push_back(Node{std::move(frame), 0, {}});
    auto id = static_cast<uint32_t>(nodes.size() - 1);
    nodes[parent].children.push_back(id);
    return id;
  }

  // Adds what V8's `profile` recorded (one thread's part).
  void Merge(const v8::CpuProfile* profile) {
    const v8::CpuProfileNode* root = profile->GetTopDownRoot();
    if (nodes.empty()) nodes.push_back(Node{FrameOf(root), 0, {}});
    std::unordered_map<const v8::CpuProfileNode*, uint32_t> index{{root, 0}};
    std::vector<const v8::CpuProfileNode*> todo{root};   // no recursion: trees can be deep
    while (!todo.empty()) {
      const v8::CpuProfileNode* node = todo.back();
      todo.pop_back();
      uint32_t at = index[node];
      nodes[at].hits += node->GetHitCount();
      for (int i = 0, n = node->GetChildrenCount(); i < n; ++i) {
        const v8::CpuProfileNode* child = node->GetChild(i);
        index[child] = Child(at, FrameOf(child));
        todo.push_back(child);
      }
    }
    for (int i = 0, n = profile->GetSamplesCount(); i < n; ++i) {
      auto it = index.find(profile->GetSample(i));
      samples.push_back(it != index.end() ? it->second : 0);
      stamps.push_back(profile->GetSampleTimestamp(i));
    }
    if (start < 0 || profile->GetStartTime() < start) start = profile->GetStartTime();
    end = std::max(end, profile->GetEndTime());
  }

  std::string Json() const {
    std::string out = "{\"nodes\":[";
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node& n = nodes[i];
      if (i) out.push_back(',');
      out += "{\"id\":" + std::to_string(i + 1) + ",\"callFrame\":{\"functionName\":";
      AppendJsonString(out, n.frame.function);
      out += ",\"scriptId\":\"" + std::to_string(n.frame.script_id) + "\",\"url\":";
      AppendJsonString(out, n.frame.url);
      out += ",\"lineNumber\":" + std::to_string(n.frame.line - 1) +
             ",\"columnNumber\":" + std::to_string(n.frame.column - 1) +
             "},\"hitCount\":" + std::to_string(n.hits) + ",\"children\":[";
      for (size_t c = 0; c < n.children.size(); ++c) {
        if (c) out.push_back(',');
        out += std::to_string(n.children[c] + 1);
      }
      out += "]}";
    }
    int64_t first = start < 0 ? 0 : start;
    out += "],\"startTime\":" + std::to_string(first) +
           ",\"endTime\":" + std::to_string(std::max(end, first)) + ",\"samples\":[";
    for (size_t i = 0; i < samples.size(); ++i) {
      if (i) out.push_back(',');
      out += std::to_string(samples[i] + 1);
    }
    out += "],\"timeDeltas\":[";
    int64_t last = first;
    for (size_t i = 0; i < stamps.size(); ++i) {
      if (i) out.push_back(',');
      out += std::to_string(stamps[i] - last);
      last = stamps[i];
    }
    out += "]}";
    return out;
  }
};

CpuProfiles::CpuProfiles() = default;
CpuProfiles::~CpuProfiles() = default;   // disposed with the isolate

void CpuProfiles::StartV8(v8::Isolate* isolate, const Entry& entry) {
  std::string name = "ivm-" + std::to_string(entry.id);
  v8::CpuProfilingOptions options(v8::kLeafNodeLineNumbers, v8::CpuProfilingOptions::kNoSampleLimit,
                                  entry.interval_us);
  profiler_->StartProfiling(v8::String::NewFromUtf8(isolate, name.c_str()).ToLocalChecked(),
                            std::move(options));
}

void CpuProfiles::StopV8(v8::Isolate* isolate, Entry& entry) {
  std::string name = "ivm-" + std::to_string(entry.id);
  v8::CpuProfile* profile =
      profiler_->StopProfiling(v8::String::NewFromUtf8(isolate, name.c_str()).ToLocalChecked());
  if (profile == nullptr) return;
  entry.tree->Merge(profile);
  profile->Delete();
}

ivm_error_t* CpuProfiles::Start(v8::Isolate* isolate, const std::string& title, int interval_us) {
  if (profiles_.count(title) != 0) {
    return InvalidArgument("a CPU profile named '" + title + "' is already recording");
  }
  v8::HandleScope scope(isolate);
  if (profiler_ == nullptr) {
    profiler_ = NewProfiler(isolate);
    thread_ = std::this_thread::get_id();
  }
  Follow(isolate);
  Entry& entry = profiles_[title];
  entry.interval_us = interval_us;
  entry.id = next_id_++;
  entry.tree = std::make_unique<Tree>();
  StartV8(isolate, entry);
  return nullptr;
}

ivm_error_t* CpuProfiles::Stop(v8::Isolate* isolate, const std::string& title, std::string* json) {
  auto it = profiles_.find(title);
  if (it == profiles_.end()) {
    return InvalidArgument("no CPU profile named '" + title + "' is recording");
  }
  v8::HandleScope scope(isolate);
  StopV8(isolate, it->second);
  *json = it->second.tree->Json();
  profiles_.erase(it);
  if (profiles_.empty()) Dispose(isolate);
  return nullptr;
}

void CpuProfiles::Follow(v8::Isolate* isolate) {
  if (profiler_ == nullptr || thread_ == std::this_thread::get_id()) return;
  v8::HandleScope scope(isolate);
  for (auto& [title, entry] : profiles_) StopV8(isolate, entry);
  // V8's sampler signals the thread that made it: a new one for this thread.
  profiler_->Dispose();
  profiler_ = NewProfiler(isolate);
  thread_ = std::this_thread::get_id();
  for (auto& [title, entry] : profiles_) StartV8(isolate, entry);
}

void CpuProfiles::Dispose(v8::Isolate* isolate) {
  if (profiler_ != nullptr) {
    // V8 aborts on a profiler disposed while it records: stop each first.
    v8::HandleScope scope(isolate);
    for (auto& [title, entry] : profiles_) StopV8(isolate, entry);
    profiler_->Dispose();
  }
  profiler_ = nullptr;
  profiles_.clear();
}

}  // namespace ivm

// ---------------------------------------------------------------------------
// ABI

using ivm::Guard;
using ivm::InvalidArgument;

namespace {

// What both profiler calls read: the isolate and the title.
ivm_error_t* ReadProfilerCall(ivm_isolate_t* iso, const char* title, size_t title_len,
                              std::string* out) {
  if (iso == nullptr) return InvalidArgument("isolate is NULL");
  if (title == nullptr && title_len != 0) return InvalidArgument("title is NULL");
  out->assign(title ? title : "", title_len);
  return nullptr;
}

// The same call for an isolate in a worker process (remote_profiler.cc).
ivm::remote::ProfilerRequest RemoteRequest(uint32_t op, const std::string& title,
                                           int interval_us) {
  return {op, title, static_cast<uint64_t>(interval_us) * 1000};
}

ivm_error_t* ReadInterval(const ivm_cpu_profiler_options_t* opts, int* interval_us) {
  ivm_cpu_profiler_options_t full = IVM_CPU_PROFILER_OPTIONS_INIT;
  if (ivm_error_t* err = ivm::ReadStruct(opts, &full)) return err;
  if (full.sampling_interval_ns == 0) {
    *interval_us = ivm::kDefaultIntervalUs;
    return nullptr;
  }
  uint64_t us = full.sampling_interval_ns / 1000;
  if (us < static_cast<uint64_t>(ivm::kMinIntervalUs) || us > 60u * 1000 * 1000) {
    return InvalidArgument("the sampling interval must be between 50 us and 60 s");
  }
  *interval_us = static_cast<int>(us);
  return nullptr;
}

ivm_error_t* StartLocked(ivm::IsolateHolder& holder, const std::string& title, int interval_us) {
  return holder.Run(0, [&](v8::Isolate* isolate, ivm::CallState&) -> ivm_error_t* {
    return holder.cpu_profiles().Start(isolate, title, interval_us);
  });
}

ivm_error_t* StopLocked(ivm::IsolateHolder& holder, const std::string& title, ivm_value_t** out) {
  std::string json;
  ivm_error_t* err = holder.Run(0, [&](v8::Isolate* isolate, ivm::CallState&) -> ivm_error_t* {
    return holder.cpu_profiles().Stop(isolate, title, &json);
  });
  if (err) return err;
  *out = ivm_value_new_string(json.data(), json.size());
  return nullptr;
}

}  // namespace

extern "C" {

IVM_API ivm_error_t* ivm_isolate_start_cpu_profiler(ivm_isolate_t* iso, const char* title,
                                                    size_t title_len,
                                                    const ivm_cpu_profiler_options_t* opts) {
  return Guard([&]() -> ivm_error_t* {
    std::string t;
    int interval_us = 0;
    if (ivm_error_t* err = ReadProfilerCall(iso, title, title_len, &t)) return err;
    if (ivm_error_t* err = ReadInterval(opts, &interval_us)) return err;
    if (iso->remote) {
      return ivm::remote::Profiler(
          iso->remote, RemoteRequest(ivm::wire::kOpProfilerStart, t, interval_us), nullptr);
    }
    return StartLocked(*iso->holder, t, interval_us);
  });
}

IVM_API ivm_error_t* ivm_isolate_stop_cpu_profiler(ivm_isolate_t* iso, const char* title,
                                                   size_t title_len, ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    std::string t;
    if (out == nullptr) return InvalidArgument("out is NULL");
    if (ivm_error_t* err = ReadProfilerCall(iso, title, title_len, &t)) return err;
    if (iso->remote) {
      return ivm::remote::Profiler(iso->remote,
                                   RemoteRequest(ivm::wire::kOpProfilerStop, t, 0), out);
    }
    return StopLocked(*iso->holder, t, out);
  });
}

IVM_API ivm_error_t* ivm_isolate_start_cpu_profiler_async(
    ivm_isolate_t* iso, const char* title, size_t title_len,
    const ivm_cpu_profiler_options_t* opts, ivm_done_fn done, void* user_data,
    uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    std::string t;
    int interval_us = 0;
    if (done == nullptr) return InvalidArgument("done is NULL");
    if (ivm_error_t* err = ReadProfilerCall(iso, title, title_len, &t)) return err;
    if (ivm_error_t* err = ReadInterval(opts, &interval_us)) return err;
    if (iso->remote) {
      return ivm::remote::ProfilerAsync(
          iso->remote, RemoteRequest(ivm::wire::kOpProfilerStart, t, interval_us), done,
          user_data, job_out);
    }
    std::shared_ptr<ivm::IsolateHolder> holder = iso->holder;
    return ivm::Enqueue(
        holder, IVM_COMPLETION_VALUE, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          if (ivm_error_t* err = StartLocked(*holder, t, interval_us)) return err;
          c->result.value = ivm_value_new_undefined();
          return nullptr;
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_isolate_stop_cpu_profiler_async(ivm_isolate_t* iso, const char* title,
                                                         size_t title_len, ivm_done_fn done,
                                                         void* user_data, uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    std::string t;
    if (done == nullptr) return InvalidArgument("done is NULL");
    if (ivm_error_t* err = ReadProfilerCall(iso, title, title_len, &t)) return err;
    if (iso->remote) {
      return ivm::remote::ProfilerAsync(
          iso->remote, RemoteRequest(ivm::wire::kOpProfilerStop, t, 0), done, user_data,
          job_out);
    }
    std::shared_ptr<ivm::IsolateHolder> holder = iso->holder;
    return ivm::Enqueue(
        holder, IVM_COMPLETION_VALUE, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          return StopLocked(*holder, t, &c->result.value);
        },
        job_out);
  });
}

}  // extern "C"
