// remote.h — isolates that live in a worker process, seen from the host
// (docs/process.md). The ABI's handles stay the same types: an ivm_isolate,
// ivm_context or ivm_script whose `remote` is set forwards each call to its
// worker as a CALL frame (remote_isolate.cc: the records and the protocol;
// remote_ops.cc: one function per forwarded ABI entry, called from the
// entry's own file). The worker's side is worker_ops.cc. Nothing here is ABI.
#ifndef IVM_REMOTE_H
#define IVM_REMOTE_H

#include "code_cache.h"
#include "internal.h"
#include "module.h"
#include "options.h"
#include "wire.h"
#include "wire_value.h"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ivm {

class WorkerProcess;
class CatastrophicReport;
struct ContextHooks;

// One isolate in a worker. Shared by its isolate handle and by every remote
// context, script and pending call of it; the last one tells the worker to
// free it (and, for an isolate with a worker of its own, ends the worker).
class RemoteIsolate {
 public:
  RemoteIsolate(std::shared_ptr<WorkerProcess> worker, bool owns_worker, uint64_t id)
      : worker_(std::move(worker)), owns_worker_(owns_worker), id_(id) {}
  // on_catastrophic_error: reported when the worker crashes, until Disarm().
  void Arm(std::shared_ptr<CatastrophicReport> report);
  void Disarm();
  ~RemoteIsolate();
  RemoteIsolate(const RemoteIsolate&) = delete;
  RemoteIsolate& operator=(const RemoteIsolate&) = delete;

  WorkerProcess& worker() const { return *worker_; }
  bool owns_worker() const { return owns_worker_; }
  uint64_t id() const { return id_; }
  int64_t pid() const;
  // Disposed by a call (dispose, memory limit) or dead with its worker.
  bool disposed() const;
  void MarkDisposed() { disposed_.store(true, std::memory_order_release); }
  bool marked_disposed() const { return disposed_.load(std::memory_order_acquire); }
  void SetTimes(uint64_t cpu_ns, uint64_t wall_ns);
  void Times(uint64_t* cpu_ns, uint64_t* wall_ns) const;
  std::atomic<uint64_t>& live_objects() { return live_objects_; }
  // Made with the inspector option (remote_inspector.cc).
  bool inspector() const { return inspector_; }
  void SetInspector() { inspector_ = true; }

  // The CALL id of each pending asynchronous job (for CANCEL).
  void TrackJob(uint64_t job, uint64_t call_id);
  void UntrackJob(uint64_t job);
  uint64_t CallOfJob(uint64_t job);

  // A CALL frame for `op` of this isolate, whose id is taken now (`*id`).
  wire::Writer Begin(uint32_t op, uint64_t* id);
  // Reads the common part of a REPLY (docs/wire-protocol.md): returns the
  // call's error (kind, message, name, stack), or NULL with `*r` positioned at
  // the op's results. A malformed reply kills the worker (CRASHED).
  ivm_error_t* ReadReply(const wire::Frame& reply, wire::Reader* r);

 private:
  std::shared_ptr<WorkerProcess> worker_;
  std::shared_ptr<CatastrophicReport> catastrophic_;
  uint64_t death_listener_ = 0;
  bool owns_worker_;
  uint64_t id_;
  bool inspector_ = false;
  std::atomic<bool> disposed_{false};
  std::atomic<uint64_t> cpu_ns_{0}, wall_ns_{0};
  std::atomic<uint64_t> live_objects_{0};
  std::mutex jobs_mu_;
  std::unordered_map<uint64_t, uint64_t> jobs_;   // job id -> CALL id
};

// A context or script in a worker: its isolate, its id there, and what frees
// it there once the host's last user lets go.
struct RemoteObject {
  RemoteObject(std::shared_ptr<RemoteIsolate> i, uint64_t object_id, uint32_t op)
      : iso(std::move(i)), id(object_id), free_op(op) {
    iso->live_objects().fetch_add(1, std::memory_order_relaxed);
  }
  ~RemoteObject();
  RemoteObject(const RemoteObject&) = delete;
  RemoteObject& operator=(const RemoteObject&) = delete;
  std::shared_ptr<RemoteIsolate> iso;
  uint64_t id;
  uint32_t free_op;
};

