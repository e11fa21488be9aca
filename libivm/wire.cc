// wire.cc — frame headers and the bounds-checked payload codec (wire.h).
#include "wire.h"

#include <cstring>

namespace ivm::wire {

namespace {

void PutLe(std::string& buf, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) buf.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

const char* KindName(uint16_t kind) {
  switch (kind) {
    case kHello: return "HELLO";
    case kCall: return "CALL";
    case kReply: return "REPLY";
    case kCallback: return "CALLBACK";
    case kCallbackReply: return "CALLBACK_REPLY";
    case kCancel: return "CANCEL";
    case kPing: return "PING";
    case kPong: return "PONG";
    case kExit: return "EXIT";
    default: return "unknown";
  }
}

void EncodeHeader(const Header& header, uint8_t out[kHeaderSize]) {
  std::string buf;
  PutLe(buf, header.length, 4);
  PutLe(buf, header.kind, 2);
  PutLe(buf, header.flags, 2);
  PutLe(buf, header.id, 8);
  std::memcpy(out, buf.data(), kHeaderSize);
}

bool DecodeHeader(const uint8_t in[kHeaderSize], Header* out, std::string* why) {
  Header h;
  h.length = static_cast<uint32_t>(GetLe(in, 4));
  h.kind = static_cast<uint16_t>(GetLe(in + 4, 2));
  h.flags = static_cast<uint16_t>(GetLe(in + 6, 2));
  h.id = GetLe(in + 8, 8);
  if (h.kind == 0 || h.kind > kMaxKind) {
    *why = "unknown frame kind " + std::to_string(h.kind);
    return false;
  }
  uint16_t known = kFlagFdCountMask | (h.kind == kCall ? kFlagSyncCall : 0);
  if ((h.flags & ~known) != 0) {
    *why = "reserved flag bits set in a " + std::string(KindName(h.kind)) + " frame";
    return false;
  }
  if (h.fd_count() > kMaxFds) {
    *why = "a frame claims " + std::to_string(h.fd_count()) + " descriptors (at most " +
           std::to_string(kMaxFds) + ")";
    return false;
  }
  if (h.length > kMaxPayload) {
    *why = "a " + std::string(KindName(h.kind)) + " frame of " + std::to_string(h.length) +
           " bytes exceeds the limit of " + std::to_string(kMaxPayload);
    return false;
  }
  *out = h;
  return true;
}

// ---------------------------------------------------------------------------
// Writer

Writer::Writer(uint16_t kind, uint64_t id, uint16_t flags)
    : kind_(kind), flags_(flags), id_(id) {
  buf_.resize(kHeaderSize);
}

Writer& Writer::U8(uint8_t v) {
  buf_.push_back(static_cast<char>(v));
  return *this;
}

Writer& Writer::U32(uint32_t v) {
  PutLe(buf_, v, 4);
  return *this;
}

Writer& Writer::U64(uint64_t v) {
  PutLe(buf_, v, 8);
  return *this;
}

Writer& Writer::F64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return U64(bits);
}

Writer& Writer::Bytes(std::string_view v) {
  // Too long for the frame anyway: Finish() refuses it. Keep the length
  // field honest rather than truncating.
  PutLe(buf_, v.size() > UINT32_MAX ? UINT32_MAX : v.size(), 4);
  if (buf_.size() - kHeaderSize + v.size() <= kMaxPayload) buf_.append(v);
  else buf_.resize(kHeaderSize + kMaxPayload + 1);
  return *this;
}

Writer& Writer::SetFdCount(uint32_t n) {
  flags_ = static_cast<uint16_t>((flags_ & ~kFlagFdCountMask) | (n & kFlagFdCountMask));
  return *this;
}

std::string Writer::Finish() {
  size_t length = buf_.size() - kHeaderSize;
  if (length > kMaxPayload) return {};
  Header h;
  h.length = static_cast<uint32_t>(length);
  h.kind = kind_;
  h.flags = flags_;
  h.id = id_;
  EncodeHeader(h, reinterpret_cast<uint8_t*>(buf_.data()));
  return std::move(buf_);
}

// ---------------------------------------------------------------------------
// Reader

bool Reader::Take(size_t n, const char** out) {
  if (!ok_ || n > data_.size() - pos_) {
    ok_ = false;
    return false;
  }
  *out = data_.data() + pos_;
  pos_ += n;
  return true;
}

bool Reader::U8(uint8_t* out) {
  const char* p;
  if (!Take(1, &p)) return false;
  *out = static_cast<uint8_t>(*p);
  return true;
}

bool Reader::U32(uint32_t* out) {
  const char* p;
  if (!Take(4, &p)) return false;
  *out = static_cast<uint32_t>(GetLe(reinterpret_cast<const uint8_t*>(p), 4));
  return true;
}

bool Reader::U64(uint64_t* out) {
  const char* p;
  if (!Take(8, &p)) return false;
  *out = GetLe(reinterpret_cast<const uint8_t*>(p), 8);
  return true;
}

bool Reader::F64(double* out) {
  uint64_t bits;
  if (!U64(&bits)) return false;
  std::memcpy(out, &bits, sizeof bits);
  return true;
}

bool Reader::Bytes(std::string_view* out, size_t max) {
  uint32_t n;
  if (!U32(&n)) return false;
  if (n > max) {
    ok_ = false;
    return false;
  }
  const char* p;
  if (!Take(n, &p)) return false;
  *out = std::string_view(p, n);
  return true;
}

// ---------------------------------------------------------------------------
// FrameBuffer

void FrameBuffer::Append(const char* data, size_t len) {
  if (bad_ || len == 0) return;
  if (start_ > 0 && start_ == buf_.size()) {
    buf_.clear();
    start_ = 0;
  } else if (start_ > (64u << 10) && start_ * 2 > buf_.size()) {
    buf_.erase(0, start_);
    start_ = 0;
  }
  buf_.append(data, len);
}

FrameBuffer::Result FrameBuffer::Next(Frame* out, std::string* why) {
  if (bad_) {
    *why = "the stream is already malformed";
    return kBad;
  }
  if (pending() < kHeaderSize) return kNeedMore;
  Header h;
  if (!DecodeHeader(reinterpret_cast<const uint8_t*>(buf_.data() + start_), &h, why)) {
    bad_ = true;
    buf_.clear();
    start_ = 0;
    return kBad;
  }
  if (pending() - kHeaderSize < h.length) return kNeedMore;
  out->header = h;
  out->payload.assign(buf_, start_ + kHeaderSize, h.length);
  start_ += kHeaderSize + h.length;
  return kFrame;
}

}  // namespace ivm::wire
