"""Shared fixtures: fresh isolates and contexts, a leak check, and the async backends."""

from __future__ import annotations

import gc
from typing import Iterator

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


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
