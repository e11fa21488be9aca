// host_console.cc — the `console` global (IVM_HOST_CONSOLE).
//
// Each method formats its arguments here, in C++ (host_inspect.cc: node's
// util.format and util.inspect rules, running no JavaScript), bounds the text
// to console_max_bytes and hands one line, with its level, to the context's
// console callback (or to stderr). No method throws: a failing sink is
// ignored. Per-context state (counters, timers, group indentation) lives in
// an array that only the methods' data reaches.
#include "host.h"
#include "callback.h"
#include "host_inspect.h"

#include <chrono>
#include <cstdio>
#include <cstring>

namespace ivm {
namespace {

enum Method : int {
  kLog, kInfo, kWarn, kError, kDebug, kTrace, kAssert, kDir, kDirxml, kTable, kTime, kTimeEnd,
  kTimeLog, kCount, kCountReset, kGroup, kGroupCollapsed, kGroupEnd, kMethodCount
};
struct MethodInfo {
  const char* name;
  const char* level;
};
constexpr MethodInfo kMethods[kMethodCount] = {
    {"log", "log"},       {"info", "info"},       {"warn", "warn"},
    {"error", "error"},   {"debug", "debug"},     {"trace", "trace"},
    {"assert", "assert"}, {"dir", "dir"},         {"dirxml", "log"},
    {"table", "log"},     {"time", "time"},       {"timeEnd", "time"},
    {"timeLog", "time"},  {"count", "count"},     {"countReset", "count"},
    {"group", "log"},     {"groupCollapsed", "log"}, {"groupEnd", "log"},
};

// The state array's slots.
enum Slot : uint32_t { kSink, kLimit, kCounts, kTimes, kIndent, kSlotCount };

double NowMs() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// One console call: its isolate, context, state and arguments.
struct Call {
  v8::Isolate* isolate;
  v8::Local<v8::Context> context;
  v8::Local<v8::Array> state;
  std::vector<v8::Local<v8::Value>> args;

