"""Isolates that live in a worker process (``process="isolated"``, ``group=``): the same
API and outcomes as inline, crashes that cost one worker only (IsolateCrashedError with
the cause), cancellation and timeouts that reach the worker, and no leaks over many
cycles."""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import anyio
import pytest

import ivm

STRING_LOOP = (
    "const keep = []; for (let i = 0; ; i++) { const s = ('x' + i).repeat(2 ** 25);"
    " s.indexOf('y'); keep.push(s) }"
)


def _alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) child of ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def test_pid_and_placement() -> None:
    with ivm.Isolate() as inline:
        assert inline.pid is None
    with ivm.Isolate(process="isolated") as iso:
        assert iso.pid is not None and iso.pid != os.getpid()
        assert _alive(iso.pid)
        assert "Seccomp:\t2" in Path(f"/proc/{iso.pid}/status").read_text()
    with pytest.raises(ValueError):
        ivm.Isolate(process="elsewhere")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ivm.Isolate(group=object())  # type: ignore[arg-type]


def test_dispose_ends_its_own_worker(wait_until: Callable[..., bool]) -> None:
    iso = ivm.Isolate(process="isolated")
    pid = iso.pid
    assert pid is not None
    ctx = iso.create_context_sync()
    iso.dispose()
    assert wait_until(lambda: not _alive(pid))
    assert iso.is_disposed
    with pytest.raises(ivm.DisposedError):
        ctx.eval_sync("1")
    with pytest.raises(ivm.DisposedError):
        iso.create_context_sync()
    iso.dispose()  # idempotent


# Code, eval options: the results and errors must be those of an inline isolate.
TABLE: list[tuple[str, dict[str, Any]]] = [
    ("1 + 2", {}),
    ("0.1 + 0.2", {}),
    ("-0", {}),
    ("NaN", {}),
    ("2n ** 80n", {}),
    ("'h\\u00e9llo \\ud83d\\ude00'", {}),
    ("'\\ud800'", {}),
    ("undefined", {}),
    ("null", {}),
    ("true", {}),
    ("({a: [1, 'two', {b: null}], c: new Map([[1, 2]]), d: new Set(['x'])})", {"copy": True}),
    ("new Date(86400000)", {"copy": True}),
    ("new Uint8Array([1, 2, 3])", {"copy": True}),
    ("new Float64Array([1.5, -2]).buffer", {"copy": True}),
    ("[1, 2, 3]", {}),
    ("throw new TypeError('boom')", {}),
    ("throw 42", {}),
    ("(function f() { return f() })()", {}),
    ("let x = ;", {}),
    ("Promise.resolve(7)", {"promise": True}),
    ("Promise.reject(new RangeError('no'))", {"promise": True}),
    ("missing_name", {"filename": "file.js", "line_offset": 3}),
]


def _plain(value: Any) -> Any:
    """A comparable form (memoryviews compare by identity in repr)."""
    if isinstance(value, memoryview):
        return ("memoryview", value.format, value.tolist())
    return repr(value)


def _outcome(ctx: ivm.Context, code: str, opts: dict[str, Any]) -> Any:
    try:
        value = ctx.eval_sync(code, **opts)
        return ("ok", type(value).__name__, _plain(value))
    except ivm.JSError as exc:
        return ("js", type(exc).__name__, exc.name, exc.message, exc.stack)
    except ivm.IvmError as exc:
        return ("ivm", type(exc).__name__, str(exc))


@pytest.mark.parametrize(("code", "opts"), TABLE)
def test_results_and_errors_match_inline(rctx: ivm.Context, code: str, opts: dict[str, Any]) -> None:
    with ivm.Isolate(memory_limit=64) as inline:
        expected = _outcome(inline.create_context_sync(), code, opts)
    assert _outcome(rctx, code, opts) == expected


