// module.cc — ES modules: compiled for an isolate, instantiated (linked) in
// one of its contexts, evaluated there (docs/modules.md).
//
// V8 resolves a graph's imports through a plain function pointer with no
// user data, so the instantiating call keeps its Linking on the thread
// (t_linking) for ResolveImport to find. The embedder's resolve function
// runs inside InstantiateModule, isolate locked.
#include "callback.h"
#include "context.h"
#include "copy.h"
#include "module.h"
#include "host_exit.h"
#include "remote.h"

#include <mutex>
#include <unordered_map>
#include <vector>

namespace ivm {

class ModuleRecord final : public Resource {
 public:
  void ResetLocked() override { module.Reset(); }
  v8::Global<v8::Module> module;
  std::vector<std::string> specifiers;   // set once by the compile, then read-only
  std::vector<ImportAttributes> attributes;   // likewise: each request's
  cache::Outcome cache;                  // likewise

  int identity = 0;                      // module->GetIdentityHash(), set by the compile

  // What import.meta gets (ivm_module_set_meta); NULL: nothing.
  std::shared_ptr<const ivm_value> Meta() {
    std::lock_guard<std::mutex> lock(mutex_);
    return meta_;
  }
  void SetMeta(ivm_value_t* meta) {
    std::lock_guard<std::mutex> lock(mutex_);
    meta_ = std::shared_ptr<const ivm_value>(meta, [](const ivm_value* v) {
      ivm_value_free(const_cast<ivm_value*>(v));
    });
  }

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
  std::shared_ptr<const ivm_value> meta_;
};

}  // namespace ivm

