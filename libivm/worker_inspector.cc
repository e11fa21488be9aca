// worker_inspector.cc — the worker's side of the inspector of its isolates
// (wire.h, ops 120-129): the host's sessions, by the ids it picks, are
// sessions of the worker's own inline isolates (ivm_inspector_session_*, like
// any embedder); their messages go back as CALLBACK frames (kOpInspectorMessage)
// from whichever thread V8 sends them on. Every op here returns at once, on
// the reading thread: a dispatch is only queued (inspector.cc serves it in the
// pause loop of JavaScript paused here, by an interrupt, or as an idle job),
// so the channel keeps being read while JavaScript is paused.
#include "worker_inspector.h"

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ivm::worker {

namespace {

struct Session {
  Channel* channel;
  uint64_t id;
  ivm_inspector_session_t* handle = nullptr;
};

// Pool or isolate threads: one message to the host. One over the bound of
// the protocol (which the host enforces) never goes: a response becomes an
// error response of the same id, a notification is dropped.
void Send(void* user_data, uint32_t kind, int call_id, const char* msg, size_t len) {
  auto* s = static_cast<Session*>(user_data);
  std::string error;
  std::string_view text(msg, len);
  if (len > IVM_INSPECTOR_MAX_MESSAGE) {
    if (kind != IVM_INSPECTOR_RESPONSE) return;
    error = "{\"id\":" + std::to_string(call_id) +
            ",\"error\":{\"code\":-32000,\"message\":\"the response is larger than " +
            std::to_string(IVM_INSPECTOR_MAX_MESSAGE) +
            " bytes, the limit for isolates in worker processes\"}}";
    text = error;
  }
  s->channel->Send(wire::Writer(wire::kCallback)
                       .U32(wire::kOpInspectorMessage)
                       .U64(s->id)
                       .U32(kind)
                       .U32(static_cast<uint32_t>(call_id))
                       .Bytes(text)
                       .Finish());
}

class Sessions {
 public:
  static Sessions& Get() {
    static Sessions* sessions = new Sessions();   // never destroyed: pool threads send late
    return *sessions;
  }
  std::unordered_map<uint64_t, std::unique_ptr<Session>> map;   // the reading thread's
};

}  // namespace

void InspectorCall(Channel& channel, Ops& ops, uint32_t op, uint64_t iso_id, wire::Reader& r) {
  uint64_t session_id = 0;
  std::string_view message;
  if (!r.U64(&session_id) || (op == wire::kOpInspectorDispatch && !r.Bytes(&message)) ||
      !r.Done()) {
    return;   // no reply to give: a malformed frame from the host does nothing
  }
  auto& map = Sessions::Get().map;
  auto it = map.find(session_id);
  switch (op) {
    case wire::kOpInspectorSessionNew: {
      ivm_isolate_t* iso = ops.FindIsolate(iso_id);
      if (iso == nullptr || it != map.end()) return;
      auto s = std::make_unique<Session>(Session{&channel, session_id});
      ivm_inspector_session_options_t o = IVM_INSPECTOR_SESSION_OPTIONS_INIT;
      o.on_message = Send;
      o.user_data = s.get();
      // Fails only for an isolate disposed (or made without the inspector, which
      // the host refuses first): the session then never answers, as one whose
      // isolate is gone.
      ivm_error_t* err = ivm_inspector_session_new(iso, &o, &s->handle);
      if (err != nullptr) {
        ivm_error_free(err);
        return;
      }
      map.emplace(session_id, std::move(s));
      return;
    }
    case wire::kOpInspectorDispatch:
      if (it != map.end()) {
        ivm_error_free(ivm_inspector_session_dispatch(it->second->handle, message.data(),
                                                      message.size()));
      }
      return;
    case wire::kOpInspectorSessionFree:
      if (it != map.end()) {
        ivm_inspector_session_free(it->second->handle);   // no message after this returns
        map.erase(it);
      }
      return;
  }
}

}  // namespace ivm::worker
