// remote_modules.cc — ES modules and code caches of worker-hosted isolates,
// host side (docs/process.md, "Modules and code caches"). A module's handle
// keeps what its compile reported (specifiers, cache outcome) and whether it
// is linked, so that the host walks an import graph itself: the embedder's
// resolve function runs here, never called back from the worker, and the
// worker gets the resolved table with the INSTANTIATE call. Code caches are
// bytes in CALL and REPLY frames; the worker's inline libivm checks them.
#include "module.h"
#include "remote.h"
#include "wire_value.h"
#include "worker_process.h"

#include <unordered_set>
#include <utility>

namespace ivm::remote {

namespace {


// A compile CALL: u64 object, bytes code, source, cache (u8 given, bytes
// data, u8 produce).
std::string CompileFrame(RemoteIsolate& iso, uint32_t op, uint64_t object_id,
                         const cache::CompileInput& in, uint64_t* id) {
  wire::Writer w = iso.Begin(op, id);
  w.U64(object_id).Bytes(in.code);
  wire::WriteSource(w, ToWire(in.source));
  w.U8(in.cache.given ? 1 : 0).Bytes(in.cache.given ? in.cache.data : std::string_view());
  w.U8(in.cache.produce ? 1 : 0);
  return w.Finish();
}

// A compile's cache results: u8 rejected, bytes produced (empty unless asked for).
bool ReadCache(wire::Reader& r, const cache::Options& asked, cache::Outcome* out) {
  uint8_t rejected = 0;
  std::string_view produced;
  if (!r.U8(&rejected) || rejected > 1 || !r.Bytes(&produced)) return false;
  if ((rejected != 0 && !asked.given) || (!produced.empty() && !asked.produce)) return false;
  out->rejected = rejected != 0;
  out->produced.assign(produced);
  return true;
}

Parse ModuleResult(std::shared_ptr<RemoteIsolate> iso, uint64_t module_id,
                   const cache::Options& asked) {
  bool given = asked.given, produce = asked.produce;
  return [iso, module_id, given, produce](wire::Reader& r, ivm_completion_t* c) -> ivm_error_t* {
    // The worker has the module from here on: the record frees it there.
    auto rec = std::make_shared<RemoteModule>(
        std::make_shared<RemoteObject>(iso, module_id, wire::kOpModuleFree));
    cache::Options asked;
    asked.given = given;
    asked.produce = produce;
    uint32_t n = 0;
    bool ok = r.U32(&n);
    for (uint32_t i = 0; ok && i < n; ++i) {
      std::string_view specifier, key, value;
      uint32_t count = 0;
      ok = r.Bytes(&specifier) && r.U32(&count);
      if (ok) rec->specifiers.emplace_back(specifier);
      ImportAttributes& attributes = rec->attributes.emplace_back();
      for (uint32_t j = 0; ok && j < count; ++j) {
        ok = r.Bytes(&key) && r.Bytes(&value);
        if (ok) attributes.emplace_back(key, value);
      }
    }
    if (!ok || !ReadCache(r, asked, &rec->cache) || !r.Done()) {
      return iso->worker().BadReply("a malformed module in a REPLY");
    }
    auto shell = std::make_unique<ivm_module>();
    shell->remote = std::move(rec);
    c->result.module = shell.release();
    return nullptr;
  };
}

Parse ScriptResult(std::shared_ptr<RemoteIsolate> iso, uint64_t script_id,
                   const cache::Options& asked) {
  bool given = asked.given, produce = asked.produce;
  return [iso, script_id, given, produce](wire::Reader& r, ivm_completion_t* c) -> ivm_error_t* {
    auto shell = std::make_unique<ivm_script>();
    shell->remote = std::make_shared<RemoteObject>(iso, script_id, wire::kOpScriptFree);
    cache::Options asked;
    asked.given = given;
    asked.produce = produce;
    if (!ReadCache(r, asked, &shell->remote_cache) || !r.Done()) {
      return iso->worker().BadReply("a malformed script in a REPLY");
    }
    c->result.script = shell.release();
    return nullptr;
  };
}

// Reports `error` as the outcome of a new job (the async twins report
// failures found before anything was sent the same way as later ones).
ivm_error_t* FailJob(ivm_completion_kind_t kind, ivm_done_fn done, void* user_data,
                     uint64_t* job_out, ivm_error_t* error) {
  Job job(kind, done, user_data, nullptr);
  if (job_out) *job_out = job.id();
  job.Fail(error);
  return nullptr;
}

// ---- Instantiation: the graph, walked in the host. ----

// What an INSTANTIATE call sends: every import of the modules V8 will link,
// resolved; and the modules, kept alive (in the worker too) until its REPLY.
struct Graph {
  struct Link {
    uint64_t referrer;
    uint32_t request;   // the index of the import request in the referrer
    uint64_t module;
  };
  std::vector<Link> links;
  std::vector<std::shared_ptr<RemoteModule>> modules;
};

// As module.cc's CheckLinkable, for a module the resolver gave.
ivm_error_t* CheckLinkable(const RemoteModule& root, uint64_t ctx_id, const ivm_module_t* to) {
  if (to == nullptr) return InvalidArgument("the resolver gave no module");
  if (!to->remote || to->remote->object->iso != root.object->iso) {
    return InvalidArgument("the resolver gave a module of another isolate");
  }
  if (to->remote->released.load()) return MakeError(IVM_ERROR_DISPOSED, kModuleReleased);
  uint64_t bound = to->remote->context.load();
  if (bound != 0 && bound != ctx_id) {
    return InvalidArgument("the resolver gave a module instantiated in another context");
  }
  return nullptr;
}

// Walks the graph below `root` depth first, in the order V8 does: each
// module's import requests are resolved, then its dependencies are visited.
// Modules linked before are not entered (V8 asks nothing of them).
ivm_error_t* Walk(ivm_module_t* root, uint64_t ctx_id, const Resolver& resolve, Graph* g) {
  struct Visit {
    std::vector<ivm_module_t*> deps;
    size_t next = 0;
  };
  std::vector<Visit> stack;
  std::unordered_set<const RemoteModule*> seen{root->remote.get()};
  g->modules.push_back(root->remote);
  auto enter = [&](ivm_module_t* module) -> ivm_error_t* {
    Visit v;
    const std::vector<std::string>& specifiers = module->remote->specifiers;
    for (size_t i = 0; i < specifiers.size(); ++i) {   // V8 keeps no duplicate request
      ivm_module_t* to = nullptr;
      ivm_error_t* err = resolve(specifiers[i], i, module, &to);
      if (err == nullptr) err = CheckLinkable(*root->remote, ctx_id, to);
      if (err != nullptr) return err;
      g->links.push_back(
          {module->remote->object->id, static_cast<uint32_t>(i), to->remote->object->id});
      v.deps.push_back(to);
    }
    stack.push_back(std::move(v));
    return nullptr;
  };
  if (ivm_error_t* err = enter(root)) return err;
  while (!stack.empty()) {
    Visit& top = stack.back();
    if (top.next == top.deps.size()) {
      stack.pop_back();
      continue;
    }
    ivm_module_t* dep = top.deps[top.next++];
    if (!seen.insert(dep->remote.get()).second) continue;
    g->modules.push_back(dep->remote);
    if (dep->remote->context.load() != 0) continue;
    if (ivm_error_t* err = enter(dep)) return err;
  }
  return nullptr;
}

// Checks the call, walks the graph and builds the INSTANTIATE frame.
ivm_error_t* PrepareInstantiate(ivm_module_t* module, ivm_context_t* ctx,
                                const Resolver& resolve, const std::shared_ptr<Graph>& g,
                                uint64_t* id,
                                std::string* frame) {
  RemoteModule& rec = *module->remote;
  RemoteIsolate& iso = *rec.object->iso;
  if (ivm_error_t* err = Refuse(iso)) return err;
  if (rec.released.load()) return MakeError(IVM_ERROR_DISPOSED, kModuleReleased);
  if (rec.context.load() != 0) return InvalidArgument("The module is already instantiated");
  if (ivm_error_t* err = Walk(module, ctx->remote->id, resolve, g.get())) return err;
  wire::Writer w = iso.Begin(wire::kOpModuleInstantiate, id);
  w.U64(rec.object->id).U64(ctx->remote->id).U32(static_cast<uint32_t>(g->links.size()));
  for (const Graph::Link& link : g->links) {
    w.U64(link.referrer).U32(link.request).U64(link.module);
  }
  *frame = w.Finish();
  return nullptr;
}

// Once linked, the graph's modules belong to the context.
Parse Linked(std::shared_ptr<Graph> g, std::shared_ptr<RemoteObject> ctx) {
  return [g, ctx](wire::Reader& r, ivm_completion_t* c) -> ivm_error_t* {
    if (!r.Done()) return ctx->iso->worker().BadReply("a REPLY with unexpected results");
    for (const auto& module : g->modules) {
      uint64_t none = 0;
      module->context.compare_exchange_strong(none, ctx->id);
    }
    c->result.value = ivm_value_new_undefined();
    return nullptr;
  };
}

std::string EvaluateFrame(RemoteIsolate& iso, const RemoteModule& rec, const CallOptions& call,
                          uint64_t* id) {
  return iso.Begin(wire::kOpModuleEvaluate, id)
      .U64(rec.object->id)
      .U64(call.timeout_ns)
      .U32(call.flags)
      .Finish();
}

}  // namespace

ivm_error_t* CompileModule(const std::shared_ptr<RemoteIsolate>& iso,
                           const cache::CompileInput& in, ivm_module_t** out) {
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id, module_id = iso->worker().NextId();
  std::string frame = CompileFrame(*iso, wire::kOpCompileModule, module_id, in, &id);
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, 0, ModuleResult(iso, module_id, in.cache), &c);
  if (err == nullptr) *out = c.result.module;
  return err;
}

