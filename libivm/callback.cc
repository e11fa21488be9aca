// callback.cc — host functions callable from JavaScript (ivm_callback_t).
//
// A callback enters an isolate as an attachment of a value; there it becomes
// a JavaScript function whose calls run the host function synchronously, on
// the thread running the JavaScript, with the isolate locked. Arguments are
// structured copies; the result comes back the same way. A host function may
// defer its result: JavaScript then gets a promise, settled later from any
// thread through ivm_deferred_t.
#include "callback.h"

#include "copy.h"
#include "host_exit.h"
#include "wrapper.h"

namespace ivm {

namespace {

constexpr char kHostTokenKey[] = "ivm:host-error-token";
constexpr char kCrossedStackKey[] = "ivm:crossed-stack";

// The private symbol that marks errors under `name`.
template <int N>
v8::Local<v8::Private> MarkKey(v8::Isolate* isolate, const char (&name)[N]) {
  return v8::Private::ForApi(isolate, v8::String::NewFromUtf8Literal(isolate, name));
}

// The value of a thrown object's mark `name`; false if it has none.
template <int N>
bool ReadMark(v8::Isolate* isolate, v8::Local<v8::Context> context,
              v8::Local<v8::Value> exception, const char (&name)[N], v8::Local<v8::Value>* out) {
  if (exception.IsEmpty() || !exception->IsObject() || exception->IsProxy()) return false;
  return exception.As<v8::Object>()->GetPrivate(context, MarkKey(isolate, name)).ToLocal(out);
}

// A JavaScript function made from a callback, alive while the function is.
class CallbackRecord final : public Resource {
 public:
  void ResetLocked() override { fn.Reset(); }
  v8::Global<v8::Function> fn;
  std::shared_ptr<CallbackData> data;
  IsolateHolder* holder = nullptr;   // outlives the function
};

class DeferredRecord final : public Resource {
 public:
  void ResetLocked() override {
    resolver.Reset();
    context.Reset();
  }
  v8::Global<v8::Promise::Resolver> resolver;
  v8::Global<v8::Context> context;
  std::atomic<bool> settled{false};
};

void OnFunctionCollected(const v8::WeakCallbackInfo<CallbackRecord>& info) {
  CallbackRecord* record = info.GetParameter();
  record->fn.Reset();
  record->holder->ReleaseLater(record);
}

v8::Local<v8::Value> ErrorFromHost(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                   const ivm_error_t* err) {
  v8::Local<v8::String> message =
      NewString(isolate, err->message.data(), err->message.size(), nullptr)
          .FromMaybe(v8::String::Empty(isolate));
  v8::Local<v8::Object> obj = NewError(isolate, context, err->name, message);
  if (err->host_token == 0 && !err->stack.empty() && err->kind == IVM_ERROR_JS_EXCEPTION) {
    // An error of another isolate: its stack, where it crossed, and this
    // isolate's frames.
    std::string whole = err->stack + "\n    at (<ivm boundary>)";
    AppendCurrentFrames(isolate, whole);
    v8::Local<v8::String> stack = NewString(isolate, whole.data(), whole.size(), nullptr)
                                      .FromMaybe(v8::String::Empty(isolate));
    // Nothing while the isolate is terminating (the error is then never seen).
    obj->DefineOwnProperty(context, v8::String::NewFromUtf8Literal(isolate, "stack"), stack,
                           v8::DontEnum)
        .FromMaybe(false);
    MarkCrossedStack(isolate, context, obj, stack);
  }
  if (err->host_token != 0) {
    obj->SetPrivate(context, MarkKey(isolate, kHostTokenKey),
                    v8::BigInt::NewFromUnsigned(isolate, err->host_token))
        .FromMaybe(false);
  }
  return obj;
}

}  // namespace

bool LeftStopped(IsolateHolder& holder, const CallState& call, ivm_error_t*& err,
                 ivm_value_t*& out) {
  if (err != nullptr && err->host_abort) return false;   // ThrowHostError stops the calls
  if (!holder.Stopped(call)) return false;
  // The host code's own call into the isolate ran out of memory, or the isolate is being
  // disposed or terminated: nothing more may run in it, and the termination unwinds.
  if (out) ivm_value_free(out);
  ivm_error_free(err);
  out = nullptr;
  err = nullptr;
  return true;
}

void ThrowHostError(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                    ivm_error_t* err) {
  if (err->host_abort) {
    holder.AbortFromHost(err->host_token);
    ivm_error_free(err);
    return;
  }
  isolate->ThrowException(ErrorFromHost(isolate, context, err));
  ivm_error_free(err);
}

namespace {

void Trampoline(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  auto* record = static_cast<CallbackRecord*>(info.Data().As<v8::External>()->Value());
  IsolateHolder& holder = *record->holder;
  v8::HandleScope scope(isolate);
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  const CallState* call = holder.CurrentCall();
  if (call == nullptr || holder.Stopped(*call)) return;
  ivm_call c;
  c.job = call->job_id;
  c.holder = &holder;
  c.isolate = isolate;
  c.context = context;
  c.args.reserve(static_cast<size_t>(info.Length()));
  for (int i = 0; i < info.Length(); ++i) {
    if (info[i]->IsNumber()) {   // the common argument: nothing to run, nothing can throw
      c.args.push_back(ivm_value_new_number(info[i].As<v8::Number>()->Value()));
      continue;
    }
    ivm_value_t* v = nullptr;
    ivm_error_t* err = nullptr;
    {
      v8::TryCatch try_catch(isolate);
      err = ResultFromV8(holder, isolate, context, try_catch, *call, info[i], IVM_RESULT_COPY, &v);
      if (err && (try_catch.HasCaught() || try_catch.HasTerminated())) {
        ivm_error_free(err);
        try_catch.ReThrow();
        return;
      }
    }
    if (err) {   // thrown outside the TryCatch, which would swallow it
      err->name = "TypeError";
      err->message = "argument " + std::to_string(i) + " of a host function: " + err->message;
      isolate->ThrowException(ErrorFromHost(isolate, context, err));
      ivm_error_free(err);
      return;
    }
    c.args.push_back(v);
  }
  ivm_value_t* out = nullptr;
  ivm_error_t* err = nullptr;
  {
    HostScope host(holder);
    CallIntoHost(
        OnHostExit::kPark, [&] { err = record->data->fn(record->data->user_data, &c, &out); },
        [&] { err = MakeError(IVM_ERROR_INTERNAL, "a host function threw a C++ exception"); });
  }
  if (LeftStopped(holder, *call, err, out)) return;
  if (err) {
    if (out) ivm_value_free(out);
    ThrowHostError(holder, isolate, context, err);
    return;
  }
  if (!c.resolver.IsEmpty()) {
    if (out) ivm_value_free(out);
    info.GetReturnValue().Set(c.resolver->GetPromise());
    return;
  }
  if (out == nullptr) {
    switch (c.result.kind) {
      case IVM_VALUE_NULL: info.GetReturnValue().SetNull(); break;
      case IVM_VALUE_BOOLEAN: info.GetReturnValue().Set(c.result.boolean != 0); break;
      case IVM_VALUE_NUMBER: info.GetReturnValue().Set(c.result.number); break;
      default: break;   // undefined
    }
    return;
  }
  std::unique_ptr<ivm_value_t> result(out);
  v8::Local<v8::Value> value;
  ivm_error_t* conv = nullptr;
  {
    v8::TryCatch try_catch(isolate);
    conv = ValueToV8(holder, isolate, context, *call, result.get(), &value);
    if (conv == nullptr && value.IsEmpty()) {
      try_catch.ReThrow();
      return;
    }
  }
  if (conv) {
    conv->name = "TypeError";
    conv->message = "the result of a host function: " + conv->message;
    isolate->ThrowException(ErrorFromHost(isolate, context, conv));
    ivm_error_free(conv);
    return;
  }
  info.GetReturnValue().Set(value);
}

}  // namespace

CallbackData::~CallbackData() {
  if (finalize) {
    CallIntoHost(OnHostExit::kPark, [&] { finalize(user_data); }, [] {});
  }
}

void MarkCrossedStack(v8::Isolate* isolate, v8::Local<v8::Context> context,
                      v8::Local<v8::Object> error, v8::Local<v8::String> stack) {
  error->SetPrivate(context, MarkKey(isolate, kCrossedStackKey), stack).FromMaybe(false);
}

bool ReadCrossedStack(v8::Isolate* isolate, v8::Local<v8::Context> context,
                      v8::Local<v8::Value> exception, std::string* stack) {
  v8::Local<v8::Value> value;
  if (!ReadMark(isolate, context, exception, kCrossedStackKey, &value) || !value->IsString()) {
    return false;
  }
  stack->clear();
  compat::AppendWtf8(isolate, value.As<v8::String>(), *stack);
  return true;
}

bool ReadHostToken(v8::Isolate* isolate, v8::Local<v8::Context> context,
                   v8::Local<v8::Value> exception, uint64_t* token) {
  v8::Local<v8::Value> value;
  if (!ReadMark(isolate, context, exception, kHostTokenKey, &value) || !value->IsBigInt()) {
    return false;
  }
  bool lossless = false;
  *token = value.As<v8::BigInt>()->Uint64Value(&lossless);
  return lossless && *token != 0;
}

v8::MaybeLocal<v8::Function> MakeHostFunction(IsolateHolder& holder, v8::Isolate* isolate,
                                              v8::Local<v8::Context> context,
                                              const std::shared_ptr<CallbackData>& data,
                                              bool counted) {
  auto record = std::make_shared<CallbackRecord>();
  record->data = data;
  record->holder = &holder;
  v8::Local<v8::Function> fn;
  if (!v8::Function::New(context, Trampoline, v8::External::New(isolate, record.get()), 0,
                         v8::ConstructorBehavior::kThrow)
           .ToLocal(&fn) ||
      !Freeze(context, fn)) {   // as isolated-vm's API objects
    return {};
  }
  record->fn.Reset(isolate, fn);
  record->fn.SetWeak(record.get(), OnFunctionCollected, v8::WeakCallbackType::kParameter);
  holder.Register(record, counted);
  return fn;
}

namespace {

// Settles a deferred call's promise inside its isolate. Runs as a platform
// task, so that a call waiting on the promise (promise=true) runs it, and a
// queued job makes sure it runs when no call is active.
class SettleTask final : public v8::Task {
 public:
  SettleTask(std::shared_ptr<IsolateHolder> holder, std::shared_ptr<DeferredRecord> record,
             std::unique_ptr<ivm_value_t> value, ivm_error_t* error)
      : holder_(std::move(holder)), record_(std::move(record)), value_(std::move(value)),
        error_(error) {}
  ~SettleTask() override { ivm_error_free(error_); }

