"""The async API (``await context.eval(...)`` and friends) under asyncio and trio, and the
fire-and-forget ``*_ignored`` calls: results and errors like the ``_sync`` twins, order,
concurrency, cancellation, disposal, and the example job runner."""

from __future__ import annotations

import builtins
import gc
import logging
import math
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import anyio
import pytest
from anyio.abc import TaskGroup, TaskStatus

import ivm

#: Sanity bound for things that must not hang; nothing here is expected to come close.
SANITY = 60.0

BUSY_FOREVER = "while (true) {}"
EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "trio_job_runner.py"


# --- helpers -----------------------------------------------------------------------------

class Call:
    """The outcome of one call run in its own task: its value, or the IvmError it raised."""

    def __init__(self) -> None:
        self.value: object = None
        self.error: ivm.IvmError | None = None
        self.returned = False
        self.over = anyio.Event()  # set once the task has finished


async def start_call(tg: TaskGroup, make: Callable[[], Awaitable[object]]) -> Call:
    """Starts ``make()`` in a new task of ``tg`` and returns once that task has made the call
    (run up to its first wait). Calls started one after another are thus made in that order
    under both backends; ``start_soon`` alone would not do, as trio runs new tasks in no
    fixed order."""
    call = Call()

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # Nothing waits between started() and the call, so the parent resumes only after
        # the call has been made.
        try:
            call.value = await make()
            call.returned = True
        except ivm.IvmError as exc:
            call.error = exc
        finally:
            call.over.set()

    await tg.start(run)
    return call


def same(actual: object, expected: object) -> bool:
    """Equal, of the same type, and for floats with the same sign (NaN equals NaN)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, float):
        assert isinstance(actual, float)
        if math.isnan(expected):
            return math.isnan(actual)
        return actual == expected and math.copysign(1, actual) == math.copysign(1, expected)
    return actual == expected


class _Records(logging.Handler):
    """Collects log records from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def mentioning(self, text: str) -> list[logging.LogRecord]:
        found = []
        for record in list(self.records):
            exc = record.exc_info[1] if record.exc_info else None
            if text in record.getMessage() or (exc is not None and text in str(exc)):
                found.append(record)
        return found


@pytest.fixture
def ivm_log() -> Iterator[_Records]:
    """What is logged to the ``ivm`` logger during the test (all levels)."""
    logger = logging.getLogger("ivm")
    handler = _Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# --- results and errors, like the _sync twins --------------------------------------------

RESULTS = [
    "6 * 7", "1.5", "-0", "NaN", "-Infinity", "2**53", "true", "null", "undefined",
    "'h\\u00e9llo'", "'\\ud800'", "2n**64n - 1n", "-(2n**200n)", "''",
]


@pytest.mark.anyio
@pytest.mark.parametrize("code", RESULTS)
async def test_eval_results_match_eval_sync(context: ivm.Context, code: str) -> None:
    expected = context.eval_sync(code)
    result = await context.eval(code)
    assert same(result, expected), f"{code}: {result!r} != {expected!r}"


@pytest.mark.anyio
async def test_eval_undefined_is_the_singleton(context: ivm.Context) -> None:
    assert await context.eval("undefined") is ivm.undefined
    assert await context.eval("var x = 1") is ivm.undefined


@pytest.mark.anyio
async def test_eval_keeps_globals_between_calls_and_with_eval_sync(context: ivm.Context) -> None:
    await context.eval("globalThis.n = 40")
    context.eval_sync("n++")
    assert await context.eval("n + 1") == 42
    assert context.eval_sync("n") == 41


@pytest.mark.anyio
async def test_create_context(isolate: ivm.Isolate, context: ivm.Context) -> None:
    fresh = await isolate.create_context()
    assert isinstance(fresh, ivm.Context)
    assert fresh.isolate is isolate
    context.eval_sync("globalThis.x = 'old'")
    assert await fresh.eval("typeof x") == "undefined"
    assert fresh.eval_sync("6 * 7") == 42
    fresh.release()
    with pytest.raises(ivm.DisposedError):
        await fresh.eval("1")
    assert await context.eval("x") == "old"


