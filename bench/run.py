#!/usr/bin/env python3
"""bench/run.py — ivm's figures beside the anchors' (raw V8, isolated-vm, the Python peers),
measured in the same run with the same workload definitions, and the project's targets.

    python bench/run.py [--quick] [--rounds N] [--no-anchors] [--figures REGEX] [--out FILE]
                        [--report DIR]

Prints one JSON object on stdout (progress on stderr):
    {"ivm": {...}, "anchors": {...}, "ratios": {...}, "targets": {...}, "machine": {...}}

How: the workloads and timing rules are the anchors' (../shared/anchors/README.md, and its
benchlib.py, imported from there). With anchors, this file is handed to `run-all --with-ivm
PYTHON --probe bench/run.py`, so ivm runs as one more section inside run-all's interleaved
rounds and gets the same medians and spread (--report DIR then writes DIR/performance.md and its
chart: bench/report.py); with --no-anchors (or when run-all fails) it runs
the same probe itself, once per round, each round in a fresh process. rss_per_isolate_mb always
runs in a process of its own. --figures measures only the figures whose names match REGEX
(re.search), and reports only their ratios and targets.

Isolates in worker processes (issue 11): bench/remote.py adds the `isolated_*` figures, beside
`pydeno_isolated` of the same run.

Exit status: 0 whenever the document was produced, targets missed or not (see "ok"); 1 when
ivm's measurement crashed (no figures at all: the JSON says why); 2 on bad usage.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # never write __pycache__ beside the anchors (or here)


def _load_sibling(name: str):
    """bench/<name>.py as a module (by path: `python -P` puts no script folder on sys.path)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location(f"ivm_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


remote = _load_sibling("remote")   # the isolated_* figures and their targets
npm = _load_sibling("npm")         # typescript, fetched once

# ---------------------------------------------------------------------------------------------
# Targets (the project's issues). One row per goal: `figure op bound [× anchor]`.
#   op: "<=" (lower is better) or ">="; bound: a factor of the anchor's figure, or, with no
#   anchor, an absolute limit in the figure's unit; None: the issue that adds the figure sets it
#   (until then the row reports the value and its ratio, with ok = null).
# A row whose figure ivm cannot measure yet (no such API) is reported as skipped.


@dataclasses.dataclass(frozen=True)
class Target:
    figure: str
    op: str
    bound: float | None
    anchor: str | None = None  # "section.figure" in the anchors' document
    name: str | None = None    # the row's key when a figure has more than one goal


TARGETS = [
    Target("eval_us", "<=", 0.6, "isolated_vm7.eval_us"),
    Target("run_precompiled_us", "<=", 0.5, "isolated_vm7.run_precompiled_us"),
    Target("create_ms", "<=", 1.1, "raw_v8.create_ms"),
    Target("timeout_overshoot_ms", "<=", 1.0),                       # ms, absolute
    Target("rss_per_isolate_mb", "<=", 1.0),                         # MiB, absolute
    # Reliability (issue 12): flat memory under churn, 1 MB per 20,000 cycles at most.
    Target("rss_churn_kb_per_1000", "<=", 50.0),                     # KiB, absolute
    # Async engine: 70% of each loop's floor as run-all measures it (python_async; the probe
    # also reports the floor in ivm's own interpreter, "ivm.async_loop_floor_*"), awaited
    # latency, cancellation overshoot.
    Target("async_evals_per_s_asyncio", ">=", 0.7, "python_async.async_loop_floor_asyncio_per_s"),
    Target("async_evals_per_s_trio", ">=", 0.7, "python_async.async_loop_floor_trio_per_s"),
    Target("async_eval_latency_us_asyncio", "<=", 25.0),            # µs, absolute
    Target("async_eval_latency_us_trio", "<=", 25.0),               # µs, absolute
    Target("async_cancel_overshoot_ms_asyncio", "<=", 1.0),         # ms, absolute
    Target("async_cancel_overshoot_ms_trio", "<=", 1.0),            # ms, absolute
    # Values (issue 5): the rows JS -> Python -> JS at least as fast as Python's own json
    # round trip of them; a 64 MiB ArrayBuffer moved between isolates within 2x raw V8's move;
    # 64 MiB of bytes into an isolate no slower than isolated-vm 7.
    Target("copy_roundtrip_mb_s", ">=", 1.0, "python_json.json_roundtrip_mb_s"),
    Target("transfer_arraybuffer_64mb_ms", "<=", 2.0, "raw_v8.transfer_arraybuffer_64mb_ms"),
    Target("bytes_into_isolate_64mb_ms", "<=", 1.0, "isolated_vm7.bytes_into_isolate_64mb_ms"),
    # References and callbacks (issue 6).
    Target("call_js_fn_us", "<=", 0.7, "isolated_vm7.call_js_fn_us"),
    Target("host_callback_us", "<=", 1.0, "isolated_vm7.host_callback_us"),
    Target("cross_isolate_apply_us", "<=", 1.0, "isolated_vm7.cross_isolate_apply_us"),
    # Modules (issue 13): a cached compile of typescript.js at least 5x faster than a cold
    # one, and a 50-module graph within 3x the same code as one script (same run).
    Target("typescript_compile_cached_ms", "<=", 0.2, "ivm.typescript_compile_cold_ms"),
    Target("module_graph_50_ms", "<=", 3.0, "ivm.module_graph_50_as_script_ms"),
    # Per-call cost (issue 14): half of isolated-vm's for each call, STPyV8's for a host
    # callback, isolated-vm's copy round trip (its precompiled run and 64 MiB move rows are
    # the ones above).
    Target("eval_us", "<=", 0.5, "isolated_vm7.eval_us", "eval_us (issue 14)"),
    Target("call_js_fn_us", "<=", 0.5, "isolated_vm7.call_js_fn_us", "call_js_fn_us (issue 14)"),
    Target("host_callback_us", "<=", 1.0, "stpyv8.host_callback_us",
           "host_callback_us (issue 14)"),
    Target("cross_isolate_apply_us", "<=", 0.5, "isolated_vm7.cross_isolate_apply_us",
           "cross_isolate_apply_us (issue 14)"),
    Target("copy_roundtrip_mb_s", ">=", 1.0, "isolated_vm7.copy_roundtrip_mb_s",
           "copy_roundtrip_mb_s (issue 14)"),
    # Isolates in worker processes (issue 11), against pydeno's IsolatedRuntime: bench/remote.py.
    *(Target(*row) for row in remote.TARGETS),
]

# Plain ratios ivm / anchor for every figure both have, against these sections.
RATIO_SECTIONS = ["raw_v8", "isolated_vm7", "mini_racer", "stpyv8"]
# Where an anchor names the same workload differently (anchors' README, "The figures").
RATIO_ALIASES = {("raw_v8", "cross_isolate_apply_us"): "cross_isolate_call_us"}

MEMORY_LIMIT_MB = 128
BIG_LIMIT_MB = 2048          # isolates holding 64 MiB buffers (the anchors' rule)
PROBE_WATCHDOG_S = 900       # a hung probe dumps its stacks and exits
RSS_CHILD_TIMEOUT_S = 300

ROLE_ENV = "IVM_BENCH_ROLE"  # unset: the driver; "probe": one round of figures; "rss": RSS only
FIGURES_ENV = "IVM_BENCH_FIGURES"   # --figures REGEX, for the probe
HERE = os.path.dirname(os.path.abspath(__file__))
THIS = os.path.abspath(__file__)


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def anchors_dir() -> str:
    d = os.environ.get("IVM_ANCHORS_DIR") or os.path.join(HERE, "..", "..", "shared", "anchors")
    return os.path.abspath(d)


def _import_anchors():
    """benchlib (and combine) from the anchors folder; ANCHORS_QUICK must be set before."""
    d = anchors_dir()
    if not os.path.isfile(os.path.join(d, "benchlib.py")):
        raise SystemExit(f"bench: no benchlib.py in {d} (set IVM_ANCHORS_DIR)")
    if d not in sys.path:
        sys.path.insert(0, d)
    import benchlib
    return benchlib


# =============================================================================================
# The probe: one round of ivm's figures, in this process. Each figure is a function registered
# with @figure(key, needs=...); `needs` returns None when the workload can run here (ivm has the
# API it uses, trio is installed), or why not (the figure is then null, under "unsupported", and
# its target row is skipped). Every figure below runs on today's ivm; only trio can be missing.

FIGURES: list = []  # (key, needs, fn) in measuring order
NOT_YET = "not implemented yet"


def figure(key: str, needs=None):
    def deco(fn):
        FIGURES.append((key, needs, fn))
        return fn
    return deco


class Probe:
    """Shared state of one round: an isolate and a context for the per-op figures."""

    def __init__(self, ivm, bl):
        self.ivm, self.bl = ivm, bl
        self.r = bl.Results()
        self.iso = None
        self.ctx = None

    def context(self):
        if self.ctx is None:
            self.iso = self.ivm.Isolate(memory_limit=MEMORY_LIMIT_MB)
            self.ctx = self.iso.create_context_sync()
        return self.ctx

    def close(self):
        if self.iso is not None:
            self.iso.dispose()
        self.iso = self.ctx = None

    def child(self, role: str) -> dict:
        """Runs this file in a fresh process in `role`; its one JSON line as a dict."""
        env = dict(os.environ, **{ROLE_ENV: role})
        try:
            c = subprocess.run([sys.executable, THIS], env=env, capture_output=True, text=True,
                               timeout=RSS_CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the {role} process hung (killed after {RSS_CHILD_TIMEOUT_S} s)"
                               ) from None
        try:
            res = json.loads(c.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            why = f"signal {-c.returncode}" if c.returncode < 0 else f"exit {c.returncode}"
            raise RuntimeError(f"the {role} process failed ({why}): "
                               f"{' '.join(c.stderr.split())[-300:]}") from None
        if "error" in res:
            raise RuntimeError(res["error"])
        return res


# --- Prerequisites of the figures -------------------------------------------------------------
def needs_trio(ivm):
    """The trio figures need trio, which ivm does not require (asyncio is Python's; anyio
    comes with ivm)."""
    try:
        import trio  # noqa: F401
    except ImportError as e:
        return f"trio is not installed in this interpreter ({e})"
    return None


# --- The figures, in the anchors' order -------------------------------------------------------
@figure("create_ms")
def f_create(p):
    ivm = p.ivm

    def make():
        iso = ivm.Isolate(memory_limit=MEMORY_LIMIT_MB)
        return iso, iso.create_context_sync()
    p.r.notes["create_ms"] = "Isolate(memory_limit=128) + create_context_sync(); dispose() untimed"
    return p.bl.create_ms(make, lambda pair: pair[0].dispose())


@figure("eval_us")
def f_eval(p):
    ctx, check = p.context(), p.bl.check

    def batch(n):
        for _ in range(n):
            check(ctx.eval_sync("1+1") == 2, "eval")
    return p.bl.per_op_us(batch)


@figure("run_precompiled_us")
def f_run_precompiled(p):
    ctx, check = p.context(), p.bl.check
    script = p.iso.compile_script_sync("1+1")

    def batch(n):
        for _ in range(n):
            check(script.run_sync(ctx) == 2, "run")
    return p.bl.per_op_us(batch)


@figure("call_js_fn_us")
def f_call_js_fn(p):
    ctx, check = p.context(), p.bl.check
    fn = ctx.eval_sync("(a, b) => a + b", reference=True)

    def batch(n):
        for _ in range(n):
            check(fn.apply_sync(None, [2, 3]) == 5, "apply")
    return p.bl.per_op_us(batch)


def _loop(p, call: str):
    """The anchors' callback loop calling `call` (an expression of i) per iteration."""
    return p.context().eval_sync(
        f"(n) => {{ let s = 0; for (let i = 0; i < n; i++) s += {call}; return s; }}",
        reference=True)


@figure("host_callback_us")
def f_host_callback(p):
    ivm, ctx = p.ivm, p.context()
    ctx.global_.set_sync("f", ivm.Callback(lambda x: x))
    loop = _loop(p, "f(i)")
    p.bl.check(loop.apply_sync(None, [10]) == 45, "callback loop")
    return p.bl.per_op_us(lambda n: loop.apply_sync(None, [n]))


@figure("cross_isolate_apply_us")
def f_cross_isolate(p):
    ivm, ctx = p.ivm, p.context()
    a = ivm.Isolate(memory_limit=MEMORY_LIMIT_MB)
    try:
        ca = a.create_context_sync()
        ctx.global_.set_sync("fa", ca.eval_sync("(x) => x", reference=True))
        loop = _loop(p, "fa.applySync(undefined, [i])")
        p.bl.check(loop.apply_sync(None, [10]) == 45, "cross-isolate loop")
        return p.bl.per_op_us(lambda n: loop.apply_sync(None, [n]))
    finally:
        a.dispose()


@figure("copy_roundtrip_mb_s")
def f_copy_roundtrip(p):
    ctx, bl = p.context(), p.bl
    ctx.eval_sync(f"globalThis.data = {bl.ROWS_JS}; 0")
    size = ctx.eval_sync("JSON.stringify(data).length")
    bl.check(size == bl.ROWS_JSON_BYTES, "rows_json_bytes")
    p.r.out["rows_json_bytes"] = size
    p.r.out["copy_fidelity_ok"] = ctx.eval_sync("data", copy=True) == bl.rows_py()

    def batch(n):
        for _ in range(n):
            obj = ctx.eval_sync("data", copy=True)
            ctx.global_.set_sync("back", obj, copy=True)
    us = bl.per_op_us(batch, batches=11, min_batch_s=0.05)
    bl.check(ctx.eval_sync("back.length === 10000 && back[9999].name === 'row-9999'"), "copy")
    ctx.eval_sync("delete globalThis.data; delete globalThis.back; 0")
    return size / us


# --- The C-level breakdown of a call (issue 14) ----------------------------------------------
BUILD_DIR_ENV = "IVM_BUILD_DIR"   # the meson build directory of the ivm being measured
BREAKDOWN_ITERATIONS = 100_000    # per step and round (3 rounds, best kept): a few seconds


def needs_build_dir(ivm):
    """bench/c_breakdown.cc is built in ivm's meson build directory, which the installed
    package does not name: $IVM_BUILD_DIR says where it is."""
    d = os.environ.get(BUILD_DIR_ENV)
    if not d:
        return f"${BUILD_DIR_ENV} is not set (ivm's meson build directory, for ivm_bench_breakdown)"
    if not os.path.isfile(os.path.join(d, "build.ninja")):
        return f"${BUILD_DIR_ENV}={d} is not a meson build directory"
    return None


@figure("c_breakdown_abi_eval_us", needs=needs_build_dir)
def f_c_breakdown(p):
    """libivm's steps of one call, timed from C++ (bench/c_breakdown.cc): every step as a
    figure c_breakdown_<step>_us; this one is a whole ivm_context_eval('1+1')."""
    d = os.environ[BUILD_DIR_ENV]
    subprocess.run(["meson", "compile", "-C", d, "ivm_bench_breakdown"], check=True,
                   capture_output=True, timeout=RSS_CHILD_TIMEOUT_S)
    c = subprocess.run([os.path.join(d, "ivm_bench_breakdown"), str(BREAKDOWN_ITERATIONS)],
                       capture_output=True, text=True, timeout=RSS_CHILD_TIMEOUT_S)
    if c.returncode != 0:
        raise RuntimeError(f"ivm_bench_breakdown failed: {' '.join(c.stderr.split())[-300:]}")
    steps = {f"c_breakdown_{name}_us": float(value)
             for name, value in (line.split() for line in c.stdout.splitlines())}
    p.r.notes["c_breakdown"] = (f"bench/c_breakdown.cc from {d}: best of 3 loops of "
                                f"{BREAKDOWN_ITERATIONS} per step; *_in_call minus holder_run "
                                "gives the step timed inside a short call")
    p.r.out.update({k: v for k, v in steps.items() if k != "c_breakdown_abi_eval_us"})
    return steps["c_breakdown_abi_eval_us"]


_FILL_64MB = "globalThis.buf = new ArrayBuffer(64 * 1024 * 1024); new Uint8Array(buf).fill(7); 0"
_GOT_64MB = "got.byteLength === 67108864 && new Uint8Array(got)[12345] === 7"


def _two_big(ivm):
    a = ivm.Isolate(memory_limit=BIG_LIMIT_MB)
    b = ivm.Isolate(memory_limit=BIG_LIMIT_MB)
    return a, a.create_context_sync(), b, b.create_context_sync()


@figure("transfer_arraybuffer_64mb_ms")
def f_transfer(p):
    bl, ivm = p.bl, p.ivm
    a, ca, b, cb = _two_big(ivm)
    try:
        samples, detached = [], True
        for _ in range(bl.reps(7, 3)):
            ca.eval_sync(_FILL_64MB)
            t0 = bl.now()
            ec = ca.eval_sync("buf", external_copy=True, transfer_out=True)
            cb.global_.set_sync("got", ec.copy_into(release=True, transfer_in=True))
            samples.append((bl.now() - t0) * 1e3)
            detached = detached and ca.eval_sync("buf.byteLength") == 0
            bl.check(cb.eval_sync(_GOT_64MB), "transfer")
            ca.eval_sync("delete globalThis.buf; 0")
            cb.eval_sync("delete globalThis.got; 0")
        p.r.notes["transfer_arraybuffer_64mb_ms"] = (
            "eval_sync('buf', external_copy=True, transfer_out=True), copy_into(release=True, "
            f"transfer_in=True); source {'detached' if detached else 'NOT detached (a copy)'}")
        return statistics.median(samples)
    finally:
        a.dispose()
        b.dispose()


@figure("transfer_arraybuffer_64mb_cffi_ms")
def f_transfer_cffi(p):
    """The same move as transfer_arraybuffer_64mb_ms through the same four ABI calls, made
    straight through cffi with no wrapper (ivm's private _ffi): what any Python API over
    the ABI pays at least. No target; docs/performance.md sets it beside the object API's
    figure, the ABI calls from C (c_breakdown_move_64mb_abi_us) and raw V8's move."""
    bl, ivm = p.bl, p.ivm
    from ivm._ffi import ffi, lib
    a, ca, b, cb = _two_big(ivm)
    global_b = cb.global_
    try:
        result = ffi.new("ivm_result_options_t *", {
            "struct_size": ffi.sizeof("ivm_result_options_t"),
            "flags": lib.IVM_RESULT_EXTERNAL_COPY | lib.IVM_RESULT_TRANSFER_OUT})
        value, copy = ffi.new("ivm_value_t **"), ffi.new("ivm_external_copy_t **")
        marker, out = ffi.new("ivm_value_t **"), ffi.new("ivm_value_t **")
        slot = ffi.new("ivm_primitive_t *")
        ctx_ptr, global_ptr = ca._ptr, global_b._ptr
        flags = lib.IVM_COPY_INTO_RELEASE | lib.IVM_COPY_INTO_TRANSFER_IN
        eval_, external_copy, copy_into = (lib.ivm_context_eval, lib.ivm_value_external_copy,
                                           lib.ivm_external_copy_copy_into)
        new_string, set_, null = lib.ivm_value_new_string, lib.ivm_reference_set, ffi.NULL
        samples, errors = [], []
        for _ in range(bl.reps(7, 3)):
            ca.eval_sync(_FILL_64MB)
            t0 = bl.now()
            errors.append(eval_(ctx_ptr, b"buf", 3, null, null, result, value, null))
            errors.append(external_copy(value[0], copy))
            errors.append(copy_into(copy[0], flags, marker))
            key = new_string(b"got", 3)
            errors.append(set_(global_ptr, key, marker[0], null, out, slot))
            samples.append((bl.now() - t0) * 1e3)
            bl.check(not any(errors) and slot.kind == lib.IVM_VALUE_BOOLEAN and slot.boolean,
                     "cffi transfer")
            for v in (key, marker[0], value[0]):
                lib.ivm_value_free(v)
            lib.ivm_external_copy_free(copy[0])
            bl.check(cb.eval_sync(_GOT_64MB) and ca.eval_sync("buf.byteLength") == 0,
                     "cffi transfer")
            ca.eval_sync("delete globalThis.buf; 0")
            cb.eval_sync("delete globalThis.got; 0")
        return statistics.median(samples)
    finally:
        a.dispose()
        b.dispose()


@figure("copy_arraybuffer_64mb_ms")
def f_copy_arraybuffer(p):
    bl, ivm = p.bl, p.ivm
    a, ca, b, cb = _two_big(ivm)
    try:
        ca.eval_sync(_FILL_64MB)
        samples = []
        for _ in range(bl.reps(7, 3)):
            t0 = bl.now()
            ec = ca.eval_sync("buf", external_copy=True)
            cb.global_.set_sync("got", ec.copy_into(release=True, transfer_in=True))
            samples.append((bl.now() - t0) * 1e3)
            bl.check(cb.eval_sync(_GOT_64MB), "copy")
            cb.eval_sync("delete globalThis.got; 0")
        return statistics.median(samples)
    finally:
        a.dispose()
        b.dispose()


@figure("bytes_into_isolate_64mb_ms")
def f_bytes_into(p):
    bl, ivm = p.bl, p.ivm
    b = ivm.Isolate(memory_limit=BIG_LIMIT_MB)
    try:
        cb = b.create_context_sync()
        host = bytes([7]) * (64 * bl.MIB)
        samples = []
        for _ in range(bl.reps(7, 3)):
            t0 = bl.now()
            cb.global_.set_sync("got", host, copy=True)
            samples.append((bl.now() - t0) * 1e3)
            bl.check(cb.eval_sync(_GOT_64MB), "bytes")
            cb.eval_sync("delete globalThis.got; 0")
        return statistics.median(samples)
    finally:
        b.dispose()


# --- async (asyncio and trio) -----------------------------------------------------------------
def _run_async(backend: str, fn):
    if backend == "trio":
        import trio
        return trio.run(fn)
    import asyncio
    return asyncio.run(fn())


async def _gather(backend: str, calls) -> list:
    """Awaits every call() at once: asyncio.gather, or a trio nursery task per call."""
    if backend == "asyncio":
        import asyncio
        return list(await asyncio.gather(*(c() for c in calls)))
    import trio
    out = [None] * len(calls)

    async def one(i, c):
        out[i] = await c()
    async with trio.open_nursery() as nursery:
        for i, c in enumerate(calls):
            nursery.start_soon(one, i, c)
    return out


def _async_evals_per_s(backend, make_isolate=None):
    """The measure of async_evals_per_s_<backend> (and, with bench/remote.py's `make_isolate`,
    of isolated_async_evals_per_s_<backend>): ASYNC_CALLS concurrent ``await ctx.eval("1+1")``
    over 4 isolates, calls per second, median of the rounds after the first."""
    def measure(p):
        bl, ivm = p.bl, p.ivm
        isos = []
        try:
            for _ in range(4):
                isos.append(make_isolate(ivm) if make_isolate
                            else ivm.Isolate(memory_limit=MEMORY_LIMIT_MB))
            ctxs = [x.create_context_sync() for x in isos]

            async def main():
                samples = []
                for k in range(bl.ASYNC_ROUNDS):
                    calls = [lambda c=ctxs[i % 4]: c.eval("1+1") for i in range(bl.ASYNC_CALLS)]
                    t0 = bl.now()
                    rs = await _gather(backend, calls)
                    s = bl.now() - t0
                    bl.check(all(x == 2 for x in rs), "async")
                    if k:
                        samples.append(bl.ASYNC_CALLS / s)
                return statistics.median(samples)
            return _run_async(backend, main)
        finally:
            for x in isos:
                x.dispose()
    return measure


def _async_latency_us(backend):
    def measure(p):
        bl, ctx = p.bl, p.context()

        async def batch(n):
            for _ in range(n):
                bl.check(await ctx.eval("1+1") == 2, "await")

        async def main():
            return await bl.per_op_us_async(batch)
        return _run_async(backend, main)
    return measure


def _async_cancel_overshoot_ms(backend):
    def measure(p):
        import anyio
        bl, ctx = p.bl, p.context()

        async def main():
            samples = []
            for _ in range(bl.reps(10, 3)):
                t0 = bl.now()
                with anyio.move_on_after(bl.TIMEOUT_S) as scope:
                    await ctx.eval("while (true) {}")
                s = bl.now() - t0
                bl.check(scope.cancelled_caught, "cancelled")
                bl.check(await ctx.eval("1+1") == 2, "usable after a cancel")
                samples.append((s - bl.TIMEOUT_S) * 1e3)
            return statistics.median(samples)
        return anyio.run(main, backend=backend)
    return measure


_NEEDS = {"asyncio": None, "trio": needs_trio}
for _b in ("asyncio", "trio"):
    figure(f"async_evals_per_s_{_b}", _NEEDS[_b])(_async_evals_per_s(_b))
for _b in ("asyncio", "trio"):
    figure(f"async_eval_latency_us_{_b}", _NEEDS[_b])(_async_latency_us(_b))
for _b in ("asyncio", "trio"):
    figure(f"async_cancel_overshoot_ms_{_b}", _NEEDS[_b])(_async_cancel_overshoot_ms(_b))
figure("async_loop_floor_asyncio_per_s")(lambda p: p.bl.async_floor_asyncio())
figure("async_loop_floor_trio_per_s", needs_trio)(lambda p: p.bl.async_floor_trio())


@figure("timeout_overshoot_ms")
def f_timeout(p):
    ivm, ctx, bl = p.ivm, p.context(), p.bl

    def run_one():
        try:
            ctx.eval_sync("while (true) {}", timeout=bl.TIMEOUT_S)
        except ivm.TimeoutError:
            return True
        return False
    res = bl.overshoot_ms(run_one)
    bl.check(ctx.eval_sync("1+1") == 2, "usable after a timeout")
    return res


# --- Modules and the code cache (issue 13) ----------------------------------------------------
_typescript: list = []


def typescript_source() -> str:
    """lib/typescript.js of npm's `typescript` 5 (about 9 MB; bench/npm.py fetches it once)."""
    if not _typescript:
        _typescript.append(npm.package_file("typescript", 5, "lib/typescript.js"))
    return _typescript[0]


def needs_typescript(ivm):
    try:
        typescript_source()
    except Exception as e:  # noqa: BLE001 - the reason is the report
        return f"npm's typescript package is not available ({type(e).__name__}: {e})"
    return None


def _median_ms(fn, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        times.append(fn())
    return round(statistics.median(times) * 1e3, 3)


def _compile_typescript_s(ivm, cached_data=None) -> float:
    """One compile of typescript.js in a fresh isolate (V8's in-isolate cache is cold)."""
    iso = ivm.Isolate(memory_limit=512)
    try:
        src = typescript_source()
        start = time.perf_counter()
        script = iso.compile_script_sync(src, filename="typescript.js", cached_data=cached_data)
        elapsed = time.perf_counter() - start
        if cached_data is not None and script.cached_data_rejected:
            raise RuntimeError("the typescript cache was rejected")
        return elapsed
    finally:
        iso.dispose()


@figure("typescript_compile_cold_ms", needs=needs_typescript)
def f_typescript_cold(p):
    p.r.notes["typescript_compile_cold_ms"] = (
        "compile_script_sync(lib/typescript.js of typescript 5, 9 MB) in a fresh isolate, "
        "median of 5")
    return _median_ms(lambda: _compile_typescript_s(p.ivm))


@figure("typescript_compile_cached_ms", needs=needs_typescript)
def f_typescript_cached(p):
    iso = p.ivm.Isolate(memory_limit=512)
    try:
        data = iso.compile_script_sync(typescript_source(), filename="typescript.js",
                                       produce_cached_data=True).cached_data
    finally:
        iso.dispose()
    p.r.notes["typescript_compile_cached_ms"] = (
        "the same compile with cached_data from produce_cached_data=True, median of 5")
    return _median_ms(lambda: _compile_typescript_s(p.ivm, data))


GRAPH_SIZE = 50


def _graph_sources() -> list[str]:
    """GRAPH_SIZE modules: each imports the one before and exports a function calling it."""
    out = ["export function f0(x) { return x + 1; }"]
    for i in range(1, GRAPH_SIZE):
        out.append(f"import {{f{i - 1}}} from 'm{i - 1}';\n"
                   f"export function f{i}(x) {{ return f{i - 1}(x) + 1; }}")
    out[-1] += f"\nglobalThis.result = f{GRAPH_SIZE - 1}(0);"
    return out


@figure("module_graph_50_ms")
def f_module_graph(p):
    ivm = p.ivm
    sources = _graph_sources()

    def once():
        iso = ivm.Isolate(memory_limit=MEMORY_LIMIT_MB)
        try:
            ctx = iso.create_context_sync()
            mods = {f"m{i}": iso.compile_module_sync(src) for i, src in enumerate(sources)}
            top = mods[f"m{GRAPH_SIZE - 1}"]
            start = time.perf_counter()
            top.instantiate_sync(ctx, lambda spec, ref: mods[spec])
            top.evaluate_sync()
            elapsed = time.perf_counter() - start
            p.bl.check(ctx.eval_sync("result") == GRAPH_SIZE, "module graph result")
            return elapsed
        finally:
            iso.dispose()
    p.r.notes["module_graph_50_ms"] = (
        f"instantiate_sync + evaluate_sync of a chain of {GRAPH_SIZE} compiled modules "
        "(a Python resolver), fresh isolate each, median of 5")
    return _median_ms(once)


@figure("module_graph_50_as_script_ms")
def f_module_graph_script(p):
    ivm = p.ivm
    code = "\n".join(src.split("\n", 1)[-1].replace("export ", "") if i else
                     src.replace("export ", "") for i, src in enumerate(_graph_sources()))

    def once():
        iso = ivm.Isolate(memory_limit=MEMORY_LIMIT_MB)
        try:
            ctx = iso.create_context_sync()
            script = iso.compile_script_sync(code)
            start = time.perf_counter()
            script.run_sync(ctx)
            elapsed = time.perf_counter() - start
            p.bl.check(ctx.eval_sync("result") == GRAPH_SIZE, "script result")
            return elapsed
        finally:
            iso.dispose()
    p.r.notes["module_graph_50_as_script_ms"] = (
        "the same code as one compiled script, run_sync, fresh isolate each, median of 5")
    return _median_ms(once)


remote.register(figure, _async_evals_per_s, needs_trio)


@figure("rss_per_isolate_mb")
def f_rss(p):
    """In a fresh process: this one's earlier allocations must not disturb it."""
    p.close()
    res = p.child("rss")
    p.r.notes["rss_per_isolate_mb"] = (
        f"in a fresh process, after one warm-up isolate (V8 initialised): {res['n']} x "
        "(Isolate(memory_limit=128) + create_context_sync()) alive, RSS growth / n")
    return res["rss_per_isolate_mb"]


CHURN_WARMUP, CHURN_CYCLES, CHURN_STEP = 300, 3000, 250


@figure("rss_churn_kb_per_1000")
def f_rss_churn(p):
    """In a fresh process: the median RSS growth per CHURN_STEP isolate cycles, per 1,000."""
    p.close()
    res = p.child("churn")
    p.r.notes["rss_churn_kb_per_1000"] = (
        f"in a fresh process, after {CHURN_WARMUP} warm-up cycles, {CHURN_CYCLES} cycles of "
        "Isolate(memory_limit=16) + context + script + Reference + Callback + ExternalCopy, "
        "every other one disposed, the rest dropped for the garbage collector: the median RSS "
        f"growth per {CHURN_STEP} cycles, in KiB per 1,000 cycles (a steady leak grows every "
        "step; malloc's heap grows in rare steps of 0.4-1.4 MB that only fragmentation makes). "
        f"All growth over the {CHURN_CYCLES} cycles: {res['rss_churn_total_kb']} KiB")
    return res["rss_churn_kb_per_1000"]


def churn_child() -> int:
    """Role "churn": RSS growth per 1,000 isolate cycles, one JSON line."""
    try:
        import gc
        import ivm

        def rss_kb() -> int:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
            raise RuntimeError("no VmRSS in /proc/self/status")

        def cycle(i: int) -> None:
            iso = ivm.Isolate(memory_limit=16)
            ctx = iso.create_context_sync()
            fn = iso.compile_script_sync("x => x + 1").run_sync(ctx, reference=True)
            ctx.global_.set_sync("double", ivm.Callback(lambda x: 2 * x))
            copy = ivm.ExternalCopy({"a": [i]})
            if fn.apply_sync(None, [i]) != i + 1 or ctx.eval_closure_sync(
                    "return double($0.copy().a[0])", [copy]) != 2 * i:
                raise RuntimeError("wrong result")
            if i % 2:
                iso.dispose()

        for i in range(CHURN_WARMUP):
            cycle(i)
        gc.collect()
        samples = [rss_kb()]
        for i in range(CHURN_CYCLES):
            cycle(i)
            if (i + 1) % CHURN_STEP == 0:
                gc.collect()
                samples.append(rss_kb())
        steps = [b - a for a, b in zip(samples, samples[1:])]
        per = statistics.median(steps) * 1000 / CHURN_STEP
        print(json.dumps({"rss_churn_kb_per_1000": round(per, 1),
                          "rss_churn_total_kb": samples[-1] - samples[0]}), flush=True)
    except Exception as e:  # noqa: BLE001 — reported to the probe
        print(json.dumps({"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}))
    return 0


def rss_child() -> int:
    """Role "rss": benchlib.rss_per over isolates + contexts, one JSON line."""
    try:
        bl = _import_anchors()
        import ivm
        warm = ivm.Isolate(memory_limit=MEMORY_LIMIT_MB)  # V8's one-time initialisation
        bl.check(warm.create_context_sync().eval_sync("1+1") == 2, "warm-up")
        warm.dispose()
        del warm
        keep = []

        def make():
            iso = ivm.Isolate(memory_limit=MEMORY_LIMIT_MB)
            keep.append(iso)
            return iso, iso.create_context_sync()
        mb = bl.rss_per(make, lambda pair: pair[0].dispose())
        print(json.dumps({"rss_per_isolate_mb": mb, "n": len(keep)}), flush=True)
    except Exception as e:  # noqa: BLE001 — reported to the probe
        print(json.dumps({"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}))
    return 0


def pss_child() -> int:
    """Role "pss": bench/remote.py's PSS per worker, one JSON line."""
    try:
        print(json.dumps(remote.pss_child(_import_anchors())), flush=True)
    except Exception as e:  # noqa: BLE001 — reported to the probe
        print(json.dumps({"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}))
    return 0


def selected(key: str) -> bool:
    """Whether --figures (IVM_BENCH_FIGURES) selects this figure."""
    import re
    pattern = os.environ.get(FIGURES_ENV, "")
    return not pattern or re.search(pattern, key) is not None


def probe() -> int:
    """Role "probe": one round of every figure, one JSON line on stdout (run-all's contract)."""
    import faulthandler
    faulthandler.dump_traceback_later(PROBE_WATCHDOG_S, exit=True)
    bl = _import_anchors()
    import ivm
    p = Probe(ivm, bl)
    r = p.r
    r.out["version"] = ivm.__version__
    r.out["v8_version"] = ivm.v8_version
    r.out["python"] = sys.version.split()[0]
    r.notes["ivm_path"] = os.path.dirname(os.path.abspath(ivm.__file__))
    for key, needs, fn in FIGURES:
        if not selected(key):
            continue
        why = needs(ivm) if needs else None
        if why:
            r.none(key, why)
            continue
        log(f"ivm: {key}")
        r.measure(key, lambda: fn(p))
    p.close()
    print(json.dumps(r.dump(), ensure_ascii=False), flush=True)
    return 0


# =============================================================================================
# The driver.

def _last_json(text: str) -> dict:
    """The whole output as one JSON object (run-all's indented document), else its last line
    (a probe's)."""
    text = (text or "").strip()
    if not text:
        raise ValueError("no output")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = json.loads(text.splitlines()[-1])
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we started (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def _run(cmd, env, timeout, tee=False):
    """Runs cmd in a new session (so a timeout can stop it and its children): (rc or None on a
    timeout, stdout, stderr). tee: stderr is also passed through to ours as it comes."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    out_parts: list[str] = []
    err_lines: list[str] = []

    def pump_out():
        out_parts.append(proc.stdout.read())

    def pump_err():
        for line in proc.stderr:
            err_lines.append(line)
            if tee:
                sys.stderr.write(line)
                sys.stderr.flush()
    pumps = [threading.Thread(target=f, daemon=True) for f in (pump_out, pump_err)]
    for t in pumps:
        t.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        rc = None
    except BaseException:
        _kill_group(proc)
        raise
    for t in pumps:
        t.join(timeout=10)  # a grandchild may still hold the pipes: do not wait for it forever
    return rc, "".join(out_parts), "".join(err_lines)


def run_ivm_rounds(rounds: int, env: dict) -> dict:
    """ivm's probe `rounds` times, each in a fresh process; merged as run-all merges rounds."""
    per = []
    for k in range(1, rounds + 1):
        log(f"ivm round {k}/{rounds}")
        rc, out, err = _run([sys.executable, THIS], dict(env, **{ROLE_ENV: "probe"}),
                            PROBE_WATCHDOG_S + 60)
        try:
            per.append(_last_json(out))
        except ValueError as e:
            why = "timed out" if rc is None else (
                f"signal {-rc}" if rc < 0 else f"exit {rc}")
            tail = " ".join((err or "").split())[-600:]
            per.append({"error": f"the probe crashed ({why}; {e}); stderr: {tail}"})
            log(f"ivm round {k}: probe crashed ({why})")
    return merge_rounds(per)


def merge_rounds(per: list[dict]) -> dict:
    """Medians per figure and [min, max] under "spread": run-all's own combine.merge."""
    import combine  # from the anchors folder (on sys.path by now)
    doc, spread = combine.merge([{"ivm": x} for x in per])
    ivm = doc.get("ivm", {})
    if spread.get("ivm"):
        ivm["spread"] = spread["ivm"]
    return ivm


def run_anchors(args, env: dict) -> tuple[dict, dict | None]:
    """run-all with ivm's probe in its rounds: (anchors document or {"error"}, ivm or None)."""
    cmd = [os.path.join(anchors_dir(), "run-all")]
    if args.quick:
        cmd.append("--quick")
    if args.rounds > 1:
        cmd += ["--rounds", str(args.rounds)]
    cmd += ["--with-ivm", sys.executable, "--probe", THIS]
    log("anchors: " + " ".join(cmd))
    timeout = 900 + 900 * args.rounds
    try:
        rc, out, err = _run(cmd, dict(env, **{ROLE_ENV: "probe"}), timeout, tee=True)
    except OSError as e:
        return {"error": f"run-all could not start: {e}"}, None
    if rc != 0:
        why = f"timed out after {timeout} s" if rc is None else f"exit status {rc}"
        tail = " ".join(err.split())[-600:]
        return {"error": f"run-all failed ({why}); stderr: {tail}"}, None
    try:
        doc = _last_json(out)
    except ValueError as e:
        return {"error": f"run-all printed no JSON document ({e})"}, None
    ivm = doc.pop("ivm", None)
    spread = doc.get("spread") or {}
    if ivm is not None and spread.get("ivm"):
        ivm["spread"] = spread.pop("ivm")
        if not spread:
            doc.pop("spread")
    return doc, ivm


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sig(v: float) -> float:
    return float(f"{v:.4g}")


def figure_keys() -> list[str]:
    return [key for key, _, _ in FIGURES if selected(key)]


def ratios(ivm: dict, anchors: dict) -> dict:
    """{figure: {section: ivm / anchor}} for every figure both measured."""
    out: dict = {}
    for key in figure_keys():
        if not _num(ivm.get(key)):
            continue
        row = {}
        for s in RATIO_SECTIONS:
            a = (anchors.get(s) or {}).get(RATIO_ALIASES.get((s, key), key))
            if _num(a) and a > 0:
                row[s] = _sig(ivm[key] / a)
        a = (anchors.get("pydeno_isolated") or {}).get(remote.PYDENO_RATIOS.get(key, ""))
        if _num(a) and a > 0:
            row["pydeno_isolated"] = _sig(ivm[key] / a)
        if row:
            out[key] = row
    return out


def targets(ivm: dict, anchors: dict) -> dict:
    out: dict = {}
    unsupported = ivm.get("unsupported") or {}
    errors = ivm.get("errors") or {}
    for t in TARGETS:
        if not selected(t.figure):
            continue
        rule = f"{t.figure} {t.op} " + (
            f"{t.bound if t.bound is not None else '?'}" + (f" x {t.anchor}" if t.anchor else ""))
        row: dict = {"value": None, "limit": None, "ok": None, "rule": rule}
        out[t.name or t.figure] = row
        value = ivm.get(t.figure)
        if t.figure in unsupported or (t.figure not in ivm and "error" not in ivm):
            why = unsupported.get(t.figure, f"{NOT_YET}: ivm measures no {t.figure}")
            row["skipped"] = NOT_YET if why.startswith(NOT_YET) else why
            row["reason"] = why
            continue
        if not _num(value):
            row["ok"] = False
            row["error"] = errors.get(t.figure) or ivm.get("error") or "no value"
            continue
        row["value"] = value
        if t.anchor:
            sec, fig = t.anchor.split(".", 1)
            a = (ivm if sec == "ivm" else (anchors.get(sec) or {})).get(fig)
            row["anchor_value"] = a if _num(a) else None
            if _num(a):
                row["ratio"] = _sig(value / a) if a else None
            if t.bound is None:
                row["skipped"] = "no bound set yet"
                continue
            if not _num(a):
                why = anchors.get("error") or anchors.get("skipped")
                row["skipped"] = f"no anchor figure {t.anchor}" + (f" ({why})" if why else "")
                continue
            limit = t.bound * a
        else:
            if t.bound is None:
                row["skipped"] = "no bound set yet"
                continue
            limit = t.bound
        row["limit"] = _sig(limit)
        row["ok"] = value <= limit if t.op == "<=" else value >= limit
    return out


def machine(args, ivm: dict, anchors: dict, interleaved: bool, bench_s: float) -> dict:
    import platform
    m: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            m["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f
                             if ln.startswith("model name")), None)
    except OSError:
        m["cpu"] = None
    m["cpus_online"] = os.cpu_count()
    m["cpus_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    m["python"] = platform.python_version()
    m["python_executable"] = sys.executable
    m["ivm_version"] = ivm.get("version")
    m["ivm_v8_version"] = ivm.get("v8_version")
    m["ivm_path"] = (ivm.get("notes") or {}).get("ivm_path")
    m["anchors_dir"] = anchors_dir()
    am = anchors.get("machine") or {}
    m["anchors_other_load_cores"] = am.get("other_load_cores")
    m["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    m["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    m["quick"] = bool(args.quick)
    m["rounds"] = args.rounds
    m["interleaved_with_anchors"] = interleaved
    m["bench_s"] = round(bench_s, 1)
    return m


def summary(doc: dict) -> None:
    """A human-readable table on stderr."""
    log("targets:")
    for name, row in doc["targets"].items():
        if row.get("skipped"):
            state = f"skipped ({row['skipped']})"
        elif row.get("error"):
            state = f"FAIL  {row['error'][:100]}"
        elif row["ok"] is None:
            state = "?"
        else:
            state = ("ok  " if row["ok"] else "MISS") + f"  {row['value']} vs limit {row['limit']}"
        log(f"  {name:32} {state}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (anchors' quick mode)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians + spread")
    ap.add_argument("--no-anchors", action="store_true", help="ivm's figures only")
    ap.add_argument("--figures", metavar="REGEX",
                    help="only the figures whose names match (re.search), e.g. isolated_")
    ap.add_argument("--out", help="also write the JSON document to this file")
    ap.add_argument("--report", metavar="DIR",
                    help="also write DIR/performance.md and DIR/performance.png (bench/report.py)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds needs a positive integer")
    os.environ["ANCHORS_QUICK"] = "1" if args.quick else "0"
    os.environ["IVM_ANCHORS_DIR"] = anchors_dir()
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    if args.figures:
        import re
        try:
            re.compile(args.figures)
        except re.error as e:
            ap.error(f"--figures: {e}")
        os.environ[FIGURES_ENV] = args.figures
    _import_anchors()
    env = dict(os.environ)
    t0 = time.monotonic()

    ivm = None
    if args.no_anchors:
        anchors: dict = {"skipped": "--no-anchors"}
    else:
        anchors, ivm = run_anchors(args, env)
        if ivm is None and "error" not in anchors:
            anchors["_note"] = "run-all gave no ivm section: ivm measured on its own"
    interleaved = ivm is not None
    if ivm is None:
        ivm = run_ivm_rounds(args.rounds, env)

    doc = {
        "ivm": ivm,
        "anchors": anchors,
        "ratios": ratios(ivm, anchors),
        "targets": targets(ivm, anchors),
        "machine": machine(args, ivm, anchors, interleaved, time.monotonic() - t0),
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)
    summary(doc)
    if args.report:
        shown = [a for i, a in enumerate(argv) if a != "--out" and argv[i - 1:i] != ["--out"]]
        command = "python bench/run.py " + " ".join(shown)
        log("report: " + _load_sibling("report").write(doc, args.report, command))
    if not any(_num(ivm.get(k)) for k in figure_keys()):
        log("ivm produced no figures: " + str(ivm.get("error") or ivm.get("errors")))
        return 1
    return 0


if __name__ == "__main__":
    role = os.environ.get(ROLE_ENV, "")
    if role == "probe":
        sys.exit(probe())
    if role == "rss":
        sys.exit(rss_child())
    if role == "churn":
        sys.exit(churn_child())
    if role == "pss":
        sys.exit(pss_child())
    sys.exit(main(sys.argv[1:]))
