// remote_ops.cc — the ABI entries of a worker-hosted isolate, its contexts and
// its scripts: each builds a CALL frame, and turns the REPLY into the call's
// usual outputs and errors. Synchronous forms block only the caller's thread
// (the I/O thread wakes it); asynchronous forms hold no thread: the I/O thread
// reports the job when the REPLY arrives, or when the worker dies.
#include "catastrophic.h"
#include "context.h"
#include "remote.h"
#include "wire_value.h"
#include "worker_process.h"

#include <utility>

namespace ivm::remote {

ivm_error_t* Sync(RemoteIsolate& iso, uint64_t id, const std::string& frame, uint64_t timeout_ns,
                  const Parse& parse, ivm_completion_t* c, const wire::Fds& fds) {
  wire::Frame reply;
  // Ctrl-C (ivm_interrupt_on_signal) cancels the call in the worker, which
  // stops its JavaScript there; the call then ends as a cancelled one.
  WorkerProcess& worker = iso.worker();
  uint64_t token = interrupt::EnterCall(
      [&worker, id] { worker.Post(wire::Writer(wire::kCancel, id).Finish()); });
  // Made by a host callback of this isolate's JavaScript: run by that JavaScript's thread.
  std::string sent = NestIfInCallback(iso, frame);
  wire::MarkSyncCall(sent);   // the worker's reader need not poll for the next frame
  ivm_error_t* call_error = worker.Call(id, sent, timeout_ns, &reply, fds);
  interrupt::LeaveCall(token);
  if (call_error) return call_error;
  wire::Reader r(reply.payload);
  if (ivm_error_t* err = iso.ReadReply(reply, &r)) return err;
  ReplyFdsScope scope(&reply.fds);
  return parse(r, c);
}

ivm_error_t* Async(const std::shared_ptr<RemoteIsolate>& iso, uint64_t id,
                   const std::string& frame, uint64_t timeout_ns, ivm_completion_kind_t kind,
                   ivm_done_fn done, void* user_data, uint64_t* job_out, Parse parse,
                   const wire::Fds& fds) {
  struct Slot {
    wire::Frame* reply = nullptr;
    ivm_error_t* error = nullptr;
  };
  auto slot = std::make_shared<Slot>();
  auto job = std::make_shared<Job>(
      kind, done, user_data, [slot, iso, parse](ivm_completion_t* c) -> ivm_error_t* {
        if (slot->error != nullptr) return std::exchange(slot->error, nullptr);
        wire::Reader r(slot->reply->payload);
        if (ivm_error_t* err = iso->ReadReply(*slot->reply, &r)) return err;
        ReplyFdsScope scope(&slot->reply->fds);
        return parse(r, c);
      });
  if (job_out) *job_out = job->id();
  if (iso->marked_disposed()) {   // as inline: the job fails at once
    job->Fail(MakeError(IVM_ERROR_DISPOSED, kDisposedMessage));
    return nullptr;
  }
  iso->TrackJob(job->id(), id);
  iso->worker().CallAsync(id, frame, timeout_ns,
                          [slot, job, iso](wire::Frame* reply, ivm_error_t* error) {
                            iso->UntrackJob(job->id());
                            slot->reply = reply;
                            slot->error = error;
                            job->Run();
                            slot->reply = nullptr;
                          },
                          fds);
  return nullptr;
}

Parse NoResult() {
  return [](wire::Reader&, ivm_completion_t*) -> ivm_error_t* { return nullptr; };
}

Parse ValueResult(std::shared_ptr<RemoteIsolate> iso) {
  return [iso](wire::Reader& r, ivm_completion_t* c) -> ivm_error_t* {
    ivm_value_t* value = nullptr;
    HostCodec codec(iso);
    codec.in_fds = ReplyFds();
    codec.seal_received = true;
    if (!wire::ReadValue(r, &value, &codec) || !r.Done()) {
      ivm_value_free(value);
      return iso->worker().BadReply("a malformed value in a REPLY");
    }
    c->result.value = value;
    return nullptr;
  };
}

ivm_error_t* Refuse(const RemoteIsolate& iso) {
  if (iso.marked_disposed()) return MakeError(IVM_ERROR_DISPOSED, kDisposedMessage);
  return nullptr;
}

wire::WireSource ToWire(const SourceOptions& s) {
  wire::WireSource w;
  w.has_filename = s.filename != nullptr;
  if (w.has_filename) w.filename.assign(s.filename, s.filename_len);
  w.line_offset = s.line_offset;
  w.column_offset = s.column_offset;
  return w;
}

namespace {

Parse HeapResult(std::shared_ptr<RemoteIsolate> iso) {
  return [iso](wire::Reader& r, ivm_completion_t* c) -> ivm_error_t* {
    auto stats = std::make_unique<ivm_heap_statistics_t>();
    stats->struct_size = sizeof *stats;
    uint32_t n = 0;
    bool ok = r.U32(&n) && n == wire::kHeapFieldCount;
    for (uint32_t i = 0; ok && i < n; ++i) ok = r.U64(&(stats.get()->*wire::kHeapFields[i]));
    if (!ok || !r.Done()) return iso->worker().BadReply("malformed heap statistics");
    c->result.heap_statistics = stats.release();
    return nullptr;
  };
}

template <class Shell>
Shell* NewShell(const std::shared_ptr<RemoteIsolate>& iso, uint64_t id, uint32_t free_op) {
  auto shell = std::make_unique<Shell>();
  shell->remote = std::make_shared<RemoteObject>(iso, id, free_op);
  return shell.release();
}

// The handle made by a create/compile op, once its REPLY says it exists.
template <class Shell>
Parse ObjectResult(std::shared_ptr<RemoteIsolate> iso, uint64_t object_id, uint32_t free_op) {
  return [iso, object_id, free_op](wire::Reader& r, ivm_completion_t* c) -> ivm_error_t* {
    if (!r.Done()) return iso->worker().BadReply("a REPLY with unexpected results");
    Shell* shell = NewShell<Shell>(iso, object_id, free_op);
    if constexpr (std::is_same_v<Shell, ivm_context>) {
      c->result.context = shell;
    } else {
      c->result.script = shell;
    }
    return nullptr;
  };
}


// The CALL frame of an eval; TRANSFER (or CROSS_PROCESS) for an argument
// that cannot cross.
ivm_error_t* EvalFrame(const std::shared_ptr<RemoteIsolate>& iso_ptr, const RemoteObject& ctx,
                       const EvalRequest& req, uint64_t* id, std::string* frame,
                       wire::Fds* fds) {
  RemoteIsolate& iso = *iso_ptr;
  if (ivm_error_t* err = CheckResultFlags(req.call.flags)) return err;
  HostCodec codec(iso_ptr);
  wire::Writer w = iso.Begin(wire::kOpEval, id);
  w.U64(ctx.id).Bytes(req.code);
  wire::WriteSource(w, ToWire(req.source));
  w.U64(req.call.timeout_ns).U32(req.call.flags);
  w.U32(req.closure ? static_cast<uint32_t>(req.nargs) : wire::kNoClosure);
  for (size_t i = 0; req.closure && i < req.nargs; ++i) {
    std::string why;
    if (req.args[i] == nullptr) return InvalidArgument("argument " + std::to_string(i) + " is NULL");
    if (!wire::WriteValue(w, req.args[i], &why, &codec)) {
      return codec.Refused("Argument " + std::to_string(i), why);
    }
  }
  *frame = w.Finish();
  *fds = std::move(codec.out_fds);
  if (!frame->empty()) codec.Commit();
  return nullptr;
}

ivm_error_t* SameIsolate(ivm_script_t* script, ivm_context_t* ctx) {
  if (!script->remote || !ctx->remote || script->remote->iso != ctx->remote->iso) {
    return InvalidArgument("The script and the context belong to different isolates");
  }
  return nullptr;
}

std::string RunFrame(RemoteIsolate& iso, ivm_script_t* script, ivm_context_t* ctx,
                     const CallOptions& call, uint64_t* id) {
  return iso.Begin(wire::kOpScriptRun, id)
      .U64(script->remote->id)
      .U64(ctx->remote->id)
      .U64(call.timeout_ns)
      .U32(call.flags)
      .Finish();
}

}  // namespace

ivm_error_t* NewIsolate(const ivm_isolate_options_t& o, std::shared_ptr<RemoteIsolate>* out) {
  std::shared_ptr<WorkerProcess> worker;
  bool owns = o.group == nullptr;
  if (owns) {
    if (ivm_error_t* err = WorkerProcess::Start(WorkerLimits{}, &worker)) return err;
  } else {
    worker = GroupWorker(o.group);
  }
  auto iso = std::make_shared<RemoteIsolate>(worker, owns, worker->NextId());
  uint64_t id;
  std::string_view snapshot(o.snapshot ? o.snapshot : "", o.snapshot_len);
  std::string frame =
      o.inspector != 0   // remote_inspector.cc
          ? iso->Begin(wire::kOpIsolateNewInspector, &id).U64(o.memory_limit).Bytes(snapshot).Finish()
      : o.snapshot == nullptr
          ? iso->Begin(wire::kOpIsolateNew, &id).U64(o.memory_limit).Finish()
          : iso->Begin(wire::kOpIsolateNewSnapshot, &id).U64(o.memory_limit).Bytes(snapshot).Finish();
  if (frame.empty()) return InvalidArgument("a snapshot over 16 MiB cannot go to a worker");
  if (ivm_error_t* err = Sync(*iso, id, frame, 0, NoResult(), nullptr)) {
    iso->MarkDisposed();
    return err;
  }
  if (o.inspector != 0) iso->SetInspector();
  iso->Arm(CatastrophicReport::Make(o.on_catastrophic_error, o.on_catastrophic_error_data));
  *out = std::move(iso);
  return nullptr;
}

ivm_error_t* Dispose(RemoteIsolate& iso) {
  iso.Disarm();   // a disposed isolate has no catastrophic end to report
  if (!iso.marked_disposed()) {
    iso.MarkDisposed();
    uint64_t id;
    std::string frame = iso.Begin(wire::kOpIsolateDispose, &id).Finish();
    wire::Frame reply;
    ivm_error_free(iso.worker().Call(id, frame, 0, &reply));   // dead: nothing to dispose
  }
  if (iso.owns_worker()) iso.worker().Dispose(true);
  return nullptr;
}

void Terminate(RemoteIsolate& iso) {
  uint64_t id;
  iso.worker().Post(iso.Begin(wire::kOpTerminate, &id).Finish());
}

void CancelJob(RemoteIsolate& iso, uint64_t job) {
  uint64_t call_id = iso.CallOfJob(job);
  if (call_id != 0) iso.worker().Post(wire::Writer(wire::kCancel, call_id).Finish());
}

ivm_error_t* HeapStatistics(const std::shared_ptr<RemoteIsolate>& iso,
                            ivm_heap_statistics_t* full) {
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id;
  std::string frame = iso->Begin(wire::kOpHeapStatistics, &id).Finish();
  ivm_completion_t c{};
  if (ivm_error_t* err = Sync(*iso, id, frame, 0, HeapResult(iso), &c)) return err;
  *full = *c.result.heap_statistics;
  ivm_heap_statistics_free(c.result.heap_statistics);
  return nullptr;
}

ivm_error_t* HeapStatisticsAsync(const std::shared_ptr<RemoteIsolate>& iso, ivm_done_fn done,
                                 void* user_data, uint64_t* job_out) {
  uint64_t id;
  std::string frame = iso->Begin(wire::kOpHeapStatistics, &id).Finish();
  return Async(iso, id, frame, 0, IVM_COMPLETION_HEAP_STATISTICS, done, user_data, job_out,
               HeapResult(iso));
}

namespace {
std::string ContextFrame(const std::shared_ptr<RemoteIsolate>& iso, uint64_t ctx_id,
                         const ContextHooks* hooks, uint64_t* id) {
  if (hooks != nullptr && (hooks->import_hook || hooks->on_rejection || hooks->host.host)) {
    return HooksFrame(iso, ctx_id, *hooks, id);   // remote_callbacks.cc
  }
  return iso->Begin(wire::kOpCreateContext, id).U64(ctx_id).Finish();
}
}  // namespace

ivm_error_t* CreateContext(const std::shared_ptr<RemoteIsolate>& iso, ivm_context_t** out,
                           const ContextHooks* hooks) {
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id, ctx_id = iso->worker().NextId();
  std::string frame = ContextFrame(iso, ctx_id, hooks, &id);
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, 0,
                          ObjectResult<ivm_context>(iso, ctx_id, wire::kOpContextFree), &c);
  if (err == nullptr) *out = c.result.context;
  return err;
}

