// worker_callbacks.cc — host callbacks inside ivm-worker (docs/process.md,
// "Host callbacks"; docs/wire-protocol.md, ops 40-43).
//
// A host callback arrives as an attachment (u64 id, u32 flags) of a CALL's
// value and becomes a callback of this worker, whose function sends a
// CALLBACK frame (the CALL it runs under, the callback's id, its arguments)
// and blocks its JavaScript thread until the CALLBACK_REPLY. Meanwhile the
// host may nest synchronous CALLs in the invocation (kOpNested): the reading
// thread hands them to the blocked thread, which runs them itself with the
// synchronous ABI calls (re-entering its isolate as inline host code does),
// and replies. When the function is collected, or its isolate goes, the
// finalizer tells the host (CALLBACK release) so that it lets go of its
// callback. The worker trusts its host, but still reads through the bounded
// reader.
#include "worker_callbacks.h"

#include "worker_server.h"

#include <memory>
#include <vector>

namespace ivm::worker {

namespace {

// The CALLs this thread runs nested in host callbacks, innermost last.
thread_local std::vector<uint64_t> t_nested;

ivm_error_t* HostError(std::string_view name, std::string_view message) {
  return ivm_error_new_host(name.data(), name.size(), message.data(), message.size(), 0, 0);
}

// An error outcome: bytes message, bytes name, u64 token, u8 abort.
ivm_error_t* ReadError(wire::Reader& r) {
  std::string_view message, name;
  uint64_t token = 0;
  uint8_t abort = 0;
  if (!r.Bytes(&message) || !r.Bytes(&name, 4096) || !r.U64(&token) || !r.U8(&abort) ||
      !r.Done()) {
    return HostError("Error", "a malformed result from the host");
  }
  return ivm_error_new_host(name.data(), name.size(), message.data(), message.size(), token,
                            abort ? IVM_HOST_ERROR_ABORT : 0);
}

}  // namespace

struct Callbacks::Proxy {
  uint64_t id;
  ivm_isolate_t* iso;
  bool notify = false;   // the rejection hook: the host's outcome is dropped
};

Callbacks& Callbacks::Get() {
  static Callbacks* callbacks = new Callbacks();
  return *callbacks;
}

void Callbacks::Init(Channel& channel, Ops& ops) {
  channel_ = &channel;
  ops_ = &ops;
}

ivm_callback_t* Callbacks::NewCallback(uint64_t id, ivm_isolate_t* iso, bool notify) {
  auto* proxy = new Proxy{id, iso, notify};
  ivm_callback_t* cb = nullptr;
  // The finalizer runs (and tells the host) even when this fails.
  if (ivm_error_t* err = ivm_callback_new(&Callbacks::HostFn, proxy, &Callbacks::Finalize, 0, &cb)) {
    ivm_error_free(err);
    return nullptr;
  }
  return cb;
}

bool Callbacks::ReadCallback(wire::Reader& r, ivm_isolate_t* iso, ivm_value_t* value) {
  uint64_t id = 0;
  uint32_t flags = 0;
  if (!r.U64(&id) || !r.U32(&flags)) return false;
  ivm_callback_t* cb = NewCallback(id, iso, false);
  if (cb == nullptr) return false;
  size_t index = 0;
  ivm_error_t* err = ivm_value_attach_callback(value, cb, flags, &index);
  ivm_callback_free(cb);
  ivm_error_free(err);
  return err == nullptr;
}

ivm_error_t* Callbacks::HostFn(void* user_data, ivm_call_t* call, ivm_value_t** out) {
  return Get().Invoke(*static_cast<Proxy*>(user_data), call, out);
}

bool Callbacks::SendCallback(const std::string& frame, const wire::Fds& fds) {
  bool sent = channel_->Send(frame, fds);
#ifdef IVM_WORKER_TEST_HOOKS
  // IVM_DEBUG_HOOK_REPEAT_CALLBACK: a flood of copies (those without descriptors).
  for (uint32_t n = repeat_next_.exchange(0); sent && n > 1 && fds.empty(); --n) {
    sent = channel_->Send(frame);
  }
#endif
  return sent;
}

void Callbacks::Finalize(void* user_data) {
  std::unique_ptr<Proxy> proxy(static_cast<Proxy*>(user_data));
  Callbacks& self = Get();
  if (self.channel_ == nullptr) return;
  self.channel_->Send(
      wire::Writer(wire::kCallback).U32(wire::kOpCallbackRelease).U64(proxy->id).Finish());
}

ivm_error_t* Callbacks::Invoke(Proxy& proxy, ivm_call_t* call, ivm_value_t** out) {
  Invocation inv;
  inv.call = t_nested.empty() ? ops_->CallOfJob(ivm_call_job(call)) : t_nested.back();
  inv.iso = proxy.iso;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_.count(proxy.iso) != 0) {
      static constexpr std::string_view kGone = "the isolate is disposed";
      return ivm_error_new_host("Error", 5, kGone.data(), kGone.size(), 0, IVM_HOST_ERROR_ABORT);
    }
    inv.id = next_invocation_++;
  }
  size_t argc = ivm_call_argc(call);
  // A notification (the rejection hook) waits for the host too, as inline, where the hook
  // runs before JavaScript goes on: so the hook may call the isolate (nested in it), and
  // however many rejections a script leaves, they never pile up on the host.
  wire::Writer w(wire::kCallback, inv.id);
  w.U32(proxy.notify ? wire::kOpCallbackNotifyWait : wire::kOpCallbackInvoke);
  w.U64(inv.call).U64(proxy.id).U32(ivm_call_op(call));
  w.U32(static_cast<uint32_t>(argc));
  WorkerCodec codec(ops_->refs(), proxy.iso);   // References, ExternalCopies, large buffers
  for (size_t i = 0; i < argc; ++i) {
    std::string why;
    if (!wire::WriteValue(w, ivm_call_arg(call, i), &why, &codec)) {
      return HostError("TypeError", "argument " + std::to_string(i) + " of a host function: " + why);
    }
  }
  std::string frame = w.Finish();
  if (frame.empty()) {
    return HostError("TypeError",
                     "the arguments of a host function are too large for one frame (16 MiB)");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    invocations_[inv.id] = &inv;
  }
  auto leave = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    invocations_.erase(inv.id);
  };
  // The reader reads while this waits for the reply (worker_follow.cc).
  struct Waits {
    Channel* channel;
    explicit Waits(Channel* c) : channel(c) { channel->CallbackWaits(true); }
    ~Waits() { channel->CallbackWaits(false); }
  } waits(channel_);
  if (!SendCallback(frame, codec.out_fds)) {
    leave();
    return HostError("Error", "the host is gone");
  }
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_);
    inv.cv.wait(lock, [&] { return inv.aborted || !inv.queue.empty(); });
    if (inv.queue.empty()) {   // cancelled or disposed: the call must not go on
      invocations_.erase(inv.id);
      static constexpr std::string_view kStopped = "the call was stopped while a host callback ran";
      return ivm_error_new_host("Error", 5, kStopped.data(), kStopped.size(), 0,
                                IVM_HOST_ERROR_ABORT);
    }
    wire::Frame f = std::move(inv.queue.front());
    inv.queue.pop_front();
    if (f.header.kind == wire::kCallbackReply) invocations_.erase(inv.id);
    lock.unlock();
    if (f.header.kind == wire::kCallbackReply && proxy.notify) {
      return nullptr;   // the host ran the notification: its outcome is dropped
    }
    if (f.header.kind == wire::kCallbackReply) return Outcome(f, proxy.iso, call, out);
    t_nested.push_back(f.header.id);
    SetNested(f.header.id, proxy.iso);
    wire::Fds fds;
    std::string reply = RunNested(f, &fds);
    SetNested(f.header.id, nullptr);
    t_nested.pop_back();
    channel_->Send(reply, fds);
  }
}

