"""An awaited call always yields to the event loop, even when it finishes at once."""

from __future__ import annotations

import anyio
import pytest

import ivm


@pytest.mark.anyio
async def test_a_loop_of_awaited_calls_lets_other_tasks_run(context: ivm.Context) -> None:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0)
        start = ticks
        for _ in range(200):
            assert await context.eval("1 + 1") == 2
        done = True
    # Each awaited call is a schedule point: the ticker ran alongside.
    assert ticks - start >= 100


@pytest.mark.anyio
async def test_a_timeout_interrupts_a_loop_of_fast_calls(context: ivm.Context) -> None:
    calls = 0
    with anyio.move_on_after(0.2):
        while True:
            await context.eval("1")
            calls += 1
    assert calls > 0
    assert await context.eval("2") == 2
