// platform.cc — the process-wide V8 platform, started once, lazily, by
// whichever thread first needs it; plus the version and diagnostics calls.
#include "internal.h"

#include <sys/random.h>

#include <mutex>

namespace ivm {

std::atomic<uint64_t> g_live_objects{0};

namespace {
std::once_flag g_platform_once;
v8::Platform* g_platform = nullptr;

// Seeds for V8's random number generators (Math.random, hash seeds). Without
// an entropy source V8 opens /dev/urandom for each isolate, which a
// sandboxed ivm-worker cannot do; getrandom() needs no descriptor.
bool Entropy(unsigned char* buffer, size_t length) {
  while (length > 0) {
    ssize_t n = getrandom(buffer, length, 0);
    if (n <= 0) return false;
    buffer += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}
}  // namespace

v8::Platform* EnsurePlatform() {
  std::call_once(g_platform_once, [] {
    // The platform lives until the process exits: isolates may be disposed
    // from finalizers at any time, so it is never torn down.
    v8::V8::SetEntropySource(Entropy);
    // Import assertions (`import j from "./a.json" assert {type: "json"}`),
    // which the resolver receives (ivm_module_dependency_attribute).
    v8::V8::SetFlagsFromString("--harmony-import-assertions");
    // V8 checksums its whole startup snapshot (adler32 of about 1.5 MB) at every isolate's
    // creation, about 0.1 ms, a tenth of the creation, and V8's part of code caches. The
    // built-in snapshot is in libnode's memory; user snapshots and code caches carry ivm's
    // own checksum (snapshot.cc, code_cache.cc), checked before V8 reads them. (A V8
    // checksum mismatch is a CHECK failure: it aborts the process, where ivm's raises.)
    v8::V8::SetFlagsFromString("--no-verify-snapshot-checksum");
    InitCallClock();
    g_platform = compat::NewPlatform().release();
    v8::V8::InitializePlatform(g_platform);
    v8::V8::Initialize();
  });
  return g_platform;
}

}  // namespace ivm

extern "C" {

IVM_API uint32_t ivm_version(void) { return IVM_VERSION_NUMBER; }

IVM_API const char* ivm_v8_version(void) { return v8::V8::GetVersion(); }

IVM_API uint64_t ivm_debug_live_objects(void) {
  // An isolate this thread kept entered and another thread has since disposed
  // of is finished first, as this thread's next call would: a leak check on
  // the keeping thread then sees its true count.
  ivm::FinishHandedOverEntry();
  return ivm::g_live_objects.load(std::memory_order_relaxed);
}

}  // extern "C"
