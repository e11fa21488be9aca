"""The async completion path: libivm jobs finishing on asyncio or trio.

Each running event loop gets one libivm completion queue (a ``_Dispatcher``).
An awaited call submits an ``_async`` job whose ``done`` is the queue, then
parks its task. libivm runs the job on its own pool thread and pushes the
outcome into the queue without touching Python (no GIL on pool threads); the
queue's file descriptor wakes the loop once for however many completions are
waiting, and the loop's thread pops them in a batch, converts them and wakes
their tasks: asyncio through ``loop.add_reader``, trio through a system task
in ``wait_readable``. No Python thread and no OS thread exists per call.

Cancelling the waiting task cancels the job: libivm drops it if it is still
queued, or terminates its JavaScript if it runs. The isolate stays usable, and
its FIFO queue makes the next call wait for the cancelled one to unwind, on
both loops alike. The outcome of a cancelled job is freed when it arrives.

``*_ignored()`` calls need no loop: their ``done`` is a cffi callback that only
reports errors.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import time
import weakref
from typing import Any, Callable, TypeVar, cast

from . import _call  # noqa: F401 - its ivm_py_install runs before ivm_py_async_install
from ._errors import IvmError, error_from
from ._ffi import ffi, lib
from ._value import take

__all__ = [
    "set_ignored_error_handler", "start_eval", "start_eval_trio", "submit", "submit_ignored",
    "trio_task",
]

_log = logging.getLogger("ivm")
_T = TypeVar("_T")

#: Turns a job's raw result into a Python object (on the loop's thread).
Convert = Callable[[Any], Any]
#: Submits one job: ``start(done, user_data, out_job) -> ivm_error_t*``.
Start = Callable[[Any, Any, Any], Any]

_QUEUE_DONE = ffi.addressof(lib, "ivm_completion_queue_done")
_get_running_loop = asyncio._get_running_loop  # None outside a running loop; fast
_BATCH = 256
_POLL_NS = 15_000
_now_ns = time.perf_counter_ns
_sched_yield = os.sched_yield


class _Dispatcher:
    """One completion queue and the waiters of one event loop."""

    __slots__ = (
        "queue", "queue_addr", "fd", "waiters", "buffer", "buffer_addr", "job", "skip_polls",
        "poll_backoff", "__weakref__",
    )

    def __init__(self) -> None:
        out = ffi.new("ivm_completion_queue_t **")
        fd = ffi.new("int *")
        err = lib.ivm_completion_queue_new(fd, out)
        if err:
            raise error_from(err)
        self.queue = ffi.gc(out[0], lib.ivm_completion_queue_free)
        self.queue_addr = int(ffi.cast("uintptr_t", self.queue))  # for EVAL_START
        self.fd: int = fd[0]
        # job id -> for asyncio (future, convert), or the future when convert is take
        # (start_eval's); a _TrioWaiter for trio
        self.waiters: dict[int, Any] = {}
        self.buffer = ffi.new("ivm_completion_t[]", _BATCH)
        self.buffer_addr = int(ffi.cast("uintptr_t", self.buffer))  # for DRAIN_FAST
        self.job = ffi.new("uint64_t *")  # loop thread only: read right after each submit
        self.skip_polls = 0  # lone calls left that skip poll() after failed polls
        self.poll_backoff = 0

    def poll(self, done: Any) -> bool:
        """Waits briefly, on the loop's thread, for the outcome of a lone call.

        A call that nothing else is waiting for usually finishes within a few
        microseconds on an idle pool thread; catching it here saves the loop's
        wake-up through the queue's fd (tens of microseconds on a VM). Blocks
        the loop for about _POLL_NS; ``done`` is a future or a _TrioWaiter.
        It yields the core between checks (``sched_yield``), so a pool thread
        that shares this core runs the call meanwhile. After a failed poll (or
        one that a yield made end late), the next lone calls (1, 3, 7, ... up
        to 256) skip it, so a loaded machine where polls fail loses almost
        nothing.
        """
        if self.skip_polls:
            # Recent polls failed (a loaded machine): don't waste loop time.
            self.skip_polls -= 1
            return False
        deadline = _now_ns() + _POLL_NS
        while True:
            self.drain()
            if done.done():
                if _now_ns() < deadline:
                    self.poll_backoff = 0
                else:  # a yield gave the core away for long: poll less
                    self._back_off()
                return True
            if _now_ns() >= deadline:
                self._back_off()
                return False
            # Yields the core: the pool thread that runs the call is often
            # waiting for this one (2 cores shared by the loop and the pool).
            _sched_yield()

    def _back_off(self) -> None:
        self.poll_backoff = min(self.poll_backoff * 2 + 1, 256)
        self.skip_polls = self.poll_backoff

    def drain(self) -> None:
        """Loop thread: completes every job waiting in the queue.

        DRAIN_FAST (ivm/_cffi_async.c) completes the common ones in C, in order:
        a primitive or string value for a waiter that converts with ``take``. It
        stops at the first it leaves to :meth:`_complete` (errors, other kinds,
        other converters), which completes that one here before C goes on."""
        buffer, waiters, addr = self.buffer, self.waiters, self.buffer_addr
        while True:
            n = lib.ivm_completion_queue_pop(self.queue, buffer, _BATCH)
            i = DRAIN_FAST(addr, 0, n, waiters)
            while i < n:
                self._complete(buffer[i])
                i = DRAIN_FAST(addr, i + 1, n, waiters)
            if n < _BATCH:
                return

    def _complete(self, c: Any) -> None:
        """Completes the job of one ``ivm_completion_t`` (the general path)."""
        waiter = self.waiters.pop(c.job, None)
        if waiter is not None and type(waiter) is not _TrioWaiter:
            # asyncio: (future, convert), or a future alone that converts with take
            future, convert = waiter if type(waiter) is tuple else (waiter, take)
            if c.error:
                exc = error_from(c.error)
                if not future.done():
                    future.set_exception(exc)
                return
            try:
                # (_result_of's common case inlined: a value)
                value = convert(c.result.value if c.kind == _VALUE else _result_of(c))
            except BaseException as exc:  # noqa: BLE001 - goes to the waiter
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(value)
        elif c.error:
            error = error_from(c.error)
            if waiter is not None:
                waiter.fail(error)
        elif waiter is None:  # pragma: no cover - every job has a waiter
            _log.error("ivm: a result arrived for an unknown job %d", c.job)
        else:
            try:
                value = waiter.convert(_result_of(c))
            except BaseException as exc:  # noqa: BLE001 - goes to the waiter
                waiter.fail(exc)
            else:
                waiter.succeed(value)


_VALUE: int = lib.IVM_COMPLETION_VALUE
#: The member of ``ivm_completion_t.result`` that each kind sets.
_MEMBERS: dict[int, str] = {
    lib.IVM_COMPLETION_VALUE: "value",
    lib.IVM_COMPLETION_CONTEXT: "context",
    lib.IVM_COMPLETION_SCRIPT: "script",
    lib.IVM_COMPLETION_HEAP_STATISTICS: "heap_statistics",
    lib.IVM_COMPLETION_MODULE: "module",
}


def _result_of(c: Any) -> Any:
    """The result of a successful ``ivm_completion_t``, typed by its kind
    (an ``ivm_value_t *``, ``ivm_context_t *``...), which the caller owns."""
    if c.kind == _VALUE:
        return c.result.value
    return getattr(c.result, _MEMBERS[c.kind])


def _can_poll(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the current task may wait for its call on the spot: not if a
    cancellation is pending (it must reach the call's ``await``)."""
    task = asyncio.current_task(loop)
    cancelling = getattr(task, "cancelling", None)
    return cancelling is not None and not cancelling()


