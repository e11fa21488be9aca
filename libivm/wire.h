// wire.h — the frames between the host and an ivm-worker process, and the
// bounds-checked codec of their payloads (docs/wire-protocol.md). Nothing here
// is ABI, and nothing here uses V8: both libivm (the host) and ivm-worker
// compile it.
//
// The host never trusts what a worker sends: every read is bounds-checked and
// returns false on any malformation, which the host treats as the worker's
// crash ("protocol violation: ...").
#ifndef IVM_WIRE_H
#define IVM_WIRE_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ivm::wire {

// "IVMW" as the bytes of a little-endian u32: the first field of HELLO.
constexpr uint32_t kMagic = 0x574d5649u;
// Bumped on any incompatible change; host and worker must agree exactly.
constexpr uint32_t kProtocolVersion = 2;

constexpr size_t kHeaderSize = 16;
// The largest payload a frame may carry; larger data travels as memfds.
constexpr uint32_t kMaxPayload = 16u << 20;
// The most descriptors one frame may carry (SCM_RIGHTS).
constexpr uint32_t kMaxFds = 16;
// flags: bits 0-4 are the number of descriptors the frame carries; bit 5
// (CALL only) says the host waits for its answer synchronously, a hint for
// the worker's reader (worker_server.cc); the other bits are reserved and
// must be zero.
constexpr uint16_t kFlagFdCountMask = 0x1f;
constexpr uint16_t kFlagSyncCall = 0x20;
// The worker's channel to the host is this descriptor.
constexpr int kChannelFd = 3;

enum Kind : uint16_t {
  kHello = 1,          // worker -> host, first frame: magic, versions
  kCall = 2,           // host -> worker: op + arguments
  kReply = 3,          // worker -> host: the result of the CALL with the same id
  kCallback = 4,       // worker -> host: JavaScript called a host callback
  kCallbackReply = 5,  // host -> worker: the callback's result
  kCancel = 6,         // host -> worker: stop the job of a CALL id
  kPing = 7,           // host -> worker: answer with PONG
  kPong = 8,           // worker -> host: the PING's id
  kExit = 9,           // host -> worker: exit now (status 0)
};
constexpr uint16_t kMaxKind = kExit;

