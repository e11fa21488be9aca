// worker_callbacks.h — the ivm-worker side of host callbacks
// (worker_callbacks.cc): the functions that stand in a worker's isolates for
// the host's callbacks, their invocations over the channel, the calls the
// host nests in them, and their deferred results. Worker-only; not ABI.
#ifndef IVM_WORKER_CALLBACKS_H
#define IVM_WORKER_CALLBACKS_H

#include "ivm.h"
#include "wire.h"
#include "wire_value.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace ivm::worker {

class Channel;
class Ops;

class Callbacks {
 public:
  // The worker's one instance (never destroyed: pool threads may still use
  // it while the process exits).
  static Callbacks& Get();
  void Init(Channel& channel, Ops& ops);

  // A host callback attachment (u64 id, u32 attach flags) entering isolate
  // `iso`: a callback of this worker that calls the host, appended to `into`
  // (WorkerCodec::ReadCallback, the one codec of the worker's values).
  static bool ReadCallback(wire::Reader& r, ivm_isolate_t* iso, ivm_value_t* into);

  // The reading thread: CALL ops kOpNested, kOpCallbackSettle and
  // kOpCreateContextHooks (`fds`: the CALL's descriptors, which a nested CALL
  // takes along); returns the reply to send now (or an empty string).
  std::string Call(uint64_t id, uint32_t op, wire::Reader& r, const wire::Fds& fds);
  // The reading thread: a CALLBACK_REPLY, for the invocation of its id.
  void OnReply(wire::Frame& frame);
  // The job of CALL `call_id` is cancelled: its invocations stop waiting.
  void AbortCall(uint64_t call_id);
  // The CALL `call_id`, if it runs nested in an invocation, stops (a CANCEL:
  // Ctrl-C of the host thread that made it).
  void CancelNested(uint64_t call_id);
  // `iso` is being disposed (or freed): its invocations stop waiting, and
  // (until it is freed) its JavaScript calls no host callback any more.
  void AbortIsolate(ivm_isolate_t* iso, bool freed);
#ifdef IVM_WORKER_TEST_HOOKS
  // IVM_DEBUG_HOOK_REPEAT_CALLBACK: the next CALLBACK invoke or notification
  // (without descriptors) is sent `times` times, as a flooding worker would.
  void RepeatNextCallback(uint32_t times) { repeat_next_.store(times); }
#endif

 private:
  struct Proxy;
  struct Invocation {
    uint64_t id = 0;
    uint64_t call = 0;             // the CALL it runs under (0: none known)
    ivm_isolate_t* iso = nullptr;
    std::deque<wire::Frame> queue;   // nested CALLs, then its CALLBACK_REPLY
    bool aborted = false;
    std::condition_variable cv;
  };
  struct Deferred {
    ivm_deferred_t* d = nullptr;
    ivm_isolate_t* iso = nullptr;
  };
  // A callback calling host callback `id` from `iso` (`notify`: one way).
  static ivm_callback_t* NewCallback(uint64_t id, ivm_isolate_t* iso, bool notify);
  // kOpCreateContextHooks or kOpCreateContextHost (`op`) after its iso.
  bool ReadHooks(uint32_t op, wire::Reader& r, ivm_isolate_t* iso, uint64_t* ctx_id,
                 ivm_context_options_t* opts, ivm_callback_t* cbs[3]);
  static ivm_error_t* HostFn(void* user_data, ivm_call_t* call, ivm_value_t** out);
  static void Finalize(void* user_data);
  // Records (iso) or forgets (null) the nested CALL `call_id` that runs now.
  void SetNested(uint64_t call_id, ivm_isolate_t* iso);
  // Sends a CALLBACK frame (an invoke or a notification).
  bool SendCallback(const std::string& frame, const wire::Fds& fds);
  ivm_error_t* Invoke(Proxy& proxy, ivm_call_t* call, ivm_value_t** out);
  ivm_error_t* Outcome(const wire::Frame& reply, ivm_isolate_t* iso, ivm_call_t* call,
                       ivm_value_t** out);
  void Settle(ivm_deferred_t* d, ivm_isolate_t* iso, std::string_view outcome);
  // A nested CALL's reply, and the descriptors to send beside it.
  std::string RunNested(const wire::Frame& frame, wire::Fds* fds);
  std::string ValueReply(uint64_t id, ivm_error_t* err, ivm_isolate_t* iso, ivm_value_t* value,
                         wire::Fds* fds);

  Channel* channel_ = nullptr;
  Ops* ops_ = nullptr;
  std::mutex mu_;
  uint64_t next_invocation_ = 1;
  std::unordered_map<uint64_t, Invocation*> invocations_;
  std::unordered_map<uint64_t, Deferred> deferreds_;
  std::unordered_map<uint64_t, std::string> early_settles_;   // before their deferral
  std::unordered_set<ivm_isolate_t*> aborted_;
  std::unordered_map<uint64_t, ivm_isolate_t*> nested_;   // nested CALLs running, by id
  std::atomic<uint32_t> repeat_next_{0};   // test hook only
};

}  // namespace ivm::worker

#endif  // IVM_WORKER_CALLBACKS_H
