#!/usr/bin/env python3
"""bench/report.py — docs/performance.md and its bar chart from one bench/run.py document.

    python bench/run.py --quick --rounds 3 --report docs/     # measure, then write the report
    python bench/report.py RESULT.json docs/                  # the report of a saved document

Writes DIR/performance.md (the table of every figure, ivm beside every peer, with spreads and
targets; the method; the machine; how to reproduce; where the time goes) and DIR/performance.png
(one panel per figure, log scale). The chart needs matplotlib (the `bench` extra); without it
the report is written without the chart and says so. Tests never need this file.
"""
from __future__ import annotations

import json
import os
import sys

# Sections of the document, in the order of the table and the chart: ivm first.
PEERS = [
    ("ivm", "ivm"),
    ("raw_v8", "raw V8"),
    ("isolated_vm7", "isolated-vm 7"),
    ("isolated_vm", "isolated-vm 5"),
    ("stpyv8", "STPyV8"),
    ("mini_racer", "PyMiniRacer"),
    ("pydeno", "pydeno"),
    ("pydeno_isolated", "pydeno isolated"),
    ("python_json", "Python json"),
]
COLORS = ["#d62728", "#7f7f7f", "#1f77b4", "#aec7e8", "#2ca02c", "#ff7f0e", "#9467bd",
          "#c5b0d5", "#8c564b"]
# Figure-name endings: (unit, higher is better).
UNITS = [("_mb_s", "MB/s", True), ("_kb_per_1000", "KiB", False), ("_us", "µs", False),
         ("_ms", "ms", False), ("_mb", "MiB", False)]
# Figures that are facts about a run rather than timings.
NOT_FIGURES = {"version", "v8_version", "python", "rows_json_bytes", "copy_fidelity_ok"}


def unit(name: str) -> tuple[str, bool]:
    if "_per_s" in name:   # async_evals_per_s_trio
        return "/s", True
    for loop in ("_asyncio", "_trio"):   # async_eval_latency_us_trio
        name = name[: -len(loop)] if name.endswith(loop) else name
    for suffix, u, higher in UNITS:
        if name.endswith(suffix):
            return u, higher
    return "", False


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v) -> str:
    if not is_num(v):
        return "–"
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.3g}" if a < 1000 else f"{v:,.0f}"


def sections(doc: dict) -> dict:
    """{section: figures} with ivm's own section included."""
    anchors = doc.get("anchors") or {}
    out = {"ivm": doc.get("ivm") or {}}
    for key, _ in PEERS[1:]:
        if isinstance(anchors.get(key), dict):
            out[key] = anchors[key]
    return out


def spread_of(doc: dict, section: str, figure: str):
    if section == "ivm":
        sp = (doc.get("ivm") or {}).get("spread") or {}
    else:
        sp = ((doc.get("anchors") or {}).get("spread") or {}).get(section) or {}
    s = sp.get(figure)
    return s if isinstance(s, list) and len(s) == 2 and all(map(is_num, s)) else None


def figures(doc: dict) -> list[str]:
    ivm = doc.get("ivm") or {}
    return [k for k, v in ivm.items()
            if k not in NOT_FIGURES and is_num(v) and not k.startswith("c_breakdown_")]


def aliases() -> dict:
    """{(section, ivm figure): the section's name for the same workload}."""
    import importlib.util
    out = {("raw_v8", "cross_isolate_apply_us"): "cross_isolate_call_us",
           ("python_json", "copy_roundtrip_mb_s"): "json_roundtrip_mb_s"}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "remote.py")
    spec = importlib.util.spec_from_file_location("ivm_bench_remote_names", path)
    if spec is not None and spec.loader is not None:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out.update({("pydeno_isolated", k): v for k, v in mod.PYDENO_RATIOS.items()})
    return out


ALIASES: dict = {}


def peer_value(secs: dict, section: str, figure: str):
    if not ALIASES:
        ALIASES.update(aliases())
    v = (secs.get(section) or {}).get(ALIASES.get((section, figure), figure))
    return v if is_num(v) else None


