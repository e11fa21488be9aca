"""ES modules: compile, link with a resolver, evaluate (top-level await), namespaces, and
every misuse giving a clear error that leaves the isolate usable (docs/modules.md)."""

from __future__ import annotations

import gc
from typing import Callable

import anyio
import pytest

import ivm


def graph(isolate: ivm.Isolate, sources: dict[str, str]) -> dict[str, ivm.Module]:
    """Modules by specifier, each compiled with the filename file:///<specifier>."""
    return {
        name: isolate.compile_module_sync(code, filename=f"file:///{name}")
        for name, code in sources.items()
    }


def by_name(modules: dict[str, ivm.Module]) -> Callable[[str, ivm.Module], ivm.Module]:
    return lambda specifier, referrer: modules[specifier]


def test_dependency_specifiers_in_source_order(any_isolate: ivm.Isolate) -> None:
    m = any_isolate.compile_module_sync(
        "import a from 'a'; export * from './b.mjs'; import {c} from \"c\"; export {d} from 'd';"
    )
    assert m.dependency_specifiers == ["a", "./b.mjs", "c", "d"]
    assert any_isolate.compile_module_sync("export const x = 1").dependency_specifiers == []
    assert isinstance(m, ivm.Module) and "Module" in repr(m)


def test_a_cyclic_graph_of_three_modules_evaluates(context: ivm.Context) -> None:
    iso = context.isolate
    mods = graph(iso, {
        "a.mjs": "import {b} from 'b.mjs'; export const a = 'a'; export function all() { return a + b + c2(); } import {c2} from 'c.mjs';",
        "b.mjs": "import {c} from 'c.mjs'; export const b = 'b'; export function viaC() { return c; }",
        "c.mjs": "import {a, all} from 'a.mjs'; export const c = 'c'; export function c2() { return c; } globalThis.cEvaluated = true;",
    })
    calls: list[tuple[str, str]] = []

    def resolve(specifier: str, referrer: ivm.Module) -> ivm.Module:
        name = next(k for k, v in mods.items() if v is referrer)
        calls.append((name, specifier))
        return mods[specifier]

    mods["a.mjs"].instantiate_sync(context, resolve)
    assert sorted(calls) == [("a.mjs", "b.mjs"), ("a.mjs", "c.mjs"), ("b.mjs", "c.mjs"), ("c.mjs", "a.mjs")]
    assert mods["a.mjs"].evaluate_sync() is None
    assert context.eval_sync("cEvaluated") is True
    ns = mods["a.mjs"].namespace
    assert isinstance(ns, ivm.Reference)
    assert ns.get_sync("a") == "a"
    assert ns.get_sync("all", reference=True).apply_sync(None, []) == "abc"
    assert mods["b.mjs"].namespace.get_sync("viaC", reference=True).apply_sync(None, []) == "c"
    # A second evaluation gives the first one's outcome.
    assert mods["a.mjs"].evaluate_sync() is None


def test_modules_already_linked_in_the_context_link_again(context: ivm.Context) -> None:
    iso = context.isolate
    lib = iso.compile_module_sync("export let count = 0; export function bump() { return ++count; }")
    lib.instantiate_sync(context, by_name({}))
    lib.evaluate_sync()
    user = iso.compile_module_sync("import {bump} from 'lib'; export const n = bump() + bump();")
    user.instantiate_sync(context, by_name({"lib": lib}))
    user.evaluate_sync()
    assert user.namespace.get_sync("n") == 3
    assert lib.namespace.get_sync("count") == 2


def test_top_level_await_of_an_async_callback_sync(context: ivm.Context) -> None:
    context.global_.set_sync("later", ivm.Callback(lambda: 5))
    m = context.isolate.compile_module_sync("export const v = await Promise.resolve(later()) + 1;")
    m.instantiate_sync(context, by_name({}))
    m.evaluate_sync()
    assert m.namespace.get_sync("v") == 6


@pytest.mark.anyio
async def test_async_graph_with_an_async_resolver_and_top_level_await(context: ivm.Context) -> None:
    iso = context.isolate

    async def fetch() -> int:
        await anyio.sleep(0.01)
        return 20

    context.global_.set_sync("fetch", ivm.Callback(fetch, mode="async"))
    main = await iso.compile_module("import base from 'base'; export const total = base + await fetch();")
    base = await iso.compile_module("export default await fetch() + 2;")
    seen: list[str] = []

    async def resolve(specifier: str, referrer: ivm.Module) -> ivm.Module:
        await anyio.sleep(0.01)
        seen.append(specifier)
        return base

    await main.instantiate(context, resolve)
    assert seen == ["base"]
    assert await main.evaluate() is None
    assert main.namespace.get_sync("total") == 42
    # While a module awaits the host, the isolate takes other calls.
    assert await context.eval("1 + 1") == 2