namespace remote {

// Reads a job's results from its REPLY (positioned after the common part).
using Parse = std::function<ivm_error_t*(wire::Reader& r, ivm_completion_t* c)>;
// Sends CALL `frame` (id `id`) and waits for its REPLY: the call's error, or
// what `parse` makes of its results.
// `fds`: the descriptors the frame carries (large buffers, rref).
ivm_error_t* Sync(RemoteIsolate& iso, uint64_t id, const std::string& frame, uint64_t timeout_ns,
                  const Parse& parse, ivm_completion_t* c, const wire::Fds& fds = wire::Fds());
// The same as a job: `done` fires once, when the REPLY arrives or the worker dies.
ivm_error_t* Async(const std::shared_ptr<RemoteIsolate>& iso, uint64_t id,
                   const std::string& frame, uint64_t timeout_ns, ivm_completion_kind_t kind,
                   ivm_done_fn done, void* user_data, uint64_t* job_out, Parse parse,
                   const wire::Fds& fds = wire::Fds());
// rref: the descriptors of the REPLY a Parse reads, on the thread running it
// (Parse sees only the payload): set by Sync and Async around `parse`.
const wire::Fds* ReplyFds();
class ReplyFdsScope {
 public:
  explicit ReplyFdsScope(const wire::Fds* fds);
  ~ReplyFdsScope();
  ReplyFdsScope(const ReplyFdsScope&) = delete;
  ReplyFdsScope& operator=(const ReplyFdsScope&) = delete;

