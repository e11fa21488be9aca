// worker_modules.cc — the worker's side of ES modules and code caches
// (wire.h, ops 60-79): compiles with cache options, module instantiation
// from the table of imports the host resolved, evaluation, import.meta and
// the modules' lifetimes. Like worker_ops.cc, it runs the inline ABI's
// _async twins so the channel keeps being read while JavaScript runs.
#include "wire_value.h"
#include "worker_server.h"

#include <map>
#include <memory>
#include <string>
#include <utility>

namespace ivm::worker {

namespace {

// The imports the host resolved for one instantiation: (referrer, request
// index) -> module, by the worker's own handles.
using Table = std::map<std::pair<ivm_module_t*, size_t>, ivm_module_t*>;

ivm_error_t* Resolve(void* user_data, ivm_module_t* referrer, size_t request,
                     ivm_module_t** out) {
  const Table& table = *static_cast<const Table*>(user_data);
  auto it = table.find({referrer, request});
  if (it == table.end()) {
    std::string text = "the host resolved no module for import " + std::to_string(request);
    return ivm_error_new_host("Error", 5, text.data(), text.size(), 0, 0);
  }
  *out = it->second;
  return nullptr;
}

std::string_view Borrowed(const char* p, size_t n) { return std::string_view(p ? p : "", n); }

// Import request `index`'s attributes, borrowed from `m`.
std::vector<std::pair<std::string_view, std::string_view>> Attributes(const ivm_module_t* m,
                                                                      size_t index) {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  size_t n = 0;
  ivm_error_free(ivm_module_dependency_attribute_count(m, index, &n));
  for (size_t i = 0; i < n; ++i) {
    const char *key = nullptr, *value = nullptr;
    size_t key_len = 0, value_len = 0;
    ivm_error_free(ivm_module_dependency_attribute(m, index, i, &key, &key_len, &value,
                                                   &value_len));
    out.emplace_back(Borrowed(key, key_len), Borrowed(value, value_len));
  }
  return out;
}

// A compile's results beyond the specifiers would not fit one frame.
constexpr size_t kRoom = 4096;

}  // namespace

std::string Ops::ModuleCall(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r) {
  bool replies = op != wire::kOpModuleSetMeta && op != wire::kOpModuleRelease &&
                 op != wire::kOpModuleFree;
  if (iso == nullptr) {
    return replies ? ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown isolate") : "";
  }
  switch (op) {
    case wire::kOpCompileModule:
    case wire::kOpCompileScriptCached:
      return CompileCached(id, op, iso, r);
    case wire::kOpModuleInstantiate:
      return Instantiate(id, iso, r);
    case wire::kOpModuleEvaluate:
    case wire::kOpModuleNamespace:
      return Evaluate(id, op, iso, r);
    default:
      return DropModule(op, r);
  }
}

std::string Ops::CompileCached(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r) {
  uint64_t object_id = 0;
  std::string_view code, data;
  wire::WireSource s;
  uint8_t given = 0, produce = 0;
  if (!r.U64(&object_id) || !r.Bytes(&code) || !wire::ReadSource(r, &s) || !r.U8(&given) ||
      !r.Bytes(&data) || !r.U8(&produce) || !r.Done()) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  ivm_source_options_t o = IVM_SOURCE_OPTIONS_INIT;
  wire::ToSourceOptions(s, &o);
  ivm_cache_options_t cache = IVM_CACHE_OPTIONS_INIT;
  cache.data = given != 0 ? (data.data() != nullptr ? data.data() : "") : nullptr;
  cache.data_len = given != 0 ? data.size() : 0;
  cache.flags = produce != 0 ? IVM_CACHE_PRODUCE : 0;
  bool module = op == wire::kOpCompileModule;
  // Records the module or script under the host's id, and answers with what
  // the compile reported.
  Reply reply = [this, id, iso, object_id, module](const ivm_completion_t* c) -> std::string {
    if (c->error != nullptr) return FullReply(id, c->error, iso, nullptr);
    std::vector<std::string_view> specifiers;
    std::vector<std::vector<std::pair<std::string_view, std::string_view>>> attributes;
    const char* p = nullptr;
    size_t n = 0, size = 0;
    ivm_module_t* m = module ? c->result.module : nullptr;
    ivm_script_t* script = module ? nullptr : c->result.script;
    if (m != nullptr) {
      ivm_error_free(ivm_module_dependency_count(m, &n));
      for (size_t i = 0; i < n; ++i) {
        ivm_error_free(ivm_module_dependency_specifier(m, i, &p, &size));
        specifiers.push_back(Borrowed(p, size));
        attributes.push_back(Attributes(m, i));
      }
      ivm_error_free(ivm_module_cached_data(m, &p, &size));
    } else {
      ivm_error_free(ivm_script_cached_data(script, &p, &size));
    }
    std::string_view produced = Borrowed(p, size);
    bool rejected = m != nullptr ? ivm_module_cached_data_rejected(m) != 0
                                 : ivm_script_cached_data_rejected(script) != 0;
    size_t total = produced.size();
    for (std::string_view spec : specifiers) total += spec.size() + 8;
    for (const auto& pairs : attributes) {
      for (const auto& [key, value] : pairs) total += key.size() + value.size() + 8;
    }
    if (total + kRoom > wire::kMaxPayload) {
      ivm_module_free(m);
      ivm_script_free(script);
      return ErrorReply(id, IVM_ERROR_TRANSFER,
                        "the compiled code's imports and cache are too large for one frame");
    }
    std::string out = FullReply(id, nullptr, iso, [&](wire::Writer& w, std::string*) {
      if (module) {
        w.U32(static_cast<uint32_t>(specifiers.size()));
        for (size_t i = 0; i < specifiers.size(); ++i) {
          w.Bytes(specifiers[i]).U32(static_cast<uint32_t>(attributes[i].size()));
          for (const auto& [key, value] : attributes[i]) w.Bytes(key).Bytes(value);
        }
      }
      w.U8(rejected ? 1 : 0).Bytes(produced);
      return true;
    });
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (m != nullptr) modules_[object_id] = m;
    if (script != nullptr) scripts_[object_id] = script;
    return out;
  };
  return SubmitWith(id, iso, std::move(reply), [&](ivm_done_fn done, void* ud, uint64_t* job) {
    if (module) {
      return ivm_isolate_compile_module_async(iso, code.data(), code.size(), &o, &cache, done,
                                              ud, job);
    }
    return ivm_isolate_compile_script_async(iso, code.data(), code.size(), &o, &cache, done, ud,
                                            job);
  });
}

std::string Ops::Instantiate(uint64_t id, ivm_isolate_t* iso, wire::Reader& r) {
  uint64_t module_id = 0, ctx_id = 0;
  uint32_t n = 0;
  if (!r.U64(&module_id) || !r.U64(&ctx_id) || !r.U32(&n)) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  auto table = std::make_shared<Table>();
  ivm_module_t* root = nullptr;
  ivm_context_t* ctx = nullptr;
  {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    auto find = [this](uint64_t key) {
      auto it = modules_.find(key);
      return it == modules_.end() ? nullptr : it->second;
    };
    root = find(module_id);
    auto c = contexts_.find(ctx_id);
    ctx = c == contexts_.end() ? nullptr : c->second;
    bool known = root != nullptr && ctx != nullptr;
    for (uint32_t i = 0; i < n && r.ok(); ++i) {
      uint64_t from = 0, to = 0;
      uint32_t request = 0;
      if (!r.U64(&from) || !r.U32(&request) || !r.U64(&to)) break;
      ivm_module_t* referrer = find(from);
      ivm_module_t* target = find(to);
      known = known && referrer != nullptr && target != nullptr;
      (*table)[{referrer, request}] = target;
    }
    if (!r.Done()) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
    if (!known) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown module or context");
  }
  Reply reply = [id, iso, table](const ivm_completion_t* c) -> std::string {
    if (c->error != nullptr) return FullReply(id, c->error, iso, nullptr);
    ivm_value_free(c->result.value);
    return FullReply(id, nullptr, iso, nullptr);
  };
  return SubmitWith(id, iso, std::move(reply), [&](ivm_done_fn done, void* ud, uint64_t* job) {
    return ivm_module_instantiate_v2_async(root, ctx, Resolve, table.get(), done, ud, job);
  });
}

// EVALUATE and NAMESPACE (which has no timeout): the module's value.
std::string Ops::Evaluate(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r) {
  uint64_t module_id = 0;
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  bool evaluate = op == wire::kOpModuleEvaluate;
  if (!r.U64(&module_id) || (evaluate && !r.U64(&run.timeout_ns)) || !r.U32(&result.flags) ||
      !r.Done()) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  ivm_module_t* module = nullptr;
  {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    auto it = modules_.find(module_id);
    if (it != modules_.end()) module = it->second;
  }
  if (module == nullptr) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown module");
  return SubmitWith(id, iso, nullptr, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    return evaluate ? ivm_module_evaluate_async(module, &run, &result, done, ud, job)
                    : ivm_module_namespace_async(module, &result, done, ud, job);
  });
}

// The no-reply ops on modules.
std::string Ops::DropModule(uint32_t op, wire::Reader& r) {
  uint64_t module_id = 0;
  if (!r.U64(&module_id)) return {};
  std::lock_guard<std::recursive_mutex> lock(mu_);
  auto it = modules_.find(module_id);
  if (it == modules_.end()) return {};
  if (op == wire::kOpModuleSetMeta) {
    ivm_value_t* meta = nullptr;
    if (wire::ReadValue(r, &meta) && r.Done()) {
      ivm_error_free(ivm_module_set_meta(it->second, meta));
    } else {
      ivm_value_free(meta);
    }
  } else if (op == wire::kOpModuleRelease) {
    ivm_error_free(ivm_module_release(it->second));
  } else if (op == wire::kOpModuleFree) {
    ivm_module_free(it->second);
    modules_.erase(it);
  }
  return {};
}

}  // namespace ivm::worker
