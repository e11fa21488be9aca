// value.cc — host-side values (ivm_value_t) and their conversion from V8.
//
// Strings travel as WTF-8: UTF-8 in which a lone UTF-16 surrogate is written
// as its 3-byte form. V8's UTF-8 decoder would turn those into U+FFFD, so input
// containing them is decoded here into UTF-16.
#include "internal.h"

#include <cmath>
#include <cstddef>
#include <limits>

namespace ivm {

namespace {

bool HasEncodedSurrogate(const unsigned char* p, size_t len) {
  for (size_t i = 0; i + 1 < len; ++i) {
    if (p[i] == 0xED && (p[i + 1] & 0xE0) == 0xA0) return true;
  }
  return false;
}

// Decodes WTF-8 into UTF-16; invalid sequences become U+FFFD.
std::u16string DecodeWtf8(const unsigned char* p, size_t len) {
  std::u16string out;
  out.reserve(len);
  size_t i = 0;
  while (i < len) {
    unsigned char c = p[i];
    uint32_t cp;
    size_t need;
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0 && c >= 0xC2) {
      cp = c & 0x1F, need = 1;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F, need = 2;
    } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
      cp = c & 0x07, need = 3;
    } else {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    if (i + need >= len) {  // truncated sequence
      out.push_back(0xFFFD);
      break;
    }
    bool ok = true;
    for (size_t k = 1; k <= need; ++k) {
      unsigned char cc = p[i + k];
      if ((cc & 0xC0) != 0x80) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms and out-of-range code points.
    if (ok && ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)))) {
      ok = false;
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(cp));  // includes lone surrogates
    }
    i += need + 1;
  }
  return out;
}

}  // namespace

bool HeapHasRoom(v8::Isolate* isolate, size_t bytes) {
  if (bytes < kRoomCheckBytes) return true;
  v8::HeapStatistics hs;
  isolate->GetHeapStatistics(&hs);
  // Half as much again: the allocation may need its space twice while the
  // collector moves it, and the isolate needs room to report the failure.
  return hs.used_heap_size() + bytes + (bytes >> 1) <= hs.heap_size_limit();
}

ivm_error_t* NoRoomError(size_t bytes) {
  return MakeError(IVM_ERROR_TRANSFER, "cannot copy into the isolate: a value of " +
                                           std::to_string(bytes) +
                                           " bytes does not fit in the isolate's memory limit");
}

v8::MaybeLocal<v8::String> NewString(v8::Isolate* isolate, const char* data, size_t len,
                                     ivm_error_t** error, bool internalize) {
  const v8::NewStringType type =
      internalize ? v8::NewStringType::kInternalized : v8::NewStringType::kNormal;
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  constexpr size_t kMax = static_cast<size_t>(v8::String::kMaxLength);
  v8::MaybeLocal<v8::String> result;
  bool ascii = true;
  for (size_t i = 0; i < len; ++i) {
    if (p[i] >= 0x80) {
      ascii = false;
      break;
    }
  }
  // One byte a character for ASCII, at most two (UTF-16) otherwise.
  if (!HeapHasRoom(isolate, ascii ? len : 2 * len)) {
    if (error) *error = NoRoomError(ascii ? len : 2 * len);
    return result;
  }
  if (ascii) {
    if (len <= kMax) {
      result = v8::String::NewFromOneByte(isolate, p, type, static_cast<int>(len));
    }
  } else if (!HasEncodedSurrogate(p, len)) {
    if (len <= static_cast<size_t>(std::numeric_limits<int>::max())) {
      result = v8::String::NewFromUtf8(isolate, data, type, static_cast<int>(len));
    }
  } else {
    std::u16string units = DecodeWtf8(p, len);
    if (units.size() <= kMax) {
      result = v8::String::NewFromTwoByte(isolate, reinterpret_cast<const uint16_t*>(units.data()),
                                          type, static_cast<int>(units.size()));
    }
  }
  if (result.IsEmpty() && error) {
    *error = InvalidArgument("string of " + std::to_string(len) +
                             " bytes is longer than V8's maximum string length");
  }
  return result;
}

