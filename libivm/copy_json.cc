// copy_json.cc — the reader's fast path: a copy stream that holds only JSON
// data becomes JSON text, which V8's JSON.parse turns into objects.
//
// JSON.parse builds objects far faster than the general reader's one
// property at a time (it follows V8's map transitions). The transcoder below
// runs first on every stream of up to kMaxStream bytes. It takes the opcodes
// Python's pickle writes for None, bools, ints within ±(2**53-1), finite
// floats, strs, lists and dicts with str keys (and libivm's writer, for the
// same data), and writes their JSON text in one pass; anything else (undefined, BigInts,
// NaN, shared or recalled containers, tuples, sets, Maps, bytes, calls of
// `ivm._copy`, nesting deeper than kMaxDepth, malformed streams) makes it
// give up without touching the isolate, and the general reader reads the
// stream (copy_reader.cc). So a value read here is the one the general
// reader would make: numbers are written in their shortest exact form (-0
// included), strings keep lone surrogates (as \u escapes), keys keep their
// order, and JSON.parse defines properties as CreateDataProperty does
// ("__proto__" stays an own property).
//
// A stream that is already JSON text, `_json(text)` (Python's writer for plain
// data, ivm/_cffi_json.c), goes to JSON.parse as it is, with at most
// kMaxJsonText bytes of text.
//
// JSON.parse cannot be stopped midway; the size bound keeps one parse to a
// few milliseconds, and the call's stop is checked before it starts.
#include "copy.h"
#include "pickle.h"

#include <charconv>
#include <memory>

namespace ivm {
namespace {

using namespace pickle;

constexpr size_t kMaxStream = 1u << 20;   // larger streams take the general reader
constexpr size_t kMaxJsonText = 2u << 20;  // a _json stream's text (ivm/_cffi_json.c's bound)
constexpr int kMaxJsonDepth = 200;        // deeper values take the general reader
constexpr uint32_t kNone = 0xffffffffu;
constexpr uint32_t kMaxMemoSlot = 1u << 20;
constexpr int64_t kMaxSafe = static_cast<int64_t>(kMaxSafeInteger);

enum Kind : uint8_t { kScalar, kString, kEmptyTuple, kList, kDict };
inline bool IsContainer(Kind k) { return k == kList || k == kDict; }

// The JSON text, written in the stream's order. Every value is preceded by
// one placeholder byte (a space) that becomes its separator (',' or ':')
// once it is added to its container, and a container's closing bracket is
// written when it is added (or at STOP). The one place where pickle's order
// is ambiguous, a value pushed right above a container with no mark between
// them (the container's single item, APPEND or SETITEM, or its next
// sibling), gets one more placeholder before it: the container's closing
// bracket if the value turns out to be a sibling, else a space.
class Text {   // (about 1.7 bytes per stream byte for rows of short keys and values)
 public:
  explicit Text(size_t reserve) : cap_(reserve < 64 ? 64 : reserve), s_(new char[cap_]) {}
  size_t size() const { return n_; }
  void Room(size_t k) {
    if (cap_ - n_ >= k) return;
    size_t cap = 2 * cap_ + k;
    std::unique_ptr<char[]> s(new char[cap]);
    std::memcpy(s.get(), s_.get(), n_);
    s_ = std::move(s);
    cap_ = cap;
  }
  void Put(char c) {
    Room(1);
    s_[n_++] = c;
  }
  void Append(const char* p, size_t k) {
    Room(k);
    Copy(&s_[n_], p, k);
    n_ += k;
  }
  // Appends a copy of its own bytes [from, from + k).
  void Repeat(size_t from, size_t k) {
    Room(k);
    Copy(&s_[n_], &s_[from], k);
    n_ += k;
  }
  char& operator[](size_t i) { return s_[i]; }
  // The text; the buffer goes with it.
  std::unique_ptr<char[]> Take(size_t* length) {
    *length = n_;
    return std::move(s_);
  }