@pytest.mark.anyio
async def test_compile_script_and_run(isolate: ivm.Isolate) -> None:
    script = await isolate.compile_script("globalThis.n = (globalThis.n || 0) + 1; n")
    assert isinstance(script, ivm.Script)
    one = await isolate.create_context()
    two = await isolate.create_context()
    assert await script.run(one) == 1
    assert await script.run(one) == 2
    assert script.run_sync(one) == 3
    assert await script.run(two) == 1


@pytest.mark.anyio
async def test_compile_script_syntax_error(isolate: ivm.Isolate) -> None:
    with pytest.raises(ivm.JSError) as info:
        await isolate.compile_script("let x = ;", filename="off.js", line_offset=10)
    assert info.value.name == "SyntaxError"
    assert "off.js:11:" in info.value.stack


@pytest.mark.anyio
async def test_compile_script_source_options_reach_stacks(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    code = "1;\nfunction f() { throw new TypeError('bad') }\nf()"
    script = await isolate.compile_script(
        code, filename="file:///run.js", line_offset=10, column_offset=3
    )
    with pytest.raises(ivm.JSError) as info:
        await script.run(context)
    err = info.value
    assert (err.name, err.message) == ("TypeError", "bad")
    assert err.stack.splitlines()[1:] == [
        "    at f (file:///run.js:12:22)",
        "    at file:///run.js:13:1",
    ]


@pytest.mark.anyio
async def test_eval_js_error_matches_eval_sync(context: ivm.Context) -> None:
    code = "var a = 1;\nfunction f() { throw new TypeError('boom') }\nf()"
    options: dict[str, Any] = {"filename": "file:///e.js", "line_offset": 5, "column_offset": 2}
    with pytest.raises(ivm.JSError) as sync_info:
        context.eval_sync(code, **options)
    with pytest.raises(ivm.JSError) as async_info:
        await context.eval(code, **options)
    a, s = async_info.value, sync_info.value
    assert (a.name, a.message, a.stack) == (s.name, s.message, s.stack)
    assert (a.name, a.message) == ("TypeError", "boom")
    assert "file:///e.js:7:22" in a.stack


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("thrown", "name", "message"),
    [("new RangeError('r')", "RangeError", "r"), ("'a string'", "", "a string"), ("42", "", "42")],
)
async def test_thrown_values_arrive_as_js_error(
    context: ivm.Context, thrown: str, name: str, message: str
) -> None:
    with pytest.raises(ivm.JSError) as info:
        await context.eval(f"throw {thrown}")
    assert (info.value.name, info.value.message) == (name, message)
    assert await context.eval("'usable'") == "usable"


@pytest.mark.anyio
async def test_js_error_arrives_in_the_awaiting_task(context: ivm.Context) -> None:
    caught: dict[int, BaseException] = {}

    async def task(i: int) -> None:
        try:
            await context.eval(f"if ({i} % 2) throw new Error('odd ' + {i}); {i}")
        except ivm.JSError as exc:
            caught[i] = exc

    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(task, i)
    assert sorted(caught) == [1, 3, 5]
    for i, exc in caught.items():
        assert isinstance(exc, ivm.JSError)
        assert exc.message == f"odd {i}"


