// options.h — the ABI's option structs, each read in one place into libivm's
// own types. Nothing here is ABI.
#ifndef IVM_OPTIONS_H
#define IVM_OPTIONS_H

#include "internal.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

namespace ivm {

// Whether a caller's struct_size can describe one of the ABI's structs: each
// begins with struct_size itself.
inline bool ValidStructSize(size_t struct_size) { return struct_size >= sizeof(size_t); }

// Reads a caller's options struct into `*full`, which holds the defaults (its
// _INIT macro): NULL keeps them all, and fields beyond the caller's
// struct_size (an older caller) keep theirs.
template <class T>
ivm_error_t* ReadStruct(const T* opts, T* full) {
  if (opts == nullptr) return nullptr;
  if (!ValidStructSize(opts->struct_size)) return InvalidArgument("bad struct_size");
  std::memcpy(full, opts, std::min(opts->struct_size, sizeof *full));
  full->struct_size = sizeof *full;
  return nullptr;
}

// Where code comes from (ivm_source_options_t). The filename is borrowed from
// the caller until Own() copies it, as a queued job must.
struct SourceOptions {
  const char* filename = nullptr;   // NULL: the call's default name
  size_t filename_len = 0;
  int32_t line_offset = 0;
  int32_t column_offset = 0;

  bool is_default() const {
    return filename == nullptr && line_offset == 0 && column_offset == 0;
  }
  void Own() {
    if (filename == nullptr) return;
    storage_ = std::make_shared<const std::string>(filename, filename_len);
    filename = storage_->data();
  }

 private:
  std::shared_ptr<const std::string> storage_;
};

inline ivm_error_t* ReadSourceOptions(const ivm_source_options_t* opts, SourceOptions* out) {
  ivm_source_options_t full = IVM_SOURCE_OPTIONS_INIT;
  if (ivm_error_t* err = ReadStruct(opts, &full)) return err;
  out->filename = full.filename;
  out->filename_len = full.filename != nullptr ? full.filename_len : 0;
  out->line_offset = full.line_offset;
  out->column_offset = full.column_offset;
  return nullptr;
}

// How a call that runs JavaScript runs (ivm_run_options_t) and returns its
// result (ivm_result_options_t).
struct CallOptions {
  uint64_t timeout_ns = 0;   // 0: none
  uint32_t flags = 0;        // IVM_RESULT_*
};

// `result` may be NULL for calls without result options (their result is fixed).
inline ivm_error_t* ReadCallOptions(const ivm_run_options_t* run,
                                    const ivm_result_options_t* result, CallOptions* out) {
  ivm_run_options_t run_full = IVM_RUN_OPTIONS_INIT;
  if (ivm_error_t* err = ReadStruct(run, &run_full)) return err;
  ivm_result_options_t result_full = IVM_RESULT_OPTIONS_INIT;
  if (ivm_error_t* err = ReadStruct(result, &result_full)) return err;
  constexpr uint32_t kForms = IVM_RESULT_COPY | IVM_RESULT_EXTERNAL_COPY | IVM_RESULT_REFERENCE |
                              IVM_RESULT_DISCARD;
  if ((result_full.flags & IVM_RESULT_INSPECT) && (result_full.flags & kForms)) {
    return InvalidArgument("IVM_RESULT_INSPECT excludes COPY, EXTERNAL_COPY, REFERENCE and DISCARD");
  }
  out->timeout_ns = run_full.timeout_ns;
  out->flags = result_full.flags;
  return nullptr;
}

}  // namespace ivm

#endif  // IVM_OPTIONS_H
