// host.h — the opt-in host basics of a context (ivm_context_options_t.host):
// console, timers, encoding and web globals. Nothing here is ABI.
#ifndef IVM_HOST_H
#define IVM_HOST_H

#include "internal.h"

namespace ivm {

struct CallbackData;   // callback.h

// What a context's host basics are made with.
struct HostOptions {
  uint32_t host = 0;                      // IVM_HOST_* bits, validated
  std::shared_ptr<CallbackData> console;  // NULL: console lines go to stderr
  uint32_t console_max_bytes = 16384;     // per console call, never 0
};

inline constexpr uint32_t kHostAll =
    IVM_HOST_CONSOLE | IVM_HOST_TIMERS | IVM_HOST_ENCODING | IVM_HOST_WEB;
inline constexpr uint32_t kDefaultConsoleMaxBytes = 16384;

// host_basics.cc: installs what `options.host` asks for on `context`'s global
// (isolate locked; enters `context` itself). False with a pending or caught
// failure: the context is then unusable and its creation fails.
bool InstallHostBasics(IsolateHolder& holder, v8::Local<v8::Context> context,
                       const HostOptions& options);

// A native function of the host basics: its name and callback.
struct Native {
  const char* name;
  v8::FunctionCallback fn;
};

// Defines `natives` as non-enumerable methods of `target` (made with `data`).
bool DefineNatives(v8::Local<v8::Context> context, v8::Local<v8::Object> target,
                   std::initializer_list<Native> natives,
                   v8::Local<v8::Value> data = v8::Local<v8::Value>());

// Runs `source`, a function expression, in `context` (under the script name
// `name`) and calls it with an object of `natives`: for host basics whose
// shape (classes, getters) is simplest written in JavaScript around native
// code. It runs before any user code, so it sees the pristine built-ins; the
// natives stay reachable only through what it keeps.
bool RunInstaller(v8::Local<v8::Context> context, const char* name, const char* source,
                  std::initializer_list<Native> natives);

// Throws an Error whose `name` is `name` (a DOMException's name, e.g.
// "InvalidCharacterError"), as web APIs throw DOMExceptions.
void ThrowNamedError(v8::Isolate* isolate, const char* name, const std::string& message);

// A new Uint8Array of `length` bytes (copied from `data` unless NULL), in
// memory the isolate's limit counts; empty with a RangeError thrown if it does
// not fit.
v8::MaybeLocal<v8::Uint8Array> NewBytes(v8::Isolate* isolate, const void* data, size_t length);

// The bytes of a BufferSource (an ArrayBuffer, SharedArrayBuffer or view); false
// if `value` is none. Valid until JavaScript runs.
bool ReadBytes(v8::Local<v8::Value> value, const uint8_t** data, size_t* length);

// One function per item, each in its own file.
bool InstallConsole(IsolateHolder& holder, v8::Local<v8::Context> context,
                    const HostOptions& options);                          // host_console.cc
void InstallTimers(IsolateHolder& holder, v8::Local<v8::Context> context);  // host_timers.cc
bool InstallEncoding(IsolateHolder& holder, v8::Local<v8::Context> context);  // host_encoding.cc
bool InstallWeb(IsolateHolder& holder, v8::Local<v8::Context> context);       // host_web.cc

}  // namespace ivm

#endif  // IVM_HOST_H
