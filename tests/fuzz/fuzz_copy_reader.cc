// fuzz_copy_reader.cc — libFuzzer target: libivm's copy-format reader
// (libivm/copy_reader.cc) against arbitrary streams, through ivm.h alone. Each
// input becomes a serialized value with two buffer attachments and enters one
// long-lived isolate as the argument of a closure. The reader must turn any
// stream into a value or an error (TRANSFER for a malformed stream,
// JS_EXCEPTION when JavaScript refuses what it built, MEMORY_LIMIT when it does
// not fit); anything else, a crash, a sanitizer report or a leaked libivm
// object (counted after each input: LeakSanitizer is off for this target, see
// tools/fuzz.py) is a finding. Built by -Dfuzz=true; run by tools/fuzz.py
// copy_reader.
#include "ivm.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

ivm_isolate_t* isolate;
ivm_context_t* context;
uint64_t baseline;   // live libivm objects between inputs

[[noreturn]] void Finding(const char* what, ivm_error_t* err) {
  const char* msg = "";
  size_t len = 0;
  if (err) ivm_error_message(err, &msg, &len);
  std::fprintf(stderr, "fuzz_copy_reader: %s: %.*s\n", what, static_cast<int>(len), msg);
  std::abort();
}

// One isolate per process, reused by every input; made anew only when an input
// exhausted its memory limit (which disposes it).
void Start() {
  if (context) ivm_context_free(context);
  if (isolate) ivm_isolate_free(isolate);
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  opts.memory_limit = 64u << 20;
  if (ivm_error_t* err = ivm_isolate_new(&opts, &isolate)) Finding("isolate_new", err);
  if (ivm_error_t* err = ivm_isolate_create_context(isolate, nullptr, &context))
    Finding("create_context", err);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Start();
  baseline = ivm_debug_live_objects();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ivm_value_t* value = nullptr;
  if (ivm_error_t* err = ivm_value_new_serialized(reinterpret_cast<const char*>(data), size,
                                                  &value))
    Finding("value_new_serialized", err);
  size_t index = 0;
  static const char kBytes[] = "12345678";
  if (ivm_error_t* err = ivm_value_attach_buffer(value, kBytes, 8, 0, &index))
    Finding("attach_buffer", err);
  if (ivm_error_t* err = ivm_value_attach_buffer(value, kBytes, 0, IVM_ATTACH_BORROW, &index))
    Finding("attach_buffer (borrowed)", err);
  // Touches what was built: its type and, for an object, its own keys.
  static const char kCode[] =
      "const v = $0; return typeof v + (v && typeof v === 'object' ? Object.keys(v).length : 0)";
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  run.timeout_ns = 5ull * 1000 * 1000 * 1000;
  ivm_value_t* out = nullptr;
  ivm_primitive_t prim;
  ivm_error_t* err = ivm_context_eval_closure(context, kCode, sizeof kCode - 1, &value, 1,
                                              nullptr, &run, nullptr, &out, &prim);
  ivm_value_free(value);
  ivm_value_free(out);
  if (err) {
    ivm_error_kind_t kind = ivm_error_kind(err);
    if (kind == IVM_ERROR_MEMORY_LIMIT) {
      ivm_error_free(err);
      Start();
    } else if (kind == IVM_ERROR_TRANSFER || kind == IVM_ERROR_JS_EXCEPTION) {
      ivm_error_free(err);
    } else {
      Finding("unexpected error kind", err);
    }
  }
  uint64_t live = ivm_debug_live_objects();
  if (live != baseline) {
    std::fprintf(stderr, "fuzz_copy_reader: %llu live libivm objects, expected %llu\n",
                 static_cast<unsigned long long>(live),
                 static_cast<unsigned long long>(baseline));
    std::abort();
  }
  return 0;
}
