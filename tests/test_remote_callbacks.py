"""Host callbacks (ivm.Callback, host References) called from the JavaScript of an isolate
in a worker process: the same outcomes as inline (arguments, results, errors both ways,
the sync/async/ignored modes under asyncio and trio), synchronous re-entry into the same
isolate from the callback (served by the worker's JavaScript thread that waits for the
callback), cancellation and crashes while a callback runs, no leaks over many calls, and
a worker that sends bad CALLBACK frames is killed, never trusted."""

from __future__ import annotations

import gc
import os
import signal
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import anyio
import pytest

import ivm
import ivm._callback as _callback_module
from ivm._ffi import lib

PKG = Path(ivm.__file__).resolve().parent
TEST_WORKER = PKG / "ivm-worker-test"
CALLBACK = 4   # the frame kind (docs/wire-protocol.md)
OP_INVOKE, OP_RELEASE = 40, 41


@pytest.fixture(params=["inline", "isolated"])
def any_ctx(request: pytest.FixtureRequest) -> Iterator[ivm.Context]:
    """A context inline and one in a worker: the same test must give the same outcome."""
    iso = ivm.Isolate(memory_limit=64, process=request.param)
    try:
        yield iso.create_context_sync()
    finally:
        iso.dispose()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _install(ctx: ivm.Context, **callbacks: Any) -> None:
    names = list(callbacks)
    code = "; ".join(f"globalThis.{n} = ${i}" for i, n in enumerate(names))
    ctx.eval_closure_sync(code, [callbacks[n] for n in names])


# --- the Must-hold of issue 11 ------------------------------------------------------------


def test_host_callback_reenters_the_same_isolate_synchronously(rctx: ivm.Context) -> None:
    """A host callback called from a worker's JavaScript re-enters the same isolate
    synchronously: on the caller's thread, seeing and changing the state the waiting
    JavaScript sees, nested as deep as inline."""
    threads: list[int] = []

    def down(n: int) -> Any:
        threads.append(threading.get_ident())
        if n == 0:
            return rctx.eval_sync("globalThis.trail.join(',')")
        rctx.eval_sync(f"globalThis.trail.push({n})")
        return rctx.eval_sync(f"down({n - 1})")

    _install(rctx, down=ivm.Callback(down))
    assert rctx.eval_sync("globalThis.trail = []; down(20)") == ",".join(map(str, range(20, 0, -1)))
    assert set(threads) == {threading.get_ident()} and len(threads) == 21
    # Nested scripts, contexts and heap statistics, and an error thrown inside.
    remote = rctx.isolate

    def inner() -> Any:
        other = remote.create_context_sync()
        script = remote.compile_script_sync("globalThis.x = 6 * 7")
        assert script.run_sync(other) == 42
        assert remote.get_heap_statistics_sync().used_heap_size > 0
        with pytest.raises(ivm.JSError, match="inner boom"):
            rctx.eval_sync("throw new Error('inner boom')")
        return other.eval_sync("x") + rctx.eval_sync("globalThis.trail.length")

    _install(rctx, inner=ivm.Callback(inner))
    assert rctx.eval_sync("inner() + 1") == 42 + 20 + 1
    assert rctx.eval_sync("'usable'") == "usable"


def test_values_of_several_types_both_ways(any_ctx: ivm.Context) -> None:
    seen: list[Any] = []

    def echo(*args: Any) -> Any:
        seen.append(args)
        return {"args": list(args), "n": len(args)}

    _install(any_ctx, echo=ivm.Callback(echo))
    out = any_ctx.eval_sync(
        "echo(1, -0.5, 2 ** 60, 'x\\ud800y', true, null, undefined, [1, [2]], {a: {b: 'c'}},"
        " 12345678901234567890n, new Uint8Array([1, 2, 3]), new Date(0), new Map([[1, 2]]))",
        copy=True)
    assert out["n"] == 13
    assert seen[0][:7] == (1, -0.5, 2.0 ** 60, "x\ud800y", True, None, ivm.undefined)
    assert seen[0][7:9] == ([1, [2]], {"a": {"b": "c"}})
    assert int(seen[0][9]) == 12345678901234567890
    assert bytes(seen[0][10]) == b"\x01\x02\x03"
    results = {"none": None, "int": 7, "float": 1.5, "str": "s\u00e9", "list": [1, "2"],
               "big": 2 ** 70, "bytes": b"ab"}
    _install(any_ctx, give=ivm.Callback(lambda k: results[k]))
    got = any_ctx.eval_sync(
        "['none', 'int', 'float', 'str', 'list', 'big', 'bytes'].map(k => {"
        " const v = give(k); return [typeof v, v instanceof ArrayBuffer ? 'ab:' + new Uint8Array(v) : v] })",
        copy=True)
    assert got == [["object", None], ["number", 7], ["number", 1.5], ["string", "s\u00e9"],
                   ["object", [1, "2"]], ["bigint", ivm.JSBigInt(2 ** 70)],
                   ["object", "ab:97,98"]]


