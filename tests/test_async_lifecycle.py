"""Awaited calls yield to the loop; loops may end with calls pending."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import ivm


@pytest.mark.anyio
async def test_a_loop_of_awaited_calls_lets_other_tasks_run(context: ivm.Context) -> None:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0)
        start = ticks
        for _ in range(200):
            assert await context.eval("1 + 1") == 2
        done = True
    # Each awaited call is a schedule point: the ticker ran alongside.
    assert ticks - start >= 100


@pytest.mark.anyio
async def test_a_timeout_interrupts_a_loop_of_fast_calls(context: ivm.Context) -> None:
    calls = 0
    with anyio.move_on_after(0.2):
        while True:
            await context.eval("1")
            calls += 1
    assert calls > 0
    assert await context.eval("2") == 2


CLOSING_LOOP = r"""
import asyncio, gc, sys, time, warnings
import ivm

warnings.simplefilter("ignore")  # asyncio complains about the abandoned task: expected
isolate = ivm.Isolate()
context = isolate.create_context_sync()

loop = asyncio.new_event_loop()
task = loop.create_task(context.eval("while (true) {}", timeout=0.3))
loop.run_until_complete(asyncio.sleep(0.05))   # the call is running now
loop.close()                                   # ... and its loop goes away
del task, loop
gc.collect()
time.sleep(0.5)                                # the job times out with nobody waiting
gc.collect()

async def again():
    return await context.eval("6 * 7")

print("result", asyncio.run(again()), flush=True)
"""


def test_an_event_loop_closing_with_a_pending_call_does_not_crash() -> None:
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", CLOSING_LOOP],
        cwd=Path(ivm.__file__).parent.parent,  # the installed ivm, not the source tree
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "result 42" in proc.stdout


def test_trio_run_ending_with_cancelled_calls_leaves_ivm_usable() -> None:
    import trio

    isolate = ivm.Isolate()
    context = isolate.create_context_sync()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(context.eval, "while (true) {}")
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(main)

    async def again() -> object:
        return await context.eval("6 * 7")

    assert trio.run(again) == 42
    isolate.dispose()


@pytest.mark.anyio
async def test_async_heap_statistics_wait_in_line_without_blocking_the_loop(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    ticks = 0
    stats: list[ivm.HeapStatistics] = []

    async def busy() -> None:
        with pytest.raises(ivm.TimeoutError):
            await context.eval("while (true) {}", timeout=0.2)

    async def read() -> None:
        await anyio.sleep(0.02)  # queued behind the busy call
        stats.append(await isolate.get_heap_statistics())

    async def ticker() -> None:
        nonlocal ticks
        while not stats:
            ticks += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(busy)
        tg.start_soon(read)
        tg.start_soon(ticker)
    assert stats[0].heap_size_limit > 0
    assert ticks >= 5  # the loop kept running while the isolate was busy


def test_the_process_exits_while_a_pool_thread_runs_endless_javascript(
    busy_exit_env: dict[str, str],
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import time, ivm\n"
        "isolate = ivm.Isolate()\n"
        "context = isolate.create_context_sync()\n"
        "context.eval_ignored('while (true) {}')\n"
        "time.sleep(0.2)\n"
        "print('exiting', flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(ivm.__file__).parent.parent,  # the installed ivm, not the source tree
        capture_output=True,
        text=True,
        timeout=60,
        env=busy_exit_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stdout


def test_the_process_exits_while_pool_threads_are_in_host_callbacks(
    busy_exit_env: dict[str, str],
) -> None:
    """At exit, CPython ends a thread that wants its lock back with pthread_exit (a forced
    unwind). A pool thread in a host Callback saw that unwind swallowed by a catch (...)
    in libivm, and glibc aborted ("FATAL: exception not rethrown", exit 134) in 9 runs of
    10. Such threads are now parked until the process is gone (libivm/host_exit.h)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import asyncio, time, ivm\n"
        "contexts = [ivm.Isolate().create_context_sync() for _ in range(2)]\n"
        "for c in contexts:\n"
        "    c.global_.set_sync('f', ivm.Callback(lambda: time.sleep(0.3)))\n"
        "loop = asyncio.new_event_loop()\n"
        "async def start():\n"
        "    calls = [asyncio.ensure_future(c.eval('for (;;) f()')) for c in contexts]\n"
        "    await asyncio.sleep(0.05)\n"
        "    return calls\n"
        "pending = loop.run_until_complete(start())\n"
        "print('exiting', flush=True)\n"
    )
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(ivm.__file__).parent.parent,  # the installed ivm, not the source tree
            capture_output=True,
            text=True,
            timeout=60,
            env=busy_exit_env,
        )
        assert proc.returncode == 0, proc.stderr
        assert "exiting" in proc.stdout
        assert "FATAL" not in proc.stderr and "runtime error" not in proc.stderr


