"""The values of calls through Reference objects between two inline isolates (libivm/wrapper.cc
``Args``, ``PrimitiveFromHost``; libivm/reference.cc ``RunRefOp``): arguments and keys of every
kind, few and many (a synchronous call keeps a few primitives and its argument list in place,
and a call of more arguments spills over), primitive results (delivered without a host value:
small integers, -0, heap numbers, booleans, null, undefined), and a Reference object released
by the isolate it lives in while its own call runs."""

from __future__ import annotations

import gc
import json
from typing import Any, Iterator

import pytest

import ivm

#: What A's ``describe`` reports of each value it receives.
DESCRIBE = (
    "globalThis.describe = (...xs) => JSON.stringify(xs.map((x) =>"
    " typeof x === 'object' && x !== null ? ['object', JSON.stringify(x)]"
    " : [typeof x, Object.is(x, -0) ? '-0' : String(x)]));"
    "globalThis.id = (x) => x;"
    "globalThis.store = {};"
    "0"
)

#: Arguments of every transferable primitive kind, in JavaScript, with what A receives.
PRIMITIVES = [
    ("1", ["number", "1"]),
    ("-0", ["number", "-0"]),
    ("1.5", ["number", "1.5"]),
    ("2 ** 31", ["number", "2147483648"]),
    ("NaN", ["number", "NaN"]),
    ("-Infinity", ["number", "-Infinity"]),
    ("true", ["boolean", "true"]),
    ("false", ["boolean", "false"]),
    ("null", ["object", "null"]),
    ("undefined", ["undefined", "undefined"]),
    ("''", ["string", ""]),
    ("'short'", ["string", "short"]),
    ("'a string longer than any inline buffer of a std::string'",
     ["string", "a string longer than any inline buffer of a std::string"]),
    ("'\\u00e9\\ud83d\\ude00'", ["string", "\u00e9\U0001F600"]),
    ("10n", ["bigint", "10"]),
    ("-(2n ** 70n)", ["bigint", str(-(2**70))]),
]


class Pair:
    def __init__(self) -> None:
        self.iso_a = ivm.Isolate(memory_limit=64)
        self.iso_b = ivm.Isolate(memory_limit=64)
        self.a = self.iso_a.create_context_sync()
        self.b = self.iso_b.create_context_sync()
        self.a.eval_sync(DESCRIBE)
        for name in ("describe", "id", "store"):
            self.b.global_.set_sync(name, self.a.global_.get_sync(name, reference=True))

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


def described(pair: Pair, call: str, **options: Any) -> Any:
    return json.loads(pair.b.eval_sync(call, **options))


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 8, 9, 17])
def test_apply_sync_arguments_few_and_many(pair: Pair, count: int) -> None:
    # Every kind, in turn: the first ones in place, the rest allocated once the call's
    # room is taken, and the list of more than a few arguments spilled over.
    picked = [PRIMITIVES[i % len(PRIMITIVES)] for i in range(count)]
    js = ", ".join(src for src, _ in picked)
    assert described(pair, f"describe.applySync(undefined, [{js}])") == [w for _, w in picked]
    assert described(pair, f"describe.applySyncPromise(undefined, [{js}])") == [
        w for _, w in picked]
    # Queued: the same values reach A after the call that queued them has returned.
    assert json.loads(pair.b.eval_sync(f"describe.apply(undefined, [{js}])", promise=True)) == [
        w for _, w in picked]


