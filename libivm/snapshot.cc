// snapshot.cc — snapshots: V8 startup blobs made by v8::SnapshotCreator from
// the embedder's scripts, wrapped in ivm's own header, and checked before any
// isolate is created from them (V8 aborts the process on a bad blob).
//
// Layout, little-endian, 72 bytes then V8's blob:
//   u32 magic 'IVMS'   u32 format (1)   u32 ivm version   u32 V8 tag
//   u32 flags          u32 reserved (0) u64 blob length   u64 blob checksum
//   char[32] V8 version (NUL-padded)
// The V8 tag is ScriptCompiler::CachedDataVersionTag() (V8's version and the
// flags that affect code), the checksum cache::Hash of the blob. As for code
// caches, the checks are against accidents (another build, a truncated or
// corrupt file), not attacks: a crafted snapshot can do anything in V8.
#include "code_cache.h"
#include "internal.h"
#include "options.h"
#include "remote.h"
#include "snapshot.h"

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

struct ivm_snapshot : ivm::LiveCounted {
  std::string bytes;
};

namespace ivm::snapshot {
namespace {

constexpr uint32_t kMagic = 0x534d5649u;   // "IVMS"
constexpr uint32_t kFormat = 1;
constexpr size_t kVersionBytes = 32;
constexpr size_t kHeaderBytes = 40 + kVersionBytes;
constexpr uint32_t kFlagWarm = 1;   // the blob keeps code compiled by a warm-up
constexpr size_t kHeapCap = size_t{1} << 30;   // the creating isolate's heap

std::string V8VersionField() {
  std::string v(v8::V8::GetVersion());
  v.resize(kVersionBytes, '\0');
  return v;
}

std::string Wrap(std::string_view body, uint32_t flags) {
  std::string out;
  out.reserve(kHeaderBytes + body.size());
  cache::Put32(out, kMagic);
  cache::Put32(out, kFormat);
  cache::Put32(out, ivm_version());
  cache::Put32(out, v8::ScriptCompiler::CachedDataVersionTag());
  cache::Put32(out, flags);
  cache::Put32(out, 0);
  cache::Put64(out, body.size());
  cache::Put64(out, cache::Hash(body));
  out.append(V8VersionField());
  out.append(body);
  return out;
}

// Stops the creating isolate's JavaScript when the timeout expires.
class Deadline {
 public:
  Deadline(v8::Isolate* isolate, uint64_t timeout_ns) {
    if (timeout_ns == 0 || timeout_ns > (uint64_t{1} << 62)) return;   // none, or centuries
    thread_ = std::thread([this, isolate, timeout_ns] {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns), [this] { return done_; })) {
        expired_ = true;
        isolate->TerminateExecution();
      }
    });
  }
  ~Deadline() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool expired() {
    std::lock_guard<std::mutex> lock(mu_);
    return expired_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false, expired_ = false;
  std::thread thread_;
};

// The creating isolate ran out of heap: stop its JavaScript and grant room to
// unwind (V8 aborts the process if the limit stays).
struct HeapGuard {
  v8::Isolate* isolate;
  bool hit = false;
  static size_t Near(void* data, size_t current, size_t) {
    auto* self = static_cast<HeapGuard*>(data);
    self->hit = true;
    self->isolate->TerminateExecution();
    return current + (size_t{256} << 20);
  }
};

// Runs one script in `context`; an error if it did not complete.
ivm_error_t* RunScript(v8::Isolate* isolate, v8::Local<v8::Context> context,
                       std::string_view code, std::string_view filename) {
  v8::TryCatch try_catch(isolate);
  v8::Local<v8::String> source, name;
  ivm_error_t* err = nullptr;
  if (!NewString(isolate, code.data(), code.size(), &err).ToLocal(&source) ||
      !NewString(isolate, filename.data(), filename.size(), &err).ToLocal(&name)) {
    if (err == nullptr && !try_catch.HasTerminated()) err = InvalidArgument("a script is too long");
    return err;
  }
  v8::ScriptOrigin origin = compat::MakeOrigin(isolate, name, 0, 0);
  v8::Local<v8::Script> script;
  if (v8::Script::Compile(context, source, &origin).ToLocal(&script) &&
      !script->Run(context).IsEmpty()) {
    context->GetMicrotaskQueue()->PerformCheckpoint(isolate);
    if (!try_catch.HasCaught()) return nullptr;
  }
  if (try_catch.HasTerminated()) return nullptr;   // the caller names the cause
  return ErrorFromException(isolate, context, try_catch);
}

