// script.cc — scripts compiled once per isolate and run in any of its contexts.
//
// A compiled script is context-independent (v8::UnboundScript); running it
// needs a copy bound to the context. Binding costs about as much as the run
// itself, so each context keeps the scripts it has bound.
#include "code_cache.h"
#include "remote.h"
#include "context.h"

#include <cstring>

namespace {
constexpr size_t kMaxBoundPerContext = 256;

ivm_error_t* CompileScript(const std::shared_ptr<ivm::IsolateHolder>& holder_ptr,
                           const ivm::cache::CompileInput& in, ivm_script_t** out) {
  const ivm::SourceOptions& o = in.source;
  std::string_view text = in.code;
  ivm::IsolateHolder& holder = *holder_ptr;
  auto record = std::make_shared<ivm::ScriptRecord>();
  ivm_error_t* err = holder.Run(0, [&](v8::Isolate* isolate, ivm::CallState& call) -> ivm_error_t* {
    // Compiling needs a context for its errors, though the result has none.
    v8::Local<v8::Context> context = holder.CompileContextLocked();
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    ivm_error_t* error = nullptr;
    v8::Local<v8::String> source;
    if (!ivm::NewString(isolate, text.data(), text.size(), &error).ToLocal(&source)) return error;
    v8::Local<v8::Value> name;
    if (!ivm::ScriptName(isolate, o.filename, o.filename_len, "<isolated-vm>", &error)
             .ToLocal(&name)) {
      return error;
    }
    v8::ScriptOrigin origin =
        ivm::compat::MakeOrigin(isolate, name, o.line_offset, o.column_offset);
    v8::ScriptCompiler::CompileOptions options;
    v8::ScriptCompiler::Source src(
        source, origin,
        ivm::cache::Consume(ivm::cache::kScript, text, in.cache, &record->cache, &options));
    v8::Local<v8::UnboundScript> script;
    if (!v8::ScriptCompiler::CompileUnboundScript(isolate, &src, options).ToLocal(&script)) {
      return holder.Fail(context, try_catch, call);
    }
    ivm::cache::Finish(ivm::cache::kScript, text, in.cache, src, script, &record->cache);
    record->script.Reset(isolate, script);
    record->rebind = ivm::MayDeclareLexically(text);
    record->id = holder.NextId();
    holder.Register(record);
    return nullptr;
  });
  if (err) return err;
  auto shell = std::make_unique<ivm_script>();
  ivm::Share(*shell, holder_ptr, std::move(record));
  *out = shell.release();
  return nullptr;
}

ivm_error_t* ReadRun(ivm_script_t* script, ivm_context_t* ctx, const ivm_run_options_t* run,
                     const ivm_result_options_t* result, ivm::CallOptions* o) {
  if (script->holder != ctx->holder) {
    return ivm::InvalidArgument("The script and the context belong to different isolates");
  }
  return ivm::ReadCallOptions(run, result, o);
}

ivm_error_t* RunScript(ivm::IsolateHolder& holder, ivm::ScriptRecord& srec,
                       ivm::ContextRecord& crec, const ivm::CallOptions& o, ivm_value_t** out) {
  return ivm::RunInContext(holder, o.timeout_ns, crec, ivm::kContextReleased,
                           [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                               v8::TryCatch& try_catch, ivm::CallState& call) -> ivm_error_t* {
    if (srec.released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kScriptReleased);
    v8::Local<v8::Script> bound;
    auto it = srec.rebind ? crec.bound.end() : crec.bound.find(srec.id);
    if (it != crec.bound.end()) {
      bound = it->second.Get(isolate);
    } else {
      bound = srec.script.Get(isolate)->BindToCurrentContext();
      if (!srec.rebind) {
        if (crec.bound.size() >= kMaxBoundPerContext) crec.bound.clear();
        crec.bound.emplace(srec.id, v8::Global<v8::Script>(isolate, bound));
      }
    }
    return ivm::CompleteCall(holder, isolate, context, try_catch, call, bound->Run(context),
                            o.flags, out);
  });
}

}  // namespace

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_isolate_compile_script(ivm_isolate_t* iso, const char* code,
                                                size_t code_len,
                                                const ivm_source_options_t* source,
                                                const ivm_cache_options_t* cache,
                                                ivm_script_t** out) {
  return ivm::cache::CompileCall(
      iso, out != nullptr, "isolate or out is NULL", code, code_len, source, cache,
      [&](const ivm::cache::CompileInput& in) -> ivm_error_t* {
        if (iso->remote && (in.cache.given || in.cache.produce)) {
          return ivm::remote::CompileScriptCached(iso->remote, in, out);
        }
        if (iso->remote) return ivm::remote::CompileScript(iso->remote, in.code, in.source, out);
        return CompileScript(iso->holder, in, out);
      });
}

