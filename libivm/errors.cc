// errors.cc — the owned error object of the ABI, and errors from JS exceptions.
//
// Reading a JavaScript error must not run JavaScript: `Error.prepareStackTrace`,
// getters on `name`/`message`/`stack` and Proxies are all user code, and user
// code could loop forever or throw while the host formats a failure. So names
// and messages are read from own data properties along the prototype chain
// (accessors and Proxies are never invoked), and the stack is formatted here
// from the frames V8 captured when the error was created or thrown.
#include "internal.h"
#include "callback.h"

#include <cmath>

namespace ivm {

const char kTimeoutMessage[] = "Script execution timed out.";
const char kDisposedMessage[] = "Isolate is disposed";

ivm_error_t* MakeError(ivm_error_kind_t kind, std::string message) {
  auto* err = new ivm_error();
  err->kind = kind;
  err->message = std::move(message);
  return err;
}

namespace {

// The value of a data property `key` of `object` or its prototypes, without
// running JavaScript: accessors and Proxies end the search with nothing.
v8::MaybeLocal<v8::Value> DataProperty(v8::Local<v8::Context> context,
                                       v8::Local<v8::Object> object,
                                       v8::Local<v8::Name> key) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::String> get_key = v8::String::NewFromUtf8Literal(isolate, "get");
  v8::Local<v8::String> set_key = v8::String::NewFromUtf8Literal(isolate, "set");
  v8::Local<v8::String> value_key = v8::String::NewFromUtf8Literal(isolate, "value");
  for (int depth = 0; depth < 64; ++depth) {
    if (object->IsProxy()) return {};
    v8::Local<v8::Value> desc;
    if (!object->GetOwnPropertyDescriptor(context, key).ToLocal(&desc)) return {};
    if (desc->IsObject()) {
      // A descriptor made by V8: an ordinary object with own fields only.
      v8::Local<v8::Object> d = desc.As<v8::Object>();
      if (d->HasOwnProperty(context, get_key).FromMaybe(true) ||
          d->HasOwnProperty(context, set_key).FromMaybe(true)) {
        return {};
      }
      if (!d->HasOwnProperty(context, value_key).FromMaybe(false)) return {};
      return d->Get(context, value_key);
    }
    v8::Local<v8::Value> proto = compat::GetPrototype(object);
    if (!proto->IsObject()) return {};
    object = proto.As<v8::Object>();
  }
  return {};
}

// A string for a primitive, computed by V8 without side effects.
std::string PrimitiveToString(v8::Isolate* isolate, v8::Local<v8::Context> context,
                              v8::Local<v8::Value> value) {
  std::string out;
  v8::Local<v8::String> str;
  if (value->IsString()) {
    str = value.As<v8::String>();
  } else if (!value->ToDetailString(context).ToLocal(&str)) {
    return out;
  }
  compat::AppendWtf8(isolate, str, out);
  return out;
}

std::string StringProperty(v8::Isolate* isolate, v8::Local<v8::Context> context,
                           v8::Local<v8::Object> object, const char* name, bool* found) {
  v8::Local<v8::Value> value;
  v8::Local<v8::String> key =
      v8::String::NewFromUtf8(isolate, name).ToLocalChecked();
  *found = false;
  if (!DataProperty(context, object, key).ToLocal(&value)) return {};
  if (value->IsObject() || value->IsUndefined()) return {};
  *found = true;
  return PrimitiveToString(isolate, context, value);
}

void AppendFrames(v8::Isolate* isolate, v8::Local<v8::StackTrace> trace, std::string& out) {
  int count = trace->GetFrameCount();
  for (int i = 0; i < count; ++i) {
    v8::Local<v8::StackFrame> frame = trace->GetFrame(isolate, i);
    std::string fn, script;
    v8::Local<v8::String> s = frame->GetFunctionName();
    if (!s.IsEmpty()) compat::AppendWtf8(isolate, s, fn);
    s = frame->GetScriptNameOrSourceURL();
    if (!s.IsEmpty()) compat::AppendWtf8(isolate, s, script);
    if (script.empty()) script = "<anonymous>";
    std::string where = script + ":" + std::to_string(frame->GetLineNumber()) + ":" +
                        std::to_string(frame->GetColumn());
    out += "\n    at ";
    if (frame->IsEval()) out += "eval ";
    if (fn.empty()) {
      out += where;
    } else {
      if (frame->IsConstructor()) out += "new ";
      out += fn + " (" + where + ")";
    }
  }
}

}  // namespace

void AppendCurrentFrames(v8::Isolate* isolate, std::string& out) {
  v8::HandleScope scope(isolate);
  v8::Local<v8::StackTrace> trace =
      v8::StackTrace::CurrentStackTrace(isolate, 16, v8::StackTrace::kDetailed);
  if (!trace.IsEmpty()) AppendFrames(isolate, trace, out);
}

ivm_error_t* ErrorFromException(v8::Isolate* isolate, v8::Local<v8::Context> context,
                                const v8::TryCatch& try_catch) {
  v8::HandleScope scope(isolate);
  return ErrorFromValue(isolate, context, try_catch.Exception(), try_catch.Message());
}