def test_apply_sync_arguments_mixed_with_objects(pair: Pair) -> None:
    # Objects (copies, Reference objects) between primitives, past the in-place room.
    b = pair.b
    got = described(
        pair,
        "describe.applySync(undefined, [1, {k: 'v'}, 'two', [3], store, true, null, {n: 4},"
        " 5n, 'six', undefined, 7.5], {arguments: {copy: true}})",
    )
    assert got == [
        ["number", "1"], ["object", '{"k":"v"}'], ["string", "two"], ["object", "[3]"],
        ["object", "{}"], ["boolean", "true"], ["object", "null"], ["object", '{"n":4}'],
        ["bigint", "5"], ["string", "six"], ["undefined", "undefined"], ["number", "7.5"],
    ]
    # A derefInto() marker arrives as A's own object, in any position.
    pair.a.eval_sync("globalThis.same = (...xs) => xs.map((o) => o === store); 0")
    b.global_.set_sync("same", pair.a.global_.get_sync("same", reference=True))
    assert b.eval_sync(
        "same.applySync(undefined, [store.derefInto(), 1, 2, 3, 4, 5, store.derefInto(), store],"
        " {result: {copy: true}})",
        copy=True) == [True, False, False, False, False, False, True, False]
    # The receiver takes a place too.
    pair.a.eval_sync("globalThis.recv = function () { 'use strict';"
                     " return describe(this, ...arguments) }; 0")
    b.global_.set_sync("recv", pair.a.global_.get_sync("recv", reference=True))
    assert described(pair, "recv.applySync('this', [1, 'a', 2, 'b', 3])") == [
        ["string", "this"], ["number", "1"], ["string", "a"], ["number", "2"], ["string", "b"],
        ["number", "3"]]


@pytest.mark.parametrize("position", [0, 3, 4, 6])
def test_symbol_argument_is_refused_in_any_position(pair: Pair, position: int) -> None:
    args = ["1", "'s'", "true", "null", "2", "3", "4"]
    args[position] = "Symbol('k')"
    err = pair.b.eval_sync(
        f"(() => {{ try {{ describe.applySync(undefined, [{', '.join(args)}]) }}"
        " catch (e) { return [e.constructor.name, e.message] } })()",
        copy=True,
    )
    assert err[0] == "TypeError"
    assert err[1].startswith("A value of type Symbol cannot leave the isolate")
    # Nothing reached A, and the next call works.
    assert described(pair, "describe.applySync(undefined, [1])") == [["number", "1"]]


RESULTS = [
    "0", "-0", "1", "-1", "2 ** 30 - 1", "2 ** 30", "-(2 ** 30)", "-(2 ** 30) - 1", "2 ** 31 - 1",
    "-(2 ** 31)", "2 ** 31", "2 ** 53", "1.5", "-1e-300", "1e300", "NaN", "Infinity",
    "-Infinity", "true", "false", "null", "undefined", "''", "'str'", "10n",
]


@pytest.mark.parametrize("method", ["applySync", "applySyncPromise"])
def test_primitive_results_keep_their_value(pair: Pair, method: str) -> None:
    # Each result is the same value (Object.is: -0 stays -0, NaN is NaN) and type in B.
    checks = ", ".join(
        f"[{src!r}, Object.is(id.{method}(undefined, [{src}]), {src}),"
        f" typeof id.{method}(undefined, [{src}]) === typeof ({src})]"
        for src in RESULTS
    )
    got = pair.b.eval_sync(f"[{checks}]", copy=True)
    assert [g for g in got if not (g[1] and g[2])] == []
    # Also in a loop that the optimizing compiler gets to see.
    assert pair.b.eval_sync(
        f"let s = 0; for (let i = 0; i < 3000; i++) s += id.{method}(undefined, [i % 7 - 3]);"
        " s") == sum(i % 7 - 3 for i in range(3000))
    # Results with options still take the general path.
    assert pair.b.eval_sync(f"id.{method}(undefined, [-0], {{result: {{copy: true}}}})") == 0
    assert pair.b.eval_sync(
        f"Object.is(id.{method}(undefined, [-0], {{result: {{copy: true}}}}), -0)") is True


def test_keys_of_get_set_delete(pair: Pair) -> None:
    b = pair.b
    assert b.eval_sync("store.setSync('k', 1)") is True
    assert b.eval_sync("store.setSync(2, 'two')") is True
    assert b.eval_sync("store.setSync('a key longer than any inline std::string buffer', -0)"
                       ) is True
    assert b.eval_sync("store.getSync('k')") == 1
    assert b.eval_sync("store.getSync('2')") == "two"
    assert b.eval_sync("Object.is(store.getSync("
                       "'a key longer than any inline std::string buffer'), -0)") is True
    assert b.eval_sync("store.deleteSync(2)") is True
    assert b.eval_sync("store.getSync(2) === undefined") is True
    assert pair.b.eval_sync("store.set('q', 5n).then(() => store.getSync('q'))", promise=True
                            ) == 5


