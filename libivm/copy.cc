// copy.cc — structured copies: JS values to the ivm copy format and back.
//
// The format is a subset of Python's pickle protocol 5 (docs/values.md lists
// the opcodes and the `ivm._copy` names it uses). It was chosen because the
// main host, Python, decodes it in C (pickle) at several times the speed of
// any per-node decoding, and it already has what a structured copy needs:
// shared references and cycles (the memo), exact doubles, arbitrary-precision
// integers without decimal conversion, byte strings and sets. Writer and
// reader here are libivm's own; the stream never contains anything JavaScript
// can choose besides length-prefixed data.
#include "copy.h"

#include "callback.h"
#include "reference.h"
#include "wrapper.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace ivm {

namespace op {
constexpr char MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', BININT = 'J',
               BININT1 = 'K', BININT2 = 'M', NONE = 'N', BINUNICODE = 'X', APPEND = 'a',
               GLOBAL = 'c', EMPTY_DICT = '}', APPENDS = 'e', BINGET = 'h', LONG_BINGET = 'j',
               EMPTY_LIST = ']', BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't',
               EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G', REDUCE = 'R',
               SHORT_BINBYTES = 'C', BINBYTES = 'B';
constexpr unsigned char PROTO = 0x80, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87,
                        NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b,
                        SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e,
                        EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91,
                        STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96;
}  // namespace op

// The `ivm._copy` names the stream may call (GLOBAL or STACK_GLOBAL + REDUCE).
enum class Tag { kNone, kUndefined, kBigInt, kMap, kRegExp, kDate, kView, kBuf, kAtt, kError, kSab };

namespace {

constexpr const char* kModule = "ivm._copy";
struct TagName {
  Tag tag;
  const char* name;
};
constexpr TagName kTags[] = {
    {Tag::kUndefined, "_undefined"}, {Tag::kBigInt, "JSBigInt"}, {Tag::kMap, "JSMap"},
    {Tag::kRegExp, "JSRegExp"},      {Tag::kDate, "_date"},      {Tag::kView, "_view"},
    {Tag::kBuf, "_buf"},             {Tag::kAtt, "_att"},        {Tag::kError, "_error"},
    {Tag::kSab, "_sab"},
};

// Typed array kinds as written in `_view` (docs/values.md).
enum ViewKind : int {
  kInt8 = 0, kUint8, kUint8Clamped, kInt16, kUint16, kInt32, kUint32, kFloat32, kFloat64,
  kBigInt64, kBigUint64, kDataView, kViewKinds
};
constexpr size_t kViewItemSize[kViewKinds] = {1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 1};

constexpr int kMaxDepth = 1000;
constexpr double kMaxSafe = 9007199254740991.0;
constexpr double kMinDateMs = -62135596800000.0;   // 0001-01-01T00:00:00Z
constexpr double kMaxDateMs = 253402300799999.0;   // 9999-12-31T23:59:59.999Z
constexpr uint32_t kMaxArrayLength = 1u << 26;
constexpr size_t kFrameSize = 64 * 1024;

std::atomic<uint64_t> g_copy_total{0};
std::atomic<uint64_t> g_copy_limit{1ull << 31};

const char* StandardErrorName(const std::string& name) {
  static const char* const kNames[] = {"Error",       "EvalError", "RangeError",
                                       "ReferenceError", "SyntaxError", "TypeError",
                                       "URIError",    "AggregateError"};
  for (const char* n : kNames) {
    if (name == n) return n;
  }
  return nullptr;
}

// RegExp flags as JavaScript writes them ("dgimsuy"; "l" for linear).
std::string RegExpFlags(int f) {
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

bool IsIdentifier(const std::string& s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    bool ok = c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

void AppendQuoted(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  out += '"';
}

}  // namespace

// ---------------------------------------------------------------------------
// Attachments, copies

size_t Attachment::ByteLength() const {
  if (kind == kBorrowed) return length;
  if (store) return store->ByteLength();
  return 0;
}

const void* Attachment::Data() const {
  if (kind == kBorrowed) return data;
  if (store) return store->Data();
  return nullptr;
}

size_t Serialized::ByteSize() const {
  size_t n = stream.size();
  for (const Attachment& a : attachments) {
    if (a.kind == Attachment::kCopy) {
      if (a.copy) n += a.copy->size();
    } else {
      n += a.ByteLength();
    }
  }
  return n;
}

CopyData::CopyData(Serialized s) : value_(std::move(s)) {
  size_ = value_.ByteSize();
  for (const Attachment& a : value_.attachments) {
    if (a.kind != Attachment::kCopy) byte_length_ += a.ByteLength();
  }
  g_copy_total.fetch_add(size_, std::memory_order_relaxed);
}

CopyData::~CopyData() {
  if (!consumed_.load()) g_copy_total.fetch_sub(size_, std::memory_order_relaxed);
}

bool CopyData::TakeForTransfer(Serialized* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (consumed_.load()) return false;
  *out = std::move(value_);
  value_ = Serialized();
  consumed_.store(true, std::memory_order_release);
  g_copy_total.fetch_sub(size_, std::memory_order_relaxed);
  return true;
}

std::string TwosComplement(bool negative, const uint64_t* words, size_t count) {
  std::string bytes;
  bytes.reserve(count * 8 + 1);
  for (size_t k = 0; k < count; ++k) {
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>(words[k] >> (8 * i)));
  }
  while (!bytes.empty() && bytes.back() == 0) bytes.pop_back();
  bytes.push_back(0);   // room for the sign bit
  if (negative) {
    unsigned carry = 1;
    for (char& c : bytes) {
      unsigned v = static_cast<unsigned char>(~static_cast<unsigned char>(c)) + carry;
      c = static_cast<char>(v);
      carry = v >> 8;
    }
  }
  // Trim redundant sign bytes.
  while (bytes.size() > 1) {
    auto last = static_cast<unsigned char>(bytes.back());
    auto prev = static_cast<unsigned char>(bytes[bytes.size() - 2]);
    if ((last == 0 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80))) {
      bytes.pop_back();
    } else {
      break;
    }
  }
  return bytes;
}