def table(doc: dict) -> list[str]:
    secs = sections(doc)
    present = [(k, n) for k, n in PEERS if k in secs]
    targets = doc.get("targets") or {}
    head = "| figure | unit | " + " | ".join(n for _, n in present) + " | target |"
    lines = [head, "|" + "---|" * (len(present) + 3)]
    for f in figures(doc):
        u, higher = unit(f)
        cells = []
        for k, _ in present:
            v = peer_value(secs, k, f)
            cell = fmt(v)
            sp = spread_of(doc, k, f)
            if v is not None and sp:
                cell += f" [{fmt(sp[0])}–{fmt(sp[1])}]"
            cells.append(f"**{cell}**" if k == "ivm" else cell)
        t = targets.get(f) or {}
        if t.get("skipped") or t.get("ok") is None:
            tcell = t.get("rule", "") and f"{t['rule']} (not judged)"
        else:
            tcell = f"{'met' if t['ok'] else 'MISSED'}: {t['rule']} (limit {fmt(t.get('limit'))})"
        arrow = "↑" if higher else "↓"
        lines.append(f"| `{f}` | {u} {arrow} | " + " | ".join(cells) + f" | {tcell} |")
    return lines


def chart(doc: dict, path: str) -> str | None:
    """The bar chart; None on success, else why it was not drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install 'ivm[bench]'"
    secs = sections(doc)
    figs = figures(doc)
    cols = 4
    rows = max(1, (len(figs) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    for i, f in enumerate(figs):
        ax = axes[i // cols][i % cols]
        names, values, colors = [], [], []
        for (k, n), c in zip(PEERS, COLORS):
            v = peer_value(secs, k, f)
            if v is not None and v > 0:
                names.append(n)
                values.append(v)
                colors.append(c)
        ax.barh(range(len(values)), values, color=colors)
        if values:
            ax.set_xlim(min(values) / 4, max(values) * 4)
        for y, v in enumerate(values):
            ax.text(v, y, " " + fmt(v), va="center", fontsize=7)
        ax.set_yticks(range(len(values)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        u, higher = unit(f)
        ax.set_title(f"{f}\n{u}, {'higher' if higher else 'lower'} is better", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for j in range(len(figs), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def machine_lines(doc: dict) -> list[str]:
    m = doc.get("machine") or {}
    am = (doc.get("anchors") or {}).get("machine") or {}
    return [
        f"- Date (UTC): {m.get('date_utc')}; bench time {m.get('bench_s')} s.",
        f"- CPU: {m.get('cpu')}; {m.get('cpus_usable')} usable of {m.get('cpus_online')} online.",
        f"- Load: load average after the run {m.get('loadavg_after')}; CPU used by other "
        f"processes during the anchors' run: {am.get('other_load_cores', '?')} cores.",
        f"- Python {m.get('python')}; ivm {m.get('ivm_version')} on V8 "
        f"{m.get('ivm_v8_version')}; node {am.get('node', '?')}, node 24 {am.get('node24', '?')}.",
        f"- Rounds: {m.get('rounds')}, quick mode: {m.get('quick')}, interleaved with the "
        f"anchors: {m.get('interleaved_with_anchors')}.",
    ]


BREAKDOWN = """\
## Where the time goes

