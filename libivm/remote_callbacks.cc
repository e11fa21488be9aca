// remote_callbacks.cc — host callbacks called from a worker's JavaScript, seen
// from the host (docs/process.md, "Host callbacks"; docs/wire-protocol.md).
//
// A callback that crosses into a worker (an attachment of a CALL's value)
// gets an id, and the worker's table of callbacks keeps it alive until the
// worker releases that id (its function was collected, its isolate went) or
// dies. When the worker's JavaScript calls it, the worker sends a CALLBACK
// frame naming the CALL it runs under; the callback runs on the host thread
// that waits for that CALL (a synchronous caller), or on a runner thread of
// this file for asynchronous calls (no host thread waits for them, and the
// I/O thread must never block). A synchronous call that the callback makes
// on the same isolate is sent as kOpNested, which the worker's JavaScript
// thread, blocked in the callback, runs itself: so callbacks nest as deep as
// inline. Nothing the worker sends is trusted: an unknown callback id, a call
// id that is not running, or a malformed payload kills it.
#include "callback.h"
#include "context.h"
#include "copy.h"
#include "host_exit.h"
#include "remote.h"
#include "wire_value.h"
#include "worker_process.h"

#include <cxxabi.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>
#include <unordered_set>
#include <vector>

namespace ivm {

namespace remote {

// A callback's invocation by a worker's JavaScript, during its host function.
struct Invocation {
  WorkerProcess* worker;
  std::shared_ptr<RemoteIsolate> remote;   // null if the isolate is gone
  uint64_t iso;
  uint64_t id;             // the CALLBACK frame's; its CALLBACK_REPLY repeats it
  uint64_t deferred = 0;   // set by ivm_call_defer
};

struct RemoteDeferred {
  std::weak_ptr<WorkerProcess> worker;
  std::weak_ptr<RemoteIsolate> remote;
  uint64_t iso = 0;
  uint64_t id = 0;
  std::atomic<bool> settled{false};
};

class CallbackTable {
 public:
  struct Entry {
    std::shared_ptr<CallbackData> data;
    uint64_t iso = 0;
    std::weak_ptr<RemoteIsolate> remote;   // for the codec of its values
  };
  void Add(uint64_t id, Entry e) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_[id] = std::move(e);
  }
  bool Find(uint64_t id, Entry* out) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return false;
    *out = it->second;
    return true;
  }
  std::shared_ptr<CallbackData> Remove(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return nullptr;
    std::shared_ptr<CallbackData> data = std::move(it->second.data);
    entries_.erase(it);
    return data;
  }
  std::vector<std::shared_ptr<CallbackData>> Clear() {
    std::vector<std::shared_ptr<CallbackData>> all;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, e] : entries_) all.push_back(std::move(e.data));
    entries_.clear();
    tokens_.clear();
    return all;
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.size();
  }
  // Host error tokens sent to the worker: only those may come back in a REPLY.
  void SentToken(uint64_t token) {
    std::lock_guard<std::mutex> lock(mu_);
    if (tokens_.size() >= 4096) tokens_.clear();
    tokens_.insert(token);
  }
  bool TakeToken(uint64_t token) {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_.erase(token) != 0;
  }

 private:
  std::mutex mu_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::unordered_set<uint64_t> tokens_;
};

std::shared_ptr<CallbackTable> NewCallbackTable() { return std::make_shared<CallbackTable>(); }