def test_reference_released_during_its_own_call(pair: Pair) -> None:
    # A calls back into B, which releases the very Reference object that is calling A: the
    # running call completes with its result; the object is released afterwards.
    a, b = pair.a, pair.b
    b.eval_sync("globalThis.drop = () => { call.release(); return 1 }; 0")
    a.global_.set_sync("dropB", b.global_.get_sync("drop", reference=True))
    a.eval_sync("globalThis.reenter = (x) => dropB.applySync(undefined, []) + x; 0")
    b.global_.set_sync("call", a.global_.get_sync("reenter", reference=True))
    assert b.eval_sync("call.applySync(undefined, [41])") == 42
    err = b.eval_sync(
        "(() => { try { call.applySync(undefined, [1]) } catch (e) { return e.message } })()")
    assert err == "Reference has been released"
    # Again with more arguments than fit in place, and a string result.
    b.eval_sync("globalThis.call2 = null; globalThis.drop2 = () => { call2.release(); return 's' };"
                " 0")
    a.global_.set_sync("drop2B", b.global_.get_sync("drop2", reference=True))
    a.eval_sync("globalThis.reenter2 = (...xs) => drop2B.applySync(undefined, []) + xs.join(); 0")
    b.global_.set_sync("call2", a.global_.get_sync("reenter2", reference=True))
    assert b.eval_sync("call2.applySync(undefined, [1, 'a', 2, 'b', 3, 'c', 4, 'd', 5])"
                       ) == "s1,a,2,b,3,c,4,d,5"


def test_release_during_its_own_call_of_the_last_share_of_an_isolate() -> None:
    # The Reference object is all that keeps isolate A alive (Python's handles are gone):
    # releasing it from B while its call runs in A must not end A under that call.
    iso_b = ivm.Isolate(memory_limit=64)
    try:
        b = iso_b.create_context_sync()

        def make_a() -> None:
            iso_a = ivm.Isolate(memory_limit=64)
            a = iso_a.create_context_sync()
            b.eval_sync("globalThis.drop = (n) => { call.release(); return n }; 0")
            a.global_.set_sync("dropB", b.global_.get_sync("drop", reference=True))
            a.eval_sync("globalThis.reenter = (...xs) => {"
                        " const r = dropB.applySync(undefined, [xs.length]);"
                        " return r + xs.length }; 0")
            b.global_.set_sync("call", a.global_.get_sync("reenter", reference=True))

        make_a()
        gc.collect()
        assert b.eval_sync("call.applySync(undefined, [1, 2, 3, 'four', 5, 6])") == 12
        assert b.eval_sync(
            "(() => { try { call.applySync(undefined, []) } catch (e) { return e.message } })()"
        ) == "Reference has been released"
        # The same through getSync.
        make_a()
        gc.collect()
        b.eval_sync("globalThis.drop = () => { call.release(); return 1 }; 0")
        assert b.eval_sync("call.getSync('length')") == 0
    finally:
        iso_b.dispose()


#: JavaScript of B that releases `call` (a Reference object into A) from a getter that the
#: method itself runs after its entry check: of its options, of an argument copied with
#: `copy: true`, of the arguments list. The call must refuse ("Reference has been released"),
#: as it does for a Reference released before, not use the released reference.
RELEASED_BY_A_GETTER = [
    "call.applySync(undefined, [], {get result() { call.release(); return undefined }})",
    "call.applySync(undefined, [{get x() { call.release(); return 1 }}],"
    " {arguments: {copy: true}})",
    "call.apply(undefined, [], {get result() { call.release(); return undefined }})",
    "call.applyIgnored(undefined, [], {get timeout() { call.release(); return undefined }})",
    "call.getSync('length', {get copy() { call.release(); return false }})",
    "call.get('length', {get copy() { call.release(); return false }})",
    "call.setSync('k', 1, {get copy() { call.release(); return false }})",
]


