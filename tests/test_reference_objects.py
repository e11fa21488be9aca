"""Reference and ExternalCopy objects *inside* isolates (libivm/wrapper.cc): a Reference
to a value of another isolate, of the same isolate, or to a Python value
(``ivm.Reference(python_value)``), passed in and used from JavaScript with isolated-vm's
API: get/set/delete/apply/copy in their sync, promise and ignored forms, deref()/derefInto(),
release(), errors across the boundary, the thread-pool deadlock guard, type confusion and
forging attempts (V8 Signatures), and what such objects become back in Python."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Iterator

import anyio
import pytest

import ivm

#: Sanity bound for things that must not hang.
SANITY = 30.0
BOUNDARY = "\n    at (<ivm boundary>)"
NOT_PRIMITIVE = "A value of type Object cannot leave the isolate"
DEADLOCK = "A synchronous call into another isolate was refused"


def thrown(ctx: ivm.Context, statements: str) -> list[Any] | None:
    """Runs ``statements`` in ``ctx``; returns ``[constructor name, name, message,
    instanceof Error]`` of what they throw, or ``None`` if nothing is thrown."""
    return ctx.eval_sync(  # type: ignore[no-any-return]
        f"(() => {{ try {{ {statements}; }} catch (e) {{"
        " return [e && e.constructor && e.constructor.name, e && e.name, e && e.message,"
        " e instanceof Error] } return null })()",
        copy=True,
    )


def rejected(ctx: ivm.Context, promise_expr: str) -> list[Any] | None:
    """Like :func:`thrown` for a promise: what it rejects with (``None`` if it fulfils)."""
    return ctx.eval_sync(  # type: ignore[no-any-return]
        f"Promise.resolve().then(() => {promise_expr}).then(() => null, e =>"
        " [e && e.constructor && e.constructor.name, e && e.name, e && e.message,"
        " e instanceof Error])",
        promise=True,
        copy=True,
    )


class Pair:
    """Two isolates: A holds the values, B holds Reference objects to them."""

    def __init__(self) -> None:
        self.iso_a = ivm.Isolate(memory_limit=64)
        self.iso_b = ivm.Isolate(memory_limit=64)
        self.a = self.iso_a.create_context_sync()
        self.b = self.iso_b.create_context_sync()
        self.fn = self.a.eval_sync(
            "globalThis.obj = {x: 1, nested: {y: 2}, list: [1, 2, 3]};"
            "globalThis.traps = {x: 1, get bad() { throw new TypeError('getter ' + this.x) },"
            "  get slow() { while (true) {} } };"
            "globalThis.calls = [];"
            "globalThis.f = function (x) {"
            "  calls.push(x);"
            "  if (x < 0) throw new RangeError('bad ' + x);"
            "  return x * 2 };"
            "globalThis.recv = function () { 'use strict'; return this };"
            "globalThis.same = (o) => o === globalThis.obj;"
            "globalThis.make = () => ({a: [1, {b: 2}]});"
            "globalThis.later = (v) => Promise.resolve(v);"
            "globalThis.fails = (v) => Promise.reject(new RangeError('later ' + v));"
            "globalThis.spin = () => { while (true) {} };"
            "class MyError extends Error { get name() { return 'MyError' } };"
            "globalThis.custom = () => { const e = new Error('mine'); e.name = 'MyError';"
            "  throw e };"
            "f",
            reference=True,
        )
        self.obj = self.a.global_.get_sync("obj", reference=True)
        g = self.b.global_
        g.set_sync("fa", self.fn)
        g.set_sync("oa", self.obj)
        g.set_sync("ga", self.a.global_)
        g.set_sync("ta", self.a.global_.get_sync("traps", reference=True))
        for name in ("recv", "same", "make", "later", "fails", "spin", "custom", "traps"):
            g.set_sync(name, self.a.global_.get_sync(name, reference=True))

    def close(self) -> None:
        self.iso_b.dispose()
        self.iso_a.dispose()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def b_context() -> Iterator[ivm.Context]:
    iso = ivm.Isolate(memory_limit=64)
    try:
        yield iso.create_context_sync()
    finally:
        iso.dispose()


# --- the objects -------------------------------------------------------------------------

REFERENCE_METHODS = [
    "get", "getSync", "getIgnored", "set", "setSync", "setIgnored", "delete", "deleteSync",
    "deleteIgnored", "apply", "applySync", "applyIgnored", "applySyncPromise", "copy", "copySync", "deref",
    "derefInto", "release",
]


def test_reference_object_shape(pair: Pair) -> None:
    b = pair.b
    assert b.eval_sync("typeof fa") == "object"
    assert b.eval_sync("fa.typeof") == "function"
    assert b.eval_sync("oa.typeof") == "object"
    assert b.eval_sync("ga.typeof") == "object"
    proto = b.eval_sync("Object.getOwnPropertyNames(Object.getPrototypeOf(fa))", copy=True)
    assert sorted(proto) == sorted([*REFERENCE_METHODS, "typeof", "constructor"])
    assert b.eval_sync("Object.getPrototypeOf(fa).constructor.name") == "Reference"
    # Every Reference object of the isolate shares the prototype.
    assert b.eval_sync("Object.getPrototypeOf(fa) === Object.getPrototypeOf(oa)") is True
    # The typeof getter is an accessor on the prototype, not data on the object.
    assert b.eval_sync(
        "typeof Object.getOwnPropertyDescriptor(Object.getPrototypeOf(fa), 'typeof').get"
    ) == "function"
    assert b.eval_sync("Object.getOwnPropertyDescriptor(fa, 'typeof')") is ivm.undefined


def test_reference_object_reveals_nothing(pair: Pair) -> None:
    b = pair.b
    for name in ("fa", "oa", "ga", "fa.derefInto()"):
        assert b.eval_sync(f"JSON.stringify({name})") == "{}"
        assert b.eval_sync(f"Object.keys({name})", copy=True) == []
        assert b.eval_sync(f"Reflect.ownKeys({name})", copy=True) == []
        assert b.eval_sync(f"Object.getOwnPropertySymbols({name}).length") == 0
        assert b.eval_sync(f"(() => {{ const k = []; for (const x in {name}) k.push(x);"
                           " return k })()", copy=True) == []
        assert b.eval_sync(f"String({name})") == "[object Object]"
        assert b.eval_sync(f"Object.prototype.toString.call({name})") == "[object Object]"
    # The prototype's methods are not enumerable either, and hold no state.
    assert b.eval_sync("Object.keys(Object.getPrototypeOf(fa))", copy=True) == []
    assert b.eval_sync("JSON.stringify(Object.getPrototypeOf(fa))") == "{}"
    # Spreading or assigning copies nothing of the state.
    assert b.eval_sync("JSON.stringify({...fa}) + Object.keys(Object.assign({}, oa)).length") == (
        "{}0")


# --- get / set / delete ------------------------------------------------------------------


def test_get_sync_with_each_option(pair: Pair) -> None:
    b = pair.b
    assert b.eval_sync("oa.getSync('x')") == 1
    assert b.eval_sync("oa.getSync('missing')") is ivm.undefined
    assert b.eval_sync("oa.getSync(0)") is ivm.undefined
    assert b.eval_sync("fa.getSync('length')") == 1
    assert b.eval_sync("fa.getSync('name')") == ""  # assigned to a property: anonymous
    # Non-primitives need an option.
    err = thrown(b, "oa.getSync('nested')")
    assert err is not None and err[:2] == ["TypeError", "TypeError"] and err[3] is True
    assert err[2].startswith(NOT_PRIMITIVE)
    # copy: a structured copy with this isolate's prototypes.
    assert b.eval_sync("JSON.stringify(oa.getSync('nested', {copy: true}))") == '{"y":2}'
    assert b.eval_sync(
        "Object.getPrototypeOf(oa.getSync('list', {copy: true})) === Array.prototype"
    ) is True
    # Truthiness, as in isolated-vm.
    assert b.eval_sync("oa.getSync('nested', {copy: 1}).y") == 2
    # reference: a Reference object of this isolate.
    assert b.eval_sync(
        "(() => { const r = oa.getSync('nested', {reference: true});"
        " return [r.typeof, Object.getPrototypeOf(r) === Object.getPrototypeOf(fa),"
        " r.getSync('y')] })()",
        copy=True,
    ) == ["object", True, 2]
    assert b.eval_sync("oa.getSync('x', {reference: true}).typeof") == "number"
    # externalCopy: an ExternalCopy object.
    assert b.eval_sync(
        "(() => { const c = oa.getSync('list', {externalCopy: true});"
        " return [Object.getPrototypeOf(c).constructor.name, c.copy().join(),"
        " c.copy() !== c.copy()] })()",
        copy=True,
    ) == ["ExternalCopy", "1,2,3", True]
    # A getter that throws: the error of A, rethrown here.
    assert thrown(b, "ta.getSync('bad')") == ["TypeError", "TypeError", "getter 1", True]
    # Symbols cannot be keys across isolates.
    err = thrown(b, "oa.getSync(Symbol('k'))")
    assert err is not None and err[0] == "TypeError"


def test_get_sync_promise_and_timeout_options(pair: Pair) -> None:
    b = pair.b
    pair.a.eval_sync("obj.p = Promise.resolve(7); obj.r = Promise.reject(new Error('no'));"
                     "obj.r.catch(() => {}); 0")
    assert b.eval_sync("oa.getSync('p', {promise: true})") == 7
    assert thrown(b, "oa.getSync('r', {promise: true})") == ["Error", "Error", "no", True]
    err = thrown(b, "ta.getSync('slow', {timeout: 30})")
    assert err is not None and err[:2] == ["Error", "Error"]
    assert "timed out" in err[2]
    # A is usable afterwards.
    assert pair.a.eval_sync("obj.x") == 1
    assert b.eval_sync("oa.getSync('x', {timeout: 1000})") == 1


def test_set_sync_and_delete_sync(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert b.eval_sync("oa.setSync('n', 5)") is True
    assert b.eval_sync("oa.setSync(7, 'seven')") is True
    assert b.eval_sync("oa.setSync('s', 'str')") is True
    assert b.eval_sync("oa.setSync('u', undefined)") is True
    assert b.eval_sync("oa.setSync('big', 2n ** 70n)") is True
    assert a.eval_sync("[obj.n, obj[7], obj.s, 'u' in obj, obj.u, obj.big === 2n ** 70n]",
                       copy=True) == [5, "seven", "str", True, ivm.undefined, True]
    # Objects need {copy: true}.
    err = thrown(b, "oa.setSync('o', {q: 1})")
    assert err is not None and err[0] == "TypeError"
    assert "cannot be passed to another isolate without {copy: true} (or as a Reference)" in err[2]
    assert a.eval_sync("'o' in obj") is False
    assert b.eval_sync("oa.setSync('o', {q: [1, 2]}, {copy: true})") is True
    assert a.eval_sync("Object.getPrototypeOf(obj.o.q) === Array.prototype && obj.o.q[1]") == 2
    # Functions never pass.
    err = thrown(b, "oa.setSync('fn', () => 1, {copy: true})")
    assert err is not None and err[0] == "TypeError"
    assert a.eval_sync("'fn' in obj") is False
    # A Reference object passes as a Reference object (even to its own isolate).
    assert b.eval_sync("oa.setSync('self', oa)") is True
    assert a.eval_sync(
        "[typeof obj.self, obj.self.typeof, obj.self.deref() === obj, obj.self === obj]",
        copy=True,
    ) == ["object", "object", True, False]
    # A setter that throws.
    a.eval_sync("Object.defineProperty(obj, 'guarded',"
                " { set(v) { throw new RangeError('no ' + v) } }); 0")
    assert thrown(b, "oa.setSync('guarded', 3)") == ["RangeError", "RangeError", "no 3", True]
    # delete
    assert b.eval_sync("oa.deleteSync('n')") is True
    assert b.eval_sync("oa.deleteSync('never-there')") is True
    assert a.eval_sync("'n' in obj") is False
    a.eval_sync("Object.defineProperty(obj, 'fixed', {value: 1, configurable: false}); 0")
    assert b.eval_sync("oa.deleteSync('fixed')") is False
    assert a.eval_sync("obj.fixed") == 1


def test_get_set_delete_on_a_primitive_reference(pair: Pair) -> None:
    b = pair.b
    b.eval_sync("globalThis.num = oa.getSync('x', {reference: true}); 0")
    for op in ("num.getSync('a')", "num.setSync('a', 1)", "num.deleteSync('a')"):
        assert thrown(b, op) == ["TypeError", "TypeError", "Reference is not an object", True]
    assert b.eval_sync("num.copySync()") == 1


# --- apply -------------------------------------------------------------------------------


def test_apply_sync_with_each_option(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert b.eval_sync("fa.applySync(undefined, [21])") == 42
    assert b.eval_sync("fa.applySync(null, [1.5])") == 3
    assert b.eval_sync("fa.applySync()") != b.eval_sync("fa.applySync()")  # NaN
    assert a.eval_sync("calls.length") == 4
    # receiver: primitives pass; objects need arguments.copy; Reference objects pass.
    assert b.eval_sync("recv.applySync('s', [])") == "s"
    err = thrown(b, "recv.applySync({}, [])")
    assert err is not None and err[0] == "TypeError" and "{copy: true}" in err[2]
    assert b.eval_sync("recv.applySync({k: 1}, [], {arguments: {copy: true}, result: {copy: true}}).k"
                       ) == 1
    assert b.eval_sync("recv.applySync(oa, [], {result: {reference: true}}).typeof") == "object"
    # arguments: must be an array or undefined.
    for bad in ("5", "'abc'", "{length: 1, 0: 1}", "null"):
        assert thrown(b, f"fa.applySync(undefined, {bad})") == [
            "TypeError", "TypeError", "arguments must be an array", True]
    err = thrown(b, "same.applySync(undefined, [{}])")
    assert err is not None and err[0] == "TypeError" and "{copy: true}" in err[2]
    assert b.eval_sync("same.applySync(undefined, [{}], {arguments: {copy: true}})") is False
    # results: copy, reference, externalCopy; none for an object is an Error.
    err = thrown(b, "make.applySync(undefined, [])")
    assert err is not None and err[:2] == ["TypeError", "TypeError"] and err[2].startswith(NOT_PRIMITIVE)
    assert b.eval_sync(
        "JSON.stringify(make.applySync(undefined, [], {result: {copy: true}}))"
    ) == '{"a":[1,{"b":2}]}'
    assert b.eval_sync(
        "(() => { const r = make.applySync(undefined, [], {result: {reference: true}});"
        " return [r.typeof, Object.getPrototypeOf(r) === Object.getPrototypeOf(fa),"
        " r.getSync('a', {copy: true})[1].b] })()",
        copy=True,
    ) == ["object", True, 2]
    assert b.eval_sync(
        "(() => { const c = make.applySync(undefined, [], {result: {externalCopy: true}});"
        " return [Object.getPrototypeOf(c).constructor.name, c.copy().a[1].b] })()",
        copy=True,
    ) == ["ExternalCopy", 2]
    # A function result with {reference: true} is callable from B.
    assert b.eval_sync(
        "ga.getSync('f', {reference: true}).applySync(undefined, [5])"
    ) == 10
    # Not a function.
    assert thrown(b, "oa.applySync(undefined, [])") == [
        "TypeError", "TypeError", "Reference is not a function", True]


def test_apply_sync_promise_results(pair: Pair) -> None:
    b = pair.b
    assert b.eval_sync("later.applySync(undefined, [9], {result: {promise: true}})") == 9
    assert b.eval_sync("later.applySyncPromise(undefined, [8])") == 8
    assert b.eval_sync(
        "later.applySyncPromise(undefined, [[1, 2]], {arguments: {copy: true},"
        " result: {copy: true}}).join()"
    ) == "1,2"
    assert thrown(b, "fails.applySyncPromise(undefined, [3])") == [
        "RangeError", "RangeError", "later 3", True]
    # Without promise, a promise is an object that cannot leave.
    err = thrown(b, "later.applySync(undefined, [1])")
    assert err is not None and err[0] == "TypeError"
    assert err[2].startswith("A value of type Promise cannot leave the isolate")
    # applySyncPromise of a plain function is applySync.
    assert b.eval_sync("fa.applySyncPromise(undefined, [4])") == 8


def test_apply_sync_timeout(pair: Pair) -> None:
    b = pair.b
    t0 = time.monotonic()
    err = thrown(b, "spin.applySync(undefined, [], {timeout: 50})")
    assert time.monotonic() - t0 < SANITY
    assert err is not None and err[:2] == ["Error", "Error"] and "timed out" in err[2]
    # Ignored: non-positive and non-finite timeouts mean no limit.
    assert b.eval_sync("fa.applySync(undefined, [1], {timeout: 0})") == 2
    assert b.eval_sync("fa.applySync(undefined, [1], {timeout: -1})") == 2
    assert b.eval_sync("fa.applySync(undefined, [1], {timeout: NaN})") == 2
    assert b.eval_sync("fa.applySync(undefined, [1], {timeout: Infinity})") == 2
    assert b.eval_sync("fa.applySync(undefined, [1], {timeout: '10'})") == 2
    assert pair.a.eval_sync("1 + 1") == 2


def test_cross_isolate_apply_sync_loop(pair: Pair) -> None:
    b = pair.b
    assert b.eval_sync(
        "let s = 0; for (let i = 0; i < 2000; i++) s += fa.applySync(undefined, [i]); s"
    ) == 2 * sum(range(2000))
    assert pair.a.eval_sync("calls.length") == 2000
    # The reverse direction in the same process, while B holds references into A.
    pair.a.global_.set_sync("gb", pair.b.global_)
    pair.b.eval_sync("globalThis.dbl = (x) => x + x; 0")
    assert pair.a.eval_sync(
        "const d = gb.getSync('dbl', {reference: true});"
        "let t = 0; for (let i = 0; i < 500; i++) t += d.applySync(undefined, [i]); t"
    ) == 2 * sum(range(500))


def test_copy_sync(pair: Pair) -> None:
    b = pair.b
    assert json.loads(b.eval_sync("JSON.stringify(oa.copySync())")) == {
        "x": 1, "nested": {"y": 2}, "list": [1, 2, 3]}
    assert b.eval_sync("Object.getPrototypeOf(oa.copySync()) === Object.prototype") is True
    assert b.eval_sync("oa.copySync() !== oa.copySync()") is True
    # A result that cannot leave: an Error (as for a timeout or a disposed isolate).
    assert thrown(b, "fa.copySync()") == ["TypeError", "TypeError", "a function at $ cannot be copied",
                                          True]


# --- errors across the boundary ------------------------------------------------------------


def test_sync_errors_keep_the_stack_and_a_boundary_line(pair: Pair) -> None:
    b = pair.b
    info = b.eval_sync(
        "(() => { try { fa.applySync(undefined, [-2]) } catch (e) {"
        " return [e instanceof RangeError, e.name, e.message, e.stack,"
        " Object.keys(e).length] } })()",
        copy=True,
    )
    assert info[:3] == [True, "RangeError", "bad -2"]
    stack = info[3]
    assert stack.startswith("RangeError: bad -2\n    at ")
    assert "globalThis.f" in stack or "at f " in stack
    # After the boundary line: B's own frames, where it called (issue 12: they were missing).
    assert stack.count(BOUNDARY) == 1
    assert stack.split(BOUNDARY)[1].startswith("\n    at <eval>:1:")
    assert info[4] == 0  # name and stack are not enumerable
    # Other names are an Error with that name.
    info = b.eval_sync(
        "(() => { try { custom.applySync() } catch (e) {"
        " return [e.constructor.name, e.name, e.message, 0, e.stack] } })()",
        copy=True,
    )
    assert info[:3] == ["Error", "MyError", "mine"]
    assert info[4].count(BOUNDARY) == 1
    assert info[4].split(BOUNDARY)[1].startswith("\n    at <eval>:1:")
    # Non-Error throws.
    pair.a.eval_sync("globalThis.throwsString = () => { throw 'plain' }; 0")
    b.global_.set_sync("ts", pair.a.global_.get_sync("throwsString", reference=True))
    assert thrown(b, "ts.applySync()") == ["Error", "Error", "plain", True]


def test_errors_through_two_boundaries(pair: Pair) -> None:
    """A -> B -> C: the stack gets one marker line per crossing."""
    c_iso = ivm.Isolate(memory_limit=64)
    try:
        c = c_iso.create_context_sync()
        pair.b.eval_sync("globalThis.viaB = () => fa.applySync(undefined, [-9]); 0")
        c.global_.set_sync("vb", pair.b.global_.get_sync("viaB", reference=True))
        info = c.eval_sync(
            "(() => { try { vb.applySync() } catch (e) { return [e.constructor.name,"
            " e.message, e.stack] } })()",
            copy=True,
        )
        assert info[:2] == ["RangeError", "bad -9"]
        assert info[:2] == ["RangeError", "bad -9"]
        assert info[2].startswith("RangeError: bad -9\n")
        # B's own view of the error includes A's frames, a marker line and B's frames ...
        in_b = pair.b.eval_sync("(() => { try { viaB() } catch (e) { return e.stack } })()")
        a_part, b_part = in_b.split(BOUNDARY)
        assert "globalThis.f" in a_part and "viaB" in b_part
        # ... and so should what crosses on to C: A's frames, B's, C's, two marker lines
        # (issue 12: B's and C's frames were missing).
        assert info[2].count(BOUNDARY) == 2, info[2]
        a_part, b_part, c_part = info[2].split(BOUNDARY)
        assert "globalThis.f" in a_part, info[2]
        assert "viaB" in b_part and c_part.startswith("\n    at <eval>:1:"), info[2]
    finally:
        c_iso.dispose()


def test_non_js_errors_stack_starts_with_the_name(pair: Pair) -> None:
    """A failure that is not a JavaScript exception (here: a result that cannot leave)
    arrives as an Error; its stack should read like any Error's ("Error: <message>")."""
    stack = pair.b.eval_sync(
        "(() => { try { oa.getSync('nested') } catch (e) { return e.stack } })()"
    )
    assert stack.startswith("TypeError: " + NOT_PRIMITIVE), stack


