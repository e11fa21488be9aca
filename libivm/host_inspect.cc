// host_inspect.cc — node's util.inspect rules, inside libivm (host_inspect.h).
//
// Values are read only through calls that run no JavaScript: own property
// descriptors (a getter is shown as [Getter], never called), V8's own views
// of Maps, Sets, typed arrays, Dates, RegExps and Promises, Proxy targets
// (their traps never run) and the frames V8 captured for errors. Output is
// built bottom-up like node's (entries, then one line or several), and stops
// growing once `budget` bytes are made.
#include "host_inspect.h"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ivm::inspect {
namespace {

constexpr size_t kMaxArrayLength = 100;
constexpr size_t kMaxStringLength = 10000;
constexpr size_t kBreakLength = 80;
constexpr int kCompact = 3;
constexpr int kMaxChain = 64;   // prototypes and Proxy targets followed

void AppendCodePoint(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// UTF-16 units as UTF-8. With a `quote`, escapes as node's strEscape does:
// the quote, backslashes, control characters and lone surrogates.
void AppendUnits(const std::vector<uint16_t>& u, char quote, std::string& out) {
  static const char* const kNamed[] = {"\\b", "\\t", "\\n", "\\x0B", "\\f", "\\r"};
  char hex[8];
  for (size_t i = 0; i < u.size(); ++i) {
    uint32_t c = u[i];
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < u.size() && u[i + 1] >= 0xDC00 &&
        u[i + 1] <= 0xDFFF) {
      AppendCodePoint(0x10000 + ((c - 0xD800) << 10) + (u[i + 1] - 0xDC00), out);
      ++i;
      continue;
    }
    bool lone = c >= 0xD800 && c <= 0xDFFF;
    if (quote == 0) {
      AppendCodePoint(lone ? 0xFFFD : c, out);
    } else if (c == static_cast<uint32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 8 && c <= 13) {
      out += kNamed[c - 8];
    } else if (c < 0x20 || c == 0x7F) {
      std::snprintf(hex, sizeof hex, "\\x%02X", c);
      out += hex;
    } else if (lone) {
      std::snprintf(hex, sizeof hex, "\\u%04x", c);
      out += hex;
    } else {
      AppendCodePoint(c, out);
    }
  }
}

std::vector<uint16_t> Units(v8::Isolate* isolate, v8::Local<v8::String> str, size_t max) {
  size_t n = std::min(static_cast<size_t>(str->Length()), max);
  std::vector<uint16_t> units(n);
  if (n != 0) {
    str->Write(isolate, units.data(), 0, static_cast<int>(n), v8::String::NO_NULL_TERMINATION);
  }
  return units;
}

// `str` quoted as node quotes strings inside values.
std::string Quote(v8::Isolate* isolate, v8::Local<v8::String> str, size_t max) {
  std::vector<uint16_t> units = Units(isolate, str, max);
  bool single = false, dbl = false, back = false;
  for (uint16_t c : units) {
    single |= c == '\'';
    dbl |= c == '"';
    back |= c == '`';
  }
  char quote = !single ? '\'' : !dbl ? '"' : !back ? '`' : '\'';
  std::string out(1, quote);
  AppendUnits(units, quote, out);
  out += quote;
  size_t left = static_cast<size_t>(str->Length()) - units.size();
  if (left != 0) out += "... " + std::to_string(left) + " more character" + (left == 1 ? "" : "s");
  return out;
}

bool IsIdentifier(const std::string& key) {
  if (key.empty() || std::isdigit(static_cast<unsigned char>(key[0]))) return false;
  for (char c : key) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

std::string Join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

// A Date's time value as toISOString() writes it.
std::string IsoDate(double ms) {
  if (std::isnan(ms)) return "Invalid Date";
  int64_t t = static_cast<int64_t>(ms);
  int64_t days = t / 86400000, rest = t % 86400000;
  if (rest < 0) {
    rest += 86400000;
    --days;
  }
  // Days since 1970-01-01 to a civil date (proleptic Gregorian, 400-year eras).
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t day = doy - (153 * mp + 2) / 5 + 1;
  int64_t month = mp < 10 ? mp + 3 : mp - 9;
  int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  char buf[48];
  const char* fmt = year >= 0 && year <= 9999 ? "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03lldZ"
                                              : "%+07lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03lldZ";
  std::snprintf(buf, sizeof buf, fmt, static_cast<long long>(year), static_cast<long long>(month),
                static_cast<long long>(day), static_cast<long long>(rest / 3600000),
                static_cast<long long>(rest / 60000 % 60), static_cast<long long>(rest / 1000 % 60),
                static_cast<long long>(rest % 1000));
  return buf;
}

}  // namespace

size_t AppendString(v8::Isolate* isolate, v8::Local<v8::String> str, size_t max_units,
                    std::string& out) {
  std::vector<uint16_t> units = Units(isolate, str, max_units);
  AppendUnits(units, 0, out);
  return static_cast<size_t>(str->Length()) - units.size();
}

namespace {

enum class Kind { kObject, kArray };

// One inspection: the objects being formatted (for cycles), the indentation
// and how much has been produced.
class Inspector {
 public:
  Inspector(v8::Local<v8::Context> context, const Options& options)
      : isolate_(context->GetIsolate()), context_(context), options_(options) {}