  v8::Local<v8::Value> Slot(uint32_t slot) {
    v8::Local<v8::Value> v;
    if (!state->Get(context, slot).ToLocal(&v)) v = v8::Undefined(isolate);
    return v;
  }
  size_t Limit() {
    v8::Local<v8::Value> v = Slot(kLimit);
    return v->IsNumber() ? static_cast<size_t>(v.As<v8::Number>()->Value()) : kDefaultConsoleMaxBytes;
  }
  int Indent() {
    v8::Local<v8::Value> v = Slot(kIndent);
    return v->IsNumber() ? static_cast<int>(v.As<v8::Number>()->Value()) : 0;
  }
  std::string Format(size_t from = 0) {
    std::vector<v8::Local<v8::Value>> rest(args.begin() + static_cast<long>(std::min(from, args.size())),
                                           args.end());
    return inspect::Format(context, rest, Limit());
  }
  // The label argument of time/count ("default" when absent or undefined).
  std::string Label() {
    if (args.empty() || args[0]->IsUndefined()) return "default";
    return inspect::Format(context, {args[0]}, 1024);
  }
  void Emit(const char* level, std::string text);
};

// Cuts `text` to `limit` bytes at a character boundary, marking the cut.
void Bound(std::string& text, size_t limit) {
  if (text.size() <= limit) return;
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  text += "… [truncated to " + std::to_string(limit) + " bytes]";
}

void Call::Emit(const char* level, std::string text) {
  int indent = Indent();
  if (indent > 0) {
    std::string pad(static_cast<size_t>(indent), ' ');
    std::string out = pad;
    for (char c : text) {
      out += c;
      if (c == '\n') out += pad;
    }
    text = std::move(out);
  }
  Bound(text, Limit());
  v8::Local<v8::Value> sink = Slot(kSink);
  if (!sink->IsFunction()) {
    std::fprintf(stderr, "%s: %s\n", level, text.c_str());
    std::fflush(stderr);
    return;
  }
  v8::TryCatch try_catch(isolate);
  v8::Local<v8::String> level_str, text_str;
  if (!NewString(isolate, level, std::strlen(level), nullptr).ToLocal(&level_str) ||
      !NewString(isolate, text.data(), text.size(), nullptr).ToLocal(&text_str)) {
    return;
  }
  v8::Local<v8::Value> argv[2] = {level_str, text_str};
  (void)sink.As<v8::Function>()->Call(context, v8::Undefined(isolate), 2, argv);
  // The sink's failure is not the caller's (a termination still ends the call).
}

std::string Elapsed(double ms) {
  char buf[64];
  if (ms >= 1000) std::snprintf(buf, sizeof buf, "%.3fs", ms / 1000);
  else std::snprintf(buf, sizeof buf, "%.3fms", ms);
  return buf;
}

void Timer(Call& c, Method method) {
  std::string label = c.Label();
  v8::Local<v8::Value> times = c.Slot(kTimes);
  if (!times->IsMap()) return;
  v8::Local<v8::Map> map = times.As<v8::Map>();
  v8::Local<v8::String> key;
  if (!NewString(c.isolate, label.data(), label.size(), nullptr).ToLocal(&key)) return;
  v8::Local<v8::Value> start;
  bool has = map->Has(c.context, key).FromMaybe(false);
  if (method == kTime) {
    if (has) {
      c.Emit("warn", "Warning: Label '" + label + "' already exists for console.time()");
    } else {
      (void)map->Set(c.context, key, v8::Number::New(c.isolate, NowMs()));
    }
    return;
  }
  if (!has || !map->Get(c.context, key).ToLocal(&start) || !start->IsNumber()) {
    c.Emit("warn", "Warning: No such label '" + label + "' for console." +
                       kMethods[method].name + "()");
    return;
  }
  std::string text = label + ": " + Elapsed(NowMs() - start.As<v8::Number>()->Value());
  if (method == kTimeEnd) {
    (void)map->Delete(c.context, key);
  } else if (c.args.size() > 1) {
    text += " " + c.Format(1);
  }
  c.Emit("time", text);
}

void Counter(Call& c, Method method) {
  std::string label = c.Label();
  v8::Local<v8::Value> counts = c.Slot(kCounts);
  v8::Local<v8::String> key;
  if (!counts->IsMap() || !NewString(c.isolate, label.data(), label.size(), nullptr).ToLocal(&key)) {
    return;
  }
  v8::Local<v8::Map> map = counts.As<v8::Map>();
  v8::Local<v8::Value> value;
  double n = map->Get(c.context, key).ToLocal(&value) && value->IsNumber()
                 ? value.As<v8::Number>()->Value()
                 : 0;
  if (method == kCountReset) {
    if (n == 0) c.Emit("warn", "Warning: Count for '" + label + "' does not exist");
    (void)map->Delete(c.context, key);
    return;
  }
  (void)map->Set(c.context, key, v8::Number::New(c.isolate, n + 1));
  c.Emit("count", label + ": " + std::to_string(static_cast<int64_t>(n + 1)));
}

void Run(Call& c, Method method) {
  const char* level = kMethods[method].level;
  switch (method) {
    case kTrace: {
      std::string text = c.args.empty() ? "Trace" : "Trace: " + c.Format();
      AppendCurrentFrames(c.isolate, text);
      c.Emit(level, std::move(text));
      return;
    }
    case kAssert: {
      if (!c.args.empty() && c.args[0]->BooleanValue(c.isolate)) return;
      c.Emit(level, c.args.size() > 1 ? "Assertion failed: " + c.Format(1) : "Assertion failed");
      return;
    }
    case kDir: {
      inspect::Options o;
      o.budget = c.Limit();
      c.Emit(level, c.args.empty() ? "undefined"
                                   : inspect::Inspect(c.context, c.args[0], o));
      return;
    }
    case kTime: case kTimeEnd: case kTimeLog:
      return Timer(c, method);
    case kCount: case kCountReset:
      return Counter(c, method);
    case kGroup: case kGroupCollapsed:
      if (!c.args.empty()) c.Emit(level, c.Format());
      (void)c.state->Set(c.context, kIndent, v8::Number::New(c.isolate, c.Indent() + 2));
      return;
    case kGroupEnd:
      (void)c.state->Set(c.context, kIndent, v8::Number::New(c.isolate, std::max(0, c.Indent() - 2)));
      return;
    default:
      c.Emit(level, c.Format());
  }
}

void Entry(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  v8::HandleScope scope(isolate);
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  info.GetReturnValue().SetUndefined();
  v8::Local<v8::Value> data = info.Data(), state, id;
  if (!data->IsArray() || !data.As<v8::Array>()->Get(context, 0).ToLocal(&state) ||
      !data.As<v8::Array>()->Get(context, 1).ToLocal(&id) || !state->IsArray() || !id->IsInt32()) {
    return;
  }
  int method = id.As<v8::Int32>()->Value();
  if (method < 0 || method >= kMethodCount) return;
  Call c{isolate, context, state.As<v8::Array>(), {}};
  for (int i = 0; i < info.Length(); ++i) c.args.push_back(info[i]);
  v8::TryCatch try_catch(isolate);   // console never throws
  Run(c, static_cast<Method>(method));
  // With an inspector: V8's own console method too, which reports the call to
  // it (Runtime.consoleAPICalled) and does nothing else.
  v8::Local<v8::Value> builtin;
  if (data.As<v8::Array>()->Length() > 2 && data.As<v8::Array>()->Get(context, 2).ToLocal(&builtin) &&
      builtin->IsFunction() && !isolate->IsExecutionTerminating()) {
    (void)builtin.As<v8::Function>()->Call(context, v8::Undefined(isolate), info.Length(),
                                           c.args.data());
  }
}

// V8's console method `name` of `context`, to forward to when the isolate has
// an inspector (otherwise, or if it is not V8's, undefined).
v8::Local<v8::Value> BuiltinMethod(IsolateHolder& holder, v8::Local<v8::Context> context,
                                   const char* name) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::Value> console, fn;
  if (holder.inspector() == nullptr ||
      !context->Global()->Get(context, v8::String::NewFromUtf8Literal(isolate, "console"))
           .ToLocal(&console) ||
      !console->IsObject() ||
      !console.As<v8::Object>()->Get(context, v8::String::NewFromUtf8(isolate, name).ToLocalChecked())
           .ToLocal(&fn) ||
      !fn->IsFunction() || fn.As<v8::Function>()->ScriptId() != v8::UnboundScript::kNoScriptId) {
    return v8::Undefined(isolate);   // (a function of a script: a snapshot's, not V8's)
  }
  return fn;
}

}  // namespace

