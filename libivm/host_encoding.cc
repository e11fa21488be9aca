// host_encoding.cc — TextEncoder, TextDecoder, atob and btoa (IVM_HOST_ENCODING).
//
// The classes are a small JavaScript shell (kShell) around native coders:
// UTF-8 encoding (lone surrogates become U+FFFD), WHATWG UTF-8 and UTF-16LE
// decoding (each maximal invalid subsequence becomes one U+FFFD, or a
// TypeError when `fatal`), and forgiving base64.
#include "host.h"

#include <cstring>
#include <string>

namespace ivm {
namespace {

constexpr char kShell[] = R"JS((function (native) {
  'use strict';
  const { encode, encodeInto, decode, label, atob, btoa } = native;
  const define = Object.defineProperty;
  class TextEncoder {
    get encoding() { return 'utf-8'; }
    encode(input = '') { return encode(`${input}`); }
    encodeInto(source, destination) {
      const r = encodeInto(`${source}`, destination);
      return { read: r[0], written: r[1] };
    }
  }
  class TextDecoder {
    #encoding; #fatal; #ignoreBOM; #pending; #started = false;
    constructor(encoding = 'utf-8', options = undefined) {
      const name = label(`${encoding}`);
      if (name === undefined) throw new RangeError(`The "${encoding}" encoding is not supported`);
      this.#encoding = name;
      this.#fatal = Boolean(options?.fatal);
      this.#ignoreBOM = Boolean(options?.ignoreBOM);
    }
    get encoding() { return this.#encoding; }
    get fatal() { return this.#fatal; }
    get ignoreBOM() { return this.#ignoreBOM; }
    decode(input = undefined, options = undefined) {
      const stream = Boolean(options?.stream);
      const r = decode(this.#pending, input, this.#encoding === 'utf-16le', this.#fatal,
                       !this.#ignoreBOM && !this.#started, stream);
      this.#pending = stream ? r[1] : undefined;
      this.#started = stream && (this.#started || r[2]);
      return r[0];
    }
  }
  for (const [C, tag] of [[TextEncoder, 'TextEncoder'], [TextDecoder, 'TextDecoder']]) {
    define(C.prototype, Symbol.toStringTag, { value: tag, configurable: true });
    define(globalThis, tag, { value: C, writable: true, configurable: true });
  }
  define(globalThis, 'atob', { value: { atob(data) {
    if (arguments.length === 0) throw new TypeError('atob requires 1 argument');
    return atob(`${data}`);
  } }.atob, writable: true, configurable: true });
  define(globalThis, 'btoa', { value: { btoa(data) {
    if (arguments.length === 0) throw new TypeError('btoa requires 1 argument');
    return btoa(`${data}`);
  } }.btoa, writable: true, configurable: true });
}))JS";

v8::Local<v8::String> Str(v8::Isolate* isolate, const char* s) {
  return v8::String::NewFromUtf8(isolate, s).ToLocalChecked();
}

void ThrowType(v8::Isolate* isolate, const char* message) {
  isolate->ThrowException(v8::Exception::TypeError(Str(isolate, message)));
}

// A string made of UTF-16 units; empty with a RangeError if V8 refuses it.
v8::MaybeLocal<v8::String> FromUnits(v8::Isolate* isolate, const std::u16string& units) {
  if (units.size() > static_cast<size_t>(v8::String::kMaxLength)) {
    isolate->ThrowException(v8::Exception::RangeError(Str(isolate, "Invalid string length")));
    return {};
  }
  v8::MaybeLocal<v8::String> s = v8::String::NewFromTwoByte(
      isolate, reinterpret_cast<const uint16_t*>(units.data()), v8::NewStringType::kNormal,
      static_cast<int>(units.size()));
  if (s.IsEmpty()) {
    isolate->ThrowException(v8::Exception::RangeError(Str(isolate, "Invalid string length")));
  }
  return s;
}

void Encode(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  if (!info[0]->IsString()) return ThrowType(isolate, "encode: a string is expected");
  v8::Local<v8::String> str = info[0].As<v8::String>();
  int length = str->Utf8Length(isolate);   // lone surrogates: 3 bytes, as U+FFFD
  v8::Local<v8::Uint8Array> out;
  if (!NewBytes(isolate, nullptr, static_cast<size_t>(length)).ToLocal(&out)) return;
  if (length > 0) {
    auto* p = static_cast<char*>(out->Buffer()->GetBackingStore()->Data());
    str->WriteUtf8(isolate, p, length, nullptr,
                   v8::String::NO_NULL_TERMINATION | v8::String::REPLACE_INVALID_UTF8);
  }
  info.GetReturnValue().Set(out);
}

void EncodeInto(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  if (!info[0]->IsString()) return ThrowType(isolate, "a string is expected");
  if (!info[1]->IsUint8Array()) {
    return ThrowType(isolate, "The \"destination\" argument must be an instance of Uint8Array");
  }
  v8::Local<v8::String> str = info[0].As<v8::String>();
  v8::Local<v8::Uint8Array> dest = info[1].As<v8::Uint8Array>();
  size_t capacity = dest->ByteLength();
  int read = 0, written = 0;
  if (capacity > 0 && str->Length() > 0) {
    char* p = static_cast<char*>(dest->Buffer()->GetBackingStore()->Data()) + dest->ByteOffset();
    int cap = capacity > static_cast<size_t>(INT32_MAX) ? INT32_MAX : static_cast<int>(capacity);
    written = str->WriteUtf8(isolate, p, cap, &read,
                             v8::String::NO_NULL_TERMINATION | v8::String::REPLACE_INVALID_UTF8);
    // `read` counts characters; a surrogate pair is two UTF-16 units.
    std::u16string units(static_cast<size_t>(std::min(str->Length(), read * 2)), u'\0');
    str->Write(isolate, reinterpret_cast<uint16_t*>(units.data()), 0,
               static_cast<int>(units.size()), v8::String::NO_NULL_TERMINATION);
    int seen = 0, n = 0;
    for (; n < static_cast<int>(units.size()) && seen < read; ++n, ++seen) {
      char16_t u = units[static_cast<size_t>(n)];
      if (u >= 0xD800 && u <= 0xDBFF && n + 1 < static_cast<int>(units.size()) &&
          units[static_cast<size_t>(n) + 1] >= 0xDC00 && units[static_cast<size_t>(n) + 1] <= 0xDFFF) {
        ++n;
      }
    }
    read = n;
  }
  v8::Local<v8::Value> pair[2] = {v8::Integer::New(isolate, read), v8::Integer::New(isolate, written)};
  info.GetReturnValue().Set(v8::Array::New(isolate, pair, 2));
}

void Push(std::u16string& out, uint32_t cp) {
  if (cp >= 0x10000) {
    cp -= 0x10000;
    out += static_cast<char16_t>(0xD800 + (cp >> 10));
    out += static_cast<char16_t>(0xDC00 + (cp & 0x3FF));
  } else {
    out += static_cast<char16_t>(cp);
  }
}

// WHATWG UTF-8 decode of p[0, n). False on an error when `fatal`. With
// `stream`, an incomplete sequence at the end is left (*used < n).
bool DecodeUtf8(const uint8_t* p, size_t n, bool fatal, bool stream, std::u16string& out,
                size_t* used) {
  size_t i = 0;
  while (i < n) {
    uint8_t b = p[i];
    if (b < 0x80) {
      out += static_cast<char16_t>(b);
      ++i;
      continue;
    }
    int need = 0;
    uint32_t cp = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1, cp = b & 0x1Fu;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2, cp = b & 0x0Fu;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3, cp = b & 0x07u;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    size_t j = i + 1;
    int k = 0;
    for (; need > 0 && k < need && j < n && p[j] >= lo && p[j] <= hi; ++k, ++j) {
      cp = (cp << 6) | (p[j] & 0x3Fu);
      lo = 0x80, hi = 0xBF;
    }
    if (need > 0 && k == need) {
      Push(out, cp);
    } else if (need > 0 && j == n && stream) {
      break;   // wait for the rest of the sequence
    } else if (fatal) {
      return false;
    } else {
      out += u'\uFFFD';   // the maximal subpart; the offending byte is read again
    }
    i = j;
  }
  *used = i;
  return true;
}

bool DecodeUtf16(const uint8_t* p, size_t n, bool fatal, bool stream, std::u16string& out,
                 size_t* used) {
  size_t i = 0;
  for (; i + 1 < n; i += 2) {
    char16_t u = static_cast<char16_t>(p[i] | (p[i + 1] << 8));
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (i + 3 < n) {
        char16_t t = static_cast<char16_t>(p[i + 2] | (p[i + 3] << 8));
        if (t >= 0xDC00 && t <= 0xDFFF) {
          out += u;
          out += t;
          i += 2;
          continue;
        }
      } else if (stream) {
        break;
      }
    }
    if (u >= 0xD800 && u <= 0xDFFF) {
      if (fatal) return false;
      u = u'\uFFFD';
    }
    out += u;
  }
  if (i < n && !stream && i + 1 >= n) {   // an odd byte at the end
    if (fatal) return false;
    out += u'\uFFFD';
    i = n;
  }
  *used = i;
  return true;
}

// decode(pending, input, utf16, fatal, stripBOM, stream) -> [text, rest, started]
void Decode(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  const uint8_t* data = nullptr;
  size_t length = 0;
  if (info[1]->IsUndefined()) {
    data = reinterpret_cast<const uint8_t*>("");
  } else if (!ReadBytes(info[1], &data, &length)) {
    return ThrowType(isolate,
                     "The \"input\" argument must be an instance of ArrayBuffer or ArrayBufferView");
  }
  std::vector<uint8_t> joined;
  const uint8_t* pending = nullptr;
  size_t pending_length = 0;
  if (ReadBytes(info[0], &pending, &pending_length) && pending_length > 0) {
    joined.assign(pending, pending + pending_length);
    joined.insert(joined.end(), data, data + length);
    data = joined.data();
    length = joined.size();
  }
  bool utf16 = info[2]->IsTrue(), fatal = info[3]->IsTrue(), strip = info[4]->IsTrue();
  bool stream = info[5]->IsTrue();
  std::u16string units;
  size_t used = 0;
  bool ok = utf16 ? DecodeUtf16(data, length, fatal, stream, units, &used)
                  : DecodeUtf8(data, length, fatal, stream, units, &used);
  if (!ok) {
    std::string message = std::string("The encoded data was not valid for encoding ") +
                          (utf16 ? "utf-16le" : "utf-8");
    isolate->ThrowException(v8::Exception::TypeError(Str(isolate, message.c_str())));
    return;
  }
  if (strip && !units.empty() && units[0] == u'\uFEFF') units.erase(0, 1);
  v8::Local<v8::String> text;
  v8::Local<v8::Value> rest = v8::Undefined(isolate);
  v8::Local<v8::Uint8Array> left;
  if (!FromUnits(isolate, units).ToLocal(&text)) return;
  if (used < length) {
    if (!NewBytes(isolate, data + used, length - used).ToLocal(&left)) return;
    rest = left;
  }
  v8::Local<v8::Value> result[3] = {text, rest, v8::Boolean::New(isolate, used > 0)};
  info.GetReturnValue().Set(v8::Array::New(isolate, result, 3));
}

// The encoding a label names ("utf-8" or "utf-16le"), or undefined.
void Label(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  std::string s;
  v8::Local<v8::String> str = info[0].As<v8::String>();
  if (!info[0]->IsString() || str->Length() > 64) return;
  s.resize(static_cast<size_t>(str->Utf8Length(isolate)));
  str->WriteUtf8(isolate, s.data(), static_cast<int>(s.size()), nullptr,
                 v8::String::NO_NULL_TERMINATION);
  const char* space = " \t\n\f\r";
  size_t b = s.find_first_not_of(space), e = s.find_last_not_of(space);
  s = b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (s == "utf-8" || s == "utf8" || s == "unicode-1-1-utf-8" || s == "unicode11utf8" ||
      s == "unicode20utf8" || s == "x-unicode20utf8") {
    info.GetReturnValue().Set(Str(isolate, "utf-8"));
  } else if (s == "utf-16le" || s == "utf-16" || s == "ucs-2" || s == "unicode" ||
             s == "csunicode" || s == "iso-10646-ucs-2" || s == "unicodefeff") {
    info.GetReturnValue().Set(Str(isolate, "utf-16le"));
  }
}

// The UTF-16 units of the string argument 0 (false with a TypeError thrown).
bool ArgumentUnits(const v8::FunctionCallbackInfo<v8::Value>& info, std::u16string* units) {
  if (!info[0]->IsString()) {
    ThrowType(info.GetIsolate(), "a string is expected");
    return false;
  }
  v8::Local<v8::String> str = info[0].As<v8::String>();
  units->assign(static_cast<size_t>(str->Length()), u'\0');
  str->Write(info.GetIsolate(), reinterpret_cast<uint16_t*>(units->data()), 0, str->Length(),
             v8::String::NO_NULL_TERMINATION);
  return true;
}

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void Btoa(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  std::u16string units;
  if (!ArgumentUnits(info, &units)) return;
  std::string out;
  out.reserve((units.size() + 2) / 3 * 4);
  for (size_t i = 0; i < units.size(); i += 3) {
    uint32_t chunk = 0;
    size_t n = std::min<size_t>(3, units.size() - i);
    for (size_t k = 0; k < 3; ++k) {
      char16_t u = k < n ? units[i + k] : 0;
      if (u > 0xFF) return ThrowNamedError(isolate, "InvalidCharacterError", "Invalid character");
      chunk = (chunk << 8) | u;
    }
    for (size_t k = 0; k < 4; ++k) {
      out += k <= n ? kAlphabet[(chunk >> (18 - 6 * k)) & 0x3F] : '=';
    }
  }
  v8::Local<v8::String> result;
  if (NewString(isolate, out.data(), out.size(), nullptr).ToLocal(&result)) {
    info.GetReturnValue().Set(result);
  }
}

// Forgiving base64 (HTML's atob): ASCII whitespace ignored, padding optional.
void Atob(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Isolate* isolate = info.GetIsolate();
  std::u16string units;
  if (!ArgumentUnits(info, &units)) return;
  std::string digits;
  for (char16_t u : units) {
    if (u == ' ' || u == '\t' || u == '\n' || u == '\f' || u == '\r') continue;
    digits += u > 0x7F ? '!' : static_cast<char>(u);
  }
  if (digits.size() % 4 == 0 && !digits.empty() && digits.back() == '=') {
    digits.pop_back();
    if (digits.back() == '=') digits.pop_back();
  }
  auto bad = [&]() {
    ThrowNamedError(isolate, "InvalidCharacterError",
                    "The string to be decoded is not correctly encoded.");
  };
  if (digits.size() % 4 == 1) return bad();
  std::u16string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : digits) {
    const char* at = c == '\0' ? nullptr : std::strchr(kAlphabet, c);
    if (at == nullptr) return bad();
    bits = (bits << 6) | static_cast<uint32_t>(at - kAlphabet);
    if (++count == 4) {
      out += static_cast<char16_t>((bits >> 16) & 0xFF);
      out += static_cast<char16_t>((bits >> 8) & 0xFF);
      out += static_cast<char16_t>(bits & 0xFF);
      bits = 0;
      count = 0;
    }
  }
  if (count == 2) out += static_cast<char16_t>((bits >> 4) & 0xFF);
  if (count == 3) {
    out += static_cast<char16_t>((bits >> 10) & 0xFF);
    out += static_cast<char16_t>((bits >> 2) & 0xFF);
  }
  v8::Local<v8::String> result;
  if (FromUnits(isolate, out).ToLocal(&result)) info.GetReturnValue().Set(result);
}

}  // namespace

bool InstallEncoding(IsolateHolder& holder, v8::Local<v8::Context> context) {
  (void)holder;
  return RunInstaller(context, "ivm:encoding", kShell,
                      {{"encode", Encode}, {"encodeInto", EncodeInto}, {"decode", Decode},
                       {"label", Label}, {"atob", Atob}, {"btoa", Btoa}});
}

}  // namespace ivm
