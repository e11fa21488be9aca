// snapshot.h — snapshots in ivm's header (snapshot.cc): checked here, before
// V8 sees them. Nothing here is ABI.
#ifndef IVM_SNAPSHOT_H
#define IVM_SNAPSHOT_H

#include "internal.h"

#include <string_view>

namespace ivm::snapshot {

// V8's blob inside `bytes` (a snapshot's ivm_snapshot_data) if its header
// names this ivm and V8 build, its length and checksum hold and V8 accepts
// its version; otherwise INVALID_ARGUMENT saying which check failed.
ivm_error_t* Check(std::string_view bytes, std::string_view* blob);

}  // namespace ivm::snapshot

#endif  // IVM_SNAPSHOT_H
