"""The synchronous call path shared by Context.eval_sync, Script.run_sync and
Reference.apply_sync (ivm/_call.py and its C helpers, ivm/_cffi_fast.c): one
result rule for all three, inline and in a worker process."""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest

import ivm

# (JavaScript expression, expected Python value): the number rule's edges and every
# primitive kind the result slot carries.
CASES: list[tuple[str, Any]] = [
    ("1 + 1", 2),
    ("-1", -1),
    ("0", 0),
    ("2 ** 53 - 1", 2**53 - 1),
    ("-(2 ** 53 - 1)", -(2**53 - 1)),
    ("2 ** 53", float(2**53)),
    ("-(2 ** 53)", -float(2**53)),
    ("1.5", 1.5),
    ("-0.5", -0.5),
    ("1e300", 1e300),
    ("Infinity", math.inf),
    ("-Infinity", -math.inf),
    ("undefined", ivm.undefined),
    ("null", None),
    ("true", True),
    ("false", False),
    ("'text'", "text"),
    ("10n ** 20n", 10**20),
]

Call = Callable[[ivm.Context, str], Any]


def _eval(ctx: ivm.Context, expr: str) -> Any:
    return ctx.eval_sync(expr)


def _run(ctx: ivm.Context, expr: str) -> Any:
    return ctx.isolate.compile_script_sync(expr).run_sync(ctx)


def _apply(ctx: ivm.Context, expr: str) -> Any:
    fn = ctx.eval_sync(f"(() => ({expr}))", reference=True)
    return fn.apply_sync(None, [])


def _apply_with_options(ctx: ivm.Context, expr: str) -> Any:
    fn = ctx.eval_sync(f"(function () {{ return ({expr}); }})", reference=True)
    return fn.apply_sync("this", [], timeout=5)


# With an option each: the helpers that take option structs (the calls above, all options
# default, take the *_PLAIN ones).
def _eval_with_options(ctx: ivm.Context, expr: str) -> Any:
    return ctx.eval_sync(expr, timeout=5)


def _run_with_options(ctx: ivm.Context, expr: str) -> Any:
    return ctx.isolate.compile_script_sync(expr).run_sync(ctx, timeout=5)


CALLS = [_eval, _run, _apply, _apply_with_options, _eval_with_options, _run_with_options]


def _same(got: Any, want: Any) -> bool:
    return type(got) is type(want) and (got == want or (got != got and want != want))


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__.strip("_"))
@pytest.mark.parametrize(("expr", "want"), CASES, ids=[c[0] for c in CASES])
def test_every_call_converts_a_result_alike(
    any_context: ivm.Context, call: Call, expr: str, want: Any
) -> None:
    got = call(any_context, expr)
    assert _same(got, want), (expr, got, want)


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__.strip("_"))
def test_minus_zero_and_nan_stay_floats(any_context: ivm.Context, call: Call) -> None:
    zero = call(any_context, "-0")
    assert type(zero) is float and zero == 0 and math.copysign(1.0, zero) < 0
    nan = call(any_context, "NaN")
    assert type(nan) is float and math.isnan(nan)


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__.strip("_"))
def test_an_error_raises_and_the_next_call_is_clean(any_context: ivm.Context, call: Call) -> None:
    with pytest.raises(ivm.JSError, match="boom"):
        call(any_context, "(() => { throw new Error('boom'); })()")
    assert call(any_context, "40 + 2") == 42


def test_an_object_result_is_refused_on_every_path(context: ivm.Context) -> None:
    for call in CALLS:
        with pytest.raises(ivm.TransferError):
            call(context, "({a: 1})")
    assert context.eval_sync("({a: 1})", copy=True) == {"a": 1}


def test_nested_calls_on_one_thread_keep_their_own_results(context: ivm.Context) -> None:
    # A host function makes each kind of call while the outer call runs: the thread's
    # output slots are reused, and every result is read before the next call.
    script = context.isolate.compile_script_sync("2.5")
    fn = context.eval_sync("(a, b) => a * b", reference=True)

    def inner(x: int) -> list[Any]:
        return [context.eval_sync(f"{x} + 1"), script.run_sync(context), fn.apply_sync(None, [x, 3])]

    context.global_.set_sync("inner", ivm.Callback(inner))
    got = context.eval_sync("const r = inner(7); r.push(-0); r", copy=True)
    assert got[:3] == [8, 2.5, 21] and math.copysign(1.0, got[3]) < 0
    assert context.eval_sync("'after'") == "after"


