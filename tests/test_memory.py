"""Memory limits: the heap limit disposes the isolate (the process lives on), ArrayBuffer
and WebAssembly memory count against the limit too."""

from __future__ import annotations

import gc
from typing import Callable

import pytest

import ivm

FILL_HEAP = "const a = []; while (true) a.push(new Array(1e5).fill(1))"
MIB = 1024 * 1024


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    pytest.skip(f"no {field} in /proc/self/status")


def anon_rss_mb() -> float:
    """RSS without file-backed pages: a rarely taken path in V8 faults in about 3 MB of
    libnode's code once, at a point that varies from run to run, and VmRSS counts it as
    growth."""
    return rss_mb("RssAnon")


def test_heap_limit_disposes_isolate_and_process_lives() -> None:
    iso = ivm.Isolate(memory_limit=16)
    context = iso.create_context_sync()
    with pytest.raises(ivm.MemoryLimitError) as info:
        context.eval_sync(FILL_HEAP, timeout=60)
    assert isinstance(info.value, MemoryError)
    assert iso.is_disposed
    with pytest.raises(ivm.DisposedError):
        context.eval_sync("1")
    with pytest.raises(ivm.DisposedError):
        iso.create_context_sync()
    iso.dispose()  # still idempotent
    with ivm.Isolate(memory_limit=16) as fresh:
        assert fresh.create_context_sync().eval_sync("'fresh'") == "fresh"


def test_heap_limit_in_a_script_run() -> None:
    with ivm.Isolate(memory_limit=16) as iso:
        script = iso.compile_script_sync(FILL_HEAP)
        with pytest.raises(ivm.MemoryLimitError):
            script.run_sync(iso.create_context_sync(), timeout=60)
        assert iso.is_disposed


def test_heap_limit_hits_only_its_isolate() -> None:
    with ivm.Isolate(memory_limit=64) as bystander, ivm.Isolate(memory_limit=16) as victim:
        keep = bystander.create_context_sync()
        keep.eval_sync("globalThis.state = 'intact'")
        with pytest.raises(ivm.MemoryLimitError):
            victim.create_context_sync().eval_sync(FILL_HEAP, timeout=60)
        assert not bystander.is_disposed
        assert keep.eval_sync("state") == "intact"


def test_repeated_heap_limit_failures() -> None:
    for _ in range(5):
        iso = ivm.Isolate(memory_limit=16)
        with pytest.raises(ivm.MemoryLimitError):
            iso.create_context_sync().eval_sync(FILL_HEAP, timeout=60)
        assert iso.is_disposed
    with ivm.Isolate(memory_limit=16) as iso:
        assert iso.create_context_sync().eval_sync("1") == 1


def test_larger_limit_allows_more(isolate: ivm.Isolate, context: ivm.Context) -> None:
    # About 24 MB of live objects: past a 16 MB isolate's limit, within this 64 MB one.
    code = "globalThis.keep = []; for (let i = 0; i < 60; i++) keep.push(new Array(1e5).fill(1.5)); 0"
    assert context.eval_sync(code, timeout=60) == 0
    assert not isolate.is_disposed
    with ivm.Isolate(memory_limit=16) as small:
        with pytest.raises(ivm.MemoryLimitError):
            small.create_context_sync().eval_sync(code, timeout=60)


def test_huge_array_buffer_is_a_range_error(isolate: ivm.Isolate, context: ivm.Context) -> None:
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync("new ArrayBuffer(2**33)")
    assert info.value.name == "RangeError"
    assert not isolate.is_disposed
    assert context.eval_sync("new ArrayBuffer(1024).byteLength") == 1024


@pytest.mark.parametrize(
    "code",
    [
        "new ArrayBuffer(100 * 1024 * 1024)",
        "new Uint8Array(2**30)",
        "new Float64Array(2**26)",
    ],
)
def test_array_buffers_past_the_limit_are_range_errors(
    isolate: ivm.Isolate, context: ivm.Context, code: str
) -> None:
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync(code)
    assert info.value.name == "RangeError"
    assert context.eval_sync("1") == 1


@pytest.mark.parametrize("kind", ["ArrayBuffer", "SharedArrayBuffer"])
def test_many_live_buffers_past_the_limit_are_range_errors(
    isolate: ivm.Isolate, context: ivm.Context, kind: str
) -> None:
    code = f"globalThis.bufs = []; for (let i = 0; i < 1000; i++) bufs.push(new {kind}(1024 * 1024))"
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync(code, timeout=60)
    assert info.value.name == "RangeError"
    assert not isolate.is_disposed
    kept = context.eval_sync("bufs.length")
    assert isinstance(kept, int) and 0 < kept <= 64
    stats = isolate.get_heap_statistics_sync()
    assert stats.externally_allocated_size <= 64 * MIB
    # Dropping them frees their share of the limit again.
    context.eval_sync("bufs = null")
    for _ in range(3):
        context.eval_sync("new ArrayBuffer(1); 0")
    assert context.eval_sync(
        "globalThis.more = []; for (let i = 0; i < 16; i++) more.push(new ArrayBuffer(1024 * 1024)); more.length",
        timeout=60,
    ) == 16


