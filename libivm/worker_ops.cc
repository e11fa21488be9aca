// worker_ops.cc — the worker's side of remote isolates: it runs each CALL op
// (wire.h, "Remote isolates") on its own inline libivm handles, through
// ivm.h like any embedder, and answers with a REPLY. Calls that run
// JavaScript are submitted as the *_async twins, so that the channel keeps
// being read while they run: CANCEL and TERMINATE reach running jobs, and
// jobs of different isolates run in parallel. Their done callbacks (on pool
// threads) send the REPLY.
#include "wire_value.h"
#include "worker_callbacks.h"
#include "worker_server.h"

#include <utility>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace ivm::worker {

std::string_view Message(const ivm_error_t* err, void (*get)(const ivm_error_t*, const char**,
                                                             size_t*)) {
  const char* p = nullptr;
  size_t n = 0;
  get(err, &p, &n);
  return std::string_view(p ? p : "", n);
}

std::string FullReply(uint64_t id, ivm_error_t* err, ivm_isolate_t* iso,
                      const std::function<bool(wire::Writer&, std::string*)>& results) {
  uint64_t cpu = 0, wall = 0;
  if (iso != nullptr) ivm_isolate_times(iso, &cpu, &wall);
  wire::Writer w(wire::kReply, id);
  std::string why;
  if (err == nullptr) {
    w.U32(wire::kStatusOk).Bytes("").Bytes("").Bytes("").U8(0).U64(cpu).U64(wall);
    if (!results || results(w, &why)) {
      std::string out = w.Finish();
      if (!out.empty()) return out;
      why = "the result is too large for one frame (16 MiB)";
    }
    return wire::Writer(wire::kReply, id)
        .U32(IVM_ERROR_TRANSFER).Bytes(why).Bytes("").Bytes("").U8(0).U64(cpu).U64(wall).U64(0)
        .Finish();
  }
  std::string out = w.U32(ivm_error_kind(err))
                        .Bytes(Message(err, ivm_error_message))
                        .Bytes(Message(err, ivm_error_name))
                        .Bytes(Message(err, ivm_error_stack))
                        .U8(ivm_error_thrown_primitive(err) ? 1 : 0)
                        .U64(cpu)
                        .U64(wall)
                        .U64(ivm_error_host_token(err))
                        .Finish();
  ivm_error_free(err);
  return out;
}

std::string ErrorReply(uint64_t id, uint32_t kind, std::string_view message) {
  return wire::Writer(wire::kReply, id)
      .U32(kind).Bytes(message).Bytes("").Bytes("").U8(0).U64(0).U64(0).U64(0)
      .Finish();
}

struct Ops::Pending {
  Ops* ops;
  uint64_t call_id;
  uint64_t object_id;   // the context or script a create/compile makes
  ivm_isolate_t* iso;
  Reply reply;          // if set, makes the REPLY (and records what the job made)
};

thread_local const wire::Fds* Ops::call_fds_ = nullptr;

Ops::Ops(Channel& channel) : channel_(channel) {}

Ops::~Ops() = default;

ivm_isolate_t* Ops::Isolate(uint64_t id) {
  auto it = isolates_.find(id);
  return it == isolates_.end() ? nullptr : it->second;
}

ivm_isolate_t* Ops::FindIsolate(uint64_t id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  return Isolate(id);
}

ivm_context_t* Ops::FindContext(uint64_t id) { return Find(contexts_, id); }

ivm_script_t* Ops::FindScript(uint64_t id) { return Find(scripts_, id); }

void Ops::AddContext(uint64_t id, ivm_context_t* ctx) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  contexts_[id] = ctx;
}

void Ops::AddScript(uint64_t id, ivm_script_t* script) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  scripts_[id] = script;
}

uint64_t Ops::CallOfJob(uint64_t job) {
  if (job == 0) return 0;
  std::lock_guard<std::recursive_mutex> lock(mu_);
  for (const auto& [call_id, j] : jobs_) {
    if (j.job == job) return call_id;
  }
  return 0;
}

template <class T>
T* Ops::Find(std::unordered_map<uint64_t, T*>& map, uint64_t id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  auto it = map.find(id);
  return it == map.end() ? nullptr : it->second;
}

void Ops::Done(void* user_data, const ivm_completion_t* c) {
  std::unique_ptr<Pending> p(static_cast<Pending*>(user_data));
  p->ops->Finish(*p, c);
  Follow(p->call_id);   // the reading may be lent to this call (worker_follow.cc)
}

