"""``ivm.Context``: a global object inside an isolate, where code is evaluated."""

from __future__ import annotations

import asyncio
from asyncio import CancelledError
from typing import TYPE_CHECKING, Any, Literal, Mapping, overload

from . import _async
from ._async import start_eval, start_eval_trio, submit, submit_ignored, submit_owning
from ._async import trio_task
from ._errors import check
from ._ffi import ffi, lib
from ._handle import Handle
from ._copy import to_values
from ._reference import Reference
from ._options import EvalKeywords, call_options, code_bytes, result_flags, result_options_flags
from ._options import run_options
from ._options import result_options as _result_options
from ._value import Arguments, JSPrimitive, sync_result, sync_slots, take, value_array
from ._call import EVAL, EVAL_PLAIN, NOT_INTEGER, c_getter, c_method, finish, options_in

if TYPE_CHECKING:  # annotations only; cycle: _isolate imports _context
    from typing_extensions import Unpack  # typing's from Python 3.11

    from ._isolate import Isolate
    from ._external_copy import ExternalCopy

__all__ = ["Context"]

_NULL = ffi.NULL
_eval_async = lib.ivm_context_eval_async
_get_running_loop = asyncio._get_running_loop  # None outside a running loop; fast
_sleep = asyncio.sleep
_cancel_job = lib.ivm_isolate_cancel_job


