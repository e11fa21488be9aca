// host_timers.cc — setTimeout and friends (IVM_HOST_TIMERS). Slice `timers`
// fills this in; until then the bit installs nothing.
#include "host.h"

namespace ivm {

void InstallTimers(IsolateHolder& holder, v8::Local<v8::Context> context) {
  (void)holder;
  (void)context;
}

}  // namespace ivm