void Ops::Finish(const Pending& p, const ivm_completion_t* c) {
  {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (jobs_.erase(p.call_id) == 0) early_.insert(p.call_id);
    if (c->error == nullptr && c->kind == IVM_COMPLETION_CONTEXT) {
      contexts_[p.object_id] = c->result.context;
    } else if (c->error == nullptr && c->kind == IVM_COMPLETION_SCRIPT) {
      scripts_[p.object_id] = c->result.script;
    }
  }
  std::string out;
  if (p.reply) {
    out = p.reply(c);
  } else if (c->error != nullptr) {
    out = FullReply(p.call_id, c->error, p.iso, nullptr);
  } else if (c->kind == IVM_COMPLETION_VALUE && p.object_id != 0) {
    out = GlobalReply(p.call_id, p.object_id, p.iso, c->result.value);   // rref
  } else if (c->kind == IVM_COMPLETION_VALUE) {
    ivm_value_t* value = c->result.value;
#ifdef IVM_WORKER_TEST_HOOKS
    std::string forged;
    bool forge = false;
    {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      forge = std::exchange(forge_, false);
      forged.swap(forged_stream_);
    }
    if (forge) {
      out = FullReply(p.call_id, nullptr, p.iso, [&forged](wire::Writer& w, std::string*) {
        w.U8(IVM_VALUE_SERIALIZED).Bytes(forged).U32(0);
        return true;
      });
      ivm_value_free(value);
      channel_.Send(out);
      return;
    }
#endif
    WorkerCodec codec(refs_, p.iso);
    out = FullReply(p.call_id, nullptr, p.iso, [&](wire::Writer& w, std::string* why) {
      return wire::WriteValue(w, value, why, &codec);
    });
    ivm_value_free(value);
    if (wire::FdCountOf(out) != 0) {   // rref: its large buffers go beside it
      channel_.Send(out, codec.out_fds);
      return;
    }
  } else if (c->kind == IVM_COMPLETION_HEAP_STATISTICS) {
    ivm_heap_statistics_t* stats = c->result.heap_statistics;
    out = FullReply(p.call_id, nullptr, p.iso, [stats](wire::Writer& w, std::string*) {
      w.U32(wire::kHeapFieldCount);
      for (auto field : wire::kHeapFields) w.U64(stats->*field);
      return true;
    });
    ivm_heap_statistics_free(stats);
  } else {
    out = FullReply(p.call_id, nullptr, p.iso, nullptr);
  }
  channel_.Send(out);
}

template <class F>
std::string Ops::Submit(uint64_t call_id, ivm_isolate_t* iso, uint64_t object_id, F&& submit,
                        Reply reply) {
  auto* p = new Pending{this, call_id, object_id, iso, std::move(reply)};
  std::lock_guard<std::recursive_mutex> lock(mu_);   // Finish waits until the job is recorded
  uint64_t job = 0;
  ivm_error_t* err = submit(&Ops::Done, p, &job);
  if (err != nullptr) {
    delete p;
    return FullReply(call_id, err, iso, nullptr);
  }
  if (early_.erase(call_id) == 0) jobs_[call_id] = Job{iso, job};
  return {};
}

std::string Ops::SubmitCall(uint64_t call_id, ivm_isolate_t* iso, uint64_t object_id,
                            const SubmitFn& submit) {
  return Submit(call_id, iso, object_id, submit);
}

ivm_context_t* Ops::Context(uint64_t id) { return Find(contexts_, id); }

#ifdef IVM_WORKER_TEST_HOOKS
void Ops::ForgeNextValue(std::string stream) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  forge_ = true;
  forged_stream_ = std::move(stream);
}
#endif

std::string Ops::SubmitWith(uint64_t call_id, ivm_isolate_t* iso, Reply reply,
                            const SubmitFn& submit) {
  return Submit(call_id, iso, 0, submit, std::move(reply));
}

void Ops::Cancel(uint64_t call_id) {
  {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    auto it = jobs_.find(call_id);
    if (it != jobs_.end()) ivm_isolate_cancel_job(it->second.iso, it->second.job);
  }
  Callbacks::Get().AbortCall(call_id);   // then its JavaScript stops waiting in a host callback
  Callbacks::Get().CancelNested(call_id);   // or it runs nested in one
}

