// context.cc — contexts (global objects) and evaluation in them.
#include "context.h"
#include "copy.h"

#include <cstdio>
#include <cstring>

namespace ivm {

namespace {
constexpr size_t kMaxCachedEvalBytes = 64 * 1024;
constexpr size_t kMaxCachedEvals = 128;

bool SameOrigin(const CachedEval& c, const EvalOptions& o) {
  if (c.has_filename != (o.filename != nullptr)) return false;
  if (c.line_offset != o.line_offset || c.column_offset != o.column_offset) return false;
  return !c.has_filename || std::string_view(o.filename, o.filename_len) == c.filename;
}
}  // namespace

v8::MaybeLocal<v8::Script> CompileEval(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                       ContextRecord& record, const char* code, size_t len,
                                       const EvalOptions& o, ivm_error_t** error) {
  std::string_view key(code, len);
  bool cacheable = len <= kMaxCachedEvalBytes;
  if (cacheable) {
    auto it = record.evals.find(key);
    if (it != record.evals.end() && SameOrigin(it->second, o)) {
      if (it->second.unbound.IsEmpty()) return it->second.script.Get(isolate);
      return it->second.unbound.Get(isolate)->BindToCurrentContext();
    }
  }
  v8::Local<v8::String> source;
  if (!NewString(isolate, code, len, error).ToLocal(&source)) return {};
  v8::Local<v8::Value> name;
  if (!ScriptName(isolate, o.filename, o.filename_len, "<eval>", error).ToLocal(&name)) {
    return {};
  }
  v8::ScriptOrigin origin = compat::MakeOrigin(isolate, name, o.line_offset, o.column_offset);
  v8::Local<v8::Script> script;
  if (!v8::Script::Compile(context, source, &origin).ToLocal(&script)) return {};
  if (cacheable) {
    if (record.evals.size() >= kMaxCachedEvals) record.evals.clear();
    CachedEval& c = record.evals[std::string(key)];
    c.has_filename = o.filename != nullptr;
    c.filename.assign(o.filename ? o.filename : "", o.filename_len);
    c.line_offset = o.line_offset;
    c.column_offset = o.column_offset;
    if (MayDeclareLexically(key)) {
      c.script.Reset();
      c.unbound.Reset(isolate, script->GetUnboundScript());
    } else {
      c.unbound.Reset();
      c.script.Reset(isolate, script);
    }
  }
  return script;
}

bool MayDeclareLexically(std::string_view code) {
  for (std::string_view word : {"let", "const", "class", "using"}) {
    if (code.find(word) != std::string_view::npos) return true;
  }
  return false;
}

void ContextRecord::ResetLocked() {
  evals.clear();
  closures.clear();
  bound.clear();
  context.Reset();
}

EvalOptions ReadEvalOptions(const ivm_eval_options_t* opts) {
  EvalOptions o;
  if (opts == nullptr) return o;
  ivm_eval_options_t full = IVM_EVAL_OPTIONS_INIT;
  std::memcpy(&full, opts, std::min(opts->struct_size, sizeof full));
  o.timeout_ns = full.timeout_ns;
  o.filename = full.filename;
  o.filename_len = full.filename ? full.filename_len : 0;
  o.line_offset = full.line_offset;
  o.column_offset = full.column_offset;
  o.flags = full.flags;
  return o;
}

v8::MaybeLocal<v8::Value> ScriptName(v8::Isolate* isolate, const char* name, size_t len,
                                     const char* fallback, ivm_error_t** error) {
  if (name == nullptr) {
    v8::Local<v8::String> str;
    if (!v8::String::NewFromUtf8(isolate, fallback, v8::NewStringType::kInternalized)
             .ToLocal(&str)) {
      return {};
    }
    return str;
  }
  v8::Local<v8::String> str;
  if (!NewString(isolate, name, len, error).ToLocal(&str)) return {};
  return str;
}

ivm_error_t* CompleteCall(IsolateHolder& holder, v8::Isolate* isolate,
                          v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                          const CallState& call, v8::MaybeLocal<v8::Value> maybe_result,
                          uint32_t flags, ivm_value_t** out) {
  v8::Local<v8::Value> result;
  if (!maybe_result.ToLocal(&result)) {
    holder.CheckExternalMemory();   // a failure that ends over the limit is that
    return holder.Fail(context, try_catch, call);
  }
  holder.Settle(call);
  holder.CheckExternalMemory();
  if (try_catch.HasCaught() || try_catch.HasTerminated() || isolate->IsExecutionTerminating() ||
      holder.Stopped(call)) {
    return holder.Fail(context, try_catch, call);
  }
  if ((flags & IVM_EVAL_PROMISE) && result->IsPromise()) {
    v8::Local<v8::Promise> promise = result.As<v8::Promise>();
    if (promise->State() == v8::Promise::kPending && CanPark(holder, call) &&
        Park(holder, isolate, context, call, promise, flags)) {
      *out = nullptr;
      return nullptr;
    }
    if (ivm_error_t* err = WaitForPromise(holder, isolate, context, try_catch, call, promise)) {
      return err;
    }
    result = promise->Result();
  }
  ivm_error_t* err = ResultFromV8(holder, isolate, context, try_catch, call, result, flags, out);
  if (err == nullptr && holder.Stopped(call)) {   // e.g. the limit hit while copying
    ivm_value_free(*out);
    *out = nullptr;
    return holder.Fail(context, try_catch, call);
  }
  return err;
}

ivm_error_t* Eval(IsolateHolder& holder, ContextRecord& record, const char* code,
                  size_t code_len, const EvalOptions& o, ivm_value_t** out) {
  return holder.Run(o.timeout_ns, [&](v8::Isolate* isolate, CallState& call) -> ivm_error_t* {
    if (record.released()) return MakeError(IVM_ERROR_DISPOSED, kContextReleased);
    v8::Local<v8::Context> context = record.context.Get(isolate);
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    ivm_error_t* err = nullptr;
    v8::Local<v8::Script> script;
    v8::MaybeLocal<v8::Value> result;
    if (CompileEval(isolate, context, record, code, code_len, o, &err).ToLocal(&script)) {
      result = script->Run(context);
    } else if (err != nullptr) {
      return err;
    }
    return CompleteCall(holder, isolate, context, try_catch, call, result, o.flags, out);
  });
}

namespace {
constexpr size_t kMaxCachedClosures = 128;

v8::MaybeLocal<v8::Function> CompileClosure(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                            ContextRecord& record, const char* code, size_t len,
                                            size_t nargs, const EvalOptions& o,
                                            ivm_error_t** error) {
  std::string key;
  bool cacheable = len <= kMaxCachedEvalBytes && o.filename == nullptr && o.line_offset == 0 &&
                   o.column_offset == 0;
  if (cacheable) {
    key.reserve(len + 8);
    key.append(std::to_string(nargs));
    key.push_back(':');
    key.append(code, len);
    auto it = record.closures.find(key);
    if (it != record.closures.end()) return it->second.Get(isolate);
  }
  v8::Local<v8::String> source_text;
  if (!NewString(isolate, code, len, error).ToLocal(&source_text)) return {};
  v8::Local<v8::Value> name;
  if (!ScriptName(isolate, o.filename, o.filename_len, "<eval_closure>", error).ToLocal(&name)) {
    return {};
  }
  std::vector<v8::Local<v8::String>> params;
  params.reserve(nargs);
  for (size_t i = 0; i < nargs; ++i) {
    char name_buf[24];
    int n = std::snprintf(name_buf, sizeof name_buf, "$%zu", i);
    params.push_back(v8::String::NewFromUtf8(isolate, name_buf, v8::NewStringType::kInternalized, n)
                         .ToLocalChecked());
  }
  v8::ScriptOrigin origin = compat::MakeOrigin(isolate, name, o.line_offset, o.column_offset);
  v8::ScriptCompiler::Source source(source_text, origin);
  v8::Local<v8::Function> fn;
  if (!v8::ScriptCompiler::CompileFunction(context, &source, nargs, params.data(), 0, nullptr)
           .ToLocal(&fn)) {
    return {};
  }
  if (cacheable) {
    if (record.closures.size() >= kMaxCachedClosures) record.closures.clear();
    record.closures[key].Reset(isolate, fn);
  }
  return fn;
}
}  // namespace

ivm_error_t* EvalClosure(IsolateHolder& holder, ContextRecord& record, const char* code,
                         size_t code_len, const ivm_value_t* const* args, size_t nargs,
                         const EvalOptions& o, ivm_value_t** out) {
  return holder.Run(o.timeout_ns, [&](v8::Isolate* isolate, CallState& call) -> ivm_error_t* {
    if (record.released()) return MakeError(IVM_ERROR_DISPOSED, kContextReleased);
    v8::Local<v8::Context> context = record.context.Get(isolate);
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    ivm_error_t* err = nullptr;
    v8::Local<v8::Function> fn;
    if (!CompileClosure(isolate, context, record, code, code_len, nargs, o, &err).ToLocal(&fn)) {
      if (err) return err;
      return CompleteCall(holder, isolate, context, try_catch, call, {}, o.flags, out);
    }
    std::vector<v8::Local<v8::Value>> argv(nargs);
    for (size_t i = 0; i < nargs; ++i) {
      if (args[i] == nullptr) return InvalidArgument("argument " + std::to_string(i) + " is NULL");
      err = ValueToV8(holder, isolate, context, call, args[i], &argv[i]);
      if (err) return err;
      if (argv[i].IsEmpty()) {
        return CompleteCall(holder, isolate, context, try_catch, call, {}, o.flags, out);
      }
    }
    v8::MaybeLocal<v8::Value> result =
        fn->Call(context, v8::Undefined(isolate), static_cast<int>(nargs), argv.data());
    return CompleteCall(holder, isolate, context, try_catch, call, result, o.flags, out);
  });
}

ivm_error_t* CreateContext(const std::shared_ptr<IsolateHolder>& holder, ivm_context_t** out) {
  auto record = std::make_shared<ContextRecord>();
  ivm_error_t* err = holder->Run(0, [&](v8::Isolate* isolate, CallState&) -> ivm_error_t* {
    v8::Local<v8::Context> context = v8::Context::New(isolate);
    if (context.IsEmpty()) return MakeError(IVM_ERROR_INTERNAL, "V8 could not create a context");
    record->context.Reset(isolate, context);
    holder->Register(record);
    return nullptr;
  });
  if (err) return err;
  auto shell = std::make_unique<ivm_context>();
  shell->holder = holder;
  shell->lease = std::make_shared<Lease>(holder, record);
  shell->record = std::move(record);
  *out = shell.release();
  return nullptr;
}

}  // namespace ivm

