"""ivm.Reference: handles to JavaScript values that stay in their isolate. Making them
(global_, reference=True), get/set/delete/apply/copy in their sync, async (asyncio and
trio) and ignored forms, deref()/deref_into(), release and disposal, timeouts and
cancellation, eval_closure, and references dropped from other threads."""

from __future__ import annotations

import gc
import threading
from typing import Callable

import anyio
import pytest

import ivm


#: Sanity bound for things that must not hang; nothing here is expected to come close.
SANITY = 60.0
BUSY_FOREVER = "(() => { while (true) {} })"


# --- making references --------------------------------------------------------------------


def test_global_is_a_reference_to_the_global_object(context: ivm.Context) -> None:
    g = context.global_
    assert isinstance(g, ivm.Reference)
    assert g.typeof == "object"
    assert context.global_ is g  # cached
    assert g.set_sync("fromPython", 42) is True
    assert context.eval_sync("globalThis.fromPython") == 42
    assert g.get_sync("Math", reference=True).get_sync("PI") == context.eval_sync("Math.PI")


@pytest.mark.parametrize(
    ("code", "typeof"),
    [
        ("({})", "object"),
        ("[1, 2]", "object"),
        ("null", "object"),
        ("(() => 1)", "function"),
        ("(class A {})", "function"),
        ("1", "number"),
        ("'s'", "string"),
        ("true", "boolean"),
        ("undefined", "undefined"),
        ("Symbol('s')", "symbol"),
        ("10n", "bigint"),
    ],
)
def test_eval_reference_and_typeof(context: ivm.Context, code: str, typeof: str) -> None:
    ref = context.eval_sync(code, reference=True)
    assert isinstance(ref, ivm.Reference)
    assert ref.typeof == typeof
    assert typeof in repr(ref)


def test_get_sync_reference_keeps_the_identity(context: ivm.Context) -> None:
    obj = context.eval_sync("globalThis.o = {inner: {x: 1}}; o", reference=True)
    inner = obj.get_sync("inner", reference=True)
    assert inner.typeof == "object"
    assert context.eval_closure_sync("return $0 === o.inner", [inner.deref_into()]) is True
    inner.set_sync("x", 2)
    assert context.eval_sync("o.inner.x") == 2


# --- get ----------------------------------------------------------------------------------


def test_get_sync_result_forms(context: ivm.Context) -> None:
    obj = context.eval_sync(
        "({n: 1, s: 'str', u: undefined, z: null, big: 2n**70n, o: {a: [1, {b: 2}]},"
        " f() { return 1 }, 0: 'zero'})",
        reference=True,
    )
    assert obj.get_sync("n") == 1
    assert obj.get_sync("s") == "str"
    assert obj.get_sync("u") is ivm.undefined
    assert obj.get_sync("z") is None
    assert obj.get_sync("big") == 2**70
    assert obj.get_sync("missing") is ivm.undefined
    assert obj.get_sync(0) == "zero"
    assert obj.get_sync("0") == "zero"
    assert obj.get_sync("o", copy=True) == {"a": [1, {"b": 2}]}
    ext = obj.get_sync("o", external_copy=True)
    assert isinstance(ext, ivm.ExternalCopy)
    assert ext.copy() == {"a": [1, {"b": 2}]}
    fn = obj.get_sync("f", reference=True)
    assert fn.typeof == "function"
    # Primitives always pass, whatever is asked.
    assert obj.get_sync("n", copy=True) == 1
    with pytest.raises(ivm.TransferError):
        obj.get_sync("o")
    with pytest.raises(ivm.TransferError):
        obj.get_sync("f", copy=True)


def test_get_sync_runs_getters(context: ivm.Context) -> None:
    obj = context.eval_sync(
        "globalThis.hits = 0; ({ get g() { hits++; return 'got' } })", reference=True
    )
    assert obj.get_sync("g") == "got"
    assert obj.get_sync("g") == "got"
    assert context.eval_sync("hits") == 2


def test_get_sync_promise_waits(context: ivm.Context) -> None:
    obj = context.eval_sync("({ p: Promise.resolve(7), r: Promise.reject(new Error('no')) })",
                            reference=True)
    assert obj.get_sync("p", promise=True) == 7
    with pytest.raises(ivm.JSError) as info:
        obj.get_sync("r", promise=True)
    assert info.value.message == "no"


def test_get_sync_throwing_getter(context: ivm.Context) -> None:
    obj = context.eval_sync("({ get bad() { throw new RangeError('getter') } })", reference=True)
    with pytest.raises(ivm.JSError) as info:
        obj.get_sync("bad")
    assert (info.value.name, info.value.message) == ("RangeError", "getter")
    assert context.eval_sync("'usable'") == "usable"