ivm_error_t* CreateContextAsync(const std::shared_ptr<RemoteIsolate>& iso, ivm_done_fn done,
                                void* user_data, uint64_t* job_out, const ContextHooks* hooks) {
  uint64_t id, ctx_id = iso->worker().NextId();
  std::string frame = ContextFrame(iso, ctx_id, hooks, &id);
  return Async(iso, id, frame, 0, IVM_COMPLETION_CONTEXT, done, user_data, job_out,
               ObjectResult<ivm_context>(iso, ctx_id, wire::kOpContextFree));
}

namespace {
std::string CompileFrame(RemoteIsolate& iso, std::string_view code, const SourceOptions& source,
                         uint64_t script_id, uint64_t* id) {
  wire::Writer w = iso.Begin(wire::kOpCompileScript, id);
  w.U64(script_id).Bytes(code);
  wire::WriteSource(w, ToWire(source));
  return w.Finish();
}
}  // namespace

ivm_error_t* CompileScript(const std::shared_ptr<RemoteIsolate>& iso, std::string_view code,
                           const SourceOptions& source, ivm_script_t** out) {
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id, script_id = iso->worker().NextId();
  std::string frame = CompileFrame(*iso, code, source, script_id, &id);
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, 0,
                          ObjectResult<ivm_script>(iso, script_id, wire::kOpScriptFree), &c);
  if (err == nullptr) *out = c.result.script;
  return err;
}

