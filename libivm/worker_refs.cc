// worker_refs.cc — the worker's side of References into its isolates and of
// ExternalCopies crossing to and from the host (the host's is
// remote_refs.cc). The host names each reference by an id (RefTable); every
// operation through one is the *_async twin of the same ABI call, answered
// as an evaluation is. ExternalCopies live in the host: one arriving here
// becomes a new ExternalCopy of this worker, and an ExternalCopy result
// leaves as its content.
#include "wire_value.h"
#include "worker_callbacks.h"
#include "worker_server.h"

#include <memory>
#include <vector>

namespace ivm::worker {

namespace {

// The copy stream that is only its attachment 0 (`_att(0)`), as libivm's.
constexpr char kAttachmentStream[] = "\x80\x05" "civm._copy\n_att\nK\x00\x85R.";
constexpr size_t kAttachmentStreamLength = sizeof kAttachmentStream - 1;

using ValuePtr = std::unique_ptr<ivm_value_t, void (*)(ivm_value_t*)>;

ValuePtr Owned(ivm_value_t* v) { return ValuePtr(v, ivm_value_free); }

// A new ExternalCopy of `content` (read from the host), attached to `into`.
bool AttachCopyOf(ivm_value_t* content, uint32_t flags, ivm_value_t* into) {
  ValuePtr owned = Owned(content);
  ivm_external_copy_t* copy = nullptr;
  ivm_error_t* err = ivm_external_copy_new(content, 0, &copy);
  if (err == nullptr) err = ivm_value_attach_copy(into, copy, flags, nullptr);
  ivm_external_copy_free(copy);
  ivm_error_free(err);
  return err == nullptr;
}

// A serialized value that is only one attachment, to be made by `attach`.
template <class F>
bool SingleAttachment(ivm_value_t** out, F&& attach) {
  ivm_value_t* v = nullptr;
  if (ivm_error_t* err = ivm_value_new_serialized(kAttachmentStream, kAttachmentStreamLength, &v)) {
    ivm_error_free(err);
    return false;
  }
  if (!attach(v)) {
    ivm_value_free(v);
    return false;
  }
  *out = v;
  return true;
}

}  // namespace

RefTable::~RefTable() {
  for (auto& [id, entry] : refs_) ivm_reference_free(entry.ref);
}

uint64_t RefTable::Add(ivm_reference_t* ref, ivm_isolate_t* iso) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = wire::kWorkerRefBit | ++next_;
  refs_[id] = Entry{ref, iso};
  return id;
}

void RefTable::Put(uint64_t id, ivm_reference_t* ref, ivm_isolate_t* iso) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, added] = refs_.emplace(id, Entry{ref, iso});
  if (!added) ivm_reference_free(ref);   // a repeated id: keep the first
}

ivm_reference_t* RefTable::Find(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = refs_.find(id);
  return it == refs_.end() ? nullptr : it->second.ref;
}

void RefTable::Release(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = refs_.find(id);
  if (it != refs_.end()) ivm_error_free(ivm_reference_release(it->second.ref));
}

void RefTable::Free(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = refs_.find(id);
  if (it == refs_.end()) return;
  ivm_reference_free(it->second.ref);
  refs_.erase(it);
}

void RefTable::FreeIsolate(ivm_isolate_t* iso) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = refs_.begin(); it != refs_.end();) {
    if (it->second.iso == iso) {
      ivm_reference_free(it->second.ref);
      it = refs_.erase(it);
    } else {
      ++it;
    }
  }
}

bool WorkerCodec::WriteObject(wire::Writer& w, const ivm_value_t* value, std::string* why) {
  if (ivm_value_kind(value) == IVM_VALUE_REFERENCE) {
    ivm_reference_t* ref = nullptr;
    if (ivm_error_t* err = ivm_value_reference(value, &ref)) {
      ivm_error_free(err);
      *why = "an unreadable Reference";
      return false;
    }
    const char* type_of = nullptr;
    size_t len = 0;
    ivm_reference_typeof(ref, &type_of, &len);
    std::string type(type_of, len);
    w.U64(refs_.Add(ref, iso_)).Bytes(type);
    return true;
  }
  ivm_external_copy_t* copy = nullptr;
  ivm_value_t* content = nullptr;
  ivm_error_t* err = ivm_value_external_copy(value, &copy);
  if (err == nullptr) err = ivm_external_copy_read(copy, &content);
  ivm_external_copy_free(copy);
  if (err != nullptr) {
    ivm_error_free(err);
    *why = "the ExternalCopy has been released";
    return false;
  }
  ValuePtr owned = Owned(content);
  if (++depth > wire::kMaxCopyDepth) {
    *why = "ExternalCopy markers nested too deeply";
    return false;
  }
  bool ok = wire::WriteValue(w, content, why, this);
  --depth;
  return ok;
}

bool WorkerCodec::WriteAttachment(wire::Writer&, const ivm_value_t* value, size_t index,
                                  std::string* why) {
  // Only whole results cross back as References or ExternalCopies.
  bool ref = ivm_value_attachment_kind(value, index) == IVM_ATTACHMENT_REFERENCE;
  *why = std::string("the copy holds ") + (ref ? "a Reference" : "an ExternalCopy") +
         ", which cannot cross into or out of a worker process";
  return false;
}

