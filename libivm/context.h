// context.h — records shared by context.cc and script.cc.
#ifndef IVM_CONTEXT_H
#define IVM_CONTEXT_H

#include "internal.h"
#include "code_cache.h"
#include "host.h"
#include "options.h"

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
  // Bound to the context, unless the code must be bound anew for each run.
  v8::Global<v8::Script> script;
  v8::Global<v8::UnboundScript> unbound;
};

// Whether `code` may declare top-level lexical bindings (let, const, class,
// using). Such a script must be bound anew for every run: running one bound
// top-level function twice crashes V8 10.2 in ScriptContextTable::Lookup
// (instead of throwing "already declared"). The check is conservative: any
// occurrence of those words counts.
bool MayDeclareLexically(std::string_view code);

class ContextRecord final : public Resource {
 public:
  void ResetLocked() override;
  v8::Global<v8::Context> context;
  // Scripts already bound to this context, by script id (isolate locked).
  std::unordered_map<uint64_t, v8::Global<v8::Script>> bound;
  // Recently evaluated code, by source text (isolate locked). Evaluating the
  // same code again runs the bound script directly, skipping the source
  // string, V8's compilation-cache lookup and the binding.
  std::unordered_map<std::string, CachedEval, StringHash, std::equal_to<>> evals;
  // Functions compiled by eval_closure, by parameter count and source text.
  std::unordered_map<std::string, v8::Global<v8::Function>> closures;
};

class ScriptRecord final : public Resource {
 public:
  void ResetLocked() override { script.Reset(); }
  v8::Global<v8::UnboundScript> script;
  uint64_t id = 0;
  bool rebind = true;   // MayDeclareLexically(source): no per-context binding cache
  cache::Outcome cache;   // set by the compile, then read-only
};

struct CallbackData;   // callback.h

// What a context is created with (ivm_context_options_t).
struct ContextHooks {
  std::shared_ptr<CallbackData> import_hook;   // NULL: import() rejects
  std::shared_ptr<CallbackData> on_rejection;  // NULL: not tracked
  HostOptions host;                             // host basics (host.h)
};

// module.cc: makes `hook` the function import() calls in `context`.
bool SetImportHook(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                   const std::shared_ptr<CallbackData>& hook);

// rejections.cc: unhandled rejections, reported to the context's hook at the
// end of each call (FlushRejections), except the call's own result promise
// (ForgetRejection).
void InstallRejectionTracker(v8::Isolate* isolate);
bool SetRejectionHook(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                      const std::shared_ptr<CallbackData>& hook);
void ForgetRejection(v8::Isolate* isolate, v8::Local<v8::Context> context,
                     v8::Local<v8::Value> value);
// Returns whether there were any to report (false: it ran nothing).
bool FlushRejections(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                     const CallState& call);

// The argument array of a call into JavaScript (eval_closure, apply).
inline ivm_error_t* CheckArgs(ivm_value_t* const* args, size_t nargs) {
  if (args == nullptr && nargs != 0) return InvalidArgument("args is NULL");
  if (nargs > 65535) return InvalidArgument("too many arguments");
  return nullptr;
}

// A script name for an origin: `name` (WTF-8) or, if NULL, `fallback`.
v8::MaybeLocal<v8::Value> ScriptName(v8::Isolate* isolate, const char* name, size_t len,
                                     const char* fallback, ivm_error_t** error);

// Ends a call that ran JavaScript: settles tasks and microtasks and turns the
// result (or the failure) into the call's outcome.
ivm_error_t* CompleteCall(IsolateHolder& holder, v8::Isolate* isolate,
                          v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                          const CallState& call, v8::MaybeLocal<v8::Value> result,
                          uint32_t flags, ivm_value_t** out);

// promise_wait.cc: waiting for a call's promise. CanPark: whether the call
// may park its job instead of waiting on its thread. Park: parks it (the
// job reports when the promise settles); false if the call was stopped
// before it could. WaitForPromise: waits on this
// thread; NULL once the promise is fulfilled.
bool CanPark(IsolateHolder& holder, const CallState& call);
bool Park(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
          const CallState& call, v8::Local<v8::Promise> promise, uint32_t flags);
ivm_error_t* WaitForPromise(IsolateHolder& holder, v8::Isolate* isolate,
                            v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                            const CallState& call, v8::Local<v8::Promise> promise);

// A call of `holder` inside the context a record keeps (a ContextRecord, a
// ReferenceRecord, a parked promise): once the isolate is locked, DISPOSED
// with `released` if the record was released, else `body(isolate, context,
// try_catch, call)` with the context entered under a TryCatch.
template <class Record, class F>
ivm_error_t* RunInContext(IsolateHolder& holder, uint64_t timeout_ns, const Record& record,
                          const char* released, F&& body) {
  return holder.Run(timeout_ns, [&](v8::Isolate* isolate, CallState& call) -> ivm_error_t* {
    if (record.released()) return MakeError(IVM_ERROR_DISPOSED, released);
    v8::Local<v8::Context> context = record.context.Get(isolate);
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    return body(isolate, context, try_catch, call);
  });
}

// An eval's script: from the context's cache of recent evals, or compiled (and cached).
v8::MaybeLocal<v8::Script> CompileEval(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                       ContextRecord& record, const char* code, size_t len,
                                       const SourceOptions& o, ivm_error_t** error);

ivm_error_t* Eval(IsolateHolder& holder, ContextRecord& record, const char* code,
                  size_t code_len, const SourceOptions& source, const CallOptions& o,
                  ivm_value_t** out);

ivm_error_t* EvalClosure(IsolateHolder& holder, ContextRecord& record, const char* code,
                         size_t code_len, const ivm_value_t* const* args, size_t nargs,
                         const SourceOptions& source, const CallOptions& o, ivm_value_t** out);

}  // namespace ivm

namespace ivm {
// Keeps a record usable while anyone holds it: the handle, and every queued
// job that uses it. When the last holder lets go (the handle was freed and
// the jobs have run), the record is released. An explicit release does not
// wait for this.
struct Lease {
  std::shared_ptr<IsolateHolder> holder;
  std::shared_ptr<Resource> record;
  Lease(std::shared_ptr<IsolateHolder> h, std::shared_ptr<Resource> r)
      : holder(std::move(h)), record(std::move(r)) {}
  ~Lease() {
    try {
      holder->Release(record);
    } catch (...) {
    }
  }
};

// Gives a handle (ivm_context, ivm_script, ReferenceData) its share of a
// record registered with `holder`: the holder, the record and a lease on both.
template <class Handle, class Record>
void Share(Handle& handle, const std::shared_ptr<IsolateHolder>& holder,
           std::shared_ptr<Record> record) {
  handle.holder = holder;
  handle.lease = std::make_shared<Lease>(holder, record);
  handle.record = std::move(record);
}

// The handle of an object in an isolate (ivm_context, ivm_script, ivm_module).
// Inline, `holder`, `record` and `lease` are set (Share); for one of a
// worker-hosted isolate only `remote` is (remote.h).
template <class Record, class Remote>
struct IsolateObject : LiveCounted {
  std::shared_ptr<IsolateHolder> holder;
  std::shared_ptr<Record> record;
  std::shared_ptr<Lease> lease;
  std::shared_ptr<Remote> remote;
};
}  // namespace ivm

struct ivm_context : ivm::IsolateObject<ivm::ContextRecord, ivm::RemoteObject> {};

struct ivm_script : ivm::IsolateObject<ivm::ScriptRecord, ivm::RemoteObject> {
  ivm::cache::Outcome remote_cache;   // a remote script's: set by its compile
};

#endif  // IVM_CONTEXT_H
