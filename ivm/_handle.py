"""The base of every object that owns a libivm handle."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, TypeVar

from ._errors import IvmError, check
from ._ffi import ffi

_H = TypeVar("_H", bound="Handle")

__all__ = ["Handle"]


class Handle:
    """Owns one libivm handle; frees it when the Python object goes away.

    There is no Python-side "closed" flag: libivm's answer (a DISPOSED error)
    is the truth, so using a released object raises ``ivm.DisposedError``.
    """

    __slots__ = ("_ptr", "_addr", "__weakref__")
    _addr: int  # the handle's address, for the C methods of ivm/_cffi_fast.c: see _address
    _free: ClassVar[Callable[[Any], None]]
    _dispose: ClassVar[Callable[[Any], Any] | None] = None

    def __init__(self, ptr: Any) -> None:
        if ptr == ffi.NULL:
            raise IvmError("libivm returned no handle")
        # Freed when unreachable, so never while a call is using it.
        self._ptr = ffi.gc(ptr, type(self)._free)

    def _address(self) -> int:
        """The handle's address, kept in ``_addr`` on first use (the C methods of
        ivm/_cffi_fast.c call this, then read the slot). The handle lives as long as
        ``self``; releasing it only marks it, and libivm then says so. (So ``_ptr`` is
        never assigned again after ``__init__``: the C methods would keep the old address.)"""
        self._addr = int(ffi.cast("uintptr_t", self._ptr))
        return self._addr

    def _end(self) -> None:
        if self._dispose is not None:
            check(type(self)._dispose(self._ptr))  # type: ignore[misc]

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end()
