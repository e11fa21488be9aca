"""ivm's exceptions: JavaScript errors as JSError, timeouts, and error values that try to
run code or hang while ivm describes them."""

from __future__ import annotations

import builtins

import pytest

import ivm

THROW_ON_LINE_3 = "const a = 1;\nconst b = 2;\nthrow new TypeError('x');\n"


def js_error(context: ivm.Context, code: str, **kw: object) -> ivm.JSError:
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync(code, **kw)  # type: ignore[arg-type]
    return info.value


def test_js_error_fields(context: ivm.Context) -> None:
    err = js_error(context, THROW_ON_LINE_3, filename="file:///t.js")
    assert err.name == "TypeError"
    assert err.message == "x"
    lines = err.stack.splitlines()
    assert lines[0] == "TypeError: x"
    assert lines[1] == "    at file:///t.js:3:7"
    assert str(err) == err.stack
    assert err.args == (err.stack,)


def test_default_eval_filename(context: ivm.Context) -> None:
    err = js_error(context, THROW_ON_LINE_3)
    assert "<eval>:3:7" in err.stack


def test_line_and_column_offsets(context: ivm.Context) -> None:
    err = js_error(context, "throw new Error('o')", filename="o.js", line_offset=4, column_offset=7)
    assert "o.js:5:14" in err.stack


def test_stack_lists_each_frame(context: ivm.Context) -> None:
    code = "function inner() { throw new Error('deep') }\nfunction outer() { inner() }\nouter()"
    err = js_error(context, code, filename="frames.js")
    lines = err.stack.splitlines()
    assert lines[0] == "Error: deep"
    assert lines[1].startswith("    at inner (frames.js:1:")
    assert lines[2].startswith("    at outer (frames.js:2:")
    assert lines[3].startswith("    at frames.js:3:")


def test_error_thrown_from_a_function_in_another_eval(context: ivm.Context) -> None:
    context.eval_sync("function boom() {\n  throw new RangeError('r')\n}", filename="lib.js")
    err = js_error(context, "boom()", filename="main.js")
    assert err.name == "RangeError"
    assert "lib.js:2:" in err.stack
    assert "main.js:1:" in err.stack


def test_custom_error_subclass(context: ivm.Context) -> None:
    code = (
        "class MyError extends Error {\n"
        "  constructor(m) { super(m); this.name = 'MyError'; }\n"
        "}\n"
        "throw new MyError('mine')"
    )
    err = js_error(context, code, filename="c.js")
    assert err.name == "MyError"
    assert err.message == "mine"
    assert err.stack.startswith("MyError: mine\n")
    assert "c.js:4:" in err.stack


@pytest.mark.parametrize(
    ("thrown", "message"),
    [("1", "1"), ("null", "null"), ("'str'", "str"), ("undefined", "undefined"), ("10n", "10")],
)
def test_thrown_primitives(context: ivm.Context, thrown: str, message: str) -> None:
    err = js_error(context, f"throw {thrown}")
    assert err.name == ""
    assert err.message == message
    assert err.stack.startswith(message)


@pytest.mark.parametrize("thrown", ["{a: 1}", "[1, 2]", "Object.create(null)", "Symbol('s')"])
def test_thrown_non_error_objects(context: ivm.Context, thrown: str) -> None:
    err = js_error(context, f"throw {thrown}")
    assert err.name == ""
    assert isinstance(err.message, str) and err.message
    assert context.eval_sync("1") == 1


@pytest.mark.parametrize(
    "code",
    ["1 +", "let let = 1", "function (", "}", "'unterminated", "return 1", "await 1"],
)
def test_syntax_errors(context: ivm.Context, code: str) -> None:
    err = js_error(context, code, filename="syn.js")
    assert err.name == "SyntaxError"
    assert err.message
    assert "syn.js:1:" in err.stack


def test_syntax_error_line(context: ivm.Context) -> None:
    err = js_error(context, "1;\n2;\n3 +;", filename="syn.js")
    assert "syn.js:3:" in err.stack


def test_reference_error(context: ivm.Context) -> None:
    err = js_error(context, "notDefined")
    assert err.name == "ReferenceError"
    assert "notDefined" in err.message


def test_deep_recursion_is_a_range_error(context: ivm.Context) -> None:
    err = js_error(context, "function f() { return f() + 1 }\nf()", timeout=10)
    assert err.name == "RangeError"
    assert "call stack" in err.message
    assert context.eval_sync("'alive'") == "alive"


