// buffers.cc — ArrayBuffer memory: each isolate's allocator with its budget
// (the isolate's memory limit), the process's cache of large freed blocks, and
// the stores that move or are shared between isolates (NewBuffer, AdoptBuffer,
// ShareBuffer, MoveOutBuffer), charged to the budget of the isolate that holds
// them and kept out of V8's external-memory count while they are adopted.
#include "internal.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ivm {

// Large ArrayBuffer blocks: a few freed ones are kept for the next
// allocation of the same size (moving a big buffer between isolates frees
// and allocates one per move), the rest go back to the system. Unmapping
// tens of MB takes milliseconds and holds the process's memory-map lock,
// which V8's garbage collector then waits for.
namespace {
constexpr size_t kLargeBlock = 8u << 20;
constexpr size_t kCachedBlocks = 2;
struct BlockCache {
  std::mutex mutex;
  std::vector<std::pair<void*, size_t>> blocks;
};
BlockCache& Cache() {
  static BlockCache* cache = new BlockCache();   // never destroyed (used at exit)
  return *cache;
}
void* TakeCached(size_t length) {
  if (length < kLargeBlock) return nullptr;
  BlockCache& c = Cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (size_t i = 0; i < c.blocks.size(); ++i) {
    if (c.blocks[i].second == length) {
      void* p = c.blocks[i].first;
      c.blocks.erase(c.blocks.begin() + static_cast<long>(i));
      return p;
    }
  }
  return nullptr;
}
}  // namespace

void FreeMemory(void* data, size_t length) {
  if (data == nullptr) return;
  if (length >= kLargeBlock) {
    BlockCache& c = Cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.blocks.size() < kCachedBlocks) {
      c.blocks.emplace_back(data, length);
      return;
    }
  }
  std::free(data);
}

void* AllocateMemory(size_t length, bool zeroed) {
  if (void* p = TakeCached(length)) {
    if (zeroed) std::memset(p, 0, length);
    return p;
  }
  return zeroed ? std::calloc(length ? length : 1, 1) : std::malloc(length ? length : 1);
}