def test_calls_made_inside_a_call_on_another_isolate_keep_their_results(
    placement: str, any_context: ivm.Context, context: ivm.Context
) -> None:
    # The outer call runs in any_context's isolate (inline or in a worker process); its host
    # function calls the inline `context` every way, then JavaScript calls into it through a
    # Reference (a call on this thread that no Python call started).
    fn = context.eval_sync("(a) => a + 0.5", reference=True)
    script = context.isolate.compile_script_sync("null")

    def inner(x: int) -> list[Any]:
        return [
            context.eval_sync(f"{x} * 2"),
            context.eval_closure_sync("return $0 > 1", [x]),
            script.run_sync(context),
            fn.apply_sync(None, [x]),
            context.eval_sync("'text'"),
        ]

    any_context.global_.set_sync("inner", ivm.Callback(inner))
    assert any_context.eval_sync("inner(3)", copy=True) == [6, True, None, 3.5, "text"]
    assert any_context.eval_sync("inner(4)[0] + 1") == 9
    if placement == "inline":
        any_context.global_.set_sync("fn", fn)
        assert any_context.eval_sync("fn.applySync(undefined, [1]) + fn.applySync(undefined, [2])") == 4


# --- the sync methods' options: taken as **options for speed (ivm/_call.options_in),
# shown and checked as the keyword-only parameters they are.

SYNC_METHODS: list[tuple[Any, list[str]]] = [
    (ivm.Context.eval_sync, [
        "self", "code", "timeout", "filename", "line_offset", "column_offset", "promise",
        "copy", "external_copy", "transfer_out", "reference",
    ]),
    (ivm.Script.run_sync, [
        "self", "context", "timeout", "promise", "copy", "external_copy", "transfer_out",
        "reference", "release",
    ]),
    (ivm.Reference.apply_sync, [
        "self", "receiver", "arguments", "arguments_options", "result_options", "timeout",
    ]),
    (ivm.Reference.set_sync, ["self", "key", "value", "copy", "timeout"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "method, names", SYNC_METHODS, ids=lambda m: getattr(m, "__qualname__", "")
)
def test_a_sync_method_shows_its_keyword_only_options(method: Any, names: list[str]) -> None:
    import inspect

    params = inspect.signature(method).parameters
    assert list(params) == names
    first_option = 3 if method in (ivm.Reference.apply_sync, ivm.Reference.set_sync) else 2
    for name in names[first_option:]:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert "Returns" in (method.__doc__ or "") or "returns" in (method.__doc__ or "")
    # The call without options fills no keyword-only defaults (the point of the split);
    # the C methods (ivm/_cffi_fast.c) have none at all.
    assert not getattr(method, "__kwdefaults__", None)


def test_a_bad_keyword_or_positional_raises_as_python_would(context: ivm.Context) -> None:
    script = context.isolate.compile_script_sync("1")
    fn = context.eval_sync("(a) => a", reference=True)
    unexpected = r"\(\) got an unexpected keyword argument "
    with pytest.raises(TypeError, match=r"^Context\.eval_sync" + unexpected + "'tmeout'"):
        context.eval_sync("1", tmeout=1)
    with pytest.raises(TypeError, match=r"^Context\.eval_sync\(\) takes 2 positional arguments but 3"):
        context.eval_sync("1", 2)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"^Script\.run_sync" + unexpected + "'copyy'"):
        script.run_sync(context, copyy=True)
    with pytest.raises(TypeError, match=r"^Reference\.apply_sync" + unexpected + "'x'"):
        fn.apply_sync(None, [1], x=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Reference\.apply_sync\(\) takes from 2 to 3 positional"):
        fn.apply_sync(None, [1], None)  # type: ignore[misc]
    with pytest.raises(TypeError, match="timeout must be a number"):
        context.eval_sync("1", timeout="1")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="code must be a str"):
        context.eval_sync(b"1")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="release must be a bool"):
        script.run_sync(context, release=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="context must be an ivm.Context"):
        script.run_sync(None)  # type: ignore[call-overload]
    # Options given at their defaults take the options path, with the same results.
    assert context.eval_sync("1+1", timeout=None, copy=False) == 2
    assert script.run_sync(context, release=False) == 1
    assert fn.apply_sync(None, [3], timeout=None) == 3


