"""ProcessGroup: a sandboxed ivm-worker process, its crashes reported as
IsolateCrashedError, and a host that nothing a worker does can hurt.

Misbehaviour comes from ivm-worker-test (the worker built with its test hooks, installed
beside ivm-worker), chosen through IVM_WORKER_PATH; the default worker has no hooks."""

from __future__ import annotations

import os
import random
import signal
import struct
from pathlib import Path
from typing import Callable, Iterator

import pytest

import ivm
from ivm._ffi import ffi, lib

PKG = Path(ivm.__file__).resolve().parent
TEST_WORKER = PKG / "ivm-worker-test"

HOOK_OPEN_FILE = lib.IVM_DEBUG_HOOK_OPEN_FILE
HOOK_SOCKET = lib.IVM_DEBUG_HOOK_SOCKET
HOOK_SEND_BYTES = lib.IVM_DEBUG_HOOK_SEND_BYTES
HOOK_EXIT = lib.IVM_DEBUG_HOOK_EXIT
HOOK_ABORT = lib.IVM_DEBUG_HOOK_ABORT
HOOK_EVAL = lib.IVM_DEBUG_HOOK_EVAL

# Frame kinds and limits of docs/wire-protocol.md.
PONG, REPLY, HELLO, CALL = 8, 3, 1, 2
MAX_PAYLOAD = 16 << 20


def hook(group: ivm.ProcessGroup, action: int, data: bytes = b"") -> None:
    """Has the (test) worker do `action`; raises what the call fails with."""
    err = lib.ivm_debug_process_group_hook(group._ptr, action, data, len(data))
    if err:
        raise ivm._errors.error_from(err)


def frame(kind: int, payload: bytes = b"", id: int = 0, flags: int = 0) -> bytes:
    return struct.pack("<IHHQ", len(payload), kind, flags, id) + payload


@pytest.fixture
def test_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Later ProcessGroups run ivm-worker-test."""
    assert TEST_WORKER.is_file(), f"{TEST_WORKER} is missing: reinstall the package"
    monkeypatch.setenv("IVM_WORKER_PATH", str(TEST_WORKER))


@pytest.fixture
def group() -> Iterator[ivm.ProcessGroup]:
    g = ivm.ProcessGroup()
    try:
        yield g
    finally:
        g.dispose()


def crash_of(group: ivm.ProcessGroup, wait_until: Callable[..., bool]) -> str:
    """Waits for the worker's death and returns its cause."""
    assert wait_until(lambda: not group.alive)
    crash = group.crash
    assert isinstance(crash, ivm.IsolateCrashedError)
    return str(crash)


