"""Loads libivm through the cffi extension built beside this package."""

from __future__ import annotations

import os

try:
    from ._ivm_cffi import ffi, lib
except ImportError as exc:
    _here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isfile(os.path.join(_here, "..", "meson.build")):
        # The usual case: Python's current directory (or sys.path) is the source tree.
        raise ImportError(
            f"`import ivm` found the source tree's ivm/ ({_here}), which has no compiled parts "
            "(_ivm_cffi, libivm). If you installed ivm (`pip install .`), run Python from "
            "another directory, or with -P, so that the installed package is found. To work on "
            "ivm itself: `pip install --no-build-isolation -e .` (an editable install that "
            "rebuilds on import)."
        ) from exc
    raise ImportError(  # pragma: no cover - only on a broken installation
        f"ivm's compiled part (_ivm_cffi and libivm) is missing beside {_here}: reinstall ivm "
        "(`pip install .` from its source tree builds it)"
    ) from exc

if lib.ivm_version() != lib.IVM_VERSION_NUMBER:  # pragma: no cover
    raise ImportError(
        f"libivm {lib.ivm_version()} does not match ivm.h {lib.IVM_VERSION_NUMBER}: reinstall ivm"
    )

__all__ = ["ffi", "lib"]