  void Run() override {
    if (record_->released() || holder_->disposed()) return;
    v8::Isolate* isolate = holder_->isolate();
    const CallState* call = holder_->CurrentCall();
    if (call == nullptr) return;
    v8::HandleScope scope(isolate);
    v8::Local<v8::Context> context = record_->context.Get(isolate);
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    v8::Local<v8::Promise::Resolver> resolver = record_->resolver.Get(isolate);
    if (error_) {
      if (error_->host_abort) {
        holder_->AbortFromHost(error_->host_token);
      } else {
        resolver->Reject(context, ErrorFromHost(isolate, context, error_)).IsJust();
      }
    } else {
      v8::Local<v8::Value> value = v8::Undefined(isolate);
      if (value_) {
        ivm_error_t* conv = ValueToV8(*holder_, isolate, context, *call, value_.get(), &value);
        if (conv) {
          conv->name = "TypeError";
          conv->message = "the result of a host function: " + conv->message;
          resolver->Reject(context, ErrorFromHost(isolate, context, conv)).IsJust();
          ivm_error_free(conv);
        } else if (value.IsEmpty()) {
          if (try_catch.HasCaught()) resolver->Reject(context, try_catch.Exception()).IsJust();
        } else {
          resolver->Resolve(context, value).IsJust();
        }
      } else {
        resolver->Resolve(context, value).IsJust();
      }
    }
    holder_->Release(record_);
  }

