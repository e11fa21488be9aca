// module.cc — ES modules: compiled for an isolate, instantiated (linked) in
// one of its contexts, evaluated there (docs/modules.md).
//
// V8 resolves a graph's imports through a plain function pointer with no
// user data, so the instantiating call keeps its Linking on the thread
// (t_linking) for ResolveImport to find. The embedder's resolve function
// runs inside InstantiateModule, isolate locked.
#include "context.h"
#include "remote.h"

#include <mutex>
#include <vector>

namespace ivm {

inline constexpr char kModuleReleased[] = "Module has been released";

class ModuleRecord final : public Resource {
 public:
  void ResetLocked() override { module.Reset(); }
  v8::Global<v8::Module> module;
  std::vector<std::string> specifiers;   // set once by the compile, then read-only

  // The context it was instantiated in; NULL before.
  std::shared_ptr<ContextRecord> Context() {
    std::lock_guard<std::mutex> lock(mutex_);
    return context_;
  }
  void SetContext(const std::shared_ptr<ContextRecord>& context) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!context_) context_ = context;
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<ContextRecord> context_;
};

}  // namespace ivm

struct ivm_module : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::ModuleRecord> record;
  std::shared_ptr<ivm::Lease> lease;
};

namespace {

using ivm::ContextRecord;
using ivm::InvalidArgument;
using ivm::IsolateHolder;
using ivm::ModuleRecord;

constexpr char kNotInstantiated[] = "The module has not been instantiated";

ivm_error_t* CompileModule(const std::shared_ptr<IsolateHolder>& holder_ptr, const char* code,
                           size_t code_len, const ivm::SourceOptions& o, ivm_module_t** out) {
  IsolateHolder& holder = *holder_ptr;
  auto record = std::make_shared<ModuleRecord>();
  ivm_error_t* err = holder.Run(0, [&](v8::Isolate* isolate, ivm::CallState& call) -> ivm_error_t* {
    v8::Local<v8::Context> context = holder.CompileContextLocked();
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    ivm_error_t* error = nullptr;
    v8::Local<v8::String> source;
    if (!ivm::NewString(isolate, code, code_len, &error).ToLocal(&source)) return error;
    v8::Local<v8::Value> name;
    if (!ivm::ScriptName(isolate, o.filename, o.filename_len, "<module>", &error).ToLocal(&name)) {
      return error;
    }
    v8::ScriptCompiler::Source src(
        source, ivm::compat::MakeModuleOrigin(isolate, name, o.line_offset, o.column_offset));
    v8::Local<v8::Module> module;
    if (!v8::ScriptCompiler::CompileModule(isolate, &src).ToLocal(&module)) {
      return holder.Fail(context, try_catch, call);
    }
    v8::Local<v8::FixedArray> requests = module->GetModuleRequests();
    for (int i = 0; i < requests->Length(); ++i) {
      v8::Local<v8::ModuleRequest> request = requests->Get(context, i).As<v8::ModuleRequest>();
      std::string& specifier = record->specifiers.emplace_back();
      ivm::compat::AppendWtf8(isolate, request->GetSpecifier(), specifier);
    }
    record->module.Reset(isolate, module);
    holder.Register(record);
    return nullptr;
  });
  if (err) return err;
  auto shell = std::make_unique<ivm_module>();
  ivm::Share(*shell, holder_ptr, std::move(record));
  *out = shell.release();
  return nullptr;
}

// One instantiation in progress on this thread.
struct Linking {
  ivm_module_resolve_fn resolve = nullptr;
  void* user_data = nullptr;
  IsolateHolder* holder = nullptr;
  std::shared_ptr<ContextRecord> context;
  // The root and every module resolved: the handle the embedder knows it by
  // (never read: the root's may be freed while an async job runs) and its record.
  std::vector<std::pair<ivm_module_t*, std::shared_ptr<ModuleRecord>>> modules;
  ivm_error_t* error = nullptr;         // the first failure, if any
};
thread_local Linking* t_linking = nullptr;

// Whether `module` may be linked into `l`'s graph (NULL if so).
ivm_error_t* CheckLinkable(const Linking& l, ivm_module_t* module) {
  if (module == nullptr) return InvalidArgument("the resolver gave no module");
  if (module->holder.get() != l.holder) {
    return InvalidArgument("the resolver gave a module of another isolate");
  }
  if (module->record->released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kModuleReleased);
  std::shared_ptr<ContextRecord> bound = module->record->Context();
  if (bound && bound != l.context) {
    return InvalidArgument("the resolver gave a module instantiated in another context");
  }
  return nullptr;
}

v8::MaybeLocal<v8::Module> ResolveImport(v8::Local<v8::Context> context,
                                         v8::Local<v8::String> specifier,
                                         v8::Local<v8::FixedArray> /*import_assertions*/,
                                         v8::Local<v8::Module> referrer) {
  v8::Isolate* isolate = context->GetIsolate();
  Linking* l = t_linking;
  if (l == nullptr || l->error != nullptr) {
    isolate->ThrowException(v8::Exception::Error(v8::String::Empty(isolate)));
    return {};
  }
  ivm_module_t* from = nullptr;
  for (const auto& [handle, record] : l->modules) {
    if (record->module.Get(isolate) == referrer) {
      from = handle;
      break;
    }
  }
  std::string name;
  ivm::compat::AppendWtf8(isolate, specifier, name);
  ivm_module_t* to = nullptr;
  ivm_error_t* err = from == nullptr ? InvalidArgument("an import of an unknown module")
                                     : l->resolve(l->user_data, name.data(), name.size(), from, &to);
  if (err == nullptr) err = CheckLinkable(*l, to);
  if (err != nullptr) {
    l->error = err;
    isolate->ThrowException(v8::Exception::Error(v8::String::Empty(isolate)));
    return {};
  }
  bool known = false;
  for (const auto& linked : l->modules) known = known || linked.second == to->record;
  if (!known) l->modules.emplace_back(to, to->record);
  return to->record->module.Get(isolate);
}

// `module` names the root for `resolve` only; `rec` is its record.
ivm_error_t* Instantiate(IsolateHolder& holder, ivm_module_t* module,
                         const std::shared_ptr<ModuleRecord>& rec_ptr,
                         const std::shared_ptr<ContextRecord>& crec,
                         ivm_module_resolve_fn resolve, void* user_data) {
  ModuleRecord& rec = *rec_ptr;
  return ivm::RunInContext(holder, 0, *crec, ivm::kContextReleased,
                           [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                               v8::TryCatch& try_catch, ivm::CallState& call) -> ivm_error_t* {
    if (rec.released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kModuleReleased);
    v8::Local<v8::Module> m = rec.module.Get(isolate);
    if (rec.Context() || m->GetStatus() != v8::Module::kUninstantiated) {
      return InvalidArgument("The module is already instantiated");
    }
    Linking l;
    l.resolve = resolve;
    l.user_data = user_data;
    l.holder = &holder;
    l.context = crec;
    l.modules.emplace_back(module, rec_ptr);
    Linking* outer = t_linking;
    t_linking = &l;
    v8::Maybe<bool> ok = m->InstantiateModule(context, ResolveImport);
    t_linking = outer;
    if (l.error != nullptr) return l.error;
    if (ok.IsNothing()) return holder.Fail(context, try_catch, call);
    for (const auto& linked : l.modules) linked.second->SetContext(crec);
    return nullptr;
  });
}

// Runs `body(isolate, context, try_catch, call, module)` in the context an
// instantiated module belongs to.
template <class F>
ivm_error_t* RunInModule(IsolateHolder& holder, ModuleRecord& rec, uint64_t timeout_ns,
                         F&& body) {
  if (rec.released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kModuleReleased);
  std::shared_ptr<ContextRecord> crec = rec.Context();
  if (!crec) return InvalidArgument(kNotInstantiated);
  return ivm::RunInContext(holder, timeout_ns, *crec, ivm::kContextReleased,
                           [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                               v8::TryCatch& try_catch, ivm::CallState& call) -> ivm_error_t* {
    if (rec.released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kModuleReleased);
    return body(isolate, context, try_catch, call, rec.module.Get(isolate));
  });
}

ivm_error_t* Evaluate(IsolateHolder& holder, ModuleRecord& rec, const ivm::CallOptions& o,
                      ivm_value_t** out) {
  return RunInModule(holder, rec, o.timeout_ns,
                     [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                         v8::TryCatch& try_catch, ivm::CallState& call,
                         v8::Local<v8::Module> m) -> ivm_error_t* {
    return ivm::CompleteCall(holder, isolate, context, try_catch, call, m->Evaluate(context),
                             o.flags, out);
  });
}

ivm_error_t* CheckModule(const ivm_module_t* module) {
  return module == nullptr ? InvalidArgument("module is NULL") : nullptr;
}

ivm_error_t* CheckInstantiate(ivm_module_t* module, ivm_context_t* ctx) {
  if (module == nullptr || ctx == nullptr) return InvalidArgument("module or context is NULL");
  if (module->holder != ctx->holder) {
    return InvalidArgument("The module and the context belong to different isolates");
  }
  return nullptr;
}

// import() in an isolate without an import hook: a rejection that says so.
v8::MaybeLocal<v8::Promise> RefuseDynamicImport(v8::Local<v8::Context> context,
                                                v8::Local<v8::Data> /*host_defined_options*/,
                                                v8::Local<v8::Value> /*resource_name*/,
                                                v8::Local<v8::String> specifier,
                                                v8::Local<v8::FixedArray> /*attributes*/) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::Promise::Resolver> resolver;
  if (!v8::Promise::Resolver::New(context).ToLocal(&resolver)) return {};
  std::string text = "Cannot import '";
  ivm::compat::AppendWtf8(isolate, specifier, text);
  text += "': import() is not enabled in this isolate (no import hook is set)";
  v8::Local<v8::String> message;
  if (!v8::String::NewFromUtf8(isolate, text.data(), v8::NewStringType::kNormal,
                               static_cast<int>(text.size()))
           .ToLocal(&message)) {
    return {};
  }
  if (resolver->Reject(context, v8::Exception::TypeError(message)).IsNothing()) return {};
  return resolver->GetPromise();
}

}  // namespace