**Calls.** libivm's fixed cost per call, step by step, timed from C++ by
bench/c_breakdown.cc beside raw V8 running a bound script (bench/run.py's `c_breakdown_*`
figures, which need `IVM_BUILD_DIR`, ivm's meson build directory; best of 3 loops each):

{c_breakdown}

**Copies** (`copy_roundtrip_mb_s`: the 10,000 rows out with `copy=True`, back in with
`set_sync(..., copy=True)`). Each step in CPU time (`time.thread_time`, steadier than wall
time on a loaded machine), minimum of 21, measured by bench/report.py as it writes this page:

{copy_steps}

The copy format keeps what JSON cannot (undefined, -0, BigInts, NaN, shared objects, holes),
so the JSON reader is taken only for streams that are plain JSON data (docs/values.md, "Two
readers"); the general reader's figure is the same rows read without it. V8's serializer is
most of the first step; the Python steps are C `pickle` already.

**The 64 MiB move** (`transfer_arraybuffer_64mb_ms`). The move itself is small: about 0.01 ms
when the same buffer goes back and forth. In the benchmark it follows a 64 MiB `fill(7)` into
freshly mapped pages (16,384 page faults: the previous moved buffer is still held, unreachable,
by the receiver until its next collection, so the allocator cannot reuse it; raw V8's allocator
maps fresh pages too), which leaves the CPU caches empty: the cost is then the distinct cache
lines of code and data the path touches, each one a trip to memory. It is not the 64 MiB that
costs: the instruction and cache-line counts are the same for a 64-byte buffer, which costs as
much after 64 MiB written into fresh pages. Counted with callgrind's cache simulation (a 32 MiB
last level) between markers around the timed calls, raw V8's move (detach, `ArrayBuffer::New`
over the store, one global `Set`) touches about 800 cold lines; ivm 0.13's three calls touched
about 3,900 (eval ~2,060, copy_into ~250, set_sync ~1,580), of which about 1,850 were libivm,
V8 and libc and the rest the Python interpreter, cffi and ivm's Python code. Time is not in
proportion to lines (a path of many short functions overlaps its misses), so the same move is
timed at each layer, after the same fill, in the same run. In 0.13 the object API took about
twice the bare cffi calls' time, and most of the difference was two Python frames run once per
object: `copy_into` asked the ExternalCopy that `eval_sync` had just made for its handle's
address through `Handle._address` (a Python method, cold), and `Context.global_` is a
property. `copy_into`, the ExternalCopy result of `eval_sync`, the marker's reading in
`set_sync` (ivm/_cffi_copy.c) and `global_` (a C getter) now run no Python code: the
object API's move was 0.02 to 0.04 ms above the bare cffi calls in the runs of 2026-12-08
(0.08 ms in 0.13's). These cold figures move with the machine's state (the bare cffi move read
0.03 to 0.15 ms across that day's quiet runs): read each run's layers against each other.

{move}

Every second move, the receiver's V8 used to start a garbage collection for the external memory
it gained (the previous, unreachable 64 MiB): about 0.6 ms of CPU, and several milliseconds of
waiting on a loaded machine (raw V8's anchor still does: 3.2 million instructions, 10 to 25 ms
here, on the samples its median of 7 leaves out). Since 0.7 a moved buffer's budget moves with
it (the sender un-charges it as it is detached) and the receiver keeps adopted buffers out of
V8's external-memory count: it collects them when its budget is short of room
(`test_moved_buffers_still_respect_the_receivers_limit` in tests/test_memory.py), so a move no
longer starts a collection.
"""


def copy_steps() -> str:
    """The copy round trip step by step, as a Markdown table (or why not)."""
    try:
        import time
        import ivm
        from ivm import _copy
        from ivm._ffi import lib
    except ImportError as e:
        return f"(not measured: ivm is not importable here: {e})"

    def cpu_ms(fn, n=21) -> float:
        best = float("inf")
        for _ in range(n):
            t0 = time.thread_time()
            fn()
            best = min(best, time.thread_time() - t0)
        return best * 1e3

    iso = ivm.Isolate(memory_limit=256)
    try:
        ctx = iso.create_context_sync()
        ctx.eval_sync("globalThis.data = Array.from({length: 10000}, (_, i) => ({id: i, "
                      "name: 'row-' + i, value: i + 0.5, ok: i % 2 === 0})); "
                      "globalThis.text = JSON.stringify(data); 0")
        rows = ctx.eval_sync("data", copy=True)
        ec = ctx.eval_sync("data", external_copy=True)
        assert ec.copy() == rows and ctx.eval_sync("JSON.parse(text).length") == 10000
        steps = [
            ("JavaScript → copy stream (V8's serializer, translated)",
             cpu_ms(lambda: ctx.eval_sync("data", external_copy=True))),
            ("copy stream → Python objects (C pickle)", cpu_ms(ec.copy)),
            ("Python objects → copy stream (C pickle)",
             cpu_ms(lambda: lib.ivm_value_free(_copy.dumps(rows)))),
            ("Python objects → JavaScript, JSON reader (pickle included)",
             cpu_ms(lambda: ctx.global_.set_sync("back", rows, copy=True))),
            ("Python objects → JavaScript, general reader (pickle included)",
             cpu_ms(lambda: ctx.global_.set_sync("back", [rows, ivm.undefined], copy=True))),
            ("of which V8's `JSON.parse` of the same rows",
             cpu_ms(lambda: ctx.eval_sync("JSON.parse(text), 0"))),
        ]
        ec.release()
    finally:
        iso.dispose()
    return "\n".join(["| step | CPU ms |", "|---|---|"] +
                     [f"| {name} | {ms:.2f} |" for name, ms in steps])


# What each c_breakdown_<step>_us figure times (bench/c_breakdown.cc), in table order.
BREAKDOWN_STEPS = [
    ("raw_v8_bound_run", "raw V8: a bound script run, isolate already locked and entered"),
    ("lock_mutex", "the isolate's call mutex, taken and given back"),
    ("lock_v8_thread", "the call mutex and V8's Locker (this thread's V8 state restored)"),
    ("scopes", "isolate (kept entered by this thread: a count), handle, context scopes and "
                "a TryCatch"),
    ("holder_locked", "IsolateHolder::Locked around nothing: lock and scopes"),
    ("holder_run", "IsolateHolder::Run around nothing: the same plus the call state"),
    ("check_external_memory", "the memory-limit check at the end of a call"),
    ("clock_monotonic", "one monotonic clock read (the call state reads two)"),
    ("clock_thread_cpu", "one thread-CPU clock read (long calls only)"),
    ("compile_cache_lookup", "an eval's compile-cache lookup"),
    ("settle", "the end of a call: tasks and microtasks"),
    ("flush_rejections", "unhandled-rejection bookkeeping"),
    ("result_conversion", "a primitive result made into an ivm_value_t"),
    ("result_to_primitive_out", "the same result into the caller's primitive slot"),
    ("abi_eval", "the whole `ivm_context_eval(\"1+1\")`"),
    ("abi_script_run", "the whole `ivm_script_run` of a compiled `1+1`"),
    ("abi_apply", "the whole `ivm_reference_apply` of a function returning 2"),
]

# The same calls from Python (figures of this run) beside their ABI call from C.
PYTHON_OVER_ABI = [("eval_us", "abi_eval"), ("run_precompiled_us", "abi_script_run")]


def breakdown_rows(ivm: dict) -> list[str]:
    """The table of the c_breakdown_* figures, and what Python adds over each ABI call."""
    def get(step):
        v = ivm.get(f"c_breakdown_{step}_us")
        return v if is_num(v) else None
    steps = [(name, what, get(name)) for name, what in BREAKDOWN_STEPS if get(name) is not None]
    if not steps:
        return []
    rows = ["| step | µs | what it times |", "|---|---|---|"]
    rows += [f"| `{name}` | {us:.3f} | {what} |" for name, what, us in steps]
    extra = []
    raw = get("raw_v8_bound_run")
    for figure, abi in PYTHON_OVER_ABI:
        py, c = ivm.get(figure), get(abi)
        if is_num(py) and c is not None:
            line = (f"- `{figure}` from Python: {py:.3f} µs; the ABI call from C {c:.3f} µs, so "
                    f"the Python wrapper and cffi (with the GIL's release) add {py - c:.3f} µs")
            if raw is not None:
                line += f", and libivm adds {c - raw:.3f} µs over raw V8's {raw:.3f} µs"
            extra.append(line + ".")
    return rows + ([""] + extra if extra else [])


# The 64 MiB move at each layer: (what, figure in this run's ivm section, its unit's factor to ms).
MOVE_LAYERS = [
    ("ivm's object API from Python (`eval_sync`, `copy_into`, `set_sync`)",
     "transfer_arraybuffer_64mb_ms", 1.0),
    ("the same four ABI calls straight through cffi from Python, no wrapper",
     "transfer_arraybuffer_64mb_cffi_ms", 1.0),
    ("the same four ABI calls from C (bench/c_breakdown.cc)", "c_breakdown_move_64mb_abi_us",
     1e-3),
]


def move_rows(doc: dict) -> str:
    """The 64 MiB move at each layer beside raw V8's, as a Markdown table."""
    ivm = doc.get("ivm") or {}
    raw = ((doc.get("anchors") or {}).get("raw_v8") or {}).get("transfer_arraybuffer_64mb_ms")
    rows = ["| layer | ms | × raw V8 |", "|---|---|---|"]
    for what, key, factor in MOVE_LAYERS:
        v = ivm.get(key)
        if is_num(v):
            ratio = f"{v * factor / raw:.2f}" if is_num(raw) and raw > 0 else "–"
            rows.append(f"| {what} | {v * factor:.3f} | {ratio} |")
    if is_num(raw):
        rows.append(f"| raw V8 (the anchors' `raw_v8` section) | {raw:.3f} | 1.00 |")
    return "\n".join(rows) if len(rows) > 2 else "(not measured in this run)"


def write(doc: dict, out_dir: str, command: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, "performance.png")
    why = chart(doc, png)
    rows = breakdown_rows(doc.get("ivm") or {})
    text = "\n".join([
        "# Performance",
        "",
        f"Generated by `{command}`; do not edit by hand (bench/report.py writes it).",
        "Every figure is a median over interleaved rounds, with its [min–max] spread across",
        "rounds; ↓ lower is better, ↑ higher is better. Targets are the project's"
        " (bench/run.py, `TARGETS`).",
        "",
        *table(doc),
        "",
        "![ivm beside every peer, one panel per figure, log scale](performance.png)"
        if why is None else f"(No chart: {why}.)",
        "",
        "## Method",
        "",
        "The workloads and timing rules are the anchors' (`../shared/anchors/README.md`): the",
        "same rows, loop and scripts for every library, in the same process layout. ivm runs",
        "as one more section inside `run-all`'s interleaved rounds, so each round measures",
        "every library under the same load. Per-op figures are the median of the per-op means",
        "of timed batches (each at least 20 ms, or 5 ms in quick mode, after warm-up batches);",
        "the 64 MiB figures are the median of 7 (3 in quick mode) moves of a freshly filled",
        "buffer. Every timed result is checked (the benchmark fails on a wrong value).",
        "",
        "## Machine",
        "",
        *machine_lines(doc),
        "",
        "The machine is shared: a load average above its core count inflates every figure,",
        "and most those that hand work between threads (async, timeouts, worker processes).",
        "",
        "## How to reproduce",
        "",
        "```",
        "pip install -e '.[bench]'                            # matplotlib, for the chart",
        "python bench/run.py --quick --rounds 3 --report docs/   # several minutes",
        "python bench/run.py --rounds 5 --out result.json       # the full run",
        "python bench/report.py result.json docs/              # its report",
        "```",
        "",
        BREAKDOWN.format(c_breakdown="\n".join(rows) if rows else
                         "(none in this run: `IVM_BUILD_DIR` was not set)",
                         copy_steps=copy_steps(), move=move_rows(doc)),
    ])
    path = os.path.join(out_dir, "performance.md")
    with open(path, "w") as f:
        f.write(text.rstrip() + "\n")
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        doc = json.load(f)
    print(write(doc, argv[1], "python bench/report.py " + " ".join(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
