#!/usr/bin/env python3
"""tools/soak.py — a random mix of everything ivm does, for minutes, with invariants checked
after every step.

    python3 tools/soak.py --minutes N [--seed S] [--quiet]

Run it with an interpreter that can `import ivm` (the installed package; tools/ is this
script's own sys.path entry, so the source tree's ivm/ is not imported).

Each step is drawn from STEPS with a seeded random generator: synchronous calls, awaited calls
on asyncio and on trio (a fresh loop per step), Callbacks, References both ways, calls across
isolates, cancellation, timeouts, memory-limit disposal, dispose() from another thread,
terminate(), and isolates dropped by dispose() or left to the garbage collector. After each step:

- its results were right (each step asserts its own);
- it ended within its bound (faulthandler's watchdog dumps every thread's stack and exits);
- every CHECK_EVERY steps and at the end: RSS (beside the long-lived isolates' own heaps, which
  may fill to their limits before V8 collects), open descriptors and threads stay within their
  bounds over the levels measured after warm-up.

On failure it prints the seed, the step number and its kind, and exits with 1. The last line on
stdout is a JSON summary (steps per kind, minutes, RSS, descriptors, threads).
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import json
import os
import random
import sys
import threading
import time
import traceback
from typing import Any, Callable

import ivm

STEP_BOUND_S = 60.0      # no step may take longer (they take milliseconds to a second)
CHECK_EVERY = 50         # steps between resource checks
WARMUP_STEPS = 300       # levels are measured after these
RSS_BOUND_MB = 128.0     # growth of RSS beside the long-lived isolates' heaps over the
                         # warm-up level (isolates pinned by dropped References wait for a GC)
FD_BOUND = 16            # more open descriptors than after warm-up
THREAD_BOUND = 16        # more threads than after warm-up
FILL_HEAP = "const a = []; while (true) a.push(new Array(1e5).fill(1))"


class SoakFailure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SoakFailure(what)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


class World:
    """A few long-lived isolates the steps share; steps replace them now and then."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.isolates: list[tuple[ivm.Isolate, ivm.Context]] = []
        for _ in range(3):
            self.isolates.append(self.fresh())

    @staticmethod
    def fresh(limit: int = 64) -> tuple[ivm.Isolate, ivm.Context]:
        iso = ivm.Isolate(memory_limit=limit)
        return iso, iso.create_context_sync()

    def pick(self) -> tuple[ivm.Isolate, ivm.Context]:
        i = self.rng.randrange(len(self.isolates))
        iso, ctx = self.isolates[i]
        if iso.is_disposed:
            self.isolates[i] = self.fresh()
        return self.isolates[i]

    def replace(self) -> None:
        i = self.rng.randrange(len(self.isolates))
        iso, _ = self.isolates[i]
        if self.rng.random() < 0.5:
            iso.dispose()
        self.isolates[i] = self.fresh()   # the old one goes to the garbage collector

    def heap_mb(self) -> float:
        """What the long-lived isolates' heaps and ArrayBuffers hold: garbage there waits
        for V8's collector (up to the limit, or about 64 MB of buffers), so RSS is judged
        beside them."""
        total = 0
        for iso, _ in self.isolates:
            if not iso.is_disposed:
                stats = iso.get_heap_statistics_sync()
                total += stats.total_heap_size + stats.externally_allocated_size
        return total / (1 << 20)

    def close(self) -> None:
        for iso, _ in self.isolates:
            iso.dispose()


# --- the steps: each takes the world and the generator, and asserts its own results ---------


def step_sync_eval(w: World, rng: random.Random) -> None:
    _, ctx = w.pick()
    a, b = rng.randrange(1 << 20), rng.randrange(1 << 20)
    check(ctx.eval_sync(f"{a} * 3 + {b}") == a * 3 + b, "sync eval result")
    data = {"k": [a, str(b), None, True], "f": a / 7}
    check(ctx.eval_closure_sync("return $0", [data], arguments_options={"copy": True},
                                result_options={"copy": True}) == data,
          "copy round trip")


async def _evals(ctx: ivm.Context, rng: random.Random, n: int) -> None:
    xs = [rng.randrange(1 << 30) for _ in range(n)]
    got = []
    for x in xs:
        got.append(await ctx.eval(f"{x} + 1"))
    check(got == [x + 1 for x in xs], "awaited results")


def step_asyncio(w: World, rng: random.Random) -> None:
    _, ctx = w.pick()
    _, other = w.pick()

    async def main() -> None:
        await asyncio.gather(_evals(ctx, rng, 5), _evals(other, rng, 5))

    asyncio.run(main())


def step_trio(w: World, rng: random.Random) -> None:
    import trio

    _, ctx = w.pick()
    _, other = w.pick()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_evals, ctx, rng, 5)
            nursery.start_soon(_evals, other, rng, 5)

    trio.run(main)