def test_deep_recursion_in_a_fresh_context_each_time(isolate: ivm.Isolate) -> None:
    for _ in range(5):
        context = isolate.create_context_sync()
        err = js_error(context, "(function r() { r() })()", timeout=10)
        assert err.name == "RangeError"
        context.release()


def test_timeout_message_and_isolate_stays_usable(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    context.eval_sync("globalThis.before = 'kept'")
    with pytest.raises(ivm.TimeoutError) as info:
        context.eval_sync("while (true) {}", timeout=0.05)
    assert str(info.value) == "Script execution timed out."
    assert isinstance(info.value, builtins.TimeoutError)
    assert not isolate.is_disposed
    assert context.eval_sync("before") == "kept"


def test_timeout_does_not_leak_into_later_calls(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync("while (true) {}", timeout=0.05)
    for i in range(200):
        assert context.eval_sync(f"{i} + 1") == i + 1
    # A busy loop longer than the expired timeout, without a timeout of its own.
    assert context.eval_sync(
        "const t0 = Date.now(); while (Date.now() - t0 < 150) {}; 'done'"
    ) == "done"


def test_unexpired_timeout_does_not_fire_in_a_later_call(context: ivm.Context) -> None:
    # The first call's timer (100 ms) is still pending when it returns; it must not stop
    # the next call, which runs for longer than that without a timeout.
    assert context.eval_sync("1", timeout=0.1) == 1
    assert context.eval_sync(
        "const t0 = Date.now(); while (Date.now() - t0 < 250) {}; 'done'"
    ) == "done"


def test_timeout_stops_microtask_loops(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync("(function loop() { Promise.resolve().then(loop) })(); 0", timeout=0.1)
    assert context.eval_sync("2") == 2


def test_timeout_in_catch_and_finally(context: ivm.Context) -> None:
    # JavaScript cannot catch a timeout: neither catch nor finally may swallow it.
    code = "try { while (true) {} } catch (e) { 'caught' } finally { while (true) {} }"
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync(code, timeout=0.1)
    assert context.eval_sync("3") == 3


# --- Error values that try to run code while ivm formats them ----------------------------


def test_prepare_stack_trace_is_not_called(context: ivm.Context) -> None:
    err = js_error(
        context,
        "Error.prepareStackTrace = () => { while (true) {} };\nthrow new Error('x')",
        timeout=1,
    )
    assert (err.name, err.message) == ("Error", "x")
    assert err.stack.startswith("Error: x\n")


def test_prepare_stack_trace_side_effects_do_not_happen(context: ivm.Context) -> None:
    context.eval_sync("globalThis.calls = 0; Error.prepareStackTrace = () => { calls++; return 's' }; 0")
    js_error(context, "throw new Error('x')")
    assert context.eval_sync("calls") == 0


def test_message_getter_is_not_run(context: ivm.Context) -> None:
    code = (
        "globalThis.calls = 0;\n"
        "const e = new Error('x');\n"
        "Object.defineProperty(e, 'message', { get() { calls++; while (true) {} } });\n"
        "throw e"
    )
    err = js_error(context, code, timeout=1)
    assert err.name == "Error"
    assert context.eval_sync("calls") == 0


def test_message_getter_on_subclass_prototype_is_not_run(context: ivm.Context) -> None:
    code = "class E extends Error { get message() { while (true) {} } }\nthrow new E('x')"
    err = js_error(context, code, timeout=1)
    assert isinstance(err.message, str)


@pytest.mark.parametrize("keys", [["name", "toString"], ["stack"]])
def test_name_and_stack_getters_are_not_run(context: ivm.Context, keys: list[str]) -> None:
    # (Redefining `stack` makes V8 itself format the pending stack, reading `name`: the
    # two are tested apart.)
    code = (
        "globalThis.calls = 0;\n"
        "const e = new Error('x');\n"
        f"for (const k of {keys!r})\n"
        "  Object.defineProperty(e, k, { get() { calls++; while (true) {} } });\n"
        "throw e"
    )
    err = js_error(context, code, timeout=1)
    assert err.message == "x"
    assert context.eval_sync("calls") == 0


def test_error_prototype_accessors_are_not_run(context: ivm.Context) -> None:
    code = (
        "globalThis.calls = 0;\n"
        "Object.defineProperty(Error.prototype, 'name', { get() { calls++; while (true) {} } });\n"
        "Error.prototype.toString = () => { calls++; while (true) {} };\n"
        "throw new Error('z')"
    )
    err = js_error(context, code, timeout=1)
    assert err.message == "z"
    assert context.eval_sync("calls") == 0


def test_thrown_proxy_traps_are_not_run(context: ivm.Context) -> None:
    code = (
        "globalThis.calls = 0;\n"
        "const trap = () => { calls++; while (true) {} };\n"
        "throw new Proxy({}, { get: trap, getPrototypeOf: trap, has: trap,\n"
        "  getOwnPropertyDescriptor: trap, ownKeys: trap })"
    )
    err = js_error(context, code, timeout=1)
    assert isinstance(err.message, str)
    assert context.eval_sync("calls") == 0


def test_proxy_around_an_error_is_not_trapped(context: ivm.Context) -> None:
    code = (
        "globalThis.calls = 0;\n"
        "const trap = () => { calls++; while (true) {} };\n"
        "throw new Proxy(new Error('p'), { get: trap, getPrototypeOf: trap,\n"
        "  getOwnPropertyDescriptor: trap, has: trap })"
    )
    js_error(context, code, timeout=1)
    assert context.eval_sync("calls") == 0


def test_error_with_proxy_in_prototype_chain(context: ivm.Context) -> None:
    code = (
        "globalThis.calls = 0;\n"
        "const trap = () => { calls++; while (true) {} };\n"
        "const e = new Error('x');\n"
        "Object.setPrototypeOf(e, new Proxy(Error.prototype, { get: trap,\n"
        "  getPrototypeOf: trap, has: trap, getOwnPropertyDescriptor: trap }));\n"
        "throw e"
    )
    err = js_error(context, code, timeout=1)
    assert isinstance(err.message, str)
    assert context.eval_sync("calls") == 0


def test_object_inheriting_from_proxy_is_not_trapped(context: ivm.Context) -> None:
    code = (
        "globalThis.calls = 0;\n"
        "const trap = () => { calls++; while (true) {} };\n"
        "throw Object.create(new Proxy(Error.prototype, { get: trap, getPrototypeOf: trap,\n"
        "  has: trap, getOwnPropertyDescriptor: trap }))"
    )
    js_error(context, code, timeout=1)
    assert context.eval_sync("calls") == 0


def test_thrown_object_conversions_are_not_run(context: ivm.Context) -> None:
    code = (
        "globalThis.calls = 0;\n"
        "const trap = () => { calls++; while (true) {} };\n"
        "throw { get name() { return trap() }, get message() { return trap() },\n"
        "  toString: trap, valueOf: trap, [Symbol.toPrimitive]: trap }"
    )
    err = js_error(context, code, timeout=1)
    assert isinstance(err.message, str)
    assert context.eval_sync("calls") == 0


def test_huge_error_message(context: ivm.Context) -> None:
    err = js_error(context, "throw new Error('m'.repeat(1024 * 1024))")
    assert err.message == "m" * (1024 * 1024)


def test_error_message_with_lone_surrogate(context: ivm.Context) -> None:
    err = js_error(context, "throw new Error('a\\ud800b')", filename="f\u00e9.js")
    assert err.message == "a\ud800b"
    assert "f\u00e9.js:1:" in err.stack


def test_errors_do_not_leak(no_leaks: None) -> None:
    isolate = ivm.Isolate(memory_limit=64)
    context = isolate.create_context_sync()
    for code in ("throw new Error('x')", "throw 1", "1 +", "while (true) {}"):
        try:
            context.eval_sync(code, timeout=0.02)
        except ivm.IvmError:
            pass
    isolate.dispose()
    del isolate, context


# --- The exception classes -------------------------------------------------------------


def test_exception_hierarchy() -> None:
    for cls in (ivm.JSError, ivm.TimeoutError, ivm.MemoryLimitError, ivm.DisposedError,
                ivm.TerminatedError, ivm.TransferError):
        assert issubclass(cls, ivm.IvmError), cls
    assert issubclass(ivm.IvmError, Exception)
    assert issubclass(ivm.TimeoutError, builtins.TimeoutError)
    assert issubclass(ivm.MemoryLimitError, MemoryError)
    assert issubclass(ivm.TransferError, TypeError)
    assert ivm.TimeoutError is not builtins.TimeoutError
    assert not issubclass(ivm.JSError, (TypeError, ValueError, MemoryError))
    assert not issubclass(ivm.DisposedError, ivm.JSError)


def test_js_error_constructed_in_python() -> None:
    err = ivm.JSError("m", name="TypeError")
    assert (err.name, err.message, err.stack, str(err)) == ("TypeError", "m", "TypeError: m",
                                                            "TypeError: m")
    bare = ivm.JSError("m", name="")
    assert bare.stack == "m"