 private:
  // Most copies are a key or a number: a few bytes, cheaper inline.
  static void Copy(char* to, const char* from, size_t k) {
    if (k > 16) {
      std::memcpy(to, from, k);
      return;
    }
    for (size_t i = 0; i < k; ++i) to[i] = from[i];
  }

  size_t cap_;
  std::unique_ptr<char[]> s_;
  size_t n_ = 0;
};

class Transcoder {
 public:
  explicit Transcoder(const std::string& stream)
      : p_(reinterpret_cast<const unsigned char*>(stream.data())), end_(p_ + stream.size()),
        out_(2 * stream.size()) {}

  // True with *json holding the value's JSON text (Latin-1, *length bytes);
  // false when the stream is anything but plain JSON data.
  bool Run(std::unique_ptr<char[]>* json, size_t* length) {
    stack_.reserve(64);
    while (p_ < end_) {
      unsigned char c = *p_++;
      if (c == op::STOP) {
        if (stack_.size() != 1 || !marks_.empty() || p_ != end_) return false;
        const Entry& root = stack_[0];
        if (IsContainer(root.kind)) out_.Put(Closing(root.kind));
        *json = out_.Take(length);
        return true;
      }
      if (!Step(c)) return false;
    }
    return false;
  }

 private:
  struct Entry {
    uint32_t sep;     // its separator's placeholder
    uint32_t text;    // where its text starts (kScalar, kString: ends at text + len)
    uint32_t len;
    uint32_t count;   // containers: items added so far
    uint32_t close;   // containers: the closing bracket's placeholder, or kNone
    uint32_t height;  // containers: levels of containers in it, itself included
    Kind kind;
  };
  struct Memo {
    uint32_t text = kNone, len = 0;   // kNone: nothing, or a container
    Kind kind = kScalar;
  };

  bool Step(unsigned char c) {
    switch (c) {
      case op::PROTO: return Skip(1);
      case op::FRAME: return Skip(8);
      case op::NONE: return Literal("null", 4);
      case op::NEWTRUE: return Literal("true", 4);
      case op::NEWFALSE: return Literal("false", 5);
      case op::BININT: return Need(4) && Int(static_cast<int32_t>(ReadLe(4)));
      case op::BININT1: return Need(1) && Int(ReadLe(1));
      case op::BININT2: return Need(2) && Int(ReadLe(2));
      case op::LONG1: return Need(1) && Long(ReadLe(1));
      case op::BINFLOAT: return Float();
      case op::SHORT_BINUNICODE: return Need(1) && String(ReadLe(1));
      case op::BINUNICODE: return Need(4) && String(ReadLe(4));
      case op::EMPTY_LIST: return Open(kList);
      case op::EMPTY_DICT: return Open(kDict);
      case op::EMPTY_TUPLE: return Literal("[]", 2, kEmptyTuple);
      case op::MARK: marks_.push_back(stack_.size()); return true;
      case op::APPEND: return Add(stack_.size() - 1, kList, false);
      case op::APPENDS: return Add(0, kList, true);
      case op::SETITEM: return Add(stack_.size() - 2, kDict, false);
      case op::SETITEMS: return Add(0, kDict, true);
      case op::MEMOIZE: return Remember(next_memo_++);
      case op::BINPUT: return Need(1) && Remember(ReadLe(1));
      case op::LONG_BINPUT: return Need(4) && Remember(ReadLe(4));
      case op::BINGET: return Need(1) && Recall(ReadLe(1));
      case op::LONG_BINGET: return Need(4) && Recall(ReadLe(4));
      default: return false;   // not JSON data (tuples too), or not the general reader's
    }
  }

  bool Need(size_t n) const { return static_cast<size_t>(end_ - p_) >= n; }
  bool Skip(size_t n) {
    if (!Need(n)) return false;
    p_ += n;
    return true;
  }
  uint64_t ReadLe(int n) {
    uint64_t v = LoadLe(p_, n);
    p_ += n;
    return v;
  }
  static char Closing(Kind k) { return k == kList ? ']' : '}'; }
  bool MarkOnTop() const { return !marks_.empty() && marks_.back() == stack_.size(); }