def step_callbacks(w: World, rng: random.Random) -> None:
    _, ctx = w.pick()
    seen: list[int] = []

    def note(x: int) -> int:
        seen.append(x)
        return len(seen)

    ctx.global_.set_sync("note", ivm.Callback(note))
    n = rng.randrange(1, 20)
    check(ctx.eval_sync(f"{{ let r = 0; for (let i = 0; i < {n}; i++) r = note(i); r }}") == n,
          "callback results")
    check(seen == list(range(n)), "callback arguments")
    ctx.global_.delete_sync("note")


def step_references(w: World, rng: random.Random) -> None:
    _, ctx = w.pick()
    x = rng.randrange(1000)
    fn = ctx.eval_sync("(f, x) => f.applySync(undefined, [x]) + 1", reference=True)
    check(fn.apply_sync(None, [ivm.Reference(lambda v: v * 2), x]) == 2 * x + 1, "reference apply")
    obj = ctx.eval_sync("({v: [1, 2, 3]})", reference=True)
    check(obj.get_sync("v", copy=True) == [1, 2, 3], "reference get")
    if rng.random() < 0.5:
        fn.release()
        obj.release()


def step_cross_isolate(w: World, rng: random.Random) -> None:
    _, a = w.pick()
    _, b = w.pick()
    if a is b:
        return
    inc = a.eval_sync("x => x + 1", reference=True)
    b.global_.set_sync("inc", inc)
    x = rng.randrange(1000)
    check(b.eval_sync(f"inc.applySync(undefined, [{x}])") == x + 1, "cross-isolate apply")
    b.global_.delete_sync("inc")


def step_external_copy(w: World, rng: random.Random) -> None:
    _, ctx = w.pick()
    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
    copy = ivm.ExternalCopy(payload)
    check(ctx.eval_closure_sync("return $0.byteLength", [copy.copy_into()]) == len(payload),
          "external copy size")
    back = ctx.eval_closure_sync("return new Uint8Array($0)", [copy.copy_into()],
                                  result_options={"external_copy": True})
    check(bytes(back.copy()) == payload, "external copy contents")


def step_cancel_asyncio(w: World, rng: random.Random) -> None:
    iso, ctx = w.pick()

    async def main() -> None:
        task = asyncio.ensure_future(ctx.eval("while (true) {}"))
        await asyncio.sleep(rng.uniform(0, 0.05))
        task.cancel()
        try:
            await task
            raise SoakFailure("an endless eval returned")
        except asyncio.CancelledError:
            pass
        check(await ctx.eval("6 * 7") == 42, "usable after cancel")

    asyncio.run(main())


def step_cancel_trio(w: World, rng: random.Random) -> None:
    import trio

    _, ctx = w.pick()

    async def main() -> None:
        with trio.move_on_after(rng.uniform(0, 0.05)) as scope:
            await ctx.eval("while (true) {}")
        check(scope.cancelled_caught, "trio cancel")
        check(await ctx.eval("6 * 7") == 42, "usable after trio cancel")

    trio.run(main)


def step_timeout(w: World, rng: random.Random) -> None:
    _, ctx = w.pick()
    try:
        ctx.eval_sync("while (true) {}", timeout=rng.uniform(0.005, 0.05))
        raise SoakFailure("an endless eval returned")
    except ivm.TimeoutError:
        pass
    check(ctx.eval_sync("1 + 1") == 2, "usable after timeout")


def step_memory_limit(w: World, rng: random.Random) -> None:
    iso, ctx = World.fresh(16)
    code = rng.choice([FILL_HEAP, "Array.from({length: 2**23}, (_, i) => i)", "let a=[];for(;;)a.push({})"])
    try:
        ctx.eval_sync(code, timeout=STEP_BOUND_S / 2)
        raise SoakFailure("an allocation past the limit returned")
    except ivm.MemoryLimitError:
        pass
    check(iso.is_disposed, "disposed for its memory limit")


def step_dispose_from_thread(w: World, rng: random.Random) -> None:
    iso, ctx = World.fresh()
    timer = threading.Timer(rng.uniform(0, 0.05), iso.dispose)
    timer.start()
    try:
        ctx.eval_sync("while (true) {}")
        raise SoakFailure("an endless eval returned")
    except ivm.DisposedError:
        pass
    finally:
        timer.join()
    check(iso.is_disposed, "disposed from another thread")