@pytest.mark.parametrize("options", [{}, {"timeout": 5}], ids=["plain", "with-options"])
def test_an_argument_that_cannot_pass_frees_the_ones_before_it(
    context: ivm.Context, options: dict[str, Any]
) -> None:
    # The first argument becomes a libivm value before the second is refused; the refusal
    # must free it, on the lean path (no options) and on the full one alike. The count is
    # taken after a first call, which makes the lean path's shared small-integer values.
    from ivm._ffi import lib

    fn = context.eval_sync("(a, b) => a.length + b", reference=True)
    assert fn.apply_sync(None, ["text", 1], **options) == 5
    before = lib.ivm_debug_live_objects()
    for _ in range(20):
        with pytest.raises(ivm.TransferError, match="not a primitive"):
            fn.apply_sync(None, ["text", object()], **options)
    assert lib.ivm_debug_live_objects() == before


# --- Reference.apply_sync(None, arguments) without options: one C call (APPLY_FAST in
# ivm/_cffi_fast.c) converts the arguments and a primitive result. Each case is compared
# with the same call made with an option (the general path, arguments converted in Python).

_IDENTITY = "(x) => x"
# What JavaScript sees of its argument: the type, -0 apart, and the value as text.
_SEEN = "(x) => typeof x + ':' + (Object.is(x, -0) ? '-0' : String(x))"

ARGUMENTS: list[Any] = [
    0, 1, -1, -128, -129, 1023, 1024, 123456789,
    2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 2**53 + 1, 2**64, -(2**70),
    0.0, -0.0, 1.5, -2.25, 1e300, 5e-324, math.inf, -math.inf, math.nan, 3.0,
    True, False, None, ivm.undefined,
    "", "text", "é", "日本", "\ud800", "a\udfffb", "\U0001f600", "a\x00b", "x" * 10_000,
]  # fmt: skip


def _plain_and_general(fn: ivm.Reference, args: Any) -> tuple[Any, Any]:
    return fn.apply_sync(None, args), fn.apply_sync(None, args, timeout=30)


@pytest.mark.parametrize("arg", ARGUMENTS, ids=lambda a: repr(a)[:20])
def test_apply_passes_each_argument_kind_as_the_general_path_does(
    any_context: ivm.Context, arg: Any
) -> None:
    seen = any_context.eval_sync(_SEEN, reference=True)
    identity = any_context.eval_sync(_IDENTITY, reference=True)
    plain, general = _plain_and_general(seen, [arg])
    assert type(plain) is str and plain == general
    plain, general = _plain_and_general(identity, (arg,))
    assert _same(plain, general), (arg, plain, general)
    if type(arg) is float:
        assert math.copysign(1.0, plain) == math.copysign(1.0, arg)


def test_apply_argument_numbers_keep_the_int_rule(context: ivm.Context) -> None:
    seen = context.eval_sync(_SEEN, reference=True)
    assert seen.apply_sync(None, [2**53 - 1]) == "number:9007199254740991"
    assert seen.apply_sync(None, [-(2**53 - 1)]) == "number:-9007199254740991"
    assert seen.apply_sync(None, [2**53]) == "bigint:9007199254740992"
    assert seen.apply_sync(None, [-(2**53)]) == "bigint:-9007199254740992"
    assert seen.apply_sync(None, [-0.0]) == "number:-0"
    assert seen.apply_sync(None, [1023]) == "number:1023"
    assert seen.apply_sync(None, [None]) == "object:null"
    assert seen.apply_sync(None, [ivm.undefined]) == "undefined:undefined"
    assert seen.apply_sync(None, [True]) == "boolean:true"
    length = context.eval_sync("(s) => s.length + ':' + s.codePointAt(0)", reference=True)
    assert length.apply_sync(None, ["\U0001f600"]) == "2:128512"
    assert length.apply_sync(None, ["\ud800"]) == "1:55296"


