"""``Isolate(on_catastrophic_error=...)``: the one report of an isolate's catastrophic end.

libivm calls ``_ivm_py_catastrophic`` with an integer key (never a pointer to a Python
object, so a late call finds nothing rather than freed memory): for an isolate in a worker,
on a thread of its own when the worker crashes; inline, on the thread that ran into V8's
fatal-error or out-of-memory handler, just before the process aborts.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable

from ._ffi import ffi

__all__ = ["CatastrophicHandler", "register"]

#: Receives the cause (the message of the IsolateCrashedError, or V8's fatal message).
CatastrophicHandler = Callable[[str], object]

_log = logging.getLogger("ivm")
_handlers: dict[int, CatastrophicHandler] = {}
_keys = itertools.count(1)
_lock = threading.Lock()


def register(handler: CatastrophicHandler) -> tuple[Any, Callable[[], None]]:
    """The ``user_data`` for libivm, and the function that forgets the handler."""
    if not callable(handler):
        raise TypeError(
            f"on_catastrophic_error must be callable or None, not {type(handler).__name__}")
    with _lock:
        key = next(_keys)
        _handlers[key] = handler

    def forget() -> None:
        with _lock:
            _handlers.pop(key, None)
    return ffi.cast("void *", key), forget


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _ivm_py_catastrophic(user_data: Any, cause: Any, cause_len: int) -> None:
    """libivm: an isolate ended catastrophically. Never raises into C."""
    try:
        with _lock:
            handler = _handlers.pop(int(ffi.cast("uintptr_t", user_data)), None)
        if handler is not None:
            handler(ffi.unpack(cause, cause_len).decode("utf-8", "replace"))
    except BaseException:  # noqa: BLE001 - nothing may unwind through C
        _log.exception("ivm: on_catastrophic_error raised")
