"""The execution model: jobs that wait for a promise park and hold no thread, and a few
long-running jobs do not starve other isolates' jobs (docs/ARCHITECTURE.md, "Execution
model")."""

from __future__ import annotations

import os
import threading
import time

import anyio
import pytest

import ivm

pytestmark = pytest.mark.anyio


async def test_waiting_promises_hold_no_thread() -> None:
    """16 isolates each await a 1-second sleep of the host: with one pool thread held per
    waiting call they would take 16 / (cores + 1) seconds; parked, they take one."""
    isolates = [ivm.Isolate(memory_limit=16) for _ in range(16)]
    try:
        contexts = [await iso.create_context() for iso in isolates]

        async def nap() -> int:
            await anyio.sleep(1)
            return 1

        for ctx in contexts:
            ctx.global_.set_sync("nap", ivm.Callback(nap, mode="async"))
        results: list[object] = []

        async def run(ctx: ivm.Context) -> None:
            results.append(await ctx.eval("nap()", promise=True, timeout=30))

        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            for ctx in contexts:
                tg.start_soon(run, ctx)
        elapsed = time.monotonic() - start
        assert results == [1] * 16
        assert elapsed < 3, f"16 parallel 1 s waits took {elapsed:.2f} s"
    finally:
        for iso in isolates:
            iso.dispose()


async def test_async_callback_can_call_its_isolate_synchronously(context: ivm.Context) -> None:
    """While an awaited call waits for its promise, the isolate takes other calls: an async
    callback's synchronous call into the same isolate returns (it used to hang)."""

    async def on_event() -> object:
        return context.eval_sync("1 + 1", timeout=1)

    context.global_.set_sync("onEvent", ivm.Callback(on_event, mode="async"))
    with anyio.fail_after(10):
        assert await context.eval("onEvent()", promise=True) == 2


async def test_parked_call_keeps_its_order_and_state(context: ivm.Context) -> None:
    """Calls made after a parked one run while it waits; the parked one then finishes
    with the state they left."""
    release = anyio.Event()

    async def gate() -> str:
        await release.wait()
        return "open"

    context.global_.set_sync("gate", ivm.Callback(gate, mode="async"))
    context.eval_sync("globalThis.n = 0")
    results: list[object] = []

    async def parked() -> None:
        results.append(await context.eval("gate().then(v => v + ':' + n)", promise=True))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(parked)
            for _ in range(3):
                await context.eval("n++")
            release.set()
    assert results == ["open:3"]


async def test_parked_call_times_out_and_isolate_stays_usable(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        await context.eval("new Promise(() => {})", promise=True, timeout=0.05)
    assert await context.eval("1 + 1") == 2


async def test_parked_call_is_cancelled(context: ivm.Context) -> None:
    with anyio.move_on_after(0.05) as scope:
        await context.eval("new Promise(() => {})", promise=True)
    assert scope.cancelled_caught
    assert await context.eval("1 + 1") == 2


async def test_parked_call_rejected_by_the_host(context: ivm.Context) -> None:
    async def fail() -> None:
        await anyio.sleep(0.01)
        raise ValueError("no")

    context.global_.set_sync("fail", ivm.Callback(fail, mode="async"))
    with pytest.raises(ValueError, match="no"):
        await context.eval("fail()", promise=True)


async def test_parked_call_fails_when_the_isolate_is_disposed() -> None:
    iso = ivm.Isolate(memory_limit=16)
    ctx = await iso.create_context()

    async def dispose_soon() -> None:
        await anyio.sleep(0.05)
        iso.dispose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(dispose_soon)
        with pytest.raises(ivm.DisposedError):
            await ctx.eval("new Promise(() => {})", promise=True)


async def test_a_looping_reaction_of_a_parked_promise_is_stopped_by_its_timeout(
    context: ivm.Context,
) -> None:
    """The host settles the promise later; its reaction loops forever. That JavaScript runs
    for the parked call and stops at the parked call's deadline."""

    async def later() -> int:
        await anyio.sleep(0.02)
        return 1

    context.global_.set_sync("later", ivm.Callback(later, mode="async"))
    with anyio.fail_after(10):
        with pytest.raises(ivm.TimeoutError):
            await context.eval("later().then(() => { while (true) {} })", promise=True, timeout=0.3)
        assert await context.eval("1 + 1") == 2


async def test_background_work_reaches_a_parked_call(context: ivm.Context) -> None:
    """Work V8 finishes without a host call (an Atomics.waitAsync timeout) settles a parked
    promise."""
    code = (
        "const ia = new Int32Array(new SharedArrayBuffer(16));"
        "Atomics.waitAsync(ia, 0, 0, 20).value"
    )
    with anyio.fail_after(10):
        assert await context.eval(code, promise=True, timeout=5) == "timed-out"


async def test_parked_reference_apply(context: ivm.Context) -> None:
    async def value() -> int:
        await anyio.sleep(0.01)
        return 41

    context.global_.set_sync("value", ivm.Callback(value, mode="async"))
    fn = context.eval_sync("async () => (await value()) + 1", reference=True)
    assert await fn.apply(None, [], result_options={"promise": True}) == 42


async def test_long_jobs_do_not_starve_other_isolates() -> None:
    """2 x cores isolates run endless loops; another isolate's calls still return (the pool
    grows past its base size when every thread stays busy). Without that growth the quick
    calls would wait forever, so the bound below is only a backstop, not a timing claim."""
    cores = os.cpu_count() or 2
    busy = [ivm.Isolate(memory_limit=16) for _ in range(2 * cores)]
    quick = ivm.Isolate(memory_limit=16)
    try:
        busy_contexts = [await iso.create_context() for iso in busy]
        quick_context = await quick.create_context()
        async with anyio.create_task_group() as tg:
            for ctx in busy_contexts:
                tg.start_soon(ctx.eval, "while (true) {}")
            await anyio.sleep(0.1)
            with anyio.fail_after(30):
                for _ in range(3):
                    assert await quick_context.eval("1 + 1") == 2
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()   # the busy loops never end by themselves
    finally:
        for iso in [*busy, quick]:
            iso.dispose()


def test_sync_promise_wait_still_works_from_a_thread(context: ivm.Context) -> None:
    """Synchronous calls wait on their own thread, as before."""
    results: list[object] = []
    t = threading.Thread(
        target=lambda: results.append(context.eval_sync("Promise.resolve(5)", promise=True))
    )
    t.start()
    t.join(10)
    assert results == [5]


@pytest.mark.skipif(
    not os.path.exists(f"/proc/{threading.get_native_id()}/timerslack_ns"),
    reason="Linux's per-thread timer slack (/proc/TID/timerslack_ns)",
)
def test_the_timer_thread_waits_without_timer_slack(context: ivm.Context) -> None:
    """libivm's timer thread (call timeouts) sets its timer slack to 1 ns: the kernel's
    default (50 us) lets every timeout fire that much late."""
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync("while (true) {}", timeout=0.01)
    task_dir = f"/proc/{os.getpid()}/task"
    slacks = {}
    for tid in os.listdir(task_dir):
        try:
            with open(f"/proc/{tid}/timerslack_ns") as f:
                slacks[int(tid)] = int(f.read())
        except OSError:  # the thread ended meanwhile
            pass
    assert 1 in slacks.values(), slacks