@pytest.mark.parametrize("code", RELEASED_BY_A_GETTER)
def test_a_reference_released_by_a_getter_of_its_own_call_refuses_the_call(
    pair: Pair, code: str
) -> None:
    pair.b.global_.set_sync("call", pair.a.global_.get_sync("id", reference=True))
    outcome = pair.b.eval_sync(
        f"(() => {{ try {{ const r = {code}; return typeof r }}"
        " catch (e) { return e.message } })()")
    # (A getter the method does not run leaves the call as it was: a result's type.)
    assert outcome in ("Reference has been released", "undefined", "object", "number")
    assert pair.b.eval_sync("(() => { try { call.applySync(undefined, [1]); return 'ran' }"
                            " catch (e) { return e.message } })()") == "Reference has been released"
    # Both isolates are still usable.
    assert pair.b.eval_sync("1 + 1") == 2 and pair.a.eval_sync("id(3)") == 3


#: Numbers as arguments: a synchronous or queued call through a Reference object passes an
#: undefined, null, boolean or number argument among its first few without a host value
#: (wrapper.cc ``Args::PushPrimitive``, RefOp::inline_args), and A makes an integer that fits
#: 32 bits through v8::Integer::New (``NumberToV8``): each must arrive as the same value.
ARG_NUMBERS = [
    "0", "-0", "1", "-1", "2 ** 30", "2 ** 31 - 1", "-(2 ** 31)", "2 ** 31", "-(2 ** 31) - 1",
    "2 ** 32", "2 ** 53", "-(2 ** 53)", "0.5", "-0.5", "2147483647.5", "-2147483648.5",
    "-1e-300", "1e300", "5e-324", "NaN", "Infinity", "-Infinity",
]


@pytest.mark.parametrize("method", ["applySync", "applySyncPromise", "apply"])
def test_number_arguments_keep_their_value(pair: Pair, method: str) -> None:
    pair.a.eval_sync(f"globalThis.EXPECT = [{', '.join(ARG_NUMBERS)}];"
                     " globalThis.same = (at, ...xs) => xs.map((x, i) => Object.is(x, EXPECT[at + i])"
                     " ? 1 : 0).join(''); 0")
    pair.b.global_.set_sync("same", pair.a.global_.get_sync("same", reference=True))
    # In groups of three after the offset: each in every one of the first few places.
    for at in range(len(ARG_NUMBERS) - 2):
        js = ", ".join(ARG_NUMBERS[at:at + 3])
        got = pair.b.eval_sync(f"same.{method}(undefined, [{at}, {js}])", promise=method == "apply")
        assert got == "111", (method, ARG_NUMBERS[at:at + 3], got)
    # All of them in one call: past the first few, the general path.
    got = pair.b.eval_sync(f"same.{method}(undefined, [0, {', '.join(ARG_NUMBERS)}])",
                           promise=method == "apply")
    assert got == "1" * len(ARG_NUMBERS)


def test_number_arguments_from_python_keep_their_value() -> None:
    # The host's numbers (ValueToV8's NumberToV8): ints and floats, the 32-bit edges, -0.0.
    iso = ivm.Isolate()
    try:
        ctx = iso.create_context_sync()
        fn = ctx.eval_sync("(...xs) => JSON.stringify(xs.map((x) =>"
                           " [typeof x, Object.is(x, -0) ? '-0' : String(x)]))", reference=True)
        values = [0, -0.0, 0.0, 1, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**53 - 1,
                  1.0, 2147483647.0, -2147483648.0, 2147483648.0, 0.5, 1e300, float("nan"),
                  float("inf"), float("-inf"), True, None]
        got = json.loads(fn.apply_sync(None, values))
        want = [["number", "0"], ["number", "-0"], ["number", "0"], ["number", "1"],
                ["number", "-1"], ["number", "2147483647"], ["number", "-2147483648"],
                ["number", "2147483648"], ["number", "-2147483649"],
                ["number", "9007199254740991"], ["number", "1"], ["number", "2147483647"],
                ["number", "-2147483648"], ["number", "2147483648"], ["number", "0.5"],
                ["number", "1e+300"], ["number", "NaN"], ["number", "Infinity"],
                ["number", "-Infinity"], ["boolean", "true"], ["object", "null"]]
        assert got == want
    finally:
        iso.dispose()