@pytest.mark.anyio
async def test_the_completion_fd_is_quiet_once_every_call_is_done(context: ivm.Context) -> None:
    """The queue's eventfd is written after its lock is released (libivm/completion_queue.cc),
    so a pop may empty the queue before that write lands: the next pop must read it again, or
    the fd would stay readable with nothing to pop and the loop would spin on it. Lone calls,
    bursts and calls on a second isolate (another pool thread) race their pushes with pops."""
    import select

    import sniffio

    from ivm import _async

    other = ivm.Isolate()
    try:
        other_context = await other.create_context()
        for round_ in range(200):
            if round_ % 2:
                assert await context.eval("1+1") == 2
            else:
                results: list[object] = []

                async def one(c: ivm.Context) -> None:
                    results.append(await c.eval("2+2"))

                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(one, context if i % 2 else other_context)
                assert results == [4] * 8
        if sniffio.current_async_library() == "trio":
            fd = _async._trio_dispatcher().fd
        else:
            import asyncio

            fd = _async._asyncio_dispatcher(asyncio.get_running_loop()).fd
        for _ in range(3):  # a write still in flight lands, and its reader runs
            await anyio.sleep(0.01)
        assert select.select([fd], [], [], 0)[0] == []
    finally:
        other.dispose()


def _dispatcher() -> object:
    import sniffio

    from ivm import _async

    if sniffio.current_async_library() == "trio":
        return _async._trio_dispatcher()
    import asyncio

    return _async._asyncio_dispatcher(asyncio.get_running_loop())


@pytest.mark.anyio
async def test_a_lone_call_polls_yielding_and_a_late_poll_backs_off(
    context: ivm.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone awaited call first polls the completion queue on the loop's thread, yielding
    the core between checks (a pool thread sharing it runs the call meanwhile). A poll that
    found the outcome only after its deadline (the yield gave the core away for long) counts
    as failed: the next lone calls skip the poll."""
    import time

    from ivm import _async

    assert await context.eval("1+1") == 2  # the loop's dispatcher exists
    d: Any = _dispatcher()
    yields: list[int] = []

    def slow_yield() -> None:
        yields.append(1)
        time.sleep(0.02)  # the core went elsewhere: the call (about 2 ms) ends meanwhile

    monkeypatch.setattr(_async, "_sched_yield", slow_yield, raising=False)
    # A poll of 5 ms (not 15 µs): on a loaded machine the loop's thread can lose the core
    # for longer than 15 µs before its first check, and the poll then ends without yielding.
    # The 20 ms yield still overshoots it.
    monkeypatch.setattr(_async, "_POLL_NS", 5_000_000)
    d.skip_polls = d.poll_backoff = 0
    code = "(() => { const t = Date.now(); while (Date.now() - t < 2) {} return 7; })()"
    assert await context.eval(code) == 7
    assert yields  # it yielded between checks
    assert d.poll_backoff == 1 and d.skip_polls == 1  # and backed off: it ended late
