// host_basics.cc — installs a context's opt-in host basics (host.h): one
// function per item, each in its own file.
#include "host.h"

#include <cstring>

namespace ivm {

bool DefineNatives(v8::Local<v8::Context> context, v8::Local<v8::Object> target,
                   std::initializer_list<Native> natives, v8::Local<v8::Value> data) {
  v8::Isolate* isolate = context->GetIsolate();
  for (const Native& native : natives) {
    v8::Local<v8::Function> fn;
    v8::Local<v8::String> name;
    if (!v8::Function::New(context, native.fn, data, 0, v8::ConstructorBehavior::kThrow)
             .ToLocal(&fn) ||
        !v8::String::NewFromUtf8(isolate, native.name).ToLocal(&name)) {
      return false;
    }
    fn->SetName(name);
    if (!target->DefineOwnProperty(context, name, fn, v8::DontEnum).FromMaybe(false)) return false;
  }
  return true;
}

bool RunInstaller(v8::Local<v8::Context> context, const char* name, const char* source,
                  std::initializer_list<Native> natives) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::String> code, script_name;
  v8::Local<v8::Script> script;
  v8::Local<v8::Value> fn;
  v8::Local<v8::Object> holder = v8::Object::New(isolate, v8::Null(isolate), nullptr, nullptr, 0);
  if (!v8::String::NewFromUtf8(isolate, source).ToLocal(&code) ||
      !v8::String::NewFromUtf8(isolate, name).ToLocal(&script_name) ||
      !DefineNatives(context, holder, natives)) {
    return false;
  }
  v8::ScriptOrigin origin = compat::MakeOrigin(isolate, script_name, 0, 0);
  if (!v8::Script::Compile(context, code, &origin).ToLocal(&script) ||
      !script->Run(context).ToLocal(&fn) || !fn->IsFunction()) {
    return false;
  }
  v8::Local<v8::Value> argv[1] = {holder};
  return !fn.As<v8::Function>()->Call(context, v8::Undefined(isolate), 1, argv).IsEmpty();
}

v8::MaybeLocal<v8::Uint8Array> NewBytes(v8::Isolate* isolate, const void* data, size_t length) {
  auto* holder = static_cast<IsolateHolder*>(isolate->GetData(0));
  std::vector<uint8_t> zeros;
  if (data == nullptr) {
    zeros.resize(length);
    data = zeros.data();
  }
  std::shared_ptr<v8::BackingStore> store = holder->NewBuffer(data, length);
  if (!store) {
    isolate->ThrowException(v8::Exception::RangeError(
        v8::String::NewFromUtf8Literal(isolate, "Array buffer allocation failed")));
    return {};
  }
  v8::Local<v8::ArrayBuffer> buffer = v8::ArrayBuffer::New(isolate, std::move(store));
  return v8::Uint8Array::New(buffer, 0, length);
}

bool ReadBytes(v8::Local<v8::Value> value, const uint8_t** data, size_t* length) {
  std::shared_ptr<v8::BackingStore> store;
  size_t offset = 0;
  if (value->IsArrayBufferView()) {
    v8::Local<v8::ArrayBufferView> view = value.As<v8::ArrayBufferView>();
    store = view->Buffer()->GetBackingStore();
    offset = view->ByteOffset();
    *length = view->ByteLength();
  } else if (value->IsArrayBuffer()) {
    store = value.As<v8::ArrayBuffer>()->GetBackingStore();
    *length = store->ByteLength();
  } else if (value->IsSharedArrayBuffer()) {
    store = value.As<v8::SharedArrayBuffer>()->GetBackingStore();
    *length = store->ByteLength();
  } else {
    return false;
  }
  // The isolate keeps the store alive while the value lives.
  *data = store->Data() == nullptr ? reinterpret_cast<const uint8_t*>("")
                                   : static_cast<const uint8_t*>(store->Data()) + offset;
  return true;
}

void ThrowNamedError(v8::Isolate* isolate, const char* name, const std::string& message) {
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  v8::Local<v8::String> text;
  if (!NewString(isolate, message.data(), message.size(), nullptr).ToLocal(&text)) return;
  v8::Local<v8::Object> error = NewError(isolate, context, name, text);
  // DOMException's legacy codes for the names host basics throw.
  static const std::pair<const char*, int> kCodes[] = {
      {"InvalidCharacterError", 5}, {"TypeMismatchError", 17}, {"QuotaExceededError", 22},
      {"DataCloneError", 25}};
  for (const auto& [known, code] : kCodes) {
    if (std::strcmp(known, name) == 0) {
      error->DefineOwnProperty(context, v8::String::NewFromUtf8Literal(isolate, "code"),
                               v8::Integer::New(isolate, code), v8::DontEnum)
          .FromMaybe(false);
    }
  }
  isolate->ThrowException(error);
}

bool InstallHostBasics(IsolateHolder& holder, v8::Local<v8::Context> context,
                       const HostOptions& options) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::HandleScope scope(isolate);
  v8::Context::Scope context_scope(context);
  v8::TryCatch try_catch(isolate);
  if ((options.host & IVM_HOST_CONSOLE) && !InstallConsole(holder, context, options)) return false;
  if (options.host & IVM_HOST_TIMERS) InstallTimers(holder, context);
  if ((options.host & IVM_HOST_ENCODING) && !InstallEncoding(holder, context)) return false;
  if ((options.host & IVM_HOST_WEB) && !InstallWeb(holder, context)) return false;
  return !try_catch.HasCaught();
}

}  // namespace ivm
