// inspector.cc — V8's inspector for one isolate, and its protocol sessions.
//
// Every message (and each session's connection and disconnection) is a task
// on the inspector's queue, run with the isolate locked on whichever thread
// holds it: the pause loop (runMessageLoopOnPause, on the thread of the
// paused JavaScript), an interrupt of running JavaScript, or a job on the
// isolate's queue when it is idle. Dispatching never blocks: it queues the
// task and asks for all three; whichever comes first runs it.
#include "inspector.h"

#include <v8-inspector.h>

#include "host_exit.h"
#include "jobs.h"
#include "options.h"
#include "remote.h"
#include "v8compat.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace ivm {

namespace {

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

  // Isolate thread only (the inspector's tasks).
  std::unique_ptr<v8_inspector::V8InspectorSession> v8;

 private:
  void Deliver(uint32_t kind, int call_id, const v8_inspector::StringView& view);
  ivm_inspector_message_fn fn_;
  void* user_data_;
  std::recursive_mutex mutex_;   // held while the callback runs
  bool closed_ = false;
};

class V8Client final : public Inspector, public v8_inspector::V8InspectorClient {
 public:
  explicit V8Client(IsolateHolder& holder);

  void ContextCreated(v8::Local<v8::Context> context, std::string_view name,
                      bool is_default) override;
  void ContextDestroyed(v8::Local<v8::Context> context) override;
  void DisposeLocked() override;

  // Any thread; never blocks. The session's connection, its messages and its
  // disconnection, served in order on the thread that holds the isolate.
  void Connect(const std::shared_ptr<IsolateHolder>& holder,
               std::shared_ptr<InspectorSession> session);
  void Dispatch(const std::shared_ptr<IsolateHolder>& holder,
                std::shared_ptr<InspectorSession> session, std::string message);
  void Disconnect(const std::shared_ptr<IsolateHolder>& holder,
                  std::shared_ptr<InspectorSession> session);

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
  int contexts_ = 0;                                           // isolate thread
  std::vector<v8::Global<v8::Context>> defaults_;   // user contexts, oldest first

  std::mutex mutex_;   // guards what follows
  std::condition_variable wake_;
  std::deque<Task> queue_;
  bool paused_ = false;   // a pause loop waits on wake_
  bool job_queued_ = false;
  bool disposed_ = false;
};

// The V8Client of an isolate made with the inspector option (nullptr: none).
V8Client* ClientOf(IsolateHolder& holder) { return static_cast<V8Client*>(holder.inspector()); }

constexpr int kContextGroupId = 1;
// How often a pause loop checks whether its call was told to stop (a timeout,
// a termination, a cancellation or a disposal), besides the wake-ups of tasks.
constexpr auto kPausePoll = std::chrono::milliseconds(5);

// UTF-8 (invalid sequences become U+FFFD) into UTF-16, as V8 takes messages.
std::u16string Utf8ToUtf16(std::string_view in) {
  std::u16string out;
  out.reserve(in.size());
  size_t i = 0;
  while (i < in.size()) {
    auto c = static_cast<unsigned char>(in[i]);
    uint32_t cp = 0xFFFD;
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 1) {
      cp = c;
    } else if (len != 0 && i + len <= in.size()) {
      uint32_t v = c & (0x7F >> len);
      bool ok = true;
      for (size_t k = 1; k < len; ++k) {
        auto cc = static_cast<unsigned char>(in[i + k]);
        ok &= (cc & 0xC0) == 0x80;
        v = (v << 6) | (cc & 0x3F);
      }
      static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
      if (ok && v >= kMin[len] && v <= 0x10FFFF && (v < 0xD800 || v > 0xDFFF)) cp = v;
      else len = 1;
    } else {
      len = 1;
    }
    i += len;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
  }
  return out;
}

