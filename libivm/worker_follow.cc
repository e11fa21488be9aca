// worker_follow.cc — lending the worker's reading to the thread that runs a
// synchronous call (docs/process.md, "Life of a worker").
//
// A loop of synchronous calls, as the reader alone served it: the reader slept
// in poll(), woke for each CALL, handed it to a pool thread and slept again
// (two thread switches per call, with the hand-over's wake-up of the pool
// thread), while that pool thread, its REPLY sent, spun idle until the next
// job. Here the reader lends the reading to the call instead, once its job is
// submitted (LendTo; the follower keeps reading until then): the pool thread
// that sends its REPLY (Ops::Done) reads the channel next, spinning with
// non-blocking reads as idle pool threads spin anyway, and runs the next
// synchronous call itself (its job is queued to the isolate this thread
// serves). The reader waits meanwhile and takes the reading back when:
//   - the follower gives it back: nothing came within its spin, or what came
//     is not a synchronous call (PING, CANCEL, EXIT, a callback's reply, an
//     asynchronous call): the reader's next Read gets that frame;
//   - a host callback of some call waits for its reply (CallbackWaits);
//   - the lent call has run for 1-2 ms (the reader looks every millisecond):
//     a call that runs long or blocks must not keep CANCEL, PING or TERMINATE
//     unread (a PING is answered within 2 s, a Ctrl-C's CANCEL within 2 ms).
// One thread reads at a time, handed over under lend_mu_; the frames are read
// through the same buffer and checks either way. The wire protocol is
// unchanged: only the worker's threads differ.
#include "worker_server.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <chrono>

namespace ivm::worker {

namespace {

// How often the waiting reader looks whether a lent call still runs.
constexpr auto kLendLook = std::chrono::milliseconds(1);
constexpr size_t kFollowBuf = 64 * 1024;

Channel* g_channel = nullptr;
Ops* g_ops = nullptr;
// The reader, and a thread in Follow: a job's done callback that runs on such
// a thread (a job dropped at once) does not follow again.
thread_local bool t_reads = false;

// How long a follower tries non-blocking reads (yielding between them) before
// it sleeps in ppoll(): the host's next synchronous call comes a host turn
// after the REPLY. IVM_WORKER_FOLLOW_SPIN_US (inherited; read once; 0 turns
// lending off; at most 10000) overrides the 10 us. Adaptive as every such
// spin (wire.h). The sleep lasts kFollowWaitNs at most: on a busy machine a
// yielding thread waits for the core behind other processes' threads, while
// a sleeping one that input wakes runs at once; and it still spares the
// hand-over from the reader to a pool thread.
int64_t FollowSpinNs() {
  static const int64_t spin = wire::SpinFromEnv("IVM_WORKER_FOLLOW_SPIN_US", 10);
  return spin;
}
constexpr long kFollowWaitNs = 200 * 1000;
// Follows whose spin and sleep both missed, in a row, before lending pauses
// (for kMissPause calls: calls that far apart gain nothing from it).
constexpr int kMaxMisses = 4;
constexpr int kMissPause = 64;

// A synchronous CALL whose REPLY Ops::Done sends.
bool Lendable(const wire::Frame& frame) {
  if (frame.header.kind != wire::kCall || !frame.header.sync_call()) return false;
  wire::Reader r(frame.payload);
  uint32_t op = 0;
  return r.U32(&op) &&
         (op == wire::kOpEval || op == wire::kOpScriptRun || op == wire::kOpRefCall);
}

// Bytes wait on `fd` now (one poll(), no wait).
bool InputWaiting(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

}  // namespace

void SetFollow(Channel* channel, Ops* ops) {
  g_channel = channel;
  g_ops = ops;
  t_reads = true;
}

Channel::LendResult Channel::LendTo(const wire::Frame& frame) {
  if (!Lendable(frame) || FollowSpinNs() == 0) return LendResult::kRefused;
  std::lock_guard<std::mutex> lock(lend_mu_);
  // Its job ended before it could be lent (on another pool thread, or it
  // failed as it was submitted): nobody would follow.
  if (handling_done_ && handling_ == frame.header.id) return LendResult::kDone;
  // Something else is buffered, or a host callback waits for its reply: the
  // reader reads now.
  if (in_.pending() != 0 || callback_waits_ != 0) return LendResult::kRefused;
  // Paused (FollowRead's misses: calls far apart; a host callback took the
  // reading back): the reader would be woken for each call all the same.
  if (lend_pause_ > 0) {
    --lend_pause_;
    return LendResult::kRefused;
  }
  role_ = Role::kLent;
  lent_call_ = frame.header.id;
  ++lend_epoch_;
  return LendResult::kLent;
}

void Channel::Handling(uint64_t call_id) {
  std::lock_guard<std::mutex> lock(lend_mu_);
  handling_ = call_id;
  handling_done_ = false;
}

void Channel::AwaitReading() {
  std::unique_lock<std::mutex> lock(lend_mu_);
  uint64_t seen = lend_epoch_;
  for (;;) {
    if (role_ == Role::kReader) break;
    if (lend_cv_.wait_for(lock, kLendLook, [&] { return role_ == Role::kReader; })) break;
    if (role_ == Role::kLent && lend_epoch_ == seen) {   // one call for 1-2 ms
      // Calls that long gain nothing from lending, and frames of other calls
      // (another thread's, in a process group) waited unread meanwhile.
      lend_pause_ = kMissPause;
      break;
    }
    seen = lend_epoch_;
  }
  role_ = Role::kReader;
}

bool Channel::TakeLent(uint64_t call_id, bool may_follow) {
  std::lock_guard<std::mutex> lock(lend_mu_);
  if (!may_follow || role_ != Role::kLent || lent_call_ != call_id) {
    if (call_id == handling_) handling_done_ = true;   // for LendTo
    return false;
  }
  role_ = Role::kFollower;
  return true;
}

void Channel::GiveBack() {
  {
    std::lock_guard<std::mutex> lock(lend_mu_);
    role_ = Role::kReader;
  }
  lend_cv_.notify_one();
}

void Channel::CallbackWaits(bool begin) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(lend_mu_);
    callback_waits_ += begin ? 1 : -1;
    if (begin && role_ == Role::kLent) {
      role_ = Role::kReader;
      wake = true;
      // Waking the reader for the reply cost a callback's round trip (from a
      // synchronous call) more than lending saves: 40 us became 65-78 (load
      // 3.5). Calls that call back tend to come in a row: lend nothing for
      // the next kMissPause calls.
      lend_pause_ = kMissPause;
    }
  }
  if (wake) lend_cv_.notify_one();
}

