"""Timers in a context (``HostBasics(timers=True)``): setTimeout, setInterval,
setImmediate, their clear* twins and queueMicrotask, inline and in a worker process
(docs/host.md, "Timers")."""

from __future__ import annotations

import threading
from typing import Awaitable, Callable, Iterator

import anyio
import pytest

import ivm

TIMERS = ivm.HostBasics(timers=True)
NAMES = [
    "setTimeout",
    "setInterval",
    "setImmediate",
    "clearTimeout",
    "clearInterval",
    "clearImmediate",
    "queueMicrotask",
]


@pytest.fixture
def timers(any_isolate: ivm.Isolate) -> Iterator[ivm.Context]:
    """A context with timers, once inline and once in a worker process."""
    ctx = any_isolate.create_context_sync(host=TIMERS)
    try:
        yield ctx
    finally:
        if not any_isolate.is_disposed:
            ctx.release()


def test_timers_are_opt_in(any_isolate: ivm.Isolate) -> None:
    bare = any_isolate.create_context_sync()
    with_timers = any_isolate.create_context_sync(host=TIMERS)
    for name in NAMES:
        assert bare.eval_sync(f"typeof {name}") == "undefined"
        assert with_timers.eval_sync(f"typeof {name}") == "function"
        assert with_timers.eval_sync(f"{name}.name") == name


def test_ids_are_distinct_positive_integers(timers: ivm.Context) -> None:
    ids = timers.eval_sync(
        "const f = () => {};"
        "[setTimeout(f, 1e6), setInterval(f, 1e6), setImmediate(f), setTimeout(f)]",
        copy=True,
    )
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(set(ids)) == 4


def test_order_is_due_time_then_creation(timers: ivm.Context) -> None:
    log = timers.eval_sync(
        """new Promise(resolve => {
             const log = [];
             setTimeout(() => log.push('b'), 20);
             setTimeout(() => log.push('a1'), 0);
             setTimeout(() => log.push('a2'), -5);
             setImmediate(() => log.push('i'));
             queueMicrotask(() => log.push('m'));
             setTimeout(() => resolve(log), 40);
             log.push('sync');
           })""",
        promise=True,
        copy=True,
    )
    assert log == ["sync", "m", "a1", "a2", "i", "b"]


def test_arguments_and_this(timers: ivm.Context) -> None:
    got = timers.eval_sync(
        """new Promise(resolve => {
             setTimeout(function (a, b) { resolve([a, b, this === globalThis]) }, 1, 1, 'x');
           })""",
        promise=True,
        copy=True,
    )
    assert got == [1, "x", True]
    assert timers.eval_sync(
        "new Promise(r => setImmediate((...a) => r(a.join()), 'p', 'q'))", promise=True
    ) == "p,q"


def test_clear_and_interval(timers: ivm.Context) -> None:
    got = timers.eval_sync(
        """new Promise(resolve => {
             let ran = [];
             const t = setTimeout(() => ran.push('cleared timeout'), 0);
             clearTimeout(t);
             clearImmediate(setImmediate(() => ran.push('cleared immediate')));
             let n = 0;
             const i = setInterval(() => {
               n++;
               if (n === 3) { clearInterval(i); setTimeout(() => resolve([n, ran]), 20) }
             }, 1);
             clearTimeout(undefined); clearTimeout('nope'); clearTimeout({}); clearTimeout(-1);
           })""",
        promise=True,
        copy=True,
    )
    assert got == [3, []]


def test_any_clear_clears_any_id(timers: ivm.Context) -> None:
    got = timers.eval_sync(
        """new Promise(resolve => {
             let ran = 0;
             clearInterval(setTimeout(() => ran++, 0));
             clearTimeout(setInterval(() => ran++, 0));
             clearTimeout(String(setTimeout(() => ran++, 0)));
             setTimeout(() => resolve(ran), 10);
           })""",
        promise=True,
    )
    assert got == 0


def _number(context: ivm.Context, code: str) -> float:
    value = context.eval_sync(code)
    assert isinstance(value, (int, float)), value
    return value


def _throws(context: ivm.Context, code: str, name: str, match: str) -> None:
    """`code` throws a JavaScript error of class `name` whose message matches."""
    with pytest.raises(ivm.JSError, match=match) as info:
        context.eval_sync(code)
    assert info.value.name == name


