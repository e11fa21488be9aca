#!/usr/bin/env python3
"""bench/remote.py — the figures of isolates in worker processes (issue 11, section 6), beside
pydeno's IsolatedRuntime (`pydeno_isolated` in the anchors' document).

bench/run.py imports this file and measures these figures in its probe, in the same run as the
anchors; run as a script, it is a thin wrapper: `bench/run.py --figures isolated_ [ARGS]`
(add --no-anchors for ivm's figures alone).

The figures (names start with `isolated_`; ivm's inline figures stay as they are):
    isolated_eval_us               context.eval_sync('1+1') on a worker-hosted isolate
                                   (anchors' per-op rule)
    isolated_cold_start_ms         Isolate(process="isolated") + create_context_sync(): a
                                   fresh worker each time (spawn, V8, warm-up, sandbox,
                                   HELLO); anchors' create rule, dispose untimed
    isolated_pss_per_worker_mb     20 worker-hosted isolates (+ contexts) alive: this
                                   process's RSS growth + the workers' PSS
                                   (/proc/PID/smaps_rollup), / 20, in a fresh process; as the
                                   anchors measure pydeno_isolated's pss_per_isolate_mb
    isolated_async_evals_per_s_*   2000 eval('1+1') round-robin over 4 worker-hosted isolates
                                   (4 workers), all awaited at once; asyncio and trio
    isolated_death_reported_ms     a sync eval of `for (;;) {}` is running; SIGKILL to the
                                   worker; time until that call raises IsolateCrashedError
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time

MEMORY_LIMIT_MB = 128
PSS_WORKERS = 20

# Target rows (issue 11): (figure, op, bound, anchor or None). The cold start is compared with
# pydeno's fresh worker (worker_start_ms: spawn, V8, handshake), the same work ours does.
TARGETS = [
    ("isolated_eval_us", "<=", 0.2, "pydeno_isolated.eval_us"),
    ("isolated_cold_start_ms", "<=", 0.3, "pydeno_isolated.worker_start_ms"),
    ("isolated_pss_per_worker_mb", "<=", 0.5, "pydeno_isolated.pss_per_isolate_mb"),
    ("isolated_async_evals_per_s_asyncio", ">=", 10.0, "pydeno_isolated.async_evals_per_s"),
    ("isolated_async_evals_per_s_trio", ">=", 10.0, "pydeno_isolated.async_evals_per_s"),
    ("isolated_death_reported_ms", "<=", 50.0, None),                  # ms, absolute
]

# Ratios against pydeno_isolated: ivm's figure -> pydeno_isolated's figure of the same workload.
PYDENO_RATIOS = {
    "isolated_eval_us": "eval_us",
    "isolated_cold_start_ms": "worker_start_ms",
    "isolated_pss_per_worker_mb": "pss_per_isolate_mb",
    "isolated_async_evals_per_s_asyncio": "async_evals_per_s",
    "isolated_async_evals_per_s_trio": "async_evals_per_s",
    "eval_us": "eval_us",                      # inline, for comparison
    "async_evals_per_s_asyncio": "async_evals_per_s",
}


def _isolated(ivm):
    return ivm.Isolate(memory_limit=MEMORY_LIMIT_MB, process="isolated")


def register(figure, async_rate, needs_trio) -> None:
    """Adds the figures to bench/run.py's list (`figure` is its decorator factory;
    `async_rate(backend, make_isolate)` makes its async_evals_per_s measure)."""

    @figure("isolated_eval_us")
    def f_eval(p):
        iso = _isolated(p.ivm)
        try:
            ctx, check = iso.create_context_sync(), p.bl.check

            def batch(n):
                for _ in range(n):
                    check(ctx.eval_sync("1+1") == 2, "eval")
            p.r.notes["isolated_eval_us"] = ("eval_sync('1+1') on Isolate(memory_limit=128, "
                                             "process='isolated')")
            return p.bl.per_op_us(batch)
        finally:
            iso.dispose()

    @figure("isolated_cold_start_ms")
    def f_cold_start(p):
        def make():
            iso = _isolated(p.ivm)
            return iso, iso.create_context_sync()
        p.r.notes["isolated_cold_start_ms"] = (
            "Isolate(memory_limit=128, process='isolated') + create_context_sync(): a fresh "
            "worker each time (spawn, V8 start, warm-up, sandbox, HELLO, isolate, context); "
            "dispose() untimed")
        return p.bl.create_ms(make, lambda pair: pair[0].dispose())

    @figure("isolated_pss_per_worker_mb")
    def f_pss(p):
        p.close()
        res = p.child("pss")
        p.r.notes["isolated_pss_per_worker_mb"] = (
            f"in a fresh process, after one warm-up worker: {res['n']} x (Isolate(memory_limit="
            "128, process='isolated') + create_context_sync() + eval) alive; (this process's "
            "RSS growth + the workers' PSS from /proc/PID/smaps_rollup) / n; "
            f"isolated_rss_per_worker_mb: the same with the workers' RSS")
        p.r.out["isolated_rss_per_worker_mb"] = res["rss"]
        return res["pss"]

    figure("isolated_async_evals_per_s_asyncio")(async_rate("asyncio", _isolated))
    figure("isolated_async_evals_per_s_trio", needs_trio)(async_rate("trio", _isolated))

    @figure("isolated_death_reported_ms")
    def f_death(p):
        p.r.notes["isolated_death_reported_ms"] = (
            "eval_sync('for (;;) {}') running in a thread; SIGKILL to the worker; time until "
            "that call raises IsolateCrashedError; median of 7 (quick: 3)")
        return statistics.median(death_once(p.ivm) for _ in range(p.bl.reps(7, 3)))


def death_once(ivm) -> float:
    iso = _isolated(ivm)
    try:
        ctx = iso.create_context_sync()
        ctx.eval_sync("1")
        got: list = []

        def run():
            try:
                ctx.eval_sync("for (;;) {}")
            except ivm.IsolateCrashedError:
                got.append(time.perf_counter())
            except BaseException as e:  # noqa: BLE001 - reported below
                got.append(e)
        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.02)          # the loop is running in the worker
        t0 = time.perf_counter()
        os.kill(iso.pid, signal.SIGKILL)
        t.join(10)
        if not got or not isinstance(got[0], float):
            raise RuntimeError(f"the running call did not raise IsolateCrashedError: {got}")
        return (got[0] - t0) * 1e3
    finally:
        iso.dispose()


def pss_child(bl) -> dict:
    """Role "pss": (RSS growth + the workers' PSS) per worker with PSS_WORKERS alive."""
    import gc

    import ivm
    warm = _isolated(ivm)
    bl.check(warm.create_context_sync().eval_sync("1+1") == 2, "warm-up")
    warm.dispose()
    del warm
    gc.collect()
    time.sleep(0.2)
    n = bl.reps(PSS_WORKERS, 5)
    p0, (c0, s0) = bl.rss_mib(), bl.children_mem_mib()
    keep = []
    for _ in range(n):
        iso = _isolated(ivm)
        ctx = iso.create_context_sync()
        bl.check(ctx.eval_sync("1+1") == 2, "eval")
        keep.append((iso, ctx))
    time.sleep(0.3)
    p1, (c1, s1) = bl.rss_mib(), bl.children_mem_mib()
    if s1 <= 0:
        raise RuntimeError("no PSS readable from the workers' /proc/PID/smaps_rollup")
    for iso, _ in keep:
        iso.dispose()
    return {"pss": (p1 - p0 + s1 - s0) / n, "rss": (p1 - p0 + c1 - c0) / n, "n": n}


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, os.path.join(here, "run.py"), "--figures", "isolated_"] + sys.argv[1:]
    sys.exit(subprocess.call(cmd))