void ivm::InstallModuleHooks(v8::Isolate* isolate) {
  isolate->SetHostImportModuleDynamicallyCallback(RefuseDynamicImport);
}

using ivm::Guard;

extern "C" {

IVM_API ivm_error_t* ivm_isolate_compile_module(ivm_isolate_t* iso, const char* code,
                                                size_t code_len,
                                                const ivm_source_options_t* source,
                                                ivm_module_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || out == nullptr) return InvalidArgument("isolate or out is NULL");
    if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
    ivm::SourceOptions o;
    if (ivm_error_t* err = ivm::ReadSourceOptions(source, &o)) return err;
    if (iso->remote) return ivm::remote::RefuseModules();
    return CompileModule(iso->holder, code ? code : "", code_len, o, out);
  });
}

IVM_API ivm_error_t* ivm_isolate_compile_module_async(ivm_isolate_t* iso, const char* code,
                                                      size_t code_len,
                                                      const ivm_source_options_t* source,
                                                      ivm_done_fn done, void* user_data,
                                                      uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || done == nullptr) return InvalidArgument("isolate or done is NULL");
    if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
    ivm::SourceOptions o;
    if (ivm_error_t* err = ivm::ReadSourceOptions(source, &o)) return err;
    if (iso->remote) return ivm::remote::RefuseModules();
    o.Own();
    auto text = std::make_shared<std::string>(code ? code : "", code_len);
    std::shared_ptr<IsolateHolder> holder = iso->holder;
    return ivm::Enqueue(
        holder, IVM_COMPLETION_MODULE, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          return CompileModule(holder, text->data(), text->size(), o, &c->result.module);
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_module_dependency_count(const ivm_module_t* module, size_t* count_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (count_out == nullptr) return InvalidArgument("count_out is NULL");
    *count_out = module->record->specifiers.size();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_dependency_specifier(const ivm_module_t* module, size_t index,
                                                     const char** out, size_t* out_len) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (out == nullptr || out_len == nullptr) return InvalidArgument("out or out_len is NULL");
    const std::vector<std::string>& all = module->record->specifiers;
    if (index >= all.size()) return InvalidArgument("index out of range");
    *out = all[index].data();
    *out_len = all[index].size();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_instantiate(ivm_module_t* module, ivm_context_t* ctx,
                                            ivm_module_resolve_fn resolve, void* user_data) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckInstantiate(module, ctx)) return err;
    if (resolve == nullptr) return InvalidArgument("resolve is NULL");
    return Instantiate(*module->holder, module, module->record, ctx->record, resolve, user_data);
  });
}

