"""Runs untrusted JavaScript jobs concurrently on a small pool of isolates, under trio.

    python docs/examples/trio_job_runner.py [--isolates K] [--timeout SECONDS] [--memory-limit MB]
                                            [--isolated]

A trio nursery starts every job at once. Each job borrows a free isolate from the pool
(so an isolate runs one job at a time and the K isolates run in parallel), evaluates its
code in a fresh context with a time limit, and hands the isolate back. Hostile jobs fail on
their own without hurting the others: an endless loop hits the timeout, a syntax error or a
``throw`` arrive as ``ivm.JSError``, and a memory hog hits the isolate's memory limit, which
disposes that isolate; the job runner then puts a new isolate in its place.

With ``--isolated``, each isolate lives in its own sandboxed worker process
(``ivm.Isolate(process="isolated")``, docs/process.md), and the job list gains jobs that abort
V8 itself. Inline, such a job would end the whole Python process; here it costs one worker, the
job fails with ``ivm.IsolateCrashedError`` (with the signal and V8's message), and the pool
replaces the crashed worker like a disposed isolate.

One line is printed per job as it finishes, then a summary. Needs trio (``pip install trio``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import trio

import ivm

#: (name, JavaScript) of each job. Results must be primitives (strings, numbers...).
JOBS: list[tuple[str, str]] = [
    ("sum to 1000", "let s = 0; for (let i = 1; i <= 1000; i++) s += i; s"),
    ("fibonacci", "const fib = n => n < 2 ? n : fib(n - 1) + fib(n - 2); fib(20)"),
    ("infinite loop", "while (true) {}"),
    ("greeting", "['hello', 'from', 'an', 'isolate'].join(' ')"),
    ("memory hog", "const hog = []; while (true) hog.push(new Array(1e5).fill(1))"),
    ("json", "JSON.stringify({ squares: [1, 2, 3].map(x => x * x) })"),
    ("syntax error", "let = ;"),
    ("big integer", "2n ** 100n"),
    ("throw", "throw new RangeError('user code gave up')"),
    (
        "primes below 100",
        "let n = 0;\n"
        "for (let i = 2; i < 100; i++) {\n"
        "  let prime = true;\n"
        "  for (let d = 2; d * d <= i; d++) if (i % d === 0) prime = false;\n"
        "  if (prime) n++;\n"
        "}\n"
        "n",
    ),
    ("fresh globals", "typeof hog"),  # each job gets its own context
    ("leap day", "new Date(Date.UTC(2024, 1, 29)).toISOString().slice(0, 10)"),
]

#: Jobs that abort V8 itself (not an exception: the engine ends its process). Run only with
#: --isolated, where they cost one worker process.
CRASH_JOBS: list[tuple[str, str]] = [
    ("engine abort", "'x'.repeat(2 ** 27).split('')"),
    ("after the abort", "'still ' + 'serving'"),
]


@dataclass
class Slot:
    """One isolate of the pool; replaced when its memory limit disposes it."""

    index: int
    isolate: ivm.Isolate


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    recreated: int = 0


def describe(exc: ivm.IvmError) -> str:
    if isinstance(exc, ivm.JSError):
        # The first line of the stack: "RangeError: message" (or the thrown value).
        return exc.stack.splitlines()[0] if exc.stack else repr(exc.message)
    # A crash's message goes on with the tail of the worker's stderr; its start says enough.
    first_line = str(exc).partition("\n")[0].partition("; its stderr")[0]
    return f"{type(exc).__name__}: {first_line}"


def new_isolate(args: argparse.Namespace) -> ivm.Isolate:
    if args.isolated:
        return ivm.Isolate(memory_limit=args.memory_limit, process="isolated")
    return ivm.Isolate(memory_limit=args.memory_limit)


async def run_job(
    number: int,
    name: str,
    code: str,
    pool: trio.MemoryReceiveChannel[Slot],
    give_back: trio.MemorySendChannel[Slot],
    args: argparse.Namespace,
    tally: Tally,
) -> None:
    slot = await pool.receive()
    crashed = False
    try:
        context = await slot.isolate.create_context()
        try:
            result = await context.eval(code, timeout=args.timeout, filename=f"job-{number}.js")
        finally:
            context.release()  # harmless if the isolate is gone
    except ivm.IvmError as exc:
        tally.failed += 1
        print(f"job {number:2} {name:<16} FAIL  isolate {slot.index}: {describe(exc)}")
        crashed = isinstance(exc, ivm.IsolateCrashedError)
    else:
        tally.ok += 1
        print(f"job {number:2} {name:<16} ok    isolate {slot.index}: {result!r}")
    finally:
        if slot.isolate.is_disposed:
            slot.isolate.dispose()  # frees a crashed worker's records; idempotent
            slot.isolate = new_isolate(args)
            tally.recreated += 1
            why = "its worker process crashed" if crashed else "it was disposed by its memory limit"
            print(f"isolate {slot.index}: {why}; replaced it")
        give_back.send_nowait(slot)


async def main(args: argparse.Namespace) -> Tally:
    tally = Tally()
    slots = [Slot(k, new_isolate(args)) for k in range(args.isolates)]
    give_back, pool = trio.open_memory_channel[Slot](len(slots))
    for slot in slots:
        give_back.send_nowait(slot)
    try:
        async with trio.open_nursery() as nursery:
            for number, (name, code) in enumerate(jobs(args), 1):
                nursery.start_soon(run_job, number, name, code, pool, give_back, args, tally)
    finally:
        for slot in slots:
            slot.isolate.dispose()
    return tally


def jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    return JOBS + CRASH_JOBS if args.isolated else JOBS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--isolates", type=int, default=3, help="pool size K (default 3)")
    parser.add_argument("--timeout", type=float, default=1.0, help="per-job seconds (default 1)")
    parser.add_argument(
        "--memory-limit", type=float, default=16, help="per-isolate MB (default 16)"
    )
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="each isolate in its own sandboxed worker process; adds jobs that abort V8",
    )
    args = parser.parse_args()
    if args.isolates < 1:
        parser.error("--isolates must be at least 1")
    return args


if __name__ == "__main__":
    args = parse_args()
    started = time.monotonic()
    tally = trio.run(main, args)
    plural = "" if tally.recreated == 1 else "s"
    print(
        f"summary: {len(jobs(args))} jobs, {tally.ok} ok, {tally.failed} failed, "
        f"{tally.recreated} isolate{plural} recreated, "
        f"{args.isolates} isolates, {time.monotonic() - started:.2f} s"
    )