@pytest.mark.anyio
async def test_a_resolver_that_never_returns_can_be_cancelled(any_context: ivm.Context) -> None:
    m = any_context.isolate.compile_module_sync("import x from 'never';")

    async def resolve(specifier: str, referrer: ivm.Module) -> ivm.Module:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.move_on_after(0.1) as scope:
        await m.instantiate(any_context, resolve)
    assert scope.cancelled_caught
    # Nothing was linked: the module can still be instantiated.
    m.instantiate_sync(any_context, by_name({"never": any_context.isolate.compile_module_sync("export default 1")}))
    m.evaluate_sync()


@pytest.mark.anyio
async def test_cancelling_evaluate_stops_its_javascript(any_context: ivm.Context) -> None:
    m = any_context.isolate.compile_module_sync("while (true) {}")
    m.instantiate_sync(any_context, by_name({}))
    with anyio.move_on_after(0.2) as scope:
        await m.evaluate()
    assert scope.cancelled_caught
    assert await any_context.eval("2 + 2") == 4


def test_the_timeout_covers_a_top_level_await(any_context: ivm.Context) -> None:
    m = any_context.isolate.compile_module_sync("await new Promise(() => {});")
    m.instantiate_sync(any_context, by_name({}))
    with pytest.raises(ivm.TimeoutError):
        m.evaluate_sync(timeout=0.2)
    assert any_context.eval_sync("3") == 3


def test_a_rejected_module_raises_jserror_with_its_stack(any_context: ivm.Context) -> None:
    m = any_context.isolate.compile_module_sync(
        "await null;\n\nconst e = new TypeError('bad module');\nthrow e;", filename="file:///a.mjs"
    )
    m.instantiate_sync(any_context, by_name({}))
    with pytest.raises(ivm.JSError) as info:
        m.evaluate_sync()
    assert info.value.name == "TypeError"
    assert info.value.message == "bad module"
    assert "file:///a.mjs:3:11" in (info.value.stack or "")
    # Evaluating again gives the same error.
    with pytest.raises(ivm.JSError, match="bad module"):
        m.evaluate_sync()


def test_without_promise_evaluation_stops_at_the_first_await(any_context: ivm.Context) -> None:
    m = any_context.isolate.compile_module_sync("globalThis.step = 1; await null; globalThis.step = 2;")
    m.instantiate_sync(any_context, by_name({}))
    m.evaluate_sync(promise=False)
    assert any_context.eval_sync("step") == 2  # the microtasks ran at the end of the call


def test_origins_in_syntax_errors(any_isolate: ivm.Isolate) -> None:
    with pytest.raises(ivm.JSError) as info:
        any_isolate.compile_module_sync("export const a = 1;\n\n    ) oops", filename="file:///bad.mjs")
    assert info.value.name == "SyntaxError"
    assert "file:///bad.mjs:3" in (info.value.stack or "")
    with pytest.raises(ivm.JSError) as info:
        any_isolate.compile_module_sync("\n)", filename="file:///off.mjs", line_offset=10)
    assert "file:///off.mjs:12" in (info.value.stack or "")