std::string DescribeType(v8::Isolate* isolate, v8::Local<v8::Value> value) {
  if (value->IsSymbol()) return "Symbol";
  if (!value->IsObject()) return "primitive";
  if (value->IsProxy()) return "Proxy";
  if (value->IsFunction()) return "Function";
  if (value->IsArray()) return "Array";
  if (value->IsPromise()) return "Promise";
  // The constructor name is read from the object's map, not by running JS.
  std::string name;
  compat::AppendWtf8(isolate, value.As<v8::Object>()->GetConstructorName(), name);
  return name.empty() ? "Object" : name;
}

ivm_error_t* ValueFromV8(v8::Isolate* isolate, v8::Local<v8::Context> context,
                         v8::Local<v8::Value> value, ivm_value_t** out) {
  (void)context;
  auto v = std::make_unique<ivm_value>();
  if (ivm_error_t* err = FillValueFromV8(isolate, value, v.get())) return err;
  *out = v.release();
  return nullptr;
}

ivm_error_t* FillValueFromV8(v8::Isolate* isolate, v8::Local<v8::Value> value, ivm_value_t* v) {
  if (value->IsNumber()) {   // the most common first
    v->kind = IVM_VALUE_NUMBER;
    v->number = value.As<v8::Number>()->Value();
  } else if (value->IsUndefined()) {
    v->kind = IVM_VALUE_UNDEFINED;
  } else if (value->IsNull()) {
    v->kind = IVM_VALUE_NULL;
  } else if (value->IsBoolean()) {
    v->kind = IVM_VALUE_BOOLEAN;
    v->boolean = value->IsTrue();
  } else if (value->IsString()) {
    v->kind = IVM_VALUE_STRING;
    compat::AppendWtf8(isolate, value.As<v8::String>(), v->str);
  } else if (value->IsBigInt()) {
    v->kind = IVM_VALUE_BIGINT;
    v8::Local<v8::BigInt> big = value.As<v8::BigInt>();
    int count = big->WordCount();
    int sign = 0;
    v->words.resize(static_cast<size_t>(count));
    big->ToWordsArray(&sign, &count, v->words.data());
    v->words.resize(static_cast<size_t>(count));
    while (!v->words.empty() && v->words.back() == 0) v->words.pop_back();
    v->negative = sign != 0 && !v->words.empty();
  } else {
    return MakeError(IVM_ERROR_TRANSFER,
                     "A value of type " + DescribeType(isolate, value) +
                         " cannot leave the isolate: only primitives (undefined, null, "
                         "booleans, numbers, BigInts and strings) are transferable "
                         "without a transfer option");
  }
  return nullptr;
}

bool FillPrimitive(const ivm_value_t* value, ivm_primitive_t* out, bool strings) {
  *out = ivm_primitive_t{};
  switch (value->kind) {
    case IVM_VALUE_UNDEFINED:
    case IVM_VALUE_NULL:
      out->kind = value->kind;
      return true;
    case IVM_VALUE_BOOLEAN:
      out->kind = value->kind;
      out->boolean = value->boolean ? 1 : 0;
      return true;
    case IVM_VALUE_NUMBER:
      out->kind = value->kind;
      out->number = value->number;
      return true;
    case IVM_VALUE_STRING:
      if (!strings) return false;
      out->kind = value->kind;
      out->data = value->str.data();
      out->len = value->str.size();
      return true;
    default:
      return false;
  }
}

namespace {
thread_local ivm_primitive_t* t_primitive_out = nullptr;
}  // namespace

// (The slot's address is looked up once, here: the destructor reuses it.)
PrimitiveOutScope::PrimitiveOutScope(ivm_primitive_t* out)
    : slot_(&t_primitive_out), saved_(*slot_) {
  *slot_ = out;
}

PrimitiveOutScope::~PrimitiveOutScope() { *slot_ = saved_; }

ivm_primitive_t* PrimitiveOutScope::Claim() {
  ivm_primitive_t* out = t_primitive_out;
  t_primitive_out = nullptr;
  return out;
}