def test_buffers_freed_by_gc_do_not_count(isolate: ivm.Isolate, context: ivm.Context) -> None:
    # 1 GB of short-lived 1 MB buffers through a 64 MB isolate.
    code = "let n = 0; for (let i = 0; i < 1024; i++) n += new ArrayBuffer(1024 * 1024).byteLength; n"
    assert context.eval_sync(code, timeout=60) == 1024 * MIB
    assert not isolate.is_disposed


def test_contexts_past_the_limit() -> None:
    iso = ivm.Isolate(memory_limit=16)
    before = rss_mb()
    contexts = []
    with pytest.raises((ivm.MemoryLimitError, ivm.DisposedError)):
        for _ in range(100_000):
            contexts.append(iso.create_context_sync())
    assert iso.is_disposed
    assert len(contexts) > 1
    assert rss_mb() - before < 300
    del contexts
    gc.collect()
    with ivm.Isolate(memory_limit=16) as fresh:
        assert fresh.create_context_sync().eval_sync("2") == 2


def test_contexts_filled_with_data_past_the_limit() -> None:
    iso = ivm.Isolate(memory_limit=16)
    contexts = []
    with pytest.raises((ivm.MemoryLimitError, ivm.DisposedError)):
        for _ in range(10_000):
            context = iso.create_context_sync()
            context.eval_sync("globalThis.data = new Array(1e5).fill(0.5); 0", timeout=60)
            contexts.append(context)
    assert iso.is_disposed


# --- WebAssembly memory is allocated outside the heap: it must count too -------------------


def _assert_refused(iso: ivm.Isolate, context: ivm.Context, code: str) -> None:
    """The allocation must fail: either as a JavaScript RangeError, or with the isolate
    disposed for its memory limit. Succeeding silently is the bug."""
    try:
        result = context.eval_sync(code, timeout=60)
    except ivm.MemoryLimitError:
        assert iso.is_disposed
    except ivm.JSError as err:
        assert err.name == "RangeError", err.stack
        assert context.eval_sync("1") == 1
    else:
        pytest.fail(f"{code!r} allocated past the 64 MB limit and returned {result!r}")


def test_wasm_memory_past_the_limit(isolate: ivm.Isolate, context: ivm.Context) -> None:
    # 4096 pages of 64 KiB: 256 MB.
    _assert_refused(isolate, context,
                    "new WebAssembly.Memory({initial: 4096}).buffer.byteLength")


def test_wasm_memory_grow_past_the_limit(isolate: ivm.Isolate, context: ivm.Context) -> None:
    _assert_refused(
        isolate, context,
        "const m = new WebAssembly.Memory({initial: 1, maximum: 65536});\n"
        "for (let i = 0; i < 64; i++) m.grow(64);\n"
        "m.buffer.byteLength",
    )


def test_many_wasm_memories_past_the_limit(isolate: ivm.Isolate, context: ivm.Context) -> None:
    # 100 memories of 10 MB each, all kept alive.
    _assert_refused(
        isolate, context,
        "globalThis.ms = []; for (let i = 0; i < 100; i++) ms.push(new WebAssembly.Memory({initial: 160}));\n"
        "ms.length",
    )


def test_wasm_memory_within_the_limit_works(isolate: ivm.Isolate, context: ivm.Context) -> None:
    assert context.eval_sync("new WebAssembly.Memory({initial: 16}).buffer.byteLength") == 16 * 65536


def test_memory_limit_failures_do_not_leak(no_leaks: None) -> None:
    for _ in range(3):
        iso = ivm.Isolate(memory_limit=16)
        context = iso.create_context_sync()
        try:
            context.eval_sync(FILL_HEAP, timeout=60)
        except ivm.MemoryLimitError:
            pass
        del iso, context


