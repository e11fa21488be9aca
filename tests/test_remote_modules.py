"""ES modules and code caches in worker-hosted isolates (issue 13 in workers): the module
tests of test_modules.py that read exports through a namespace, here mostly reading them
through globalThis (a namespace is a Reference into the worker, tested on its own); code
caches that cross between inline isolates and workers; and churn that leaks nothing on
either side of the channel. The tests that need neither run in test_modules.py and
test_code_cache.py against both placements."""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path
from typing import Callable

import anyio
import pytest

import ivm

MODULE = "export function twice(x) { return 2 * x; }\nglobalThis.result = twice(21);"


def by_name(modules: dict[str, ivm.Module]) -> Callable[[str, ivm.Module], ivm.Module]:
    return lambda specifier, referrer: modules[specifier]


def _worker_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no VmRSS in /proc/<pid>/status")


def test_a_cyclic_graph_of_three_modules_evaluates(rctx: ivm.Context) -> None:
    iso = rctx.isolate
    mods = {
        name: iso.compile_module_sync(code, filename=f"file:///{name}")
        for name, code in {
            "a.mjs": "import {b} from 'b.mjs'; export const a = 'a'; import {c2} from 'c.mjs';"
            " globalThis.all = () => a + b + c2();",
            "b.mjs": "import {c} from 'c.mjs'; export const b = 'b'; globalThis.viaC = () => c;",
            "c.mjs": "import {a} from 'a.mjs'; export const c = 'c'; export function c2() { return c; }"
            " globalThis.order = (globalThis.order || '') + 'c';",
        }.items()
    }
    calls: list[tuple[str, str]] = []

    def resolve(specifier: str, referrer: ivm.Module) -> ivm.Module:
        name = next(k for k, v in mods.items() if v is referrer)
        calls.append((name, specifier))
        return mods[specifier]

    mods["a.mjs"].instantiate_sync(rctx, resolve)
    assert sorted(calls) == [("a.mjs", "b.mjs"), ("a.mjs", "c.mjs"), ("b.mjs", "c.mjs"), ("c.mjs", "a.mjs")]
    assert mods["a.mjs"].evaluate_sync() is None
    assert rctx.eval_sync("all() + viaC() + order") == "abccc"
    # A second evaluation gives the first one's outcome; nothing runs twice.
    assert mods["a.mjs"].evaluate_sync() is None
    assert rctx.eval_sync("order") == "c"
    # Every module of the graph belongs to the context now.
    with pytest.raises(ValueError, match="already instantiated"):
        mods["b.mjs"].instantiate_sync(rctx, by_name(mods))


def test_the_namespace_is_a_reference_into_the_worker(rctx: ivm.Context) -> None:
    m = rctx.isolate.compile_module_sync("export const a = 1; export function twice(x) { return 2 * x; }")
    with pytest.raises(ValueError, match="not been instantiated"):
        m.namespace
    m.instantiate_sync(rctx, by_name({}))
    m.evaluate_sync()
    ns = m.namespace
    assert ns.typeof == "object"
    assert ns.get_sync("a") == 1
    assert ns.get_sync("twice", reference=True).apply_sync(None, [21]) == 42
    # deref_into() gives the namespace object itself back in its own isolate.
    assert rctx.eval_closure_sync("return Object.keys($0).sort().join()", [ns.deref_into()]) == "a,twice"
    m.release()
    with pytest.raises(ivm.DisposedError):
        m.namespace
    assert rctx.eval_sync("1 + 1") == 2


@pytest.mark.anyio
async def test_the_namespace_async(rctx: ivm.Context) -> None:
    m = await rctx.isolate.compile_module("export default await Promise.resolve('tla');")
    await m.instantiate(rctx, by_name({}))
    await m.evaluate()
    assert await m.namespace.get("default") == "tla"


def test_modules_already_linked_in_the_context_link_again(rctx: ivm.Context) -> None:
    iso = rctx.isolate
    lib = iso.compile_module_sync("export let count = 0; export function bump() { return ++count; }")
    lib.instantiate_sync(rctx, by_name({}))
    lib.evaluate_sync()
    calls: list[str] = []

    def resolve(specifier: str, referrer: ivm.Module) -> ivm.Module:
        calls.append(specifier)
        return {"lib": lib, "mid": mid}[specifier]

    mid = iso.compile_module_sync("import {bump} from 'lib'; export const once = bump();")
    user = iso.compile_module_sync(
        "import {bump} from 'lib'; import {once} from 'mid'; globalThis.n = once + bump() + bump();"
    )
    user.instantiate_sync(rctx, resolve)
    user.evaluate_sync()
    assert rctx.eval_sync("n") == 1 + 2 + 3
    # The walk did not enter lib, which was linked before (V8 asks nothing of it).
    assert sorted(calls) == ["lib", "lib", "mid"]


