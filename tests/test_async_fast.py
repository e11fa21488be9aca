"""The C path of awaited calls (ivm/_cffi_async.c): EVAL_START submits an eval without
options on asyncio, DRAIN_FAST completes primitive and string results in C on both loops,
and leaves everything else (errors, other kinds, other converters) to Python, in order.
Cancelled waiters are skipped; a converter's error reaches its task."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import threading
import time
from typing import Any

import anyio
import pytest
import sniffio
from anyio.abc import TaskStatus

import ivm
from ivm import _async
from ivm._ffi import ffi, lib

SANITY = 60.0

#: Results DRAIN_FAST converts, and others it leaves to Python, mixed in one batch.
CODES = [
    "6 * 7", "1.5", "-0", "NaN", "-Infinity", "2**53", "-(2**53 - 1)", "true", "false",
    "null", "undefined", "'h\\u00e9llo'", "'\\ud800'", "''", "'x'.repeat(1000)",
    "2n**64n", "[1, 2]", "throw new RangeError('no')", "Symbol('s')",
]


def same(actual: object, expected: object) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, float) and expected == 0:
        return type(actual) is float and math.copysign(1, actual) == math.copysign(1, expected)
    return type(actual) is type(expected) and actual == expected


async def outcome(coro: Any) -> object:
    try:
        return await coro
    except ivm.IvmError as exc:
        return type(exc)


def sync_outcome(context: ivm.Context, code: str) -> object:
    try:
        return context.eval_sync(code)
    except ivm.IvmError as exc:
        return type(exc)


@pytest.mark.anyio
async def test_mixed_batch_matches_eval_sync(context: ivm.Context) -> None:
    expected = [sync_outcome(context, code) for code in CODES]
    for _ in range(5):
        results: list[object] = [None] * (len(CODES) * 20)

        async def one(i: int) -> None:
            results[i] = await outcome(context.eval(CODES[i % len(CODES)]))

        with anyio.fail_after(SANITY):
            async with anyio.create_task_group() as tg:
                for i in range(len(results)):
                    tg.start_soon(one, i)
        for i, result in enumerate(results):
            want = expected[i % len(CODES)]
            assert same(result, want), f"{CODES[i % len(CODES)]}: {result!r} != {want!r}"


@pytest.mark.anyio
async def test_results_keep_their_order_on_one_isolate(context: ivm.Context) -> None:
    context.eval_sync("globalThis.n = 0")
    codes = ["++n", "String(++n)", "BigInt(++n)", "++n; undefined"]
    results: list[object] = [None] * 400

    async def one(i: int) -> None:
        results[i] = await context.eval(codes[i % 4])

    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            for i in range(len(results)):
                tg.start_soon(one, i)
    assert context.eval_sync("n") == 400
    # each call ran once, and got its own result back whichever path completed it
    seen = sorted(int(r) for r in results if r is not ivm.undefined)  # type: ignore[call-overload]
    assert len(seen) == 300 and len(set(seen)) == 300


async def _hold_and_cancel(
    go: threading.Event, last_ran: threading.Event, call: Any, scopes: list[anyio.CancelScope]
) -> None:
    """Makes six calls: the first holds the isolate until `go` (and is never lone: no call
    polls), four queue behind it, the last sets `last_ran`; then cancels the four once
    their completions wait in the queue."""
    async with anyio.create_task_group() as tg:
        await tg.start(call, "hold(); 0")
        for _ in range(4):
            await tg.start(call, "40 + 2")
        await tg.start(call, "ran(); 1")
        go.set()
        # Blocks the loop until every completion waits in the queue, then cancels the
        # four calls before the loop drains it.
        assert last_ran.wait(SANITY)
        for scope in scopes[1:5]:
            scope.cancel()


@pytest.mark.anyio
async def test_a_cancelled_waiter_is_not_set(context: ivm.Context) -> None:
    # Completions that arrive for waiters cancelled meanwhile are dropped: nothing is set on
    # a cancelled future (asyncio would report InvalidStateError to the loop's handler).
    problems: list[object] = []
    if sniffio.current_async_library() == "asyncio":
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
    go, last_ran = threading.Event(), threading.Event()
    context.global_.set_sync("hold", ivm.Callback(lambda: go.wait(SANITY)))
    context.global_.set_sync("ran", ivm.Callback(last_ran.set))
    for _ in range(3):
        go.clear()
        last_ran.clear()
        scopes: list[anyio.CancelScope] = []
        results: list[object] = []

        async def call(code: str, *, task_status: TaskStatus[None]) -> None:
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                task_status.started()
                results.append(await context.eval(code))  # made before the parent resumes

        with anyio.fail_after(SANITY):  # (a waiter set after its cancellation: stuck)
            await _hold_and_cancel(go, last_ran, call, scopes)
        assert [scope.cancelled_caught for scope in scopes] == [False] + [True] * 4 + [False]
        assert sorted(results) == [0, 1]  # type: ignore[type-var]
        with anyio.fail_after(SANITY):
            assert await context.eval("1") == 1
    assert problems == []


@pytest.mark.anyio
async def test_a_converter_error_reaches_its_task(context: ivm.Context) -> None:
    def bad(value: Any) -> object:
        lib.ivm_value_free(value)
        raise ZeroDivisionError("converter")

    async def failing() -> object:
        src = b"7"
        args = (context._ptr, src, len(src), ffi.NULL, ffi.NULL, ffi.NULL)
        try:
            return await _async.submit(
                context.isolate._ptr, lib.ivm_context_eval_async, args, bad
            )
        except ZeroDivisionError as exc:
            return str(exc)

    results: list[object] = [None] * 60

    async def one(i: int) -> None:
        results[i] = await (failing() if i % 3 == 1 else context.eval(str(i)))

    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            for i in range(len(results)):
                tg.start_soon(one, i)
    assert results == [("converter" if i % 3 == 1 else i) for i in range(len(results))]


@pytest.mark.anyio
async def test_eval_keeps_its_errors_and_checks(context: ivm.Context) -> None:
    with pytest.raises(TypeError):
        await context.eval(b"1")  # type: ignore[call-overload]
    assert await context.eval("'\\ud83d' + 'x'") == "\ud83dx"
    assert await context.eval("'\ud83d'") == "\ud83d"  # a lone surrogate in the code
    context.release()
    with pytest.raises(ivm.DisposedError):
        await context.eval("1")


def test_builtins_refuse_bad_arguments() -> None:
    waiters: dict[int, Any] = {}
    with pytest.raises(TypeError):
        _async.EVAL_START(object(), "1", 1, waiters, None)
    with pytest.raises(TypeError):
        _async.EVAL_START(None, "1", 1, waiters, None)
    with pytest.raises(TypeError):
        _async.DRAIN_FAST(1, 0, 0, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _async.DRAIN_FAST(1, 0)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        _async.DRAIN_FAST(0, 0, 1, waiters)
    assert _async.DRAIN_FAST(1, 0, 0, waiters) == 0  # nothing to do touches nothing
    assert waiters == {}


@pytest.mark.anyio
async def test_a_submit_that_blocks_lets_other_threads_run() -> None:
    # A worker-process isolate's submit sends the call's frame, and blocks while the worker
    # does not read (here: stopped). It must not hold the GIL meanwhile: the thread that
    # resumes the worker needs it (else the worker is killed as stuck, and the call fails).
    iso = ivm.Isolate(process="isolated")
    try:
        context = iso.create_context_sync()
        pid = iso.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

        def resume() -> None:
            time.sleep(0.3)  # (the call is blocked in its send by then, or has not started)
            with contextlib.suppress(ProcessLookupError):  # (killed as stuck: the test fails)
                os.kill(pid, signal.SIGCONT)

        thread = threading.Thread(target=resume)
        thread.start()
        try:
            with anyio.fail_after(SANITY):
                assert await context.eval("/*" + "x" * (8 << 20) + "*/ 1") == 1
        finally:
            thread.join()
    finally:
        iso.dispose()


@pytest.mark.anyio
@pytest.mark.parametrize("process", ["inline", "isolated"])
async def test_plain_eval_takes_the_c_path_on_both_loops(
    monkeypatch: pytest.MonkeyPatch, process: str
) -> None:
    # Context.eval without options is EVAL_START on trio too (start_eval_trio), never the
    # generic submit(); its cancellation (the waiter's abort) and trio's checkpoint rule
    # (a call in a cancelled scope never starts) hold as on submit()'s path.
    def no_submit(*_args: object, **_kwargs: object) -> Any:
        raise AssertionError("Context.eval took the generic path")

    monkeypatch.setattr(ivm._context, "submit", no_submit)
    iso = ivm.Isolate(process=process)  # type: ignore[arg-type]
    try:
        context = iso.create_context_sync()
        ran = threading.Event()
        context.global_.set_sync("ran", ivm.Callback(ran.set))
        with anyio.fail_after(SANITY):
            assert await context.eval("6 * 7") == 42
            results = []

            async def one(i: int) -> None:
                results.append(await context.eval(f"{i} + 1"))

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
            assert sorted(results) == list(range(1, 51))
            with pytest.raises(ivm.JSError):
                await context.eval("throw new RangeError('no')")
            with anyio.move_on_after(0.05) as scope:
                await context.eval("for (;;) {}")  # parked, then cancelled
            assert scope.cancelled_caught
            with anyio.CancelScope() as scope:
                scope.cancel()
                await context.eval("ran()")
            assert scope.cancelled_caught
            assert await context.eval("2") == 2
        if sniffio.current_async_library() == "trio":  # (asyncio's may start, then stop)
            assert not ran.is_set()
    finally:
        iso.dispose()
