"""``ivm.Context``: a global object inside an isolate, where code is evaluated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._async import submit, submit_ignored
from ._errors import check, raise_error
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import code_bytes, eval_options
from ._value import JSPrimitive, _tls, take, value_out

if TYPE_CHECKING:
    from ._isolate import Isolate

__all__ = ["Context"]

_NULL = ffi.NULL
_eval = lib.ivm_context_eval
_eval_async = lib.ivm_context_eval_async


class Context(Handle):
    """A JavaScript global object (a realm) inside an :class:`ivm.Isolate`.

    Made by :meth:`Isolate.create_context_sync`. ``release()`` drops it; it is
    also a context manager that releases it on exit.
    """

    __slots__ = ("_isolate",)
    _free = lib.ivm_context_free
    _dispose = lib.ivm_context_release
    _isolate: Isolate

    @classmethod
    def _wrap(cls, ptr: Any, isolate: Isolate) -> Context:
        self = cls.__new__(cls)
        Handle.__init__(self, ptr)
        self._isolate = isolate
        return self

    def __init__(self) -> None:
        raise TypeError("use Isolate.create_context_sync() to make a Context")

    def __repr__(self) -> str:
        return f"<ivm.Context of {self._isolate!r}>"

    @property
    def isolate(self) -> Isolate:
        """The isolate this context belongs to."""
        return self._isolate

    def release(self) -> None:
        """Releases the context. Idempotent; later calls raise ``DisposedError``."""
        check(lib.ivm_context_release(self._ptr))

    def eval_sync(
        self,
        code: str,
        *,
        timeout: float | None = None,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        promise: bool = False,
    ) -> JSPrimitive:
        """Runs ``code`` in this context and returns its completion value.

        Blocks (with the GIL released) while the JavaScript runs. ``timeout``
        is in seconds (None: no limit). ``filename``, ``line_offset`` and
        ``column_offset`` show in stacks. With ``promise=True``, a promise
        result is awaited inside the isolate (its tasks and microtasks run) and
        its value returned; a rejection raises :class:`ivm.JSError`; the
        timeout covers the whole wait.

        Results are primitives: ``undefined`` → :data:`ivm.undefined`, ``null``
        → ``None``, booleans, numbers (``int`` when integral and safe, else
        ``float``), BigInts → ``int``, strings → ``str``.

        Raises :class:`ivm.JSError` when the code throws,
        :class:`ivm.TimeoutError`, :class:`ivm.MemoryLimitError`,
        :class:`ivm.DisposedError`, :class:`ivm.TerminatedError`, and
        :class:`ivm.TransferError` for a non-primitive result.
        """
        if type(code) is not str:
            code_bytes(code)  # raises TypeError
        src = code.encode("utf-8", "surrogatepass")
        if (
            timeout is None
            and filename is None
            and not line_offset
            and not column_offset
            and promise is False
        ):
            opts = _NULL
        else:
            opts, _keep = eval_options(timeout, filename, line_offset, column_offset, promise)
        try:
            out = _tls.out
        except AttributeError:
            out = value_out()
        err = _eval(self._ptr, src, len(src), opts, out)
        if err:
            raise_error(err)
        return take(out[0])

    async def eval(
        self,
        code: str,
        *,
        timeout: float | None = None,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        promise: bool = False,
    ) -> JSPrimitive:
        """The async twin of :meth:`eval_sync`: queued on the isolate (FIFO) and
        run by libivm's thread pool; the event loop (asyncio or trio) keeps
        running. Cancelling the awaiting task stops the JavaScript (or drops the
        call if it has not started); the isolate stays usable.
        """
        if type(code) is not str:
            code_bytes(code)  # raises TypeError
        src = code.encode("utf-8", "surrogatepass")
        if (
            timeout is None
            and filename is None
            and not line_offset
            and not column_offset
            and promise is False
        ):
            opts, _keep = _NULL, None
        else:
            opts, _keep = eval_options(timeout, filename, line_offset, column_offset, promise)
        return await submit(
            self._isolate._ptr, _eval_async, (self._ptr, src, len(src), opts), take
        )

    def eval_ignored(
        self,
        code: str,
        *,
        timeout: float | None = None,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        promise: bool = False,
    ) -> None:
        """Queues ``code`` like :meth:`eval` and returns at once, without a
        result. Needs no event loop. Errors are logged on the ``ivm`` logger
        and passed to the handler set with :func:`ivm.set_ignored_error_handler`.
        """
        src = code_bytes(code)
        opts, keep = eval_options(timeout, filename, line_offset, column_offset, promise)
        ptr = self._ptr
        submit_ignored(
            lambda done, ud, job: lib.ivm_context_eval_async(ptr, src, len(src), opts, done, ud, job),
            take,
        )
        del keep