ivm_error_t* CompileModuleAsync(const std::shared_ptr<RemoteIsolate>& iso,
                                const cache::CompileInput& in, ivm_done_fn done,
                                void* user_data, uint64_t* job_out) {
  uint64_t id, module_id = iso->worker().NextId();
  std::string frame = CompileFrame(*iso, wire::kOpCompileModule, module_id, in, &id);
  return Async(iso, id, frame, 0, IVM_COMPLETION_MODULE, done, user_data, job_out,
               ModuleResult(iso, module_id, in.cache));
}

ivm_error_t* CompileScriptCached(const std::shared_ptr<RemoteIsolate>& iso,
                                 const cache::CompileInput& in, ivm_script_t** out) {
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id, script_id = iso->worker().NextId();
  std::string frame = CompileFrame(*iso, wire::kOpCompileScriptCached, script_id, in, &id);
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, 0, ScriptResult(iso, script_id, in.cache), &c);
  if (err == nullptr) *out = c.result.script;
  return err;
}

ivm_error_t* CompileScriptCachedAsync(const std::shared_ptr<RemoteIsolate>& iso,
                                      const cache::CompileInput& in, ivm_done_fn done,
                                      void* user_data, uint64_t* job_out) {
  uint64_t id, script_id = iso->worker().NextId();
  std::string frame = CompileFrame(*iso, wire::kOpCompileScriptCached, script_id, in, &id);
  return Async(iso, id, frame, 0, IVM_COMPLETION_SCRIPT, done, user_data, job_out,
               ScriptResult(iso, script_id, in.cache));
}