struct Input {
  std::vector<std::pair<std::string_view, std::string_view>> scripts;   // code, filename
  std::string_view warmup;
  bool warm = false;
  uint64_t timeout_ns = 0;
};

// Runs `input`'s scripts (or, with `cold`, its warm-up over the cold blob) in
// a SnapshotCreator and serializes the heap into `*out`.
// The scripts, in the context that becomes the snapshot's default context.
ivm_error_t* RunScripts(v8::Isolate* isolate, const Input& input, v8::SnapshotCreator* creator) {
  v8::Local<v8::Context> context = v8::Context::New(isolate);
  ivm_error_t* err = nullptr;
  {
    v8::Context::Scope context_scope(context);
    for (const auto& [code, filename] : input.scripts) {
      if ((err = RunScript(isolate, context, code, filename)) != nullptr) break;
      if (isolate->IsExecutionTerminating()) break;
    }
  }
  creator->SetDefaultContext(context);
  return err;
}

// The warm-up, in a scratch context of the cold snapshot's heap; the default
// context is a fresh one (the compiled code stays in the shared functions).
ivm_error_t* RunWarmup(v8::Isolate* isolate, const Input& input, v8::SnapshotCreator* creator) {
  ivm_error_t* err = nullptr;
  {
    v8::HandleScope scope(isolate);
    v8::Local<v8::Context> scratch = v8::Context::New(isolate);
    v8::Context::Scope context_scope(scratch);
    err = RunScript(isolate, scratch, input.warmup, "<warmup>");
  }
  isolate->ContextDisposedNotification(false);
  creator->SetDefaultContext(v8::Context::New(isolate));
  return err;
}

ivm_error_t* Make(const Input& input, const std::string* cold, std::string* out) {
  v8::StartupData cold_data{cold ? cold->data() : nullptr, cold ? static_cast<int>(cold->size()) : 0};
  v8::SnapshotCreator creator(nullptr, cold ? &cold_data : nullptr);
  v8::Isolate* isolate = creator.GetIsolate();
  HeapGuard heap{isolate};
  ivm_error_t* err = nullptr;
  bool stopped = false;
  v8::StartupData blob{nullptr, 0};
  {
    v8::Locker locker(isolate);
    {
      v8::HandleScope scope(isolate);
      isolate->AddNearHeapLimitCallback(HeapGuard::Near, &heap);
      isolate->SetMicrotasksPolicy(v8::MicrotasksPolicy::kExplicit);
      isolate->SetCaptureStackTraceForUncaughtExceptions(true, 16, v8::StackTrace::kDetailed);
      Deadline deadline(isolate, input.timeout_ns);
      err = cold ? RunWarmup(isolate, input, &creator) : RunScripts(isolate, input, &creator);
      stopped = heap.hit || deadline.expired();
      isolate->CancelTerminateExecution();
      isolate->RemoveNearHeapLimitCallback(HeapGuard::Near, 0);
    }
    // V8 wants a blob before the creator goes; that of a failed run is dropped.
    blob = creator.CreateBlob(cold ? v8::SnapshotCreator::FunctionCodeHandling::kKeep
                                   : v8::SnapshotCreator::FunctionCodeHandling::kClear);
  }
  std::unique_ptr<const char[]> owned(blob.data);
  if (stopped && err) ivm_error_free(err);
  if (heap.hit) return MakeError(IVM_ERROR_MEMORY_LIMIT, "a snapshot script ran past 1 GiB of heap");
  if (stopped) return MakeError(IVM_ERROR_TIMEOUT, kTimeoutMessage);
  if (err) return err;
  if (blob.data == nullptr || blob.raw_size <= 0) {
    return MakeError(IVM_ERROR_INTERNAL, "V8 could not create the snapshot");
  }
  *out = std::string(blob.data, static_cast<size_t>(blob.raw_size));
  return nullptr;
}