bool WorkerCodec::Refused(ivm_error_t* err) {
  if (err == nullptr) return false;
  if (ivm_error_kind(err) == IVM_ERROR_DISPOSED) {
    refused_kind_ = IVM_ERROR_DISPOSED;
    refused_ = Message(err, ivm_error_message);
  }
  ivm_error_free(err);
  return true;
}

std::string WorkerCodec::ReadError(uint64_t id, std::string_view otherwise) const {
  return refused_kind_ != 0 ? ErrorReply(id, refused_kind_, refused_)
                            : ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, otherwise);
}

bool WorkerCodec::ReadCallback(wire::Reader& r, ivm_value_t* into) {
  return Callbacks::ReadCallback(r, iso_, into);   // rcb: worker_callbacks.cc
}

bool WorkerCodec::ReadObject(wire::Reader& r, uint8_t kind, ivm_value_t** out) {
  if (kind == IVM_VALUE_REFERENCE) {
    uint64_t id = 0;
    if (!r.U64(&id)) return false;
    ivm_reference_t* ref = refs_.Find(id);
    return ref != nullptr && SingleAttachment(out, [&](ivm_value_t* v) {
      return !Refused(ivm_value_attach_reference(v, ref, 0, nullptr));
    });
  }
  if (++depth > wire::kMaxCopyDepth) return false;
  ivm_value_t* content = nullptr;
  bool ok = wire::ReadValue(r, &content, this);
  --depth;
  return ok && SingleAttachment(out, [&](ivm_value_t* v) {
    return AttachCopyOf(content, IVM_COPY_AS_OBJECT, v);
  });
}

bool WorkerCodec::ReadAttachment(wire::Reader& r, uint32_t kind, ivm_value_t* into) {
  uint64_t id = 0;
  uint32_t flags = 0;
  if (kind == IVM_ATTACHMENT_REFERENCE) {
    if (!r.U64(&id) || !r.U32(&flags)) return false;
    ivm_reference_t* ref = refs_.Find(id);
    return ref != nullptr && !Refused(ivm_value_attach_reference(into, ref, flags, nullptr));
  }
  if (!r.U32(&flags) || ++depth > wire::kMaxCopyDepth) return false;
  ivm_value_t* content = nullptr;
  bool ok = wire::ReadValue(r, &content, this);
  --depth;
  return ok && AttachCopyOf(content, flags, into);
}

namespace {

// The context and reference id of a kOpContextGlobal; false if malformed.
bool ReadGlobal(wire::Reader& r, uint64_t* ctx_id, uint64_t* ref_id) {
  return r.U64(ctx_id) && r.U64(ref_id) && r.Done() && !(*ref_id & wire::kWorkerRefBit);
}

// The top-level `this` of a script is the context's global object, which no
// script can redefine (unlike `globalThis`).
constexpr char kThis[] = "this";

}  // namespace

std::string Ops::Global(uint64_t id, ivm_isolate_t* iso, wire::Reader& r) {
  uint64_t ctx_id = 0, ref_id = 0;
  if (!ReadGlobal(r, &ctx_id, &ref_id)) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  ivm_context_t* ctx = Context(ctx_id);
  if (ctx == nullptr) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown context");
  }
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  result.flags = IVM_RESULT_REFERENCE;
  return SubmitCall(id, iso, ref_id, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    return ivm_context_eval_async(ctx, kThis, sizeof kThis - 1, nullptr, nullptr, &result, done,
                                  ud, job);
  });
}

std::string Ops::GlobalNested(uint64_t id, ivm_isolate_t* iso, wire::Reader& r) {
  uint64_t ctx_id = 0, ref_id = 0;
  if (!ReadGlobal(r, &ctx_id, &ref_id)) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  ivm_context_t* ctx = Context(ctx_id);
  if (ctx == nullptr) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown context");
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  result.flags = IVM_RESULT_REFERENCE;
  ivm_value_t* value = nullptr;
  ivm_error_t* err =
      ivm_context_eval(ctx, kThis, sizeof kThis - 1, nullptr, nullptr, &result, &value, nullptr);
  if (err != nullptr) return FullReply(id, err, iso, nullptr);
  return GlobalReply(id, ref_id, iso, value);
}

std::string Ops::GlobalReply(uint64_t call_id, uint64_t ref_id, ivm_isolate_t* iso,
                             ivm_value_t* value) {
  ivm_reference_t* ref = nullptr;
  ivm_error_t* err = ivm_value_reference(value, &ref);
  ivm_value_free(value);
  if (err != nullptr) {
    uint32_t kind = ivm_error_kind(err);
    ivm_error_free(err);
    return ErrorReply(call_id, kind, "no global reference");
  }
  const char* type_of = nullptr;
  size_t len = 0;
  ivm_reference_typeof(ref, &type_of, &len);
  std::string type(type_of, len);
  refs_.Put(ref_id, ref, iso);
  uint64_t cpu = 0, wall = 0;
  ivm_isolate_times(iso, &cpu, &wall);
  return wire::Writer(wire::kReply, call_id)
      .U32(wire::kStatusOk).Bytes("").Bytes("").Bytes("").U8(0).U64(cpu).U64(wall)
      .Bytes(type)
      .Finish();
}

