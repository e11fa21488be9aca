// copy_writer.cc — the general writer: a JavaScript value to a copy stream
// plus attachments, through the V8 API.
//
// Serialize tries the fast path first (copy_translate.cc) and runs this
// writer for what it leaves: values that need a check or a refusal with a
// path ("a function at $.a[3] cannot be copied"), errors, wrappers of
// References and ExternalCopies, shared buffers, and transfers. Both write
// the same bytes for the same value, through pickle::Emitter. Getters run
// here (under the call's timeout); the writer checks the copy size limit and
// the call's stop after each batch of items.
#include "copy.h"
#include "pickle.h"
#include "stack.h"
#include "wrapper.h"

#include <cstdio>
#include <unordered_set>

namespace ivm {
namespace {

using namespace pickle;

constexpr size_t kRecentKeys = 32;   // property keys remembered by handle
constexpr size_t kPathTail = 40;     // path segments an error shows at most
constexpr size_t kMaxKeyText = 40;   // bytes of a key an error path shows

const char* StandardErrorName(const std::string& name) {
  static const char* const kNames[] = {"Error",       "EvalError", "RangeError",
                                       "ReferenceError", "SyntaxError", "TypeError",
                                       "URIError",    "AggregateError"};
  for (const char* n : kNames) {
    if (name == n) return n;
  }
  return nullptr;
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

std::string Shortened(std::string s) {
  if (s.size() > kMaxKeyText) s = s.substr(0, kMaxKeyText) + "…";
  return s;
}

// A typed array's or DataView's kind; -1 for none.
int ViewKindOf(v8::Local<v8::ArrayBufferView> view) {
#define IVM_VIEW_IS(kind, type, subtag) \
  if (view->Is##type()) return kind;
  IVM_VIEW_KINDS(IVM_VIEW_IS)
#undef IVM_VIEW_IS
  return -1;
}

// A BigInt as pickle LONG data.
std::string TwosComplementOf(v8::Local<v8::BigInt> big) {
  int count = big->WordCount();
  int sign = 0;
  std::vector<uint64_t> words(static_cast<size_t>(count));
  big->ToWordsArray(&sign, &count, words.data());
  return TwosComplement(sign != 0, words.data(), static_cast<size_t>(count));
}

class Writer {
 public:
  Writer(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
         const CallState& call, const WriteOptions& options, Serialized* out)
      : holder_(holder), isolate_(isolate), context_(context), call_(call),
        options_(options), out_(out), e_(out->stream), limit_(CopyLimit()) {}

  ivm_error_t* Run(v8::Local<v8::Value> value) {
    object_prototype_ = compat::GetPrototype(v8::Object::New(isolate_));
    e_.Begin();
    bool ok = Write(value, 0);
    if (ok) e_.End();
    ivm_error_t* err = error_;
    error_ = nullptr;
    if (!ok && err == nullptr) {
      // An exception (a getter threw, or the call was stopped): the caller's
      // TryCatch has it.
      return nullptr;
    }
    if (err) return err;
    // Detach only once the whole copy succeeded.
    for (auto& buf : to_detach_) {
      v8::Local<v8::ArrayBuffer> buffer = buf.Get(isolate_);
      holder_.MoveOutBuffer(buffer->GetBackingStore());   // its budget goes with it
      buffer->Detach();
    }
    return nullptr;
  }

  bool failed_with_exception() const { return exception_; }

 private:
  // --- output beyond the emitter's
  void String(v8::Local<v8::String> str) {
    scratch_.clear();
    compat::AppendWtf8(isolate_, str, scratch_);
    e_.Text(scratch_);
  }
  // A property key (memoized by content in the emitter).
  void Key(v8::Local<v8::String> key) {
    // Property names are usually internalized: the same key is the same
    // string object, found here without reading it.
    for (const RecentKey& k : recent_keys_) {
      if (k.key == key) {
        e_.Get(k.index);
        return;
      }
    }
    scratch_.clear();
    compat::AppendWtf8(isolate_, key, scratch_);
    uint32_t fresh = e_.Key(scratch_);
    if (fresh != kNoMemo && recent_keys_.size() < kRecentKeys) {
      recent_keys_.emplace_back();
      recent_keys_.back().key.Reset(isolate_, key);
      recent_keys_.back().index = fresh;
    }
  }
  // Writes `count` items of the container just written in batches
  // (pickle::Batches), one handle scope per batch; write_item(i) writes item
  // i. The size limit and the call's stop are checked after each batch.
  template <class WriteItem>
  bool WriteItems(uint32_t count, unsigned char close, WriteItem&& write_item) {
    Batches batches(e_, close);
    uint32_t i = 0;
    while (i < count) {
      v8::HandleScope scope(isolate_);
      do {
        batches.BeforeItem();
        if (!write_item(i++)) return false;
      } while (!batches.AfterItem() && i < count);
      batches.Finish();
      if (!CheckSize() || Stopped()) return false;
    }
    return true;
  }

  // --- errors
  std::string Path() const {
    std::string p = "$";
    size_t start = path_.size() > kPathTail ? path_.size() - kPathTail : 0;
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
  // A V8 call failed: an exception is pending.
  bool Threw() {
    exception_ = true;
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
    if (e_.size() + attached_bytes_ > limit_) {
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
  // A key's text: strings as they are, other keys as String(key) makes them.
  std::string KeyString(v8::Local<v8::Value> key) {
    std::string k;
    v8::Local<v8::String> str;
    if (key->IsString()) {
      compat::AppendWtf8(isolate_, key.As<v8::String>(), k);
    } else if (key->ToString(context_).ToLocal(&str)) {
      compat::AppendWtf8(isolate_, str, k);
    }
    return k;
  }
  // `.name` or `["a key"]`: a property in an error's path.
  std::string KeySegment(v8::Local<v8::Value> key) {
    std::string k = Shortened(KeyString(key));
    if (IsIdentifier(k)) return "." + k;
    std::string seg = "[";
    AppendQuoted(seg, k);
    return seg + "]";
  }
  // A Map key as an error's path shows it: strings quoted.
  std::string KeyText(v8::Local<v8::Value> key) {
    if (!key->IsString()) return KeyString(key);
    std::string k;
    AppendQuoted(k, Shortened(KeyString(key)));
    return k;
  }

  // --- memo of objects (identity)
  bool Recall(v8::Local<v8::Object> obj) {
    int hash = obj->GetIdentityHash();
    auto range = memo_.equal_range(hash);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second.object == obj) {
        e_.Get(it->second.index);
        return true;
      }
    }
    return false;
  }
  void Remember(v8::Local<v8::Object> obj) {
    MemoEntry& e = memo_.emplace(obj->GetIdentityHash(), MemoEntry())->second;
    e.object.Reset(isolate_, obj);
    e.index = e_.Memoize();
  }

  // --- values
  bool Write(v8::Local<v8::Value> v, int depth) {
    e_.MaybeFrame();
    if (!v->IsObject()) return WritePrimitive(v);
    if (depth >= kMaxDepth) {
      return Refuse("a value", "nested more than " + std::to_string(kMaxDepth) + " levels deep");
    }
    if (!StackRoom()) {
      return Refuse("a value", "nested too deep for this thread's stack (" +
                                   std::to_string(depth) + " levels)");
    }
    if (Stopped()) return false;
    v8::Local<v8::Object> obj = v.As<v8::Object>();
    if (obj->IsProxy()) return Refuse("a Proxy");
    if (Recall(obj)) return true;
    v8::HandleScope scope(isolate_);
    return WriteObject(obj, depth);
  }

  bool WritePrimitive(v8::Local<v8::Value> v) {
    if (v->IsString()) {
      String(v.As<v8::String>());
      return CheckSize();
    }
    if (v->IsNumber()) {
      e_.Number(v.As<v8::Number>()->Value());
      return true;
    }
    if (v->IsBoolean()) {
      e_.Boolean(v->IsTrue());
      return true;
    }
    if (v->IsNull()) {
      e_.None();
      return true;
    }
    if (v->IsUndefined()) {
      e_.Undefined();
      return true;
    }
    if (v->IsBigInt()) {
      e_.BigInt(TwosComplementOf(v.As<v8::BigInt>()));
      return CheckSize();
    }
    if (v->IsSymbol()) return Refuse("a Symbol");
    return Refuse("a value of type " + DescribeType(isolate_, v));
  }

  // An object not written before: the kinds with a copy of their own.
  bool WriteObject(v8::Local<v8::Object> obj, int depth) {
    if (obj->IsArray()) return WriteArray(obj.As<v8::Array>(), depth);
    if (obj->IsFunction()) return Refuse("a function");
    if (obj->IsArrayBuffer()) return WriteBuffer(obj.As<v8::ArrayBuffer>());
    if (obj->IsSharedArrayBuffer()) return WriteSharedBuffer(obj.As<v8::SharedArrayBuffer>());
    if (obj->IsArrayBufferView()) return WriteView(obj.As<v8::ArrayBufferView>(), depth);
    if (obj->IsDate()) return WriteDate(obj.As<v8::Date>());
    if (obj->IsRegExp()) return WriteRegExp(obj.As<v8::RegExp>());
    if (obj->IsMap()) return WriteMap(obj.As<v8::Map>(), depth);
    if (obj->IsSet()) return WriteSet(obj.As<v8::Set>(), depth);
    return WriteOtherObject(obj, depth);
  }

  // Boxed primitives (as their value), objects that have no copy, wrappers,
  // host objects, errors, and plain objects.
  bool WriteOtherObject(v8::Local<v8::Object> obj, int depth) {
    if (obj->IsNumberObject()) {
      return Write(v8::Number::New(isolate_, obj.As<v8::NumberObject>()->ValueOf()), depth);
    }
    if (obj->IsStringObject()) return Write(obj.As<v8::StringObject>()->ValueOf(), depth);
    if (obj->IsBooleanObject()) {
      return Write(v8::Boolean::New(isolate_, obj.As<v8::BooleanObject>()->ValueOf()), depth);
    }
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
    if (IsWrapper(obj)) return WriteWrapper(obj);
    if (obj->IsExternal() || obj->InternalFieldCount() > 0) {
      return Refuse("a host object (" + DescribeType(isolate_, obj) + ")");
    }
    if (obj->IsNativeError()) {
      std::string ctor;
      compat::AppendWtf8(isolate_, obj->GetConstructorName(), ctor);
      if (StandardErrorName(ctor)) return WriteError(obj, ctor);
    }
    if (IsIterator(obj)) return Refuse("an iterator");
    return WritePlainObject(obj, depth);
  }

  // An own data property's string value, read without running JavaScript
  // (no getter, Proxy trap or prepareStackTrace hook runs); "" if none.
  std::string OwnString(v8::Local<v8::Object> obj, v8::Local<v8::String> key) {
    std::string out;
    v8::Local<v8::Value> desc;
    v8::TryCatch tc(isolate_);
    if (!obj->GetOwnPropertyDescriptor(context_, key).ToLocal(&desc) || !desc->IsObject()) {
      return out;
    }
    v8::Local<v8::Value> value;
    v8::Local<v8::Object> d = desc.As<v8::Object>();
    v8::Local<v8::String> vk = v8::String::NewFromUtf8Literal(isolate_, "value");
    bool has = false;
    if (d->HasOwnProperty(context_, vk).To(&has) && has && d->Get(context_, vk).ToLocal(&value) &&
        value->IsString()) {
      compat::AppendWtf8(isolate_, value.As<v8::String>(), out);
    }
    return out;
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
    e_.NewList();
    Remember(array);
    return WriteItems(length, op::APPENDS, [&](uint32_t i) {
      v8::Local<v8::Value> item;
      if (!array->Get(context_, i).ToLocal(&item)) return Threw();
      if (item->IsObject() || item->IsSymbol()) {
        PathScope ps(*this, "[" + std::to_string(i) + "]");
        return Write(item, depth + 1);
      }
      if (Write(item, depth + 1)) return true;
      PathScope ps(*this, "[" + std::to_string(i) + "]");
      return Refuse("a value");
    });
  }

  bool WritePlainObject(v8::Local<v8::Object> obj, int depth) {
    v8::Local<v8::Array> keys;
    if (!obj->GetOwnPropertyNames(context_,
                                  static_cast<v8::PropertyFilter>(v8::ONLY_ENUMERABLE |
                                                                  v8::SKIP_SYMBOLS),
                                  v8::KeyConversionMode::kConvertToString)
             .ToLocal(&keys)) {
      return Threw();
    }
    e_.NewDict();
    Remember(obj);
    return WriteItems(keys->Length(), op::SETITEMS, [&](uint32_t i) {
      v8::Local<v8::Value> key, value;
      if (!keys->Get(context_, i).ToLocal(&key) || !obj->Get(context_, key).ToLocal(&value)) {
        return Threw();
      }
      if (!key->IsString()) {
        v8::Local<v8::String> str;
        if (!key->ToString(context_).ToLocal(&str)) return Threw();
        key = str;
      }
      Key(key.As<v8::String>());
      if (value->IsObject() || value->IsSymbol()) {
        PathScope ps(*this, KeySegment(key));
        return Write(value, depth + 1);
      }
      return Write(value, depth + 1);
    });
  }

  // Map and Set keys must stay distinct and hashable in Python: primitives
  // only, and no two that Python considers equal (1 and true, 2**53 and
  // 2n**53n).
  bool CheckKey(v8::Local<v8::Value> key, std::unordered_set<std::string>& seen,
                const std::string& what) {
    std::string cls;
    if (!KeyClass(key, what, &cls)) return false;
    if (!seen.insert(cls).second) {
      return Refuse("a " + what, "two of its keys are equal in Python (e.g. 1 and true)");
    }
    return true;
  }
  // A key's Python equality class (pickle::key_class).
  bool KeyClass(v8::Local<v8::Value> key, const std::string& what, std::string* out) {
    if (key->IsString()) {
      std::string s;
      compat::AppendWtf8(isolate_, key.As<v8::String>(), s);
      *out = key_class::String(s);
    } else if (key->IsBoolean()) {
      *out = key_class::Boolean(key->IsTrue());
    } else if (key->IsNumber()) {
      *out = NumberClass(key.As<v8::Number>()->Value());
    } else if (key->IsBigInt()) {
      return BigIntClass(key.As<v8::BigInt>(), out);
    } else if (key->IsUndefined()) {
      *out = key_class::kUndefined;
    } else if (key->IsNull()) {
      *out = key_class::kNull;
    } else {
      return Refuse("a " + what + " key of type " + DescribeType(isolate_, key),
                    "Python keys must be hashable primitives");
    }
    return true;
  }
  static std::string NumberClass(double d) {
    char buf[64];
    if (d != std::floor(d) || !std::isfinite(d)) {
      std::snprintf(buf, sizeof buf, "f%.17g", d);
      return buf;
    }
    if (std::fabs(d) < key_class::kMaxInt64) return key_class::Integer(static_cast<int64_t>(d));
    std::snprintf(buf, sizeof buf, "n%.0f", d);
    return buf;
  }
  bool BigIntClass(v8::Local<v8::BigInt> big, std::string* out) {
    bool lossless = false;
    int64_t i64 = big->Int64Value(&lossless);
    if (lossless) {
      *out = key_class::Integer(i64);
      return true;
    }
    v8::Local<v8::String> str;
    if (!big->ToString(context_).ToLocal(&str)) return Threw();
    *out = "n";
    compat::AppendWtf8(isolate_, str, *out);
    return true;
  }

  bool WriteMap(v8::Local<v8::Map> map, int depth) {
    v8::Local<v8::Array> entries = map->AsArray();   // key, value, key, value...
    e_.NewMap();
    Remember(map);
    std::unordered_set<std::string> seen;
    return WriteItems(entries->Length() / 2, op::SETITEMS, [&](uint32_t i) {
      v8::Local<v8::Value> key, value;
      if (!entries->Get(context_, 2 * i).ToLocal(&key) ||
          !entries->Get(context_, 2 * i + 1).ToLocal(&value)) {
        return Threw();
      }
      if (!CheckKey(key, seen, "Map") || !Write(key, depth + 1)) return false;
      PathScope ps(*this, ".get(" + KeyText(key) + ")");
      return Write(value, depth + 1);
    });
  }

  bool WriteSet(v8::Local<v8::Set> set, int depth) {
    v8::Local<v8::Array> items = set->AsArray();
    e_.NewSet();
    Remember(set);
    std::unordered_set<std::string> seen;
    return WriteItems(items->Length(), op::ADDITEMS, [&](uint32_t i) {
      v8::Local<v8::Value> item;
      if (!items->Get(context_, i).ToLocal(&item)) return Threw();
      return CheckKey(item, seen, "Set") && Write(item, depth + 1);
    });
  }

  bool WriteDate(v8::Local<v8::Date> date) {
    double ms = date->ValueOf();
    if (std::isnan(ms)) return Refuse("an invalid Date");
    if (!DateInRange(ms)) {
      return Refuse("a Date", "outside the years 1 to 9999 that Python's datetime supports");
    }
    e_.Date(ms);
    Remember(date);
    return true;
  }

  bool WriteRegExp(v8::Local<v8::RegExp> re) {
    scratch_.clear();
    compat::AppendWtf8(isolate_, re->GetSource(), scratch_);
    e_.RegExp(scratch_, RegExpFlags(re->GetFlags()));
    Remember(re);
    return true;
  }

  bool WriteError(v8::Local<v8::Object> error, const std::string& name) {
    std::string message = OwnString(error, v8::String::NewFromUtf8Literal(isolate_, "message"));
    std::string stack = OwnString(error, v8::String::NewFromUtf8Literal(isolate_, "stack"));
    e_.Call(Tag::kError);
    e_.Text(name);
    e_.Text(message);
    e_.Text(stack);
    e_.Reduce(3);
    Remember(error);
    return CheckSize();
  }

  bool WriteWrapper(v8::Local<v8::Object> obj) {
    Attachment a;
    if (!WrappedAttachment(holder_, isolate_, context_, obj, &a)) {
      return Refuse("a released Reference or ExternalCopy");
    }
    e_.Attached(Tag::kAtt, out_->Attach(std::move(a)));
    Remember(obj);
    return true;
  }

  bool WriteBuffer(v8::Local<v8::ArrayBuffer> buffer) {
    Attachment a;
    size_t length = buffer->ByteLength();
    attached_bytes_ += length;
    if (!CheckSize()) return false;
    if (options_.transfer_out) {
      if (!buffer->IsDetachable()) {
        return Refuse("an ArrayBuffer", "it cannot be detached (WebAssembly memory)");
      }
      a.kind = Attachment::kBuffer;
      a.store = buffer->GetBackingStore();
      a.moved = true;
      to_detach_.emplace_back(isolate_, buffer);
    } else if (!Attachment::CopyOf(length ? buffer->GetBackingStore()->Data() : nullptr, length,
                                   &a)) {
      return Refuse("an ArrayBuffer", "out of host memory");
    }
    e_.Attached(Tag::kBuf, out_->Attach(std::move(a)));
    Remember(buffer);
    return true;
  }

  bool WriteSharedBuffer(v8::Local<v8::SharedArrayBuffer> buffer) {
    Attachment a;
    a.kind = Attachment::kSharedBuffer;
    a.store = buffer->GetBackingStore();
    a.origin = holder_.unique_id();
    e_.Attached(Tag::kSab, out_->Attach(std::move(a)));
    Remember(buffer);
    return true;
  }

  bool WriteView(v8::Local<v8::ArrayBufferView> view, int depth) {
    int kind = ViewKindOf(view);
    if (kind < 0) return Refuse("a " + DescribeType(isolate_, view));
    v8::Local<v8::Object> buffer = view->Buffer();
    size_t offset = view->ByteOffset(), length = view->ByteLength();
    e_.BeginView();
    {
      PathScope ps(*this, ".buffer");
      if (!Write(buffer, depth + 1)) return false;
    }
    e_.EndView(kind, offset, length);
    Remember(view);
    return true;
  }

  struct MemoEntry {
    v8::Global<v8::Object> object;
    uint32_t index = 0;
  };
  struct RecentKey {
    v8::Global<v8::String> key;   // outlives the handle scope it was seen in
    uint32_t index = 0;
  };

  IsolateHolder& holder_;
  v8::Isolate* isolate_;
  v8::Local<v8::Context> context_;
  const CallState& call_;
  WriteOptions options_;
  Serialized* out_;
  Emitter e_;
  size_t limit_;
  size_t attached_bytes_ = 0;
  std::unordered_multimap<int, MemoEntry> memo_;
  std::vector<RecentKey> recent_keys_;
  std::vector<std::string> path_;
  std::string scratch_;
  std::vector<v8::Global<v8::ArrayBuffer>> to_detach_;
  v8::Local<v8::Value> object_prototype_;
  ivm_error_t* error_ = nullptr;
  bool exception_ = false;
};

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

}  // namespace ivm
