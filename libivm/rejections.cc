// rejections.cc — unhandled promise rejections, reported per context.
//
// V8 tells the isolate when a promise is rejected with no handler, and when
// a handler is added to one later. A context with a rejection hook (a host
// function, ivm_context_options_t.on_unhandled_rejection) keeps the pending
// ones in a Map on a private key of its global; each call that ran
// JavaScript in the context ends by reporting them (FlushRejections), after
// its microtasks, and without touching its own result or error. A promise
// handled before that is never reported; one handled after is reported again
// as revoked.
#include "callback.h"
#include "context.h"
#include "copy.h"

#include <atomic>

namespace ivm {
namespace {

v8::Local<v8::Private> Key(v8::Isolate* isolate, const char* name) {
  return v8::Private::ForApi(
      isolate, v8::String::NewFromUtf8(isolate, name, v8::NewStringType::kInternalized)
                   .ToLocalChecked());
}
constexpr char kHookKey[] = "ivm:rejection_hook";
constexpr char kPendingKey[] = "ivm:rejections";   // Map promise -> [reason, revoked]
constexpr char kReportedKey[] = "ivm:reported";     // on a reported promise

// Entries in every context's pending Map, in all isolates. While it is 0 (by far
// the common case) a call's end costs no lookup of the Map (which takes an
// internalized key, a private-symbol lookup and a property lookup). An entry
// lost with its context only keeps the count above 0: slower, never wrong.
std::atomic<int64_t> g_pending{0};

v8::MaybeLocal<v8::Map> Pending(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                bool create) {
  v8::Local<v8::Object> global = context->Global();
  v8::Local<v8::Value> map;
  if (!global->GetPrivate(context, Key(isolate, kPendingKey)).ToLocal(&map)) return {};
  if (map->IsMap()) return map.As<v8::Map>();
  if (!create) return {};
  v8::Local<v8::Map> made = v8::Map::New(isolate);
  if (!global->SetPrivate(context, Key(isolate, kPendingKey), made).FromMaybe(false)) return {};
  return made;
}

bool HasHook(v8::Isolate* isolate, v8::Local<v8::Context> context) {
  return context->Global()->HasPrivate(context, Key(isolate, kHookKey)).FromMaybe(false);
}

void Track(v8::Isolate* isolate, v8::Local<v8::Context> context, v8::Local<v8::Promise> promise,
           v8::Local<v8::Value> reason, bool revoked) {
  v8::Local<v8::Map> pending;
  if (!Pending(isolate, context, true).ToLocal(&pending)) return;
  v8::Local<v8::Value> entry[2] = {reason, v8::Boolean::New(isolate, revoked)};
  if (!pending->Has(context, promise).FromMaybe(true)) g_pending.fetch_add(1);
  (void)pending->Set(context, promise, v8::Array::New(isolate, entry, 2));
}

void OnPromiseReject(v8::PromiseRejectMessage message) {
  v8::Local<v8::Promise> promise = message.GetPromise();
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  if (context.IsEmpty() || !HasHook(isolate, context)) return;
  v8::TryCatch try_catch(isolate);   // nothing here may throw into the script
  switch (message.GetEvent()) {
    case v8::kPromiseRejectWithNoHandler:
      Track(isolate, context, promise, message.GetValue(), false);
      break;
    case v8::kPromiseHandlerAddedAfterReject: {
      v8::Local<v8::Map> pending;
      if (Pending(isolate, context, false).ToLocal(&pending) &&
          pending->Delete(context, promise).FromMaybe(false)) {
        g_pending.fetch_sub(1);
        break;   // handled before it was reported
      }
      if (promise->HasPrivate(context, Key(isolate, kReportedKey)).FromMaybe(false)) {
        Track(isolate, context, promise, promise->Result(), true);
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace

void InstallRejectionTracker(v8::Isolate* isolate) {
  isolate->SetPromiseRejectCallback(OnPromiseReject);
}

bool SetRejectionHook(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                      const std::shared_ptr<CallbackData>& hook) {
  v8::Local<v8::Function> fn;
  if (!MakeHostFunction(holder, isolate, context, hook, false).ToLocal(&fn)) return false;
  return context->Global()->SetPrivate(context, Key(isolate, kHookKey), fn).FromMaybe(false);
}

void ForgetRejection(v8::Isolate* isolate, v8::Local<v8::Context> context,
                     v8::Local<v8::Value> value) {
  v8::Local<v8::Map> pending;
  if (g_pending.load(std::memory_order_relaxed) <= 0 || !value->IsPromise() ||
      !Pending(isolate, context, false).ToLocal(&pending)) {
    return;
  }
  v8::TryCatch try_catch(isolate);
  if (pending->Delete(context, value).FromMaybe(false)) g_pending.fetch_sub(1);
}

bool FlushRejections(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                     const CallState& call) {
  v8::Local<v8::Map> pending;
  if (g_pending.load(std::memory_order_relaxed) <= 0 ||
      !Pending(isolate, context, false).ToLocal(&pending) || pending->Size() == 0) {
    return false;
  }
  v8::TryCatch try_catch(isolate);
  v8::Local<v8::Value> hook;
  if (!context->Global()->GetPrivate(context, Key(isolate, kHookKey)).ToLocal(&hook) ||
      !hook->IsFunction()) {
    return true;
  }
  v8::Local<v8::Array> entries = pending->AsArray();   // [promise, entry, promise, entry, ...]
  g_pending.fetch_sub(static_cast<int64_t>(pending->Size()));
  pending->Clear();
  for (uint32_t i = 0; i + 1 < entries->Length(); i += 2) {
    if (holder.Stopped(call) || isolate->IsExecutionTerminating()) return true;
    v8::Local<v8::Value> promise, entry, reason, revoked;
    if (!entries->Get(context, i).ToLocal(&promise) ||
        !entries->Get(context, i + 1).ToLocal(&entry) || !entry->IsArray() ||
        !entry.As<v8::Array>()->Get(context, 0).ToLocal(&reason) ||
        !entry.As<v8::Array>()->Get(context, 1).ToLocal(&revoked)) {
      continue;
    }
    if (promise->IsPromise()) {
      (void)promise.As<v8::Object>()->SetPrivate(context, Key(isolate, kReportedKey),
                                                 v8::True(isolate));
    }
    // The reason as itself if it can be copied out, else as its string.
    ivm_value_t* probe = nullptr;
    ivm_error_t* err = ResultFromV8(holder, isolate, context, try_catch, call, reason,
                                    IVM_RESULT_COPY, &probe);
    ivm_value_free(probe);
    if (err != nullptr) {
      ivm_error_free(err);
      try_catch.Reset();
      v8::Local<v8::String> text;
      if (!reason->ToDetailString(context).ToLocal(&text)) text = v8::String::Empty(isolate);
      reason = text;
    }
    v8::Local<v8::Value> argv[2] = {reason, revoked};
    (void)hook.As<v8::Function>()->Call(context, v8::Undefined(isolate), 2, argv);
    try_catch.Reset();   // the hook's failure is not the call's
  }
  return true;
}

}  // namespace ivm
