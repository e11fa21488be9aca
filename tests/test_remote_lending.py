"""A worker lends its channel's reading to the pool thread that runs a synchronous call
(libivm/worker_follow.cc; docs/process.md, "Life of a worker"): after a loop of short
synchronous calls, the next frames are read by that thread, not the worker's reader. What
the reader must still see while a lent call runs long or waits (TERMINATE, CANCEL, host
callbacks' replies, other threads' calls) and the order of frames must not suffer."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

import ivm

WARM = 3000  # short synchronous calls in a row: the follower reads the next ones


def _warm(ctx: ivm.Context) -> None:
    for i in range(WARM):
        assert ctx.eval_sync(f"{i} + 1") == i + 1


def _run_in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_terminate_reaches_a_long_call_after_a_loop_of_short_ones() -> None:
    with ivm.Isolate(process="isolated") as iso:
        ctx = iso.create_context_sync()
        _warm(ctx)
        started = threading.Event()

        def long_call() -> Any:
            started.set()
            return ctx.eval_sync("for (;;) {}")

        t, out = _run_in_thread(long_call)
        started.wait()
        # Without the reader taking the reading back, TERMINATE stays unread: a hang.
        for _ in range(200):
            iso.terminate()
            t.join(0.05)
            if not t.is_alive():
                break
        assert not t.is_alive()
        assert isinstance(out[0], ivm.TerminatedError)
        assert ctx.eval_sync("6 * 7") == 42


def test_timeouts_and_errors_inside_a_loop_of_short_calls() -> None:
    with ivm.Isolate(process="isolated") as iso:
        ctx = iso.create_context_sync()
        for i in range(300):
            assert ctx.eval_sync(f"{i} * 2") == i * 2
            if i % 50 == 0:
                with pytest.raises(ivm.TimeoutError):
                    ctx.eval_sync("for (;;) {}", timeout=0.02)
                with pytest.raises(ivm.JSError, match="boom"):
                    ctx.eval_sync("throw new Error('boom')")
        script = iso.compile_script_sync("globalThis.n = (globalThis.n || 0) + 1")
        assert [script.run_sync(ctx) for _ in range(500)] == list(range(1, 501))
        glob = ctx.global_
        for i in range(500):
            glob.set_sync("x", i)
            assert glob.get_sync("x") == i


def test_host_callbacks_and_nested_calls_in_a_loop_of_sync_calls() -> None:
    with ivm.Isolate(process="isolated") as iso:
        ctx = iso.create_context_sync()
        seen: list[int] = []

        def record(x: int) -> int:
            seen.append(x)
            return ctx.eval_sync(f"{x} * 3")  # nested in the worker's waiting call

        ctx.eval_closure_sync("globalThis.record = $0", [ivm.Callback(record)])
        _warm(ctx)
        for i in range(1000):
            if i % 3 == 0:
                assert ctx.eval_sync(f"record({i}) + 1") == i * 3 + 1
            else:
                assert ctx.eval_sync(f"{i} - 1") == i - 1
        assert seen == list(range(0, 1000, 3))


def test_threads_of_one_worker_each_loop_sync_calls() -> None:
    pg = ivm.ProcessGroup()
    isolates = [ivm.Isolate(group=pg) for _ in range(2)]
    try:
        contexts = [iso.create_context_sync() for iso in isolates] * 2   # two threads each

        def loop(k: int) -> int:
            ctx = contexts[k]
            for i in range(2000):
                if ctx.eval_sync(f"{i} + {k}") != i + k:
                    return -1
            return k

        runs = [_run_in_thread(lambda k=k: loop(k)) for k in range(len(contexts))]
        for t, _ in runs:
            t.join(120)
        assert [out[0] for _, out in runs] == list(range(len(contexts)))
    finally:
        for iso in isolates:
            iso.dispose()
        pg.dispose()


@pytest.mark.anyio
async def test_awaited_calls_beside_a_thread_of_sync_calls() -> None:
    with ivm.Isolate(process="isolated") as iso:
        ctx = iso.create_context_sync()
        t, out = _run_in_thread(lambda: [ctx.eval_sync(f"{i}") for i in range(3000)])
        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await ctx.eval(f"{i} * 10"))

        for _ in range(10):
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
        t.join(120)
        assert out[0] == list(range(3000))
        assert sorted(results) == sorted(list(range(0, 500, 10)) * 10)


@pytest.mark.anyio
async def test_cancelling_an_awaited_call_after_a_loop_of_sync_calls() -> None:
    with ivm.Isolate(process="isolated") as iso:
        ctx = iso.create_context_sync()
        _warm(ctx)
        with anyio.move_on_after(0.2) as scope:
            await ctx.eval("while (true) {}")
        assert scope.cancelled_caught
        assert ctx.eval_sync("1 + 1") == 2


def test_a_promise_settled_by_a_timer_in_a_loop_of_sync_calls() -> None:
    with ivm.Isolate(process="isolated") as iso:
        ctx = iso.create_context_sync(host=ivm.HostBasics(timers=True))
        _warm(ctx)
        for i in range(20):
            code = f"new Promise(r => setTimeout(() => r({i}), 2))"
            assert ctx.eval_sync(code, promise=True) == i
            assert ctx.eval_sync(f"{i} + 1") == i + 1


def test_a_cancel_sent_while_a_followers_call_is_decoded_stops_that_call(
        run_child: Any) -> None:  # fmt: skip
    """Ctrl-C while the worker still decodes a call's large argument (its memfd mapped, its
    job not yet submitted), read by a follower (another thread's loop of short calls keeps
    one): the CANCEL must stop that call. A follower once lent the reading before it
    decoded the call; the reader took the reading back after 1-2 ms, read the CANCEL of a
    call that did not run yet, and the call then ran for ever (4 runs in 7)."""
    proc = run_child(r"""
        import os, signal, threading, time
        # Python's handling even when started with SIGINT ignored (a background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import ivm
        iso = ivm.Isolate(process="isolated", memory_limit=1024)
        ctx, ctx2 = iso.create_context_sync(), iso.create_context_sync()
        me = os.getpid()
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and os.path.exists(
            f"/proc/{p}/stat") and int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == me]
        def mapped():
            for w in workers:
                try:
                    if "memfd:" in open(f"/proc/{w}/maps").read():
                        return True
                except OSError:
                    pass
            return False
        assert not mapped()
        stop = False
        def loop():
            while not stop:
                assert ctx2.eval_sync("1") == 1
        threading.Thread(target=loop, daemon=True).start()
        big = "x" * 150_000_000
        time.sleep(0.05)
        def kick():
            while not mapped():
                time.sleep(0.0002)
            time.sleep(0.003)   # past the reader's 1-2 ms look
            os.kill(me, signal.SIGINT)
        threading.Thread(target=kick, daemon=True).start()
        try:
            ctx.eval_closure_sync("for (;;) {}", [big])
        except KeyboardInterrupt:
            stop = True
            print("interrupted", flush=True)
            os._exit(0)
    """, timeout=30)
    assert proc.stdout.split() == ["interrupted"], proc.stderr[-2000:]
