#!/usr/bin/env python3
"""bench/remote.py — quick figures for isolates in worker processes, beside inline ones.

    python bench/remote.py [--evals N]

Prints one JSON object: sync eval latency (µs, median of batches), cold start of an isolate
with its own worker until a context is ready (ms, median), async evals/s across 4 workers,
and the time from a worker's SIGKILL to the host reporting it (ms, median). No timing
loop runs long; the machine's load average is recorded beside the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import time

import ivm


def eval_latency_us(ctx: ivm.Context, n: int) -> float:
    for _ in range(200):
        ctx.eval_sync("1")
    batches = []
    for _ in range(10):
        t = time.perf_counter()
        for _ in range(n // 10):
            ctx.eval_sync("1")
        batches.append((time.perf_counter() - t) / (n // 10) * 1e6)
    return statistics.median(batches)


def cold_start_ms(rounds: int = 8) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        iso = ivm.Isolate(process="isolated")
        iso.create_context_sync()
        times.append((time.perf_counter() - t) * 1e3)
        iso.dispose()
    return statistics.median(times)


async def async_rate(isolates: list[ivm.Isolate], total: int, inflight: int = 64) -> float:
    ctxs = [await iso.create_context() for iso in isolates]

    async def lane(ctx: ivm.Context, count: int) -> None:
        for _ in range(count):
            await ctx.eval("1")

    per_lane = total // (len(ctxs) * inflight)
    t = time.perf_counter()
    await asyncio.gather(*(lane(c, per_lane) for c in ctxs for _ in range(inflight)))
    return per_lane * len(ctxs) * inflight / (time.perf_counter() - t)


def death_ms(rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        iso = ivm.Isolate(process="isolated")
        assert iso.pid is not None
        t = time.perf_counter()
        os.kill(iso.pid, signal.SIGKILL)
        while not iso.is_disposed:
            time.sleep(0.0002)
        times.append((time.perf_counter() - t) * 1e3)
        iso.dispose()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evals", type=int, default=5000)
    args = parser.parse_args()
    out: dict[str, object] = {"loadavg_before": os.getloadavg()[0]}
    with ivm.Isolate() as inline, ivm.Isolate(process="isolated") as remote:
        out["eval_sync_us_inline"] = round(eval_latency_us(inline.create_context_sync(), args.evals), 2)
        out["eval_sync_us_remote"] = round(eval_latency_us(remote.create_context_sync(), args.evals), 2)
    out["cold_start_ms_remote"] = round(cold_start_ms(), 2)
    isolates = [ivm.Isolate(process="isolated") for _ in range(4)]
    try:
        out["async_evals_per_s_4_workers"] = round(asyncio.run(async_rate(isolates, args.evals * 4)))
    finally:
        for iso in isolates:
            iso.dispose()
    with ivm.Isolate() as inline:
        out["async_evals_per_s_inline_1"] = round(asyncio.run(async_rate([inline], args.evals * 4)))
    out["death_reported_ms"] = round(death_ms(), 2)
    out["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
