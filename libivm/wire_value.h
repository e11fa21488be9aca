// wire_value.h — values, call options and errors in CALL and REPLY payloads
// of remote isolates (docs/wire-protocol.md, "Values"). Compiled into both
// libivm and ivm-worker; uses values only through ivm.h. Nothing here is ABI.
#ifndef IVM_WIRE_VALUE_H
#define IVM_WIRE_VALUE_H

#include "ivm.h"
#include "wire.h"

#include <string>
#include <vector>

namespace ivm::wire {

// What crosses besides plain data, one codec per encode or decode: rref's
// References (by id), ExternalCopies (by content) and large buffers (in
// memfds), and rcb's host callbacks (by id in the host's callback table).
// Each side has a codec of its own that knows its ids: remote::HostCodec
// (remote_refs.cc, which hands callbacks to remote_callbacks.cc) and
// worker::WorkerCodec (worker_refs.cc, likewise worker_callbacks.cc).
// Without a codec all of them are refused (buffers are then inlined).
// Every attachment is written as u8 kind (IVM_ATTACHMENT_* or
// kAttachmentFdBuffer), then a buffer's bytes or what the codec writes.
class ObjectCodec {
 public:
  virtual ~ObjectCodec() = default;
  // An IVM_VALUE_REFERENCE or IVM_VALUE_EXTERNAL_COPY value, after its kind.
  virtual bool WriteObject(Writer& w, const ivm_value_t* value, std::string* why) = 0;
  // Reference or ExternalCopy attachment `index` of `value`, after its kind.
  virtual bool WriteAttachment(Writer& w, const ivm_value_t* value, size_t index,
                               std::string* why) = 0;
  virtual bool ReadObject(Reader& r, uint8_t kind, ivm_value_t** out) = 0;
  // Reads a Reference or ExternalCopy attachment of `kind` and appends it to
  // serialized `into`.
  virtual bool ReadAttachment(Reader& r, uint32_t kind, ivm_value_t* into) = 0;
  // rcb: host callback attachment `index` of `value`, after its kind; and
  // reading one into `into`. By default a side refuses them (a host
  // callback only enters a worker).
  virtual bool WriteCallback(Writer& w, const ivm_value_t* value, size_t index,
                             std::string* why);
  virtual bool ReadCallback(Reader& r, ivm_value_t* into) {
    (void)r, (void)into;
    return false;
  }
  // A received memfd buffer mapped at `data`: append it to `into` without a
  // copy, taking the mapping (true), or leave it to be copied (false).
  virtual bool AdoptMapping(ivm_value_t* into, void* data, uint64_t len) {
    (void)into, (void)data, (void)len;
    return false;
  }
  // The error kind of the last refusal.
  uint32_t refused_kind = IVM_ERROR_TRANSFER;
  // ExternalCopies nested in copies: bounded.
  int depth = 0;
  // Large buffers cross in memfds: those a frame being written carries (its
  // writer sends them beside it), and those of the frame being read (each
  // used once). `seal_received`: the host's codec, which seals what a worker
  // sends before mapping it.
  Fds out_fds;
  const Fds* in_fds = nullptr;
  std::vector<bool> in_used;
  bool seal_received = false;
  // A frame that cannot carry descriptors (a deferred callback's settle,
  // wrapped in a CALL): its large buffers stay inline.
  bool inline_buffers = false;
};
// The attachment kind (beside IVM_ATTACHMENT_*) of a buffer in a memfd:
// u32 index among the frame's descriptors, u64 length.
constexpr uint8_t kAttachmentFdBuffer = 0x81;
// Value kinds (beside ivm_value_kind_t) of a string, and of a copy whose
// stream, in a memfd (as large buffers: at least kFdBufferThreshold bytes,
// with a codec that may send descriptors): u32 index among the frame's
// descriptors, u64 length; for a copy, then u32 n and its attachments. So
// values larger than a frame cross (rem11).
constexpr uint8_t kValueFdString = 0x82;
constexpr uint8_t kValueFdSerialized = 0x83;
constexpr int kMaxCopyDepth = 8;

// Appends `value`. Values that cannot cross a process boundary (see
// ObjectCodec) are refused: false, with the reason in
// `*why` (and the error kind in codec->refused_kind).
bool WriteValue(Writer& w, const ivm_value_t* value, std::string* why,
                ObjectCodec* codec = nullptr);
// Reads a value written by WriteValue; false on any malformation.
bool ReadValue(Reader& r, ivm_value_t** out, ObjectCodec* codec = nullptr);

// Source options: u8 has_filename, bytes filename, u32 line, u32 column.
struct WireSource {
  bool has_filename = false;
  std::string filename;
  int32_t line_offset = 0;
  int32_t column_offset = 0;
};
void WriteSource(Writer& w, const WireSource& s);
bool ReadSource(Reader& r, WireSource* out);
// `s` as the ABI's struct (which points into `s`: keep `s` while `*o` is used).
void ToSourceOptions(const WireSource& s, ivm_source_options_t* o);

}  // namespace ivm::wire


namespace ivm::wire {
// The fields of ivm_heap_statistics_t after struct_size, in the order a
// kOpHeapStatistics REPLY carries them.
inline constexpr uint64_t ivm_heap_statistics_t::*kHeapFields[] = {
    &ivm_heap_statistics_t::total_heap_size,
    &ivm_heap_statistics_t::total_heap_size_executable,
    &ivm_heap_statistics_t::total_physical_size,
    &ivm_heap_statistics_t::total_available_size,
    &ivm_heap_statistics_t::used_heap_size,
    &ivm_heap_statistics_t::heap_size_limit,
    &ivm_heap_statistics_t::malloced_memory,
    &ivm_heap_statistics_t::peak_malloced_memory,
    &ivm_heap_statistics_t::does_zap_garbage,
    &ivm_heap_statistics_t::number_of_native_contexts,
    &ivm_heap_statistics_t::number_of_detached_contexts,
    &ivm_heap_statistics_t::total_global_handles_size,
    &ivm_heap_statistics_t::used_global_handles_size,
    &ivm_heap_statistics_t::external_memory,
    &ivm_heap_statistics_t::externally_allocated_size,
};
constexpr uint32_t kHeapFieldCount = sizeof kHeapFields / sizeof kHeapFields[0];
// A value id meaning "not eval_closure" in kOpEval's argument count.
constexpr uint32_t kNoClosure = 0xffffffffu;
}  // namespace ivm::wire

#endif  // IVM_WIRE_VALUE_H