 private:
  std::shared_ptr<IsolateHolder> holder_;
  std::shared_ptr<DeferredRecord> record_;
  std::unique_ptr<ivm_value_t> value_;
  ivm_error_t* error_;
};

ivm_error_t* Settle(ivm_deferred_t* d, ivm_value_t* value, ivm_error_t* error) {
  std::unique_ptr<ivm_value_t> owned(value);
  if (d == nullptr) {
    ivm_error_free(error);
    return InvalidArgument("deferred is NULL");
  }
  if (d->remote) return remote::SettleDeferred(*d->remote, owned.release(), error);
  auto record = std::static_pointer_cast<DeferredRecord>(d->record);
  if (record->settled.exchange(true)) {
    ivm_error_free(error);
    return InvalidArgument("the deferred call was already settled");
  }
  std::shared_ptr<IsolateHolder> holder = d->holder;
  if (holder->disposed()) {
    ivm_error_free(error);
    return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  }
  EnsurePlatform()
      ->GetForegroundTaskRunner(holder->isolate())
      ->PostTask(std::make_unique<SettleTask>(holder, record, std::move(owned), error));
  // Run it even if no call is active: a job that pumps the isolate's tasks.
  EnqueuePump(holder);
  return nullptr;
}

}  // namespace

}  // namespace ivm

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_callback_new(ivm_host_fn fn, void* user_data,
                                      void (*finalize)(void* user_data), uint32_t flags,
                                      ivm_callback_t** out) {
  // The finalizer runs exactly once, even when this fails.
  std::shared_ptr<ivm::CallbackData> data;
  try {
    data = std::make_shared<ivm::CallbackData>();
  } catch (...) {
    if (finalize) finalize(user_data);
    return ivm::MakeError(IVM_ERROR_INTERNAL, "out of memory");
  }
  data->fn = fn;
  data->user_data = user_data;
  data->finalize = finalize;
  return Guard([&]() -> ivm_error_t* {
    if (fn == nullptr || out == nullptr) return InvalidArgument("fn or out is NULL");
    if (flags != 0) return InvalidArgument("flags must be 0");
    auto handle = std::make_unique<ivm_callback>();
    handle->data = std::move(data);
    *out = handle.release();
    return nullptr;
  });
}

