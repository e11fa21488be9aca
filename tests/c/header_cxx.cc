// ivm.h must compile as C++ (-Wall -Wextra -pedantic -Werror), included twice so that a
// missing include guard or a non-idempotent definition shows: built by `meson test`
// (header-cxx).
#include "ivm.h"
#include "ivm.h"

static_assert(IVM_VERSION_NUMBER ==
                  IVM_VERSION_MAJOR * 1000000 + IVM_VERSION_MINOR * 1000 + IVM_VERSION_PATCH,
              "IVM_VERSION_NUMBER is major*1000000 + minor*1000 + patch");
static_assert(sizeof(decltype(ivm_version())) > 0, "ivm_version() is declared");

extern "C" int ivm_header_cxx_check();
int ivm_header_cxx_check() { return IVM_VERSION_MAJOR >= 0; }