def test_async_errors_keep_the_stack_and_a_boundary_line(pair: Pair) -> None:
    """Documented for every operation of a Reference object: the error of the other
    isolate with its stack and the marker line. The promise forms lose both."""
    stack = pair.b.eval_sync(
        "fa.apply(undefined, [-4]).then(() => 'fulfilled', e => e.stack)", promise=True
    )
    assert stack.startswith("RangeError: bad -4\n    at "), stack
    assert stack.endswith(BOUNDARY), stack


# --- the promise and ignored forms ---------------------------------------------------------


def test_promise_forms_from_sync_eval(pair: Pair) -> None:
    a, b = pair.a, pair.b
    for expr in ("oa.get('x')", "oa.set('k', 1)", "oa.delete('k')", "fa.apply(undefined, [1])",
                 "oa.copy()"):
        assert b.eval_sync(f"{expr} instanceof Promise") is True
    assert b.eval_sync(
        "(async () => [await oa.get('x'), await oa.set('y', 3), await oa.delete('x'),"
        " await fa.apply(undefined, [4]), JSON.stringify((await oa.get('nested', {copy: true}))),"
        " (await oa.get('nested', {reference: true})).typeof,"
        " (await oa.get('list', {externalCopy: true})).copy().length])()",
        promise=True,
        copy=True,
    ) == [1, True, True, 8, '{"y":2}', "object", 3]
    assert a.eval_sync("[obj.y, 'x' in obj]", copy=True) == [3, False]
    assert b.eval_sync("oa.set('o', {deep: [1]}, {copy: true})", promise=True) is True
    assert a.eval_sync("obj.o.deep[0]") == 1
    assert b.eval_sync("later.apply(undefined, [6], {result: {promise: true}})",
                       promise=True) == 6
    assert b.eval_sync("oa.copy().then(c => c.y)", promise=True) == 3
    # Rejections.
    assert rejected(b, "fa.apply(undefined, [-1])") == ["RangeError", "RangeError", "bad -1", True]
    assert rejected(b, "ta.get('bad')") == ["TypeError", "TypeError", "getter 1", True]
    err = rejected(b, "oa.get('nested')")
    assert err is not None and err[0] == "Error" and err[2].startswith(NOT_PRIMITIVE)
    assert rejected(b, "oa.apply(undefined, [])") == [
        "TypeError", "TypeError", "Reference is not a function", True]
    # Argument errors are thrown synchronously, not as rejections.
    err = thrown(b, "oa.set('z', {})")
    assert err is not None and err[0] == "TypeError"
    assert thrown(b, "fa.apply(undefined, 3)") == [
        "TypeError", "TypeError", "arguments must be an array", True]