def test_spawn_ping_dispose() -> None:
    with ivm.ProcessGroup() as g:
        assert g.pid > 0 and g.pid != os.getpid()
        g.ping_sync()
        g.ping_sync(timeout=60)
        assert g.alive and g.crash is None
        assert f"pid={g.pid}" in repr(g)
    g.dispose()  # idempotent
    assert not g.alive and g.crash is None
    with pytest.raises(ivm.DisposedError) as info:
        g.ping_sync()
    assert not isinstance(info.value, ivm.IsolateCrashedError)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        ivm.ProcessGroup(startup_timeout=0)
    with pytest.raises(TypeError):
        ivm.ProcessGroup(max_rss_mb="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ivm.ProcessGroup(cpu_limit=float("inf"))


def test_worker_is_sandboxed(group: ivm.ProcessGroup) -> None:
    status = Path(f"/proc/{group.pid}/status").read_text()
    assert "\nSeccomp:\t2\n" in status
    assert "\nNoNewPrivs:\t1\n" in status
    assert sorted(os.listdir(f"/proc/{group.pid}/fd"), key=int) == ["0", "1", "2", "3"]


def test_sigkill_is_reported(group: ivm.ProcessGroup, wait_until: Callable[..., bool]) -> None:
    os.kill(group.pid, signal.SIGKILL)
    cause = crash_of(group, wait_until)
    assert "SIGKILL" in cause and str(group.pid) in cause
    with pytest.raises(ivm.IsolateCrashedError, match="SIGKILL"):
        group.ping_sync()
    with pytest.raises(ivm.DisposedError, match="SIGKILL"):  # a subclass of it
        group.ping_sync(timeout=1)
    group.dispose()
    assert isinstance(group.crash, ivm.IsolateCrashedError)  # crashed before it was disposed


def test_default_worker_has_no_test_hooks(group: ivm.ProcessGroup) -> None:
    with pytest.raises(ValueError, match="no test hooks"):
        hook(group, HOOK_OPEN_FILE)
    group.ping_sync()
    assert b"malformed test hook call" not in (PKG / "ivm-worker").read_bytes()
    assert b"malformed test hook call" in TEST_WORKER.read_bytes()


@pytest.mark.usefixtures("test_worker")
@pytest.mark.parametrize("action", [HOOK_OPEN_FILE, HOOK_SOCKET])
def test_sandbox_stops_files_and_sockets(action: int) -> None:
    with ivm.ProcessGroup() as g:
        with pytest.raises(ivm.IsolateCrashedError) as info:
            hook(g, action)
        assert "SIGSYS" in str(info.value) and "seccomp" in str(info.value)
        assert "SIGSYS" in str(g.crash)


@pytest.mark.usefixtures("test_worker")
def test_v8_runs_inside_the_sandbox() -> None:
    code = (b"const w = new WebAssembly.Instance(new WebAssembly.Module("
            b"new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])));"
            b"JSON.stringify([new Date().toString(), Math.random() < 1, /(\\d+)/u.exec('a42')[1],"
            b" new Intl.DateTimeFormat('en', {timeZone: 'Asia/Tokyo'}).format(0),"
            b" new Intl.NumberFormat('de').format(1234.5), 'x'.repeat(1e6).length,"
            b" new Array(1e6).fill(1.5).length, new ArrayBuffer(1e7).byteLength])")
    with ivm.ProcessGroup() as g:
        hook(g, HOOK_EVAL, code)
        with pytest.raises(ivm.JSError) as info:  # the kind and message cross, not the stack
            hook(g, HOOK_EVAL, b"throw new Error('boom')")
        assert info.value.message == "boom"
        g.ping_sync()
        assert g.alive


@pytest.mark.usefixtures("test_worker")
def test_stderr_tail_is_in_the_cause(wait_until: Callable[..., bool]) -> None:
    fatal = b"\n#\n# Fatal javascript OOM in Reached heap limit\n#\n"
    with ivm.ProcessGroup() as g:
        with pytest.raises(ivm.IsolateCrashedError) as info:
            hook(g, HOOK_ABORT, b"x" * 20000 + fatal)
    cause = str(info.value)
    assert "SIGABRT" in cause and "Fatal javascript OOM in Reached heap limit" in cause
    assert len(cause) < 8192 + 300  # the tail is bounded
    with ivm.ProcessGroup() as g:
        with pytest.raises(ivm.IsolateCrashedError, match=r"exited with status 1(.|\n)*last words"):
            hook(g, HOOK_EXIT, b"last words\n")


@pytest.mark.usefixtures("test_worker")
@pytest.mark.parametrize("data, why", [
    (b"\xff" * 16, "unknown frame kind"),
    (frame(PONG, id=12345), "unexpected PONG"),
    (frame(HELLO, b"IVMW"), "second HELLO"),
    (frame(REPLY, b"\x01", id=1), "unexpected REPLY"),
    (frame(PONG, flags=1 << 7), "reserved flag"),
    (frame(PONG, flags=1 << 5), "reserved flag"),  # the sync-call hint is for CALLs only
    (frame(CALL, flags=1 << 5, id=1), "which workers never send"),
    (frame(PONG, flags=1), "descriptors"),
    (struct.pack("<IHHQ", MAX_PAYLOAD + 1, PONG, 0, 0), "exceeds the limit"),
])
def test_malformed_frame_is_a_crash(data: bytes, why: str,
                                    wait_until: Callable[..., bool]) -> None:
    with ivm.ProcessGroup() as g:
        hook(g, HOOK_SEND_BYTES, data)
        cause = crash_of(g, wait_until)
    assert "protocol violation" in cause and why in cause


@pytest.mark.usefixtures("test_worker")
def test_hang_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVM_WORKER_TEST_HANG", "1")
    with pytest.raises(ivm.IsolateCrashedError, match="did not start within 300 ms"):
        ivm.ProcessGroup(startup_timeout=0.3)


def test_missing_worker_fails_cleanly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IVM_WORKER_PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(ivm.IvmError, match="cannot start the worker"):
        ivm.ProcessGroup()


def test_max_rss_kills_the_worker(wait_until: Callable[..., bool]) -> None:
    try:
        g = ivm.ProcessGroup(max_rss_mb=1)  # V8 alone is more: killed at once
    except ivm.IsolateCrashedError as exc:
        cause = str(exc)
    else:
        cause = crash_of(g, wait_until)
    assert "exceeded max_rss_mb=1" in cause


@pytest.mark.usefixtures("test_worker")
def test_cpu_limit_ends_the_worker() -> None:
    with ivm.ProcessGroup(cpu_limit=1) as g:
        with pytest.raises(ivm.IsolateCrashedError, match="SIGXCPU|SIGKILL"):
            hook(g, HOOK_EVAL, b"for (;;) {}")


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _zombie_children() -> list[int]:
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry))
    return zombies


