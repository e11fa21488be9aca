// remote_inspector.cc — the host's side of the inspector of an isolate in a
// worker (wire.h, ops 120-129; worker_inspector.cc is the worker's): sessions
// named by ids of the worker's channel, their messages forwarded as CALL
// frames that are never answered, and the worker's messages (CALLBACK frames)
// delivered to the session's callback on the I/O thread, in the order sent.
// Nothing the worker sends is trusted: a malformed message kills it; one for
// a session the host no longer has is dropped (it may have been in flight).
#include "host_exit.h"
#include "remote.h"
#include "worker_process.h"

#include <cstring>
#include <map>
#include <mutex>
#include <utility>

namespace ivm::remote {

struct RemoteInspectorSession {
  std::shared_ptr<RemoteIsolate> iso;
  uint64_t id = 0;
  ivm_inspector_message_fn fn = nullptr;
  void* user_data = nullptr;
  std::recursive_mutex mu;   // held while the callback runs
  bool closed = false;
};

namespace {

// Every live session, by its worker and its id there. A session holds its
// isolate, which holds its worker: a key's worker outlives the entry.
class Sessions {
 public:
  static Sessions& Get() {
    static Sessions* sessions = new Sessions();   // never destroyed (late I/O-thread frames)
    return *sessions;
  }
  void Add(const std::shared_ptr<RemoteInspectorSession>& s) {
    std::lock_guard<std::mutex> lock(mu_);
    map_[{&s->iso->worker(), s->id}] = s;
  }
  void Remove(RemoteInspectorSession& s) {
    std::lock_guard<std::mutex> lock(mu_);
    map_.erase({&s.iso->worker(), s.id});
  }
  std::shared_ptr<RemoteInspectorSession> Find(WorkerProcess* worker, uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find({worker, id});
    return it == map_.end() ? nullptr : it->second;
  }

 private:
  std::mutex mu_;
  std::map<std::pair<WorkerProcess*, uint64_t>, std::shared_ptr<RemoteInspectorSession>> map_;
};

}  // namespace

ivm_error_t* InspectorSessionNew(const std::shared_ptr<RemoteIsolate>& iso,
                                 ivm_inspector_message_fn fn, void* user_data,
                                 std::shared_ptr<RemoteInspectorSession>* out) {
  if (iso->disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  if (!iso->inspector()) {
    return InvalidArgument("the isolate was created without the inspector option");
  }
  auto s = std::make_shared<RemoteInspectorSession>();
  s->iso = iso;
  s->id = iso->worker().NextId();
  s->fn = fn;
  s->user_data = user_data;
  Sessions::Get().Add(s);   // before the worker can answer
  uint64_t call_id;
  iso->worker().Post(iso->Begin(wire::kOpInspectorSessionNew, &call_id).U64(s->id).Finish());
  *out = std::move(s);
  return nullptr;
}

ivm_error_t* InspectorDispatch(RemoteInspectorSession& s, std::string_view message) {
  {
    std::lock_guard<std::recursive_mutex> lock(s.mu);
    if (s.closed || s.iso->disposed()) {
      return MakeError(IVM_ERROR_DISPOSED, "the inspector session is closed");
    }
  }
  uint64_t call_id;
  s.iso->worker().Post(
      s.iso->Begin(wire::kOpInspectorDispatch, &call_id).U64(s.id).Bytes(message).Finish());
  return nullptr;
}

void InspectorSessionFree(RemoteInspectorSession& s) {
  {
    std::lock_guard<std::recursive_mutex> lock(s.mu);
    if (s.closed) return;
    s.closed = true;
  }
  Sessions::Get().Remove(s);
  uint64_t call_id;
  s.iso->worker().Post(s.iso->Begin(wire::kOpInspectorSessionFree, &call_id).U64(s.id).Finish());
}

namespace {
// Set while this thread runs a session's message callback: it may be the I/O
// thread or a caller reading its own REPLY (worker_io.cc), and either holds
// the channel, so a synchronous call from the callback would wait for itself.
thread_local bool t_in_handler = false;
}  // namespace

bool InInspectorHandler() { return t_in_handler; }

// A call id crosses as the u32 of its int32 (ids are the protocol messages' own,
// negative ones included).
int AsInt32(uint32_t bits) {
  int32_t id;
  std::memcpy(&id, &bits, sizeof id);
  return id;
}

std::string OnInspectorMessage(WorkerProcess& worker, wire::Reader& r) {
  uint64_t id = 0;
  uint32_t kind = 0, call_id = 0;
  std::string_view message;
  if (!r.U64(&id) || !r.U32(&kind) || !r.U32(&call_id) ||
      !r.Bytes(&message, IVM_INSPECTOR_MAX_MESSAGE) || !r.Done() ||
      (kind != IVM_INSPECTOR_RESPONSE && kind != IVM_INSPECTOR_NOTIFICATION) ||
      (kind == IVM_INSPECTOR_NOTIFICATION && call_id != 0)) {
    return "a malformed inspector message";
  }
  std::shared_ptr<RemoteInspectorSession> s = Sessions::Get().Find(&worker, id);
  if (!s) return "";   // freed by the host while the message was on its way
  std::lock_guard<std::recursive_mutex> lock(s->mu);
  if (s->closed) return "";
  t_in_handler = true;
  CallIntoHost(
      OnHostExit::kPark,
      [&] { s->fn(s->user_data, kind, AsInt32(call_id), message.data(), message.size()); },
      [] {});
  t_in_handler = false;
  return "";
}

}  // namespace ivm::remote
