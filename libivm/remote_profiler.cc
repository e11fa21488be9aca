// remote_profiler.cc — the CPU profiler of a worker-hosted isolate, host side:
// ivm_isolate_{start,stop}_cpu_profiler[_async] as CALLs (kOpProfilerStart,
// kOpProfilerStop). The worker runs V8's profiler on its own inline isolate
// (worker_ops.cc), so sampling and the joining of a profile's parts across
// threads happen there exactly as inline; the profile comes back as its JSON
// text, a string value checked like any other value a worker sends.
#include "remote.h"
#include "worker_process.h"

namespace ivm::remote {

namespace {

// `interval_ns` is only sent by a start (checked by the caller already).
std::string ProfilerFrame(RemoteIsolate& iso, uint32_t op, std::string_view title,
                          uint64_t interval_ns, uint64_t* id) {
  wire::Writer w = iso.Begin(op, id);
  w.Bytes(title);
  if (op == wire::kOpProfilerStart) w.U64(interval_ns);
  return w.Finish();
}

}  // namespace

ivm_error_t* Profiler(const std::shared_ptr<RemoteIsolate>& iso, const ProfilerRequest& req,
                      ivm_value_t** out) {
  if (ivm_error_t* err = Refuse(*iso)) return err;
  uint64_t id;
  std::string frame = ProfilerFrame(*iso, req.op, req.title, req.interval_ns, &id);
  ivm_completion_t c{};
  if (ivm_error_t* err = Sync(*iso, id, frame, 0, ValueResult(iso), &c)) return err;
  if (out != nullptr) {
    *out = c.result.value;
  } else {
    ivm_value_free(c.result.value);
  }
  return nullptr;
}

ivm_error_t* ProfilerAsync(const std::shared_ptr<RemoteIsolate>& iso, const ProfilerRequest& req,
                           ivm_done_fn done, void* user_data, uint64_t* job_out) {
  uint64_t id;
  std::string frame = ProfilerFrame(*iso, req.op, req.title, req.interval_ns, &id);
  return Async(iso, id, frame, 0, IVM_COMPLETION_VALUE, done, user_data, job_out,
               ValueResult(iso));
}

}  // namespace ivm::remote