// A CALLBACK_REPLY: u32 status; on success u8 form (0: a value, 1: deferred
// with u64 id), else an error.
ivm_error_t* Callbacks::Outcome(const wire::Frame& reply, ivm_isolate_t* iso, ivm_call_t* call,
                                ivm_value_t** out) {
  wire::Reader r(reply.payload);
  uint32_t status = 0;
  uint8_t form = 0;
  if (!r.U32(&status)) return HostError("Error", "a malformed result from the host");
  if (status != wire::kStatusOk) return ReadError(r);
  if (!r.U8(&form)) return HostError("Error", "a malformed result from the host");
  if (form == 0) {
    WorkerCodec codec(ops_->refs(), iso);
    codec.in_fds = &reply.fds;
    ivm_value_t* value = nullptr;
    if (!wire::ReadValue(r, &value, &codec) || !r.Done()) {
      ivm_value_free(value);
      return HostError("Error", "a malformed result from the host");
    }
    *out = value;
    return nullptr;
  }
  uint64_t id = 0;
  if (form != 1 || !r.U64(&id) || !r.Done()) {
    return HostError("Error", "a malformed result from the host");
  }
  ivm_deferred_t* d = nullptr;
  if (ivm_error_t* err = ivm_call_defer(call, &d)) return err;
  std::string early;
  bool settled = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = early_settles_.find(id);
    if (it != early_settles_.end()) {
      early = std::move(it->second);
      early_settles_.erase(it);
      settled = true;
    } else {
      deferreds_[id] = Deferred{d, iso};
    }
  }
  if (settled) Settle(d, iso, early);
  return nullptr;
}

