// copy_json.cc — the reader's fast path: a copy stream that holds only JSON
// data becomes JSON text, which V8's JSON.parse turns into objects.
//
// JSON.parse builds objects far faster than the general reader's one
// property at a time (it follows V8's map transitions). The transcoder below
// runs first on every stream of up to kMaxStream bytes. It takes the opcodes
// Python's pickle writes for None, bools, ints within ±(2**53-1), finite
// floats, strs, lists and dicts with str keys (and libivm's writer, for the
// same data), and builds a tree of them; anything else (undefined, BigInts,
// NaN, shared or recalled containers, tuples, sets, Maps, bytes, calls of
// `ivm._copy`, nesting deeper than kMaxDepth, malformed streams) makes it
// give up without touching the isolate, and the general reader reads the
// stream (copy_reader.cc). So a value read here is the one the general
// reader would make: numbers are written in their shortest exact form (-0
// included), strings keep lone surrogates (as \u escapes), keys keep their
// order, and JSON.parse defines properties as CreateDataProperty does
// ("__proto__" stays an own property).
//
// JSON.parse cannot be stopped midway; the size bound keeps one parse to a
// few milliseconds, and the call's stop is checked before it starts.
#include "copy.h"
#include "pickle.h"

#include <charconv>

namespace ivm {
namespace {

using namespace pickle;

constexpr size_t kMaxStream = 1u << 20;   // larger streams take the general reader
constexpr int kMaxJsonDepth = 200;        // deeper values take the general reader
constexpr uint32_t kNoNode = 0xffffffffu;
constexpr uint32_t kMaxMemoSlot = 1u << 20;
constexpr int64_t kMaxSafe = static_cast<int64_t>(kMaxSafeInteger);

struct Node {
  enum Kind : uint8_t { kScalar, kString, kList, kTuple, kDict };
  Kind kind = kScalar;
  uint32_t text = 0, len = 0;                        // kScalar, kString: a span of text_
  uint32_t first = kNoNode, last = kNoNode, next = kNoNode;   // containers: children
  uint32_t count = 0;                                // children
};

class Transcoder {
 public:
  explicit Transcoder(const std::string& stream)
      : p_(reinterpret_cast<const unsigned char*>(stream.data())), end_(p_ + stream.size()) {}

  // True with *json holding the value's JSON text (Latin-1); false when the
  // stream is anything but plain JSON data.
  bool Run(std::string* json) {
    size_t size = static_cast<size_t>(end_ - p_);
    nodes_.reserve(size / 4);
    text_.reserve(size + size / 2);
    while (p_ < end_) {
      unsigned char c = *p_++;
      if (c == op::STOP) {
        if (stack_.size() != 1 || !marks_.empty() || p_ != end_) return false;
        json->reserve(text_.size() + 2 * nodes_.size());
        return Emit(stack_[0], 0, json);
      }
      if (!Step(c)) return false;
    }
    return false;
  }