ivm_error_t* InstantiateModule(ivm_module_t* module, ivm_context_t* ctx,
                               const Resolver& resolve) {
  auto g = std::make_shared<Graph>();
  uint64_t id = 0;
  std::string frame;
  if (ivm_error_t* err = PrepareInstantiate(module, ctx, resolve, g, &id, &frame)) {
    return err;
  }
  ivm_completion_t c{};
  ivm_error_t* err =
      Sync(*module->remote->object->iso, id, frame, 0, Linked(g, ctx->remote), &c);
  ivm_value_free(c.result.value);
  return err;
}

ivm_error_t* InstantiateModuleAsync(ivm_module_t* module, ivm_context_t* ctx,
                                    const Resolver& resolve, ivm_done_fn done, void* user_data,
                                    uint64_t* job_out) {
  auto g = std::make_shared<Graph>();
  uint64_t id = 0;
  std::string frame;
  if (ivm_error_t* err = PrepareInstantiate(module, ctx, resolve, g, &id, &frame)) {
    return FailJob(IVM_COMPLETION_VALUE, done, user_data, job_out, err);
  }
  return Async(module->remote->object->iso, id, frame, 0, IVM_COMPLETION_VALUE, done, user_data,
               job_out, Linked(g, ctx->remote));
}

ivm_error_t* EvaluateModule(ivm_module_t* module, const CallOptions& call, ivm_value_t** out) {
  const std::shared_ptr<RemoteIsolate>& iso = module->remote->object->iso;
  if (ivm_error_t* err = CheckResultFlags(call.flags)) return err;
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id;
  std::string frame = EvaluateFrame(*iso, *module->remote, call, &id);
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, call.timeout_ns, ValueResult(iso), &c);
  if (err == nullptr) *out = c.result.value;
  return err;
}