// Settles and frees `d` with an outcome (form 0 only).
void Callbacks::Settle(ivm_deferred_t* d, ivm_isolate_t* iso, std::string_view outcome) {
  wire::Reader r(outcome);
  uint32_t status = 0;
  uint8_t form = 0;
  ivm_value_t* value = nullptr;
  ivm_error_t* err = nullptr;
  WorkerCodec codec(ops_->refs(), iso);   // (a settle's large buffers are inline)
  if (!r.U32(&status)) {
    err = HostError("Error", "a malformed result from the host");
  } else if (status != wire::kStatusOk) {
    err = ReadError(r);
  } else if (!r.U8(&form) || form != 0 || !wire::ReadValue(r, &value, &codec) || !r.Done()) {
    ivm_value_free(value);
    value = nullptr;
    err = HostError("Error", "a malformed result from the host");
  }
  ivm_error_free(err ? ivm_deferred_reject(d, err) : ivm_deferred_resolve(d, value));
  ivm_deferred_free(d);
}

// kOpCreateContextHooks after its iso: u64 ctx, then each hook (import,
// rejection) as u8 present + u64 callback id. kOpCreateContextHost has the
// host bits and console_max_bytes (u32 each) after the ctx, and a third hook
// (console). The options hold new callbacks (`cbs`, freed by the caller once
// the context is made).
bool Callbacks::ReadHooks(uint32_t op, wire::Reader& r, ivm_isolate_t* iso, uint64_t* ctx_id,
                          ivm_context_options_t* opts, ivm_callback_t* cbs[3]) {
  int n = op == wire::kOpCreateContextHost ? 3 : 2;
  uint8_t has[3] = {0, 0, 0};
  uint64_t ids[3] = {0, 0, 0};
  if (!r.U64(ctx_id)) return false;
  if (n == 3 && (!r.U32(&opts->host) || !r.U32(&opts->console_max_bytes))) return false;
  for (int i = 0; i < n; ++i) {
    if (!r.U8(&has[i]) || !r.U64(&ids[i]) || has[i] > 1) return false;
  }
  if (!r.Done()) return false;
  // The rejection hook is one way; the import and console hooks are waited for
  // (console lines stay in order with the host's own output).
  for (int i = 0; i < n; ++i) cbs[i] = has[i] ? NewCallback(ids[i], iso, i == 1) : nullptr;
  opts->import_hook = cbs[0];
  opts->on_unhandled_rejection = cbs[1];
  opts->console = cbs[2];
  return true;
}

