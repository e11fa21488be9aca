"""``Isolate(on_catastrophic_error=...)``: called once with the cause when a worker-hosted
isolate's worker crashes (on a thread of libivm's, so it may start a new worker), never
for a disposed isolate; inline, V8's fatal out-of-memory handler reports through it just
before the process aborts (in a child process here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable

import anyio
import pytest

import ivm


class Seen:
    """The causes a callback received, and on which threads."""

    def __init__(self) -> None:
        self.causes: list[str] = []
        self.threads: list[str] = []

    def __call__(self, cause: str) -> None:
        self.threads.append(threading.current_thread().name)
        self.causes.append(cause)


def test_a_worker_crash_is_reported_once(wait_until: Callable[..., bool]) -> None:
    seen = Seen()
    iso = ivm.Isolate(process="isolated", on_catastrophic_error=seen)
    try:
        ctx = iso.create_context_sync()
        assert iso.pid is not None
        os.kill(iso.pid, signal.SIGKILL)
        with pytest.raises(ivm.IsolateCrashedError) as info:
            ctx.eval_sync("1")
        assert wait_until(lambda: seen.causes)
        time.sleep(0.1)
        with pytest.raises(ivm.IsolateCrashedError):
            ctx.eval_sync("1")
        assert seen.causes == [str(info.value)]
        assert "SIGKILL" in seen.causes[0]
        assert seen.threads != [threading.current_thread().name]
    finally:
        iso.dispose()
    assert len(seen.causes) == 1


@pytest.mark.anyio
async def test_an_awaited_call_and_the_report(
        wait_until_async: Callable[..., Awaitable[bool]]) -> None:
    seen = Seen()
    iso = ivm.Isolate(process="isolated", on_catastrophic_error=seen)
    try:
        ctx = await iso.create_context()
        errors: list[BaseException] = []

        async def pending() -> None:
            try:
                await ctx.eval("for (;;) {}")
            except ivm.IvmError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pending)
            await anyio.sleep(0.1)
            assert iso.pid is not None
            os.kill(iso.pid, signal.SIGKILL)
        assert [type(e) for e in errors] == [ivm.IsolateCrashedError]
        assert await wait_until_async(lambda: seen.causes)
        assert seen.causes == [str(errors[0])]
    finally:
        iso.dispose()


def test_every_isolate_of_a_crashed_group_but_a_disposed_one(
        wait_until: Callable[..., bool]) -> None:
    a, b, c = Seen(), Seen(), Seen()
    with ivm.ProcessGroup() as group:
        isolates = [ivm.Isolate(group=group, on_catastrophic_error=s) for s in (a, b, c)]
        isolates[2].dispose()
        os.kill(group.pid, signal.SIGKILL)
        assert wait_until(lambda: a.causes and b.causes)
        time.sleep(0.1)
        for iso in isolates:
            iso.dispose()
    assert len(a.causes) == len(b.causes) == 1 and a.causes == b.causes
    assert c.causes == []


def test_no_report_for_a_disposed_isolate() -> None:
    seen = Seen()
    iso = ivm.Isolate(process="isolated", on_catastrophic_error=seen)
    pid = iso.pid
    iso.create_context_sync().eval_sync("1")
    iso.dispose()
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    time.sleep(0.1)
    assert seen.causes == []


def test_the_callback_may_start_a_new_worker(wait_until: Callable[..., bool]) -> None:
    """It runs on a thread of its own: starting a worker there needs libivm's I/O thread."""
    results: list[object] = []

    def replace(cause: str) -> None:
        with ivm.Isolate(process="isolated") as fresh:
            results.append(fresh.create_context_sync().eval_sync("6 * 7"))

    iso = ivm.Isolate(process="isolated", on_catastrophic_error=replace)
    try:
        assert iso.pid is not None
        os.kill(iso.pid, signal.SIGKILL)
        assert wait_until(lambda: results)
        assert results == [42]
    finally:
        iso.dispose()


def test_what_the_callback_raises_is_logged(wait_until: Callable[..., bool],
                                           caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def boom(cause: str) -> None:
        calls.append(cause)
        raise RuntimeError("boom")

    iso = ivm.Isolate(process="isolated", on_catastrophic_error=boom)
    try:
        assert iso.pid is not None
        os.kill(iso.pid, signal.SIGKILL)
        assert wait_until(lambda: calls and "on_catastrophic_error raised" in caplog.text)
        with ivm.Isolate(process="isolated") as other:
            assert other.create_context_sync().eval_sync("1 + 1") == 2
    finally:
        iso.dispose()


def test_a_handler_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_catastrophic_error"):
        ivm.Isolate(on_catastrophic_error=42)  # type: ignore[arg-type]


_INLINE_OOM = """
import sys, ivm
def report(cause):
    print("reported:", cause, flush=True)
iso = ivm.Isolate(memory_limit=16, on_catastrophic_error=report)
iso.create_context_sync().eval_sync(sys.argv[1])
print("not reached", flush=True)
"""


def test_inline_v8_fatal_oom_reports_before_the_process_ends() -> None:
    """The strict xfail of tests/test_memory.py (one allocation past the unwind room)
    still ends the process, but the callback hears of it first."""
    proc = subprocess.run(
        [sys.executable, "-c", _INLINE_OOM, "new Array(1e8).fill(0)"],
        cwd=Path(ivm.__file__).parent.parent,  # the installed ivm, not the source tree
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGABRT, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("reported: Fatal javascript OOM in "), lines
    assert "Fatal javascript OOM in" in proc.stderr   # V8's own message, as without a handler