def test_arguments_read_as_before_holes_getters_and_lone_surrogates(pair: Pair) -> None:
    b = pair.b
    # A hole reads through the prototype chain, as Get does; a getter's primitive is passed.
    assert described(pair, "describe.applySync(undefined, [1, , 3])") == [
        ["number", "1"], ["undefined", "undefined"], ["number", "3"]]
    assert described(
        pair,
        "(() => { Array.prototype[1] = -0; try { return describe.applySync(undefined, [1, , 3]) }"
        " finally { delete Array.prototype[1] } })()") == [
        ["number", "1"], ["number", "-0"], ["number", "3"]]
    assert described(
        pair,
        "(() => { const xs = [0, 0]; Object.defineProperty(xs, 0, {get() { return -0 }});"
        " Object.defineProperty(xs, 1, {get() { return null }});"
        " return describe.applySync(undefined, xs) })()") == [["number", "-0"], ["object", "null"]]
    # Strings with lone surrogates cross both ways unchanged.
    pair.a.eval_sync("globalThis.codes = (...xs) => xs.map((s) => Array.from({length: s.length},"
                     " (_, i) => s.charCodeAt(i)).join(' ')).join('|'); 0")
    b.global_.set_sync("codes", pair.a.global_.get_sync("codes", reference=True))
    assert b.eval_sync("codes.applySync(undefined, ['\\ud800', 'a\\udfffb', 1, '\\udc00\\ud800'])"
                       ) == "55296|97 57343 98||56320 55296"
    assert b.eval_sync("(() => { const s = id.applySync(undefined, ['x\\ud83dy']);"
                       " return [s.length, s.charCodeAt(1)].join() })()") == "3,55357"


@pytest.mark.parametrize("disposer", ["worker", "other"])
def test_calls_from_threads_in_turn_nested_first_then_disposal(disposer: str) -> None:
    # A thread's parked lock keeps a handle scope open under its calls (thread_lock.cc
    # KeepHandleBlock). Threads call A in turn, some first from inside B's call (A's scope
    # then opens inside B's), with enough garbage for collections between calls; then A and
    # B are disposed, by one of the calling threads (its own parked locks given back first)
    # or by a thread that never called them, while the calling threads still keep parked
    # locks; the threads end after that (their locks then refer to disposed isolates).
    import threading

    iso_a, iso_b = ivm.Isolate(memory_limit=64), ivm.Isolate(memory_limit=64)
    a, b = iso_a.create_context_sync(), iso_b.create_context_sync()
    a.eval_sync("globalThis.mk = (n) => Array.from({length: n}, (_, i) => ({i, s: 'x' + i}));"
                " globalThis.total = (n) => mk(n).reduce((s, o) => s + o.i + o.s.length, 0); 0")
    b.global_.set_sync("totalA", a.global_.get_sync("total", reference=True))
    direct = a.global_.get_sync("total", reference=True)
    nested = b.eval_sync("(n) => totalA.applySync(undefined, [n]) + 1", reference=True)

    def want(n: int) -> int:
        return sum(i + len("x" + str(i)) for i in range(n))

    turn = threading.Lock()
    done = [threading.Event() for _ in range(3)]
    release = threading.Event()
    errors: list[BaseException] = []

    def dispose() -> None:
        iso_b.dispose()
        iso_a.dispose()

    def work(k: int) -> None:
        try:
            for i in range(40):
                with turn:   # one thread at a time: each call parks, the next one restores
                    n = 500 + 37 * k + i
                    if (i + k) % 2 == 0:
                        assert nested.apply_sync(None, [n]) == want(n) + 1
                    else:
                        assert direct.apply_sync(None, [n]) == want(n)
            done[k].set()
            if disposer == "worker" and k == 0:
                for d in done:
                    assert d.wait(60)
                dispose()
                release.set()
            assert release.wait(60)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)
            done[k].set()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    if disposer == "other":
        for d in done:
            assert d.wait(60)
        other = threading.Thread(target=dispose)
        other.start()
        other.join(60)
        release.set()
    for t in threads:
        t.join(60)
    assert errors == []
    assert iso_a.is_disposed and iso_b.is_disposed
    # Both still refuse calls cleanly.
    with pytest.raises(ivm.IvmError):
        direct.apply_sync(None, [1])
