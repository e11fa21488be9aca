"""Runs untrusted JavaScript jobs on a Dask cluster: actors that each own sandboxed isolates.

    python docs/examples/dask_job_runner.py [--scheduler ADDRESS] [--actors N] [--isolates K]

Scale-out without a cluster protocol of ivm's own: Dask places the actors and carries the jobs
and results; ivm only runs JavaScript. Each actor (a ``JobRunner`` living in a Dask worker
process) owns K isolates, each in its own sandboxed ivm worker process
(``ivm.Isolate(process="isolated")``, docs/process.md). A job that aborts V8 itself costs one
ivm worker process: the job fails with ``ivm.IsolateCrashedError`` and the actor replaces that
isolate, while the Dask worker, the other isolates and the other jobs carry on. A memory hog
hits its isolate's memory limit and is replaced the same way; an endless loop hits its timeout.

Without ``--scheduler`` the example starts a local cluster of two Dask worker processes (one
thread each) and stops it at the end. With ``--scheduler tcp://host:8786`` it uses a running
cluster whose workers have ivm installed. Needs ``pip install 'ivm[dask]'``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from typing import Any

import ivm

#: (name, JavaScript) of each job. Results must be primitives (strings, numbers...).
JOBS: list[tuple[str, str]] = [
    ("sum to 1000", "let s = 0; for (let i = 1; i <= 1000; i++) s += i; s"),
    ("fibonacci", "const fib = n => n < 2 ? n : fib(n - 1) + fib(n - 2); fib(20)"),
    ("infinite loop", "while (true) {}"),
    ("engine abort", "'x'.repeat(2 ** 27).split('')"),  # ends its process, inline or not
    ("memory hog", "const hog = []; while (true) hog.push(new Array(1e5).fill(1))"),
    ("json", "JSON.stringify({ squares: [1, 2, 3].map(x => x * x) })"),
    ("syntax error", "let = ;"),
    ("throw", "throw new RangeError('user code gave up')"),
    ("big integer", "2n ** 100n"),
    ("greeting", "['hello', 'from', 'a', 'worker'].join(' ')"),
]


class JobRunner:
    """A Dask actor: K worker-hosted isolates, used in turn; crashed or disposed ones are
    replaced. Dask runs an actor's methods one at a time, on its worker's actor thread."""

    def __init__(self, isolates: int, memory_limit: float, timeout: float) -> None:
        self.memory_limit = memory_limit
        self.timeout = timeout
        self.isolates = [self._new_isolate() for _ in range(isolates)]
        self.turn = 0
        self.replaced = 0

    def _new_isolate(self) -> ivm.Isolate:
        return ivm.Isolate(memory_limit=self.memory_limit, process="isolated")

    def run(self, name: str, code: str) -> tuple[str, str, str]:
        """(status, detail, where) of one job: status is "ok" or "FAIL"."""
        k = self.turn % len(self.isolates)
        self.turn += 1
        isolate = self.isolates[k]
        where = f"dask worker {os.getpid()}, isolate {k} (ivm worker {isolate.pid})"
        try:
            with isolate.create_context_sync() as context:
                result = context.eval_sync(code, timeout=self.timeout, filename=f"{name}.js")
        except ivm.IvmError as exc:
            status, detail = "FAIL", describe(exc)
        else:
            status, detail = "ok", repr(result)
        if isolate.is_disposed:  # its memory limit, or its worker process crashed
            isolate.dispose()  # idempotent; frees what is left of it
            self.isolates[k] = self._new_isolate()
            self.replaced += 1
            detail += f" -> isolate {k} replaced (ivm worker {self.isolates[k].pid})"
        return status, detail, where

    def close(self) -> int:
        """Disposes the isolates (their worker processes end); returns how many were replaced."""
        for isolate in self.isolates:
            isolate.dispose()
        return self.replaced


def describe(exc: ivm.IvmError) -> str:
    if isinstance(exc, ivm.JSError):
        return exc.stack.splitlines()[0] if exc.stack else repr(exc.message)
    # A crash's message goes on with the tail of the worker's stderr; its start says enough.
    return f"{type(exc).__name__}: {str(exc).partition(chr(10))[0].partition('; its stderr')[0]}"


def main(args: argparse.Namespace) -> Counter[str]:
    from distributed import Client, LocalCluster  # late: dask is an optional extra

    cluster = None
    if args.scheduler is None:
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    tally: Counter[str] = Counter()
    with Client(args.scheduler or cluster) as client:
        # Actor proxies: their methods return futures (typed Any: dask's types do not say so).
        runners: list[Any] = [
            client.submit(
                JobRunner, args.isolates, args.memory_limit, args.timeout, actor=True, pure=False
            ).result()
            for _ in range(args.actors)
        ]
        # Every job at once; actor i takes jobs i, i + N, ...; results come back in order.
        pending = [
            (number, name, runners[number % len(runners)].run(name, code))
            for number, (name, code) in enumerate(JOBS, 1)
        ]
        for number, name, future in pending:
            status, detail, where = future.result()
            tally[status] += 1
            print(f"job {number:2} {name:<14} {status:<4}  {where}: {detail}", flush=True)
        tally["replaced"] = sum(runner.close().result() for runner in runners)
    if cluster is not None:
        cluster.close()
    return tally


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scheduler", help="a running Dask scheduler (default: a local cluster)")
    parser.add_argument("--actors", type=int, default=2, help="JobRunner actors (default 2)")
    parser.add_argument("--isolates", type=int, default=2, help="isolates per actor (default 2)")
    parser.add_argument("--timeout", type=float, default=1.0, help="per-job seconds (default 1)")
    parser.add_argument("--memory-limit", type=float, default=16, help="per-isolate MB (default 16)")
    args = parser.parse_args()
    if args.actors < 1 or args.isolates < 1:
        parser.error("--actors and --isolates must be at least 1")
    return args


if __name__ == "__main__":
    args = parse_args()
    started = time.monotonic()
    tally = main(args)
    print(
        f"summary: {len(JOBS)} jobs, {tally['ok']} ok, {tally['FAIL']} failed, "
        f"{tally['replaced']} isolates replaced, {args.actors} actors x {args.isolates} isolates, "
        f"{time.monotonic() - started:.2f} s"
    )
