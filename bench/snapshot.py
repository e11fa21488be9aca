"""Start-up from a snapshot vs running the library: lodash 4 (npm's `lodash`, lodash.js,
about 540 KB), fetched once with `npm pack` into ~/.cache/ivm/npm (never into the repository).

    python -P bench/snapshot.py [--rounds 15]

Each round times, interleaved, a fresh isolate with one context that can call `_.chunk`:
  scripts:   Isolate() + create_context_sync() + eval_sync(lodash.js) + the call
  snapshot:  Isolate(snapshot=blob) + create_context_sync() + the call
  warm:      the same from a snapshot made with a warm-up script (its code kept compiled)
and prints one JSON document: medians and [min, max] in ms, the snapshot's size and the
load (`os.getloadavg`) before and after."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import ivm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # (-P: no script folder)
import npm  # noqa: E402  (bench/npm.py)

CALL = "JSON.stringify(_.chunk([1, 2, 3, 4, 5], 2))"
WARMUP = "_.chunk([1,2,3], 2); _.map([1,2], x => x); _.merge({}, {a: 1}); _.debounce(() => 0)"


def lodash_source() -> str:
    return npm.package_file("lodash", 4, "lodash.js")


def start(snapshot: bytes | None, source: str | None) -> float:
    t0 = time.perf_counter()
    iso = ivm.Isolate(snapshot=snapshot)
    ctx = iso.create_context_sync()
    if source is not None:
        ctx.eval_sync(source, filename="lodash.js")
    result = ctx.eval_sync(CALL)
    elapsed = time.perf_counter() - t0
    assert result == "[[1,2],[3,4],[5]]", result
    iso.dispose()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    src = lodash_source()
    load_before = os.getloadavg()
    cold = ivm.Isolate.create_snapshot([(src, "lodash.js")])
    warm = ivm.Isolate.create_snapshot([(src, "lodash.js")], warmup_script=WARMUP)
    times: dict[str, list[float]] = {"scripts": [], "snapshot": [], "warm": []}
    start(cold, None), start(None, src)   # one-time costs out of the rounds
    for _ in range(args.rounds):
        times["scripts"].append(start(None, src))
        times["snapshot"].append(start(cold, None))
        times["warm"].append(start(warm, None))
    out = {
        "lodash_bytes": len(src.encode()),
        "snapshot_bytes": len(cold),
        "warm_snapshot_bytes": len(warm),
        "rounds": args.rounds,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    for key, values in times.items():
        ms = [v * 1e3 for v in values]
        out[f"{key}_ms"] = round(statistics.median(ms), 2)
        out[f"{key}_spread_ms"] = [round(min(ms), 2), round(max(ms), 2)]
    out["speedup"] = round(out["scripts_ms"] / out["snapshot_ms"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