def test_ignored_forms(pair: Pair, wait_until: Callable[..., bool]) -> None:
    a, b = pair.a, pair.b
    assert b.eval_sync("oa.setIgnored('ig', 7)") is ivm.undefined
    assert b.eval_sync("oa.getIgnored('nested')") is ivm.undefined  # result dropped
    assert b.eval_sync("ta.getIgnored('bad')") is ivm.undefined  # error dropped
    assert b.eval_sync("fa.applyIgnored(undefined, [-1])") is ivm.undefined
    assert b.eval_sync("fa.applyIgnored(undefined, [100])") is ivm.undefined
    assert wait_until(lambda: a.eval_sync("obj.ig === 7 && calls.includes(100)") is True)
    assert "deleteIgnored" in b.eval_sync(
        "Object.getOwnPropertyNames(Object.getPrototypeOf(fa))", copy=True)


@pytest.mark.anyio
async def test_promise_forms_from_async_eval(pair: Pair) -> None:
    b = pair.b
    with anyio.fail_after(SANITY):
        assert await b.eval("fa.apply(undefined, [5])", promise=True) == 10
        assert await b.eval(
            "(async () => { let s = 0; for (let i = 0; i < 50; i++)"
            " s += await fa.apply(undefined, [i]); return s })()",
            promise=True,
        ) == 2 * sum(range(50))
        assert await b.eval("oa.get('x')", promise=True) == 1
        assert await b.eval("oa.set('w', 1).then(() => oa.get('w'))", promise=True) == 1
        assert await b.eval("oa.copy().then(c => c.w)", promise=True) == 1
        err = await b.eval(
            "fa.apply(undefined, [-7]).then(() => null, e => [e.constructor.name, e.message])",
            promise=True, copy=True)
        assert err == ["RangeError", "bad -7"]


