"""Structured copies between Python and JavaScript: the values table in both
directions, identity and cycles, large values, errors with their paths, limits,
and the copy options of the async calls."""

from __future__ import annotations

import array
import datetime
import math
from typing import Any

import pytest

import ivm

UTC = datetime.timezone.utc
MAX_SAFE = 2**53 - 1
COPY = {"copy": True}


# --- helpers


def same(actual: object, expected: object) -> bool:
    """Deep equality that also requires the same types everywhere (floats keep their
    sign and NaN-ness; memoryviews compare format and items)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, float):
        assert isinstance(actual, float)
        if math.isnan(expected):
            return math.isnan(actual)
        return actual == expected and math.copysign(1, actual) == math.copysign(1, expected)
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple))
        return len(actual) == len(expected) and all(
            same(a, e) for a, e in zip(actual, expected)
        )
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        if list(map(type, actual)) != list(map(type, expected)) or list(actual) != list(expected):
            return False
        return all(same(actual[k], expected[k]) for k in expected)
    if isinstance(expected, (set, frozenset)):
        assert isinstance(actual, (set, frozenset))
        return sorted(map(repr, actual)) == sorted(map(repr, expected))
    if isinstance(expected, memoryview):
        assert isinstance(actual, memoryview)
        return actual.format == expected.format and actual.tolist() == expected.tolist()
    if isinstance(expected, ivm.JSError):
        assert isinstance(actual, ivm.JSError)
        return (actual.name, actual.message, actual.stack) == (
            expected.name,
            expected.message,
            expected.stack,
        )
    return bool(actual == expected)


def py_js_py(ctx: ivm.Context, value: object) -> Any:
    """`value` copied into JavaScript and copied back out."""
    return ctx.eval_closure_sync(
        "return $0", [value], arguments_options=COPY, result_options=COPY
    )


def js_check(ctx: ivm.Context, value: object, expr: str) -> Any:
    """Copies `value` into JavaScript as `$0` and returns `expr` (a primitive)."""
    return ctx.eval_closure_sync(f"return ({expr})", [value], arguments_options=COPY)


def assert_js_roundtrip(ctx: ivm.Context, js: str, expected: object, check: str) -> None:
    """JS → Python gives `expected`; that value copied back into JavaScript is
    equivalent to the original: `check` (with `$0` the copied-back value and `orig`
    the result of evaluating `js` again) must be true."""
    value = ctx.eval_sync(js, copy=True)
    assert same(value, expected), f"{js} gave {value!r}"
    ok = ctx.eval_closure_sync(
        f"const orig = ({js}); return ({check});", [value], arguments_options=COPY
    )
    assert ok is True, f"{js}: {check} was {ok!r} for {value!r}"


# --- the values table, one test per row


def test_undefined(context: ivm.Context) -> None:
    assert context.eval_sync("undefined", copy=True) is ivm.undefined
    assert context.eval_sync("[undefined]", copy=True)[0] is ivm.undefined
    value = context.eval_sync("({a: undefined})", copy=True)
    assert value == {"a": ivm.undefined} and value["a"] is ivm.undefined
    assert js_check(context, value, "'a' in $0 && $0.a === undefined") is True
    assert js_check(context, [ivm.undefined], "$0.length === 1 && $0[0] === undefined && 0 in $0") is True
    assert py_js_py(context, [ivm.undefined])[0] is ivm.undefined


def test_null(context: ivm.Context) -> None:
    assert context.eval_sync("[null]", copy=True) == [None]
    assert js_check(context, [None], "$0[0] === null") is True
    assert py_js_py(context, {"n": None}) == {"n": None}
    assert_js_roundtrip(context, "({n: null})", {"n": None}, "$0.n === null")


def test_boolean(context: ivm.Context) -> None:
    value = context.eval_sync("[true, false]", copy=True)
    assert same(value, [True, False])
    assert js_check(context, [True, False], "$0[0] === true && $0[1] === false") is True
    assert same(py_js_py(context, [True, False]), [True, False])
    assert_js_roundtrip(context, "[true, false]", [True, False], "$0[0] === true && $0[1] === false")


JS_NUMBERS: list[tuple[str, object]] = [
    ("0", 0),
    ("42", 42),
    ("-7", -7),
    ("2**53 - 1", MAX_SAFE),
    ("-(2**53 - 1)", -MAX_SAFE),
    ("2**53", float(2**53)),
    ("-(2**53)", -float(2**53)),
    ("1e300", 1e300),
    ("1.5", 1.5),
    ("0.1 + 0.2", 0.1 + 0.2),
    ("-0", -0.0),
    ("NaN", math.nan),
    ("Infinity", math.inf),
    ("-Infinity", -math.inf),
    ("Number.MIN_VALUE", 5e-324),
]


@pytest.mark.parametrize(("js", "expected"), JS_NUMBERS, ids=[j for j, _ in JS_NUMBERS])
def test_number(context: ivm.Context, js: str, expected: object) -> None:
    # JS → Python (nested, so the structured copy writes it) → JS
    value = context.eval_sync(f"[{js}]", copy=True)
    assert same(value, [expected]), f"{js} gave {value!r}"
    assert js_check(context, value, f"typeof $0[0] === 'number' && Object.is($0[0], {js})") is True
    # Python → JS → Python
    assert js_check(context, [expected], f"typeof $0[0] === 'number' && Object.is($0[0], {js})") is True
    assert same(py_js_py(context, [expected]), [expected])


def test_integral_python_float_comes_back_as_int(context: ivm.Context) -> None:
    assert same(py_js_py(context, [2.0, -3.0, 1e15]), [2, -3, 10**15])
    assert js_check(context, [2.0], "$0[0] === 2 && typeof $0[0] === 'number'") is True


def _bigint_literal(n: int) -> str:
    return f"{'-' if n < 0 else ''}0x{abs(n):x}n"


@pytest.mark.parametrize(
    "n",
    [2**53, -(2**53), 2**64, -(2**64) - 1, 10**40, -(2**200), 2**70000],
    ids=["2**53", "-2**53", "2**64", "-2**64-1", "10**40", "-2**200", "2**70000"],
)
def test_python_int_outside_safe_range_is_bigint(context: ivm.Context, n: int) -> None:
    lit = _bigint_literal(n)
    assert js_check(context, [n], f"typeof $0[0] === 'bigint' && $0[0] === {lit}") is True
    back = py_js_py(context, [n])
    assert same(back, [ivm.JSBigInt(n)])
    # a top-level argument too
    assert js_check(context, n, f"typeof $0 === 'bigint' && $0 === {lit}") is True


@pytest.mark.parametrize("n", [0, 1, -1, MAX_SAFE, -MAX_SAFE])
def test_python_int_within_safe_range_is_number(context: ivm.Context, n: int) -> None:
    assert js_check(context, [n], f"typeof $0[0] === 'number' && $0[0] === {n}") is True
    assert same(py_js_py(context, [n]), [n])


JS_BIGINTS: list[tuple[str, int]] = [
    ("0n", 0),
    ("5n", 5),
    ("-1n", -1),
    ("2n**53n", 2**53),
    ("2n**64n - 1n", 2**64 - 1),
    ("-(2n**200n)", -(2**200)),
]


@pytest.mark.parametrize(("js", "expected"), JS_BIGINTS, ids=[j for j, _ in JS_BIGINTS])
def test_bigint(context: ivm.Context, js: str, expected: int) -> None:
    value = context.eval_sync(f"[{js}]", copy=True)
    assert same(value, [ivm.JSBigInt(expected)])
    # a JSBigInt goes back in as a BigInt, even a small one
    assert js_check(context, value, f"typeof $0[0] === 'bigint' && $0[0] === {js}") is True
    assert js_check(context, [ivm.JSBigInt(expected)], f"typeof $0[0] === 'bigint' && $0[0] === {js}") is True
    assert same(py_js_py(context, [ivm.JSBigInt(expected)]), [ivm.JSBigInt(expected)])


def test_top_level_bigint_copy_is_jsbigint(context: ivm.Context) -> None:
    # The table: BigInt → ivm.JSBigInt, which goes back in as a BigInt. A
    # top-level BigInt result must not lose that (it would come back as a number).
    value = context.eval_sync("5n", copy=True)
    assert type(value) is ivm.JSBigInt and value == 5
    assert js_check(context, value, "typeof $0 === 'bigint' && $0 === 5n") is True
    back = py_js_py(context, ivm.JSBigInt(7))
    assert type(back) is ivm.JSBigInt and back == 7


def test_jsbigint_is_an_int() -> None:
    b = ivm.JSBigInt(2**70)
    assert isinstance(b, int) and b == 2**70 and repr(b) == f"JSBigInt({2**70})"


JS_STRINGS: list[tuple[str, str]] = [
    ("''", ""),
    ("'h\\u00e9llo'", "h\u00e9llo"),
    ("'\\ud800'", "\ud800"),
    ("'\\udfff\\ud800'", "\udfff\ud800"),
    ("'\\u{1F600}'", "\U0001f600"),
    ("'a\\u0000b'", "a\x00b"),
    ("'x'.repeat(300)", "x" * 300),
    ("'\\u65e5'.repeat(70000)", "\u65e5" * 70000),
]


@pytest.mark.parametrize(("js", "expected"), JS_STRINGS, ids=range(len(JS_STRINGS)))
def test_string(context: ivm.Context, js: str, expected: str) -> None:
    assert_js_roundtrip(context, f"[{js}]", [expected], "$0[0] === orig[0]")
    assert_js_roundtrip(context, f"({{k: {js}}})", {"k": expected}, "$0.k === orig.k")
    # as a key, too
    assert_js_roundtrip(
        context, f"({{[{js}]: 1}})", {expected: 1}, "Object.keys($0)[0] === Object.keys(orig)[0]"
    )
    assert js_check(context, [expected], f"$0[0] === {js}") is True
    assert same(py_js_py(context, [expected, {expected: expected}]), [expected, {expected: expected}])


def test_array(context: ivm.Context) -> None:
    assert_js_roundtrip(
        context,
        "[1, 'a', [2, [3]], {}]",
        [1, "a", [2, [3]], {}],
        "Array.isArray($0) && Array.isArray($0[2][1]) && JSON.stringify($0) === JSON.stringify(orig)",
    )
    # holes become undefined; extra properties are dropped
    assert_js_roundtrip(
        context,
        "[1, , 3]",
        [1, ivm.undefined, 3],
        "$0.length === 3 && 1 in $0 && $0[1] === undefined",
    )
    assert_js_roundtrip(
        context, "Object.assign([1, 2], {extra: 3})", [1, 2], "$0.length === 2 && !('extra' in $0)"
    )
    assert_js_roundtrip(context, "[]", [], "Array.isArray($0) && $0.length === 0")
    # list and tuple → Array
    for value in ([1, [2, "x"]], (1, (2, "x"))):
        assert js_check(
            context,
            value,
            "Array.isArray($0) && Array.isArray($0[1]) && $0.length === 2 && $0[1][1] === 'x'",
        ) is True
        assert same(py_js_py(context, value), [1, [2, "x"]])
    assert js_check(context, (), "Array.isArray($0) && $0.length === 0") is True


def test_object(context: ivm.Context) -> None:
    assert_js_roundtrip(
        context,
        "({a: 1, b: {c: 'd'}, 'x y': [], 1: 2})",
        {"1": 2, "a": 1, "b": {"c": "d"}, "x y": []},
        "!($0 instanceof Map) && Object.getPrototypeOf($0) === Object.prototype"
        " && JSON.stringify($0) === JSON.stringify(orig)",
    )
    # only own enumerable string keys; getters run
    value = context.eval_sync(
        "const o = Object.defineProperty({a: 1, get g() { return 'got' }, [Symbol('s')]: 2},"
        " 'hidden', {value: 3, enumerable: false}); o",
        copy=True,
    )
    assert same(value, {"a": 1, "g": "got"})
    # a class instance: its own fields, not its prototype's getters
    value = context.eval_sync(
        "class P { constructor() { this.own = 2 } get fromProto() { return 1 } }; new P", copy=True
    )
    assert same(value, {"own": 2})
    assert same(context.eval_sync("Object.create(null, {a: {value: 1, enumerable: true}})", copy=True), {"a": 1})
    # dict with str keys → a plain Object
    assert js_check(
        context,
        {"a": 1, "b": {"c": [True]}},
        "!($0 instanceof Map) && Object.getPrototypeOf($0) === Object.prototype"
        " && $0.a === 1 && $0.b.c[0] === true && Object.keys($0).join() === 'a,b'",
    ) is True
    assert same(py_js_py(context, {"a": 1, "b": {"c": [True]}}), {"a": 1, "b": {"c": [True]}})
    assert js_check(context, {"__proto__": 1}, "Object.keys($0).join() === '__proto__' && Object.getPrototypeOf($0) === Object.prototype") is True


def test_dict_with_non_str_keys_is_a_map(context: ivm.Context) -> None:
    value = {1: "a", "s": 2, None: 3, 1.5: 4, 2**60: 5}
    assert js_check(
        context,
        value,
        "$0 instanceof Map && $0.size === 5 && $0.get(1) === 'a' && $0.get('s') === 2"
        " && $0.get(null) === 3 && $0.get(1.5) === 4 && $0.get(2n**60n) === 5",
    ) is True
    back = py_js_py(context, value)
    assert type(back) is ivm.JSMap
    assert same(dict(back), {1: "a", "s": 2, None: 3, 1.5: 4, ivm.JSBigInt(2**60): 5})
    assert js_check(context, {True: 1}, "$0 instanceof Map && $0.get(true) === 1") is True


def test_large_dict_with_a_late_non_str_key(context: ivm.Context) -> None:
    # More keys than one batch of the stream: the dict only turns out to be a Map
    # at its last key. Its str keys must stay str keys, its values what they were.
    value: dict[Any, Any] = {"1": "one"}
    value.update({f"k{i}": i for i in range(1200)})
    value[5] = "five"
    assert js_check(
        context,
        value,
        "$0 instanceof Map && $0.size === 1202 && $0.get('1') === 'one' && !$0.has(1)"
        " && $0.get(5) === 'five' && $0.get('k0') === 0 && $0.get('k1199') === 1199"
        " && [...$0.keys()][0] === '1' && [...$0.keys()][1201] === 5",
    ) is True


def test_map(context: ivm.Context) -> None:
    value = context.eval_sync("new Map([[1, 'a'], ['x', [2]], [null, true], [2n**60n, 3]])", copy=True)
    assert type(value) is ivm.JSMap
    assert same(dict(value), {1: "a", "x": [2], None: True, ivm.JSBigInt(2**60): 3})
    assert list(value) == [1, "x", None, 2**60]
    assert js_check(
        context,
        value,
        "$0 instanceof Map && [...$0.keys()].map(k => typeof k).join() === 'number,string,object,bigint'"
        " && $0.get('x')[0] === 2 && $0.get(null) === true && $0.get(2n**60n) === 3",
    ) is True
    # a JSMap is a Map whatever its keys
    assert js_check(context, ivm.JSMap({"a": 1}), "$0 instanceof Map && $0.get('a') === 1") is True
    assert js_check(context, ivm.JSMap(), "$0 instanceof Map && $0.size === 0") is True
    back = py_js_py(context, ivm.JSMap({"a": 1}))
    assert type(back) is ivm.JSMap and dict(back) == {"a": 1}
    assert isinstance(ivm.JSMap(), dict)
    # -0 as a Map key is 0 in JavaScript
    assert same(dict(context.eval_sync("new Map([[-0, 'z']])", copy=True)), {0: "z"})


def test_set(context: ivm.Context) -> None:
    value = context.eval_sync("new Set([1, 'a', null, 2.5, NaN])", copy=True)
    assert type(value) is set
    assert value - {1, "a", None, 2.5} == {v for v in value if isinstance(v, float) and math.isnan(v)}
    assert len(value) == 5
    assert js_check(context, value, "$0 instanceof Set && $0.size === 5 && $0.has(1) && $0.has('a') && $0.has(null) && $0.has(NaN)") is True
    for v in ({1, "a"}, frozenset({1, "a"})):
        assert js_check(context, v, "$0 instanceof Set && $0.size === 2 && $0.has(1) && $0.has('a')") is True
        back = py_js_py(context, v)
        assert type(back) is set and back == {1, "a"}
    assert js_check(context, set(), "$0 instanceof Set && $0.size === 0") is True


def test_date(context: ivm.Context) -> None:
    cases = [
        ("new Date(0)", datetime.datetime(1970, 1, 1, tzinfo=UTC)),
        ("new Date(Date.UTC(2020, 0, 2, 3, 4, 5, 123))", datetime.datetime(2020, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)),
        ("new Date(-1)", datetime.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        ("new Date('0001-01-01T00:00:00.000Z')", datetime.datetime(1, 1, 1, tzinfo=UTC)),
        ("new Date('9999-12-31T23:59:59.999Z')", datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ]
    for js, expected in cases:
        value = context.eval_sync(js, copy=True)
        assert type(value) is datetime.datetime and value == expected and value.utcoffset() == datetime.timedelta(0)
        assert js_check(context, value, f"$0 instanceof Date && $0.getTime() === ({js}).getTime()") is True
    # aware datetimes of any zone; milliseconds kept, microseconds below dropped
    aware = datetime.datetime(2000, 1, 1, 12, 0, 0, 456789, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert js_check(context, aware, "$0 instanceof Date && $0.getTime() === Date.UTC(2000, 0, 1, 10, 0, 0, 456)") is True
    back = py_js_py(context, aware)
    assert back == datetime.datetime(2000, 1, 1, 10, 0, 0, 456000, tzinfo=UTC) and back.tzinfo == UTC
    with pytest.raises(TypeError, match="naive datetime"):
        js_check(context, datetime.datetime(2000, 1, 1), "1")
    with pytest.raises(TypeError, match="naive datetime"):
        js_check(context, [datetime.datetime(2000, 1, 1)], "1")


def test_array_buffer(context: ivm.Context) -> None:
    assert_js_roundtrip(
        context,
        "new Uint8Array([1, 2, 255]).buffer",
        b"\x01\x02\xff",
        "$0 instanceof ArrayBuffer && $0.byteLength === 3 && new Uint8Array($0)[2] === 255",
    )
    for v in (b"\x00ab", bytearray(b"\x00ab")):
        assert js_check(context, v, "$0 instanceof ArrayBuffer && $0.byteLength === 3 && new Uint8Array($0)[1] === 97") is True
        back = py_js_py(context, v)
        assert type(back) is bytes and back == b"\x00ab"
    big = bytes(range(256)) * 4096
    assert py_js_py(context, big) == big


def test_empty_array_buffer_and_views(context: ivm.Context) -> None:
    assert_js_roundtrip(context, "new ArrayBuffer(0)", b"", "$0 instanceof ArrayBuffer && $0.byteLength === 0")
    value = context.eval_sync("[new Uint8Array(0), new Float64Array(0)]", copy=True)
    assert [(v.format, v.tolist()) for v in value] == [("B", []), ("d", [])]
    assert js_check(context, value, "$0[0] instanceof Uint8Array && $0[1] instanceof Float64Array && $0[1].length === 0") is True
    assert js_check(context, b"", "$0 instanceof ArrayBuffer && $0.byteLength === 0") is True
    assert py_js_py(context, [b""]) == [b""]


TYPED: list[tuple[str, str, list[Any]]] = [
    ("Int8Array", "b", [-128, 0, 127]),
    ("Uint8Array", "B", [0, 1, 255]),
    ("Int16Array", "h", [-32768, 2, 32767]),
    ("Uint16Array", "H", [0, 3, 65535]),
    ("Int32Array", "i", [-(2**31), 4, 2**31 - 1]),
    ("Uint32Array", "I", [0, 5, 2**32 - 1]),
    ("Float32Array", "f", [1.5, -0.25, 0.0]),
    ("Float64Array", "d", [0.1, -1e300, 2.5]),
    ("BigInt64Array", "q", [-(2**63), 6, 2**63 - 1]),
    ("BigUint64Array", "Q", [0, 7, 2**64 - 1]),
]


@pytest.mark.parametrize(("ctor", "fmt", "items"), TYPED, ids=[t[0] for t in TYPED])
def test_typed_array(context: ivm.Context, ctor: str, fmt: str, items: list[Any]) -> None:
    suffix = "n" if ctor.startswith("Big") else ""
    literal = "[" + ", ".join(f"{x!r}{suffix}" for x in items) + "]"
    js = f"new {ctor}({literal})"
    value = context.eval_sync(js, copy=True)
    assert type(value) is memoryview and value.format == fmt and value.ndim == 1
    assert value.tolist() == items and len(value) == 3
    assert js_check(
        context,
        value,
        f"$0 instanceof {ctor} && $0.length === 3 && $0.byteOffset === 0"
        f" && $0.every((x, i) => Object.is(x, ({js})[i]))",
    ) is True
    # Python → JS from a memoryview of that format
    mv: memoryview[Any] = memoryview(bytearray(3 * value.itemsize)).cast(fmt)  # type: ignore[call-overload]
    for i, x in enumerate(items):
        mv[i] = x
    assert js_check(
        context, mv, f"$0 instanceof {ctor} && $0.length === 3 && $0.every((x, i) => Object.is(x, ({js})[i]))"
    ) is True
    back = py_js_py(context, mv)
    assert type(back) is memoryview and back.format == fmt and back.tolist() == items


def test_uint8_clamped_array_comes_back_as_uint8_array(context: ivm.Context) -> None:
    value = context.eval_sync("new Uint8ClampedArray([0, 300, -5, 7])", copy=True)
    assert type(value) is memoryview and value.format == "B" and value.tolist() == [0, 255, 0, 7]
    assert js_check(context, value, "$0.constructor === Uint8Array && $0.join() === '0,255,0,7'") is True


def test_data_view(context: ivm.Context) -> None:
    value: Any = context.eval_sync("new DataView(new Uint8Array([1, 2, 3, 4]).buffer, 1, 2)", copy=True)
    assert type(value) is memoryview and value.format == "c" and value.tolist() == [b"\x02", b"\x03"]
    assert bytes(value.obj) == b"\x01\x02\x03\x04"
    assert js_check(
        context,
        value,
        "$0 instanceof DataView && $0.byteOffset === 1 && $0.byteLength === 2"
        " && $0.buffer.byteLength === 4 && $0.getUint8(0) === 2 && $0.getUint8(1) === 3",
    ) is True
    mv = memoryview(b"xyz").cast("c")
    assert js_check(context, mv, "$0 instanceof DataView && $0.byteLength === 3 && $0.getUint8(2) === 122") is True
    back = py_js_py(context, mv)
    assert back.format == "c" and back.tobytes() == b"xyz"


def test_typed_array_views_share_their_buffer(context: ivm.Context) -> None:
    value = context.eval_sync(
        "const sb = new Uint8Array([1, 0, 2, 0, 3, 0, 4, 0]).buffer;"
        " [sb, new Uint8Array(sb), new Int16Array(sb, 2, 2), new DataView(sb, 6)]",
        copy=True,
    )
    buf, u8, i16, dv = value
    assert type(buf) is bytes and buf == b"\x01\x00\x02\x00\x03\x00\x04\x00"
    assert u8.obj is buf and i16.obj is buf and dv.obj is buf
    assert u8.tolist() == [1, 0, 2, 0, 3, 0, 4, 0] and i16.tolist() == [2, 3] and dv.tobytes() == b"\x04\x00"
    assert js_check(
        context,
        value,
        "$0[1].buffer === $0[0] && $0[2].buffer === $0[0] && $0[3].buffer === $0[0]"
        " && $0[2].byteOffset === 2 && $0[2].length === 2 && $0[3].byteOffset === 6 && $0[0].byteLength === 8",
    ) is True
    # Python: views over one bytes object are views over one ArrayBuffer
    b = b"abcdefgh"
    assert js_check(
        context,
        [b, memoryview(b)[4:8].cast("h"), memoryview(b)[0:4]],
        "$0[1].buffer === $0[0] && $0[2].buffer === $0[0] && $0[1] instanceof Int16Array"
        " && $0[1].byteOffset === 4 && $0[1].length === 2 && $0[2] instanceof Uint8Array && $0[2].length === 4",
    ) is True


def test_memoryview_without_a_typed_array_is_a_type_error(context: ivm.Context) -> None:
    for mv in (
        memoryview(b"abcd").cast("B", (2, 2)),
        memoryview(b"abcd")[::2],
        memoryview(array.array("u", "ab")),
    ):
        with pytest.raises(TypeError, match="memoryview"):
            js_check(context, [mv], "1")


def test_error(context: ivm.Context) -> None:
    for name in ("Error", "TypeError", "RangeError", "SyntaxError", "ReferenceError", "EvalError", "URIError"):
        value = context.eval_sync(f"[new {name}('bad ' + 1)]", copy=True)[0]
        assert type(value) is ivm.JSError
        assert value.name == name and value.message == "bad 1"
        assert value.stack.startswith(f"{name}: bad 1\n    at ")
        # not raised: a value
        assert js_check(
            context,
            value,
            f"$0 instanceof Error && $0.name === '{name}' && $0.message === 'bad 1'"
            f" && $0.stack === {value.stack!r}",
        ) is True
    err = ivm.JSError("boom", name="TypeError", stack="TypeError: boom\n    at nowhere")
    assert js_check(
        context,
        err,
        "$0 instanceof TypeError && $0.message === 'boom' && $0.stack === 'TypeError: boom\\n    at nowhere'",
    ) is True
    back = py_js_py(context, err)
    assert type(back) is ivm.JSError and (back.name, back.message, back.stack) == (
        "TypeError",
        "boom",
        "TypeError: boom\n    at nowhere",
    )
    custom = ivm.JSError("m", name="MyError")
    assert js_check(context, custom, "$0 instanceof Error && $0.name === 'MyError' && $0.message === 'm'") is True


def test_regexp(context: ivm.Context) -> None:
    value = context.eval_sync("/a+\\/b[c]/gimsuy", copy=True)
    assert type(value) is ivm.JSRegExp
    assert value.source == "a+\\/b[c]" and value.flags == "gimsuy"
    assert js_check(
        context, value, "$0 instanceof RegExp && $0.source === 'a+\\\\/b[c]' && $0.flags === 'gimsuy'"
    ) is True
    assert js_check(context, ivm.JSRegExp("^x$", "i"), "$0 instanceof RegExp && $0.test('X') && !$0.test('xx')") is True
    assert py_js_py(context, ivm.JSRegExp("a|b", "d")) == ivm.JSRegExp("a|b", "d")
    assert py_js_py(context, [ivm.JSRegExp("q")]) == [ivm.JSRegExp("q", "")]


UNCOPYABLE: list[tuple[str, str]] = [
    ("({a: [1, {f() {}}]})", "a function at $.a[1].f cannot be copied"),
    ("({a: [1, {f: () => 1}]})", "a function at $.a[1].f cannot be copied"),
    ("[Symbol('s')]", "a Symbol at $[0] cannot be copied"),
    ("({w: new WeakMap()})", "a WeakMap at $.w cannot be copied"),
    ("({w: new WeakSet()})", "a WeakSet at $.w cannot be copied"),
    ("({p: new Proxy({}, {})})", "a Proxy at $.p cannot be copied"),
    ("({p: Promise.resolve(1)})", "a Promise at $.p cannot be copied"),
    ("({'x y': {m: new WebAssembly.Memory({initial: 1})}})", 'a WebAssembly.Memory at $["x y"].m cannot be copied'),
    (
        "[new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]))]",
        "a WebAssembly.Module at $[0] cannot be copied",
    ),
    ("({it: new Map().keys()})", "an iterator at $.it cannot be copied"),
    ("({it: new Set().values()})", "an iterator at $.it cannot be copied"),
    ("({it: (function* () {})()})", "an iterator at $.it cannot be copied"),
    ("({it: [1, 2].values()})", "an iterator at $.it cannot be copied"),
    ("({it: 'ab'[Symbol.iterator]()})", "an iterator at $.it cannot be copied"),
    ("new Map([['k', {f() {}}]])", 'a function at $.get("k").f cannot be copied'),
]


@pytest.mark.parametrize(("js", "message"), UNCOPYABLE, ids=[j for j, _ in UNCOPYABLE])
def test_uncopyable_javascript_values(context: ivm.Context, js: str, message: str) -> None:
    with pytest.raises(ivm.TransferError) as info:
        context.eval_sync(js, copy=True)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, TypeError)
    # the isolate is fine afterwards
    assert context.eval_sync("[1]", copy=True) == [1]


def test_uncopyable_top_level_function(context: ivm.Context) -> None:
    with pytest.raises(ivm.TransferError, match=r"^a function at \$ cannot be copied"):
        context.eval_sync("(function f() {})", copy=True)
    with pytest.raises(ivm.TransferError, match=r"^a function at \$ cannot be copied"):
        context.eval_sync("(function f() {})", external_copy=True)


def _gen() -> Any:
    yield 1


class _Custom:
    pass


@pytest.mark.parametrize(
    "value",
    [object(), _Custom(), _gen(), (lambda: 1), len, __import__("collections").OrderedDict(a=1), 1j, Ellipsis, type],
    ids=["object", "custom", "generator", "lambda", "builtin", "OrderedDict", "complex", "Ellipsis", "type"],
)
def test_python_values_outside_the_table(context: ivm.Context, value: object) -> None:
    with pytest.raises(TypeError, match="cannot be copied into JavaScript"):
        js_check(context, value, "1")
    with pytest.raises(TypeError):
        js_check(context, {"nested": [value]}, "1")
    with pytest.raises(TypeError):
        ivm.ExternalCopy([value])
    # the context still works
    assert js_check(context, [1], "$0[0]") == 1


# --- without the copy option


def test_objects_need_a_copy(isolate: ivm.Isolate, context: ivm.Context) -> None:
    with pytest.raises(ivm.TransferError, match="ask for a copy") as info:
        context.eval_sync("({a: 1})")
    assert isinstance(info.value, TypeError)
    with pytest.raises(ivm.TransferError, match="ask for a copy"):
        context.eval_closure_sync("return [1]")
    script = isolate.compile_script_sync("new Map()")
    with pytest.raises(ivm.TransferError, match="ask for a copy"):
        script.run_sync(context)
    assert type(script.run_sync(context, copy=True)) is ivm.JSMap
    # primitives leave without it
    assert context.eval_sync("'s'") == "s"
    # arguments: non-primitives need arguments_options={'copy': True}
    for arg in ([1], {"a": 1}, b"x", {1}):
        with pytest.raises(ivm.TransferError, match="arguments_options"):
            context.eval_closure_sync("return 1", [arg])
    assert context.eval_closure_sync("return $0 + $1", [1, 2]) == 3


def test_copy_options_are_validated(context: ivm.Context) -> None:
    with pytest.raises(ValueError):
        context.eval_sync("1", copy=True, external_copy=True)
    with pytest.raises(ValueError):
        context.eval_sync("1", transfer_out=True)
    with pytest.raises(TypeError):
        context.eval_sync("1", copy=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        context.eval_closure_sync("return 1", result_options={"bogus": True})
    with pytest.raises(ValueError):
        context.eval_closure_sync("return 1", [1], arguments_options={"transfer": True})
    with pytest.raises(TypeError):
        context.eval_closure_sync("return 1", [1], arguments_options={"copy": "yes"})


# --- identity and cycles


def test_js_array_identity_and_cycles(context: ivm.Context) -> None:
    value = context.eval_sync("const inner = [1]; const arr = [inner, inner]; arr.push(arr); arr", copy=True)
    assert value[0] is value[1] and value[2] is value and value[0] == [1]
    assert js_check(context, value, "$0[0] === $0[1] && $0[2] === $0 && $0[0][0] === 1") is True


def test_js_object_identity_and_cycles(context: ivm.Context) -> None:
    value = context.eval_sync(
        "const shared = {n: 1}; const obj = {a: shared, b: [shared]}; obj.self = obj; obj", copy=True
    )
    assert value["a"] is value["b"][0] and value["self"] is value and value["a"] == {"n": 1}
    assert js_check(context, value, "$0.a === $0.b[0] && $0.self === $0 && $0.a.n === 1") is True


def test_js_map_and_other_identity(context: ivm.Context) -> None:
    value = context.eval_sync(
        "const m = new Map(); const d = new Date(0); const re = /x/; const e = new Error('e');"
        " m.set('self', m); m.set('list', [d, d, re, re, e, e]); m",
        copy=True,
    )
    assert type(value) is ivm.JSMap and value["self"] is value
    lst = value["list"]
    assert lst[0] is lst[1] and lst[2] is lst[3] and lst[4] is lst[5]
    assert js_check(
        context, value, "$0 instanceof Map && $0.get('self') === $0 && $0.get('list')[0] === $0.get('list')[1]"
    ) is True


def test_python_list_identity_and_cycles(context: ivm.Context) -> None:
    inner = [1]
    lst: list[Any] = [inner, inner]
    lst.append(lst)
    assert js_check(context, lst, "$0[0] === $0[1] && $0[2] === $0 && $0[0][0] === 1") is True
    back = py_js_py(context, lst)
    assert back[0] is back[1] and back[2] is back and back[0] == [1] and back is not lst
    t = ("x",)
    assert js_check(context, [t, t], "$0[0] === $0[1]") is True


def test_python_dict_identity_and_cycles(context: ivm.Context) -> None:
    shared = {"n": 1}
    d: dict[str, Any] = {"a": shared, "b": [shared]}
    d["self"] = d
    assert js_check(context, d, "$0.a === $0.b[0] && $0.self === $0 && $0.a.n === 1") is True
    back = py_js_py(context, d)
    assert back["a"] is back["b"][0] and back["self"] is back and back["a"] == {"n": 1}


def test_python_map_cycles(context: ivm.Context) -> None:
    m = ivm.JSMap()
    m["self"] = m
    assert js_check(context, m, "$0 instanceof Map && $0.get('self') === $0") is True
    back = py_js_py(context, m)
    assert type(back) is ivm.JSMap and back["self"] is back


def test_python_dict_with_non_str_keys_in_a_cycle(context: ivm.Context) -> None:
    # Cycles keep identity: a dict that becomes a Map included.
    d: dict[Any, Any] = {}
    d[1] = d
    assert js_check(context, d, "$0 instanceof Map && $0.get(1) === $0") is True


def test_python_dict_with_a_late_non_str_key_in_a_cycle(context: ivm.Context) -> None:
    d: dict[Any, Any] = {f"k{i}": i for i in range(1200)}
    d[5] = d
    assert js_check(context, d, "$0 instanceof Map && $0.get(5) === $0 && $0.get('k3') === 3") is True


def test_repeated_keys_across_many_objects(context: ivm.Context) -> None:
    js = "Array.from({length: 3}, (_, j) => Object.fromEntries(Array.from({length: 300}, (_, i) => ['key' + i, i + j])))"
    value = context.eval_sync(js, copy=True)
    assert len(value) == 3 and value[2] == {f"key{i}": i + 2 for i in range(300)}
    assert js_check(context, value, f"JSON.stringify($0) === JSON.stringify({js})") is True


def test_objects_whose_keys_change_from_one_to_the_next(context: ivm.Context) -> None:
    # libivm's writer reuses the last object's k-th key when the next one's has the same
    # bytes: every way a key can differ from the last one at its place must still be seen
    long = "k" * 70   # too long to be memoized
    rows = [
        {"a": 1, "b": 2}, {"a": 3, "c": 4}, {"b": 5, "a": 6}, {"a": 7}, {"ab": 8, "b": 9},
        {"a": 10, "bb": 11}, {"\u00e9": 12}, {"\u00e8": 13}, {"\u4e00": 14}, {"\u4e01": 15},
        {long: 16}, {long + "x": 17}, {long: 18}, {long: 181}, {"1": 19, "a": 20}, {"2": 21, "a": 22},
        {"4294967294": 23}, {"4294967295": 24}, {"-1": 25}, {"1.5": 26}, {"": 27}, {"a": 28},
        {"x" * 16: 29}, {"x" * 17: 30}, {"x" * 17: 31},
        {f"p{i}": i for i in range(20)}, {f"p{i}": -i for i in range(20)},
        {f"p{i}" if i != 17 else "q": i for i in range(20)},
    ]
    rows.append(dict(rows[0], nested=[{"a": 1, "z": 2}, {"a": 3, "y": 4}]))
    context.global_.set_sync("rows", rows, copy=True)
    for js in ("rows", "rows.map((r) => ({...r}))", "rows.map((r) => Object.assign({}, r))"):
        assert same(context.eval_sync(js, copy=True), rows)
        assert same(context.eval_sync(f"[{js}, {js}]", copy=True), [rows, rows])


# --- large values


def test_million_element_array_from_javascript(context: ivm.Context) -> None:
    value = context.eval_sync("Array.from({length: 1e6}, (_, i) => i % 3 ? i : 's' + i)", copy=True)
    assert type(value) is list and len(value) == 10**6
    assert value[0] == "s0" and value[1] == 1 and value[999999] == "s999999" and value[999998] == 999998
    assert js_check(context, value, "$0.length === 1e6 && $0[999998] === 999998 && $0[999999] === 's999999'") is True


def test_million_element_list_from_python(context: ivm.Context) -> None:
    value = [i * 0.5 for i in range(10**6)]
    assert js_check(
        context, value, "Array.isArray($0) && $0.length === 1e6 && $0[1] === 0.5 && $0[999999] === 499999.5"
    ) is True
    back = py_js_py(context, value)
    assert len(back) == 10**6 and back[1] == 0.5 and back[2] == 1 and type(back[2]) is int


# --- errors: keys, dates, lengths, depth


@pytest.mark.parametrize(
    ("js", "match"),
    [
        ("new Map([[1, 'a'], [true, 'b']])", r"^a Map at \$ cannot be copied: two of its keys are equal in Python"),
        ("new Map([[2**53, 1], [2n**53n, 2]])", r"^a Map at \$ cannot be copied: two of its keys are equal"),
        ("new Set([0, false])", r"^a Set at \$ cannot be copied: two of its keys are equal"),
        ("({m: new Map([[{}, 1]])})", r"^a Map key of type Object at \$\.m cannot be copied"),
        ("[new Set([[1]])]", r"^a Set key of type Array at \$\[0\] cannot be copied"),
        ("({d: new Date(NaN)})", r"^an invalid Date at \$\.d cannot be copied"),
        ("[new Date('0000-12-31T23:59:59.999Z')]", r"^a Date at \$\[0\] cannot be copied: outside the years 1 to 9999"),
        ("new Date('+010000-01-01T00:00:00.000Z')", r"^a Date at \$ cannot be copied: outside the years 1 to 9999"),
        ("new Date(8.64e15)", r"^a Date at \$ cannot be copied"),
        ("const big = []; big.length = 2**26 + 1; ({big})", r"^an Array of length 67108865 at \$\.big cannot be copied"),
    ],
)
def test_refused_javascript_values(context: ivm.Context, js: str, match: str) -> None:
    with pytest.raises(ivm.TransferError, match=match):
        context.eval_sync(js, copy=True)
    assert context.eval_sync("[2]", copy=True) == [2]


def test_distinct_keys_that_python_would_not_merge(context: ivm.Context) -> None:
    value = context.eval_sync("new Map([[1, 'n'], ['1', 's'], [2n**53n + 1n, 'b'], [2**53 + 2, 'f']])", copy=True)
    assert same(dict(value), {1: "n", "1": "s", ivm.JSBigInt(2**53 + 1): "b", float(2**53 + 2): "f"})


def test_python_dict_with_several_nan_keys(context: ivm.Context) -> None:
    with pytest.raises(ivm.TransferError, match="several NaN"):
        js_check(context, {float("nan"): 1, float("nan"): 2}, "1")
    # one NaN key is fine
    assert js_check(context, {float("nan"): 1}, "$0 instanceof Map && $0.get(NaN) === 1") is True


def _nested_js(levels: int) -> str:
    return (
        "(() => { const root = []; let cur = root;"
        f" for (let i = 1; i < {levels}; i++) {{ const n = []; cur.push(n); cur = n; }} return root; }})()"
    )


def _nested_py(levels: int) -> list[Any]:
    root: list[Any] = []
    cur = root
    for _ in range(levels - 1):
        n: list[Any] = []
        cur.append(n)
        cur = n
    return root


def test_javascript_nesting_limit(context: ivm.Context) -> None:
    value = context.eval_sync(_nested_js(1000), copy=True)
    depth = 0
    while value:
        value = value[0]
        depth += 1
    assert depth == 999
    with pytest.raises(ivm.TransferError, match="nested more than 1000 levels deep"):
        context.eval_sync(_nested_js(1001), copy=True)
    with pytest.raises(ivm.TransferError, match="nested more than 1000 levels deep"):
        context.eval_sync(_nested_js(100000), copy=True)


# A thread with a small stack (threading.stack_size) copying a value nested within the
# depth limit: the writers stop where the stack runs short, with an error, instead of
# overflowing it (a crash before). In a child process: the stack size applies to every
# thread started after it is set.
_SMALL_STACK_COPY = """
import sys, threading, ivm
code = {code!r}
isolate = ivm.Isolate()
context = isolate.create_context_sync()
threading.stack_size(256 * 1024)
out = []
def copy():
    try:
        out.append(len(context.eval_sync(code, copy=True)))
    except ivm.TransferError as e:
        out.append(str(e))