def test_string_callbacks_are_refused(timers: ivm.Context) -> None:
    for name in ["setTimeout", "setInterval", "setImmediate"]:
        _throws(timers, f"{name}('globalThis.evil = 1', 0)", "TypeError",
                f"{name}: a string callback is refused")
    _throws(timers, "setTimeout({}, 0)", "TypeError", "must be a function, not Object")
    _throws(timers, "queueMicrotask()", "TypeError",
            "queueMicrotask: the callback must be a function")
    assert timers.eval_sync("typeof globalThis.evil") == "undefined"


def test_delay_conversion(timers: ivm.Context) -> None:
    # NaN, infinities, negatives and 2**31 (WebIDL long wraps it negative) are all 0.
    got = timers.eval_sync(
        """new Promise(resolve => {
             const log = [];
             for (const d of [NaN, -Infinity, Infinity, -1, 2 ** 31, '0', null, undefined])
               setTimeout(() => log.push(String(d)), d);
             setTimeout(() => resolve(log), 5);
           })""",
        promise=True,
        copy=True,
    )
    assert got == ["NaN", "-Infinity", "Infinity", "-1", "2147483648", "0", "null", "undefined"]
    _throws(timers, "setTimeout(() => {}, { valueOf() { throw new RangeError('no') } })",
            "RangeError", "no")
    _throws(timers, "setTimeout(() => {}, Symbol())", "TypeError", "Symbol")


def test_timers_run_without_a_call(
    timers: ivm.Context, wait_until: Callable[..., bool]
) -> None:
    assert timers.eval_sync("setTimeout(() => { globalThis.done = 'yes' }, 5); 1") == 1
    assert wait_until(lambda: timers.eval_sync("globalThis.done") == "yes")


def test_an_interval_does_not_keep_a_call_alive(
    timers: ivm.Context, wait_until: Callable[..., bool]
) -> None:
    # The call returns at once; the interval (set by a call without a timeout) goes on
    # in timer jobs until cleared.
    assert timers.eval_sync("globalThis.n = 0; globalThis.i = setInterval(() => n++, 1); 7") == 7
    assert wait_until(lambda: _number(timers, "n") >= 3)
    timers.eval_sync("clearInterval(i)")
    seen = timers.eval_sync("n")
    assert timers.eval_sync("new Promise(r => setTimeout(() => r(n), 20))", promise=True) == seen


def test_timeout_ends_an_endless_interval_sync(timers: ivm.Context) -> None:
    # Must hold: an endless setInterval plus a promise that never settles is ended by the
    # call's timeout, and the interval with it (it inherited the call's deadline).
    with pytest.raises(ivm.TimeoutError):
        timers.eval_sync(
            "globalThis.n = 0; setInterval(() => n++, 1); new Promise(() => {})",
            promise=True,
            timeout=0.2,
        )
    seen = _number(timers, "n")
    assert seen > 0
    assert timers.eval_sync("new Promise(r => setTimeout(() => r(n), 30))", promise=True) == seen


@pytest.mark.anyio
async def test_timeout_ends_an_endless_interval_async(timers: ivm.Context) -> None:
    with pytest.raises(ivm.TimeoutError):
        await timers.eval(
            "globalThis.n = 0; setInterval(() => n++, 1); new Promise(() => {})",
            promise=True,
            timeout=0.2,
        )
    seen = await timers.eval("n")
    assert isinstance(seen, int) and seen > 0
    assert await timers.eval("new Promise(r => setTimeout(() => r(n), 30))", promise=True) == seen


def test_a_busy_timer_callback_is_stopped_by_its_calls_deadline(timers: ivm.Context) -> None:
    # The timers inherit the 0.3 s deadline of the call that set them: the loop is stopped
    # there, the later timer is dropped, and the context stays usable.
    timers.eval_sync(
        "setTimeout(() => { while (true) {} }, 0);"
        "setTimeout(() => { globalThis.late = 1 }, 100)",
        timeout=0.3,
    )
    with pytest.raises(ivm.TimeoutError):
        timers.eval_sync("new Promise(() => {})", promise=True, timeout=0.6)
    assert timers.eval_sync("typeof globalThis.late") == "undefined"
    assert timers.eval_sync("new Promise(r => setTimeout(() => r(5), 1))", promise=True) == 5