// V8's message as UTF-8: its 8-bit strings already are (the protocol's JSON
// encoder writes UTF-8 bytes); 16-bit ones are UTF-16 (a lone surrogate
// becomes U+FFFD).
std::string ToUtf8(const v8_inspector::StringView& view) {
  if (view.is8Bit()) {
    return std::string(reinterpret_cast<const char*>(view.characters8()), view.length());
  }
  std::string out;
  out.reserve(view.length());
  const uint16_t* s = view.characters16();
  for (size_t i = 0; i < view.length(); ++i) {
    uint32_t c = s[i];
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < view.length() && s[i + 1] >= 0xDC00 &&
        s[i + 1] <= 0xDFFF) {
      c = 0x10000 + ((c - 0xD800) << 10) + (s[i + 1] - 0xDC00);
      ++i;
    } else if (c >= 0xD800 && c <= 0xDFFF) {
      c = 0xFFFD;
    }
    AppendCodePoint(out, c);
  }
  return out;
}

v8_inspector::StringView View(std::string_view ascii) {
  return {reinterpret_cast<const uint8_t*>(ascii.data()), ascii.size()};
}

// --- Sessions ------------------------------------------------------------------------------

void InspectorSession::sendResponse(int call_id,
                                    std::unique_ptr<v8_inspector::StringBuffer> message) {
  Deliver(IVM_INSPECTOR_RESPONSE, call_id, message->string());
}

void InspectorSession::sendNotification(std::unique_ptr<v8_inspector::StringBuffer> message) {
  Deliver(IVM_INSPECTOR_NOTIFICATION, 0, message->string());
}

void InspectorSession::Deliver(uint32_t kind, int call_id, const v8_inspector::StringView& view) {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  if (closed_) return;
  std::string text = ToUtf8(view);
  // Inside V8's frames: a host that ends this thread parks it.
  CallIntoHost(
      OnHostExit::kPark, [&] { fn_(user_data_, kind, call_id, text.data(), text.size()); },
      [] {});
}

void InspectorSession::Close() {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  closed_ = true;
}

bool InspectorSession::closed() {
  std::lock_guard<std::recursive_mutex> lock(mutex_);
  return closed_;
}

// --- The inspector ---------------------------------------------------------------------------

V8Client::V8Client(IsolateHolder& holder) : holder_(holder) {
  inspector_ = v8_inspector::V8Inspector::create(holder.isolate(), this);
}

void V8Client::ContextCreated(v8::Local<v8::Context> context, std::string_view name,
                               bool is_default) {
  if (!inspector_) return;
  // Numbered, so that DevTools' list of contexts tells them apart.
  std::string full = std::string(name) + " " + std::to_string(++contexts_);
  v8_inspector::V8ContextInfo info(context, kContextGroupId, View(full));
  std::string_view aux = is_default ? R"({"isDefault":true})" : R"({"isDefault":false})";
  info.auxData = View(aux);
  inspector_->contextCreated(info);
  if (is_default) defaults_.emplace_back(holder_.isolate(), context);
}

void V8Client::ContextDestroyed(v8::Local<v8::Context> context) {
  if (!inspector_) return;
  inspector_->contextDestroyed(context);
  for (auto it = defaults_.begin(); it != defaults_.end(); ++it) {
    if (*it == context) {
      defaults_.erase(it);
      break;
    }
  }
}

v8::Local<v8::Context> V8Client::ensureDefaultContextInGroup(int) {
  // The oldest user context still alive: where Runtime.evaluate without a
  // context id runs (DevTools' console before it picks one).
  if (defaults_.empty()) return {};
  return defaults_.front().Get(holder_.isolate());
}

void V8Client::DisposeLocked() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    disposed_ = true;
    queue_.clear();
  }
  for (auto& session : sessions_) {
    session->Close();
    session->v8.reset();
  }
  sessions_.clear();
  defaults_.clear();
  inspector_.reset();
}

void V8Client::Connect(const std::shared_ptr<IsolateHolder>& holder,
                       std::shared_ptr<InspectorSession> session) {
  Post(holder, Task{Op::kConnect, std::move(session), {}});
}

