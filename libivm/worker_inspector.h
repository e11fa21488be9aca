// worker_inspector.h — the worker's inspector ops (worker_inspector.cc).
// Worker-only; not ABI.
#ifndef IVM_WORKER_INSPECTOR_H
#define IVM_WORKER_INSPECTOR_H

#include "worker_server.h"

namespace ivm::worker {

// Runs inspector op `op` (kOpInspectorSessionNew, Dispatch or SessionFree) of
// isolate `iso_id`; `r` is after the isolate id. None is answered; none
// blocks. The reading thread only.
void InspectorCall(Channel& channel, Ops& ops, uint32_t op, uint64_t iso_id, wire::Reader& r);

}  // namespace ivm::worker

#endif  // IVM_WORKER_INSPECTOR_H