def test_a_timer_due_after_its_deadline_never_runs(timers: ivm.Context) -> None:
    timers.eval_sync("setTimeout(() => { globalThis.ran = 1 }, 400)", timeout=0.1)
    with pytest.raises(ivm.TimeoutError):
        timers.eval_sync("new Promise(() => {})", promise=True, timeout=0.6)
    assert timers.eval_sync("typeof globalThis.ran") == "undefined"


@pytest.mark.anyio
async def test_promise_waits_for_timers_async(timers: ivm.Context) -> None:
    code = """new Promise(resolve => {
                let n = 0;
                const i = setInterval(() => { if (++n === 5) { clearInterval(i); resolve(n) } }, 2);
              })"""
    assert await timers.eval(code, promise=True, timeout=30) == 5
    assert await timers.eval(code, promise=True) == 5
    results = await _gather(timers, [f"new Promise(r => setTimeout(() => r({k}), {5 * k}))"
                                     for k in range(5)])
    assert results == list(range(5))


async def _gather(context: ivm.Context, codes: list[str]) -> list[object]:
    results: list[object] = [None] * len(codes)

    async def one(k: int) -> None:
        results[k] = await context.eval(codes[k], promise=True, timeout=30)

    async with anyio.create_task_group() as tg:
        for k in range(len(codes)):
            tg.start_soon(one, k)
    return results


def test_a_throwing_callback_is_reported_and_others_go_on(any_isolate: ivm.Isolate) -> None:
    events: list[ivm.UnhandledRejection] = []
    lock = threading.Lock()

    def record(event: ivm.UnhandledRejection) -> None:
        with lock:
            events.append(event)

    ctx = any_isolate.create_context_sync(host=TIMERS, on_unhandled_rejection=record)
    got = ctx.eval_sync(
        """new Promise(resolve => {
             let n = 0;
             setTimeout(() => { throw new TypeError('from a timeout') }, 0);
             queueMicrotask(() => { throw new RangeError('from a microtask') });
             const i = setInterval(() => { if (++n === 2) clearInterval(i); throw 'each time' }, 1);
             setTimeout(() => resolve(n), 30);
           })""",
        promise=True,
    )
    assert got == 2
    reasons = [e.reason for e in events]
    assert any(isinstance(r, ivm.JSError) and r.message == "from a timeout" for r in reasons)
    assert any(isinstance(r, ivm.JSError) and r.message == "from a microtask" for r in reasons)
    assert reasons.count("each time") == 2


def test_background_errors_are_reported_too(
    any_isolate: ivm.Isolate, wait_until: Callable[..., bool]
) -> None:
    events: list[ivm.UnhandledRejection] = []
    ctx = any_isolate.create_context_sync(host=TIMERS, on_unhandled_rejection=events.append)
    ctx.eval_sync("setTimeout(() => { throw new Error('later') }, 1)")
    assert wait_until(lambda: len(events) == 1)
    reason = events[0].reason
    assert isinstance(reason, ivm.JSError) and reason.message == "later"


def test_a_background_callback_stopped_by_its_timeout_is_reported(
    any_isolate: ivm.Isolate, wait_until: Callable[..., bool]
) -> None:
    """A timer job's callback that runs past its (inherited) deadline ends and is reported
    as an unhandled rejection; the interval it belonged to ends; the context goes on."""
    events: list[ivm.UnhandledRejection] = []
    ctx = any_isolate.create_context_sync(host=TIMERS, on_unhandled_rejection=events.append)
    ctx.eval_sync("globalThis.n = 0; setInterval(() => { n++; while (true) {} }, 20)", timeout=0.3)
    assert wait_until(lambda: len(events) == 1)
    reason = events[0].reason
    assert isinstance(reason, ivm.JSError) and reason.name == "Error"
    assert "stopped by its timeout" in reason.message
    assert ctx.eval_sync("n") == 1
    assert ctx.eval_sync("new Promise(r => setTimeout(() => r(n), 30))", promise=True) == 1
    assert len(events) == 1


