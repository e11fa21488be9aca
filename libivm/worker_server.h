// worker_server.h — the ivm-worker side of the channel: one host, served on
// fd 3, one frame at a time (worker_server.cc). Worker-only; not ABI.
#ifndef IVM_WORKER_SERVER_H
#define IVM_WORKER_SERVER_H

#include "ivm.h"
#include "wire.h"
#include "wire_value.h"

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ivm::worker {

// The worker's end of the channel. The worker trusts its host, but still
// reads through the bounded FrameBuffer: a malformed frame ends the worker.
class Channel {
 public:
  explicit Channel(int fd) : fd_(fd) {}
  // Blocks for the next frame; false at end of stream or on a malformed one.
  bool Read(wire::Frame* out);
  // Writes all of `bytes`; false if the host is gone. Any thread: the
  // replies of asynchronous calls are sent from libivm's pool threads.
  bool Send(const std::string& bytes, const wire::Fds& fds = wire::Fds());

  // Lending the reading (worker_follow.cc; docs/process.md, "Life of a
  // worker"): while a synchronous call runs, the pool thread that sends its
  // REPLY reads the channel next, for a short while, instead of the reader,
  // which waits. One thread reads at a time: the reader, or that follower.
  //
  // The reading thread (the reader or the follower), once CALL `frame`'s job
  // is submitted (HandleCall returned no reply): lends the reading to that
  // job (kLent) if it is a synchronous call whose REPLY a pool thread sends
  // (kOpEval, kOpScriptRun, kOpRefCall), nothing else is buffered and no host
  // callback waits; then the reader calls AwaitReading and the follower
  // returns. kDone: the job has ended already (its REPLY is sent); kRefused:
  // not lent. Either way the caller keeps the reading.
  enum class LendResult { kLent, kDone, kRefused };
  LendResult LendTo(const wire::Frame& frame);
  // The reading thread, before it runs CALL `call_id`: the call LendTo may
  // lend for next (whether its job ends first is noted by TakeLent).
  void Handling(uint64_t call_id);
  // The reader, after lending: until the reading comes back (the follower
  // gives it back, a host callback waits for its reply, or the lent call has
  // run for 1-2 ms: then CANCEL, PING and TERMINATE must be read again).
  void AwaitReading();
  // A pool thread, after the REPLY of CALL `call_id`: true if the reading was
  // lent for that call and this thread may follow (`may_follow`: it is not a
  // reading thread itself); it is this thread's now (FollowRead or GiveBack).
  // Else notes whether the call being handled (Handling) is done, for LendTo.
  bool TakeLent(uint64_t call_id, bool may_follow);
  // The follower: the next frame, read within a short spin, if it is a
  // synchronous call it may run (then LendTo); else false, and the reading
  // is given back (a frame read is kept for the reader's next Read).
  // `first`: its first read after the lent call's REPLY.
  bool FollowRead(wire::Frame* out, bool first);
  void GiveBack();
  // A host callback's invocation begins (true) or ends waiting for its
  // reply: meanwhile the reader reads, and nothing is lent.
  void CallbackWaits(bool begin);

 private:
  // Tries non-blocking reads of the channel for a short while before Read
  // sleeps (worker_server.cc); the read that got something, or -1 with errno
  // EAGAIN.
  ssize_t SpinForInput(char* buf, size_t len, bool* truncated);

  int fd_;
  bool after_sync_call_ = false;   // the last frame read was a synchronous CALL
  wire::InputPoll input_poll_;     // SpinForInput's
  std::mutex send_mu_;
  wire::FrameBuffer in_;
  wire::Fds in_fds_;   // received with the bytes, until their frame claims them

  // The next frame from in_ with its descriptors: FrameBuffer::Next's result.
  wire::FrameBuffer::Result TakeFrame(wire::Frame* out);
  enum class Role { kReader, kLent, kFollower };
  std::mutex lend_mu_;   // the lending's state; handing over the reading
  std::condition_variable lend_cv_;   // the reader's, while it is lent
  Role role_ = Role::kReader;
  uint64_t lent_call_ = 0;    // while kLent
  uint64_t handling_ = 0;        // Handling's call
  bool handling_done_ = false;   // its REPLY went before it was lent to
  uint64_t lend_epoch_ = 0;   // lendings so far
  int callback_waits_ = 0;
  int lend_pause_ = 0;   // calls not to lend for (FollowRead's misses, host callbacks)
  // The reading thread's only (handed over under lend_mu_):
  wire::InputPoll follow_poll_;        // FollowRead's spin
  int misses_ = 0;                     // FollowRead's spins and sleeps in a row that missed
  std::unique_ptr<wire::Frame> held_;  // read by a follower, for the reader
  bool broken_ = false;                // a follower's read ended the channel
  std::unique_ptr<char[]> follow_buf_;
};

// The REPLY of CALL `call_id` is sent (Ops::Done, on a pool thread): if the
// reading was lent for it, this thread reads the next frames for a while and
// runs the synchronous calls among them (worker_follow.cc).
void Follow(uint64_t call_id);

// rref: the references the host holds into this worker's isolates, by id
// (worker_refs.cc). Ids with wire::kWorkerRefBit are picked here, for the
// REFERENCE values a reply carries; others by the host (kOpContextGlobal).
class RefTable {
 public:
  ~RefTable();
  uint64_t Add(ivm_reference_t* ref, ivm_isolate_t* iso);
  void Put(uint64_t id, ivm_reference_t* ref, ivm_isolate_t* iso);
  ivm_reference_t* Find(uint64_t id);
  void Release(uint64_t id);
  void Free(uint64_t id);
  // Frees the references into `iso` (before the isolate is freed).
  void FreeIsolate(ivm_isolate_t* iso);

 private:
  struct Entry {
    ivm_reference_t* ref;
    ivm_isolate_t* iso;
  };
  std::mutex mu_;
  std::unordered_map<uint64_t, Entry> refs_;
  uint64_t next_ = 0;
};

// The worker's side of wire::ObjectCodec, for every value of isolate `iso`
// read or written: References by the ids of `refs` (a REFERENCE result is
// registered under a new one), ExternalCopies by content (a new ExternalCopy
// here), host callbacks entering `iso` (worker_callbacks.cc).
class WorkerCodec : public wire::ObjectCodec {
 public:
  WorkerCodec(RefTable& refs, ivm_isolate_t* iso) : refs_(refs), iso_(iso) {}
  bool WriteObject(wire::Writer& w, const ivm_value_t* value, std::string* why) override;
  bool WriteAttachment(wire::Writer& w, const ivm_value_t* value, size_t index,
                       std::string* why) override;
  bool ReadObject(wire::Reader& r, uint8_t kind, ivm_value_t** out) override;
  bool ReadAttachment(wire::Reader& r, uint32_t kind, ivm_value_t* into) override;
  bool ReadCallback(wire::Reader& r, ivm_value_t* into) override;
  // The reply to a call whose values could not be read: the reason a read
  // Reference was refused (it was released here, by a deref_into(release=True)
  // marker that already entered), as inline says it; else `otherwise`, an
  // invalid-argument error.
  std::string ReadError(uint64_t id, std::string_view otherwise) const;

 private:
  // A Reference this codec could not attach: keeps libivm's reason.
  bool Refused(ivm_error_t* err);
  uint32_t refused_kind_ = 0;
  std::string refused_;
  RefTable& refs_;
  ivm_isolate_t* iso_;
};

// The remote isolates of this worker (worker_ops.cc): CALL ops below
// wire::kFirstTestOp, run against the worker's own inline handles, which the
// host names by ids it picks.
class Ops {
 public:
  explicit Ops(Channel& channel);
  ~Ops();
  // Runs op `op` of CALL `id` (`r` is after the op); returns the REPLY to send
  // now, or an empty string (the reply follows when a job ends, or the op has
  // none).
  std::string Call(uint64_t id, uint32_t op, wire::Reader& r);
  // CANCEL: cancels the job of CALL `call_id`, if it still runs.
  void Cancel(uint64_t call_id);
#ifdef IVM_WORKER_TEST_HOOKS
  // IVM_DEBUG_HOOK_FORGE_VALUE: the next value result is sent as a copy
  // whose stream is `stream` (a worker that lies; the host must refuse it).
  void ForgeNextValue(std::string stream);
#endif

  // For host callbacks (worker_callbacks.cc), from any thread.
  ivm_isolate_t* FindIsolate(uint64_t id);
  ivm_context_t* FindContext(uint64_t id);
  ivm_script_t* FindScript(uint64_t id);
  void AddContext(uint64_t id, ivm_context_t* ctx);
  void AddScript(uint64_t id, ivm_script_t* script);
  // The CALL whose job is `job` (0: none).
  uint64_t CallOfJob(uint64_t job);
  // The references the host holds (for the codecs of host callbacks' values).
  RefTable& refs() { return refs_; }
  // kOpContextGlobal and kOpRefCall nested in a host callback (worker_refs.cc):
  // run now with the synchronous calls (`in_fds`: the CALL's descriptors;
  // `out_fds`: those to send beside the reply).
  std::string GlobalNested(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string RefCallNested(uint64_t id, ivm_isolate_t* iso, wire::Reader& r,
                            const wire::Fds* in_fds, wire::Fds* out_fds);
  // Submits CREATE_CONTEXT `id` of context `ctx_id` with `opts` (read now).
  std::string CreateContext(uint64_t id, ivm_isolate_t* iso, uint64_t ctx_id,
                            const ivm_context_options_t* opts);

 private:
  struct Pending;
  struct Job {
    ivm_isolate_t* iso;
    uint64_t job;
  };
  static void Done(void* user_data, const ivm_completion_t* c);
  void Finish(const Pending& p, const ivm_completion_t* c);
  using Reply = std::function<std::string(const ivm_completion_t* c)>;
  // Submits an _async call: `submit(done, user_data, &job)`; `reply`, if set, makes the
  // REPLY when the job ends. Returns the reply to send now if it could not be submitted,
  // else an empty string.
  template <class F>
  std::string Submit(uint64_t call_id, ivm_isolate_t* iso, uint64_t object_id, F&& submit,
                     Reply reply = nullptr);
  template <class T>
  T* Find(std::unordered_map<uint64_t, T*>& map, uint64_t id);
  ivm_isolate_t* Isolate(uint64_t id);
  std::string Compile(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Eval(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Run(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Drop(uint32_t op, wire::Reader& r);
  // kOpProfilerStart, kOpProfilerStop: the CPU profiler of `iso`.
  std::string Profiler(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r);
  // rref (worker_refs.cc): kOpContextGlobal, kOpRefCall; Submit and Find for it.
  using SubmitFn = std::function<ivm_error_t*(ivm_done_fn, void*, uint64_t*)>;
  std::string SubmitCall(uint64_t call_id, ivm_isolate_t* iso, uint64_t object_id,
                         const SubmitFn& submit);
  ivm_context_t* Context(uint64_t id);

 public:
  // The descriptors of the CALL being run (by the reading thread: the reader
  // or a follower, worker_follow.cc, so one per thread).
  void SetCallFds(const wire::Fds* fds) { call_fds_ = fds; }

 private:
  static thread_local const wire::Fds* call_fds_;
  std::string Global(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string RefCall(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  struct RefRequest;
  const char* ReadRefCall(wire::Reader& r, WorkerCodec& codec, RefRequest* q);
  // The reply of a kOpContextGlobal job (its REFERENCE value is `ref_id`).
  std::string GlobalReply(uint64_t call_id, uint64_t ref_id, ivm_isolate_t* iso,
                          ivm_value_t* value);
  // rmod: modules and code caches (worker_modules.cc).
  // As Submit, with `reply` making the REPLY when the job ends.
  std::string SubmitWith(uint64_t call_id, ivm_isolate_t* iso, Reply reply,
                         const SubmitFn& submit);
  std::string ModuleCall(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r);
  std::string CompileCached(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r);
  std::string Instantiate(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Evaluate(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r);
  std::string DropModule(uint32_t op, wire::Reader& r);

  Channel& channel_;
  std::unordered_map<uint64_t, ivm_isolate_t*> isolates_;   // the reading thread's
  std::recursive_mutex mu_;   // the rest: done callbacks run on pool threads
  std::unordered_map<uint64_t, ivm_context_t*> contexts_;
  std::unordered_map<uint64_t, ivm_script_t*> scripts_;
  std::unordered_map<uint64_t, ivm_module_t*> modules_;
  std::unordered_map<uint64_t, Job> jobs_;     // running jobs by CALL id
  std::unordered_set<uint64_t> early_;         // jobs that ended before they were recorded
  RefTable refs_;
#ifdef IVM_WORKER_TEST_HOOKS
  bool forge_ = false;
  std::string forged_stream_;
#endif
};

// A REPLY of remote isolates' ops (worker_ops.cc): status, message, name,
// stack, thrown_primitive, the isolate's times, then on success what
// `results` writes, on failure the error's host token. Frees `err`.
std::string FullReply(uint64_t id, ivm_error_t* err, ivm_isolate_t* iso,
                      const std::function<bool(wire::Writer&, std::string*)>& results);
std::string ErrorReply(uint64_t id, uint32_t kind, std::string_view message);

// An EVAL call (kOpEval) as read by ReadEval: the eval, or with `nargs` other
// than wire::kNoClosure the closure of `args`, which it owns until they are
// handed to libivm (`args.clear()` then).
struct EvalCall {
  uint64_t ctx_id = 0;
  std::string_view code;
  wire::WireSource wire_source;
  ivm_source_options_t source = IVM_SOURCE_OPTIONS_INIT;   // points into wire_source
  ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
  ivm_result_options_t result = IVM_RESULT_OPTIONS_INIT;
  uint32_t nargs = 0;
  std::vector<ivm_value_t*> args;
  EvalCall() = default;
  EvalCall(const EvalCall&) = delete;
  EvalCall& operator=(const EvalCall&) = delete;
  ~EvalCall() {
    for (ivm_value_t* v : args) ivm_value_free(v);
  }
};
// Reads an EVAL call's body, its arguments through `codec`, to the end;
// false if it is malformed (worker_ops.cc).
bool ReadEval(wire::Reader& r, WorkerCodec& codec, EvalCall* call);
std::string_view Message(const ivm_error_t* err,
                         void (*get)(const ivm_error_t*, const char**, size_t*));

// Sends HELLO: magic, protocol version, ivm version, V8 version.
bool SendHello(Channel& channel);

// Serves PING, EXIT and CALL frames until EXIT or the host closes the
// channel. Returns the process's exit status.
int Serve(Channel& channel);
// Answers one CALL (the reading thread); an empty string means no reply now.
std::string HandleCall(Channel& channel, Ops& ops, const wire::Frame& frame);
// Follow's channel and ops (Serve sets them).
void SetFollow(Channel* channel, Ops* ops);

// `ivm-worker --zygote` (worker_zygote.cc): serves fork requests on
// `control` until end of stream, then exits; returns only in a forked worker,
// with its channel on fd 3 and its stderr on fd 2.
void RunZygote(int control);

// Warms V8 up before the sandbox: starts the platform through libivm, runs a
// little JavaScript that touches the lazily opened files (ICU data, time
// zones) and disposes the isolate. False with `*why` on failure.
bool WarmUp(std::string* why);

}  // namespace ivm::worker

#endif  // IVM_WORKER_SERVER_H