uint64_t CopyTotalSize() { return g_copy_total.load(std::memory_order_relaxed); }
uint64_t CopyLimit() { return g_copy_limit.load(std::memory_order_relaxed); }
uint64_t SetCopyLimit(uint64_t bytes) {
  return g_copy_limit.exchange(bytes ? bytes : (1ull << 31), std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------
// Writer: JS → stream

namespace {

class Writer {
 public:
  Writer(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
         const CallState& call, const WriteOptions& options, Serialized* out)
      : holder_(holder), isolate_(isolate), context_(context), call_(call),
        options_(options), out_(out), s_(out->stream), limit_(CopyLimit()) {}

  ivm_error_t* Run(v8::Local<v8::Value> value) {
    object_prototype_ = compat::GetPrototype(v8::Object::New(isolate_));
    s_.clear();
    s_.push_back(static_cast<char>(op::PROTO));
    s_.push_back(5);
    StartFrame();
    bool ok = Write(value, 0);
    if (ok) {
      EndFrame();
      s_.push_back(op::STOP);
    }
    ivm_error_t* err = error_;
    error_ = nullptr;
    if (!ok && err == nullptr) {
      // An exception (a getter threw, or the call was stopped): the caller's
      // TryCatch has it.
      return nullptr;
    }
    if (err) return err;
    // Detach only once the whole copy succeeded.
    for (auto& buf : to_detach_) buf.Get(isolate_)->Detach();
    return nullptr;
  }

  bool failed_with_exception() const { return exception_; }

  // The fast path: translates the output of V8's own ValueSerializer (which
  // walks objects much faster than the public API allows) into the copy
  // format. Returns false, with nothing kept, for anything it does not
  // handle exactly as Write() would (errors, host objects, shared or
  // resizable buffers, values Write() refuses, out-of-range dates): the
  // caller then runs the general writer, which also names the path.
  bool Translate(const uint8_t* data, size_t size) {
    v8_ = data;
    v8_end_ = data + size;
    s_.clear();
    out_->attachments.clear();
    s_.push_back(static_cast<char>(op::PROTO));
    s_.push_back(5);
    StartFrame();
    if (!V8Byte(0xFF) || !V8Varint(&version_) || version_ < 13 || version_ > 15) return false;
    if (!V8Value(nullptr)) return false;
    if (v8_ != v8_end_) return false;
    EndFrame();
    s_.push_back(op::STOP);
    return CheckSize() && error_ == nullptr;
  }

 private:
  // --- reading V8's format (little-endian varints, host-endian doubles)
  bool V8Byte(uint8_t expect) {
    if (v8_ >= v8_end_ || *v8_ != expect) return false;
    ++v8_;
    return true;
  }
  bool V8Varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (v8_ >= v8_end_) return false;
      uint8_t b = *v8_++;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  bool V8Varint32(uint32_t* out) {
    uint64_t v;
    if (!V8Varint(&v) || v > 0xffffffffu) return false;
    *out = static_cast<uint32_t>(v);
    return true;
  }
  bool V8Double(double* out) {
    if (v8_end_ - v8_ < 8) return false;
    std::memcpy(out, v8_, 8);
    v8_ += 8;
    return true;
  }
  void Number(double d) {
    if (d >= -kMaxSafe && d <= kMaxSafe && d == std::floor(d) && !(d == 0 && std::signbit(d))) {
      Int(static_cast<int64_t>(d));
    } else {
      Float(d);
    }
  }
  // A string's WTF-8 form in scratch_; false on bad data.
  bool V8String(uint8_t tag) {
    uint32_t n;
    if (!V8Varint32(&n) || static_cast<size_t>(v8_end_ - v8_) < n) return false;
    scratch_.clear();
    if (tag == '"') {   // Latin-1
      scratch_.reserve(n);
      for (uint32_t i = 0; i < n; ++i) {
        uint8_t c = v8_[i];
        if (c < 0x80) {
          scratch_.push_back(static_cast<char>(c));
        } else {
          scratch_.push_back(static_cast<char>(0xC0 | (c >> 6)));
          scratch_.push_back(static_cast<char>(0x80 | (c & 0x3F)));
        }
      }
    } else if (tag == 'c') {   // UTF-16, host order
      if (n % 2) return false;
      for (uint32_t i = 0; i < n; i += 2) {
        uint32_t u;
        uint16_t unit;
        std::memcpy(&unit, v8_ + i, 2);
        u = unit;
        if (u >= 0xD800 && u < 0xDC00 && i + 2 < n) {
          uint16_t next;
          std::memcpy(&next, v8_ + i + 2, 2);
          if (next >= 0xDC00 && next < 0xE000) {
            u = 0x10000 + ((u - 0xD800) << 10) + (next - 0xDC00);
            i += 2;
          }
        }
        if (u < 0x80) {
          scratch_.push_back(static_cast<char>(u));
        } else if (u < 0x800) {
          scratch_.push_back(static_cast<char>(0xC0 | (u >> 6)));
          scratch_.push_back(static_cast<char>(0x80 | (u & 0x3F)));
        } else if (u < 0x10000) {   // lone surrogates included (WTF-8)
          scratch_.push_back(static_cast<char>(0xE0 | (u >> 12)));
          scratch_.push_back(static_cast<char>(0x80 | ((u >> 6) & 0x3F)));
          scratch_.push_back(static_cast<char>(0x80 | (u & 0x3F)));
        } else {
          scratch_.push_back(static_cast<char>(0xF0 | (u >> 18)));
          scratch_.push_back(static_cast<char>(0x80 | ((u >> 12) & 0x3F)));
          scratch_.push_back(static_cast<char>(0x80 | ((u >> 6) & 0x3F)));
          scratch_.push_back(static_cast<char>(0x80 | (u & 0x3F)));
        }
      }
    } else {   // 'S': UTF-8
      scratch_.assign(reinterpret_cast<const char*>(v8_), n);
    }
    v8_ += n;
    return true;
  }
  // A property key as a Python str (numbers become their decimal form).
  bool V8Key() {
    if (v8_ >= v8_end_) return false;
    uint8_t tag = *v8_++;
    while (tag == 0 && v8_ < v8_end_) tag = *v8_++;   // padding
    if (tag == '"' || tag == 'c' || tag == 'S') {
      if (!V8String(tag)) return false;
    } else if (tag == 'I' || tag == 'U') {
      uint64_t v;
      if (!V8Varint(&v)) return false;
      int64_t n = tag == 'I' ? static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1)) : static_cast<int64_t>(v);
      scratch_ = std::to_string(n);
    } else if (tag == 'N') {
      double d;
      if (!V8Double(&d) || d != std::floor(d) || d < 0 || d > 4294967295.0) return false;
      scratch_ = std::to_string(static_cast<uint64_t>(d));
    } else {
      return false;
    }
    if (scratch_.size() <= 64) {
      auto it = keys_.find(scratch_);
      if (it != keys_.end()) {
        Get(it->second);
        return true;
      }
      Text(scratch_.data(), scratch_.size());
      keys_.emplace(scratch_, memo_count_);
      Memoize();
      return true;
    }
    Text(scratch_.data(), scratch_.size());
    return true;
  }
  // An object id of V8's stream (assigned in order) for the memo entry just
  // written.
  void V8Id() { ids_.push_back(memo_count_); }
  // Reads one value and writes it. `canon` (for Map and Set keys) receives
  // the Python-equality class of a primitive, or stays empty for objects.
  bool V8Value(std::string* canon) {
    // Containers nest through here: the same depth limit as Write().
    struct Depth {
      int& d;
      explicit Depth(int& depth) : d(depth) { ++d; }
      ~Depth() { --d; }
    } depth(v8_depth_);
    if (v8_depth_ > kMaxDepth) return false;
    if (++steps_ % 4096 == 0 && (Stopped() || !CheckSize())) return false;
    MaybeFrame();
    uint8_t tag;
    do {
      if (v8_ >= v8_end_) return false;
      tag = *v8_++;
    } while (tag == 0);   // padding
    auto set_canon = [&](std::string c) {
      if (canon) *canon = std::move(c);
    };
    switch (tag) {
      case '_': Tag(Tag::kUndefined); Byte(op::EMPTY_TUPLE); Byte(op::REDUCE); set_canon("u"); return true;
      case '-': Tag(Tag::kUndefined); Byte(op::EMPTY_TUPLE); Byte(op::REDUCE); set_canon("u"); return true;
      case '0': Byte(op::NONE); set_canon("z"); return true;
      case 'T': Byte(op::NEWTRUE); set_canon("n1"); return true;
      case 'F': Byte(op::NEWFALSE); set_canon("n0"); return true;
      case 'I': case 'U': {
        uint64_t v;
        if (!V8Varint(&v)) return false;
        int64_t n = tag == 'I' ? static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1)) : static_cast<int64_t>(v);
        Int(n);
        set_canon("n" + std::to_string(n));
        return true;
      }
      case 'N': {
        double d;
        if (!V8Double(&d)) return false;
        Number(d);
        if (canon) {
          if (std::isnan(d) || d != std::floor(d) || std::fabs(d) >= 9.2e18) return false;   // rare: general path
          set_canon("n" + std::to_string(static_cast<int64_t>(d)));
        }
        return true;
      }
      case '"': case 'c': case 'S':
        if (!V8String(tag)) return false;
        Text(scratch_.data(), scratch_.size());
        if (canon) set_canon("s" + scratch_);
        return CheckSize();
      case 'Z': {
        if (canon) return false;   // BigInt keys: general path
        uint64_t bitfield;
        if (!V8Varint(&bitfield)) return false;
        size_t bytes = static_cast<size_t>((bitfield >> 1) & 0x3fffffff);
        bool negative = bitfield & 1;
        if (static_cast<size_t>(v8_end_ - v8_) < bytes || bytes % 8) return false;
        std::vector<uint64_t> words(bytes / 8);
        if (bytes) std::memcpy(words.data(), v8_, bytes);
        v8_ += bytes;
        v8::Local<v8::BigInt> big;
        int sign = negative ? 1 : 0;
        if (!v8::BigInt::NewFromWords(context_, sign, static_cast<int>(words.size()), words.data())
                 .ToLocal(&big)) {
          return false;
        }
        Tag(Tag::kBigInt);
        BigIntWords(big);
        Byte(op::TUPLE1);
        Byte(op::REDUCE);
        return true;
      }
      case '^': {
        uint32_t id;
        if (!V8Varint32(&id) || id >= ids_.size() || canon) return false;
        if (ids_[id] == kNoMemo) return false;
        Get(ids_[id]);
        if (v8_ < v8_end_ && *v8_ == 'V') return V8View(ids_[id]);
        return true;
      }
      case 'o': {
        if (canon) return false;
        Byte(op::EMPTY_DICT);
        V8Id();
        Memoize();
        uint32_t count = 0;
        for (;;) {
          if (v8_ >= v8_end_) return false;
          if (*v8_ == '{') {
            ++v8_;
            uint32_t n;
            if (!V8Varint32(&n)) return false;
            if (count % 1000 != 0) Byte(op::SETITEMS);
            return true;
          }
          if (count % 1000 == 0) Byte(op::MARK);
          if (!V8Key() || !V8Value(nullptr)) return false;
          if (++count % 1000 == 0) Byte(op::SETITEMS);
        }
      }
      case 'A': case 'a': {
        if (canon) return false;
        uint32_t length;
        if (!V8Varint32(&length) || length > kMaxArrayLength) return false;
        Byte(op::EMPTY_LIST);
        V8Id();
        Memoize();
        uint32_t written = 0;
        auto fill_to = [&](uint32_t end) {
          while (written < end) {
            if (written % 1000 == 0) Byte(op::MARK);
            Tag(Tag::kUndefined);
            Byte(op::EMPTY_TUPLE);
            Byte(op::REDUCE);
            if (++written % 1000 == 0) Byte(op::APPENDS);
          }
        };
        if (tag == 'A') {
          for (uint32_t i = 0; i < length; ++i) {
            if (written % 1000 == 0) Byte(op::MARK);
            if (!V8Value(nullptr)) return false;
            if (++written % 1000 == 0) Byte(op::APPENDS);
          }
        }
        const uint8_t end_tag = tag == 'A' ? '$' : '@';
        for (;;) {
          if (v8_ >= v8_end_) return false;
          if (*v8_ == end_tag) {
            ++v8_;
            uint32_t n, len2;
            if (!V8Varint32(&n) || !V8Varint32(&len2)) return false;
            fill_to(length);
            if (written % 1000 != 0) Byte(op::APPENDS);
            return true;
          }
          // A key: an index (sparse arrays) or a named property (dropped,
          // as Write() drops it; its value is still read and discarded).
          uint8_t kt = *v8_;
          int64_t index = -1;
          if (kt == 'I' || kt == 'U') {
            ++v8_;
            uint64_t v;
            if (!V8Varint(&v)) return false;
            index = kt == 'I' ? static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1)) : static_cast<int64_t>(v);
          } else if (kt == 'N') {
            ++v8_;
            double d;
            if (!V8Double(&d)) return false;
            if (d == std::floor(d) && d >= 0 && d < 4294967295.0) index = static_cast<int64_t>(d);
          } else {
            ++v8_;
            if (!V8String(kt)) return false;
          }
          if (tag == 'a' && index >= 0 && index < length) {
            if (index < written) return false;   // out of order: the general path
            fill_to(static_cast<uint32_t>(index));
            if (written % 1000 == 0) Byte(op::MARK);
            if (!V8Value(nullptr)) return false;
            if (++written % 1000 == 0) Byte(op::APPENDS);
          } else {
            if (!V8Value(nullptr)) return false;
            Byte(op::POP);   // inside an open batch too: it pops the value alone
          }
        }
      }
      case 'D': {
        if (canon) return false;
        double ms;
        if (!V8Double(&ms) || std::isnan(ms) || ms < kMinDateMs || ms > kMaxDateMs) return false;
        Tag(Tag::kDate);
        Float(ms);
        Byte(op::TUPLE1);
        Byte(op::REDUCE);
        V8Id();
        Memoize();
        return true;
      }
      case 'y': case 'x': case 'n': case 's': case 'z':
        return false;   // boxed primitives: rare, general path
      case 'R': {
        if (canon) return false;
        Tag(Tag::kRegExp);
        uint8_t st;
        do {
          if (v8_ >= v8_end_) return false;
          st = *v8_++;
        } while (st == 0);
        if (st != '"' && st != 'c' && st != 'S') return false;
        if (!V8String(st)) return false;
        Text(scratch_.data(), scratch_.size());
        uint32_t f;
        if (!V8Varint32(&f)) return false;
        if (f & ~0xffu) return false;
        std::string flags = RegExpFlags(static_cast<int>(f));
        Text(flags.data(), flags.size());
        Byte(op::TUPLE2);
        Byte(op::REDUCE);
        V8Id();
        Memoize();
        return true;
      }
      case ';': case '\'': {
        if (canon) return false;
        bool is_map = tag == ';';
        if (is_map) {
          Tag(Tag::kMap);
          Byte(op::EMPTY_TUPLE);
          Byte(op::REDUCE);
        } else {
          Byte(op::EMPTY_SET);
        }
        V8Id();
        Memoize();
        std::unordered_set<std::string> seen;
        uint32_t count = 0;
        const uint8_t end_tag = is_map ? ':' : ',';
        for (;;) {
          if (v8_ >= v8_end_) return false;
          if (*v8_ == end_tag) {
            ++v8_;
            uint32_t n;
            if (!V8Varint32(&n)) return false;
            if (count % 1000 != 0) Byte(is_map ? op::SETITEMS : op::ADDITEMS);
            return true;
          }
          if (count % 1000 == 0) Byte(op::MARK);
          std::string key_canon;
          if (!V8Value(&key_canon) || key_canon.empty() || !seen.insert(key_canon).second) return false;
          if (is_map && !V8Value(nullptr)) return false;
          if (++count % 1000 == 0) Byte(is_map ? op::SETITEMS : op::ADDITEMS);
        }
      }
      case 'B': {
        if (canon) return false;
        uint32_t n;
        if (!V8Varint32(&n) || static_cast<size_t>(v8_end_ - v8_) < n) return false;
        attached_bytes_ += n;
        if (!CheckSize()) return false;
        void* data = n ? AllocateMemory(n, false) : nullptr;
        if (n && data == nullptr) return false;
        if (n) std::memcpy(data, v8_, n);
        v8_ += n;
        Attachment a;
        a.kind = Attachment::kBuffer;
        a.store = v8::ArrayBuffer::NewBackingStore(
            data, n, [](void* p, size_t len, void*) { FreeMemory(p, len); }, nullptr);
        a.moved = true;
        uint32_t index = static_cast<uint32_t>(out_->attachments.size());
        out_->attachments.push_back(std::move(a));
        Tag(Tag::kBuf);
        Int(index);
        Byte(op::TUPLE1);
        Byte(op::REDUCE);
        V8Id();
        uint32_t memo = memo_count_;
        Memoize();
        if (v8_ < v8_end_ && *v8_ == 'V') return V8View(memo);
        return true;
      }
      default:
        return false;   // errors, host objects, shared/transferred/resizable buffers, wasm
    }
  }
  // An ArrayBufferView following its buffer (memo entry `buffer`), which
  // is on the stack: replaced by _view(buffer, kind, offset, length).
  bool V8View(uint32_t buffer) {
    ++v8_;   // 'V'
    if (v8_ >= v8_end_) return false;
    uint8_t sub = *v8_++;
    uint32_t offset, length, flags = 0;
    if (!V8Varint32(&offset) || !V8Varint32(&length)) return false;
    if (version_ >= 14 && !V8Varint32(&flags)) return false;
    if (flags != 0) return false;   // length-tracking or resizable-backed views
    int kind;
    switch (sub) {
      case 'b': kind = kInt8; break;
      case 'B': kind = kUint8; break;
      case 'C': kind = kUint8Clamped; break;
      case 'w': kind = kInt16; break;
      case 'W': kind = kUint16; break;
      case 'd': kind = kInt32; break;
      case 'D': kind = kUint32; break;
      case 'f': kind = kFloat32; break;
      case 'F': kind = kFloat64; break;
      case 'q': kind = kBigInt64; break;
      case 'Q': kind = kBigUint64; break;
      case '?': kind = kDataView; break;
      default: return false;
    }
    Byte(op::POP);
    Tag(Tag::kView);
    Byte(op::MARK);
    Get(buffer);
    Int(kind);
    Int(offset);
    Int(length / kViewItemSize[kind]);
    Byte(op::TUPLE);
    Byte(op::REDUCE);
    V8Id();
    Memoize();
    return true;
  }

  // --- output helpers
  void Byte(unsigned char c) { s_.push_back(static_cast<char>(c)); }
  template <class T>
  void Le(T v, int n) {
    for (int i = 0; i < n; ++i) s_.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
  }
  void StartFrame() {
    Byte(op::FRAME);
    frame_pos_ = s_.size();
    Le<uint64_t>(0, 8);
  }
  void EndFrame() {
    uint64_t len = s_.size() - frame_pos_ - 8;
    for (int i = 0; i < 8; ++i) s_[frame_pos_ + i] = static_cast<char>((len >> (8 * i)) & 0xff);
  }
  // At an opcode boundary: start a new frame when this one is full.
  void MaybeFrame() {
    if (s_.size() - frame_pos_ > kFrameSize) {
      EndFrame();
      StartFrame();
    }
  }
  void Memoize() {
    Byte(op::MEMOIZE);
    ++memo_count_;
  }
  void Get(uint32_t index) {
    if (index < 256) {
      Byte(op::BINGET);
      Byte(static_cast<unsigned char>(index));
    } else {
      Byte(op::LONG_BINGET);
      Le(index, 4);
    }
  }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      Byte(op::BININT1);
      Byte(static_cast<unsigned char>(v));
    } else if (v >= 0 && v < 65536) {
      Byte(op::BININT2);
      Le(v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Byte(op::BININT);
      Le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      Byte(op::LONG1);
      Byte(8);
      Le(static_cast<uint64_t>(v), 8);
    }
  }
  void Float(double d) {
    Byte(op::BINFLOAT);
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    for (int i = 7; i >= 0; --i) s_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  void Text(const char* p, size_t n) {
    if (n < 256) {
      Byte(op::SHORT_BINUNICODE);
      Byte(static_cast<unsigned char>(n));
    } else if (n <= 0xffffffffu) {
      Byte(op::BINUNICODE);
      Le(n, 4);
    } else {
      Byte(op::BINUNICODE8);
      Le(n, 8);
    }
    s_.append(p, n);
  }
  void String(v8::Local<v8::String> str) {
    scratch_.clear();
    compat::AppendWtf8(isolate_, str, scratch_);
    Text(scratch_.data(), scratch_.size());
  }
  // A property key: short keys are memoized by content, so a key repeated
  // across many objects is one Python string.
  void Key(v8::Local<v8::String> key) {
    // Property names are usually internalized: the same key is the same
    // string object, found here without reading it.
    for (const RecentKey& k : recent_keys_) {
      if (k.key == key) {
        Get(k.index);
        return;
      }
    }
    scratch_.clear();
    compat::AppendWtf8(isolate_, key, scratch_);
    if (scratch_.size() <= 64) {
      auto it = keys_.find(scratch_);
      if (it != keys_.end()) {
        Get(it->second);
        return;
      }
      Text(scratch_.data(), scratch_.size());
      keys_.emplace(scratch_, memo_count_);
      if (recent_keys_.size() < 32) {
        recent_keys_.emplace_back();
        recent_keys_.back().key.Reset(isolate_, key);
        recent_keys_.back().index = memo_count_;
      }
      Memoize();
      return;
    }
    Text(scratch_.data(), scratch_.size());
  }
  void Tag(enum Tag tag) {
    uint32_t& slot = tag_memo_[static_cast<int>(tag)];
    if (slot != 0) {
      Get(slot - 1);
      return;
    }
    const char* name = nullptr;
    for (const TagName& t : kTags) {
      if (t.tag == tag) name = t.name;
    }
    Byte(op::GLOBAL);
    s_ += kModule;
    s_ += '\n';
    s_ += name;
    s_ += '\n';
    slot = memo_count_ + 1;
    Memoize();
  }
  void BigIntWords(v8::Local<v8::BigInt> big) {
    int count = big->WordCount();
    int sign = 0;
    std::vector<uint64_t> words(static_cast<size_t>(count));
    big->ToWordsArray(&sign, &count, words.data());
    std::string bytes = TwosComplement(sign != 0, words.data(), static_cast<size_t>(count));
    if (bytes.size() < 256) {
      Byte(op::LONG1);
      Byte(static_cast<unsigned char>(bytes.size()));
    } else {
      Byte(op::LONG4);
      Le(bytes.size(), 4);
    }
    s_ += bytes;
  }

  // --- errors
  std::string Path() const {
    std::string p = "$";
    size_t start = path_.size() > 40 ? path_.size() - 40 : 0;
    if (start > 0) p += "…";
    for (size_t i = start; i < path_.size(); ++i) p += path_[i];
    return p;
  }
  bool Refuse(const std::string& what, const std::string& why = "") {
    if (error_ == nullptr) {
      std::string msg = what + " at " + Path() + " cannot be copied";
      if (!why.empty()) msg += ": " + why;
      error_ = MakeError(IVM_ERROR_TRANSFER, msg);
    }
    return false;
  }
  bool Stopped() {
    if (holder_.Stopped(call_) || isolate_->IsExecutionTerminating()) {
      exception_ = true;
      return true;
    }
    return false;
  }
  bool CheckSize() {
    if (s_.size() + attached_bytes_ > limit_) {
      if (error_ == nullptr) {
        error_ = MakeError(IVM_ERROR_TRANSFER,
                           "the copy is larger than the copy size limit (" +
                               std::to_string(limit_) + " bytes; ivm_set_copy_limit)");
      }
      return false;
    }
    return true;
  }
  struct PathScope {
    Writer& w;
    PathScope(Writer& writer, std::string seg) : w(writer) { w.path_.push_back(std::move(seg)); }
    ~PathScope() { w.path_.pop_back(); }
  };
  std::string KeySegment(v8::Local<v8::Value> key) {
    std::string k;
    if (key->IsString()) {
      compat::AppendWtf8(isolate_, key.As<v8::String>(), k);
    } else {
      v8::Local<v8::String> str;
      if (key->ToString(context_).ToLocal(&str)) compat::AppendWtf8(isolate_, str, k);
    }
    if (k.size() > 40) k = k.substr(0, 40) + "…";
    if (IsIdentifier(k)) return "." + k;
    std::string seg = "[";
    AppendQuoted(seg, k);
    return seg + "]";
  }

  // --- memo of objects (identity)
  bool Recall(v8::Local<v8::Object> obj) {
    int hash = obj->GetIdentityHash();
    auto range = memo_.equal_range(hash);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second.object == obj) {
        Get(it->second.index);
        return true;
      }
    }
    return false;
  }
  void Remember(v8::Local<v8::Object> obj) {
    MemoEntry& e = memo_.emplace(obj->GetIdentityHash(), MemoEntry())->second;
    e.object.Reset(isolate_, obj);
    e.index = memo_count_;
    Memoize();
  }

  // --- values
  bool Write(v8::Local<v8::Value> v, int depth) {
    MaybeFrame();
    if (v->IsString()) {
      String(v.As<v8::String>());
      return CheckSize();
    }
    if (v->IsNumber()) {
      Number(v.As<v8::Number>()->Value());
      return true;
    }
    if (v->IsBoolean()) {
      Byte(v->IsTrue() ? op::NEWTRUE : op::NEWFALSE);
      return true;
    }
    if (v->IsNull()) {
      Byte(op::NONE);
      return true;
    }
    if (v->IsUndefined()) {
      Tag(Tag::kUndefined);
      Byte(op::EMPTY_TUPLE);
      Byte(op::REDUCE);
      return true;
    }
    if (v->IsBigInt()) {
      Tag(Tag::kBigInt);
      BigIntWords(v.As<v8::BigInt>());
      Byte(op::TUPLE1);
      Byte(op::REDUCE);
      return CheckSize();
    }
    if (v->IsSymbol()) return Refuse("a Symbol");
    if (!v->IsObject()) return Refuse("a value of type " + DescribeType(isolate_, v));
    if (depth >= kMaxDepth) {
      return Refuse("a value", "nested more than " + std::to_string(kMaxDepth) + " levels deep");
    }
    if (Stopped()) return false;
    v8::Local<v8::Object> obj = v.As<v8::Object>();
    if (obj->IsProxy()) return Refuse("a Proxy");
    if (Recall(obj)) return true;
    v8::HandleScope scope(isolate_);
    if (obj->IsArray()) return WriteArray(obj.As<v8::Array>(), depth);
    if (obj->IsFunction()) return Refuse("a function");
    if (obj->IsArrayBuffer()) return WriteBuffer(obj.As<v8::ArrayBuffer>());
    if (obj->IsSharedArrayBuffer()) return WriteSharedBuffer(obj.As<v8::SharedArrayBuffer>());
    if (obj->IsArrayBufferView()) return WriteView(obj.As<v8::ArrayBufferView>(), depth);
    if (obj->IsDate()) return WriteDate(obj.As<v8::Date>());
    if (obj->IsRegExp()) {
      v8::Local<v8::RegExp> re = obj.As<v8::RegExp>();
      Tag(Tag::kRegExp);
      String(re->GetSource());
      std::string flags = RegExpFlags(re->GetFlags());
      Text(flags.data(), flags.size());
      Byte(op::TUPLE2);
      Byte(op::REDUCE);
      Remember(obj);
      return true;
    }
    if (obj->IsMap()) return WriteMap(obj.As<v8::Map>(), depth);
    if (obj->IsSet()) return WriteSet(obj.As<v8::Set>(), depth);
    if (obj->IsNumberObject()) return Write(v8::Number::New(isolate_, obj.As<v8::NumberObject>()->ValueOf()), depth);
    if (obj->IsStringObject()) return Write(obj.As<v8::StringObject>()->ValueOf(), depth);
    if (obj->IsBooleanObject()) return Write(v8::Boolean::New(isolate_, obj.As<v8::BooleanObject>()->ValueOf()), depth);
    if (obj->IsBigIntObject()) return Write(obj.As<v8::BigIntObject>()->ValueOf(), depth);
    if (obj->IsSymbolObject()) return Refuse("a Symbol object");
    if (obj->IsPromise()) return Refuse("a Promise", "await it with the promise option");
    if (obj->IsWeakMap() || obj->IsWeakSet()) return Refuse("a " + DescribeType(isolate_, obj));
    if (obj->IsWasmModuleObject()) return Refuse("a WebAssembly.Module");
    if (obj->IsWasmMemoryObject()) return Refuse("a WebAssembly.Memory");
    if (obj->IsModuleNamespaceObject()) return Refuse("a module namespace object");
    if (obj->IsMapIterator() || obj->IsSetIterator() || obj->IsGeneratorObject()) {
      return Refuse("an iterator");
    }
    if (IsWrapper(obj)) {
      Attachment a;
      if (!WrappedAttachment(holder_, isolate_, context_, obj, &a)) {
        return Refuse("a released Reference or ExternalCopy");
      }
      uint32_t index = static_cast<uint32_t>(out_->attachments.size());
      out_->attachments.push_back(std::move(a));
      Tag(Tag::kAtt);
      Int(index);
      Byte(op::TUPLE1);
      Byte(op::REDUCE);
      Remember(obj);
      return true;
    }
    if (obj->IsExternal() || obj->InternalFieldCount() > 0) {
      return Refuse("a host object (" + DescribeType(isolate_, obj) + ")");
    }
    if (obj->IsNativeError()) {
      std::string ctor;
      compat::AppendWtf8(isolate_, obj->GetConstructorName(), ctor);
      if (StandardErrorName(ctor)) return WriteError(obj, ctor);
    }
    if (IsIterator(obj)) return Refuse("an iterator");
    return WriteObject(obj, depth);
  }

  // Built-in iterators (of arrays, strings, regular expression matches) are
  // plain objects to the API; their prototypes name them. Only objects whose
  // prototype is not Object.prototype are checked.
  bool IsIterator(v8::Local<v8::Object> obj) {
    v8::Local<v8::Value> proto = compat::GetPrototype(obj);
    if (!proto->IsObject()) return false;
    if (proto == object_prototype_) return false;
    v8::Local<v8::Value> tag_proto = compat::GetPrototype(proto.As<v8::Object>());
    if (!tag_proto->IsObject()) return false;
    v8::Local<v8::Value> tag;
    v8::Local<v8::Symbol> to_string_tag = v8::Symbol::GetToStringTag(isolate_);
    v8::Local<v8::Object> p = proto.As<v8::Object>();
    bool own = false;
    if (!p->HasOwnProperty(context_, to_string_tag).To(&own) || !own) return false;
    v8::Local<v8::Value> desc;
    if (!p->GetOwnPropertyDescriptor(context_, to_string_tag).ToLocal(&desc) || !desc->IsObject()) {
      return false;
    }
    v8::Local<v8::Value> value;
    if (!desc.As<v8::Object>()
             ->Get(context_, v8::String::NewFromUtf8Literal(isolate_, "value"))
             .ToLocal(&value) ||
        !value->IsString()) {
      return false;
    }
    std::string name;
    compat::AppendWtf8(isolate_, value.As<v8::String>(), name);
    auto ends_with = [&](const char* suffix) {
      size_t n = std::strlen(suffix);
      return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
    };
    return ends_with(" Iterator") || ends_with("Generator");
  }

  bool WriteArray(v8::Local<v8::Array> array, int depth) {
    uint32_t length = array->Length();
    if (length > kMaxArrayLength) {
      return Refuse("an Array of length " + std::to_string(length),
                    "longer than " + std::to_string(kMaxArrayLength) + " elements");
    }
    Byte(op::EMPTY_LIST);
    Remember(array);
    if (length == 0) return true;
    for (uint32_t start = 0; start < length; start += 1000) {
      v8::HandleScope scope(isolate_);
      uint32_t end = std::min(length, start + 1000);
      Byte(op::MARK);
      for (uint32_t i = start; i < end; ++i) {
        v8::Local<v8::Value> item;
        if (!array->Get(context_, i).ToLocal(&item)) {
          exception_ = true;
          return false;
        }
        if (item->IsObject() || item->IsSymbol()) {
          PathScope ps(*this, "[" + std::to_string(i) + "]");
          if (!Write(item, depth + 1)) return false;
        } else if (!Write(item, depth + 1)) {
          PathScope ps(*this, "[" + std::to_string(i) + "]");
          return Refuse("a value");
        }
      }
      Byte(op::APPENDS);
      if (!CheckSize() || Stopped()) return false;
    }
    return true;
  }

  bool WriteObject(v8::Local<v8::Object> obj, int depth) {
    v8::Local<v8::Array> keys;
    if (!obj->GetOwnPropertyNames(context_,
                                  static_cast<v8::PropertyFilter>(v8::ONLY_ENUMERABLE |
                                                                  v8::SKIP_SYMBOLS),
                                  v8::KeyConversionMode::kConvertToString)
             .ToLocal(&keys)) {
      exception_ = true;
      return false;
    }
    Byte(op::EMPTY_DICT);
    Remember(obj);
    uint32_t n = keys->Length();
    for (uint32_t start = 0; start < n; start += 1000) {
      v8::HandleScope scope(isolate_);
      uint32_t end = std::min(n, start + 1000);
      Byte(op::MARK);
      for (uint32_t i = start; i < end; ++i) {
        v8::Local<v8::Value> key, value;
        if (!keys->Get(context_, i).ToLocal(&key) || !obj->Get(context_, key).ToLocal(&value)) {
          exception_ = true;
          return false;
        }
        if (!key->IsString()) {
          v8::Local<v8::String> str;
          if (!key->ToString(context_).ToLocal(&str)) {
            exception_ = true;
            return false;
          }
          key = str;
        }
        Key(key.As<v8::String>());
        if (value->IsObject() || value->IsSymbol()) {
          PathScope ps(*this, KeySegment(key));
          if (!Write(value, depth + 1)) return false;
        } else if (!Write(value, depth + 1)) {
          return false;
        }
      }
      Byte(op::SETITEMS);
      if (!CheckSize() || Stopped()) return false;
    }
    return true;
  }

  // Map and Set keys must stay distinct and hashable in Python: primitives
  // only, and no two that Python considers equal (1 and true, 2**53 and
  // 2n**53n).
  bool CheckKey(v8::Local<v8::Value> key, std::unordered_set<std::string>& seen,
                const std::string& what) {
    std::string canon;
    if (key->IsString()) {
      canon = "s";
      compat::AppendWtf8(isolate_, key.As<v8::String>(), canon);
    } else if (key->IsNumber() || key->IsBoolean()) {
      double d = key->IsBoolean() ? (key->IsTrue() ? 1 : 0) : key.As<v8::Number>()->Value();
      if (d == std::floor(d) && std::isfinite(d)) {
        if (std::fabs(d) < 9.2e18) {
          canon = "n" + std::to_string(static_cast<int64_t>(d));
        } else {
          char buf[64];
          std::snprintf(buf, sizeof buf, "n%.0f", d);
          canon = buf;
        }
      } else {
        char buf[64];
        std::snprintf(buf, sizeof buf, "f%.17g", d);
        canon = buf;
      }
    } else if (key->IsBigInt()) {
      v8::Local<v8::BigInt> big = key.As<v8::BigInt>();
      bool lossless = false;
      int64_t i64 = big->Int64Value(&lossless);
      if (lossless) {
        canon = "n" + std::to_string(i64);
      } else {
        v8::Local<v8::String> str;
        if (!big->ToString(context_).ToLocal(&str)) {
          exception_ = true;
          return false;
        }
        canon = "n";
        compat::AppendWtf8(isolate_, str, canon);
      }
    } else if (key->IsUndefined()) {
      canon = "u";
    } else if (key->IsNull()) {
      canon = "z";
    } else {
      return Refuse("a " + what + " key of type " + DescribeType(isolate_, key),
                    "Python keys must be hashable primitives");
    }
    if (!seen.insert(canon).second) {
      return Refuse("a " + what, "two of its keys are equal in Python (e.g. 1 and true)");
    }
    return true;
  }

  bool WriteMap(v8::Local<v8::Map> map, int depth) {
    v8::Local<v8::Array> entries = map->AsArray();
    Tag(Tag::kMap);
    Byte(op::EMPTY_TUPLE);
    Byte(op::REDUCE);
    Remember(map);
    uint32_t n = entries->Length();
    std::unordered_set<std::string> seen;
    for (uint32_t start = 0; start < n; start += 2000) {
      v8::HandleScope scope(isolate_);
      uint32_t end = std::min(n, start + 2000);
      Byte(op::MARK);
      for (uint32_t i = start; i + 1 < end; i += 2) {
        v8::Local<v8::Value> key, value;
        if (!entries->Get(context_, i).ToLocal(&key) ||
            !entries->Get(context_, i + 1).ToLocal(&value)) {
          exception_ = true;
          return false;
        }
        if (!CheckKey(key, seen, "Map")) return false;
        if (!Write(key, depth + 1)) return false;
        PathScope ps(*this, ".get(" + KeyText(key) + ")");
        if (!Write(value, depth + 1)) return false;
      }
      Byte(op::SETITEMS);
      if (!CheckSize() || Stopped()) return false;
    }
    return true;
  }

  std::string KeyText(v8::Local<v8::Value> key) {
    std::string k;
    v8::Local<v8::String> str;
    if (key->IsString()) {
      AppendQuoted(k, [&] {
        std::string t;
        compat::AppendWtf8(isolate_, key.As<v8::String>(), t);
        return t.size() > 40 ? t.substr(0, 40) + "…" : t;
      }());
    } else if (key->ToString(context_).ToLocal(&str)) {
      compat::AppendWtf8(isolate_, str, k);
    }
    return k;
  }

  bool WriteSet(v8::Local<v8::Set> set, int depth) {
    v8::Local<v8::Array> items = set->AsArray();
    Byte(op::EMPTY_SET);
    Remember(set);
    uint32_t n = items->Length();
    std::unordered_set<std::string> seen;
    for (uint32_t start = 0; start < n; start += 1000) {
      v8::HandleScope scope(isolate_);
      uint32_t end = std::min(n, start + 1000);
      Byte(op::MARK);
      for (uint32_t i = start; i < end; ++i) {
        v8::Local<v8::Value> item;
        if (!items->Get(context_, i).ToLocal(&item)) {
          exception_ = true;
          return false;
        }
        if (!CheckKey(item, seen, "Set")) return false;
        if (!Write(item, depth + 1)) return false;
      }
      Byte(op::ADDITEMS);
      if (!CheckSize() || Stopped()) return false;
    }
    return true;
  }

  bool WriteDate(v8::Local<v8::Date> date) {
    double ms = date->ValueOf();
    if (std::isnan(ms)) return Refuse("an invalid Date");
    if (ms < kMinDateMs || ms > kMaxDateMs) {
      return Refuse("a Date", "outside the years 1 to 9999 that Python's datetime supports");
    }
    Tag(Tag::kDate);
    Float(ms);
    Byte(op::TUPLE1);
    Byte(op::REDUCE);
    Remember(date);
    return true;
  }

  bool WriteError(v8::Local<v8::Object> error, const std::string& name) {
    // Read as data, without running JavaScript (getters, Proxies, or a
    // prepareStackTrace hook never run here).
    auto own_string = [&](const char* key) -> std::string {
      std::string out;
      v8::Local<v8::String> k = v8::String::NewFromUtf8(isolate_, key).ToLocalChecked();
      v8::Local<v8::Value> desc;
      v8::TryCatch tc(isolate_);
      if (error->GetOwnPropertyDescriptor(context_, k).ToLocal(&desc) && desc->IsObject()) {
        v8::Local<v8::Value> value;
        v8::Local<v8::Object> d = desc.As<v8::Object>();
        v8::Local<v8::String> vk = v8::String::NewFromUtf8Literal(isolate_, "value");
        bool has = false;
        if (d->HasOwnProperty(context_, vk).To(&has) && has &&
            d->Get(context_, vk).ToLocal(&value) && value->IsString()) {
          compat::AppendWtf8(isolate_, value.As<v8::String>(), out);
        }
      }
      return out;
    };
    std::string message = own_string("message");
    std::string stack = own_string("stack");
    Tag(Tag::kError);
    Text(name.data(), name.size());
    Text(message.data(), message.size());
    Text(stack.data(), stack.size());
    Byte(op::TUPLE3);
    Byte(op::REDUCE);
    Remember(error);
    return CheckSize();
  }

  bool WriteBuffer(v8::Local<v8::ArrayBuffer> buffer) {
    Attachment a;
    a.kind = Attachment::kBuffer;
    size_t length = buffer->ByteLength();
    attached_bytes_ += length;
    if (!CheckSize()) return false;
    if (options_.transfer_out) {
      if (!buffer->IsDetachable()) {
        return Refuse("an ArrayBuffer", "it cannot be detached (WebAssembly memory)");
      }
      a.store = buffer->GetBackingStore();
      a.moved = true;
      to_detach_.emplace_back(isolate_, buffer);
    } else {
      void* data = length ? AllocateMemory(length, false) : nullptr;
      if (length && data == nullptr) return Refuse("an ArrayBuffer", "out of host memory");
      if (length) std::memcpy(data, buffer->GetBackingStore()->Data(), length);
      a.store = v8::ArrayBuffer::NewBackingStore(
          data, length, [](void* p, size_t n, void*) { FreeMemory(p, n); }, nullptr);
      a.moved = true;
    }
    uint32_t index = static_cast<uint32_t>(out_->attachments.size());
    out_->attachments.push_back(std::move(a));
    Tag(Tag::kBuf);
    Int(index);
    Byte(op::TUPLE1);
    Byte(op::REDUCE);
    Remember(buffer);
    return true;
  }

  bool WriteSharedBuffer(v8::Local<v8::SharedArrayBuffer> buffer) {
    Attachment a;
    a.kind = Attachment::kSharedBuffer;
    a.store = buffer->GetBackingStore();
    uint32_t index = static_cast<uint32_t>(out_->attachments.size());
    out_->attachments.push_back(std::move(a));
    Tag(Tag::kSab);
    Int(index);
    Byte(op::TUPLE1);
    Byte(op::REDUCE);
    Remember(buffer);
    return true;
  }

  bool WriteView(v8::Local<v8::ArrayBufferView> view, int depth) {
    int kind;
    if (view->IsInt8Array()) kind = kInt8;
    else if (view->IsUint8Array()) kind = kUint8;
    else if (view->IsUint8ClampedArray()) kind = kUint8Clamped;
    else if (view->IsInt16Array()) kind = kInt16;
    else if (view->IsUint16Array()) kind = kUint16;
    else if (view->IsInt32Array()) kind = kInt32;
    else if (view->IsUint32Array()) kind = kUint32;
    else if (view->IsFloat32Array()) kind = kFloat32;
    else if (view->IsFloat64Array()) kind = kFloat64;
    else if (view->IsBigInt64Array()) kind = kBigInt64;
    else if (view->IsBigUint64Array()) kind = kBigUint64;
    else if (view->IsDataView()) kind = kDataView;
    else return Refuse("a " + DescribeType(isolate_, view));
    v8::Local<v8::Object> buffer = view->Buffer();
    size_t offset = view->ByteOffset(), length = view->ByteLength();
    Tag(Tag::kView);
    Byte(op::MARK);
    {
      PathScope ps(*this, ".buffer");
      if (!Write(buffer, depth + 1)) return false;
    }
    Int(kind);
    Int(static_cast<int64_t>(offset));
    Int(static_cast<int64_t>(length / kViewItemSize[kind]));
    Byte(op::TUPLE);
    Byte(op::REDUCE);
    Remember(view);
    return true;
  }

  struct MemoEntry {
    v8::Global<v8::Object> object;
    uint32_t index = 0;
  };

  IsolateHolder& holder_;
  v8::Isolate* isolate_;
  v8::Local<v8::Context> context_;
  const CallState& call_;
  WriteOptions options_;
  Serialized* out_;
  std::string& s_;
  size_t limit_;
  size_t attached_bytes_ = 0;
  size_t frame_pos_ = 0;
  uint32_t memo_count_ = 0;
  uint32_t tag_memo_[16] = {};
  std::unordered_multimap<int, MemoEntry> memo_;
  std::unordered_map<std::string, uint32_t> keys_;
  struct RecentKey {
    v8::Global<v8::String> key;   // outlives the handle scope it was seen in
    uint32_t index = 0;
  };
  std::vector<RecentKey> recent_keys_;
  std::vector<std::string> path_;
  std::string scratch_;
  std::vector<v8::Global<v8::ArrayBuffer>> to_detach_;
  v8::Local<v8::Value> object_prototype_;
  // Translate()
  static constexpr uint32_t kNoMemo = 0xffffffffu;
  const uint8_t* v8_ = nullptr;
  const uint8_t* v8_end_ = nullptr;
  uint64_t version_ = 0;
  uint64_t steps_ = 0;
  int v8_depth_ = 0;
  std::vector<uint32_t> ids_;   // V8 object id -> memo index
  ivm_error_t* error_ = nullptr;
  bool exception_ = false;
};

}  // namespace

