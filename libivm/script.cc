// script.cc — scripts compiled once per isolate and run in any of its contexts.
//
// A compiled script is context-independent (v8::UnboundScript); running it
// needs a copy bound to the context. Binding costs about as much as the run
// itself, so each context keeps the scripts it has bound.
#include "context.h"

#include <cstring>

namespace {
constexpr size_t kMaxBoundPerContext = 256;
}

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_isolate_compile_script(ivm_isolate_t* iso, const char* code,
                                                size_t code_len,
                                                const ivm_script_options_t* opts,
                                                ivm_script_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || out == nullptr) return InvalidArgument("isolate or out is NULL");
    if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
    ivm_script_options_t o = IVM_SCRIPT_OPTIONS_INIT;
    if (opts != nullptr) {
      if (opts->struct_size < sizeof(size_t)) return InvalidArgument("bad struct_size");
      std::memcpy(&o, opts, std::min(opts->struct_size, sizeof o));
    }
    ivm::IsolateHolder& holder = *iso->holder;
    auto record = std::make_shared<ivm::ScriptRecord>();
    ivm_error_t* err = holder.Run(0, [&](v8::Isolate* isolate, ivm::CallState& call) -> ivm_error_t* {
      // Compiling needs a context for its errors, though the result has none.
      v8::Local<v8::Context> context = holder.CompileContextLocked();
      v8::Context::Scope context_scope(context);
      v8::TryCatch try_catch(isolate);
      ivm_error_t* error = nullptr;
      v8::Local<v8::String> source;
      if (!ivm::NewString(isolate, code ? code : "", code_len, &error).ToLocal(&source)) {
        return error;
      }
      v8::Local<v8::Value> name;
      if (!ivm::ScriptName(isolate, o.filename, o.filename ? o.filename_len : 0,
                           "<isolated-vm>", &error).ToLocal(&name)) {
        return error;
      }
      v8::ScriptOrigin origin =
          ivm::compat::MakeOrigin(isolate, name, o.line_offset, o.column_offset);
      v8::ScriptCompiler::Source src(source, origin);
      v8::Local<v8::UnboundScript> script;
      if (!v8::ScriptCompiler::CompileUnboundScript(isolate, &src).ToLocal(&script)) {
        return holder.Fail(context, try_catch, call);
      }
      record->script.Reset(isolate, script);
      record->id = holder.NextId();
      holder.Register(record);
      return nullptr;
    });
    if (err) return err;
    auto shell = std::make_unique<ivm_script>();
    shell->holder = iso->holder;
    shell->record = std::move(record);
    *out = shell.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_script_run(ivm_script_t* script, ivm_context_t* ctx,
                                    const ivm_eval_options_t* opts, ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (script == nullptr || ctx == nullptr || out == nullptr) {
      return InvalidArgument("script, context or out is NULL");
    }
    if (script->holder != ctx->holder) {
      return InvalidArgument("The script and the context belong to different isolates");
    }
    if (opts != nullptr && opts->struct_size < sizeof(size_t)) {
      return InvalidArgument("bad struct_size");
    }
    ivm::EvalOptions o = ivm::ReadEvalOptions(opts);
    ivm::IsolateHolder& holder = *ctx->holder;
    ivm::ContextRecord& crec = *ctx->record;
    ivm::ScriptRecord& srec = *script->record;
    return holder.Run(o.timeout_ns, [&](v8::Isolate* isolate, ivm::CallState& call) -> ivm_error_t* {
      if (srec.released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kScriptReleased);
      if (crec.released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kContextReleased);
      v8::Local<v8::Context> context = crec.context.Get(isolate);
      v8::Context::Scope context_scope(context);
      v8::TryCatch try_catch(isolate);
      v8::Local<v8::Script> bound;
      auto it = crec.bound.find(srec.id);
      if (it != crec.bound.end()) {
        bound = it->second.Get(isolate);
      } else {
        bound = srec.script.Get(isolate)->BindToCurrentContext();
        if (crec.bound.size() >= kMaxBoundPerContext) crec.bound.clear();
        crec.bound.emplace(srec.id, v8::Global<v8::Script>(isolate, bound));
      }
      return ivm::CompleteCall(holder, isolate, context, try_catch, call, bound->Run(context),
                               out);
    });
  });
}

IVM_API ivm_error_t* ivm_script_release(ivm_script_t* script) {
  return Guard([&]() -> ivm_error_t* {
    if (script == nullptr) return InvalidArgument("script is NULL");
    script->holder->Release(script->record);
    return nullptr;
  });
}

IVM_API void ivm_script_free(ivm_script_t* script) {
  if (script == nullptr) return;
  try {
    script->holder->Release(script->record);
    delete script;
  } catch (...) {
  }
}

}  // extern "C"