thread = threading.Thread(target=copy)
thread.start()
thread.join()
print(out[0])
print(context.eval_sync("[1, 2].join()"))
"""


def test_deep_copy_on_a_small_thread_stack_fails_cleanly() -> None:
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", _SMALL_STACK_COPY.format(code=_nested_js(1000))],
        cwd=Path(ivm.__file__).parent.parent,  # the installed ivm, not the source tree
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "nested too deep for this thread's stack" in lines[0], lines
    assert lines[1] == "1,2"   # the isolate is still usable


def test_python_nesting_within_limit(context: ivm.Context) -> None:
    assert js_check(context, _nested_py(300), "(() => { let d = 1, c = $0; while (c.length) { c = c[0]; d++; } return d; })()") == 300


@pytest.mark.parametrize("levels", [1001, 5000])
def test_python_nesting_limit(context: ivm.Context, levels: int) -> None:
    with pytest.raises(ivm.TransferError):
        js_check(context, _nested_py(levels), "1")
    with pytest.raises(ivm.TransferError):
        ivm.ExternalCopy(_nested_py(levels))


# --- limits


def test_getters_run_under_the_timeout(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync("({a: 1, get b() { for (;;) {} }})", copy=True, timeout=0.2)
    with pytest.raises(ivm.TimeoutError):
        context.eval_closure_sync(
            "return [{get x() { while (true) {} }}]", result_options=COPY, timeout=0.2
        )
    assert context.eval_sync("({ok: [1]})", copy=True) == {"ok": [1]}


def test_a_throwing_getter_raises_its_error(context: ivm.Context) -> None:
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync("({get g() { throw new RangeError('from getter') }})", copy=True)
    assert info.value.name == "RangeError" and info.value.message == "from getter"
    assert context.eval_sync("1 + 1") == 2


def test_copy_into_a_small_isolate_fails_cleanly() -> None:
    iso = ivm.Isolate(memory_limit=16)
    try:
        ctx = iso.create_context_sync()
        with pytest.raises((ivm.TransferError, ivm.MemoryLimitError)):
            ctx.eval_closure_sync("return $0.byteLength", [b"x" * (40 << 20)], arguments_options=COPY)
        with pytest.raises((ivm.TransferError, ivm.MemoryLimitError)):
            ctx.eval_closure_sync("return $0.length", [list(range(4 * 10**6))], arguments_options=COPY)
    finally:
        iso.dispose()
    # the host lives, and other isolates work
    other = ivm.Isolate(memory_limit=32)
    try:
        assert other.create_context_sync().eval_sync("[1, 2]", copy=True) == [1, 2]
    finally:
        other.dispose()


def test_copy_limit(context: ivm.Context) -> None:
    old = ivm._lib.ivm_set_copy_limit(1000)
    try:
        assert old == 2**31
        with pytest.raises(ivm.TransferError, match=r"copy size limit \(1000 bytes"):
            context.eval_sync("['x'.repeat(2000)]", copy=True)
        with pytest.raises(ivm.TransferError, match="copy size limit"):
            context.eval_sync("new ArrayBuffer(2000)", copy=True)
        with pytest.raises(ivm.TransferError, match="copy size limit"):
            context.eval_sync("Array.from({length: 2000}, (_, i) => i)", external_copy=True)
        assert context.eval_sync("['x'.repeat(100)]", copy=True) == ["x" * 100]
    finally:
        assert ivm._lib.ivm_set_copy_limit(0) == 1000
    assert ivm._lib.ivm_set_copy_limit(0) == 2**31
    assert len(context.eval_sync("['x'.repeat(2000)]", copy=True)[0]) == 2000


# --- transfer_out


def test_transfer_out_detaches_the_buffers(context: ivm.Context) -> None:
    context.eval_sync("globalThis.tb = new Uint8Array([5, 6, 7]); 0")
    value = context.eval_sync("({view: tb, buf: tb.buffer})", copy=True, transfer_out=True)
    assert value["buf"] == b"\x05\x06\x07" and value["view"].obj is value["buf"]
    assert value["view"].tolist() == [5, 6, 7]
    assert context.eval_sync("tb.buffer.byteLength") == 0
    assert context.eval_sync("tb.length") == 0
    # without transfer_out the buffer stays
    context.eval_sync("globalThis.kb = new Uint8Array([1]).buffer; 0")
    assert context.eval_sync("kb", copy=True) == b"\x01"
    assert context.eval_sync("kb.byteLength") == 1


def test_a_failed_transfer_out_detaches_nothing(context: ivm.Context) -> None:
    context.eval_sync("globalThis.keep = new ArrayBuffer(4); 0")
    with pytest.raises(ivm.TransferError, match=r"a function at \$\[1\]"):
        context.eval_sync("[keep, () => 1]", copy=True, transfer_out=True)
    assert context.eval_sync("keep.byteLength") == 4


def test_transfer_out_of_closure_results(context: ivm.Context) -> None:
    context.eval_sync("globalThis.cb = new ArrayBuffer(8); 0")
    value = context.eval_closure_sync("return [cb]", result_options={"copy": True, "transfer_out": True})
    assert value == [bytes(8)]
    assert context.eval_sync("cb.byteLength") == 0


# --- script.run, promises


def test_script_run_sync_with_copy(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = isolate.compile_script_sync("({d: new Date(0), s: new Set([1]), n: [1n]})")
    value = script.run_sync(context, copy=True)
    assert same(value, {"d": datetime.datetime(1970, 1, 1, tzinfo=UTC), "s": {1}, "n": [ivm.JSBigInt(1)]})
    ec = script.run_sync(context, external_copy=True)
    assert type(ec) is ivm.ExternalCopy
    assert same(ec.copy(), value)
    ec.release()


def test_promise_results_are_copied(context: ivm.Context) -> None:
    value = context.eval_sync("Promise.resolve(new Map([[1, [2]]]))", promise=True, copy=True)
    assert type(value) is ivm.JSMap and dict(value) == {1: [2]}
    value = context.eval_closure_sync(
        "return (async () => ({x: $0.x + 1}))()", [{"x": 1}], arguments_options=COPY,
        result_options={"promise": True, "copy": True},
    )
    assert value == {"x": 2}


# --- async


@pytest.mark.anyio
async def test_async_eval_with_copy(context: ivm.Context) -> None:
    value = await context.eval("({a: [1n, new Map([[1, 2]])], b: new Uint16Array([3])})", copy=True)
    assert same(value["a"], [ivm.JSBigInt(1), ivm.JSMap({1: 2})])
    assert value["b"].format == "H" and value["b"].tolist() == [3]
    with pytest.raises(ivm.TransferError, match="ask for a copy"):
        await context.eval("({})")
    with pytest.raises(ivm.TransferError, match=r"a function at \$\.f"):
        await context.eval("({f() {}})", copy=True)
    ec = await context.eval("new Set(['x'])", external_copy=True)
    assert type(ec) is ivm.ExternalCopy and ec.copy() == {"x"}
    ec.release()
    context.eval_sync("globalThis.ab = new ArrayBuffer(3); 0")
    assert await context.eval("ab", copy=True, transfer_out=True) == bytes(3)
    assert await context.eval("ab.byteLength") == 0


@pytest.mark.anyio
async def test_async_script_run_with_copy(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = await isolate.compile_script("[new Date(1000), /x/g, new Error('e')]")
    value = await script.run(context, copy=True)
    assert value[0] == datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert value[1] == ivm.JSRegExp("x", "g")
    assert type(value[2]) is ivm.JSError and value[2].message == "e"
    with pytest.raises(ivm.TransferError):
        await script.run(context)


@pytest.mark.anyio
async def test_async_eval_closure_with_copy(context: ivm.Context) -> None:
    value = await context.eval_closure(
        "return [$0 instanceof Map, $1, $0]",
        [{1: "x"}, (1, 2)],
        arguments_options=COPY,
        result_options=COPY,
    )
    assert value[0] is True and value[1] == [1, 2]
    assert type(value[2]) is ivm.JSMap and dict(value[2]) == {1: "x"}
    with pytest.raises(ivm.TransferError, match="arguments_options"):
        await context.eval_closure("return 1", [[1]])
    with pytest.raises(ivm.TimeoutError):
        await context.eval_closure("return {get x() { for (;;) {} }}", result_options=COPY, timeout=0.2)
    value = await context.eval_closure(
        "return Promise.resolve(new Set($0))", [[1, 2]], arguments_options=COPY,
        result_options={"promise": True, "copy": True},
    )
    assert value == {1, 2}


@pytest.mark.anyio
async def test_eval_closure_ignored_with_copied_arguments(context: ivm.Context) -> None:
    context.eval_closure_ignored("globalThis.got = $0.a.get(2)", [{"a": {2: "two"}}], arguments_options=COPY)
    assert await context.eval("got") == "two"
    with pytest.raises(ivm.TransferError):
        context.eval_closure_ignored("1", [{"a": 1}])


# --- no leaks on the copy paths, failures included


def test_copy_paths_leak_nothing(no_leaks: None) -> None:
    iso = ivm.Isolate(memory_limit=64)
    try:
        ctx = iso.create_context_sync()
        for _ in range(3):
            assert ctx.eval_sync("({a: [1, new Uint8Array(2)]})", copy=True)["a"][0] == 1
            with pytest.raises(ivm.TransferError):
                ctx.eval_sync("({f() {}})", copy=True)
            with pytest.raises(ivm.TimeoutError):
                ctx.eval_sync("({get g() { for (;;) {} }})", copy=True, timeout=0.05)
            assert js_check(ctx, {"a": [1, b"x", {2: 3}]}, "$0.a[2].get(2)") == 3
            with pytest.raises(TypeError):
                js_check(ctx, [[1], object()], "1")
            with pytest.raises(ivm.TransferError):
                js_check(ctx, {float("nan"): 1, float("nan"): 2}, "1")
            ec = ctx.eval_sync("[new ArrayBuffer(4)]", external_copy=True, transfer_out=True)
            assert ctx.eval_closure_sync("return $0[0].byteLength", [ec.copy_into(transfer_in=True)]) == 4
            del ec
    finally:
        iso.dispose()


def test_set_copy_limit_from_python(context: ivm.Context) -> None:
    previous = ivm.set_copy_limit(1000)
    try:
        with pytest.raises(ivm.TransferError, match="copy size limit"):
            context.eval_sync("['x'.repeat(5000)]", copy=True)
        assert context.eval_sync("[1, 2]", copy=True) == [1, 2]
    finally:
        assert ivm.set_copy_limit(None) == 1000
    assert ivm.set_copy_limit(previous) == 2**31
    with pytest.raises(TypeError):
        ivm.set_copy_limit("big")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ivm.set_copy_limit(0)


def test_copies_in_leave_no_text_behind(context: ivm.Context, isolate: ivm.Isolate) -> None:
    """A copy of plain data into an isolate goes as JSON text (docs/values.md); the text must
    not outlive the call off V8's heap: as an external string it stayed until a full GC that a
    heap that barely grows never runs (2,000 copies of a 7 KB value kept 14 MB)."""
    rows = [{"id": i, "name": f"row{i}", "v": i / 4, "t": ["a", "é", "\u0100"]} for i in range(100)]
    for _ in range(2000):
        context.global_.set_sync("r", rows, copy=True)
    assert context.eval_sync("r.length") == 100
    assert isolate.get_heap_statistics_sync().external_memory < 1_000_000