// CALL ops. Ops at and above kFirstTestOp exist only in ivm-worker-test
// (built with IVM_WORKER_TEST_HOOKS); a default worker answers them with an
// INVALID_ARGUMENT reply.
//
// Remote isolates (remote_isolate.cc on the host, worker_ops.cc in the
// worker). Every op names its objects by ids the host picks; every id is
// unique for the life of the channel. Ops marked "no reply" are never
// answered; the others get a REPLY whose payload after status and message
// is: bytes error name, bytes error stack, u8 thrown_primitive, u64 the
// isolate's cpu_ns, u64 its wall_ns, then (on success) the op's results.
enum Op : uint32_t {
  kOpIsolateNew = 1,       // u64 iso, u64 memory_limit
  kOpIsolateDispose = 2,   // u64 iso
  kOpIsolateFree = 3,      // u64 iso; no reply
  kOpTerminate = 4,        // u64 iso; no reply
  kOpHeapStatistics = 5,   // u64 iso -> u32 n, n x u64 (the fields after struct_size)
  kOpCreateContext = 6,    // u64 iso, u64 ctx
  kOpContextRelease = 7,   // u64 ctx; no reply
  kOpContextFree = 8,      // u64 ctx; no reply
  kOpEval = 9,             // u64 iso, u64 ctx, bytes code, source, call, u32 nargs,
                           // nargs x value -> value (nargs: eval_closure; 0xffffffff: eval)
  kOpCompileScript = 10,   // u64 iso, u64 script, bytes code, source
  kOpScriptRun = 11,       // u64 iso, u64 script, u64 ctx, call -> value
  kOpScriptRelease = 12,   // u64 script; no reply
  kOpScriptFree = 13,      // u64 script; no reply
  // rref (20-39): References into a worker isolate (remote_refs.cc on the
  // host, worker_refs.cc in the worker). A reference id is picked by the
  // worker for a REFERENCE value it sends (bit 63 set), or by the host for
  // kOpContextGlobal.
  kOpContextGlobal = 20,   // u64 iso, u64 ctx, u64 ref -> bytes typeof
  kOpRefCall = 21,         // u64 iso, u64 ref, u32 RefCallKind, u32 get flags, call,
                           // u32 n, n x (u8 present, value) -> value
  kOpRefRelease = 22,      // u64 iso, u64 ref; no reply
  kOpRefFree = 23,         // u64 iso, u64 ref; no reply
  kOpLast = kOpRefFree,   // the ops that Ops::Call dispatches end here
  // Host callbacks (remote_callbacks.cc on the host, worker_callbacks.cc in
  // the worker). 40 and 41 are the ops of CALLBACK frames (worker -> host);
  // 42 and 43 are CALL ops (host -> worker).
  kOpCallbackInvoke = 40,    // CALLBACK: u64 call, u64 callback, u32 call op, u32 nargs,
                             // nargs x value; answered by a CALLBACK_REPLY of the same id
  kOpCallbackRelease = 41,   // CALLBACK: u64 callback; not answered
  kOpNested = 42,            // u64 iso, u64 invocation, bytes the payload of a CALL made
                             // by that invocation's callback -> that CALL's reply
  kOpCallbackSettle = 43,    // u64 iso, u64 deferred, bytes outcome; no reply
  kOpCallbackNotify = 44,    // CALLBACK: as kOpCallbackInvoke, never answered (the
                             // rejection hook: its result is not waited for)
  kOpCreateContextHooks = 45,   // u64 iso, u64 ctx, u8 has_import, u64 import callback,
                                // u8 has_rejection, u64 rejection callback
  // rem11 (110-119).
  kOpCallbackNotifyWait = 110,  // CALLBACK: as kOpCallbackNotify (which workers no
                                // longer send), but answered like an invoke once the
                                // host has run it (the outcome: undefined)
  kFirstCallbackOp = kOpCallbackInvoke,
  kLastCallbackOp = kOpCreateContextHooks,
  // rmod (60-69): ES modules and code caches (remote_modules.cc on the host,
  // worker_modules.cc in the worker). *cache* is u8 given, bytes data, u8
  // produce; a compile's cache results are u8 rejected, bytes produced.
  kOpCompileModule = 60,      // u64 module, bytes code, source, cache
                              // -> u32 n, n x (bytes specifier, u32 m, m x
                              // (bytes key, bytes value)), cache results
  kOpModuleInstantiate = 61,  // u64 module, u64 ctx, u32 n, n x (u64 referrer,
                              // u32 request, u64 module): the resolved graph
  kOpModuleEvaluate = 62,     // u64 module, u64 timeout_ns, u32 flags -> value
  kOpModuleSetMeta = 63,      // u64 module, value; no reply
  kOpModuleRelease = 64,      // u64 module; no reply
  kOpModuleFree = 65,         // u64 module; no reply
  kOpCompileScriptCached = 66,  // u64 script, bytes code, source, cache -> cache results
  kOpModuleNamespace = 67,    // u64 module, u32 flags -> value (a reference with
                              // IVM_RESULT_REFERENCE)
  kOpFirstModuleOp = kOpCompileModule,
  kOpLastModuleOp = kOpModuleNamespace,
  // host (70-79): host basics (host_*.cc). Handled with the callback ops
  // (worker_callbacks.cc), since the console hook is a host callback.
  kOpCreateContextHost = 70,  // u64 iso, u64 ctx, u32 host bits, u32 console_max_bytes,
                              // then the import, rejection and console hooks, each
                              // u8 present + u64 callback id
  // Snapshots (90-99): snapshot.cc and remote_snapshot.cc on the host,
  // worker_server.cc and worker_ops.cc in the worker.
  kOpSnapshotCreate = 90,     // u64 iso (0, unused), u32 n, n x (bytes code, bytes
                              // filename), u8 has_warmup, bytes warmup, u64 timeout_ns
                              // -> bytes snapshot (IVMS-wrapped)
  kOpIsolateNewSnapshot = 91,  // u64 iso, u64 memory_limit, bytes snapshot
  kOpFirstSnapshotOp = kOpSnapshotCreate,
  kOpLastSnapshotOp = kOpIsolateNewSnapshot,
  // isoperf (130-139): the CPU profiler of a worker's isolate (remote_profiler.cc on the
  // host, worker_ops.cc in the worker: ivm_isolate_{start,stop}_cpu_profiler_async there).
  kOpProfilerStart = 130,     // u64 iso, bytes title, u64 sampling_interval_ns -> value
                              // (undefined)
  kOpProfilerStop = 131,      // u64 iso, bytes title -> value (the profile's JSON text)
  kOpFirstProfilerOp = kOpProfilerStart,
  kOpLastProfilerOp = kOpProfilerStop,
  // insp (120-129): V8's inspector in a worker (remote_inspector.cc on the host,
  // worker_inspector.cc in the worker: ivm_inspector_session_* there). 121-123
  // never block the worker's reader (a dispatch reaches JavaScript paused there).
  kOpIsolateNewInspector = 120,  // u64 iso, u64 memory_limit, bytes snapshot (empty:
                                 // none): kOpIsolateNew with the inspector option
  kOpInspectorSessionNew = 121,  // u64 iso, u64 session; no reply
  kOpInspectorDispatch = 122,    // u64 iso, u64 session, bytes message (at most
                                 // IVM_INSPECTOR_MAX_MESSAGE); no reply
  kOpInspectorSessionFree = 123,  // u64 iso, u64 session; no reply
  kOpInspectorMessage = 124,     // CALLBACK: u64 session, u32 kind (IVM_INSPECTOR_*),
                                 // u32 call id (the response's int32 as its bits; 0 for a notification),
                                 // bytes message (at most IVM_INSPECTOR_MAX_MESSAGE);
                                 // not answered. An unknown session's is dropped.
  kOpFirstInspectorOp = kOpInspectorSessionNew,
  kOpLastInspectorOp = kOpInspectorSessionFree,
  kFirstTestOp = 0xf0000000u,
  kOpTestHook = 0xf0000001u,   // u32 action (IVM_DEBUG_HOOK_*), bytes data
};