IVM_API ivm_error_t* ivm_isolate_compile_script_async(ivm_isolate_t* iso, const char* code,
                                                      size_t code_len,
                                                      const ivm_source_options_t* source,
                                                      const ivm_cache_options_t* cache,
                                                      ivm_done_fn done, void* user_data,
                                                      uint64_t* job_out) {
  return ivm::cache::CompileCall(
      iso, done != nullptr, "isolate or done is NULL", code, code_len, source, cache,
      [&](const ivm::cache::CompileInput& in) -> ivm_error_t* {
        if (iso->remote && (in.cache.given || in.cache.produce)) {
          return ivm::remote::CompileScriptCachedAsync(iso->remote, in, done, user_data, job_out);
        }
        if (iso->remote) {
          return ivm::remote::CompileScriptAsync(iso->remote, in.code, in.source, done, user_data,
                                                 job_out);
        }
        return ivm::cache::QueueCompile(
            iso->holder, in, IVM_COMPLETION_SCRIPT, done, user_data, job_out,
            [](const auto& holder, const auto& input, ivm_completion_t* c) {
              return CompileScript(holder, input, &c->result.script);
            });
      });
}

IVM_API ivm_error_t* ivm_script_run(ivm_script_t* script, ivm_context_t* ctx,
                                    const ivm_run_options_t* run,
                                    const ivm_result_options_t* result, ivm_value_t** out,
                                    ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (script == nullptr || ctx == nullptr || out == nullptr) {
      return InvalidArgument("script, context or out is NULL");
    }
    ivm::CallOptions o;
    if (script->remote || ctx->remote) {
      if (ivm_error_t* err = ivm::ReadCallOptions(run, result, &o)) return err;
      ivm_error_t* err = ivm::remote::RunScript(script, ctx, o, out);
      if (err == nullptr) ivm::DeliverPrimitive(primitive_out, out);
      return err;
    }
    if (ivm_error_t* err = ReadRun(script, ctx, run, result, &o)) return err;
    ivm::PrimitiveOutScope direct(primitive_out);
    ivm_error_t* err = RunScript(*ctx->holder, *script->record, *ctx->record, o, out);
    if (err == nullptr) ivm::DeliverPrimitive(primitive_out, out);
    return err;
  });
}

IVM_API ivm_error_t* ivm_script_run_async(ivm_script_t* script, ivm_context_t* ctx,
                                          const ivm_run_options_t* run,
                                          const ivm_result_options_t* result, ivm_done_fn done,
                                          void* user_data, uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (script == nullptr || ctx == nullptr || done == nullptr) {
      return InvalidArgument("script, context or done is NULL");
    }
    ivm::CallOptions o;
    if (script->remote || ctx->remote) {
      if (ivm_error_t* err = ivm::ReadCallOptions(run, result, &o)) return err;
      return ivm::remote::RunScriptAsync(script, ctx, o, done, user_data, job_out);
    }
    if (ivm_error_t* err = ReadRun(script, ctx, run, result, &o)) return err;
    std::shared_ptr<ivm::IsolateHolder> holder = ctx->holder;
    std::shared_ptr<ivm::ScriptRecord> srec = script->record;
    std::shared_ptr<ivm::ContextRecord> crec = ctx->record;
    // Both stay usable until the job ends, even if their handles are freed.
    std::shared_ptr<ivm::Lease> leases[2] = {script->lease, ctx->lease};
    return ivm::Enqueue(
        holder, IVM_COMPLETION_VALUE, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          (void)leases;
          return RunScript(*holder, *srec, *crec, o, &c->result.value);
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_script_release(ivm_script_t* script) {
  return Guard([&]() -> ivm_error_t* {
    if (script == nullptr) return InvalidArgument("script is NULL");
    if (script->remote) {
      ivm::remote::Release(*script->remote, ivm::wire::kOpScriptRelease);
      return nullptr;
    }
    script->holder->Release(script->record);
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_script_cached_data(const ivm_script_t* script, const char** out,
                                            size_t* out_len) {
  return Guard([&]() -> ivm_error_t* {
    if (script == nullptr || out == nullptr || out_len == nullptr) {
      return InvalidArgument("script, out or out_len is NULL");
    }
    const ivm::cache::Outcome& cache =
        script->record ? script->record->cache : script->remote_cache;
    *out = cache.produced.data();
    *out_len = cache.produced.size();
    return nullptr;
  });
}

IVM_API int ivm_script_cached_data_rejected(const ivm_script_t* script) {
  if (script == nullptr) return 0;
  return (script->record ? script->record->cache.rejected : script->remote_cache.rejected) ? 1 : 0;
}

// Its lease releases the script once no queued job needs it.
IVM_API void ivm_script_free(ivm_script_t* script) { ivm::FreeHandle(script); }

}  // extern "C"