// ---------------------------------------------------------------------------
// ABI

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_isolate_create_context(ivm_isolate_t* iso,
                                                const ivm_context_options_t* opts,
                                                ivm_context_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || out == nullptr) return InvalidArgument("isolate or out is NULL");
    if (opts != nullptr && opts->struct_size < sizeof(size_t)) {
      return InvalidArgument("bad struct_size");
    }
    return ivm::CreateContext(iso->holder, out);
  });
}

IVM_API ivm_error_t* ivm_isolate_create_context_async(ivm_isolate_t* iso,
                                                      const ivm_context_options_t* opts,
                                                      ivm_done_fn done, void* user_data,
                                                      uint64_t* out_job) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || done == nullptr) return InvalidArgument("isolate or done is NULL");
    if (opts != nullptr && opts->struct_size < sizeof(size_t)) {
      return InvalidArgument("bad struct_size");
    }
    std::shared_ptr<ivm::IsolateHolder> holder = iso->holder;
    return ivm::Enqueue(
        holder, done, user_data, ivm::FreeContext, [=](void** result) -> ivm_error_t* {
          return ivm::CreateContext(holder, reinterpret_cast<ivm_context_t**>(result));
        },
        out_job);
  });
}

IVM_API void ivm_isolate_cancel_job(ivm_isolate_t* iso, uint64_t job) {
  if (iso == nullptr) return;
  try {
    iso->holder->jobs().Cancel(job);
  } catch (...) {
  }
}