namespace {

using ivm::ContextRecord;
using ivm::InvalidArgument;
using ivm::IsolateHolder;
using ivm::ModuleRecord;

constexpr const char* kNotInstantiated = ivm::kModuleNotInstantiated;

// V8's import assertions, [key, value, source offset] x n, as (key, value) pairs.
ivm::ImportAttributes ReadAttributes(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                     v8::Local<v8::FixedArray> assertions) {
  ivm::ImportAttributes out;
  for (int i = 0; i + 1 < assertions->Length(); i += 3) {
    auto& [key, value] = out.emplace_back();
    ivm::compat::AppendWtf8(isolate, assertions->Get(context, i).As<v8::String>(), key);
    ivm::compat::AppendWtf8(isolate, assertions->Get(context, i + 1).As<v8::String>(), value);
  }
  return out;
}

ivm_error_t* CompileModule(const std::shared_ptr<IsolateHolder>& holder_ptr,
                           const ivm::cache::CompileInput& in, ivm_module_t** out) {
  const ivm::SourceOptions& o = in.source;
  std::string_view text = in.code;
  IsolateHolder& holder = *holder_ptr;
  auto record = std::make_shared<ModuleRecord>();
  ivm_error_t* err = holder.Run(0, [&](v8::Isolate* isolate, ivm::CallState& call) -> ivm_error_t* {
    v8::Local<v8::Context> context = holder.CompileContextLocked();
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    ivm_error_t* error = nullptr;
    v8::Local<v8::String> source;
    if (!ivm::NewString(isolate, text.data(), text.size(), &error).ToLocal(&source)) return error;
    v8::Local<v8::Value> name;
    if (!ivm::ScriptName(isolate, o.filename, o.filename_len, "<module>", &error).ToLocal(&name)) {
      return error;
    }
    v8::ScriptCompiler::CompileOptions options;
    v8::ScriptCompiler::Source src(
        source, ivm::compat::MakeModuleOrigin(isolate, name, o.line_offset, o.column_offset),
        ivm::cache::Consume(ivm::cache::kModule, text, in.cache, &record->cache, &options));
    v8::Local<v8::Module> module;
    if (!v8::ScriptCompiler::CompileModule(isolate, &src, options).ToLocal(&module)) {
      return holder.Fail(context, try_catch, call);
    }
    ivm::cache::Finish(ivm::cache::kModule, text, in.cache, src, module->GetUnboundModuleScript(),
                       &record->cache);
    v8::Local<v8::FixedArray> requests = module->GetModuleRequests();
    for (int i = 0; i < requests->Length(); ++i) {
      v8::Local<v8::ModuleRequest> request = requests->Get(context, i).As<v8::ModuleRequest>();
      std::string& specifier = record->specifiers.emplace_back();
      ivm::compat::AppendWtf8(isolate, request->GetSpecifier(), specifier);
      record->attributes.push_back(ReadAttributes(isolate, context, request->GetImportAssertions()));
    }
    record->module.Reset(isolate, module);
    record->identity = module->GetIdentityHash();
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
  ivm::Resolver resolve;
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

// The index of the request (specifier, assertions) among `rec`'s (V8 keeps
// one request per pair); the number of requests if none matches.
size_t RequestIndex(const ModuleRecord& rec, const std::string& specifier,
                    const ivm::ImportAttributes& attributes) {
  for (size_t i = 0; i < rec.specifiers.size(); ++i) {
    if (rec.specifiers[i] == specifier && rec.attributes[i] == attributes) return i;
  }
  return rec.specifiers.size();
}

v8::MaybeLocal<v8::Module> ResolveImport(v8::Local<v8::Context> context,
                                         v8::Local<v8::String> specifier,
                                         v8::Local<v8::FixedArray> import_assertions,
                                         v8::Local<v8::Module> referrer) {
  v8::Isolate* isolate = context->GetIsolate();
  Linking* l = t_linking;
  if (l == nullptr || l->error != nullptr) {
    isolate->ThrowException(v8::Exception::Error(v8::String::Empty(isolate)));
    return {};
  }
  ivm_module_t* from = nullptr;
  const ModuleRecord* from_record = nullptr;
  for (const auto& [handle, record] : l->modules) {
    if (record->module.Get(isolate) == referrer) {
      from = handle;
      from_record = record.get();
      break;
    }
  }
  std::string name;
  ivm::compat::AppendWtf8(isolate, specifier, name);
  ivm_module_t* to = nullptr;
  ivm_error_t* err = nullptr;
  // (the resolver is host code: host_exit.h)
  ivm::CallIntoHost(
      ivm::OnHostExit::kPark,
      [&] {
        if (from == nullptr) {
          err = InvalidArgument("an import of an unknown module");
          return;
        }
        ivm::ImportAttributes attributes = ReadAttributes(isolate, context, import_assertions);
        size_t index = RequestIndex(*from_record, name, attributes);
        err = index == from_record->specifiers.size()
                  ? InvalidArgument("an import the module does not request")
                  : l->resolve(name, index, from, &to);
      },
      [] { throw; });
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
                         const ivm::Resolver& resolve) {
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

// What the compile reported, inline or from a worker.
const std::vector<std::string>& SpecifiersOf(const ivm_module_t* module) {
  return module->remote ? module->remote->specifiers : module->record->specifiers;
}
const std::vector<ivm::ImportAttributes>& AttributesOf(const ivm_module_t* module) {
  return module->remote ? module->remote->attributes : module->record->attributes;
}
const ivm::cache::Outcome& CacheOf(const ivm_module_t* module) {
  return module->remote ? module->remote->cache : module->record->cache;
}

ivm_error_t* CheckInstantiate(ivm_module_t* module, ivm_context_t* ctx) {
  if (module == nullptr || ctx == nullptr) return InvalidArgument("module or context is NULL");
  bool same = module->remote || ctx->remote
                  ? module->remote && ctx->remote && module->remote->object->iso == ctx->remote->iso
                  : module->holder == ctx->holder;
  if (!same) {
    return InvalidArgument("The module and the context belong to different isolates");
  }
  return nullptr;
}

ivm_error_t* InstantiateWith(ivm_module_t* module, ivm_context_t* ctx,
                             const ivm::Resolver& resolve) {
  if (ivm_error_t* err = CheckInstantiate(module, ctx)) return err;
  if (module->remote) return ivm::remote::InstantiateModule(module, ctx, resolve);
  return Instantiate(*module->holder, module, module->record, ctx->record, resolve);
}

ivm_error_t* InstantiateAsyncWith(ivm_module_t* module, ivm_context_t* ctx,
                                  const ivm::Resolver& resolve, ivm_done_fn done,
                                  void* user_data, uint64_t* job_out) {
  if (ivm_error_t* err = CheckInstantiate(module, ctx)) return err;
  if (module->remote) {
    return ivm::remote::InstantiateModuleAsync(module, ctx, resolve, done, user_data, job_out);
  }
  // The job keeps what it needs: the caller may free its handles meanwhile.
  std::shared_ptr<IsolateHolder> holder = module->holder;
  std::shared_ptr<ModuleRecord> rec = module->record;
  std::shared_ptr<ContextRecord> crec = ctx->record;
  std::shared_ptr<ivm::Lease> leases[2] = {module->lease, ctx->lease};
  return ivm::Enqueue(
      holder, IVM_COMPLETION_VALUE, done, user_data,
      [=](ivm_completion_t* c) -> ivm_error_t* {
        (void)leases;
        ivm_error_t* err = Instantiate(*holder, module, rec, crec, resolve);
        if (err == nullptr) c->result.value = ivm_value_new_undefined();
        return err;
      },
      job_out);
}

// Modules with an import.meta, by identity hash, for the isolate's
// HostInitializeImportMetaObject callback (which only gets the v8::Module).
struct MetaEntry {
  v8::Isolate* isolate;
  std::weak_ptr<ModuleRecord> record;
};
std::mutex g_meta_mutex;
std::unordered_multimap<int, MetaEntry>& MetaModules() {
  static auto* m = new std::unordered_multimap<int, MetaEntry>();   // leaked: used at exit
  return *m;
}

void RememberMeta(v8::Isolate* isolate, const std::shared_ptr<ModuleRecord>& record) {
  std::lock_guard<std::mutex> lock(g_meta_mutex);
  auto& all = MetaModules();
  for (auto it = all.begin(); it != all.end();) {   // forget modules that are gone
    it = it->second.record.expired() ? all.erase(it) : std::next(it);
  }
  all.emplace(record->identity, MetaEntry{isolate, record});
}

std::shared_ptr<ModuleRecord> FindMeta(v8::Isolate* isolate, v8::Local<v8::Module> module) {
  std::lock_guard<std::mutex> lock(g_meta_mutex);
  auto range = MetaModules().equal_range(module->GetIdentityHash());
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second.isolate != isolate) continue;
    std::shared_ptr<ModuleRecord> record = it->second.record.lock();
    if (record && !record->released() && record->module.Get(isolate) == module) return record;
  }
  return nullptr;
}

// import.meta's first use: copies the module's meta object's own properties in.
void InitializeMeta(v8::Local<v8::Context> context, v8::Local<v8::Module> module,
                    v8::Local<v8::Object> meta) {
  v8::Isolate* isolate = context->GetIsolate();
  std::shared_ptr<ModuleRecord> record = FindMeta(isolate, module);
  std::shared_ptr<const ivm_value> value = record ? record->Meta() : nullptr;
  auto* holder = static_cast<IsolateHolder*>(isolate->GetData(0));
  if (!value || holder == nullptr) return;
  v8::TryCatch try_catch(isolate);
  ivm::CallState call;   // a copy in the running call, which stays in charge
  v8::Local<v8::Value> fields;
  ivm_error_t* err = ivm::ValueToV8(*holder, isolate, context, call, value.get(), &fields);
  if (err != nullptr || fields.IsEmpty() || !fields->IsObject()) {
    ivm_error_free(err);
    return;
  }
  v8::Local<v8::Array> keys;
  if (!fields.As<v8::Object>()->GetOwnPropertyNames(context).ToLocal(&keys)) return;
  for (uint32_t i = 0; i < keys->Length(); ++i) {
    v8::Local<v8::Value> key, field;
    if (!keys->Get(context, i).ToLocal(&key) ||
        !fields.As<v8::Object>()->Get(context, key).ToLocal(&field) ||
        meta->Set(context, key, field).IsNothing()) {
      return;
    }
  }
}

// The private key of a context's import hook, on its global object.
v8::Local<v8::Private> ImportHookKey(v8::Isolate* isolate) {
  return v8::Private::ForApi(isolate, v8::String::NewFromUtf8Literal(isolate, "ivm:import_hook"));
}

v8::Local<v8::Promise> Rejected(v8::Local<v8::Context> context,
                                v8::Local<v8::Promise::Resolver> resolver,
                                v8::Local<v8::Value> reason) {
  if (resolver->Reject(context, reason).IsNothing()) return {};
  return resolver->GetPromise();
}

// import(): calls the context's hook with (specifier, importer's name), and
// settles the promise with what it gives; without a hook, a TypeError.
v8::MaybeLocal<v8::Promise> DynamicImport(v8::Local<v8::Context> context,
                                          v8::Local<v8::Data> /*host_defined_options*/,
                                          v8::Local<v8::Value> resource_name,
                                          v8::Local<v8::String> specifier,
                                          v8::Local<v8::FixedArray> /*attributes*/) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::Promise::Resolver> resolver;
  if (!v8::Promise::Resolver::New(context).ToLocal(&resolver)) return {};
  v8::Local<v8::Value> hook;
  if (!context->Global()->GetPrivate(context, ImportHookKey(isolate)).ToLocal(&hook) ||
      !hook->IsFunction()) {
    std::string text = "Cannot import '";
    ivm::compat::AppendWtf8(isolate, specifier, text);
    text += "': import() is not enabled in this isolate (no import hook is set)";
    v8::Local<v8::String> message;
    if (!v8::String::NewFromUtf8(isolate, text.data(), v8::NewStringType::kNormal,
                                 static_cast<int>(text.size()))
             .ToLocal(&message)) {
      return {};
    }
    return Rejected(context, resolver, v8::Exception::TypeError(message));
  }
  v8::Local<v8::Value> argv[2] = {
      specifier, resource_name->IsString() ? resource_name
                                           : v8::Local<v8::Value>(v8::String::Empty(isolate))};
  v8::TryCatch try_catch(isolate);
  v8::Local<v8::Value> result;
  if (!hook.As<v8::Function>()->Call(context, v8::Undefined(isolate), 2, argv).ToLocal(&result)) {
    if (!try_catch.CanContinue() || try_catch.HasTerminated()) {
      try_catch.ReThrow();
      return {};
    }
    return Rejected(context, resolver, try_catch.Exception());
  }
  if (resolver->Resolve(context, result).IsNothing()) return {};
  return resolver->GetPromise();
}

}  // namespace

void ivm::InstallModuleHooks(v8::Isolate* isolate) {
  isolate->SetHostImportModuleDynamicallyCallback(DynamicImport);
  isolate->SetHostInitializeImportMetaObjectCallback(InitializeMeta);
  InstallRejectionTracker(isolate);
}

bool ivm::SetImportHook(IsolateHolder& holder, v8::Isolate* isolate,
                        v8::Local<v8::Context> context,
                        const std::shared_ptr<CallbackData>& hook) {
  v8::Local<v8::Function> fn;
  if (!MakeHostFunction(holder, isolate, context, hook, false).ToLocal(&fn)) return false;
  return context->Global()->SetPrivate(context, ImportHookKey(isolate), fn).FromMaybe(false);
}

using ivm::Guard;

namespace {
// The body of the queued twin of a module call that returns a value
// (ivm_module_evaluate_async, ivm_module_namespace_async): checks the call and
// reads its options, then has `remote(o)` send it to the module's worker, or
// queues `call` on the module's isolate: a job that keeps the module's record
// and lease alive until it has run.
using ModuleValueCall = ivm_error_t* (*)(IsolateHolder&, ModuleRecord&, const ivm::CallOptions&,
                                         ivm_value_t**);
template <class Remote>
ivm_error_t* QueueModuleValue(ivm_module_t* module, const ivm_run_options_t* run,
                              const ivm_result_options_t* result, ModuleValueCall call,
                              Remote&& remote, ivm_done_fn done, void* user_data,
                              uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (module == nullptr || done == nullptr) return InvalidArgument("module or done is NULL");
    ivm::CallOptions o;
    if (ivm_error_t* err = ivm::ReadCallOptions(run, result, &o)) return err;
    if (module->remote) return remote(o);
    std::shared_ptr<IsolateHolder> holder = module->holder;
    std::shared_ptr<ModuleRecord> rec = module->record;
    std::shared_ptr<ivm::Lease> lease = module->lease;
    return ivm::Enqueue(
        holder, IVM_COMPLETION_VALUE, done, user_data,
        [=](ivm_completion_t* c) -> ivm_error_t* {
          (void)lease;
          return call(*holder, *rec, o, &c->result.value);
        },
        job_out);
  });
}
}  // namespace