# Every path by which a string enters an isolate, each given the same 100 MB string.
_BIG_STRING_PATHS = {
    "closure argument": lambda ctx, s: ctx.eval_closure_sync("globalThis.a = $0; return 1", [s]),
    "copied closure argument": lambda ctx, s: ctx.eval_closure_sync(
        "globalThis.a = $0; return 1", [s], arguments_options={"copy": True}
    ),
    "nested in a copy": lambda ctx, s: ctx.eval_closure_sync(
        "globalThis.a = $0; return 1", [[s]], arguments_options={"copy": True}
    ),
    "set_sync": lambda ctx, s: ctx.global_.set_sync("a", s),
    "copied set_sync": lambda ctx, s: ctx.global_.set_sync("a", s, copy=True),
    "apply argument": lambda ctx, s: ctx.eval_sync("(x => x.length)", reference=True).apply_sync(
        None, [s]
    ),
    "ExternalCopy.copy_into": lambda ctx, s: ctx.eval_closure_sync(
        "globalThis.a = $0; return 1", [ivm.ExternalCopy(s).copy_into()]
    ),
    "callback result": lambda ctx, s: (
        ctx.global_.set_sync("big", ivm.Callback(lambda: s)),
        ctx.eval_sync("globalThis.a = big(); 1"),
    ),
    "code": lambda ctx, s: ctx.eval_sync("'" + s + "'"),
    "compiled code": lambda ctx, s: ctx.isolate.compile_script_sync("'" + s + "'"),
}


@pytest.mark.parametrize("path", list(_BIG_STRING_PATHS))
def test_a_string_past_the_memory_limit_is_refused_on_every_path(path: str) -> None:
    """A 100 MB string in a 32 MB isolate used to be accepted at the top level, and
    the next one aborted the process ("Fatal javascript OOM")."""
    big = "x" * (100 * MIB)
    with ivm.Isolate(memory_limit=32) as iso:
        ctx = iso.create_context_sync()
        for _ in range(2):  # the second would abort the process if the first got in
            # (a callback's result is refused inside the isolate: a JSError)
            with pytest.raises((ivm.TransferError, ivm.JSError), match="does not fit in the isol"):
                _BIG_STRING_PATHS[path](ctx, big)
        assert ctx.eval_sync("typeof globalThis.a") == "undefined"
        # The isolate stays usable, and strings that fit still pass.
        assert ctx.eval_closure_sync("return $0.length", ["y" * (4 * MIB)]) == 4 * MIB
        assert ctx.eval_sync("'é'.repeat(10)") == "é" * 10


# --- one-line heap blow-ups: contained where the unwind room allows, else a process abort

_BLOWUP_CHILD = """
import sys, ivm
iso = ivm.Isolate(memory_limit=32)
ctx = iso.create_context_sync()
try:
    ctx.eval_sync(sys.argv[1], timeout=60)
except ivm.MemoryLimitError:
    print("contained", iso.is_disposed, flush=True)
with ivm.Isolate(memory_limit=32) as fresh:
    print("fresh", fresh.create_context_sync().eval_sync("6 * 7"), flush=True)
"""


