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
]  # fmt: skip


@pytest.mark.parametrize(
    "method, names", SYNC_METHODS, ids=lambda m: getattr(m, "__qualname__", "")
)
def test_a_sync_method_shows_its_keyword_only_options(method: Any, names: list[str]) -> None:
    import inspect

    params = inspect.signature(method).parameters
    assert list(params) == names
    first_option = 3 if method is ivm.Reference.apply_sync else 2
    for name in names[first_option:]:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert "Returns" in (method.__doc__ or "") or "returns" in (method.__doc__ or "")
    # The call without options fills no keyword-only defaults (the point of the split).
    assert not method.__kwdefaults__


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