class Context(Handle):
    """A JavaScript global object (a realm) inside an :class:`ivm.Isolate`.

    Made by :meth:`Isolate.create_context_sync`. ``release()`` drops it; it is
    also a context manager that releases it on exit.
    """

    __slots__ = ("_isolate", "_global")
    _free = lib.ivm_context_free
    _dispose = lib.ivm_context_release
    _isolate: Isolate
    _global: Reference | None

    @classmethod
    def _wrap(cls, ptr: Any, isolate: Isolate) -> Context:
        self = cls.__new__(cls)
        Handle.__init__(self, ptr)
        self._isolate = isolate
        self._global = None
        return self

    def __init__(self) -> None:
        raise TypeError("use Isolate.create_context_sync() to make a Context")

    def __repr__(self) -> str:
        return f"<ivm.Context of {self._isolate!r}>"

    @property
    def isolate(self) -> Isolate:
        """The isolate this context belongs to."""
        return self._isolate

    @property
    def global_(self) -> Reference:
        """A :class:`ivm.Reference` to this context's global object (isolated-vm's
        ``context.global``), e.g. ``context.global_.set_sync("log", ivm.Callback(print))``."""
        # A C getter (c_getter, below) reads the slot _global the same way, with no frame.
        ref = self._global
        return ref if ref is not None else self._make_global()

    def _make_global(self) -> Reference:
        out = ffi.new("ivm_reference_t **")
        check(lib.ivm_context_global(self._ptr, out))
        ref = Reference._wrap(out[0])
        made = self._global  # (another thread's first read may have made one meanwhile)
        if made is not None:
            return made
        self._global = ref
        return ref

    def release(self) -> None:
        """Releases the context. Idempotent; later calls raise ``DisposedError``."""
        check(lib.ivm_context_release(self._ptr))

    def _eval_sync(
        self,
        code: str,
        *,
        timeout: float | None = None,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        promise: bool = False,
        copy: bool = False,
        external_copy: bool = False,
        transfer_out: bool = False,
        reference: bool = False,
    ) -> Any:
        """Runs ``code`` in this context and returns its completion value.

        Blocks (with the GIL released) while the JavaScript runs. ``timeout``
        is in seconds (None: no limit). ``filename``, ``line_offset`` and
        ``column_offset`` show in stacks. With ``promise=True``, a promise
        result is awaited inside the isolate (its tasks and microtasks run) and
        its value returned; a rejection raises :class:`ivm.JSError`; the
        timeout covers the whole wait.

        How the result leaves the isolate (docs/values.md): primitives always
        pass (``undefined`` → :data:`ivm.undefined`, ``null`` → ``None``,
        booleans, numbers as ``int`` when integral and safe else ``float``,
        BigInts → ``int``, strings → ``str``). Anything else needs
        ``copy=True`` (a structured copy as Python objects) or
        ``external_copy=True`` (an :class:`ivm.ExternalCopy`) or
        ``reference=True`` (an :class:`ivm.Reference`: the value stays in the
        isolate);
        ``transfer_out=True`` with either moves the result's ArrayBuffers
        instead of copying them (they are detached in the isolate).

        Raises :class:`ivm.JSError` when the code throws,
        :class:`ivm.TimeoutError`, :class:`ivm.MemoryLimitError`,
        :class:`ivm.DisposedError`, :class:`ivm.TerminatedError`, and
        :class:`ivm.TransferError` for a result that cannot leave as asked.
        """
        src = code_bytes(code)
        source, run, ropts, _keep = call_options(
            timeout, promise, copy, external_copy, transfer_out, reference,
            filename, line_offset, column_offset,
        )  # fmt: skip
        x = EVAL(self._ptr, src, len(src), source, run, ropts)
        return x if x != NOT_INTEGER else finish()

    @overload
    def eval_sync(
        self, code: str, *, copy: bool = False, external_copy: Literal[False] = False,
        reference: Literal[True], **options: Unpack[EvalKeywords],
    ) -> Reference: ...

    @overload
    def eval_sync(
        self, code: str, *, copy: bool = False, external_copy: Literal[True],
        reference: Literal[False] = False, **options: Unpack[EvalKeywords],
    ) -> ExternalCopy: ...

    @overload
    def eval_sync(
        self, code: str, *, copy: Literal[False] = False, external_copy: Literal[False] = False,
        reference: Literal[False] = False, **options: Unpack[EvalKeywords],
    ) -> JSPrimitive: ...

    @overload
    def eval_sync(
        self, code: str, *, copy: bool = False, external_copy: bool = False,
        reference: bool = False, **options: Unpack[EvalKeywords],
    ) -> Any: ...

    @options_in(_eval_sync)
    def eval_sync(self, code: str, **options: Any) -> Any:
        if options:
            return self._eval_sync(code, **options)
        if type(code) is not str:
            code_bytes(code)  # raises TypeError
        try:
            src = code.encode()  # code_bytes, inlined on the hot path
        except UnicodeEncodeError:
            src = code.encode("utf-8", "surrogatepass")
        x = EVAL_PLAIN(self._ptr, src, len(src))
        return x if x != NOT_INTEGER else finish()

    @overload
    async def eval(
        self, code: str, *, copy: bool = False, external_copy: Literal[False] = False,
        reference: Literal[True], **options: Unpack[EvalKeywords],
    ) -> Reference: ...

    @overload
    async def eval(
        self, code: str, *, copy: bool = False, external_copy: Literal[True],
        reference: Literal[False] = False, **options: Unpack[EvalKeywords],
    ) -> ExternalCopy: ...

    @overload
    async def eval(
        self, code: str, *, copy: Literal[False] = False, external_copy: Literal[False] = False,
        reference: Literal[False] = False, **options: Unpack[EvalKeywords],
    ) -> JSPrimitive: ...

    @overload
    async def eval(
        self, code: str, *, copy: bool = False, external_copy: bool = False,
        reference: bool = False, **options: Unpack[EvalKeywords],
    ) -> Any: ...

    async def eval(
        self,
        code: str,
        *,
        timeout: float | None = None,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        promise: bool = False,
        copy: bool = False,
        external_copy: bool = False,
        transfer_out: bool = False,
        reference: bool = False,
    ) -> Any:
        """The async twin of :meth:`eval_sync`: queued on the isolate (FIFO) and
        run by libivm's thread pool; the event loop (asyncio or trio) keeps
        running. Cancelling the awaiting task stops the JavaScript (or drops the
        call if it has not started); the isolate stays usable.
        """
        plain = (
            timeout is None and promise is False and copy is False and external_copy is False
            and transfer_out is False and reference is False and filename is None
            and line_offset == 0 and column_offset == 0
        )  # fmt: skip
        if plain and type(code) is str:
            loop = _get_running_loop()
            if loop is not None:  # the common call on asyncio: submit()'s path, inlined
                future = loop.create_future()
                job = start_eval(loop, self, code, future)  # made in C (ivm/_cffi_async.c)
                if future.done():  # a lone call polled for: done, and still yields once
                    await _sleep(0)
                    return future.result()
                try:
                    return await future
                except CancelledError:
                    _cancel_job(self._isolate._ptr, job)
                    raise
            task = trio_task()
            if task is not None:  # the same on trio (EVAL_START, DRAIN_FAST)
                ll = _async._ll
                await ll.checkpoint_if_cancelled()  # a cancelled scope's call never starts
                waiter = start_eval_trio(self, code, task, self._isolate._ptr)
                if waiter.parked:
                    return await ll.wait_task_rescheduled(waiter.abort)
                # done on the spot: a schedule point only (a finished call is never
                # reported as cancelled)
                await ll.cancel_shielded_checkpoint()
                return waiter.result.unwrap()
        if type(code) is not str:
            code_bytes(code)  # raises TypeError
        try:
            src = code.encode()  # code_bytes, inlined on the hot path
        except UnicodeEncodeError:
            src = code.encode("utf-8", "surrogatepass")
        if plain:
            # call_options' all-defaults case, inlined on the hot path
            args: tuple[Any, ...] = (self._ptr, src, len(src), _NULL, _NULL, _NULL)
        else:
            source, run, ropts, _keep = call_options(
                timeout, promise, copy, external_copy, transfer_out, reference,
                filename, line_offset, column_offset,
            )  # fmt: skip
            args = (self._ptr, src, len(src), source, run, ropts)
        return await submit(self._isolate._ptr, _eval_async, args, take)

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
        source, run, _, _keep = call_options(
            timeout, promise, filename=filename, line_offset=line_offset, column_offset=column_offset
        )
        ropts = _result_options(result_flags(promise) | lib.IVM_RESULT_DISCARD)
        args = (self._ptr, src, len(src), source, run, ropts)
        submit_ignored(_eval_async, args, lib.ivm_value_free)

    # --- closures

    def _closure_call(
        self,
        code: str,
        arguments: Arguments,
        arguments_options: Mapping[str, object] | None,
        flags: int,
        timeout: float | None,
    ) -> tuple[tuple[Any, ...], list[Any]]:
        """The arguments of ``ivm_context_eval_closure[_async]`` before its
        outputs, and the argument values in them, which the caller frees (a
        sync call) or libivm takes (an async one)."""
        ropts = _result_options(flags)
        run = run_options(timeout)
        src = code_bytes(code)
        values = to_values(arguments, arguments_options)
        argv = value_array(values)
        return (self._ptr, src, len(src), argv, len(values), _NULL, run, ropts), values

    def eval_closure_sync(
        self,
        code: str,
        arguments: Arguments = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        result_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Runs ``code`` as the body of a function called with ``arguments``,
        which it sees as ``$0``, ``$1``, …; returns what it returns.

        Arguments that are primitives or ``ExternalCopy.copy_into()`` markers
        pass as they are; others need ``arguments_options={"copy": True}``
        (structured copies, docs/values.md). ``result_options`` take
        ``copy``, ``external_copy``, ``transfer_out`` and ``promise`` as in
        :meth:`eval_sync`. Raises as :meth:`eval_sync`.
        """
        flags = result_options_flags(result_options)
        args, values = self._closure_call(code, arguments, arguments_options, flags, timeout)
        try:
            out, slot = sync_slots()
            return sync_result(lib.ivm_context_eval_closure(*args, out, slot), out, slot)
        finally:
            for v in values:
                lib.ivm_value_free(v)

    async def eval_closure(
        self,
        code: str,
        arguments: Arguments = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        result_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The async twin of :meth:`eval_closure_sync`."""
        flags = result_options_flags(result_options)
        args, values = self._closure_call(code, arguments, arguments_options, flags, timeout)
        return await submit_owning(
            self._isolate._ptr, lib.ivm_context_eval_closure_async, args, values, take
        )

    def eval_closure_ignored(
        self,
        code: str,
        arguments: Arguments = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Queues :meth:`eval_closure` and returns at once, without a result."""
        discard = lib.IVM_RESULT_DISCARD
        args, _ = self._closure_call(code, arguments, arguments_options, discard, timeout)
        # (libivm takes the argument values even when it refuses the call)
        submit_ignored(lib.ivm_context_eval_closure_async, args, lib.ivm_value_free)


# The call without options in C, with no Python frame around it (ivm/_call.py).
c_method(Context, "eval_sync")
c_getter(Context, "global_", "_global", "_make_global")
