// copy_reader.cc — the reader: a copy stream (plus attachments) to a
// JavaScript value in the current context.
//
// A small pickle machine for the copy format's opcodes (pickle.h): a stack
// with marks, a memo, and the `ivm._copy` calls. Streams come from the host
// and may be hostile: every opcode checks what it takes from the stack and
// the stream, sizes are checked against the isolate's memory before V8
// allocates, and any malformed stream ends as a TRANSFER error, never a
// crash (tests/test_copy_fuzz.py). Dicts become Objects when all their keys
// are strings and Maps otherwise; attachments become ArrayBuffers,
// ExternalCopy contents, References and host functions.
#include "callback.h"
#include "copy.h"
#include "pickle.h"
#include "reference.h"
#include "remote.h"
#include "wrapper.h"

#include <cstring>

namespace ivm {
namespace {

using namespace pickle;

constexpr uint32_t kStopCheckInterval = 1024;   // opcodes between two checks of the call's stop
constexpr uint32_t kMaxMemoGap = 1000000;       // how far past the memo's end a PUT may reach
constexpr size_t kMaxLongBytes = 1u << 21;      // LONG data of a BigInt
constexpr size_t kInternalizeLength = 16;       // shorter strings are internalized
constexpr int kMaxNesting = 32;                 // ExternalCopy markers inside markers
constexpr double kMaxViewField = 9e15;          // a `_view` offset or length
constexpr int64_t kMaxSafe = static_cast<int64_t>(kMaxSafeInteger);

// The first key a dict receives, found by following the stack's height
// above the dict from just after its EMPTY_DICT (without reading values).
struct KeyScan {
  static constexpr int kMaxSteps = 4096;   // past this, undecided: no key
  const unsigned char* p;
  const unsigned char* end;
  bool composite_key = false;   // the key was built by several opcodes

  // The opcode that pushed the dict's first key, or NULL when the dict is
  // consumed (or the stream ends, or the scan gives up) before any key.
  const unsigned char* FirstKey() {
    int height = 0;                 // entries above the dict
    std::vector<int> marks;         // heights of the marks set above it
    const unsigned char* key = nullptr;
    for (int step = 0; step < kMaxSteps && p < end; ++step) {
      const unsigned char* at = p;
      unsigned char c = *p++;
      int pushed = 0, popped = 0;   // entries
      if (c == op::MARK) {
        marks.push_back(height);
        continue;
      }
      if (c == op::APPENDS || c == op::SETITEMS || c == op::ADDITEMS || c == op::POP_MARK ||
          c == op::TUPLE || c == op::FROZENSET) {
        if (marks.empty()) return nullptr;   // a mark below the dict: it is consumed
        int mark = marks.back();
        marks.pop_back();
        if (c == op::SETITEMS && mark == 0 && height > 0) return key;   // the dict's batch
        popped = height - mark;
        pushed = c == op::TUPLE || c == op::FROZENSET;
      } else if (c == op::SETITEM) {
        if (height == 2 && marks.empty()) return key;
        popped = 2;
      } else if (!Effect(c, &pushed, &popped)) {
        return nullptr;
      }
      if (popped > height) return nullptr;   // the dict itself is taken
      if (height == 0 && pushed > popped) {
        key = at;
        composite_key = false;
      } else if (popped > 0 && pushed > 0 && height - popped + pushed == 1) {
        composite_key = true;   // entry 1 is now made of several entries (a tuple, a call)
      }
      height += pushed - popped;
    }
    return nullptr;
  }

