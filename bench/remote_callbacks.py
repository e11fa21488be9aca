#!/usr/bin/env python3
"""bench/remote_callbacks.py — the cost of a host callback called from JavaScript, inline and
in a worker process.

    python bench/remote_callbacks.py [--calls N]

Prints one JSON object, per placement: µs per callback round trip from a synchronous call
(best of 5 batches of N calls made by one JavaScript loop), the same with the callback
re-entering the isolate (a nested eval_sync), and from an asynchronous call (the callback
runs on a runner thread). No loop runs long; the load average is recorded beside the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import ivm


def loop(n: int) -> str:
    return "{ let s = 0; for (let i = 0; i < %d; i++) s = f(s); s }" % n


def measure(process: str, n: int) -> dict[str, float]:
    iso = ivm.Isolate(process=process)  # type: ignore[arg-type]
    try:
        ctx = iso.create_context_sync()
        ctx.eval_closure_sync("globalThis.f = $0; globalThis.g = $1",
                              [ivm.Callback(lambda x: x + 1), ivm.Callback(lambda: ctx.eval_sync("1"))])
        ctx.eval_sync(loop(200))

        def best(run: object, calls: int) -> float:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                run()  # type: ignore[operator]
                times.append((time.perf_counter() - t) / calls * 1e6)
            return round(min(times), 1)

        async def async_batch() -> None:
            await ctx.eval(loop(n))

        return {
            "sync_call_us": best(lambda: ctx.eval_sync(loop(n)), n),
            "nested_eval_us": best(lambda: ctx.eval_sync("for (let i = 0; i < %d; i++) g(); 0" % (n // 4)), n // 4),
            "async_call_us": best(lambda: asyncio.run(async_batch()), n),
        }
    finally:
        iso.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    out = {p: measure(p, args.calls) for p in ("inline", "isolated")}
    out["loadavg"] = list(os.getloadavg())  # type: ignore[assignment]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
