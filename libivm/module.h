// module.h — the ivm_module handle shell, shared by module.cc (modules of
// inline isolates) and remote_modules.cc (modules in a worker). Not ABI.
#ifndef IVM_MODULE_H
#define IVM_MODULE_H

#include "context.h"

#include <memory>

namespace ivm {
class ModuleRecord;
struct RemoteModule;
inline constexpr char kModuleReleased[] = "Module has been released";
inline constexpr char kModuleNotInstantiated[] = "The module has not been instantiated";
}  // namespace ivm

// Inline, `holder`, `record` and `lease` are set; for a module of a
// worker-hosted isolate only `remote` is (remote.h).
struct ivm_module : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::ModuleRecord> record;
  std::shared_ptr<ivm::Lease> lease;
  std::shared_ptr<ivm::RemoteModule> remote;
};

#endif  // IVM_MODULE_H