std::string Ops::Call(uint64_t id, uint32_t op, wire::Reader& r) {
  uint64_t iso_id = 0;
  if (!r.U64(&iso_id)) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  if (op == wire::kOpIsolateNew || op == wire::kOpIsolateNewSnapshot ||
      op == wire::kOpIsolateNewInspector) {
    ivm_isolate_options_t o = IVM_ISOLATE_OPTIONS_INIT;
    std::string_view snapshot;
    if (!r.U64(&o.memory_limit) || (op != wire::kOpIsolateNew && !r.Bytes(&snapshot)) ||
        !r.Done() || isolates_.count(iso_id) != 0) {
      return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
    }
    o.inspector = op == wire::kOpIsolateNewInspector ? 1 : 0;   // worker_inspector.cc
    if (!snapshot.empty()) {   // checked again here, before V8 sees it
      o.snapshot = snapshot.data();
      o.snapshot_len = snapshot.size();
    }
    ivm_isolate_t* iso = nullptr;
    ivm_error_t* err = ivm_isolate_new(&o, &iso);
    std::lock_guard<std::recursive_mutex> lock(mu_);   // FindIsolate reads it elsewhere
    if (err == nullptr) isolates_[iso_id] = iso;
    return FullReply(id, err, iso, nullptr);
  }
  ivm_isolate_t* iso = Isolate(iso_id);
  if (op >= wire::kOpFirstModuleOp && op <= wire::kOpLastModuleOp) {
    return ModuleCall(id, op, iso, r);
  }
  bool replies = op != wire::kOpIsolateFree && op != wire::kOpTerminate &&
                 op != wire::kOpContextRelease && op != wire::kOpContextFree &&
                 op != wire::kOpScriptRelease && op != wire::kOpScriptFree &&
                 op != wire::kOpRefRelease && op != wire::kOpRefFree;
  if (iso == nullptr) {
    return replies ? ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown isolate") : "";
  }
  switch (op) {
    case wire::kOpIsolateDispose:
      Callbacks::Get().AbortIsolate(iso, false);   // JavaScript waiting in a host callback unwinds
      return FullReply(id, ivm_isolate_dispose(iso), iso, nullptr);
    case wire::kOpIsolateFree: {
      Callbacks::Get().AbortIsolate(iso, true);
      std::lock_guard<std::recursive_mutex> lock(mu_);
      isolates_.erase(iso_id);
      refs_.FreeIsolate(iso);
      ivm_isolate_free(iso);
      return {};
    }
    case wire::kOpTerminate:
      ivm_isolate_terminate(iso);
      return {};
    case wire::kOpHeapStatistics:
      return Submit(id, iso, 0, [&](ivm_done_fn done, void* ud, uint64_t* job) {
        return ivm_isolate_heap_statistics_async(iso, done, ud, job);
      });
    case wire::kOpCreateContext: {
      uint64_t ctx_id = 0;
      if (!r.U64(&ctx_id) || !r.Done()) break;
      return CreateContext(id, iso, ctx_id, nullptr);
    }
    case wire::kOpCompileScript:
      return Compile(id, iso, r);
    case wire::kOpEval:
      return Eval(id, iso, r);
    case wire::kOpProfilerStart:
    case wire::kOpProfilerStop:
      return Profiler(id, op, iso, r);
    case wire::kOpScriptRun:
      return Run(id, iso, r);
    case wire::kOpContextGlobal:
      return Global(id, iso, r);
    case wire::kOpRefCall:
      return RefCall(id, iso, r);
    default:
      return Drop(op, r);
  }
  return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
}

std::string Ops::CreateContext(uint64_t id, ivm_isolate_t* iso, uint64_t ctx_id,
                               const ivm_context_options_t* opts) {
  return Submit(id, iso, ctx_id, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    return ivm_isolate_create_context_async(iso, opts, done, ud, job);
  });
}

// The no-reply ops on contexts and scripts.
std::string Ops::Drop(uint32_t op, wire::Reader& r) {
  uint64_t object = 0;
  if (!r.U64(&object)) return {};
  if (op == wire::kOpRefRelease) refs_.Release(object);   // rref
  if (op == wire::kOpRefFree) refs_.Free(object);
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (op == wire::kOpContextRelease || op == wire::kOpContextFree) {
    auto it = contexts_.find(object);
    if (it == contexts_.end()) return {};
    if (op == wire::kOpContextRelease) {
      ivm_error_free(ivm_context_release(it->second));
    } else {
      ivm_context_free(it->second);
      contexts_.erase(it);
    }
  } else if (op == wire::kOpScriptRelease || op == wire::kOpScriptFree) {
    auto it = scripts_.find(object);
    if (it == scripts_.end()) return {};
    if (op == wire::kOpScriptRelease) {
      ivm_error_free(ivm_script_release(it->second));
    } else {
      ivm_script_free(it->second);
      scripts_.erase(it);
    }
  }
  return {};
}

