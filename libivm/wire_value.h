// wire_value.h — values, call options and errors in CALL and REPLY payloads
// of remote isolates (docs/wire-protocol.md, "Values"). Compiled into both
// libivm and ivm-worker; uses values only through ivm.h. Nothing here is ABI.
#ifndef IVM_WIRE_VALUE_H
#define IVM_WIRE_VALUE_H

#include "ivm.h"
#include "wire.h"

#include <string>

namespace ivm::wire {

// The attachments of a copy other than buffers that one side lets cross
// (host callbacks: remote_callbacks.cc, worker_callbacks.cc). Each attachment
// is written as u8 kind (IVM_ATTACHMENT_*), then a buffer's bytes or what
// the codec writes.
class AttachmentCodec {
 public:
  virtual ~AttachmentCodec() = default;
  // Writes attachment `index` (of `kind`, not a buffer) of `value`; false
  // with `*why` if it cannot cross.
  virtual bool Write(Writer& w, const ivm_value_t* value, size_t index, uint32_t kind,
                     std::string* why) = 0;
  // Reads an attachment of `kind` (not a buffer) and appends it to `value`;
  // false if it is malformed or not allowed.
  virtual bool Read(Reader& r, uint32_t kind, ivm_value_t* value) = 0;
};

// Appends `value`. Values that cannot cross a process boundary in this
// version (References, ExternalCopies, and host callbacks without a `codec`
// that takes them, as values or as attachments of a copy) are refused: false,
// with the reason in `*why`.
bool WriteValue(Writer& w, const ivm_value_t* value, std::string* why,
                AttachmentCodec* codec = nullptr);
// Reads a value written by WriteValue; false on any malformation, and on an
// attachment other than a buffer that `codec` (if any) does not take.
bool ReadValue(Reader& r, ivm_value_t** out, AttachmentCodec* codec = nullptr);

// Source options: u8 has_filename, bytes filename, u32 line, u32 column.
struct WireSource {
  bool has_filename = false;
  std::string filename;
  int32_t line_offset = 0;
  int32_t column_offset = 0;
};
void WriteSource(Writer& w, const WireSource& s);
bool ReadSource(Reader& r, WireSource* out);

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
