// host_inspect.h — formats JavaScript values as node's util.inspect does, for
// console (host_console.cc). It runs no JavaScript: getters are shown, never
// called; Proxies are shown as their targets without running traps; names
// and error stacks are read from data properties and V8's captured frames.
// Nothing here is ABI.
#ifndef IVM_HOST_INSPECT_H
#define IVM_HOST_INSPECT_H

#include "internal.h"

#include <string>
#include <vector>

namespace ivm::inspect {

struct Options {
  int depth = 2;           // nesting shown before [Object]
  size_t budget = 16384;   // roughly how many bytes to produce before stopping
};

// `value` as util.inspect(value) shows it (strings quoted).
std::string Inspect(v8::Local<v8::Context> context, v8::Local<v8::Value> value,
                    const Options& options);

// node's util.format(...args): printf-style directives in a first string
// argument (%s %d %i %f %j %o %O %c %%), the rest joined by spaces, strings
// plain and other values inspected.
std::string Format(v8::Local<v8::Context> context, const std::vector<v8::Local<v8::Value>>& args,
                   size_t budget);

// Appends up to `max_units` UTF-16 units of `str` as UTF-8 (lone surrogates
// as U+FFFD); returns how many units it left out.
size_t AppendString(v8::Isolate* isolate, v8::Local<v8::String> str, size_t max_units,
                    std::string& out);

}  // namespace ivm::inspect

#endif  // IVM_HOST_INSPECT_H
