"""Unhandled promise rejections: reported per context at the end of the call that ran them,
as a copy or a string, revoked when handled later, logged without a handler, and never part
of any call's own result (docs/modules.md, "Unhandled rejections")."""

from __future__ import annotations

import logging

import anyio
import pytest

import ivm


def test_an_unhandled_rejection_reaches_the_handler_and_nothing_else(isolate: ivm.Isolate) -> None:
    events: list[ivm.UnhandledRejection] = []
    ctx = isolate.create_context_sync(on_unhandled_rejection=events.append)
    assert ctx.eval_sync("Promise.reject(new RangeError('lost')); 5") == 5
    assert len(events) == 1 and events[0].revoked is False
    reason = events[0].reason
    assert isinstance(reason, ivm.JSError) and reason.name == "RangeError"
    # The next call is not affected, and nothing is reported twice.
    assert ctx.eval_sync("6") == 6
    assert len(events) == 1


def test_reasons_that_cannot_be_copied_arrive_as_strings(isolate: ivm.Isolate) -> None:
    events: list[ivm.UnhandledRejection] = []
    ctx = isolate.create_context_sync(on_unhandled_rejection=events.append)
    ctx.eval_sync("Promise.reject(function named() {}); Promise.reject({n: 1, s: 'x'}); 0")
    assert [e.reason for e in events] == ["function named() {}", {"n": 1, "s": "x"}]


def test_a_rejection_handled_in_time_is_not_reported_and_one_handled_later_is_revoked(
    isolate: ivm.Isolate,
) -> None:
    events: list[ivm.UnhandledRejection] = []
    ctx = isolate.create_context_sync(on_unhandled_rejection=events.append)
    ctx.eval_sync("const early = Promise.reject(1); early.catch(() => {}); 1")
    ctx.eval_sync("Promise.reject(2).then(null, () => {}); 1")
    assert events == []
    ctx.eval_sync("globalThis.late = Promise.reject(3); 1")
    assert events == [ivm.UnhandledRejection(3, False)]
    ctx.eval_sync("late.catch(() => {}); 1")
    assert events == [ivm.UnhandledRejection(3, False), ivm.UnhandledRejection(3, True)]


def test_the_calls_own_promise_is_not_reported(isolate: ivm.Isolate) -> None:
    events: list[ivm.UnhandledRejection] = []
    ctx = isolate.create_context_sync(on_unhandled_rejection=events.append)
    with pytest.raises(ivm.JSError, match="mine"):
        ctx.eval_sync("Promise.reject(new Error('mine'))", promise=True)
    with pytest.raises(ivm.JSError, match="module"):
        m = isolate.compile_module_sync("await null; throw new Error('module')")
        m.instantiate_sync(ctx, lambda s, r: m)
        m.evaluate_sync()
    assert events == []


def test_a_failing_handler_does_not_change_the_call(isolate: ivm.Isolate) -> None:
    def bad(event: ivm.UnhandledRejection) -> None:
        raise RuntimeError("handler failed")

    ctx = isolate.create_context_sync(on_unhandled_rejection=bad)
    assert ctx.eval_sync("Promise.reject(1); 'result'") == "result"
    with pytest.raises(TypeError, match="callable"):
        isolate.create_context_sync(on_unhandled_rejection=1)  # type: ignore[arg-type]


def test_without_a_handler_rejections_are_logged(
    isolate: ivm.Isolate, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = isolate.create_context_sync()
    with caplog.at_level(logging.INFO, logger="ivm"):
        ctx.eval_sync("globalThis.p = Promise.reject('to the log'); 1")
        ctx.eval_sync("p.catch(() => {}); 1")
    messages = [r.getMessage() for r in caplog.records if r.name == "ivm"]
    assert any("unhandled promise rejection" in m and "to the log" in m for m in messages)
    assert any("was handled" in m for m in messages)


@pytest.mark.anyio
async def test_rejections_during_an_awaited_call(isolate: ivm.Isolate) -> None:
    events: list[ivm.UnhandledRejection] = []

    async def later() -> int:
        await anyio.sleep(0.01)
        return 1

    ctx = await isolate.create_context(on_unhandled_rejection=events.append)
    ctx.global_.set_sync("later", ivm.Callback(later, mode="async"))
    result = await ctx.eval(
        "(async () => { Promise.reject('side'); await later(); return 'done'; })()", promise=True
    )
    assert result == "done"
    await ctx.eval("1")  # reported by the end of this call at the latest
    assert [e.reason for e in events] == ["side"]
    ctx.eval_ignored("Promise.reject('ignored call')")
    await ctx.eval("2")
    assert [e.reason for e in events] == ["side", "ignored call"]
