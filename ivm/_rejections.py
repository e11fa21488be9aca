"""Unhandled promise rejections: reported per context to a Python callable, or logged
on the ``ivm`` logger (docs/modules.md, "Unhandled rejections")."""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from typing import Callable

from ._callback import Callback

__all__ = ["RejectionHandler", "UnhandledRejection", "rejection_callback"]

_log = logging.getLogger("ivm")


@dataclass(frozen=True)
class UnhandledRejection:
    """A promise rejected with no handler, reported at the end of the call that ran it.

    ``reason`` is the rejection value as a copy, or its string when it cannot be
    copied. ``revoked`` is true when a handler was added to a promise that had
    already been reported (node's ``rejectionHandled``)."""

    reason: object
    revoked: bool = False


RejectionHandler = Callable[[UnhandledRejection], object]


def _log_rejection(event: UnhandledRejection) -> None:
    if event.revoked:
        _log.info("a promise rejection reported earlier was handled: %r", event.reason)
    else:
        _log.warning("unhandled promise rejection in an isolate: %r", event.reason)


_default: Callback | None = None


@atexit.register
def _drop_default() -> None:
    """Lets go of the shared default while the interpreter can still run its
    finalizer (libivm calls back into Python when the last share goes)."""
    global _default
    _default = None


def rejection_callback(handler: RejectionHandler | None) -> Callback:
    """The host function of ``ivm_context_options_t.on_unhandled_rejection``
    for ``handler`` (None: log on the ``ivm`` logger)."""
    global _default
    if handler is None:
        if _default is None:   # (only after the atexit drop)
            _default = _callback(_log_rejection)
        return _default
    if not callable(handler):
        raise TypeError(
            f"on_unhandled_rejection must be callable or None, not {type(handler).__name__}"
        )
    return _callback(handler)


def _callback(handler: RejectionHandler) -> Callback:
    def report(reason: object, revoked: object) -> None:
        handler(UnhandledRejection(reason, bool(revoked)))

    return Callback(report)


# Made at import, not on first use: every context (inline or in a worker) without a
# handler shares it, and libivm objects made on first use would look like a leak of
# whichever call came first.
_default = _callback(_log_rejection)
