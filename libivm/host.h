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

// One function per item, each in its own file.
bool InstallConsole(IsolateHolder& holder, v8::Local<v8::Context> context,
                    const HostOptions& options);                          // host_console.cc
void InstallTimers(IsolateHolder& holder, v8::Local<v8::Context> context);  // host_timers.cc
bool InstallEncoding(IsolateHolder& holder, v8::Local<v8::Context> context);  // host_encoding.cc
bool InstallWeb(IsolateHolder& holder, v8::Local<v8::Context> context);       // host_web.cc

}  // namespace ivm

#endif  // IVM_HOST_H
