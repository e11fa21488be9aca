// remote_snapshot.cc — snapshots made in a throw-away worker process
// (ivm_snapshot_create with IVM_PLACEMENT_PROCESS): V8 aborts the process
// that serializes a heap it cannot serialize, so that process is a worker,
// whose death becomes an error. The worker's side is worker_server.cc
// (SNAPSHOT_CREATE, docs/wire-protocol.md).
#include "remote.h"
#include "snapshot.h"
#include "worker_process.h"

namespace ivm::remote {

ivm_error_t* CreateSnapshot(const std::vector<std::pair<std::string_view, std::string_view>>& scripts,
                            const std::string_view* warmup, uint64_t timeout_ns,
                            std::string* out) {
  std::shared_ptr<WorkerProcess> worker;
  if (ivm_error_t* err = WorkerProcess::Start(WorkerLimits{}, &worker)) return err;
  // An isolate record only for the CALL's framing; the worker makes none.
  auto iso = std::make_shared<RemoteIsolate>(worker, true, 0);
  uint64_t id;
  wire::Writer w = iso->Begin(wire::kOpSnapshotCreate, &id);
  w.U32(static_cast<uint32_t>(scripts.size()));
  for (const auto& [code, filename] : scripts) w.Bytes(code).Bytes(filename);
  w.U8(warmup ? 1 : 0).Bytes(warmup ? *warmup : std::string_view()).U64(timeout_ns);
  std::string frame = w.Finish();
  if (frame.empty()) return InvalidArgument("the snapshot's scripts are over 16 MiB");
  std::string bytes;
  Parse parse = [&](wire::Reader& r, ivm_completion_t*) -> ivm_error_t* {
    std::string_view data;
    if (!r.Bytes(&data) || !r.Done()) return iso->worker().BadReply("malformed snapshot");
    bytes.assign(data);
    return nullptr;
  };
  ivm_error_t* err = Sync(*iso, id, frame, timeout_ns, parse, nullptr);
  iso->MarkDisposed();
  if (err != nullptr && err->kind == IVM_ERROR_CRASHED) {
    std::string why = "V8 could not make the snapshot (a heap it cannot serialize?); its worker "
                      "process died: " + err->message;
    ivm_error_free(err);
    return InvalidArgument(why);
  }
  if (err) return err;
  std::string_view blob;   // a worker's bytes are checked like any others
  if (ivm_error_t* bad = snapshot::Check(bytes, &blob)) {
    ivm_error_free(bad);
    return iso->worker().BadReply("a snapshot that does not check");
  }
  *out = std::move(bytes);
  return nullptr;
}

}  // namespace ivm::remote