# --- asyncio ---------------------------------------------------------------------------

_asyncio_dispatchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Dispatcher] = (
    weakref.WeakKeyDictionary()
)


# The loop used last and its dispatcher, as one tuple: threads running their own
# loops read and replace it atomically (two globals could pair one thread's loop
# with another's dispatcher).
_last: tuple[Any, Any] = (None, None)


def _asyncio_dispatcher(loop: asyncio.AbstractEventLoop) -> _Dispatcher:
    global _last
    last = _last
    if last[0] is loop:
        return last[1]  # type: ignore[no-any-return]
    d = _asyncio_dispatchers.get(loop)
    if d is None:
        d = _Dispatcher()
        loop.add_reader(d.fd, d.drain)
        _asyncio_dispatchers[loop] = d
    # Remembered weakly-enough: a closed loop is replaced by the next one used.
    _last = (loop, d)
    return d


# --- trio ------------------------------------------------------------------------------

_trio_dispatcher_var: Any = None
_ll: Any = None  # trio.lowlevel, once trio is in use
_Value: Any = None  # outcome.Value
_Error: Any = None  # outcome.Error


def _load_trio() -> Any:
    global _ll, _Value, _Error, _trio_dispatcher_var
    import outcome  # late: trio is optional, loaded once the caller has imported it
    import trio

    _Value, _Error = outcome.Value, outcome.Error
    _trio_dispatcher_var = trio.lowlevel.RunVar("ivm_dispatcher")
    _ll = trio.lowlevel
    return _ll