IVM_API void ivm_callback_free(ivm_callback_t* cb) { ivm::FreeHandle(cb); }

IVM_API ivm_error_t* ivm_value_attach_callback(ivm_value_t* value, ivm_callback_t* cb,
                                               uint32_t flags, size_t* index_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = ivm::CheckSerialized(value)) return err;
    if (cb == nullptr) return InvalidArgument("callback is NULL");
    ivm::Attachment a;
    a.kind = ivm::Attachment::kCallback;
    a.callback = cb->data;
    a.flags = flags;
    ivm::AppendAttachment(value, std::move(a), index_out);
    return nullptr;
  });
}

IVM_API size_t ivm_call_argc(const ivm_call_t* call) { return call ? call->args.size() : 0; }

IVM_API uint32_t ivm_call_op(const ivm_call_t* call) { return call ? call->op : IVM_CALL_CALL; }

IVM_API uint64_t ivm_call_job(const ivm_call_t* call) { return call ? call->job : 0; }

IVM_API const ivm_primitive_t* ivm_call_view(ivm_call_t* call, size_t* argc_out,
                                             ivm_primitive_t** result_out) {
  if (call == nullptr) {
    if (argc_out) *argc_out = 0;
    if (result_out) *result_out = nullptr;
    return nullptr;
  }
  if (call->view.size() != call->args.size()) {
    call->view.assign(call->args.size(), ivm_primitive_t{});
    for (size_t i = 0; i < call->args.size(); ++i) ivm::FillPrimitive(call->args[i], &call->view[i], true);
  }
  if (argc_out) *argc_out = call->args.size();
  if (result_out) *result_out = &call->result;
  return call->view.data();
}

