// callback.h — host functions called from JavaScript. Nothing here is ABI.
#ifndef IVM_CALLBACK_H
#define IVM_CALLBACK_H

#include "internal.h"

namespace ivm {

// What ivm_callback_new() was given; shared by the handle and every
// JavaScript function made from it. The finalizer runs when the last goes.
struct CallbackData : LiveCounted {
  ivm_host_fn fn = nullptr;
  void* user_data = nullptr;
  void (*finalize)(void*) = nullptr;
  ~CallbackData();
};

// A JavaScript function that calls `data` (isolate locked, `context` entered).
// `counted`: whether it counts in the isolate's reference count (not for the
// hooks a context is created with).
v8::MaybeLocal<v8::Function> MakeHostFunction(IsolateHolder& holder, v8::Isolate* isolate,
                                              v8::Local<v8::Context> context,
                                              const std::shared_ptr<CallbackData>& data,
                                              bool counted = true);

// After host code returned into `call`: true (having freed `err` and `out`) if the
// call has been stopped meanwhile (a nested call ran out of memory, a disposal): the
// caller then returns at once and touches nothing in the isolate.
bool LeftStopped(IsolateHolder& holder, const CallState& call, ivm_error_t*& err,
                 ivm_value_t*& out);
// Throws a host function's error (or aborts, for IVM_HOST_ERROR_ABORT).
void ThrowHostError(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                    ivm_error_t* err);
// An error that crossed from another isolate keeps its whole stack (its own
// frames, the boundary line, the other isolate's frames) in a private field,
// read (without running JavaScript) if it leaves this isolate in turn.
void MarkCrossedStack(v8::Isolate* isolate, v8::Local<v8::Context> context,
                      v8::Local<v8::Object> error, v8::Local<v8::String> stack);
bool ReadCrossedStack(v8::Isolate* isolate, v8::Local<v8::Context> context,
                      v8::Local<v8::Value> exception, std::string* stack);
// The token of a host error thrown into JavaScript, read without running JS.
bool ReadHostToken(v8::Isolate* isolate, v8::Local<v8::Context> context,
                   v8::Local<v8::Value> exception, uint64_t* token);

}  // namespace ivm

// Host callbacks called from a worker's JavaScript (remote_callbacks.cc):
// ivm_call_defer() and the ivm_deferred_* calls forward to these when the
// call or the deferred result is a remote one.
namespace ivm::remote {
struct Invocation;
struct RemoteDeferred;
ivm_error_t* Defer(ivm_call* call, ivm_deferred** out);
ivm_error_t* SettleDeferred(RemoteDeferred& d, ivm_value_t* value, ivm_error_t* error);
bool DeferredSettled(const RemoteDeferred& d);
}  // namespace ivm::remote

struct ivm_callback : ivm::LiveCounted {
  std::shared_ptr<ivm::CallbackData> data;
};

// One call of a host function (stack allocated by the trampoline).
struct ivm_call {
  ivm_call() = default;
  ivm_call(const ivm_call&) = delete;
  ivm_call& operator=(const ivm_call&) = delete;
  ~ivm_call() {
    for (ivm_value_t* v : args) ivm_value_free(v);
  }
  std::vector<ivm_value_t*> args;   // owned
  ivm::IsolateHolder* holder = nullptr;
  v8::Isolate* isolate = nullptr;
  v8::Local<v8::Context> context;
  v8::Local<v8::Promise::Resolver> resolver;   // set by ivm_call_defer
  uint32_t op = IVM_CALL_CALL;                   // IVM_CALL_*
  std::vector<ivm_primitive_t> view;             // ivm_call_view
  ivm_primitive_t result{};                      // a primitive result
  uint64_t job = 0;                              // ivm_call_job
  ivm::remote::Invocation* remote = nullptr;     // a worker's JavaScript made it
};

struct ivm_deferred : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::Resource> record;
  std::shared_ptr<ivm::remote::RemoteDeferred> remote;   // instead of both, for a worker's
};

#endif  // IVM_CALLBACK_H