def _trio_dispatcher() -> _Dispatcher:
    try:
        return _trio_dispatcher_var.get()  # type: ignore[no-any-return]
    except LookupError:
        pass
    d = _Dispatcher()
    _trio_dispatcher_var.set(d)
    wait_readable = _ll.wait_readable

    async def pump() -> None:
        while True:
            await wait_readable(d.fd)
            d.drain()

    _ll.spawn_system_task(pump, name="ivm completion pump")
    return d


class _TrioWaiter:
    """A trio task parked on one job (asyncio waits on a plain future)."""

    __slots__ = ("convert", "task", "parked", "waiting", "result", "cancel", "owner", "job")

    def __init__(self, convert: Convert, task: Any, cancel: Any, owner: Any) -> None:
        self.convert = convert
        self.task = task
        self.parked = False  # in wait_task_rescheduled
        self.waiting = True  # nobody gave up on the outcome
        self.result: Any = None  # an outcome that arrived before parking
        self.cancel = cancel  # cancel(owner, job) cancels the job
        self.owner = owner
        self.job = 0  # set once submitted

    def abort(self, _raise_cancel: Any) -> Any:
        """wait_task_rescheduled's abort: the task was cancelled while parked."""
        self.waiting = False  # a late outcome must not reschedule us
        self.cancel(self.owner, self.job)
        return _ll.Abort.SUCCEEDED

    def _settle(self, result: Any) -> None:
        if not self.waiting:
            return
        self.waiting = False
        if self.parked:
            _ll.reschedule(self.task, result)
        else:
            self.result = result

    def succeed(self, value: Any) -> None:
        self._settle(_Value(value))

    def fail(self, exc: BaseException) -> None:
        self._settle(_Error(exc))

    def done(self) -> bool:
        return self.result is not None


# --- the C path (ivm/_cffi_async.c) -----------------------------------------------------

# ivm_py_async_install makes EVAL_START and DRAIN_FAST here (builtins written in C), reading
# take, undefined, _TrioWaiter and Handle; ivm._call (imported above) made the record it uses.
if not lib.ivm_py_async_install():  # pragma: no cover - only out of memory
    raise ImportError("ivm: could not make its C async path (ivm/_cffi_async.c)")
#: EVAL_START(context, code, queue, waiters, waiter) -> job: submits an all-defaults eval.
EVAL_START = cast("Callable[[Any, str, int, dict[int, Any], Any], int]", globals()["EVAL_START"])
#: DRAIN_FAST(buffer, start, n, waiters) -> the index of the first completion left to Python.
DRAIN_FAST = cast("Callable[[int, int, int, dict[int, Any]], int]", globals()["DRAIN_FAST"])


# --- the entry points ------------------------------------------------------------------


async def submit(
    isolate_ptr: Any,
    cfunc: Any,
    args: tuple[Any, ...],
    convert: Callable[[Any], _T],
    cancel: Any = lib.ivm_isolate_cancel_job,
) -> _T:
    """Runs one libivm ``_async`` call and waits for its outcome on the running
    loop (asyncio or trio): ``cfunc(*args, done, user_data, out_job)``.
    Cancelling the awaiting task calls ``cancel(isolate_ptr, job)``."""
    loop = _get_running_loop()
    if loop is not None:
        last = _last
        d = last[1] if last[0] is loop else _asyncio_dispatcher(loop)
        future = loop.create_future()
        err = cfunc(*args, _QUEUE_DONE, d.queue, d.job)
        if err:
            raise error_from(err)
        job = d.job[0]
        d.waiters[job] = (future, convert)
        if len(d.waiters) == 1 and _can_poll(loop) and d.poll(future):
            # Done without a cross-thread wake-up; still yield once, so that a
            # loop of awaited calls never starves the event loop.
            await asyncio.sleep(0)
            done: _T = future.result()
            return done
        try:
            result: _T = await future
            return result
        except asyncio.CancelledError:
            cancel(isolate_ptr, job)
            raise
    task = trio_task()
    if task is not None:
        ll = _ll
        # (inlined rather than a helper coroutine: one frame fewer per call)
        # A call in a cancelled scope does not start (trio's checkpoint rule).
        await ll.checkpoint_if_cancelled()
        td = _trio_dispatcher()
        waiter = _TrioWaiter(convert, task, cancel, isolate_ptr)
        err = cfunc(*args, _QUEUE_DONE, td.queue, td.job)
        if err:
            raise error_from(err)
        waiter.job = trio_job = td.job[0]
        td.waiters[trio_job] = waiter
        if len(td.waiters) == 1 and td.poll(waiter):
            # Done on the spot: a schedule point only, so a finished call is never
            # reported as cancelled.
            await ll.cancel_shielded_checkpoint()
            value: _T = waiter.result.unwrap()
            return value
        waiter.parked = True
        parked: _T = await ll.wait_task_rescheduled(waiter.abort)
        return parked
    raise IvmError(
        "ivm's async API was used outside a running asyncio or trio event loop; "
        "use the _sync method, or run it under asyncio.run() or trio.run()"
    )