IVM_API ivm_error_t* ivm_context_eval(ivm_context_t* ctx, const char* code, size_t code_len,
                                      const ivm_eval_options_t* opts, ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || out == nullptr) return InvalidArgument("context or out is NULL");
    if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
    if (opts != nullptr && opts->struct_size < sizeof(size_t)) {
      return InvalidArgument("bad struct_size");
    }
    ivm::EvalOptions o = ivm::ReadEvalOptions(opts);
    ivm_error_t* err = ivm::Eval(*ctx->holder, *ctx->record, code ? code : "", code_len, o, out);
    if (err == nullptr) ivm::DeliverPrimitive(opts, out);
    return err;
  });
}

IVM_API ivm_error_t* ivm_context_eval_async(ivm_context_t* ctx, const char* code,
                                            size_t code_len, const ivm_eval_options_t* opts,
                                            ivm_done_fn done, void* user_data,
                                            uint64_t* out_job) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || done == nullptr) return InvalidArgument("context or done is NULL");
    if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
    if (opts != nullptr && opts->struct_size < sizeof(size_t)) {
      return InvalidArgument("bad struct_size");
    }
    ivm::EvalOptions o = ivm::ReadEvalOptions(opts);
    // The job owns copies of everything it needs: the caller's buffers and
    // handles may be gone by the time it runs.
    auto filename = std::make_shared<std::string>(o.filename ? o.filename : "", o.filename_len);
    if (o.filename) o.filename = filename->c_str();
    auto source = std::make_shared<std::string>(code ? code : "", code_len);
    std::shared_ptr<ivm::IsolateHolder> holder = ctx->holder;
    std::shared_ptr<ivm::ContextRecord> record = ctx->record;
    std::shared_ptr<ivm::Lease> lease = ctx->lease;   // usable until the job ends
    return ivm::Enqueue(
        holder, done, user_data, ivm::FreeValue, [=](void** result) -> ivm_error_t* {
          (void)filename;
          (void)lease;
          return ivm::Eval(*holder, *record, source->data(), source->size(), o,
                           reinterpret_cast<ivm_value_t**>(result));
        },
        out_job);
  });
}