def test_apply_takes_many_arguments_and_any_sequence_as_before(context: ivm.Context) -> None:
    count = context.eval_sync("(...a) => a.length + ':' + a.join(',')", reference=True)
    for n in (0, 1, 7, 8, 9, 20):
        args = list(range(n))
        want = f"{n}:{','.join(map(str, args))}"
        assert count.apply_sync(None, args) == want
        assert count.apply_sync(None, tuple(args)) == want
    # A list subclass, an iterator: the general path, as before.
    assert count.apply_sync(None, type("L", (list,), {})([1, 2])) == "2:1,2"
    assert count.apply_sync(None, iter([3, 4])) == "2:3,4"  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="arguments must be a list or tuple"):
        count.apply_sync(None, "ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="arguments must be a list or tuple"):
        count.apply_sync(None, 5)  # type: ignore[arg-type]
    assert count.apply_sync("this", [1]) == "1:1"


class _Int(int):
    pass


class _Str(str):
    pass


class _Float(float):
    pass


@pytest.mark.parametrize("arg", [_Int(3), _Str("s"), _Float(1.5), object(), b"x", [1], {}])
def test_apply_refuses_what_the_general_path_refuses(context: ivm.Context, arg: Any) -> None:
    fn = context.eval_sync(_IDENTITY, reference=True)
    for args in ([arg], [1, "two", arg], (2.5, arg)):
        with pytest.raises(ivm.TransferError, match="not a primitive") as plain:
            fn.apply_sync(None, args)
        with pytest.raises(ivm.TransferError, match="not a primitive") as general:
            fn.apply_sync(None, args, timeout=30)
        assert str(plain.value) == str(general.value)


def test_apply_frees_the_values_it_makes(context: ivm.Context) -> None:
    from ivm._ffi import lib

    fn = context.eval_sync("(...a) => a.length", reference=True)
    args: list[Any] = [1.5, "text", "日本", 5000, 2**60, None, True, ivm.undefined]
    assert fn.apply_sync(None, args) == 8
    thrower = context.eval_sync("(s) => { throw new Error(s); }", reference=True)
    with pytest.raises(ivm.TransferError):
        fn.apply_sync(None, [1.5, "text", object()])
    import gc

    gc.collect()
    before = lib.ivm_debug_live_objects()
    for _ in range(50):
        assert fn.apply_sync(None, args) == 8
        assert fn.apply_sync(None, args[:3]) == 3
        with pytest.raises(ivm.TransferError):
            fn.apply_sync(None, [1.5, "text", object()])
        with pytest.raises(ivm.JSError, match="boom"):
            thrower.apply_sync(None, ["boom", 1.5])
    gc.collect()
    assert lib.ivm_debug_live_objects() == before


def test_apply_results_convert_as_the_general_path_does(any_context: ivm.Context) -> None:
    fn = any_context.eval_sync("(k) => RESULTS[k]", reference=True)
    any_context.eval_sync(
        "globalThis.RESULTS = [1, -0, NaN, 2**53, 0.5, 'é\\ud800😀', '', true, false, null,"
        " undefined, 10n, 2**31, -(2**53 - 1)]; 0"
    )
    for k in range(14):
        plain, general = _plain_and_general(fn, [k])
        assert _same(plain, general), (k, plain, general)
    assert fn.apply_sync(None, [5]) == "é\ud800\U0001f600"
    with pytest.raises(ivm.TransferError):
        any_context.eval_sync("() => [1]", reference=True).apply_sync(None, [])
    assert any_context.eval_sync("() => [1]", reference=True).apply_sync(
        None, [], result_options={"copy": True}
    ) == [1]


def test_apply_raises_javascript_errors_as_the_general_path_does(any_context: ivm.Context) -> None:
    fn = any_context.eval_sync(
        "(kind) => { if (kind === 1) throw new TypeError('bad ' + kind); throw kind; }",
        reference=True,
    )
    for arg in (1, "thrown", 2.5):
        with pytest.raises(Exception) as plain:
            fn.apply_sync(None, [arg])
        with pytest.raises(Exception) as general:
            fn.apply_sync(None, [arg], timeout=30)
        assert type(plain.value) is type(general.value)
        assert str(plain.value) == str(general.value)
    with pytest.raises(ivm.JSError, match="bad 1"):
        fn.apply_sync(None, (1,))


# --- Reference.set_sync(key, value) without options: a C method (ivm/_cffi_fast.c) converts
# the key and a primitive value as APPLY_FAST does, or passes a copy_into() marker's own
# value. Each case is compared with the same set made with an option (the general path).


@pytest.mark.parametrize("value", ARGUMENTS, ids=lambda a: repr(a)[:20])
def test_set_passes_each_value_kind_as_the_general_path_does(
    any_context: ivm.Context, value: Any
) -> None:
    target = any_context.eval_sync("globalThis.T = {}; T", reference=True)
    assert target.set_sync("plain", value) is True
    assert target.set_sync("general", value, timeout=30) is True
    seen = any_context.eval_sync(f"({_SEEN})", reference=True)
    assert any_context.eval_sync("Object.is(T.plain, T.general)") is True, value
    assert seen.apply_sync(None, [value]) == any_context.eval_sync(f"({_SEEN})(T.plain)")


@pytest.mark.parametrize("key", ["k", "", "é", "\ud800", 0, 7, -1, 2**53 - 1, 2**53, 2**64])
def test_set_takes_each_key_as_the_general_path_does(any_context: ivm.Context, key: Any) -> None:
    plain = any_context.eval_sync("globalThis.P = {}; P", reference=True)
    general = any_context.eval_sync("globalThis.G = {}; G", reference=True)
    assert plain.set_sync(key, 5) is True
    assert general.set_sync(key, 5, timeout=30) is True
    assert any_context.eval_sync("JSON.stringify(Object.keys(P))") == any_context.eval_sync(
        "JSON.stringify(Object.keys(G))"
    )


@pytest.mark.parametrize(
    "key, value, error",
    [
        (True, 1, TypeError), (1.5, 1, TypeError), (None, 1, TypeError), (b"k", 1, TypeError),
        (_Str("k"), 1, TypeError), ("k", object(), ivm.TransferError),
        ("k", [1], ivm.TransferError), ("k", b"x", ivm.TransferError),
        (1.5, object(), ivm.TransferError),
    ],
)  # fmt: skip
def test_set_refuses_what_the_general_path_refuses(
    context: ivm.Context, key: Any, value: Any, error: type[BaseException]
) -> None:
    from ivm._ffi import lib

    import gc

    target = context.global_
    assert target.set_sync("warm", 1) is True  # (the shared small-integer values exist)
    gc.collect()
    before = lib.ivm_debug_live_objects()
    with pytest.raises(error) as plain:
        target.set_sync(key, value)
    with pytest.raises(error) as general:
        target.set_sync(key, value, timeout=30)
    assert str(plain.value) == str(general.value)
    assert lib.ivm_debug_live_objects() == before


def test_set_passes_a_copy_into_marker_as_the_general_path_does(any_context: ivm.Context) -> None:
    target = any_context.global_
    copy = ivm.ExternalCopy({"a": [1, 2]})
    marker = copy.copy_into()
    # A marker without transfer_in passes as often as wanted, on both paths.
    assert target.set_sync("m1", marker) is True
    assert target.set_sync("m2", marker, timeout=30) is True
    assert target.set_sync("m3", marker) is True
    assert any_context.eval_sync("JSON.stringify([m1, m2, m3])") == '[' + ','.join(['{"a":[1,2]}'] * 3) + ']'
    assert any_context.eval_sync("m1 !== m3") is True  # a new copy each time
    assert copy.copy() == {"a": [1, 2]}
    # A transferring marker passes once; then both paths refuse it alike.
    source = any_context.eval_sync("new Uint8Array([1, 2, 3]).buffer", external_copy=True)
    moving = source.copy_into(release=True, transfer_in=True)
    assert target.set_sync("moved", moving) is True
    assert any_context.eval_sync("new Uint8Array(moved).join()") == "1,2,3"
    with pytest.raises(ivm.IvmError) as plain:
        target.set_sync("again", moving)
    with pytest.raises(ivm.IvmError) as general:
        target.set_sync("again", moving, timeout=30)
    assert type(plain.value) is type(general.value) and str(plain.value) == str(general.value)
    # copy=True takes the general path, which writes the marker into a copied value.
    assert target.set_sync("copied", copy.copy_into(), copy=True) is True
    assert any_context.eval_sync("copied.a[1]") == 2


@pytest.mark.parametrize("inner", [12345, "x", None], ids=repr)
def test_set_refuses_a_marker_not_made_by_copy_into_on_both_paths(
    context: ivm.Context, inner: Any
) -> None:
    # ivm.CopyInto is public: one made by hand holds no libivm value. (The C path read its
    # address and crashed the process in the first version.)
    target = context.global_
    with pytest.raises(TypeError) as plain:
        target.set_sync("k", ivm.CopyInto(inner))
    with pytest.raises(TypeError) as general:
        target.set_sync("k", ivm.CopyInto(inner), timeout=30)
    assert str(plain.value) == str(general.value)
    assert context.eval_sync("typeof k") == "undefined"


def test_set_holds_a_markers_value_while_the_call_runs(context: ivm.Context) -> None:
    # The C path borrows the marker's value with the GIL released: another thread that
    # drops the marker's hold on it meanwhile must free nothing under the call.
    import gc
    import threading
    import time

    from ivm._ffi import lib

    context.eval_sync(
        "globalThis.T = {}; Object.defineProperty(T, 'k', { set(v) {"
        " const end = Date.now() + 200; while (Date.now() < end) {}"
        " globalThis.got = JSON.stringify(v); } }); 0"
    )
    target = context.eval_sync("T", reference=True)
    marker = ivm.ExternalCopy({"rows": list(range(100))}).copy_into()
    assert lib.ivm_py_marker_address(marker._value) != 0  # type: ignore[attr-defined]

    def drop() -> None:
        time.sleep(0.05)
        marker._value = None  # type: ignore[attr-defined]
        gc.collect()

    dropper = threading.Thread(target=drop)
    dropper.start()
    assert target.set_sync("k", marker) is True
    dropper.join()
    assert context.eval_sync("got") == '{"rows":[' + ",".join(map(str, range(100))) + "]}"


@pytest.mark.parametrize("inner", ["text", "array"])
def test_set_passes_only_a_copy_into_value_as_it_is(context: ivm.Context, inner: str) -> None:
    # The C path passes a CopyInto's value as it is only when it is what copy_into() makes
    # (ivm_py_marker_address); any other libivm value in a marker takes the general path,
    # as before the C path (which attaches it, or refuses it).
    from ivm._copy import dumps
    from ivm._ffi import ffi, lib

    marker = ivm.ExternalCopy([1]).copy_into()
    if inner == "text":
        value = ffi.gc(lib.ivm_value_new_string(b"x", 1), lib.ivm_value_free)
    else:  # a copy of [marker]: one copy attachment, but not the marker's stream
        value = ffi.gc(dumps([marker]), lib.ivm_value_free)
    marker._value = value  # type: ignore[attr-defined]
    if inner == "text":
        for options in ({}, {"timeout": 30}):
            with pytest.raises(ValueError, match="not a marker"):
                context.global_.set_sync("k", marker, **options)
        assert context.eval_sync("typeof k") == "undefined"
    else:  # the general path attaches the array's one attachment, on both paths
        assert context.global_.set_sync("k", marker) is True
        assert context.global_.set_sync("g", marker, timeout=30) is True
        assert context.eval_sync("JSON.stringify([k, g])") == "[[1],[1]]"


def test_set_frees_the_values_it_makes(context: ivm.Context) -> None:
    import gc

    from ivm._ffi import lib

    target = context.eval_sync("globalThis.T = {}; T", reference=True)
    copy = ivm.ExternalCopy([1, 2, 3])
    values: list[Any] = ["text", "日本", 1.5, 5000, 7, None, True, ivm.undefined, 2**60]
    for v in values:
        assert target.set_sync("k", v) is True
    gc.collect()
    before = lib.ivm_debug_live_objects()
    for _ in range(30):
        for i, v in enumerate(values):
            assert target.set_sync(f"k{i}", v) is True
            assert target.set_sync(i, v) is True
        assert target.set_sync("c", copy.copy_into()) is True
        with pytest.raises(ivm.TransferError):
            target.set_sync("text key", object())
    gc.collect()
    assert lib.ivm_debug_live_objects() == before


def test_set_on_a_released_or_disposed_reference_raises(any_isolate: ivm.Isolate) -> None:
    ctx = any_isolate.create_context_sync()
    obj = ctx.eval_sync("({})", reference=True)
    other = ctx.eval_sync("({})", reference=True)
    assert obj.set_sync("a", 1) is True
    obj.release()
    for value in (1, "s", ivm.ExternalCopy(1).copy_into()):
        with pytest.raises(ivm.DisposedError):
            obj.set_sync("a", value)
    any_isolate.dispose()
    with pytest.raises(ivm.DisposedError):
        other.set_sync("a", 1)
    with pytest.raises(ivm.DisposedError):
        other.set_sync("a", 1, timeout=5)


def test_a_setter_that_throws_raises_on_both_paths(any_context: ivm.Context) -> None:
    obj = any_context.eval_sync(
        "({ set boom(v) { throw new RangeError('no ' + v); } })", reference=True
    )
    frozen = any_context.eval_sync("Object.freeze({ a: 1 })", reference=True)
    for options in ({}, {"timeout": 30}):
        with pytest.raises(ivm.JSError, match="no 3"):
            obj.set_sync("boom", 3, **options)
        assert frozen.set_sync("a", 2, **options) is True  # ignored, as in sloppy mode
    assert any_context.eval_sync("1") == 1


@pytest.mark.parametrize("used_before", [False, True], ids=["fresh", "used"])
def test_a_released_or_disposed_reference_raises_as_before(
    any_isolate: ivm.Isolate, used_before: bool
) -> None:
    ctx = any_isolate.create_context_sync()
    fn = ctx.eval_sync("(a) => a", reference=True)
    other = ctx.eval_sync("(a) => a", reference=True)
    if used_before:
        assert fn.apply_sync(None, [1]) == 1
        assert other.apply_sync(None, ["x"]) == "x"
    fn.release()
    for args in ([], [1], ["s", 2.5]):
        with pytest.raises(ivm.DisposedError):
            fn.apply_sync(None, args)
    any_isolate.dispose()
    with pytest.raises(ivm.DisposedError):
        other.apply_sync(None, [1])
    with pytest.raises(ivm.DisposedError):
        other.apply_sync(None, [1], timeout=5)


def test_apply_inside_apply_keeps_each_result(context: ivm.Context) -> None:
    inner = context.eval_sync("(a, b) => a + '/' + b", reference=True)
    context.global_.set_sync("host", ivm.Callback(lambda x: [inner.apply_sync(None, [x, 2.5])]))
    outer = context.eval_sync("(x) => host(x).length + ':' + x", reference=True)
    assert outer.apply_sync(None, ["é"]) == "1:é"
    back = context.eval_sync("(x) => { const r = host(x); return typeof r; }", reference=True)
    assert back.apply_sync(None, [7]) == "object"


def test_apply_from_many_threads(context: ivm.Context) -> None:
    import threading

    fn = context.eval_sync("(a, b) => a + (typeof b === 'string' ? b.length : b)", reference=True)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(300):
                assert fn.apply_sync(None, [i, f"t{t}" * t]) == i + 2 * t
                assert fn.apply_sync(None, (i, t + 0.5)) == i + t + 0.5
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def test_apply_sync_takes_every_call_form(context: ivm.Context) -> None:
    # Reference.apply_sync is a C method that hands every call but the plain one to
    # Reference._apply_sync with the same arguments.
    fn = context.eval_sync(
        "'use strict'; (function () { return (this === undefined) + ':' + [...arguments].join(','); })",
        reference=True,
    )
    assert fn.apply_sync(None) == "true:"
    assert fn.apply_sync(None, [1, "b"]) == "true:1,b"
    assert fn.apply_sync(receiver=None, arguments=[2]) == "true:2"
    assert fn.apply_sync(None, arguments=(3,)) == "true:3"
    assert ivm.Reference.apply_sync(fn, None, [4]) == "true:4"
    assert fn.apply_sync({}, [5], arguments_options={"copy": True}) == "false:5"
    assert fn.apply_sync(None, [[6, 7]], arguments_options={"copy": True}) == "true:6,7"
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'receiver'"):
        fn.apply_sync()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ivm.Reference.apply_sync(object(), None, [])  # type: ignore[arg-type]
    host = ivm.Reference(lambda a: a + 1)
    assert host.apply_sync(None, [1]) == 2


def test_eval_and_run_take_every_call_form(context: ivm.Context) -> None:
    # Context.eval_sync and Script.run_sync are C methods (ivm/_cffi_fast.c) for the call
    # without options; every other call goes to their Python twins with the same arguments.
    script = context.isolate.compile_script_sync("'s' + 1")
    assert context.eval_sync("'\ud800é\U0001f600'") == "\ud800é\U0001f600"
    assert context.eval_sync("'\ud800'.length + '\U0001f600'.length") == 3
    assert context.eval_sync("") is ivm.undefined
    assert context.eval_sync(code="2 + 2") == 4
    assert context.eval_sync(type("S", (str,), {})("3 + 3")) == 6
    assert ivm.Context.eval_sync(context, "5") == 5
    assert script.run_sync(context) == "s1"
    assert script.run_sync(context=context) == "s1"
    assert ivm.Script.run_sync(script, context) == "s1"
    assert script.run_sync(context, release=True) == "s1"
    with pytest.raises(ivm.DisposedError):
        script.run_sync(context)
    with pytest.raises(TypeError, match="context must be an ivm.Context"):
        context.isolate.compile_script_sync("1").run_sync(type("C", (ivm.Context,), {}))
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'code'"):
        context.eval_sync()  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        ivm.Context.eval_sync(object(), "1")  # type: ignore[arg-type]
    with pytest.raises(ivm.JSError, match="boom"):
        context.eval_sync("throw new Error('boom')")
    context.release()
    with pytest.raises(ivm.DisposedError):
        context.eval_sync("1")


_REIMPORT_CHILD = """
import sys
import ivm
first = ivm.Isolate()
old = first.create_context_sync()
for name in [m for m in sys.modules if m == "ivm" or m.startswith("ivm.")]:
    del sys.modules[name]
import ivm as again
assert again is not ivm
iso = again.Isolate()
ctx = iso.create_context_sync()
fn = ctx.eval_sync("(a, b) => a + b", reference=True)
script = iso.compile_script_sync("6 * 7")
print(ctx.eval_sync("1 + 1"), fn.apply_sync(None, [2, 3]), script.run_sync(ctx),
      old.eval_sync("'old'"), flush=True)
"""


def _child(code: str, **env: str) -> list[str]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(ivm.__file__).parent.parent,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def test_ivm_imported_again_after_sys_modules_was_purged_still_calls() -> None:
    # (ivm/_cffi_fast.c refused to install its C methods a second time: ImportError.)
    assert _child(_REIMPORT_CHILD) == ["2", "5", "42", "old"]


_KNOB_CHILD = """
import types
import ivm
iso = ivm.Isolate()
ctx = iso.create_context_sync()
fn = ctx.eval_sync("(a, b) => a + b", reference=True)
script = iso.compile_script_sync("6 * 7")
python = all(isinstance(m, types.FunctionType)
             for m in (ivm.Context.eval_sync, ivm.Reference.apply_sync, ivm.Script.run_sync,
                       ivm.Reference.set_sync, ivm.ExternalCopy.copy_into))
python = python and isinstance(vars(ivm.Context)["global_"], property)
copy = ctx.eval_sync("'a'", external_copy=True)
assert ctx.global_.set_sync("ab", copy.copy_into(release=True)) is True
print(python, ctx.eval_sync("1 + 1"), fn.apply_sync(None, [2, 3.5]), script.run_sync(ctx),
      fn.apply_sync(None, [ctx.eval_sync("ab"), "b"]), flush=True)
"""


@pytest.mark.parametrize("setting, python", [("0", "True"), ("1", "False")])
def test_ivm_py_c_methods_0_keeps_the_python_methods(setting: str, python: str) -> None:
    assert _child(_KNOB_CHILD, IVM_PY_C_METHODS=setting) == [python, "2", "5.5", "42", "ab"]


def test_global_is_a_c_getter_that_makes_the_reference_once(any_isolate: ivm.Isolate) -> None:
    import os
    import types

    ctx = any_isolate.create_context_sync()
    descriptor = vars(ivm.Context)["global_"]
    if os.environ.get("IVM_PY_C_METHODS") != "0":
        assert isinstance(descriptor, types.GetSetDescriptorType)
    assert "global object" in (descriptor.__doc__ or "")
    first = ctx.global_
    assert type(first) is ivm.Reference and ctx.global_ is first and ctx._global is first
    assert first.set_sync("k", 5) is True and ctx.eval_sync("k") == 5
    # Not made yet when the context goes: the call that makes it raises, as libivm says.
    other = any_isolate.create_context_sync()
    other.release()
    with pytest.raises(ivm.DisposedError):
        other.global_
    # One made before stays the object it was.
    ctx.release()
    assert ctx.global_ is first
    # A Context never made by an isolate has no slots: an AttributeError, not a crash.
    with pytest.raises(AttributeError):
        ivm.Context.__new__(ivm.Context).global_