def test_resolver_errors_leave_the_isolate_usable(context: ivm.Context) -> None:
    iso = context.isolate
    m = iso.compile_module_sync("import x from 'x'; export default x;")

    def boom(specifier: str, referrer: ivm.Module) -> ivm.Module:
        raise KeyError(specifier)

    with pytest.raises(KeyError):
        m.instantiate_sync(context, boom)
    with pytest.raises(TypeError, match="ivm.Module"):
        m.instantiate_sync(context, lambda s, r: "not a module")  # type: ignore[arg-type,return-value]
    other = ivm.Isolate(memory_limit=16)
    try:
        foreign = other.compile_module_sync("export default 1")
        with pytest.raises(ValueError, match="another isolate"):
            m.instantiate_sync(context, by_name({"x": foreign}))
    finally:
        other.dispose()
    with pytest.raises(TypeError, match="await"):
        m.instantiate_sync(context, lambda s, r: anyio.sleep(0))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="callable"):
        m.instantiate_sync(context, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ivm.Context"):
        m.instantiate_sync("ctx", by_name({}))  # type: ignore[arg-type]
    # A missing export is V8's SyntaxError.
    dep = iso.compile_module_sync("export const y = 1")
    wrong = iso.compile_module_sync("import {nope} from 'dep';")
    with pytest.raises(ivm.JSError) as info:
        wrong.instantiate_sync(context, by_name({"dep": dep}))
    assert info.value.name == "SyntaxError"
    # And after all that, the first module still links and runs.
    m.instantiate_sync(context, by_name({"x": iso.compile_module_sync("export default 7")}))
    m.evaluate_sync()
    assert m.namespace.get_sync("default") == 7
    assert context.eval_sync("1 + 1") == 2


def test_misuse_of_the_module_lifecycle(any_isolate: ivm.Isolate) -> None:
    ctx = any_isolate.create_context_sync()
    other = any_isolate.create_context_sync()
    m = any_isolate.compile_module_sync("export const a = 1;")
    with pytest.raises(ValueError, match="not been instantiated"):
        m.evaluate_sync()
    with pytest.raises(ValueError, match="not been instantiated"):
        m.namespace
    m.instantiate_sync(ctx, by_name({}))
    with pytest.raises(ValueError, match="already instantiated"):
        m.instantiate_sync(ctx, by_name({}))
    with pytest.raises(ValueError, match="already instantiated"):
        m.instantiate_sync(other, by_name({}))
    # A module of one context cannot be linked from another.
    user = any_isolate.compile_module_sync("import {a} from 'm';")
    with pytest.raises(ValueError, match="another context"):
        user.instantiate_sync(other, by_name({"m": m}))
    m.release()
    m.release()
    with pytest.raises(ivm.DisposedError):
        m.evaluate_sync()
    with pytest.raises(ivm.DisposedError):
        user.instantiate_sync(ctx, by_name({"m": m}))
    with pytest.raises(TypeError):
        ivm.Module()
    ctx.release()
    fresh = any_isolate.compile_module_sync("export default 1")
    with pytest.raises(ivm.DisposedError):
        fresh.instantiate_sync(ctx, by_name({}))
    any_isolate.dispose()
    with pytest.raises(ivm.DisposedError):
        fresh.evaluate_sync()
    assert fresh.dependency_specifiers == []
    with pytest.raises(ivm.DisposedError):
        any_isolate.compile_module_sync("export default 1")


def test_a_module_context_manager_releases_it(any_context: ivm.Context) -> None:
    with any_context.isolate.compile_module_sync("export default 1") as m:
        m.instantiate_sync(any_context, by_name({}))
    with pytest.raises(ivm.DisposedError):
        m.evaluate_sync()


def test_compiled_and_released_modules_leak_nothing(no_leaks: None, placement: str) -> None:
    iso = ivm.Isolate(memory_limit=32, process=placement)  # type: ignore[arg-type]
    try:
        ctx = iso.create_context_sync()
        dep = iso.compile_module_sync("export const base = 1;")
        for i in range(300):
            m = iso.compile_module_sync(f"import {{base}} from 'dep'; export const v{i} = base + {i};")
            m.instantiate_sync(ctx, by_name({"dep": dep}))
            m.evaluate_sync()
            m.release()
        del m, dep
        gc.collect()
    finally:
        iso.dispose()


def test_rss_stays_flat_under_module_churn(rss_mb: Callable[[], float]) -> None:
    """Modules compiled and released in one long-lived isolate hold no memory: once V8's
    heap has reached its working size (16 MB isolate, 25,000 modules), RSS after 10,000
    more stays within 3 MB."""
    iso = ivm.Isolate(memory_limit=16)
    try:
        def churn(n: int) -> None:
            for i in range(n):
                with iso.compile_module_sync(f"export const v = {i} + 1; export default 'x{i}';"):
                    pass
            gc.collect()

        churn(25000)
        before = rss_mb()
        churn(10000)
        growth = rss_mb() - before
        assert growth < 3, f"RSS grew {growth:.1f} MB"
    finally:
        iso.dispose()


def test_dynamic_import_without_a_hook_rejects_clearly(context: ivm.Context) -> None:
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync("import('./x.mjs')", promise=True)
    assert info.value.name == "TypeError"
    assert "Cannot import './x.mjs'" in info.value.message
    assert "no import hook" in info.value.message
    m = context.isolate.compile_module_sync("export const p = import('y').catch(e => e.message);")
    m.instantiate_sync(context, by_name({}))
    m.evaluate_sync()
    assert "Cannot import 'y'" in m.namespace.get_sync("p", promise=True)


LIBRARY = {
    "lib.mjs": "export const x = 41; export default function inc(v) { return v + 1; } globalThis.libRuns = (globalThis.libRuns || 0) + 1;",
    "main.mjs": "import inc, {x} from 'lib.mjs'; export const y = inc(x);",
    "dyn.mjs": "export const z = (await import('main.mjs')).y + 1;",
}


def test_dynamic_import_with_a_sync_hook(isolate: ivm.Isolate) -> None:
    calls: list[tuple[str, str]] = []
    compiled: dict[str, ivm.Module] = {}

    def hook(specifier: str, referrer: str) -> ivm.Module:
        calls.append((specifier, referrer))
        if specifier not in compiled:
            compiled[specifier] = isolate.compile_module_sync(LIBRARY[specifier], filename=specifier)
        return compiled[specifier]

    ctx = isolate.create_context_sync(import_module=hook)
    assert ctx.eval_sync("import('main.mjs').then(ns => ns.y)", promise=True, filename="app.js") == 42
    assert calls == [("main.mjs", "app.js"), ("lib.mjs", "main.mjs")]
    # A second import gives the same, already evaluated module.
    assert ctx.eval_sync("import('lib.mjs').then(ns => ns.x)", promise=True) == 41
    assert ctx.eval_sync("libRuns") == 1
    script = isolate.compile_script_sync("import('dyn.mjs').then(ns => ns.z)", filename="s.js")
    assert script.run_sync(ctx, promise=True) == 43
    assert ("dyn.mjs", "s.js") in calls


def test_import_hook_errors_reject_the_import(isolate: ivm.Isolate) -> None:
    other = ivm.Isolate(memory_limit=16)

    def hook(specifier: str, referrer: str) -> ivm.Module:
        if specifier == "raise":
            raise LookupError("no such module: raise")
        if specifier == "foreign":
            return other.compile_module_sync("export default 1")
        if specifier == "broken":
            return isolate.compile_module_sync("throw new RangeError('evaluation failed')")
        return "not a module"  # type: ignore[return-value]

    try:
        ctx = isolate.create_context_sync(import_module=hook)
        # As for any host function, the Python exception that rejected import()
        # is what the call raises when the rejection ends it.
        cases: list[tuple[str, type[BaseException], str]] = [
            ("raise", LookupError, "no such module"),
            ("foreign", ValueError, "another isolate"),
            ("broken", ivm.JSError, "evaluation failed"),
            ("other", TypeError, "ivm.Module"),
        ]
        for specifier, kind, text in cases:
            with pytest.raises(kind, match=text):
                ctx.eval_sync(f"import('{specifier}')", promise=True)
        # Inside JavaScript, the rejection is an ordinary Error.
        caught = ctx.eval_sync("import('raise').catch(e => e instanceof Error && e.message)", promise=True)
        assert "no such module" in caught
        assert ctx.eval_sync("1 + 1") == 2
    finally:
        other.dispose()
    with pytest.raises(TypeError, match="callable"):
        isolate.create_context_sync(import_module=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        isolate.import_module = 42  # type: ignore[assignment]


def test_the_isolate_hook_is_the_default_of_later_contexts(isolate: ivm.Isolate) -> None:
    before = isolate.create_context_sync()
    assert isolate.import_module is None
    isolate.import_module = lambda s, r: isolate.compile_module_sync("export default 'iso'")
    after = isolate.create_context_sync()
    own = isolate.create_context_sync(
        import_module=lambda s, r: isolate.compile_module_sync("export default 'own'")
    )
    assert after.eval_sync("import('x').then(ns => ns.default)", promise=True) == "iso"
    assert own.eval_sync("import('x').then(ns => ns.default)", promise=True) == "own"
    with pytest.raises(ivm.JSError, match="no import hook"):
        before.eval_sync("import('x')", promise=True)


@pytest.mark.anyio
async def test_import_inside_a_module_resolved_by_an_async_hook(isolate: ivm.Isolate) -> None:
    calls: list[tuple[str, str]] = []
    compiled: dict[str, ivm.Module] = {}

    async def hook(specifier: str, referrer: str) -> ivm.Module:
        await anyio.sleep(0.01)
        calls.append((specifier, referrer))
        if specifier not in compiled:
            compiled[specifier] = await isolate.compile_module(LIBRARY[specifier], filename=specifier)
        return compiled[specifier]

    ctx = await isolate.create_context(import_module=hook)
    entry = await isolate.compile_module(
        "export const w = (await import('dyn.mjs')).z * 2;", filename="entry.mjs"
    )
    await entry.instantiate(ctx, lambda s, r: hook(s, r.filename))
    await entry.evaluate()
    assert entry.namespace.get_sync("w") == 86
    assert calls == [("dyn.mjs", "entry.mjs"), ("main.mjs", "dyn.mjs"), ("lib.mjs", "main.mjs")]


@pytest.mark.anyio
async def test_meta_fills_import_meta(context: ivm.Context) -> None:
    iso = context.isolate
    m = await iso.compile_module(
        "export const url = import.meta.url, k = import.meta.nested.k[1], same = import.meta === import.meta;",
        meta={"url": "file:///app/a.mjs", "nested": {"k": [1, 2]}},
    )
    await m.instantiate(context, lambda s, r: m)
    await m.evaluate()
    ns = m.namespace
    assert (ns.get_sync("url"), ns.get_sync("k"), ns.get_sync("same")) == ("file:///app/a.mjs", 2, True)
    bare = iso.compile_module_sync("export const n = Object.keys(import.meta).length;")
    bare.instantiate_sync(context, lambda s, r: bare)
    bare.evaluate_sync()
    assert bare.namespace.get_sync("n") == 0
    with pytest.raises(TypeError, match="mapping"):
        iso.compile_module_sync("export default 1", meta=["url"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot be copied"):
        iso.compile_module_sync("export default 1", meta={"f": lambda: 1})


@pytest.mark.anyio
async def test_concurrent_imports_of_one_module_link_it_once(isolate: ivm.Isolate) -> None:
    """Two import() of the same module (and of modules sharing a dependency) in flight at
    once, resolved by an async hook: each module is linked and evaluated once, and every
    import gets its namespace (the second used to fail with "already instantiated")."""
    compiled: dict[str, ivm.Module] = {}

    async def hook(specifier: str, referrer: str) -> ivm.Module:
        await anyio.sleep(0.01)
        if specifier not in compiled:
            compiled[specifier] = await isolate.compile_module(LIBRARY[specifier], filename=specifier)
        return compiled[specifier]

    ctx = await isolate.create_context(import_module=hook)
    got = await ctx.eval(
        "Promise.all([import('dyn.mjs'), import('dyn.mjs'), import('main.mjs'), import('lib.mjs')])"
        ".then(ms => ms.map(m => Object.keys(m).sort().join()).join(';'))",
        promise=True,
    )
    names = got.split(";")
    assert names[0] == names[1] and len(names) == 4, got
    assert await ctx.eval("globalThis.libRuns") == 1  # evaluated once
    # Two more rounds after everything is linked: nothing is linked again.
    assert await ctx.eval("import('dyn.mjs').then(m => m.z)", promise=True) == 43


def test_import_attributes_reach_the_resolver(any_context: ivm.Context) -> None:
    iso = any_context.isolate
    main = iso.compile_module_sync(
        "import data from './a.json' assert {type: 'json'};\n"
        "import code from './a.json';\n"
        "globalThis.got = [data.n, code.n];"
    )
    assert main.dependency_specifiers == ["./a.json", "./a.json"]
    assert main.dependency_attributes == [{"type": "json"}, {}]
    as_json = iso.compile_module_sync("export default {n: 'json'};")
    as_code = iso.compile_module_sync("export default {n: 'code'};")
    seen: list[tuple[str, dict[str, str]]] = []

    def resolve(specifier: str, referrer: ivm.Module, attributes: dict[str, str]) -> ivm.Module:
        seen.append((specifier, attributes))
        return as_json if attributes.get("type") == "json" else as_code

    main.instantiate_sync(any_context, resolve)
    assert seen == [("./a.json", {"type": "json"}), ("./a.json", {})]
    main.evaluate_sync()
    assert any_context.eval_sync("got", copy=True) == ["json", "code"]


@pytest.mark.anyio
async def test_two_argument_resolvers_still_work_with_attributes(any_context: ivm.Context) -> None:
    iso = any_context.isolate
    main = await iso.compile_module(
        "import a from 'a' assert {type: 'json', x: 'y'}; globalThis.a = a;"
    )
    dep = await iso.compile_module("export default 5;")
    seen: list[str] = []

    async def resolve(specifier: str, referrer: ivm.Module) -> ivm.Module:
        seen.append(specifier)
        return dep

    await main.instantiate(any_context, resolve)
    await main.evaluate()
    assert seen == ["a"] and await any_context.eval("a") == 5
    assert main.dependency_attributes == [{"type": "json", "x": "y"}]
