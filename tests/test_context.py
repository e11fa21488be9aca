"""ivm.Context: evaluation, what results become in Python, argument validation and
release."""

from __future__ import annotations

import math

import pytest

import ivm

# (JavaScript, expected Python value); floats are compared with their sign and NaN-ness.
PRIMITIVES: list[tuple[str, object]] = [
    ("6 * 7", 42),
    ("0", 0),
    ("-5", -5),
    ("2**53 - 1", 2**53 - 1),
    ("-(2**53 - 1)", -(2**53 - 1)),
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
    ("true", True),
    ("false", False),
    ("null", None),
    ("undefined", ivm.undefined),
    ("void 0", ivm.undefined),
    ("0n", 0),
    ("10n", 10),
    ("-1n", -1),
    ("2n**64n - 1n", 2**64 - 1),
    ("-(2n**64n)", -(2**64)),
    ("-(2n**200n)", -(2**200)),
    ("2n**70000n", 2**70000),
    ("'h\\u00e9llo'", "h\u00e9llo"),
    ("'\\ud800'", "\ud800"),
    ("'\\udfff\\ud800'", "\udfff\ud800"),
    ("'\\u{1F600}'", "\U0001f600"),
    ("'\\ud83d\\ude00'", "\U0001f600"),
    ("'a\\u0000b'", "a\x00b"),
    ('""', ""),
    ("'\u65e5\u672c'", "\u65e5\u672c"),
]