void V8Client::Dispatch(const std::shared_ptr<IsolateHolder>& holder,
                        std::shared_ptr<InspectorSession> session, std::string message) {
  Post(holder, Task{Op::kMessage, std::move(session), std::move(message)});
}

void V8Client::Disconnect(const std::shared_ptr<IsolateHolder>& holder,
                          std::shared_ptr<InspectorSession> session) {
  Post(holder, Task{Op::kDisconnect, std::move(session), {}});
}

void V8Client::Post(const std::shared_ptr<IsolateHolder>& holder, Task task) {
  bool job = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (disposed_) return;
    queue_.push_back(std::move(task));
    if (paused_) {
      wake_.notify_all();
      return;
    }
    // Running JavaScript takes it at its next interrupt check. Asked for every
    // task: an interrupt asked for while no thread holds the isolate may be
    // dropped (V8 keeps interrupt requests with the thread's state), and one
    // that comes when the queue is empty does nothing. Under the lock:
    // disposal marks `disposed_` before the isolate goes.
    holder->isolate()->RequestInterrupt(Interrupt, holder.get());
    job = !job_queued_;
    job_queued_ = true;
  }
  if (!job) return;
  std::weak_ptr<IsolateHolder> weak = holder;   // a queued task keeps no isolate alive
  EnqueueInternal(holder, [weak](ivm_completion_t*) -> ivm_error_t* {
    std::shared_ptr<IsolateHolder> h = weak.lock();
    V8Client* self = h ? ClientOf(*h) : nullptr;
    if (self == nullptr || h->disposed()) return nullptr;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      self->job_queued_ = false;
    }
    return h->Run(0, [&](v8::Isolate*, CallState&) -> ivm_error_t* {
      self->Drain();
      return nullptr;
    });
  });
}

void V8Client::Interrupt(v8::Isolate* isolate, void* data) {
  V8Client* self = ClientOf(*static_cast<IsolateHolder*>(data));
  if (self == nullptr) return;
  v8::HandleScope scope(isolate);
  self->Drain();
}

void V8Client::Drain() {
  for (;;) {
    Task task;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty() || disposed_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    RunTask(task);
  }
}

void V8Client::RunTask(Task& task) {
  InspectorSession& session = *task.session;
  switch (task.op) {
    case Op::kConnect:
      if (session.closed() || session.v8 || !inspector_) return;
      session.v8 = compat::ConnectInspector(*inspector_, kContextGroupId, &session);
      sessions_.push_back(task.session);
      return;
    case Op::kMessage: {
      if (!session.v8 || session.closed()) return;
      std::u16string text = Utf8ToUtf16(task.message);
      task.message.clear();
      session.v8->dispatchProtocolMessage(
          v8_inspector::StringView(reinterpret_cast<const uint16_t*>(text.data()), text.size()));
      return;
    }
    case Op::kDisconnect: {
      for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
        if (it->get() == &session) {
          sessions_.erase(it);
          break;
        }
      }
      // V8 resumes JavaScript paused for this session alone as it goes.
      std::unique_ptr<v8_inspector::V8InspectorSession> v8 = std::move(session.v8);
      v8.reset();
      if (sessions_.empty()) quit_ = true;   // nobody is left to resume it
      return;
    }
  }
}

bool V8Client::PausedCallStopped() {
  const CallState* call = holder_.CurrentCall();
  return holder_.disposed() || (call != nullptr && holder_.Stopped(*call));
}

