// pickle.h — the bytes of the copy format, and the emitter that writes them.
//
// The copy format is a subset of Python's pickle protocol 5 (docs/values.md).
// This header holds what every part of it agrees on: the opcodes, the
// `ivm._copy` names a stream may call, the layout constants (frames,
// batches), the limits of the mapping from JavaScript, and Emitter, the one
// writer of these bytes. Emitter serves the general writer (copy_writer.cc),
// the translation of V8's serializer output (copy_translate.cc) and
// PrimitiveStream (copy.cc); the reader (copy_reader.cc) reads the same
// constants. Nothing here is ABI. Header-only: the encoders call the emitter
// once or more per value, so it stays inline.
#ifndef IVM_PICKLE_H
#define IVM_PICKLE_H

#include "internal.h"
#include "pickle_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>

namespace ivm {
namespace pickle {

// The opcodes and kProtocol are in pickle_ops.h (free of V8: copy_check.cc).

// --- Layout
// Items per batch (MARK, items, then APPENDS, SETITEMS or ADDITEMS), as
// Python's pickle writes them; the reader takes batches of any size.
constexpr uint32_t kBatchSize = 1000;
// A new frame starts at the first opcode boundary past this many bytes.
constexpr size_t kFrameSize = 64 * 1024;
// Property keys up to this many bytes are memoized by content.
constexpr size_t kMaxMemoizedKey = 64;
// A memo index that stands for "not memoized".
constexpr uint32_t kNoMemo = 0xffffffffu;

// --- The `ivm._copy` names a stream may call (GLOBAL or STACK_GLOBAL, then REDUCE)
enum class Tag { kNone, kUndefined, kBigInt, kMap, kRegExp, kDate, kView, kBuf, kAtt, kError, kSab,
                 kCount };
constexpr const char* kModule = "ivm._copy";
// Indexed by Tag.
constexpr const char* kTagNames[] = {nullptr, "_undefined", "JSBigInt", "JSMap", "JSRegExp",
                                     "_date", "_view",      "_buf",     "_att",  "_error",
                                     "_sab"};
static_assert(sizeof kTagNames / sizeof kTagNames[0] == static_cast<size_t>(Tag::kCount));

// Typed array kinds as `_view` names them (docs/values.md).
enum ViewKind : int {
  kInt8 = 0, kUint8, kUint8Clamped, kInt16, kUint16, kInt32, kUint32, kFloat32, kFloat64,
  kBigInt64, kBigUint64, kDataView, kViewKinds
};
constexpr size_t kViewItemSize[kViewKinds] = {1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 1};
// X(kind, V8 class, subtag in V8's serialization format) for every kind.
#define IVM_VIEW_KINDS(X)                   \
  X(kInt8, Int8Array, 'b')                  \
  X(kUint8, Uint8Array, 'B')                \
  X(kUint8Clamped, Uint8ClampedArray, 'C')  \
  X(kInt16, Int16Array, 'w')                \
  X(kUint16, Uint16Array, 'W')              \
  X(kInt32, Int32Array, 'd')                \
  X(kUint32, Uint32Array, 'D')              \
  X(kFloat32, Float32Array, 'f')            \
  X(kFloat64, Float64Array, 'F')            \
  X(kBigInt64, BigInt64Array, 'q')          \
  X(kBigUint64, BigUint64Array, 'Q')        \
  X(kDataView, DataView, '?')

// --- Limits of the mapping from JavaScript
constexpr int kMaxDepth = 1000;                          // nesting of containers
constexpr double kMaxSafeInteger = 9007199254740991.0;   // 2**53 - 1
constexpr double kMinDateMs = -62135596800000.0;         // 0001-01-01T00:00:00Z
constexpr double kMaxDateMs = 253402300799999.0;         // 9999-12-31T23:59:59.999Z
constexpr uint32_t kMaxArrayLength = 1u << 26;

inline bool DateInRange(double ms) { return ms >= kMinDateMs && ms <= kMaxDateMs; }

// --- Reading: the stream's integers (little-endian) and BINFLOAT's double (big-endian)
inline uint64_t LoadLe(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}
inline double LoadFloat(const unsigned char* p) {
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

// RegExp flags as JavaScript writes them ("dgimsuy"; "l" for linear).
inline std::string RegExpFlags(int f) {
  std::string flags;
  if (f & v8::RegExp::kHasIndices) flags += 'd';
  if (f & v8::RegExp::kGlobal) flags += 'g';
  if (f & v8::RegExp::kIgnoreCase) flags += 'i';
  if (f & v8::RegExp::kLinear) flags += 'l';
  if (f & v8::RegExp::kMultiline) flags += 'm';
  if (f & v8::RegExp::kDotAll) flags += 's';
  if (f & v8::RegExp::kUnicode) flags += 'u';
  if (f & v8::RegExp::kSticky) flags += 'y';
  return flags;
}

// --- Key classes: Map and Set keys become dict keys and set items in
// Python, where 1, 1.0, true and 1n are one key. Both encoders name each
// primitive key's Python equality class with these strings and refuse a
// container in which two keys share one.
namespace key_class {
constexpr const char* kUndefined = "u";
constexpr const char* kNull = "z";
inline std::string Prefixed(char prefix, const std::string& s) {
  std::string out(1, prefix);
  out += s;
  return out;
}
inline std::string Integer(int64_t n) { return Prefixed('n', std::to_string(n)); }
inline std::string Boolean(bool b) { return b ? "n1" : "n0"; }
inline std::string String(const std::string& wtf8) { return Prefixed('s', wtf8); }
// Integral doubles below this magnitude fit an int64_t exactly.
constexpr double kMaxInt64 = 9.2e18;
}  // namespace key_class

// Whether a[0, n) and b[0, n) hold the same bytes (short runs, such as keys,
// compared inline).
inline bool SameBytes(const void* a, const void* b, size_t n) {
  if (n > 16) return std::memcmp(a, b, n) == 0;
  auto* x = static_cast<const unsigned char*>(a);
  auto* y = static_cast<const unsigned char*>(b);
  for (size_t i = 0; i < n; ++i) {
    if (x[i] != y[i]) return false;
  }
  return true;
}

// Writes a copy stream into a string: the framing, the memo, and the
// opcodes of each kind of value. It writes what it is told; what to write
// (and every check) is the encoder's.
class Emitter {
 public:
  explicit Emitter(std::string& s) : s_(s), n_(s.size()) {}
  // The string holds exactly the bytes written (it has spare room while
  // they are written).
  ~Emitter() { s_.resize(n_); }
  Emitter(const Emitter&) = delete;
  Emitter& operator=(const Emitter&) = delete;

  // PROTO 5 and the first frame; End() closes the frame and writes STOP.
  void Begin(bool framed = true) {
    n_ = 0;
    Byte(op::PROTO);
    Byte(kProtocol);
    framed_ = framed;
    if (framed_) StartFrame();
  }
  void End() {
    if (framed_) EndFrame();
    Byte(op::STOP);
    s_.resize(n_);
  }
  // At an opcode boundary: start a new frame when this one is full.
  void MaybeFrame() {
    if (n_ - frame_pos_ > kFrameSize) {
      EndFrame();
      StartFrame();
    }
  }
  size_t size() const { return n_; }
  // Makes room for `n` bytes in all, at once (capacity: nothing is written).
  void Reserve(size_t n) {
    if (s_.capacity() < n) s_.reserve(n);
  }

  void Byte(unsigned char c) { *Room(1) = static_cast<char>(c); ++n_; }
  // `n` bytes of data.
  void Bytes(const char* p, size_t n) {
    if (n > kGrowSlack) {   // a long string or a buffer's bytes: appended, never zeroed first
      s_.resize(n_);
      s_.append(p, n);
      n_ += n;
      return;
    }
    char* to = Room(n);
    if (n > 16) {
      std::memcpy(to, p, n);
    } else {
      for (size_t i = 0; i < n; ++i) to[i] = p[i];   // keys and numbers: cheaper inline
    }
    n_ += n;
  }
  // `n` little-endian bytes of v.
  void Le(uint64_t v, int n) {
    char* to = Room(8);
    for (int i = 0; i < n; ++i) to[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    n_ += n;
  }

  // --- the memo
  // Memoizes the value on top of the stack; returns its memo index.
  uint32_t Memoize() {
    Byte(op::MEMOIZE);
    return memo_count_++;
  }
  uint32_t next_memo() const { return memo_count_; }
  void Get(uint32_t index) {
    if (index < 256) {
      Byte(op::BINGET);
      Byte(static_cast<unsigned char>(index));
    } else {
      Byte(op::LONG_BINGET);
      Le(index, 4);
    }
  }

  // --- primitives
  void None() { Byte(op::NONE); }
  void Boolean(bool b) { Byte(b ? op::NEWTRUE : op::NEWFALSE); }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      Byte(op::BININT1);
      Byte(static_cast<unsigned char>(v));
    } else if (v >= 0 && v < 65536) {
      Byte(op::BININT2);
      Le(static_cast<uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Byte(op::BININT);
      Le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      Byte(op::LONG1);
      Byte(8);
      Le(static_cast<uint64_t>(v), 8);
    }
  }
  void Float(double d) {   // big-endian, as pickle writes BINFLOAT
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    char* b = Room(9);
    b[0] = static_cast<char>(op::BINFLOAT);
    for (int i = 0; i < 8; ++i) b[1 + i] = static_cast<char>((bits >> (8 * (7 - i))) & 0xff);
    n_ += 9;
  }
  // A JavaScript number: an int when it is a safe integer (not -0), else a float.
  void Number(double d) {
    if (d >= -kMaxSafeInteger && d <= kMaxSafeInteger && d == std::floor(d) &&
        !(d == 0 && std::signbit(d))) {
      Int(static_cast<int64_t>(d));
    } else {
      Float(d);
    }
  }
  // A Python int from its two's complement bytes (TwosComplement).
  void Long(const std::string& bytes) {
    if (bytes.size() < 256) {
      Byte(op::LONG1);
      Byte(static_cast<unsigned char>(bytes.size()));
    } else {
      Byte(op::LONG4);
      Le(bytes.size(), 4);
    }
    Bytes(bytes.data(), bytes.size());
  }
  // A str from WTF-8.
  void Text(const char* p, size_t n) {
    if (n <= kShortText && s_.size() - n_ >= n + 2) {   // most keys and values: one step
      char* to = &s_[n_];
      to[0] = static_cast<char>(op::SHORT_BINUNICODE);
      to[1] = static_cast<char>(n);
      for (size_t i = 0; i < n; ++i) to[2 + i] = p[i];
      n_ += n + 2;
      return;
    }
    TextAnyLength(p, n);
  }
  void Text(const std::string& s) { Text(s.data(), s.size()); }
  // A property key: short keys are memoized by content, so a key repeated
  // across many objects is one Python string. Returns the memo index of a
  // key memoized just now, otherwise kNoMemo.
  uint32_t Key(const std::string& wtf8) { return Key(wtf8.data(), wtf8.size()); }
  uint32_t Key(const char* p, size_t n) {
    if (n > kMaxMemoizedKey) {
      Text(p, n);
      last_key_memo_ = kNoMemo;
      return kNoMemo;
    }
    // Rows of one shape repeat the same few keys: a small direct-mapped
    // cache in front of the map finds them without hashing the whole key.
    RecentKey& recent = recent_keys_[RecentSlot(p, n)];
    if (recent.memo != kNoMemo && recent.key.size() == n && SameBytes(recent.key.data(), p, n)) {
      Get(recent.memo);
      last_key_memo_ = recent.memo;
      return kNoMemo;
    }
    std::string key(p, n);
    auto it = keys_.find(key);
    if (it != keys_.end()) {
      Get(it->second);
      recent.key = std::move(key);
      recent.memo = last_key_memo_ = it->second;
      return kNoMemo;
    }
    Text(p, n);
    uint32_t memo = memo_count_;
    keys_.emplace(key, memo);
    recent.key = std::move(key);
    recent.memo = last_key_memo_ = memo;
    return Memoize();
  }
  // The memo index of the key Key wrote last (memoized now or before), or
  // kNoMemo when it was too long to memoize: Get of it writes that key again.
  uint32_t last_key_memo() const { return last_key_memo_; }

  // --- calls of `ivm._copy` names: Call(tag), its arguments, then Reduce(n)
  // for 0 to 3 arguments, or MarkedReduce() after Call(tag) and Mark().
  void Call(Tag tag) {
    uint32_t& slot = tag_memo_[static_cast<int>(tag)];   // memo index + 1
    if (slot != 0) {
      Get(slot - 1);
      return;
    }
    Byte(op::GLOBAL);
    Bytes(kModule, std::strlen(kModule));
    Byte('\n');
    const char* name = kTagNames[static_cast<int>(tag)];
    Bytes(name, std::strlen(name));
    Byte('\n');
    slot = Memoize() + 1;
  }
  void Mark() { Byte(op::MARK); }
  void Reduce(int args) {
    static constexpr unsigned char kTuple[] = {static_cast<unsigned char>(op::EMPTY_TUPLE),
                                               op::TUPLE1, op::TUPLE2, op::TUPLE3};
    Byte(kTuple[args]);
    Byte(op::REDUCE);
  }
  void MarkedReduce() {
    Byte(op::TUPLE);
    Byte(op::REDUCE);
  }
  // The calls both encoders write alike.
  void Undefined() {
    Call(Tag::kUndefined);
    Reduce(0);
  }
  void BigInt(const std::string& twos_complement) {
    Call(Tag::kBigInt);
    Long(twos_complement);
    Reduce(1);
  }
  void Date(double ms) {
    Call(Tag::kDate);
    Float(ms);
    Reduce(1);
  }
  void RegExp(const std::string& source, const std::string& flags) {
    Call(Tag::kRegExp);
    Text(source);
    Text(flags);
    Reduce(2);
  }
  void NewMap() {
    Call(Tag::kMap);
    Reduce(0);
  }
  void NewSet() { Byte(op::EMPTY_SET); }
  void NewDict() { Byte(op::EMPTY_DICT); }
  void NewList() { Byte(op::EMPTY_LIST); }
  // `_buf(i)`, `_sab(i)` or `_att(i)`: attachment i.
  void Attached(Tag tag, uint32_t index) {
    Call(tag);
    Int(index);
    Reduce(1);
  }
  // `_view(buffer, kind, offset, length)`: BeginView(), the buffer, EndView().
  void BeginView() {
    Call(Tag::kView);
    Mark();
  }
  void EndView(int kind, size_t byte_offset, size_t byte_length) {
    Int(kind);
    Int(static_cast<int64_t>(byte_offset));
    Int(static_cast<int64_t>(byte_length / kViewItemSize[kind]));
    MarkedReduce();
  }

 private:
  // Strs up to this many bytes are written by Text in one step when there is room.
  static constexpr size_t kShortText = 64;
  __attribute__((noinline)) void TextAnyLength(const char* p, size_t n) {
    if (n < 256) {
      char* head = Room(2);
      head[0] = static_cast<char>(op::SHORT_BINUNICODE);
      head[1] = static_cast<char>(n);
      n_ += 2;
    } else if (n <= 0xffffffffu) {
      Byte(op::BINUNICODE);
      Le(n, 4);
    } else {
      Byte(op::BINUNICODE8);
      Le(n, 8);
    }
    Bytes(p, n);
  }
  // Whether [a, a + n) and [b, b + n) hold the same bytes (short keys inline).
  // Room for `k` more bytes at the end; returns where they go.
  char* Room(size_t k) {
    if (s_.size() - n_ < k) Grow(k);
    return &s_[n_];
  }
  // The bytes written go to s_[n_, s_.size()). Growing adds to the string's size only what is
  // about to be written and a little more (resize zero-fills what it adds), while its capacity
  // doubles: a copy of tens of megabytes is not zeroed before it is written.
  static constexpr size_t kGrowSlack = 16 * 1024;
  __attribute__((noinline)) void Grow(size_t k) {
    size_t want = n_ + k;
    if (want > s_.capacity()) s_.reserve(std::max(want, 2 * s_.capacity()));
    s_.resize(std::min(s_.capacity(), want + kGrowSlack));
  }
  void StartFrame() {
    Byte(op::FRAME);
    frame_pos_ = n_;
    Le(0, 8);
  }
  void EndFrame() {
    uint64_t len = n_ - frame_pos_ - 8;
    for (int i = 0; i < 8; ++i) s_[frame_pos_ + i] = static_cast<char>((len >> (8 * i)) & 0xff);
  }

  std::string& s_;
  size_t n_;   // bytes written (s_ may be longer: room not yet used)
  bool framed_ = true;
  size_t frame_pos_ = 0;
  uint32_t memo_count_ = 0;
  uint32_t tag_memo_[static_cast<int>(Tag::kCount)] = {};
  struct RecentKey {
    std::string key;
    uint32_t memo = kNoMemo;
  };
  static constexpr size_t kRecentKeys = 64;
  static size_t RecentSlot(const char* p, size_t n) {
    size_t h = n * 31;
    if (n) h += static_cast<unsigned char>(p[0]) * 7 + static_cast<unsigned char>(p[n - 1]);
    if (n > 2) h += static_cast<unsigned char>(p[n / 2]) * 3;
    return h % kRecentKeys;
  }

  std::unordered_map<std::string, uint32_t> keys_;
  RecentKey recent_keys_[kRecentKeys];
  uint32_t last_key_memo_ = kNoMemo;
};

// The items of a list, dict or set (APPENDS, SETITEMS or ADDITEMS), written
// in batches as pickle writes them: MARK, at most kBatchSize items, then the
// closing opcode. An empty container has no batch. Map entries are one item.
class Batches {
 public:
  Batches(Emitter& out, unsigned char close) : out_(out), close_(close) {}
  // Before each item: opens a batch when none is open.
  void BeforeItem() {
    if (open_ == 0) out_.Mark();
  }
  // After each item: closes the batch once it is full; true when it did.
  bool AfterItem() {
    if (++open_ < kBatchSize) return false;
    out_.Byte(close_);
    open_ = 0;
    return true;
  }
  // After the last item: closes the open batch, if any.
  void Finish() {
    if (open_ == 0) return;
    out_.Byte(close_);
    open_ = 0;
  }

 private:
  Emitter& out_;
  unsigned char close_;
  uint32_t open_ = 0;   // items in the open batch
};

}  // namespace pickle
}  // namespace ivm

#endif  // IVM_PICKLE_H