@pytest.mark.anyio
async def test_non_primitive_result_is_a_transfer_error(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    with pytest.raises(ivm.TransferError, match="Object"):
        await context.eval("globalThis.o = {a: 1}; o")
    with pytest.raises(ivm.TransferError):
        await (await isolate.compile_script("[1, 2]")).run(context)
    assert await context.eval("o.a") == 1


@pytest.mark.anyio
async def test_bad_arguments_raise_type_and_value_errors(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    script = isolate.compile_script_sync("1")
    bad: list[tuple[type[Exception], Callable[[], Awaitable[object]]]] = [
        (TypeError, lambda: context.eval(b"1")),  # type: ignore[arg-type]
        (TypeError, lambda: context.eval(None)),  # type: ignore[arg-type]
        (ValueError, lambda: context.eval("1", timeout=0)),
        (ValueError, lambda: context.eval("1", timeout=-1)),
        (ValueError, lambda: context.eval("1", timeout=math.nan)),
        (TypeError, lambda: context.eval("1", timeout="1")),  # type: ignore[arg-type]
        (TypeError, lambda: context.eval("1", filename=b"x.js")),  # type: ignore[arg-type]
        (TypeError, lambda: context.eval("1", line_offset=1.5)),  # type: ignore[arg-type]
        (ValueError, lambda: context.eval("1", column_offset=2**40)),
        (TypeError, lambda: isolate.compile_script(b"1")),  # type: ignore[arg-type]
        (TypeError, lambda: isolate.compile_script("1", filename=1)),  # type: ignore[arg-type]
        (ValueError, lambda: isolate.compile_script("1", line_offset=-(2**40))),
        (TypeError, lambda: script.run(None)),  # type: ignore[arg-type]
        (TypeError, lambda: script.run(isolate)),  # type: ignore[arg-type]
        (ValueError, lambda: script.run(context, timeout=0)),
        (TypeError, lambda: script.run(context, timeout=True)),
    ]
    for kind, make in bad:
        with pytest.raises(kind):
            await make()
    assert await context.eval("'fine'") == "fine"


@pytest.mark.anyio
async def test_script_of_another_isolate_is_rejected(isolate: ivm.Isolate) -> None:
    with ivm.Isolate(memory_limit=64) as other:
        script = await other.compile_script("1")
        context = await isolate.create_context()
        with pytest.raises(ValueError):
            await script.run(context)
        assert await script.run(await other.create_context()) == 1
        assert await context.eval("2") == 2


# --- timeouts ----------------------------------------------------------------------------

@pytest.mark.anyio
async def test_eval_timeout_raises_and_isolate_stays_usable(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    await context.eval("globalThis.before = 'kept'")
    with anyio.fail_after(SANITY):
        with pytest.raises(ivm.TimeoutError) as info:
            await context.eval(BUSY_FOREVER, timeout=0.05)
    assert isinstance(info.value, builtins.TimeoutError)
    assert str(info.value) == "Script execution timed out."
    assert not isolate.is_disposed
    assert await context.eval("before") == "kept"
    assert context.eval_sync("1 + 1") == 2


@pytest.mark.anyio
async def test_script_run_timeout(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = await isolate.compile_script(BUSY_FOREVER)
    with anyio.fail_after(SANITY):
        with pytest.raises(ivm.TimeoutError):
            await script.run(context, timeout=0.05)
    assert await (await isolate.compile_script("'after'")).run(context) == "after"


@pytest.mark.anyio
async def test_unexpired_timeout_does_not_stop_a_later_call(context: ivm.Context) -> None:
    assert await context.eval("1", timeout=0.1) == 1
    assert await context.eval(
        "const t0 = Date.now(); while (Date.now() - t0 < 250) {}; 'done'"
    ) == "done"


# --- order and concurrency ---------------------------------------------------------------

@pytest.mark.anyio
async def test_calls_run_in_the_order_they_were_made(context: ivm.Context) -> None:
    calls: list[Call] = []
    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            for i in range(200):
                code = f'globalThis.log = (globalThis.log || "") + "{i},"; {i}'
                calls.append(await start_call(tg, lambda code=code: context.eval(code)))
    assert [c.error for c in calls] == [None] * 200
    assert [c.value for c in calls] == list(range(200))
    assert await context.eval("log") == "".join(f"{i}," for i in range(200))


@pytest.mark.anyio
async def test_order_follows_calls_when_tasks_start_in_any_order(context: ivm.Context) -> None:
    # start_soon alone: the backend picks the order the tasks run (trio shuffles it), and
    # each call must then run in the order it was made.
    made: list[int] = []
    results: dict[int, object] = {}

    async def task(i: int) -> None:
        made.append(i)  # nothing waits between this and the call
        results[i] = await context.eval(f'globalThis.log = (globalThis.log || "") + "{i},"; {i}')

    with anyio.fail_after(SANITY):
        for batch in range(0, 200, 25):  # each batch is another chance for a shuffle
            async with anyio.create_task_group() as tg:
                for i in range(batch, batch + 25):
                    tg.start_soon(task, i)
    assert sorted(made) == list(range(200))
    assert results == {i: i for i in range(200)}
    assert await context.eval("log") == "".join(f"{i}," for i in made)


@pytest.mark.anyio
async def test_async_calls_do_not_interleave(context: ivm.Context) -> None:
    await context.eval("globalThis.n = 0")

    async def bump() -> None:
        for _ in range(10):
            # A read-modify-write that would lose updates if calls interleaved.
            await context.eval("{ const v = n; for (let i = 0; i < 1000; i++); n = v + 1; }")

    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(bump)
    assert await context.eval("n") == 200


@pytest.mark.anyio
async def test_thousand_concurrent_evals_across_eight_isolates() -> None:
    isolates = [ivm.Isolate(memory_limit=64) for _ in range(8)]
    try:
        contexts = [iso.create_context_sync() for iso in isolates]
        for k, ctx in enumerate(contexts):
            ctx.eval_sync(f"globalThis.id = {k}")
        results: dict[int, object] = {}

        async def task(i: int) -> None:
            results[i] = await contexts[i % 8].eval(f"id * 10000 + {i}")

        with anyio.fail_after(SANITY):
            async with anyio.create_task_group() as tg:
                for i in range(1000):
                    tg.start_soon(task, i)
        assert results == {i: (i % 8) * 10000 + i for i in range(1000)}
    finally:
        for iso in isolates:
            iso.dispose()


@pytest.mark.anyio
async def test_isolates_run_concurrently(isolate: ivm.Isolate) -> None:
    # A call waiting on a busy isolate does not hold up a call on another one.
    with ivm.Isolate(memory_limit=64) as other:
        quick = await other.create_context()
        busy = await isolate.create_context()
        with anyio.fail_after(SANITY):
            async with anyio.create_task_group() as tg:
                stuck = await start_call(tg, lambda: busy.eval(BUSY_FOREVER, timeout=SANITY))
                assert await quick.eval("'other isolate'") == "other isolate"
                while not stuck.over.is_set():  # it may not have started running yet
                    isolate.terminate()
                    await anyio.sleep(0.01)
            assert await busy.eval("1") == 1
        assert isinstance(stuck.error, ivm.TerminatedError), repr(stuck.error)


# --- cancellation ------------------------------------------------------------------------

@pytest.mark.anyio
async def test_cancel_stops_js_and_isolate_stays_usable(context: ivm.Context) -> None:
    started = time.monotonic()
    with anyio.move_on_after(0.05) as scope:
        await context.eval(BUSY_FOREVER)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 5
    with anyio.fail_after(SANITY):  # had the loop kept running, this would wait behind it
        assert await context.eval("1 + 1") == 2


@pytest.mark.anyio
async def test_cancel_a_script_run(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = await isolate.compile_script(BUSY_FOREVER)
    started = time.monotonic()
    with anyio.move_on_after(0.05) as scope:
        await script.run(context)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 5
    with anyio.fail_after(SANITY):
        assert await context.eval("'after'") == "after"
    assert not context.isolate.is_disposed


@pytest.mark.anyio
async def test_fail_after_raises_builtin_timeout_error(context: ivm.Context) -> None:
    with pytest.raises(TimeoutError) as info:
        with anyio.fail_after(0.05):
            await context.eval(BUSY_FOREVER)
    assert type(info.value) is builtins.TimeoutError  # anyio's, not ivm.TimeoutError
    with anyio.fail_after(SANITY):
        assert await context.eval("3") == 3


@pytest.mark.anyio
async def test_call_in_a_cancelled_scope_is_cancelled(context: ivm.Context) -> None:
    # trio's checkpoint rule: the call checks for cancellation even if the JS is instant.
    with anyio.CancelScope() as scope:
        scope.cancel()
        await context.eval("globalThis.x = 1")
    assert scope.cancelled_caught
    with anyio.fail_after(SANITY):
        assert await context.eval("2") == 2


@pytest.mark.anyio
async def test_hundred_cancellations_leave_no_threads_behind(
    context: ivm.Context, wait_until_async: Callable[..., Awaitable[bool]]
) -> None:
    baseline = threading.active_count()
    with anyio.fail_after(SANITY):
        for _ in range(100):
            with anyio.move_on_after(0.01) as scope:
                await context.eval(BUSY_FOREVER)
            assert scope.cancelled_caught
        assert await context.eval("'still here'") == "still here"
    await wait_until_async(lambda: threading.active_count() <= baseline, 10)
    assert threading.active_count() <= baseline, [t.name for t in threading.enumerate()]


@pytest.mark.anyio
async def test_cancelling_a_queued_call_removes_it(context: ivm.Context) -> None:
    running_scope = anyio.CancelScope()
    queued_scope = anyio.CancelScope()
    queued_over = anyio.Event()

    async def running(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with running_scope:
            task_status.started()
            await context.eval(BUSY_FOREVER)

    async def queued(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with queued_scope:
                task_status.started()
                await context.eval("globalThis.queuedRan = true")
        finally:
            queued_over.set()

    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            await tg.start(running)
            await tg.start(queued)  # behind an endless loop: it cannot have run yet
            queued_scope.cancel()
            await queued_over.wait()  # its cancellation is done before the loop ends
            running_scope.cancel()
        # Had the queued call stayed in the queue, it would run before this one.
        assert await context.eval("typeof globalThis.queuedRan") == "undefined"
    assert queued_scope.cancelled_caught
    assert running_scope.cancelled_caught


@pytest.mark.anyio
async def test_cancelling_some_queued_calls_keeps_the_others(context: ivm.Context) -> None:
    scopes = [anyio.CancelScope() for _ in range(10)]
    calls: list[Call] = []

    def make(i: int) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            with scopes[i]:
                return await context.eval(f'globalThis.log = (globalThis.log || "") + "{i},"; {i}')
            return "cancelled"
        return call

    head_scope = anyio.CancelScope()

    async def endless() -> object:
        with head_scope:
            return await context.eval(BUSY_FOREVER)
        return "cancelled"

    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            head = await start_call(tg, endless)
            for i in range(10):
                calls.append(await start_call(tg, make(i)))
            for i in range(0, 10, 2):
                scopes[i].cancel()
            for i in range(0, 10, 2):
                await calls[i].over.wait()
            head_scope.cancel()
        assert await context.eval("log") == "1,3,5,7,9,"
    assert head.value == "cancelled"
    assert [c.value for c in calls] == [i if i % 2 else "cancelled" for i in range(10)]


# --- disposal ----------------------------------------------------------------------------

@pytest.mark.anyio
async def test_awaiting_on_a_disposed_isolate_raises_disposed(isolate: ivm.Isolate) -> None:
    context = await isolate.create_context()
    script = await isolate.compile_script("1")
    isolate.dispose()
    with pytest.raises(ivm.DisposedError):
        await context.eval("1")
    with pytest.raises(ivm.DisposedError):
        await isolate.create_context()
    with pytest.raises(ivm.DisposedError):
        await isolate.compile_script("1")
    with pytest.raises(ivm.DisposedError):
        await script.run(context)


@pytest.mark.anyio
async def test_released_context_and_script_raise_disposed(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    script = await isolate.compile_script("1")
    script.release()
    with pytest.raises(ivm.DisposedError):
        await script.run(context)
    other = await isolate.create_context()
    other.release()
    with pytest.raises(ivm.DisposedError):
        await other.eval("1")
    assert await context.eval("2") == 2


@pytest.mark.anyio
async def test_dispose_fails_running_and_queued_calls() -> None:
    isolate = ivm.Isolate(memory_limit=64)
    context = isolate.create_context_sync()
    script = isolate.compile_script_sync(BUSY_FOREVER)
    calls: list[Call] = []

    async def disposer() -> None:
        await anyio.sleep(0.05)
        isolate.dispose()

    try:
        with anyio.fail_after(SANITY):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    calls.append(await start_call(tg, lambda: context.eval(BUSY_FOREVER)))
                calls.append(await start_call(tg, lambda: script.run(context)))
                calls.append(await start_call(tg, isolate.create_context))
                calls.append(await start_call(tg, lambda: isolate.compile_script("1")))
                tg.start_soon(disposer)
    finally:
        isolate.dispose()  # idempotent; stops the loops should the test fail
    for call in calls:
        assert not call.returned
        assert isinstance(call.error, ivm.DisposedError), repr(call.error)
    assert isolate.is_disposed
    with pytest.raises(ivm.DisposedError):
        await context.eval("1")


@pytest.mark.anyio
async def test_memory_limit_in_async_eval_disposes_isolate() -> None:
    isolate = ivm.Isolate(memory_limit=16)
    context = await isolate.create_context()
    with anyio.fail_after(SANITY):
        with pytest.raises(ivm.MemoryLimitError):
            await context.eval("const a = []; while (true) a.push(new Array(1e5).fill(1))")
    assert isolate.is_disposed
    with pytest.raises(ivm.DisposedError):
        await context.eval("1")


# --- without an event loop ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["eval", "create_context", "compile_script", "run"])
def test_async_api_without_an_event_loop_raises(
    isolate: ivm.Isolate, context: ivm.Context, method: str
) -> None:
    script = isolate.compile_script_sync("1")
    makers: dict[str, Callable[[], Any]] = {
        "eval": lambda: context.eval("1"),
        "create_context": isolate.create_context,
        "compile_script": lambda: isolate.compile_script("1"),
        "run": lambda: script.run(context),
    }
    coro = makers[method]()
    try:
        with pytest.raises(ivm.IvmError, match="event loop"):
            coro.send(None)
    finally:
        coro.close()
    assert context.eval_sync("2") == 2


# --- sync calls next to async work -------------------------------------------------------

@pytest.mark.anyio
async def test_sync_call_on_an_isolate_busy_with_async_work(context: ivm.Context) -> None:
    with anyio.fail_after(SANITY):
        async with anyio.create_task_group() as tg:
            busy = await start_call(
                tg, lambda: context.eval("globalThis.phase = 'async'; while (true) {}", timeout=0.2)
            )
            await anyio.sleep(0.02)
            result = await anyio.to_thread.run_sync(context.eval_sync, "'sync ' + 6 * 7")
    assert result == "sync 42"
    assert isinstance(busy.error, ivm.TimeoutError), repr(busy.error)
    assert await context.eval("phase") == "async"


# --- eval_ignored / run_ignored ----------------------------------------------------------

def test_eval_ignored_returns_none_and_runs_in_order_without_an_event_loop(
    context: ivm.Context, wait_until: Callable[..., bool]
) -> None:
    expected = "".join(f"{i}," for i in range(100))
    for i in range(100):
        code = f'globalThis.log = (globalThis.log || "") + "{i},"'
        assert context.eval_ignored(code) is None
    seen: list[str] = []

    def complete() -> bool:
        log = context.eval_sync("globalThis.log || ''")
        assert isinstance(log, str)
        seen.append(log)
        return log == expected

    assert wait_until(complete), seen[-1]
    assert all(expected.startswith(log) for log in seen), "ran out of order"


def test_run_ignored_and_eval_ignored_share_one_queue(
    isolate: ivm.Isolate, context: ivm.Context, wait_until: Callable[..., bool]
) -> None:
    script = isolate.compile_script_sync('globalThis.log = (globalThis.log || "") + "s,"')
    for i in range(20):
        assert context.eval_ignored(f'globalThis.log = (globalThis.log || "") + "{i},"') is None
        assert script.run_ignored(context) is None
    expected = "".join(f"{i},s," for i in range(20))
    assert wait_until(lambda: context.eval_sync("globalThis.log || ''") == expected), (
        context.eval_sync("globalThis.log || ''")
    )


def test_run_ignored_keeps_a_dropped_script_until_it_ran(
    isolate: ivm.Isolate,
    context: ivm.Context,
    ignored_errors: list[BaseException],
    wait_until: Callable[..., bool],
) -> None:
    # Nothing but the queued job refers to the script: dropping the object must not
    # release it under the job.
    isolate.compile_script_sync("globalThis.ran = 'yes'").run_ignored(context)
    gc.collect()
    assert wait_until(lambda: context.eval_sync("globalThis.ran") == "yes" or bool(ignored_errors))
    assert ignored_errors == []


def test_eval_ignored_keeps_a_dropped_context_until_it_ran(
    isolate: ivm.Isolate, ignored_errors: list[BaseException], wait_until: Callable[..., bool]
) -> None:
    isolate.create_context_sync().eval_ignored("throw new Error('the dropped context ran')")
    gc.collect()
    assert wait_until(lambda: bool(ignored_errors))
    [exc] = ignored_errors
    assert isinstance(exc, ivm.JSError), repr(exc)
    assert exc.message == "the dropped context ran"


def test_ignored_error_goes_to_the_handler(
    context: ivm.Context, ignored_errors: list[BaseException], wait_until: Callable[..., bool]
) -> None:
    assert context.eval_ignored("throw new TypeError('ignored boom')") is None
    assert wait_until(lambda: len(ignored_errors) >= 1)
    [exc] = ignored_errors
    assert isinstance(exc, ivm.JSError)
    assert (exc.name, exc.message) == ("TypeError", "ignored boom")
    assert context.eval_sync("'usable'") == "usable"


def test_ignored_timeout_and_script_error_go_to_the_handler(
    isolate: ivm.Isolate,
    context: ivm.Context,
    ignored_errors: list[BaseException],
    wait_until: Callable[..., bool],
) -> None:
    throwing = isolate.compile_script_sync("throw new RangeError('from a script')")
    endless = isolate.compile_script_sync(BUSY_FOREVER)
    context.eval_ignored(BUSY_FOREVER, timeout=0.05)
    throwing.run_ignored(context)
    endless.run_ignored(context, timeout=0.05)
    assert wait_until(lambda: len(ignored_errors) >= 3)
    first, second, third = ignored_errors
    assert isinstance(first, ivm.TimeoutError)
    assert isinstance(second, ivm.JSError) and second.message == "from a script"
    assert isinstance(third, ivm.TimeoutError)
    assert context.eval_sync("4") == 4


def test_ignored_error_is_logged(
    context: ivm.Context, ivm_log: _Records, wait_until: Callable[..., bool]
) -> None:
    context.eval_ignored("throw new Error('logged boom')")
    assert wait_until(lambda: bool(ivm_log.mentioning("logged boom"))), ivm_log.records
    record = ivm_log.mentioning("logged boom")[0]
    assert record.levelno >= logging.WARNING


def test_ignored_errors_are_logged_and_handled_both(
    context: ivm.Context,
    ivm_log: _Records,
    ignored_errors: list[BaseException],
    wait_until: Callable[..., bool],
) -> None:
    context.eval_ignored("throw new Error('twice')")
    assert wait_until(lambda: bool(ignored_errors) and bool(ivm_log.mentioning("twice")))
    assert isinstance(ignored_errors[0], ivm.JSError)


def test_ignored_error_handler_none_resets(
    context: ivm.Context, ivm_log: _Records, wait_until: Callable[..., bool]
) -> None:
    seen: list[BaseException] = []
    ivm.set_ignored_error_handler(seen.append)
    ivm.set_ignored_error_handler(None)
    context.eval_ignored("throw new Error('after reset')")
    # The log record shows the error was dealt with; the removed handler must not see it.
    assert wait_until(lambda: bool(ivm_log.mentioning("after reset")))
    assert seen == []


def test_failing_ignored_error_handler_does_not_break_the_isolate(
    context: ivm.Context, wait_until: Callable[..., bool]
) -> None:
    calls: list[BaseException] = []

    def handler(exc: BaseException) -> None:
        calls.append(exc)
        raise RuntimeError("handler bug")

    ivm.set_ignored_error_handler(handler)
    try:
        context.eval_ignored("throw 1")
        context.eval_ignored("globalThis.after = 'ran'")
        assert wait_until(lambda: context.eval_sync("globalThis.after") == "ran")
        assert wait_until(lambda: len(calls) == 1)
    finally:
        ivm.set_ignored_error_handler(None)


def test_ignored_calls_validate_arguments_at_once(
    isolate: ivm.Isolate, context: ivm.Context, ignored_errors: list[BaseException]
) -> None:
    script = isolate.compile_script_sync("1")
    with pytest.raises(TypeError):
        context.eval_ignored(b"1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        context.eval_ignored("1", timeout=0)
    with pytest.raises(TypeError):
        context.eval_ignored("1", filename=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        script.run_ignored(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        script.run_ignored(context, timeout=-1)


@pytest.mark.anyio
async def test_eval_ignored_inside_async_code_is_queued_before_later_calls(
    context: ivm.Context,
) -> None:
    assert context.eval_ignored("globalThis.x = 'set by ignored'") is None
    assert await context.eval("x") == "set by ignored"


# --- leaks -------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_async_calls_do_not_leak(no_leaks: None) -> None:
    isolate = ivm.Isolate(memory_limit=64)
    context = await isolate.create_context()
    script = await isolate.compile_script("'s'.repeat(100)")
    for code in ("1", "'s'", "10n**100n", "undefined", "({})", "throw new Error('x')"):
        try:
            await context.eval(code)
        except ivm.IvmError:
            pass
    assert await script.run(context) == "s" * 100
    with anyio.fail_after(SANITY):
        with anyio.move_on_after(0.01):
            await context.eval(BUSY_FOREVER)
        with pytest.raises(ivm.TimeoutError):
            await context.eval(BUSY_FOREVER, timeout=0.01)
        context.eval_ignored("1")
        assert await context.eval("0") == 0
    script.release()
    context.release()
    isolate.dispose()


# --- the example -------------------------------------------------------------------------

def run_example(*args: str) -> str:
    """The job runner's output; it must exit with status 0."""
    # The child runs beside the imported ivm package (the source tree's ivm/ lacks the
    # compiled parts); the script's own directory, docs/examples, goes first on sys.path.
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=Path(ivm.__file__).parent.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_trio_job_runner_example() -> None:
    out = run_example()
    for name, failure in [
        ("infinite loop", "TimeoutError"),
        ("memory hog", "MemoryLimitError"),
        ("syntax error", "SyntaxError"),
        ("throw", "RangeError: user code gave up"),
    ]:
        assert re.search(rf"^job +\d+ +{name} +FAIL .*{failure}", out, re.M), out
    assert re.search(r"^job +\d+ +sum to 1000 +ok .*500500$", out, re.M), out
    assert re.search(r"^job +\d+ +fresh globals +ok .*'undefined'$", out, re.M), out
    assert re.search(r"^isolate \d+: it was disposed by its memory limit; replaced it$", out, re.M), out
    assert len(re.findall(r"^job ", out, re.M)) == 12, out
    assert re.search(r"^summary: 12 jobs, 8 ok, 4 failed, 1 isolate recreated", out, re.M), out


def test_trio_job_runner_example_isolated_replaces_crashed_workers() -> None:
    """--isolated: a job that aborts V8 costs one worker, which the pool replaces; the
    other jobs, the later one included, run as inline."""
    out = run_example("--isolated")
    assert re.search(
        r"^job +\d+ +engine abort +FAIL .*IsolateCrashedError: worker process \d+ was killed "
        r"by signal \d+", out, re.M), out  # fmt: skip
    assert re.search(r"^isolate \d+: its worker process crashed; replaced it$", out, re.M), out
    assert re.search(r"^job +\d+ +after the abort +ok .*'still serving'$", out, re.M), out
    assert re.search(r"^job +\d+ +memory hog +FAIL .*MemoryLimitError", out, re.M), out
    assert re.search(r"^summary: 14 jobs, 9 ok, 5 failed, 2 isolates recreated", out, re.M), out
