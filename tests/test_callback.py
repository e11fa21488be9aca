"""ivm.Callback: Python functions that JavaScript calls. Arguments and results as copies,
exceptions both ways, KeyboardInterrupt/SystemExit, the sync/async/ignored modes under
asyncio and trio, re-entrancy and unbounded mutual recursion, leaks over many calls,
lifetime after the isolate is gone, and the security rules: nothing of Python reaches
JavaScript except through an explicit Callback or Reference."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import weakref
from typing import Any, Awaitable, Callable

import anyio
import pytest

import ivm
import ivm._callback as _callback_module
import ivm._errors as _errors_module


#: Sanity bound for things that must not hang; nothing here is expected to come close.
SANITY = 60.0


# --- making callbacks ------------------------------------------------------------------


def test_callback_construction_checks() -> None:
    cb = ivm.Callback(print)
    assert cb.mode == "sync"
    assert "sync" in repr(cb)
    assert ivm.Callback(print, mode="ignored").mode == "ignored"
    with pytest.raises(TypeError):
        ivm.Callback(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ivm.Callback(print, mode="later")
    with pytest.raises(ValueError, match="loop"):
        ivm.Callback(print, mode="async")


def test_callback_is_a_function_in_js(context: ivm.Context) -> None:
    context.global_.set_sync("f", ivm.Callback(lambda: 1))
    assert context.eval_sync("typeof f") == "function"
    assert context.eval_sync("f instanceof Function") is True
    assert context.eval_sync("f()") == 1
    assert context.eval_sync("f.call(null)") == 1
    assert context.eval_sync("f.apply(null, [])") == 1
    assert context.eval_sync("[1, 2].map(() => f()).join()") == "1,1"
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync("new f()")
    assert info.value.name == "TypeError"


def test_callback_as_argument_and_inside_copies(context: ivm.Context) -> None:
    cb = ivm.Callback(lambda x: x + 1)
    assert context.eval_closure_sync("return $0(1)", [cb]) == 2
    assert context.eval_closure_sync("return $0.inc(2) + $0.list[0](3)", [{"inc": cb, "list": [cb]}],
                                     arguments_options={"copy": True}) == 7
    call = context.eval_sync("(f, x) => f(x)", reference=True)
    assert call.apply_sync(None, [cb, 10]) == 11
    # One Callback in two contexts and two isolates.
    with ivm.Isolate(memory_limit=32) as other:
        ctx = other.create_context_sync()
        ctx.global_.set_sync("inc", cb)
        context.global_.set_sync("inc", cb)
        assert ctx.eval_sync("inc(100)") == 101
        assert context.eval_sync("inc(200)") == 201


def test_isolated_vm_sample(context: ivm.Context) -> None:
    logged: list[str] = []

    def log(*args: object) -> None:
        logged.append(" ".join(map(str, args)))

    jail = context.global_
    jail.set_sync("global", jail.deref_into())
    jail.set_sync("log", ivm.Callback(log))
    context.eval_sync('log("hello world")')
    context.eval_sync('global.log("hello", "again")')
    assert logged == ["hello world", "hello again"]
    add = context.eval_sync("(a, b) => a + b", reference=True)
    assert add.apply_sync(None, [2, 3]) == 5
    assert context.eval_closure_sync("return $0 + $1", [2, 3]) == 5


# --- arguments and results ---------------------------------------------------------------


def test_arguments_arrive_as_python_values(context: ivm.Context) -> None:
    seen: list[tuple[Any, ...]] = []
    context.global_.set_sync("f", ivm.Callback(lambda *args: seen.append(args)))
    context.eval_sync(
        "f(1, 1.5, 'str', true, null, undefined, 2n**70n, [1, [2]], {a: {b: 'c'}},"
        " new Uint8Array([1, 2]), new Map([[1, 'one']]))"
    )
    [args] = seen
    assert args[:7] == (1, 1.5, "str", True, None, ivm.undefined, 2**70)
    assert args[7] == [1, [2]]
    assert type(args[8]) is dict and args[8] == {"a": {"b": "c"}}
    assert bytes(args[9]) == b"\x01\x02"
    assert dict(args[10]) == {1: "one"}
    context.eval_sync("f()")
    assert seen[1] == ()


@pytest.mark.parametrize(
    "value",
    [1, -2.5, "s", True, None, ivm.undefined, 2**80, [1, "a", [None]], {"k": {"n": [1, 2]}}],
    ids=repr,
)
def test_results_return_as_copies(context: ivm.Context, value: object) -> None:
    context.global_.set_sync("f", ivm.Callback(lambda: value))
    assert context.eval_sync("f()", copy=True) == value


# --- the C path of sync callbacks (ivm/_cffi_fast.c, issue 14) ----------------------------

# JavaScript arguments whose conversion the C path makes itself (numbers, strings, booleans,
# null, undefined), at the number rule's edges, and some it hands to Python.
C_PATH_ARGUMENTS = [
    "0", "-0", "1", "-1", "2 ** 53 - 1", "-(2 ** 53 - 1)", "2 ** 53", "-(2 ** 53)", "0.5",
    "1e300", "NaN", "Infinity", "-Infinity", "''", "'text'", "'\\u00e9\\u{1F600}'",
    "'\\ud800'", "true", "false", "null", "undefined", "[1]", "({a: 1})",
]


def _same(a: object, b: object) -> bool:
    """Equal, of the same type, and the same float (sign of zero and NaN included)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return repr(a) == repr(b)
    return a == b