std::string Callbacks::Call(uint64_t id, uint32_t op, wire::Reader& r, const wire::Fds& fds) {
  if (op == wire::kOpCreateContextHooks || op == wire::kOpCreateContextHost) {
    uint64_t iso_id = 0, ctx_id = 0;
    ivm_context_options_t opts = IVM_CONTEXT_OPTIONS_INIT;
    ivm_callback_t* cbs[3] = {nullptr, nullptr, nullptr};
    ivm_isolate_t* iso = r.U64(&iso_id) ? ops_->FindIsolate(iso_id) : nullptr;
    if (iso == nullptr) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown isolate");
    if (!ReadHooks(op, r, iso, &ctx_id, &opts, cbs)) {
      return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
    }
    std::string reply = ops_->CreateContext(id, iso, ctx_id, &opts);
    for (ivm_callback_t* cb : cbs) ivm_callback_free(cb);   // the context holds its share
    return reply;
  }
  uint64_t iso_id = 0, target = 0;
  std::string_view payload;
  if (!r.U64(&iso_id) || !r.U64(&target) || !r.Bytes(&payload) || !r.Done() ||
      (op != wire::kOpNested && op != wire::kOpCallbackSettle)) {
    return op == wire::kOpNested ? ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call")
                                 : std::string();
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (op == wire::kOpNested) {
    auto it = invocations_.find(target);
    if (it == invocations_.end()) {
      return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT,
                        "the host callback this call was made in has returned");
    }
    wire::Frame f;
    f.header.kind = wire::kCall;
    f.header.id = id;
    f.payload.assign(payload);
    f.fds = fds;
    it->second->queue.push_back(std::move(f));
    it->second->cv.notify_all();
    return {};
  }
  auto it = deferreds_.find(target);
  if (it == deferreds_.end()) {   // its CALLBACK_REPLY is still on the way
    if (early_settles_.size() >= 4096) early_settles_.clear();
    early_settles_[target].assign(payload);
    return {};
  }
  Deferred d = it->second;
  deferreds_.erase(it);
  lock.unlock();
  Settle(d.d, d.iso, payload);
  return {};
}

void Callbacks::OnReply(wire::Frame& frame) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = invocations_.find(frame.header.id);
  if (it == invocations_.end()) return;   // stopped meanwhile: the result is dropped
  it->second->queue.push_back(std::move(frame));
  it->second->cv.notify_all();
}

void Callbacks::AbortCall(uint64_t call_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, inv] : invocations_) {
    if (inv->call == call_id && call_id != 0) {
      inv->aborted = true;
      inv->cv.notify_all();
    }
  }
}

void Callbacks::SetNested(uint64_t call_id, ivm_isolate_t* iso) {
  std::lock_guard<std::mutex> lock(mu_);
  if (iso != nullptr) {
    nested_[call_id] = iso;
  } else {
    nested_.erase(call_id);
  }
}

void Callbacks::CancelNested(uint64_t call_id) {
  std::lock_guard<std::mutex> lock(mu_);   // (held: the call cannot end meanwhile)
  auto it = nested_.find(call_id);
  // Its JavaScript is the innermost of its isolate's thread: terminating stops it alone,
  // as inline, where the outer JavaScript then sees what the host callback makes of it.
  if (it != nested_.end()) ivm_isolate_terminate(it->second);
}

void Callbacks::AbortIsolate(ivm_isolate_t* iso, bool freed) {
  std::lock_guard<std::mutex> lock(mu_);
  if (freed) {
    aborted_.erase(iso);   // its handle's address may be reused
  } else {
    aborted_.insert(iso);
  }
  for (auto& [id, inv] : invocations_) {
    if (inv->iso == iso) {
      inv->aborted = true;
      inv->cv.notify_all();
    }
  }
}

// ---- CALLs nested in an invocation, run by its (blocked) JavaScript thread. ----

std::string Callbacks::ValueReply(uint64_t id, ivm_error_t* err, ivm_isolate_t* iso,
                                  ivm_value_t* value, wire::Fds* fds) {
  WorkerCodec codec(ops_->refs(), iso);
  std::string out = FullReply(id, err, iso, [&](wire::Writer& w, std::string* why) {
    return wire::WriteValue(w, value, why, &codec);
  });
  ivm_value_free(value);
  if (wire::FdCountOf(out) != 0) *fds = std::move(codec.out_fds);
  return out;
}