 private:
  const wire::Fds* saved_;
};
// A REPLY whose result is one value (c->result.value).
Parse ValueResult(std::shared_ptr<RemoteIsolate> iso);

// The error for a call whose options ask for a result that cannot leave a
// worker (an ExternalCopy or a Reference): TRANSFER. NULL if they do not.
ivm_error_t* CheckResultFlags(uint32_t flags);

// ---- remote_snapshot.cc: ivm_snapshot_create in a throw-away worker. ----
// `scripts`: (code, filename) pairs; `warmup`: NULL for none. `*out`: the
// IVMS-wrapped snapshot, checked as an isolate would check it.
ivm_error_t* CreateSnapshot(const std::vector<std::pair<std::string_view, std::string_view>>& scripts,
                            const std::string_view* warmup, uint64_t timeout_ns,
                            std::string* out);

// ---- remote_ops.cc: the forwarded ABI entries. ----
ivm_error_t* NewIsolate(const ivm_isolate_options_t& o, std::shared_ptr<RemoteIsolate>* out);
ivm_error_t* Dispose(RemoteIsolate& iso);
void Terminate(RemoteIsolate& iso);
void CancelJob(RemoteIsolate& iso, uint64_t job);
ivm_error_t* HeapStatistics(const std::shared_ptr<RemoteIsolate>& iso,
                            ivm_heap_statistics_t* full);
ivm_error_t* HeapStatisticsAsync(const std::shared_ptr<RemoteIsolate>& iso, ivm_done_fn done,
                                 void* user_data, uint64_t* job_out);
// `hooks`: the context's import and rejection hooks (remote_callbacks.cc), if any.
ivm_error_t* CreateContext(const std::shared_ptr<RemoteIsolate>& iso, ivm_context_t** out,
                           const ContextHooks* hooks = nullptr);
ivm_error_t* CreateContextAsync(const std::shared_ptr<RemoteIsolate>& iso, ivm_done_fn done,
                                void* user_data, uint64_t* job_out,
                                const ContextHooks* hooks = nullptr);
ivm_error_t* CompileScript(const std::shared_ptr<RemoteIsolate>& iso, std::string_view code,
                           const SourceOptions& source, ivm_script_t** out);
ivm_error_t* CompileScriptAsync(const std::shared_ptr<RemoteIsolate>& iso,
                                std::string_view code, const SourceOptions& source,
                                ivm_done_fn done, void* user_data, uint64_t* job_out);

// An eval (args == nullptr and nargs == 0 with closure false) or
// eval_closure of a remote context.
struct EvalRequest {
  std::string_view code;
  bool closure = false;
  const ivm_value_t* const* args = nullptr;
  size_t nargs = 0;
  SourceOptions source;
  CallOptions call;
};
ivm_error_t* Eval(ivm_context_t* ctx, const EvalRequest& req, ivm_value_t** out);
ivm_error_t* EvalAsync(ivm_context_t* ctx, const EvalRequest& req, ivm_done_fn done,
                       void* user_data, uint64_t* job_out);
ivm_error_t* RunScript(ivm_script_t* script, ivm_context_t* ctx, const CallOptions& call,
                       ivm_value_t** out);
ivm_error_t* RunScriptAsync(ivm_script_t* script, ivm_context_t* ctx, const CallOptions& call,
                            ivm_done_fn done, void* user_data, uint64_t* job_out);
// ivm_context_release / ivm_script_release.
void Release(RemoteObject& object, uint32_t op);

// ---- remote_profiler.cc: the CPU profiler (profiler.cc's ABI entries). ----
struct ProfilerRequest {
  uint32_t op;               // wire::kOpProfilerStart or wire::kOpProfilerStop
  std::string_view title;
  uint64_t interval_ns = 0;  // a start's, checked already (0: the default)
};
// `out`: a stop's JSON text (a start's undefined is freed when `out` is NULL).
ivm_error_t* Profiler(const std::shared_ptr<RemoteIsolate>& iso, const ProfilerRequest& req,
                      ivm_value_t** out);
ivm_error_t* ProfilerAsync(const std::shared_ptr<RemoteIsolate>& iso, const ProfilerRequest& req,
                           ivm_done_fn done, void* user_data, uint64_t* job_out);

// A REPLY with no results (the forwarding helpers above serve the topic files below).
Parse NoResult();
// DISPOSED for an isolate already disposed or dead, else NULL.
ivm_error_t* Refuse(const RemoteIsolate& iso);
// Source options as CALL frames carry them.
wire::WireSource ToWire(const SourceOptions& s);

}  // namespace remote

// ---- rmod: ES modules and code caches in worker-hosted isolates
// (remote_modules.cc on the host, worker_modules.cc in the worker). ----

// The host's record of a module in a worker: what the compile reported
// (specifiers, cache), and the link state the host needs to walk a graph
// itself (resolvers run in the host; the worker gets the resolved table).
struct RemoteModule {
  explicit RemoteModule(std::shared_ptr<RemoteObject> o) : object(std::move(o)) {}
  std::shared_ptr<RemoteObject> object;
  std::vector<std::string> specifiers;   // set by the compile, then read-only
  std::vector<ImportAttributes> attributes;   // likewise: each request's
  cache::Outcome cache;                  // likewise
  std::atomic<bool> released{false};
  // The id of the context it was instantiated in (0: none yet).
  std::atomic<uint64_t> context{0};
};

