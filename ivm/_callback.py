"""``ivm.Callback``: a Python function that JavaScript can call."""

from __future__ import annotations

import asyncio
import inspect
import threading
import logging
import sys
from typing import Any, Callable, Final, Literal

from ._async import _report_ignored
from ._copy import _Marker, to_value
from . import _errors
from ._errors import JSError, check, restore_recursion_limit, stash_host_error
from ._ffi import ffi, lib
from ._value import MAX_SAFE
from ._value import KIND_NULL, KIND_NUMBER, KIND_STRING, js_number, peek

__all__ = ["Callback", "CallbackMode"]

_log = logging.getLogger("ivm")
_call_arg = lib.ivm_call_arg
_call_view = lib.ivm_call_view
_tls = threading.local()


def _view_slots() -> tuple[Any, Any]:
    _tls.view = view = (ffi.new("size_t *"), ffi.new("ivm_primitive_t **"))
    return view
_new_number = lib.ivm_value_new_number
_MODES: Final = ("sync", "async", "ignored")
#: What ``Callback(mode=...)`` takes.
CallbackMode = Literal["sync", "async", "ignored"]
# The state of every live callback, by the address of its cffi handle: kept
# alive until libivm finalizes the callback.
_live: dict[int, tuple[_State, Any]] = {}
# asyncio tasks running async callbacks (the loop holds tasks weakly).
_tasks: set[Any] = set()
# The host function of sync Callbacks: ivm/_cffi_host.c's C path (the common call made
# without cffi's callback machinery), which hands the rest to _ivm_py_host_fn and
# _ivm_py_host_finish.
_SYNC_HOST_FN: Final = ffi.addressof(lib, "ivm_py_host_call")
# (The C path hands _ivm_py_host_finish the function's result or exception as
# _tls.pending: this thread's.)


class _State:
    __slots__ = ("fn", "mode", "asyncio_loop", "trio_token", "loop_thread")

    def __init__(self, fn: Callable[..., Any], mode: str) -> None:
        self.fn = fn
        self.mode = mode
        self.asyncio_loop: Any = None
        self.trio_token: Any = None
        self.loop_thread: int | None = None

    def capture_loop(self) -> bool:
        try:
            self.asyncio_loop = asyncio.get_running_loop()
            self.loop_thread = threading.get_ident()
            return True
        except RuntimeError:
            pass
        trio = sys.modules.get("trio")
        if trio is not None and trio.lowlevel.in_trio_task():
            self.trio_token = trio.lowlevel.current_trio_token()
            self.loop_thread = threading.get_ident()
            return True
        return False

    def run_blocking(self, args: list[Any]) -> Any:
        """Runs `fn(*args)` to completion on the captured loop from another
        thread, blocking this one (applySyncPromise)."""
        if self.loop_thread == threading.get_ident():
            raise RuntimeError(
                "applySyncPromise would block the event loop that must run the function: "
                "call into the isolate asynchronously (await context.eval(...))"
            )
        fn = self.fn

        async def call() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        if self.asyncio_loop is not None:
            return asyncio.run_coroutine_threadsafe(call(), self.asyncio_loop).result()
        if self.trio_token is not None:
            import trio  # late: trio is optional, and in use once a token was captured

            return trio.from_thread.run(call, trio_token=self.trio_token)
        result = fn(*args)
        if inspect.isawaitable(result):
            async def wait() -> Any:
                return await result

            return asyncio.run(wait())
        return result

    def post(self, fn: Callable[[], Any]) -> bool:
        """Runs `fn` soon on the captured loop; False if that loop is gone."""
        try:
            if self.asyncio_loop is not None:
                self.asyncio_loop.call_soon_threadsafe(fn)
                return True
            if self.trio_token is not None:
                self.trio_token.run_sync_soon(fn)
                return True
        except RuntimeError:   # loop closed / trio.RunFinishedError
            return False
        return False

    def spawn(self, coro_fn: Callable[[], Any]) -> None:
        """On the loop's thread: starts `coro_fn()` as a task."""
        if self.asyncio_loop is not None:
            task = self.asyncio_loop.create_task(coro_fn())
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)
        else:
            import trio  # late: trio is optional, and in use once a token was captured

            trio.lowlevel.spawn_system_task(coro_fn)