extern "C" {

IVM_API ivm_error_t* ivm_isolate_compile_module(ivm_isolate_t* iso, const char* code,
                                                size_t code_len,
                                                const ivm_source_options_t* source,
                                                const ivm_cache_options_t* cache,
                                                ivm_module_t** out) {
  return ivm::cache::CompileCall(
      iso, out != nullptr, "isolate or out is NULL", code, code_len, source, cache,
      [&](const ivm::cache::CompileInput& in) -> ivm_error_t* {
        if (iso->remote) return ivm::remote::CompileModule(iso->remote, in, out);
        return CompileModule(iso->holder, in, out);
      });
}

IVM_API ivm_error_t* ivm_isolate_compile_module_async(ivm_isolate_t* iso, const char* code,
                                                      size_t code_len,
                                                      const ivm_source_options_t* source,
                                                      const ivm_cache_options_t* cache,
                                                      ivm_done_fn done, void* user_data,
                                                      uint64_t* job_out) {
  return ivm::cache::CompileCall(
      iso, done != nullptr, "isolate or done is NULL", code, code_len, source, cache,
      [&](const ivm::cache::CompileInput& in) -> ivm_error_t* {
        if (iso->remote) {
          return ivm::remote::CompileModuleAsync(iso->remote, in, done, user_data, job_out);
        }
        return ivm::cache::QueueCompile(
            iso->holder, in, IVM_COMPLETION_MODULE, done, user_data, job_out,
            [](const auto& holder, const auto& input, ivm_completion_t* c) {
              return CompileModule(holder, input, &c->result.module);
            });
      });
}

IVM_API ivm_error_t* ivm_module_dependency_count(const ivm_module_t* module, size_t* count_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (count_out == nullptr) return InvalidArgument("count_out is NULL");
    *count_out = SpecifiersOf(module).size();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_dependency_specifier(const ivm_module_t* module, size_t index,
                                                     const char** out, size_t* out_len) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (out == nullptr || out_len == nullptr) return InvalidArgument("out or out_len is NULL");
    const std::vector<std::string>& all = SpecifiersOf(module);
    if (index >= all.size()) return InvalidArgument("index out of range");
    *out = all[index].data();
    *out_len = all[index].size();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_dependency_attribute_count(const ivm_module_t* module,
                                                          size_t index, size_t* count_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (count_out == nullptr) return InvalidArgument("count_out is NULL");
    const std::vector<ivm::ImportAttributes>& all = AttributesOf(module);
    if (index >= all.size()) return InvalidArgument("index out of range");
    *count_out = all[index].size();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_dependency_attribute(const ivm_module_t* module, size_t index,
                                                    size_t attribute, const char** key_out,
                                                    size_t* key_len_out, const char** value_out,
                                                    size_t* value_len_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (!key_out || !key_len_out || !value_out || !value_len_out) {
      return InvalidArgument("an output is NULL");
    }
    const std::vector<ivm::ImportAttributes>& all = AttributesOf(module);
    if (index >= all.size() || attribute >= all[index].size()) {
      return InvalidArgument("index out of range");
    }
    const auto& [key, value] = all[index][attribute];
    *key_out = key.data();
    *key_len_out = key.size();
    *value_out = value.data();
    *value_len_out = value.size();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_instantiate(ivm_module_t* module, ivm_context_t* ctx,
                                            ivm_module_resolve_fn resolve, void* user_data) {
  return Guard([&]() -> ivm_error_t* {
    if (resolve == nullptr) return InvalidArgument("resolve is NULL");
    return InstantiateWith(module, ctx, ivm::Resolver{resolve, nullptr, user_data});
  });
}

IVM_API ivm_error_t* ivm_module_instantiate_v2(ivm_module_t* module, ivm_context_t* ctx,
                                               ivm_module_resolve_request_fn resolve,
                                               void* user_data) {
  return Guard([&]() -> ivm_error_t* {
    if (resolve == nullptr) return InvalidArgument("resolve is NULL");
    return InstantiateWith(module, ctx, ivm::Resolver{nullptr, resolve, user_data});
  });
}

IVM_API ivm_error_t* ivm_module_instantiate_async(ivm_module_t* module, ivm_context_t* ctx,
                                                  ivm_module_resolve_fn resolve,
                                                  void* resolve_data, ivm_done_fn done,
                                                  void* user_data, uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (resolve == nullptr || done == nullptr) return InvalidArgument("resolve or done is NULL");
    return InstantiateAsyncWith(module, ctx, ivm::Resolver{resolve, nullptr, resolve_data}, done,
                                user_data, job_out);
  });
}

IVM_API ivm_error_t* ivm_module_instantiate_v2_async(ivm_module_t* module, ivm_context_t* ctx,
                                                     ivm_module_resolve_request_fn resolve,
                                                     void* resolve_data, ivm_done_fn done,
                                                     void* user_data, uint64_t* job_out) {
  return Guard([&]() -> ivm_error_t* {
    if (resolve == nullptr || done == nullptr) return InvalidArgument("resolve or done is NULL");
    return InstantiateAsyncWith(module, ctx, ivm::Resolver{nullptr, resolve, resolve_data}, done,
                                user_data, job_out);
  });
}

IVM_API ivm_error_t* ivm_module_evaluate(ivm_module_t* module, const ivm_run_options_t* run,
                                         const ivm_result_options_t* result, ivm_value_t** out,
                                         ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (module == nullptr || out == nullptr) return InvalidArgument("module or out is NULL");
    ivm::CallOptions o;
    if (ivm_error_t* err = ivm::ReadCallOptions(run, result, &o)) return err;
    ivm_error_t* err = module->remote ? ivm::remote::EvaluateModule(module, o, out)
                                      : Evaluate(*module->holder, *module->record, o, out);
    if (err == nullptr) ivm::DeliverPrimitive(primitive_out, out);
    return err;
  });
}

