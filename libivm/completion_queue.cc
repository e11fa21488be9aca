// completion_queue.cc — completion queues: jobs push their outcomes, an
// event loop's thread pops them in batches when the queue's eventfd becomes
// readable. One wake-up serves many completions.
#include "completion_queue.h"

#include <algorithm>

#include <sys/eventfd.h>
#include <unistd.h>

namespace ivm {

ivm_error_t* CompletionQueue::Create(CompletionQueue** out, int* fd) {
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return MakeError(IVM_ERROR_INTERNAL, "eventfd() failed");
  auto* q = new CompletionQueue();
  q->fd_ = efd;
  *fd = efd;
  *out = q;
  return nullptr;
}

void CompletionQueue::Push(const ivm_completion_t& completion) {
  bool owned = false;
  bool signal = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    owned = owned_;
    if (owned) {
      signal = items_.empty();
      items_.push_back(completion);
      count_.store(items_.size(), std::memory_order_release);
      if (signal) {
        writing_.fetch_add(1);
        Ref();   // keeps the fd open until the write below
      }
    }
  }
  if (!owned) {
    FreeCompletion(completion);   // nobody will pop it
    return;
  }
  if (!signal) return;
  // Written after the lock is released: the write wakes the loop's thread,
  // which pops at once, and on a shared core the kernel often runs it right
  // away; had this thread kept the lock, the loop's thread would block on it
  // and switch back (two more context switches per completion).
  uint64_t one = 1;
  ssize_t n = write(fd_, &one, sizeof one);
  (void)n;
  writing_.fetch_sub(1);
  Unref();
}

size_t CompletionQueue::Pop(ivm_completion_t* out, size_t capacity) {
  // Polling stays cheap: no lock while there is nothing to do.
  if (count_.load(std::memory_order_acquire) == 0 && !stale_.load(std::memory_order_acquire)) {
    return 0;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = std::min(capacity, items_.size());
  std::copy_n(items_.begin(), n, out);
  items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(n));
  count_.store(items_.size(), std::memory_order_release);
  if (items_.empty() && (n > 0 || stale_.load(std::memory_order_relaxed))) {
    // No longer readable. A Push that signals writes after its unlock, so its
    // write may still be coming: then the next Pop reads again even with no
    // items (`stale_`), else the fd would stay readable with nothing to pop.
    // (Loaded before the read: a write not counted here ended before it.)
    bool in_flight = writing_.load() > 0;
    uint64_t count;
    ssize_t r = read(fd_, &count, sizeof count);
    (void)r;
    stale_.store(in_flight, std::memory_order_release);
  }
  return n;
}

void CompletionQueue::Disown() {
  std::vector<ivm_completion_t> items;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    owned_ = false;
    items.swap(items_);
    count_.store(0);
  }
  for (auto& item : items) FreeCompletion(item);
  Unref();
}

CompletionQueue::~CompletionQueue() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace ivm

extern "C" {

IVM_API ivm_error_t* ivm_completion_queue_new(int* fd_out, ivm_completion_queue_t** out) {
  return ivm::Guard([&]() -> ivm_error_t* {
    if (out == nullptr || fd_out == nullptr) return ivm::InvalidArgument("out or fd_out is NULL");
    ivm::CompletionQueue* q = nullptr;
    if (ivm_error_t* err = ivm::CompletionQueue::Create(&q, fd_out)) return err;
    *out = q;
    return nullptr;
  });
}

IVM_API void ivm_completion_queue_done(void* queue, const ivm_completion_t* completion) {
  // Jobs bypass this (they push straight into their queue, which they keep
  // alive); a direct call hands over a completion of its own.
  if (completion == nullptr) return;
  if (queue == nullptr) {
    ivm::FreeCompletion(*completion);
    return;
  }
  auto* q = static_cast<ivm::CompletionQueue*>(static_cast<ivm_completion_queue*>(queue));
  q->Push(*completion);
}

IVM_API size_t ivm_completion_queue_pop(ivm_completion_queue_t* queue, ivm_completion_t* out,
                                        size_t capacity) {
  if (queue == nullptr || out == nullptr) return 0;
  try {
    return static_cast<ivm::CompletionQueue*>(queue)->Pop(out, capacity);
  } catch (...) {
    return 0;
  }
}

IVM_API void ivm_completion_queue_free(ivm_completion_queue_t* queue) {
  if (queue == nullptr) return;
  try {
    static_cast<ivm::CompletionQueue*>(queue)->Disown();
  } catch (...) {
  }
}

}  // extern "C"
