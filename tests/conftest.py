"""Shared fixtures: fresh isolates and contexts, a leak check, and the async backends."""

from __future__ import annotations

import gc
import threading
import time
from typing import Callable, Iterator

import pytest

import ivm


def live_objects() -> int:
    """How many libivm objects (handles, values, errors) are alive in the process."""
    return int(ivm._lib.ivm_debug_live_objects())


def settle(baseline: int, rounds: int = 10) -> int:
    """Collects garbage until the live count is back to `baseline` (or `rounds` pass);
    returns the last count."""
    count = live_objects()
    for _ in range(rounds):
        if count <= baseline:
            break
        gc.collect()
        count = live_objects()
    return count


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


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if libivm objects it created outlive it (after garbage collection).

    Tests using it make their own isolates: pytest holds fixture values (like `isolate`)
    until after every fixture's teardown, so they would count as leaks."""
    gc.collect()
    baseline = live_objects()
    yield
    assert settle(baseline) == baseline, "libivm objects leaked"


def _quiet_live_objects() -> int:
    """The live libivm object count once garbage from earlier tests is gone: collects until
    the count stops changing (frees can lag behind on libivm's threads)."""
    count = -1
    for _ in range(50):
        gc.collect()
        now = live_objects()
        if now == count:
            return now
        count = now
        time.sleep(0.01)
    return count


@pytest.fixture
def quiet_live_objects() -> Callable[[], int]:
    """The function giving the quiet live libivm object count (see `leak_free`)."""
    return _quiet_live_objects


@pytest.fixture
def leak_free() -> Iterator[None]:
    """Fails the test if libivm objects it created outlive it (after garbage collection).
    Unlike `no_leaks`, the baseline is taken once earlier tests' garbage is gone, and a
    count below it passes (objects of earlier tests may be freed meanwhile)."""
    baseline = _quiet_live_objects()
    yield
    count = live_objects()
    for _ in range(50):
        if count <= baseline:
            break
        gc.collect()
        time.sleep(0.01)
        count = live_objects()
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