IVM_API ivm_error_t* ivm_module_evaluate_async(ivm_module_t* module,
                                               const ivm_run_options_t* run,
                                               const ivm_result_options_t* result,
                                               ivm_done_fn done, void* user_data,
                                               uint64_t* job_out) {
  return QueueModuleValue(module, run, result, Evaluate,
                          [&](const ivm::CallOptions& o) {
                            return ivm::remote::EvaluateModuleAsync(module, o, done, user_data,
                                                                    job_out);
                          },
                          done, user_data, job_out);
}

namespace {
ivm_error_t* Namespace(IsolateHolder& holder, ModuleRecord& rec, const ivm::CallOptions& o,
                       ivm_value_t** out) {
  return RunInModule(holder, rec, 0,
                     [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                         v8::TryCatch& try_catch, ivm::CallState& call,
                         v8::Local<v8::Module> m) -> ivm_error_t* {
    if (m->GetStatus() < v8::Module::kInstantiated) return InvalidArgument(kNotInstantiated);
    return ivm::CompleteCall(holder, isolate, context, try_catch, call, m->GetModuleNamespace(),
                             o.flags, out);
  });
}
}  // namespace

IVM_API ivm_error_t* ivm_module_namespace(ivm_module_t* module, const ivm_result_options_t* result,
                                          ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (module == nullptr || out == nullptr) return InvalidArgument("module or out is NULL");
    ivm::CallOptions o;
    if (ivm_error_t* err = ivm::ReadCallOptions(nullptr, result, &o)) return err;
    if (module->remote) return ivm::remote::ModuleNamespace(module, o, out);
    return Namespace(*module->holder, *module->record, o, out);
  });
}