namespace {

// Collects V8's serializer output; refuses what the fast path leaves to the
// general writer (without throwing where it can).
class FastDelegate final : public v8::ValueSerializer::Delegate {
 public:
  explicit FastDelegate(v8::Isolate* isolate) : isolate_(isolate) {}
  void ThrowDataCloneError(v8::Local<v8::String> message) override {
    failed = true;
    isolate_->ThrowException(v8::Exception::Error(message));
  }
  v8::Maybe<uint32_t> GetSharedArrayBufferId(v8::Isolate*,
                                             v8::Local<v8::SharedArrayBuffer>) override {
    failed = true;
    isolate_->ThrowException(v8::Null(isolate_));
    return v8::Nothing<uint32_t>();
  }
  v8::Maybe<uint32_t> GetWasmModuleTransferId(v8::Isolate*,
                                              v8::Local<v8::WasmModuleObject>) override {
    failed = true;
    isolate_->ThrowException(v8::Null(isolate_));
    return v8::Nothing<uint32_t>();
  }
  bool failed = false;

 private:
  v8::Isolate* isolate_;
};

// Plain data (objects, arrays, strings, numbers...) goes through V8's own
// serializer: several times faster than walking it through the API.
bool FastSerialize(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                   const CallState& call, v8::Local<v8::Value> value, Serialized* out,
                   bool* threw) {
  if (!value->IsObject() || value->IsProxy()) return false;
  std::pair<uint8_t*, size_t> buffer{nullptr, 0};
  {
    v8::TryCatch try_catch(isolate);
    FastDelegate delegate(isolate);
    v8::ValueSerializer serializer(isolate, &delegate);
    serializer.WriteHeader();
    bool ok = serializer.WriteValue(context, value).FromMaybe(false);
    if (try_catch.HasTerminated() || isolate->IsExecutionTerminating() || holder.Stopped(call)) {
      *threw = true;   // stopped (timeout, termination, memory limit)
      if (try_catch.HasCaught()) try_catch.ReThrow();
      return true;
    }
    if (!ok || delegate.failed || try_catch.HasCaught()) return false;   // the general writer decides
    buffer = serializer.Release();
  }
  WriteOptions options;
  Writer writer(holder, isolate, context, call, options, out);
  bool ok = writer.Translate(buffer.first, buffer.second);
  std::free(buffer.first);
  if (!ok) {
    out->stream.clear();
    out->attachments.clear();
  }
  return ok;
}

}  // namespace

