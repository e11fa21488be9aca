"""Loads libivm through the cffi extension built beside this package."""

from __future__ import annotations

try:
    from ._ivm_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken installation
    raise ImportError(
        "ivm's compiled part (_ivm_cffi and libivm) is missing: install ivm with "
        "`pip install .` from its source tree, which builds it"
    ) from exc

if lib.ivm_version() != lib.IVM_VERSION_NUMBER:  # pragma: no cover
    raise ImportError(
        f"libivm {lib.ivm_version()} does not match ivm.h {lib.IVM_VERSION_NUMBER}: reinstall ivm"
    )

__all__ = ["ffi", "lib"]
