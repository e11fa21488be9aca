"""What porting isolated-vm's test suite to ivm found (issue 12), each case pinned.

Scenarios that hung or killed the process before their fix run in a child process, so
that a regression is reported instead of taking the suite down.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable

import pytest

import ivm

RunChild = Callable[..., subprocess.CompletedProcess[str]]
CheckChild = Callable[..., str]


@pytest.fixture
def check_child(run_child: RunChild) -> CheckChild:
    """`check_child(code, timeout=60)`: runs `code` in a child (conftest's run_child); it must
    exit normally. Returns its stdout."""
    def check(code: str, timeout: float = 60) -> str:
        proc = run_child(code, timeout)
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"code {proc.returncode}"
        assert proc.returncode == 0, (
            f"child exited with {how}\nstdout:\n{proc.stdout[-3000:]}\n"
            f"stderr:\n{proc.stderr[-3000:]}"
        )
        return proc.stdout
    return check


# --------------------------------------------------------------------------------------
# deadlocks


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_dispose_on_the_loop_while_javascript_waits_in_apply_sync_promise(
    check_child: CheckChild, backend: str
) -> None:
    """dispose() on the event loop that must run the async host function JavaScript waits
    for (applySyncPromise) returns at once; the call then fails with DisposedError."""
    out = check_child(
        f"""
        import time, anyio, ivm

        async def main():
            iso = ivm.Isolate(memory_limit=32)
            ctx = await iso.create_context()

            async def f():
                await anyio.sleep(0.5)

            outcome = []

            async def call():
                try:
                    outcome.append(await ctx.eval_closure(
                        "return $0.applySyncPromise(null, [])", [ivm.Reference(f)]))
                except ivm.DisposedError as e:
                    outcome.append(type(e).__name__)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.sleep(0.1)
                t0 = time.monotonic()
                iso.dispose()
                took = time.monotonic() - t0
            assert took < 1.0, took
            assert iso.is_disposed
            print(outcome)

        anyio.run(main, backend={backend!r})
        """,
        timeout=30,
    )
    assert out.strip() == "['DisposedError']"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_isolates_disposing_each_other_from_callbacks_never_deadlock(
    check_child: CheckChild, backend: str
) -> None:
    """Two isolates whose callbacks dispose of each other, called at the same time from two
    pool threads (every other round, both inside their callback at once): every round
    ends, each call with its value or DisposedError."""
    out = check_child(
        f"""
        import threading, anyio, ivm

        def disposer(both, other):
            def d():
                try:
                    both.wait(2)   # both callbacks running: each disposal waits for the other
                except threading.BrokenBarrierError:
                    pass
                other.dispose()
            return ivm.Callback(d)

        async def main():
            outcomes = set()
            for i in range(100):
                a = ivm.Isolate(memory_limit=16)
                b = ivm.Isolate(memory_limit=16)
                ca = await a.create_context()
                cb = await b.create_context()
                both = threading.Barrier(2) if i % 2 else None
                if both:
                    ca.global_.set_sync("d", disposer(both, b))
                    cb.global_.set_sync("d", disposer(both, a))
                else:
                    ca.global_.set_sync("d", ivm.Callback(b.dispose))
                    cb.global_.set_sync("d", ivm.Callback(a.dispose))

                async def run(ctx):
                    try:
                        outcomes.add(repr(await ctx.eval("d(); 1")))
                    except ivm.DisposedError:
                        outcomes.add("DisposedError")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(run, ca)
                    tg.start_soon(run, cb)
                assert a.is_disposed or b.is_disposed
                a.dispose()
                b.dispose()
            print(sorted(outcomes))

        anyio.run(main, backend={backend!r})
        """,
        timeout=120,
    )
    assert set(eval(out)) <= {"1", "DisposedError"} and "DisposedError" in out


def test_dispose_from_another_thread_while_a_sync_callback_blocks_returns(
    check_child: CheckChild
) -> None:
    """A disposal from another thread does not wait for host code that termination cannot
    stop; the call that ran it fails with DisposedError once the host code returns."""
    out = check_child(
        """
        import threading, time, ivm

        iso = ivm.Isolate(memory_limit=32)
        ctx = iso.create_context_sync()
        entered, release = threading.Event(), threading.Event()

        def block():
            entered.set()
            release.wait(30)

        ctx.global_.set_sync("block", ivm.Callback(block))
        outcome = []

        def call():
            try:
                outcome.append(ctx.eval_sync("block(); 1"))
            except ivm.DisposedError as e:
                outcome.append(type(e).__name__)

        t = threading.Thread(target=call)
        t.start()
        assert entered.wait(10)
        t0 = time.monotonic()
        iso.dispose()
        took = time.monotonic() - t0
        assert iso.is_disposed
        release.set()
        t.join(10)
        assert took < 1.0, took
        print(outcome)
        """,
        timeout=30,
    )
    assert out.strip() == "['DisposedError']"


# --------------------------------------------------------------------------------------
# CPU time


def test_cpu_time_excludes_host_callbacks() -> None:
    """cpu_time counts JavaScript only: a callback that sleeps or computes in Python adds
    (almost) nothing; JavaScript run from inside a callback is counted."""
    iso = ivm.Isolate(memory_limit=32)
    ctx = iso.create_context_sync()
    ctx.global_.set_sync("nap", ivm.Callback(lambda: time.sleep(0.1)))
    ctx.global_.set_sync("busy", ivm.Callback(lambda: sum(range(6_000_000)) and None))
    ctx.global_.set_sync(
        "nested",
        ivm.Callback(lambda: ctx.eval_sync("let x = 0; for (let i = 0; i < 2e7; i++) x += i; x")),
    )
    ctx.eval_sync("0")
    for call in ("nap()", "busy()", "nap(); nap()"):
        cpu0, wall0 = iso.cpu_time, iso.wall_time
        ctx.eval_sync(call)
        cpu, wall = iso.cpu_time - cpu0, iso.wall_time - wall0
        assert wall >= 20_000_000, (call, wall)
        assert cpu < 10_000_000, (call, cpu)   # milliseconds of Python, not counted
    cpu0 = iso.cpu_time
    t0 = time.thread_time_ns()
    ctx.eval_sync("nested()")
    spent = time.thread_time_ns() - t0
    assert spent * 0.5 < iso.cpu_time - cpu0 <= spent + 5_000_000
    iso.dispose()


# --------------------------------------------------------------------------------------
# out of memory in a nested call


@pytest.mark.parametrize("via", ["callback", "reference", "async"])
def test_out_of_memory_in_a_nested_call_is_a_memory_limit_error(
    check_child: CheckChild, via: str
) -> None:
    """A host function whose own call into its isolate runs out of memory: the outer call
    raises MemoryLimitError (the isolate is disposed), the host lives on."""
    out = check_child(
        f"""
        import asyncio, ivm

        iso = ivm.Isolate(memory_limit=16)
        ctx = iso.create_context_sync()
        hog = lambda: ctx.eval_sync("let a = []; for (;;) a.push({{}})")
        ctx.global_.set_sync("n", ivm.Callback(hog))
        ctx.global_.set_sync("r", ivm.Reference(hog))
        code = "r.applySync()" if {via!r} == "reference" else "n()"
        try:
            if {via!r} == "async":
                asyncio.run(ctx.eval(code))
            else:
                ctx.eval_sync(code)
        except ivm.MemoryLimitError as e:
            print(type(e).__name__, iso.is_disposed)
        fresh = ivm.Isolate(memory_limit=16).create_context_sync()
        print(fresh.eval_sync("6 * 7"))
        """,
        timeout=60,
    )
    assert out.split() == ["MemoryLimitError", "True", "42"]


def test_a_callback_disposing_its_own_isolate_then_returning_or_raising() -> None:
    """A host function that disposes of its own isolate and then returns a value or
    raises: the call raises DisposedError, nothing is converted into the stopping
    isolate."""
    for body in ("return", "raise"):
        iso = ivm.Isolate(memory_limit=16)
        ctx = iso.create_context_sync()

        def host(iso: ivm.Isolate = iso, body: str = body) -> object:
            iso.dispose()
            if body == "raise":
                raise ValueError("after dispose")
            return {"a": [1, 2]}

        ctx.global_.set_sync("host", ivm.Callback(host))
        with pytest.raises(ivm.DisposedError):
            ctx.eval_sync("try { host() } catch (e) { e.message }")


# --------------------------------------------------------------------------------------
# the heap limit against large objects

BIG_STRING = 'globalThis.s = "1".repeat(40).repeat(5e6); s.indexOf("2")'   # 191 MB, flat


def test_a_large_string_past_the_heap_limit_is_a_memory_limit_error() -> None:
    """A 191 MB flat string in a 128 MB isolate: V8 lets it past the heap limit without
    asking; the call raises MemoryLimitError and the isolate is disposed."""
    iso = ivm.Isolate(memory_limit=128)
    ctx = iso.create_context_sync()
    with pytest.raises(ivm.MemoryLimitError):
        ctx.eval_sync(BIG_STRING)
    assert iso.is_disposed


@pytest.mark.anyio
async def test_a_large_string_past_the_heap_limit_async() -> None:
    iso = ivm.Isolate(memory_limit=128)
    ctx = await iso.create_context()
    with pytest.raises(ivm.MemoryLimitError):
        await ctx.eval(BIG_STRING)
    assert iso.is_disposed


def test_allocating_on_after_a_large_string_past_the_limit_does_not_abort(
    check_child: CheckChild
) -> None:
    """JavaScript that keeps allocating once a large string put the heap past its limit:
    the garbage collector notices (MemoryLimitError), where V8 used to abort the process
    ("Reached heap limit") for lack of room to unwind."""
    out = check_child(
        f"""
        import ivm
        iso = ivm.Isolate(memory_limit=128)
        ctx = iso.create_context_sync()
        try:
            ctx.eval_sync({BIG_STRING!r} + "; for (;;) globalThis.x = [{{}}]", timeout=20000)
        except ivm.MemoryLimitError as e:
            print(type(e).__name__, iso.is_disposed)
        """,
        timeout=60,
    )
    assert out.split() == ["MemoryLimitError", "True"]


# --------------------------------------------------------------------------------------
# transfer_list and memoryviews


def test_transfer_list_with_a_memoryview_of_a_listed_bytearray() -> None:
    """A memoryview (or a slice of one) of a transferred bytearray inside the value: the
    copy holds the bytes, the bytearray is emptied and the views are released."""
    ba = bytearray(b"abcd")
    view = memoryview(ba)
    part = view[1:3]
    copy = ivm.ExternalCopy({"all": view, "part": part, "more": [view]}, transfer_list=[ba])
    assert ba == b""
    with pytest.raises(ValueError):
        view.tobytes()   # released
    got = copy.copy()
    assert bytes(got["all"]) == b"abcd" and bytes(got["part"]) == b"bc"
    copy.release()
    top = bytearray(b"xyz")
    copy = ivm.ExternalCopy(memoryview(top), transfer_list=[top])
    assert top == b"" and bytes(copy.copy()) == b"xyz"
    copy.release()


def test_transfer_list_with_a_bytearray_exported_elsewhere_is_a_clear_error() -> None:
    """A transferred bytearray still exported outside the value (a memoryview the value
    does not hold): BufferError naming the cause; the bytearray keeps its bytes."""
    ba = bytearray(b"abcd")
    outside = memoryview(ba)
    with pytest.raises(BufferError, match="still exported outside the value"):
        ivm.ExternalCopy([1, bytes(2)], transfer_list=[ba])
    assert ba == b"abcd"
    with pytest.raises(BufferError, match="still exported outside the value"):
        ivm.ExternalCopy(memoryview(ba)[1:], transfer_list=[ba])
    assert ba == b"abcd"
    outside.release()
    inner = memoryview(ba)
    derived = memoryview(inner)   # the value's view is itself the base of another
    derived2 = inner.cast("B")
    with pytest.raises(BufferError):
        ivm.ExternalCopy(inner, transfer_list=[ba])
    derived.release()
    derived2.release()
    assert ba == b"abcd"


# --------------------------------------------------------------------------------------
# frozen API objects

TAMPER = """
"use strict";
const out = [];
for (const [o, m] of [[e, "copy"], [r, "applySync"], [r, "copySync"], [h, "applySync"]]) {
  const p = Object.getPrototypeOf(o);
  const attempts = [
    () => { p[m] = () => "tampered" },
    () => Object.defineProperty(p, m, { value: () => "tampered" }),
    () => { delete p[m] },
    () => { o[m] = () => "tampered" },
    () => Object.defineProperty(o, m, { value: () => "tampered" }),
    () => Object.setPrototypeOf(o, { [m]: () => "tampered" }),
    () => Object.setPrototypeOf(p, null),
    () => { p.constructor.prototype = {} },
  ];
  let refused = 0;
  for (const attempt of attempts) {
    try { attempt() } catch (err) { if (err instanceof TypeError) refused++ }
  }
  out.push([refused === attempts.length, Object.isFrozen(o), Object.isFrozen(p),
            Object.isFrozen(p.constructor), String(o[m]).includes("tampered")]);
}
try { cb.extra = 1 } catch (err) { out.push(err instanceof TypeError) }
out.push(Object.isFrozen(cb));
out
"""


def test_api_objects_in_an_isolate_are_frozen(context: ivm.Context) -> None:
    """JavaScript can neither replace the methods of ExternalCopy and Reference objects (on
    the objects, their prototypes or constructors) nor change a Callback's function."""
    context.global_.set_sync("e", ivm.ExternalCopy({"a": 1}))
    context.global_.set_sync("r", ivm.Reference({"a": 1}))
    context.global_.set_sync("h", ivm.Reference(lambda: 7))
    context.global_.set_sync("cb", ivm.Callback(lambda: 8))
    out = context.eval_sync(TAMPER, copy=True)
    assert out[:4] == [[True, True, True, True, False]] * 4
    assert out[4:] == [True, True]
    assert context.eval_sync("[e.copy().a, r.copySync().a, h.applySync(), cb()]", copy=True) == [1, 1, 7, 8]


# --------------------------------------------------------------------------------------
# SharedArrayBuffers received from another isolate


def _external(iso: ivm.Isolate) -> int:
    return iso.get_heap_statistics_sync().externally_allocated_size


def test_a_shared_array_buffer_from_another_isolate_counts_in_the_receiver() -> None:
    """A SharedArrayBuffer copied into another isolate is counted in that isolate's
    externally_allocated_size (and budget) while it holds it; the memory stays shared.
    Copied back into its own isolate it is not counted twice."""
    a = ivm.Isolate(memory_limit=64)
    b = ivm.Isolate(memory_limit=64)
    ca, cb = a.create_context_sync(), b.create_context_sync()
    size = 8 << 20
    sab = ca.eval_sync(f"globalThis.sab = new SharedArrayBuffer({size}); sab", external_copy=True)
    assert _external(a) == size and _external(b) == 0
    cb.global_.set_sync("s", sab.copy_into())
    assert _external(b) == size
    ca.eval_sync("new Uint8Array(sab)[5] = 42")
    assert cb.eval_sync("new Uint8Array(s)[5]") == 42   # still shared
    ca.global_.set_sync("again", sab.copy_into())
    assert _external(a) == size
    assert ca.eval_sync("new Uint8Array(again)[5]") == 42
    cb.eval_sync("delete globalThis.s")
    b.dispose()
    del cb
    a.dispose()
    sab.release()


def test_a_shared_array_buffer_past_the_receivers_budget_is_refused() -> None:
    """The receiver's budget bounds what it shares: a 24 MB SharedArrayBuffer does not fit
    an isolate of 16 MB (TransferError, or TypeError in JavaScript, as for an ArrayBuffer)."""
    a = ivm.Isolate(memory_limit=64)
    b = ivm.Isolate(memory_limit=16)
    ca, cb = a.create_context_sync(), b.create_context_sync()
    sab = ca.eval_sync("new SharedArrayBuffer(24 << 20)", external_copy=True)
    with pytest.raises(ivm.TransferError, match="does not fit in the isolate's memory limit"):
        cb.global_.set_sync("s", sab.copy_into())
    ca.eval_sync("globalThis.big = new SharedArrayBuffer(24 << 20); 0")
    cb.global_.set_sync("ga", ca.global_)
    got = cb.eval_sync(
        "try { ga.getSync('big', {copy: true}); 'fit' } catch (e) { e.name + ': ' + e.message }")
    assert got.startswith("TypeError: ") and "does not fit in the isolate's memory limit" in got
    assert _external(b) == 0
    assert cb.eval_sync("typeof s") == "undefined"
    a.dispose()
    b.dispose()
    sab.release()


# --------------------------------------------------------------------------------------
# error context

SPIN = "function spin() { for (;;) {} }\nfunction outer() { return spin() }"


def test_a_timeout_error_tells_where_the_javascript_was_stopped(context: ivm.Context) -> None:
    context.eval_sync(SPIN, filename="loop.js")
    with pytest.raises(ivm.TimeoutError) as err:
        context.eval_sync("outer()", timeout=0.05, filename="main.js")
    assert str(err.value) == "Script execution timed out."
    assert err.value.stack is not None
    lines = err.value.stack.split("\n")
    assert lines[0] == "Script execution timed out."
    assert lines[1].startswith("    at spin (loop.js:1:")
    assert lines[2].startswith("    at outer (loop.js:2:")
    assert lines[3] == "    at main.js:1:1"
    # The isolate stays usable, and a later call is not stopped by the late interrupt.
    assert context.eval_sync("1 + 1") == 2
    # A call stopped while in host code (no JavaScript running): no stack.
    context.global_.set_sync("nap", ivm.Callback(lambda: time.sleep(0.5)))
    with pytest.raises(ivm.TimeoutError) as err:
        context.eval_sync("nap(); for (;;) {}", timeout=0.05)
    assert err.value.stack is None
    assert context.eval_sync("2 + 2") == 4


@pytest.mark.anyio
async def test_a_timeout_error_tells_where_async(context: ivm.Context) -> None:
    await context.eval(SPIN, filename="loop.js")
    with pytest.raises(ivm.TimeoutError) as err:
        await context.eval("outer()", timeout=0.05, filename="main.js")
    assert err.value.stack is not None and "at spin (loop.js:1:" in err.value.stack
    assert await context.eval("3") == 3


def test_a_timeout_that_fires_as_the_call_ends_never_stops_the_next_calls(
    context: ivm.Context,
) -> None:
    """Calls that end right around their deadline: the interrupt that would read the stack
    may arrive late; it must never stop a later call."""
    context.eval_sync(SPIN, filename="loop.js")
    for i in range(300):
        try:
            context.eval_sync(f"let x{i} = 0; for (let j = 0; j < 3e4; j++) x{i} += j", timeout=0.0002)
        except ivm.TimeoutError:
            pass
        assert context.eval_sync("for (let j = 0; j < 1e4; j++); 7") == 7


def test_an_error_crossing_three_isolates_keeps_the_frames_of_each() -> None:
    """C throws, called from B, called from A, called by the host: the host's JSError
    carries C's frames, B's and A's, with a boundary line at each crossing."""
    isos = [ivm.Isolate(memory_limit=32) for _ in range(3)]
    ca, cb, cc = (iso.create_context_sync() for iso in isos)
    cc.eval_sync("function inC() { throw new RangeError('deep') }", filename="c.js")
    cb.global_.set_sync("rc", cc.global_)
    cb.eval_sync("function inB() { return rc.getSync('inC', {reference: true}).applySync() }",
                 filename="b.js")
    ca.global_.set_sync("rb", cb.global_)
    ca.eval_sync("function inA() { return rb.getSync('inB', {reference: true}).applySync() }",
                 filename="a.js")
    with pytest.raises(ivm.JSError) as err:
        ca.eval_sync("inA()", filename="main.js")
    assert err.value.name == "RangeError" and err.value.message == "deep"
    assert err.value.stack.split("\n") == [
        "RangeError: deep",
        "    at inC (c.js:1:24)",
        "    at (<ivm boundary>)",
        "    at inB (b.js:1:62)",
        "    at (<ivm boundary>)",
        "    at inA (a.js:1:62)",
        "    at main.js:1:1",
    ]
    for iso in isos:
        iso.dispose()