def test_python_errors_become_js_errors(any_ctx: ivm.Context) -> None:
    class CustomError(Exception):
        pass

    original = CustomError("the original")

    def boom(kind: str) -> None:
        if kind == "type":
            raise TypeError("bad type")
        raise original

    _install(any_ctx, boom=ivm.Callback(boom))
    assert any_ctx.eval_sync(
        "['type', 'custom'].map(k => { try { boom(k) } catch (e) {"
        " return [e instanceof Error, e instanceof TypeError, e.name, e.message] } })",
        copy=True) == [[True, True, "TypeError", "bad type"],
                       [True, False, "CustomError", "the original"]]
    with pytest.raises(CustomError) as info:
        any_ctx.eval_sync("try { boom('custom') } catch (e) { throw e }")
    assert info.value is original
    assert isinstance(info.value.__cause__, ivm.JSError)
    # A result that cannot be copied back is a TypeError in JavaScript.
    _install(any_ctx, bad=ivm.Callback(lambda: object()))
    assert any_ctx.eval_sync("try { bad() } catch (e) { e.name }") == "TypeError"
    # An argument that cannot be copied is a TypeError too, and the callback does not run.
    assert any_ctx.eval_sync("try { boom(() => 1) } catch (e) { e.name }") == "TypeError"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_terminates_remote_js(rctx: ivm.Context,
                                                 exc_type: type[BaseException]) -> None:
    def stop() -> None:
        raise exc_type("stop")

    _install(rctx, stop=ivm.Callback(stop))
    rctx.eval_sync("globalThis.after = 'not reached'")
    with pytest.raises(exc_type):
        rctx.eval_sync("for (;;) { try { stop() } catch (e) {} } globalThis.after = 'reached'")
    assert rctx.eval_sync("after") == "not reached"
    assert rctx.eval_sync("1 + 1") == 2


def test_js_errors_reach_the_callback_and_back(rctx: ivm.Context) -> None:
    def relay() -> Any:
        try:
            rctx.eval_sync("null.x")
        except ivm.JSError as exc:
            return exc.name
        return "no error"

    _install(rctx, relay=ivm.Callback(relay))
    assert rctx.eval_sync("relay()") == "TypeError"


def test_host_reference_of_a_function(rctx: ivm.Context) -> None:
    ref = ivm.Reference(lambda x: x * 3)
    assert rctx.eval_closure_sync("return [typeof $0, $0.applySync(null, [14])]", [ref],
                                  result_options={"copy": True}) == ["object", 42]


def test_a_callback_calls_another_workers_isolate(rctx: ivm.Context) -> None:
    with ivm.Isolate(process="isolated") as other:
        octx = other.create_context_sync()
        _install(octx, back=ivm.Callback(lambda: rctx.eval_sync("globalThis.v")))

        def across(x: int) -> Any:
            return octx.eval_sync(f"back() * {x}")

        _install(rctx, across=ivm.Callback(across))
        assert rctx.eval_sync("globalThis.v = 7; across(6)") == 42
        assert other.pid != rctx.isolate.pid