ivm_error_t* ReadInput(const ivm_snapshot_script_t* scripts, size_t count,
                       const ivm_snapshot_options_t* opts, Input* in, uint32_t* placement) {
  if (scripts == nullptr && count != 0) return InvalidArgument("scripts is NULL");
  for (size_t i = 0; i < count; ++i) {
    const ivm_snapshot_script_t& s = scripts[i];
    if (s.code == nullptr && s.code_len != 0) return InvalidArgument("a script's code is NULL");
    std::string_view name = s.filename ? std::string_view(s.filename, s.filename_len)
                                       : std::string_view("<snapshot>");
    in->scripts.emplace_back(std::string_view(s.code ? s.code : "", s.code_len), name);
  }
  ivm_snapshot_options_t full = IVM_SNAPSHOT_OPTIONS_INIT;
  if (ivm_error_t* err = ReadStruct(opts, &full)) return err;
  if (full.warmup == nullptr && full.warmup_len != 0) return InvalidArgument("warmup is NULL");
  if (full.placement != IVM_PLACEMENT_INLINE && full.placement != IVM_PLACEMENT_PROCESS) {
    return InvalidArgument("unknown placement " + std::to_string(full.placement));
  }
  in->warm = full.warmup != nullptr;
  in->warmup = std::string_view(full.warmup ? full.warmup : "", full.warmup_len);
  in->timeout_ns = full.timeout_ns;
  *placement = full.placement;
  return nullptr;
}

// The snapshot made in this process.
ivm_error_t* CreateInline(const Input& in, std::string* out) {
  EnsurePlatform();
  std::string blob;
  if (ivm_error_t* err = Make(in, nullptr, &blob)) return err;
  uint32_t flags = 0;
  if (in.warm) {
    std::string warm;
    if (ivm_error_t* err = Make(in, &blob, &warm)) return err;
    blob = std::move(warm);
    flags |= kFlagWarm;
  }
  *out = Wrap(blob, flags);
  return nullptr;
}

}  // namespace

ivm_error_t* Check(std::string_view bytes, std::string_view* blob) {
  EnsurePlatform();   // V8's flags are part of the tag
  const char* what = nullptr;
  if (bytes.size() < kHeaderBytes || cache::Get(bytes, 0, 4) != kMagic) {
    what = "is not an ivm snapshot";
  } else if (cache::Get(bytes, 4, 4) != kFormat || cache::Get(bytes, 8, 4) != ivm_version()) {
    what = "was made by another version of ivm";
  } else if (cache::Get(bytes, 12, 4) != v8::ScriptCompiler::CachedDataVersionTag() ||
             bytes.substr(40, kVersionBytes) != V8VersionField()) {
    what = "was made by another V8 build";
  } else if ((cache::Get(bytes, 16, 4) & ~kFlagWarm) != 0 || cache::Get(bytes, 20, 4) != 0) {
    what = "has unknown flags";
  } else if (cache::Get(bytes, 24, 8) != bytes.size() - kHeaderBytes) {
    what = "is truncated or has trailing bytes";
  } else if (cache::Get(bytes, 32, 8) != cache::Hash(bytes.substr(kHeaderBytes)) ||
             bytes.size() - kHeaderBytes > static_cast<size_t>(INT32_MAX)) {
    what = "is corrupt (checksum mismatch)";
  }
  if (what == nullptr) {
    std::string_view body = bytes.substr(kHeaderBytes);
    v8::StartupData data{body.data(), static_cast<int>(body.size())};
    if (!data.IsValid()) what = "is not valid for this V8";
    else *blob = body;
  }
  return what ? InvalidArgument(std::string("the snapshot ") + what) : nullptr;
}

}  // namespace ivm::snapshot

// ---------------------------------------------------------------------------
// ABI

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_snapshot_create(const ivm_snapshot_script_t* scripts, size_t count,
                                         const ivm_snapshot_options_t* opts,
                                         ivm_snapshot_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (out == nullptr) return InvalidArgument("out is NULL");
    ivm::snapshot::Input in;
    uint32_t placement = IVM_PLACEMENT_INLINE;
    if (ivm_error_t* err = ivm::snapshot::ReadInput(scripts, count, opts, &in, &placement)) {
      return err;
    }
    auto shell = std::make_unique<ivm_snapshot>();
    ivm_error_t* err =
        placement == IVM_PLACEMENT_PROCESS
            ? ivm::remote::CreateSnapshot(in.scripts, in.warm ? &in.warmup : nullptr,
                                          in.timeout_ns, &shell->bytes)
            : ivm::snapshot::CreateInline(in, &shell->bytes);
    if (err) return err;
    *out = shell.release();
    return nullptr;
  });
}

IVM_API void ivm_snapshot_data(const ivm_snapshot_t* snapshot, const char** out, size_t* out_len) {
  if (out) *out = snapshot ? snapshot->bytes.data() : nullptr;
  if (out_len) *out_len = snapshot ? snapshot->bytes.size() : 0;
}

IVM_API void ivm_snapshot_free(ivm_snapshot_t* snapshot) { ivm::FreeHandle(snapshot); }

}  // extern "C"
