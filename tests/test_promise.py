"""promise=True: a returned promise is awaited inside the isolate."""

from __future__ import annotations

import time

import anyio
import pytest

import ivm

WASM_EMPTY_MODULE = "new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])"


def test_resolved_value_is_returned(context: ivm.Context) -> None:
    assert context.eval_sync("Promise.resolve(5)", promise=True) == 5


def test_without_promise_a_promise_is_not_transferable(context: ivm.Context) -> None:
    with pytest.raises(ivm.TransferError, match="Promise"):
        context.eval_sync("Promise.resolve(5)")


def test_async_function_with_awaits(context: ivm.Context) -> None:
    code = "(async () => { let s = 0; for (let i = 0; i < 100; i++) s += await i; return s })()"
    assert context.eval_sync(code, promise=True) == 4950


def test_non_promise_result_passes_through(context: ivm.Context) -> None:
    assert context.eval_sync("'plain'", promise=True) == "plain"


def test_rejection_raises_jserror_with_stack(context: ivm.Context) -> None:
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync(
            "\n(async () => { throw new TypeError('no') })()", promise=True, filename="file:///p.js"
        )
    assert info.value.name == "TypeError"
    assert info.value.message == "no"
    assert "file:///p.js:2:" in info.value.stack


def test_rejection_with_a_primitive(context: ivm.Context) -> None:
    with pytest.raises(ivm.JSError) as info:
        context.eval_sync("Promise.reject(42)", promise=True)
    assert info.value.message == "42"


def test_never_settling_promise_times_out(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync("new Promise(() => {})", promise=True, timeout=0.1)
    assert context.eval_sync("1 + 1") == 2


def test_await_null_loop_is_stopped_by_the_timeout(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        context.eval_sync("(async () => { while (true) await null })()", promise=True, timeout=0.1)
    assert context.eval_sync("1 + 1") == 2


def test_webassembly_instantiate_settles(context: ivm.Context) -> None:
    code = f"WebAssembly.instantiate({WASM_EMPTY_MODULE}).then(r => typeof r.instance)"
    assert context.eval_sync(code, promise=True, timeout=10) == "object"


def test_atomics_wait_async_settles(context: ivm.Context) -> None:
    code = (
        "const ia = new Int32Array(new SharedArrayBuffer(16));"
        "Atomics.waitAsync(ia, 0, 0, 10).value"
    )
    assert context.eval_sync(code, promise=True, timeout=10) == "timed-out"


def test_atomics_wait_async_woken_by_notify(context: ivm.Context) -> None:
    code = (
        "const ia = new Int32Array(new SharedArrayBuffer(16));"
        "const r = Atomics.waitAsync(ia, 0, 0, 10000).value;"
        "Promise.resolve().then(() => Atomics.notify(ia, 0));"
        "r"
    )
    assert context.eval_sync(code, promise=True, timeout=10) == "ok"


def test_script_run_with_promise(isolate: ivm.Isolate, context: ivm.Context) -> None:
    script = isolate.compile_script_sync("Promise.resolve(40).then(x => x + 2)")
    assert script.run_sync(context, promise=True) == 42


def test_promise_must_be_a_bool(context: ivm.Context) -> None:
    with pytest.raises(TypeError):
        context.eval_sync("1", promise=1)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_eval_with_promise(context: ivm.Context) -> None:
    assert await context.eval("new Promise(r => r(7))", promise=True) == 7


@pytest.mark.anyio
async def test_async_cancel_stops_a_pending_promise(context: ivm.Context) -> None:
    start = time.monotonic()
    with anyio.move_on_after(0.05):
        await context.eval("new Promise(() => {})", promise=True)
    assert time.monotonic() - start < 5
    assert await context.eval("1 + 1") == 2


@pytest.mark.anyio
async def test_async_timeout_covers_the_wait(context: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        await context.eval("new Promise(() => {})", promise=True, timeout=0.05)
