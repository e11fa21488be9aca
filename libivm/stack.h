// stack.h — how much of the calling thread's stack is left. The copy writers
// recurse as deep as the value they copy (up to kMaxDepth containers), and how
// much stack a level takes depends on the compiler and its flags (ten times as
// much under AddressSanitizer); threads may have small stacks (Python's
// threading.stack_size). So they also stop where the stack runs short, with
// an error instead of a crash. Nothing here is ABI.
#ifndef IVM_STACK_H
#define IVM_STACK_H

#include <cstddef>

namespace ivm {

// What recursive code keeps free below it: room for the V8 and libc calls a
// level makes, and the guard page.
constexpr size_t kStackReserve = 128 * 1024;

// Bytes of this thread's stack below the caller's frame; SIZE_MAX if unknown.
size_t StackLeft();

// Whether the caller may go one level deeper.
inline bool StackRoom() { return StackLeft() > kStackReserve; }

}  // namespace ivm

#endif  // IVM_STACK_H