class Callback(_Marker):
    """A Python function that JavaScript can call (isolated-vm's ``Callback``).

    Set it on a context (``context.global_.set_sync("log", ivm.Callback(print))``)
    or pass it as an argument: in the isolate it is a function. Arguments
    arrive as Python values (primitives and structured copies,
    docs/values.md); the result goes back as a copy. A Python exception
    becomes a JavaScript ``Error`` with the exception's type name and message
    (no traceback, no Python object reaches JavaScript); if it propagates out
    of the host's call, the original exception is raised there, with the
    JavaScript error as its ``__cause__``. ``KeyboardInterrupt`` and
    ``SystemExit`` stop the JavaScript and propagate.

    ``mode``:

    - ``"sync"`` (default): JavaScript waits for ``fn``, which runs on the
      thread running the JavaScript.
    - ``"async"``: JavaScript gets a Promise at once; ``fn`` (a plain or a
      coroutine function) runs on the event loop (asyncio or trio) that was
      running when the Callback was made, and its result settles the promise.
      An isolate waiting on that promise (``promise=True``) must do so
      asynchronously (``await context.eval(...)``) or from another thread,
      or the loop could never run ``fn``.
    - ``"ignored"``: JavaScript gets ``undefined`` at once; ``fn`` runs later
      on that event loop (or at once, with no loop), and its errors are
      logged on the ``ivm`` logger.
    """

    __slots__ = ("_ptr", "_fn", "_mode", "__weakref__")
    _mode: CallbackMode

    def __init__(self, fn: Callable[..., Any], *, mode: CallbackMode = "sync") -> None:
        if not callable(fn):
            raise TypeError(f"Callback needs a callable, not {type(fn).__name__}")
        if mode not in _MODES:
            raise ValueError(f"mode must be 'sync', 'async' or 'ignored', not {mode!r}")
        state = _State(fn, mode)
        if not state.capture_loop() and mode == "async":
            raise ValueError(
                "Callback(mode='async') must be made inside a running asyncio or trio event "
                "loop: that loop runs the function"
            )
        handle = ffi.new_handle(state)
        key = int(ffi.cast("uintptr_t", handle))
        _live[key] = (state, handle)
        out = ffi.new("ivm_callback_t **")
        # (libivm finalizes the state even when this fails)
        host_fn = _SYNC_HOST_FN if mode == "sync" else lib._ivm_py_host_fn
        check(lib.ivm_callback_new(host_fn, handle, lib._ivm_py_callback_finalize, 0, out))
        self._ptr = ffi.gc(out[0], lib.ivm_callback_free)
        self._fn = fn
        self._mode = mode

    @property
    def mode(self) -> CallbackMode:
        return self._mode

    def __repr__(self) -> str:
        return f"<ivm.Callback {self._mode} {self._fn!r}>"

    def _attach(self, value: Any) -> int:
        index = ffi.new("size_t *")
        check(lib.ivm_value_attach_callback(value, self._ptr, 0, index))
        return int(index[0])


def _host_error(exc: BaseException) -> Any:
    """An owned ``ivm_error_t *`` that JavaScript sees as the exception."""
    token = stash_host_error(exc)
    if isinstance(exc, JSError):  # JavaScript's own error, passing through
        name = exc.name.encode("utf-8", "surrogatepass")
        message = exc.message.encode("utf-8", "surrogatepass")
    else:
        name = type(exc).__name__.encode()
        try:
            message = str(exc).encode("utf-8", "surrogatepass")
        except Exception:  # noqa: BLE001 - a broken __str__
            message = b""
    flags = lib.IVM_HOST_ERROR_ABORT if isinstance(exc, (KeyboardInterrupt, SystemExit)) else 0
    return lib.ivm_error_new_host(name, len(name), message, len(message), token, flags)


