// code_cache.h — V8 code caches wrapped in ivm's own header (code_cache.cc):
// the header names the ivm and V8 builds, the kind of code and a hash of its
// source, and a checksum of the payload, so that foreign, stale or corrupt
// data is refused here, before V8 sees it. Nothing here is ABI.
#ifndef IVM_CODE_CACHE_H
#define IVM_CODE_CACHE_H

#include "internal.h"
#include "jobs.h"
#include "options.h"

#include <memory>
#include <string>
#include <string_view>

namespace ivm::cache {

// The little-endian header fields of ivm's wrappings (code caches here,
// snapshots in snapshot.cc): a fast 64-bit hash of 8-byte words (multiply
// and mix; against accidents, not attacks) and fixed-width integers.
uint64_t Hash(std::string_view bytes);
void Put32(std::string& out, uint32_t v);
void Put64(std::string& out, uint64_t v);
// The `bytes`-wide integer at `at` (the caller checked the length).
uint64_t Get(std::string_view blob, size_t at, int bytes);

enum Kind : uint32_t { kScript = 1, kModule = 2 };

// ivm_cache_options_t, read once. The data is borrowed until Own().
struct Options {
  std::string_view data;
  bool given = false;   // data was given (it may be empty)
  bool produce = false;

  void Own() {
    if (!given) return;
    storage_ = std::make_shared<const std::string>(data);
    data = *storage_;
  }

 private:
  std::shared_ptr<const std::string> storage_;
};
ivm_error_t* ReadOptions(const ivm_cache_options_t* opts, Options* out);

// The inputs of a compile call (compile_script, compile_module), read once;
// borrowed from the caller until Own() copies them, as a queued job must.
struct CompileInput {
  std::string_view code;
  SourceOptions source;
  Options cache;

  void Own() {
    owned_ = std::make_shared<const std::string>(code);
    code = *owned_;
    source.Own();
    cache.Own();
  }

 private:
  std::shared_ptr<const std::string> owned_;
};
ivm_error_t* ReadCompileInput(const char* code, size_t code_len,
                              const ivm_source_options_t* source,
                              const ivm_cache_options_t* cache, CompileInput* out);

// The body of each ivm_isolate_compile_*[_async]: checks `iso` and the call's
// output (`has_out`: `out`, or `done` for an _async call; `null_message` names
// them), reads the input and returns `compile(input)`, exceptions guarded.
template <class F>
ivm_error_t* CompileCall(const ivm_isolate_t* iso, bool has_out, const char* null_message,
                         const char* code, size_t code_len, const ivm_source_options_t* source,
                         const ivm_cache_options_t* cache, F&& compile) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || !has_out) return InvalidArgument(null_message);
    CompileInput in;
    if (ivm_error_t* err = ReadCompileInput(code, code_len, source, cache, &in)) return err;
    return compile(in);
  });
}

// Queues `compile(holder, input, completion)` on `iso` with a copy of `input`.
template <class F>
ivm_error_t* QueueCompile(const std::shared_ptr<IsolateHolder>& holder, CompileInput input,
                          ivm_completion_kind_t kind, ivm_done_fn done, void* user_data,
                          uint64_t* job_out, F compile) {
  input.Own();
  return Enqueue(
      holder, kind, done, user_data,
      [=](ivm_completion_t* c) -> ivm_error_t* { return compile(holder, input, c); }, job_out);
}

// What a compile did with the cache (kept by the script or module record).
struct Outcome {
  std::string produced;    // wrapped data, if asked for
  bool rejected = false;   // data was given and not used
};

// ivm's wrapping of V8's `payload` for code of `kind` compiled from `source`.
std::string Wrap(Kind kind, std::string_view source, const uint8_t* payload, size_t len);
// The payload inside `blob` if its header matches this build, `kind` and
// `source`, and its checksum holds; otherwise false.
bool Unwrap(Kind kind, std::string_view source, std::string_view blob, std::string_view* payload);

// V8's compile inputs for `options`: the CachedData to hand to a
// ScriptCompiler::Source (NULL: none) and the compile option. A blob that
// fails Unwrap marks `outcome` rejected and is not passed on.
v8::ScriptCompiler::CachedData* Consume(Kind kind, std::string_view source, const Options& options,
                                        Outcome* outcome,
                                        v8::ScriptCompiler::CompileOptions* compile);

// After the compile: whether V8 rejected what it was given, and the produced
// data if asked for (`code`: the compiled script's or module's unbound script).
template <class Unbound>
void Finish(Kind kind, std::string_view source, const Options& options,
            const v8::ScriptCompiler::Source& src, v8::Local<Unbound> code, Outcome* outcome) {
  const v8::ScriptCompiler::CachedData* given = src.GetCachedData();
  if (given != nullptr && given->rejected) outcome->rejected = true;
  if (!options.produce) return;
  std::unique_ptr<v8::ScriptCompiler::CachedData> made(v8::ScriptCompiler::CreateCodeCache(code));
  if (made && made->length > 0) {
    outcome->produced =
        Wrap(kind, source, made->data, static_cast<size_t>(made->length));
  }
}

}  // namespace ivm::cache

#endif  // IVM_CODE_CACHE_H