def test_callbacks_with_references_copies_and_large_buffers(any_ctx: ivm.Context) -> None:
    """Host callbacks and References, ExternalCopies and large buffers (memfds) in the same
    values: one codec carries them all. The Callback enters through a Reference into the
    isolate (set_sync), is called with a buffer above the memfd threshold, calls back through
    that Reference (nested in the waiting JavaScript), and returns an ExternalCopy, the
    Reference itself and a large buffer; an eval_closure passes a Callback, the Reference
    and an ExternalCopy together. The same outcome inline and in a worker."""
    g = any_ctx.global_
    size = 1 << 20
    seen: list[Any] = []

    def f(data: Any) -> Any:
        seen.append((len(data), data[0], data[-1]))
        assert g.set_sync("fromHost", len(data)) is True
        assert g.get_sync("marker") == "in js"
        # nested with large buffers both ways
        assert g.set_sync("hostBuf", ivm.ExternalCopy(bytes([5]) * size).copy_into()) is True
        assert bytes(g.get_sync("hostBuf", copy=True))[-1] == 5
        return [ivm.ExternalCopy(bytes(data[:3])), g, bytes(size)]

    assert g.set_sync("f", ivm.Callback(f)) is True
    out = any_ctx.eval_sync(
        f"globalThis.marker = 'in js'; const u = new Uint8Array({size}).fill(7); u[0] = 1;"
        " const [c, ref, big] = f(u);"
        " [fromHost, new Uint8Array(c.copy()).join(), ref.typeof, ref.getSync('marker'),"
        "  new Uint8Array(big).length, new Uint8Array(hostBuf).length]",
        copy=True)
    assert seen == [(size, 1, 7)]
    assert out == [size, "1,7,7", "object", "in js", size, size]
    twice = any_ctx.eval_closure_sync(
        "return $0($1.getSync('fromHost'), new Uint8Array($2.copy()).length)",
        [ivm.Callback(lambda a, b: a * 2 + b), g, ivm.ExternalCopy(bytes(size))])
    assert twice == 3 * size
    # above one frame (16 MiB): only memfds carry these, as a callback's argument and result
    huge = 17 << 20
    g.set_sync("sameSize", ivm.Callback(lambda d: bytes(len(d))))
    assert any_ctx.eval_sync(f"new Uint8Array(sameSize(new Uint8Array({huge}))).length") == huge
    assert any_ctx.eval_sync("'usable'") == "usable"


def test_timeout_while_in_a_callback(rctx: ivm.Context) -> None:
    _install(rctx, nap=ivm.Callback(lambda: time.sleep(0.3)))
    with pytest.raises(ivm.TimeoutError):
        rctx.eval_sync("nap(); for (;;) {}", timeout=0.1)
    assert rctx.eval_sync("'usable'") == "usable"


# --- modes and async host calls (asyncio and trio) ------------------------------------------


@pytest.mark.anyio
async def test_async_host_call_runs_the_callback_off_the_loop(rctx: ivm.Context) -> None:
    threads: list[int] = []

    def f(x: int) -> Any:
        threads.append(threading.get_ident())
        # Nested synchronous re-entry from a callback of an asynchronous call.
        return rctx.eval_sync(f"{x} * 2")

    await rctx.eval_closure("globalThis.f = $0", [ivm.Callback(f)])
    assert await rctx.eval("f(21) + f(0)") == 42
    assert threads and threading.get_ident() not in threads


@pytest.mark.anyio
async def test_async_callbacks_awaited_by_worker_js(rctx: ivm.Context) -> None:
    async def slow(x: int) -> int:
        await anyio.sleep(0.01)
        return x + 1

    async def fails() -> None:
        await anyio.sleep(0)
        raise KeyError("nope")

    await rctx.eval_closure("globalThis.slow = $0; globalThis.fails = $1",
                            [ivm.Callback(slow, mode="async"), ivm.Callback(fails, mode="async")])
    assert await rctx.eval("slow(1).then(v => v * 10)", promise=True) == 20
    assert await rctx.eval("Promise.all([slow(1), slow(2), slow(3)]).then(a => a.join())",
                           promise=True) == "2,3,4"
    assert await rctx.eval("fails().catch(e => e.name + ':' + e.message)",
                           promise=True) == "KeyError:'nope'"
    assert await rctx.eval("typeof slow(0).then") == "function"
    # Synchronous callbacks after an await: in the continuation of the parked call.
    await rctx.eval_closure("globalThis.f = $0", [ivm.Callback(lambda x: x * 10)])
    assert await rctx.eval(
        "(async () => { let s = 0; for (let i = 0; i < 5; i++) s += f(await slow(i));"
        " return s })()", promise=True) == 150


