"""atheris target: ivm/_copy.py's restricted Unpickler (load_value) against arbitrary
streams. Each input becomes a serialized value with two buffer attachments, as libivm
hands them to Python. Loading must return a value or raise an ordinary exception (the
Unpickler's own errors, or ivm's); a crash, a hang, or an exception outside OK (a
SystemError, say) is a finding. Run by ``tools/fuzz.py unpickler``; the arguments are
libFuzzer's."""

from __future__ import annotations

import gc
import pickle
import resource
import sys

import atheris

with atheris.instrument_imports():
    import ivm
    from ivm import _copy
    from ivm._ffi import ffi, lib

# What a malformed stream may raise: pickle's own complaints, the errors of calling an
# allowed constructor with the wrong arguments, and ivm's errors (a bad attachment index).
# MemoryError: CPython allocates what a BINBYTES8, BYTEARRAY8 or BINUNICODE8 length field
# says before it reads the data; a length no allocator grants fails at once.
OK = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
      AttributeError, OverflowError, MemoryError, ivm.IvmError)

# A known finding, not fixed: some streams of a few hundred bytes make CPython's C
# Unpickler touch gigabytes. The memo grows to twice the index a PUT or LONG_BINPUT names,
# every new slot cleared (corpus/unpickler/memo-index-*), and other short streams reach
# 2.7 GB too (corpus/unpickler/amplification-*). Neither libivm's writer nor ivm's emits
# such streams, and the streams Python reads come from libivm in the same process, so no
# caller can send one today. The address space is capped below (RLIMIT_AS) so that they
# end in a MemoryError and the fuzzer goes on looking for everything else.
ADDRESS_SPACE_HEADROOM = 2 << 30


def cap_address_space() -> None:
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + ADDRESS_SPACE_HEADROOM, resource.RLIM_INFINITY))


def refused(err: object) -> bool:
    """Whether libivm refused a call with an error (freed here). Under the address-space
    cap an allocation may fail: an error, not a crash, is the right outcome then."""
    if err == ffi.NULL:
        return False
    lib.ivm_error_free(err)
    return True


def test_one_input(data: bytes) -> None:
    out = ffi.new("ivm_value_t **")
    if refused(lib.ivm_value_new_serialized(data, len(data), out)):
        return
    value = out[0]
    try:
        if refused(lib.ivm_value_attach_buffer(value, b"12345678", 8, 0, ffi.NULL)) or \
                refused(lib.ivm_value_attach_buffer(value, b"", 0, 0, ffi.NULL)):
            return
        try:
            result = _copy.load_value(value)
        except MemoryError:
            # A stream that asked for gigabytes (above): what the failed load left in
            # reference cycles goes now, not at some later input, so that the next
            # allocations (libFuzzer's own among them) find the address space free again.
            gc.collect()
            return
        except OK:
            return
        repr(result)
    finally:
        lib.ivm_value_free(value)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    cap_address_space()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
