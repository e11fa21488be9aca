"""The inspector: ``Isolate(inspector=True)``, ``InspectorSession`` and the Chrome DevTools
protocol through it. Breakpoints by URL and line, ``debugger;``, stepping and evaluation in
the paused frame, console messages, contexts, a paused call ended by its timeout,
termination, cancellation or disposal, two sessions, a session disposed mid-pause, bad
messages, and refusals."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import anyio
import pytest

import ivm
from ivm._ffi import lib

WAIT = 30.0  # generous: the machine may be loaded


class Client:
    """A protocol client on one session: numbered commands, responses by id, events."""

    def __init__(self, isolate: ivm.Isolate) -> None:
        self.session = isolate.create_inspector_session()
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        self.session.on_response = lambda call_id, text: self.messages.put(json.loads(text))
        self.session.on_notification = self._notified
        self.seen: list[dict[str, Any]] = []
        self.scripts: dict[str, str] = {}  # scriptId -> url (Debugger.scriptParsed)

    def _notified(self, text: str) -> None:
        m = json.loads(text)
        if m.get("method") == "Debugger.scriptParsed":
            self.scripts[m["params"]["scriptId"]] = m["params"]["url"]
        self.messages.put(m)

    def url(self, frame: dict[str, Any]) -> str:
        """The URL of a paused call frame's script."""
        return self.scripts[frame["location"]["scriptId"]]

    def send(self, method: str, **params: Any) -> int:
        self.next_id += 1
        self.session.dispatch_protocol_message(
            json.dumps({"id": self.next_id, "method": method, "params": params}))
        return self.next_id

    def wait(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for m in self.seen:
            if predicate(m):
                self.seen.remove(m)
                return m
        deadline = time.monotonic() + WAIT
        while True:
            m = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            if predicate(m):
                return m
            self.seen.append(m)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = self.send(method, **params)
        return self.wait(lambda m: m.get("id") == call_id)

    def event(self, method: str) -> dict[str, Any]:
        return self.wait(lambda m: m.get("method") == method)


class Running:
    """A synchronous call on a thread of its own (it blocks while paused)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.error = exc
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the call did not end"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def iso(placement: str) -> Iterator[ivm.Isolate]:
    """An isolate with the inspector, inline and in a worker process (`placement`): the
    tests that use it run once for each."""
    isolate = ivm.Isolate(inspector=True, process=placement)  # type: ignore[arg-type]
    try:
        yield isolate
    finally:
        isolate.dispose()


@pytest.fixture
def client(iso: ivm.Isolate) -> Iterator[Client]:
    c = Client(iso)
    c.call("Runtime.enable")
    c.call("Debugger.enable")
    try:
        yield c
    finally:
        c.session.dispose()


APP = "function add(a, b) {\n  const sum = a + b;\n  return sum;\n}\nadd(20, 22);\n"


def test_breakpoint_by_url_evaluate_and_resume(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    bp = client.call("Debugger.setBreakpointByUrl", url="app.js", lineNumber=2)
    assert "breakpointId" in bp["result"]
    run = Running(lambda: ctx.eval_sync(APP, filename="app.js"))
    paused = client.event("Debugger.paused")["params"]
    frame = paused["callFrames"][0]
    assert frame["functionName"] == "add"
    assert frame["location"]["lineNumber"] == 2
    assert client.url(frame) == "app.js"
    assert paused["hitBreakpoints"] == [bp["result"]["breakpointId"]]
    value = client.call("Debugger.evaluateOnCallFrame", callFrameId=frame["callFrameId"],
                        expression="sum * 10 + a")
    assert value["result"]["result"] == {"type": "number", "value": 440, "description": "440"}
    client.call("Debugger.resume")
    assert run.join() == 42


def test_breakpoint_in_a_script(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    script = iso.compile_script_sync(APP, filename="lib/app.js")
    client.call("Debugger.setBreakpointByUrl", url="lib/app.js", lineNumber=1)
    run = Running(lambda: script.run_sync(ctx))
    frame = client.event("Debugger.paused")["params"]["callFrames"][0]
    assert (client.url(frame), frame["location"]["lineNumber"]) == ("lib/app.js", 1)
    client.call("Debugger.resume")
    assert run.join() == 42


def test_debugger_statement_and_step_over(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    run = Running(lambda: ctx.eval_sync("let n = 1;\ndebugger;\nn += 1;\nn * 10", filename="s.js"))
    first = client.event("Debugger.paused")["params"]
    assert first["reason"] == "other"
    assert first["callFrames"][0]["location"]["lineNumber"] == 1
    client.call("Debugger.stepOver")
    client.event("Debugger.resumed")
    second = client.event("Debugger.paused")["params"]["callFrames"][0]
    assert second["location"]["lineNumber"] == 2
    client.call("Debugger.stepOver")
    third = client.event("Debugger.paused")["params"]["callFrames"][0]
    assert third["location"]["lineNumber"] == 3
    value = client.call("Debugger.evaluateOnCallFrame", callFrameId=third["callFrameId"],
                        expression="n")
    assert value["result"]["result"]["value"] == 2
    client.call("Debugger.resume")
    assert run.join() == 20


@pytest.mark.anyio
async def test_async_call_paused_and_resumed_from_the_handler(iso: ivm.Isolate,
                                                              anyio_backend: str) -> None:
    """The handlers run on the paused pool thread; dispatching from there works."""
    session = iso.create_inspector_session()
    seen: list[Any] = []

    def on_notification(text: str) -> None:
        m = json.loads(text)
        if m["method"] == "Debugger.paused":
            frame = m["params"]["callFrames"][0]
            seen.append(frame["location"]["lineNumber"])
            session.dispatch_protocol_message(json.dumps({
                "id": 10, "method": "Debugger.evaluateOnCallFrame",
                "params": {"callFrameId": frame["callFrameId"], "expression": "x + 1"}}))

    def on_response(call_id: int, text: str) -> None:
        if call_id == 10:
            seen.append(json.loads(text)["result"]["result"]["value"])
            session.dispatch_protocol_message('{"id": 11, "method": "Debugger.resume"}')

    session.on_notification = on_notification
    session.on_response = on_response
    session.dispatch_protocol_message('{"id": 1, "method": "Debugger.enable"}')
    ctx = await iso.create_context()
    assert await ctx.eval("var x = 6;\ndebugger;\nx * 7", filename="a.js") == 42
    assert seen == [1, 7]
    session.dispose()


@pytest.mark.anyio
async def test_async_paused_call_cancelled(iso: ivm.Isolate, client: Client,
                                           anyio_backend: str) -> None:
    ctx = await iso.create_context()
    with anyio.move_on_after(0.5) as scope:
        await ctx.eval("debugger; 1")
    assert scope.cancelled_caught
    assert await ctx.eval("2 + 2") == 4


def test_console_reaches_the_inspector(iso: ivm.Isolate, client: Client) -> None:
    lines: list[tuple[str, str]] = []
    host = iso.create_context_sync(host=ivm.HostBasics(console=lambda lvl, text: lines.append((lvl, text))))
    bare = iso.create_context_sync()
    host.eval_sync("console.log('from host', 42); console.warn('careful')")
    bare.eval_sync("console.error('from bare', {a: 1})")
    logged = client.event("Runtime.consoleAPICalled")["params"]
    assert logged["type"] == "log"
    assert [a.get("value") for a in logged["args"]] == ["from host", 42]
    warned = client.event("Runtime.consoleAPICalled")["params"]
    assert (warned["type"], warned["args"][0]["value"]) == ("warning", "careful")
    errored = client.event("Runtime.consoleAPICalled")["params"]
    assert errored["type"] == "error" and errored["args"][0]["value"] == "from bare"
    assert errored["executionContextId"] != logged["executionContextId"]
    # The host's console still works as before.
    assert lines == [("log", "from host 42"), ("warn", "careful")]


def test_plain_isolate_keeps_contexts_bare() -> None:
    with ivm.Isolate() as plain:
        assert plain.create_context_sync().eval_sync("typeof console") == "undefined"


def test_contexts_are_reported(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    created = client.event("Runtime.executionContextCreated")["params"]["context"]
    assert created["name"].startswith("ivm context")
    assert created["auxData"] == {"isDefault": True}
    ctx.release()
    destroyed = client.event("Runtime.executionContextDestroyed")["params"]
    assert destroyed["executionContextId"] == created["id"]


def test_runtime_evaluate_while_idle(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    ctx.eval_sync("globalThis.answer = 42")
    created = client.event("Runtime.executionContextCreated")["params"]["context"]
    value = client.call("Runtime.evaluate", expression="answer + 1", contextId=created["id"])
    assert value["result"]["result"]["value"] == 43


def test_pause_running_javascript(iso: ivm.Isolate, client: Client) -> None:
    """A message reaches running JavaScript through an interrupt."""
    ctx = iso.create_context_sync()
    run = Running(lambda: ctx.eval_sync(
        "globalThis.go = true; let i = 0; while (go) i++; 'stopped'", filename="loop.js"))
    time.sleep(0.1)
    client.call("Debugger.pause")
    frame = client.event("Debugger.paused")["params"]["callFrames"][0]
    assert client.url(frame) == "loop.js"
    client.call("Debugger.evaluateOnCallFrame", callFrameId=frame["callFrameId"],
                expression="go = false")
    client.call("Debugger.resume")
    assert run.join() == "stopped"


def test_timeout_ends_a_paused_call(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    run = Running(lambda: ctx.eval_sync("debugger; 1", timeout=0.3))
    client.event("Debugger.paused")
    with pytest.raises(ivm.TimeoutError):
        run.join()
    client.event("Debugger.resumed")
    assert ctx.eval_sync("6 * 7") == 42


def test_terminate_and_dispose_end_a_paused_call(client: Client, iso: ivm.Isolate) -> None:
    ctx = iso.create_context_sync()
    run = Running(lambda: ctx.eval_sync("debugger; 1"))
    client.event("Debugger.paused")
    iso.terminate()
    with pytest.raises(ivm.TerminatedError):
        run.join()
    assert ctx.eval_sync("1 + 1") == 2
    run = Running(lambda: ctx.eval_sync("debugger; 1"))
    client.event("Debugger.paused")
    iso.dispose()
    with pytest.raises(ivm.DisposedError):
        run.join()
    with pytest.raises(ivm.DisposedError):
        client.session.dispatch_protocol_message('{"id": 99, "method": "Runtime.enable"}')


def test_other_calls_wait_while_paused(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    run = Running(lambda: ctx.eval_sync("debugger; 'first'"))
    client.event("Debugger.paused")
    second = Running(lambda: ctx.eval_sync("'second'"))
    time.sleep(0.2)
    assert second.thread.is_alive()
    client.call("Debugger.resume")
    assert run.join() == "first"
    assert second.join() == "second"


def test_two_sessions(iso: ivm.Isolate, client: Client) -> None:
    other = Client(iso)
    other.call("Debugger.enable")
    ctx = iso.create_context_sync()
    run = Running(lambda: ctx.eval_sync("debugger; 'done'"))
    a = client.event("Debugger.paused")["params"]["callFrames"][0]
    b = other.event("Debugger.paused")["params"]["callFrames"][0]
    assert a["location"] == b["location"]
    value = other.call("Debugger.evaluateOnCallFrame", callFrameId=b["callFrameId"],
                       expression="'x'.repeat(3)")
    assert value["result"]["result"]["value"] == "xxx"
    client.call("Debugger.resume")
    assert run.join() == "done"
    other.session.dispose()
    assert ctx.eval_sync("1") == 1


def test_session_disposed_mid_pause(iso: ivm.Isolate, client: Client) -> None:
    ctx = iso.create_context_sync()
    run = Running(lambda: ctx.eval_sync("debugger; 'resumed'"))
    client.event("Debugger.paused")
    client.session.dispose()
    client.session.dispose()  # idempotent
    assert run.join() == "resumed"
    assert client.session.is_disposed
    with pytest.raises(ivm.DisposedError):
        client.session.dispatch_protocol_message("{}")
    # A new session works on the same isolate.
    again = Client(iso)
    assert again.call("Runtime.evaluate", expression="1 + 2")["result"]["result"]["value"] == 3
    again.session.dispose()


def test_bad_messages_leave_the_isolate_healthy(iso: ivm.Isolate, client: Client) -> None:
    client.session.dispatch_protocol_message("{not json")
    malformed = client.wait(lambda m: "error" in m)
    assert malformed["error"]["code"] == -32700
    unknown = client.call("Nope.nothing")
    assert unknown["error"]["code"] == -32601
    bad_params = client.call("Debugger.setBreakpointByUrl", lineNumber="x")
    assert "error" in bad_params
    with pytest.raises(ValueError, match="bytes"):
        client.session.dispatch_protocol_message(
            json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {"expression": "x" * (10 << 20)}}))
    with pytest.raises(TypeError):
        client.session.dispatch_protocol_message(b"{}")  # type: ignore[arg-type]
    # Non-ASCII text and lone surrogates survive the trip (in the default context).
    ctx = iso.create_context_sync()
    value = client.call("Runtime.evaluate", expression="'h\u00e9llo \U0001F600'")
    assert value["result"]["result"]["value"] == "h\u00e9llo \U0001F600"
    value = client.call("Runtime.evaluate", expression="'\\ud800'.length")
    assert value["result"]["result"]["value"] == 1
    assert ctx.eval_sync("[1, 2, 3].length") == 3


def test_handler_errors_are_logged(iso: ivm.Isolate, caplog: pytest.LogCaptureFixture) -> None:
    session = iso.create_inspector_session()
    got: list[str] = []

    def bad(call_id: int, text: str) -> None:
        got.append(text)
        raise RuntimeError("handler failed")

    session.on_response = bad
    with caplog.at_level(logging.ERROR, logger="ivm"):
        session.dispatch_protocol_message('{"id": 1, "method": "Runtime.enable"}')
        deadline = time.monotonic() + WAIT
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
    assert got and "handler failed" in caplog.text
    session.on_response = None  # dropped messages are fine
    session.dispatch_protocol_message('{"id": 2, "method": "Runtime.disable"}')
    with session:
        pass
    assert session.is_disposed


def test_worker_killed_while_paused() -> None:
    """A worker SIGKILLed while its JavaScript is paused: the paused call gets
    IsolateCrashedError, the session is closed, the host is unharmed."""
    with ivm.Isolate(inspector=True, process="isolated") as iso:
        client = Client(iso)
        client.call("Debugger.enable")
        ctx = iso.create_context_sync()
        run = Running(lambda: ctx.eval_sync("debugger; 1"))
        client.event("Debugger.paused")
        assert iso.pid is not None
        os.kill(iso.pid, signal.SIGKILL)
        with pytest.raises(ivm.IsolateCrashedError):
            run.join()
        with pytest.raises(ivm.DisposedError):
            client.session.dispatch_protocol_message('{"id": 99, "method": "Runtime.enable"}')
        client.session.dispose()
    with ivm.Isolate(inspector=True, process="isolated") as again:
        kept = again.create_context_sync()  # the default context of Runtime.evaluate
        other = Client(again)
        assert other.call("Runtime.evaluate", expression="6 * 7")["result"]["result"]["value"] == 42
        other.session.dispose()
        kept.release()


# A worker that lies: INSPECTOR_MESSAGE frames forged by the test worker
# (docs/wire-protocol.md, "The inspector").
CALLBACK, OP_INSPECTOR_MESSAGE = 4, 124
TEST_WORKER = Path(ivm.__file__).resolve().parent / "ivm-worker-test"


def _forge(group: ivm.ProcessGroup, payload: bytes) -> None:
    data = struct.pack("<IHHQ", len(payload), CALLBACK, 0, 99) + payload
    assert not lib.ivm_debug_process_group_hook(group._ptr, lib.IVM_DEBUG_HOOK_SEND_BYTES,
                                                data, len(data))


def _message(session: int, kind: int, call_id: int, text: bytes) -> bytes:
    return struct.pack("<IQIII", OP_INSPECTOR_MESSAGE, session, kind, call_id, len(text)) + text


@pytest.fixture
def test_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TEST_WORKER.is_file(), f"{TEST_WORKER} is missing: reinstall the package"
    monkeypatch.setenv("IVM_WORKER_PATH", str(TEST_WORKER))


@pytest.mark.usefixtures("test_worker")
@pytest.mark.parametrize("payload", [
    _message(1 << 62, 3, 0, b"{}"),                                      # unknown kind
    _message(1 << 62, 2, 7, b"{}"),                                      # notification with an id
    struct.pack("<IQIII", OP_INSPECTOR_MESSAGE, 1 << 62, 1, 1, (4 << 20) + 1),  # over 4 MiB
    struct.pack("<IQ", OP_INSPECTOR_MESSAGE, 1 << 62),                   # truncated
    _message(1 << 62, 1, 1, b"{}") + b"x",                               # bytes after it
])
def test_malformed_inspector_message_is_a_crash(payload: bytes,
                                                wait_until: Callable[..., bool]) -> None:
    with ivm.ProcessGroup() as group:
        iso = ivm.Isolate(inspector=True, group=group)
        session = iso.create_inspector_session()
        _forge(group, payload)
        assert wait_until(lambda: not group.alive)
        assert "malformed inspector message" in str(group.crash)
        with pytest.raises(ivm.DisposedError):
            session.dispatch_protocol_message('{"id": 1, "method": "Runtime.enable"}')
        session.dispose()


@pytest.mark.usefixtures("test_worker")
def test_message_for_an_unknown_session_is_dropped() -> None:
    with ivm.ProcessGroup() as group:
        iso = ivm.Isolate(inspector=True, group=group)
        client = Client(iso)
        _forge(group, _message(1 << 62, 1, 1, b'{"id": 1, "result": {}}'))
        ctx = iso.create_context_sync()
        value = client.call("Runtime.evaluate", expression="'still ' + 'here'")
        assert value["result"]["result"]["value"] == "still here"
        assert group.alive
        client.session.dispose()
        ctx.release()


def test_sync_call_from_a_worker_handler_is_refused() -> None:
    """A worker's inspector messages arrive on libivm's I/O thread: a synchronous call into
    a worker's isolate from there would wait for itself, so it raises instead of hanging."""
    with ivm.Isolate(inspector=True, process="isolated") as iso:
        ctx = iso.create_context_sync()
        session = iso.create_inspector_session()
        outcome: queue.Queue[BaseException | object] = queue.Queue()

        def handler(call_id: int, text: str) -> None:
            try:
                outcome.put(ctx.eval_sync("1"))
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome.put(exc)

        session.on_response = handler
        session.dispatch_protocol_message('{"id": 1, "method": "Runtime.enable"}')
        got = outcome.get(timeout=WAIT)
        assert isinstance(got, ValueError) and "inspector message handler" in str(got)
        session.dispose()
        assert ctx.eval_sync("2") == 2


def test_sync_call_from_a_handler_run_by_a_waiting_caller_is_refused() -> None:
    """A synchronous caller of a worker reads the channel itself while it waits, and so may
    run a session's handler: a synchronous call from that handler is refused too (it would
    wait for the channel its own thread holds)."""
    with ivm.Isolate(inspector=True, process="isolated") as iso:
        ctx = iso.create_context_sync()
        session = iso.create_inspector_session()
        outcome: queue.Queue[BaseException | object] = queue.Queue()
        enabled = threading.Event()

        def on_response(call_id: int, text: str) -> None:
            enabled.set()

        def on_notification(text: str) -> None:
            if "consoleAPICalled" in text:
                try:
                    outcome.put(ctx.eval_sync("1"))
                except BaseException as exc:  # noqa: BLE001 - reported to the test
                    outcome.put(exc)

        session.on_response = on_response
        session.on_notification = on_notification
        session.dispatch_protocol_message('{"id": 1, "method": "Runtime.enable"}')
        assert enabled.wait(WAIT)
        threading.Thread(target=lambda: ctx.eval_sync(
            "for (let i = 0; i < 20; i++) console.log(i); 'done'"), daemon=True).start()
        for _ in range(20):
            got = outcome.get(timeout=WAIT)
            assert isinstance(got, ValueError) and "inspector message handler" in str(got)
        session.dispose()
        assert ctx.eval_sync("2") == 2


def test_inspector_with_a_snapshot(placement: str) -> None:
    """ISOLATE_NEW_INSPECTOR carries the snapshot too (op 120)."""
    snapshot = ivm.Isolate.create_snapshot(["var fromSnapshot = 41;"])
    with ivm.Isolate(inspector=True, snapshot=snapshot,
                     process=placement) as iso:  # type: ignore[arg-type]
        ctx = iso.create_context_sync()
        client = Client(iso)
        value = client.call("Runtime.evaluate", expression="fromSnapshot + 1")
        assert value["result"]["result"]["value"] == 42
        client.session.dispose()
        ctx.release()


def test_refusals() -> None:
    with ivm.Isolate() as plain:
        with pytest.raises(ValueError, match="inspector"):
            plain.create_inspector_session()
    with ivm.Isolate(process="isolated") as plain_remote:
        with pytest.raises(ValueError, match="inspector"):
            plain_remote.create_inspector_session()
    with pytest.raises(TypeError):
        ivm.Isolate(inspector=1)  # type: ignore[arg-type]
    for process in ("inline", "isolated"):
        iso = ivm.Isolate(inspector=True, process=process)
        iso.dispose()
        with pytest.raises(ivm.DisposedError):
            iso.create_inspector_session()


def test_no_leaks(no_leaks: None) -> None:
    iso = ivm.Isolate(inspector=True)
    ctx = iso.create_context_sync()
    c = Client(iso)
    c.call("Debugger.enable")
    run = Running(lambda: ctx.eval_sync("debugger; 1"))
    c.event("Debugger.paused")
    c.call("Debugger.resume")
    assert run.join() == 1
    c.session.dispose()
    ctx.release()
    iso.dispose()
    del c, ctx, iso, run