v8::Local<v8::Object> NewError(v8::Isolate* isolate, v8::Local<v8::Context> context,
                               const std::string& name, v8::Local<v8::String> message) {
  v8::Local<v8::Value> error;
  if (name == "TypeError") error = v8::Exception::TypeError(message);
  else if (name == "RangeError") error = v8::Exception::RangeError(message);
  else if (name == "SyntaxError") error = v8::Exception::SyntaxError(message);
  else if (name == "ReferenceError") error = v8::Exception::ReferenceError(message);
  else error = v8::Exception::Error(message);
  v8::Local<v8::Object> obj = error.As<v8::Object>();
  v8::Local<v8::String> own_name;
  bool standard = name.empty() || name == "Error" || name == "TypeError" ||
                  name == "RangeError" || name == "SyntaxError" || name == "ReferenceError";
  if (!standard && NewString(isolate, name.data(), name.size(), nullptr).ToLocal(&own_name)) {
    // Fails only when execution is terminating; the error is still usable.
    obj->DefineOwnProperty(context, v8::String::NewFromUtf8Literal(isolate, "name"), own_name,
                           v8::DontEnum)
        .FromMaybe(false);
  }
  return obj;
}

ivm_error_t* ErrorFromValue(v8::Isolate* isolate, v8::Local<v8::Context> context,
                            v8::Local<v8::Value> exception, v8::Local<v8::Message> message) {
  auto* err = new ivm_error();
  err->kind = IVM_ERROR_JS_EXCEPTION;
  v8::HandleScope scope(isolate);
  // Reading properties must not disturb the caller's exception state.
  v8::TryCatch inner(isolate);

  if (exception.IsEmpty()) {
    err->message = "Uncaught exception";
  } else if (!exception->IsObject()) {
    err->thrown_primitive = true;
    err->message = PrimitiveToString(isolate, context, exception);
  } else {
    v8::Local<v8::Object> object = exception.As<v8::Object>();
    bool has_name = false, has_message = false;
    if (!object->IsProxy()) {
      err->name = StringProperty(isolate, context, object, "name", &has_name);
      err->message = StringProperty(isolate, context, object, "message", &has_message);
    }
    if (!has_name && !has_message && !exception->IsNativeError()) {
      err->message = PrimitiveToString(isolate, context, exception);
    }
  }

  uint64_t token = 0;
  if (ReadHostToken(isolate, context, exception, &token)) err->host_token = token;

  std::string crossed;
  if (ReadCrossedStack(isolate, context, exception, &crossed)) {
    err->stack = std::move(crossed);
    return err;
  }

  // "Name: message", then the frames.
  if (err->name.empty()) {
    err->stack = err->message;
  } else if (err->message.empty()) {
    err->stack = err->name;
  } else {
    err->stack = err->name + ": " + err->message;
  }
  v8::Local<v8::StackTrace> trace;
  if (!exception.IsEmpty() && exception->IsObject()) {
    trace = v8::Exception::GetStackTrace(exception);
  }
  if ((trace.IsEmpty() || trace->GetFrameCount() == 0) && !message.IsEmpty()) {
    trace = message->GetStackTrace();
  }
  if (!trace.IsEmpty() && trace->GetFrameCount() > 0) {
    AppendFrames(isolate, trace, err->stack);
  } else if (!message.IsEmpty()) {
    // No frames (a syntax error, or code that never started): the location.
    std::string script;
    v8::Local<v8::Value> name = message->GetScriptResourceName();
    if (!name.IsEmpty() && name->IsString()) {
      compat::AppendWtf8(isolate, name.As<v8::String>(), script);
    }
    if (script.empty()) script = "<anonymous>";
    int line = message->GetLineNumber(context).FromMaybe(0);
    int column = message->GetStartColumn(context).FromMaybe(0) + 1;
    err->stack += "\n    at " + script + ":" + std::to_string(line) + ":" +
                  std::to_string(column);
  }
  return err;
}

}  // namespace ivm

// ---------------------------------------------------------------------------
// ABI

extern "C" {

IVM_API ivm_error_kind_t ivm_error_kind(const ivm_error_t* err) {
  return err ? err->kind : static_cast<ivm_error_kind_t>(IVM_ERROR_INVALID_ARGUMENT);
}

static void Borrow(const std::string* s, const char** out, size_t* out_len) {
  static const char empty[] = "";
  if (out) *out = s ? s->data() : empty;
  if (out_len) *out_len = s ? s->size() : 0;
}

IVM_API void ivm_error_message(const ivm_error_t* err, const char** out, size_t* out_len) {
  Borrow(err ? &err->message : nullptr, out, out_len);
}

IVM_API void ivm_error_name(const ivm_error_t* err, const char** out, size_t* out_len) {
  Borrow(err ? &err->name : nullptr, out, out_len);
}

IVM_API void ivm_error_stack(const ivm_error_t* err, const char** out, size_t* out_len) {
  Borrow(err ? &err->stack : nullptr, out, out_len);
}

IVM_API int ivm_error_thrown_primitive(const ivm_error_t* err) {
  return err && err->thrown_primitive ? 1 : 0;
}

IVM_API void ivm_error_free(ivm_error_t* err) {
  if (err != ivm::interrupt::Static()) delete err;   // (the static one stays)
}

}  // extern "C"