  std::string Value(v8::Local<v8::Value> value, int level);
  std::string Primitive(v8::Local<v8::Value> value, bool nested);
  bool Spent() const { return produced_ >= options_.budget; }

 private:
  struct Seen {
    v8::Local<v8::Object> object;
    int ref = 0;
  };
  struct Shape {   // how an object is shown (node's formatRaw)
    std::string base, open = "{", close = "}", label = "Object";
    Kind kind = Kind::kObject;
    bool numeric = false;   // every array element is a number (grouping pads left)
    bool more = false;      // the last entry is "... N more items"
  };

  std::string Raw(v8::Local<v8::Object> object, int level);
  bool Describe(v8::Local<v8::Object> object, int level, Shape& shape,
                std::vector<std::string>& entries, bool* only_base);
  std::string ConstructorName(v8::Local<v8::Object> object, bool* null_proto);
  std::string FunctionBase(v8::Local<v8::Function> fn, const std::string& ctor);
  std::string ErrorStack(v8::Local<v8::Object> error);
  std::string Key(v8::Local<v8::Value> key);
  std::string Property(v8::Local<v8::Object> object, v8::Local<v8::Value> key, int level,
                       bool with_key, bool* present);
  std::vector<v8::Local<v8::Value>> Keys(v8::Local<v8::Object> object, bool skip_indices);
  void ArrayEntries(v8::Local<v8::Array> array, int level, Shape& shape,
                    std::vector<std::string>& out);
  void TypedEntries(v8::Local<v8::TypedArray> array, Shape& shape, std::vector<std::string>& out);
  void CollectionEntries(v8::Local<v8::Array> flat, size_t size, bool pairs, int level,
                         std::vector<std::string>& out);
  std::string Reduce(std::vector<std::string> out, const Shape& shape, int level);
  std::vector<std::string> Group(const std::vector<std::string>& out, const Shape& shape);
  std::string Child(v8::Local<v8::Value> value, int level) {
    indent_ += 2;
    std::string s = Value(value, level);
    indent_ -= 2;
    return s;
  }
  std::string Number(double d);
  uint32_t NextIndex(v8::Local<v8::Array> array, uint32_t after, uint32_t length);

