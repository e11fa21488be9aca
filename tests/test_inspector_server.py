"""``ivm.inspector.serve``: the Chrome DevTools server, with a CDP client (websockets) and
with Debian's headless chromium loading its bundled DevTools frontend."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator

import anyio
import pytest

import ivm
import ivm.inspector

pytest.importorskip("websockets", reason="ivm.inspector needs websockets (the test extra has it)")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

#: How long a test waits for something that must happen (tests/conftest.py's SANITY).
SANITY = 60.0
APP = "file:///srv/app.js"
#: Line 2 (0-based) is `const y = x * 2;`.
TWICE = "function twice(x) {\n  let z = x;\n  const y = z * 2;\n  return y;\n}\ntwice(21)"


class CDP:
    """A small Chrome DevTools protocol client over a blocking WebSocket."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()  # (websockets 17 wants connect() as a context)
        self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=SANITY))
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.scripts: dict[str, str] = {}  # scriptId -> url, from Debugger.scriptParsed

    def send(self, method: str, **params: Any) -> int:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        return self.next_id

    def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=SANITY))
        if message.get("method") == "Debugger.scriptParsed":
            self.scripts[message["params"]["scriptId"]] = message["params"]["url"]
        return message

    def response(self, call_id: int) -> dict[str, Any]:
        while True:
            message = self.receive()
            if message.get("id") == call_id:
                return message
            self.events.append(message)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Sends a command; returns its result (raises on a protocol error)."""
        reply = self.response(self.send(method, **params))
        assert "error" not in reply, reply
        return dict(reply["result"])

    def event(self, method: str) -> dict[str, Any]:
        """The next notification named `method` (earlier ones are dropped)."""
        while True:
            while self.events:
                message = self.events.pop(0)
                if message.get("method") == method:
                    return message
            self.events.append(self.receive())

    def url_of(self, frame: dict[str, Any]) -> str:
        """The URL of a call frame's script (V8 10.2 leaves CallFrame.url empty)."""
        return self.scripts[frame["location"]["scriptId"]]

    def close(self) -> None:
        self._stack.close()


def http_get(server: ivm.inspector.InspectorServer, path: str, host: str | None = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}")
    if host is not None:
        request.add_header("Host", host)
    with urllib.request.urlopen(request, timeout=SANITY) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return json.load(response)


@pytest.fixture
def iso() -> Iterator[ivm.Isolate]:
    isolate = ivm.Isolate(memory_limit=64, inspector=True)
    try:
        yield isolate
    finally:
        isolate.dispose()


@pytest.fixture
def server(iso: ivm.Isolate) -> Iterator[ivm.inspector.InspectorServer]:
    with ivm.inspector.serve(iso, port=0, title="app", url=APP) as srv:
        yield srv


@pytest.fixture
def cdp(server: ivm.inspector.InspectorServer) -> Iterator[CDP]:
    client = CDP(server.url)
    try:
        yield client
    finally:
        client.close()


def pause_at(cdp: CDP, run: Callable[[], Any]) -> tuple[dict[str, Any], list[Any]]:
    """Starts `run` (an isolate call) on a thread; returns the Debugger.paused it causes and
    a list that gets the call's result."""
    result: list[Any] = []
    threading.Thread(target=lambda: result.append(run()), daemon=True).start()
    return cdp.event("Debugger.paused"), result


# -- discovery and HTTP --------------------------------------------------------------------