// ArrayBuffer memory with a budget.
class IsolateHolder::Allocator final : public v8::ArrayBuffer::Allocator {
 public:
  explicit Allocator(size_t limit) : limit_(limit) {}
  void* Allocate(size_t length) override {
    if (!Reserve(length)) return nullptr;
    void* p = AllocateMemory(length, true);
    if (!p) Unreserve(length);
    return p;
  }
  void* AllocateUninitialized(size_t length) override {
    if (!Reserve(length)) return nullptr;
    void* p = AllocateMemory(length, false);
    if (!p) Unreserve(length);
    return p;
  }
  void Free(void* data, size_t length) override {
    Uncharge(data, length);
    FreeMemory(data, length);
  }
  size_t used() const { return used_.load(std::memory_order_relaxed); }
  bool Reserve(size_t n) {
    size_t cur = used_.load(std::memory_order_relaxed);
    do {
      if (n > limit_ || cur > limit_ - n) return false;
    } while (!used_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    return true;
  }
  void Unreserve(size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  // The budget moves with a transferred store: it leaves this budget when the
  // store leaves the isolate, and the store's free, later and on any thread,
  // finds it here and charges nothing back. Moves are counted per address: a
  // store that comes back (adopted again, charged again) and leaves again
  // before its first free gives its charge back each time it leaves, and each
  // of its frees (the adopted wrappers' and the store's own) takes one move
  // off. (Counting each address once left the second charge behind for as
  // long as the store lived: a buffer moved back and forth filled both
  // budgets.)
  void MoveOut(const void* data, size_t n) {
    {
      std::lock_guard<std::mutex> lock(moved_mutex_);
      ++moved_[data];
      moved_count_.fetch_add(1, std::memory_order_relaxed);
    }
    Unreserve(n);
  }
  // A charged store freed (or an adopted one let go): its bytes leave the
  // budget unless they already left with a move.
  void Uncharge(const void* data, size_t n) {
    if (moved_count_.load(std::memory_order_relaxed) != 0) {
      std::lock_guard<std::mutex> lock(moved_mutex_);
      auto it = moved_.find(data);
      if (it != moved_.end()) {
        if (--it->second == 0) moved_.erase(it);
        moved_count_.fetch_sub(1, std::memory_order_relaxed);
        return;
      }
    }
    Unreserve(n);
  }
  // Adopted bytes kept out of V8's external-memory count (AdoptBuffer) whose
  // stores V8 has since freed, decreasing that count: given back to it on the
  // isolate's thread (TakeHiddenFreed).
  void HiddenFreed(size_t n) { hidden_freed_.fetch_add(n, std::memory_order_relaxed); }
  int64_t TakeHiddenFreed() {
    // Read first: the exchange (a locked instruction) only when there is
    // something to take. An amount added meanwhile is taken next time.
    if (hidden_freed_.load(std::memory_order_relaxed) == 0) return 0;
    return static_cast<int64_t>(hidden_freed_.exchange(0, std::memory_order_relaxed));
  }

 private:
  std::atomic<size_t> used_{0};
  const size_t limit_;
  std::mutex moved_mutex_;
  // data of stores moved out, not yet freed -> how many moves out are unmatched
  std::unordered_map<const void*, size_t> moved_;
  std::atomic<size_t> moved_count_{0};
  std::atomic<size_t> hidden_freed_{0};
};

std::shared_ptr<v8::ArrayBuffer::Allocator> IsolateHolder::NewAllocator(size_t limit) {
  allocator_ = std::make_shared<Allocator>(limit);
  return allocator_;
}

size_t IsolateHolder::array_buffer_bytes() const { return allocator_ ? allocator_->used() : 0; }

namespace {
// What a store made or adopted by NewBuffer/AdoptBuffer keeps alive.
struct BufferOwner {
  std::shared_ptr<v8::ArrayBuffer::Allocator> allocator;   // charged for the bytes
  std::shared_ptr<v8::BackingStore> adopted;               // Wrap's source
  size_t length = 0;
  bool hidden = false;   // kept out of V8's external-memory count (AdoptBuffer)
  const v8::BackingStore* wrapper = nullptr;   // the store Wrap made with it
};

// The live stores AdoptBuffer and ShareBuffer made (Wrap): one that moves on is
// wrapped as its source (no chain whose frees recurse). Never destroyed.
std::mutex adopted_mutex;
auto& adopted_stores = *new std::unordered_map<const v8::BackingStore*, BufferOwner*>();

// A new store (`shared`: a SharedArrayBuffer's) over `source`'s bytes, freed by
// `deleter(owner)`; `owner` keeps `source`, or its source if Wrap made it.
std::shared_ptr<v8::BackingStore> Wrap(std::shared_ptr<v8::BackingStore> source,
                                       BufferOwner* owner,
                                       v8::BackingStore::DeleterCallback deleter, bool shared) {
  void* data = source->Data();
  std::lock_guard<std::mutex> lock(adopted_mutex);
  auto it = adopted_stores.find(source.get());
  owner->adopted = it == adopted_stores.end() ? std::move(source) : it->second->adopted;
  std::shared_ptr<v8::BackingStore> store =
      shared ? v8::SharedArrayBuffer::NewBackingStore(data, owner->length, deleter, owner)
             : v8::ArrayBuffer::NewBackingStore(data, owner->length, deleter, owner);
  owner->wrapper = store.get();
  adopted_stores.insert_or_assign(store.get(), owner);
  return store;
}

}  // namespace

void IsolateHolder::UnreserveOwner(void* data, size_t, void* arg) {
  auto* o = static_cast<BufferOwner*>(arg);
  if (o->wrapper != nullptr) {
    std::lock_guard<std::mutex> lock(adopted_mutex);
    auto it = adopted_stores.find(o->wrapper);
    if (it != adopted_stores.end() && it->second == o) adopted_stores.erase(it);
  }
  auto* allocator = static_cast<Allocator*>(o->allocator.get());
  allocator->Uncharge(data, o->length);
  if (o->hidden) allocator->HiddenFreed(o->length);
  delete o;   // then the adopted store: its own free, in the isolate it came from
}

void IsolateHolder::RestoreHiddenFreed() {
  if (int64_t n = allocator_ ? allocator_->TakeHiddenFreed() : 0) {
    isolate_->AdjustAmountOfExternalAllocatedMemory(n);
  }
}

void IsolateHolder::MoveOutBuffer(const std::shared_ptr<v8::BackingStore>& store) {
  if (store && store->ByteLength() != 0 && !store->IsShared()) {
    allocator_->MoveOut(store->Data(), store->ByteLength());
  }
}

std::shared_ptr<v8::BackingStore> IsolateHolder::NewBuffer(const void* data, size_t length) {
  void* p = allocator_->AllocateUninitialized(length);
  if (p == nullptr) return nullptr;
  if (length) std::memcpy(p, data, length);
  auto* owner = new BufferOwner{allocator_, nullptr, length};
  return v8::ArrayBuffer::NewBackingStore(
      p, length,
      [](void* data, size_t, void* arg) {
        auto* o = static_cast<BufferOwner*>(arg);
        o->allocator->Free(data, o->length);
        delete o;
      },
      owner);
}

v8::MaybeLocal<v8::ArrayBuffer> IsolateHolder::AdoptBuffer(
    std::shared_ptr<v8::BackingStore> store) {
  size_t length = store->ByteLength();
  // (V8 never calls the deleter of a store without data: such a wrapper would stay registered.)
  if (length == 0 || store->Data() == nullptr) return v8::ArrayBuffer::New(isolate_, 0);
  RestoreHiddenFreed();
  if (!allocator_->Reserve(length)) {
    // Unreachable buffers (earlier moves among them) may hold the budget:
    // this is the collection the heap needs, once.
    isolate_->LowMemoryNotification();
    RestoreHiddenFreed();
    if (!allocator_->Reserve(length)) return {};
  }
  auto* owner = new BufferOwner{allocator_, nullptr, length, /*hidden=*/true};
  std::shared_ptr<v8::BackingStore> adopted = Wrap(std::move(store), owner, UnreserveOwner, false);
  // V8 adds `length` to its external-memory count as the ArrayBuffer takes
  // the store (and takes it off when it frees the store): offset here first,
  // so the count never crosses its limit for it; given back once freed
  // (RestoreHiddenFreed).
  isolate_->AdjustAmountOfExternalAllocatedMemory(-static_cast<int64_t>(length));
  return v8::ArrayBuffer::New(isolate_, std::move(adopted));
}

std::shared_ptr<v8::BackingStore> IsolateHolder::ShareBuffer(
    std::shared_ptr<v8::BackingStore> store) {
  size_t length = store->ByteLength();
  if (length == 0 || store->Data() == nullptr) {   // (as AdoptBuffer's)
    return v8::SharedArrayBuffer::NewBackingStore(isolate_, 0);
  }
  if (!allocator_->Reserve(length)) return nullptr;
  return Wrap(std::move(store), new BufferOwner{allocator_, nullptr, length}, UnreserveOwner, true);
}

}  // namespace ivm
