// copy_buffers.cc — the buffers of large copies, kept from one copy to the next.
//
// A copy of a few hundred kilobytes writes its stream (and, on the way out, V8's serializer
// output) into buffers that malloc serves from fresh mappings: every copy faulted in and
// zeroed its pages again, and gave them back when it was freed. For 10,000 rows (550 KB of
// JSON) that was about 250 page faults of the round trip's 650, ~1 ms of system time in
// ~10 ms, and more on a loaded machine. The largest buffers freed are kept here instead
// (a few, of a bounded size) and handed to the next copy of a similar size, whose pages
// are then already there. Memory kept: at most kKept stream buffers and one serializer
// buffer of at most kMaxKept bytes each, only after copies that large were made.
#include "copy.h"

#include <cstdlib>
#include <mutex>

namespace ivm {
namespace {

constexpr size_t kMinKept = 64u << 10;   // smaller buffers come cheap from malloc's free lists
constexpr size_t kMaxKept = 4u << 20;
constexpr int kKept = 2;                 // one going out, one coming in

// Never destroyed: a copy may be freed on another thread while the process exits.
struct Kept {
  std::mutex mutex;
  std::string streams[kKept];
  void* raw = nullptr;
  size_t raw_capacity = 0;
};
Kept& K() {
  static Kept* kept = new Kept();
  return *kept;
}

bool Keepable(size_t capacity) { return capacity >= kMinKept && capacity <= kMaxKept; }

}  // namespace

Serialized::~Serialized() { KeepStream(stream); }

void ReserveStream(std::string& s, size_t want) {
  if (s.capacity() >= want || !Keepable(want)) return;
  {
    Kept& kept = K();
    std::lock_guard<std::mutex> lock(kept.mutex);
    // The smallest kept buffer that holds `want`, and not more than twice it: a copy that
    // lives long (an ExternalCopy) keeps its buffer, which must not be many times its size.
    std::string* best = nullptr;
    for (std::string& k : kept.streams) {
      if (k.capacity() >= want && k.capacity() / 2 <= want &&
          (best == nullptr || k.capacity() < best->capacity())) {
        best = &k;
      }
    }
    if (best != nullptr) {
      s.swap(*best);
      std::string().swap(*best);
    }
  }
  s.clear();
  s.reserve(want);
}

void KeepStream(std::string& s) {
  if (!Keepable(s.capacity())) return;
  {
    Kept& kept = K();
    std::lock_guard<std::mutex> lock(kept.mutex);
    std::string* slot = &kept.streams[0];   // an empty slot, else the smallest
    for (std::string& k : kept.streams) {
      if (k.capacity() < slot->capacity()) slot = &k;
    }
    if (slot->capacity() >= s.capacity()) return;
    s.swap(*slot);   // the smaller one leaves with s, freed outside the lock
  }
  std::string().swap(s);
}

void* TakeRawBuffer(size_t want, size_t* capacity) {
  if (want <= kMaxKept) {
    Kept& kept = K();
    std::lock_guard<std::mutex> lock(kept.mutex);
    if (kept.raw != nullptr && kept.raw_capacity >= want) {
      void* p = kept.raw;
      *capacity = kept.raw_capacity;
      kept.raw = nullptr;
      kept.raw_capacity = 0;
      return p;
    }
  }
  void* p = std::malloc(want);
  *capacity = p ? want : 0;
  return p;
}

void KeepRawBuffer(void* p, size_t capacity) {
  if (p == nullptr) return;
  if (Keepable(capacity)) {
    Kept& kept = K();
    std::lock_guard<std::mutex> lock(kept.mutex);
    if (capacity > kept.raw_capacity) {
      std::swap(p, kept.raw);   // the smaller one is freed below
      std::swap(capacity, kept.raw_capacity);
    }
  }
  std::free(p);
}

}  // namespace ivm
