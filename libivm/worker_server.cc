// worker_server.cc — what ivm-worker does once sandboxed: answer its host's
// frames on the channel (docs/wire-protocol.md). It uses libivm only through
// ivm.h, like any other embedder.
//
// Built twice: as ivm-worker, and with IVM_WORKER_TEST_HOOKS as
// ivm-worker-test, whose extra CALL op (kOpTestHook) lets tests make the
// worker misbehave on purpose. The default worker answers that op with an
// INVALID_ARGUMENT reply, and contains none of its code.
#include "worker_server.h"

#include "worker_callbacks.h"
#include "worker_inspector.h"

#include "ivm.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace ivm::worker {

// How long the reader tries non-blocking reads of the channel
// (wire::InputPoll::Read) before it sleeps in poll(): while the host sends a
// burst of calls (awaited calls over several workers), the next frame comes
// within microseconds, and a reader that slept must be woken by the host's
// send (a thread wake-up, paid by the host's event loop, per frame; and even a
// spin that misses spares the host's next send the wake-up of an idle vCPU).
// Never after a synchronous CALL (wire::kFlagSyncCall): its caller's next call
// comes a whole round trip later, and the spin would only take a core from the
// thread that runs this one. IVM_WORKER_READ_SPIN_US (inherited from the host; read once; 0: sleep
// at once; at most 10000) overrides the 10 us.
ssize_t Channel::SpinForInput(char* buf, size_t len, bool* truncated) {
  static const int64_t spin = wire::SpinFromEnv("IVM_WORKER_READ_SPIN_US", 10);
  return input_poll_.Read(fd_, after_sync_call_ ? 0 : spin, buf, len, &in_fds_, truncated);
}

wire::FrameBuffer::Result Channel::TakeFrame(wire::Frame* out) {
  std::string why;
  wire::FrameBuffer::Result r = in_.Next(out, &why);
  if (r != wire::FrameBuffer::kFrame) return r;
  // rref: the descriptors came with the frame's first bytes.
  size_t count = out->header.fd_count();
  if (count > in_fds_.size()) return wire::FrameBuffer::kBad;
  out->fds.assign(in_fds_.begin(), in_fds_.begin() + count);
  in_fds_.erase(in_fds_.begin(), in_fds_.begin() + count);
  return r;
}

bool Channel::Read(wire::Frame* out) {
  char buf[64 * 1024];
  if (broken_) return false;   // a follower read the end (worker_follow.cc)
  if (held_) {                 // or a frame it leaves to the reader
    *out = std::move(*held_);
    held_.reset();
    after_sync_call_ = false;
    return true;
  }
  for (;;) {
    switch (TakeFrame(out)) {
      case wire::FrameBuffer::kFrame:
        after_sync_call_ = out->header.kind == wire::kCall && out->header.sync_call();
        return true;
      case wire::FrameBuffer::kBad: return false;
      case wire::FrameBuffer::kNeedMore: break;
    }
    bool truncated = false;
    // Sleeps in poll(), never in a blocking recvmsg(): a thread asleep in
    // recvmsg() is woken (for nothing) each time the host reads a frame this
    // worker sent, since the socket then has room to write again; poll() for
    // POLLIN only is not. That spurious wake-up cost two thread switches per
    // round trip, on the core the host's caller was using.
    ssize_t n = SpinForInput(buf, sizeof buf, &truncated);
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, -1) < 0) {
        if (errno == EINTR) continue;
        return false;   // (ENOMEM): not a busy loop of poll and EAGAIN
      }
      n = wire::RecvWithFds(fd_, buf, sizeof buf, MSG_DONTWAIT, &in_fds_, &truncated);
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0 || truncated || in_fds_.size() > 2 * wire::kMaxFds) return false;
    in_.Append(buf, static_cast<size_t>(n));
  }
}