IVM_API const ivm_value_t* ivm_call_arg(const ivm_call_t* call, size_t index) {
  if (call == nullptr || index >= call->args.size()) return nullptr;
  return call->args[index];
}

IVM_API ivm_error_t* ivm_call_defer(ivm_call_t* call, ivm_deferred_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (call == nullptr || out == nullptr) return InvalidArgument("call or out is NULL");
    if (call->remote != nullptr) return ivm::remote::Defer(call, out);
    if (!call->resolver.IsEmpty()) return InvalidArgument("the call is already deferred");
    v8::Local<v8::Promise::Resolver> resolver;
    if (!v8::Promise::Resolver::New(call->context).ToLocal(&resolver)) {
      return ivm::MakeError(IVM_ERROR_INTERNAL, "could not create a promise");
    }
    auto record = std::make_shared<ivm::DeferredRecord>();
    record->resolver.Reset(call->isolate, resolver);
    record->context.Reset(call->isolate, call->context);
    std::shared_ptr<ivm::IsolateHolder> holder = call->holder->shared_from_this();
    holder->Register(record);
    auto d = std::make_unique<ivm_deferred>();
    d->holder = holder;
    d->record = record;
    call->resolver = resolver;
    *out = d.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_deferred_resolve(ivm_deferred_t* d, ivm_value_t* value) {
  return Guard([&]() -> ivm_error_t* { return ivm::Settle(d, value, nullptr); });
}

IVM_API ivm_error_t* ivm_deferred_reject(ivm_deferred_t* d, ivm_error_t* error) {
  if (error == nullptr) error = ivm::MakeError(IVM_ERROR_INTERNAL, "rejected");
  return Guard([&]() -> ivm_error_t* { return ivm::Settle(d, nullptr, error); });
}

IVM_API void ivm_deferred_free(ivm_deferred_t* d) {
  if (d == nullptr) return;
  try {
    auto record = std::static_pointer_cast<ivm::DeferredRecord>(d->record);
    bool settled = d->remote ? ivm::remote::DeferredSettled(*d->remote) : record->settled.load();
    if (!settled) {
      ivm_error_t* err = ivm::MakeError(IVM_ERROR_INTERNAL,
                                        "the host dropped this call without a result");
      err->name = "Error";
      ivm_error_free(ivm::Settle(d, nullptr, err));
    }
    delete d;
  } catch (...) {
  }
}

IVM_API ivm_error_t* ivm_error_new_host(const char* name, size_t name_len, const char* message,
                                        size_t message_len, uint64_t token, uint32_t flags) {
  try {
    ivm_error_t* err = ivm::MakeError(IVM_ERROR_JS_EXCEPTION,
                                      std::string(message ? message : "", message ? message_len : 0));
    err->name.assign(name ? name : "", name ? name_len : 0);
    err->host_token = token;
    err->host_abort = (flags & IVM_HOST_ERROR_ABORT) != 0;
    if (err->host_abort) err->kind = IVM_ERROR_TERMINATED;
    return err;
  } catch (...) {
    return nullptr;
  }
}

IVM_API uint64_t ivm_error_host_token(const ivm_error_t* err) { return err ? err->host_token : 0; }

}  // extern "C"
