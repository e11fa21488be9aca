// test_wire_fuzz.cc — the frame reader and payload codec (libivm/wire.cc, linked
// directly) against mutated and random streams: never a crash, never a read past
// the frame, never more buffered than one frame plus the last chunk, and every
// well-formed frame survives a round trip. Deterministic (fixed seed). Prints
// "N passed, N failed".
#include "wire.h"

#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace ivm::wire;

#include "check.h"

static std::vector<std::string> Seeds() {
  return {
      Writer(kHello).U32(kMagic).U32(kProtocolVersion).U32(3000).Bytes("10.2.154.26").Finish(),
      Writer(kPong, 7).Finish(),
      Writer(kReply, 9).U32(0).Bytes("").Finish(),
      Writer(kReply, 10).U32(5).Bytes("bad argument").Finish(),
      Writer(kCall, 11).U32(kOpTestHook).U32(3).Bytes(std::string(300, 'x')).Finish(),
  };
}

// Parses a payload the way the host does: every reader call may fail.
static void ParseAll(const Frame& f) {
  Reader r(f.payload);
  uint32_t a;
  uint64_t b;
  double d;
  uint8_t c;
  std::string_view s;
  for (int i = 0; i < 8 && r.ok(); ++i) {
    switch (i % 5) {
      case 0: r.U32(&a); break;
      case 1: r.Bytes(&s, 64); break;
      case 2: r.U64(&b); break;
      case 3: r.F64(&d); break;
      default: r.U8(&c); break;
    }
  }
}

static void FuzzOnce(std::mt19937_64& rng, const std::vector<std::string>& seeds) {
  std::string data;
  for (int n = 1 + static_cast<int>(rng() % 4); n > 0; --n) data += seeds[rng() % seeds.size()];
  for (int n = static_cast<int>(rng() % 6); n > 0 && !data.empty(); --n) {
    size_t pos = rng() % data.size();
    switch (rng() % 5) {
      case 0: data[pos] = static_cast<char>(data[pos] ^ (1 << (rng() % 8))); break;
      case 1: data[pos] = static_cast<char>(rng()); break;
      case 2: data.erase(pos, 1 + rng() % 8); break;
      case 3: data.insert(pos, std::string(1 + rng() % 8, static_cast<char>(rng()))); break;
      default: data.resize(pos); break;
    }
  }
  FrameBuffer buf;
  size_t at = 0;
  bool bad = false;
  while (at < data.size() && !bad) {
    size_t chunk = 1 + rng() % 40;
    if (chunk > data.size() - at) chunk = data.size() - at;
    buf.Append(data.data() + at, chunk);
    at += chunk;
    Frame f;
    std::string why;
    for (;;) {
      FrameBuffer::Result r = buf.Next(&f, &why);
      if (r == FrameBuffer::kNeedMore) break;
      if (r == FrameBuffer::kBad) {
        bad = true;
        if (why.empty()) failed++;
        break;
      }
      if (f.payload.size() != f.header.length || f.payload.size() > kMaxPayload) failed++;
      ParseAll(f);
    }
    if (buf.pending() > kHeaderSize + kMaxPayload + 40) failed++;
  }
}

int main() {
  std::vector<std::string> seeds = Seeds();
  // Round trips.
  for (const std::string& s : seeds) {
    FrameBuffer buf;
    buf.Append(s.data(), s.size());
    Frame f;
    std::string why;
    CHECK(buf.Next(&f, &why) == FrameBuffer::kFrame);
    CHECK(f.payload.size() + kHeaderSize == s.size());
    CHECK(buf.Next(&f, &why) == FrameBuffer::kNeedMore);
  }
  {
    Frame f;
    std::string why;
    FrameBuffer buf;
    std::string s = seeds[3];
    buf.Append(s.data(), s.size());
    CHECK(buf.Next(&f, &why) == FrameBuffer::kFrame);
    Reader r(f.payload);
    uint32_t status = 0;
    std::string_view msg;
    CHECK(r.U32(&status) && status == 5 && r.Bytes(&msg) && msg == "bad argument" && r.Done());
    uint8_t extra;
    CHECK(!r.U8(&extra) && !r.ok());
    Reader short_bytes(std::string_view("\xff\xff\xff\x7f", 4));
    CHECK(!short_bytes.Bytes(&msg));
  }
  // Oversized and malformed headers fail before any payload arrives.
  {
    uint8_t h[kHeaderSize];
    Header big;
    big.length = kMaxPayload + 1;
    big.kind = kPong;
    EncodeHeader(big, h);
    FrameBuffer buf;
    buf.Append(reinterpret_cast<const char*>(h), kHeaderSize);
    Frame f;
    std::string why;
    CHECK(buf.Next(&f, &why) == FrameBuffer::kBad && why.find("exceeds") != std::string::npos);
    CHECK(buf.Next(&f, &why) == FrameBuffer::kBad);   // stays failed
    Header odd;
    CHECK(!DecodeHeader(reinterpret_cast<const uint8_t*>("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
                        &odd, &why));
  }
  CHECK(Writer(kReply).Bytes(std::string(kMaxPayload, 'x')).Finish().empty());
  std::mt19937_64 rng(20240611);
  int before = failed;
  for (int i = 0; i < 20000; ++i) FuzzOnce(rng, seeds);
  CHECK(failed == before);
  return report();
}