// kOpRefCall: which operation through the reference (ivm_reference_get/set/
// delete/apply), and the values that follow it: get: key (absent: the value
// itself); set: key, value; delete: key; apply: receiver, then the arguments.
enum RefCallKind : uint32_t { kRefGet = 0, kRefSet = 1, kRefDelete = 2, kRefApply = 3 };
// Bit 63 marks the reference ids a worker picks.
constexpr uint64_t kWorkerRefBit = 1ull << 63;

// REPLY payload: u32 status (0: success, else an ivm_error_kind_t), bytes
// message, then the op's results.
constexpr uint32_t kStatusOk = 0;

struct Header {
  uint32_t length = 0;   // payload bytes
  uint16_t kind = 0;
  uint16_t flags = 0;
  uint64_t id = 0;

  uint32_t fd_count() const { return flags & kFlagFdCountMask; }
  bool sync_call() const { return (flags & kFlagSyncCall) != 0; }
};

void EncodeHeader(const Header& header, uint8_t out[kHeaderSize]);
// Decodes and validates a header: a known kind, no reserved flag bits, at most
// kMaxFds descriptors and a payload of at most kMaxPayload. On failure returns
// false and says why in `*why`.
bool DecodeHeader(const uint8_t in[kHeaderSize], Header* out, std::string* why);

// Builds one frame: header, then payload fields appended in order.
class Writer {
 public:
  explicit Writer(uint16_t kind, uint64_t id = 0, uint16_t flags = 0);
  Writer& U8(uint8_t v);
  Writer& U32(uint32_t v);
  Writer& U64(uint64_t v);
  Writer& F64(double v);
  Writer& Bytes(std::string_view v);   // u32 length + bytes
  // The number of descriptors the frame carries (sent beside it; see Fds).
  Writer& SetFdCount(uint32_t n);
  // The frame with its length filled in; empty if the payload is too large.
  std::string Finish();

 private:
  std::string buf_;
  uint16_t kind_, flags_;
  uint64_t id_;
};