@pytest.mark.anyio
async def test_async_graph_with_an_async_resolver_and_top_level_await(remote: ivm.Isolate) -> None:
    ctx = await remote.create_context()
    main = await remote.compile_module(
        "import base from 'base'; globalThis.total = base + await Promise.resolve(20);"
    )
    base = await remote.compile_module("export default await Promise.resolve(22);")
    seen: list[str] = []

    async def resolve(specifier: str, referrer: ivm.Module) -> ivm.Module:
        await anyio.sleep(0.01)
        seen.append(specifier)
        return base

    await main.instantiate(ctx, resolve)
    assert seen == ["base"]
    assert await main.evaluate() is None
    assert await ctx.eval("total") == 42


@pytest.mark.anyio
async def test_an_async_evaluation_times_out_and_the_isolate_stays_usable(rctx: ivm.Context) -> None:
    m = await rctx.isolate.compile_module("await new Promise(() => {});")
    await m.instantiate(rctx, by_name({}))
    with pytest.raises(ivm.TimeoutError):
        await m.evaluate(timeout=0.2)
    assert await rctx.eval("6 * 7") == 42


def test_resolver_errors_leave_the_isolate_usable(rctx: ivm.Context) -> None:
    iso = rctx.isolate
    m = iso.compile_module_sync("import x from 'x'; globalThis.x = x;")

    def boom(specifier: str, referrer: ivm.Module) -> ivm.Module:
        raise KeyError(specifier)

    with pytest.raises(KeyError):
        m.instantiate_sync(rctx, boom)
    with pytest.raises(TypeError, match="ivm.Module"):
        m.instantiate_sync(rctx, lambda s, r: "not a module")  # type: ignore[arg-type,return-value]
    # A module of an inline isolate, and one of another worker, are other isolates.
    with ivm.Isolate(memory_limit=16) as inline, ivm.Isolate(memory_limit=16, process="isolated") as other:
        for foreign in (inline.compile_module_sync("export default 1"),
                        other.compile_module_sync("export default 1")):
            with pytest.raises(ValueError, match="another isolate"):
                m.instantiate_sync(rctx, by_name({"x": foreign}))
    # A missing export is V8's SyntaxError, from the worker.
    dep = iso.compile_module_sync("export const y = 1")
    wrong = iso.compile_module_sync("import {nope} from 'dep';")
    with pytest.raises(ivm.JSError) as info:
        wrong.instantiate_sync(rctx, by_name({"dep": dep}))
    assert info.value.name == "SyntaxError"
    # And after all that, the first module still links and runs.
    m.instantiate_sync(rctx, by_name({"x": iso.compile_module_sync("export default 7")}))
    m.evaluate_sync()
    assert rctx.eval_sync("x") == 7


def test_modules_of_a_group_belong_to_their_own_isolate() -> None:
    with ivm.ProcessGroup() as group:
        a = ivm.Isolate(memory_limit=16, group=group)
        b = ivm.Isolate(memory_limit=16, group=group)
        assert a.pid == b.pid
        ctx = a.create_context_sync()
        user = a.compile_module_sync("import v from 'v'; globalThis.v = v;")
        with pytest.raises(ValueError, match="another isolate"):
            user.instantiate_sync(ctx, by_name({"v": b.compile_module_sync("export default 1")}))
        user.instantiate_sync(ctx, by_name({"v": a.compile_module_sync("export default 'a'")}))
        user.evaluate_sync()
        assert ctx.eval_sync("v") == "a"


@pytest.mark.anyio
async def test_meta_fills_import_meta(rctx: ivm.Context) -> None:
    iso = rctx.isolate
    m = await iso.compile_module(
        "globalThis.got = [import.meta.url, import.meta.nested.k[1], import.meta === import.meta];",
        meta={"url": "file:///app/a.mjs", "nested": {"k": [1, 2]}},
    )
    await m.instantiate(rctx, lambda s, r: m)
    await m.evaluate()
    assert await rctx.eval("got", copy=True) == ["file:///app/a.mjs", 2, True]
    bare = iso.compile_module_sync("globalThis.n = Object.keys(import.meta).length;")
    bare.instantiate_sync(rctx, lambda s, r: bare)
    bare.evaluate_sync()
    assert rctx.eval_sync("n") == 0