def step_terminate(w: World, rng: random.Random) -> None:
    # terminate() stops what runs *now*: it waits until the loop has started (a terminate
    # that comes first is a no-op, and the loop would run for ever).
    iso, ctx = w.pick()
    started = threading.Event()
    ctx.global_.set_sync("started", ivm.Callback(lambda: started.set()))
    delay = rng.uniform(0, 0.05)

    def stop() -> None:
        if started.wait(STEP_BOUND_S):
            time.sleep(delay)
        iso.terminate()

    timer = threading.Thread(target=stop)
    timer.start()
    try:
        ctx.eval_sync("started(); while (true) {}")
        raise SoakFailure("an endless eval returned")
    except ivm.TerminatedError:
        pass
    finally:
        timer.join()
    check(ctx.eval_sync("'still'") == "still", "usable after terminate")


def step_churn(w: World, rng: random.Random) -> None:
    for _ in range(rng.randrange(1, 6)):
        iso, ctx = World.fresh(16)
        check(ctx.eval_sync("[1, 2].length") == 2, "fresh isolate")
        if rng.random() < 0.5:
            iso.dispose()
    if rng.random() < 0.2:
        w.replace()


STEPS: list[tuple[str, Callable[[World, random.Random], None], int]] = [
    ("sync_eval", step_sync_eval, 10),
    ("asyncio", step_asyncio, 6),
    ("trio", step_trio, 6),
    ("callbacks", step_callbacks, 6),
    ("references", step_references, 6),
    ("cross_isolate", step_cross_isolate, 5),
    ("external_copy", step_external_copy, 5),
    ("cancel_asyncio", step_cancel_asyncio, 3),
    ("cancel_trio", step_cancel_trio, 3),
    ("timeout", step_timeout, 3),
    ("memory_limit", step_memory_limit, 1),
    ("dispose_from_thread", step_dispose_from_thread, 2),
    ("terminate", step_terminate, 2),
    ("churn", step_churn, 5),
]


class Levels:
    """Resource levels after warm-up, and the highest seen since."""

    def __init__(self) -> None:
        self.base: dict[str, float] | None = None
        self.peak: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def check(self, step: int, world: World) -> None:
        gc.collect()
        heap = world.heap_mb()
        now = {"rss_mb": rss_mb() - heap, "heap_mb": heap, "fds": float(open_fds()),
               "threads": float(os_threads())}
        self.last = now
        for k, v in now.items():
            self.peak[k] = max(self.peak.get(k, v), v)
        if step < WARMUP_STEPS:
            return
        if self.base is None:
            self.base = now
            return
        check(now["rss_mb"] - self.base["rss_mb"] <= RSS_BOUND_MB,
              f"RSS beside the long-lived heaps grew from {self.base['rss_mb']:.0f} to {now['rss_mb']:.0f} MB")
        check(now["fds"] - self.base["fds"] <= FD_BOUND,
              f"open descriptors grew from {self.base['fds']:.0f} to {now['fds']:.0f}")
        check(now["threads"] - self.base["threads"] <= THREAD_BOUND,
              f"threads grew from {self.base['threads']:.0f} to {now['threads']:.0f}")


def soak(minutes: float, seed: int, quiet: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    names = [s[0] for s in STEPS]
    weights = [s[2] for s in STEPS]
    by_name = {s[0]: s[1] for s in STEPS}
    counts = dict.fromkeys(names, 0)
    world = World(rng)
    levels = Levels()
    start = time.monotonic()
    deadline = start + minutes * 60
    step = 0
    name = ""
    try:
        while time.monotonic() < deadline:
            name = rng.choices(names, weights)[0]
            faulthandler.dump_traceback_later(STEP_BOUND_S, exit=True)
            try:
                by_name[name](world, rng)
                faulthandler.cancel_dump_traceback_later()
                counts[name] += 1
                step += 1
                if step % CHECK_EVERY == 0:
                    levels.check(step, world)
            except Exception as e:
                raise SoakFailure(f"step {step} ({name}): {type(e).__name__}: {e}") from e
            if not quiet and step % (CHECK_EVERY * 20) == 0:
                print(f"soak: {step} steps, {(time.monotonic() - start) / 60:.1f} min, "
                      f"RSS beside the heaps {levels.last.get('rss_mb', 0):.0f} MB, heaps "
                      f"{levels.last.get('heap_mb', 0):.0f} MB", file=sys.stderr, flush=True)
        levels.check(max(step, WARMUP_STEPS + 1), world)
    finally:
        faulthandler.cancel_dump_traceback_later()
        world.close()
    return {"seed": seed, "steps": step, "minutes": round((time.monotonic() - start) / 60, 2),
            "per_kind": counts, "base": levels.base, "peak": levels.peak,
            "last_step": name}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"soak: seed {seed}, {args.minutes} min", file=sys.stderr, flush=True)
    # A hung step's watchdog output must name the seed too.
    faulthandler.enable()
    try:
        summary = soak(args.minutes, seed, args.quiet)
    except BaseException:
        traceback.print_exc()
        print(f"soak: FAILED with seed {seed} (rerun: tools/soak.py --minutes {args.minutes} "
              f"--seed {seed})", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