def test_eval_closure_and_scripts(remote: ivm.Isolate, rctx: ivm.Context) -> None:
    assert rctx.eval_closure_sync("return $0 + $1.length", [40, "ab"]) == 42
    when = datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc)
    copy = {"copy": True}
    assert rctx.eval_closure_sync("return $0.getUTCFullYear()", [when], arguments_options=copy) == 2020
    assert rctx.eval_closure_sync(
        "return $0", [{"k": [1, b"\x00\x01"]}], arguments_options=copy, result_options=copy
    ) == {"k": [1, b"\x00\x01"]}
    script = remote.compile_script_sync("globalThis.n = (globalThis.n || 0) + 1; n", filename="s.js")
    assert [script.run_sync(rctx) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(ivm.JSError) as info:
        remote.compile_script_sync("let = ;", filename="bad.js")
    assert info.value.name == "SyntaxError" and "bad.js" in info.value.stack
    script.release()
    with pytest.raises(ivm.DisposedError):
        script.run_sync(rctx)
    other = remote.create_context_sync()
    other.release()
    with pytest.raises(ivm.DisposedError):
        other.eval_sync("1")
    with ivm.Isolate() as inline:
        with pytest.raises(ValueError, match="different isolates"):
            remote.compile_script_sync("1").run_sync(inline.create_context_sync())


def test_references_callbacks_and_external_copies_cross(rctx: ivm.Context) -> None:
    # Refused before 0.5; tests/test_remote_references.py and
    # tests/test_remote_callbacks.py test each in depth.
    assert rctx.eval_sync("({a: 1})", reference=True).copy_sync() == {"a": 1}
    assert rctx.eval_sync("({a: 2})", external_copy=True).copy() == {"a": 2}
    assert rctx.global_.typeof == "object"
    assert rctx.eval_closure_sync("return $0()", [ivm.Callback(lambda: 1)],
                                  arguments_options={"copy": True}) == 1
    assert rctx.eval_closure_sync("return $0.copy()[1]", [ivm.ExternalCopy([1, 2])]) == 2
    assert rctx.eval_sync("'still usable'") == "still usable"


def test_heap_statistics_and_times(remote: ivm.Isolate, rctx: ivm.Context) -> None:
    rctx.eval_sync("globalThis.big = new Array(100000).fill(1); let s = 0;"
                   " for (let i = 0; i < 1e6; i++) s += i")
    stats = remote.get_heap_statistics_sync()
    assert stats.used_heap_size > 400_000
    assert stats.heap_size_limit > 0
    assert remote.cpu_time > 0 and remote.wall_time >= remote.cpu_time // 2


def test_timeout_runs_in_the_worker(rctx: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        rctx.eval_sync("while (true) {}", timeout=0.1)
    assert rctx.eval_sync("1 + 1") == 2


def test_terminate_from_another_thread(remote: ivm.Isolate, rctx: ivm.Context) -> None:
    timer = threading.Timer(0.2, remote.terminate)
    timer.start()
    try:
        with pytest.raises(ivm.TerminatedError):
            rctx.eval_sync("while (true) {}")
    finally:
        timer.join()
    assert rctx.eval_sync("'alive'") == "alive"


def test_memory_limit_is_the_same_kind_as_inline() -> None:
    with ivm.Isolate(memory_limit=16, process="isolated") as iso:
        ctx = iso.create_context_sync()
        with pytest.raises(ivm.MemoryLimitError):
            ctx.eval_sync("const a = []; while (true) a.push({x: a.length})")
        assert iso.is_disposed
        with pytest.raises(ivm.DisposedError):
            ctx.eval_sync("1")


def _bystanders() -> tuple[ivm.Isolate, ivm.Isolate]:
    inline = ivm.Isolate(memory_limit=32)
    other = ivm.Isolate(memory_limit=32, process="isolated")
    for iso in (inline, other):
        iso.create_context_sync().eval_sync("1")
    return inline, other


@pytest.mark.parametrize(
    ("code", "limit"),
    [("new Array(2**30).fill(0)", 128), ("new Array(1e8).fill(1.5)", 16), (STRING_LOOP, 32)],
    ids=["array-2**30", "array-1e8-16MB", "flat-strings-32MB"],
)
def test_v8_abort_costs_only_its_worker(code: str, limit: int) -> None:
    inline, other = _bystanders()
    try:
        iso = ivm.Isolate(memory_limit=limit, process="isolated")
        ctx = iso.create_context_sync()
        # The flat-string loop may also end as a MemoryLimitError: since the heap
        # limit is checked after every garbage collection, V8 often stops it in time.
        contained = (ivm.MemoryLimitError,) if code == STRING_LOOP else ()
        with pytest.raises((ivm.IsolateCrashedError, *contained)) as info:
            ctx.eval_sync(code)
        if isinstance(info.value, ivm.IsolateCrashedError):
            assert isinstance(info.value, ivm.DisposedError)
            assert "signal" in str(info.value) and "Fatal javascript OOM" in str(info.value)
            with pytest.raises(ivm.IsolateCrashedError):
                ctx.eval_sync("1")
        else:
            with pytest.raises(ivm.DisposedError):
                ctx.eval_sync("1")
        assert iso.is_disposed
        iso.dispose()
        assert inline.create_context_sync().eval_sync("'inline'") == "inline"
        assert other.create_context_sync().eval_sync("'other'") == "other"
    finally:
        inline.dispose()
        other.dispose()


def test_sigkill_costs_only_its_worker() -> None:
    inline, other = _bystanders()
    try:
        iso = ivm.Isolate(process="isolated")
        ctx = iso.create_context_sync()
        assert iso.pid is not None
        os.kill(iso.pid, signal.SIGKILL)
        with pytest.raises(ivm.IsolateCrashedError, match="SIGKILL"):
            ctx.eval_sync("1")
        with pytest.raises(ivm.IsolateCrashedError):
            iso.create_context_sync()
        iso.dispose()
        assert inline.create_context_sync().eval_sync("2") == 2
        assert other.create_context_sync().eval_sync("3") == 3
    finally:
        inline.dispose()
        other.dispose()


def test_a_group_crashes_together() -> None:
    with ivm.ProcessGroup() as pg:
        a = ivm.Isolate(group=pg)
        b = ivm.Isolate(group=pg)
        assert a.pid == b.pid == pg.pid
        ca, cb = a.create_context_sync(), b.create_context_sync()
        ca.eval_sync("globalThis.who = 'a'")
        assert cb.eval_sync("typeof who") == "undefined"
        os.kill(pg.pid, signal.SIGKILL)
        for ctx in (ca, cb):
            with pytest.raises(ivm.IsolateCrashedError, match="SIGKILL"):
                ctx.eval_sync("1")


def test_isolates_of_a_disposed_group_are_disposed() -> None:
    pg = ivm.ProcessGroup()
    iso = ivm.Isolate(group=pg)
    ctx = iso.create_context_sync()
    pg.dispose()
    with pytest.raises(ivm.DisposedError):
        ctx.eval_sync("1")
    with pytest.raises(ivm.DisposedError):
        ivm.Isolate(group=pg)


@pytest.mark.anyio
async def test_async_calls(remote: ivm.Isolate) -> None:
    ctx = await remote.create_context()
    assert await ctx.eval("6 * 7") == 42
    assert await ctx.eval("Promise.resolve([1, 2])", promise=True, copy=True) == [1, 2]
    assert await ctx.eval_closure("return $0 * 2", [21]) == 42
    script = await remote.compile_script("'run'")
    assert await script.run(ctx) == "run"
    assert (await remote.get_heap_statistics()).used_heap_size > 0
    with pytest.raises(ivm.JSError, match="nope"):
        await ctx.eval("throw new Error('nope')")
    with pytest.raises(ivm.TimeoutError):
        await ctx.eval("while (true) {}", timeout=0.1)
    results = []
    async with anyio.create_task_group() as tg:
        for i in range(20):
            async def one(i: int = i) -> None:
                results.append(await ctx.eval(f"{i} * 2"))
            tg.start_soon(one)
    assert sorted(results) == [i * 2 for i in range(20)]


@pytest.mark.anyio
async def test_cancel_stops_javascript_in_the_worker(remote: ivm.Isolate) -> None:
    ctx = await remote.create_context()
    with anyio.move_on_after(0.2) as scope:
        await ctx.eval("while (true) {}")
    assert scope.cancelled_caught
    assert await ctx.eval("1 + 1") == 2


@pytest.mark.anyio
async def test_pending_async_calls_fail_when_the_worker_dies() -> None:
    iso = ivm.Isolate(process="isolated")
    ctx = await iso.create_context()
    errors: list[BaseException] = []

    async def pending() -> None:
        try:
            await ctx.eval("while (true) {}")
        except ivm.IvmError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(pending)
        await anyio.sleep(0.2)
        assert iso.pid is not None
        os.kill(iso.pid, signal.SIGKILL)
    assert len(errors) == 3
    assert all(isinstance(e, ivm.IsolateCrashedError) and "SIGKILL" in str(e) for e in errors)
    with pytest.raises(ivm.IsolateCrashedError):
        await ctx.eval("1")
    iso.dispose()


def test_worker_that_stops_answering_is_killed(
    rctx: ivm.Context, remote: ivm.Isolate, wait_until: Callable[..., bool]
) -> None:
    """A worker that answers neither a call past its timeout nor a PING is killed."""
    pid = remote.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    # (kill() returns before the worker has stopped)
    assert wait_until(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T")
    start = time.monotonic()
    with pytest.raises(ivm.IsolateCrashedError, match="stopped answering"):
        rctx.eval_sync("1", timeout=0.05)
    assert time.monotonic() - start < 30


def test_worker_stopped_and_continued_in_a_timed_wait_keeps_working() -> None:
    """SIGSTOP then SIGCONT (a shell's Ctrl-Z and fg) while the worker sits in a wait with a
    timeout: the kernel resumes that wait through restart_syscall, which the sandbox allows
    (it killed the worker with SIGSYS)."""
    with ivm.Isolate(process="isolated") as iso:
        ctx = iso.create_context_sync()
        pid = iso.pid
        assert pid is not None

        def stop_and_continue() -> None:
            time.sleep(0.2)  # (the JavaScript below is in its wait by then, on any sane load)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.05)
            os.kill(pid, signal.SIGCONT)

        thread = threading.Thread(target=stop_and_continue)
        thread.start()
        try:
            waited = ctx.eval_sync("Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000)")
        finally:
            thread.join()
        assert waited == "timed-out"
        assert ctx.eval_sync("1 + 1") == 2


def test_create_eval_dispose_cycles_in_a_group_leak_nothing(no_leaks: None) -> None:
    with ivm.ProcessGroup() as pg:
        with ivm.Isolate(group=pg) as warm:
            warm.create_context_sync().eval_sync("1")
        fds, threads = _fd_count(), _thread_count()
        for i in range(100):
            iso = ivm.Isolate(memory_limit=16, group=pg)
            assert iso.create_context_sync().eval_sync(f"{i} + 1") == i + 1
            iso.dispose()
            del iso
        assert _fd_count() <= fds
        assert _thread_count() <= threads


def test_ignored_calls(remote: ivm.Isolate, rctx: ivm.Context, wait_until: Callable[..., bool],
                       ignored_errors: list[BaseException]) -> None:
    rctx.eval_ignored("globalThis.hits = 1")
    remote.compile_script_sync("hits += 1").run_ignored(rctx)
    rctx.eval_ignored("throw new Error('ignored')")
    assert wait_until(lambda: rctx.eval_sync("hits") == 2)
    assert wait_until(lambda: len(ignored_errors) == 1)
    assert isinstance(ignored_errors[0], ivm.JSError)


def test_repeated_worker_crashes_leak_nothing() -> None:
    with ivm.Isolate(process="isolated") as warm:
        warm.create_context_sync().eval_sync("1")
    fds, threads = _fd_count(), _thread_count()
    for _ in range(30):
        iso = ivm.Isolate(process="isolated")
        ctx = iso.create_context_sync()
        assert iso.pid is not None
        os.kill(iso.pid, signal.SIGKILL)
        with pytest.raises(ivm.IsolateCrashedError):
            ctx.eval_sync("1")
        iso.dispose()
        del iso, ctx
    children = [p for p in os.listdir("/proc") if p.isdigit() and _is_zombie_child(int(p))]
    assert children == []
    assert _fd_count() <= fds
    assert _thread_count() <= threads


def _is_zombie_child(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] == "Z" and int(fields[1]) == os.getpid()


def test_values_larger_than_a_frame_cross_but_each_frame_stays_bounded(rctx: ivm.Context) -> None:
    """Since 0.6 strings larger than a frame cross in memfds (at most 16 per frame); what
    is left inline must still fit one 16 MiB frame."""
    assert len(rctx.eval_sync("'x'.repeat(20 * 1024 * 1024)")) == 20 * 1024 * 1024
    assert rctx.eval_closure_sync("return $0.length", ["y" * (20 * 1024 * 1024)]) == 20 << 20
    sixteen = ["y" * (256 << 10)] * 16   # every descriptor of the frame: the next is inline
    with pytest.raises(ivm.TransferError, match="too large"):
        rctx.eval_closure_sync("return $0.length", sixteen + ["z" * (16 << 20)])
    big = rctx.eval_sync("new Uint8Array(4 * 1024 * 1024).fill(7)", copy=True)
    assert len(big) == 4 * 1024 * 1024 and big[123] == 7
    assert rctx.eval_sync("'still usable'") == "still usable"


def test_a_script_compiled_without_cache_options_has_no_cache(remote: ivm.Isolate) -> None:
    # (Hooks and code caches reach workers: test_remote_callbacks.py, test_remote_modules.py.)
    script = remote.compile_script_sync("6 * 7")
    assert script.cached_data is None and script.cached_data_rejected is False
    assert script.run_sync(remote.create_context_sync()) == 42


# A synchronous caller that nobody else reads for reads its own REPLY from the channel
# (worker_io.cc, ReadHere): whatever else arrives meanwhile must still reach its waiter.


@pytest.mark.anyio
async def test_async_replies_read_by_a_sync_caller_still_complete() -> None:
    with ivm.ProcessGroup() as pg:
        busy = ivm.Isolate(group=pg).create_context_sync()
        quick = ivm.Isolate(group=pg).create_context_sync()
        done = threading.Event()

        def hold_the_channel() -> None:
            # Blocks this thread reading the channel for the whole run below.
            busy.eval_sync("const t = Date.now(); while (Date.now() - t < 600) {}")
            done.set()

        t = threading.Thread(target=hold_the_channel)
        t.start()
        try:
            await anyio.sleep(0.1)
            with anyio.fail_after(20):
                results = [await quick.eval(f"{i} * 3") for i in range(20)]
            assert results == [i * 3 for i in range(20)]
            assert not done.is_set()  # they completed while the sync call still read
        finally:
            t.join(20)
        assert done.is_set()


def test_sync_callers_of_one_worker_on_many_threads() -> None:
    with ivm.ProcessGroup() as pg:
        ctxs = [ivm.Isolate(group=pg).create_context_sync() for _ in range(3)]
        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                for i in range(300):
                    assert ctxs[k].eval_sync(f"{i} + {k}") == i + k
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("spin", ["0", "1", "40", "10000", "junk", "-5"])
def test_waits_spin_or_sleep_alike(spin: str, monkeypatch: pytest.MonkeyPatch,
                                   run_child: Callable[..., Any]) -> None:
    """IVM_WORKER_SPIN_US (worker_io.cc: a synchronous caller polls its channel before it
    sleeps, and stops polling for a while after misses), IVM_WORKER_READ_SPIN_US (the
    worker's reader, likewise), IVM_WORKER_POOL_SPIN_NS (the worker's pool threads) and
    IVM_WORKER_FOLLOW_SPIN_US (the pool thread a synchronous call lends the reading to, or 0:
    no lending; worker_follow.cc) change no outcome: bursts of awaited calls over two workers, fast and slow synchronous
    calls in turns (so the adaptive polls turn off and back on), host callbacks, errors, and
    a worker killed mid-wait."""
    monkeypatch.setenv("IVM_WORKER_SPIN_US", spin)
    monkeypatch.setenv("IVM_WORKER_READ_SPIN_US", spin)
    monkeypatch.setenv("IVM_WORKER_FOLLOW_SPIN_US", spin)
    monkeypatch.setenv("IVM_WORKER_POOL_SPIN_NS", "50000" if spin == "40" else spin)
    proc = run_child("""
        import os, signal, threading, anyio, ivm
        iso = ivm.Isolate(process="isolated")
        ctx = iso.create_context_sync()
        iso2 = ivm.Isolate(process="isolated")
        ctx2 = iso2.create_context_sync()

        async def burst(n):
            slow = "{ const t = Date.now(); while (Date.now() - t < 1) {} } 0"
            got = [None] * n

            async def one(i):
                got[i] = await (ctx, ctx2)[i % 2].eval(f"{i} * 2" if i % 50 else slow)
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
            assert got == [i * 2 if i % 50 else 0 for i in range(n)], got
        for backend in ("asyncio", "trio", "asyncio"):
            anyio.run(burst, 400, backend=backend)
        iso2.dispose()
        slow = "{ const t = Date.now(); while (Date.now() - t < 2) {} } 7"
        for round in range(3):
            for i in range(150):
                assert ctx.eval_sync(f"{i} + 1") == i + 1
            for _ in range(6):
                assert ctx.eval_sync(slow) == 7
        ctx.eval_closure_sync("globalThis.twice = $0", [ivm.Callback(lambda x: x * 2)])
        assert ctx.eval_sync("twice(21) + twice(0)") == 42
        try:
            ctx.eval_sync("throw new RangeError('no')")
        except ivm.JSError as exc:
            assert "RangeError: no" in str(exc)
        else:
            raise AssertionError("no error")
        threading.Timer(0.3, os.kill, (iso.pid, signal.SIGKILL)).start()
        try:
            ctx.eval_sync("for (;;) {}")
        except ivm.IsolateCrashedError as exc:
            assert "SIGKILL" in str(exc)
        else:
            raise AssertionError("no crash")
        iso.dispose()
        print("ok")
        """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_what_the_worker_sends_unasked_after_sync_calls_arrives() -> None:
    # A synchronous caller leaves the channel paused in the I/O thread's epoll when it is done
    # (the next one takes it as it is: no epoll_ctl per call). Frames the worker then sends on
    # its own (a timer's console line: a host callback that no call runs) must still arrive,
    # the I/O thread resuming the channel shortly after; and waits that rely on the I/O
    # thread's reading (a PING with a timeout, an awaited call) must not stall on the pause.
    lines: list[str] = []
    got = threading.Event()

    def sink(level: str, text: str) -> None:
        lines.append(text)
        if len(lines) == 3:
            got.set()

    group = ivm.ProcessGroup()
    iso = ivm.Isolate(group=group)
    try:
        ctx = iso.create_context_sync(host=ivm.HostBasics(timers=True, console=sink))
        for i in range(3):
            assert ctx.eval_sync(f"setTimeout(() => console.log('late {i}'), {5 * i}); {i}") == i
        assert got.wait(60)  # with no further call from the host
        assert sorted(lines) == ["late 0", "late 1", "late 2"]
        for _ in range(3):
            assert ctx.eval_sync("1") == 1
            group.ping_sync(timeout=60)

        async def awaited() -> Any:
            assert ctx.eval_sync("2") == 2
            return await ctx.eval("3")

        assert anyio.run(awaited) == 3
    finally:
        iso.dispose()
        group.dispose()