std::string Callbacks::RunNested(const wire::Frame& frame, wire::Fds* fds) {
  uint64_t id = frame.header.id;
  wire::Reader r(frame.payload);
  uint32_t op = 0;
  uint64_t iso_id = 0;
  if (!r.U32(&op) || !r.U64(&iso_id)) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  ivm_isolate_t* iso = ops_->FindIsolate(iso_id);
  if (iso == nullptr) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown isolate");
  switch (op) {
    case wire::kOpEval: {
      EvalCall q;
      WorkerCodec codec(ops_->refs(), iso);
      codec.in_fds = &frame.fds;
      bool ok = ReadEval(r, codec, &q);
      ivm_context_t* ctx = ok ? ops_->FindContext(q.ctx_id) : nullptr;
      if (ctx == nullptr) {
        return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, ok ? "unknown context" : "malformed call");
      }
      ivm_value_t* value = nullptr;
      ivm_error_t* err =
          q.nargs == wire::kNoClosure
              ? ivm_context_eval(ctx, q.code.data(), q.code.size(), &q.source, &q.run, &q.result,
                                 &value, nullptr)
              : ivm_context_eval_closure(ctx, q.code.data(), q.code.size(), q.args.data(),
                                         q.args.size(), &q.source, &q.run, &q.result, &value,
                                         nullptr);
      return ValueReply(id, err, iso, value, fds);
    }
    case wire::kOpScriptRun: {
      uint64_t script_id = 0, ctx_id = 0;
      ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
      ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
      if (!r.U64(&script_id) || !r.U64(&ctx_id) || !r.U64(&run.timeout_ns) ||
          !r.U32(&result.flags) || !r.Done()) {
        break;
      }
      ivm_script_t* script = ops_->FindScript(script_id);
      ivm_context_t* ctx = ops_->FindContext(ctx_id);
      if (script == nullptr || ctx == nullptr) {
        return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown script or context");
      }
      ivm_value_t* value = nullptr;
      ivm_error_t* err = ivm_script_run(script, ctx, &run, &result, &value, nullptr);
      return ValueReply(id, err, iso, value, fds);
    }
    case wire::kOpCompileScript: {
      uint64_t script_id = 0;
      std::string_view code;
      wire::WireSource s;
      if (!r.U64(&script_id) || !r.Bytes(&code) || !wire::ReadSource(r, &s) || !r.Done()) break;
      ivm_source_options_t o = IVM_SOURCE_OPTIONS_INIT;
      wire::ToSourceOptions(s, &o);
      ivm_script_t* script = nullptr;
      ivm_error_t* err = ivm_isolate_compile_script(iso, code.data(), code.size(), &o, nullptr, &script);
      if (err == nullptr) ops_->AddScript(script_id, script);
      return FullReply(id, err, iso, nullptr);
    }
    case wire::kOpCreateContext:
    case wire::kOpCreateContextHooks:
    case wire::kOpCreateContextHost: {
      uint64_t ctx_id = 0;
      ivm_context_options_t opts = IVM_CONTEXT_OPTIONS_INIT;
      ivm_callback_t* cbs[3] = {nullptr, nullptr, nullptr};
      bool ok = op == wire::kOpCreateContext ? r.U64(&ctx_id) && r.Done()
                                             : ReadHooks(op, r, iso, &ctx_id, &opts, cbs);
      if (!ok) break;
      ivm_context_t* ctx = nullptr;
      ivm_error_t* err = ivm_isolate_create_context(iso, &opts, &ctx);
      for (ivm_callback_t* cb : cbs) ivm_callback_free(cb);
      if (err == nullptr) ops_->AddContext(ctx_id, ctx);
      return FullReply(id, err, iso, nullptr);
    }
    case wire::kOpHeapStatistics: {
      if (!r.Done()) break;
      ivm_heap_statistics_t stats{};
      stats.struct_size = sizeof stats;
      ivm_error_t* err = ivm_isolate_heap_statistics(iso, &stats);
      return FullReply(id, err, iso, [&stats](wire::Writer& w, std::string*) {
        w.U32(wire::kHeapFieldCount);
        for (auto field : wire::kHeapFields) w.U64(stats.*field);
        return true;
      });
    }
    case wire::kOpContextGlobal:   // rref: References (worker_refs.cc)
      return ops_->GlobalNested(id, iso, r);
    case wire::kOpRefCall:
      return ops_->RefCallNested(id, iso, r, &frame.fds, fds);
    default:
      if (op >= wire::kOpFirstModuleOp && op <= wire::kOpLastModuleOp) {
        return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT,
                          "ES modules of an isolate in a worker process cannot be compiled, "
                          "linked, evaluated or read inside a synchronous host callback of that "
                          "isolate; use an async import_module hook (or prepare the modules "
                          "before the call)");
      }
      return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT,
                        "op " + std::to_string(op) + " cannot run inside a host callback");
  }
  return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
}

}  // namespace ivm::worker
