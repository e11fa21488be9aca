// completion_queue.h — ivm::CompletionQueue, the ready-made ivm_done_fn
// target for event loops (completion_queue.cc).
#ifndef IVM_COMPLETION_QUEUE_H
#define IVM_COMPLETION_QUEUE_H

#include "internal.h"

struct ivm_completion_queue {};   // the ABI name of ivm::CompletionQueue (its base)

namespace ivm {

class CompletionQueue : public ivm_completion_queue, public LiveCounted {
 public:
  // A new queue and its eventfd (owned by the queue).
  static ivm_error_t* Create(CompletionQueue** out, int* fd);
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  // A job's outcome (any thread), owned from here on; freed at once if the
  // owner is gone.
  void Push(const ivm_completion_t& completion);
  // Up to `capacity` waiting completions, oldest first (the owner's thread).
  size_t Pop(ivm_completion_t* out, size_t capacity);
  // The owner's handle is freed: waiting completions are freed, later ones
  // too, and the queue is deleted once no job refers to it.
  void Disown();

 private:
  CompletionQueue() = default;
  ~CompletionQueue();

  std::mutex mutex_;
  std::vector<ivm_completion_t> items_;
  std::atomic<size_t> count_{0};
  std::atomic<int> refs_{1};   // the owner's handle + one per pending job and signal
  std::atomic<int> writing_{0};   // Pushes about to write the fd (after their unlock)
  std::atomic<bool> stale_{false};   // a write may follow the last read: read again
  bool owned_ = true;
  int fd_ = -1;
};

}  // namespace ivm

#endif  // IVM_COMPLETION_QUEUE_H