IVM_API ivm_error_t* ivm_context_eval_closure(ivm_context_t* ctx, const char* code,
                                              size_t code_len, ivm_value_t* const* args,
                                              size_t nargs, const ivm_eval_options_t* opts,
                                              ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || out == nullptr) return InvalidArgument("context or out is NULL");
    if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
    if (args == nullptr && nargs != 0) return InvalidArgument("args is NULL");
    if (nargs > 65535) return InvalidArgument("too many arguments");
    if (opts != nullptr && opts->struct_size < sizeof(size_t)) {
      return InvalidArgument("bad struct_size");
    }
    ivm::EvalOptions o = ivm::ReadEvalOptions(opts);
    ivm_error_t* err = ivm::EvalClosure(*ctx->holder, *ctx->record, code ? code : "", code_len,
                                        args, nargs, o, out);
    if (err == nullptr) ivm::DeliverPrimitive(opts, out);
    return err;
  });
}

IVM_API ivm_error_t* ivm_context_eval_closure_async(ivm_context_t* ctx, const char* code,
                                                    size_t code_len, ivm_value_t** args,
                                                    size_t nargs, const ivm_eval_options_t* opts,
                                                    ivm_done_fn done, void* user_data,
                                                    uint64_t* out_job) {
  // Take the arguments first: they belong to this call whatever happens.
  auto owned = std::make_shared<std::vector<std::unique_ptr<ivm_value_t>>>();
  try {
    owned->reserve(args ? nargs : 0);
    for (size_t i = 0; args && i < nargs; ++i) owned->emplace_back(args[i]);
  } catch (...) {
    for (size_t i = owned->size(); args && i < nargs; ++i) ivm_value_free(args[i]);
    return ivm::MakeError(IVM_ERROR_INTERNAL, "out of memory");
  }
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || done == nullptr) return InvalidArgument("context or done is NULL");
    if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
    if (args == nullptr && nargs != 0) return InvalidArgument("args is NULL");
    if (nargs > 65535) return InvalidArgument("too many arguments");
    if (opts != nullptr && opts->struct_size < sizeof(size_t)) {
      return InvalidArgument("bad struct_size");
    }
    ivm::EvalOptions o = ivm::ReadEvalOptions(opts);
    auto filename = std::make_shared<std::string>(o.filename ? o.filename : "", o.filename_len);
    if (o.filename) o.filename = filename->c_str();
    auto source = std::make_shared<std::string>(code ? code : "", code_len);
    std::shared_ptr<ivm::IsolateHolder> holder = ctx->holder;
    std::shared_ptr<ivm::ContextRecord> record = ctx->record;
    std::shared_ptr<ivm::Lease> lease = ctx->lease;
    return ivm::Enqueue(
        holder, done, user_data, ivm::FreeValue, [=](void** result) -> ivm_error_t* {
          (void)filename;
          (void)lease;
          std::vector<const ivm_value_t*> argv;
          argv.reserve(owned->size());
          for (auto& a : *owned) argv.push_back(a.get());
          return ivm::EvalClosure(*holder, *record, source->data(), source->size(), argv.data(),
                                  argv.size(), o, reinterpret_cast<ivm_value_t**>(result));
        },
        out_job);
  });
}

IVM_API ivm_error_t* ivm_context_release(ivm_context_t* ctx) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr) return InvalidArgument("context is NULL");
    ctx->holder->Release(ctx->record);
    return nullptr;
  });
}

IVM_API void ivm_context_free(ivm_context_t* ctx) {
  if (ctx == nullptr) return;
  try {
    delete ctx;   // its lease releases the context once no queued job needs it
  } catch (...) {
  }
}

}  // extern "C"