def test_discovery_endpoints_as_node_serves_them(server: ivm.inspector.InspectorServer) -> None:
    listed = http_get(server, "/json/list")
    assert http_get(server, "/json") == listed
    assert len(listed) == 1
    target = listed[0]
    assert set(target) == {
        "description", "devtoolsFrontendUrl", "devtoolsFrontendUrlCompat", "faviconUrl", "id",
        "title", "type", "url", "webSocketDebuggerUrl",
    }  # fmt: skip
    assert (target["id"], target["title"], target["type"], target["url"]) == (
        server.id, "app", "node", APP)
    assert target["webSocketDebuggerUrl"] == server.url == f"ws://127.0.0.1:{server.port}/{server.id}"
    assert target["devtoolsFrontendUrl"] == server.devtools_frontend_url
    assert target["devtoolsFrontendUrl"].startswith("devtools://devtools/bundled/js_app.html?")
    assert target["devtoolsFrontendUrlCompat"].startswith("devtools://devtools/bundled/inspector.html?")
    assert target["devtoolsFrontendUrl"].endswith(f"ws=127.0.0.1:{server.port}/{server.id}")
    version = http_get(server, "/json/version")
    assert version["Protocol-Version"] == "1.3"
    assert version["Browser"] == f"ivm/v{ivm.__version__}"
    assert version["V8-Version"] == ivm.v8_version
    # The WebSocket URL follows the Host the client used (e.g. localhost).
    assert http_get(server, "/json/list", host=f"localhost:{server.port}")[0][
        "webSocketDebuggerUrl"] == f"ws://localhost:{server.port}/{server.id}"


def test_unknown_paths_and_targets_are_404(server: ivm.inspector.InspectorServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        http_get(server, "/json/protocol")
    assert info.value.code == 404
    info.value.close()
    with pytest.raises(InvalidStatus) as ws_info, connect(
            f"ws://127.0.0.1:{server.port}/not-the-id", open_timeout=SANITY):
        pass
    assert ws_info.value.response.status_code == 404


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9229", "localhost.evil.example",
                                  "127.0.0.1.nip.io:80", "", "[::1"])
def test_requests_for_another_host_are_refused(server: ivm.inspector.InspectorServer,
                                                host: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        http_get(server, "/json/list", host=host)
    assert info.value.code == 403
    assert b"DNS rebinding" in info.value.read()
    info.value.close()
    # The WebSocket handshake too (a raw request: clients set Host themselves).
    with socket.create_connection(("127.0.0.1", server.port), timeout=SANITY) as sock:
        sock.sendall(
            f"GET /{server.id} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 403 ")
    assert server.sessions == 0


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:9229",
                                  "[::1]:9229", "[::1]", "10.1.2.3:80"])
def test_hosts_that_are_allowed(server: ivm.inspector.InspectorServer, host: str) -> None:
    assert http_get(server, "/json/version", host=host)["Protocol-Version"] == "1.3"


def test_port_zero_picks_one_and_a_taken_port_raises(iso: ivm.Isolate) -> None:
    with ivm.inspector.serve(iso, port=0) as first:
        assert first.port > 0
        with pytest.raises(OSError):
            ivm.inspector.serve(iso, port=first.port)
    with pytest.raises(ValueError, match="port"):
        ivm.inspector.serve(iso, port=70000)
    with pytest.raises(ValueError, match="max_message_size"):
        ivm.inspector.serve(iso, port=0, max_message_size=ivm.inspector.MAX_MESSAGE_SIZE + 1)


def test_an_isolate_without_inspector_is_refused(isolate: ivm.Isolate) -> None:
    with pytest.raises(ValueError, match="inspector"):
        ivm.inspector.serve(isolate, port=0)
    isolate.dispose()
    with pytest.raises(ivm.DisposedError):
        ivm.inspector.serve(isolate, port=0)


def test_close_is_idempotent_and_frees_the_port(iso: ivm.Isolate) -> None:
    server = ivm.inspector.serve(iso, port=0)
    port = server.port
    assert not server.closed
    server.close()
    server.close()
    assert server.closed and "closed" in repr(server)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=SANITY).close()