def start_eval(loop: asyncio.AbstractEventLoop, context: Any, code: str, future: Any) -> int:
    """Submits ``context.eval(code)`` with every option at its default, on
    ``loop``, the running asyncio loop (``code`` an exact str), for ``future``
    (made by ``loop``): made, and ``future`` stored as its waiter, by one C call,
    EVAL_START (ivm/_cffi_async.c), whose result DRAIN_FAST then completes in C.
    Returns the job's id. A lone call is polled for as :func:`submit` does:
    ``future`` is then done on return, and the caller must still yield once.
    (Context.eval awaits ``future`` itself: one coroutine per call, not two.)"""
    last = _last
    d = last[1] if last[0] is loop else _asyncio_dispatcher(loop)
    job = EVAL_START(context, code, d.queue_addr, d.waiters, future)
    if len(d.waiters) == 1 and _can_poll(loop):
        d.poll(future)
    return job


def trio_task() -> Any:
    """The running trio task, or None (not in a trio task, or trio never imported)."""
    ll = _ll if _ll is not None else (_load_trio() if "trio" in sys.modules else None)
    if ll is None:
        return None
    try:  # one lookup, where in_trio_task() then current_task() made two
        return ll.current_task()
    except RuntimeError:  # not in a trio task
        return None


def start_eval_trio(context: Any, code: str, task: Any, isolate_ptr: Any) -> _TrioWaiter:
    """:func:`start_eval` on trio, for ``task`` (the running one; the caller has passed
    its cancellation checkpoint): EVAL_START submits the eval, with a _TrioWaiter that
    DRAIN_FAST settles in C. A lone call is polled for; unless that found it done
    (``result`` set; the caller must still pass a schedule point), the waiter is marked
    parked: the caller must park in ``wait_task_rescheduled(waiter.abort)`` at once.
    (Context.eval awaits it itself: one coroutine per call, not two, as on asyncio.)"""
    td = _trio_dispatcher()
    waiter = _TrioWaiter(take, task, lib.ivm_isolate_cancel_job, isolate_ptr)
    waiter.job = EVAL_START(context, code, td.queue_addr, td.waiters, waiter)
    if len(td.waiters) != 1 or not td.poll(waiter):
        waiter.parked = True
    return waiter


async def submit_owning(
    owner_ptr: Any,
    cfunc: Any,
    args: tuple[Any, ...],
    owned: list[Any],
    convert: Callable[[Any], _T],
    cancel: Any = lib.ivm_isolate_cancel_job,
) -> _T:
    """:func:`submit` for a libivm ``_async`` call that takes ownership of the
    values in ``owned`` once it is made: they are freed here if the call is
    never made (no event loop, a cancelled trio scope)."""
    started = False

    def start(*call_args: Any) -> Any:
        nonlocal started
        started = True  # libivm owns the values from here on
        return cfunc(*call_args)

    try:
        return await submit(owner_ptr, start, args, convert, cancel)
    finally:
        if not started:
            for v in owned:
                if v != ffi.NULL:
                    lib.ivm_value_free(v)


_ignored_handler: Callable[[BaseException], object] | None = None
_ignored: dict[int, Convert] = {}
_ignored_keys = itertools.count(1)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _ivm_py_done(user_data: Any, completion: Any) -> None:
    """libivm pool thread: an ignored call ended. Never raises into C."""
    try:
        convert = _ignored.pop(int(ffi.cast("uintptr_t", user_data)), None)
        if completion.error:
            _report_ignored(error_from(completion.error))
        elif convert is not None:
            convert(_result_of(completion))  # frees it
    except BaseException:  # pragma: no cover - nothing may unwind through C
        _log.exception("ivm: error while completing an ignored call")


def _report_ignored(exc: BaseException) -> None:
    _log.warning("ivm: an ignored call failed: %s: %s", type(exc).__name__, exc)
    handler = _ignored_handler
    if handler is not None:
        try:
            handler(exc)
        except Exception:  # noqa: BLE001
            _log.exception("ivm: the ignored-error handler failed")


def submit_ignored(cfunc: Any, args: tuple[Any, ...], convert: Convert) -> None:
    """Queues one libivm ``_async`` call whose outcome nobody awaits:
    ``cfunc(*args, done, user_data, NULL)``.

    Needs no event loop. Errors are logged on the ``ivm`` logger and passed to
    the handler set with :func:`set_ignored_error_handler`.
    """
    key = next(_ignored_keys)
    _ignored[key] = convert
    err = cfunc(*args, lib._ivm_py_done, ffi.cast("void *", key), ffi.NULL)
    if err:
        _ignored.pop(key, None)
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
