// host_console.cc — the `console` global (IVM_HOST_CONSOLE).
#include "host.h"

namespace ivm {

bool InstallConsole(IsolateHolder& holder, v8::Local<v8::Context> context,
                    const HostOptions& options) {
  (void)holder;
  (void)context;
  (void)options;
  return true;
}

}  // namespace ivm