_PLAIN: Final = frozenset({int, float, str, bool, type(None), list, dict, tuple})


def _result(value: Any) -> Any:
    t = type(value)
    if t is float:
        return _new_number(value)
    if t is int and -MAX_SAFE <= value <= MAX_SAFE:
        return _new_number(float(value))
    if t not in _PLAIN and inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()
        raise TypeError(
            "the host function returned an awaitable where a value was needed: use "
            "Callback(mode='async'), or apply/applySyncPromise on a Reference"
        )
    return to_value(value, True)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _ivm_py_host_fn(user_data: Any, call: Any, out: Any) -> Any:
    """JavaScript called a Callback (the thread running that JavaScript)."""
    try:
        state: _State = ffi.from_handle(user_data)
        try:
            argc, result_slot = _tls.view
        except AttributeError:
            argc, result_slot = _view_slots()
        view = _call_view(call, argc, result_slot)
        slot = result_slot[0]  # read now: a nested call reuses this thread's holders
        args = []
        for i in range(argc[0]):
            p = view[i]
            k = p.kind
            if k == KIND_NUMBER:
                args.append(js_number(p.number))
            elif k == KIND_STRING:
                args.append(ffi.unpack(p.data, p.len).decode("utf-8", "surrogatepass"))
            else:
                args.append(peek(_call_arg(call, i)))
        mode = state.mode
        if mode == "reference":
            return _host_reference_op(state, call, args, out)
        if mode == "sync":
            r = state.fn(*args)
            t = type(r)
            if (t is int and -MAX_SAFE <= r <= MAX_SAFE) or t is float:
                slot.kind = KIND_NUMBER
                slot.number = r
            elif r is None:
                slot.kind = KIND_NULL
            else:
                out[0] = _result(r)
            if _errors._saved_limit:
                restore_recursion_limit()
            return ffi.NULL
        if mode == "ignored":
            _start_ignored(state, args)
            return ffi.NULL
        deferred_out = ffi.new("ivm_deferred_t **")
        check(lib.ivm_call_defer(call, deferred_out))
        _start_async(state, args, deferred_out[0])
        return ffi.NULL
    except BaseException as exc:  # nothing may unwind through C
        # At the recursion limit (deep JavaScript/Python recursion), even
        # building the error needs a little headroom: inline, no Python call.
        if _errors._saved_limit == 0:
            _errors._saved_limit = sys.getrecursionlimit()
        sys.setrecursionlimit(_errors._saved_limit + 200)
        return _host_error_raised_limit(exc)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _ivm_py_host_finish(failed: int, out: Any) -> Any:
    """The end of a sync Callback's call that ivm/_cffi_host.c could not finish in C:
    ``_tls.pending`` is the exception its function raised (``failed``) or its result."""
    value = getattr(_tls, "pending", None)
    _tls.pending = None
    exc: BaseException
    if failed:
        exc = value if isinstance(value, BaseException) else SystemError("no exception")
    else:
        try:
            out[0] = _result(value)
            if _errors._saved_limit:
                restore_recursion_limit()
            return ffi.NULL
        except BaseException as e:  # nothing may unwind through C (as _ivm_py_host_fn)
            exc = e
    if _errors._saved_limit == 0:
        _errors._saved_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_errors._saved_limit + 200)
    return _host_error_raised_limit(exc)


def _host_error_raised_limit(exc: BaseException) -> Any:
    """``_host_error(exc)``, called with the recursion limit raised (by the caller, inline);
    puts the limit back."""
    try:
        return _host_error(exc)
    except BaseException:
        return _RECURSION_ERROR()
    finally:
        restore_recursion_limit()


