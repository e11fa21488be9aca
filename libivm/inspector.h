// inspector.h — V8's inspector for one isolate (ivm_isolate_options_t.inspector),
// as the rest of libivm sees it: contexts reported as they come and go, and
// disposal. Everything that needs V8's inspector headers (the client, its pause
// loop, the queue of protocol messages, the sessions and their ABI) lives in
// inspector.cc alone. Nothing here is ABI.
#ifndef IVM_INSPECTOR_H
#define IVM_INSPECTOR_H

#include "internal.h"

#include <memory>
#include <string_view>

namespace ivm {

class Inspector {
 public:
  // Isolate locked and entered, a HandleScope open.
  static std::shared_ptr<Inspector> Create(IsolateHolder& holder);
  virtual ~Inspector() = default;

  // Isolate locked: contexts as they are made and go. `is_default`: a user
  // context (DevTools evaluates its console there).
  virtual void ContextCreated(v8::Local<v8::Context> context, std::string_view name,
                              bool is_default) = 0;
  virtual void ContextDestroyed(v8::Local<v8::Context> context) = 0;
  // Isolate locked (disposal): disconnects every session and ends the inspector.
  virtual void DisposeLocked() = 0;
};

// The inspector of the isolate `isolate` (nullptr: none). Isolate locked.
Inspector* InspectorOf(v8::Isolate* isolate);

}  // namespace ivm

#endif  // IVM_INSPECTOR_H