# --- deadlock guard --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sync_call_into_another_isolate_from_the_pool_is_refused(pair: Pair) -> None:
    b = pair.b
    with anyio.fail_after(SANITY):
        for op in ("fa.applySync(undefined, [1])", "oa.getSync('x')", "oa.setSync('x', 2)",
                   "oa.deleteSync('x')", "oa.copySync()", "later.applySyncPromise(undefined, [1])"):
            err = await b.eval(
                f"(() => {{ try {{ {op} }} catch (e) {{ return [e.constructor.name, e.message] }}"
                " })()",
                copy=True,
            )
            assert err is not None and err[0] == "Error", op
            assert err[1].startswith(DEADLOCK), op
        with pytest.raises(ivm.JSError) as info:
            await b.eval("fa.applySync(undefined, [1])")
        assert info.value.name == "Error" and info.value.message.startswith(DEADLOCK)
        # Nothing happened in A.
        assert pair.a.eval_sync("[obj.x, calls.length]", copy=True) == [1, 0]
        # The async forms are fine there, and so are sync calls into the same isolate.
        assert await b.eval("fa.apply(undefined, [2])", promise=True) == 4
        own = b.eval_sync("globalThis.own = {v: 3}; own", reference=True)
        b.global_.set_sync("ownref", own)
        assert await b.eval("ownref.getSync('v')") == 3
        # The sync forms work again from a sync call.
        assert b.eval_sync("fa.applySync(undefined, [3])") == 6


# --- release ---------------------------------------------------------------------------------


def test_release_in_js(pair: Pair) -> None:
    a, b = pair.a, pair.b
    b.eval_sync("globalThis.o2 = ga.getSync('obj', {reference: true}); o2.release()")
    calls = {
        "getSync": "o2.getSync('x')", "get": "o2.get('x')", "getIgnored": "o2.getIgnored('x')",
        "setSync": "o2.setSync('x', 1)", "set": "o2.set('x', 1)",
        "setIgnored": "o2.setIgnored('x', 1)", "deleteSync": "o2.deleteSync('x')",
        "delete": "o2.delete('x')", "applySync": "o2.applySync()", "apply": "o2.apply()",
        "applyIgnored": "o2.applyIgnored()", "applySyncPromise": "o2.applySyncPromise()",
        "copySync": "o2.copySync()", "copy": "o2.copy()", "deref": "o2.deref()",
        "derefInto": "o2.derefInto()",
    }
    for name, call in calls.items():
        assert thrown(b, call) == ["Error", "Error", "Reference has been released", True], name
    assert b.eval_sync("o2.release(); o2.release(); 'idempotent'") == "idempotent"
    # Passing it anywhere is refused.
    assert thrown(b, "ga.setSync('r', o2)") == [
        "TypeError", "TypeError", "a released Reference or ExternalCopy at $ cannot be copied",
        True]
    assert thrown(b, "ga.setSync('r', {deep: [o2]}, {copy: true})") == [
        "TypeError", "TypeError",
        "a released Reference or ExternalCopy at $.deep[0] cannot be copied", True]
    assert a.eval_sync("'r' in globalThis") is False
    # release() ends that object only: other Reference objects and Python's handle work.
    assert b.eval_sync("oa.getSync('x')") == 1
    assert pair.obj.get_sync("x") == 1
    with pytest.raises(ivm.TransferError):
        b.eval_sync("o2", copy=True)


def test_typeof_of_a_released_reference_object(pair: Pair) -> None:
    """After release(), `typeof` gives "" (neither the type nor an error; isolated-vm
    throws "Reference has been released"). A released host Reference keeps its type,
    which shows the inconsistency."""
    b = pair.b
    b.global_.set_sync("h", ivm.Reference(lambda: 1))
    b.eval_sync("h.release(); globalThis.o2 = ga.getSync('obj', {reference: true});"
                " o2.release()")
    assert thrown(b, "h.typeof") == ["Error", "Error", "Reference has been released", True]
    assert thrown(b, "o2.typeof") == ["Error", "Error", "Reference has been released", True]


def test_release_from_python(pair: Pair) -> None:
    b = pair.b
    b.eval_sync("globalThis.marker = oa.derefInto(); 0")
    pair.obj.release()
    err = thrown(b, "oa.getSync('x')")
    assert err == ["Error", "Error", "Reference has been released", True]
    assert rejected(b, "oa.get('x')") == ["Error", "Error", "Reference has been released", True]
    assert b.eval_sync("oa.getIgnored('x')") is ivm.undefined
    assert b.eval_sync("oa.typeof") == "object"  # fixed when made
    # A marker made before (or after) the release cannot be used.
    for statements in ("ga.setSync('m', marker)", "ga.setSync('m', oa.derefInto())"):
        err = thrown(b, statements)
        assert err is not None and err[3] is True and "released" in err[2], statements
    assert pair.a.eval_sync("'m' in globalThis") is False
    # The function reference is unaffected.
    assert b.eval_sync("fa.applySync(undefined, [1])") == 2


def test_reference_into_a_disposed_isolate(pair: Pair) -> None:
    b = pair.b
    pair.iso_a.dispose()
    assert b.eval_sync("[fa.typeof, oa.typeof]", copy=True) == ["function", "object"]
    disposed = ["Error", "Error", "Isolate is disposed", True]
    assert thrown(b, "fa.applySync(undefined, [1])") == disposed
    assert thrown(b, "oa.getSync('x')") == disposed
    assert thrown(b, "oa.setSync('x', 1)") == disposed
    assert thrown(b, "oa.deleteSync('x')") == disposed
    assert thrown(b, "oa.copySync()") == disposed
    assert thrown(b, "later.applySyncPromise(undefined, [1])") == disposed
    assert rejected(b, "fa.apply(undefined, [1])") == disposed
    assert rejected(b, "oa.get('x')") == disposed
    assert rejected(b, "oa.copy()") == disposed
    assert b.eval_sync("fa.applyIgnored(undefined, [1])") is ivm.undefined
    assert b.eval_sync("oa.setIgnored('x', 1)") is ivm.undefined
    assert thrown(b, "fa.deref()") == [
        "TypeError", "TypeError", "Cannot dereference this from current isolate", True]
    # B itself is fine.
    assert b.eval_sync("1 + 1") == 2
    b.eval_sync("fa.release()")
    assert thrown(b, "fa.applySync()") == ["Error", "Error", "Reference has been released", True]


def test_disposing_the_holder_isolate_drops_its_reference_objects(pair: Pair) -> None:
    pair.iso_b.dispose()
    # A, and Python's references into it, are unaffected.
    assert pair.fn.apply_sync(None, [2]) == 4
    assert pair.obj.get_sync("x") == 1


# --- deref / derefInto -----------------------------------------------------------------------