  // The stack effect of the other opcodes, past their operands; false for
  // STOP, an unknown opcode or a truncated one.
  bool Effect(unsigned char c, int* pushed, int* popped) {
    switch (c) {
      case op::PROTO: return Skip(1);
      case op::FRAME: return Skip(8);
      case op::MEMOIZE: return true;
      case op::BINPUT: return Skip(1);
      case op::LONG_BINPUT: return Skip(4);
      case op::POP: *popped = 1; return true;
      case op::APPEND: *popped = 1; return true;
      case op::TUPLE1: *popped = 1, *pushed = 1; return true;
      case op::TUPLE2: *popped = 2, *pushed = 1; return true;
      case op::TUPLE3: *popped = 3, *pushed = 1; return true;
      case op::STACK_GLOBAL:
      case op::REDUCE: *popped = 2, *pushed = 1; return true;
      default: break;
    }
    *pushed = 1;
    switch (c) {
      case op::NONE: case op::NEWTRUE: case op::NEWFALSE:
      case op::EMPTY_LIST: case op::EMPTY_TUPLE: case op::EMPTY_DICT: case op::EMPTY_SET:
        return true;
      case op::BININT: return Skip(4);
      case op::BININT1: return Skip(1);
      case op::BININT2: return Skip(2);
      case op::BINFLOAT: return Skip(8);
      case op::BINGET: return Skip(1);
      case op::LONG_BINGET: return Skip(4);
      case op::LONG1: case op::SHORT_BINUNICODE: case op::SHORT_BINBYTES: return Sized(1);
      case op::LONG4: case op::BINUNICODE: case op::BINBYTES: return Sized(4);
      case op::BINUNICODE8: case op::BINBYTES8: case op::BYTEARRAY8: return Sized(8);
      case op::GLOBAL: return Line() && Line();
      default: return false;
    }
  }
  bool Skip(uint64_t n) {
    if (static_cast<uint64_t>(end - p) < n) return false;
    p += n;
    return true;
  }
  bool Sized(int width) {   // a little-endian length of `width` bytes, then that many
    if (end - p < width) return false;
    uint64_t n = 0;
    for (int i = 0; i < width; ++i) n |= static_cast<uint64_t>(p[i]) << (8 * i);
    p += width;
    return Skip(n);
  }
  bool Line() {
    const auto* nl = static_cast<const unsigned char*>(std::memchr(p, '\n', end - p));
    if (nl == nullptr) return false;
    p = nl + 1;
    return true;
  }
};

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

