// copy_check.h — a structural check of a copy stream that another process
// wrote (a worker's REPLY or CALLBACK), before anything decodes it.
//
// Decoders trust the structure of the streams libivm writes itself. A worker
// is not trusted (docs/process.md): its streams reach Python's Unpickler,
// whose memo grows to any index a PUT names (a 5-byte LONG_BINPUT can ask for
// gigabytes), and libivm's own reader. CheckCopyStream admits only streams
// that libivm's writer could have produced, in shape: the copy format's
// opcodes (docs/values.md) with their arguments inside the stream, frames
// inside the stream, memo entries put in order and read only once put, stack
// and mark use that balances, one value left at STOP, and nothing after it.
// What each decoder checks itself (names, attachment indices, values) is
// left to it. Free of V8: compiled into libivm and into ivm-worker.
#ifndef IVM_COPY_CHECK_H
#define IVM_COPY_CHECK_H

#include <string>
#include <string_view>

namespace ivm {

// True if `stream` has the shape above; otherwise false with the reason.
bool CheckCopyStream(std::string_view stream, std::string* why);

}  // namespace ivm

#endif  // IVM_COPY_CHECK_H