ivm_error_t* Serialize(IsolateHolder& holder, v8::Isolate* isolate,
                       v8::Local<v8::Context> context, const CallState& call,
                       v8::Local<v8::Value> value, const WriteOptions& options,
                       Serialized* out, bool* threw) {
  *threw = false;
  if (!options.transfer_out && FastSerialize(holder, isolate, context, call, value, out, threw)) {
    return nullptr;
  }
  Writer writer(holder, isolate, context, call, options, out);
  ivm_error_t* err = writer.Run(value);
  *threw = err == nullptr && writer.failed_with_exception();
  return err;
}

// ---------------------------------------------------------------------------
// Reader: stream → JS

namespace {

class Reader {
 public:
  Reader(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
         const CallState& call, const Serialized& in)
      : holder_(holder), isolate_(isolate), context_(context), call_(call), in_(in),
        p_(reinterpret_cast<const unsigned char*>(in.stream.data())),
        end_(p_ + in.stream.size()) {}

  // NULL with *out empty: an exception is pending or the call was stopped.
  ivm_error_t* Run(v8::Local<v8::Value>* out) {
    bool ok = Loop(out);
    if (error_) return error_;
    if (!ok && !exception_) return Bad("truncated or invalid copy");
    return nullptr;
  }

  bool transferring_ = false;
  int nesting_ = 0;
  bool exception_ = false;

