// module.h — the ivm_module handle shell, shared by module.cc (modules of
// inline isolates) and remote_modules.cc (modules in a worker). Not ABI.
#ifndef IVM_MODULE_H
#define IVM_MODULE_H

#include "context.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ivm {
class ModuleRecord;
struct RemoteModule;
inline constexpr char kModuleReleased[] = "Module has been released";
// The import attributes (V8 10.2: import assertions) of one import request,
// as (key, value) pairs in source order.
using ImportAttributes = std::vector<std::pair<std::string, std::string>>;
// A resolve function of either form, with its user data: `request` is used
// by the v2 form, `specifier` by the first.
struct Resolver {
  ivm_module_resolve_fn by_specifier = nullptr;
  ivm_module_resolve_request_fn by_request = nullptr;
  void* user_data = nullptr;
  ivm_error_t* operator()(std::string_view specifier, size_t request, ivm_module_t* referrer,
                          ivm_module_t** out) const {
    if (by_request != nullptr) return by_request(user_data, referrer, request, out);
    return by_specifier(user_data, specifier.data(), specifier.size(), referrer, out);
  }
};
inline constexpr char kModuleNotInstantiated[] = "The module has not been instantiated";
}  // namespace ivm

struct ivm_module : ivm::IsolateObject<ivm::ModuleRecord, ivm::RemoteModule> {};

#endif  // IVM_MODULE_H