@pytest.mark.parametrize("expr", C_PATH_ARGUMENTS)
def test_c_path_arguments_match_the_python_path(context: ivm.Context, expr: str) -> None:
    # A sync Callback takes the C path; a Reference to a host function the Python one.
    seen: list[tuple[str, tuple[Any, ...]]] = []
    context.global_.set_sync("c", ivm.Callback(lambda *a: seen.append(("c", a))))
    context.global_.set_sync("r", ivm.Reference(lambda *a: seen.append(("r", a))))
    context.eval_sync(f"c({expr}, {expr}); r.applySync(undefined, [{expr}, {expr}]); 0")
    [(_, fast), (_, slow)] = seen
    assert len(fast) == len(slow) == 2
    assert all(_same(x, y) for x, y in zip(fast, slow)), (fast, slow)


@pytest.mark.parametrize(
    "value",
    [0, -0.0, 1, -(2**53 - 1), 2**53 - 1, 2**53, -(2**53), 2**80, 0.5, float("nan"),
     float("inf"), None, True, False, "s", "\ud800", ivm.undefined, [1], {"k": 1}],
    ids=repr,
)
def test_c_path_results_match_the_python_path(context: ivm.Context, value: object) -> None:
    context.global_.set_sync("c", ivm.Callback(lambda: value))
    context.global_.set_sync("r", ivm.Reference(lambda: value))
    # Compared inside JavaScript (Object.is tells -0 and NaN apart), and the type that left.
    same = context.eval_sync(
        "const a = c(), b = r.applySync(undefined, []);"
        "typeof a === typeof b && (typeof a !== 'object' || a === null ? Object.is(a, b)"
        " : JSON.stringify(a) === JSON.stringify(b))"
    )
    assert same is True
    assert _same(context.eval_sync("c()", copy=True), context.eval_sync(
        "r.applySync(undefined, [])", copy=True))


def test_c_path_errors_match_the_python_path(context: ivm.Context) -> None:
    def boom(*args: object) -> None:
        raise ValueError(f"bad {args!r}")

    context.global_.set_sync("c", ivm.Callback(boom))
    context.global_.set_sync("r", ivm.Reference(boom))
    for expr in ("1", "'x'", "[1]"):
        fast = context.eval_sync(f"try {{ c({expr}) }} catch (e) {{ e.name + ': ' + e.message }}")
        slow = context.eval_sync(
            f"try {{ r.applySync(undefined, [{expr}]) }} catch (e) {{ e.name + ': ' + e.message }}")
        assert fast == slow and fast.startswith("ValueError: bad ("), (fast, slow)


def test_c_path_lets_go_of_a_finalized_callbacks_function() -> None:
    # The C path keeps the last function it called (and its handle): a callback's
    # finalization (with its isolate) must let go of both, and a new callback's calls reach
    # the new function.
    class Fn:
        def __init__(self, value: int) -> None:
            self.value = value

        def __call__(self) -> int:
            return self.value

    for i in range(3):
        fn = Fn(i)
        gone = weakref.ref(fn)
        iso = ivm.Isolate(memory_limit=16)
        ctx = iso.create_context_sync()
        ctx.global_.set_sync("f", ivm.Callback(fn))
        assert ctx.eval_sync("f() + f()") == 2 * i
        iso.dispose()
        del ctx, iso, fn
        gc.collect()
        assert gone() is None


def test_common_sync_callback_call_takes_the_c_path(context: ivm.Context) -> None:
    # The Python path keeps its view slots per thread (_callback._tls.view); the C path
    # needs none: on a fresh thread, calls with primitive arguments leave none behind,
    # and one with an object argument (handed to Python) does.
    context.global_.set_sync("f", ivm.Callback(lambda *a: len(a)))
    found: list[bool] = []

    def calls() -> None:
        assert context.eval_sync("f(1, 'a', true, null, undefined)") == 5
        found.append(hasattr(_callback_module._tls, "view"))
        assert context.eval_sync("f([1])") == 1
        found.append(hasattr(_callback_module._tls, "view"))

    t = threading.Thread(target=calls)
    t.start()
    t.join(SANITY)
    assert found == [False, True]