// Reads payload fields; never reads past the payload. Every getter returns
// false (and leaves the reader failed) on a short or malformed payload.
class Reader {
 public:
  explicit Reader(std::string_view payload) : data_(payload) {}
  bool U8(uint8_t* out);
  bool U32(uint32_t* out);
  bool U64(uint64_t* out);
  bool F64(double* out);
  // A byte string of at most `max` bytes, borrowed from the payload.
  bool Bytes(std::string_view* out, size_t max = kMaxPayload);
  // True if every byte was read and nothing failed.
  bool Done() const { return ok_ && pos_ == data_.size(); }
  bool ok() const { return ok_; }

 private:
  bool Take(size_t n, const char** out);
  std::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// rref: a descriptor a frame carries (SCM_RIGHTS), closed when its last
// owner lets go (wire_fd.cc).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};
using Fds = std::vector<std::shared_ptr<Fd>>;

struct Frame {
  Header header;
  std::string payload;
  Fds fds;   // header.fd_count() of them
};

// The number of descriptors an encoded frame's header claims.
uint32_t FdCountOf(const std::string& frame);
// Sets kFlagSyncCall in an encoded CALL frame's header (other frames: unchanged).
void MarkSyncCall(std::string& frame);

// A short spin on a channel before its reader sleeps (the host's caller that
// reads its own REPLY, the worker's reader; docs/process.md): Read tries a
// non-blocking RecvWithFds of `sock` for up to `spin_ns`, yielding the core
// (sched_yield) between tries, and returns the first try that did not fail
// with EAGAIN (bytes, the end, or another error, errno as recvmsg left it);
// -1 with errno EAGAIN when none came in time (then the reader sleeps in
// poll() and reads again). The try that finds input is the read itself: no
// poll() before it. Adaptive: after 4 spins in a row that missed, the next 64
// Reads give up at once (no syscall). One reader at a time.
class InputPoll {
 public:
  long Read(int sock, int64_t spin_ns, char* buf, size_t len, Fds* fds, bool* truncated);

 private:
  int misses_ = 0;   // spins in a row that missed
  int pause_ = 0;    // Reads left that give up at once
};
// The microseconds the environment variable `name` gives (0 to 10000), in
// nanoseconds; `default_us` when it is unset or not such a number.
int64_t SpinFromEnv(const char* name, int64_t default_us);
// sendmsg() of the first bytes of `frame` with `fds` attached (all of them or
// none); returns what sendmsg returns. The rest is sent as usual.
long SendWithFds(int sock, const std::string& frame, const Fds& fds, int flags);
// recvmsg() into `buf`: received descriptors are appended to `*fds` (at most
// kMaxFds per call, CLOEXEC); `*truncated` if some were lost.
long RecvWithFds(int sock, char* buf, size_t len, int flags, Fds* fds, bool* truncated);

// Buffers at least this large cross in a sealed memfd, not in the frame.
constexpr size_t kFdBufferThreshold = 256u << 10;
// The largest buffer that crosses in a memfd.
constexpr uint64_t kMaxFdBuffer = uint64_t{1} << 32;
// A memfd holding a copy of `data`, or null (no memfd: the caller inlines it).
std::shared_ptr<Fd> BufferFd(const void* data, size_t len);
// With `seal` (the host, for a worker's memfd), seals `fd` first (shrink,
// grow, write, seal: a writer's live mapping makes it fail); then checks that
// it is a file of exactly `len` bytes and maps it privately (copy on write).
// Null on any failure; unmap with UnmapBuffer.
void* MapSealedBuffer(const Fd& fd, uint64_t len, bool seal);
void UnmapBuffer(const void* data, uint64_t len);

// Splits a byte stream into frames. Feed it what the channel delivers; Next()
// yields complete frames; drain it before appending more. Once it reports a
// malformation it stays failed. An oversized header fails at once, before its
// payload arrives, so it holds at most one frame plus the last chunk fed.
class FrameBuffer {
 public:
  enum Result { kNeedMore, kFrame, kBad };
  void Append(const char* data, size_t len);
  Result Next(Frame* out, std::string* why);
  // Bytes buffered that do not yet form a frame.
  size_t pending() const { return buf_.size() - start_; }

 private:
  std::string buf_;
  size_t start_ = 0;
  bool bad_ = false;
};

// Human-readable name of a kind, for protocol-violation messages.
const char* KindName(uint16_t kind);

}  // namespace ivm::wire

#endif  // IVM_WIRE_H