def test_crash_cycles_leak_nothing(wait_until: Callable[..., bool]) -> None:
    with ivm.ProcessGroup() as g:  # the I/O thread and its descriptors exist from here
        g.ping_sync()
    fds, threads = _fd_count(), _thread_count()
    for _ in range(100):
        g = ivm.ProcessGroup()
        os.kill(g.pid, signal.SIGKILL)
        assert "SIGKILL" in crash_of(g, wait_until)
        g.dispose()
        del g
    assert _zombie_children() == []
    assert _fd_count() <= fds
    assert _thread_count() <= threads


@pytest.mark.usefixtures("test_worker")
def test_frame_reader_fuzz() -> None:
    """Mutated frames from a worker never crash or hang the host: each either kills the
    worker as a protocol violation, or is swallowed (a partial frame) so that the next
    ping times out; the host then disposes the worker and goes on."""
    rng = random.Random(1234)
    seeds = [frame(PONG, id=1), frame(REPLY, struct.pack("<II", 0, 0), id=2),
             frame(HELLO, struct.pack("<III", 0x574D5649, 1, lib.ivm_version()) + b"\0" * 4),
             frame(REPLY, struct.pack("<II", 5, 3) + b"abc", id=3)]
    g = ivm.ProcessGroup()
    outcomes = {"crash": 0, "timeout": 0, "ok": 0}
    for _ in range(60):
        data = bytearray(rng.choice(seeds) * rng.randint(1, 3))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data))
            if op == 0:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
            elif op == 2:
                del data[pos:pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        hook(g, HOOK_SEND_BYTES, bytes(data))
        try:
            g.ping_sync(timeout=0.2)
            outcomes["ok"] += 1
            continue
        except ivm.IsolateCrashedError as exc:
            assert "protocol violation" in str(exc)
            outcomes["crash"] += 1
        except ivm.TimeoutError:
            outcomes["timeout"] += 1
        g.dispose()
        g = ivm.ProcessGroup()
    g.dispose()
    assert outcomes["crash"] > 0, outcomes
    with ivm.ProcessGroup() as fresh:
        fresh.ping_sync()


# --- copies from a lying worker -----------------------------------------------------------
# A worker's value results reach Python's Unpickler; libivm admits only streams with the copy
# format's shape (libivm/copy_check.cc). IVM_DEBUG_HOOK_FORGE_VALUE makes the test worker send
# `stream` as the next value result.
HOOK_FORGE_VALUE = lib.IVM_DEBUG_HOOK_FORGE_VALUE
P5 = b"\x80\x05"  # PROTO 5

LYING_STREAMS = {
    # LONG_BINPUT 2**31: Python's Unpickler would size its memo for 2**31 entries.
    "memo index far past the entries put": P5 + b"N" + b"r" + struct.pack("<I", 2**31) + b".",
    "memo read before it is put": P5 + b"h\x00" + b".",
    "string longer than the stream": P5 + b"X" + struct.pack("<I", 1 << 30) + b"abc" + b".",
    "frame longer than the stream": P5 + b"\x95" + struct.pack("<Q", 1 << 40) + b"N.",
    "bytes after STOP": P5 + b"N." + b"N",
    "no STOP": P5 + b"N",
    "two values at STOP": P5 + b"NN.",
    "APPENDS without a MARK": P5 + b"]Ne.",
    "an opcode outside the format (BUILD)": P5 + b"}}b.",
    "no PROTO": b"N.",
}


@pytest.mark.parametrize("stream", list(LYING_STREAMS.values()), ids=list(LYING_STREAMS))
def test_a_worker_sending_a_malformed_copy_is_treated_as_crashed(
    test_worker: None, group: ivm.ProcessGroup, stream: bytes
) -> None:
    isolate = ivm.Isolate(group=group)
    context = isolate.create_context_sync()
    hook(group, HOOK_FORGE_VALUE, stream)
    with pytest.raises(ivm.IsolateCrashedError, match="malformed value"):
        context.eval_sync("1")
    other = ivm.Isolate()  # the host is unhurt
    assert other.create_context_sync().eval_sync("6 * 7") == 42
    other.dispose()


def test_a_worker_forging_a_well_formed_copy_is_believed(
    test_worker: None, group: ivm.ProcessGroup
) -> None:
    """The counterpart: the hook works, and a stream of the right shape passes (what it says
    is the worker's word, like any result of its JavaScript)."""
    isolate = ivm.Isolate(group=group)
    context = isolate.create_context_sync()
    hook(group, HOOK_FORGE_VALUE, P5 + b"](K\x01K\x02e\x94.")  # [1, 2], memoized
    assert context.eval_sync("1") == [1, 2]
    assert context.eval_sync("3") == 3  # only the next result was forged