def test_without_websockets_serve_says_what_to_install(iso: ivm.Isolate,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "websockets" or m.startswith("websockets.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=r"ivm-v8\[inspector\]"):
        ivm.inspector.serve(iso, port=0)


# -- end to end ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_breakpoint_by_url_pause_evaluate_resume(iso: ivm.Isolate,
                                                       server: ivm.inspector.InspectorServer) -> None:
    context = await iso.create_context()
    target = http_get(server, "/json/list")[0]
    cdp = CDP(target["webSocketDebuggerUrl"])
    try:
        cdp.call("Runtime.enable")
        cdp.call("Debugger.enable")
        cdp.call("Debugger.setBreakpointByUrl", url=APP, lineNumber=2)
        results: list[Any] = []

        async def run() -> None:
            results.append(await context.eval(TWICE, filename=APP))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            paused = await anyio.to_thread.run_sync(cdp.event, "Debugger.paused")
            frame = paused["params"]["callFrames"][0]
            assert frame["functionName"] == "twice"
            assert frame["location"]["lineNumber"] == 2
            assert cdp.url_of(frame) == APP
            assert paused["params"]["hitBreakpoints"]
            value = await anyio.to_thread.run_sync(lambda: cdp.call(
                "Debugger.evaluateOnCallFrame", callFrameId=frame["callFrameId"],
                expression="z + 100"))  # fmt: skip
            assert value["result"] == {"type": "number", "value": 121, "description": "121"}
            assert not results  # the call waits while paused
            await anyio.to_thread.run_sync(lambda: cdp.call("Debugger.resume"))
        assert results == [42]
        assert await context.eval("1 + 1") == 2
    finally:
        cdp.close()


def test_two_debuggers_at_once(iso: ivm.Isolate, server: ivm.inspector.InspectorServer,
                               wait_until: Callable[..., bool]) -> None:
    context = iso.create_context_sync()
    first, second = CDP(server.url), CDP(server.url)
    try:
        assert wait_until(lambda: server.sessions == 2)
        for client in (first, second):
            client.call("Debugger.enable")
        paused, result = pause_at(first, lambda: context.eval_sync("debugger; 7", filename=APP))
        assert second.url_of(second.event("Debugger.paused")["params"]["callFrames"][0]) == APP
        frame = paused["params"]["callFrames"][0]["callFrameId"]
        assert second.call("Runtime.evaluate", expression="6 * 7")["result"]["value"] == 42
        first.call("Debugger.evaluateOnCallFrame", callFrameId=frame, expression="1")
        second.call("Debugger.resume")
        assert wait_until(lambda: result == [7])
    finally:
        first.close()
        second.close()
    assert wait_until(lambda: server.sessions == 0)


def test_a_debugger_that_leaves_mid_pause_lets_the_call_finish(
        iso: ivm.Isolate, server: ivm.inspector.InspectorServer, cdp: CDP,
        wait_until: Callable[..., bool]) -> None:  # fmt: skip
    context = iso.create_context_sync()
    cdp.call("Debugger.enable")
    _, result = pause_at(cdp, lambda: context.eval_sync("debugger; 'done'"))
    cdp.close()
    assert wait_until(lambda: result == ["done"])
    assert wait_until(lambda: server.sessions == 0)
    assert context.eval_sync("1 + 1") == 2
    again = CDP(server.url)  # and the server takes the next debugger
    try:
        assert again.call("Runtime.evaluate", expression="2 + 3")["result"]["value"] == 5
    finally:
        again.close()


def test_bad_and_huge_messages_leave_the_isolate_healthy(
        iso: ivm.Isolate, server: ivm.inspector.InspectorServer,
        wait_until: Callable[..., bool]) -> None:  # fmt: skip
    context = iso.create_context_sync()
    cdp = CDP(server.url)
    cdp.ws.send("this is not JSON {")
    cdp.ws.send(json.dumps([1, 2, 3]))
    # Neither carries an id: V8 10.2 gave [1, 2, 3]'s error an id from uninitialized memory,
    # which could be the next call's (this test failed when it was 1)
    assert [(m.get("id"), m["error"]["code"]) for m in (cdp.receive(), cdp.receive())] == [
        (None, -32700), (None, -32600)]
    for junk in ("5", "null", '"text"', "  [1]", "true"):
        cdp.ws.send(junk)
        assert cdp.receive() == {"error": {"code": -32600, "message": "Message must be an object"}}
    reply = cdp.response(cdp.send("No.suchMethod"))
    assert reply["error"]["code"] == -32601
    assert cdp.call("Runtime.evaluate", expression="40 + 2")["result"]["value"] == 42
    cdp.ws.send(b"\x00binary")  # protocol messages are text: the server closes
    with pytest.raises(ConnectionClosed):
        for _ in range(100):
            cdp.ws.recv(timeout=SANITY)
    assert cdp.ws.close_code == 1003
    huge = CDP(server.url)
    with pytest.raises(ConnectionClosed):  # 20 MB: over max_message_size
        huge.ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate",
                                 "params": {"expression": "'" + "x" * (20 << 20) + "'"}}))
        huge.ws.recv(timeout=SANITY)
    assert huge.ws.close_code == 1009
    assert wait_until(lambda: server.sessions == 0)
    assert context.eval_sync("6 * 7") == 42
    fine = CDP(server.url)
    try:
        assert fine.call("Runtime.evaluate", expression="'ok'")["result"]["value"] == "ok"
    finally:
        fine.close()