namespace remote {

ivm_error_t* CompileModule(const std::shared_ptr<RemoteIsolate>& iso,
                           const cache::CompileInput& in, ivm_module_t** out);
ivm_error_t* CompileModuleAsync(const std::shared_ptr<RemoteIsolate>& iso,
                                const cache::CompileInput& in, ivm_done_fn done,
                                void* user_data, uint64_t* job_out);
// compile_script with cache options (the cache's results come back too).
ivm_error_t* CompileScriptCached(const std::shared_ptr<RemoteIsolate>& iso,
                                 const cache::CompileInput& in, ivm_script_t** out);
ivm_error_t* CompileScriptCachedAsync(const std::shared_ptr<RemoteIsolate>& iso,
                                      const cache::CompileInput& in, ivm_done_fn done,
                                      void* user_data, uint64_t* job_out);
// Instantiation: the host calls `resolve` for every import of the graph on
// the calling thread (also for the async twin), then sends the table.
ivm_error_t* InstantiateModule(ivm_module_t* module, ivm_context_t* ctx,
                               const Resolver& resolve);
ivm_error_t* InstantiateModuleAsync(ivm_module_t* module, ivm_context_t* ctx,
                                    const Resolver& resolve, ivm_done_fn done, void* user_data,
                                    uint64_t* job_out);
ivm_error_t* EvaluateModule(ivm_module_t* module, const CallOptions& call, ivm_value_t** out);
ivm_error_t* EvaluateModuleAsync(ivm_module_t* module, const CallOptions& call,
                                 ivm_done_fn done, void* user_data, uint64_t* job_out);
// Namespaces are References, which do not leave a worker yet: refused.
ivm_error_t* ModuleNamespace(ivm_module_t* module, const CallOptions& call, ivm_value_t** out);
ivm_error_t* ModuleNamespaceAsync(ivm_module_t* module, const CallOptions& call, ivm_done_fn done,
                                  void* user_data, uint64_t* job_out);
// Takes ownership of `meta`.
ivm_error_t* SetModuleMeta(ivm_module_t* module, ivm_value_t* meta);
void ReleaseModule(ivm_module_t* module);

}  // namespace remote

// ---- Host callbacks called from a worker's JavaScript (remote_callbacks.cc). ----
namespace remote {

// Lets host callbacks cross into isolate `iso` as attachments of a value:
// each crossing gets an id in its worker's callback table. Unless committed
// (the frame was built), the destructor takes the ids back. The callback
// part of HostCodec (below), which is the codec every encode uses.
class CallbackCodec {
 public:
  explicit CallbackCodec(const std::shared_ptr<RemoteIsolate>& iso) : iso_(iso) {}
  ~CallbackCodec();
  CallbackCodec(const CallbackCodec&) = delete;
  CallbackCodec& operator=(const CallbackCodec&) = delete;
  // Writes callback attachment `index` of `value` (after its kind).
  bool Write(wire::Writer& w, const ivm_value_t* value, size_t index, std::string* why);
  void Commit() { committed_ = true; }

 private:
  std::shared_ptr<RemoteIsolate> iso_;
  std::vector<uint64_t> added_;
  bool committed_ = false;
};

// The frame to send for synchronous CALL `frame` of `iso`: wrapped in
// kOpNested when this thread runs a callback of that isolate's JavaScript
// (which then runs the call itself), else `frame`.
std::string NestIfInCallback(RemoteIsolate& iso, const std::string& frame);
// A REPLY's host error token, if the host sent it to `worker` (else 0).
uint64_t CheckToken(WorkerProcess& worker, uint64_t token);
// The CALL that creates context `ctx_id` of `iso` with `hooks` (whose
// callbacks it gives ids): kOpCreateContextHooks, or kOpCreateContextHost
// when it asks for host basics.
std::string HooksFrame(const std::shared_ptr<RemoteIsolate>& iso, uint64_t ctx_id,
                       const ContextHooks& hooks, uint64_t* id);

}  // namespace remote

// ---- rref: References into worker isolates and ExternalCopies crossing to
// and from them (remote_refs.cc; the worker's side is worker_refs.cc). ----

struct RefOp;

// A reference to a value in a worker isolate: the worker's reference `id`
// (its kOpRefFree runs once the host's last holder lets go).
struct RemoteReference : RemoteObject {
  RemoteReference(std::shared_ptr<RemoteIsolate> i, uint64_t ref_id, std::string type)
      : RemoteObject(std::move(i), ref_id, wire::kOpRefFree), type_of(std::move(type)) {}
  std::string type_of;               // `typeof value`, fixed at creation
  std::atomic<bool> released{false};
};

