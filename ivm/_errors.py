"""ivm's exceptions, and the one place that turns a libivm error into one."""

from __future__ import annotations

import builtins
import contextlib
import itertools
import sys
from typing import Any, NoReturn

from ._ffi import ffi, lib

__all__ = [
    "DisposedError",
    "IsolateCrashedError",
    "IvmError",
    "JSError",
    "MemoryLimitError",
    "TerminatedError",
    "TimeoutError",
    "TransferError",
]


class IvmError(Exception):
    """Base class of every error ivm raises (besides ``TypeError``/``ValueError``
    for wrong arguments)."""


class JSError(IvmError):
    """JavaScript threw.

    ``name`` is the error's name (``"TypeError"``…, or ``""`` when a non-Error
    value was thrown), ``message`` its message, and ``stack`` the JavaScript
    stack: ``"Name: message"`` followed by ``"    at …"`` lines with script
    names, lines and columns. ``str(error)`` is the stack.
    """

    name: str
    message: str
    stack: str

    def __init__(self, message: str, *, name: str = "Error", stack: str | None = None) -> None:
        self.name = name
        self.message = message
        self.stack = stack if stack is not None else (f"{name}: {message}" if name else message)
        super().__init__(self.stack)


class TimeoutError(IvmError, builtins.TimeoutError):
    """The call ran past its ``timeout``; the isolate stays usable.

    ``stack`` is where the JavaScript was stopped: the message followed by
    ``"    at …"`` lines, innermost first (as :attr:`JSError.stack`), or
    ``None`` when no JavaScript was running then (a wait for a promise, host
    code that did not return in time).
    """

    stack: str | None = None


class MemoryLimitError(IvmError, MemoryError):
    """The isolate ran past its memory limit and has been disposed."""


class DisposedError(IvmError):
    """The isolate is disposed, or the context or script was released."""


class IsolateCrashedError(DisposedError):
    """The worker process behind the handle died (killed by a signal, by its
    sandbox or by ivm for misbehaving, or it exited). The message is the cause:
    the signal or exit status, then the end of the worker's stderr (V8's fatal
    message). Later calls raise it again."""


class TerminatedError(IvmError):
    """The JavaScript was stopped by ``Isolate.terminate()``."""


class TransferError(IvmError, TypeError):
    """A value cannot cross the isolate boundary in the requested form."""


class CrossProcessError(TransferError):
    """A :class:`Reference` would cross between processes: one of an inline isolate
    passed to an isolate in a worker process, or one into a worker passed to an inline
    isolate or to another worker's isolate. References work only within their own
    process; pass a copy instead. A subclass of :class:`TransferError`."""


def _text(getter: Any, err: Any) -> str:
    p = ffi.new("const char **")
    n = ffi.new("size_t *")
    getter(err, p, n)
    text: str = ffi.unpack(p[0], n[0]).decode("utf-8", "surrogatepass")
    return text


_SIMPLE: dict[int, type[Exception]] = {
    lib.IVM_ERROR_TIMEOUT: TimeoutError,
    lib.IVM_ERROR_MEMORY_LIMIT: MemoryLimitError,
    lib.IVM_ERROR_DISPOSED: DisposedError,
    lib.IVM_ERROR_INVALID_ARGUMENT: ValueError,
    lib.IVM_ERROR_TERMINATED: TerminatedError,
    lib.IVM_ERROR_TRANSFER: TransferError,
    lib.IVM_ERROR_CRASHED: IsolateCrashedError,
    lib.IVM_ERROR_CROSS_PROCESS: CrossProcessError,
}


# Exceptions raised by host callbacks, by the token their JavaScript Error
# carries: when that Error ends the host's call, the original is re-raised.
# Bounded: an Error that JavaScript caught and dropped is forgotten later.
_host_errors: dict[int, BaseException] = {}
_host_tokens = itertools.count(1)
_MAX_HOST_ERRORS = 4096


_saved_limit = 0


def restore_recursion_limit() -> None:
    """Puts the recursion limit back once the stack is shallow enough."""
    global _saved_limit
    if _saved_limit:
        try:
            sys.setrecursionlimit(_saved_limit)
            _saved_limit = 0
        except RecursionError:
            pass  # still too deep: a later call restores it


def stash_host_error(exc: BaseException) -> int:
    """Remembers `exc` (raised by a callback) and returns its token."""
    token = next(_host_tokens)
    if len(_host_errors) >= _MAX_HOST_ERRORS:
        with contextlib.suppress(StopIteration, KeyError, RuntimeError):
            del _host_errors[next(iter(_host_errors))]
    _host_errors[token] = exc
    return token


def error_from(err: Any) -> Exception:
    """The exception for a libivm error, which this frees. A host callback's
    own exception comes back as itself (its ``__cause__`` the JavaScript
    error it became); ``KeyboardInterrupt`` and ``SystemExit`` too."""
    try:
        kind = lib.ivm_error_kind(err)
        message = _text(lib.ivm_error_message, err)
        exc: Exception
        if kind == lib.IVM_ERROR_JS_EXCEPTION:
            exc = JSError(
                message,
                name=_text(lib.ivm_error_name, err),
                stack=_text(lib.ivm_error_stack, err),
            )
        else:
            exc = _SIMPLE.get(kind, IvmError)(message)
            if kind == lib.IVM_ERROR_TIMEOUT:
                stack = _text(lib.ivm_error_stack, err)
                if stack:
                    exc.stack = stack  # type: ignore[attr-defined]
        token = lib.ivm_error_host_token(err)
        if _saved_limit:
            restore_recursion_limit()
        if token:
            original = _host_errors.pop(int(token), None)
            if original is not None:
                if kind == lib.IVM_ERROR_JS_EXCEPTION:
                    original.__cause__ = exc
                return original  # type: ignore[return-value]
        return exc
    finally:
        lib.ivm_error_free(err)


def check(err: Any) -> None:
    """Raises the exception for `err`, unless it is NULL."""
    if err:
        raise error_from(err)


def raise_error(err: Any) -> NoReturn:
    raise error_from(err)
