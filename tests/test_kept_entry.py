"""A thread that calls an isolate synchronously keeps it entered between its calls
(libivm/isolate_entry.cc). V8 aborts the process when an entered isolate is disposed, so
every way an isolate can go while some thread keeps it entered is tried here, each in a
child process: disposal from another thread, from inside another isolate's call, after the
keeping thread ended, and while that thread ended with the isolate busy elsewhere."""

from __future__ import annotations

import threading
from typing import Callable

import anyio
import pytest

import ivm

PRELUDE = """
import gc, threading, ivm
live = ivm._lib.ivm_debug_live_objects
def settled():
    gc.collect()
    return live()
def settled_elsewhere():
    # Read on a new thread: the count there finishes no disposal this thread was handed.
    gc.collect()
    out = []
    t = threading.Thread(target=lambda: out.append(live())); t.start(); t.join()
    return out[0]
"""


# The end of a child: a new isolate still works (V8 did not abort), and the child says so.
ANOTHER_ISOLATE_WORKS = """
b = ivm.Isolate(); assert b.create_context_sync().eval_sync("5") == 5; b.dispose()
print("OK")
"""


def _ok(proc: object) -> None:
    out = f"{proc.stdout}\n{proc.stderr}"  # type: ignore[attr-defined]
    assert proc.returncode == 0, out  # type: ignore[attr-defined]
    assert "OK" in proc.stdout, out  # type: ignore[attr-defined]


def test_an_isolate_disposed_by_another_thread_goes_at_its_keepers_next_call(
        run_child: Callable[..., object]) -> None:
    # The main thread keeps `a` entered; another thread disposes of it. V8's isolate stays
    # (counted as one live object) until the main thread's next call, into `b`, leaves the
    # entry and disposes of it.
    _ok(run_child(PRELUDE + """
a = ivm.Isolate(); ca = a.create_context_sync()
b = ivm.Isolate(); cb = b.create_context_sync()
assert ca.eval_sync("1 + 1") == 2
before = settled()
t = threading.Thread(target=a.dispose); t.start(); t.join()
assert a.is_disposed
pending = settled_elsewhere()
assert cb.eval_sync("2 + 2") == 4
after = settled_elsewhere()
assert pending - after == 1, (before, pending, after)
try:
    ca.eval_sync("1")
except ivm.DisposedError:
    pass
else:
    raise AssertionError("a disposed isolate ran a call")
b.dispose()
print("OK")
"""))


def test_the_keepers_leak_check_finishes_a_disposal_it_was_handed(
        run_child: Callable[..., object]) -> None:
    # A leak check (ivm_debug_live_objects) on the keeping thread finishes the disposal,
    # as its next call would: a pool thread that disposes of an isolate after the main
    # thread's last call must not look like a leak there. Other threads still count it.
    _ok(run_child(PRELUDE + """
a = ivm.Isolate(); ca = a.create_context_sync()
assert ca.eval_sync("1 + 1") == 2
before = settled()
t = threading.Thread(target=a.dispose); t.start(); t.join()
pending = settled_elsewhere()
mine = settled()
assert pending - mine == 1, (before, pending, mine)
assert settled_elsewhere() == mine, (pending, mine)
""" + ANOTHER_ISOLATE_WORKS))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_event_loops_kept_isolate_disposed_elsewhere_goes_at_its_next_async_call(
        run_child: Callable[..., object], backend: str) -> None:
    # The loop's thread kept `a` entered with a synchronous call, then makes only
    # asynchronous ones (run on ivm's pool): submitting one disposes of `a`'s V8 isolate.
    _ok(run_child(PRELUDE + f"""
import anyio
async def main():
    a = ivm.Isolate(); ca = a.create_context_sync()
    b = ivm.Isolate(); cb = b.create_context_sync()
    assert ca.eval_sync("1 + 1") == 2
    assert await cb.eval("0") == 0   # (the loop's completion queue now exists)
    await anyio.to_thread.run_sync(a.dispose)
    pending = settled_elsewhere()
    assert await cb.eval("2 + 2") == 4
    after = settled_elsewhere()
    assert pending - after == 1, (pending, after)
    b.dispose()
anyio.run(main, backend="{backend}")
print("OK")
"""))