namespace remote {

// Writes the References (by id, only into their own worker),
// ExternalCopies (by content) and host callbacks (CallbackCodec) of values
// going to `iso`, and reads the References and ExternalCopies of what it
// sends. Refuses a Reference of another process with
// IVM_ERROR_CROSS_PROCESS. Commit() once the frame is built and sent (else
// the callbacks it gave ids are taken back).
class HostCodec : public wire::ObjectCodec {
 public:
  explicit HostCodec(std::shared_ptr<RemoteIsolate> iso)
      : iso_(std::move(iso)), callbacks_(iso_) {}
  bool WriteObject(wire::Writer& w, const ivm_value_t* value, std::string* why) override;
  bool WriteAttachment(wire::Writer& w, const ivm_value_t* value, size_t index,
                       std::string* why) override;
  bool ReadObject(wire::Reader& r, uint8_t kind, ivm_value_t** out) override;
  bool ReadAttachment(wire::Reader& r, uint32_t kind, ivm_value_t* into) override;
  // A worker's large buffer stays in its (sealed, privately mapped) memfd.
  bool AdoptMapping(ivm_value_t* into, void* data, uint64_t len) override;
  // The error for the last refusal, of refused_kind: "<what>: <why>", or
  // `why` alone where inline's error has no context either.
  ivm_error_t* Refused(const std::string& what, const std::string& why) const;
  // rcb: host callbacks enter the worker (remote_callbacks.cc).
  bool WriteCallback(wire::Writer& w, const ivm_value_t* value, size_t index,
                     std::string* why) override {
    return callbacks_.Write(w, value, index, why);
  }
  void Commit() { callbacks_.Commit(); }

 private:
  // Writes the content of an ExternalCopy marker (a copy of `content`), one level deeper.
  bool WriteCopyContent(wire::Writer& w, const Serialized& content, std::string* why);
  std::shared_ptr<RemoteIsolate> iso_;
  CallbackCodec callbacks_;
  bool verbatim_ = false;
};

// ivm_context_global() of a remote context.
ivm_error_t* Global(ivm_context_t* ctx, ivm_reference_t** out);
// The operations of a remote reference (reference.cc's RefOp): synchronous,
// and queued (`owned` holds the values until the job ends).
ivm_error_t* RefCall(const std::shared_ptr<RemoteReference>& ref, const RefOp& op,
                     const CallOptions& o, ivm_value_t** out);
ivm_error_t* RefCallAsync(const std::shared_ptr<RemoteReference>& ref, const RefOp& op,
                          const CallOptions& o, std::shared_ptr<void> owned, ivm_done_fn done,
                          void* user_data, uint64_t* job_out);
void ReleaseReference(RemoteReference& ref);
// The error for a Reference that would cross between processes.
ivm_error_t* CrossProcess(const std::string& what);

// insp: inspector sessions of remote isolates (remote_inspector.cc). A session
// is registered under an id of its worker's channel; its messages come back as
// CALLBACK frames (kOpInspectorMessage), delivered on the I/O thread.
struct RemoteInspectorSession;
ivm_error_t* InspectorSessionNew(const std::shared_ptr<RemoteIsolate>& iso,
                                 ivm_inspector_message_fn fn, void* user_data,
                                 std::shared_ptr<RemoteInspectorSession>* out);
ivm_error_t* InspectorDispatch(RemoteInspectorSession& session, std::string_view message);
// No callback after this returns (one running on another thread is waited for).
void InspectorSessionFree(RemoteInspectorSession& session);
// I/O thread: a kOpInspectorMessage frame (`r` after the op); returns why it is
// malformed (a protocol violation), or an empty string.
// Whether this thread runs an inspector message callback of a worker's session
// (a synchronous call into a worker from there is refused: WorkerProcess::Request).
bool InInspectorHandler();
std::string OnInspectorMessage(WorkerProcess& worker, wire::Reader& r);

}  // namespace remote
}  // namespace ivm

#endif  // IVM_REMOTE_H