ivm_error_t* EvaluateModuleAsync(ivm_module_t* module, const CallOptions& call,
                                 ivm_done_fn done, void* user_data, uint64_t* job_out) {
  std::shared_ptr<RemoteIsolate> iso = module->remote->object->iso;
  if (ivm_error_t* err = CheckResultFlags(call.flags)) return err;
  uint64_t id;
  std::string frame = EvaluateFrame(*iso, *module->remote, call, &id);
  // The module stays alive in the worker until the job ends.
  std::shared_ptr<RemoteModule> keep = module->remote;
  Parse parse = ValueResult(iso);
  return Async(iso, id, frame, call.timeout_ns, IVM_COMPLETION_VALUE, done, user_data, job_out,
               [keep, parse](wire::Reader& r, ivm_completion_t* c) { return parse(r, c); });
}

namespace {
// The checks of a namespace request, then its CALL frame.
ivm_error_t* NamespaceFrame(ivm_module_t* module, const CallOptions& call, uint64_t* id,
                            std::string* frame) {
  RemoteModule& rec = *module->remote;
  if (rec.released.load()) return MakeError(IVM_ERROR_DISPOSED, kModuleReleased);
  if (rec.context.load() == 0) return InvalidArgument(kModuleNotInstantiated);
  if (ivm_error_t* err = Refuse(*rec.object->iso)) return err;
  *frame = rec.object->iso->Begin(wire::kOpModuleNamespace, id)
               .U64(rec.object->id)
               .U32(call.flags)
               .Finish();
  return nullptr;
}
}  // namespace

ivm_error_t* ModuleNamespace(ivm_module_t* module, const CallOptions& call, ivm_value_t** out) {
  uint64_t id = 0;
  std::string frame;
  if (ivm_error_t* err = NamespaceFrame(module, call, &id, &frame)) return err;
  const std::shared_ptr<RemoteIsolate>& iso = module->remote->object->iso;
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, 0, ValueResult(iso), &c);
  if (err == nullptr) *out = c.result.value;
  return err;
}

ivm_error_t* ModuleNamespaceAsync(ivm_module_t* module, const CallOptions& call, ivm_done_fn done,
                                  void* user_data, uint64_t* job_out) {
  uint64_t id = 0;
  std::string frame;
  if (ivm_error_t* err = NamespaceFrame(module, call, &id, &frame)) return err;
  std::shared_ptr<RemoteIsolate> iso = module->remote->object->iso;
  std::shared_ptr<RemoteModule> keep = module->remote;   // alive in the worker until the job ends
  Parse parse = ValueResult(iso);
  return Async(iso, id, frame, 0, IVM_COMPLETION_VALUE, done, user_data, job_out,
               [keep, parse](wire::Reader& r, ivm_completion_t* c) { return parse(r, c); });
}

ivm_error_t* SetModuleMeta(ivm_module_t* module, ivm_value_t* meta) {
  std::unique_ptr<ivm_value_t, void (*)(ivm_value_t*)> owned(meta, ivm_value_free);
  RemoteObject& object = *module->remote->object;
  uint64_t id;
  wire::Writer w = object.iso->Begin(wire::kOpModuleSetMeta, &id);
  w.U64(object.id);
  std::string why;
  if (!wire::WriteValue(w, meta, &why)) return MakeError(IVM_ERROR_TRANSFER, "meta: " + why);
  std::string frame = w.Finish();
  if (frame.empty()) return MakeError(IVM_ERROR_TRANSFER, "meta is too large for one frame");
  object.iso->worker().Post(frame);
  return nullptr;
}

void ReleaseModule(ivm_module_t* module) {
  module->remote->released.store(true);
  Release(*module->remote->object, wire::kOpModuleRelease);
}

}  // namespace ivm::remote