  // The same for a stream that is only `_att(0)` (kAttachmentStream, with one attachment:
  // a marker passed by itself), without parsing it: the value its opcodes would make.
  ivm_error_t* RunAttached(v8::Local<v8::Value>* out) {
    bool ok = Attached(&in_.attachments[0]) && Stop(out);
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
  // A V8 call failed: an exception is pending.
  bool Threw() {
    exception_ = true;
    return false;
  }
  bool NoRoomForBuffer(size_t n) {
    return Fail("an ArrayBuffer of " + std::to_string(n) +
                " bytes does not fit in the isolate's memory limit");
  }
  bool Need(size_t n) { return static_cast<size_t>(end_ - p_) >= n; }
  uint64_t ReadLe(int n) {
    uint64_t v = LoadLe(p_, n);
    p_ += n;
    return v;
  }
  bool Push(v8::Local<v8::Value> v) {
    Entry e;
    e.value = v;
    stack_.push_back(e);
    return true;
  }
  // Pushes a V8 call's result; false with the exception pending if it failed.
  template <class T>
  bool PushResult(v8::MaybeLocal<T> maybe) {
    v8::Local<T> value;
    if (!maybe.ToLocal(&value)) return Threw();
    return Push(value);
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
  bool Text(size_t n) {
    if (!Need(n)) return false;
    ivm_error_t* err = nullptr;   // NewString checks the heap's room
    v8::Local<v8::String> str;
    // Short strings are internalized: most are property names, which V8
    // would otherwise internalize on every use.
    if (!NewString(isolate_, reinterpret_cast<const char*>(p_), n, &err, n <= kInternalizeLength)
             .ToLocal(&str)) {
      if (err) {
        error_ = err;
        return false;
      }
      return Fail("string too long");
    }
    p_ += n;
    return Push(str);
  }
  bool Bytes(size_t n) {
    if (!Need(n)) return false;
    v8::Local<v8::Value> buf;
    if (!NewArrayBuffer(p_, n, &buf)) return false;
    p_ += n;
    return Push(buf);
  }
  bool NewArrayBuffer(const void* data, size_t n, v8::Local<v8::Value>* out) {
    std::shared_ptr<v8::BackingStore> store = holder_.NewBuffer(data, n);
    if (!store) return NoRoomForBuffer(n);
    *out = v8::ArrayBuffer::New(isolate_, std::move(store));
    return true;
  }
  // LONG1 or LONG4 data (n bytes of two's complement): a number when it is
  // a safe integer, otherwise a BigInt.
  bool Long(size_t n) {
    if (!Need(n)) return false;
    if (n > 8) return LongBigInt(n);
    uint64_t u = 0;
    for (size_t i = 0; i < n; ++i) u |= static_cast<uint64_t>(p_[i]) << (8 * i);
    if (n > 0 && n < 8 && (p_[n - 1] & 0x80)) u |= ~0ull << (8 * n);   // sign-extend
    p_ += n;
    int64_t v = static_cast<int64_t>(u);
    if (v >= -kMaxSafe && v <= kMaxSafe) return Push(v8::Number::New(isolate_, static_cast<double>(v)));
    return Push(v8::BigInt::New(isolate_, v));
  }
  bool LongBigInt(size_t n) {
    if (n > kMaxLongBytes) return Fail("integer too large for a BigInt");
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
      return Threw();
    }
    // A value within ±(2**53-1) written with many bytes is still a number.
    bool lossless = false;
    int64_t small = big->Int64Value(&lossless);
    if (lossless && small >= -kMaxSafe && small <= kMaxSafe) {
      return Push(v8::Number::New(isolate_, static_cast<double>(small)));
    }
    return Push(big);
  }

  // Looks ahead from a dict's EMPTY_DICT at its first key, so that a dict
  // whose keys are not strings is a Map from the start (and can contain
  // itself). Later keys that are not strings convert it (SettleDict).
  // The entries that follow a dict are its items only if they reach it: a
  // SETITEMS whose MARK is just above it, or a SETITEM two entries above it.
  // Otherwise (an empty dict followed by its siblings: `[{}, None]`) they are
  // not its keys. KeyScan follows the stack's height above the dict to tell.
  bool FirstKeyIsNotString() const {
    KeyScan scan{p_, end_};
    const unsigned char* key = scan.FirstKey();
    if (key == nullptr || scan.composite_key) return key != nullptr;
    switch (*key) {
      case op::SHORT_BINUNICODE:
      case op::BINUNICODE:
      case op::BINUNICODE8:
        return false;
      case op::BINGET:
      case op::LONG_BINGET: {
        size_t n = *key == op::BINGET ? 1 : 4;
        if (static_cast<size_t>(end_ - key) < n + 1) return false;
        uint64_t slot = 0;
        for (size_t i = 0; i < n; ++i) slot |= static_cast<uint64_t>(key[1 + i]) << (8 * i);
        if (slot >= memo_.size()) return false;
        const Entry& e = memo_[slot];
        return e.kind == Entry::kValue && !e.value.IsEmpty() && !e.value->IsString();
      }
      default:
        return true;   // numbers, None, booleans, bytes, containers, tags: not a str
    }
  }

  // Settles the JS form of the dict `target` given the keys about to be set:
  // all-str keys keep an Object, others make it a Map.
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
             .ToLocal(&names)) return Threw();
    for (uint32_t i = 0; i < names->Length(); ++i) {
      v8::Local<v8::Value> k, v;
      if (!names->Get(context_, i).ToLocal(&k) || !object->Get(context_, k).ToLocal(&v) ||
          map->Set(context_, k, v).IsEmpty()) return Threw();
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
        if (!map->Has(context_, stack_[i].value).To(&has)) return Threw();
        if (has) {
          return Fail("two keys of a dict are the same Map key in JavaScript (e.g. several NaN)");
        }
        if (map->Set(context_, stack_[i].value, stack_[i + 1].value).IsEmpty()) return Threw();
      }
    } else if (target.dict < 0) {
      return false;   // SETITEMS on something that is not a dict
    } else {
      for (size_t i = start; i < stack_.size(); i += 2) {
        bool ok = false;
        if (!obj->CreateDataProperty(context_, stack_[i].value.As<v8::Name>(),
                                     stack_[i + 1].value)
                 .To(&ok)) return Threw();
      }
    }
    stack_.resize(start);
    return true;
  }

  bool AddItems(v8::Local<v8::Set> set, size_t start) {
    if (!AllValues(start)) return false;
    for (size_t i = start; i < stack_.size(); ++i) {
      bool has = false;
      if (!set->Has(context_, stack_[i].value).To(&has)) return Threw();
      if (has) {
        return Fail("two items of a set are the same Set item in JavaScript (e.g. several NaN)");
      }
      if (set->Add(context_, stack_[i].value).IsEmpty()) return Threw();
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
               .To(&ok)) return Threw();
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
    return Push(v8::Array::New(isolate_, items.data(), n));
  }

  bool Global(const std::string& module, const std::string& name) {
    if (module == kModule) {
      for (int t = 1; t < static_cast<int>(Tag::kCount); ++t) {
        if (name == kTagNames[t]) {
          Entry e;
          e.kind = Entry::kTag;
          e.tag = static_cast<Tag>(t);
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

  // REDUCE: a call of an `ivm._copy` name with a tuple of arguments.
  bool Reduce() {
    Entry args, fn;
    if (!Pop(&args) || !Pop(&fn) || fn.kind != Entry::kTag || args.kind != Entry::kValue ||
        !args.value->IsArray() || args.list) {
      return false;
    }
    v8::Local<v8::Array> tuple = args.value.As<v8::Array>();
    std::vector<v8::Local<v8::Value>> arg(tuple->Length());
    for (uint32_t i = 0; i < arg.size(); ++i) {
      if (!tuple->Get(context_, i).ToLocal(&arg[i])) return Threw();
    }
    return Call(fn.tag, arg);
  }
  bool Call(Tag tag, const std::vector<v8::Local<v8::Value>>& arg) {
    switch (tag) {
      case Tag::kUndefined: return arg.empty() && Push(v8::Undefined(isolate_));
      case Tag::kBigInt: return arg.size() == 1 && BigInt(arg[0]);
      case Tag::kMap: return arg.empty() && PushDict(true);
      case Tag::kRegExp: return RegExp(arg);
      case Tag::kDate:
        return arg.size() == 1 && arg[0]->IsNumber() &&
               PushResult(v8::Date::New(context_, arg[0].As<v8::Number>()->Value()));
      case Tag::kView: return View(arg);
      case Tag::kBuf: return arg.size() == 1 && Buffer(AttachmentAt(arg[0]));
      case Tag::kSab: return arg.size() == 1 && SharedBuffer(AttachmentAt(arg[0]));
      case Tag::kAtt: return arg.size() == 1 && Attached(AttachmentAt(arg[0]));
      case Tag::kError: return Error(arg);
      case Tag::kNone:
      case Tag::kCount: break;
    }
    return false;
  }
  // `JSBigInt(n)`: n as a BigInt, whether the stream wrote it as an int
  // that fits a number or not.
  bool BigInt(v8::Local<v8::Value> n) {
    if (n->IsBigInt()) return Push(n);
    if (!n->IsNumber()) return false;
    double d = n.As<v8::Number>()->Value();
    if (d != std::floor(d) || std::fabs(d) > kMaxSafeInteger) return false;
    return Push(v8::BigInt::New(isolate_, static_cast<int64_t>(d)));
  }
  // `_buf(i)`: an ArrayBuffer with attachment i's bytes (moved into the
  // isolate when the copy is transferred in).
  bool Buffer(const Attachment* att) {
    if (att == nullptr ||
        (att->kind != Attachment::kBuffer && att->kind != Attachment::kBorrowed)) {
      return false;
    }
    if (transferring_ && att->moved && att->store) {
      v8::Local<v8::ArrayBuffer> adopted;
      if (!holder_.AdoptBuffer(att->store).ToLocal(&adopted)) {
        return NoRoomForBuffer(att->ByteLength());
      }
      return Push(adopted);
    }
    v8::Local<v8::Value> buf;
    return NewArrayBuffer(att->Data(), att->ByteLength(), &buf) && Push(buf);
  }
  // `_sab(i)`: a SharedArrayBuffer sharing attachment i's store, charged to
  // this isolate's budget unless it came from this isolate.
  bool SharedBuffer(const Attachment* att) {
    if (att == nullptr || att->kind != Attachment::kSharedBuffer || !att->store) return false;
    if (att->origin == holder_.unique_id()) {
      return Push(v8::SharedArrayBuffer::New(isolate_, att->store));
    }
    std::shared_ptr<v8::BackingStore> store = holder_.ShareBuffer(att->store);
    if (!store) return NoRoomForBuffer(att->ByteLength());
    return Push(v8::SharedArrayBuffer::New(isolate_, std::move(store)));
  }
  // `_att(i)`: an ExternalCopy's value (or an ExternalCopy object), a
  // Reference (or its value), or a host function (or a Reference to it).
  bool Attached(const Attachment* att) {
    if (att == nullptr) return false;
    switch (att->kind) {
      case Attachment::kCopy:
        if (!att->copy) return false;
        if (att->flags & IVM_COPY_AS_OBJECT) {
          return PushResult(WrapCopy(holder_, isolate_, context_, att->copy));
        }
        return InsertCopy(*att);
      case Attachment::kReference: return att->reference && InsertReference(*att);
      case Attachment::kCallback:
        if (!att->callback) return false;
        if (att->flags & IVM_ATTACH_AS_REFERENCE) {
          const char* type = (att->flags & IVM_ATTACH_NOT_CALLABLE) ? "object" : "function";
          return PushResult(WrapHostReference(holder_, isolate_, context_, att->callback, type));
        }
        return PushResult(MakeHostFunction(holder_, isolate_, context_, att->callback));
      default: return false;
    }
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
    return PushResult(
        v8::RegExp::New(context_, arg[0].As<v8::String>(), static_cast<v8::RegExp::Flags>(f)));
  }

  bool InsertReference(const Attachment& att) {
    const ReferenceData& ref = *att.reference;
    if (ref.remote) {   // rref: References do not cross between processes
      if (error_ == nullptr) {
        error_ = remote::CrossProcess("A Reference into a worker process cannot enter an "
                                      "inline isolate");
      }
      return false;
    }
    if (ref.record->released()) return Fail("the Reference has been released");
    if (!(att.flags & IVM_ATTACH_DEREF)) {
      return PushResult(WrapReference(holder_, isolate_, context_, ref));
    }
    if (ref.holder.get() != &holder_) {
      return Fail("deref_into() of a Reference can only be used in the isolate the Reference "
                  "belongs to");
    }
    if (!Push(ref.record->value.Get(isolate_))) return false;
    if (att.flags & IVM_ATTACH_RELEASE) holder_.Release(ref.record);   // used once, as asked
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
    if (nesting_ >= kMaxNesting) return Fail("ExternalCopy markers nested too deeply");
    Reader inner(holder_, isolate_, context_, call_, *source);
    inner.transferring_ = transfer;
    inner.nesting_ = nesting_ + 1;
    v8::Local<v8::Value> value;
    error_ = inner.Run(&value);
    if (error_ || value.IsEmpty()) {
      exception_ = inner.exception_;
      return false;
    }
    return Push(value);
  }

  bool View(const std::vector<v8::Local<v8::Value>>& arg) {
    if (arg.size() != 4 || !arg[1]->IsNumber() || !arg[2]->IsNumber() || !arg[3]->IsNumber()) {
      return false;
    }
    v8::Local<v8::Value> buf = arg[0];
    double kd = arg[1].As<v8::Number>()->Value(), od = arg[2].As<v8::Number>()->Value(),
           ld = arg[3].As<v8::Number>()->Value();
    if (!(kd >= 0 && kd < static_cast<double>(kViewKinds) && od >= 0 && ld >= 0 &&
          od <= kMaxViewField && ld <= kMaxViewField)) {
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
    switch (kind) {
#define IVM_VIEW_NEW(kind, type, subtag)                                          \
  case kind:                                                                      \
    view = shared ? v8::type::New(buf.As<v8::SharedArrayBuffer>(), offset, length) \
                  : v8::type::New(buf.As<v8::ArrayBuffer>(), offset, length);      \
    break;
      IVM_VIEW_KINDS(IVM_VIEW_NEW)
#undef IVM_VIEW_NEW
      default: return false;
    }
    return Push(view);
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
      return Threw();
    }
    return Push(error);
  }

  // MEMOIZE, BINPUT, LONG_BINPUT: the top of the stack into a memo slot
  // (ignored with an empty stack, or a slot far past the memo's end).
  bool Memo(uint32_t slot) {
    if (stack_.empty() || slot > memo_.size() + kMaxMemoGap) return true;
    if (memo_.size() <= slot) memo_.resize(slot + 1);
    memo_[slot] = stack_.back();
    if (stack_.back().dict >= 0) dicts_[stack_.back().dict].memo_slots.push_back(slot);
    return true;
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
      if (++steps % kStopCheckInterval == 0 &&
          (holder_.Stopped(call_) || isolate_->IsExecutionTerminating())) {
        return Threw();
      }
      unsigned char c = *p_++;
      if (c == op::STOP) return Stop(out);
      if (!Step(c) || error_ || exception_) return false;
    }
    return false;
  }
  // STOP: the stream's value is the one entry left on the stack.
  bool Stop(v8::Local<v8::Value>* out) {
    if (stack_.size() != 1 || !marks_.empty() || stack_[0].kind != Entry::kValue) return false;
    *out = stack_[0].value;
    return true;
  }
  // One opcode. This is the format's dispatch table, one case per opcode of
  // pickle.h, so it stays one switch (and longer than most functions): each
  // case checks what the opcode takes from the stream, then makes one call.
  bool Step(unsigned char c) {
    size_t start;
    switch (c) {
      case op::PROTO: return Skip(1);
      case op::FRAME: return Skip(8);
      case op::NONE: return Push(v8::Null(isolate_));
      case op::NEWTRUE: return Push(v8::True(isolate_));
      case op::NEWFALSE: return Push(v8::False(isolate_));
      case op::BININT: return Integer(4);
      case op::BININT1: return Integer(1);
      case op::BININT2: return Integer(2);
      case op::LONG1: return Need(1) && Long(ReadLe(1));
      case op::LONG4: return Need(4) && Long(ReadLe(4));
      case op::BINFLOAT: return Float();
      case op::SHORT_BINUNICODE: return Need(1) && Text(ReadLe(1));
      case op::BINUNICODE: return Need(4) && Text(ReadLe(4));
      case op::BINUNICODE8: return Need(8) && Text(ReadLe(8));
      case op::SHORT_BINBYTES: return Need(1) && Bytes(ReadLe(1));
      case op::BINBYTES: return Need(4) && Bytes(ReadLe(4));
      case op::BINBYTES8:
      case op::BYTEARRAY8: return Need(8) && Bytes(ReadLe(8));
      case op::EMPTY_LIST: return PushList();
      case op::EMPTY_TUPLE: return Push(v8::Array::New(isolate_));
      case op::EMPTY_SET: return Push(v8::Set::New(isolate_));
      case op::EMPTY_DICT: return PushDict(FirstKeyIsNotString());
      case op::MARK: marks_.push_back(stack_.size()); return true;
      case op::APPEND: return stack_.size() >= 2 && Append(stack_.size() - 1);
      case op::APPENDS: return PopMark(&start) && Append(start);
      case op::SETITEM: return stack_.size() >= 3 && SetItems(stack_.size() - 2);
      case op::SETITEMS: return PopMark(&start) && SetItems(start);
      case op::ADDITEMS: return PopMark(&start) && AddItemsToSet(start);
      case op::FROZENSET: return PopMark(&start) && FrozenSet(start);
      case op::TUPLE1:
      case op::TUPLE2:
      case op::TUPLE3: return TupleOfTop(c - op::TUPLE1 + 1);
      case op::TUPLE: return PopMark(&start) && Tuple(start);
      case op::POP: return PopOne();
      case op::POP_MARK:
        if (!PopMark(&start)) return false;
        stack_.resize(start);
        return true;
      case op::MEMOIZE: return Memo(next_memo_++);
      case op::BINPUT: return Need(1) && Memo(static_cast<uint32_t>(ReadLe(1)));
      case op::LONG_BINPUT: return Need(4) && Memo(static_cast<uint32_t>(ReadLe(4)));
      case op::BINGET: return Need(1) && Recall(ReadLe(1));
      case op::LONG_BINGET: return Need(4) && Recall(ReadLe(4));
      case op::GLOBAL: return GlobalLines();
      case op::STACK_GLOBAL: return StackGlobal();
      case op::REDUCE: return Reduce();
      default: return Fail("unsupported opcode " + std::to_string(c));
    }
  }
  bool Skip(size_t n) {
    if (!Need(n)) return false;
    p_ += n;
    return true;
  }
  // BININT1, BININT2 (unsigned) or BININT (signed): an n-byte integer.
  bool Integer(int n) {
    if (!Need(n)) return false;
    return Push(v8::Integer::New(isolate_, static_cast<int32_t>(static_cast<uint32_t>(ReadLe(n)))));
  }
  bool Float() {   // big-endian
    if (!Need(8)) return false;
    double d = LoadFloat(p_);
    p_ += 8;
    return Push(v8::Number::New(isolate_, d));
  }
  bool PushList() {
    Entry e;
    e.value = v8::Array::New(isolate_);
    e.list = true;
    stack_.push_back(e);
    return true;
  }
  // A dict: an Object while its keys are strings; a Map from the start
  // (settled) when `is_map`.
  bool PushDict(bool is_map) {
    Entry e;
    e.dict = static_cast<int>(dicts_.size());
    Dict d;
    d.is_map = is_map;
    d.settled = is_map;
    dicts_.push_back(d);
    if (is_map) {
      e.value = v8::Map::New(isolate_);
    } else {
      e.value = v8::Object::New(isolate_);
    }
    stack_.push_back(e);
    return true;
  }
  bool AddItemsToSet(size_t start) {
    if (start == 0 || stack_[start - 1].kind != Entry::kValue || !stack_[start - 1].value->IsSet()) {
      return false;
    }
    return AddItems(stack_[start - 1].value.As<v8::Set>(), start);
  }
  bool FrozenSet(size_t start) {
    v8::Local<v8::Set> set = v8::Set::New(isolate_);
    return AddItems(set, start) && Push(set);
  }
  // TUPLE1 to TUPLE3: a tuple of the top k entries (above the last mark).
  bool TupleOfTop(size_t k) {
    size_t floor = marks_.empty() ? 0 : marks_.back();
    return stack_.size() >= floor + k && Tuple(stack_.size() - k);
  }
  bool PopOne() {
    Entry e;
    if (Pop(&e)) return true;
    if (marks_.empty() || marks_.back() != stack_.size()) return false;
    marks_.pop_back();   // POP of a mark
    return true;
  }
  // GLOBAL: "module\nname\n".
  bool GlobalLines() {
    const auto* nl1 = static_cast<const unsigned char*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl1) return false;
    const auto* nl2 =
        static_cast<const unsigned char*>(std::memchr(nl1 + 1, '\n', end_ - nl1 - 1));
    if (!nl2) return false;
    std::string module(reinterpret_cast<const char*>(p_), nl1 - p_);
    std::string name(reinterpret_cast<const char*>(nl1 + 1), nl2 - nl1 - 1);
    p_ = nl2 + 1;
    return Global(module, name);
  }
  // STACK_GLOBAL: module and name as two strs on the stack.
  bool StackGlobal() {
    Entry name, module;
    if (!Pop(&name) || !Pop(&module) || name.kind != Entry::kValue ||
        module.kind != Entry::kValue || !name.value->IsString() || !module.value->IsString()) {
      return false;
    }
    std::string m, nm;
    compat::AppendWtf8(isolate_, module.value.As<v8::String>(), m);
    compat::AppendWtf8(isolate_, name.value.As<v8::String>(), nm);
    return Global(m, nm);
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
  bool attached = in.attachments.size() == 1 && in.stream.size() == kAttachmentStreamLength &&
                  std::memcmp(in.stream.data(), kAttachmentStream, kAttachmentStreamLength) == 0;
  if (!attached && DeserializeJson(holder, isolate, context, call, in, out)) return nullptr;
  Reader reader(holder, isolate, context, call, in);
  *out = v8::Local<v8::Value>();
  v8::Local<v8::Value> value;
  ivm_error_t* err = attached ? reader.RunAttached(&value) : reader.Run(&value);
  if (err) return err;
  *out = value;
  return nullptr;
}

}  // namespace ivm
