// sandbox.h — the ivm-worker's sandbox (sandbox.cc). Worker-only; not ABI.
#ifndef IVM_SANDBOX_H
#define IVM_SANDBOX_H

#include <string>

namespace ivm::sandbox {

// Closes every descriptor above `last_kept`. Call before Apply(): afterwards
// the process can open nothing.
bool CloseDescriptorsAbove(int last_kept, std::string* why);

// Sets PR_SET_NO_NEW_PRIVS and installs the seccomp-bpf allowlist on every
// thread of the process (TSYNC). Anything outside it kills the process
// (SIGSYS). On failure nothing is half-applied that loosens the sandbox;
// returns false with `*why` and the caller must exit.
bool Apply(std::string* why);

}  // namespace ivm::sandbox

#endif  // IVM_SANDBOX_H