namespace {

// Threads for the callbacks of asynchronous calls (and for dropping
// callbacks, whose finalizers may wait for a language runtime's lock): one
// idle thread per queued task, else a new one, up to kMaxThreads (then tasks
// wait: workers cannot make the host start threads without bound); idle
// threads end after 5 s.
class Runner {
 public:
  static Runner& Get() {
    static Runner* runner = new Runner();   // never destroyed: its threads may outlive exit
    return *runner;
  }
  void Run(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
    if (tasks_.size() > idle_ && threads_ < kMaxThreads) {
      ++threads_;
      std::thread([this] { Loop(); }).detach();
    } else {
      cv_.notify_one();
    }
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      bool work = cv_.wait_for(lock, std::chrono::seconds(5), [&] { return !tasks_.empty(); });
      --idle_;
      if (!work) {
        --threads_;
        return;
      }
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      // (a forced unwind ends this thread: see DropLater)
      CallIntoHost(OnHostExit::kUnwind, [&] { task(); }, [] {});
      task = nullptr;
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  static constexpr size_t kMaxThreads = 64;
  std::deque<std::function<void()>> tasks_;
  size_t idle_ = 0;
  size_t threads_ = 0;
};

// The invocations this thread is running, innermost last.
thread_local std::vector<Invocation*> t_running;

// Drops callbacks; those whose finalizer would run now (the last share) are
// dropped on a runner thread, since a finalizer may wait for a language
// runtime's lock and the caller may be the I/O thread. The runner calls each
// finalizer itself, not from CallbackData's (noexcept) destructor: a runtime
// that is exiting may end the thread from inside it (Python's pthread_exit
// when a thread wants the GIL during finalization), and that unwind must not
// cross a noexcept frame (glibc aborts: "exception not rethrown"); what is
// left then is leaked, as the process is exiting.
void DropLater(std::vector<std::shared_ptr<CallbackData>> data) {
  std::erase_if(data, [](const std::shared_ptr<CallbackData>& d) { return d.use_count() > 1; });
  if (data.empty()) return;
  auto* owned = new std::vector<std::shared_ptr<CallbackData>>(std::move(data));
  Runner::Get().Run([owned] {
    for (std::shared_ptr<CallbackData>& d : *owned) {
      if (d.use_count() == 1) {
        void (*finalize)(void*) = std::exchange(d->finalize, nullptr);
        if (finalize != nullptr) finalize(d->user_data);
      }
      d.reset();
    }
    delete owned;
  });
}

// An outcome (CALLBACK_REPLY payload, or a settle's): u32 status, then on
// success u8 form (0: a value follows, 1: deferred, u64 its id), else bytes
// message, bytes name, u64 host token, u8 abort.
void WriteError(wire::Writer& w, const ivm_error_t* err) {
  w.U32(err->kind == 0 ? IVM_ERROR_INTERNAL : err->kind)
      .Bytes(err->message)
      .Bytes(err->name)
      .U64(err->host_token)
      .U8(err->host_abort ? 1 : 0);
}

// A TypeError for a result that cannot go back (as inline's wording).
ivm_error_t* ResultError(const std::string& why) {
  ivm_error_t* err = MakeError(IVM_ERROR_JS_EXCEPTION, "the result of a host function: " + why);
  err->name = "TypeError";
  return err;
}

ivm_value_t* PrimitiveResult(const ivm_primitive_t& p) {
  switch (p.kind) {
    case IVM_VALUE_NULL: return ivm_value_new_null();
    case IVM_VALUE_BOOLEAN: return ivm_value_new_boolean(p.boolean);
    case IVM_VALUE_NUMBER: return ivm_value_new_number(p.number);
    default: return ivm_value_new_undefined();
  }
}

}  // namespace

// ---- Host callbacks entering a worker's isolate (HostCodec's callback part). ----

CallbackCodec::~CallbackCodec() {
  if (committed_) return;
  std::vector<std::shared_ptr<CallbackData>> dropped;
  for (uint64_t id : added_) {
    if (auto data = iso_->worker().callback_table().Remove(id)) dropped.push_back(std::move(data));
  }
  DropLater(std::move(dropped));
}

bool CallbackCodec::Write(wire::Writer& w, const ivm_value_t* value, size_t index,
                          std::string* why) {
  const auto& atts = value->serialized->attachments;
  if (index >= atts.size() || !atts[index].callback) {
    *why = "an attachment that cannot cross into a worker process";
    return false;
  }
  WorkerProcess& worker = iso_->worker();
  uint64_t id = worker.NextId();
  worker.callback_table().Add(id, CallbackTable::Entry{atts[index].callback, iso_->id(), iso_});
  added_.push_back(id);
  w.U64(id).U32(atts[index].flags);
  return true;
}

std::string NestIfInCallback(RemoteIsolate& iso, const std::string& frame) {
  for (auto it = t_running.rbegin(); it != t_running.rend(); ++it) {
    Invocation* inv = *it;
    if (inv->worker != &iso.worker() || inv->iso != iso.id()) continue;
    wire::Header h;
    std::string why;
    if (frame.size() < wire::kHeaderSize ||
        !wire::DecodeHeader(reinterpret_cast<const uint8_t*>(frame.data()), &h, &why)) {
      return frame;
    }
    return wire::Writer(wire::kCall, h.id)
        .U32(wire::kOpNested)
        .U64(iso.id())
        .U64(inv->id)
        .Bytes(std::string_view(frame).substr(wire::kHeaderSize))
        .SetFdCount(h.fd_count())   // its large buffers go along (rref)
        .Finish();
  }
  return frame;
}

std::string HooksFrame(const std::shared_ptr<RemoteIsolate>& iso, uint64_t ctx_id,
                       const ContextHooks& hooks, uint64_t* id) {
  bool host = hooks.host.host != 0;
  wire::Writer w = iso->Begin(host ? wire::kOpCreateContextHost : wire::kOpCreateContextHooks, id);
  w.U64(ctx_id);
  if (host) w.U32(hooks.host.host).U32(hooks.host.console_max_bytes);
  const std::shared_ptr<CallbackData>* all[] = {&hooks.import_hook, &hooks.on_rejection,
                                                &hooks.host.console};
  for (size_t i = 0; i < (host ? 3 : 2); ++i) {
    const std::shared_ptr<CallbackData>& hook = *all[i];
    uint64_t callback = 0;
    if (hook) {
      callback = iso->worker().NextId();
      iso->worker().callback_table().Add(callback, CallbackTable::Entry{hook, iso->id(), iso});
    }
    w.U8(hook ? 1 : 0).U64(callback);
  }
  return w.Finish();
}

uint64_t CheckToken(WorkerProcess& worker, uint64_t token) {
  return token != 0 && worker.callback_table().TakeToken(token) ? token : 0;
}

// ---- Deferred results (ivm_call_defer on a worker's call). ----

ivm_error_t* Defer(ivm_call* call, ivm_deferred** out) {
  Invocation* inv = call->remote;
  if (inv->deferred != 0) return InvalidArgument("the call is already deferred");
  auto record = std::make_shared<RemoteDeferred>();
  record->worker = inv->worker->weak_from_this();
  record->remote = inv->remote;
  record->iso = inv->iso;
  record->id = inv->worker->NextId();
  auto d = std::make_unique<ivm_deferred>();
  d->remote = record;
  inv->deferred = record->id;
  *out = d.release();
  return nullptr;
}

bool DeferredSettled(const RemoteDeferred& d) { return d.settled.load(); }

// The CALLBACK_REPLY of invocation `id` of isolate `iso` (for a settle: its
// outcome, with id 0, and `fds` null: large buffers inline): `out` or `err`
// (both owned; neither: the primitive `prim`, or undefined), or deferred.
std::string CallbackReply(WorkerProcess& worker, const std::shared_ptr<RemoteIsolate>& iso,
                          uint64_t id, const ivm_primitive_t* prim, ivm_value_t* out,
                          ivm_error_t* err, uint64_t deferred, wire::Fds* fds) {
  std::unique_ptr<ivm_value_t> value(out);
  if (err == nullptr && deferred != 0) {
    return wire::Writer(wire::kCallbackReply, id).U32(wire::kStatusOk).U8(1).U64(deferred).Finish();
  }
  if (err == nullptr) {
    if (!value) value.reset(prim ? PrimitiveResult(*prim) : ivm_value_new_undefined());
    wire::Writer w(wire::kCallbackReply, id);
    w.U32(wire::kStatusOk).U8(0);
    std::string why, frame;
    if (!iso) {
      err = MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
    } else {
      HostCodec codec(iso);   // References, ExternalCopies, large buffers, callbacks
      codec.inline_buffers = fds == nullptr;
      if (wire::WriteValue(w, value.get(), &why, &codec)) frame = w.Finish();
      if (!frame.empty()) {
        codec.Commit();
        if (fds != nullptr) *fds = std::move(codec.out_fds);
        return frame;
      }
      err = ResultError(why.empty() ? "it is too large for one frame (16 MiB)" : why);
    }
  }
  wire::Writer w(wire::kCallbackReply, id);
  WriteError(w, err);
  if (err->host_token != 0) worker.callback_table().SentToken(err->host_token);
  ivm_error_free(err);
  return w.Finish();
}

ivm_error_t* SettleDeferred(RemoteDeferred& d, ivm_value_t* value, ivm_error_t* error) {
  std::unique_ptr<ivm_value_t> owned(value);
  if (d.settled.exchange(true)) {
    ivm_error_free(error);
    return InvalidArgument("the deferred call was already settled");
  }
  std::shared_ptr<WorkerProcess> worker = d.worker.lock();
  if (!worker) {
    ivm_error_free(error);
    return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  }
  // kOpCallbackSettle: u64 iso, u64 deferred, bytes outcome (a CALLBACK_REPLY's payload).
  auto wrap = [&](const std::string& outcome) {
    return wire::Writer(wire::kCall, worker->NextId())
        .U32(wire::kOpCallbackSettle)
        .U64(d.iso)
        .U64(d.id)
        .Bytes(std::string_view(outcome).substr(wire::kHeaderSize))
        .Finish();
  };
  std::shared_ptr<RemoteIsolate> iso = d.remote.lock();
  std::string frame =
      wrap(CallbackReply(*worker, iso, 0, nullptr, owned.release(), error, 0, nullptr));
  if (frame.empty()) {
    frame = wrap(CallbackReply(*worker, iso, 0, nullptr, nullptr,
                               ResultError("it is too large for one frame (16 MiB)"), 0, nullptr));
  }
  worker->Post(frame);
  return nullptr;
}

}  // namespace remote

