// isolate_entry.cc — an isolate kept entered between calls by a thread that
// calls it synchronously (KeptEntry).
//
// Each call enters its isolate (v8::Isolate::Scope). Entering costs V8 a
// mutex, a lookup of the thread's data, an allocation and two thread-local
// writes, and leaving as much again: about a tenth of a short call. A thread
// that keeps one isolate entered pays instead a counter's increment and
// decrement (V8's Enter and Exit when the isolate is already the thread's
// current one).
//
// The rules that keep V8's per-isolate stack of entries consistent:
//  - An entry is kept only by a thread in no isolate, on an isolate that no
//    thread has entered (the kept entry is the bottom of the isolate's stack,
//    under the other threads' calls, which leave it as they found it), by a
//    thread that is not one of the pool's, on an isolate without an inspector.
//    At most one per thread (its V8 current isolate) and one per isolate.
//  - It is left (Exit) only by its thread, with the isolate locked and while
//    it is that thread's current isolate (not inside another isolate's call):
//    when the thread gives its parked lock back (thread_lock.cc), disposes of
//    the isolate, or ends.
//  - V8 aborts when an entered isolate is disposed, and after another thread
//    left the entry for it, the keeping thread's V8 thread-locals would point
//    into the freed isolate. So when the isolate is disposed while another
//    thread keeps it entered (or this one, inside another isolate's call),
//    the disposal is handed over: libivm's side of the isolate goes at once
//    (its handles fail, its resources are released), and the keeping thread
//    leaves the entry and disposes of V8's isolate as it starts its next call
//    of any isolate (or asynchronous submission), or when it ends. Until then
//    the V8 isolate stays, emptied by a full garbage collection (about what a
//    new isolate takes).
//  - A thread that ends while the isolate is busy on another thread cannot
//    leave its entry (that needs the lock, and a thread's end never waits):
//    it abandons it, and the isolate's disposal leaves it from a short-lived
//    thread of its own (no thread-locals to care for then).
// IVM_KEEP_ENTRY=0 turns kept entries off (read once); ivm-worker does.
#include "internal.h"

#include <libplatform/libplatform.h>

#include <cstdlib>
#include <cstring>
#include <thread>

namespace ivm {

bool KeepEntriesEnabled() {
  static const bool enabled = [] {
    const char* env = getenv("IVM_KEEP_ENTRY");
    return env == nullptr || strcmp(env, "0") != 0;
  }();
  return enabled;
}

std::shared_ptr<KeptEntry> KeepEntry(IsolateHolder& holder) {
  v8::Isolate* isolate = holder.isolate();
  if (!KeepEntriesEnabled() || holder.inspector() != nullptr || holder.orphaned() ||
      holder.disposed() || v8::Isolate::TryGetCurrent() != nullptr || isolate->IsInUse()) {
    return nullptr;
  }
  std::shared_ptr<KeptEntry> kept;
  try {
    kept = std::make_shared<KeptEntry>(isolate, holder.weak_from_this(), holder.unique_id());
  } catch (...) {
    return nullptr;   // (the caller holds the lock: nothing may throw past it)
  }
  isolate->Enter();
  holder.kept_entry() = kept;
  return kept;
}

bool LeaveEntry(IsolateHolder& holder, std::shared_ptr<KeptEntry>& kept) {
  v8::Isolate* isolate = kept->isolate;
  if (v8::Isolate::TryGetCurrent() != isolate) return false;   // inside another isolate's call
  isolate->Exit();
  kept->state.store(KeptEntry::kDone);
  if (holder.kept_entry() == kept) holder.kept_entry().reset();
  kept.reset();
  return true;
}

void ForgetPlatformTasks(v8::Isolate* isolate) {
  v8::Platform* platform = EnsurePlatform();
  // Make sure the platform has a task runner to forget, then tell it.
  platform->GetForegroundTaskRunner(isolate);
  v8::platform::NotifyIsolateShutdown(platform, isolate);
}

void DisposeV8Isolate(v8::Isolate* isolate) {
  ForgetPlatformTasks(isolate);
  isolate->Dispose();
}

namespace {

// Leaves the entry of a thread that cannot (it ended): from a thread of our
// own, in no isolate, whose thread-locals Exit may set. Nobody else uses the
// isolate now. False if no thread could be started.
bool LeaveFromAnotherThread(v8::Isolate* isolate) {
  try {
    std::thread([isolate] {
      v8::Locker locker(isolate);
      isolate->Exit();
    }).join();
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

bool HandOverEntry(std::shared_ptr<KeptEntry> kept, std::shared_ptr<SnapshotBlob> snapshot) {
  // Its queued tasks (which may hold host values) go now, while the host runs:
  // the keeper may dispose of it as its process exits.
  ForgetPlatformTasks(kept->isolate);
  // Ready before the keeper may see it handed over (its thread may be ending now).
  kept->snapshot = std::move(snapshot);   // (V8 keeps a pointer to its StartupData)
  // Counted as a live object (ivm_debug_live_objects) until its keeper disposes of it.
  g_live_objects.fetch_add(1, std::memory_order_relaxed);
  int expected = KeptEntry::kKept;
  if (kept->state.compare_exchange_strong(expected, KeptEntry::kHandedOver)) return true;
  g_live_objects.fetch_sub(1, std::memory_order_relaxed);
  if (expected == KeptEntry::kAbandoned && !LeaveFromAnotherThread(kept->isolate)) {
    return true;   // never disposed (V8 would abort): its memory stays
  }
  return false;
}

bool FinishEntry(std::shared_ptr<KeptEntry>& kept, bool thread_ends) {
  v8::Isolate* isolate = kept->isolate;
  if (v8::Isolate::TryGetCurrent() == isolate) {
    if (!LeaveParkedEntry(*kept)) {
      v8::Locker locker(isolate);
      isolate->Exit();
    }
  } else if (!thread_ends) {
    return false;   // inside another isolate's call: at a later one
  } else if (!LeaveFromAnotherThread(isolate)) {
    kept.reset();
    return true;
  }
  DisposeV8Isolate(isolate);
  kept->state.store(KeptEntry::kDone);
  kept.reset();
  g_live_objects.fetch_sub(1, std::memory_order_relaxed);   // (HandOverEntry's)
  return true;
}

void AbandonEntry(std::shared_ptr<KeptEntry>& kept) {
  int expected = KeptEntry::kKept;
  if (!kept->state.compare_exchange_strong(expected, KeptEntry::kAbandoned) &&
      expected == KeptEntry::kHandedOver) {
    FinishEntry(kept, true);
  }
  kept.reset();
}

}  // namespace ivm
