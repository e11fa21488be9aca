"""The async completion path: libivm jobs finishing on asyncio or trio.

Every ``foo()`` coroutine submits an ``_async`` job to libivm with a
``user_data`` key and parks its task. libivm runs the job on its own pool
thread and calls :func:`_ivm_py_done`, which converts the outcome there and
posts it to the waiting task's own loop without blocking: asyncio through
``loop.call_soon_threadsafe``, trio through its token. No Python thread and no
OS thread exists per pending call.

Cancelling the waiting task cancels the job: libivm drops it if it is still
queued, or terminates its JavaScript if it runs. The isolate stays usable, and
its FIFO queue makes the next call wait for the cancelled one to unwind, on
both loops alike. A result that arrives for an abandoned waiter is dropped
(and freed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
from typing import Any, Callable

from ._errors import IvmError, error_from
from ._ffi import ffi, lib

__all__ = ["set_ignored_error_handler", "submit", "submit_ignored"]

_log = logging.getLogger("ivm")

#: Outcome converters by result type, run on the pool thread with the GIL.
Convert = Callable[[Any], Any]

_waiters: dict[int, _Waiter] = {}
_keys = itertools.count(1)
_ignored_handler: Callable[[BaseException], object] | None = None


class _Waiter:
    __slots__ = ("convert",)

    def __init__(self, convert: Convert) -> None:
        self.convert = convert

    def post(self, ok: bool, value: Any) -> None:
        raise NotImplementedError


@ffi.def_extern()
def _ivm_py_done(user_data: Any, result: Any, error: Any) -> None:
    """libivm pool thread: a job ended. Never raises into C."""
    try:
        waiter = _waiters.pop(int(ffi.cast("uintptr_t", user_data)), None)
        if waiter is None:  # pragma: no cover - libivm fires exactly once per job
            if error:
                lib.ivm_error_free(error)
            return
        if error:
            ok, value = False, error_from(error)
        else:
            try:
                ok, value = True, waiter.convert(result)
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiter
                ok, value = False, exc
        waiter.post(ok, value)
    except BaseException:  # pragma: no cover - nothing may unwind through C
        _log.exception("ivm: error while completing an asynchronous call")


class _AsyncioWaiter(_Waiter):
    __slots__ = ("loop", "future")

    def __init__(self, convert: Convert) -> None:
        super().__init__(convert)
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()

    def post(self, ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: drop it
            self.loop.call_soon_threadsafe(self._settle, ok, value)

    def _settle(self, ok: bool, value: Any) -> None:
        if self.future.done():
            return
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)

    async def wait(self, cancel: Callable[[], None]) -> Any:
        try:
            return await self.future
        except asyncio.CancelledError:
            cancel()
            raise


class _TrioWaiter(_Waiter):
    __slots__ = ("token", "task", "waiting")

    def __init__(self, convert: Convert) -> None:
        import trio

        super().__init__(convert)
        self.token = trio.lowlevel.current_trio_token()
        self.task = trio.lowlevel.current_task()
        self.waiting = True

    def post(self, ok: bool, value: Any) -> None:
        import trio

        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self._settle, ok, value)

    def _settle(self, ok: bool, value: Any) -> None:  # trio thread
        import outcome
        import trio

        if self.waiting:
            self.waiting = False
            trio.lowlevel.reschedule(self.task, outcome.Value(value) if ok else outcome.Error(value))

    async def wait(self, cancel: Callable[[], None]) -> Any:
        import trio

        def abort(_raise_cancel: Any) -> Any:
            self.waiting = False  # a late result must not reschedule us
            cancel()
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


def _make_waiter(convert: Convert) -> _AsyncioWaiter | _TrioWaiter:
    if "trio" in sys.modules:
        import trio

        if trio.lowlevel.in_trio_task():
            return _TrioWaiter(convert)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise IvmError(
            "ivm's async API was used outside a running asyncio or trio event loop; "
            "use the _sync method, or run it under asyncio.run() or trio.run()"
        ) from None
    return _AsyncioWaiter(convert)


async def submit(
    isolate_ptr: Any,
    start: Callable[[Any, Any, Any], Any],
    convert: Convert,
    keep: object = None,
) -> Any:
    """Runs one libivm ``_async`` call and waits for its outcome.

    ``start(done, user_data, out_job)`` submits the job and returns an error or
    NULL. ``keep`` holds objects (buffers) alive until the job is queued.
    """
    waiter = _make_waiter(convert)
    key = next(_keys)
    job = ffi.new("uint64_t *")
    _waiters[key] = waiter
    err = start(lib._ivm_py_done, ffi.cast("void *", key), job)
    del keep
    if err:
        _waiters.pop(key, None)
        raise error_from(err)
    return await waiter.wait(lambda: lib.ivm_isolate_cancel_job(isolate_ptr, job[0]))


class _IgnoredWaiter(_Waiter):
    __slots__ = ()

    def post(self, ok: bool, value: Any) -> None:
        if not ok:
            _report_ignored(value)


def _report_ignored(exc: BaseException) -> None:
    _log.warning("ivm: an ignored call failed: %s: %s", type(exc).__name__, exc)
    handler = _ignored_handler
    if handler is not None:
        try:
            handler(exc)
        except Exception:  # noqa: BLE001
            _log.exception("ivm: the ignored-error handler failed")


def submit_ignored(start: Callable[[Any, Any, Any], Any], convert: Convert) -> None:
    """Queues one libivm ``_async`` call whose outcome nobody awaits.

    Needs no event loop. Errors are logged on the ``ivm`` logger and passed to
    the handler set with :func:`set_ignored_error_handler`.
    """
    key = next(_keys)
    _waiters[key] = _IgnoredWaiter(convert)
    err = start(lib._ivm_py_done, ffi.cast("void *", key), ffi.NULL)
    if err:
        _waiters.pop(key, None)
        raise error_from(err)


def set_ignored_error_handler(handler: Callable[[BaseException], object] | None) -> None:
    """Sets the function that receives errors of ``*_ignored()`` calls.

    It is called with the exception on a libivm pool thread, after the error is
    logged as a warning on the ``ivm`` logger. ``None`` removes it.
    """
    global _ignored_handler
    if handler is not None and not callable(handler):
        raise TypeError("handler must be callable or None")
    _ignored_handler = handler