IVM_API ivm_error_t* ivm_module_namespace_async(ivm_module_t* module,
                                                const ivm_result_options_t* result,
                                                ivm_done_fn done, void* user_data,
                                                uint64_t* job_out) {
  return QueueModuleValue(module, nullptr, result, Namespace,
                          [&](const ivm::CallOptions& o) {
                            return ivm::remote::ModuleNamespaceAsync(module, o, done, user_data,
                                                                     job_out);
                          },
                          done, user_data, job_out);
}

IVM_API ivm_error_t* ivm_module_set_meta(ivm_module_t* module, ivm_value_t* meta) {
  return Guard([&]() -> ivm_error_t* {
    if (module == nullptr || meta == nullptr) {
      ivm_value_free(meta);
      return InvalidArgument("module or meta is NULL");
    }
    if (module->remote) return ivm::remote::SetModuleMeta(module, meta);
    module->record->SetMeta(meta);
    RememberMeta(module->holder->isolate(), module->record);
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_release(ivm_module_t* module) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (module->remote) {
      ivm::remote::ReleaseModule(module);
      return nullptr;
    }
    module->holder->Release(module->record);
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_module_cached_data(const ivm_module_t* module, const char** out,
                                            size_t* out_len) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = CheckModule(module)) return err;
    if (out == nullptr || out_len == nullptr) return InvalidArgument("out or out_len is NULL");
    *out = CacheOf(module).produced.data();
    *out_len = CacheOf(module).produced.size();
    return nullptr;
  });
}

IVM_API int ivm_module_cached_data_rejected(const ivm_module_t* module) {
  return module != nullptr && CacheOf(module).rejected ? 1 : 0;
}

// Its lease releases the module once no queued job needs it.
IVM_API void ivm_module_free(ivm_module_t* module) { ivm::FreeHandle(module); }

}  // extern "C"