def _RECURSION_ERROR() -> Any:
    msg = b"maximum recursion depth exceeded"
    return lib.ivm_error_new_host(b"RecursionError", 14, msg, len(msg), 0, 0)


def _host_reference_op(state: _State, call: Any, args: list[Any], out: Any) -> Any:
    """An operation of JavaScript on a Reference to a host value."""
    op = lib.ivm_call_op(call)
    value = state.fn
    if op == lib.IVM_CALL_COPY:
        out[0] = to_value(value, True)
        return ffi.NULL
    if not callable(value):
        raise TypeError("Reference is not a function")
    if op == lib.IVM_CALL_APPLY_SYNC_PROMISE:
        out[0] = to_value(state.run_blocking(args), True)
        return ffi.NULL
    if op == lib.IVM_CALL_APPLY_IGNORED:
        _start_ignored(state, args)
        return ffi.NULL
    if op == lib.IVM_CALL_APPLY_ASYNC:
        deferred_out = ffi.new("ivm_deferred_t **")
        check(lib.ivm_call_defer(call, deferred_out))
        if state.asyncio_loop is None and state.trio_token is None:
            try:
                result = _result(value(*args))
            except BaseException as exc:
                lib.ivm_error_free(lib.ivm_deferred_reject(deferred_out[0], _host_error(exc)))
                lib.ivm_deferred_free(deferred_out[0])
                if not isinstance(exc, Exception):
                    raise
                return ffi.NULL
            lib.ivm_error_free(lib.ivm_deferred_resolve(deferred_out[0], result))
            lib.ivm_deferred_free(deferred_out[0])
            return ffi.NULL
        _start_async(state, args, deferred_out[0])
        return ffi.NULL
    out[0] = _result(value(*args))
    return ffi.NULL


def host_reference(value: object) -> tuple[Any, _State]:
    """A libivm callback (``ivm_callback_t *``, owned) standing for a
    Reference to a host value."""
    state = _State(value, "reference")  # type: ignore[arg-type]
    state.capture_loop()
    handle = ffi.new_handle(state)
    _live[int(ffi.cast("uintptr_t", handle))] = (state, handle)
    out = ffi.new("ivm_callback_t **")
    check(lib.ivm_callback_new(lib._ivm_py_host_fn, handle, lib._ivm_py_callback_finalize, 0, out))
    return ffi.gc(out[0], lib.ivm_callback_free), state


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _ivm_py_callback_finalize(user_data: Any) -> None:
    """libivm dropped the last use of a callback (any thread)."""
    lib.ivm_py_host_forget(user_data)  # before its handle's address can be reused
    _live.pop(int(ffi.cast("uintptr_t", user_data)), None)


def _start_ignored(state: _State, args: list[Any]) -> None:
    def run() -> None:
        try:
            result = state.fn(*args)
            if inspect.isawaitable(result):
                state.spawn(lambda: _await_ignored(result))
        except Exception as exc:  # noqa: BLE001
            _report(exc)

    if not state.post(run):
        run()


async def _await_ignored(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001
        _report(exc)


def _report(exc: BaseException) -> None:
    _report_ignored(exc)


def _start_async(state: _State, args: list[Any], deferred: Any) -> None:
    async def run() -> None:
        try:
            result = state.fn(*args)
            if inspect.isawaitable(result):
                result = await result
            value = to_value(result, True)
        except BaseException as exc:
            err = _host_error(exc)
            lib.ivm_error_free(lib.ivm_deferred_reject(deferred, err))
            lib.ivm_deferred_free(deferred)
            if not isinstance(exc, Exception):
                raise
            return
        lib.ivm_error_free(lib.ivm_deferred_resolve(deferred, value))
        lib.ivm_deferred_free(deferred)

    if not state.post(lambda: state.spawn(run)):
        err = _host_error(RuntimeError("the event loop of this Callback is closed"))
        lib.ivm_error_free(lib.ivm_deferred_reject(deferred, err))
        lib.ivm_deferred_free(deferred)
