"""Shared fixtures: fresh isolates and contexts, waiting for what happens on other threads,
the leak check, ignored errors, and the async backends.

The helpers reach tests as fixtures (`wait_until`, `settle`, ...): test modules are imported
with --import-mode=importlib, so they cannot import this file. Nothing here times a test;
the limits only bound how long a test waits for something that must happen."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import anyio
import pytest

import ivm

#: How long a test waits for something that must happen; nothing is expected to come close.
SANITY = 60.0
#: How long leak checks wait for frees that lag behind on libivm's threads.
SETTLE = 5.0


def _wait_until(predicate: Callable[[], bool], timeout: float = SANITY) -> bool:
    """Polls `predicate` from sync code until it holds (True) or `timeout` seconds pass
    (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


async def _wait_until_async(predicate: Callable[[], bool], timeout: float = SANITY) -> bool:
    """As `wait_until`, from async code: the event loop (asyncio or trio) runs meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.005)
    return True


def _live_objects() -> int:
    """How many libivm objects (handles, values, errors) are alive in the process."""
    return int(ivm._lib.ivm_debug_live_objects())


def _quiet_live_objects() -> int:
    """The live libivm object count once garbage from earlier tests is gone: collects until
    the count stops changing (frees can lag behind on libivm's threads)."""
    count = -1
    for _ in range(50):
        gc.collect()
        now = _live_objects()
        if now == count:
            return now
        count = now
        time.sleep(0.01)
    return count


class _Freed:
    """A `wait_until` predicate: after collecting garbage, is the live count back to
    `baseline`? Keeps the count it saw."""

    def __init__(self, baseline: int) -> None:
        self.baseline = baseline
        self.count = -1

    def __call__(self) -> bool:
        gc.collect()
        self.count = _live_objects()
        return self.count <= self.baseline


def _settle(baseline: int, timeout: float = SETTLE) -> int:
    """Collects garbage until the live count is back to `baseline` or `timeout` seconds pass
    (pool threads may still be finishing their last jobs); returns the last count."""
    freed = _Freed(baseline)
    _wait_until(freed, timeout)
    return freed.count


async def _settle_async(baseline: int, timeout: float = SETTLE) -> int:
    """As `settle`, from async code: the event loop drains completions meanwhile."""
    freed = _Freed(baseline)
    await _wait_until_async(freed, timeout)
    return freed.count


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no VmRSS in /proc/self/status")


@pytest.fixture
def remote() -> Iterator[ivm.Isolate]:
    """A 64 MB isolate in a worker process of its own, disposed after the test."""
    iso = ivm.Isolate(memory_limit=64, process="isolated")
    try:
        yield iso
    finally:
        iso.dispose()


@pytest.fixture
def rctx(remote: ivm.Isolate) -> ivm.Context:
    """A context of `remote`."""
    return remote.create_context_sync()


@pytest.fixture
def busy_exit_env() -> dict[str, str]:
    """The environment for a child process that exits with isolates still busy, on purpose.
    V8 cannot free a running isolate's memory at exit, so under tools/sanitize.py the child's
    LeakSanitizer would report it (more or less of it, by timing): that is not what such
    tests are about, so the child runs without the leak check (ASan's other checks stay)."""
    env = dict(os.environ)
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return env


# What LeakSanitizer prints when its own tracer thread, not the program, crashes at exit
# (under tools/sanitize.py; intermittent: no leak check ran). tools/sanitize.py runs the
# tests again for it; a child process that ends so is run again here.
LSAN_TRACER_CRASH = re.compile(r"Tracer caught signal \d+.*\n.*LeakSanitizer has encountered a "
                               r"fatal error", re.MULTILINE)


def _run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh Python importing the same ivm; fails the test if the
    child hangs past `timeout` (it is killed). A child whose only failure was
    LeakSanitizer's tracer crash runs again (at most three times in all)."""
    env = dict(os.environ)
    pkg_parent = str(Path(ivm.__file__).parent.parent)  # not resolved: symlinks
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    for attempt in range(3):
        try:
            proc = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(code)],
                cwd=pkg_parent,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            pytest.fail(f"the child process hung (killed after {timeout} s); its output:\n{out}")
        if proc.returncode == 0 or "ASAN_OPTIONS" not in env or attempt == 2 or \
                not LSAN_TRACER_CRASH.search(proc.stderr):
            return proc
    raise AssertionError("unreachable")


@pytest.fixture
def run_child() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_child(code, timeout=60)`: runs `code` (dedented) in a fresh Python that imports
    the same ivm; the test fails if the child hangs past `timeout` (it is killed)."""
    return _run_child


@pytest.fixture
def rss_mb() -> Callable[[], float]:
    """This process's resident memory in MiB, now (skips the test without /proc)."""
    return _rss_mb


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """`wait_until(predicate, timeout=SANITY)`: polls until `predicate()` holds; False if
    it still does not after `timeout` seconds. Tests assert its result."""
    return _wait_until


@pytest.fixture
def wait_until_async() -> Callable[..., Awaitable[bool]]:
    """`await wait_until_async(predicate, timeout=SANITY)`: as `wait_until`, letting the
    event loop run."""
    return _wait_until_async


@pytest.fixture
def live_objects() -> Callable[[], int]:
    """`live_objects()`: how many libivm objects are alive now."""
    return _live_objects


@pytest.fixture
def quiet_live_objects() -> Callable[[], int]:
    """`quiet_live_objects()`: the live count once earlier garbage is gone (a baseline)."""
    return _quiet_live_objects


@pytest.fixture
def settle() -> Callable[..., int]:
    """`settle(baseline, timeout=SETTLE)`: collects garbage until the live count is at most
    `baseline` (or the timeout passes); returns the count. Tests assert on it."""
    return _settle


@pytest.fixture
def settle_async() -> Callable[..., Awaitable[int]]:
    """`await settle_async(baseline, timeout=SETTLE)`: as `settle`, letting the event loop
    drain completions."""
    return _settle_async


@pytest.fixture
def isolate() -> Iterator[ivm.Isolate]:
    """A fresh 64 MB isolate, disposed after the test."""
    iso = ivm.Isolate(memory_limit=64)
    try:
        yield iso
    finally:
        iso.dispose()


@pytest.fixture
def context(isolate: ivm.Isolate) -> Iterator[ivm.Context]:
    """A fresh context in the `isolate` fixture's isolate."""
    ctx = isolate.create_context_sync()
    try:
        yield ctx
    finally:
        if not isolate.is_disposed:
            ctx.release()


@pytest.fixture(params=["inline", "isolated"])
def placement(request: pytest.FixtureRequest) -> str:
    """Where an isolate lives: "inline" (this process) or "isolated" (a worker process of
    its own); tests using it run once for each."""
    return str(request.param)


@pytest.fixture
def any_isolate(placement: str) -> Iterator[ivm.Isolate]:
    """As `isolate`, once inline and once in a worker process (`placement`): for tests
    whose outcome must not depend on where the isolate lives."""
    iso = ivm.Isolate(memory_limit=64, process=placement)  # type: ignore[arg-type]
    try:
        yield iso
    finally:
        iso.dispose()


@pytest.fixture
def any_context(any_isolate: ivm.Isolate) -> Iterator[ivm.Context]:
    """A fresh context in the `any_isolate` fixture's isolate."""
    ctx = any_isolate.create_context_sync()
    try:
        yield ctx
    finally:
        if not any_isolate.is_disposed:
            ctx.release()


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if libivm objects it created outlive it (after garbage collection).

    The baseline is taken once earlier tests' garbage is gone; a count below it passes (an
    object of an earlier test may be freed meanwhile). Tests using it make their own
    isolates: pytest holds fixture values (like `isolate`) until after every fixture's
    teardown, so they would count as leaks."""
    baseline = _quiet_live_objects()
    yield
    count = _settle(baseline)
    assert count <= baseline, f"libivm objects leaked: {count} > {baseline}"


@pytest.fixture
def ignored_errors() -> Iterator[list[BaseException]]:
    """Collects what the ignored-error handler is given; resets the handler after."""
    seen: list[BaseException] = []
    lock = threading.Lock()

    def handler(exc: BaseException) -> None:  # any thread
        with lock:
            seen.append(exc)

    ivm.set_ignored_error_handler(handler)
    try:
        yield seen
    finally:
        ivm.set_ignored_error_handler(None)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
