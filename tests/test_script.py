"""ivm.Script: compile once, run in any context of the same isolate."""

from __future__ import annotations

import gc
import threading

import pytest

import ivm


def test_compile_and_run(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = isolate.compile_script_sync("6 * 7")
    assert script.run_sync(context) == 42
    assert script.run_sync(context) == 42


def test_run_in_two_contexts(isolate: ivm.Isolate) -> None:
    script = isolate.compile_script_sync(
        "globalThis.n = (globalThis.n || 0) + 1; n"
    )
    one = isolate.create_context_sync()
    two = isolate.create_context_sync()
    assert script.run_sync(one) == 1
    assert script.run_sync(one) == 2
    assert script.run_sync(two) == 1
    assert one.eval_sync("n") == 2
    assert two.eval_sync("n") == 1


def test_script_results_are_converted_like_eval(isolate: ivm.Isolate, context: ivm.Context) -> None:
    assert isolate.compile_script_sync("undefined").run_sync(context) is ivm.undefined
    assert isolate.compile_script_sync("2n ** 100n").run_sync(context) == 2**100
    assert isolate.compile_script_sync("'\\ud800'").run_sync(context) == "\ud800"
    with pytest.raises(ivm.TransferError, match="Object"):
        isolate.compile_script_sync("({})").run_sync(context)


def test_syntax_error_at_compile(isolate: ivm.Isolate) -> None:
    with pytest.raises(ivm.JSError) as info:
        isolate.compile_script_sync("1;\n\n  let x = ;", filename="file:///bad.js")
    err = info.value
    assert err.name == "SyntaxError"
    assert err.message
    assert err.stack.startswith(f"SyntaxError: {err.message}")
    assert "file:///bad.js:3" in err.stack


def test_syntax_error_line_offset(isolate: ivm.Isolate) -> None:
    with pytest.raises(ivm.JSError) as info:
        isolate.compile_script_sync("let x = ;", filename="off.js", line_offset=10)
    assert info.value.name == "SyntaxError"
    assert "off.js:11:" in info.value.stack


def test_default_script_name_in_stack(isolate: ivm.Isolate, context: ivm.Context) -> None:
    with pytest.raises(ivm.JSError) as info:
        isolate.compile_script_sync("throw new Error('x')").run_sync(context)
    assert "<isolated-vm>:1:" in info.value.stack


def test_runtime_error_stack_has_filename_and_offsets(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    code = "1;\nfunction f() { throw new TypeError('bad') }\nf()"
    script = isolate.compile_script_sync(code, filename="file:///run.js", line_offset=10)
    with pytest.raises(ivm.JSError) as info:
        script.run_sync(context)
    err = info.value
    assert (err.name, err.message) == ("TypeError", "bad")
    lines = err.stack.splitlines()
    assert lines[0] == "TypeError: bad"
    assert lines[1] == "    at f (file:///run.js:12:22)"
    assert lines[2] == "    at file:///run.js:13:1"


def test_column_offset_moves_first_line_columns(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    plain = isolate.compile_script_sync("throw new Error('e')", filename="c.js")
    shifted = isolate.compile_script_sync("throw new Error('e')", filename="c.js", column_offset=5)
    with pytest.raises(ivm.JSError) as a:
        plain.run_sync(context)
    with pytest.raises(ivm.JSError) as b:
        shifted.run_sync(context)
    assert "c.js:1:7" in a.value.stack
    assert "c.js:1:12" in b.value.stack


def test_script_of_another_isolate_is_rejected(isolate: ivm.Isolate) -> None:
    with ivm.Isolate(memory_limit=64) as other:
        script = other.compile_script_sync("1")
        context = isolate.create_context_sync()
        with pytest.raises(ValueError):
            script.run_sync(context)
        # Neither side is harmed.
        assert script.run_sync(other.create_context_sync()) == 1
        assert context.eval_sync("2") == 2


def test_run_needs_a_context(isolate: ivm.Isolate) -> None:
    script = isolate.compile_script_sync("1")
    with pytest.raises(TypeError):
        script.run_sync(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        script.run_sync(isolate)  # type: ignore[arg-type]


def test_compile_validates_arguments(isolate: ivm.Isolate) -> None:
    with pytest.raises(TypeError):
        isolate.compile_script_sync(b"1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        isolate.compile_script_sync(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        isolate.compile_script_sync("1", filename=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        isolate.compile_script_sync("1", line_offset="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        isolate.compile_script_sync("1", column_offset=-(2**40))


def test_released_script_raises_disposed(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = isolate.compile_script_sync("1")
    script.release()
    script.release()
    with pytest.raises(ivm.DisposedError):
        script.run_sync(context)
    assert context.eval_sync("2") == 2


def test_script_context_manager_releases(isolate: ivm.Isolate, context: ivm.Context) -> None:
    with isolate.compile_script_sync("1") as script:
        assert script.run_sync(context) == 1
    with pytest.raises(ivm.DisposedError):
        script.run_sync(context)


def test_run_in_released_context_raises_disposed(isolate: ivm.Isolate) -> None:
    script = isolate.compile_script_sync("1")
    context = isolate.create_context_sync()
    context.release()
    with pytest.raises(ivm.DisposedError):
        script.run_sync(context)


def test_script_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError):
        ivm.Script()


def test_run_timeout(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = isolate.compile_script_sync("while (true) {}")
    with pytest.raises(ivm.TimeoutError, match="Script execution timed out."):
        script.run_sync(context, timeout=0.05)
    assert isolate.compile_script_sync("'after'").run_sync(context) == "after"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_run_timeout_is_validated(
    isolate: ivm.Isolate, context: ivm.Context, timeout: float
) -> None:
    with pytest.raises(ValueError):
        isolate.compile_script_sync("1").run_sync(context, timeout=timeout)


def test_run_terminated_from_another_thread(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = isolate.compile_script_sync("while (true) {}")
    stopper = threading.Timer(0.1, isolate.terminate)
    stopper.start()
    try:
        with pytest.raises(ivm.TerminatedError):
            script.run_sync(context, timeout=20)
    finally:
        stopper.join()
    assert context.eval_sync("1") == 1


def test_script_outlives_dropped_isolate_object() -> None:
    script = ivm.Isolate(memory_limit=64).compile_script_sync("'kept'")
    gc.collect()
    context = script._isolate.create_context_sync()
    assert script.run_sync(context) == "kept"
    script._isolate.dispose()


def test_scripts_do_not_leak(no_leaks: None) -> None:
    isolate = ivm.Isolate(memory_limit=64)
    context = isolate.create_context_sync()
    for code in ("1", "throw 1", "({})", "'s'.repeat(1000)"):
        script = isolate.compile_script_sync(code)
        try:
            script.run_sync(context)
        except ivm.IvmError:
            pass
    try:
        isolate.compile_script_sync("let = ;")
    except ivm.JSError:
        pass
    isolate.dispose()
    del isolate, context, script


def test_script_with_lexical_declaration_runs_again_as_a_redeclaration(
    isolate: ivm.Isolate,
) -> None:
    script = isolate.compile_script_sync("const b = 2; b")
    first, second = isolate.create_context_sync(), isolate.create_context_sync()
    assert script.run_sync(first) == 2
    assert script.run_sync(second) == 2
    for _ in range(2):
        with pytest.raises(ivm.JSError, match="already been declared"):
            script.run_sync(first)


def test_run_with_release_releases_the_script_however_the_run_ends(
    isolate: ivm.Isolate, context: ivm.Context
) -> None:
    """isolated-vm's `script.run(context, {release: true})`."""
    script = isolate.compile_script_sync("6 * 7")
    assert script.run_sync(context, release=True) == 42
    with pytest.raises(ivm.DisposedError):
        script.run_sync(context)
    failing = isolate.compile_script_sync("throw new Error('no')")
    with pytest.raises(ivm.JSError):
        failing.run_sync(context, release=True)
    with pytest.raises(ivm.DisposedError):
        failing.run_sync(context)
    kept = isolate.compile_script_sync("1")
    assert kept.run_sync(context, release=False) == 1 and kept.run_sync(context) == 1
    with pytest.raises(TypeError, match="release must be a bool"):
        kept.run_sync(context, release=1)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_run_with_release(isolate: ivm.Isolate) -> None:
    context = await isolate.create_context()
    script = await isolate.compile_script("'once'")
    assert await script.run(context, release=True) == "once"
    with pytest.raises(ivm.DisposedError):
        await script.run(context)
