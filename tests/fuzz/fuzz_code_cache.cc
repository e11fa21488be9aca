// fuzz_code_cache.cc — libFuzzer target: ivm's code-cache header (libivm/code_cache.cc)
// against arbitrary bytes, through ivm.h alone. Each input is the cache data of a compile
// of one fixed script in one long-lived isolate. ivm must refuse every input that is not
// a cache it made for this source and build (cached_data_rejected), compile the script
// from its source anyway, and leave no libivm object behind. V8 never sees a rejected
// input: what reaches it passed the header's build, kind, source-hash and checksum checks.
// Built by -Dfuzz=true; run by tools/fuzz.py code_cache.
#include "ivm.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

ivm_isolate_t* isolate;
uint64_t baseline;   // live libivm objects between inputs
const char kSource[] = "function twice(x) { return 2 * x; }\ntwice(21)";

[[noreturn]] void Finding(const char* what, ivm_error_t* err) {
  const char* msg = "";
  size_t len = 0;
  if (err) ivm_error_message(err, &msg, &len);
  std::fprintf(stderr, "fuzz_code_cache: %s: %.*s\n", what, static_cast<int>(len), msg);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (ivm_error_t* err = ivm_isolate_new(nullptr, &isolate)) Finding("isolate_new", err);
  baseline = ivm_debug_live_objects();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char kEmpty[1] = {0};
  ivm_cache_options_t cache = IVM_CACHE_OPTIONS_INIT;
  cache.data = size ? reinterpret_cast<const char*>(data) : kEmpty;
  cache.data_len = size;
  ivm_script_t* script = nullptr;
  if (ivm_error_t* err = ivm_isolate_compile_script(isolate, kSource, sizeof kSource - 1,
                                                    nullptr, &cache, &script)) {
    Finding("compile_script", err);
  }
  // Only a cache made by this build for this source is used; random bytes never are.
  if (!ivm_script_cached_data_rejected(script) &&
      (size < 4 || std::memcmp(data, "IVMC", 4) != 0)) {
    Finding("a blob without ivm's header was used", nullptr);
  }
  ivm_script_free(script);
  uint64_t live = ivm_debug_live_objects();
  if (live != baseline) {
    std::fprintf(stderr, "fuzz_code_cache: %llu live libivm objects, expected %llu\n",
                 static_cast<unsigned long long>(live),
                 static_cast<unsigned long long>(baseline));
    std::abort();
  }
  return 0;
}