 private:
  bool Step(unsigned char c) {
    switch (c) {
      case op::PROTO: return Skip(1);
      case op::FRAME: return Skip(8);
      case op::NONE: return Scalar("null");
      case op::NEWTRUE: return Scalar("true");
      case op::NEWFALSE: return Scalar("false");
      case op::BININT: return Need(4) && Int(static_cast<int32_t>(ReadLe(4)));
      case op::BININT1: return Need(1) && Int(ReadLe(1));
      case op::BININT2: return Need(2) && Int(ReadLe(2));
      case op::LONG1: return Need(1) && Long(ReadLe(1));
      case op::BINFLOAT: return Float();
      case op::SHORT_BINUNICODE: return Need(1) && Text(ReadLe(1));
      case op::BINUNICODE: return Need(4) && Text(ReadLe(4));
      case op::EMPTY_LIST: return Container(Node::kList);
      case op::EMPTY_TUPLE: return Container(Node::kTuple);
      case op::EMPTY_DICT: return Container(Node::kDict);
      case op::MARK: marks_.push_back(stack_.size()); return true;
      case op::APPEND: return stack_.size() >= 2 && Add(stack_.size() - 1, Node::kList);
      case op::APPENDS: return PopMark() && Add(mark_, Node::kList);
      case op::SETITEM: return stack_.size() >= 3 && Add(stack_.size() - 2, Node::kDict);
      case op::SETITEMS: return PopMark() && Add(mark_, Node::kDict);
      case op::MEMOIZE: return Memo(next_memo_++);
      case op::BINPUT: return Need(1) && Memo(ReadLe(1));
      case op::LONG_BINPUT: return Need(4) && Memo(ReadLe(4));
      case op::BINGET: return Need(1) && Recall(ReadLe(1));
      case op::LONG_BINGET: return Need(4) && Recall(ReadLe(4));
      default: return false;   // not JSON data, or not the general reader's
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
  bool PopMark() {
    if (marks_.empty() || marks_.back() > stack_.size()) return false;
    mark_ = marks_.back();
    marks_.pop_back();
    return true;
  }

  uint32_t NewNode(Node::Kind kind, size_t text_start) {
    Node n;
    n.kind = kind;
    n.text = static_cast<uint32_t>(text_start);
    n.len = static_cast<uint32_t>(text_.size() - text_start);
    nodes_.push_back(n);
    return static_cast<uint32_t>(nodes_.size() - 1);
  }
  bool Scalar(const char* text) {
    size_t start = text_.size();
    text_ += text;
    stack_.push_back(NewNode(Node::kScalar, start));
    return true;
  }
  bool Int(int64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    size_t start = text_.size();
    text_.append(buf, r.ptr);
    stack_.push_back(NewNode(Node::kScalar, start));
    return true;
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
    size_t start = text_.size();
    text_.append(buf, end);
    stack_.push_back(NewNode(Node::kScalar, start));
    return true;
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
  bool Text(size_t n) {
    if (!Need(n)) return false;
    size_t start = text_.size();
    text_ += '"';
    const unsigned char* s = p_;
    const unsigned char* e = p_ + n;
    p_ = e;
    while (s < e) {
      const unsigned char* run = s;   // characters that stand for themselves
      while (s < e && *s >= 0x20 && *s < 0x80 && *s != '"' && *s != '\\') ++s;
      text_.append(reinterpret_cast<const char*>(run), s - run);
      if (s == e) break;
      unsigned char b = *s;
      if (b < 0x80) {
        if (b == '"' || b == '\\') {
          text_ += '\\';
          text_ += static_cast<char>(b);
        } else if (b < 0x20) {
          Escape(b);
        } else {
          text_ += static_cast<char>(b);
        }
        ++s;
        continue;
      }
      uint32_t cp;
      if (!DecodeWtf8(&s, e, &cp)) return false;
      if (cp < 0x100) {
        text_ += static_cast<char>(cp);
      } else if (cp < 0x10000) {
        Escape(cp);
      } else {
        cp -= 0x10000;
        Escape(0xD800 + (cp >> 10));
        Escape(0xDC00 + (cp & 0x3FF));
      }
    }
    text_ += '"';
    stack_.push_back(NewNode(Node::kString, start));
    return true;
  }
  void Escape(uint32_t unit) {
    static const char kHex[] = "0123456789abcdef";
    char buf[6] = {'\\', 'u', kHex[(unit >> 12) & 15], kHex[(unit >> 8) & 15],
                   kHex[(unit >> 4) & 15], kHex[unit & 15]};
    text_.append(buf, 6);
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

  bool Container(Node::Kind kind) {
    stack_.push_back(NewNode(kind, text_.size()));
    return true;
  }
  // APPEND(S) or SETITEM(S): the entries from `start` go into the container
  // just below them, which must be a list (`kind` kList) or a dict with str
  // keys.
  bool Add(size_t start, Node::Kind kind) {
    if (start == 0 || start > stack_.size()) return false;
    Node& target = nodes_[stack_[start - 1]];
    if (target.kind != kind) return false;
    size_t n = stack_.size() - start;
    if (kind == Node::kDict && n % 2 != 0) return false;
    for (size_t i = start; i < stack_.size(); ++i) {
      uint32_t child = stack_[i];
      if (kind == Node::kDict && (i - start) % 2 == 0 && nodes_[child].kind != Node::kString) {
        return false;   // a Map
      }
      if (target.last == kNoNode) {
        target.first = child;
      } else {
        nodes_[target.last].next = child;
      }
      target.last = child;
    }
    target.count += static_cast<uint32_t>(n);
    stack_.resize(start);
    return true;
  }
  // Only strs may be recalled: a recalled container is shared (or a cycle).
  bool Memo(uint64_t slot) {
    if (stack_.empty() || slot >= kMaxMemoSlot) return false;
    if (memo_.size() <= slot) memo_.resize(slot + 1, kNoNode);
    memo_[slot] = stack_.back();
    return true;
  }
  bool Recall(uint64_t slot) {
    if (slot >= memo_.size() || memo_[slot] == kNoNode) return false;
    Node copy = nodes_[memo_[slot]];
    if (copy.kind != Node::kString && copy.kind != Node::kScalar) return false;
    copy.next = kNoNode;
    nodes_.push_back(copy);
    stack_.push_back(static_cast<uint32_t>(nodes_.size() - 1));
    return true;
  }

  bool Emit(uint32_t id, int depth, std::string* out) const {
    const Node& n = nodes_[id];
    if (n.kind == Node::kScalar || n.kind == Node::kString) {
      out->append(text_, n.text, n.len);
      return true;
    }
    if (depth >= kMaxJsonDepth || n.count > kMaxArrayLength) return false;
    bool dict = n.kind == Node::kDict;
    *out += dict ? '{' : '[';
    uint32_t i = 0;
    for (uint32_t c = n.first; c != kNoNode; c = nodes_[c].next, ++i) {
      if (i > 0) *out += dict && i % 2 == 1 ? ':' : ',';
      if (!Emit(c, depth + 1, out)) return false;
    }
    *out += dict ? '}' : ']';
    return true;
  }

  const unsigned char* p_;
  const unsigned char* end_;
  std::string text_;             // the scalars' and strings' JSON text
  std::vector<Node> nodes_;
  std::vector<uint32_t> stack_;  // node ids
  std::vector<size_t> marks_;
  std::vector<uint32_t> memo_;   // node ids
  uint32_t next_memo_ = 0;
  size_t mark_ = 0;              // PopMark's result
};

// The JSON text as an external string: V8 reads it in place and frees it.
class JsonText final : public v8::String::ExternalOneByteStringResource {
 public:
  explicit JsonText(std::string text) : text_(std::move(text)) {}
  const char* data() const override { return text_.data(); }
  size_t length() const override { return text_.size(); }

 private:
  std::string text_;
};

}  // namespace

bool DeserializeJson(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                     const CallState& call, const Serialized& in, v8::Local<v8::Value>* out) {
  if (in.stream.size() > kMaxStream) return false;
  std::string json;
  if (!Transcoder(in.stream).Run(&json)) return false;
  *out = v8::Local<v8::Value>();
  if (holder.Stopped(call) || isolate->IsExecutionTerminating()) return true;
  auto* resource = new JsonText(std::move(json));
  v8::Local<v8::String> text;
  if (!v8::String::NewExternalOneByte(isolate, resource).ToLocal(&text)) {
    delete resource;   // not taken: an exception is pending
    return true;
  }
  v8::Local<v8::Value> value;
  if (v8::JSON::Parse(context, text).ToLocal(&value)) *out = value;
  return true;
}

}  // namespace ivm