  v8::Isolate* isolate_;
  bool last_numeric_ = false;   // the last Property's value was a number or BigInt
  v8::Local<v8::Context> context_;
  Options options_;
  std::vector<Seen> seen_;
  size_t produced_ = 0;
  int indent_ = 0;
  int current_depth_ = 0;
  int next_ref_ = 1;
};

std::string Inspector::Number(double d) {
  if (d == 0 && std::signbit(d)) return "-0";
  std::string out;
  v8::Local<v8::String> s;
  if (v8::Number::New(isolate_, d)->ToString(context_).ToLocal(&s)) {
    AppendString(isolate_, s, 64, out);
  }
  return out;
}

std::string Inspector::Primitive(v8::Local<v8::Value> value, bool nested) {
  std::string out;
  if (value->IsString()) {
    v8::Local<v8::String> s = value.As<v8::String>();
    size_t room = options_.budget > produced_ ? options_.budget - produced_ : 0;
    if (nested) return Quote(isolate_, s, std::min(kMaxStringLength, room + 1));
    AppendString(isolate_, s, room + 1, out);
  } else if (value->IsNumber()) {
    out = Number(value.As<v8::Number>()->Value());
  } else if (value->IsSymbol()) {
    v8::Local<v8::Value> desc = value.As<v8::Symbol>()->Description(isolate_);
    out = "Symbol(";
    if (desc->IsString()) AppendString(isolate_, desc.As<v8::String>(), kMaxStringLength, out);
    out += ")";
  } else if (value->IsUndefined()) {
    out = "undefined";
  } else if (value->IsNull()) {
    out = "null";
  } else {   // booleans and BigInts: V8's own strings
    v8::Local<v8::String> s;
    if (value->ToString(context_).ToLocal(&s)) AppendString(isolate_, s, kMaxStringLength, out);
    if (value->IsBigInt()) out += "n";
  }
  return out;
}

std::string Inspector::Value(v8::Local<v8::Value> value, int level) {
  if (!value->IsObject()) {
    std::string s = Primitive(value, true);
    produced_ += s.size();
    return s;
  }
  v8::Local<v8::Object> object = value.As<v8::Object>();
  for (int i = 0; object->IsProxy(); ++i) {   // shown as its target; no trap runs
    v8::Local<v8::Value> target = object.As<v8::Proxy>()->GetTarget();
    if (!target->IsObject() || i == kMaxChain) return "<Revoked Proxy>";
    object = target.As<v8::Object>();
  }
  for (Seen& s : seen_) {
    if (s.object == object) {
      if (s.ref == 0) s.ref = next_ref_++;
      return "[Circular *" + std::to_string(s.ref) + "]";
    }
  }
  if (Spent()) return "...";
  seen_.push_back({object, 0});
  std::string out = Raw(object, level);
  int ref = seen_.back().ref;
  seen_.pop_back();
  if (ref != 0) out = "<ref *" + std::to_string(ref) + "> " + out;
  return out;
}

std::string Inspector::ConstructorName(v8::Local<v8::Object> object, bool* null_proto) {
  *null_proto = false;
  v8::Local<v8::String> key = v8::String::NewFromUtf8Literal(isolate_, "constructor");
  v8::Local<v8::String> value_key = v8::String::NewFromUtf8Literal(isolate_, "value");
  v8::Local<v8::Object> current = object;
  for (int i = 0; i < kMaxChain && !current->IsProxy(); ++i) {
    v8::TryCatch try_catch(isolate_);
    v8::Local<v8::Value> desc, ctor;
    if (current->GetOwnPropertyDescriptor(context_, key).ToLocal(&desc) && desc->IsObject() &&
        desc.As<v8::Object>()->HasOwnProperty(context_, value_key).FromMaybe(false) &&
        desc.As<v8::Object>()->Get(context_, value_key).ToLocal(&ctor) && ctor->IsFunction()) {
      std::string name;
      v8::Local<v8::Value> n = ctor.As<v8::Function>()->GetName();
      if (n->IsString()) AppendString(isolate_, n.As<v8::String>(), 256, name);
      if (!name.empty()) return name;
    }
    v8::Local<v8::Value> proto = compat::GetPrototype(current);
    if (!proto->IsObject()) {
      *null_proto = i == 0;
      return "";
    }
    current = proto.As<v8::Object>();
  }
  return "";
}

std::string Inspector::FunctionBase(v8::Local<v8::Function> fn, const std::string& ctor) {
  std::string name, source;
  v8::Local<v8::Value> n = fn->GetName();
  if (n->IsString()) AppendString(isolate_, n.As<v8::String>(), 256, name);
  v8::Local<v8::String> text;
  v8::TryCatch try_catch(isolate_);
  if (fn->FunctionProtoToString(context_).ToLocal(&text)) AppendString(isolate_, text, 6, source);
  if (source.size() == 6 && source.compare(0, 5, "class") == 0 &&
      !std::isalnum(static_cast<unsigned char>(source[5])) && source[5] != '_' &&
      source[5] != '$') {
    std::string out = "[class " + (name.empty() ? std::string("(anonymous)") : name);
    v8::Local<v8::Value> super = compat::GetPrototype(fn);
    if (super->IsNull()) {
      out += " extends null";
    } else if (super->IsFunction()) {
      std::string super_name;
      v8::Local<v8::Value> sn = super.As<v8::Function>()->GetName();
      if (sn->IsString()) AppendString(isolate_, sn.As<v8::String>(), 256, super_name);
      if (!super_name.empty()) out += " extends " + super_name;
    }
    return out + "]";
  }
  std::string type = "Function";
  if (fn->IsGeneratorFunction()) type = "Generator" + type;
  if (fn->IsAsyncFunction()) type = "Async" + type;
  std::string out = "[" + type;
  if (ctor.empty()) out += " (null prototype)";
  out += name.empty() ? std::string(" (anonymous)") : ": " + name;
  out += "]";
  if (!ctor.empty() && ctor != type && ctor != "Function") out += " " + ctor;
  return out;
}

std::string Inspector::ErrorStack(v8::Local<v8::Object> error) {
  ivm_error_t* err = ErrorFromValue(isolate_, context_, error, v8::Local<v8::Message>());
  std::string stack = err->stack.empty() ? "[" + err->name + "]" : err->stack;
  ivm_error_free(err);
  if (indent_ == 0) return stack;
  std::string out;
  for (char c : stack) {
    out += c;
    if (c == '\n') out.append(static_cast<size_t>(indent_), ' ');
  }
  return out;
}

std::string Inspector::Key(v8::Local<v8::Value> key) {
  if (key->IsSymbol()) return "[" + Primitive(key, false) + "]";
  std::string plain;
  if (key->IsString()) AppendString(isolate_, key.As<v8::String>(), kMaxStringLength, plain);
  else plain = Primitive(key, false);
  if (IsIdentifier(plain)) return plain;
  v8::Local<v8::String> s;
  if (!key->IsString()) return "'" + plain + "'";
  return Quote(isolate_, key.As<v8::String>(), kMaxStringLength);
}

// One own property, "key: value" (or the value alone); a getter or setter is
// named, not called. *present: whether the property exists.
std::string Inspector::Property(v8::Local<v8::Object> object, v8::Local<v8::Value> key, int level,
                                bool with_key, bool* present) {
  v8::TryCatch try_catch(isolate_);
  v8::Local<v8::Value> desc;
  *present = false;
  if (!key->IsName() && !key->IsNumber()) return {};
  v8::Local<v8::Name> name;
  if (key->IsName()) {
    name = key.As<v8::Name>();
  } else if (!key->ToString(context_).ToLocal(&name)) {
    return {};
  }
  if (!object->GetOwnPropertyDescriptor(context_, name).ToLocal(&desc) || !desc->IsObject()) {
    return {};
  }
  *present = true;
  v8::Local<v8::Object> d = desc.As<v8::Object>();
  auto has = [&](const char* field) {
    v8::Local<v8::String> k = v8::String::NewFromUtf8(isolate_, field).ToLocalChecked();
    v8::Local<v8::Value> v;
    return d->HasOwnProperty(context_, k).FromMaybe(false) && d->Get(context_, k).ToLocal(&v) &&
           !v->IsUndefined();
  };
  std::string text;
  last_numeric_ = false;
  bool getter = has("get"), setter = has("set");
  if (getter || setter) {
    text = getter && setter ? "[Getter/Setter]" : getter ? "[Getter]" : "[Setter]";
  } else {
    v8::Local<v8::Value> value;
    if (!d->Get(context_, v8::String::NewFromUtf8Literal(isolate_, "value")).ToLocal(&value)) {
      value = v8::Undefined(isolate_);
    }
    last_numeric_ = value->IsNumber() || value->IsBigInt();
    text = Child(value, level + 1);
  }
  return with_key ? Key(name) + ": " + text : text;
}

std::vector<v8::Local<v8::Value>> Inspector::Keys(v8::Local<v8::Object> object,
                                                  bool skip_indices) {
  std::vector<v8::Local<v8::Value>> keys;
  v8::TryCatch try_catch(isolate_);
  v8::Local<v8::Array> names;
  if (!object
           ->GetPropertyNames(context_, v8::KeyCollectionMode::kOwnOnly,
                              v8::PropertyFilter::ONLY_ENUMERABLE,
                              skip_indices ? v8::IndexFilter::kSkipIndices
                                           : v8::IndexFilter::kIncludeIndices,
                              v8::KeyConversionMode::kConvertToString)
           .ToLocal(&names)) {
    return keys;
  }
  uint32_t n = names->Length();
  for (uint32_t i = 0; i < n && !Spent(); ++i) {
    v8::Local<v8::Value> key;
    if (names->Get(context_, i).ToLocal(&key)) keys.push_back(key);
  }
  if (keys.size() < n) keys.push_back(v8::Local<v8::Value>());   // "..." marker
  return keys;
}

void Inspector::ArrayEntries(v8::Local<v8::Array> array, int level, Shape& shape,
                             std::vector<std::string>& out) {
  uint32_t length = array->Length();
  uint32_t holes = 0, i = 0;
  shape.numeric = true;
  auto flush = [&]() {
    if (holes == 0) return;
    out.push_back("<" + std::to_string(holes) + " empty item" + (holes == 1 ? ">" : "s>"));
    holes = 0;
    shape.numeric = false;
  };
  for (; i < length && out.size() < kMaxArrayLength && !Spent(); ++i) {
    bool present = false;
    std::string text = Property(array, v8::Integer::NewFromUnsigned(isolate_, i), level, false,
                                &present);
    if (!present) {
      if (++holes == 1 && i + 1 < length) {
        uint32_t next = NextIndex(array, i, length);   // a sparse array: jump
        holes += next - i - 1;
        i = next - 1;
      }
      continue;
    }
    flush();
    out.push_back(std::move(text));
    shape.numeric = shape.numeric && last_numeric_;
  }
  flush();
  if (i < length) {
    out.push_back("... " + std::to_string(length - i) + " more item" + (length - i == 1 ? "" : "s"));
    shape.more = true;
  }
}

// The first element index of `array` above `after` (`length` if none).
uint32_t Inspector::NextIndex(v8::Local<v8::Array> array, uint32_t after, uint32_t length) {
  v8::TryCatch try_catch(isolate_);
  v8::Local<v8::Array> keys;
  uint32_t next = length;
  if (!array
           ->GetPropertyNames(context_, v8::KeyCollectionMode::kOwnOnly,
                              static_cast<v8::PropertyFilter>(v8::PropertyFilter::ALL_PROPERTIES |
                                                              v8::PropertyFilter::SKIP_SYMBOLS),
                              v8::IndexFilter::kIncludeIndices, v8::KeyConversionMode::kKeepNumbers)
           .ToLocal(&keys)) {
    return next;
  }
  for (uint32_t k = 0; k < keys->Length(); ++k) {
    v8::Local<v8::Value> key;
    if (!keys->Get(context_, k).ToLocal(&key) || !key->IsNumber()) continue;
    double d = key.As<v8::Number>()->Value();
    if (d > after && d < next) next = static_cast<uint32_t>(d);
  }
  return next;
}

void Inspector::TypedEntries(v8::Local<v8::TypedArray> array, Shape& shape,
                             std::vector<std::string>& out) {
  size_t length = array->Length();
  size_t n = std::min(length, kMaxArrayLength);
  size_t size = n == 0 ? 0 : array->ByteLength() / length;
  std::vector<uint8_t> bytes(n * size);
  if (n != 0) n = array->CopyContents(bytes.data(), bytes.size()) / size;
  shape.numeric = true;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = bytes.data() + i * size;
    auto read = [p](auto v) {
      std::memcpy(&v, p, sizeof v);
      return v;
    };
    std::string text;
    if (array->IsFloat32Array()) text = Number(read(0.0f));
    else if (array->IsFloat64Array()) text = Number(read(0.0));
    else if (array->IsBigInt64Array()) text = std::to_string(read(int64_t{0})) + "n";
    else if (array->IsBigUint64Array()) text = std::to_string(read(uint64_t{0})) + "n";
    else if (array->IsInt8Array()) text = std::to_string(read(int8_t{0}));
    else if (array->IsInt16Array()) text = std::to_string(read(int16_t{0}));
    else if (array->IsInt32Array()) text = std::to_string(read(int32_t{0}));
    else if (array->IsUint16Array()) text = std::to_string(read(uint16_t{0}));
    else if (array->IsUint32Array()) text = std::to_string(read(uint32_t{0}));
    else text = std::to_string(read(uint8_t{0}));
    produced_ += text.size();
    out.push_back(std::move(text));
  }
  if (length > n) {
    out.push_back("... " + std::to_string(length - n) + " more item" + (length - n == 1 ? "" : "s"));
    shape.more = true;
  }
}

// Map entries ("key => value", `pairs`) or Set values, from V8's flat copy.
void Inspector::CollectionEntries(v8::Local<v8::Array> flat, size_t size, bool pairs, int level,
                                  std::vector<std::string>& out) {
  size_t step = pairs ? 2 : 1, shown = 0;
  for (; shown < size && shown < kMaxArrayLength && !Spent(); ++shown) {
    v8::Local<v8::Value> key, value;
    if (!flat->Get(context_, static_cast<uint32_t>(shown * step)).ToLocal(&key)) break;
    std::string text = Child(key, level + 1);
    if (pairs && flat->Get(context_, static_cast<uint32_t>(shown * step + 1)).ToLocal(&value)) {
      text += " => " + Child(value, level + 1);
    }
    out.push_back(std::move(text));
  }
  if (shown < size) {
    out.push_back("... " + std::to_string(size - shown) + " more item" + (size - shown == 1 ? "" : "s"));
  }
}

// What `object` is: its base text (a function's, a Date's, an error's stack),
// braces and the entries special to its kind. False with *only_base: the base
// is the whole text.
bool Inspector::Describe(v8::Local<v8::Object> object, int level, Shape& shape,
                         std::vector<std::string>& entries, bool* only_base) {
  bool null_proto = false;
  std::string ctor = ConstructorName(object, &null_proto);
  std::string prefix = null_proto ? "[Object: null prototype] "
                                  : (ctor.empty() || ctor == "Object" ? "" : ctor + " ");
  shape.label = null_proto ? "Object: null prototype" : ctor.empty() ? "Object" : ctor;
  *only_base = false;
  auto sized = [&](const char* fallback, size_t n) {
    return (ctor.empty() ? std::string(fallback) : ctor) + "(" + std::to_string(n) + ") ";
  };
  if (object->IsFunction()) {
    shape.base = FunctionBase(object.As<v8::Function>(), ctor);
    *only_base = true;
  } else if (object->IsArray()) {
    v8::Local<v8::Array> array = object.As<v8::Array>();
    shape.open = (ctor == "Array" ? std::string() : sized("Array", array->Length())) + "[";
    shape.close = "]";
    shape.kind = Kind::kArray;
    shape.label = ctor.empty() ? "Array" : ctor;
    if (level <= options_.depth) ArrayEntries(array, level, shape, entries);
  } else if (object->IsTypedArray()) {
    shape.open = sized("TypedArray", object.As<v8::TypedArray>()->Length()) + "[";
    shape.close = "]";
    shape.kind = Kind::kArray;
    TypedEntries(object.As<v8::TypedArray>(), shape, entries);
  } else if (object->IsMap() || object->IsSet()) {
    bool map = object->IsMap();
    size_t size = map ? object.As<v8::Map>()->Size() : object.As<v8::Set>()->Size();
    shape.open = sized(map ? "Map" : "Set", size) + "{";
    if (level <= options_.depth) {
      v8::Local<v8::Array> flat = map ? object.As<v8::Map>()->AsArray() : object.As<v8::Set>()->AsArray();
      CollectionEntries(flat, size, map, level, entries);
    }
  } else if (object->IsArrayBuffer() || object->IsSharedArrayBuffer()) {
    std::shared_ptr<v8::BackingStore> store =
        object->IsArrayBuffer() ? object.As<v8::ArrayBuffer>()->GetBackingStore()
                                : object.As<v8::SharedArrayBuffer>()->GetBackingStore();
    size_t length = store->ByteLength(), n = std::min(length, kMaxArrayLength);
    std::string hex = "[Uint8Contents]: <";
    char byte[4];
    for (size_t i = 0; i < n; ++i) {
      std::snprintf(byte, sizeof byte, i ? " %02x" : "%02x", static_cast<uint8_t*>(store->Data())[i]);
      hex += byte;
    }
    if (length > n) hex += " ... " + std::to_string(length - n) + " more byte" + (length - n == 1 ? "" : "s");
    entries.push_back(hex + ">");
    entries.push_back("byteLength: " + std::to_string(length));
    shape.open = prefix + "{";
  } else if (object->IsDate()) {
    shape.base = IsoDate(object.As<v8::Date>()->ValueOf());
    *only_base = true;
  } else if (object->IsRegExp()) {
    v8::Local<v8::RegExp> re = object.As<v8::RegExp>();
    shape.base = "/";
    AppendString(isolate_, re->GetSource(), kMaxStringLength, shape.base);
    shape.base += "/";
    int flags = re->GetFlags();
    static const std::pair<int, char> kFlags[] = {
        {v8::RegExp::kHasIndices, 'd'}, {v8::RegExp::kGlobal, 'g'}, {v8::RegExp::kIgnoreCase, 'i'},
        {v8::RegExp::kMultiline, 'm'}, {v8::RegExp::kDotAll, 's'}, {v8::RegExp::kUnicode, 'u'},
        {v8::RegExp::kSticky, 'y'}};
    for (const auto& [bit, letter] : kFlags) {
      if (flags & bit) shape.base += letter;
    }
    *only_base = true;
  } else if (object->IsNativeError()) {
    shape.base = ErrorStack(object);
    *only_base = true;
  } else if (object->IsPromise()) {
    v8::Local<v8::Promise> promise = object.As<v8::Promise>();
    shape.open = prefix.empty() ? "Promise {" : prefix + "{";
    if (promise->State() == v8::Promise::kPending) {
      entries.push_back("<pending>");
    } else if (level <= options_.depth) {
      std::string result = Child(promise->Result(), level + 1);
      entries.push_back(promise->State() == v8::Promise::kRejected ? "<rejected> " + result : result);
    }
  } else if (object->IsWeakMap() || object->IsWeakSet()) {
    shape.open = (object->IsWeakMap() ? "WeakMap {" : "WeakSet {");
    entries.push_back("<items unknown>");
  } else if (object->IsNumberObject() || object->IsStringObject() || object->IsBooleanObject() ||
             object->IsBigIntObject() || object->IsSymbolObject()) {
    v8::Local<v8::Value> inner;
    const char* type = "Number";
    if (object->IsNumberObject()) inner = v8::Number::New(isolate_, object.As<v8::NumberObject>()->ValueOf());
    if (object->IsStringObject()) inner = object.As<v8::StringObject>()->ValueOf(), type = "String";
    if (object->IsBooleanObject()) inner = v8::Boolean::New(isolate_, object.As<v8::BooleanObject>()->ValueOf()), type = "Boolean";
    if (object->IsBigIntObject()) inner = object.As<v8::BigIntObject>()->ValueOf(), type = "BigInt";
    if (object->IsSymbolObject()) inner = object.As<v8::SymbolObject>()->ValueOf(), type = "Symbol";
    shape.base = std::string("[") + type + ": " + Primitive(inner, true) + "]";
    *only_base = true;
  } else {
    shape.open = prefix + "{";
  }
  return true;
}

std::string Inspector::Raw(v8::Local<v8::Object> object, int level) {
  Shape shape;
  std::vector<std::string> entries;
  bool only_base = false;
  Describe(object, level, shape, entries, &only_base);
  bool string_object = object->IsStringObject();
  std::vector<v8::Local<v8::Value>> keys =
      string_object ? std::vector<v8::Local<v8::Value>>()
                    : Keys(object, shape.kind == Kind::kArray || object->IsTypedArray());
  if (only_base && keys.empty()) return shape.base;
  if (level > options_.depth) return "[" + shape.label + "]";
  current_depth_ = level;
  for (v8::Local<v8::Value> key : keys) {
    if (key.IsEmpty()) {
      entries.push_back("...");
      break;
    }
    bool present = false;
    std::string text = Property(object, key, level, true, &present);
    if (present) entries.push_back(std::move(text));
  }
  if (entries.empty()) {
    if (!shape.base.empty()) return shape.base;
    return shape.open + shape.close;
  }
  return Reduce(std::move(entries), shape, level);
}

// node's groupArrayElements: many short array entries in aligned columns.
std::vector<std::string> Inspector::Group(const std::vector<std::string>& out, const Shape& shape) {
  size_t count = out.size() - (shape.more ? 1 : 0);
  size_t total = 0, max_len = 0;
  std::vector<size_t> lens(count);
  for (size_t i = 0; i < count; ++i) {
    lens[i] = out[i].size();
    total += lens[i] + 2;
    max_len = std::max(max_len, lens[i]);
  }
  double actual_max = static_cast<double>(max_len + 2);
  if (!(actual_max * 3 + indent_ < kBreakLength &&
        (static_cast<double>(total) / actual_max > 5 || max_len <= 6))) {
    return out;
  }
  double bias = std::sqrt(actual_max - static_cast<double>(total) / static_cast<double>(out.size()));
  double biased_max = std::max(actual_max - 3 - bias, 1.0);
  double columns = std::min({std::round(std::sqrt(2.5 * biased_max * static_cast<double>(count)) / biased_max),
                             std::floor((static_cast<double>(kBreakLength) - indent_) / actual_max),
                             static_cast<double>(kCompact * 4), 15.0});
  if (columns <= 1) return out;
  size_t cols = static_cast<size_t>(columns);
  std::vector<size_t> widths;
  for (size_t c = 0; c < cols; ++c) {
    size_t width = 0;
    for (size_t j = c; j < count; j += cols) width = std::max(width, lens[j]);
    widths.push_back(width + 2);
  }
  std::vector<std::string> grouped;
  for (size_t i = 0; i < count; i += cols) {
    size_t end = std::min(i + cols, count);
    std::string line;
    for (size_t j = i; j < end; ++j) {
      std::string cell = j + 1 < end ? out[j] + ", " : out[j];
      size_t width = j + 1 < end ? widths[j - i] : widths[j - i] - 2;
      std::string pad(width > cell.size() ? width - cell.size() : 0, ' ');
      if (shape.numeric) line += pad + cell;
      else line += j + 1 < end ? cell + pad : cell;
    }
    grouped.push_back(std::move(line));
  }
  if (shape.more) grouped.push_back(out.back());
  return grouped;
}

// node's reduceToSingleString: one line if the entries fit in 80 columns and
// the object has at most kCompact levels inside; else one entry per line.
std::string Inspector::Reduce(std::vector<std::string> out, const Shape& shape, int level) {
  size_t entries = out.size();
  if (shape.kind == Kind::kArray && entries > 6) out = Group(out, shape);
  std::string lead = shape.base.empty() ? std::string() : shape.base + " ";
  if (current_depth_ - level < kCompact && entries == out.size()) {
    size_t start = out.size() + static_cast<size_t>(indent_) + shape.open.size() + shape.base.size() + 10;
    size_t total = out.size() + start;
    bool fits = total + out.size() <= kBreakLength;
    for (size_t i = 0; fits && i < out.size(); ++i) {
      total += out[i].size();
      fits = total <= kBreakLength;
    }
    if (fits && shape.base.find('\n') == std::string::npos) {
      std::string joined = Join(out, ", ");
      if (joined.find('\n') == std::string::npos) return lead + shape.open + " " + joined + " " + shape.close;
    }
  }
  std::string indentation = "\n" + std::string(static_cast<size_t>(indent_), ' ');
  return lead + shape.open + indentation + "  " + Join(out, "," + indentation + "  ") + indentation +
         shape.close;
}

}  // namespace