def test_a_debugger_that_does_not_read_is_dropped(
        iso: ivm.Isolate, monkeypatch: pytest.MonkeyPatch,
        wait_until: Callable[..., bool]) -> None:  # fmt: skip
    """What waits for a debugger is bounded (ivm.inspector.OUTBOX_LIMIT): one that stops
    reading while the isolate logs is disconnected, and the isolate goes on."""
    monkeypatch.setattr(ivm.inspector, "OUTBOX_LIMIT", 1 << 20)
    context = iso.create_context_sync(host=ivm.HostBasics(console=lambda level, text: None))
    with ivm.inspector.serve(iso, port=0) as server:
        # A raw client (a library's client reads in the background): it enables Runtime
        # (consoleAPICalled from then on), then never reads again.
        lazy = socket.socket()
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        lazy.sendall((f"GET /{server.id} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        assert lazy.recv(4096).startswith(b"HTTP/1.1 101")
        payload = json.dumps({"id": 1, "method": "Runtime.enable"}).encode()
        mask = os.urandom(4)
        lazy.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
                     bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        assert wait_until(lambda: server.sessions == 1)
        context.eval_sync("for (let i = 0; i < 200; i++) console.log('x'.repeat(100000))")
        try:
            assert wait_until(lambda: server.sessions == 0)  # dropped, session disposed
        finally:
            lazy.close()
        assert context.eval_sync("6 * 7") == 42
        fine = CDP(server.url)  # the server goes on
        try:
            assert fine.call("Runtime.evaluate", expression="'ok'")["result"]["value"] == "ok"
        finally:
            fine.close()


def test_close_while_a_debugger_is_attached_and_paused(
        iso: ivm.Isolate, wait_until: Callable[..., bool]) -> None:  # fmt: skip
    server = ivm.inspector.serve(iso, port=0)
    context = iso.create_context_sync()
    cdp = CDP(server.url)
    cdp.call("Debugger.enable")
    _, result = pause_at(cdp, lambda: context.eval_sync("debugger; 5"))
    server.close()
    assert wait_until(lambda: result == [5])
    with pytest.raises(ConnectionClosed):
        cdp.ws.recv(timeout=SANITY)
    assert server.sessions == 0
    assert context.eval_sync("2 * 2") == 4


def test_an_isolate_disposed_under_a_debugger(iso: ivm.Isolate, server: ivm.inspector.InspectorServer,
                                              cdp: CDP, wait_until: Callable[..., bool]) -> None:
    context = iso.create_context_sync()
    assert cdp.call("Runtime.evaluate", expression="1")["result"]["value"] == 1
    iso.dispose()
    with pytest.raises(ConnectionClosed):  # its next message finds the isolate gone
        cdp.send("Runtime.evaluate", expression="2")
        cdp.receive()
    assert cdp.ws.close_code == 1011
    assert wait_until(lambda: server.sessions == 0)
    with pytest.raises(ConnectionClosed), connect(server.url, open_timeout=SANITY) as late:
        late.recv(timeout=SANITY)  # no session for a disposed isolate: closed at once
    assert late.close_code == 1011 and "no inspector session" in str(late.close_reason)
    with pytest.raises(ivm.DisposedError):
        context.eval_sync("1")


@pytest.mark.anyio
async def test_wait_for_debugger_and_break_on_start(iso: ivm.Isolate) -> None:
    context = await iso.create_context()
    attached: list[int] = []
    with ivm.inspector.serve(iso, port=0, break_on_start=True,
                             on_attach=lambda: attached.append(1)) as server:
        assert not server.wait_for_debugger_sync(timeout=0.01)
        cdp = CDP(server.url)
        try:
            cdp.call("Debugger.enable")
            cdp.call("Debugger.setBreakpointByUrl", url=APP, lineNumber=3)  # before it runs
            cdp.send("Runtime.runIfWaitingForDebugger")
            assert await server.wait_for_debugger() is True
            assert server.wait_for_debugger_sync(timeout=0) is True
            assert attached == [1]
            results: list[Any] = []

            async def run() -> None:
                results.append(await context.eval(TWICE, filename=APP))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run)
                first = (await anyio.to_thread.run_sync(cdp.event, "Debugger.paused"))["params"]
                assert first["callFrames"][0]["location"]["lineNumber"] == 5  # twice(21)
                assert first["reason"] == "other"
                await anyio.to_thread.run_sync(lambda: cdp.call("Debugger.resume"))
                second = await anyio.to_thread.run_sync(cdp.event, "Debugger.paused")
                assert second["params"]["callFrames"][0]["location"]["lineNumber"] == 3
                await anyio.to_thread.run_sync(lambda: cdp.call("Debugger.resume"))
            assert results == [42]
            assert await context.eval("1 + 1", timeout=SANITY) == 2  # once only: no pause now
        finally:
            cdp.close()


@pytest.mark.anyio
async def test_wait_for_debugger_ends_when_the_server_closes(iso: ivm.Isolate) -> None:
    server = ivm.inspector.serve(iso, port=0)
    outcome: list[bool] = []

    async def wait() -> None:
        outcome.append(await server.wait_for_debugger())

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await anyio.sleep(0.01)
        await anyio.to_thread.run_sync(server.close)
    assert outcome == [False]
    assert server.wait_for_debugger_sync() is False
    with anyio.move_on_after(0.01):  # cancellation gives up waiting
        await ivm.inspector.serve(iso, port=0).wait_for_debugger()


# -- real Chromium -------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Recorder:
    """An isolate stand-in for ``serve``: sessions of the real isolate, with the methods
    the frontend sent and the notifications it was sent written down."""

    def __init__(self, isolate: ivm.Isolate) -> None:
        self.isolate = isolate
        self.sent: list[str] = []
        self.told: list[str] = []

    def create_inspector_session(self) -> Any:
        session = self.isolate.create_inspector_session()
        recorder = self

        class Recording:
            def dispatch_protocol_message(self, text: str) -> None:
                recorder.sent.append(str(json.loads(text).get("method")))
                session.dispatch_protocol_message(text)

            def dispose(self) -> None:
                session.dispose()

            @property
            def on_response(self) -> Any:
                return session.on_response

            @on_response.setter
            def on_response(self, fn: Any) -> None:
                session.on_response = fn

            @property
            def on_notification(self) -> Any:
                return session.on_notification

            @on_notification.setter
            def on_notification(self, fn: Callable[[str], None]) -> None:
                def told(message: str) -> None:
                    recorder.told.append(str(json.loads(message).get("method")))
                    fn(message)

                session.on_notification = told

        return Recording()


#: The frontend page's visible text (leaves of the DOM, shadow roots included).
_PAGE_TEXT = """(() => {
  const out = [];
  const walk = (n) => {
    if (n.shadowRoot) walk(n.shadowRoot);
    for (const c of n.children || []) walk(c);
    if (n.nodeType === 1 && !["STYLE", "SCRIPT"].includes(n.tagName) && !n.childElementCount)
      out.push(n.textContent.trim());
  };
  walk(document.documentElement);
  return out.filter(Boolean).join("\\n");
})()"""


def _start_chromium(chromium: str, profile: str) -> tuple[subprocess.Popen[str], int]:
    """Headless chromium with its DevTools endpoint on a free port: (process, port)."""
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert browser.stderr is not None
    for line in browser.stderr:
        found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if found:
            return browser, int(found.group(1))
    raise AssertionError(f"chromium did not start its DevTools endpoint ({browser.wait()})")


def test_chromium_devtools_attaches_and_shows_a_pause(
        iso: ivm.Isolate, wait_until: Callable[..., bool]) -> None:  # fmt: skip
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)")
    recorder = _Recorder(iso)
    context = iso.create_context_sync(host=ivm.HostBasics.all(console=lambda *_: None))
    profile = tempfile.mkdtemp(prefix="ivm-chromium-")
    server = ivm.inspector.serve(recorder, port=0)  # type: ignore[arg-type]
    browser, port = _start_chromium(chromium, profile)
    assert browser.stderr is not None
    drain = threading.Thread(target=browser.stderr.read, daemon=True)
    drain.start()
    result: list[Any] = []
    try:
        # Chromium serves its bundled frontend over HTTP too; js_app.html is node's flavour.
        frontend = (f"http://127.0.0.1:{port}/devtools/js_app.html?v8only=true"
                    f"&ws=127.0.0.1:{server.port}/{server.id}")
        opened = urllib.request.Request(
            f"http://127.0.0.1:{port}/json/new?" + urllib.parse.quote(frontend, safe=""),
            method="PUT")
        with urllib.request.urlopen(opened, timeout=SANITY) as response:
            page = CDP(json.load(response)["webSocketDebuggerUrl"])  # the frontend's page
        assert wait_until(lambda: "Runtime.runIfWaitingForDebugger" in recorder.sent)
        assert {"Runtime.enable", "Debugger.enable"} <= set(recorder.sent)
        assert server.wait_for_debugger_sync(timeout=SANITY)
        code = "console.log('hello devtools');\nfunction f() {\n  debugger;\n  return 'resumed' }\nf()"
        threading.Thread(target=lambda: result.append(
            context.eval_sync(code, filename="file:///srv/pause.js")), daemon=True).start()
        assert wait_until(lambda: "Debugger.paused" in recorder.told)
        assert "Runtime.consoleAPICalled" in recorder.told

        def shown() -> str:
            return str(page.call("Runtime.evaluate", expression=_PAGE_TEXT,
                                 returnByValue=True)["result"].get("value", ""))

        # DevTools shows the pause: the call stack (f at pause.js:3) and where it stopped
        # ("Line 3, column 3"; Chromium 150's frontend writes "Column").
        assert wait_until(lambda: "pause.js:3" in shown().split("\n")
                          and "line 3, column 3" in shown().lower(), timeout=SANITY), shown()
        assert not result
        page.close()
    finally:
        server.close()  # the frontend's session goes: the isolate resumes
        os.killpg(browser.pid, signal.SIGTERM)
        browser.wait(timeout=SANITY)
        drain.join(SANITY)
        browser.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
    assert wait_until(lambda: result == ["resumed"])
