// worker_server.h — the ivm-worker side of the channel: one host, served on
// fd 3, one frame at a time (worker_server.cc). Worker-only; not ABI.
#ifndef IVM_WORKER_SERVER_H
#define IVM_WORKER_SERVER_H

#include "ivm.h"
#include "wire.h"

#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

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
  bool Send(const std::string& bytes);

 private:
  int fd_;
  std::mutex send_mu_;
  wire::FrameBuffer in_;
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

 private:
  struct Pending;
  struct Job {
    ivm_isolate_t* iso;
    uint64_t job;
  };
  static void Done(void* user_data, const ivm_completion_t* c);
  void Finish(const Pending& p, const ivm_completion_t* c);
  template <class F>
  std::string Submit(uint64_t call_id, ivm_isolate_t* iso, uint64_t object_id, F&& submit);
  template <class T>
  T* Find(std::unordered_map<uint64_t, T*>& map, uint64_t id);
  ivm_isolate_t* Isolate(uint64_t id);
  std::string Compile(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Eval(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Run(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Drop(uint32_t op, wire::Reader& r);
  // rmod: modules and code caches (worker_modules.cc).
  using Reply = std::function<std::string(const ivm_completion_t* c)>;
  using SubmitFn = std::function<ivm_error_t*(ivm_done_fn done, void* user_data, uint64_t* job)>;
  // As Submit, with `reply` making the REPLY when the job ends.
  std::string SubmitWith(uint64_t call_id, ivm_isolate_t* iso, Reply reply,
                         const SubmitFn& submit);
  std::string ModuleCall(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r);
  std::string CompileCached(uint64_t id, uint32_t op, ivm_isolate_t* iso, wire::Reader& r);
  std::string Instantiate(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string Evaluate(uint64_t id, ivm_isolate_t* iso, wire::Reader& r);
  std::string DropModule(uint32_t op, wire::Reader& r);

  Channel& channel_;
  std::unordered_map<uint64_t, ivm_isolate_t*> isolates_;   // the reading thread's
  std::recursive_mutex mu_;   // the rest: done callbacks run on pool threads
  std::unordered_map<uint64_t, ivm_context_t*> contexts_;
  std::unordered_map<uint64_t, ivm_script_t*> scripts_;
  std::unordered_map<uint64_t, ivm_module_t*> modules_;
  std::unordered_map<uint64_t, Job> jobs_;     // running jobs by CALL id
  std::unordered_set<uint64_t> early_;         // jobs that ended before they were recorded
};

// REPLY frames (worker_ops.cc): FullReply has status, message, name, stack,
// thrown_primitive, the isolate's times, then on success what `results`
// writes (it frees `err`); ErrorReply is a failed one without times.
std::string FullReply(uint64_t id, ivm_error_t* err, ivm_isolate_t* iso,
                      const std::function<bool(wire::Writer&, std::string*)>& results);
std::string ErrorReply(uint64_t id, uint32_t kind, std::string_view message);

// Sends HELLO: magic, protocol version, ivm version, V8 version.
bool SendHello(Channel& channel);

// Serves PING, EXIT and CALL frames until EXIT or the host closes the
// channel. Returns the process's exit status.
int Serve(Channel& channel);

// Warms V8 up before the sandbox: starts the platform through libivm, runs a
// little JavaScript that touches the lazily opened files (ICU data, time
// zones) and disposes the isolate. False with `*why` on failure.
bool WarmUp(std::string* why);

}  // namespace ivm::worker

#endif  // IVM_WORKER_SERVER_H
