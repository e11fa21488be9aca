// worker_server.h — the ivm-worker side of the channel: one host, served on
// fd 3, one frame at a time (worker_server.cc). Worker-only; not ABI.
#ifndef IVM_WORKER_SERVER_H
#define IVM_WORKER_SERVER_H

#include "wire.h"

#include <string>

namespace ivm::worker {

// The worker's end of the channel. The worker trusts its host, but still
// reads through the bounded FrameBuffer: a malformed frame ends the worker.
class Channel {
 public:
  explicit Channel(int fd) : fd_(fd) {}
  // Blocks for the next frame; false at end of stream or on a malformed one.
  bool Read(wire::Frame* out);
  // Writes all of `bytes`; false if the host is gone.
  bool Send(const std::string& bytes);

 private:
  int fd_;
  wire::FrameBuffer in_;
};

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