def test_an_isolate_disposed_inside_another_isolates_call_goes_at_the_next_call(
        run_child: Callable[..., object]) -> None:
    # The main thread keeps `a` entered and disposes of it from a host callback that `b`'s
    # call runs: the entry can only be left once `b`'s call is over, at the thread's next
    # call.
    _ok(run_child(PRELUDE + """
a = ivm.Isolate(); ca = a.create_context_sync()
b = ivm.Isolate(); cb = b.create_context_sync()
assert ca.eval_sync("1 + 1") == 2
counts = []
def dispose_a():
    a.dispose()
    counts.append(live())
cb.global_.set_sync("disposeA", ivm.Callback(dispose_a))
cb.eval_sync("disposeA()")
assert a.is_disposed
pending = settled_elsewhere()
assert cb.eval_sync("3") == 3
after = settled_elsewhere()
assert pending - after == 1, (counts, pending, after)
b.dispose()
print("OK")
"""))


def test_a_thread_that_ends_leaves_the_entry_it_kept(run_child: Callable[..., object]) -> None:
    _ok(run_child(PRELUDE + """
a = ivm.Isolate()   # (creating it keeps no entry)
def work():
    ca = a.create_context_sync()
    assert ca.eval_sync("6 * 7") == 42
for _ in range(20):
    t = threading.Thread(target=work); t.start(); t.join()
assert a.create_context_sync().eval_sync("1") == 1
a.dispose()
""" + ANOTHER_ISOLATE_WORKS))


def test_a_thread_that_ends_while_its_isolate_is_busy_abandons_the_entry(
        run_child: Callable[..., object]) -> None:
    # The keeping thread ends while another thread runs a call in the isolate: it cannot
    # leave its entry then (that needs the isolate's lock, and a thread's end never waits),
    # and the isolate's disposal leaves it later.
    _ok(run_child(PRELUDE + """
a = ivm.Isolate()   # (creating it keeps no entry)
kept = threading.Event(); inside = threading.Event(); done = threading.Event()
contexts = []
def keeper():
    contexts.append(a.create_context_sync())   # the first call: this thread keeps `a` entered
    assert contexts[0].eval_sync("1") == 1
    kept.set()
    inside.wait()                              # ends while `a` is busy
k = threading.Thread(target=keeper); k.start(); kept.wait()
ca = contexts[0]
ca.global_.set_sync("inside", ivm.Callback(lambda: inside.set()))
ca.global_.set_sync("keeperGone", ivm.Callback(lambda: done.is_set()))
def busy():
    ca.eval_sync("inside(); while (!keeperGone()) {}")
m = threading.Thread(target=busy); m.start()
k.join(); done.set(); m.join()
assert ca.eval_sync("2") == 2
a.dispose()
""" + ANOTHER_ISOLATE_WORKS))


def test_an_orphaned_isolate_a_thread_kept_entered_is_torn_down(
        run_child: Callable[..., object]) -> None:
    # The isolate's handle goes while a Reference keeps it alive, and the last of it goes
    # on another thread.
    _ok(run_child(PRELUDE + """
a = ivm.Isolate(); ca = a.create_context_sync()
ref = ca.eval_sync("({x: 1})", reference=True)
assert ca.eval_sync("1") == 1
del a, ca
gc.collect()
assert ref.get_sync("x") == 1
t = threading.Thread(target=ref.release); t.start(); t.join()
del ref
gc.collect()
""" + ANOTHER_ISOLATE_WORKS))


def test_other_threads_share_an_isolate_a_thread_keeps_entered(isolate: ivm.Isolate) -> None:
    ctx = isolate.create_context_sync()
    ctx.eval_sync("globalThis.n = 0")
    assert ctx.eval_sync("n") == 0   # this thread keeps the isolate entered
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(300):
                assert ctx.eval_sync(f"n += 1; {i} * 2") == i * 2
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(300):
        assert ctx.eval_sync(f"{i} + 1") == i + 1
    for t in threads:
        t.join()
    assert errors == []
    assert ctx.eval_sync("n") == 1200