std::string Inspect(v8::Local<v8::Context> context, v8::Local<v8::Value> value,
                    const Options& options) {
  v8::HandleScope scope(context->GetIsolate());
  Inspector inspector(context, options);
  return inspector.Value(value, 0);
}

namespace {

// A primitive's string as String(value) gives it (symbols by description).
std::string PlainString(Inspector& inspector, v8::Local<v8::Value> value) {
  return inspector.Primitive(value, false);
}

// parseInt / parseFloat of a primitive's string (NaN for anything else).
double ParseNumber(Inspector& inspector, v8::Local<v8::Value> value, bool integer) {
  if (value->IsObject() || value->IsSymbol()) return std::nan("");
  std::string text = PlainString(inspector, value);
  const char* p = text.c_str();
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') ++p;
  char* end = nullptr;
  double d = integer ? static_cast<double>(std::strtoll(p, &end, 10)) : std::strtod(p, &end);
  if (end == p) return std::nan("");
  if (integer && value->IsNumber()) d = std::trunc(value.As<v8::Number>()->Value());
  return d;
}

// JSON.stringify for %j, as node does (its toJSON methods and getters run).
std::string Json(v8::Local<v8::Context> context, v8::Local<v8::Value> value, size_t budget) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::TryCatch try_catch(isolate);
  v8::Local<v8::String> text;
  std::string out;
  if (v8::JSON::Stringify(context, value).ToLocal(&text)) {
    AppendString(isolate, text, budget + 1, out);
    return out;
  }
  if (try_catch.HasTerminated()) return out;
  std::string message;
  v8::Local<v8::Message> m = try_catch.Message();
  if (!m.IsEmpty()) AppendString(isolate, m->Get(), 256, message);
  return message.find("ircular") != std::string::npos ? "[Circular]" : "[" + message + "]";
}

}  // namespace

