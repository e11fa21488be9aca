// fuzz_wire.cc — libFuzzer target: the worker frame reader and payload codec
// (libivm/wire.cc, linked directly) against arbitrary byte streams. The first
// byte chooses how the stream is cut into the chunks the channel delivers; the
// rest is the stream. Checked: no crash or sanitizer report, every frame's
// payload is as long as its header says and within kMaxPayload, a malformed
// stream says why and stays failed, at most one frame plus the last chunk is
// buffered, every frame re-encodes to the same header, and payloads parse as
// the host and the worker parse them (HELLO, REPLY, CALL) without reading past
// their end, and the shape check of copies from a worker (copy_check.cc) on
// REPLY payloads. Built by -Dfuzz=true; run by tools/fuzz.py wire.
#include "copy_check.h"
#include "wire.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace ivm::wire;

namespace {

void Check(bool cond, const char* what) {
  if (cond) return;
  std::fprintf(stderr, "fuzz_wire: check failed: %s\n", what);
  std::abort();
}

// The payload shapes that the host (HELLO, REPLY) and the worker (CALL) read.
void ParsePayload(const Frame& f) {
  Reader r(f.payload);
  uint32_t a = 0, b = 0, c = 0;
  std::string_view s;
  switch (f.header.kind) {
    case kHello:
      if (r.U32(&a) && r.U32(&b) && r.U32(&c) && r.Bytes(&s, 64)) Check(s.size() <= 64, "HELLO");
      break;
    case kReply:
      if (r.U32(&a) && r.Bytes(&s)) Check(s.size() <= f.payload.size(), "REPLY");
      // The shape check of a copy in a REPLY (copy_check.cc) on the rest: it
      // may refuse anything, but must neither crash nor accept a stream
      // without its STOP at the end.
      if (f.payload.size() >= 4 &&
          ivm::CheckCopyStream(std::string_view(f.payload).substr(4), nullptr)) {
        Check(f.payload.back() == '.', "a copy stream accepted without STOP at its end");
      }
      break;
    case kCall:
      if (r.U32(&a) && r.U32(&b) && r.Bytes(&s)) Check(s.size() <= f.payload.size(), "CALL");
      break;
    default: {
      uint64_t u = 0;
      double d = 0;
      uint8_t byte = 0;
      while (r.U8(&byte) && r.U64(&u) && r.F64(&d) && r.Bytes(&s)) {}
    }
  }
  // Once a getter failed, every later one fails too; Done() is never true then.
  if (!r.ok()) Check(!r.U8(reinterpret_cast<uint8_t*>(&a)) && !r.Done(), "failed reader");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t max_chunk = 1 + data[0] % 64;
  const char* stream = reinterpret_cast<const char*>(data + 1);
  const size_t len = size - 1;
  FrameBuffer buf;
  size_t at = 0;
  bool bad = false;
  while (at < len && !bad) {
    size_t chunk = 1 + (static_cast<uint8_t>(stream[at]) % max_chunk);
    if (chunk > len - at) chunk = len - at;
    buf.Append(stream + at, chunk);
    at += chunk;
    for (;;) {
      Frame f;
      std::string why;
      FrameBuffer::Result r = buf.Next(&f, &why);
      if (r == FrameBuffer::kNeedMore) break;
      if (r == FrameBuffer::kBad) {
        Check(!why.empty(), "a malformation says why");
        Check(buf.Next(&f, &why) == FrameBuffer::kBad, "stays failed");
        bad = true;
        break;
      }
      Check(f.payload.size() == f.header.length, "payload length");
      Check(f.payload.size() <= kMaxPayload, "payload bound");
      uint8_t h[kHeaderSize];
      EncodeHeader(f.header, h);
      Header again;
      std::string why2;
      Check(DecodeHeader(h, &again, &why2) && again.length == f.header.length &&
                again.kind == f.header.kind && again.flags == f.header.flags &&
                again.id == f.header.id,
            "header round trip");
      ParsePayload(f);
    }
    Check(buf.pending() <= kHeaderSize + kMaxPayload + max_chunk, "buffered bound");
  }
  return 0;
}
