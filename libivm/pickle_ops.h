// pickle_ops.h — the opcodes of the copy format (a subset of Python's pickle
// protocol 5, docs/values.md), by pickle's names, and the protocol number.
// Free of V8: copy_check.cc, which the worker process compiles too, reads
// them beside pickle.h's writers and reader.
#ifndef IVM_PICKLE_OPS_H
#define IVM_PICKLE_OPS_H

namespace ivm {
namespace pickle {
constexpr unsigned char kProtocol = 5;

// The opcodes the copy format uses.
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
}  // namespace pickle
}  // namespace ivm

#endif  // IVM_PICKLE_OPS_H