def test_pending_timers_are_bounded(timers: ivm.Context) -> None:
    assert timers.eval_sync(
        "for (let i = 0; i < 100000; i++) setTimeout(() => {}, 1e9); 'ok'"
    ) == "ok"
    for name in ["setTimeout", "setInterval", "setImmediate"]:
        _throws(timers, f"{name}(() => {{}}, 1e9)", "RangeError",
                f"{name}: too many pending timers in this context \\(at most 100000\\)")
    # Clearing one makes room again; queueMicrotask is not a timer.
    assert timers.eval_sync("clearTimeout(5); typeof setTimeout(() => {}, 1e9)") == "number"
    assert timers.eval_sync("new Promise(r => queueMicrotask(() => r(1)))", promise=True) == 1


def test_a_debounce_works_as_written(timers: ivm.Context) -> None:
    # A library-like debounce, as lodash and friends write it.
    timers.eval_sync(
        """
        function debounce(fn, wait) {
          let timer = null;
          return function (...args) {
            if (timer !== null) clearTimeout(timer);
            timer = setTimeout(() => { timer = null; fn.apply(this, args); }, wait);
          };
        }
        globalThis.calls = [];
        globalThis.save = debounce((v) => calls.push(v), 20); 0
        """
    )
    got = timers.eval_sync(
        """(async () => {
             for (const v of [1, 2, 3]) save(v);
             await new Promise(r => setTimeout(r, 60));
             save(4);
             await new Promise(r => setTimeout(r, 60));
             return calls;
           })()""",
        promise=True,
        copy=True,
    )
    assert got == [3, 4]


def test_host_callbacks_from_timers(any_isolate: ivm.Isolate) -> None:
    seen: list[object] = []
    ctx = any_isolate.create_context_sync(host=TIMERS)
    ctx.global_.set_sync("report", ivm.Callback(seen.append))
    assert ctx.eval_sync(
        "new Promise(r => setTimeout(() => { report('tick'); r('done') }, 1))", promise=True
    ) == "done"
    assert seen == ["tick"]


def _ticking(isolate: ivm.Isolate) -> tuple[ivm.Context, list[object]]:
    """A context with timers and a host function `tick(x)` that records x."""
    ticks: list[object] = []
    ctx = isolate.create_context_sync(host=TIMERS)
    ctx.global_.set_sync("tick", ivm.Callback(ticks.append))
    return ctx, ticks


def test_release_cancels_pending_timers(
    any_isolate: ivm.Isolate, wait_until: Callable[..., bool]
) -> None:
    ctx, ticks = _ticking(any_isolate)
    ctx.eval_sync("setInterval(() => tick(1), 1); setTimeout(() => tick(2), 1e6)")
    assert wait_until(lambda: len(ticks) >= 2)
    ctx.release()
    after = len(ticks)
    other = any_isolate.create_context_sync(host=TIMERS)
    assert other.eval_sync("new Promise(r => setTimeout(r, 30, 'waited'))", promise=True) == "waited"
    assert len(ticks) <= after + 1   # (one may have been running as it was released)
    assert 2 not in ticks


def test_disposal_with_pending_timers_leaks_nothing(
    placement: str, no_leaks: None, wait_until: Callable[..., bool]
) -> None:
    for _ in range(3):
        iso = ivm.Isolate(memory_limit=64, process=placement)  # type: ignore[arg-type]
        ctx = iso.create_context_sync(host=TIMERS)
        ctx.eval_sync(
            "globalThis.n = 0;"
            "for (let i = 0; i < 100; i++) setTimeout((a) => a.push(n), i, []);"
            "setInterval(() => n++, 0); setImmediate(() => n++); queueMicrotask(() => n++);"
            "setTimeout(() => { while (true) {} }, 1e6)"
        )
        assert wait_until(lambda: _number(ctx, "n") > 3)
        other = iso.create_context_sync(host=TIMERS)
        other.eval_sync("setInterval(() => {}, 1)")
        other.release()
        iso.dispose()
        with pytest.raises(ivm.DisposedError):
            ctx.eval_sync("1")
        del ctx, other, iso