 private:
  struct Entry {
    enum Kind : uint8_t { kValue, kTag } kind = kValue;
    Tag tag = Tag::kNone;
    int dict = -1;   // index in dicts_ while its JS form may still change
    bool list = false;   // a Python list (APPEND target), not a tuple
    v8::Local<v8::Value> value;
  };
  struct Dict {
    bool settled = false;     // its JS form (Object or Map) is final
    uint32_t recalls = 0;     // times it was fetched from the memo
    bool is_map = false;
    std::vector<uint32_t> memo_slots;
  };

  ivm_error_t* Bad(const std::string& what) {
    if (error_ == nullptr) {
      error_ = MakeError(IVM_ERROR_TRANSFER, "cannot copy into the isolate: " + what);
    }
    return error_;
  }
  bool Fail(const std::string& what) {
    Bad(what);
    return false;
  }
  bool Need(size_t n) { return static_cast<size_t>(end_ - p_) >= n; }
  uint64_t ReadLe(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p_[i]) << (8 * i);
    p_ += n;
    return v;
  }
  void Push(v8::Local<v8::Value> v) {
    Entry e;
    e.value = v;
    stack_.push_back(e);
  }
  bool Pop(Entry* e) {
    size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) return false;
    *e = stack_.back();
    stack_.pop_back();
    return true;
  }
  bool PopMark(size_t* start) {
    if (marks_.empty()) return false;
    *start = marks_.back();
    marks_.pop_back();
    return stack_.size() >= *start;
  }
  bool AllValues(size_t start) {
    for (size_t i = start; i < stack_.size(); ++i) {
      if (stack_[i].kind != Entry::kValue) return false;
    }
    return true;
  }
  // A heap allocation of about `bytes` must fit in the isolate: V8 aborts the
  // process on some allocations it cannot satisfy.
  bool Room(size_t bytes) {
    if (bytes < (1u << 20)) return true;
    v8::HeapStatistics hs;
    isolate_->GetHeapStatistics(&hs);
    size_t used = hs.used_heap_size();
    size_t limit = hs.heap_size_limit();
    if (used + bytes + (bytes >> 1) > limit) {
      return Fail("a value of " + std::to_string(bytes) +
                  " bytes does not fit in the isolate's memory limit");
    }
    return true;
  }
  bool Text(size_t n) {
    if (!Need(n)) return false;
    if (!Room(n * 2)) return false;
    ivm_error_t* err = nullptr;
    v8::Local<v8::String> str;
    // Short strings are internalized: most are property names, which V8
    // would otherwise internalize on every use.
    if (!NewString(isolate_, reinterpret_cast<const char*>(p_), n, &err, n <= 16).ToLocal(&str)) {
      if (err) {
        error_ = err;
        return false;
      }
      return Fail("string too long");
    }
    p_ += n;
    Push(str);
    return true;
  }
  bool Bytes(size_t n) {
    if (!Need(n)) return false;
    v8::Local<v8::Value> buf;
    if (!NewArrayBuffer(p_, n, &buf)) return false;
    p_ += n;
    Push(buf);
    return true;
  }
  bool NewArrayBuffer(const void* data, size_t n, v8::Local<v8::Value>* out) {
    std::shared_ptr<v8::BackingStore> store = holder_.NewBuffer(data, n);
    if (!store) {
      return Fail("an ArrayBuffer of " + std::to_string(n) +
                  " bytes does not fit in the isolate's memory limit");
    }
    *out = v8::ArrayBuffer::New(isolate_, std::move(store));
    return true;
  }
  bool Long(size_t n) {
    if (!Need(n)) return false;
    if (n <= 8) {
      uint64_t u = 0;
      for (size_t i = 0; i < n; ++i) u |= static_cast<uint64_t>(p_[i]) << (8 * i);
      if (n > 0 && n < 8 && (p_[n - 1] & 0x80)) u |= ~0ull << (8 * n);   // sign-extend
      p_ += n;
      int64_t v = static_cast<int64_t>(u);
      if (v >= -9007199254740991LL && v <= 9007199254740991LL) {
        Push(v8::Number::New(isolate_, static_cast<double>(v)));
      } else {
        Push(v8::BigInt::New(isolate_, v));
      }
      return true;
    }
    if (n > (1u << 21)) return Fail("integer too large for a BigInt");
    bool negative = (p_[n - 1] & 0x80) != 0;
    std::vector<unsigned char> mag(p_, p_ + n);
    p_ += n;
    if (negative) {   // two's complement → magnitude
      unsigned carry = 1;
      for (unsigned char& b : mag) {
        unsigned v = static_cast<unsigned char>(~b) + carry;
        b = static_cast<unsigned char>(v);
        carry = v >> 8;
      }
    }
    std::vector<uint64_t> words((n + 7) / 8, 0);
    for (size_t i = 0; i < n; ++i) words[i / 8] |= static_cast<uint64_t>(mag[i]) << (8 * (i % 8));
    while (!words.empty() && words.back() == 0) words.pop_back();
    v8::Local<v8::BigInt> big;
    if (!v8::BigInt::NewFromWords(context_, negative ? 1 : 0, static_cast<int>(words.size()),
                                  words.data())
             .ToLocal(&big)) {
      exception_ = true;
      return false;
    }
    // A value within ±(2**53-1) written with many bytes is still a number.
    bool lossless = false;
    int64_t small = big->Int64Value(&lossless);
    if (lossless && small >= -9007199254740991LL && small <= 9007199254740991LL) {
      Push(v8::Number::New(isolate_, static_cast<double>(small)));
    } else {
      Push(big);
    }
    return true;
  }

  // Settles the JS form of the dict `target` given the keys about to be set:
  // all-str keys keep an Object, others make it a Map.
  // Looks ahead from a dict's EMPTY_DICT at its first key, so that a dict
  // whose keys are not strings is a Map from the start (and can contain
  // itself). Later keys that are not strings convert it (SettleDict).
  bool FirstKeyIsNotString() const {
    const unsigned char* p = p_;
    auto skip = [&](size_t n) { p = static_cast<size_t>(end_ - p) >= n ? p + n : end_; };
    while (p < end_) {
      unsigned char c = *p;
      if (c == op::MEMOIZE || c == op::MARK) {
        skip(1);
      } else if (c == op::BINPUT) {
        skip(2);
      } else if (c == op::LONG_BINPUT) {
        skip(5);
      } else if (c == op::FRAME) {
        skip(9);
      } else {
        break;
      }
    }
    if (p >= end_) return false;
    switch (*p) {
      case op::SHORT_BINUNICODE:
      case op::BINUNICODE:
      case op::BINUNICODE8:
        return false;
      case op::BINGET:
      case op::LONG_BINGET: {
        size_t n = *p == op::BINGET ? 1 : 4;
        if (static_cast<size_t>(end_ - p) < n + 1) return false;
        uint64_t slot = 0;
        for (size_t i = 0; i < n; ++i) slot |= static_cast<uint64_t>(p[1 + i]) << (8 * i);
        if (slot >= memo_.size()) return false;
        const Entry& e = memo_[slot];
        return e.kind == Entry::kValue && !e.value.IsEmpty() && !e.value->IsString();
      }
      case op::SETITEM:
      case op::SETITEMS:
      case op::STOP:
      case op::APPEND:
      case op::APPENDS:
      case op::TUPLE:
      case op::TUPLE1:
      case op::TUPLE2:
      case op::TUPLE3:
      case op::REDUCE:
      case op::POP:
      case op::POP_MARK:
      case op::ADDITEMS:
      case op::FROZENSET:
      case op::EMPTY_DICT:
      case op::EMPTY_LIST:
      case op::EMPTY_SET:
        // An empty dict, or the next item is not a key of this dict.
        return *p == op::EMPTY_LIST || *p == op::EMPTY_SET || *p == op::EMPTY_DICT;
      default:
        return true;   // numbers, None, booleans, bytes, tuples, tags: not a str
    }
  }

  bool SettleDict(Entry& target, size_t first) {
    if (target.dict < 0) return true;
    Dict& d = dicts_[target.dict];
    if (d.is_map) return true;
    bool all_strings = true;
    for (size_t i = first; i < stack_.size(); i += 2) {
      if (!stack_[i].value->IsString()) {
        all_strings = false;
        break;
      }
    }
    if (all_strings) {
      d.settled = true;
      return true;
    }
    // Entries that point at this dict and are still on the stack can be
    // changed with it; a reference already stored elsewhere cannot.
    uint32_t pending = 0;
    for (size_t i = first; i < stack_.size(); ++i) {
      if (stack_[i].dict == target.dict) ++pending;
    }
    if (d.recalls != pending) {
      return Fail("a dict whose non-str keys come after it was referred to cannot become a Map; "
                  "make it an ivm.JSMap");
    }
    v8::Local<v8::Object> object = target.value.As<v8::Object>();
    v8::Local<v8::Map> map = v8::Map::New(isolate_);
    v8::Local<v8::Array> names;
    if (!object->GetOwnPropertyNames(context_, v8::ALL_PROPERTIES, v8::KeyConversionMode::kConvertToString)
             .ToLocal(&names)) {
      exception_ = true;
      return false;
    }
    for (uint32_t i = 0; i < names->Length(); ++i) {
      v8::Local<v8::Value> k, v;
      if (!names->Get(context_, i).ToLocal(&k) || !object->Get(context_, k).ToLocal(&v) ||
          map->Set(context_, k, v).IsEmpty()) {
        exception_ = true;
        return false;
      }
    }
    target.value = map;
    for (uint32_t slot : d.memo_slots) memo_[slot].value = map;
    for (size_t i = first; i < stack_.size(); ++i) {
      if (stack_[i].dict == target.dict) stack_[i].value = map;
    }
    d.is_map = true;
    d.settled = true;
    return true;
  }

  bool SetItems(size_t start) {
    if (start == 0 || (stack_.size() - start) % 2 != 0 || !AllValues(start)) return false;
    Entry& target = stack_[start - 1];
    if (target.kind != Entry::kValue || !target.value->IsObject()) return false;
    if (!SettleDict(target, start)) return false;
    v8::Local<v8::Object> obj = target.value.As<v8::Object>();
    if (obj->IsMap()) {
      v8::Local<v8::Map> map = obj.As<v8::Map>();
      for (size_t i = start; i < stack_.size(); i += 2) {
        bool has = false;
        if (!map->Has(context_, stack_[i].value).To(&has)) {
          exception_ = true;
          return false;
        }
        if (has) {
          return Fail("two keys of a dict are the same Map key in JavaScript (e.g. several NaN)");
        }
        if (map->Set(context_, stack_[i].value, stack_[i + 1].value).IsEmpty()) {
          exception_ = true;
          return false;
        }
      }
    } else if (target.dict < 0) {
      return false;   // SETITEMS on something that is not a dict
    } else {
      for (size_t i = start; i < stack_.size(); i += 2) {
        bool ok = false;
        if (!obj->CreateDataProperty(context_, stack_[i].value.As<v8::Name>(),
                                     stack_[i + 1].value)
                 .To(&ok)) {
          exception_ = true;
          return false;
        }
      }
    }
    stack_.resize(start);
    return true;
  }

  bool AddItems(v8::Local<v8::Set> set, size_t start) {
    if (!AllValues(start)) return false;
    for (size_t i = start; i < stack_.size(); ++i) {
      bool has = false;
      if (!set->Has(context_, stack_[i].value).To(&has)) {
        exception_ = true;
        return false;
      }
      if (has) {
        return Fail("two items of a set are the same Set item in JavaScript (e.g. several NaN)");
      }
      if (set->Add(context_, stack_[i].value).IsEmpty()) {
        exception_ = true;
        return false;
      }
    }
    stack_.resize(start);
    return true;
  }

  bool Append(size_t start) {
    if (start == 0 || !AllValues(start)) return false;
    Entry& target = stack_[start - 1];
    if (target.kind != Entry::kValue || !target.value->IsArray() || !target.list) return false;
    v8::Local<v8::Array> array = target.value.As<v8::Array>();
    uint32_t base = array->Length();
    for (size_t i = start; i < stack_.size(); ++i) {
      bool ok = false;
      if (!array->CreateDataProperty(context_, base + static_cast<uint32_t>(i - start),
                                     stack_[i].value)
               .To(&ok)) {
        exception_ = true;
        return false;
      }
    }
    stack_.resize(start);
    return true;
  }

  bool Tuple(size_t start) {
    if (!AllValues(start)) return false;
    size_t n = stack_.size() - start;
    std::vector<v8::Local<v8::Value>> items(n);
    for (size_t i = 0; i < n; ++i) items[i] = stack_[start + i].value;
    stack_.resize(start);
    Push(v8::Array::New(isolate_, items.data(), n));
    return true;
  }

  bool Global(const std::string& module, const std::string& name) {
    if (module == kModule) {
      for (const TagName& t : kTags) {
        if (name == t.name) {
          Entry e;
          e.kind = Entry::kTag;
          e.tag = t.tag;
          stack_.push_back(e);
          return true;
        }
      }
    }
    return Fail("unknown name " + module + "." + name);
  }

  const Attachment* AttachmentAt(v8::Local<v8::Value> index) {
    if (!index->IsNumber()) return nullptr;
    double d = index.As<v8::Number>()->Value();
    if (!(d >= 0) || d >= static_cast<double>(in_.attachments.size())) return nullptr;
    return &in_.attachments[static_cast<size_t>(d)];
  }

  bool Reduce() {
    Entry args, fn;
    if (!Pop(&args) || !Pop(&fn) || fn.kind != Entry::kTag || args.kind != Entry::kValue ||
        !args.value->IsArray() || args.list) {
      return false;
    }
    v8::Local<v8::Array> a = args.value.As<v8::Array>();
    uint32_t n = a->Length();
    std::vector<v8::Local<v8::Value>> arg(n);
    for (uint32_t i = 0; i < n; ++i) {
      if (!a->Get(context_, i).ToLocal(&arg[i])) {
        exception_ = true;
        return false;
      }
    }
    switch (fn.tag) {
      case Tag::kUndefined:
        if (n != 0) return false;
        Push(v8::Undefined(isolate_));
        return true;
      case Tag::kBigInt:
        if (n != 1) return false;
        if (arg[0]->IsNumber()) {
          double d = arg[0].As<v8::Number>()->Value();
          if (d != std::floor(d) || std::fabs(d) > kMaxSafe) return false;
          Push(v8::BigInt::New(isolate_, static_cast<int64_t>(d)));
        } else if (arg[0]->IsBigInt()) {
          Push(arg[0]);
        } else {
          return false;
        }
        return true;
      case Tag::kMap: {
        if (n != 0) return false;
        Entry e;
        e.value = v8::Map::New(isolate_);
        e.dict = static_cast<int>(dicts_.size());
        Dict d;
        d.settled = true;
        d.is_map = true;
        dicts_.push_back(d);
        stack_.push_back(e);
        return true;
      }
      case Tag::kRegExp: return RegExp(arg);
      case Tag::kDate: {
        if (n != 1 || !arg[0]->IsNumber()) return false;
        v8::Local<v8::Value> date;
        if (!v8::Date::New(context_, arg[0].As<v8::Number>()->Value()).ToLocal(&date)) {
          exception_ = true;
          return false;
        }
        Push(date);
        return true;
      }
      case Tag::kView: return View(arg);
      case Tag::kBuf: {
        const Attachment* att = n == 1 ? AttachmentAt(arg[0]) : nullptr;
        if (att == nullptr ||
            (att->kind != Attachment::kBuffer && att->kind != Attachment::kBorrowed)) {
          return false;
        }
        v8::Local<v8::Value> buf;
        if (transferring_ && att->moved && att->store) {
          std::shared_ptr<v8::BackingStore> store = holder_.AdoptBuffer(att->store);
          if (!store) {
            return Fail("an ArrayBuffer of " + std::to_string(att->ByteLength()) +
                        " bytes does not fit in the isolate's memory limit");
          }
          buf = v8::ArrayBuffer::New(isolate_, std::move(store));
        } else if (!NewArrayBuffer(att->Data(), att->ByteLength(), &buf)) {
          return false;
        }
        Push(buf);
        return true;
      }
      case Tag::kSab: {
        const Attachment* att = n == 1 ? AttachmentAt(arg[0]) : nullptr;
        if (att == nullptr || att->kind != Attachment::kSharedBuffer || !att->store) return false;
        Push(v8::SharedArrayBuffer::New(isolate_, att->store));
        return true;
      }
      case Tag::kAtt: {
        const Attachment* att = n == 1 ? AttachmentAt(arg[0]) : nullptr;
        if (att == nullptr) return false;
        if (att->kind == Attachment::kCopy && att->copy && (att->flags & IVM_COPY_AS_OBJECT)) {
          v8::Local<v8::Object> obj;
          if (!WrapCopy(holder_, isolate_, context_, att->copy).ToLocal(&obj)) {
            exception_ = true;
            return false;
          }
          Push(obj);
          return true;
        }
        if (att->kind == Attachment::kCopy && att->copy) return InsertCopy(*att);
        if (att->kind == Attachment::kReference && att->reference) return InsertReference(*att);
        if (att->kind == Attachment::kCallback && att->callback &&
            (att->flags & IVM_ATTACH_AS_REFERENCE)) {
          v8::Local<v8::Object> obj;
          const char* type = (att->flags & IVM_ATTACH_NOT_CALLABLE) ? "object" : "function";
          if (!WrapHostReference(holder_, isolate_, context_, att->callback, type).ToLocal(&obj)) {
            exception_ = true;
            return false;
          }
          Push(obj);
          return true;
        }
        if (att->kind == Attachment::kCallback && att->callback) {
          v8::Local<v8::Function> fn;
          if (!MakeHostFunction(holder_, isolate_, context_, att->callback).ToLocal(&fn)) {
            exception_ = true;
            return false;
          }
          Push(fn);
          return true;
        }
        return false;
      }
      case Tag::kError: return Error(arg);
      case Tag::kNone: break;
    }
    return false;
  }

  bool RegExp(const std::vector<v8::Local<v8::Value>>& arg) {
    if (arg.size() != 2 || !arg[0]->IsString() || !arg[1]->IsString()) return false;
    std::string flags;
    compat::AppendWtf8(isolate_, arg[1].As<v8::String>(), flags);
    int f = v8::RegExp::kNone;
    for (char c : flags) {
      int bit;
      switch (c) {
        case 'd': bit = v8::RegExp::kHasIndices; break;
        case 'g': bit = v8::RegExp::kGlobal; break;
        case 'i': bit = v8::RegExp::kIgnoreCase; break;
        case 'm': bit = v8::RegExp::kMultiline; break;
        case 's': bit = v8::RegExp::kDotAll; break;
        case 'u': bit = v8::RegExp::kUnicode; break;
        case 'y': bit = v8::RegExp::kSticky; break;
        default: return Fail("invalid RegExp flags '" + flags + "'");
      }
      if (f & bit) return Fail("invalid RegExp flags '" + flags + "'");
      f |= bit;
    }
    v8::Local<v8::RegExp> re;
    if (!v8::RegExp::New(context_, arg[0].As<v8::String>(), static_cast<v8::RegExp::Flags>(f))
             .ToLocal(&re)) {
      exception_ = true;
      return false;
    }
    Push(re);
    return true;
  }

  bool InsertReference(const Attachment& att) {
    const ReferenceData& ref = *att.reference;
    if (ref.record->released()) return Fail("the Reference has been released");
    if (!(att.flags & IVM_ATTACH_DEREF)) {
      v8::Local<v8::Object> obj;
      if (!WrapReference(holder_, isolate_, context_, ref).ToLocal(&obj)) {
        exception_ = true;
        return false;
      }
      Push(obj);
      return true;
    }
    if (ref.holder.get() != &holder_) {
      return Fail("deref_into() of a Reference can only be used in the isolate the Reference "
                  "belongs to");
    }
    Push(ref.record->value.Get(isolate_));
    return true;
  }

  bool InsertCopy(const Attachment& att) {
    Serialized taken;
    const Serialized* source = &att.copy->value();
    bool transfer = (att.flags & IVM_COPY_INTO_TRANSFER_IN) != 0;
    if (transfer) {
      if (!att.copy->TakeForTransfer(&taken)) {
        return Fail("the ExternalCopy was already transferred into an isolate");
      }
      source = &taken;
    } else if (att.copy->consumed()) {
      return Fail("the ExternalCopy was already transferred into an isolate");
    }
    if (nesting_ >= 32) return Fail("ExternalCopy markers nested too deeply");
    Reader inner(holder_, isolate_, context_, call_, *source);
    inner.transferring_ = transfer;
    inner.nesting_ = nesting_ + 1;
    v8::Local<v8::Value> value;
    error_ = inner.Run(&value);
    if (error_ || value.IsEmpty()) {
      exception_ = inner.exception_;
      return false;
    }
    Push(value);
    return true;
  }

  bool View(const std::vector<v8::Local<v8::Value>>& arg) {
    if (arg.size() != 4 || !arg[1]->IsNumber() || !arg[2]->IsNumber() || !arg[3]->IsNumber()) {
      return false;
    }
    v8::Local<v8::Value> buf = arg[0];
    double kd = arg[1].As<v8::Number>()->Value(), od = arg[2].As<v8::Number>()->Value(),
           ld = arg[3].As<v8::Number>()->Value();
    if (!(kd >= 0 && kd < static_cast<double>(kViewKinds) && od >= 0 && ld >= 0 && od <= 9e15 && ld <= 9e15)) {
      return false;
    }
    int kind = static_cast<int>(kd);
    size_t offset = static_cast<size_t>(od), length = static_cast<size_t>(ld);
    size_t item = kViewItemSize[kind];
    size_t size = 0;
    bool shared = buf->IsSharedArrayBuffer();
    if (buf->IsArrayBuffer()) {
      size = buf.As<v8::ArrayBuffer>()->ByteLength();
    } else if (shared) {
      size = buf.As<v8::SharedArrayBuffer>()->ByteLength();
    } else {
      return false;
    }
    if (offset % item != 0) {
      return Fail("a typed array's offset is not a multiple of its item size");
    }
    if (offset > size || length > (size - offset) / item) {
      return Fail("a typed array reaches outside its buffer");
    }
    v8::Local<v8::Value> view;
#define IVM_VIEW(K, T)                                                      \
  case K:                                                                   \
    view = shared ? T::New(buf.As<v8::SharedArrayBuffer>(), offset, length) \
                  : T::New(buf.As<v8::ArrayBuffer>(), offset, length);      \
    break;
    switch (kind) {
      IVM_VIEW(kInt8, v8::Int8Array)
      IVM_VIEW(kUint8, v8::Uint8Array)
      IVM_VIEW(kUint8Clamped, v8::Uint8ClampedArray)
      IVM_VIEW(kInt16, v8::Int16Array)
      IVM_VIEW(kUint16, v8::Uint16Array)
      IVM_VIEW(kInt32, v8::Int32Array)
      IVM_VIEW(kUint32, v8::Uint32Array)
      IVM_VIEW(kFloat32, v8::Float32Array)
      IVM_VIEW(kFloat64, v8::Float64Array)
      IVM_VIEW(kBigInt64, v8::BigInt64Array)
      IVM_VIEW(kBigUint64, v8::BigUint64Array)
      IVM_VIEW(kDataView, v8::DataView)
      default: return false;
    }
#undef IVM_VIEW
    Push(view);
    return true;
  }

  bool Error(const std::vector<v8::Local<v8::Value>>& arg) {
    if (arg.size() != 3 || !arg[0]->IsString() || !arg[1]->IsString() || !arg[2]->IsString()) {
      return false;
    }
    std::string name;
    compat::AppendWtf8(isolate_, arg[0].As<v8::String>(), name);
    v8::Local<v8::Object> error = NewError(isolate_, context_, name, arg[1].As<v8::String>());
    if (arg[2].As<v8::String>()->Length() > 0 &&
        error->DefineOwnProperty(context_, v8::String::NewFromUtf8Literal(isolate_, "stack"),
                                 arg[2], v8::DontEnum)
            .IsNothing()) {
      exception_ = true;
      return false;
    }
    Push(error);
    return true;
  }

  void Memo(uint32_t slot) {
    if (stack_.empty()) return;
    if (slot > memo_.size() + 1000000) return;
    if (memo_.size() <= slot) memo_.resize(slot + 1);
    memo_[slot] = stack_.back();
    if (stack_.back().dict >= 0) dicts_[stack_.back().dict].memo_slots.push_back(slot);
  }
  bool Recall(uint64_t slot) {
    if (slot >= memo_.size()) return false;
    const Entry& e = memo_[slot];
    if (e.kind == Entry::kValue && e.value.IsEmpty()) return false;
    if (e.dict >= 0) ++dicts_[e.dict].recalls;
    stack_.push_back(e);
    return true;
  }

  bool Loop(v8::Local<v8::Value>* out) {
    uint32_t steps = 0;
    while (p_ < end_) {
      if ((++steps & 1023) == 0 && (holder_.Stopped(call_) || isolate_->IsExecutionTerminating())) {
        exception_ = true;
        return false;
      }
      unsigned char c = *p_++;
      size_t start;
      switch (c) {
        case op::PROTO:
          if (!Need(1)) return false;
          ++p_;
          break;
        case op::FRAME:
          if (!Need(8)) return false;
          p_ += 8;
          break;
        case op::STOP:
          if (stack_.size() != 1 || !marks_.empty() || stack_[0].kind != Entry::kValue) {
            return false;
          }
          *out = stack_[0].value;
          return true;
        case op::NONE: Push(v8::Null(isolate_)); break;
        case op::NEWTRUE: Push(v8::True(isolate_)); break;
        case op::NEWFALSE: Push(v8::False(isolate_)); break;
        case op::BININT:
          if (!Need(4)) return false;
          Push(v8::Integer::New(isolate_, static_cast<int32_t>(static_cast<uint32_t>(ReadLe(4)))));
          break;
        case op::BININT1:
          if (!Need(1)) return false;
          Push(v8::Integer::New(isolate_, static_cast<int32_t>(ReadLe(1))));
          break;
        case op::BININT2:
          if (!Need(2)) return false;
          Push(v8::Integer::New(isolate_, static_cast<int32_t>(ReadLe(2))));
          break;
        case op::LONG1:
          if (!Need(1) || !Long(ReadLe(1))) return false;
          break;
        case op::LONG4:
          if (!Need(4) || !Long(ReadLe(4))) return false;
          break;
        case op::BINFLOAT: {
          if (!Need(8)) return false;
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | p_[i];
          p_ += 8;
          double d;
          std::memcpy(&d, &bits, 8);
          Push(v8::Number::New(isolate_, d));
          break;
        }
        case op::SHORT_BINUNICODE:
          if (!Need(1) || !Text(ReadLe(1))) return false;
          break;
        case op::BINUNICODE:
          if (!Need(4) || !Text(ReadLe(4))) return false;
          break;
        case op::BINUNICODE8:
          if (!Need(8) || !Text(ReadLe(8))) return false;
          break;
        case op::SHORT_BINBYTES:
          if (!Need(1) || !Bytes(ReadLe(1))) return false;
          break;
        case op::BINBYTES:
          if (!Need(4) || !Bytes(ReadLe(4))) return false;
          break;
        case op::BINBYTES8:
        case op::BYTEARRAY8:
          if (!Need(8) || !Bytes(ReadLe(8))) return false;
          break;
        case op::EMPTY_LIST: {
          Entry e;
          e.value = v8::Array::New(isolate_);
          e.list = true;
          stack_.push_back(e);
          break;
        }
        case op::EMPTY_TUPLE: Push(v8::Array::New(isolate_)); break;
        case op::EMPTY_SET: Push(v8::Set::New(isolate_)); break;
        case op::EMPTY_DICT: {
          Entry e;
          e.dict = static_cast<int>(dicts_.size());
          dicts_.emplace_back();
          if (FirstKeyIsNotString()) {
            e.value = v8::Map::New(isolate_);
            dicts_.back().is_map = true;
            dicts_.back().settled = true;
          } else {
            e.value = v8::Object::New(isolate_);
          }
          stack_.push_back(e);
          break;
        }
        case op::MARK: marks_.push_back(stack_.size()); break;
        case op::APPEND:
          if (stack_.size() < 2 || !Append(stack_.size() - 1)) return false;
          break;
        case op::APPENDS:
          if (!PopMark(&start) || !Append(start)) return false;
          break;
        case op::SETITEM:
          if (stack_.size() < 3 || !SetItems(stack_.size() - 2)) return false;
          break;
        case op::SETITEMS:
          if (!PopMark(&start) || !SetItems(start)) return false;
          break;
        case op::ADDITEMS:
          if (!PopMark(&start) || start == 0 || stack_[start - 1].kind != Entry::kValue ||
              !stack_[start - 1].value->IsSet()) {
            return false;
          }
          if (!AddItems(stack_[start - 1].value.As<v8::Set>(), start)) return false;
          break;
        case op::FROZENSET: {
          if (!PopMark(&start)) return false;
          v8::Local<v8::Set> set = v8::Set::New(isolate_);
          if (!AddItems(set, start)) return false;
          Push(set);
          break;
        }
        case op::TUPLE1:
        case op::TUPLE2:
        case op::TUPLE3: {
          size_t k = c - op::TUPLE1 + 1;
          size_t floor = marks_.empty() ? 0 : marks_.back();
          if (stack_.size() < floor + k || !Tuple(stack_.size() - k)) return false;
          break;
        }
        case op::TUPLE:
          if (!PopMark(&start) || !Tuple(start)) return false;
          break;
        case op::POP: {
          Entry e;
          if (!Pop(&e)) {
            if (marks_.empty() || marks_.back() != stack_.size()) return false;
            marks_.pop_back();   // POP of a mark
          }
          break;
        }
        case op::POP_MARK:
          if (!PopMark(&start)) return false;
          stack_.resize(start);
          break;
        case op::MEMOIZE: Memo(next_memo_++); break;
        case op::BINPUT:
          if (!Need(1)) return false;
          Memo(static_cast<uint32_t>(ReadLe(1)));
          break;
        case op::LONG_BINPUT:
          if (!Need(4)) return false;
          Memo(static_cast<uint32_t>(ReadLe(4)));
          break;
        case op::BINGET:
          if (!Need(1) || !Recall(ReadLe(1))) return false;
          break;
        case op::LONG_BINGET:
          if (!Need(4) || !Recall(ReadLe(4))) return false;
          break;
        case op::GLOBAL: {
          const auto* nl1 = static_cast<const unsigned char*>(std::memchr(p_, '\n', end_ - p_));
          if (!nl1) return false;
          const auto* nl2 =
              static_cast<const unsigned char*>(std::memchr(nl1 + 1, '\n', end_ - nl1 - 1));
          if (!nl2) return false;
          std::string module(reinterpret_cast<const char*>(p_), nl1 - p_);
          std::string name(reinterpret_cast<const char*>(nl1 + 1), nl2 - nl1 - 1);
          p_ = nl2 + 1;
          if (!Global(module, name)) return false;
          break;
        }
        case op::STACK_GLOBAL: {
          Entry name, module;
          if (!Pop(&name) || !Pop(&module) || name.kind != Entry::kValue ||
              module.kind != Entry::kValue || !name.value->IsString() ||
              !module.value->IsString()) {
            return false;
          }
          std::string m, nm;
          compat::AppendWtf8(isolate_, module.value.As<v8::String>(), m);
          compat::AppendWtf8(isolate_, name.value.As<v8::String>(), nm);
          if (!Global(m, nm)) return false;
          break;
        }
        case op::REDUCE:
          if (!Reduce()) return false;
          break;
        default:
          return Fail("unsupported opcode " + std::to_string(c));
      }
      if (error_ || exception_) return false;
    }
    return false;
  }

  IsolateHolder& holder_;
  v8::Isolate* isolate_;
  v8::Local<v8::Context> context_;
  const CallState& call_;
  const Serialized& in_;
  const unsigned char* p_;
  const unsigned char* end_;
  std::vector<Entry> stack_;
  std::vector<size_t> marks_;
  std::vector<Entry> memo_;
  std::vector<Dict> dicts_;
  uint32_t next_memo_ = 0;
  ivm_error_t* error_ = nullptr;
};

}  // namespace

