// host_basics.cc — installs a context's opt-in host basics (host.h): one
// function per item, each in its own file.
#include "host.h"

namespace ivm {

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
