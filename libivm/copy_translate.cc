// copy_translate.cc — the writer's fast path: V8's serializer output,
// translated into the copy format.
//
// V8's own ValueSerializer walks plain data (objects, arrays, strings,
// numbers, Maps, Sets, Dates, RegExps, ArrayBuffers and their views) several
// times faster than the public API lets the general writer (copy_writer.cc)
// walk it. The Translator here rewrites that output, through the same
// pickle::Emitter, into the stream the general writer would have written.
//
// The fallback rule: anything it does not handle exactly as the general
// writer would (errors, host objects, boxed primitives, shared, transferred
// or resizable buffers, Proxies, values the writer refuses, dates outside
// Python's range, Map or Set keys it cannot classify) makes FastSerialize
// return false with nothing kept. Serialize then runs the general writer,
// which also names the path of a value it refuses.
#include "copy.h"
#include "pickle.h"
#include "stack.h"

#include <cstdlib>
#include <string_view>
#include <unordered_set>

namespace ivm {
namespace {

using namespace pickle;

// The tags of V8's serialization format (versions 13 to 15) read here.
namespace v8tag {
constexpr uint8_t kVersion = 0xFF, kPadding = 0, kUndefined = '_', kTheHole = '-', kNull = '0',
                  kTrue = 'T', kFalse = 'F', kInt32 = 'I', kUint32 = 'U', kDouble = 'N',
                  kBigInt = 'Z', kOneByteString = '"', kTwoByteString = 'c', kUtf8String = 'S',
                  kObjectReference = '^', kBeginObject = 'o', kEndObject = '{',
                  kBeginSparseArray = 'a', kEndSparseArray = '@', kBeginDenseArray = 'A',
                  kEndDenseArray = '$', kDate = 'D', kRegExp = 'R', kBeginMap = ';',
                  kEndMap = ':', kBeginSet = '\'', kEndSet = ',', kArrayBuffer = 'B',
                  kArrayBufferView = 'V';
}  // namespace v8tag

constexpr uint64_t kMinVersion = 13, kMaxVersion = 15;
constexpr uint64_t kViewFlagsVersion = 14;   // views carry a flags varint from here on
// Every this many values: is the call stopped, is the copy over its limit?
constexpr uint64_t kCheckInterval = 4096;
constexpr double kMaxNumericKey = 4294967295.0;   // 2**32 - 1

// The kind a view's subtag names; -1 for none.
int ViewKindOfSubtag(uint8_t subtag) {
  switch (subtag) {
#define IVM_VIEW_SUBTAG(kind, type, subtag) \
  case subtag: return kind;
    IVM_VIEW_KINDS(IVM_VIEW_SUBTAG)
#undef IVM_VIEW_SUBTAG
    default: return -1;
  }
}

bool IsStringTag(uint8_t tag) {
  return tag == v8tag::kOneByteString || tag == v8tag::kTwoByteString ||
         tag == v8tag::kUtf8String;
}

// The length of the ASCII prefix of p[0, n) (eight bytes at a time).
uint32_t AsciiPrefix(const uint8_t* p, uint32_t n) {
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w & 0x8080808080808080ull) break;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

// (AppendCodePoint, a code point as WTF-8: internal.h.)

// UTF-16 code units in host order, as WTF-8.
void AppendUtf16(std::string& out, const uint8_t* p, uint32_t bytes) {
  for (uint32_t i = 0; i < bytes; i += 2) {
    uint16_t unit;
    std::memcpy(&unit, p + i, 2);
    uint32_t u = unit;
    if (u >= 0xD800 && u < 0xDC00 && i + 2 < bytes) {
      uint16_t next;
      std::memcpy(&next, p + i + 2, 2);
      if (next >= 0xDC00 && next < 0xE000) {
        u = 0x10000 + ((u - 0xD800) << 10) + (next - 0xDC00);
        i += 2;
      }
    }
    AppendCodePoint(out, u);
  }
}

class Translator {
 public:
  Translator(IsolateHolder& holder, v8::Isolate* isolate, const CallState& call, Serialized* out)
      : holder_(holder), isolate_(isolate), call_(call), out_(out), e_(out->stream),
        limit_(CopyLimit()) {}