@pytest.mark.anyio
async def test_ignored_callbacks(rctx: ivm.Context, wait_until_async: Callable[..., Any]) -> None:
    got: list[int] = []
    await rctx.eval_closure("globalThis.ign = $0", [ivm.Callback(got.append, mode="ignored")])
    assert await rctx.eval("ign(5)") is ivm.undefined
    assert await wait_until_async(lambda: got == [5])


@pytest.mark.anyio
async def test_cancel_an_awaited_call_whose_js_waits_in_a_callback(rctx: ivm.Context) -> None:
    entered, release = threading.Event(), threading.Event()

    def block() -> int:
        entered.set()
        release.wait(30)
        return 1

    await rctx.eval_closure("globalThis.block = $0", [ivm.Callback(block)])
    start = time.monotonic()
    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tg:
            async def run() -> None:
                await rctx.eval("block(); for (;;) {}")

            tg.start_soon(run)
            while not entered.is_set():
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught and time.monotonic() - start < 20   # not the 30 s block
    release.set()
    assert await rctx.eval("'usable'") == "usable"


# --- context hooks: unhandled rejections and import() -------------------------------------


def test_unhandled_rejections_are_reported_as_inline(any_ctx: ivm.Context) -> None:
    events: list[ivm.UnhandledRejection] = []
    ctx = any_ctx.isolate.create_context_sync(on_unhandled_rejection=events.append)
    assert ctx.eval_sync("Promise.reject(new RangeError('nobody')); globalThis.p ="
                         " Promise.reject(42); Promise.reject(7).catch(() => {}); 1") == 1
    # Reported before the call returns, on the caller's thread, in order.
    assert [(type(e.reason).__name__, e.revoked) for e in events] == [
        ("JSError", False), ("int", False)]
    assert events[1].reason == 42
    ctx.eval_sync("p.catch(() => {}); 1")
    assert events[2] == ivm.UnhandledRejection(42, True)
    # A handler that calls back into the isolate, and one that raises (ignored, as inline).
    seen: list[object] = []
    ctx2 = any_ctx.isolate.create_context_sync(
        on_unhandled_rejection=lambda e: seen.append(ctx2.eval_sync("typeof globalThis")))
    ctx2.eval_sync("Promise.reject(1); 0")
    assert seen == ["object"]


def test_unhandled_rejections_are_logged_by_default(rctx: ivm.Context,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="ivm"):
        rctx.eval_sync("Promise.reject('left alone'); 1")
    assert "left alone" in caplog.text


@pytest.mark.anyio
async def test_unhandled_rejections_of_async_calls(rctx: ivm.Context,
                                                   wait_until_async: Callable[..., Any]) -> None:
    events: list[ivm.UnhandledRejection] = []
    ctx = await rctx.isolate.create_context(on_unhandled_rejection=events.append)
    assert await ctx.eval("Promise.reject('async one'); 2") == 2
    assert await wait_until_async(lambda: [e.reason for e in events] == ["async one"])


def test_import_hook_round_trip(any_ctx: ivm.Context) -> None:
    """import() in a worker asks the host's hook. The hook cannot return a module yet
    (in a worker, a synchronous hook cannot compile modules inside the call: a clear
    ValueError; an async hook can, test_async_import_hook_loads_modules_in_a_worker)."""
    calls: list[tuple[str, str]] = []

    def hook(specifier: str, referrer: str) -> ivm.Module:
        calls.append((specifier, referrer))
        if specifier == "compile":
            return any_ctx.isolate.compile_module_sync("export default 1")
        raise LookupError(f"no module {specifier}")

    ctx = any_ctx.isolate.create_context_sync(import_module=hook)
    assert ctx.eval_sync("import('lib/x.js').catch(e => e.name + ': ' + e.message)",
                         promise=True, filename="main.js") == "LookupError: no module lib/x.js"
    assert calls == [("lib/x.js", "main.js")]
    if any_ctx.isolate.pid is not None:
        # A synchronous hook runs inside the call; module work cannot nest there in a worker.
        got = ctx.eval_sync("import('compile').catch(e => e.name + ': ' + e.message)", promise=True)
        assert got.startswith("ValueError: ES modules of an isolate in a worker process cannot"), got
        assert "async import_module hook" in got
    # Without a hook, import() rejects with a TypeError (no round trip).
    plain = any_ctx.isolate.create_context_sync()
    assert plain.eval_sync("import('y').catch(e => e.name)", promise=True) == "TypeError"