@pytest.mark.anyio
async def test_disposal_while_a_call_waits_for_a_timer(any_isolate: ivm.Isolate) -> None:
    ctx = await any_isolate.create_context(host=TIMERS)
    waits = [ctx.eval("new Promise(r => setTimeout(r, 60_000))", promise=True) for _ in range(3)]
    errors: list[BaseException] = []

    async def wait(call: Awaitable[object]) -> None:
        try:
            await call
        except ivm.DisposedError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for call in waits:
            tg.start_soon(wait, call)
        await anyio.sleep(0.05)
        any_isolate.dispose()
    assert len(errors) == 3


@pytest.mark.anyio
async def test_cancelling_a_wait_leaves_the_timers(timers: ivm.Context) -> None:
    with anyio.move_on_after(0.05):
        await timers.eval(
            "globalThis.x = 0; new Promise(r => setTimeout(() => { x = 1; r() }, 100))",
            promise=True,
        )
    assert await timers.eval("new Promise(r => setTimeout(() => r(x), 150))", promise=True) == 1


def test_memory_limit_in_a_timer_callback(wait_until: Callable[..., bool]) -> None:
    iso = ivm.Isolate(memory_limit=16)
    try:
        ctx = iso.create_context_sync(host=TIMERS)
        ctx.eval_sync("setTimeout(() => { const a = []; while (true) a.push({ a }) }, 1)")
        assert wait_until(lambda: iso.is_disposed)
        with pytest.raises(ivm.DisposedError):
            ctx.eval_sync("1")
    finally:
        iso.dispose()


def test_terminate_stops_a_busy_background_timer(
    any_isolate: ivm.Isolate, wait_until: Callable[..., bool]
) -> None:
    # A timer set without a timeout runs under the 10 s per-callback bound; terminate()
    # stops it sooner, clears that timer, and the other timers go on.
    ctx, ticks = _ticking(any_isolate)
    ctx.eval_sync("setInterval(() => { tick('busy'); while (true) {} }, 1)")
    assert wait_until(lambda: "busy" in ticks)
    any_isolate.terminate()
    assert ctx.eval_sync("setInterval(() => tick('after'), 1); 1") == 1
    assert wait_until(lambda: "after" in ticks)
    assert ticks.count("busy") == 1


# A small library as libraries are written (UMD, feature use without glue): it encodes
# strings with TextEncoder in slices, yielding to other work with setTimeout between them.
CHUNKED = """
(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.chunked = factory();
})(this, function () {
  'use strict';
  var encoder = new TextEncoder();
  function byteLengths(strings, slice) {
    return new Promise(function (resolve) {
      var out = [], i = 0;
      (function step() {
        for (var end = Math.min(i + slice, strings.length); i < end; i++)
          out.push(encoder.encode(strings[i]).length);
        if (i < strings.length) setTimeout(step, 0); else resolve(out);
      })();
    });
  }
  return { byteLengths: byteLengths };
});
"""


@pytest.mark.anyio
async def test_a_library_using_timers_and_text_encoder(any_isolate: ivm.Isolate) -> None:
    ctx = await any_isolate.create_context(host=ivm.HostBasics(timers=True, encoding=True))
    await ctx.eval(CHUNKED)
    code = "chunked.byteLengths(['a', 'hé', '日本', '🙂'.repeat(3)], 1)"
    assert await ctx.eval(code, promise=True, copy=True) == [1, 3, 6, 12]
    assert ctx.eval_sync(code, promise=True, copy=True, timeout=30) == [1, 3, 6, 12]


def test_deeply_nested_timeouts_are_clamped(timers: ivm.Context) -> None:
    # Past 5 nested levels a delay under 4 ms becomes 4 ms (HTML): of 12 nested
    # setTimeout(0), the 7th to the 12th wait 4 ms each. A lower bound only (timers never
    # run early); Date.now() counts whole milliseconds.
    elapsed = timers.eval_sync(
        """new Promise(resolve => {
             const start = Date.now();
             let depth = 0;
             (function again() {
               if (++depth === 13) resolve(Date.now() - start); else setTimeout(again, 0);
             })();
           })""",
        promise=True,
        timeout=30,
    )
    assert isinstance(elapsed, int) and elapsed >= 6 * 4 - 1
    # setImmediate is never clamped.
    assert timers.eval_sync(
        """new Promise(resolve => {
             let depth = 0;
             (function again() { if (++depth === 50) resolve(depth); else setImmediate(again) })();
           })""",
        promise=True,
        timeout=30,
    ) == 50