  // Starts a value: its placeholders, then (from the caller) its text.
  void Begin(Kind kind) {
    if (!stack_.empty() && IsContainer(stack_.back().kind) && !MarkOnTop()) {
      stack_.back().close = static_cast<uint32_t>(out_.size());
      out_.Put(' ');
    }
    Entry e;
    e.sep = static_cast<uint32_t>(out_.size());
    out_.Put(' ');
    e.text = static_cast<uint32_t>(out_.size());
    e.len = 0;
    e.count = 0;
    e.close = kNone;
    e.height = IsContainer(kind) ? 1 : 0;
    e.kind = kind;
    stack_.push_back(e);
  }
  // Ends a scalar or string begun with Begin.
  bool End() {
    Entry& e = stack_.back();
    e.len = static_cast<uint32_t>(out_.size() - e.text);
    return true;
  }
  bool Literal(const char* text, size_t n, Kind kind = kScalar) {
    Begin(kind);
    out_.Append(text, n);
    return End();
  }
  bool Int(int64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    Begin(kScalar);
    out_.Append(buf, static_cast<size_t>(r.ptr - buf));
    return End();
  }
  // LONG1: up to 8 bytes of two's complement; beyond ±(2**53-1) a BigInt.
  bool Long(size_t n) {
    if (n > 8 || !Need(n)) return false;
    uint64_t u = n ? ReadLe(static_cast<int>(n)) : 0;
    if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~0ull << (8 * n);   // sign-extend
    int64_t v = static_cast<int64_t>(u);
    return v >= -kMaxSafe && v <= kMaxSafe && Int(v);
  }
  bool Float() {   // big-endian; NaN and the infinities have no JSON form
    if (!Need(8)) return false;
    double d = LoadFloat(p_);
    p_ += 8;
    if (!std::isfinite(d)) return false;
    char buf[32];
    char* end = ShortBinaryFraction(d, buf);
    if (end == nullptr) {
      auto r = std::to_chars(buf, buf + sizeof buf, d);   // shortest exact form
      if (r.ec != std::errc()) return false;
      end = r.ptr;
    }
    Begin(kScalar);
    out_.Append(buf, static_cast<size_t>(end - buf));
    return End();
  }
  // A double that is a multiple of 2**-10 below 2**43 in magnitude (1.5,
  // -0.25, 7.0) written as its exact decimal expansion, which JSON.parse
  // reads back as exactly that double, at a fraction of the cost of the
  // shortest form; nullptr for every other double (and -0).
  static char* ShortBinaryFraction(double d, char* out) {
    constexpr int kMaxBits = 10;
    double a = std::fabs(d);
    if (!(a < 8796093022208.0) || (a == 0 && std::signbit(d))) return nullptr;   // 2**43
    double scaled = a * (1 << kMaxBits);   // exact: a power of two
    if (scaled != std::floor(scaled)) return nullptr;
    auto n = static_cast<uint64_t>(scaled);
    uint64_t whole = n >> kMaxBits, frac = n & ((1u << kMaxBits) - 1);
    if (d < 0) *out++ = '-';
    out = std::to_chars(out, out + 20, whole).ptr;
    if (frac != 0) {   // frac / 2**10 = frac * 5**10 / 10**10: ten digits, zeros trimmed
      uint64_t digits = frac * 9765625u;
      char tail[kMaxBits];
      for (int i = kMaxBits - 1; i >= 0; --i, digits /= 10) tail[i] = static_cast<char>('0' + digits % 10);
      int len = kMaxBits;
      while (tail[len - 1] == '0') --len;
      *out++ = '.';
      std::memcpy(out, tail, static_cast<size_t>(len));
      out += len;
    }
    return out;
  }
  // A str (WTF-8) as a JSON string of Latin-1 text: code points above U+00FF
  // and lone surrogates as \u escapes. Malformed text is the general reader's.
  bool String(size_t n) {
    if (!Need(n)) return false;
    Begin(kString);
    const unsigned char* s = p_;
    const unsigned char* e = p_ + n;
    p_ = e;
    out_.Room(n + 2);
    out_.Put('"');
    while (s < e) {
      const unsigned char* run = s;   // characters that stand for themselves
      while (s < e && *s >= 0x20 && *s < 0x80 && *s != '"' && *s != '\\') ++s;
      out_.Append(reinterpret_cast<const char*>(run), static_cast<size_t>(s - run));
      if (s == e) break;
      unsigned char b = *s;
      if (b < 0x80) {
        if (b == '"' || b == '\\') {
          out_.Put('\\');
          out_.Put(static_cast<char>(b));
        } else {   // a control character
          Escape(b);
        }
        ++s;
        continue;
      }
      uint32_t cp;
      if (!DecodeWtf8(&s, e, &cp)) return false;
      if (cp < 0x100) {
        out_.Put(static_cast<char>(cp));
      } else if (cp < 0x10000) {
        Escape(cp);
      } else {
        cp -= 0x10000;
        Escape(0xD800 + (cp >> 10));
        Escape(0xDC00 + (cp & 0x3FF));
      }
    }
    out_.Put('"');
    return End();
  }
  void Escape(uint32_t unit) {
    static const char kHex[] = "0123456789abcdef";
    char buf[6] = {'\\', 'u', kHex[(unit >> 12) & 15], kHex[(unit >> 8) & 15],
                   kHex[(unit >> 4) & 15], kHex[unit & 15]};
    out_.Append(buf, 6);
  }
  // One multi-byte sequence (surrogates allowed: WTF-8); false if malformed.
  static bool DecodeWtf8(const unsigned char** s, const unsigned char* e, uint32_t* out) {
    unsigned char b = **s;
    int extra;
    uint32_t cp, min;
    if (b >= 0xC2 && b <= 0xDF) {
      extra = 1, cp = b & 0x1F, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
      extra = 2, cp = b & 0x0F, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
      extra = 3, cp = b & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (e - *s <= extra) return false;
    for (int i = 1; i <= extra; ++i) {
      unsigned char c = (*s)[i];
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF) return false;
    *s += extra + 1;
    *out = cp;
    return true;
  }

  bool Open(Kind kind) {
    Begin(kind);
    out_.Put(kind == kList ? '[' : '{');
    return true;
  }
  // APPEND(S) or SETITEM(S): the entries from `start` (from the last mark
  // when `marked`) go into the entry just below them, which must be a list
  // (`kind` kList) or a dict with str keys. A mark may not lie between an
  // unmarked opcode's entries.
  bool Add(size_t start, Kind kind, bool marked) {
    if (marked) {
      if (marks_.empty() || marks_.back() > stack_.size()) return false;
      start = marks_.back();
      marks_.pop_back();
    } else if (start > stack_.size() || (!marks_.empty() && marks_.back() >= start)) {
      return false;   // (start wrapped around below 0 too)
    }
    if (start == 0) return false;
    Entry& target = stack_[start - 1];
    if (target.kind != kind) return false;
    size_t n = stack_.size() - start;
    if (kind == kDict && n % 2 != 0) return false;
    for (size_t i = start; i < stack_.size(); ++i) {
      const Entry& child = stack_[i];
      size_t index = target.count + (i - start);
      bool is_value = kind == kDict && index % 2 == 1;
      if (kind == kDict && !is_value && child.kind != kString) return false;   // a Map
      out_[child.sep] = is_value ? ':' : index == 0 ? ' ' : ',';
      if (!IsContainer(child.kind)) continue;
      if (child.height >= target.height) target.height = child.height + 1;
      if (i + 1 == stack_.size()) {
        out_.Put(Closing(child.kind));   // its text ends here
      } else if (child.close != kNone) {
        out_[child.close] = Closing(child.kind);   // before the sibling above it
      } else {
        return false;   // cannot happen: something was pushed above it
      }
    }
    size_t items = kind == kDict ? (target.count + n) / 2 : target.count + n;
    if (items > kMaxArrayLength || target.height > kMaxJsonDepth) return false;
    target.count += static_cast<uint32_t>(n);
    target.close = kNone;   // the value above it was its own: a space stays
    stack_.resize(start);
    return true;
  }
  // Only strs and scalars may be recalled: a recalled container (or empty
  // tuple, an Array) is shared, or a cycle.
  bool Remember(uint64_t slot) {
    if (stack_.empty() || slot >= kMaxMemoSlot) return false;
    if (memo_.size() <= slot) memo_.resize(slot + 1);
    const Entry& top = stack_.back();
    Memo& m = memo_[slot];
    if (top.kind != kScalar && top.kind != kString) {
      m = Memo();
    } else {
      m.text = top.text;
      m.len = top.len;
      m.kind = top.kind;
    }
    return true;
  }
  bool Recall(uint64_t slot) {
    if (slot >= memo_.size() || memo_[slot].text == kNone) return false;
    Memo m = memo_[slot];
    Begin(m.kind);
    out_.Repeat(m.text, m.len);
    return End();
  }

  const unsigned char* p_;
  const unsigned char* end_;
  Text out_;
  std::vector<Entry> stack_;
  std::vector<size_t> marks_;     // stack heights
  std::vector<Memo> memo_;
  uint32_t next_memo_ = 0;
};

// A stream that Python's JSON writer made (ivm/_cffi_json.c): `_json(text)`,
//   PROTO 5, GLOBAL "ivm._copy" "_json", BINBYTES8 <text>, TUPLE1, REDUCE, STOP,
// its text in *text; false for any other stream.
bool JsonForm(const std::string& stream, std::string_view* text) {
  static constexpr char kHead[] = "\x80\x05" "civm._copy\n_json\n" "\x8e";
  static constexpr char kTail[] = "\x85R.";
  constexpr size_t kHeadLen = sizeof kHead - 1, kTailLen = sizeof kTail - 1;
  if (stream.size() < kHeadLen + 8 + kTailLen ||
      stream.compare(0, kHeadLen, kHead, kHeadLen) != 0 ||
      stream.compare(stream.size() - kTailLen, kTailLen, kTail, kTailLen) != 0) {
    return false;
  }
  uint64_t n = LoadLe(reinterpret_cast<const unsigned char*>(stream.data()) + kHeadLen, 8);
  if (n != stream.size() - kHeadLen - 8 - kTailLen) return false;
  *text = std::string_view(stream.data() + kHeadLen + 8, n);
  return true;
}

}  // namespace

bool DeserializeJson(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                     const CallState& call, const Serialized& in, v8::Local<v8::Value>* out) {
  std::unique_ptr<char[]> json;
  std::string_view text;
  if (JsonForm(in.stream, &text)) {   // JSON text already
    if (text.size() > kMaxJsonText) return false;   // the general reader refuses it
  } else {
    if (in.stream.size() > kMaxStream) return false;
    size_t length = 0;
    if (!Transcoder(in.stream).Run(&json, &length)) return false;
    text = std::string_view(json.get(), length);
  }
  *out = v8::Local<v8::Value>();
  if (holder.Stopped(call) || isolate->IsExecutionTerminating()) return true;
  // A string on V8's heap, not an external one: an external string lives in
  // the old generation, so its text (off the heap, unseen by the memory
  // limit) stayed until the next full GC, which a heap that barely grows
  // never runs; 40,000 copies of 7 KB kept 280 MB. On the heap, a
  // young-generation GC frees it.
  v8::Local<v8::String> source;
  if (!v8::String::NewFromOneByte(isolate, reinterpret_cast<const uint8_t*>(text.data()),
                                  v8::NewStringType::kNormal, static_cast<int>(text.size()))
           .ToLocal(&source)) {
    return true;   // an exception is pending
  }
  v8::Local<v8::Value> value;
  if (v8::JSON::Parse(context, source).ToLocal(&value)) *out = value;
  return true;
}

}  // namespace ivm
