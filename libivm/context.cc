// context.cc — contexts (global objects) and evaluation in them.
#include "callback.h"
#include "remote.h"
#include "context.h"
#include "copy.h"
#include "inspector.h"
#include "timer_table.h"

#include <cstdio>
#include <cstring>

namespace ivm {

namespace {
constexpr size_t kMaxCachedEvalBytes = 64 * 1024;
constexpr size_t kMaxCachedEvals = 128;

bool SameOrigin(const CachedEval& c, const SourceOptions& o) {
  if (c.has_filename != (o.filename != nullptr)) return false;
  if (c.line_offset != o.line_offset || c.column_offset != o.column_offset) return false;
  return !c.has_filename || std::string_view(o.filename, o.filename_len) == c.filename;
}
}  // namespace

v8::MaybeLocal<v8::Script> CompileEval(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                       ContextRecord& record, const char* code, size_t len,
                                       const SourceOptions& o, ivm_error_t** error) {
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
  if (!context.IsEmpty()) {   // its timers end with it
    v8::Isolate* isolate = v8::Isolate::GetCurrent();
    v8::HandleScope scope(isolate);
    CloseTimers(isolate, context.Get(isolate));
    if (Inspector* inspector = InspectorOf(isolate)) inspector->ContextDestroyed(context.Get(isolate));
  }
  evals.clear();
  closures.clear();
  bound.clear();
  context.Reset();
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
  // The clock read of the memory check ends the call's wall time if nothing runs
  // after it: no rejections reported, no promise waited for, a primitive result.
  int64_t checked_ns = holder.CheckExternalMemory();
  if (try_catch.HasCaught() || try_catch.HasTerminated() || isolate->IsExecutionTerminating() ||
      holder.Stopped(call)) {
    return holder.Fail(context, try_catch, call);
  }
  if (flags & IVM_RESULT_PROMISE) ForgetRejection(isolate, context, result);
  if (FlushRejections(holder, isolate, context, call)) checked_ns = 0;
  if ((flags & IVM_RESULT_PROMISE) && result->IsPromise()) {
    checked_ns = 0;
    v8::Local<v8::Promise> promise = result.As<v8::Promise>();
    if (promise->State() == v8::Promise::kPending && CanPark(holder, call) &&
        Park(holder, isolate, context, call, promise, flags)) {
      *out = nullptr;
      return nullptr;
    }
    ivm_error_t* waited = WaitForPromise(holder, isolate, context, try_catch, call, promise);
    ForgetRejection(isolate, context, promise);
    FlushRejections(holder, isolate, context, call);
    if (waited) return waited;
    result = promise->Result();
  }
  ivm_error_t* err = nullptr;
  if (call.primitive_out != nullptr && (flags & ~IVM_RESULT_PROMISE) == 0 &&
      FillPrimitiveFromV8(result, call.primitive_out)) {
    *out = nullptr;   // delivered (PrimitiveOutScope)
    call.end_ns = checked_ns;
  } else {
    err = ResultFromV8(holder, isolate, context, try_catch, call, result, flags, out);
  }
  if (err == nullptr && holder.Stopped(call)) {   // e.g. the limit hit while copying
    ivm_value_free(*out);
    *out = nullptr;
    return holder.Fail(context, try_catch, call);
  }
  return err;
}

ivm_error_t* Eval(IsolateHolder& holder, ContextRecord& record, const char* code,
                  size_t code_len, const SourceOptions& source, const CallOptions& o,
                  ivm_value_t** out) {
  return RunInContext(holder, o.timeout_ns, record, kContextReleased,
                      [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                          v8::TryCatch& try_catch, CallState& call) -> ivm_error_t* {
    ivm_error_t* err = nullptr;
    v8::Local<v8::Script> script;
    v8::MaybeLocal<v8::Value> result;
    if (CompileEval(isolate, context, record, code, code_len, source, &err).ToLocal(&script)) {
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
                                            size_t nargs, const SourceOptions& o,
                                            ivm_error_t** error) {
  std::string key;
  bool cacheable = len <= kMaxCachedEvalBytes && o.is_default();
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
                         const SourceOptions& source, const CallOptions& o, ivm_value_t** out) {
  return RunInContext(holder, o.timeout_ns, record, kContextReleased,
                      [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                          v8::TryCatch& try_catch, CallState& call) -> ivm_error_t* {
    ivm_error_t* err = nullptr;
    v8::Local<v8::Function> fn;
    if (!CompileClosure(isolate, context, record, code, code_len, nargs, source, &err)
             .ToLocal(&fn)) {
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

namespace {
// V8 gives every context a `console` that does nothing without an inspector:
// a context is bare (host.h's console replaces it when asked for).
bool RemoveBuiltinConsole(v8::Isolate* isolate, v8::Local<v8::Context> context) {
  v8::Context::Scope scope(context);
  return context->Global()
      ->Delete(context, v8::String::NewFromUtf8Literal(isolate, "console"))
      .FromMaybe(false);
}
}  // namespace

ivm_error_t* CreateContext(const std::shared_ptr<IsolateHolder>& holder, const ContextHooks& hooks,
                           ivm_context_t** out) {
  auto record = std::make_shared<ContextRecord>();
  ivm_error_t* err = holder->Run(0, [&](v8::Isolate* isolate, CallState&) -> ivm_error_t* {
    v8::Local<v8::Context> context = v8::Context::New(isolate);
    if (context.IsEmpty()) return MakeError(IVM_ERROR_INTERNAL, "V8 could not create a context");
    // With an inspector, V8's console reports to it: it stays, or the host's
    // console forwards to it (host_console.cc).
    Inspector* inspector = holder->inspector();
    if (inspector == nullptr && !RemoveBuiltinConsole(isolate, context)) {
      return MakeError(IVM_ERROR_INTERNAL, "could not remove V8's console");
    }
    if (hooks.import_hook && !SetImportHook(*holder, isolate, context, hooks.import_hook)) {
      return MakeError(IVM_ERROR_INTERNAL, "could not install the import hook");
    }
    if (hooks.on_rejection && !SetRejectionHook(*holder, isolate, context, hooks.on_rejection)) {
      return MakeError(IVM_ERROR_INTERNAL, "could not install the rejection hook");
    }
    if (hooks.host.host != 0 && !InstallHostBasics(*holder, context, hooks.host)) {
      return MakeError(IVM_ERROR_INTERNAL, "could not install the host basics");
    }
    record->context.Reset(isolate, context);
    holder->Register(record);
    if (inspector != nullptr) {
      inspector->ContextCreated(context, "ivm context", true);
    }
    return nullptr;
  });
  if (err) return err;
  auto shell = std::make_unique<ivm_context>();
  Share(*shell, holder, std::move(record));
  *out = shell.release();
  return nullptr;
}

}  // namespace ivm

// ---------------------------------------------------------------------------
// ABI

using ivm::Guard;
using ivm::InvalidArgument;

namespace {

// What the eval calls read from their options, synchronous or queued.
struct EvalCall {
  ivm::SourceOptions source;
  ivm::CallOptions call;
};

// A queued eval's job owns copies of everything it needs: the caller's
// buffers and handles may be gone by the time it runs.
struct QueuedEval : EvalCall {
  QueuedEval(const EvalCall& e, ivm_context_t* ctx, const char* code, size_t code_len)
      : EvalCall(e),
        text(std::make_shared<const std::string>(code ? code : "", code_len)),
        holder(ctx->holder),
        record(ctx->record),
        lease(ctx->lease) {
    source.Own();
  }
  std::shared_ptr<const std::string> text;
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::ContextRecord> record;
  std::shared_ptr<ivm::Lease> lease;   // the context stays usable until the job ends
};

ivm_error_t* ReadContextOptions(const ivm_context_options_t* opts, ivm::ContextHooks* out) {
  ivm_context_options_t full = IVM_CONTEXT_OPTIONS_INIT;
  if (ivm_error_t* err = ivm::ReadStruct(opts, &full)) return err;
  if (full.import_hook != nullptr) out->import_hook = full.import_hook->data;
  if (full.on_unhandled_rejection != nullptr) {
    out->on_rejection = full.on_unhandled_rejection->data;
  }
  if ((full.host & ~ivm::kHostAll) != 0) {
    char bits[16];
    std::snprintf(bits, sizeof bits, "0x%x", static_cast<unsigned>(full.host & ~ivm::kHostAll));
    return InvalidArgument(std::string("unknown bits in ivm_context_options_t.host: ") + bits);
  }
  out->host.host = full.host;
  if (full.console != nullptr) out->host.console = full.console->data;
  out->host.console_max_bytes =
      full.console_max_bytes != 0 ? full.console_max_bytes : ivm::kDefaultConsoleMaxBytes;
  return nullptr;
}

// The request of an eval or eval_closure of a context in a worker.
ivm::remote::EvalRequest Remote(const EvalCall& e, const char* code, size_t code_len,
                                const ivm_value_t* const* args, size_t nargs, bool closure) {
  ivm::remote::EvalRequest r;
  r.code = std::string_view(code ? code : "", code_len);
  r.closure = closure;
  r.args = args;
  r.nargs = nargs;
  r.source = e.source;
  r.call = e.call;
  return r;
}

ivm_error_t* ReadEvalCall(const char* code, size_t code_len, const ivm_source_options_t* source,
                          const ivm_run_options_t* run, const ivm_result_options_t* result,
                          EvalCall* out) {
  if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
  if (ivm_error_t* err = ivm::ReadSourceOptions(source, &out->source)) return err;
  return ivm::ReadCallOptions(run, result, &out->call);
}

// An eval in an inline isolate: a primitive result goes straight to `primitive_out`.
ivm_error_t* EvalInline(ivm_context_t* ctx, const char* code, size_t code_len, const EvalCall& e,
                        ivm_value_t** out, ivm_primitive_t* primitive_out) {
  ivm::PrimitiveOutScope direct(primitive_out);
  return ivm::Eval(*ctx->holder, *ctx->record, code, code_len, e.source, e.call, out);
}

}  // namespace

extern "C" {

IVM_API ivm_error_t* ivm_isolate_create_context(ivm_isolate_t* iso,
                                                const ivm_context_options_t* opts,
                                                ivm_context_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || out == nullptr) return InvalidArgument("isolate or out is NULL");
    ivm::ContextHooks hooks;
    if (ivm_error_t* err = ReadContextOptions(opts, &hooks)) return err;
    if (iso->remote) return ivm::remote::CreateContext(iso->remote, out, &hooks);
    return ivm::CreateContext(iso->holder, hooks, out);
  });
}

IVM_API ivm_error_t* ivm_isolate_create_context_async(ivm_isolate_t* iso,
                                                      const ivm_context_options_t* opts,
                                                      ivm_done_fn done, void* user_data,
                                                      uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || done == nullptr) return InvalidArgument("isolate or done is NULL");
    ivm::ContextHooks hooks;
    if (ivm_error_t* err = ReadContextOptions(opts, &hooks)) return err;
    if (iso->remote) {
      return ivm::remote::CreateContextAsync(iso->remote, done, user_data, job_out, &hooks);
    }
    std::shared_ptr<ivm::IsolateHolder> holder = iso->holder;
    return ivm::Enqueue(
        holder, IVM_COMPLETION_CONTEXT, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          return ivm::CreateContext(holder, hooks, &c->result.context);
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_context_eval(ivm_context_t* ctx, const char* code, size_t code_len,
                                      const ivm_source_options_t* source,
                                      const ivm_run_options_t* run,
                                      const ivm_result_options_t* result, ivm_value_t** out,
                                      ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || out == nullptr) return InvalidArgument("context or out is NULL");
    EvalCall e;
    if (ivm_error_t* err = ReadEvalCall(code, code_len, source, run, result, &e)) return err;
    ivm_error_t* err =
        ctx->remote
            ? ivm::remote::Eval(ctx, Remote(e, code, code_len, nullptr, 0, false), out)
            : EvalInline(ctx, code ? code : "", code_len, e, out, primitive_out);
    if (err == nullptr) ivm::DeliverPrimitive(primitive_out, out);
    return err;
  });
}

IVM_API ivm_error_t* ivm_context_eval_async(ivm_context_t* ctx, const char* code,
                                            size_t code_len, const ivm_source_options_t* source,
                                            const ivm_run_options_t* run,
                                            const ivm_result_options_t* result,
                                            ivm_done_fn done, void* user_data,
                                            uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || done == nullptr) return InvalidArgument("context or done is NULL");
    EvalCall e;
    if (ivm_error_t* err = ReadEvalCall(code, code_len, source, run, result, &e)) return err;
    if (ctx->remote) {
      return ivm::remote::EvalAsync(ctx, Remote(e, code, code_len, nullptr, 0, false), done,
                                    user_data, job_out);
    }
    QueuedEval q(e, ctx, code, code_len);
    return ivm::Enqueue(
        q.holder, IVM_COMPLETION_VALUE, done, user_data,
        [q](ivm_completion_t* c) -> ivm_error_t* {
          return ivm::Eval(*q.holder, *q.record, q.text->data(), q.text->size(), q.source, q.call,
                           &c->result.value);
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_context_eval_closure(ivm_context_t* ctx, const char* code,
                                              size_t code_len, ivm_value_t* const* args,
                                              size_t nargs, const ivm_source_options_t* source,
                                              const ivm_run_options_t* run,
                                              const ivm_result_options_t* result,
                                              ivm_value_t** out, ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || out == nullptr) return InvalidArgument("context or out is NULL");
    if (ivm_error_t* err = ivm::CheckArgs(args, nargs)) return err;
    EvalCall e;
    if (ivm_error_t* err = ReadEvalCall(code, code_len, source, run, result, &e)) return err;
    ivm_error_t* err =
        ctx->remote
            ? ivm::remote::Eval(ctx, Remote(e, code, code_len, args, nargs, true), out)
            : ivm::EvalClosure(*ctx->holder, *ctx->record, code ? code : "", code_len, args,
                               nargs, e.source, e.call, out);
    if (err == nullptr) ivm::DeliverPrimitive(primitive_out, out);
    return err;
  });
}

IVM_API ivm_error_t* ivm_context_eval_closure_async(ivm_context_t* ctx, const char* code,
                                                    size_t code_len, ivm_value_t** args,
                                                    size_t nargs,
                                                    const ivm_source_options_t* source,
                                                    const ivm_run_options_t* run,
                                                    const ivm_result_options_t* result,
                                                    ivm_done_fn done, void* user_data,
                                                    uint64_t* job_out) {
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
    if (ivm_error_t* err = ivm::CheckArgs(args, nargs)) return err;
    EvalCall e;
    if (ivm_error_t* err = ReadEvalCall(code, code_len, source, run, result, &e)) return err;
    if (ctx->remote) {   // the arguments are encoded now, and freed with `owned`
      return ivm::remote::EvalAsync(ctx, Remote(e, code, code_len, args, nargs, true), done,
                                    user_data, job_out);
    }
    QueuedEval q(e, ctx, code, code_len);
    return ivm::Enqueue(
        q.holder, IVM_COMPLETION_VALUE, done, user_data,
        [q, owned](ivm_completion_t* c) -> ivm_error_t* {
          std::vector<const ivm_value_t*> argv;
          argv.reserve(owned->size());
          for (auto& a : *owned) argv.push_back(a.get());
          return ivm::EvalClosure(*q.holder, *q.record, q.text->data(), q.text->size(),
                                  argv.data(), argv.size(), q.source, q.call, &c->result.value);
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_context_release(ivm_context_t* ctx) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr) return InvalidArgument("context is NULL");
    if (ctx->remote) {
      ivm::remote::Release(*ctx->remote, ivm::wire::kOpContextRelease);
      return nullptr;
    }
    ctx->holder->Release(ctx->record);
    return nullptr;
  });
}

// Its lease releases the context once no queued job needs it.
IVM_API void ivm_context_free(ivm_context_t* ctx) { ivm::FreeHandle(ctx); }

}  // extern "C"