def test_result_is_a_copy(context: ivm.Context) -> None:
    kept = {"list": [1, 2]}
    context.global_.set_sync("f", ivm.Callback(lambda: kept))
    assert context.eval_sync("const r = f(); r.list.push(3); r.extra = 1; r.list.length") == 3
    assert kept == {"list": [1, 2]}
    assert context.eval_sync("f() === f()") is False


def test_arguments_are_copies_both_ways(context: ivm.Context) -> None:
    received: list[Any] = []

    def mutate(d: dict[str, Any]) -> None:
        received.append(d)
        d["a"] = "changed by Python"
        d["list"].append("py")

    context.global_.set_sync("mutate", ivm.Callback(mutate))
    assert context.eval_sync(
        "globalThis.o = {a: 'js', list: [1]}; mutate(o); o.a + ',' + o.list.join()"
    ) == "js,1"
    # JavaScript changing its object later does not reach Python's copy either.
    context.eval_sync("o.a = 'changed by JS'; o.list.push(2)")
    assert received == [{"a": "changed by Python", "list": [1, "py"]}]


def test_unsupported_result_is_a_type_error_in_js(context: ivm.Context) -> None:
    context.global_.set_sync("bad", ivm.Callback(lambda: object()))
    assert context.eval_sync(
        "try { bad(); 'no error' } catch (e) { e instanceof TypeError && e.name }"
    ) == "TypeError"
    # Uncaught, it is the Python TypeError that said so, caused by the JavaScript one.
    with pytest.raises(TypeError) as info:
        context.eval_sync("bad()")
    cause = info.value.__cause__
    assert isinstance(cause, ivm.JSError)
    assert cause.name == "TypeError"
    assert context.eval_sync("'usable'") == "usable"


def test_sync_callback_returning_an_awaitable_is_an_error(context: ivm.Context) -> None:
    async def coro() -> int:
        return 1

    context.global_.set_sync("f", ivm.Callback(coro))
    with pytest.raises(TypeError, match="async"):
        context.eval_sync("f()")


def test_uncopyable_argument_is_a_type_error_in_js(context: ivm.Context) -> None:
    """A function (or a Symbol) cannot be copied to Python: the call throws in JavaScript
    instead of reaching fn."""
    calls: list[tuple[Any, ...]] = []

    def f(*args: Any) -> str:
        calls.append(args)
        return "called"

    context.global_.set_sync("f", ivm.Callback(f))
    for arg in ("() => 1", "Symbol('s')", "{g() {}}"):
        outcome = context.eval_sync(
            f"var r = 'returned normally'; try {{ r = f({arg}) }} catch (e) {{ r = e.name }} r"
        )
        assert outcome == "TypeError", (arg, outcome)
    assert calls == []