def test_a_module_cache_round_trip_between_inline_and_worker(rctx: ivm.Context) -> None:
    iso = rctx.isolate
    made = iso.compile_module_sync(MODULE, produce_cached_data=True)
    data = made.cached_data
    assert data is not None and data[:4] == b"IVMC" and made.cached_data_rejected is False
    m = iso.compile_module_sync(MODULE, cached_data=memoryview(data))
    assert m.cached_data_rejected is False and m.cached_data is None
    m.instantiate_sync(rctx, lambda s, r: m)
    m.evaluate_sync()
    assert rctx.eval_sync("result") == 42
    # The same V8 on both sides: a worker's cache works inline, and back.
    with ivm.Isolate(memory_limit=16) as inline:
        used = inline.compile_module_sync(MODULE, cached_data=data)
        assert used.cached_data_rejected is False
        back = inline.compile_module_sync(MODULE, produce_cached_data=True).cached_data
        assert back is not None
    assert iso.compile_module_sync(MODULE, cached_data=back).cached_data_rejected is False


def test_a_script_cache_from_an_inline_isolate_works_in_a_worker(rctx: ivm.Context) -> None:
    source = "function twice(x) { return 2 * x; }\ntwice(21)"
    with ivm.Isolate(memory_limit=16) as inline:
        data = inline.compile_script_sync(source, produce_cached_data=True).cached_data
    assert data is not None
    s = rctx.isolate.compile_script_sync(source, cached_data=data)
    assert s.cached_data_rejected is False and s.run_sync(rctx) == 42
    other = source.replace("21", "12")
    assert len(other) == len(source)
    wrong = rctx.isolate.compile_script_sync(other, cached_data=data)
    assert wrong.cached_data_rejected is True and wrong.run_sync(rctx) == 24


def test_compiled_instantiated_and_released_modules_leak_nothing(no_leaks: None) -> None:
    iso = ivm.Isolate(memory_limit=32, process="isolated")
    try:
        ctx = iso.create_context_sync()
        dep = iso.compile_module_sync("export const base = 1;", produce_cached_data=True)
        for i in range(300):
            m = iso.compile_module_sync(
                f"import {{base}} from 'dep'; globalThis.v = base + {i};", meta={"i": i}
            )
            m.instantiate_sync(ctx, by_name({"dep": dep}))
            m.evaluate_sync()
            m.release()
        assert ctx.eval_sync("v") == 300
        del m, dep
        gc.collect()
    finally:
        iso.dispose()


def test_rss_stays_flat_under_module_churn_on_both_sides(rss_mb: Callable[[], float]) -> None:
    """Modules compiled and released in a worker hold no memory in the host or the worker:
    once the worker's heap has reached its working size (16 MB isolate, 25,000 modules),
    RSS after 10,000 more stays within 3 MB on each side."""
    iso = ivm.Isolate(memory_limit=16, process="isolated")
    pid = iso.pid
    assert pid is not None
    try:
        def churn(n: int) -> None:
            for i in range(n):
                with iso.compile_module_sync(f"export const v = {i} + 1; export default 'x{i}';"):
                    pass
            gc.collect()

        churn(25000)
        host, worker = rss_mb(), _worker_rss_mb(pid)
        churn(10000)
        host_growth, worker_growth = rss_mb() - host, _worker_rss_mb(pid) - worker
        assert host_growth < 3, f"host RSS grew {host_growth:.1f} MB"
        assert worker_growth < 3, f"worker RSS grew {worker_growth:.1f} MB"
    finally:
        iso.dispose()


@pytest.mark.anyio
async def test_a_worker_killed_mid_graph_fails_each_module_call_clearly() -> None:
    # (No leak check here: an async call pending when its worker is killed leaves one
    # libivm object behind in the host, for eval as for modules; see the rmod report.)
    iso = ivm.Isolate(memory_limit=32, process="isolated")
    try:
        ctx = await iso.create_context()
        dep = await iso.compile_module("export default 1;")
        main = await iso.compile_module("import d from 'd'; globalThis.d = d; while (true) {}")
        await main.instantiate(ctx, by_name({"d": dep}))
        assert iso.pid is not None
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def evaluate() -> None:
                    with pytest.raises(ivm.IsolateCrashedError, match="SIGKILL"):
                        await main.evaluate()

                tg.start_soon(evaluate)
                await anyio.sleep(0.2)  # the module's loop is running in the worker
                os.kill(iso.pid, signal.SIGKILL)
        # Every later call fails the same way.
        with pytest.raises(ivm.IsolateCrashedError):
            iso.compile_module_sync("export default 2;")
        with pytest.raises(ivm.IsolateCrashedError):
            await iso.compile_module("export default 2;", produce_cached_data=True)
        with pytest.raises(ivm.IsolateCrashedError):
            dep.evaluate_sync()
        main.release()
    finally:
        iso.dispose()