std::string Ops::Compile(uint64_t id, ivm_isolate_t* iso, wire::Reader& r) {
  uint64_t script_id = 0;
  std::string_view code;
  wire::WireSource s;
  if (!r.U64(&script_id) || !r.Bytes(&code) || !wire::ReadSource(r, &s) || !r.Done()) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  ivm_source_options_t o = IVM_SOURCE_OPTIONS_INIT;
  wire::ToSourceOptions(s, &o);
  return Submit(id, iso, script_id, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    return ivm_isolate_compile_script_async(iso, code.data(), code.size(), &o, nullptr, done, ud,
                                            job);
  });
}

bool ReadEval(wire::Reader& r, WorkerCodec& codec, EvalCall* call) {
  if (!r.U64(&call->ctx_id) || !r.Bytes(&call->code) || !wire::ReadSource(r, &call->wire_source) ||
      !r.U64(&call->run.timeout_ns) || !r.U32(&call->result.flags) || !r.U32(&call->nargs)) {
    return false;
  }
  wire::ToSourceOptions(call->wire_source, &call->source);
  for (uint32_t i = 0; call->nargs != wire::kNoClosure && i < call->nargs; ++i) {
    ivm_value_t* v = nullptr;
    if (!wire::ReadValue(r, &v, &codec)) return false;
    call->args.push_back(v);
  }
  return r.Done();
}

std::string Ops::Eval(uint64_t id, ivm_isolate_t* iso, wire::Reader& r) {
  EvalCall q;
  // References, ExternalCopies, large buffers and host callbacks among the arguments.
  WorkerCodec codec(refs_, iso);
  codec.in_fds = call_fds_;
  bool ok = ReadEval(r, codec, &q);
  ivm_context_t* ctx = ok ? Find(contexts_, q.ctx_id) : nullptr;
  if (ctx == nullptr) {
    return ok ? ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown context")
              : codec.ReadError(id, "malformed call");
  }
  std::string reply = Submit(id, iso, 0, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    if (q.nargs == wire::kNoClosure) {
      return ivm_context_eval_async(ctx, q.code.data(), q.code.size(), &q.source, &q.run,
                                    &q.result, done, ud, job);
    }
    return ivm_context_eval_closure_async(ctx, q.code.data(), q.code.size(), q.args.data(),
                                          q.args.size(), &q.source, &q.run, &q.result, done, ud,
                                          job);
  });
  q.args.clear();   // libivm took them, even if it refused the call
  return reply;
}

std::string Ops::Run(uint64_t id, ivm_isolate_t* iso, wire::Reader& r) {
  uint64_t script_id = 0, ctx_id = 0;
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  if (!r.U64(&script_id) || !r.U64(&ctx_id) || !r.U64(&run.timeout_ns) ||
      !r.U32(&result.flags) || !r.Done()) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  ivm_script_t* script = Find(scripts_, script_id);
  ivm_context_t* ctx = Find(contexts_, ctx_id);
  if (script == nullptr || ctx == nullptr) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown script or context");
  }
  return Submit(id, iso, 0, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    return ivm_script_run_async(script, ctx, &run, &result, done, ud, job);
  });
}

// The profiler runs here as inline (profiler.cc): V8's sampler signals the
// thread that runs the isolate's JavaScript (tgkill to this process, which the
// sandbox allows). The profile leaves as its JSON text, a string value.
std::string Ops::Profiler(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r) {
  std::string_view title;
  ivm_cpu_profiler_options_t opts = IVM_CPU_PROFILER_OPTIONS_INIT;
  if (!r.Bytes(&title) || (op == wire::kOpProfilerStart && !r.U64(&opts.sampling_interval_ns)) ||
      !r.Done()) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  return Submit(id, iso, 0, [&](ivm_done_fn done, void* ud, uint64_t* job) {
    return op == wire::kOpProfilerStart
               ? ivm_isolate_start_cpu_profiler_async(iso, title.data(), title.size(), &opts,
                                                      done, ud, job)
               : ivm_isolate_stop_cpu_profiler_async(iso, title.data(), title.size(), done, ud,
                                                     job);
  });
}

}  // namespace ivm::worker
