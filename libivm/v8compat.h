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
#if __has_include(<v8-inspector.h>)
#include <v8-inspector.h>   // (not among the headers node ships: inspector.cc only)
#define IVM_HAS_V8_INSPECTOR 1
#endif

#include <cstddef>
#include <cstdint>
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

// The origin of an ES module (is_module set).
inline v8::ScriptOrigin MakeModuleOrigin(v8::Isolate* isolate, v8::Local<v8::Value> name,
                                         int line_offset, int column_offset) {
#if IVM_V8_MODERN
  (void)isolate;
  return v8::ScriptOrigin(name, line_offset, column_offset, false, -1, v8::Local<v8::Value>(),
                          false, false, true);
#else
  return v8::ScriptOrigin(isolate, name, line_offset, column_offset, false, -1,
                          v8::Local<v8::Value>(), false, false, true);
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
// One-byte strings (the common case) are copied and transcoded here, which
// is several times faster than V8's UTF-8 writer for short strings.
inline void AppendWtf8(v8::Isolate* isolate, v8::Local<v8::String> str, std::string& out) {
  if (str->IsOneByte()) {
    int n = str->Length();
    size_t base = out.size();
    out.resize(base + static_cast<size_t>(n));
    auto* p = reinterpret_cast<uint8_t*>(out.data() + base);
#if V8_MAJOR_VERSION >= 13
    str->WriteOneByteV2(isolate, 0, static_cast<uint32_t>(n), p);
#else
    str->WriteOneByte(isolate, p, 0, n, v8::String::NO_NULL_TERMINATION);
#endif
    size_t high = 0;
    for (int i = 0; i < n; ++i) high += p[i] >> 7;
    if (high == 0) return;
    // Latin-1 → UTF-8, in place from the end.
    out.resize(base + static_cast<size_t>(n) + high);
    p = reinterpret_cast<uint8_t*>(out.data() + base);
    size_t w = static_cast<size_t>(n) + high;
    for (int i = n - 1; i >= 0; --i) {
      uint8_t c = p[i];
      if (c < 0x80) {
        p[--w] = c;
      } else {
        p[--w] = static_cast<uint8_t>(0x80 | (c & 0x3F));
        p[--w] = static_cast<uint8_t>(0xC0 | (c >> 6));
      }
    }
    return;
  }
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

#ifdef IVM_HAS_V8_INSPECTOR
// A protocol session with full trust (the embedder's own): V8 11 added the
// trust level, and dropped the three-argument connect in 12.
inline std::unique_ptr<v8_inspector::V8InspectorSession> ConnectInspector(
    v8_inspector::V8Inspector& inspector, int context_group_id,
    v8_inspector::V8Inspector::Channel* channel) {
#if IVM_V8_MODERN
  return inspector.connect(context_group_id, channel, v8_inspector::StringView(),
                           v8_inspector::V8Inspector::kFullyTrusted);
#else
  return inspector.connect(context_group_id, channel, v8_inspector::StringView());
#endif
}
#endif  // IVM_HAS_V8_INSPECTOR

}  // namespace ivm::compat

#endif  // IVM_V8COMPAT_H
