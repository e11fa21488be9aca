// v8compat.h — the one place where libivm's sources depend on the V8 version.
//
// libivm links against V8 10.2 (Debian's libnode108) and must also compile
// against newer V8 (13.x, as shipped with node 24). Every call whose signature
// or spelling differs between those versions goes through a helper here; the
// rest of libivm uses only APIs that are the same in both.
#ifndef IVM_V8COMPAT_H
#define IVM_V8COMPAT_H

#include <v8.h>
#include <v8-version.h>
#include <libplatform/libplatform.h>

#include <cstddef>
#include <string>

namespace ivm::compat {

#if V8_MAJOR_VERSION >= 12
#define IVM_V8_MODERN 1
#else
#define IVM_V8_MODERN 0
#endif

// ScriptOrigin lost its Isolate* parameter in V8 11.x.
inline v8::ScriptOrigin MakeOrigin(v8::Isolate* isolate, v8::Local<v8::Value> name,
                                   int line_offset, int column_offset) {
#if IVM_V8_MODERN
  (void)isolate;
  return v8::ScriptOrigin(name, line_offset, column_offset);
#else
  return v8::ScriptOrigin(isolate, name, line_offset, column_offset);
#endif
}

// Object::GetPrototype was renamed GetPrototypeV2 (with __proto__ semantics
// unchanged for ordinary objects) in V8 13.
inline v8::Local<v8::Value> GetPrototype(v8::Local<v8::Object> object) {
#if V8_MAJOR_VERSION >= 13
  return object->GetPrototypeV2();
#else
  return object->GetPrototype();
#endif
}

// Appends the WTF-8 form of `str` to `out`: lone surrogates become their
// 3-byte encoding instead of U+FFFD, so every JS string survives the trip.
inline void AppendWtf8(v8::Isolate* isolate, v8::Local<v8::String> str, std::string& out) {
#if V8_MAJOR_VERSION >= 13
  size_t len = str->Utf8LengthV2(isolate);
  size_t base = out.size();
  out.resize(base + len);
  str->WriteUtf8V2(isolate, out.data() + base, len, v8::String::WriteFlags::kNone);
#else
  int len = str->Utf8Length(isolate);
  size_t base = out.size();
  out.resize(base + static_cast<size_t>(len));
  str->WriteUtf8(isolate, out.data() + base, len, nullptr,
                 v8::String::NO_NULL_TERMINATION);
#endif
}

// Platform creation: the same call everywhere, kept here with its options.
inline std::unique_ptr<v8::Platform> NewPlatform() {
  return v8::platform::NewDefaultPlatform(0, v8::platform::IdleTaskSupport::kDisabled,
                                          v8::platform::InProcessStackDumping::kDisabled);
}

}  // namespace ivm::compat

#endif  // IVM_V8COMPAT_H