bool InstallConsole(IsolateHolder& holder, v8::Local<v8::Context> context,
                    const HostOptions& options) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::Value> sink = v8::Undefined(isolate);
  if (options.console) {
    v8::Local<v8::Function> fn;
    if (!MakeHostFunction(holder, isolate, context, options.console, false).ToLocal(&fn)) {
      return false;
    }
    sink = fn;
  }
  v8::Local<v8::Value> slots[kSlotCount] = {
      sink, v8::Number::New(isolate, options.console_max_bytes), v8::Map::New(isolate),
      v8::Map::New(isolate), v8::Number::New(isolate, 0)};
  v8::Local<v8::Array> state = v8::Array::New(isolate, slots, kSlotCount);
  v8::Local<v8::Object> console = v8::Object::New(isolate);
  for (int i = 0; i < kMethodCount; ++i) {
    v8::Local<v8::Value> data_slots[3] = {state, v8::Integer::New(isolate, i),
                                          BuiltinMethod(holder, context, kMethods[i].name)};
    v8::Local<v8::Function> fn;
    if (!v8::Function::New(context, Entry, v8::Array::New(isolate, data_slots, 3), 0,
                           v8::ConstructorBehavior::kThrow)
             .ToLocal(&fn)) {
      return false;
    }
    v8::Local<v8::String> name = v8::String::NewFromUtf8(isolate, kMethods[i].name).ToLocalChecked();
    fn->SetName(name);
    if (!console->CreateDataProperty(context, name, fn).FromMaybe(false)) return false;
  }
  return context->Global()
      ->DefineOwnProperty(context, v8::String::NewFromUtf8Literal(isolate, "console"), console,
                          v8::DontEnum)
      .FromMaybe(false);
}

}  // namespace ivm
