// host_timers.cc — IVM_HOST_TIMERS: setTimeout, setInterval, setImmediate,
// their clear* twins and queueMicrotask in a context (docs/host.md,
// "Timers"). The timers themselves, and what runs them, are timer_table.cc's.
//
// Web semantics: ids are positive integers (one sequence per context, shared
// by all three kinds, so any clear* clears any id); a delay is converted as
// WebIDL's `long` (ToNumber, NaN and infinities 0, modulo 2^32), and a
// negative one is 0; past 5 nested levels a delay under 4 ms becomes 4 ms
// (HTML), except for setImmediate. A string callback is a TypeError: timers
// never evaluate code. A callback that throws is reported as an unhandled
// rejection of its context (ReportCallbackError) and other timers go on.
#include "host.h"
#include "timer_table.h"

#include <cmath>
#include <string>

namespace ivm {

namespace {

void Throw(v8::Isolate* isolate, v8::Local<v8::Context> context, const char* name,
           const std::string& message) {
  v8::Local<v8::String> text;
  if (!v8::String::NewFromUtf8(isolate, message.data(), v8::NewStringType::kNormal,
                               static_cast<int>(message.size()))
           .ToLocal(&text)) {
    return;
  }
  isolate->ThrowException(NewError(isolate, context, name, text));
}

// WebIDL `long`, then clamped at 0 (HTML's timer initialization steps).
int64_t DelayMs(double d) {
  if (!std::isfinite(d)) return 0;
  double m = std::fmod(std::trunc(d), 4294967296.0);
  if (m < 0) m += 4294967296.0;
  if (m >= 2147483648.0) m -= 4294967296.0;
  return m < 0 ? 0 : static_cast<int64_t>(m);
}

bool CheckCallback(const v8::FunctionCallbackInfo<v8::Value>& info, const char* name) {
  if (info.Length() >= 1 && info[0]->IsFunction()) return true;
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  std::string what = info.Length() < 1 ? "undefined" : DescribeType(isolate, info[0]);
  Throw(isolate, context, "TypeError",
        info.Length() >= 1 && info[0]->IsString()
            ? std::string(name) + ": a string callback is refused (timers never evaluate "
                                  "code); pass a function"
            : std::string(name) + ": the callback must be a function, not " + what);
  return false;
}

void Schedule(const v8::FunctionCallbackInfo<v8::Value>& info, const char* name, bool repeat,
              bool immediate) {
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  if (!CheckCallback(info, name)) return;
  TimerTable::Request r;
  r.fn = info[0].As<v8::Function>();
  r.repeat = repeat;
  r.immediate = immediate;
  int first_arg = immediate ? 1 : 2;
  if (!immediate && info.Length() > 1) {
    double delay = 0;
    if (!info[1]->NumberValue(context).To(&delay)) return;   // (its valueOf threw)
    r.delay_ms = DelayMs(delay);
  }
  if (info.Length() > first_arg) {
    std::vector<v8::Local<v8::Value>> args;
    for (int i = first_arg; i < info.Length(); ++i) args.push_back(info[i]);
    r.args = v8::Array::New(isolate, args.data(), args.size());
  }
  // Read after the conversions: a valueOf may have released the context.
  TimerTable* table = TimerTable::FromAnchor(info.Data());
  if (table == nullptr) {
    Throw(isolate, context, "Error", std::string(name) + ": this context was released");
    return;
  }
  uint64_t id = table->Add(isolate, r);
  if (id == 0) {
    Throw(isolate, context, "RangeError",
          std::string(name) + ": too many pending timers in this context (at most " +
              std::to_string(TimerTable::kMaxPending) + ")");
    return;
  }
  info.GetReturnValue().Set(static_cast<double>(id));
}

void SetTimeout(const v8::FunctionCallbackInfo<v8::Value>& info) {
  Schedule(info, "setTimeout", false, false);
}
void SetInterval(const v8::FunctionCallbackInfo<v8::Value>& info) {
  Schedule(info, "setInterval", true, false);
}
void SetImmediate(const v8::FunctionCallbackInfo<v8::Value>& info) {
  Schedule(info, "setImmediate", false, true);
}

// clearTimeout, clearInterval, clearImmediate: the same (web: ids are shared).
void ClearTimer(const v8::FunctionCallbackInfo<v8::Value>& info) {
  TimerTable* table = TimerTable::FromAnchor(info.Data());
  if (table == nullptr || info.Length() < 1) return;
  v8::Local<v8::Value> id = info[0];
  if (!id->IsNumber() && !id->IsString()) return;   // (no user code runs for these)
  double d = 0;
  if (!id->NumberValue(info.GetIsolate()->GetCurrentContext()).To(&d)) return;
  if (d >= 1 && d <= 9007199254740991.0 && d == std::trunc(d)) {
    table->Clear(info.GetIsolate(), static_cast<uint64_t>(d));
  }
}

// The microtask queueMicrotask queues: calls the function (its data) and
// reports what it throws instead of letting V8 drop it.
void RunMicrotask(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  v8::TryCatch try_catch(isolate);
  if (info.Data().As<v8::Function>()->Call(context, v8::Undefined(isolate), 0, nullptr).IsEmpty() &&
      try_catch.HasCaught() && !try_catch.HasTerminated()) {
    ReportCallbackError(isolate, context, try_catch.Exception());
  }
}

void QueueMicrotask(const v8::FunctionCallbackInfo<v8::Value>& info) {
  if (!CheckCallback(info, "queueMicrotask")) return;
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Function> task;
  if (v8::Function::New(isolate->GetCurrentContext(), RunMicrotask, info[0], 0,
                        v8::ConstructorBehavior::kThrow)
          .ToLocal(&task)) {
    isolate->EnqueueMicrotask(task);
  }
}

struct Entry {
  const char* name;
  v8::FunctionCallback fn;
};
constexpr Entry kEntries[] = {
    {"setTimeout", SetTimeout},         {"setInterval", SetInterval},
    {"setImmediate", SetImmediate},     {"clearTimeout", ClearTimer},
    {"clearInterval", ClearTimer},      {"clearImmediate", ClearTimer},
    {"queueMicrotask", QueueMicrotask},
};

}  // namespace

void InstallTimers(IsolateHolder& holder, v8::Local<v8::Context> context) {
  // A failure here (V8 out of memory, a termination) leaves an exception or a
  // termination that InstallHostBasics's TryCatch sees: the creation fails.
  v8::Isolate* isolate = holder.isolate();
  v8::Local<v8::Object> anchor;
  if (!TimerTable::Create(holder, isolate, context).ToLocal(&anchor)) return;
  v8::Local<v8::Object> global = context->Global();
  for (const Entry& e : kEntries) {
    v8::Local<v8::String> name;
    v8::Local<v8::Function> fn;
    if (!v8::String::NewFromUtf8(isolate, e.name, v8::NewStringType::kInternalized)
             .ToLocal(&name) ||
        !v8::Function::New(context, e.fn, anchor, 1, v8::ConstructorBehavior::kThrow)
             .ToLocal(&fn)) {
      return;
    }
    fn->SetName(name);
    if (!global->CreateDataProperty(context, name, fn).FromMaybe(false)) return;
  }
}

}  // namespace ivm