IVM_API ivm_error_t* ivm_module_instantiate_async(ivm_module_t* module, ivm_context_t* ctx,
                                                  ivm_module_resolve_fn resolve,
                                                  void* resolve_data, ivm_done_fn done,
                                                  void* user_data, uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckInstantiate(module, ctx)) return err;
    if (resolve == nullptr || done == nullptr) return InvalidArgument("resolve or done is NULL");
    // The job keeps what it needs: the caller may free its handles meanwhile.
    std::shared_ptr<IsolateHolder> holder = module->holder;
    std::shared_ptr<ModuleRecord> rec = module->record;
    std::shared_ptr<ContextRecord> crec = ctx->record;
    std::shared_ptr<ivm::Lease> leases[2] = {module->lease, ctx->lease};
    return ivm::Enqueue(
        holder, IVM_COMPLETION_VALUE, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          (void)leases;
          ivm_error_t* err = Instantiate(*holder, module, rec, crec, resolve, resolve_data);
          if (err == nullptr) c->result.value = ivm_value_new_undefined();
          return err;
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_module_evaluate(ivm_module_t* module, const ivm_run_options_t* run,
                                         const ivm_result_options_t* result, ivm_value_t** out,
                                         ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (module == nullptr || out == nullptr) return InvalidArgument("module or out is NULL");
    ivm::CallOptions o;
    if (ivm_error_t* err = ivm::ReadCallOptions(run, result, &o)) return err;
    ivm_error_t* err = Evaluate(*module->holder, *module->record, o, out);
    if (err == nullptr) ivm::DeliverPrimitive(primitive_out, out);
    return err;
  });
}