std::string Format(v8::Local<v8::Context> context, const std::vector<v8::Local<v8::Value>>& args,
                   size_t budget) {
  v8::Isolate* isolate = context->GetIsolate();
  v8::HandleScope scope(isolate);
  Options plain;
  plain.budget = budget;
  Inspector inspector(context, plain);
  std::string out;
  size_t next = 0;
  auto inspect = [&](v8::Local<v8::Value> v, int depth) {
    Options o = plain;
    o.depth = depth;
    o.budget = budget > out.size() ? budget - out.size() : 0;
    return Inspect(context, v, o);
  };
  if (!args.empty() && args[0]->IsString() && args.size() > 1) {
    std::vector<uint16_t> units = Units(isolate, args[0].As<v8::String>(), budget + 1);
    next = 1;
    std::vector<uint16_t> run;
    auto flush = [&]() {
      AppendUnits(run, 0, out);
      run.clear();
    };
    for (size_t i = 0; i < units.size() && out.size() <= budget; ++i) {
      uint16_t c = i + 1 < units.size() && units[i] == '%' ? units[i + 1] : 0;
      if (c == '%') {
        run.push_back('%');
        ++i;
        continue;
      }
      bool directive = c == 's' || c == 'd' || c == 'i' || c == 'f' || c == 'j' || c == 'o' ||
                       c == 'O' || c == 'c';
      if (!directive || next >= args.size()) {
        run.push_back(units[i]);
        continue;
      }
      flush();
      ++i;
      v8::Local<v8::Value> arg = args[next++];
      if (c == 's') {
        out += arg->IsObject() ? inspect(arg, 0) : arg->IsString() ? PlainString(inspector, arg)
                                                                   : inspector.Value(arg, 0);
      } else if (c == 'd' || c == 'i' || c == 'f') {
        if (arg->IsBigInt()) out += inspector.Value(arg, 0);
        else if (c == 'd' && arg->IsNumber()) out += inspector.Value(arg, 0);
        else if (c == 'd' && !arg->IsObject() && !arg->IsSymbol()) {
          v8::Local<v8::Number> n;
          v8::TryCatch try_catch(isolate);
          out += arg->ToNumber(context).ToLocal(&n) ? inspector.Value(n, 0) : "NaN";
        } else {
          double d = c == 'd' ? std::nan("") : ParseNumber(inspector, arg, c == 'i');
          out += inspector.Value(v8::Number::New(isolate, d), 0);
        }
      } else if (c == 'j') {
        out += Json(context, arg, budget);
      } else if (c == 'o' || c == 'O') {
        out += inspect(arg, c == 'o' ? 4 : 2);
      }   // %c: CSS, consumed and ignored
    }
    flush();
  }
  for (; next < args.size() && out.size() <= budget; ++next) {
    if (next != 0) out += ' ';
    out += args[next]->IsString() ? PlainString(inspector, args[next]) : inspect(args[next], 2);
  }
  return out;
}

}  // namespace ivm::inspect