def test_deref_into_round_trip_keeps_identity(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert b.eval_sync("same.applySync(undefined, [oa.derefInto()])") is True
    # As a copied argument's member.
    pair.a.eval_sync("globalThis.sameIn = (x) => x.o === globalThis.obj && x.arr[0] === obj; 0")
    b.global_.set_sync("sameIn", a.global_.get_sync("sameIn", reference=True))
    assert b.eval_sync(
        "sameIn.applySync(undefined, [{o: oa.derefInto(), arr: [oa.derefInto()]}],"
        " {arguments: {copy: true}})"
    ) is True
    # As a receiver.
    assert b.eval_sync("recv.applySync(oa.derefInto(), [], {result: {reference: true}})"
                       ".getSync('x')") == 1
    pair.a.eval_sync("globalThis.isObj = function () { return this === globalThis.obj }; 0")
    b.global_.set_sync("isObj", a.global_.get_sync("isObj", reference=True))
    assert b.eval_sync("isObj.applySync(oa.derefInto())") is True
    # As a set value, through B's reference to A's global.
    b.eval_sync("ga.setSync('back', oa.derefInto()); ga.setSync('backFn', fa.derefInto())")
    assert a.eval_sync("back === obj && backFn === f") is True
    # The marker can be used more than once.
    b.eval_sync("globalThis.m = oa.derefInto(); 0")
    assert b.eval_sync("same.applySync(undefined, [m]) && same.applySync(undefined, [m])") is True
    # A marker is not the value and has nothing on it.
    assert b.eval_sync("Object.getPrototypeOf(m).constructor.name") == "DereferencedReference"
    assert b.eval_sync("Object.getOwnPropertyNames(Object.getPrototypeOf(m))",
                       copy=True) == ["constructor"]
    # Python sees the same identity.
    assert a.eval_closure_sync("return $0 === globalThis.obj", [pair.obj.deref_into()]) is True


def test_deref_into_another_isolate_is_refused(pair: Pair) -> None:
    """A derefInto() marker of A's value given to an operation of a Reference of B's own
    value. Documented: a value that cannot be passed or inserted arrives as a TypeError
    (Python gets ivm.TransferError, a TypeError, for the same thing)."""
    b = pair.b
    own = b.eval_sync("globalThis.own = {}; own", reference=True)
    b.global_.set_sync("ownref", own)
    err = thrown(b, "ownref.setSync('m', oa.derefInto())")
    assert err is not None
    assert "deref_into() of a Reference can only be used in the isolate" in err[2]
    assert b.eval_sync("'m' in own") is False
    assert err[0] == "TypeError", err


def test_deref_in_own_isolate(pair: Pair) -> None:
    a, b = pair.a, pair.b
    # A Reference object in B to B's own value: deref gives the value itself, and the
    # sync operations nest.
    own = b.eval_sync("globalThis.own = {v: 1, f(x) { return this.v + x }}; own",
                      reference=True)
    b.global_.set_sync("ownref", own)
    assert b.eval_sync("ownref.deref() === own") is True
    assert b.eval_sync("ownref.getSync('v')") == 1
    assert b.eval_sync("ownref.setSync('v', 5); own.v") == 5
    assert b.eval_sync("ownref.getSync('f', {reference: true}).applySync(ownref.derefInto(), [1])") == 6
    # Passed back into its own isolate it is a Reference object, not the value...
    b.eval_sync("ownref.setSync('self', ownref)")
    assert b.eval_sync("own.self !== own && own.self.deref() === own") is True
    # ... unless as derefInto().
    b.eval_sync("ownref.setSync('me', ownref.derefInto())")
    assert b.eval_sync("own.me === own") is True
    # A Reference object of A's value sent to A: deref works there, not in B.
    b.eval_sync("ga.setSync('rf', fa)")
    assert a.eval_sync("[typeof rf, rf.deref() === f, rf.typeof, rf.applySync(undefined, [2])]",
                       copy=True) == ["object", True, "function", 4]
    assert thrown(b, "fa.deref()") == [
        "TypeError", "TypeError", "Cannot dereference this from current isolate", True]
    # In another context of the same isolate deref() works too.
    c2 = pair.iso_b.create_context_sync()
    try:
        c2.global_.set_sync("r", own)
        assert c2.eval_sync("r.deref().v") == 5
        assert c2.eval_sync("r.deref() === globalThis") is False
    finally:
        c2.release()


# --- type confusion and forging ------------------------------------------------------------

RECEIVERS = [
    "{}", "[]", "Object.create(P)", "Object.setPrototypeOf({}, P)", "Object.create(EP)",
    "marker", "ec", "P", "EP", "DP", "function () {}", "() => 1", "1", "'str'", "true",
    "null", "undefined", "Symbol('s')", "10n", "new Proxy(fa, {})", "globalThis", "Math",
    "new Error('e')", "new (class extends Object {})()", "Object.assign({}, fa)",
    "new Map()", "host",
]


def _confusion_setup(b: ivm.Context) -> None:
    b.global_.set_sync("ec", ivm.ExternalCopy({"k": [1, 2]}))
    b.global_.set_sync("host", ivm.Reference(lambda: 1))
    b.eval_sync(
        "globalThis.P = Object.getPrototypeOf(fa); globalThis.EP = Object.getPrototypeOf(ec);"
        "globalThis.marker = fa.derefInto(); globalThis.DP = Object.getPrototypeOf(marker); 0"
    )


def test_methods_refuse_foreign_receivers(pair: Pair) -> None:
    b = pair.b
    _confusion_setup(b)
    methods = [*REFERENCE_METHODS, "typeof"]
    results = b.eval_sync(
        "(() => { const out = {}; const receivers = [" + ", ".join(RECEIVERS) + "];"
        " const fns = {};"
        " for (const n of " + json.dumps(methods) + ")"
        "   fns['R.' + n] = n === 'typeof' ? Object.getOwnPropertyDescriptor(P, n).get : P[n];"
        " for (const n of ['copy', 'copyInto', 'release']) fns['E.' + n] = EP[n];"
        " for (const [name, fn] of Object.entries(fns)) receivers.forEach((r, i) => {"
        "   if (name.startsWith('E.') && r === ec) return;"
        "   if (name.startsWith('R.') && r === host) return;"
        "   try { fn.call(r, 'x', [1], {copy: true}); out[name + '@' + i] = 'NO THROW' }"
        "   catch (e) { out[name + '@' + i] = e.constructor.name + ': ' + e.message } });"
        " return out })()",
        copy=True,
    )
    assert len(results) == (len(methods) + 3) * len(RECEIVERS) - len(methods) - 3
    bad = {k: v for k, v in results.items() if v != "TypeError: Illegal invocation"}
    assert bad == {}
    # Nothing happened in A.
    assert pair.a.eval_sync("[obj.x, calls.length, 'x' in globalThis]", copy=True) == [
        1, 0, False]


def test_forged_objects_are_refused(pair: Pair) -> None:
    b = pair.b
    _confusion_setup(b)
    for forge in ("Object.setPrototypeOf({}, P)", "Object.create(P)",
                  "Object.setPrototypeOf(function () {}, P)", "new Proxy(fa, {})",
                  "Object.setPrototypeOf(marker, P)", "Object.setPrototypeOf([], EP)"):
        for call in ("getSync('x')", "applySync(undefined, [1])", "setSync('x', 1)",
                     "copySync()", "deref()", "derefInto()", "release()"):
            err = thrown(b, f"const o = {forge}; (o.{call.split('(')[0]} ?? P.{call.split('(')[0]})"
                            f".call(o, ...[{call[call.index('(') + 1:-1]}])")
            assert err == ["TypeError", "TypeError", "Illegal invocation", True], (forge, call)
    # A forged object is not passed as a Reference either: without copy it is refused,
    # with copy it is plain data.
    err = thrown(b, "ga.setSync('forged', Object.setPrototypeOf({}, P))")
    assert err is not None and err[0] == "TypeError" and "{copy: true}" in err[2]
    b.eval_sync("ga.setSync('forged', Object.setPrototypeOf({q: 1}, P), {copy: true})")
    assert pair.a.eval_sync("JSON.stringify(forged) + ':' + (typeof forged.getSync)") == (
        '{"q":1}:undefined')
    # A Proxy of a Reference object is not a Reference object.
    err = thrown(b, "ga.setSync('px', new Proxy(fa, {}))")
    assert err is not None and err[0] == "TypeError"
    # The marker after setPrototypeOf is still only a marker (B's prototype change does
    # not make it a Reference object).
    assert b.eval_sync("(() => { const m = fa.derefInto(); Object.setPrototypeOf(m, P);"
                       " try { m.applySync(undefined, [1]); return 'called' }"
                       " catch (e) { return e.message } })()") == "Illegal invocation"
    # Tampering with the prototype is refused: it is frozen, as isolated-vm's (issue 12;
    # JavaScript could change it before), and the real object works as before.
    assert b.eval_sync("'use strict'; const out = [];"
                       " for (const f of [() => { P.applySync2 = P.applySync },"
                       "   () => Object.defineProperty(P, 'typeof',"
                       "     {get() { return 'forged' }, configurable: true})])"
                       "   try { f(); out.push('changed') } catch (e) { out.push(e.name) }"
                       " out.join()") == "TypeError,TypeError"
    assert b.eval_sync("fa.applySync(undefined, [3])") == 6
    assert b.eval_sync("fa.typeof") == "function"
    assert pair.fn.typeof == "function"


def test_constructors_are_illegal(pair: Pair) -> None:
    b = pair.b
    _confusion_setup(b)
    illegal = ["TypeError", "TypeError", "Illegal constructor", True]
    for ctor in ("P.constructor", "EP.constructor", "DP.constructor"):
        assert thrown(b, f"new ({ctor})()") == illegal, ctor
        assert thrown(b, f"({ctor})()") == illegal, ctor
        assert thrown(b, f"Reflect.construct({ctor}, [], Object)") == illegal, ctor
        assert thrown(b, f"class X extends ({ctor}) {{}}; new X()") == illegal, ctor
        assert thrown(b, f"({ctor}).call(fa)") == illegal, ctor
    for name in REFERENCE_METHODS:
        err = thrown(b, f"new fa.{name}()")
        assert err is not None and err[0] == "TypeError", name
        assert "not a constructor" in err[2], name
    for name in ("copy", "copyInto", "release"):
        err = thrown(b, f"new ec.{name}()")
        assert err is not None and err[0] == "TypeError" and "not a constructor" in err[2]


def test_options_with_throwing_getters(pair: Pair) -> None:
    """Option objects are read with [[Get]]. A getter that throws must end the call with
    its error: no later option getter may run (JavaScript would run with an exception
    pending) and nothing may happen in A."""
    b = pair.b
    b.eval_sync(
        "globalThis.log = [];"
        "globalThis.opts = () => ({"
        " get copy() { log.push('copy'); throw new RangeError('first') },"
        " get externalCopy() { log.push('externalCopy') },"
        " get reference() { log.push('reference') },"
        " get promise() { log.push('promise') },"
        " get timeout() { log.push('timeout'); throw new Error('second') } }); 0"
    )
    b.global_.set_sync("ec", ivm.ExternalCopy([1]))
    calls = {
        "getSync": "oa.getSync('x', opts())",
        "get": "oa.get('x', opts())",
        "setSync": "oa.setSync('x', 2, opts())",
        "applySync arguments": "fa.applySync(undefined, [1], {arguments: opts(),"
                               " get result() { log.push('result') }})",
        "applySync result": "fa.applySync(undefined, [1], {result: opts(),"
                            " get timeout() { log.push('timeout') }})",
        "copyInto": "ec.copyInto(Object.assign(Object.create({"
                    " get release() { log.push('copy'); throw new RangeError('first') },"
                    " get transferIn() { log.push('transferIn') } })))",
    }
    seen = {}
    for name, call in calls.items():
        b.eval_sync("log.length = 0")
        seen[name] = (thrown(b, call), b.eval_sync("log", copy=True))
    expected = (["RangeError", "RangeError", "first", True], ["copy"])
    bad = {k: v for k, v in seen.items() if v != expected}
    assert bad == {}, bad
    assert pair.a.eval_sync("[obj.x, calls.length]", copy=True) == [1, 0]
    assert b.eval_sync("ec.copy()[0]") == 1
    # An arguments array with a throwing index getter.
    err = thrown(b, "const arr = [1]; Object.defineProperty(arr, 0, {get() {"
                    " throw new RangeError('idx') }}); fa.applySync(undefined, arr)")
    assert err == ["RangeError", "RangeError", "idx", True]
    assert pair.a.eval_sync("calls.length") == 0


# --- ExternalCopy objects --------------------------------------------------------------------


def test_external_copy_objects(b_context: ivm.Context) -> None:
    b = b_context
    ec = ivm.ExternalCopy({"k": [1, 2], "s": "str"})
    b.global_.set_sync("ec", ec)
    assert b.eval_sync("Object.getPrototypeOf(ec).constructor.name") == "ExternalCopy"
    assert sorted(b.eval_sync("Object.getOwnPropertyNames(Object.getPrototypeOf(ec))",
                              copy=True)) == ["constructor", "copy", "copyInto", "release"]
    assert b.eval_sync("JSON.stringify(ec)") == "{}"
    assert b.eval_sync("Object.keys(ec)", copy=True) == []
    assert b.eval_sync(
        "(() => { const c1 = ec.copy(), c2 = ec.copyInto(); return [c1 !== c2,"
        " JSON.stringify(c1), JSON.stringify(c2),"
        " Object.getPrototypeOf(c1.k) === Array.prototype] })()",
        copy=True,
    ) == [True, '{"k":[1,2],"s":"str"}', '{"k":[1,2],"s":"str"}', True]
    # copyInto({release: true}) ends this object only.
    assert b.eval_sync("ec.copyInto({release: true}).s") == "str"
    released = ["Error", "Error", "ExternalCopy has been released", True]
    assert thrown(b, "ec.copy()") == released
    assert thrown(b, "ec.copyInto()") == released
    assert b.eval_sync("ec.release(); ec.release(); 'ok'") == "ok"
    assert ec.copy() == {"k": [1, 2], "s": "str"}
    # Another object from the same ExternalCopy is unaffected by release().
    b.global_.set_sync("ec2", ec)
    assert b.eval_sync("ec2.release(); 1") == 1
    assert thrown(b, "ec2.copy()") == released
    b.global_.set_sync("ec3", ec)
    assert b.eval_sync("ec3.copy().k[1]") == 2


def test_external_copy_object_release_and_passing(pair: Pair) -> None:
    a, b = pair.a, pair.b
    ec = ivm.ExternalCopy({"k": [1, 2]})
    b.global_.set_sync("ec", ec)
    # Passed to A as itself: an ExternalCopy object there too.
    b.eval_sync("ga.setSync('ecA', ec)")
    assert a.eval_sync("Object.getPrototypeOf(ecA).constructor.name + ':' + ecA.copy().k") == (
        "ExternalCopy:1,2")
    # Inside a copied value too.
    b.eval_sync("ga.setSync('wrapped', {e: ec, r: oa}, {copy: true})")
    assert a.eval_sync("[wrapped.e.copy().k[0], wrapped.r.deref() === obj]", copy=True) == [
        1, True]
    b.eval_sync("ec.release()")
    assert thrown(b, "ga.setSync('x', ec)") == [
        "TypeError", "TypeError", "a released Reference or ExternalCopy at $ cannot be copied",
        True]
    # A's objects are their own.
    assert a.eval_sync("ecA.copy().k[1]") == 2


def test_external_copy_transfer_in(b_context: ivm.Context) -> None:
    b = b_context
    ec = ivm.ExternalCopy(b"abc")
    b.global_.set_sync("ec", ec)
    assert b.eval_sync(
        "(() => { const t = ec.copyInto({transferIn: true});"
        " return [t instanceof ArrayBuffer || t.constructor.name, t.byteLength] })()",
        copy=True,
    ) == [True, 3]
    assert thrown(b, "ec.copy()") == ["Error", "Error", "ExternalCopy has been released", True]


def test_external_copy_result_options(pair: Pair) -> None:
    b = pair.b
    assert b.eval_sync(
        "(() => { const c = oa.getSync('nested', {externalCopy: true}); c.release();"
        " try { c.copy() } catch (e) { return e.message } })()"
    ) == "ExternalCopy has been released"


# --- back into Python ------------------------------------------------------------------------


def test_reference_objects_back_into_python(pair: Pair) -> None:
    b = pair.b
    # Without an option: not a primitive.
    with pytest.raises(ivm.TransferError) as info:
        b.eval_sync("fa")
    assert "Reference cannot leave the isolate" in str(info.value)
    # reference=True: a Reference to the Reference object (of B).
    wrapper = b.eval_sync("fa", reference=True)
    assert isinstance(wrapper, ivm.Reference) and wrapper.typeof == "object"
    assert wrapper.get_sync("typeof", unsafe_inherit=True) == "function"
    # copy=True: the Reference object copies out as what it stands for.
    back = b.eval_sync("fa", copy=True)
    assert isinstance(back, ivm.Reference), back
    assert back.typeof == "function"
    assert back.apply_sync(None, [21]) == 42
    assert pair.a.eval_closure_sync("return $0 === f", [back.deref_into()]) is True
    nested = b.eval_sync("({list: [fa, oa], n: 1})", copy=True)
    assert nested["n"] == 1
    assert [r.typeof for r in nested["list"]] == ["function", "object"]
    assert nested["list"][1].get_sync("x") == 1
    ext = b.eval_sync("oa.getSync('nested', {externalCopy: true})", copy=True)
    assert isinstance(ext, ivm.ExternalCopy) and ext.copy() == {"y": 2}


def test_host_reference_objects_back_into_python(b_context: ivm.Context) -> None:
    b_context.global_.set_sync("h", ivm.Reference(lambda: 1))
    with pytest.raises(ivm.TransferError) as info:
        b_context.eval_sync("h", copy=True)
    assert "host value" in str(info.value)
    with pytest.raises(ivm.TransferError):
        b_context.eval_sync("h")


def test_deref_into_marker_back_into_python(pair: Pair) -> None:
    b = pair.b
    with pytest.raises(ivm.TransferError) as info:
        b.eval_sync("oa.derefInto()")
    assert "DereferencedReference" in str(info.value)
    # A copy of a marker is a Reference to the value.
    value = b.eval_sync("oa.derefInto()", copy=True)
    assert isinstance(value, ivm.Reference)
    assert value.typeof == "object" and value.get_sync("x") == 1


# --- references to Python values -------------------------------------------------------------


def test_host_reference_to_a_function(
    b_context: ivm.Context, wait_until: Callable[..., bool]
) -> None:
    b = b_context
    seen: list[tuple[Any, ...]] = []
    threads: list[int] = []

    def record(*args: Any) -> Any:
        seen.append(args)
        threads.append(threading.get_ident())
        return {"got": list(args)}

    b.global_.set_sync("inc", ivm.Reference(lambda x: x + 1))
    b.global_.set_sync("rec", ivm.Reference(record))
    assert b.eval_sync("[typeof inc, inc.typeof, rec.typeof]", copy=True) == [
        "object", "function", "function"]
    assert b.eval_sync("Object.getPrototypeOf(inc) === Object.getPrototypeOf(rec)") is True
    assert b.eval_sync("Object.getPrototypeOf(inc).constructor.name") == "Reference"
    assert b.eval_sync("inc.applySync(undefined, [41])") == 42
    assert b.eval_sync("inc.applySync({ignored: true}, [1.5])") == 2.5
    # Arguments arrive as copies (objects included), the result as a copy.
    assert b.eval_sync(
        "JSON.stringify(rec.applySync(undefined, [{a: 1}, [1, 2], 'x', null, undefined]))"
    ) == '{"got":[{"a":1},[1,2],"x",null,null]}'
    assert seen[-1] == ({"a": 1}, [1, 2], "x", None, ivm.undefined)
    assert threads[-1] == threading.get_ident()
    # Uncopyable arguments: TypeError in JavaScript, function not called.
    n = len(seen)
    err = thrown(b, "rec.applySync(undefined, [() => 1])")
    assert err is not None and err[0] == "TypeError" and "cannot be copied" in err[2]
    err = thrown(b, "rec.applySync(undefined, [Symbol('s')])")
    assert err is not None and err[0] == "TypeError"
    assert len(seen) == n
    # Loop.
    assert b.eval_sync("let s = 0; for (let i = 0; i < 300; i++)"
                       " s += inc.applySync(undefined, [i]); s") == sum(range(1, 301))
    # Without a running loop, apply runs at once and gives a promise.
    assert b.eval_sync("inc.apply(undefined, [1]) instanceof Promise") is True
    assert b.eval_sync("inc.apply(undefined, [1])", promise=True) == 2
    assert b.eval_sync("rec.applyIgnored(undefined, ['ignored'])") is ivm.undefined
    assert wait_until(lambda: ("ignored",) in seen)
    # Without a loop, applySyncPromise runs the function at once.
    assert b.eval_sync("inc.applySyncPromise(undefined, [9])") == 10
    # Nothing else of the function is reachable.
    for op in ("inc.getSync('__name__')", "inc.setSync('a', 1)", "inc.deleteSync('a')",
               "inc.get('__code__')", "inc.set('a', 1)", "inc.delete('a')",
               "inc.getIgnored('a')", "inc.setIgnored('a', 1)", "inc.derefInto()"):
        assert thrown(b, op) == [
            "TypeError", "TypeError", "not supported by this Reference", True], op
    assert thrown(b, "inc.deref()") == [
        "TypeError", "TypeError", "Cannot dereference this from current isolate", True]
    assert b.eval_sync("JSON.stringify(inc) + Object.keys(inc).length") == "{}0"
    err = thrown(b, "inc.copySync()")
    assert err is not None and err[0] == "TypeError" and "cannot be copied" in err[2]


def test_host_reference_to_a_value(b_context: ivm.Context) -> None:
    b = b_context
    data = {"a": 1, "b": [1, 2], "c": None}
    b.global_.set_sync("d", ivm.Reference(data))
    assert b.eval_sync("d.typeof") == "object"
    assert b.eval_sync("JSON.stringify(d.copySync())") == '{"a":1,"b":[1,2],"c":null}'
    # copy() gives the copy directly, not a promise (documented difference).
    assert b.eval_sync("d.copy() instanceof Promise") is False
    assert b.eval_sync("d.copy().b[1]") == 2
    assert b.eval_sync("d.copySync() !== d.copySync()") is True
    data["a"] = 5  # the copy is made at each call
    assert b.eval_sync("d.copySync().a") == 5
    not_fn = ["TypeError", "TypeError", "Reference is not a function", True]
    for op in ("d.applySync(undefined, [])", "d.apply(undefined, [])",
               "d.applyIgnored(undefined, [])", "d.applySyncPromise(undefined, [])"):
        assert thrown(b, op) == not_fn, op
    assert thrown(b, "d.getSync('a')") == [
        "TypeError", "TypeError", "not supported by this Reference", True]
    # Values with no JavaScript form: a TypeError on copy.
    b.global_.set_sync("o", ivm.Reference(object()))
    assert b.eval_sync("o.typeof") == "object"
    err = thrown(b, "o.copySync()")
    assert err is not None and err[0] == "TypeError"
    assert err[2].startswith("an object of type builtins.object cannot be copied")
    # A class is callable: typeof "function".
    b.global_.set_sync("cls", ivm.Reference(dict))
    assert b.eval_sync("cls.typeof") == "function"
    assert b.eval_sync("JSON.stringify(cls.applySync(undefined, [[['k', 1]]]))") == '{"k":1}'


def test_host_reference_python_exceptions_become_js_errors(b_context: ivm.Context) -> None:
    b = b_context

    def boom(x: Any) -> None:
        raise ValueError(f"boom {x}")

    def type_error() -> None:
        raise TypeError("tt")

    def key_error() -> None:
        raise KeyError("k")

    b.global_.set_sync("boom", ivm.Reference(boom))
    b.global_.set_sync("terr", ivm.Reference(type_error))
    b.global_.set_sync("kerr", ivm.Reference(key_error))
    assert thrown(b, "boom.applySync(undefined, [3])") == ["Error", "ValueError", "boom 3", True]
    assert thrown(b, "terr.applySync()") == ["TypeError", "TypeError", "tt", True]
    assert thrown(b, "kerr.applySync()") == ["Error", "KeyError", "'k'", True]
    assert rejected(b, "boom.apply(undefined, [4])") == ["Error", "ValueError", "boom 4", True]
    # Caught in JavaScript, the isolate goes on.
    assert b.eval_sync(
        "(() => { let n = 0; for (let i = 0; i < 20; i++) {"
        " try { boom.applySync(undefined, [i]) } catch (e) { n++ } } return n })()"
    ) == 20
    # No Python internals cross.
    stack = b.eval_sync("(() => { try { boom.applySync(undefined, [1]) }"
                        " catch (e) { return String(e.stack) } })()")
    assert "Traceback" not in stack and ".py" not in stack


def test_host_reference_error_stack_is_the_javascript_stack(b_context: ivm.Context) -> None:
    """Documented for exceptions raised by a Reference to a Python function: the Error's
    stack is the JavaScript stack (as for a Callback)."""
    b = b_context

    def boom() -> None:
        raise ValueError("v")

    b.global_.set_sync("boom", ivm.Reference(boom))
    b.global_.set_sync("cb", ivm.Callback(boom))
    callback_stack = b.eval_sync("(() => { try { cb() } catch (e) { return e.stack } })()")
    assert callback_stack.startswith("ValueError: v\n    at ")
    stack = b.eval_sync("(() => { try { boom.applySync() } catch (e) { return e.stack } })()")
    assert stack.startswith("ValueError: v\n    at "), stack


def test_host_reference_uncaught_exception_is_reraised(b_context: ivm.Context) -> None:
    """Documented: an exception of a Reference to a Python function that ends the host's
    call uncaught re-raises the original exception, the JSError as its __cause__ (as a
    Callback's does)."""
    b = b_context
    original = KeyError("orig")

    def boom() -> None:
        raise original

    b.global_.set_sync("cb", ivm.Callback(boom))
    with pytest.raises(KeyError) as cb_info:
        b.eval_sync("cb()")
    assert cb_info.value is original
    b.global_.set_sync("boom", ivm.Reference(boom))
    with pytest.raises(KeyError) as promise_info:
        b.eval_sync("boom.apply(undefined, [])", promise=True)
    assert promise_info.value is original
    with pytest.raises(KeyError) as info:
        b.eval_sync("boom.applySync(undefined, [])")
    assert info.value is original
    assert isinstance(info.value.__cause__, ivm.JSError)


def test_host_reference_arguments_must_be_an_array(b_context: ivm.Context) -> None:
    """Documented for every Reference object: `arguments` must be an Array or undefined.
    A host Reference silently calls the function with no arguments instead."""
    b = b_context
    calls: list[tuple[Any, ...]] = []
    b.global_.set_sync("rec", ivm.Reference(lambda *a: calls.append(a)))
    assert b.eval_sync("rec.applySync(undefined)") is None
    assert calls == [()]
    assert thrown(b, "rec.applySync(undefined, 5)") == [
        "TypeError", "TypeError", "arguments must be an array", True]
    assert thrown(b, "rec.applySync(undefined, {length: 1, 0: 'x'})") == [
        "TypeError", "TypeError", "arguments must be an array", True]
    assert calls == [()]


def test_host_reference_coroutine_from_apply_sync(b_context: ivm.Context) -> None:
    async def co() -> int:
        return 1

    b_context.global_.set_sync("co", ivm.Reference(co))
    err = thrown(b_context, "co.applySync(undefined, [])")
    assert err is not None and err[0] == "TypeError" and "awaitable" in err[2]


def test_host_reference_release_and_passing(pair: Pair) -> None:
    b = pair.b
    calls: list[Any] = []
    def note(x: Any) -> Any:
        calls.append(x)
        return x

    host = ivm.Reference(note)
    b.global_.set_sync("h", host)
    host.release()
    with pytest.raises(ivm.DisposedError):
        b.global_.set_sync("h2", host)
    # What the isolate holds keeps working.
    assert b.eval_sync("h.applySync(undefined, [1])") == 1
    # It passes between isolates as a host Reference.
    b.eval_sync("ga.setSync('hh', h)")
    assert pair.a.eval_sync("[hh.typeof, hh.applySync(undefined, [2])]", copy=True) == [
        "function", 2]
    assert b.eval_sync("h.release(); 0") == 0
    assert thrown(b, "h.applySync(undefined, [3])") == [
        "Error", "Error", "Reference has been released", True]
    assert calls == [1, 2]
    # Python side.
    assert host.deref() is not None and host.typeof == "function"


@pytest.mark.anyio
async def test_host_reference_async_function_apply_sync_promise(
    b_context: ivm.Context, anyio_backend: str
) -> None:
    b = b_context
    loop_thread = threading.get_ident()
    on_loop: list[bool] = []

    async def fetch(x: int) -> dict[str, int]:
        on_loop.append(threading.get_ident() == loop_thread)
        await anyio.sleep(0.001)
        return {"v": x * 2}

    async def fail(x: str) -> None:
        await anyio.sleep(0)
        raise KeyError(x)

    b.global_.set_sync("fetch", ivm.Reference(fetch))
    b.global_.set_sync("fail", ivm.Reference(fail))
    with anyio.fail_after(SANITY):
        assert await b.eval("JSON.stringify(fetch.applySyncPromise(undefined, [21]))") == (
            '{"v":42}')
        assert await b.eval(
            "(() => { let s = 0; for (let i = 0; i < 10; i++)"
            " s += fetch.applySyncPromise(undefined, [i]).v; return s })()"
        ) == 2 * sum(range(10))
        assert await b.eval(
            "(() => { try { fail.applySyncPromise(undefined, ['k']) } catch (e) {"
            " return [e.constructor.name, e.name, e.message] } })()",
            copy=True,
        ) == ["Error", "KeyError", "'k'"]
        # apply: a promise settled from the loop.
        assert await b.eval("fetch.apply(undefined, [5]).then(r => r.v)", promise=True) == 10
        assert await b.eval(
            "fail.apply(undefined, ['z']).then(() => null, e => e.name + ':' + e.message)",
            promise=True,
        ) == "KeyError:'z'"
        # applyIgnored: runs later on the loop.
        n = len(on_loop)
        assert await b.eval("fetch.applyIgnored(undefined, [1])") is ivm.undefined
        while len(on_loop) == n:
            await anyio.sleep(0.005)
        # On the loop's own thread (a *_sync call from the loop) it is refused.
        err = thrown(b, "fetch.applySyncPromise(undefined, [1])")
        assert err is not None and err[:2] == ["Error", "RuntimeError"]
        assert "would block the event loop" in err[2]
    assert on_loop and all(on_loop)


@pytest.mark.anyio
async def test_host_reference_apply_sync_promise_of_a_plain_function(
    b_context: ivm.Context, anyio_backend: str
) -> None:
    b_context.global_.set_sync("inc", ivm.Reference(lambda x: x + 1))
    with anyio.fail_after(SANITY):
        assert await b_context.eval("inc.applySyncPromise(undefined, [1])") == 2
        # applySync of a plain function runs on the pool thread that runs the isolate.
        assert await b_context.eval("inc.applySync(undefined, [2])") == 3


@pytest.mark.anyio
async def test_host_reference_made_outside_the_loop(b_context: ivm.Context) -> None:
    """Made outside any loop: apply runs the function at once (and may not return a
    coroutine); applySyncPromise runs a coroutine function under asyncio.run."""
    results: list[Any] = []

    def made_outside() -> tuple[ivm.Reference, ivm.Reference]:
        async def co(x: int) -> int:
            return x * 3

        def plain(x: int) -> int:
            results.append(x)
            return x

        return ivm.Reference(plain), ivm.Reference(co)

    plain, co = await anyio.to_thread.run_sync(made_outside)
    b_context.global_.set_sync("plain", plain)
    b_context.global_.set_sync("co", co)
    with anyio.fail_after(SANITY):
        assert await b_context.eval("plain.apply(undefined, [4])", promise=True) == 4
        assert await b_context.eval("co.applySyncPromise(undefined, [5])") == 15
    assert results == [4]


# --- leaks -----------------------------------------------------------------------------------


def test_reference_objects_do_not_leak(no_leaks: None) -> None:
    p = Pair()
    try:
        p.b.global_.set_sync("h", ivm.Reference(lambda x: x))
        p.b.global_.set_sync("ec", ivm.ExternalCopy([1, 2]))
        p.b.eval_sync(
            "for (let i = 0; i < 200; i++) {"
            " const r = oa.getSync('nested', {reference: true}); r.getSync('y');"
            " oa.getSync('list', {externalCopy: true}).copy(); fa.derefInto();"
            " h.applySync(undefined, [i]); ec.copy(); r.release() }"
        )
        p.b.eval_sync("fa.apply(undefined, [1])", promise=True)
        back = p.b.eval_sync("[fa, oa]", copy=True)
        assert [r.typeof for r in back] == ["function", "object"]
        del back
    finally:
        p.close()


def test_a_reference_into_its_own_isolate_does_not_keep_the_isolate_alive(
    quiet_live_objects: Callable[[], int], settle: Callable[..., int]
) -> None:
    """A Reference object inside the isolate it refers to holds no strong reference to that
    isolate: dropping every host handle frees the isolate (no cycle through its own heap)."""

    def make_and_drop() -> None:
        iso = ivm.Isolate(memory_limit=32)
        ctx = iso.create_context_sync()
        ref = ctx.eval_sync("({a: 1})", reference=True)
        ctx.global_.set_sync("selfref", ref)
        assert ctx.eval_sync("selfref.getSync('a') + selfref.deref().a") == 2
        copied = ctx.eval_sync("({r: selfref})", copy=True)
        assert copied["r"].get_sync("a") == 1

    make_and_drop()
    base = quiet_live_objects()
    for _ in range(10):
        make_and_drop()
    assert settle(base) <= base


def test_delete_ignored_deletes_later() -> None:
    a = ivm.Isolate(memory_limit=32)
    b = ivm.Isolate(memory_limit=32)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        cb.global_.set_sync("oa", ca.eval_sync("globalThis.obj = {x: 1, y: 2}", reference=True))
        assert cb.eval_sync("oa.deleteIgnored('x')") is ivm.undefined
        # The job runs on the pool: a synchronous call into A waits for it (FIFO per isolate).
        for _ in range(200):
            if ca.eval_sync("'x' in obj") is False:
                break
            import time
            time.sleep(0.01)
        assert ca.eval_sync("Object.keys(obj).join()") == "y"
    finally:
        a.dispose()
        b.dispose()