@pytest.mark.anyio
async def test_async_import_hook_round_trip(rctx: ivm.Context) -> None:
    async def hook(specifier: str, referrer: str) -> ivm.Module:
        await anyio.sleep(0)
        raise ModuleNotFoundError(f"{specifier} from {referrer}")

    ctx = await rctx.isolate.create_context(import_module=hook)
    assert await ctx.eval("import('./m.js').catch(e => e.name + ': ' + e.message)",
                          promise=True, filename="app.js") == (
        "ModuleNotFoundError: ./m.js from app.js")


# --- crashes, lifetime, leaks ---------------------------------------------------------------


def test_worker_death_while_a_callback_runs(remote: ivm.Isolate, rctx: ivm.Context) -> None:
    pid = remote.pid
    assert pid is not None
    done: list[str] = []

    def die() -> str:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        done.append("returned")
        return "dropped"

    _install(rctx, die=ivm.Callback(die))
    with pytest.raises(ivm.IsolateCrashedError, match="SIGKILL"):
        rctx.eval_sync("die()")
    assert done == ["returned"]
    with pytest.raises(ivm.IsolateCrashedError):
        rctx.eval_sync("1")


@pytest.mark.parametrize("placement", ["inline", "isolated", "group"])
def test_dispose_from_a_callback(placement: str) -> None:
    group = ivm.ProcessGroup() if placement == "group" else None
    try:
        iso = ivm.Isolate(group=group) if group else ivm.Isolate(process=placement)  # type: ignore[arg-type]
        ctx = iso.create_context_sync()

        def dispose() -> int:
            iso.dispose()
            return 1

        _install(ctx, dispose=ivm.Callback(dispose))
        with pytest.raises(ivm.DisposedError, match="disposed during execution"):
            ctx.eval_sync("try { dispose() } catch (e) {} 'went on'")
        assert iso.is_disposed
        with pytest.raises(ivm.DisposedError):
            ctx.eval_sync("1")
        if group:
            with ivm.Isolate(group=group) as again:
                assert again.create_context_sync().eval_sync("2") == 2
    finally:
        if group:
            group.dispose()


def test_callbacks_are_released_with_their_isolate(wait_until: Callable[..., bool]) -> None:
    gc.collect()
    baseline = len(_callback_module._live)
    with ivm.ProcessGroup() as group:
        iso = ivm.Isolate(group=group)
        ctx = iso.create_context_sync()
        for i in range(50):
            ctx.eval_closure_sync(f"globalThis.f{i} = $0", [ivm.Callback(lambda: 1)])
        assert ctx.eval_sync("f7()") == 1
        assert len(_callback_module._live) >= baseline + 50
        iso.dispose()   # the worker lives on; it lets go of the callbacks
        assert wait_until(lambda: (gc.collect(), len(_callback_module._live))[1] <= baseline)
        with ivm.Isolate(group=group) as again:
            assert again.create_context_sync().eval_sync("'group usable'") == "group usable"


def test_thousand_calls_leak_nothing(rctx: ivm.Context, rss_mb: Callable[[], float],
                                     wait_until: Callable[..., bool]) -> None:
    _install(rctx, f=ivm.Callback(lambda x: x + 1), nest=ivm.Callback(lambda: rctx.eval_sync("1")))
    assert rctx.eval_sync("let s = 0; for (let i = 0; i < 100; i++) s = f(s); s") == 100
    gc.collect()
    fds, threads, rss = _fd_count(), _thread_count(), rss_mb()
    live = len(_callback_module._live)
    assert rctx.eval_sync("let t = 0; for (let i = 0; i < 1000; i++) t = f(t) + nest() - 1; t") == 1000
    for _ in range(100):
        rctx.eval_closure_sync("return $0()", [ivm.Callback(lambda: 2)])
    assert _fd_count() == fds
    assert _thread_count() <= threads + 2
    assert rss_mb() < rss + 30
    # As inline, each crossing holds its callback until the worker's function is
    # collected or its isolate goes (test_callbacks_are_released_with_their_isolate).
    gc.collect()
    assert len(_callback_module._live) <= live + 100