// ---- The worker's CALLBACK frames (I/O thread) and their invocations. ----

void WorkerProcess::OnCallbackFrame(wire::Frame& frame) {
  wire::Reader r(frame.payload);
  uint32_t op = 0;
  uint64_t call_id = 0, callback = 0;
  if (!r.U32(&op) || (op != wire::kOpCallbackInvoke && op != wire::kOpCallbackRelease &&
                      op != wire::kOpCallbackNotify && op != wire::kOpCallbackNotifyWait &&
                      op != wire::kOpInspectorMessage)) {
    return ProtocolViolation("a CALLBACK frame with an unknown op");
  }
  if (op == wire::kOpInspectorMessage) {   // remote_inspector.cc
    std::string why = remote::OnInspectorMessage(*this, r);
    if (!why.empty()) ProtocolViolation(why);
    return;
  }
  if (op == wire::kOpCallbackRelease) {
    if (!r.U64(&callback) || !r.Done()) return ProtocolViolation("a malformed CALLBACK release");
    auto data = callbacks_->Remove(callback);
    if (!data) return ProtocolViolation("a CALLBACK release of an unknown callback");
    remote::DropLater({std::move(data)});
    return;
  }
  remote::CallbackTable::Entry entry;
  if (!r.U64(&call_id) || !r.U64(&callback)) return ProtocolViolation("a malformed CALLBACK");
  if (!callbacks_->Find(callback, &entry)) {
    return ProtocolViolation("a CALLBACK for unknown callback " + std::to_string(callback));
  }
  std::string why;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(call_id);
    if (!JoinBacklogLocked(frame, &why)) {
    } else if (it != pending_.end() && it->second->kind == wire::kReply) {
      it->second->callbacks.push_back(std::move(frame));
      cv_.notify_all();
      return;
    } else if (call_id != 0 && async_.count(call_id) == 0) {
      LeaveBacklogLocked(frame);
      why = "a CALLBACK under call " + std::to_string(call_id) + ", which is not running";
    }
  }
  if (!why.empty()) return ProtocolViolation(why);
  std::shared_ptr<WorkerProcess> self = shared_from_this();
  auto f = std::make_shared<wire::Frame>(std::move(frame));
  remote::Runner::Get().Run([self, f] { self->RunCallback(*f); });
}

