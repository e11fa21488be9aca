// stack.cc — the calling thread's stack bounds (stack.h).
#include "stack.h"

#include <pthread.h>

#include <cstdint>

namespace ivm {

namespace {

// The lowest address of this thread's stack, looked up once per thread; 0 if
// the system does not say.
uintptr_t StackBottom() {
  thread_local const uintptr_t bottom = [] {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return uintptr_t{0};
    void* addr = nullptr;
    size_t size = 0;
    uintptr_t out = 0;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) out = reinterpret_cast<uintptr_t>(addr);
    pthread_attr_destroy(&attr);
    return out;
  }();
  return bottom;
}

}  // namespace

size_t StackLeft() {
  uintptr_t bottom = StackBottom();
  uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  if (bottom == 0 || here < bottom) return SIZE_MAX;
  return here - bottom;
}

}  // namespace ivm