# --- a worker that misbehaves ---------------------------------------------------------------


@pytest.fixture
def test_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TEST_WORKER.is_file(), f"{TEST_WORKER} is missing: reinstall the package"
    monkeypatch.setenv("IVM_WORKER_PATH", str(TEST_WORKER))


def _send(group: ivm.ProcessGroup, data: bytes) -> None:
    err = lib.ivm_debug_process_group_hook(group._ptr, lib.IVM_DEBUG_HOOK_SEND_BYTES, data,
                                           len(data))
    assert not err


def _callback_frame(payload: bytes, id: int = 99) -> bytes:
    return struct.pack("<IHHQ", len(payload), CALLBACK, 0, id) + payload


@pytest.mark.usefixtures("test_worker")
@pytest.mark.parametrize("payload, why", [
    (struct.pack("<IQQII", OP_INVOKE, 0, 1 << 62, 0, 0), "unknown callback"),
    (struct.pack("<IQ", OP_RELEASE, 1 << 62), "release of an unknown callback"),
    (struct.pack("<I", 77), "unknown op"),
    (struct.pack("<IQ", OP_INVOKE, 0), "malformed CALLBACK"),
    (b"", "CALLBACK"),
])
def test_bad_callback_frames_are_a_crash(payload: bytes, why: str,
                                         wait_until: Callable[..., bool]) -> None:
    with ivm.ProcessGroup() as group:
        iso = ivm.Isolate(group=group)
        ctx = iso.create_context_sync()
        _install(ctx, f=ivm.Callback(lambda: 1))
        _send(group, _callback_frame(payload))
        assert wait_until(lambda: not group.alive)
        cause = str(group.crash)
        assert "protocol violation" in cause and why in cause
        with pytest.raises(ivm.IsolateCrashedError, match="protocol violation"):
            ctx.eval_sync("f()")


@pytest.mark.usefixtures("test_worker")
def test_callback_frame_for_a_known_callback_but_bad_call(wait_until: Callable[..., bool]) -> None:
    """The ids a host gives are sequential: the one of the callback below is the next after
    the eval's CALL. A CALLBACK under a call that is not running, and one with a malformed
    argument, kill the worker."""
    for call, tail, why in [(987654321, struct.pack("<II", 0, 0), "not running"),
                            (0, struct.pack("<II", 0, 1) + b"\xee", "malformed argument")]:
        with ivm.ProcessGroup() as group:
            iso = ivm.Isolate(group=group)
            ctx = iso.create_context_sync()
            _install(ctx, f=ivm.Callback(lambda: 1))
            # isolate 1, ISOLATE_NEW 2, context 3, CREATE_CONTEXT_HOOKS 4, its rejection
            # hook 5, EVAL 6, the callback 7 (if this changes, the cause says "unknown")
            payload = struct.pack("<IQQ", OP_INVOKE, call, 7) + tail
            _send(group, _callback_frame(payload))
            assert wait_until(lambda: not group.alive)
            cause = str(group.crash)
            assert "protocol violation" in cause and why in cause, cause


# A flooding worker: IVM_DEBUG_HOOK_REPEAT_CALLBACK has the test worker send its next host
# callback call 100,000 times. The host holds at most 4,096 of them (docs/wire-protocol.md,
# "Limits"), then kills the worker, before running them all.
FLOOD = 100_000
FLOOD_CODE = {"invoke": "f(); 1", "notify": "Promise.reject(1); 1"}