bool Channel::FollowRead(wire::Frame* out, bool first) {
  if (!follow_buf_) follow_buf_ = std::make_unique<char[]>(kFollowBuf);
  if (first && (in_.pending() != 0 || InputWaiting(fd_))) {
    // Input came while the lent call ran: not the next call of the thread that
    // waited for this REPLY (it cannot have sent one yet), but another thread's
    // frames (a process group's other isolates), which waited unread for the
    // whole call. Lend nothing for a while: the reader reads them at once.
    std::lock_guard<std::mutex> lock(lend_mu_);
    lend_pause_ = kMissPause;
  }
  for (;;) {
    wire::FrameBuffer::Result r = TakeFrame(out);
    if (r == wire::FrameBuffer::kBad) {
      broken_ = true;
      break;
    }
    if (r == wire::FrameBuffer::kFrame) {
      if (Lendable(*out)) return true;   // Follow runs it, then lends (LendTo)
      held_ = std::make_unique<wire::Frame>(std::move(*out));
      break;
    }
    bool truncated = false;
    ssize_t n = follow_poll_.Read(fd_, FollowSpinNs(), follow_buf_.get(), kFollowBuf,
                                  &in_fds_, &truncated);
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd_, POLLIN, 0};
      timespec wait{0, kFollowWaitNs};
      if (ppoll(&p, 1, &wait, nullptr) > 0) {
        n = wire::RecvWithFds(fd_, follow_buf_.get(), kFollowBuf, MSG_DONTWAIT, &in_fds_,
                              &truncated);
      } else if (++misses_ >= kMaxMisses) {   // nothing came (or EINTR)
        std::lock_guard<std::mutex> lock(lend_mu_);
        misses_ = 0;
        lend_pause_ = kMissPause;
      }
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;   // the reader polls
    misses_ = 0;
    if (n <= 0 || truncated || in_fds_.size() > 2 * wire::kMaxFds) {
      broken_ = true;   // as the reader's Read would: the worker ends
      break;
    }
    in_.Append(follow_buf_.get(), static_cast<size_t>(n));
  }
  GiveBack();
  return false;
}

void Follow(uint64_t call_id) {
  Channel* channel = g_channel;
  // (A job that ends on a reading thread: one that failed as it was submitted.)
  if (channel == nullptr || !channel->TakeLent(call_id, !t_reads)) return;
  struct Reads {
    Reads() { t_reads = true; }
    ~Reads() { t_reads = false; }
  } reads;
  wire::Frame frame;
  bool first = true;
  // This thread keeps the reading (kFollower, which the reader never takes
  // back) while it runs what it read: a CANCEL or TERMINATE that follows a
  // CALL is read only once that CALL's job is submitted, as the reader alone
  // would, and only one thread is ever in HandleCall.
  for (; channel->FollowRead(&frame, first); first = false) {
    channel->Handling(frame.header.id);
    std::string out = HandleCall(*channel, *g_ops, frame);
    if (!out.empty()) {   // answered at once: read on
      if (!channel->Send(out)) {   // the host is gone: the reader sees it
        channel->GiveBack();
        return;
      }
      continue;
    }
    switch (channel->LendTo(frame)) {
      case Channel::LendResult::kLent: return;   // its pool thread follows, or the reader takes it back
      case Channel::LendResult::kDone: continue;   // its REPLY is sent: read on
      case Channel::LendResult::kRefused:
        channel->GiveBack();
        return;
    }
  }
}

}  // namespace ivm::worker