ivm_error_t* CompileScriptAsync(const std::shared_ptr<RemoteIsolate>& iso,
                                std::string_view code, const SourceOptions& source,
                                ivm_done_fn done, void* user_data, uint64_t* job_out) {
  uint64_t id, script_id = iso->worker().NextId();
  std::string frame = CompileFrame(*iso, code, source, script_id, &id);
  return Async(iso, id, frame, 0, IVM_COMPLETION_SCRIPT, done, user_data, job_out,
               ObjectResult<ivm_script>(iso, script_id, wire::kOpScriptFree));
}

ivm_error_t* Eval(ivm_context_t* ctx, const EvalRequest& req, ivm_value_t** out) {
  std::shared_ptr<RemoteIsolate> iso = ctx->remote->iso;
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id;
  std::string frame;
  wire::Fds fds;
  if (ivm_error_t* err = EvalFrame(iso, *ctx->remote, req, &id, &frame, &fds)) return err;
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, req.call.timeout_ns, ValueResult(iso), &c, fds);
  if (err == nullptr) *out = c.result.value;
  return err;
}

ivm_error_t* EvalAsync(ivm_context_t* ctx, const EvalRequest& req, ivm_done_fn done,
                       void* user_data, uint64_t* job_out) {
  std::shared_ptr<RemoteIsolate> iso = ctx->remote->iso;
  uint64_t id;
  std::string frame;
  wire::Fds fds;
  if (ivm_error_t* err = EvalFrame(iso, *ctx->remote, req, &id, &frame, &fds)) return err;
  // The context stays alive in the worker until the job ends.
  std::shared_ptr<RemoteObject> keep = ctx->remote;
  Parse parse = ValueResult(iso);
  return Async(iso, id, frame, req.call.timeout_ns, IVM_COMPLETION_VALUE, done, user_data,
               job_out, [keep, parse](wire::Reader& r, ivm_completion_t* c) {
                 return parse(r, c);
               }, fds);
}