IVM_API ivm_error_t* ivm_module_evaluate_async(ivm_module_t* module,
                                               const ivm_run_options_t* run,
                                               const ivm_result_options_t* result,
                                               ivm_done_fn done, void* user_data,
                                               uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (module == nullptr || done == nullptr) return InvalidArgument("module or done is NULL");
    ivm::CallOptions o;
    if (ivm_error_t* err = ivm::ReadCallOptions(run, result, &o)) return err;
    std::shared_ptr<IsolateHolder> holder = module->holder;
    std::shared_ptr<ModuleRecord> rec = module->record;
    std::shared_ptr<ivm::Lease> lease = module->lease;
    return ivm::Enqueue(
        holder, IVM_COMPLETION_VALUE, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          (void)lease;
          return Evaluate(*holder, *rec, o, &c->result.value);
        },
        job_out);
  });
}

IVM_API ivm_error_t* ivm_module_namespace(ivm_module_t* module, const ivm_result_options_t* result,
                                          ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (module == nullptr || out == nullptr) return InvalidArgument("module or out is NULL");
    ivm::CallOptions o;
    if (ivm_error_t* err = ivm::ReadCallOptions(nullptr, result, &o)) return err;
    IsolateHolder& holder = *module->holder;
    return RunInModule(holder, *module->record, 0,
                       [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                           v8::TryCatch& try_catch, ivm::CallState& call,
                           v8::Local<v8::Module> m) -> ivm_error_t* {
      if (m->GetStatus() < v8::Module::kInstantiated) return InvalidArgument(kNotInstantiated);
      return ivm::CompleteCall(holder, isolate, context, try_catch, call,
                               m->GetModuleNamespace(), o.flags, out);
    });
  });
}

IVM_API ivm_error_t* ivm_module_release(ivm_module_t* module) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    module->holder->Release(module->record);
    return nullptr;
  });
}

// Its lease releases the module once no queued job needs it.
IVM_API void ivm_module_free(ivm_module_t* module) { ivm::FreeHandle(module); }

}  // extern "C"