ivm_error_t* Deserialize(IsolateHolder& holder, v8::Isolate* isolate,
                         v8::Local<v8::Context> context, const CallState& call,
                         const Serialized& in, v8::Local<v8::Value>* out) {
  Reader reader(holder, isolate, context, call, in);
  *out = v8::Local<v8::Value>();
  v8::Local<v8::Value> value;
  ivm_error_t* err = reader.Run(&value);
  if (err) return err;
  *out = value;
  return nullptr;
}

ivm_error_t* ValueToV8(IsolateHolder& holder, v8::Isolate* isolate,
                       v8::Local<v8::Context> context, const CallState& call,
                       const ivm_value_t* value, v8::Local<v8::Value>* out) {
  *out = v8::Local<v8::Value>();
  switch (value->kind) {
    case IVM_VALUE_UNDEFINED: *out = v8::Undefined(isolate); return nullptr;
    case IVM_VALUE_NULL: *out = v8::Null(isolate); return nullptr;
    case IVM_VALUE_BOOLEAN: *out = v8::Boolean::New(isolate, value->boolean); return nullptr;
    case IVM_VALUE_NUMBER: *out = v8::Number::New(isolate, value->number); return nullptr;
    case IVM_VALUE_STRING: {
      ivm_error_t* err = nullptr;
      v8::Local<v8::String> str;
      if (!NewString(isolate, value->str.data(), value->str.size(), &err).ToLocal(&str)) {
        return err ? err : MakeError(IVM_ERROR_TRANSFER, "string too long");
      }
      *out = str;
      return nullptr;
    }
    case IVM_VALUE_BIGINT: {
      if (value->words.size() > (1u << 18)) {
        return MakeError(IVM_ERROR_TRANSFER, "integer too large for a BigInt");
      }
      v8::Local<v8::BigInt> big;
      if (v8::BigInt::NewFromWords(context, value->negative ? 1 : 0,
                                   static_cast<int>(value->words.size()), value->words.data())
              .ToLocal(&big)) {
        *out = big;
      }
      return nullptr;   // empty: exception pending
    }
    case IVM_VALUE_SERIALIZED:
      if (!value->serialized) return InvalidArgument("empty serialized value");
      return Deserialize(holder, isolate, context, call, *value->serialized, out);
    case IVM_VALUE_EXTERNAL_COPY: {
      // An ExternalCopy result (another isolate's {externalCopy: true}):
      // an ExternalCopy object here.
      if (!value->copy) return InvalidArgument("empty external copy value");
      v8::Local<v8::Object> obj;
      if (WrapCopy(holder, isolate, context, value->copy).ToLocal(&obj)) *out = obj;
      return nullptr;
    }
    case IVM_VALUE_REFERENCE: {
      if (!value->reference) return InvalidArgument("empty reference value");
      if (value->reference->record->released()) {
        return MakeError(IVM_ERROR_DISPOSED, kReferenceReleased);
      }
      v8::Local<v8::Object> obj;
      if (WrapReference(holder, isolate, context, *value->reference).ToLocal(&obj)) *out = obj;
      return nullptr;
    }
    default:
      return InvalidArgument("a value of unknown kind");
  }
}