def _blow_up_in_a_child(code: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", _BLOWUP_CHILD, code],
        cwd=Path(ivm.__file__).parent.parent,  # the installed ivm, not the source tree
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["contained", "True", "fresh", "42"]


@pytest.mark.parametrize(
    "code",
    [
        "Array.from({length: 2**23}, (_, i) => i)",
        "[...Array(2**23).keys()]",
        "JSON.stringify(Array(2**23).fill('abcdefghijklmnop'))",
        "const keep = []; for (let i = 0; ; i++) {"
        " const s = ('x' + i).repeat(2 ** 25); s.indexOf('y'); keep.push(s) }",
    ],
)
def test_one_line_heap_blowups_are_memory_limit_errors(code: str) -> None:
    """Each of these aborted the process at memory_limit=32 (exit 133): a builtin grew the
    heap past the old limit in one step, and the unwind room V8 was given was counted from
    that limit, not from what the heap held."""
    _blow_up_in_a_child(code)


@pytest.mark.xfail(strict=True, reason="V8 aborts: more elements than a FixedArray can hold")
def test_splitting_a_128_mb_string_into_characters_aborts() -> None:
    """Not a memory limit at all: V8 refuses the array's size with a fatal error
    ("invalid size error"), at any limit. Only process isolation contains it."""
    _blow_up_in_a_child("'x'.repeat(2**27).split('')")


@pytest.mark.xfail(strict=True, reason="V8 aborts: one allocation larger than the unwind cap")
def test_an_allocation_past_the_unwind_cap_aborts() -> None:
    """new Array(1e8).fill(0) needs about 800 MB at once; the room granted to unwind stops
    at limit + max(limit, 256 MiB), so V8 aborts the process."""
    _blow_up_in_a_child("new Array(1e8).fill(0)")


# --- churn: RSS stays flat while isolates and everything in them come and go


def _churn_sync(i: int) -> None:
    iso = ivm.Isolate(memory_limit=16)
    ctx = iso.create_context_sync()
    fn = iso.compile_script_sync("x => x + 1").run_sync(ctx, reference=True)
    assert fn.apply_sync(None, [i]) == i + 1
    ctx.global_.set_sync("double", ivm.Callback(lambda x: 2 * x))
    assert ctx.eval_sync("double(21)") == 42
    copy = ctx.eval_sync("({a: [1, 2], b: new Uint8Array(3).buffer})", external_copy=True)
    assert copy.copy()["a"] == [1, 2]
    assert ctx.eval_closure_sync("return $0.byteLength", [ivm.ExternalCopy(b"abc").copy_into()]) == 3
    if i % 2:
        iso.dispose()  # else everything is dropped, and freed by the garbage collector


async def _churn_async(i: int) -> None:
    iso = ivm.Isolate(memory_limit=16)
    ctx = await iso.create_context()
    fn = await (await iso.compile_script("x => x + 1")).run(ctx, reference=True)
    assert await fn.apply(None, [i]) == i + 1
    ctx.global_.set_sync("double", ivm.Callback(lambda x: 2 * x))
    assert await ctx.eval("double(21)") == 42
    copy = await ctx.eval("({a: [1, 2]})", external_copy=True)
    assert copy.copy() == {"a": [1, 2]}
    if i % 2:
        iso.dispose()


def _growth_mb(cycles: int, warmup: int, cycle: Callable[[int], None],
               measure: Callable[[], float] = rss_mb) -> float:
    for i in range(warmup):
        cycle(i)
    gc.collect()
    base = measure()
    for i in range(cycles):
        cycle(i)
    gc.collect()
    return measure() - base


def test_rss_stays_flat_under_isolate_churn() -> None:
    """Each disposed isolate used to keep ~640 bytes of V8 thread state (a thread's
    parked lock outlived the isolate): 1.9 MB over these cycles."""
    growth = _growth_mb(3000, 300, _churn_sync)
    assert growth <= 1.0, f"RSS grew by {growth:.2f} MB over 3,000 isolate cycles"


@pytest.mark.anyio
async def test_rss_stays_flat_under_async_isolate_churn() -> None:
    async def cycles(n: int, first: int = 0) -> None:
        for i in range(first, first + n):
            await _churn_async(i)

    await cycles(300)
    gc.collect()
    base = rss_mb()
    await cycles(1000, 300)
    gc.collect()
    growth = rss_mb() - base
    # (pool threads' parked locks used to leak ~9 KB an isolate: 9 MB here)
    assert growth <= 1.0, f"RSS grew by {growth:.2f} MB over 1,000 async isolate cycles"


# --- the broader churn: two contexts, scripts, References both ways, Callbacks, ExternalCopies
# and a cross-isolate reference per cycle; `i % 3` picks the end: dispose(), contexts and
# references released then the rest left to the garbage collector, or everything left to it.


def _end(i: int, iso: ivm.Isolate, *handles: ivm.Context | ivm.Reference | ivm.Script) -> None:
    if i % 3 == 0:
        iso.dispose()
    elif i % 3 == 1:
        for handle in handles:
            handle.release()


def _mixed_sync(i: int, peer: ivm.Context) -> None:
    iso = ivm.Isolate(memory_limit=16)
    ctx, other = iso.create_context_sync(), iso.create_context_sync()
    script = iso.compile_script_sync("globalThis.n = (globalThis.n || 0) + 1")
    assert script.run_sync(ctx) == 1 and script.run_sync(other) == 1
    fn = ctx.eval_sync("(f, x) => f.applySync(undefined, [x]) + 1", reference=True)
    assert fn.apply_sync(None, [ivm.Reference(lambda x: 2 * x), i]) == 2 * i + 1
    ctx.global_.set_sync("cb", ivm.Callback(lambda s: s.upper()))
    assert ctx.eval_sync("cb('ab')") == "AB"
    copy = other.eval_sync("({a: [1, 2], b: new Uint8Array(3).buffer})", external_copy=True)
    assert copy.copy()["a"] == [1, 2]
    assert ctx.eval_closure_sync(
        "return $0.byteLength + $1.copy().k", [ivm.ExternalCopy(b"abc").copy_into(), ivm.ExternalCopy({"k": 1})]
    ) == 4
    # A reference into this isolate, used from a long-lived one.
    # A reference to a long-lived isolate's function, used from this one.
    other.global_.set_sync("twice", peer.global_.get_sync("twice", reference=True))
    assert other.eval_sync("twice.applySync(undefined, [21])") == 42
    _end(i, iso, ctx, other, fn, script)


async def _mixed_async(i: int, peer: ivm.Context) -> None:
    iso = ivm.Isolate(memory_limit=16)
    ctx, other = await iso.create_context(), await iso.create_context()
    script = await iso.compile_script("globalThis.n = (globalThis.n || 0) + 1")
    assert await script.run(ctx) == 1 and await script.run(other) == 1
    fn = await ctx.eval("(f, x) => f.apply(undefined, [x]).then(y => y + 1)", reference=True)

    async def double(x: int) -> int:
        return 2 * x

    assert await fn.apply(None, [ivm.Reference(double), i], result_options={"promise": True}) == 2 * i + 1
    ctx.global_.set_sync("cb", ivm.Callback(lambda s: s.upper()))
    assert await ctx.eval("cb('ab')") == "AB"
    copy = await other.eval("({a: [1, 2]})", external_copy=True)
    assert copy.copy() == {"a": [1, 2]}
    assert await ctx.eval_closure("return $0.byteLength", [ivm.ExternalCopy(b"abc").copy_into()]) == 3
    other.global_.set_sync("twice", await peer.global_.get("twice", reference=True))
    assert await other.eval("twice.apply(undefined, [21])", promise=True) == 42
    _end(i, iso, ctx, other, fn, script)


# The long-lived isolate of the mixed-churn tests: a 32 MB limit keeps V8's own 1 MiB
# semi-spaces (libivm/isolate.cc, SizeYoungGeneration), which a default isolate's would
# otherwise grow from toward 4 MiB during the run: megabytes of its own heap that these
# tests, which look for memory kept beside the isolates torn down, would count as growth.
LONG_LIVED_LIMIT_MB = 32


def _peer(long_lived: ivm.Isolate) -> ivm.Context:
    peer = long_lived.create_context_sync()
    peer.eval_sync("globalThis.twice = x => 2 * x; 0")
    return peer


def test_rss_stays_flat_under_mixed_churn() -> None:
    with ivm.Isolate(memory_limit=LONG_LIVED_LIMIT_MB) as long_lived:
        peer = _peer(long_lived)
        growth = _growth_mb(1500, 300, lambda i: _mixed_sync(i, peer))
    assert growth <= 1.0, f"RSS grew by {growth:.2f} MB over 1,500 mixed isolate cycles"


@pytest.mark.anyio
async def test_rss_stays_flat_under_mixed_async_churn() -> None:
    """Isolates dropped for the garbage collector after awaited calls are torn down on a
    pool thread, and used to keep the V8 state of the event loop thread's parked lock
    (about 3-4 KB for each isolate torn down there)."""
    with ivm.Isolate(memory_limit=LONG_LIVED_LIMIT_MB) as long_lived:
        peer = _peer(long_lived)

        async def settled(first: int) -> float:
            # The lowest of three readings 50 cycles apart: the long-lived isolate's heap
            # and the allocator swing by up to 1 MB from one reading to the next (seen on
            # a 2-core machine, with no growth in ivm_debug_live_objects), while a leak
            # raises every reading.
            readings = []
            for k in range(3):
                for i in range(first + 50 * k, first + 50 * (k + 1)):
                    await _mixed_async(i, peer)
                gc.collect()
                readings.append(rss_mb())
            return min(readings)

        for i in range(200):
            await _mixed_async(i, peer)
        base = await settled(200)
        for i in range(350, 3200):
            await _mixed_async(i, peer)
        growth = await settled(3200) - base
    # (measured over 1,500 cycles: 0.05-0.25 MB on one machine, up to 0.7 on another with a
    # single reading at each end; 0.9-1.8 MB before the fix. 3,000 cycles against twice the
    # bound: the same rate, and twice the leak against the same swing.)
    assert growth <= 1.0, f"RSS grew by {growth:.2f} MB over 3,000 mixed async isolate cycles"


def test_rss_stays_flat_under_context_churn_in_one_isolate() -> None:
    """Contexts made and dropped in one long-lived isolate (released, or collected). The
    isolate's own heap swings by megabytes with its garbage collector's timing, so what
    must stay flat is the process's memory beside that heap."""
    with ivm.Isolate(memory_limit=32) as iso:

        def cycle(i: int) -> None:
            ctx = iso.create_context_sync()
            ref = ctx.eval_sync("({v: 1})", reference=True)
            assert ref.get_sync("v") == 1
            ctx.global_.set_sync("cb", ivm.Callback(lambda: i))
            assert ctx.eval_sync("cb()") == i
            if i % 2:
                ctx.release()

        def outside_the_heap() -> float:
            gc.collect()
            return rss_mb() - iso.get_heap_statistics_sync().total_heap_size / MIB

        for i in range(500):
            cycle(i)
        base = outside_the_heap()
        for i in range(4000):
            cycle(i)
        growth = outside_the_heap() - base
    assert growth <= 1.0, f"RSS beside the heap grew by {growth:.2f} MB over 4,000 contexts"


def test_references_held_by_a_long_lived_isolate_do_not_pin_isolates_for_ever() -> None:
    """A long-lived isolate that received a Reference into each short-lived one kept every
    one of them alive until its own garbage collector ran, which its small heap never
    asked for: about 850 KB per cycle (1.7 GB here). Such Reference objects are now
    reported to V8 as external memory (1 MiB each), so it collects them as they add up."""
    with ivm.Isolate() as long_lived:
        peer = long_lived.create_context_sync()

        def cycle(i: int) -> None:
            iso = ivm.Isolate(memory_limit=16)
            inc = iso.create_context_sync().eval_sync("x => x + 1", reference=True)
            peer.global_.set_sync("inc", inc)
            assert peer.eval_sync("inc.applySync(undefined, [1])") == 2
            peer.global_.delete_sync("inc")

        growth = _growth_mb(2000, 200, cycle)
        # (up to about 64 unreachable ones wait for the next collection)
        assert growth <= 96, f"RSS grew by {growth:.2f} MB over 2,000 pinned isolates"
        assert long_lived.get_heap_statistics_sync().externally_allocated_size <= 128 * MIB


def test_isolates_left_to_the_gc_holding_references_into_each_other_are_freed() -> None:
    """Two isolates left to the garbage collector, each holding an unreachable Reference
    into the other, kept each other alive for ever: nothing ever ran in either again, so
    neither collected its garbage (about 1 MB per isolate; the soak's "3.6 KB per step",
    which replaced its long-lived isolates now and then). Freeing an isolate's handle now
    collects its garbage once when something else keeps it alive."""

    def cycle(i: int) -> None:
        a = ivm.Isolate(memory_limit=16)
        b = ivm.Isolate(memory_limit=16)
        ca, cb = a.create_context_sync(), b.create_context_sync()
        for here, there in ((ca, cb), (cb, ca)):
            here.global_.set_sync("inc", there.eval_sync("x => x + 1", reference=True))
            assert here.eval_sync(f"inc.applySync(undefined, [{i}])") == i + 1
            here.global_.delete_sync("inc")

    growth = _growth_mb(300, 30, cycle)
    gc.collect()
    assert growth <= 16, f"RSS grew by {growth:.2f} MB over 600 isolates left to the GC"


def test_rss_stays_flat_when_isolates_are_disposed_from_another_thread() -> None:
    """dispose() from another thread while this one runs JavaScript: this thread's lock
    used to be parked after the call and its V8 state kept (about 9 KB per isolate; the
    soak found it). Measured on anonymous RSS: the ~2.9 MB this test saw now and then
    since "dispose waits for host code" were libnode's code pages (its r-xp mapping grew
    by 3,008 KB, once, whether over 500 or 2,000 cycles; anonymous memory and malloc's
    in-use bytes stayed flat), so it was never a per-isolate leak."""
    import threading

    def cycle(i: int) -> None:
        iso = ivm.Isolate(memory_limit=16)
        ctx = iso.create_context_sync()
        started = threading.Event()
        ctx.global_.set_sync("started", ivm.Callback(lambda: started.set()))

        def dispose() -> None:
            started.wait(60)
            iso.dispose()

        thread = threading.Thread(target=dispose)
        thread.start()
        with pytest.raises(ivm.DisposedError):
            ctx.eval_sync("started(); while (true) {}")
        thread.join()

    growth = _growth_mb(2000, 200, cycle, anon_rss_mb)
    assert growth <= 1.0, f"RSS grew by {growth:.2f} MB over 2,000 isolates disposed elsewhere"


def test_buffers_moved_again_and_again_stay_within_both_budgets() -> None:
    """A moved ArrayBuffer stays reserved in the sender's budget as well as the receiver's
    until the receiver collects it, and the receiver collects it when V8 counts it as
    external memory. So moves repeated many times over the budgets keep working: a change
    that kept moved buffers out of the receiver's external-memory count (to spare it a
    collection) made the sender's `new ArrayBuffer` fail at the fifth 64 MiB move here."""
    a = ivm.Isolate(memory_limit=256)
    b = ivm.Isolate(memory_limit=256)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        for _ in range(12):
            ca.eval_sync("globalThis.buf = new ArrayBuffer(64 * 1024 * 1024); 0")
            ec = ca.eval_sync("buf", external_copy=True, transfer_out=True)
            cb.global_.set_sync("got", ec.copy_into(release=True, transfer_in=True))
            assert cb.eval_sync("got.byteLength") == 64 * 1024 * 1024
            ca.eval_sync("delete globalThis.buf; 0")
            cb.eval_sync("delete globalThis.got; 0")
    finally:
        a.dispose()
        b.dispose()


def test_a_moved_buffer_takes_its_budget_with_it() -> None:
    """The budget moves with a transferred ArrayBuffer: it leaves the sender's
    externally_allocated_size as the buffer is detached and enters the receiver's as the
    receiver adopts it, while the memory itself is not copied. (Before, the sender stayed
    charged until the receiver's garbage collector freed the buffer.)"""
    a = ivm.Isolate(memory_limit=256)
    b = ivm.Isolate(memory_limit=256)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        ca.eval_sync("globalThis.buf = new ArrayBuffer(64 * 1024 * 1024); 0")
        assert a.get_heap_statistics_sync().externally_allocated_size >= 64 * MIB
        ec = ca.eval_sync("buf", external_copy=True, transfer_out=True)
        assert ca.eval_sync("buf.byteLength") == 0
        assert a.get_heap_statistics_sync().externally_allocated_size < 64 * MIB
        assert b.get_heap_statistics_sync().externally_allocated_size < 64 * MIB
        cb.global_.set_sync("got", ec.copy_into(release=True, transfer_in=True))
        assert a.get_heap_statistics_sync().externally_allocated_size < 64 * MIB
        assert b.get_heap_statistics_sync().externally_allocated_size >= 64 * MIB
        assert cb.eval_sync("new Uint8Array(got).length") == 64 * MIB
        # The sender's budget is free for four more such buffers at once.
        ca.eval_sync("globalThis.more = Array.from({length: 3}, () => new ArrayBuffer(64 * 1024 * 1024)); 0")
    finally:
        a.dispose()
        b.dispose()


def test_moved_buffers_still_respect_the_receivers_limit() -> None:
    """Adopted buffers are charged to the receiver's budget: live ones past it are refused
    (a TransferError, the copy left intact), and unreachable ones are collected when the
    budget needs their room."""
    a = ivm.Isolate(memory_limit=512)
    b = ivm.Isolate(memory_limit=128)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        cb.eval_sync("globalThis.kept = []; 0")

        def move() -> None:
            ca.eval_sync("globalThis.buf = new ArrayBuffer(48 * 1024 * 1024); 0")
            ec = ca.eval_sync("buf", external_copy=True, transfer_out=True)
            try:
                cb.eval_closure_sync("kept.push($0)", [ec.copy_into(transfer_in=True)])
            finally:
                ec.release()

        move()
        move()
        with pytest.raises(ivm.TransferError, match="memory limit"):
            move()
        assert cb.eval_sync("kept.length") == 2
        cb.eval_sync("kept.length = 0")   # garbage now: collected when the budget needs it
        for _ in range(6):
            move()
            cb.eval_sync("kept.length = 0")
        assert b.get_heap_statistics_sync().externally_allocated_size <= 128 * MIB
    finally:
        a.dispose()
        b.dispose()


def test_buffers_moved_back_and_forth_keep_both_budgets_balanced() -> None:
    """A buffer moved into its own isolate, or there and back again through another, is
    charged once per isolate holding it and given back once: 30 moves of 48 MiB through
    128 MiB budgets keep working (a charge left behind on either side would fill them)."""
    a = ivm.Isolate(memory_limit=128)
    b = ivm.Isolate(memory_limit=128)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()

        def move(src: ivm.Context, dst: ivm.Context, name: str) -> None:
            ec = src.eval_sync(name, external_copy=True, transfer_out=True)
            dst.global_.set_sync(name, ec.copy_into(release=True, transfer_in=True))
            assert dst.eval_sync(f"{name}.byteLength") == 48 * MIB

        for _ in range(10):
            ca.eval_sync("globalThis.x = new ArrayBuffer(48 * 1024 * 1024); 0")
            move(ca, ca, "x")          # into its own isolate
            move(ca, cb, "x")          # there ...
            move(cb, ca, "x")          # ... and back
            ca.eval_sync("delete globalThis.x; 0")
        assert a.get_heap_statistics_sync().externally_allocated_size <= 128 * MIB
        assert b.get_heap_statistics_sync().externally_allocated_size < 48 * MIB
    finally:
        a.dispose()
        b.dispose()


def test_a_buffer_kept_moving_between_two_isolates_keeps_both_budgets_balanced() -> None:
    """One live ArrayBuffer moved A -> B -> A ... without being freed in between: each
    adoption charges the receiver and each move out gives the sender's charge back, so 30
    round trips of 48 MiB through 128 MiB budgets keep working. (Before, an address moved
    out once was not given back when it left again: the third round trip found A's budget
    full with a TransferError.)"""
    a = ivm.Isolate(memory_limit=128)
    b = ivm.Isolate(memory_limit=128)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        ca.eval_sync("globalThis.x = new ArrayBuffer(48 * 1024 * 1024); new Uint8Array(x)[7] = 42; 0")

        def move(src: ivm.Context, dst: ivm.Context) -> None:
            ec = src.eval_sync("x", external_copy=True, transfer_out=True)
            dst.global_.set_sync("x", ec.copy_into(release=True, transfer_in=True))
            assert src.eval_sync("x.byteLength") == 0
            assert dst.eval_sync("new Uint8Array(x)[7]") == 42

        for _ in range(30):
            move(ca, cb)
            move(cb, ca)
        assert a.get_heap_statistics_sync().externally_allocated_size <= 64 * MIB
        assert b.get_heap_statistics_sync().externally_allocated_size < 48 * MIB
        # Both budgets have room for two more such buffers.
        ca.eval_sync("globalThis.more = [new ArrayBuffer(48 * 1024 * 1024)]; 0")
        cb.eval_sync("globalThis.more = [new ArrayBuffer(48 * 1024 * 1024), "
                     "new ArrayBuffer(48 * 1024 * 1024)]; 0")
    finally:
        a.dispose()
        b.dispose()


_MOVE_CHAIN_CHILD = """
import sys, ivm
a, b = ivm.Isolate(), ivm.Isolate()
ca, cb = a.create_context_sync(), b.create_context_sync()
kind, move = sys.argv[2], sys.argv[2] == "ArrayBuffer"
ca.eval_sync(f"globalThis.buf = new {kind}(1024); new Uint8Array(buf)[3] = 9; 0")
for i in range(int(sys.argv[1])):
    src, dst = (ca, cb) if i % 2 == 0 else (cb, ca)
    moved = src.eval_sync("buf", external_copy=True, transfer_out=move)
    dst.global_.set_sync("buf", moved.copy_into(release=True, transfer_in=move))
print("value", ca.eval_sync("new Uint8Array(buf)[3]"), flush=True)
ca.eval_sync("buf = null; 0")
ca.release(); cb.release(); a.dispose(); b.dispose()
print("freed", flush=True)
"""


@pytest.mark.parametrize("kind", ["ArrayBuffer", "SharedArrayBuffer"])
def test_a_buffer_passed_back_and_forth_200_000_times_frees_without_deep_recursion(
    kind: str,
) -> None:
    """Each isolate wraps the store it is given (a moved ArrayBuffer, a shared
    SharedArrayBuffer); a wrapper that moves on is wrapped as its source, not wrapped
    again. (Before, 200,000 passes made a chain of 200,000 wrappers whose frees called one
    another: the last free overflowed the stack, a segfault.)"""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", _MOVE_CHAIN_CHILD, "200000", kind],
        cwd=Path(ivm.__file__).parent.parent,  # the installed ivm, not the source tree
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == ["value", "9", "freed"]


def test_empty_and_detached_buffers_move_and_real_moves_keep_their_bytes() -> None:
    """A moved empty (or already detached) ArrayBuffer arrives as an empty one, with no
    wrapper: V8 never calls the deleter of a store without data, so a wrapper for it stayed
    in the adopted-store registry after its free, and a later store at the same address
    would have been taken for it. Real moves between them keep their own bytes."""
    a, b = ivm.Isolate(memory_limit=32), ivm.Isolate(memory_limit=32)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        ca.eval_sync("globalThis.gone = new ArrayBuffer(8); 0")
        ca.eval_sync("gone", external_copy=True, transfer_out=True).release()  # detaches it
        assert ca.eval_sync("gone.byteLength") == 0
        for i in range(300):
            empty = ca.eval_sync("new ArrayBuffer(0)" if i % 2 else "gone",
                                 external_copy=True, transfer_out=True)
            cb.global_.set_sync("e", empty.copy_into(release=True, transfer_in=True))
            assert cb.eval_sync("e.byteLength") == 0
            full = ca.eval_sync(f"new Uint8Array(64).fill({i % 250 + 1}).buffer",
                                external_copy=True, transfer_out=True)
            cb.global_.set_sync("f", full.copy_into(release=True, transfer_in=True))
            ca.eval_sync("for (let k = 0; k < 20; k++) new Uint8Array(64).fill(255); 0")
            assert cb.eval_sync(f"new Uint8Array(f).every(x => x === {i % 250 + 1})")
        assert cb.eval_sync("e = f = null; 0") == 0
    finally:
        a.dispose()
        b.dispose()


def test_the_young_generation_comes_out_of_the_limit() -> None:
    """libivm gives the young generation 4 MiB semi-spaces at the default limit (up to 8 MiB,
    libivm/isolate.cc, SizeYoungGeneration) and takes them from the old generation: V8 rounds
    a semi-space up to a power of two, and a size it rounded would make the heap's limit
    larger than the isolate's memory limit."""
    for mb in (8, 16, 32, 48, 64, 100, 128, 200, 256, 1024, 4096):
        with ivm.Isolate(memory_limit=mb) as iso:
            assert iso.get_heap_statistics_sync().heap_size_limit == mb * MIB, mb
