// copy_check.cc — see copy_check.h.
#include "copy_check.h"
#include "pickle_ops.h"

#include <cstdint>
#include <cstring>
#include <vector>

namespace ivm {

namespace {

namespace op = pickle::op;

class Checker {
 public:
  explicit Checker(std::string_view s) : s_(s) {}

  bool Run(std::string* why) {
    if (!Proto()) return Fail(why, "a copy stream starts with PROTO 5");
    while (pos_ < s_.size()) {
      unsigned char code = static_cast<unsigned char>(s_[pos_++]);
      if (code == op::STOP) {
        if (pos_ != s_.size()) return Fail(why, "bytes after STOP");
        if (depth_ != 1 || !marks_.empty()) return Fail(why, "an unbalanced stream at STOP");
        return true;
      }
      if (!Step(code)) return Fail(why, error_);
    }
    return Fail(why, "no STOP");
  }

 private:
  static bool Fail(std::string* why, const std::string& reason) {
    if (why) *why = "an invalid copy stream: " + reason;
    return false;
  }

  bool Proto() {
    if (s_.size() < 2 || static_cast<unsigned char>(s_[0]) != op::PROTO) return false;
    if (static_cast<unsigned char>(s_[1]) > pickle::kProtocol) return false;
    pos_ = 2;
    return true;
  }

  // Consumes an argument of n bytes (little-endian when it is read as a number).
  bool Arg(size_t n, uint64_t* value = nullptr) {
    if (s_.size() - pos_ < n) return Error("a truncated argument");
    if (value) {
      *value = 0;
      for (size_t i = 0; i < n; ++i) {
        *value |= static_cast<uint64_t>(static_cast<unsigned char>(s_[pos_ + i])) << (8 * i);
      }
    }
    pos_ += n;
    return true;
  }
  // A length argument of n bytes, then that many bytes of data.
  bool Counted(size_t n) {
    uint64_t length = 0;
    if (!Arg(n, &length)) return false;
    if (length > s_.size() - pos_) return Error("data longer than the stream");
    pos_ += length;
    return true;
  }
  // GLOBAL's two newline-terminated names.
  bool Line() {
    const void* nl = memchr(s_.data() + pos_, '\n', s_.size() - pos_);
    if (nl == nullptr) return Error("an unterminated GLOBAL name");
    pos_ = static_cast<size_t>(static_cast<const char*>(nl) - s_.data()) + 1;
    return true;
  }

  bool Error(const char* what) {
    error_ = what;
    return false;
  }
  // Pops n items above the top mark; pushes `push`.
  bool Items(size_t n, size_t push) {
    size_t floor = marks_.empty() ? 0 : marks_.back();
    if (depth_ - floor < n) return Error("an opcode without its operands");
    depth_ = depth_ - n + push;
    return true;
  }
  // Pops to the top mark (and the mark), which must leave `keep` items
  // below the mark's items, an item count divisible by `per`; pushes `push`.
  bool ToMark(size_t keep, size_t per, size_t push) {
    if (marks_.empty()) return Error("a MARK is missing");
    size_t mark = marks_.back();
    marks_.pop_back();
    size_t floor = marks_.empty() ? 0 : marks_.back();
    if (mark - floor < keep || (depth_ - mark) % per != 0) {
      return Error("an opcode without its operands");
    }
    depth_ = mark - keep + push;
    return true;
  }
  bool Put(uint64_t index) {
    size_t floor = marks_.empty() ? 0 : marks_.back();
    if (depth_ == floor) return Error("a memo entry with nothing to put");
    if (index > memo_) return Error("a memo index out of order");
    if (index == memo_) ++memo_;
    return true;
  }
  bool Get(uint64_t index) {
    if (index >= memo_) return Error("a memo index never put");
    ++depth_;
    return true;
  }

  bool Step(unsigned char code);

  std::string_view s_;
  size_t pos_ = 0;
  size_t depth_ = 0;            // items on the stack
  std::vector<size_t> marks_;   // the stack depth at each MARK
  uint64_t memo_ = 0;           // memo entries put (indices 0 .. memo_-1)
  const char* error_ = "";
};

bool Checker::Step(unsigned char code) {
  uint64_t n = 0;
  switch (code) {
    case op::FRAME:
      if (!Arg(8, &n)) return false;
      if (n > s_.size() - pos_) return Error("a frame longer than the stream");
      return true;
    case op::NONE: case op::NEWTRUE: case op::NEWFALSE:
    case op::EMPTY_LIST: case op::EMPTY_DICT:
    case op::EMPTY_TUPLE: case op::EMPTY_SET:
      return Items(0, 1);
    case op::BININT: return Arg(4) && Items(0, 1);
    case op::BININT1: return Arg(1) && Items(0, 1);
    case op::BININT2: return Arg(2) && Items(0, 1);
    case op::BINFLOAT: return Arg(8) && Items(0, 1);
    case op::LONG1: case op::SHORT_BINUNICODE: case op::SHORT_BINBYTES:
      return Counted(1) && Items(0, 1);
    case op::LONG4:
    case op::BINUNICODE: case op::BINBYTES:
      return Counted(4) && Items(0, 1);
    case op::BINUNICODE8: case op::BINBYTES8: case op::BYTEARRAY8:
      return Counted(8) && Items(0, 1);
    case op::MARK:
      marks_.push_back(depth_);
      return true;
    case op::POP: return Items(1, 0);
    case op::POP_MARK: return ToMark(0, 1, 0);
    case op::APPEND: return Items(2, 1);
    case op::SETITEM: return Items(3, 1);
    case op::APPENDS: case op::ADDITEMS: return ToMark(1, 1, 1);
    case op::SETITEMS: return ToMark(1, 2, 1);
    case op::TUPLE: case op::FROZENSET: return ToMark(0, 1, 1);
    case op::TUPLE1: return Items(1, 1);
    case op::TUPLE2: return Items(2, 1);
    case op::TUPLE3: return Items(3, 1);
    case op::GLOBAL: return Line() && Line() && Items(0, 1);
    case op::STACK_GLOBAL: return Items(2, 1);
    case op::REDUCE: return Items(2, 1);
    case op::MEMOIZE: return Put(memo_);
    case op::BINPUT: return Arg(1, &n) && Put(n);
    case op::LONG_BINPUT: return Arg(4, &n) && Put(n);
    case op::BINGET: return Arg(1, &n) && Get(n);
    case op::LONG_BINGET: return Arg(4, &n) && Get(n);
    default:
      return Error("an opcode outside the copy format");
  }
}

}  // namespace

bool CheckCopyStream(std::string_view stream, std::string* why) {
  return Checker(stream).Run(why);
}

}  // namespace ivm