bool FillPrimitiveFromV8(v8::Local<v8::Value> value, ivm_primitive_t* out) {
  if (value->IsNumber()) {
    *out = ivm_primitive_t{};
    out->kind = IVM_VALUE_NUMBER;
    out->number = value.As<v8::Number>()->Value();
  } else if (value->IsUndefined() || value->IsNull()) {
    *out = ivm_primitive_t{};
    out->kind = value->IsUndefined() ? IVM_VALUE_UNDEFINED : IVM_VALUE_NULL;
  } else if (value->IsBoolean()) {
    *out = ivm_primitive_t{};
    out->kind = IVM_VALUE_BOOLEAN;
    out->boolean = value->IsTrue() ? 1 : 0;
  } else {
    return false;
  }
  return true;
}

void DeliverPrimitive(ivm_primitive_t* primitive_out, ivm_value_t** out) {
  if (primitive_out == nullptr || *out == nullptr) return;
  if (FillPrimitive(*out, primitive_out, false)) {
    delete *out;
    *out = nullptr;
  } else {
    primitive_out->kind = 0;
  }
}

}  // namespace ivm

// ---------------------------------------------------------------------------
// ABI

extern "C" {

IVM_API ivm_value_kind_t ivm_value_kind(const ivm_value_t* value) {
  return value ? value->kind : static_cast<ivm_value_kind_t>(IVM_VALUE_UNDEFINED);
}

IVM_API int ivm_value_boolean(const ivm_value_t* value) {
  return value && value->kind == IVM_VALUE_BOOLEAN && value->boolean ? 1 : 0;
}

IVM_API double ivm_value_number(const ivm_value_t* value) {
  if (value && value->kind == IVM_VALUE_NUMBER) return value->number;
  return std::numeric_limits<double>::quiet_NaN();
}

IVM_API void ivm_value_string(const ivm_value_t* value, const char** out, size_t* out_len) {
  static const char empty[] = "";
  bool ok = value && value->kind == IVM_VALUE_STRING;
  if (out) *out = ok ? value->str.data() : empty;
  if (out_len) *out_len = ok ? value->str.size() : 0;
}

IVM_API void ivm_value_bigint(const ivm_value_t* value, int* negative_out,
                              const uint64_t** words_out, size_t* count_out) {
  bool ok = value && value->kind == IVM_VALUE_BIGINT;
  if (negative_out) *negative_out = ok && value->negative ? 1 : 0;
  if (words_out) *words_out = ok ? value->words.data() : nullptr;
  if (count_out) *count_out = ok ? value->words.size() : 0;
}

static ivm_value_t* NewValue(ivm_value_kind_t kind) noexcept {
  auto* v = new (std::nothrow) ivm_value();
  if (v) v->kind = kind;
  return v;
}

IVM_API ivm_value_t* ivm_value_new_undefined(void) { return NewValue(IVM_VALUE_UNDEFINED); }
IVM_API ivm_value_t* ivm_value_new_null(void) { return NewValue(IVM_VALUE_NULL); }

IVM_API ivm_value_t* ivm_value_new_boolean(int b) {
  ivm_value_t* v = NewValue(IVM_VALUE_BOOLEAN);
  if (v) v->boolean = b != 0;
  return v;
}

IVM_API ivm_value_t* ivm_value_new_number(double d) {
  ivm_value_t* v = NewValue(IVM_VALUE_NUMBER);
  if (v) v->number = d;
  return v;
}

IVM_API ivm_value_t* ivm_value_new_string(const char* data, size_t len) {
  ivm_value_t* v = NewValue(IVM_VALUE_STRING);
  if (!v) return nullptr;
  try {
    if (len) v->str.assign(data, len);
  } catch (...) {
    delete v;
    return nullptr;
  }
  return v;
}

IVM_API ivm_value_t* ivm_value_new_bigint(int negative, const uint64_t* words, size_t count) {
  ivm_value_t* v = NewValue(IVM_VALUE_BIGINT);
  if (!v) return nullptr;
  try {
    if (count) v->words.assign(words, words + count);
  } catch (...) {
    delete v;
    return nullptr;
  }
  while (!v->words.empty() && v->words.back() == 0) v->words.pop_back();
  v->negative = negative != 0 && !v->words.empty();
  return v;
}

IVM_API void ivm_value_free(ivm_value_t* value) { delete value; }

}  // extern "C"
