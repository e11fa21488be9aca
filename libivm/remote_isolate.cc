// remote_isolate.cc — the host's records of isolates, contexts and scripts
// that live in a worker process, and the common part of their protocol: the
// CALL frame's head and the REPLY's error and times (docs/wire-protocol.md).
// Nothing the worker sends is trusted: a malformed reply kills it.
#include "remote.h"

#include "catastrophic.h"
#include "worker_process.h"

namespace ivm {

void RemoteIsolate::Arm(std::shared_ptr<CatastrophicReport> report) {
  if (!report) return;
  catastrophic_ = report;
  death_listener_ = worker_->AddDeathListener(
      [report](const std::string& cause) { report->ReportLater(cause); });
}

void RemoteIsolate::Disarm() {
  if (!catastrophic_) return;
  worker_->RemoveDeathListener(death_listener_);
  // A report running on its thread is waited for, except on the I/O thread
  // (which it may wait for).
  catastrophic_->Disarm(!OnIoThread());
}

RemoteIsolate::~RemoteIsolate() {
  try {
    if (catastrophic_) {
      worker_->RemoveDeathListener(death_listener_);
      catastrophic_->Disarm(false);
    }
    uint64_t id;
    worker_->Post(Begin(wire::kOpIsolateFree, &id).Finish());
    if (owns_worker_) worker_->Dispose(false);
  } catch (...) {
  }
}

int64_t RemoteIsolate::pid() const { return worker_->pid(); }

bool RemoteIsolate::disposed() const {
  if (marked_disposed()) return true;
  ivm_error_t* dead = worker_->Status();
  ivm_error_free(dead);
  return dead != nullptr;
}

void RemoteIsolate::SetTimes(uint64_t cpu_ns, uint64_t wall_ns) {
  cpu_ns_.store(cpu_ns, std::memory_order_relaxed);
  wall_ns_.store(wall_ns, std::memory_order_relaxed);
}

void RemoteIsolate::Times(uint64_t* cpu_ns, uint64_t* wall_ns) const {
  if (cpu_ns) *cpu_ns = cpu_ns_.load(std::memory_order_relaxed);
  if (wall_ns) *wall_ns = wall_ns_.load(std::memory_order_relaxed);
}

void RemoteIsolate::TrackJob(uint64_t job, uint64_t call_id) {
  std::lock_guard<std::mutex> lock(jobs_mu_);
  jobs_[job] = call_id;
}

void RemoteIsolate::UntrackJob(uint64_t job) {
  std::lock_guard<std::mutex> lock(jobs_mu_);
  jobs_.erase(job);
}

uint64_t RemoteIsolate::CallOfJob(uint64_t job) {
  std::lock_guard<std::mutex> lock(jobs_mu_);
  auto it = jobs_.find(job);
  return it == jobs_.end() ? 0 : it->second;
}

wire::Writer RemoteIsolate::Begin(uint32_t op, uint64_t* id) {
  *id = worker_->NextId();
  wire::Writer w(wire::kCall, *id);
  w.U32(op).U64(id_);
  return w;
}

ivm_error_t* RemoteIsolate::ReadReply(const wire::Frame& reply, wire::Reader* r) {
  (void)reply;
  uint32_t status = 0;
  std::string_view message, name, stack;
  uint8_t thrown = 0;
  uint64_t cpu = 0, wall = 0;
  if (!r->U32(&status) || !r->Bytes(&message) || !r->Bytes(&name, 4096) ||
      !r->Bytes(&stack) || !r->U8(&thrown) || thrown > 1 || !r->U64(&cpu) || !r->U64(&wall)) {
    return worker_->BadReply("a REPLY without its error fields and times");
  }
  SetTimes(cpu, wall);
  if (status == wire::kStatusOk) return nullptr;
  uint64_t token = 0;   // a host callback's error that ended the call
  if (!r->U64(&token) || !r->Done()) {
    return worker_->BadReply("a failed call's REPLY without its host token, or with results");
  }
  // Inline, a memory-limit failure disposes the isolate; the worker did so.
  if (status == IVM_ERROR_MEMORY_LIMIT) MarkDisposed();
  // Disposed from a host callback of the call (the worker stopped the call).
  if (status == IVM_ERROR_TERMINATED && marked_disposed()) {
    return MakeError(IVM_ERROR_DISPOSED, "Isolate was disposed during execution");
  }
  // Only the host decides that a worker crashed.
  if (status == IVM_ERROR_CRASHED) status = IVM_ERROR_INTERNAL;
  ivm_error_t* err = MakeError(status, std::string(message));
  err->name.assign(name);
  err->stack.assign(stack);
  err->thrown_primitive = thrown != 0;
  err->host_token = remote::CheckToken(*worker_, token);
  return err;
}

RemoteObject::~RemoteObject() {
  iso->live_objects().fetch_sub(1, std::memory_order_relaxed);
  try {
    uint64_t call_id;
    iso->worker().Post(iso->Begin(free_op, &call_id).U64(id).Finish());
  } catch (...) {
  }
}

namespace remote {

ivm_error_t* CheckResultFlags(uint32_t flags) {
  // rref: Reference and ExternalCopy results cross (remote_refs.cc).
  (void)flags;
  return nullptr;
}

}  // namespace remote
}  // namespace ivm
