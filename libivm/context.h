// context.h — records shared by context.cc and script.cc.
#ifndef IVM_CONTEXT_H
#define IVM_CONTEXT_H

#include "internal.h"

#include <string_view>

namespace ivm {

inline constexpr char kContextReleased[] = "Context has been released";
inline constexpr char kScriptReleased[] = "Script has been released";

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

// Code evaluated in a context, compiled and bound to it, with its origin.
struct CachedEval {
  std::string filename;   // empty with has_filename == false: the default name
  bool has_filename = false;
  int32_t line_offset = 0;
  int32_t column_offset = 0;
  v8::Global<v8::Script> script;
};

class ContextRecord final : public Resource {
 public:
  void ResetLocked() override;
  v8::Global<v8::Context> context;
  uint64_t id = 0;
  // Scripts already bound to this context, by script id (isolate locked).
  std::unordered_map<uint64_t, v8::Global<v8::Script>> bound;
  // Recently evaluated code, by source text (isolate locked). Evaluating the
  // same code again runs the bound script directly, skipping the source
  // string, V8's compilation-cache lookup and the binding.
  std::unordered_map<std::string, CachedEval, StringHash, std::equal_to<>> evals;
};

class ScriptRecord final : public Resource {
 public:
  void ResetLocked() override { script.Reset(); }
  v8::Global<v8::UnboundScript> script;
  uint64_t id = 0;
};

struct EvalOptions {
  uint64_t timeout_ns = 0;
  const char* filename = nullptr;
  size_t filename_len = 0;
  int32_t line_offset = 0;
  int32_t column_offset = 0;
};
EvalOptions ReadEvalOptions(const ivm_eval_options_t* opts);

// A script name for an origin: `name` (WTF-8) or, if NULL, `fallback`.
v8::MaybeLocal<v8::Value> ScriptName(v8::Isolate* isolate, const char* name, size_t len,
                                     const char* fallback, ivm_error_t** error);

// Ends a call that ran JavaScript: settles tasks and microtasks and turns the
// result (or the failure) into the call's outcome.
ivm_error_t* CompleteCall(IsolateHolder& holder, v8::Isolate* isolate,
                          v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                          const CallState& call, v8::MaybeLocal<v8::Value> result,
                          ivm_value_t** out);

ivm_error_t* Eval(IsolateHolder& holder, ContextRecord& record, const char* code,
                  size_t code_len, const EvalOptions& o, ivm_value_t** out);

}  // namespace ivm

struct ivm_context : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::ContextRecord> record;
};

struct ivm_script : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::ScriptRecord> record;
};

#endif  // IVM_CONTEXT_H