def test_get_sync_getter_timeout(context: ivm.Context) -> None:
    obj = context.eval_sync("({ get slow() { while (true) {} } })", reference=True)
    with pytest.raises(ivm.TimeoutError):
        obj.get_sync("slow", timeout=0.05)
    assert context.eval_sync("1 + 1") == 2


@pytest.mark.parametrize("key", [1.5, None, b"k", object(), True])
def test_bad_keys_raise_type_error(context: ivm.Context, key: object) -> None:
    obj = context.eval_sync("({})", reference=True)
    with pytest.raises(TypeError):
        obj.get_sync(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        obj.set_sync(key, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        obj.delete_sync(key)  # type: ignore[arg-type]


def test_exclusive_result_options(context: ivm.Context) -> None:
    obj = context.eval_sync("({o: {}})", reference=True)
    with pytest.raises(ValueError):
        obj.get_sync("o", copy=True, reference=True)
    with pytest.raises(TypeError):
        obj.get_sync("o", copy=1)  # type: ignore[arg-type]


# --- set / delete -------------------------------------------------------------------------


def test_set_sync_primitives_and_copies(context: ivm.Context) -> None:
    obj = context.eval_sync("globalThis.o = {}; o", reference=True)
    assert obj.set_sync("n", 1) is True
    assert obj.set_sync("s", "x") is True
    assert obj.set_sync("none", None) is True
    assert obj.set_sync(3, ivm.undefined) is True
    assert obj.set_sync("d", {"a": [1, 2]}, copy=True) is True
    assert context.eval_sync("[o.n, o.s, o.none, 3 in o, o[3], o.d.a[1]]", copy=True) == [
        1, "x", None, True, ivm.undefined, 2,
    ]
    assert obj.copy_sync() == {"3": ivm.undefined, "n": 1, "s": "x", "none": None,
                               "d": {"a": [1, 2]}}


def test_set_sync_non_primitive_needs_copy(context: ivm.Context) -> None:
    obj = context.eval_sync("({})", reference=True)
    with pytest.raises(ivm.TransferError):
        obj.set_sync("d", {"a": 1})
    with pytest.raises(TypeError):
        obj.set_sync("d", {"a": 1}, copy=1)  # type: ignore[arg-type]
    assert obj.copy_sync() == {}


def test_set_sync_copy_is_independent_of_python(context: ivm.Context) -> None:
    data = {"list": [1, 2]}
    context.global_.set_sync("d", data, copy=True)
    data["list"].append(3)
    assert context.eval_sync("d.list.length") == 2
    context.eval_sync("d.list.push(99)")
    assert data == {"list": [1, 2, 3]}


def test_set_sync_runs_setters_under_timeout(context: ivm.Context) -> None:
    obj = context.eval_sync(
        "globalThis.seen = []; ({ set s(v) { seen.push(v) }, set slow(v) { while (true) {} } })",
        reference=True,
    )
    assert obj.set_sync("s", "v1") is True
    assert context.eval_sync("seen.join()") == "v1"
    with pytest.raises(ivm.TimeoutError):
        obj.set_sync("slow", 1, timeout=0.05)
    assert context.eval_sync("1 + 1") == 2


def test_set_sync_throwing_setter(context: ivm.Context) -> None:
    obj = context.eval_sync("({ set s(v) { throw new TypeError('setter ' + v) } })", reference=True)
    with pytest.raises(ivm.JSError) as info:
        obj.set_sync("s", "x")
    assert (info.value.name, info.value.message) == ("TypeError", "setter x")


def test_set_sync_ignored_assignments_are_not_reported(context: ivm.Context) -> None:
    """As documented (and as isolated-vm's setSync): like a sloppy-mode assignment, one that
    JavaScript ignores returns True and changes nothing."""
    frozen = context.eval_sync("Object.freeze({a: 1})", reference=True)
    refusing = context.eval_sync(
        "globalThis.seen = []; new Proxy({}, { set(t, k) { seen.push(k); return false } })",
        reference=True,
    )
    assert frozen.set_sync("a", 2) is True
    assert frozen.copy_sync() == {"a": 1}
    assert refusing.set_sync("a", 1) is True
    assert context.eval_sync("seen.join()") == "a"   # the trap ran


def test_delete_sync(context: ivm.Context) -> None:
    obj = context.eval_sync(
        "globalThis.o = {a: 1, b: 2}; Object.defineProperty(o, 'fixed', {value: 3}); o",
        reference=True,
    )
    assert obj.delete_sync("a") is True
    assert obj.delete_sync("missing") is True
    assert obj.delete_sync("fixed") is False
    assert context.eval_sync("Object.getOwnPropertyNames(o).join()") == "b,fixed"
    arr = context.eval_sync("[1, 2, 3]", reference=True)
    assert arr.delete_sync(1) is True
    assert context.eval_closure_sync("return !(1 in $0) && $0.length === 3",
                                     [arr.deref_into()]) is True


def test_delete_sync_proxy_trap_and_timeout(context: ivm.Context) -> None:
    refusing = context.eval_sync("new Proxy({}, { deleteProperty() { return false } })",
                                 reference=True)
    assert refusing.delete_sync("x") is False
    slow = context.eval_sync("new Proxy({}, { deleteProperty() { while (true) {} } })",
                             reference=True)
    with pytest.raises(ivm.TimeoutError):
        slow.delete_sync("x", timeout=0.05)
    assert context.eval_sync("'usable'") == "usable"


# --- apply ---------------------------------------------------------------------------------


def test_apply_sync_receiver_and_arguments(context: ivm.Context) -> None:
    fn = context.eval_sync(
        "(function (a, b) { 'use strict'; return [this === undefined, this && this.k, a, b] })",
        reference=True,
    )
    assert fn.apply_sync(None, [1, "two"], result_options={"copy": True}) == [
        True, ivm.undefined, 1, "two",
    ]
    assert fn.apply_sync(None, result_options={"copy": True}) == [
        True, ivm.undefined, ivm.undefined, ivm.undefined,
    ]
    recv = context.eval_sync("({k: 'K'})", reference=True)
    assert fn.apply_sync(recv.deref_into(), (1,), result_options={"copy": True}) == [
        False, "K", 1, ivm.undefined,
    ]
    assert fn.apply_sync({"k": 5}, [1], arguments_options={"copy": True},
                         result_options={"copy": True}) == [False, 5, 1, ivm.undefined]


def test_apply_sync_non_primitive_arguments_need_copy(context: ivm.Context) -> None:
    fn = context.eval_sync("(o) => o.a.length", reference=True)
    with pytest.raises(ivm.TransferError):
        fn.apply_sync(None, [{"a": [1, 2, 3]}])
    assert fn.apply_sync(None, [{"a": [1, 2, 3]}], arguments_options={"copy": True}) == 3
    with pytest.raises(TypeError):
        fn.apply_sync(None, "abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fn.apply_sync(None, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fn.apply_sync(None, [], result_options={"nope": True})


def test_apply_sync_result_options(context: ivm.Context) -> None:
    make = context.eval_sync("(n) => ({n, list: [n, n]})", reference=True)
    with pytest.raises(ivm.TransferError):
        make.apply_sync(None, [1])
    assert make.apply_sync(None, [1], result_options={"copy": True}) == {"n": 1, "list": [1, 1]}
    ext = make.apply_sync(None, [2], result_options={"external_copy": True})
    assert isinstance(ext, ivm.ExternalCopy)
    assert ext.copy() == {"n": 2, "list": [2, 2]}
    ref = make.apply_sync(None, [3], result_options={"reference": True})
    assert isinstance(ref, ivm.Reference)
    assert ref.get_sync("n") == 3
    double = context.eval_sync("async (x) => x * 2", reference=True)
    assert double.apply_sync(None, [21], result_options={"promise": True}) == 42
    buf = context.eval_sync("globalThis.u = new Uint8Array([1, 2, 3]); () => u.buffer",
                            reference=True)
    assert buf.apply_sync(None, result_options={"copy": True, "transfer_out": True}) == (
        b"\x01\x02\x03"
    )
    assert context.eval_sync("u.buffer.byteLength") == 0  # moved out


def test_apply_sync_errors_and_timeout(context: ivm.Context) -> None:
    thrower = context.eval_sync("() => { throw new TypeError('nope') }", reference=True)
    with pytest.raises(ivm.JSError) as info:
        thrower.apply_sync(None)
    assert (info.value.name, info.value.message) == ("TypeError", "nope")
    not_fn = context.eval_sync("({})", reference=True)
    with pytest.raises(ivm.JSError) as info:
        not_fn.apply_sync(None)
    assert info.value.name == "TypeError"
    busy = context.eval_sync(BUSY_FOREVER, reference=True)
    with pytest.raises(ivm.TimeoutError):
        busy.apply_sync(None, timeout=0.05)
    assert context.eval_sync("'usable'") == "usable"


def test_apply_sync_passes_callbacks(context: ivm.Context) -> None:
    call_with = context.eval_sync("(f, x) => f(x) + 1", reference=True)
    assert call_with.apply_sync(None, [ivm.Callback(lambda x: x * 10), 4]) == 41


# --- copy / deref / deref_into -----------------------------------------------------------


def test_copy_sync_is_a_structured_copy(context: ivm.Context) -> None:
    ref = context.eval_sync("globalThis.o = {a: [1, 'x', null], m: new Map([[1, 2]])}; o",
                            reference=True)
    copy = ref.copy_sync()
    assert copy["a"] == [1, "x", None]
    copy["a"].append(5)
    assert context.eval_sync("o.a.length") == 3
    assert context.eval_sync("1", reference=True).copy_sync() == 1
    with pytest.raises(ivm.TransferError):
        context.eval_sync("() => 1", reference=True).copy_sync()


# --- inspect (IVM_RESULT_INSPECT) ---------------------------------------------------------


def test_inspect_sync_shows_any_value_as_node_does(any_context: ivm.Context) -> None:
    """One formatter with console (libivm/host_inspect.cc), inline and in a worker."""
    ref = any_context.eval_sync(
        "const o = {a: [1, 'x', null], m: new Map([[1, 'one']]), f() {}}; o.self = o; o",
        reference=True,
    )
    assert ref.inspect_sync() == (
        "<ref *1> {\n  a: [ 1, 'x', null ],\n  m: Map(1) { 1 => 'one' },\n"
        "  f: [Function: f],\n  self: [Circular *1]\n}"
    )
    assert any_context.eval_sync("'it\\'s'", reference=True).inspect_sync() == '"it\'s"'
    assert any_context.eval_sync("-0", reference=True).inspect_sync() == "-0"


def test_inspect_runs_none_of_the_values_code(context: ivm.Context) -> None:
    ref = context.eval_sync(
        """globalThis.ran = [];
        const target = {get g() { ran.push('getter'); return 1 }};
        new Proxy(target, {get() { ran.push('trap'); return 2 }, ownKeys() { ran.push('keys'); return [] }})""",
        reference=True,
    )
    assert ref.inspect_sync() == "{ g: [Getter] }"
    assert context.eval_sync("ran.length") == 0


def test_inspect_is_bounded(context: ivm.Context) -> None:
    many = context.eval_sync("Array.from({length: 200000}, (_, i) => 'item' + i)", reference=True)
    assert many.inspect_sync().endswith("  ... 199900 more items\n]")
    big = context.eval_sync("Array.from({length: 100}, () => Array(100).fill('x'.repeat(20000)))", reference=True)
    assert 1 << 19 < len(big.inspect_sync().encode()) < (1 << 20) + 200000


@pytest.mark.anyio
async def test_inspect_async_twin(any_context: ivm.Context) -> None:
    ref = await any_context.eval("new Set([1n, Symbol('s')])", reference=True)
    assert await ref.inspect() == "Set(2) { 1n, Symbol(s) }"


def test_inspect_of_released_and_host_references_fails(context: ivm.Context) -> None:
    ref = context.eval_sync("({})", reference=True)
    ref.release()
    with pytest.raises(ivm.DisposedError):
        ref.inspect_sync()
    with pytest.raises(TypeError, match="host value"):
        ivm.Reference({"a": 1}).inspect_sync()


def test_inspect_excludes_the_other_result_forms(context: ivm.Context) -> None:
    """In C, IVM_RESULT_INSPECT with COPY, EXTERNAL_COPY, REFERENCE or DISCARD is refused."""
    from ivm._ffi import ffi, lib

    ref = context.eval_sync("({})", reference=True)
    for other in (lib.IVM_RESULT_COPY, lib.IVM_RESULT_EXTERNAL_COPY, lib.IVM_RESULT_REFERENCE,
                  lib.IVM_RESULT_DISCARD):
        opts = ffi.new("ivm_result_options_t *", [ffi.sizeof("ivm_result_options_t"),
                                                  lib.IVM_RESULT_INSPECT | other])
        out = ffi.new("ivm_value_t **")
        err = lib.ivm_reference_get(ref._ptr, ffi.NULL, 0, ffi.NULL, opts, out, ffi.NULL)
        assert err != ffi.NULL
        try:
            assert lib.ivm_error_kind(err) == lib.IVM_ERROR_INVALID_ARGUMENT
            msg, size = ffi.new("const char **"), ffi.new("size_t *")
            lib.ivm_error_message(err, msg, size)
            assert b"IVM_RESULT_INSPECT" in ffi.unpack(msg[0], size[0])
        finally:
            lib.ivm_error_free(err)


def test_deref_raises_type_error(context: ivm.Context) -> None:
    ref = context.eval_sync("({})", reference=True)
    with pytest.raises(TypeError, match="deref"):
        ref.deref()


def test_deref_into_is_the_value_itself_in_its_isolate(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    ref = context.eval_sync("globalThis.o = {a: 1}; o", reference=True)
    marker = ref.deref_into()
    assert isinstance(marker, ivm.DerefInto)
    assert context.eval_closure_sync("return $0 === o", [marker]) is True
    context.global_.set_sync("again", ref.deref_into())
    assert context.eval_sync("again === o") is True
    # Inside a copied value too.
    assert context.eval_closure_sync("return $0.x === o", [{"x": ref.deref_into()}],
                                     arguments_options={"copy": True}) is True
    # Another context of the same isolate gets the same object.
    other = isolate.create_context_sync()
    other.global_.set_sync("o", ref.deref_into())
    assert other.eval_sync("o.a") == 1
    other.eval_sync("o.a = 2")
    assert context.eval_sync("o.a") == 2


def test_deref_into_another_isolate_is_refused(context: ivm.Context) -> None:
    ref = context.eval_sync("({a: 1})", reference=True)
    with ivm.Isolate(memory_limit=32) as other:
        ctx = other.create_context_sync()
        with pytest.raises(ivm.TransferError):
            ctx.global_.set_sync("o", ref.deref_into())
        with pytest.raises(ivm.TransferError):
            ctx.eval_closure_sync("return $0", [ref.deref_into()])
        assert ctx.eval_sync("typeof o") == "undefined"


def test_isolated_vm_sample(context: ivm.Context) -> None:
    logged: list[tuple[object, ...]] = []
    jail = context.global_
    jail.set_sync("global", jail.deref_into())
    jail.set_sync("log", ivm.Callback(lambda *args: logged.append(args)))
    context.eval_sync('log("hello world")')
    context.eval_sync('global.log("again", 1)')
    assert logged == [("hello world",), ("again", 1)]
    add = context.eval_sync("(a, b) => a + b", reference=True)
    assert add.apply_sync(None, [2, 3]) == 5
    assert context.eval_closure_sync("return $0 + $1", [2, 3]) == 5


# --- release and disposal ----------------------------------------------------------------


def test_release_is_idempotent_then_disposed(context: ivm.Context) -> None:
    ref = context.eval_sync("({a: 1})", reference=True)
    ref.release()
    ref.release()
    for op in (
        lambda: ref.get_sync("a"),
        lambda: ref.set_sync("a", 2),
        lambda: ref.delete_sync("a"),
        lambda: ref.apply_sync(None),
        lambda: ref.copy_sync(),
        lambda: context.global_.set_sync("x", ref.deref_into()),
    ):
        with pytest.raises(ivm.DisposedError):
            op()
    assert context.eval_sync("typeof x") == "undefined"


def test_reference_after_isolate_dispose_raises_disposed() -> None:
    iso = ivm.Isolate(memory_limit=32)
    ctx = iso.create_context_sync()
    ref = ctx.eval_sync("({a: 1, f() { return 1 }})", reference=True)
    g = ctx.global_
    iso.dispose()
    for op in (
        lambda: ref.get_sync("a"),
        lambda: ref.set_sync("a", 2),
        lambda: ref.delete_sync("a"),
        lambda: ref.apply_sync(None),
        lambda: ref.copy_sync(),
        lambda: g.get_sync("Math"),
    ):
        with pytest.raises(ivm.DisposedError):
            op()
    ref.release()  # still fine
    ref.release()


@pytest.mark.anyio
async def test_async_reference_after_isolate_dispose_raises_disposed() -> None:
    iso = ivm.Isolate(memory_limit=32)
    ctx = iso.create_context_sync()
    ref = ctx.eval_sync("({a: 1})", reference=True)
    iso.dispose()
    with anyio.fail_after(SANITY):
        with pytest.raises(ivm.DisposedError):
            await ref.get("a")
        with pytest.raises(ivm.DisposedError):
            await ref.set("a", 1)
        with pytest.raises(ivm.DisposedError):
            await ref.apply(None)
        with pytest.raises(ivm.DisposedError):
            await ref.copy()


def test_references_do_not_leak(no_leaks: None) -> None:
    with ivm.Isolate(memory_limit=32) as iso:
        ctx = iso.create_context_sync()
        for i in range(200):
            ref = ctx.eval_sync(f"({{i: {i}}})", reference=True)
            assert ref.get_sync("i") == i
            ref.get_sync("i", reference=True).release()
        ctx.release()
        del ctx, ref
    gc.collect()


# --- references dropped from other threads ------------------------------------------------


def test_references_released_by_finalizers_on_other_threads(no_leaks: None) -> None:
    iso = ivm.Isolate(memory_limit=64)
    ctx = iso.create_context_sync()
    refs = [ctx.eval_sync(f"({{i: {i}}})", reference=True) for i in range(2000)]
    chunks = [refs[i::4] for i in range(4)]
    del refs
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def drop(chunk: list[ivm.Reference]) -> None:
        try:
            start.wait()
            while chunk:
                chunk.pop()
                if len(chunk) % 100 == 0:
                    gc.collect()
            gc.collect()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=drop, args=(c,)) for c in chunks]
    del chunks
    for t in threads:
        t.start()
    start.wait()
    # The isolate is in use meanwhile, and references come and go here too.
    for i in range(300):
        assert ctx.eval_sync(f"[{i}, 2].map(x => x * 2)", copy=True) == [2 * i, 4]
        ctx.eval_sync("({})", reference=True)
    for t in threads:
        t.join(SANITY)
        assert not t.is_alive()
    assert errors == []
    assert ctx.eval_sync("'usable'") == "usable"
    ctx.release()
    iso.dispose()
    del ctx, iso


def test_gc_in_thread_while_reference_cycle_is_collected(no_leaks: None) -> None:
    """References caught in reference cycles are freed by whichever thread runs gc."""
    iso = ivm.Isolate(memory_limit=64)
    ctx = iso.create_context_sync()
    busy = threading.Event()
    done = threading.Event()

    def use() -> None:
        busy.set()
        while not done.is_set():
            ctx.eval_sync("{ let s = 0; for (let i = 0; i < 1000; i++) s += i; s }")

    user = threading.Thread(target=use)
    user.start()
    busy.wait()
    try:
        for _ in range(20):
            cycle: list[object] = []
            for _ in range(50):
                cycle.append(ctx.eval_sync("({})", reference=True))
            cycle.append(cycle)
            del cycle
            collector = threading.Thread(target=gc.collect)
            collector.start()
            collector.join(SANITY)
    finally:
        done.set()
        user.join(SANITY)
    assert ctx.eval_sync("1 + 1") == 2
    ctx.release()
    iso.dispose()
    del ctx, iso


def test_reference_dropped_after_dispose_in_other_thread() -> None:
    iso = ivm.Isolate(memory_limit=32)
    ctx = iso.create_context_sync()
    refs = [ctx.eval_sync("({})", reference=True) for _ in range(100)]
    iso.dispose()
    def drop() -> None:
        refs.clear()
        gc.collect()

    t = threading.Thread(target=drop)
    t.start()
    t.join(SANITY)
    assert refs == []


# --- eval_closure --------------------------------------------------------------------------


def test_eval_closure_sync(context: ivm.Context) -> None:
    assert context.eval_closure_sync("return $0 + $1", [2, 3]) == 5
    assert context.eval_closure_sync("return arguments.length") == 0
    assert context.eval_closure_sync("return [$0, $1, $2]", ("a", None, ivm.undefined),
                                     result_options={"copy": True}) == ["a", None, ivm.undefined]
    assert context.eval_closure_sync("return $0.a.b", [{"a": {"b": 7}}],
                                     arguments_options={"copy": True}) == 7
    with pytest.raises(ivm.TransferError):
        context.eval_closure_sync("return $0", [{"a": 1}])
    with pytest.raises(ivm.TransferError):
        context.eval_closure_sync("return {}")
    ref = context.eval_closure_sync("return {x: $0}", [1], result_options={"reference": True})
    assert ref.get_sync("x") == 1
    assert context.eval_closure_sync("return Promise.resolve($0)", [3],
                                     result_options={"promise": True}) == 3
    with pytest.raises(ivm.JSError) as info:
        context.eval_closure_sync("throw new RangeError($0)", ["r"])
    assert (info.value.name, info.value.message) == ("RangeError", "r")
    with pytest.raises(ivm.TimeoutError):
        context.eval_closure_sync("while (true) {}", timeout=0.05)
    with pytest.raises(ivm.JSError):
        context.eval_closure_sync("return (")
    assert context.eval_closure_sync("return 'usable'") == "usable"


@pytest.mark.anyio
async def test_eval_closure_async(context: ivm.Context) -> None:
    with anyio.fail_after(SANITY):
        assert await context.eval_closure("return $0 * $1", [6, 7]) == 42
        assert await context.eval_closure("return $0", [{"a": [1]}],
                                          arguments_options={"copy": True},
                                          result_options={"copy": True}) == {"a": [1]}
        with pytest.raises(ivm.JSError):
            await context.eval_closure("throw new Error('x')")
        with pytest.raises(ivm.TransferError):
            await context.eval_closure("return $0", [{"a": 1}])


@pytest.mark.anyio
async def test_eval_closure_cancel_stops_js(context: ivm.Context) -> None:
    with anyio.move_on_after(0.1) as scope:
        await context.eval_closure("while (true) {}")
    assert scope.cancelled_caught
    with anyio.fail_after(SANITY):
        assert await context.eval_closure("return $0", [1]) == 1


def test_eval_closure_ignored(
    context: ivm.Context, ignored_errors: list[BaseException], wait_until: Callable[..., bool]
) -> None:
    context.eval_closure_ignored("globalThis.sum = $0 + $1", [2, 3])
    assert wait_until(lambda: context.eval_sync("globalThis.sum") == 5)
    context.eval_closure_ignored("globalThis.copied = $0.a", [{"a": "A"}],
                                 arguments_options={"copy": True})
    assert wait_until(lambda: context.eval_sync("globalThis.copied") == "A")
    context.eval_closure_ignored("throw new TypeError('closure boom')")
    assert wait_until(lambda: bool(ignored_errors))
    [exc] = ignored_errors
    assert isinstance(exc, ivm.JSError)
    assert exc.message == "closure boom"


# --- async -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_get_set_delete_apply_copy(context: ivm.Context) -> None:
    with anyio.fail_after(SANITY):
        obj = await context.eval("globalThis.o = {a: 1, inner: {x: [1]}}; o", reference=True)
        assert isinstance(obj, ivm.Reference)
        assert await obj.get("a") == 1
        assert await obj.get("inner", copy=True) == {"x": [1]}
        ext = await obj.get("inner", external_copy=True)
        assert isinstance(ext, ivm.ExternalCopy)
        inner = await obj.get("inner", reference=True)
        assert await inner.get("x", copy=True) == [1]
        assert await obj.set("b", 2) is True
        assert await obj.set("c", {"k": [1, 2]}, copy=True) is True
        assert await obj.delete("a") is True
        assert await obj.copy() == {"inner": {"x": [1]}, "b": 2, "c": {"k": [1, 2]}}
        fn = await context.eval("(function (x) { return this.b + x })", reference=True)
        assert await fn.apply(obj.deref_into(), [40]) == 42
        assert await fn.apply({"b": 1}, [1], arguments_options={"copy": True}) == 2
        wrap = await context.eval("(x) => ({x})", reference=True)
        assert await wrap.apply(None, [1], result_options={"copy": True}) == {"x": 1}
        later = await context.eval("async (x) => x + 1", reference=True)
        assert await later.apply(None, [1], result_options={"promise": True}) == 2
        prom = await context.eval("({p: Promise.resolve('done')})", reference=True)
        assert await prom.get("p", promise=True) == "done"


@pytest.mark.anyio
async def test_async_errors(context: ivm.Context) -> None:
    with anyio.fail_after(SANITY):
        obj = await context.eval(
            "({ get bad() { throw new RangeError('g') }, get slow() { while (true) {} } })",
            reference=True,
        )
        with pytest.raises(ivm.JSError) as info:
            await obj.get("bad")
        assert info.value.name == "RangeError"
        with pytest.raises(ivm.TimeoutError):
            await obj.get("slow", timeout=0.05)
        with pytest.raises(ivm.TransferError):
            await obj.set("x", {"a": 1})
        fn = await context.eval("({f() {}})", reference=True)
        with pytest.raises(ivm.TransferError):
            await fn.copy()
        assert await context.eval("'usable'") == "usable"


@pytest.mark.anyio
async def test_async_apply_cancel_stops_js(context: ivm.Context) -> None:
    busy = context.eval_sync(
        "globalThis.ticks = 0; (() => { while (true) { globalThis.ticks++ } })", reference=True
    )
    with anyio.move_on_after(0.1) as scope:
        await busy.apply(None)
    assert scope.cancelled_caught
    with anyio.fail_after(SANITY):
        first = await context.eval("globalThis.ticks")
        assert first > 0
        assert await context.eval("globalThis.ticks") == first  # stopped for good
        assert await busy.get("name") == ""


@pytest.mark.anyio
async def test_async_get_cancel_stops_getter(context: ivm.Context) -> None:
    obj = context.eval_sync("({ get slow() { while (true) {} } })", reference=True)
    with anyio.move_on_after(0.1) as scope:
        await obj.get("slow")
    assert scope.cancelled_caught
    with anyio.fail_after(SANITY):
        assert await context.eval("1 + 1") == 2
    assert context.eval_sync("'sync usable'") == "sync usable"


@pytest.mark.anyio
async def test_async_released_reference(context: ivm.Context) -> None:
    obj = await context.eval("({})", reference=True)
    obj.release()
    with anyio.fail_after(SANITY):
        with pytest.raises(ivm.DisposedError):
            await obj.get("a")
        with pytest.raises(ivm.DisposedError):
            await obj.apply(None)


# --- ignored -------------------------------------------------------------------------------------


def test_ignored_reference_calls_run_in_order(
    context: ivm.Context, ignored_errors: list[BaseException], wait_until: Callable[..., bool]
) -> None:
    obj = context.eval_sync(
        "globalThis.log = []; globalThis.o = { get g() { log.push('get'); return 1 }, gone: 1 };"
        " o",
        reference=True,
    )
    push = context.eval_sync("(x) => { log.push(x) }", reference=True)
    assert obj.set_ignored("added", 5) is None
    assert obj.set_ignored("copied", {"a": [1]}, copy=True) is None
    assert obj.delete_ignored("gone") is None
    assert obj.get_ignored("g") is None
    assert push.apply_ignored(None, ["applied"]) is None
    assert push.apply_ignored(None, [{"k": 1}], arguments_options={"copy": True}) is None
    assert wait_until(lambda: context.eval_sync("log.length") == 3)
    assert context.eval_sync("JSON.stringify(log)") == '["get","applied",{"k":1}]'
    assert context.eval_sync("[o.added, o.copied.a[0], 'gone' in o]", copy=True) == [5, 1, False]
    assert ignored_errors == []


def test_ignored_reference_errors_are_reported(
    context: ivm.Context, ignored_errors: list[BaseException], wait_until: Callable[..., bool]
) -> None:
    thrower = context.eval_sync("() => { throw new TypeError('ignored apply') }", reference=True)
    thrower.apply_ignored(None)
    busy = context.eval_sync(BUSY_FOREVER, reference=True)
    busy.apply_ignored(None, timeout=0.05)
    assert wait_until(lambda: len(ignored_errors) >= 2)
    assert isinstance(ignored_errors[0], ivm.JSError)
    assert ignored_errors[0].message == "ignored apply"
    assert isinstance(ignored_errors[1], ivm.TimeoutError)
    assert context.eval_sync("'usable'") == "usable"


def test_ignored_calls_discard_non_primitive_results(
    context: ivm.Context, ignored_errors: list[BaseException], wait_until: Callable[..., bool]
) -> None:
    """A fire-and-forget call has no result to transfer: a getter or function that returns
    an object is not an error."""
    obj = context.eval_sync(
        "globalThis.ran = 0; ({ get g() { ran++; return {} }, f() { ran++; return [] } })",
        reference=True,
    )
    fn = obj.get_sync("f", reference=True)
    sentinel = context.eval_sync("() => { throw new Error('sentinel') }", reference=True)
    obj.get_ignored("g")
    fn.apply_ignored(None)
    sentinel.apply_ignored(None)  # reported after the calls before it
    assert wait_until(lambda: any(str(e).startswith("Error: sentinel") for e in ignored_errors))
    assert context.eval_sync("ran") == 2
    assert [e for e in ignored_errors if not str(e).startswith("Error: sentinel")] == []


def test_ignored_on_released_reference_raises_or_reports(
    context: ivm.Context, ignored_errors: list[BaseException], wait_until: Callable[..., bool]
) -> None:
    obj = context.eval_sync("({})", reference=True)
    obj.release()
    try:
        obj.set_ignored("a", 1)
    except ivm.DisposedError:
        pass
    else:
        assert wait_until(lambda: bool(ignored_errors))
        assert isinstance(ignored_errors[0], ivm.DisposedError)


def test_reference_leak_check_for_async_and_ignored(
    no_leaks: None, wait_until: Callable[..., bool]
) -> None:
    async def main() -> None:
        iso = ivm.Isolate(memory_limit=32)
        ctx = iso.create_context_sync()
        obj = ctx.eval_sync("({a: 1})", reference=True)
        for _ in range(50):
            assert await obj.get("a") == 1
            await obj.set("b", {"c": 1}, copy=True)
            assert await obj.delete("b") is True
            obj.set_ignored("d", {"e": 1}, copy=True)
        obj.set_ignored("last", 1)
        assert wait_until(lambda: obj.get_sync("last") == 1)
        ctx.release()
        iso.dispose()

    anyio.run(main)


def test_get_reads_own_properties_unless_unsafe_inherit(context: ivm.Context) -> None:
    """isolated-vm's unsafeInherit, off by default: a property the isolate planted on a
    prototype is not read through a reference."""
    obj = context.eval_sync(
        "Object.prototype.planted = 'from the prototype'; ({own: 1, get g() { return 2 }})",
        reference=True,
    )
    assert obj.get_sync("own") == 1
    assert obj.get_sync("g") == 2                     # own accessors run
    assert obj.get_sync("planted") is ivm.undefined
    assert obj.get_sync("planted", unsafe_inherit=True) == "from the prototype"
    arr = context.eval_sync("[10, 20]", reference=True)
    assert arr.get_sync(1) == 20 and arr.get_sync("length") == 2
    with pytest.raises(TypeError):
        obj.get_sync("own", unsafe_inherit=1)  # type: ignore[arg-type]


def test_deref_into_with_release_releases_the_reference_once_used(context: ivm.Context) -> None:
    """isolated-vm's `derefInto({release: true})`: usable once, then released."""
    ref = context.eval_sync("globalThis.o = {a: 1}; o", reference=True)
    marker = ref.deref_into(release=True)
    assert "release=True" in repr(marker)
    assert context.eval_closure_sync("return $0 === o", [marker]) is True
    with pytest.raises(ivm.DisposedError):
        ref.get_sync("a")
    kept = context.eval_sync("o", reference=True)
    assert context.eval_closure_sync("return $0 === o", [kept.deref_into()]) is True
    assert kept.get_sync("a") == 1  # without release it stays usable
    with pytest.raises(TypeError, match="release must be a bool"):
        kept.deref_into(release="yes")  # type: ignore[arg-type]