ivm_error_t* ResultFromV8(IsolateHolder& holder, v8::Isolate* isolate,
                          v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                          const CallState& call, v8::Local<v8::Value> value, uint32_t flags,
                          ivm_value_t** out) {
  if (flags & IVM_RESULT_DISCARD) {
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_UNDEFINED;
    *out = v.release();
    return nullptr;
  }
  if (flags & IVM_RESULT_REFERENCE) {
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_REFERENCE;
    v->reference = MakeReference(holder, isolate, context, value);
    *out = v.release();
    return nullptr;
  }
  bool external = (flags & IVM_RESULT_EXTERNAL_COPY) != 0;
  bool structured = external || (flags & IVM_RESULT_COPY) != 0;
  if (!external &&
      (!structured || (!value->IsObject() && !value->IsSymbol() && !value->IsBigInt()))) {
    ivm_error_t* err = ValueFromV8(isolate, context, value, out);
    if (err && !structured && value->IsObject()) {
      err->message += " (ask for a copy, an external copy or a reference)";
    }
    return err;
  }
  auto serialized = std::make_shared<Serialized>();
  WriteOptions options;
  options.transfer_out = (flags & IVM_RESULT_TRANSFER_OUT) != 0;
  bool threw = false;
  ivm_error_t* err =
      Serialize(holder, isolate, context, call, value, options, serialized.get(), &threw);
  if (err) return err;
  if (threw || try_catch.HasCaught() || try_catch.HasTerminated() || holder.Stopped(call) ||
      isolate->IsExecutionTerminating()) {
    return holder.Fail(context, try_catch, call);
  }
  auto v = std::make_unique<ivm_value>();
  if (external) {
    v->kind = IVM_VALUE_EXTERNAL_COPY;
    v->copy = std::make_shared<CopyData>(std::move(*serialized));
  } else {
    v->kind = IVM_VALUE_SERIALIZED;
    v->serialized = std::move(serialized);
  }
  *out = v.release();
  return nullptr;
}

}  // namespace ivm