ivm_error_t* RunScript(ivm_script_t* script, ivm_context_t* ctx, const CallOptions& call,
                       ivm_value_t** out) {
  if (ivm_error_t* err = SameIsolate(script, ctx)) return err;
  if (ivm_error_t* err = CheckResultFlags(call.flags)) return err;
  std::shared_ptr<RemoteIsolate> iso = ctx->remote->iso;
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id;
  std::string frame = RunFrame(*iso, script, ctx, call, &id);
  ivm_completion_t c{};
  ivm_error_t* err = Sync(*iso, id, frame, call.timeout_ns, ValueResult(iso), &c);
  if (err == nullptr) *out = c.result.value;
  return err;
}

ivm_error_t* RunScriptAsync(ivm_script_t* script, ivm_context_t* ctx, const CallOptions& call,
                            ivm_done_fn done, void* user_data, uint64_t* job_out) {
  if (ivm_error_t* err = SameIsolate(script, ctx)) return err;
  if (ivm_error_t* err = CheckResultFlags(call.flags)) return err;
  std::shared_ptr<RemoteIsolate> iso = ctx->remote->iso;
  uint64_t id;
  std::string frame = RunFrame(*iso, script, ctx, call, &id);
  std::shared_ptr<RemoteObject> keep[2] = {script->remote, ctx->remote};
  Parse parse = ValueResult(iso);
  return Async(iso, id, frame, call.timeout_ns, IVM_COMPLETION_VALUE, done, user_data, job_out,
               [keep, parse](wire::Reader& r, ivm_completion_t* c) {
                 (void)keep;
                 return parse(r, c);
               });
}

void Release(RemoteObject& object, uint32_t op) {
  uint64_t id;
  object.iso->worker().Post(object.iso->Begin(op, &id).U64(object.id).Finish());
}

}  // namespace ivm::remote