def test_process_exit_after_a_failed_callback_call_is_clean(run_child: Any) -> None:
    """A process that leaves an isolate with a callback undisposed exits without errors,
    also after JavaScript called the callback with an argument that could not be copied."""
    code = (
        "import ivm\n"
        "iso = ivm.Isolate(memory_limit=32)\n"
        "ctx = iso.create_context_sync()\n"
        "ctx.global_.set_sync('f', ivm.Callback(lambda *a: len(a)))\n"
        "ctx.eval_sync('try { f(() => 1) } catch (e) {}')\n"
        "print('done')\n"
    )
    proc = run_child(code, timeout=SANITY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert proc.stderr == ""


# --- exceptions ----------------------------------------------------------------------------


class CustomError(Exception):
    pass


def test_python_exception_becomes_a_js_error(context: ivm.Context) -> None:
    def boom(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value")
        if kind == "type":
            raise TypeError("bad type")
        raise CustomError("custom message")

    context.global_.set_sync("boom", ivm.Callback(boom))
    seen = context.eval_sync(
        "['value', 'type', 'custom'].map(k => { try { boom(k) } catch (e) {"
        " return [e instanceof Error, e.name, e.message] } })",
        copy=True,
    )
    assert seen == [
        [True, "ValueError", "bad value"],
        [True, "TypeError", "bad type"],
        [True, "CustomError", "custom message"],
    ]
    assert context.eval_sync("try { boom('type') } catch (e) { e instanceof TypeError }") is True


def test_uncaught_exception_is_the_original_with_js_cause(context: ivm.Context) -> None:
    original = CustomError("the original")

    def boom() -> None:
        raise original

    context.global_.set_sync("boom", ivm.Callback(boom))
    with pytest.raises(CustomError) as info:
        context.eval_sync("boom()")
    assert info.value is original
    cause = info.value.__cause__
    assert isinstance(cause, ivm.JSError)
    assert (cause.name, cause.message) == ("CustomError", "the original")
    # Through a JavaScript catch-and-rethrow, a Reference and a closure, too.
    with pytest.raises(CustomError) as info:
        context.eval_sync("try { boom() } catch (e) { throw e }")
    assert info.value is original
    ref = context.eval_sync("() => boom()", reference=True)
    with pytest.raises(CustomError):
        ref.apply_sync(None)
    with pytest.raises(CustomError):
        context.eval_closure_sync("return $0()", [ivm.Callback(boom)])
    assert context.eval_sync("'usable'") == "usable"


def test_broken_str_of_an_exception(context: ivm.Context) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    def boom() -> None:
        raise Unprintable()

    context.global_.set_sync("boom", ivm.Callback(boom))
    assert context.eval_sync("try { boom() } catch (e) { e.name + ':' + e.message }") == (
        "Unprintable:"
    )


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_terminate_js(
    context: ivm.Context, exc_type: type[BaseException]
) -> None:
    def stop() -> None:
        raise exc_type("stop")

    context.global_.set_sync("stop", ivm.Callback(stop))
    context.eval_sync("globalThis.after = 'not reached'; globalThis.caught = 'no'")
    with pytest.raises(exc_type):
        context.eval_sync(
            "for (let i = 0; i < 3; i++) { try { stop() } catch (e) { globalThis.caught = 'yes' } }"
            " globalThis.after = 'reached'"
        )
    assert context.eval_sync("[caught, after]", copy=True) == ["no", "not reached"]
    assert context.eval_sync("'usable'") == "usable"
    # Also through a Reference's apply.
    loop = context.eval_sync("() => { while (true) { try { stop() } catch (e) {} } }",
                             reference=True)
    with pytest.raises(exc_type):
        loop.apply_sync(None)
    assert context.eval_sync("1 + 1") == 2


# --- re-entrancy and recursion -------------------------------------------------------------


def test_nested_sync_calls_into_the_same_isolate(context: ivm.Context) -> None:
    obj = context.eval_sync("globalThis.o = {v: 5}; o", reference=True)

    def inner(x: int) -> int:
        return int(context.eval_sync(f"{x} * 10")) + int(obj.get_sync("v"))

    def outer(x: int) -> int:
        return int(context.eval_sync(f"inner({x}) + 1"))

    context.global_.set_sync("inner", ivm.Callback(inner))
    context.global_.set_sync("outer", ivm.Callback(outer))
    assert context.eval_sync("outer(4)") == 46
    assert context.eval_sync("outer(outer(1))") == 166


def test_unbounded_mutual_recursion_is_a_catchable_error(context: ivm.Context) -> None:
    def rec(n: int) -> Any:
        return context.eval_sync(f"rec({n} + 1)")

    context.global_.set_sync("rec", ivm.Callback(rec))
    with pytest.raises((ivm.JSError, RecursionError)) as info:
        context.eval_sync("rec(0)")
    if isinstance(info.value, ivm.JSError):
        assert "RangeError" in str(info.value) or "Maximum call stack" in str(info.value)
    assert context.eval_sync("'usable'") == "usable"
    # Caught in JavaScript, too.
    assert context.eval_sync("try { rec(0); 'no' } catch (e) { e instanceof Error }") is True
    assert context.eval_sync("1 + 1") == 2


def test_unbounded_mutual_recursion_through_references(context: ivm.Context) -> None:
    fn = context.eval_sync("(n) => rec(n + 1)", reference=True)

    def rec(n: int) -> Any:
        return fn.apply_sync(None, [n])

    context.global_.set_sync("rec", ivm.Callback(rec))
    with pytest.raises((ivm.JSError, RecursionError)):
        fn.apply_sync(None, [0])
    assert context.eval_sync("'usable'") == "usable"


# --- async mode -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_callback_returns_a_promise(context: ivm.Context) -> None:
    async def coro(x: int) -> int:
        await anyio.sleep(0)
        return x * 2

    context.global_.set_sync("double", ivm.Callback(coro, mode="async"))
    context.global_.set_sync("plain", ivm.Callback(lambda x: {"v": x}, mode="async"))
    with anyio.fail_after(SANITY):
        assert await context.eval("double(1) instanceof Promise") is True
        assert await context.eval("double(21)", promise=True) == 42
        assert await context.eval("plain(1)", promise=True, copy=True) == {"v": 1}
        assert await context.eval(
            "Promise.all([double(1), double(2), plain(3).then(o => o.v)])", promise=True, copy=True
        ) == [2, 4, 3]
        assert await context.eval("(async () => (await double(5)) + 1)()", promise=True) == 11


@pytest.mark.anyio
async def test_async_callback_runs_on_the_loop_thread(context: ivm.Context) -> None:
    threads: list[int] = []
    context.global_.set_sync(
        "where", ivm.Callback(lambda: threads.append(threading.get_ident()), mode="async")
    )
    with anyio.fail_after(SANITY):
        await context.eval("where()", promise=True)
    assert threads == [threading.get_ident()]


@pytest.mark.anyio
async def test_async_callback_exceptions_reject(context: ivm.Context) -> None:
    original = CustomError("async boom")

    async def boom() -> None:
        await anyio.sleep(0)
        raise original

    context.global_.set_sync("boom", ivm.Callback(boom, mode="async"))
    context.global_.set_sync("bad", ivm.Callback(lambda: object(), mode="async"))
    with anyio.fail_after(SANITY):
        assert await context.eval(
            "boom().then(() => 'resolved', e => [e instanceof Error, e.name, e.message])",
            promise=True, copy=True,
        ) == [True, "CustomError", "async boom"]
        with pytest.raises(CustomError) as info:
            await context.eval("boom()", promise=True)
        assert info.value is original
        assert isinstance(info.value.__cause__, ivm.JSError)
        assert await context.eval("bad().catch(e => e.name)", promise=True) == "TypeError"
        assert await context.eval("'usable'") == "usable"


def test_async_callback_whose_loop_is_closed_rejects(context: ivm.Context) -> None:
    async def make() -> ivm.Callback:
        return ivm.Callback(lambda: 1, mode="async")

    cb = asyncio.run(make())
    context.global_.set_sync("f", cb)
    assert context.eval_sync(
        "(async () => { try { await f(); return 'resolved' } catch (e) { return e.name } })()",
        promise=True,
    ) == "RuntimeError"


@pytest.mark.anyio
async def test_sync_callback_called_by_async_eval(context: ivm.Context) -> None:
    seen: list[int] = []

    def record(x: int) -> int:
        seen.append(x)
        # Re-entering the same isolate synchronously from the pool thread is allowed.
        return int(context.eval_sync(f"{x} + 1"))

    context.global_.set_sync("record", ivm.Callback(record))
    with anyio.fail_after(SANITY):
        assert await context.eval("record(1) + record(2)") == 5
        ref = await context.eval("(x) => record(x)", reference=True)
        assert await ref.apply(None, [10]) == 11
    assert seen == [1, 2, 10]


@pytest.mark.anyio
async def test_async_eval_propagates_a_callback_exception(context: ivm.Context) -> None:
    original = CustomError("from sync fn")

    def boom() -> None:
        raise original

    context.global_.set_sync("boom", ivm.Callback(boom))
    with anyio.fail_after(SANITY):
        with pytest.raises(CustomError) as info:
            await context.eval("boom()")
        assert info.value is original
        assert await context.eval("try { boom() } catch (e) { e.message }") == "from sync fn"


@pytest.mark.anyio
async def test_cancelling_an_await_stops_js_calling_callbacks(context: ivm.Context) -> None:
    calls: list[int] = []
    context.global_.set_sync("tick", ivm.Callback(lambda: calls.append(1)))
    with anyio.move_on_after(0.1) as scope:
        await context.eval("while (true) { tick() }")
    assert scope.cancelled_caught
    with anyio.fail_after(SANITY):
        assert await context.eval("'usable'") == "usable"
    stopped_at = len(calls)
    assert stopped_at > 0
    await anyio.sleep(0.05)
    assert len(calls) == stopped_at


# --- ignored mode ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ignored_callback_returns_undefined_and_runs_later_on_the_loop(
    context: ivm.Context, wait_until_async: Callable[..., Awaitable[bool]]
) -> None:
    seen: list[tuple[object, int]] = []
    loop_thread = threading.get_ident()

    def record(x: object) -> str:
        seen.append((x, threading.get_ident()))
        return "ignored result"

    async def record_async(x: object) -> None:
        await anyio.sleep(0)
        seen.append((x, threading.get_ident()))

    context.global_.set_sync("rec", ivm.Callback(record, mode="ignored"))
    context.global_.set_sync("recA", ivm.Callback(record_async, mode="ignored"))
    with anyio.fail_after(SANITY):
        assert await context.eval("[rec({a: 1}), recA([2])]", copy=True) == [
            ivm.undefined, ivm.undefined,
        ]
        assert await wait_until_async(lambda: len(seen) == 2)
    assert sorted(map(repr, (x for x, _ in seen))) == ["[2]", "{'a': 1}"]
    assert {t for _, t in seen} == {loop_thread}


@pytest.mark.anyio
async def test_ignored_callback_errors_are_logged(
    context: ivm.Context,
    caplog: pytest.LogCaptureFixture,
    ignored_errors: list[BaseException],
    wait_until_async: Callable[..., Awaitable[bool]],
) -> None:
    def boom() -> None:
        raise CustomError("ignored boom")

    async def boom_async() -> None:
        raise CustomError("ignored async boom")

    context.global_.set_sync("boom", ivm.Callback(boom, mode="ignored"))
    context.global_.set_sync("boomA", ivm.Callback(boom_async, mode="ignored"))
    with caplog.at_level(logging.WARNING, logger="ivm"):
        with anyio.fail_after(SANITY):
            assert await context.eval("boom(); boomA(); 'js went on'") == "js went on"
            assert await wait_until_async(lambda: len(ignored_errors) >= 2)
    messages = sorted(str(e) for e in ignored_errors)
    assert messages == ["ignored async boom", "ignored boom"]
    assert "ignored boom" in caplog.text


def test_ignored_callback_without_a_loop_runs_at_once(
    context: ivm.Context, wait_until: Callable[..., bool]
) -> None:
    seen: list[object] = []
    context.global_.set_sync("rec", ivm.Callback(seen.append, mode="ignored"))
    assert context.eval_sync("rec('x')") is ivm.undefined
    assert wait_until(lambda: seen == ["x"])


# --- leaks -------------------------------------------------------------------------------------------


def test_100k_callback_calls_leak_nothing(
    quiet_live_objects: Callable[[], int], settle: Callable[..., int]
) -> None:
    baseline = quiet_live_objects()
    iso = ivm.Isolate(memory_limit=64)
    ctx = iso.create_context_sync()
    count = [0]

    def echo(value: Any) -> Any:
        count[0] += 1
        return value

    def fail(_: Any) -> None:
        raise ValueError("caught in JS")

    ctx.global_.set_sync("echo", ivm.Callback(echo))
    ctx.global_.set_sync("fail", ivm.Callback(fail))
    code = (
        "for (let i = 0; i < {n}; i++) {{ echo({{i, s: 'x' + i, l: [i]}});"
        " if (i % 100 === 0) try {{ fail(i) }} catch (e) {{}} }} 0"
    )
    ctx.eval_sync(code.format(n=2000))  # warm up caches
    libivm_before = quiet_live_objects()
    objects_before = len(gc.get_objects())
    callbacks_before = len(_callback_module._live)
    ctx.eval_sync(code.format(n=100_000))
    gc.collect()
    assert count[0] == 102_000
    assert settle(libivm_before) <= libivm_before
    assert len(_callback_module._live) == callbacks_before
    # Caught Python exceptions are remembered in a bounded table only.
    assert len(_errors_module._host_errors) <= _errors_module._MAX_HOST_ERRORS
    _errors_module._host_errors.clear()
    gc.collect()
    assert len(gc.get_objects()) - objects_before < 200
    ctx.release()
    iso.dispose()
    del ctx, iso
    assert settle(baseline) <= baseline


def test_callbacks_are_finalized_with_their_isolate(
    no_leaks: None, wait_until: Callable[..., bool]
) -> None:
    before = len(_callback_module._live)
    iso = ivm.Isolate(memory_limit=32)
    ctx = iso.create_context_sync()
    for i in range(100):
        ctx.global_.set_sync(f"f{i}", ivm.Callback(lambda: 1))
    assert ctx.eval_sync("f0() + f99()") == 2
    ctx.release()
    iso.dispose()
    del ctx, iso
    gc.collect()
    assert wait_until(lambda: (gc.collect(), len(_callback_module._live))[1] <= before)


def test_callback_after_its_isolate_is_gone_can_be_collected() -> None:
    calls: list[int] = []
    cb = ivm.Callback(lambda: calls.append(1))
    iso = ivm.Isolate(memory_limit=32)
    ctx = iso.create_context_sync()
    ctx.global_.set_sync("cb", cb)
    fn_ref = ctx.eval_sync("cb", reference=True)
    ctx.eval_sync("cb()")
    iso.dispose()
    with pytest.raises(ivm.DisposedError):
        ctx.eval_sync("cb()")
    with pytest.raises(ivm.DisposedError):
        fn_ref.apply_sync(None)
    del cb, ctx, fn_ref, iso
    t = threading.Thread(target=gc.collect)
    t.start()
    t.join(SANITY)
    gc.collect()
    assert calls == [1]


def test_callback_dropped_by_python_stays_alive_in_js(context: ivm.Context) -> None:
    context.global_.set_sync("f", ivm.Callback(lambda: "still here"))
    gc.collect()
    assert context.eval_sync("f()") == "still here"


def test_callback_collected_by_js_gc(no_leaks: None, wait_until: Callable[..., bool]) -> None:
    before = len(_callback_module._live)
    iso = ivm.Isolate(memory_limit=32)
    ctx = iso.create_context_sync()
    for _ in range(200):
        ctx.eval_closure_sync("$0()", [ivm.Callback(lambda: 1)])
    # Only the functions are gone from JavaScript; dropping the isolate frees the rest.
    ctx.release()
    iso.dispose()
    del ctx, iso
    assert wait_until(lambda: (gc.collect(), len(_callback_module._live))[1] <= before)


# --- security ----------------------------------------------------------------------------------------


def test_callback_function_exposes_no_python(context: ivm.Context) -> None:
    def secret_python_function() -> str:
        return "ok"

    context.global_.set_sync("f", ivm.Callback(secret_python_function))
    own = context.eval_sync("Object.getOwnPropertyNames(f).sort()", copy=True)
    assert set(own) <= {"length", "name", "prototype", "arguments", "caller"}
    assert context.eval_sync("Object.getOwnPropertySymbols(f).length") == 0
    for attr in ("__class__", "__globals__", "__code__", "__dict__", "__self__", "__call__",
                 "__closure__", "__module__", "__getattribute__", "func_globals"):
        assert context.eval_sync(f"typeof f.{attr}") == "undefined", attr
        assert context.eval_sync(f"typeof f['{attr}']") == "undefined", attr
    assert context.eval_sync("Object.getPrototypeOf(f) === Function.prototype") is True
    assert context.eval_sync("f.constructor === Function") is True
    assert context.eval_sync("f.constructor.constructor('return this')() === globalThis") is True
    text = context.eval_sync("Function.prototype.toString.call(f) + String(f) + f.name")
    assert "secret_python_function" not in text
    assert "python" not in text.lower()
    assert "[native code]" in text
    # Prototype tricks reach JavaScript's own objects only.
    assert context.eval_sync(
        "Object.getOwnPropertyNames(Object.getPrototypeOf(f)).every("
        "k => Object.getOwnPropertyNames(Function.prototype).includes(k))"
    ) is True


def test_python_exception_exposes_only_name_and_message(context: ivm.Context) -> None:
    def boom() -> None:
        local_secret = "secret local value"  # noqa: F841
        raise ValueError("just the message")

    context.global_.set_sync("boom", ivm.Callback(boom))
    info = context.eval_sync(
        "try { boom() } catch (e) { ({own: Object.getOwnPropertyNames(e).sort(),"
        " symbols: Object.getOwnPropertySymbols(e).length, keys: Reflect.ownKeys(e).length,"
        " stack: String(e.stack), name: e.name, message: e.message,"
        " proto: Object.getPrototypeOf(e) === Error.prototype,"
        " cls: typeof e.__class__, tb: typeof e.__traceback__, cause: typeof e.cause }) }",
        copy=True,
    )
    assert set(info["own"]) <= {"stack", "message", "name"}
    assert info["symbols"] == 0
    assert info["keys"] == len(info["own"])
    assert info["name"] == "ValueError"
    assert info["message"] == "just the message"
    assert info["proto"] is True
    assert info["cls"] == info["tb"] == info["cause"] == "undefined"
    stack = info["stack"]
    assert __file__ not in stack
    assert "test_callback" not in stack
    assert ".py" not in stack
    assert "Traceback" not in stack
    assert "secret local value" not in stack
    assert "boom" not in stack.split("\n")[0].replace("ValueError: just the message", "")


def test_js2py_style_escape_is_impossible(context: ivm.Context) -> None:
    """CVE-2024-28397: js2py let JavaScript walk __class__.__base__.__subclasses__() from an
    object passed in. Here a passed-in dict is plain JavaScript data."""
    data = {"nested": {"list": [1, {"x": None}]}, "text": "t"}
    context.global_.set_sync("data", data, copy=True)
    checks = context.eval_sync(
        """
        const probe = (o) => [
          Object.getPrototypeOf(o) === Object.prototype || Object.getPrototypeOf(o) === Array.prototype,
          typeof o.__class__, typeof o.__base__, typeof o.__subclasses__,
          typeof o.__getattribute__, typeof o.__dict__, typeof o.__init__,
          o.constructor.constructor('return this')() === globalThis,
        ];
        [probe(data), probe(data.nested), probe(data.nested.list), probe(data.nested.list[1]),
         probe(Object.getOwnPropertyNames({})), Object.keys(data).join(),
         typeof Object.getOwnPropertyNames({}).__class__]
        """,
        copy=True,
    )
    for probe in checks[:5]:
        assert probe == [True, "undefined", "undefined", "undefined", "undefined", "undefined",
                         "undefined", True]
    assert checks[5] == "nested,text"
    assert checks[6] == "undefined"
    # The js2py exploit itself fails with a plain TypeError.
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync(
            "let a = Object.getOwnPropertyNames({}).__class__.__base__.__getattribute__;"
            "let obj = a(a(a, '__class__'), '__base__'); obj.__subclasses__()"
        )
    assert info.value.name == "TypeError"
    data["text"] = "changed"
    assert context.eval_sync("data.text") == "t"


def test_python_objects_cannot_be_passed_as_live_proxies(context: ivm.Context) -> None:
    import os

    class Plain:
        secret = "s"

    ref = context.eval_sync("(x) => typeof x", reference=True)
    for value in (Plain(), os, object(), Plain, lambda: 1, os.system):
        with pytest.raises(TypeError):
            ref.apply_sync(None, [value], arguments_options={"copy": True})
        with pytest.raises(TypeError):
            context.global_.set_sync("x", value, copy=True)
    assert context.eval_sync("typeof x") == "undefined"
    # Nor returned from a callback.
    context.global_.set_sync("leak", ivm.Callback(lambda: os))
    assert context.eval_sync("try { leak(); 'leaked' } catch (e) { e.name }") == "TypeError"


def test_fn_receives_plain_copies_not_proxies(context: ivm.Context) -> None:
    got: list[Any] = []
    context.global_.set_sync("take", ivm.Callback(got.append))
    context.eval_sync(
        "globalThis.o = {a: 1, inner: {b: [1, 2]}, get g() { return 'getter ran once' }};"
        " take(o)"
    )
    [value] = got
    assert type(value) is dict
    assert type(value["inner"]) is dict
    assert type(value["inner"]["b"]) is list
    assert value == {"a": 1, "inner": {"b": [1, 2]}, "g": "getter ran once"}
    assert not isinstance(value, (ivm.Reference, ivm.ExternalCopy))
    context.eval_sync("o.a = 2; o.inner.b.push(3)")
    assert value == {"a": 1, "inner": {"b": [1, 2]}, "g": "getter ran once"}


def test_this_of_a_callback_is_not_passed_to_python(context: ivm.Context) -> None:
    got: list[tuple[Any, ...]] = []
    context.global_.set_sync("take", ivm.Callback(lambda *a: got.append(a)))
    context.eval_sync("({secret: 1, take}).take(); take.call({secret: 2}, 'arg')")
    assert got == [(), ("arg",)]


def test_callback_in_two_isolates_shares_nothing_but_fn(context: ivm.Context) -> None:
    """A callback connects isolates only through Python: values still cross as copies."""
    store: dict[str, Any] = {}

    def put(v: Any) -> None:
        store["v"] = v

    def get() -> Any:
        return store["v"]

    with ivm.Isolate(memory_limit=32) as other:
        ctx2 = other.create_context_sync()
        context.global_.set_sync("put", ivm.Callback(put))
        ctx2.global_.set_sync("get", ivm.Callback(get))
        context.eval_sync("globalThis.shared = {n: 1}; put(shared)")
        assert ctx2.eval_sync("const v = get(); v.n = 2; v.n") == 2
        assert context.eval_sync("shared.n") == 1
        assert ctx2.eval_sync("get().n") == 1



def test_crossed_synchronous_calls_between_isolates_do_not_hang() -> None:
    """Thread 1 inside A calls into B while thread 2 inside B calls into A: one of the two
    calls is refused (a wait that would close the cycle), the other completes."""
    a = ivm.Isolate(memory_limit=32)
    b = ivm.Isolate(memory_limit=32)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        barrier = threading.Barrier(2)

        def into_b() -> object:
            barrier.wait()
            time.sleep(0.05)
            return cb.eval_sync("'from b'")

        def into_a() -> object:
            barrier.wait()
            time.sleep(0.05)
            return ca.eval_sync("'from a'")

        ca.global_.set_sync("f", ivm.Callback(into_b))
        cb.global_.set_sync("g", ivm.Callback(into_a))
        results: dict[str, object] = {}

        def run(name: str, ctx: ivm.Context, code: str) -> None:
            try:
                results[name] = ctx.eval_sync(code)
            except ivm.IvmError as exc:
                results[name] = exc

        threads = [threading.Thread(target=run, args=("a", ca, "f()")),
                   threading.Thread(target=run, args=("b", cb, "g()"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SANITY)
        assert not any(t.is_alive() for t in threads)
        refused = [v for v in results.values() if isinstance(v, ivm.IvmError)]
        assert len(refused) == 1 and "refused" in str(refused[0])
        assert sorted(v for v in results.values() if isinstance(v, str)) in (["from a"], ["from b"])
    finally:
        a.dispose()
        b.dispose()
