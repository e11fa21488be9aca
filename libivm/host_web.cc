// host_web.cc — structuredClone, performance.now and crypto (IVM_HOST_WEB).
//
// structuredClone runs V8's own serializer and deserializer inside the
// isolate (no copy leaves it); transferred ArrayBuffers are detached and
// their memory moves to the clone. performance.now() counts from the
// context's creation on a monotonic clock, coarsened to 5 µs. crypto reads
// the operating system's generator (getrandom).
#include "host.h"

#include <sys/random.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace ivm {
namespace {

constexpr size_t kMaxRandomBytes = 65536;
constexpr double kResolutionMs = 0.005;

class CloneDelegate final : public v8::ValueSerializer::Delegate,
                            public v8::ValueDeserializer::Delegate {
 public:
  explicit CloneDelegate(v8::Isolate* isolate) : isolate_(isolate) {}
  void ThrowDataCloneError(v8::Local<v8::String> message) override {
    std::string text;
    compat::AppendWtf8(isolate_, message, text);
    ThrowNamedError(isolate_, "DataCloneError", text);
  }
  // SharedArrayBuffers are refused (V8 10.2's deserializer mishandles an
  // embedder's id for them).
  v8::Maybe<uint32_t> GetSharedArrayBufferId(v8::Isolate*,
                                             v8::Local<v8::SharedArrayBuffer>) override {
    ThrowNamedError(isolate_, "DataCloneError",
                    "structuredClone: a SharedArrayBuffer cannot be cloned");
    return v8::Nothing<uint32_t>();
  }
  v8::Maybe<uint32_t> GetWasmModuleTransferId(v8::Isolate*,
                                              v8::Local<v8::WasmModuleObject>) override {
    ThrowNamedError(isolate_, "DataCloneError",
                    "structuredClone: a WebAssembly.Module cannot be cloned");
    return v8::Nothing<uint32_t>();
  }

 private:
  v8::Isolate* isolate_;
};

// The ArrayBuffers of the `transfer` option, checked: no duplicates, none
// detached or not detachable. False with an exception thrown.
bool TransferList(v8::Local<v8::Context> context, v8::Local<v8::Value> options,
                  std::vector<v8::Local<v8::ArrayBuffer>>* out) {
  v8::Isolate* isolate = context->GetIsolate();
  if (options->IsUndefined() || options->IsNull()) return true;
  if (!options->IsObject()) {
    isolate->ThrowException(v8::Exception::TypeError(v8::String::NewFromUtf8Literal(
        isolate, "structuredClone: the options must be an object")));
    return false;
  }
  v8::Local<v8::Value> list;
  if (!options.As<v8::Object>()
           ->Get(context, v8::String::NewFromUtf8Literal(isolate, "transfer"))
           .ToLocal(&list)) {
    return false;
  }
  if (list->IsUndefined()) return true;
  if (!list->IsArray()) {
    isolate->ThrowException(v8::Exception::TypeError(v8::String::NewFromUtf8Literal(
        isolate, "structuredClone: transfer must be an array of ArrayBuffers")));
    return false;
  }
  v8::Local<v8::Array> array = list.As<v8::Array>();
  for (uint32_t i = 0; i < array->Length(); ++i) {
    v8::Local<v8::Value> item;
    if (!array->Get(context, i).ToLocal(&item)) return false;
    if (!item->IsArrayBuffer()) {
      ThrowNamedError(isolate, "DataCloneError",
                      "structuredClone: only ArrayBuffers can be transferred");
      return false;
    }
    v8::Local<v8::ArrayBuffer> buffer = item.As<v8::ArrayBuffer>();
    for (const auto& seen : *out) {
      if (seen == buffer) {
        ThrowNamedError(isolate, "DataCloneError",
                        "structuredClone: an ArrayBuffer is transferred twice");
        return false;
      }
    }
    if (!buffer->IsDetachable() || buffer->WasDetached()) {
      ThrowNamedError(isolate, "DataCloneError",
                      "structuredClone: an ArrayBuffer is detached or cannot be detached");
      return false;
    }
    out->push_back(buffer);
  }
  return true;
}

void StructuredClone(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  if (info.Length() == 0) {
    isolate->ThrowException(v8::Exception::TypeError(
        v8::String::NewFromUtf8Literal(isolate, "structuredClone requires 1 argument")));
    return;
  }
  std::vector<v8::Local<v8::ArrayBuffer>> transfer;
  if (!TransferList(context, info[1], &transfer)) return;
  CloneDelegate delegate(isolate);
  v8::ValueSerializer serializer(isolate, &delegate);
  for (size_t i = 0; i < transfer.size(); ++i) {
    serializer.TransferArrayBuffer(static_cast<uint32_t>(i), transfer[i]);
  }
  serializer.WriteHeader();
  if (!serializer.WriteValue(context, info[0]).FromMaybe(false)) return;
  std::pair<uint8_t*, size_t> bytes = serializer.Release();
  std::unique_ptr<uint8_t, void (*)(void*)> owned(bytes.first, std::free);
  v8::ValueDeserializer deserializer(isolate, bytes.first, bytes.second, &delegate);
  for (size_t i = 0; i < transfer.size(); ++i) {
    std::shared_ptr<v8::BackingStore> store = transfer[i]->GetBackingStore();
    transfer[i]->Detach();
    deserializer.TransferArrayBuffer(static_cast<uint32_t>(i), v8::ArrayBuffer::New(isolate, store));
  }
  v8::Local<v8::Value> result;
  if (!deserializer.ReadHeader(context).FromMaybe(false) ||
      !deserializer.ReadValue(context).ToLocal(&result)) {
    return;
  }
  info.GetReturnValue().Set(result);
}

double SteadyMs() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

void Now(const v8::FunctionCallbackInfo<v8::Value>& info) {
  double origin = info.Data().As<v8::Number>()->Value();
  double ms = std::floor((SteadyMs() - origin) / kResolutionMs) * kResolutionMs;
  info.GetReturnValue().Set(std::max(ms, 0.0));
}

// Fills `length` bytes from the operating system's generator.
bool Random(void* data, size_t length) {
  auto* p = static_cast<uint8_t*>(data);
  while (length > 0) {
    ssize_t n = getrandom(p, length, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}

void ThrowNoRandom(v8::Isolate* isolate) {
  isolate->ThrowException(v8::Exception::Error(v8::String::NewFromUtf8Literal(
      isolate, "crypto: the operating system's random generator failed")));
}

void GetRandomValues(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Value> arg = info[0];
  bool integer = arg->IsInt8Array() || arg->IsUint8Array() || arg->IsUint8ClampedArray() ||
                 arg->IsInt16Array() || arg->IsUint16Array() || arg->IsInt32Array() ||
                 arg->IsUint32Array() || arg->IsBigInt64Array() || arg->IsBigUint64Array();
  if (!integer) {
    if (arg->IsTypedArray()) {
      return ThrowNamedError(isolate, "TypeMismatchError",
                             "crypto.getRandomValues: the array must be an integer typed array");
    }
    isolate->ThrowException(v8::Exception::TypeError(v8::String::NewFromUtf8Literal(
        isolate, "crypto.getRandomValues: the argument must be an integer typed array")));
    return;
  }
  v8::Local<v8::TypedArray> array = arg.As<v8::TypedArray>();
  size_t length = array->ByteLength();
  if (length > kMaxRandomBytes) {
    return ThrowNamedError(isolate, "QuotaExceededError",
                           "crypto.getRandomValues: " + std::to_string(length) +
                               " bytes asked for, at most 65536 allowed");
  }
  if (length > 0) {
    auto* p = static_cast<uint8_t*>(array->Buffer()->GetBackingStore()->Data()) + array->ByteOffset();
    if (!Random(p, length)) return ThrowNoRandom(info.GetIsolate());
  }
  info.GetReturnValue().Set(array);
}

void RandomUuid(const v8::FunctionCallbackInfo<v8::Value>& info) {
  uint8_t b[16];
  if (!Random(b, sizeof b)) return ThrowNoRandom(info.GetIsolate());
  b[6] = static_cast<uint8_t>((b[6] & 0x0F) | 0x40);   // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3F) | 0x80);   // variant 10
  char text[37];
  std::snprintf(text, sizeof text,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  info.GetReturnValue().Set(
      v8::String::NewFromUtf8(info.GetIsolate(), text).ToLocalChecked());
}

bool DefineObject(v8::Local<v8::Context> context, const char* name, v8::Local<v8::Object> value) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::String> key;
  return v8::String::NewFromUtf8(isolate, name).ToLocal(&key) &&
         context->Global()->DefineOwnProperty(context, key, value, v8::DontEnum).FromMaybe(false);
}

}  // namespace

bool InstallWeb(IsolateHolder& holder, v8::Local<v8::Context> context) {
  (void)holder;
  v8::Isolate* isolate = context->GetIsolate();
  v8::Local<v8::Object> performance = v8::Object::New(isolate);
  v8::Local<v8::Object> crypto = v8::Object::New(isolate);
  double origin = SteadyMs();
  double epoch_ms = std::chrono::duration<double, std::milli>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  return DefineNatives(context, context->Global(), {{"structuredClone", StructuredClone}}) &&
         DefineNatives(context, performance, {{"now", Now}}, v8::Number::New(isolate, origin)) &&
         performance
             ->DefineOwnProperty(context, v8::String::NewFromUtf8Literal(isolate, "timeOrigin"),
                                 v8::Number::New(isolate, std::floor(epoch_ms / kResolutionMs) *
                                                              kResolutionMs),
                                 static_cast<v8::PropertyAttribute>(v8::ReadOnly))
             .FromMaybe(false) &&
         DefineNatives(context, crypto,
                       {{"getRandomValues", GetRandomValues}, {"randomUUID", RandomUuid}}) &&
         DefineObject(context, "performance", performance) &&
         DefineObject(context, "crypto", crypto);
}

}  // namespace ivm