def _flooding(group: ivm.ProcessGroup) -> tuple[ivm.Context, list[object]]:
    calls: list[object] = []

    def slow(*args: object) -> None:  # so that runner threads cannot keep up
        time.sleep(0.005)
        calls.append(args)

    ctx = ivm.Isolate(group=group).create_context_sync(on_unhandled_rejection=slow)
    _install(ctx, f=ivm.Callback(slow))
    err = lib.ivm_debug_process_group_hook(group._ptr, lib.IVM_DEBUG_HOOK_REPEAT_CALLBACK,
                                           struct.pack("<I", FLOOD), 4)
    assert not err
    return ctx, calls


@pytest.mark.usefixtures("test_worker")
@pytest.mark.parametrize("kind", list(FLOOD_CODE))
def test_a_worker_flooding_a_call_with_callbacks_is_killed(kind: str) -> None:
    with ivm.ProcessGroup() as group:
        ctx, calls = _flooding(group)
        with pytest.raises(ivm.IsolateCrashedError, match="flood of host callback calls"):
            ctx.eval_sync(FLOOD_CODE[kind])
        assert len(calls) < 10_000
        other = ivm.Isolate()  # the host is unhurt
        assert other.create_context_sync().eval_sync("6 * 7") == 42
        other.dispose()


@pytest.mark.anyio
@pytest.mark.usefixtures("test_worker")
@pytest.mark.parametrize("kind", list(FLOOD_CODE))
async def test_a_worker_flooding_an_async_call_with_callbacks_is_killed(kind: str) -> None:
    """An awaited call's callbacks run on runner threads: their queue is bounded too."""
    with ivm.ProcessGroup() as group:
        ctx, calls = _flooding(group)
        with pytest.raises(ivm.IsolateCrashedError, match="flood of host callback calls"):
            await ctx.eval(FLOOD_CODE[kind])
        assert len(calls) < 10_000   # (runner threads run some meanwhile)


def test_many_unhandled_rejections_reach_the_handler_as_inline(any_ctx: ivm.Context) -> None:
    """A script may leave any number of rejections: a worker's JavaScript waits for the hook
    of each (CALLBACK_NOTIFY_WAIT), as inline, so they never flood the host."""
    events: list[ivm.UnhandledRejection] = []
    ctx = any_ctx.isolate.create_context_sync(on_unhandled_rejection=events.append)
    assert ctx.eval_sync("for (let i = 0; i < 5000; i++) Promise.reject(i); 1") == 1
    assert [e.reason for e in events] == list(range(5000))
    # The handler may call the isolate from any of them, the waited-for ones included.
    seen: list[object] = []
    ctx2 = any_ctx.isolate.create_context_sync(
        on_unhandled_rejection=lambda e: seen.append(ctx2.eval_sync("1")))
    ctx2.eval_sync("for (let i = 0; i < 300; i++) Promise.reject(i); 1")
    assert seen == [1] * 300


@pytest.mark.anyio
async def test_async_import_hook_loads_modules_in_a_worker() -> None:
    """Issue 13 in workers: import() resolved by an async hook, the module graph compiled,
    linked and evaluated in the worker, its namespace handed back to JavaScript; and top-level
    await of an async host Callback inside a worker's module."""
    iso = ivm.Isolate(process="isolated")
    try:
        sources = {
            "lib.mjs": "export const x = 41; export default (v) => v + 1;",
            "main.mjs": "import inc, {x} from 'lib.mjs'; export const y = inc(x);",
        }
        compiled: dict[str, ivm.Module] = {}

        async def hook(specifier: str, referrer: str) -> ivm.Module:
            if specifier not in compiled:
                compiled[specifier] = await iso.compile_module(sources[specifier], filename=specifier)
            return compiled[specifier]

        ctx = await iso.create_context(import_module=hook)
        assert await ctx.eval("import('main.mjs').then(m => m.y)", promise=True) == 42

        async def later(v: int) -> int:
            await anyio.sleep(0.01)
            return v * 2

        await ctx.global_.set("later", ivm.Callback(later, mode="async"))
        entry = await iso.compile_module("export const z = await later(21);", filename="tla.mjs")
        await entry.instantiate(ctx, lambda s, r: compiled[s])
        await entry.evaluate()
        assert await entry.namespace.get("z") == 42
    finally:
        iso.dispose()