bool WorkerProcess::JoinBacklogLocked(const wire::Frame& frame, std::string* why) {
  backlog_frames_ += 1;
  backlog_bytes_ += frame.payload.size();
  backlog_fds_ += frame.fds.size();
  if (backlog_frames_ <= kMaxCallbackBacklog && backlog_bytes_ <= kMaxCallbackBacklogBytes &&
      backlog_fds_ <= kMaxCallbackBacklogFds) {
    return true;
  }
  *why = "a flood of host callback calls (" + std::to_string(backlog_frames_) + " calls, " +
         std::to_string(backlog_bytes_) + " bytes, " + std::to_string(backlog_fds_) +
         " descriptors waiting; at most " + std::to_string(kMaxCallbackBacklog) + ", " +
         std::to_string(kMaxCallbackBacklogBytes) + ", " +
         std::to_string(kMaxCallbackBacklogFds) + ")";
  LeaveBacklogLocked(frame);
  return false;
}

void WorkerProcess::LeaveBacklogLocked(const wire::Frame& frame) {
  backlog_frames_ -= 1;
  backlog_bytes_ -= frame.payload.size();
  backlog_fds_ -= frame.fds.size();
}

void WorkerProcess::RunCallback(const wire::Frame& frame) {
  // The frame stays in the backlog until it has run (and its invoke is answered).
  struct Leave {
    WorkerProcess* self;
    const wire::Frame& frame;
    ~Leave() {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->LeaveBacklogLocked(frame);
    }
  } leave{this, frame};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (dead_ || !kill_reason_.empty()) return;   // a killed worker's calls do not run
  }
  wire::Reader r(frame.payload);
  uint32_t op = 0, call_op = 0, nargs = 0;
  uint64_t call_id = 0, callback = 0;
  remote::CallbackTable::Entry entry;
  if (!r.U32(&op) || !r.U64(&call_id) || !r.U64(&callback) || !r.U32(&call_op) ||
      !r.U32(&nargs) || call_op > IVM_CALL_COPY || nargs > (1u << 20)) {
    ivm_error_free(BadReply("a malformed CALLBACK"));
    return;
  }
  if (!callbacks_->Find(callback, &entry)) {
    ivm_error_free(BadReply("a CALLBACK for a released callback"));
    return;
  }
  ivm_call c;
  std::shared_ptr<RemoteIsolate> iso = entry.remote.lock();
  if (!iso) {   // the isolate's last handle went meanwhile: its JavaScript is being stopped
    if (op != wire::kOpCallbackNotify) {
      Send(remote::CallbackReply(*this, nullptr, frame.header.id, nullptr, nullptr,
                                 MakeError(IVM_ERROR_DISPOSED, kDisposedMessage), 0, nullptr));
    }
    return;
  }
  remote::HostCodec codec(iso);   // the arguments' References, copies, buffers
  codec.in_fds = &frame.fds;
  codec.seal_received = true;
  for (uint32_t i = 0; i < nargs; ++i) {
    ivm_value_t* v = nullptr;
    if (!wire::ReadValue(r, &v, &codec)) {
      ivm_error_free(BadReply("a malformed argument in a CALLBACK"));
      return;
    }
    c.args.push_back(v);
  }
  if (!r.Done()) {
    ivm_error_free(BadReply("a CALLBACK with bytes after its arguments"));
    return;
  }
  c.op = call_op;
  // A notification (the rejection hook) has no invocation waiting in the worker: nothing
  // nests in it, and its outcome is dropped. One that the worker waits for
  // (kOpCallbackNotifyWait) is answered with undefined once it has run.
  bool notify = op == wire::kOpCallbackNotify;
  bool notify_wait = op == wire::kOpCallbackNotifyWait;
  remote::Invocation inv{this, iso, entry.iso, frame.header.id};
  c.remote = &inv;
  ivm_value_t* out = nullptr;
  ivm_error_t* err = nullptr;
  if (!notify) remote::t_running.push_back(&inv);
  // (a forced unwind ends this thread: see DropLater)
  CallIntoHost(
      OnHostExit::kUnwind, [&] { err = entry.data->fn(entry.data->user_data, &c, &out); },
      [&] { err = MakeError(IVM_ERROR_INTERNAL, "a host function threw a C++ exception"); });
  if (!notify) remote::t_running.pop_back();
  entry.data.reset();
  if (err != nullptr && out != nullptr) {
    ivm_value_free(out);
    out = nullptr;
  }
  if (notify || notify_wait) {
    ivm_value_free(out);
    ivm_error_free(err);
    out = nullptr;
    err = nullptr;
    c.result = ivm_primitive_t{};
    if (notify) return;
  }
  wire::Fds fds;
  std::string reply =
      remote::CallbackReply(*this, iso, frame.header.id, &c.result, out, err, inv.deferred, &fds);
  Send(reply, fds);   // a dead worker: the result is dropped
}

void WorkerProcess::DropCallbacks() { remote::DropLater(callbacks_->Clear()); }

}  // namespace ivm
