// inspector.h — V8's inspector for one isolate (ivm_isolate_options_t.inspector):
// the V8InspectorClient whose pause loop serves protocol messages on the paused
// thread, the queue of messages from any thread, and the sessions whose
// channel hands responses and notifications to a C callback. Nothing here is ABI.
#ifndef IVM_INSPECTOR_H
#define IVM_INSPECTOR_H

#include "internal.h"

#include <v8-inspector.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace ivm {

// The engine side of one ivm_inspector_session: V8's session (isolate thread
// only) and the channel to the embedder's callback.
class InspectorSession final : public v8_inspector::V8Inspector::Channel {
 public:
  InspectorSession(ivm_inspector_message_fn fn, void* user_data)
      : fn_(fn), user_data_(user_data) {}
  void sendResponse(int call_id, std::unique_ptr<v8_inspector::StringBuffer> message) override;
  void sendNotification(std::unique_ptr<v8_inspector::StringBuffer> message) override;
  void flushProtocolNotifications() override {}
  // No callback after this returns (waits for one running on another thread).
  void Close();
  bool closed();

  // Isolate thread only (Inspector's tasks).
  std::unique_ptr<v8_inspector::V8InspectorSession> v8;

 private:
  void Deliver(uint32_t kind, int call_id, const v8_inspector::StringView& view);
  ivm_inspector_message_fn fn_;
  void* user_data_;
  std::recursive_mutex mutex_;   // held while the callback runs
  bool closed_ = false;
};

class Inspector final : public v8_inspector::V8InspectorClient {
 public:
  // Isolate locked and entered.
  explicit Inspector(IsolateHolder& holder);
  ~Inspector() override;
  Inspector(const Inspector&) = delete;
  Inspector& operator=(const Inspector&) = delete;

  // Isolate locked: contexts as they are made and go. `is_default`: a user
  // context (DevTools evaluates its console there).
  void ContextCreated(v8::Local<v8::Context> context, std::string_view name, bool is_default);
  void ContextDestroyed(v8::Local<v8::Context> context);
  // Isolate locked (disposal): disconnects every session and ends the inspector.
  void DisposeLocked();

  // Any thread; never blocks. The session's connection, its messages and its
  // disconnection, served in order on the thread that holds the isolate.
  void Connect(std::shared_ptr<IsolateHolder> holder, std::shared_ptr<InspectorSession> session);
  void Dispatch(std::shared_ptr<IsolateHolder> holder, std::shared_ptr<InspectorSession> session,
                std::string message);
  void Disconnect(std::shared_ptr<IsolateHolder> holder, std::shared_ptr<InspectorSession> session);

  // V8InspectorClient (isolate thread).
  void runMessageLoopOnPause(int context_group_id) override;
  void quitMessageLoopOnPause() override;
  double currentTimeMS() override;
  v8::Local<v8::Context> ensureDefaultContextInGroup(int context_group_id) override;

 private:
  enum class Op { kConnect, kMessage, kDisconnect };
  struct Task {
    Op op;
    std::shared_ptr<InspectorSession> session;
    std::string message;
  };
  void Post(const std::shared_ptr<IsolateHolder>& holder, Task task);
  // Runs the queued tasks (isolate locked, on its thread).
  void Drain();
  void RunTask(Task& task);
  static void Interrupt(v8::Isolate* isolate, void* data);
  bool PausedCallStopped();

  IsolateHolder& holder_;
  std::unique_ptr<v8_inspector::V8Inspector> inspector_;
  std::vector<std::shared_ptr<InspectorSession>> sessions_;   // isolate thread
  bool quit_ = false;                                          // isolate thread
  int paused_depth_ = 0;                                       // isolate thread
  int contexts_ = 0;                                           // isolate thread
  std::vector<v8::Global<v8::Context>> defaults_;   // user contexts, oldest first

  std::mutex mutex_;   // guards what follows
  std::condition_variable wake_;
  std::deque<Task> queue_;
  bool paused_ = false;            // a pause loop waits on wake_
  bool job_queued_ = false;
  bool disposed_ = false;
};

// The inspector of the isolate `isolate` (nullptr: none). Isolate locked.
Inspector* InspectorOf(v8::Isolate* isolate);

}  // namespace ivm

struct ivm_inspector_session : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::InspectorSession> session;
};

#endif  // IVM_INSPECTOR_H