bool Channel::Send(const std::string& bytes, const wire::Fds& fds) {
  std::lock_guard<std::mutex> lock(send_mu_);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = done == 0 && !fds.empty()
                    ? wire::SendWithFds(fd_, bytes, fds, MSG_NOSIGNAL)
                    : send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool SendHello(Channel& channel) {
  std::string frame = wire::Writer(wire::kHello)
                          .U32(wire::kMagic)
                          .U32(wire::kProtocolVersion)
                          .U32(ivm_version())
                          .Bytes(ivm_v8_version())
                          .Finish();
  return channel.Send(frame);
}

namespace {

std::string Reply(uint64_t id, uint32_t status, std::string_view message) {
  return wire::Writer(wire::kReply, id).U32(status).Bytes(message).Finish();
}

// Evaluates `code` in a context of a fresh isolate, then calls `then(ctx,
// value)` with the context and the result if that succeeded, and disposes of
// the isolate. Returns NULL or the first error.
template <class F>
ivm_error_t* InFreshContext(std::string_view code, F&& then) {
  ivm_isolate_t* iso = nullptr;
  if (ivm_error_t* err = ivm_isolate_new(nullptr, &iso)) return err;
  ivm_context_t* ctx = nullptr;
  ivm_error_t* err = ivm_isolate_create_context(iso, nullptr, &ctx);
  ivm_value_t* value = nullptr;
  if (err == nullptr) {
    err = ivm_context_eval(ctx, code.data(), code.size(), nullptr, nullptr, nullptr, &value,
                           nullptr);
  }
  if (err == nullptr) err = then(ctx, value);
  ivm_value_free(value);
  ivm_context_free(ctx);
  ivm_error_t* disposed = ivm_isolate_dispose(iso);
  ivm_isolate_free(iso);
  if (err == nullptr) return disposed;
  ivm_error_free(disposed);
  return err;
}

#ifdef IVM_WORKER_TEST_HOOKS
// Evaluates `code` in a fresh isolate; returns NULL or the error, and the
// result's string form in `*result` when it is a string.
ivm_error_t* EvalOnce(std::string_view code, std::string* result) {
  return InFreshContext(code, [&](ivm_context_t*, ivm_value_t* value) -> ivm_error_t* {
    if (ivm_value_kind(value) == IVM_VALUE_STRING) {
      const char* p;
      size_t n;
      ivm_value_string(value, &p, &n);
      result->assign(p, n);
    }
    return nullptr;
  });
}

void WriteStderr(std::string_view text) {
  while (!text.empty()) {
    ssize_t n = write(2, text.data(), text.size());
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

// Test-only misbehaviour (IVM_DEBUG_HOOK_* in ivm.h). Returns the reply to
// send, or an empty string for none.
std::string TestHook(Channel& channel, Ops& ops, uint64_t id, uint32_t action,
                     std::string_view data) {
  switch (action) {
    case IVM_DEBUG_HOOK_FORGE_VALUE:
      ops.ForgeNextValue(std::string(data));
      return Reply(id, wire::kStatusOk, "");
    case IVM_DEBUG_HOOK_REPEAT_CALLBACK: {
      uint32_t times = 0;
      wire::Reader r(data);
      if (!r.U32(&times) || !r.Done()) {
        return Reply(id, IVM_ERROR_INVALID_ARGUMENT, "REPEAT_CALLBACK takes a u32");
      }
      Callbacks::Get().RepeatNextCallback(times);
      return Reply(id, wire::kStatusOk, "");
    }
    case IVM_DEBUG_HOOK_OPEN_FILE: {
      int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
      return Reply(id, IVM_ERROR_INTERNAL, fd >= 0 ? "open succeeded" : strerror(errno));
    }
    case IVM_DEBUG_HOOK_SOCKET: {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      return Reply(id, IVM_ERROR_INTERNAL, fd >= 0 ? "socket succeeded" : strerror(errno));
    }
    case IVM_DEBUG_HOOK_SEND_BYTES:
      channel.Send(std::string(data));
      return {};
    case IVM_DEBUG_HOOK_EXIT:
      WriteStderr(data);
      _exit(1);
    case IVM_DEBUG_HOOK_ABORT:
      WriteStderr(data);
      abort();
    case IVM_DEBUG_HOOK_EVAL: {
      std::string result;
      ivm_error_t* err = EvalOnce(data, &result);
      if (err == nullptr) return Reply(id, wire::kStatusOk, result);
      const char* p;
      size_t n;
      ivm_error_message(err, &p, &n);
      std::string reply = Reply(id, ivm_error_kind(err), std::string_view(p, n));
      ivm_error_free(err);
      return reply;
    }
    default:
      return Reply(id, IVM_ERROR_INVALID_ARGUMENT, "unknown test hook action");
  }
}
#endif

// SNAPSHOT_CREATE: ivm_snapshot_create() inline, here, where V8 aborting on a
// heap it cannot serialize ends only this worker. It runs on a thread of its
// own, so that the channel keeps answering PINGs; its REPLY follows.
std::string CreateSnapshot(Channel& channel, uint64_t id, wire::Reader& r) {
  uint64_t iso_id = 0;
  uint32_t n = 0;
  std::vector<std::string> texts;
  if (!r.U64(&iso_id) || !r.U32(&n) || n > wire::kMaxPayload / 8) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  for (uint32_t i = 0; i < 2 * n; ++i) {
    std::string_view text;
    if (!r.Bytes(&text)) return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
    texts.emplace_back(text);
  }
  uint8_t has_warmup = 0;
  std::string_view warmup;
  ivm_snapshot_options_t opts = IVM_SNAPSHOT_OPTIONS_INIT;
  if (!r.U8(&has_warmup) || !r.Bytes(&warmup) || !r.U64(&opts.timeout_ns) || !r.Done()) {
    return ErrorReply(id, IVM_ERROR_INVALID_ARGUMENT, "malformed call");
  }
  std::thread([&channel, id, texts = std::move(texts), has_warmup,
               warmup = std::string(warmup), opts]() mutable {
    std::vector<ivm_snapshot_script_t> scripts(texts.size() / 2);
    for (size_t i = 0; i < scripts.size(); ++i) {
      scripts[i] = {texts[2 * i].data(), texts[2 * i].size(), texts[2 * i + 1].data(),
                    texts[2 * i + 1].size()};
    }
    if (has_warmup) {
      opts.warmup = warmup.data();
      opts.warmup_len = warmup.size();
    }
    ivm_snapshot_t* snapshot = nullptr;
    ivm_error_t* err = ivm_snapshot_create(scripts.data(), scripts.size(), &opts, &snapshot);
    channel.Send(FullReply(id, err, nullptr, [snapshot](wire::Writer& w, std::string*) {
      const char* data = nullptr;
      size_t len = 0;
      ivm_snapshot_data(snapshot, &data, &len);
      w.Bytes(std::string_view(data, len));
      return true;
    }));
    ivm_snapshot_free(snapshot);
  }).detach();
  return "";
}

}  // namespace

std::string HandleCall(Channel& channel, Ops& ops, const wire::Frame& frame) {
  wire::Reader reader(frame.payload);
  uint32_t op = 0;
  if (!reader.U32(&op)) return Reply(frame.header.id, IVM_ERROR_INVALID_ARGUMENT, "no op");
  if ((op >= wire::kOpIsolateNew && op <= wire::kOpLast) ||
      (op >= wire::kOpFirstModuleOp && op <= wire::kOpLastModuleOp) ||
      (op >= wire::kOpFirstProfilerOp && op <= wire::kOpLastProfilerOp) ||
      op == wire::kOpIsolateNewSnapshot || op == wire::kOpIsolateNewInspector) {
    ops.SetCallFds(&frame.fds);   // rref: large buffers of its values
    std::string out = ops.Call(frame.header.id, op, reader);
    ops.SetCallFds(nullptr);
    return out;
  }
  if (op == wire::kOpSnapshotCreate) return CreateSnapshot(channel, frame.header.id, reader);
  if (op >= wire::kOpFirstInspectorOp && op <= wire::kOpLastInspectorOp) {
    uint64_t iso_id = 0;
    if (reader.U64(&iso_id)) InspectorCall(channel, ops, op, iso_id, reader);   // worker_inspector.cc
    return "";
  }
  if ((op >= wire::kFirstCallbackOp && op <= wire::kLastCallbackOp) ||
      op == wire::kOpCreateContextHost) {   // worker_callbacks.cc
    return Callbacks::Get().Call(frame.header.id, op, reader, frame.fds);
  }
#ifdef IVM_WORKER_TEST_HOOKS
  if (op == wire::kOpTestHook) {
    uint32_t action = 0;
    std::string_view data;
    if (!reader.U32(&action) || !reader.Bytes(&data) || !reader.Done()) {
      return Reply(frame.header.id, IVM_ERROR_INVALID_ARGUMENT, "malformed test hook call");
    }
    return TestHook(channel, ops, frame.header.id, action, data);
  }
#else
  (void)channel;
#endif
  return Reply(frame.header.id, IVM_ERROR_INVALID_ARGUMENT,
               "unknown op " + std::to_string(op) + " (this worker has no test hooks)");
}

// glibc's malloc reads /proc/sys/vm/overcommit_memory the first time it
// shrinks a thread arena's heap, and caches the answer. Shrink one now, from a
// thread of its own (a non-main arena), while opening files is still allowed.
void WarmUpMalloc() {
  std::thread([] {
    std::vector<void*> blocks;
    for (int i = 0; i < 64; ++i) blocks.push_back(malloc(64 * 1024));
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) free(*it);
  }).join();
}

// Runs `code` in a fresh isolate, then a trivial asynchronous eval with a
// timeout: that starts libivm's job pool and timer thread (remote calls run
// as jobs, with timeouts), and the pool reads the number of CPUs from /sys on
// first use. Returns NULL or the error.
ivm_error_t* WarmUpEval(std::string_view code) {
  return InFreshContext(code, [](ivm_context_t* ctx, ivm_value_t*) -> ivm_error_t* {
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
    } wait;
    ivm_run_options_t run = IVM_RUN_OPTIONS_INIT;
    run.timeout_ns = 10ull * 1000 * 1000 * 1000;
    ivm_error_t* err = ivm_context_eval_async(
        ctx, "1", 1, nullptr, &run, nullptr,
        [](void* ud, const ivm_completion_t* c) {
          ivm_value_free(c->result.value);
          ivm_error_free(c->error);
          auto* w = static_cast<Wait*>(ud);
          std::lock_guard<std::mutex> lock(w->mu);
          w->done = true;
          w->cv.notify_all();
        },
        &wait, nullptr);
    if (err == nullptr) {
      std::unique_lock<std::mutex> lock(wait.mu);
      wait.cv.wait(lock, [&] { return wait.done; });
    }
    return err;
  });
}

bool WarmUp(std::string* why) {
  WarmUpMalloc();
  // What opens a file or asks the system lazily, which the sandbox would
  // refuse later: the local time zone (ICU reads /etc/localtime and looks for
  // its time zone bundles in its time zone directory first: Date's toString
  // opens all three); and three cheap first uses (the RNG seed, the Unicode
  // tables of regular expressions and of normalisation). The rest of ICU's
  // data (locales, collation, segmentation, number and date formats) is in
  // libicudata's memory and is loaded on first use without a system call
  // that names a path: tests/test_worker_start.py runs that work under the
  // sandbox. Formatting it all here (a first Intl.DateTimeFormat alone costs
  // some 10 ms) slowed every worker's start for calls most never make.
  static const char kCode[] =
      "JSON.stringify([new Date(0).toString(), new Date().getTimezoneOffset(),"
      " Math.random(), /(?<y>\\d{4})\\p{L}/u.exec('2024x').groups.y, 'a'.normalize('NFKC')])";
  ivm_error_t* err = WarmUpEval(kCode);
  // What the warm-up freed goes back to the system: about 2 MB of each
  // worker's memory otherwise.
  malloc_trim(0);
  if (err == nullptr) return true;
  const char* p;
  size_t n;
  ivm_error_message(err, &p, &n);
  *why = "warm-up failed: " + std::string(p, n);
  ivm_error_free(err);
  return false;
}

int Serve(Channel& channel) {
  // Never destroyed: pool threads may still report jobs while the process
  // exits.
  Ops& ops = *new Ops(channel);
  Callbacks::Get().Init(channel, ops);
  SetFollow(&channel, &ops);
  wire::Frame frame;
  while (channel.Read(&frame)) {
    std::string out;
    switch (frame.header.kind) {
      case wire::kPing:
        out = wire::Writer(wire::kPong, frame.header.id).Finish();
        break;
      case wire::kExit:
        return 0;
      case wire::kCall:
        channel.Handling(frame.header.id);
        out = HandleCall(channel, ops, frame);
        // Its job submitted: its pool thread may read next (worker_follow.cc).
        if (out.empty() && channel.LendTo(frame) == Channel::LendResult::kLent) {
          channel.AwaitReading();
        }
        break;
      case wire::kCancel:
        ops.Cancel(frame.header.id);
        break;
      case wire::kCallbackReply:
        Callbacks::Get().OnReply(frame);
        break;
      default:
        return 4;   // the host sent something a worker never receives
    }
    if (!out.empty() && !channel.Send(out)) return 0;
  }
  return 0;   // the host closed the channel (or broke it): nothing left to serve
}

}  // namespace ivm::worker