def same(actual: object, expected: object) -> bool:
    """Equal, of the same type, and for floats with the same sign (NaN equals NaN)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, float):
        assert isinstance(actual, float)
        if math.isnan(expected):
            return math.isnan(actual)
        return actual == expected and math.copysign(1, actual) == math.copysign(1, expected)
    return actual == expected


@pytest.mark.parametrize(("code", "expected"), PRIMITIVES, ids=[c for c, _ in PRIMITIVES])
def test_primitive_results(context: ivm.Context, code: str, expected: object) -> None:
    result = context.eval_sync(code)
    assert same(result, expected), f"{code} gave {result!r}"


def test_undefined_is_the_singleton(context: ivm.Context) -> None:
    assert context.eval_sync("undefined") is ivm.undefined
    assert context.eval_sync("") is ivm.undefined
    assert context.eval_sync("var x = 1") is ivm.undefined


def test_null_is_none_and_bools_are_bools(context: ivm.Context) -> None:
    assert context.eval_sync("null") is None
    assert context.eval_sync("1 < 2") is True
    assert context.eval_sync("1 > 2") is False


def test_integral_numbers_are_ints_and_others_floats(context: ivm.Context) -> None:
    assert type(context.eval_sync("3.0")) is int
    assert type(context.eval_sync("2**53")) is float
    assert type(context.eval_sync("0.5")) is float


def test_bigint_round_trips_at_every_word_boundary(context: ivm.Context) -> None:
    for bits in (63, 64, 65, 127, 128, 129, 1000):
        for sign in ("", "-"):
            value = context.eval_sync(f"{sign}(2n**{bits}n + 12345n)")
            expected = 2**bits + 12345
            assert value == (-expected if sign else expected), bits


def test_huge_string_result(context: ivm.Context) -> None:
    result = context.eval_sync("'x'.repeat(10 * 1024 * 1024)")
    assert isinstance(result, str)
    assert len(result) == 10 * 1024 * 1024
    assert result.count("x") == len(result)


def test_huge_two_byte_string_result(context: ivm.Context) -> None:
    result = context.eval_sync("'\\u00e9\\ud800'.repeat(1024 * 1024)")
    assert result == "\u00e9\ud800" * (1024 * 1024)


def test_non_ascii_source(context: ivm.Context) -> None:
    assert context.eval_sync("const caf\u00e9 = '\u65e5\u672c\U0001f600'; caf\u00e9") == (
        "\u65e5\u672c\U0001f600"
    )
    assert context.eval_sync("'\U0001f600'.length") == 2


def test_lone_surrogates_in_source_survive(context: ivm.Context) -> None:
    assert context.eval_sync("'\ud800'.length") == 1
    assert context.eval_sync("'\ud800'.charCodeAt(0)") == 0xD800
    assert context.eval_sync("'\udc00\ud800'") == "\udc00\ud800"
    # A surrogate pair written as two Python code points is one astral character in JS.
    assert context.eval_sync("'\ud83d\ude00' === '\\u{1F600}'") is True


def test_string_lengths_in_utf16(context: ivm.Context) -> None:
    assert context.eval_sync("'h\u00e9llo'.length") == 5


@pytest.mark.parametrize(
    ("code", "type_name"),
    [
        ("({})", "Object"),
        ("[1]", "Array"),
        ("(() => 1)", "Function"),
        ("Symbol()", "Symbol"),
        ("Symbol.iterator", "Symbol"),
        ("new Map()", "Map"),
        ("Promise.resolve(1)", "Promise"),
        ("new Date(0)", "Date"),
        ("new Uint8Array(2)", "Uint8Array"),
        ("new Error('x')", "Error"),
        ("/x/", "RegExp"),
        ("new Proxy({}, {})", "Proxy"),
    ],
)
def test_non_primitive_results_raise_transfer_error(
    context: ivm.Context, code: str, type_name: str
) -> None:
    with pytest.raises(ivm.TransferError) as info:
        context.eval_sync(code)
    assert type_name in str(info.value)
    assert isinstance(info.value, TypeError)


def test_transfer_error_does_not_run_hostile_code(context: ivm.Context) -> None:
    hostile = [
        "({ get [Symbol.toStringTag]() { while (true) {} } })",
        "new Proxy({}, { get() { while (true) {} }, getPrototypeOf() { while (true) {} } })",
        "Object.defineProperty({}, 'constructor', { get() { while (true) {} } })",
        "Object.setPrototypeOf({}, new Proxy({}, { get() { while (true) {} } }))",
    ]
    for code in hostile:
        with pytest.raises(ivm.TransferError):
            context.eval_sync(code, timeout=2)
    assert context.eval_sync("1") == 1


def test_context_usable_after_transfer_error(context: ivm.Context) -> None:
    with pytest.raises(ivm.TransferError):
        context.eval_sync("globalThis.o = {a: 1}; o")
    assert context.eval_sync("o.a") == 1


def test_result_options_are_validated_on_every_call(context: ivm.Context) -> None:
    # call_options keeps one struct per valid combination of result flags: a value that
    # equals a cached key (1 == True) must still be refused, and so must a bad combination.
    buf = "new Uint8Array([1]).buffer"
    for _ in range(2):
        assert context.eval_sync("[1]", copy=True) == [1]
        context.eval_sync(buf, external_copy=True, transfer_out=True).release()
        with pytest.raises(TypeError, match="copy must be a bool"):
            context.eval_sync("[1]", copy=1)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="transfer_out must be a bool"):
            context.eval_sync(buf, external_copy=True, transfer_out=1)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="exclusive"):
            context.eval_sync("[1]", copy=True, external_copy=True)
        with pytest.raises(ValueError, match="transfer_out needs"):
            context.eval_sync("[1]", transfer_out=True)
        with pytest.raises(TypeError, match="line_offset must be an int"):
            context.eval_sync("[1]", copy=True, line_offset=0.0)  # type: ignore[call-overload]
    # Context.eval_sync's C method takes result flags itself (ivm/_cffi_fast.c): the same
    # calls with a keyword name that is not interned, or another option, go to Python.
    assert context.eval_sync("[1]", **{"".join(["co", "py"]): True}) == [1]
    assert context.eval_sync("[2]", copy=True, timeout=5) == [2]
    assert context.eval_sync("[3]", copy=False, reference=True).copy_sync() == [3]


@pytest.mark.parametrize("code", [None, b"1", 1, 1.0, ["1"], object()])
def test_code_must_be_str(context: ivm.Context, code: object) -> None:
    with pytest.raises(TypeError):
        context.eval_sync(code)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf])
def test_timeout_value_is_validated(context: ivm.Context, timeout: float) -> None:
    with pytest.raises(ValueError):
        context.eval_sync("1", timeout=timeout)


@pytest.mark.parametrize("timeout", ["1", b"1", True, [1]])
def test_timeout_type_is_validated(context: ivm.Context, timeout: object) -> None:
    with pytest.raises(TypeError):
        context.eval_sync("1", timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [None, 1, 0.5, 3600])
def test_valid_timeouts(context: ivm.Context, timeout: float | None) -> None:
    assert context.eval_sync("1 + 1", timeout=timeout) == 2


def test_a_tiny_timeout_is_a_valid_value(context: ivm.Context) -> None:
    # 1 ms is accepted (no ValueError); on a loaded machine it may really expire.
    try:
        assert context.eval_sync("1 + 1", timeout=1e-3) == 2
    except ivm.TimeoutError:
        pass
    assert context.eval_sync("2 + 2") == 4


def test_tiny_timeout_stops_an_infinite_loop(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync("while (true) {}", timeout=1e-9)
    assert context.eval_sync("3") == 3


def test_source_options_are_validated(context: ivm.Context) -> None:
    with pytest.raises(TypeError):
        context.eval_sync("1", filename=b"x.js")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        context.eval_sync("1", line_offset=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        context.eval_sync("1", column_offset="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        context.eval_sync("1", line_offset=2**40)


def test_release_is_idempotent_then_calls_raise(isolate: ivm.Isolate) -> None:
    context = isolate.create_context_sync()
    context.release()
    context.release()
    with pytest.raises(ivm.DisposedError):
        context.eval_sync("1")
    assert not isolate.is_disposed
    assert isolate.create_context_sync().eval_sync("2") == 2


def test_context_manager_releases(isolate: ivm.Isolate) -> None:
    with isolate.create_context_sync() as context:
        assert context.eval_sync("1") == 1
    with pytest.raises(ivm.DisposedError):
        context.eval_sync("1")
    assert not isolate.is_disposed


def test_context_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError):
        ivm.Context()


def test_context_knows_its_isolate(isolate: ivm.Isolate, context: ivm.Context) -> None:
    assert context.isolate is isolate


def test_globals_persist_within_a_context(context: ivm.Context) -> None:
    context.eval_sync("var a = 1; let b = 2; const c = 3; globalThis.d = 4; function f() { return 5 }")
    assert context.eval_sync("a + b + c + d + f()") == 15
    context.eval_sync("a++")
    assert context.eval_sync("a") == 2


def test_globals_are_separate_between_contexts(isolate: ivm.Isolate) -> None:
    one = isolate.create_context_sync()
    two = isolate.create_context_sync()
    one.eval_sync("globalThis.x = 'one'; Array.prototype.extra = 1")
    assert two.eval_sync("typeof x") == "undefined"
    assert two.eval_sync("typeof [].extra") == "undefined"
    two.eval_sync("globalThis.x = 'two'")
    assert one.eval_sync("x") == "one"
    assert two.eval_sync("x") == "two"


def test_contexts_have_standard_globals_and_no_host_ones(context: ivm.Context) -> None:
    assert context.eval_sync("typeof Math.max + typeof JSON.parse") == "functionfunction"
    for name in ("require", "process", "module", "fetch", "setTimeout"):
        assert context.eval_sync(f"typeof {name}") == "undefined", name


def test_eval_in_released_isolate_context_after_gc(isolate: ivm.Isolate) -> None:
    context = isolate.create_context_sync()
    isolate.dispose()
    with pytest.raises(ivm.DisposedError):
        context.eval_sync("1")
    context.release()


def test_microtasks_run_before_eval_returns(context: ivm.Context) -> None:
    context.eval_sync("globalThis.log = []; Promise.resolve().then(() => log.push('then')); 0")
    assert context.eval_sync("log.join()") == "then"


def test_eval_does_not_leak(no_leaks: None) -> None:
    isolate = ivm.Isolate(memory_limit=64)
    context = isolate.create_context_sync()
    for code in ("1", "'s'", "10n**100n", "undefined", "null", "({})", "throw new Error('x')"):
        try:
            context.eval_sync(code)
        except ivm.IvmError:
            pass
    context.release()
    isolate.dispose()
    del context, isolate


@pytest.mark.parametrize("declaration", ["const a = 1", "let a = 1", "class a {}"])
def test_same_code_with_lexical_declaration_twice(context: ivm.Context, declaration: str) -> None:
    # Evaluated code is cached per context; a top-level lexical declaration must be
    # re-declared (a SyntaxError), never re-run from the cached function (V8 10.2 crashes).
    assert context.eval_sync(f"{declaration}; 7") == 7
    for _ in range(2):
        with pytest.raises(ivm.JSError) as info:
            context.eval_sync(f"{declaration}; 7")
        assert info.value.name == "SyntaxError"
        assert "already been declared" in info.value.message


def test_same_code_without_declarations_runs_again(context: ivm.Context) -> None:
    context.eval_sync("var n = 0")
    for i in range(1, 4):
        assert context.eval_sync("++n") == i