void V8Client::runMessageLoopOnPause(int) {
  quit_ = false;
  v8::Isolate* isolate = holder_.isolate();
  while (!quit_) {
    Drain();
    if (quit_) break;
    if (PausedCallStopped()) {
      // A timeout, terminate, cancellation or disposal: the call unwinds from here.
      isolate->TerminateExecution();
      break;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    paused_ = true;
    if (queue_.empty() && !disposed_) wake_.wait_for(lock, kPausePoll);
    paused_ = false;
  }
  quit_ = false;
}

void V8Client::quitMessageLoopOnPause() { quit_ = true; }

double V8Client::currentTimeMS() {
  using namespace std::chrono;
  return duration<double, std::milli>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::shared_ptr<Inspector> Inspector::Create(IsolateHolder& holder) {
  return std::make_shared<V8Client>(holder);
}

Inspector* InspectorOf(v8::Isolate* isolate) {
  auto* holder = static_cast<IsolateHolder*>(isolate->GetData(0));
  return holder != nullptr ? holder->inspector() : nullptr;
}

}  // namespace ivm

struct ivm_inspector_session : ivm::LiveCounted {
  std::shared_ptr<ivm::IsolateHolder> holder;
  std::shared_ptr<ivm::InspectorSession> session;
  std::shared_ptr<ivm::remote::RemoteInspectorSession> remote;   // of a worker's isolate
};

// ---------------------------------------------------------------------------
// ABI

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_inspector_session_new(ivm_isolate_t* iso,
                                               const ivm_inspector_session_options_t* opts,
                                               ivm_inspector_session_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (iso == nullptr || opts == nullptr || out == nullptr) {
      return InvalidArgument("isolate, opts or out is NULL");
    }
    ivm_inspector_session_options_t o = IVM_INSPECTOR_SESSION_OPTIONS_INIT;
    if (ivm_error_t* err = ivm::ReadStruct(opts, &o)) return err;
    if (o.on_message == nullptr) return InvalidArgument("on_message is NULL");
    if (iso->remote) {   // remote_inspector.cc
      std::shared_ptr<ivm::remote::RemoteInspectorSession> remote;
      if (ivm_error_t* err =
              ivm::remote::InspectorSessionNew(iso->remote, o.on_message, o.user_data, &remote)) {
        return err;
      }
      auto shell = std::make_unique<ivm_inspector_session>();
      shell->remote = std::move(remote);
      *out = shell.release();
      return nullptr;
    }
    if (iso->holder->disposed()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kDisposedMessage);
    ivm::V8Client* inspector = ivm::ClientOf(*iso->holder);
    if (inspector == nullptr) {
      return InvalidArgument("the isolate was created without the inspector option");
    }
    auto shell = std::make_unique<ivm_inspector_session>();
    shell->holder = iso->holder;
    shell->session = std::make_shared<ivm::InspectorSession>(o.on_message, o.user_data);
    inspector->Connect(shell->holder, shell->session);
    *out = shell.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_inspector_session_dispatch(ivm_inspector_session_t* session,
                                                    const char* message, size_t len) {
  return Guard([&]() -> ivm_error_t* {
    if (session == nullptr || (message == nullptr && len != 0)) {
      return InvalidArgument("session or message is NULL");
    }
    if (len > IVM_INSPECTOR_MAX_MESSAGE) {
      return InvalidArgument("the protocol message is longer than " +
                             std::to_string(IVM_INSPECTOR_MAX_MESSAGE) + " bytes");
    }
    if (session->remote) {
      return ivm::remote::InspectorDispatch(*session->remote,
                                            std::string_view(message ? message : "", len));
    }
    ivm::V8Client* inspector = ivm::ClientOf(*session->holder);
    if (session->session->closed() || session->holder->disposed() || inspector == nullptr) {
      return ivm::MakeError(IVM_ERROR_DISPOSED, "the inspector session is closed");
    }
    inspector->Dispatch(session->holder, session->session, std::string(message ? message : "", len));
    return nullptr;
  });
}

IVM_API void ivm_inspector_session_free(ivm_inspector_session_t* session) {
  if (session == nullptr) return;
  try {
    if (session->remote) {
      ivm::remote::InspectorSessionFree(*session->remote);
      ivm::FreeHandle(session);
      return;
    }
    session->session->Close();
    ivm::V8Client* inspector = ivm::ClientOf(*session->holder);
    if (!session->holder->disposed() && inspector != nullptr) {
      inspector->Disconnect(session->holder, session->session);
    }
  } catch (...) {
  }
  ivm::FreeHandle(session);
}

}  // extern "C"