@pytest.mark.anyio
async def test_async_calls_share_an_isolate_the_loops_thread_keeps_entered(
        isolate: ivm.Isolate) -> None:
    ctx = isolate.create_context_sync()
    assert ctx.eval_sync("1") == 1   # the event loop's thread keeps it entered
    for i in range(50):
        assert await ctx.eval(f"{i} * 3") == i * 3
        assert ctx.eval_sync(f"{i} * 5") == i * 5
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(ctx.eval, f"{i}")
    isolate.dispose()
    other = ivm.Isolate()
    assert other.create_context_sync().eval_sync("7") == 7
    other.dispose()


def test_timeouts_and_termination_still_stop_a_kept_isolates_calls(isolate: ivm.Isolate) -> None:
    ctx = isolate.create_context_sync()
    assert ctx.eval_sync("1") == 1
    with pytest.raises(ivm.TimeoutError):
        ctx.eval_sync("for (;;) {}", timeout=0.05)
    timer = threading.Timer(0.05, isolate.terminate)
    timer.start()
    with pytest.raises(ivm.TerminatedError):
        ctx.eval_sync("for (;;) {}")
    timer.join()
    assert ctx.eval_sync("2") == 2


def test_a_kept_isolate_whose_lock_went_inside_another_call_is_disposed_at_once(
        run_child: Callable[..., object]) -> None:
    # Twenty isolates used inside `b`'s call make this thread give back its oldest parked
    # locks, `a`'s among them, while it is inside `b` (it cannot leave `a`'s entry there).
    # Disposed later by this same thread at top level, `a` goes at once: nothing is left
    # for a next call to finish.
    _ok(run_child(PRELUDE + """
a = ivm.Isolate(); ca = a.create_context_sync()
assert ca.eval_sync("1") == 1
b = ivm.Isolate(); cb = b.create_context_sync()
others = []
def touch():
    for _ in range(20):
        o = ivm.Isolate(); c = o.create_context_sync(); c.eval_sync("1"); others.append((o, c))
cb.global_.set_sync("touch", ivm.Callback(touch))
cb.eval_sync("touch()")
a.dispose()
disposed = settled_elsewhere()
assert cb.eval_sync("2") == 2
assert settled_elsewhere() == disposed, (disposed, settled_elsewhere())
for o, c in others:
    o.dispose()
""" + ANOTHER_ISOLATE_WORKS))


def test_a_kept_isolate_handed_over_frees_its_host_values_before_the_interpreter_exits(
        run_child: Callable[..., object]) -> None:
    # An async host function settles the isolate's promise with a Callback: the settling
    # task, queued in the isolate, holds a host value. The isolate is disposed from another
    # thread and the keeping main thread makes no further call: that task must go while
    # Python still runs, not at the thread's exit (the host value's finalizer needs Python).
    proc = run_child(PRELUDE + """
import asyncio, time
a = ivm.Isolate(); ca = a.create_context_sync()
loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
async def fn():
    busy = asyncio.ensure_future(ca.eval("for (;;) {}"))   # `a` busy on a pool thread
    await asyncio.sleep(0.2)
    def later():
        time.sleep(0.3)
        a.dispose()
        print("disposed", flush=True)
    threading.Thread(target=later).start()
    return ivm.Callback(lambda: 1)
async def make():
    return ivm.Callback(fn, mode="async")
cb = asyncio.run_coroutine_threadsafe(make(), loop).result()
ca.global_.set_sync("f", cb)   # the main thread keeps `a` entered
ca.eval_sync("globalThis.p = f(); 1")
time.sleep(1.5)
print("OK", flush=True)
""")
    _ok(proc)
    assert "disposed" in proc.stdout  # type: ignore[attr-defined]
