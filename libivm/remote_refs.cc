// remote_refs.cc — References into worker isolates, and the values that
// carry References and ExternalCopies to and from a worker (the host's side;
// the worker's is worker_refs.cc).
//
// A reference into a worker isolate is the worker's reference id
// (RemoteReference); every operation through it is a kOpRefCall of that id,
// answered as an evaluation is. An ExternalCopy stays in the host: it crosses
// by content, and an ExternalCopy result becomes a new host ExternalCopy. A
// Reference crosses only into its own worker process: one of an inline
// isolate or of another worker is refused with IVM_ERROR_CROSS_PROCESS.
// Nothing the worker sends is trusted: its ids only name its own objects.
#include "copy.h"
#include "reference.h"
#include "remote.h"
#include "jobs.h"
#include "worker_process.h"

#include <sys/mman.h>

namespace ivm {
namespace remote {

namespace {

constexpr size_t kMaxTypeofLength = 64;
constexpr char kTransferred[] =
    "cannot copy into the isolate: the ExternalCopy was already transferred into an isolate";

ivm_error_t* Released() { return MakeError(IVM_ERROR_DISPOSED, kReferenceReleased); }

// The error before a call through `ref` is sent, as inline's would be.
ivm_error_t* Refuse(const RemoteReference& ref) {
  if (ref.iso->marked_disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  if (ref.released.load(std::memory_order_acquire)) return Released();
  return nullptr;
}

// A host value of kind IVM_VALUE_REFERENCE for the worker's reference `id`.
ivm_value_t* NewReferenceValue(const std::shared_ptr<RemoteIsolate>& iso, uint64_t id,
                               std::string type_of) {
  auto v = std::make_unique<ivm_value>();
  v->kind = IVM_VALUE_REFERENCE;
  v->reference = std::make_shared<ReferenceData>();
  v->reference->remote = std::make_shared<RemoteReference>(iso, id, std::move(type_of));
  return v.release();
}

// The CALL frame of an operation through `ref`.
bool RefFrame(const std::shared_ptr<RemoteReference>& ref, const RefOp& op, const CallOptions& o,
              uint64_t* id, std::string* frame, wire::Fds* fds, ivm_error_t** err) {
  std::vector<const ivm_value_t*> values;
  uint32_t kind = wire::kRefGet;
  switch (op.kind) {
    case RefOp::kGet: values = {op.key}; break;
    case RefOp::kSet: kind = wire::kRefSet; values = {op.key, op.value}; break;
    case RefOp::kDelete: kind = wire::kRefDelete; values = {op.key}; break;
    case RefOp::kApply:
      kind = wire::kRefApply;
      values = {op.receiver};
      values.insert(values.end(), op.args, op.args + op.nargs);
      break;
  }
  HostCodec codec(ref->iso);
  wire::Writer w = ref->iso->Begin(wire::kOpRefCall, id);
  w.U64(ref->id).U32(kind).U32(op.get_flags).U64(o.timeout_ns).U32(o.flags);
  w.U32(static_cast<uint32_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) {
    w.U8(values[i] != nullptr ? 1 : 0);
    std::string why;
    if (values[i] != nullptr && !wire::WriteValue(w, values[i], &why, &codec)) {
      std::string what = op.kind != RefOp::kApply ? (i == 0 ? "Key" : "Value")
                         : i == 0                ? "Receiver"
                                                 : "Argument " + std::to_string(i - 1);
      *err = codec.Refused(what, why);
      return false;
    }
  }
  *frame = w.Finish();
  *fds = std::move(codec.out_fds);
  if (!frame->empty()) codec.Commit();   // its host callbacks stay (rcb)
  return true;
}

// A CopyData's value as a host value (its stream and attachments, shared).
ivm_value_t* CopyValue(const Serialized& s) {
  auto v = std::make_unique<ivm_value>();
  v->kind = IVM_VALUE_SERIALIZED;
  v->serialized = std::make_shared<Serialized>(s);
  return v.release();
}

}  // namespace

namespace {
constexpr char kCrossProcess[] =
    "References do not cross between processes (a Reference works only in its own process: "
    "pass a copy instead)";
}  // namespace

namespace {
thread_local const wire::Fds* t_reply_fds = nullptr;
}  // namespace

const wire::Fds* ReplyFds() { return t_reply_fds; }
ReplyFdsScope::ReplyFdsScope(const wire::Fds* fds) : saved_(t_reply_fds) { t_reply_fds = fds; }
ReplyFdsScope::~ReplyFdsScope() { t_reply_fds = saved_; }

ivm_error_t* CrossProcess(const std::string& what) {
  return MakeError(IVM_ERROR_CROSS_PROCESS, what + ": " + kCrossProcess);
}

ivm_error_t* HostCodec::Refused(const std::string& what, const std::string& why) const {
  // As inline's copy reader says it, wherever the value is.
  if (verbatim_) return MakeError(refused_kind, why);
  return MakeError(refused_kind, what + ": " + why);
}

bool HostCodec::WriteObject(wire::Writer& w, const ivm_value_t* value, std::string* why) {
  if (value->kind == IVM_VALUE_EXTERNAL_COPY) {
    if (!value->copy || value->copy->consumed()) {
      verbatim_ = true;
      *why = kTransferred;
      return false;
    }
    return WriteCopyContent(w, value->copy->value(), why);
  }
  const ReferenceData* ref = value->reference.get();
  bool same = ref != nullptr && ref->remote && &ref->remote->iso->worker() == &iso_->worker();
  if (!same) {
    refused_kind = IVM_ERROR_CROSS_PROCESS;
    *why = std::string(ref != nullptr && ref->remote
                           ? "a Reference into another worker process cannot enter this one"
                           : "a Reference of an inline isolate cannot enter a worker process") +
           ": " + kCrossProcess;
    return false;
  }
  if (ref->remote->released.load()) {
    refused_kind = IVM_ERROR_DISPOSED;
    *why = kReferenceReleased;
    return false;
  }
  w.U64(ref->remote->id);
  return true;
}

bool HostCodec::WriteAttachment(wire::Writer& w, const ivm_value_t* value, size_t index,
                                std::string* why) {
  const Attachment& a = value->serialized->attachments[index];
  if (a.kind == Attachment::kReference) {
    ivm_value_t ref_value;
    ref_value.kind = IVM_VALUE_REFERENCE;
    ref_value.reference = a.reference;
    if (!WriteObject(w, &ref_value, why)) return false;
    w.U32(a.flags);
    return true;
  }
  // An ExternalCopy marker: its content, to become a copy in the worker.
  Serialized taken;
  const Serialized* source = a.copy ? &a.copy->value() : nullptr;
  if (source != nullptr && (a.flags & IVM_COPY_INTO_TRANSFER_IN)) {
    source = a.copy->TakeForTransfer(&taken) ? &taken : nullptr;
  } else if (source != nullptr && a.copy->consumed()) {
    source = nullptr;
  }
  if (source == nullptr) {
    verbatim_ = true;
    *why = kTransferred;
    return false;
  }
  w.U32(a.flags);
  return WriteCopyContent(w, *source, why);
}

bool HostCodec::WriteCopyContent(wire::Writer& w, const Serialized& content, std::string* why) {
  std::unique_ptr<ivm_value_t, void (*)(ivm_value_t*)> value(CopyValue(content), ivm_value_free);
  if (++depth > wire::kMaxCopyDepth) {
    *why = "ExternalCopy markers nested too deeply";
    return false;
  }
  bool ok = wire::WriteValue(w, value.get(), why, this);
  --depth;
  return ok;
}

bool HostCodec::ReadObject(wire::Reader& r, uint8_t kind, ivm_value_t** out) {
  if (kind == IVM_VALUE_REFERENCE) {
    uint64_t id = 0;
    std::string_view type_of;
    if (!r.U64(&id) || !(id & wire::kWorkerRefBit) || !r.Bytes(&type_of, kMaxTypeofLength)) {
      return false;
    }
    *out = NewReferenceValue(iso_, id, std::string(type_of));
    return true;
  }
  // An ExternalCopy result: a new host ExternalCopy of its content.
  if (++depth > wire::kMaxCopyDepth) return false;
  ivm_value_t* content = nullptr;
  bool ok = wire::ReadValue(r, &content, this);
  --depth;
  if (!ok) return false;
  ivm_external_copy_t* copy = nullptr;
  ivm_error_t* err = ivm_external_copy_new(content, 0, &copy);
  ivm_value_free(content);
  if (err != nullptr) {
    ivm_error_free(err);
    return false;
  }
  auto v = std::make_unique<ivm_value>();
  v->kind = IVM_VALUE_EXTERNAL_COPY;
  v->copy = copy->data;
  ivm_external_copy_free(copy);
  *out = v.release();
  return true;
}

bool HostCodec::AdoptMapping(ivm_value_t* into, void* data, uint64_t len) {
  if (!IsSerialized(into)) return false;
  EnsurePlatform();   // a BackingStore frees itself through V8's platform
  Attachment a;
  a.kind = Attachment::kBuffer;
  a.store = v8::ArrayBuffer::NewBackingStore(
      data, static_cast<size_t>(len), [](void* p, size_t n, void*) { munmap(p, n); }, nullptr);
  a.moved = true;   // this value's alone: an isolate may adopt it as it is
  AppendAttachment(into, std::move(a), nullptr);
  return true;
}

bool HostCodec::ReadAttachment(wire::Reader&, uint32_t, ivm_value_t*) {
  // A worker sends References and ExternalCopies only as whole results.
  return false;
}

ivm_error_t* Global(ivm_context_t* ctx, ivm_reference_t** out) {
  std::shared_ptr<RemoteIsolate> iso = ctx->remote->iso;
  if (iso->marked_disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  uint64_t id, ref_id = iso->worker().NextId();
  std::string frame = iso->Begin(wire::kOpContextGlobal, &id).U64(ctx->remote->id).U64(ref_id)
                          .Finish();
  std::string type_of;
  Parse parse = [&](wire::Reader& r, ivm_completion_t*) -> ivm_error_t* {
    std::string_view t;
    if (!r.Bytes(&t, kMaxTypeofLength) || !r.Done()) {
      return iso->worker().BadReply("a malformed global reference");
    }
    type_of.assign(t);
    return nullptr;
  };
  if (ivm_error_t* err = Sync(*iso, id, frame, 0, parse, nullptr)) return err;
  auto handle = std::make_unique<ivm_reference>();
  handle->data.remote = std::make_shared<RemoteReference>(iso, ref_id, std::move(type_of));
  *out = handle.release();
  return nullptr;
}

ivm_error_t* RefCall(const std::shared_ptr<RemoteReference>& ref, const RefOp& op,
                     const CallOptions& o, ivm_value_t** out) {
  if (ivm_error_t* err = Refuse(*ref)) return err;
  uint64_t id;
  std::string frame;
  ivm_error_t* err = nullptr;
  wire::Fds fds;
  if (!RefFrame(ref, op, o, &id, &frame, &fds, &err)) return err;
  ivm_completion_t c{};
  err = Sync(*ref->iso, id, frame, o.timeout_ns, ValueResult(ref->iso), &c, fds);
  if (err == nullptr) *out = c.result.value;
  return err;
}

ivm_error_t* RefCallAsync(const std::shared_ptr<RemoteReference>& ref, const RefOp& op,
                          const CallOptions& o, std::shared_ptr<void> owned, ivm_done_fn done,
                          void* user_data, uint64_t* job_out) {
  uint64_t id;
  std::string frame;
  ivm_error_t* err = nullptr;
  if (ref->released.load()) {   // as inline: the job fails when it runs
    auto job = std::make_shared<Job>(IVM_COMPLETION_VALUE, done, user_data,
                                     [](ivm_completion_t*) -> ivm_error_t* { return nullptr; });
    if (job_out) *job_out = job->id();
    job->Fail(Released());
    return nullptr;
  }
  wire::Fds fds;
  if (!RefFrame(ref, op, o, &id, &frame, &fds, &err)) return err;
  owned.reset();   // encoded: the values are no longer needed
  Parse parse = ValueResult(ref->iso);
  return Async(ref->iso, id, frame, o.timeout_ns, IVM_COMPLETION_VALUE, done, user_data, job_out,
               [ref, parse](wire::Reader& r, ivm_completion_t* c) { return parse(r, c); }, fds);
}

void ReleaseReference(RemoteReference& ref) {
  if (ref.released.exchange(true)) return;
  uint64_t id;
  ref.iso->worker().Post(ref.iso->Begin(wire::kOpRefRelease, &id).U64(ref.id).Finish());
}

}  // namespace remote
}  // namespace ivm
