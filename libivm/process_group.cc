// process_group.cc — the ABI of "Processes" in ivm.h: a handle on one
// ivm-worker process (worker_process.cc does the work).
#include "internal.h"
#include "options.h"
#include "worker_process.h"

struct ivm_process_group : ivm::LiveCounted {
  std::shared_ptr<ivm::WorkerProcess> worker;
};

namespace ivm {
std::shared_ptr<WorkerProcess> GroupWorker(const ivm_process_group_t* group) {
  return group->worker;
}
}  // namespace ivm

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_process_group_new(const ivm_process_group_options_t* opts,
                                           ivm_process_group_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (out == nullptr) return InvalidArgument("out is NULL");
    ivm_process_group_options_t o = IVM_PROCESS_GROUP_OPTIONS_INIT;
    if (ivm_error_t* err = ivm::ReadStruct(opts, &o)) return err;
    ivm::WorkerLimits limits;
    if (o.startup_timeout_ms != 0) limits.startup_timeout_ms = o.startup_timeout_ms;
    limits.max_rss_mb = o.max_rss_mb;
    limits.cpu_limit_s = o.cpu_limit_s;
    auto shell = std::make_unique<ivm_process_group>();
    if (ivm_error_t* err = ivm::WorkerProcess::Start(limits, &shell->worker)) return err;
    *out = shell.release();
    return nullptr;
  });
}

IVM_API int64_t ivm_process_group_pid(const ivm_process_group_t* group) {
  return group != nullptr ? group->worker->pid() : 0;
}

IVM_API ivm_error_t* ivm_process_group_ping(ivm_process_group_t* group,
                                            const ivm_run_options_t* run) {
  return Guard([&]() -> ivm_error_t* {
    if (group == nullptr) return InvalidArgument("process group is NULL");
    ivm_run_options_t r = IVM_RUN_OPTIONS_INIT;
    if (ivm_error_t* err = ivm::ReadStruct(run, &r)) return err;
    return group->worker->Ping(r.timeout_ns);
  });
}

IVM_API ivm_error_t* ivm_process_group_status(const ivm_process_group_t* group) {
  return Guard([&]() -> ivm_error_t* {
    if (group == nullptr) return InvalidArgument("process group is NULL");
    return group->worker->Status();
  });
}

IVM_API ivm_error_t* ivm_process_group_dispose(ivm_process_group_t* group) {
  return Guard([&]() -> ivm_error_t* {
    if (group == nullptr) return InvalidArgument("process group is NULL");
    group->worker->Dispose(true);
    return nullptr;
  });
}

IVM_API void ivm_process_group_free(ivm_process_group_t* group) {
  if (group == nullptr) return;
  try {
    group->worker->Dispose(false);
    delete group;
  } catch (...) {
  }
}

IVM_API ivm_error_t* ivm_debug_process_group_hook(ivm_process_group_t* group, uint32_t action,
                                                  const char* data, size_t data_len) {
  return Guard([&]() -> ivm_error_t* {
    if (group == nullptr) return InvalidArgument("process group is NULL");
    if (data == nullptr && data_len != 0) return InvalidArgument("data is NULL");
    return group->worker->TestHook(action, std::string_view(data ? data : "", data_len));
  });
}

}  // extern "C"