  // False for anything left to the general writer (*out then holds a part).
  bool Run(const uint8_t* data, size_t size) {
    p_ = data;
    end_ = data + size;
    out_->attachments.clear();
    ReserveStream(out_->stream, size);   // rarely longer than V8's form (keys are memoized)
    e_.Begin();
    if (!Expect(v8tag::kVersion) || !Varint(&version_) || version_ < kMinVersion ||
        version_ > kMaxVersion) {
      return false;
    }
    if (!Value(nullptr) || p_ != end_) return false;
    e_.End();
    return SizeOk();
  }

 private:
  // --- reading V8's format (little-endian varints, host-endian doubles)
  bool Expect(uint8_t tag) {
    if (p_ >= end_ || *p_ != tag) return false;
    ++p_;
    return true;
  }
  bool At(uint8_t tag) const { return p_ < end_ && *p_ == tag; }
  // The next tag, past padding.
  bool NextTag(uint8_t* tag) {
    do {
      if (p_ >= end_) return false;
      *tag = *p_++;
    } while (*tag == v8tag::kPadding);
    return true;
  }
  bool Varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) return false;
      uint8_t b = *p_++;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  bool Varint32(uint32_t* out) {
    uint64_t v;
    if (!Varint(&v) || v > 0xffffffffu) return false;
    *out = static_cast<uint32_t>(v);
    return true;
  }
  // An Int32 (zigzag) or Uint32 tag's value.
  bool Integer(uint8_t tag, int64_t* out) {
    uint64_t v;
    if (!Varint(&v)) return false;
    *out = tag == v8tag::kInt32 ? static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1))
                                : static_cast<int64_t>(v);
    return true;
  }
  bool Double(double* out) {
    if (end_ - p_ < 8) return false;
    std::memcpy(out, p_, 8);
    p_ += 8;
    return true;
  }
  // A string's WTF-8 form in text_: in place in V8's output when it is
  // ASCII (or UTF-8), else converted into scratch_.
  bool String(uint8_t tag) {
    uint32_t n;
    if (!Varint32(&n) || static_cast<size_t>(end_ - p_) < n) return false;
    const char* in_place = reinterpret_cast<const char*>(p_);
    if (tag == v8tag::kOneByteString) {   // Latin-1: its ASCII prefix as it is
      uint32_t ascii = AsciiPrefix(p_, n);
      if (ascii == n) {
        text_ = std::string_view(in_place, n);
      } else {
        scratch_.assign(in_place, ascii);
        for (uint32_t i = ascii; i < n; ++i) AppendCodePoint(scratch_, p_[i]);
        text_ = scratch_;
      }
    } else if (tag == v8tag::kTwoByteString) {
      if (n % 2) return false;
      scratch_.clear();
      AppendUtf16(scratch_, p_, n);
      text_ = scratch_;
    } else {
      text_ = std::string_view(in_place, n);
    }
    p_ += n;
    return true;
  }
  // A property key, past padding: a string (in text_), or else a number.
  bool PropertyKey(bool* is_number, double* number) {
    uint8_t tag;
    if (!NextTag(&tag)) return false;
    *is_number = !IsStringTag(tag);
    if (!*is_number) return String(tag);
    if (tag == v8tag::kDouble) return Double(number);
    int64_t n;
    if ((tag != v8tag::kInt32 && tag != v8tag::kUint32) || !Integer(tag, &n)) return false;
    *number = static_cast<double>(n);
    return true;
  }
  // Consumes a container's end tag and the `counts` varints after it.
  bool SkipEnd(int counts) {
    ++p_;
    uint32_t n;
    for (int i = 0; i < counts; ++i) {
      if (!Varint32(&n)) return false;
    }
    return true;
  }

  // --- checks (none makes an error: the general writer makes its own)
  bool Stopped() const { return holder_.Stopped(call_) || isolate_->IsExecutionTerminating(); }
  bool SizeOk() const { return e_.size() + attached_bytes_ <= limit_; }
  // Memoizes the object just written and gives it V8's next object id.
  uint32_t Remember() {
    ids_.push_back(e_.next_memo());
    return e_.Memoize();
  }

  // --- values
  // Reads one value and writes it. `key_class` (for Map and Set keys) is
  // set to the Python equality class of a primitive (pickle::key_class);
  // a key that is not a primitive is left to the general writer.
  bool Value(std::string* key_class) {
    if (++steps_ % kCheckInterval == 0 && (Stopped() || !SizeOk())) return false;
    e_.MaybeFrame();
    uint8_t tag;
    if (!NextTag(&tag)) return false;
    switch (tag) {
      case v8tag::kUndefined:
      case v8tag::kTheHole:
        e_.Undefined();
        if (key_class) *key_class = key_class::kUndefined;
        return true;
      case v8tag::kNull:
        e_.None();
        if (key_class) *key_class = key_class::kNull;
        return true;
      case v8tag::kTrue:
      case v8tag::kFalse:
        e_.Boolean(tag == v8tag::kTrue);
        if (key_class) *key_class = key_class::Boolean(tag == v8tag::kTrue);
        return true;
      case v8tag::kInt32:
      case v8tag::kUint32: return IntegerValue(tag, key_class);
      case v8tag::kDouble: return DoubleValue(key_class);
      case v8tag::kOneByteString:
      case v8tag::kTwoByteString:
      case v8tag::kUtf8String: return StringValue(tag, key_class);
      default: break;
    }
    if (key_class) return false;   // objects (and BigInts) as keys: the general path
    // Objects nest through here: the general writer's depth limit (it does
    // not count primitives), and the stack.
    struct Depth {
      int& d;
      explicit Depth(int& depth) : d(depth) { ++d; }
      ~Depth() { --d; }
    } depth(depth_);
    if (depth_ > kMaxDepth || !StackRoom()) return false;
    switch (tag) {
      case v8tag::kBigInt: return BigInt();
      case v8tag::kObjectReference: return ObjectReference();
      case v8tag::kBeginObject: return Object();
      case v8tag::kBeginDenseArray: return Array(true);
      case v8tag::kBeginSparseArray: return Array(false);
      case v8tag::kDate: return Date();
      case v8tag::kRegExp: return RegExp();
      case v8tag::kBeginMap: return Collection(true);
      case v8tag::kBeginSet: return Collection(false);
      case v8tag::kArrayBuffer: return Buffer();
      default:
        return false;   // boxed primitives, errors, host objects, other buffers, wasm
    }
  }
  bool IntegerValue(uint8_t tag, std::string* key_class) {
    int64_t n;
    if (!Integer(tag, &n)) return false;
    e_.Int(n);
    if (key_class) *key_class = key_class::Integer(n);
    return true;
  }
  bool DoubleValue(std::string* key_class) {
    double d;
    if (!Double(&d)) return false;
    e_.Number(d);
    if (key_class) {
      // Rare: non-integer and huge keys take the general path.
      if (std::isnan(d) || d != std::floor(d) || std::fabs(d) >= key_class::kMaxInt64) return false;
      *key_class = key_class::Integer(static_cast<int64_t>(d));
    }
    return true;
  }
  bool StringValue(uint8_t tag, std::string* key_class) {
    if (!String(tag)) return false;
    e_.Text(text_.data(), text_.size());
    if (key_class) *key_class = key_class::String(std::string(text_));
    return SizeOk();
  }
  bool BigInt() {
    uint64_t bitfield;
    if (!Varint(&bitfield)) return false;
    size_t bytes = static_cast<size_t>((bitfield >> 1) & 0x3fffffff);
    if (static_cast<size_t>(end_ - p_) < bytes || bytes % 8) return false;
    std::vector<uint64_t> words(bytes / 8);
    if (bytes) std::memcpy(words.data(), p_, bytes);
    p_ += bytes;
    e_.BigInt(TwosComplement((bitfield & 1) != 0, words.data(), words.size()));
    return true;
  }
  bool ObjectReference() {
    uint32_t id;
    if (!Varint32(&id) || id >= ids_.size()) return false;
    e_.Get(ids_[id]);
    if (At(v8tag::kArrayBufferView)) return View(ids_[id]);
    return true;
  }
  bool Object() {
    e_.NewDict();
    Remember();
    Batches items(e_, op::SETITEMS);
    for (uint32_t k = 0;; ++k) {
      if (p_ >= end_) return false;
      if (*p_ == v8tag::kEndObject) {
        items.Finish();
        return SkipEnd(1);
      }
      items.BeforeItem();
      if (!ShapeKey(k) || !Value(nullptr)) return false;
      items.AfterItem();
    }
  }
  // The object's k-th key. Rows of one shape have the same keys in the same
  // order, so the k-th key's bytes in V8's output are compared with those of
  // the last object's k-th key first: the same bytes are the same key, which
  // Key memoized then, written again as a memo Get without being decoded.
  bool ShapeKey(uint32_t k) {
    if (k >= kShapeKeys) return Key();
    ShapeEntry& known = shape_[k];
    size_t n = known.length;
    if (n != 0 && static_cast<size_t>(end_ - p_) >= n && SameBytes(p_, known.bytes, n)) {
      p_ += n;
      e_.Get(known.memo);
      return true;
    }
    const uint8_t* start = p_;
    if (!Key()) return false;
    known.memo = e_.last_key_memo();
    known.bytes = start;
    known.length = known.memo == kNoMemo ? 0 : static_cast<uint32_t>(p_ - start);
    return true;
  }
  // A property key as a Python str (indices become their decimal form).
  bool Key() {
    bool is_number;
    double d;
    if (!PropertyKey(&is_number, &d)) return false;
    if (is_number) {
      if (d != std::floor(d) || d < 0 || d > kMaxNumericKey) return false;
      scratch_ = std::to_string(static_cast<uint64_t>(d));
      text_ = scratch_;
    }
    e_.Key(text_.data(), text_.size());
    return true;
  }

  // The items of a list being written: in batches, holes as undefined.
  struct ListItems {
    Batches batches;
    uint32_t written = 0;
  };
  bool AppendValue(ListItems& items) {
    items.batches.BeforeItem();
    if (!Value(nullptr)) return false;
    items.batches.AfterItem();
    ++items.written;
    return true;
  }
  void AppendHoles(ListItems& items, uint32_t end) {
    while (items.written < end) {
      items.batches.BeforeItem();
      e_.Undefined();
      items.batches.AfterItem();
      ++items.written;
    }
  }
  bool Array(bool dense) {
    uint32_t length;
    if (!Varint32(&length) || length > kMaxArrayLength) return false;
    e_.NewList();
    Remember();
    ListItems items{Batches(e_, op::APPENDS)};
    if (dense) {
      for (uint32_t i = 0; i < length; ++i) {
        if (!AppendValue(items)) return false;
      }
    }
    const uint8_t end_tag = dense ? v8tag::kEndDenseArray : v8tag::kEndSparseArray;
    for (;;) {
      if (p_ >= end_) return false;
      if (*p_ == end_tag) {
        AppendHoles(items, length);
        items.batches.Finish();
        return SkipEnd(2);
      }
      if (!ArrayProperty(dense, length, items)) return false;
    }
  }
  // A property after an array's elements: an element of a sparse array, or
  // a named property, dropped as the general writer drops it (its value is
  // still read, written and popped).
  bool ArrayProperty(bool dense, uint32_t length, ListItems& items) {
    bool is_number;
    double d;
    if (!PropertyKey(&is_number, &d)) return false;
    if (!dense && is_number && d == std::floor(d) && d >= 0 && d < length) {
      uint32_t index = static_cast<uint32_t>(d);
      if (index < items.written) return false;   // out of order: the general path
      AppendHoles(items, index);
      return AppendValue(items);
    }
    if (!Value(nullptr)) return false;
    e_.Byte(op::POP);   // inside an open batch too: it pops the value alone
    return true;
  }
  bool Date() {
    double ms;
    if (!Double(&ms) || std::isnan(ms) || !DateInRange(ms)) return false;
    e_.Date(ms);
    Remember();
    return true;
  }
  bool RegExp() {
    uint8_t tag;
    uint32_t flags;
    if (!NextTag(&tag) || !IsStringTag(tag) || !String(tag)) return false;
    if (!Varint32(&flags) || (flags & ~0xffu)) return false;
    e_.RegExp(std::string(text_), RegExpFlags(static_cast<int>(flags)));
    Remember();
    return true;
  }
  bool Collection(bool is_map) {
    if (is_map) {
      e_.NewMap();
    } else {
      e_.NewSet();
    }
    Remember();
    Batches items(e_, is_map ? op::SETITEMS : op::ADDITEMS);
    std::unordered_set<std::string> seen;
    const uint8_t end_tag = is_map ? v8tag::kEndMap : v8tag::kEndSet;
    for (;;) {
      if (p_ >= end_) return false;
      if (*p_ == end_tag) {
        items.Finish();
        return SkipEnd(1);
      }
      items.BeforeItem();
      std::string key;
      if (!Value(&key) || key.empty() || !seen.insert(key).second) return false;
      if (is_map && !Value(nullptr)) return false;
      items.AfterItem();
    }
  }
  bool Buffer() {
    uint32_t n;
    if (!Varint32(&n) || static_cast<size_t>(end_ - p_) < n) return false;
    attached_bytes_ += n;
    if (!SizeOk()) return false;
    Attachment a;
    if (!Attachment::CopyOf(p_, n, &a)) return false;
    p_ += n;
    e_.Attached(Tag::kBuf, out_->Attach(std::move(a)));
    uint32_t memo = Remember();
    if (At(v8tag::kArrayBufferView)) return View(memo);
    return true;
  }
  // An ArrayBufferView right after its buffer (memo entry `buffer`, on the
  // stack): the buffer is replaced by _view(buffer, kind, offset, length).
  bool View(uint32_t buffer) {
    ++p_;   // kArrayBufferView
    if (p_ >= end_) return false;
    int kind = ViewKindOfSubtag(*p_++);
    uint32_t offset, length, flags = 0;
    if (!Varint32(&offset) || !Varint32(&length)) return false;
    if (version_ >= kViewFlagsVersion && !Varint32(&flags)) return false;
    if (flags != 0) return false;   // length-tracking or resizable-backed views
    if (kind < 0) return false;
    e_.Byte(op::POP);
    e_.BeginView();
    e_.Get(buffer);
    e_.EndView(kind, offset, length);
    Remember();
    return true;
  }

  IsolateHolder& holder_;
  v8::Isolate* isolate_;
  const CallState& call_;
  Serialized* out_;
  Emitter e_;
  size_t limit_;
  size_t attached_bytes_ = 0;
  const uint8_t* p_ = nullptr;
  const uint8_t* end_ = nullptr;
  uint64_t version_ = 0;
  uint64_t steps_ = 0;
  int depth_ = 0;
  std::vector<uint32_t> ids_;   // V8 object id -> memo index
  // ShapeKey's memory: the k-th key of the object read last, its bytes (in
  // V8's output, which outlives the translator) and its memo index.
  struct ShapeEntry {
    const uint8_t* bytes = nullptr;
    uint32_t length = 0;   // 0: none
    uint32_t memo = kNoMemo;
  };
  static constexpr uint32_t kShapeKeys = 16;
  ShapeEntry shape_[kShapeKeys];
  std::string scratch_;
  std::string_view text_;   // String's result
};

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
    return Refuse();
  }
  v8::Maybe<uint32_t> GetWasmModuleTransferId(v8::Isolate*,
                                              v8::Local<v8::WasmModuleObject>) override {
    return Refuse();
  }
  // The output's buffer: a kept one when it fits (copy_buffers.cc), then grown by realloc.
  void* ReallocateBufferMemory(void* old_buffer, size_t size, size_t* actual_size) override {
    void* p;
    if (old_buffer == nullptr) {
      p = TakeRawBuffer(size, &capacity);
    } else {
      p = std::realloc(old_buffer, size);
      if (p != nullptr) capacity = size;
    }
    *actual_size = capacity;
    return p;
  }
  void FreeBufferMemory(void* buffer) override { KeepRawBuffer(buffer, capacity); }
  bool failed = false;
  size_t capacity = 0;   // of the buffer handed out last

 private:
  v8::Maybe<uint32_t> Refuse() {
    failed = true;
    isolate_->ThrowException(v8::Null(isolate_));
    return v8::Nothing<uint32_t>();
  }
  v8::Isolate* isolate_;
};

}  // namespace

bool FastSerialize(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                   const CallState& call, v8::Local<v8::Value> value, Serialized* out,
                   bool* threw) {
  if (!value->IsObject() || value->IsProxy()) return false;
  std::pair<uint8_t*, size_t> buffer{nullptr, 0};
  size_t capacity = 0;
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
    capacity = delegate.capacity;
  }
  bool ok;
  {
    Translator translator(holder, isolate, call, out);   // its emitter settles the stream
    ok = translator.Run(buffer.first, buffer.second);
  }
  KeepRawBuffer(buffer.first, capacity);
  if (!ok) {
    out->stream.clear();
    out->attachments.clear();
  }
  return ok;
}

}  // namespace ivm