// A kOpRefCall after its isolate: the reference, the operation and its
// values (owned), read with `codec`.
struct Ops::RefRequest {
  ivm_reference_t* ref = nullptr;
  uint32_t kind = 0;
  uint32_t get_flags = 0;
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  std::vector<ivm_value_t*> values;
  void Free() {
    for (ivm_value_t* v : values) ivm_value_free(v);
    values.clear();
  }
};

// Reads `q`; NULL, or the message of an INVALID_ARGUMENT reply.
const char* Ops::ReadRefCall(wire::Reader& r, WorkerCodec& codec, RefRequest* q) {
  uint64_t ref_id = 0;
  uint32_t n = 0;
  bool ok = r.U64(&ref_id) && r.U32(&q->kind) && q->kind <= wire::kRefApply &&
            r.U32(&q->get_flags) && r.U64(&q->run.timeout_ns) && r.U32(&q->result.flags) &&
            r.U32(&n) && n <= (1u << 20);
  for (uint32_t i = 0; ok && i < n; ++i) {
    uint8_t present = 0;
    ivm_value_t* v = nullptr;
    ok = r.U8(&present) && present <= 1 && (present == 0 || wire::ReadValue(r, &v, &codec));
    if (ok) q->values.push_back(v);
  }
  q->ref = ok && r.Done() ? refs_.Find(ref_id) : nullptr;
  const std::vector<ivm_value_t*>& values = q->values;
  size_t need = q->kind == wire::kRefSet ? 2 : 1;
  bool shape = values.size() == need || (q->kind == wire::kRefApply && values.size() >= 1);
  bool keyed =
      shape && (q->kind == wire::kRefGet || q->kind == wire::kRefApply || values[0] != nullptr);
  if (q->ref == nullptr || !shape || !keyed || (q->kind == wire::kRefSet && values[1] == nullptr)) {
    q->Free();
    return q->ref ? "malformed call" : "unknown reference";
  }
  return nullptr;
}

std::string Ops::RefCall(uint64_t id, ivm_isolate_t* iso, wire::Reader& r) {
  WorkerCodec codec(refs_, iso);
  codec.in_fds = call_fds_;
  RefRequest q;
  if (const char* why = ReadRefCall(r, codec, &q)) return codec.ReadError(id, why);
  std::vector<ivm_value_t*>& values = q.values;
  ivm_reference_t* ref = q.ref;
  // The _async twins own the values from here on, even when they fail.
  return SubmitCall(id, iso, 0, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    switch (q.kind) {
      case wire::kRefGet:
        return ivm_reference_get_async(ref, values[0], q.get_flags, &q.run, &q.result, done, ud,
                                       job);
      case wire::kRefSet:
        return ivm_reference_set_async(ref, values[0], values[1], &q.run, done, ud, job);
      case wire::kRefDelete:
        return ivm_reference_delete_async(ref, values[0], &q.run, done, ud, job);
      default:
        return ivm_reference_apply_async(ref, values[0], values.data() + 1, values.size() - 1,
                                         &q.run, &q.result, done, ud, job);
    }
  });
}

// rcb: made by a host callback that the isolate's JavaScript waits in, so run
// here, on that JavaScript's thread, with the synchronous calls.
std::string Ops::RefCallNested(uint64_t id, ivm_isolate_t* iso, wire::Reader& r,
                               const wire::Fds* in_fds, wire::Fds* out_fds) {
  WorkerCodec codec(refs_, iso);
  codec.in_fds = in_fds;
  RefRequest q;
  if (const char* why = ReadRefCall(r, codec, &q)) return codec.ReadError(id, why);
  const std::vector<ivm_value_t*>& v = q.values;
  ivm_value_t* value = nullptr;
  ivm_error_t* err = nullptr;
  switch (q.kind) {
    case wire::kRefGet:
      err = ivm_reference_get(q.ref, v[0], q.get_flags, &q.run, &q.result, &value, nullptr);
      break;
    case wire::kRefSet:
      err = ivm_reference_set(q.ref, v[0], v[1], &q.run, &value, nullptr);
      break;
    case wire::kRefDelete:
      err = ivm_reference_delete(q.ref, v[0], &q.run, &value, nullptr);
      break;
    default:
      err = ivm_reference_apply(q.ref, v[0], v.data() + 1, v.size() - 1, &q.run, &q.result,
                                &value, nullptr);
      break;
  }
  q.Free();
  std::string out = FullReply(id, err, iso, [&](wire::Writer& w, std::string* why) {
    return wire::WriteValue(w, value, why, &codec);
  });
  ivm_value_free(value);
  if (wire::FdCountOf(out) != 0) *out_fds = std::move(codec.out_fds);
  return out;
}

}  // namespace ivm::worker
