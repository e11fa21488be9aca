"""A Chrome DevTools server for an isolate: :func:`serve` (docs/devtools.md).

``serve(isolate)`` listens on ``127.0.0.1:9229`` (as node's ``--inspect`` does)
and answers the discovery requests of DevTools (``GET /json``, ``/json/list``,
``/json/version``), so that ``chrome://inspect`` lists the isolate. Each
WebSocket connection to ``/<id>`` is one :class:`ivm.InspectorSession`: the
server passes the protocol messages both ways, and a disconnect disposes the
session (a paused isolate resumes).

The server runs on a thread of its own with its own asyncio event loop, so it
works the same from synchronous code, asyncio and trio, and keeps answering
while the isolate's JavaScript is paused or busy. It needs the ``websockets``
package (``pip install 'ivm-v8[inspector]'``).

**Security.** Whoever reaches the port runs any code in the isolate. The
server binds to ``127.0.0.1`` by default and refuses requests whose ``Host``
header is not ``localhost`` or an IP address (a defence against DNS
rebinding, as node has). Never let it face an untrusted network.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import ipaddress
import json
import logging
import sys
import threading
import urllib.parse
import uuid
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Callable

import anyio

from . import __version__, v8_version
from ._errors import IvmError

if TYPE_CHECKING:  # (ivm/_isolate.py is only needed for the annotations)
    from ._inspector import InspectorSession
    from ._isolate import Isolate

__all__ = ["DEFAULT_PORT", "InspectorServer", "serve"]

#: node's port for ``--inspect``; ``port=0`` picks a free one.
DEFAULT_PORT = 9229
#: The largest protocol message a client may send (bytes), libivm's limit for one message
#: (4 MiB); a larger one closes that client's connection (WebSocket status 1009), nothing else.
MAX_MESSAGE_SIZE = 4 * 1024 * 1024

_logger = logging.getLogger("ivm.inspector")
#: The call ids of the messages the server itself sends for ``break_on_start`` (set, then
#: remove a breakpoint); ids that DevTools uses count up from 1, so these never meet them.
_BREAK_ID, _UNBREAK_ID = -7001, -7002


def _not_an_object(message: str) -> str:
    """The error for a protocol message that is not a JSON object (JSON-RPC's codes)."""
    try:
        json.loads(message)
    except ValueError:
        code, why = -32700, "Parse error: the message is not JSON"
    else:
        code, why = -32600, "Message must be an object"
    return json.dumps({"error": {"code": code, "message": why}})
#: The most bytes of responses and notifications that may wait for one debugger that does
#: not read them; past it, its connection is closed (1008) and its session disposed.
OUTBOX_LIMIT = 64 << 20


def _websockets() -> ModuleType:
    """The ``websockets`` package with its asyncio server, imported on first use."""
    try:
        import websockets.asyncio.server  # an optional dependency
    except ImportError as exc:
        raise ImportError(
            "ivm.inspector needs the websockets package (version 13 or later): "
            "pip install 'ivm-v8[inspector]'"
        ) from exc
    return websockets


def _allowed_host(header: str | None) -> bool:
    """Whether a request's Host header names this machine in a way DNS rebinding cannot
    forge: ``localhost`` or an IP address, with or without a port (node's rule)."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):  # [v6] or [v6]:port
        end = host.find("]")
        if end < 0 or host[end + 1:] and not host[end + 1:].startswith(":"):
            return False
        host = host[1:end]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _breakpoint_id(response: str) -> str | None:
    """The ``breakpointId`` of a ``Debugger.set*Breakpoint`` response, None on an error
    (e.g. the debugger had not enabled the Debugger domain), which is logged."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        found = json.loads(response).get("result", {}).get("breakpointId")
        if isinstance(found, str):
            return found
    _logger.warning("ivm.inspector: break_on_start's breakpoint was not set: %s", response[:500])
    return None


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(
    isolate: Isolate,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    title: str | None = None,
    url: str = "",
    break_on_start: bool = False,
    on_attach: Callable[[], object] | None = None,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> InspectorServer:
    """Starts a DevTools server for ``isolate`` (made with ``inspector=True``) and returns
    it once it listens.

    :param host: the address to bind; ``127.0.0.1`` by default. Anything else exposes the
        isolate to whoever reaches that address: never an untrusted network.
    :param port: the TCP port; ``0`` picks a free one (see :attr:`InspectorServer.port`).
    :param title: the target's title in ``chrome://inspect`` (default: ``"ivm isolate"``).
    :param url: the target's URL there (e.g. the main script's ``file://`` URL).
    :param break_on_start: the first debugger to say it is ready
        (``Runtime.runIfWaitingForDebugger``) also pauses the isolate at the first
        statement of the next script it runs, once, as node's ``--inspect-brk`` does.
    :param on_attach: called (on the server's thread, without arguments) whenever a
        debugger connects; it must not block.
    :param max_message_size: the largest message a client may send, in bytes.
    :raises ImportError: without the ``websockets`` package.
    :raises OSError: if the address cannot be bound (e.g. the port is taken).
    :raises ValueError: for a bad ``port`` or ``max_message_size``, or an isolate made
        without ``inspector=True``.
    :raises ivm.DisposedError: if the isolate is disposed.
    """
    return InspectorServer(
        isolate, host, port, title=title, url=url, break_on_start=break_on_start,
        on_attach=on_attach, max_message_size=max_message_size,
    )  # fmt: skip


class _Waiters:
    """Who waits for a debugger: sync threads (an Event) and async tasks (woken on their own
    asyncio or trio loop). Guarded by the server's lock."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.wakers: list[Callable[[], None]] = []

    def wake_all(self) -> None:
        self.ready.set()
        wakers, self.wakers = self.wakers, []
        for wake in wakers:
            with contextlib.suppress(RuntimeError):  # that loop has ended
                wake()


def _async_waker() -> tuple[Callable[[], None], Callable[[], Any]]:
    """A ``(wake, wait)`` pair for the running asyncio or trio task: ``wake`` may be called
    from any thread, ``wait`` is awaited by the task."""
    trio = _running_trio()
    if trio is not None:
        event = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake_trio() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

        return wake_trio, event.wait
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise IvmError("wait_for_debugger() outside a running asyncio or trio event loop") from None
    done = asyncio.Event()

    def wake_asyncio() -> None:
        loop.call_soon_threadsafe(done.set)

    return wake_asyncio, done.wait


def _running_trio() -> Any:
    """The trio module if the caller runs in a trio task, else None (trio stays unimported)."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_task():
        return trio
    return None


class InspectorServer:
    """A running DevTools server (see :func:`serve`); a context manager that closes it.

    Attributes: :attr:`host`, :attr:`port`, :attr:`id` (the target's id, the WebSocket
    path), :attr:`url` (``ws://host:port/id``), :attr:`devtools_frontend_url`
    (``devtools://...``: paste it into Chrome's address bar). Clients connect to
    :attr:`url`; each connection is one inspector session of the isolate.
    """

    def __init__(
        self, isolate: Isolate, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
        title: str | None = None, url: str = "", break_on_start: bool = False,
        on_attach: Callable[[], object] | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:  # fmt: skip
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        if not 1024 <= max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be from 1024 to {MAX_MESSAGE_SIZE} bytes, "
                             f"not {max_message_size}")
        self._ws = _websockets()
        isolate.create_inspector_session().dispose()  # refuses a wrong isolate now (never blocks)
        self._isolate = isolate
        self.host = host
        self.port = port
        self.id = str(uuid.uuid4())
        self.title = title if title is not None else "ivm isolate"
        self.target_url = url
        self._break_pending = break_on_start
        self._on_attach = on_attach
        self._max_size = max_message_size
        self._lock = threading.Lock()
        self._waiters = _Waiters()
        self._sessions = 0
        self._debugger_seen = False
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="ivm-inspector", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            error, self._error = self._error, None
            raise error

    # -- the public surface -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The WebSocket URL of the target, ``ws://HOST:PORT/ID``."""
        return f"ws://{_format_host(self.host)}:{self.port}/{self.id}"

    @property
    def devtools_frontend_url(self) -> str:
        """The URL that opens Chrome's bundled DevTools on this target."""
        return self._frontend_url("js_app.html", f"{_format_host(self.host)}:{self.port}")

    @property
    def sessions(self) -> int:
        """How many debuggers are connected now."""
        with self._lock:
            return self._sessions

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def wait_for_debugger_sync(self, timeout: float | None = None) -> bool:
        """Blocks until a debugger has connected and said it is ready
        (``Runtime.runIfWaitingForDebugger``, which DevTools sends once it has set its
        breakpoints). Returns True then, False after ``timeout`` seconds or if the server
        closes first."""
        ready = self._waiters.ready.wait(timeout)
        return ready and not self._closed_without_debugger()

    async def wait_for_debugger(self) -> bool:
        """As :meth:`wait_for_debugger_sync`, for asyncio or trio; cancel the task (e.g.
        with ``anyio.move_on_after``) to give up. Returns False if the server closed."""
        wake, wait = _async_waker()
        with self._lock:
            waiting = not self._waiters.ready.is_set()
            if waiting:
                self._waiters.wakers.append(wake)
        try:
            await (wait() if waiting else anyio.lowlevel.checkpoint())
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.wakers.remove(wake)
        return not self._closed_without_debugger()

    def close(self) -> None:
        """Stops the server: closes every connection (their sessions are disposed, a paused
        isolate resumes) and the port. Idempotent; the isolate stays as it is."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            self._loop.call_soon_threadsafe(self._request_stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._lock:
            self._waiters.wake_all()

    def __enter__(self) -> InspectorServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.sessions} session(s)"
        return f"<ivm.inspector.InspectorServer {self.url} {state}>"

    # -- the server's thread ----------------------------------------------------------

    def _closed_without_debugger(self) -> bool:
        with self._lock:
            return self._closed and not self._debugger_seen

    def _frontend_url(self, page: str, address: str) -> str:
        query = f"experiments=true&v8only=true&ws={address}/{self.id}"
        return f"devtools://devtools/bundled/{page}?{query}"

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()
            with self._lock:
                self._closed = True
                self._waiters.wake_all()
            self._started.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            server = await self._ws.asyncio.server.serve(
                self._handle, self.host, self.port, process_request=self._process_request,
                max_size=self._max_size, logger=_logger,
            )  # fmt: skip
        except BaseException as exc:  # OSError: the port is taken...
            self._error = exc
            return
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await server.wait_closed()

    def _process_request(self, connection: Any, request: Any) -> Any:
        """Answers HTTP requests (discovery) and lets WebSocket upgrades to ``/<id>`` on."""
        if not _allowed_host(request.headers.get("Host")):
            return connection.respond(
                http.HTTPStatus.FORBIDDEN,
                "Host header is not localhost or an IP address: refused "
                "(a defence against DNS rebinding)\n",
            )
        path = urllib.parse.urlsplit(request.path).path.rstrip("/") or "/"
        if path in ("/json", "/json/list"):
            return self._json(connection, [self._target(request.headers["Host"])])
        if path == "/json/version":
            from . import __version__, v8_version  # (ivm/__init__.py imports the package)

            return self._json(connection, {
                "Browser": f"ivm/v{__version__}", "Protocol-Version": "1.3",
                "V8-Version": v8_version,
            })  # fmt: skip
        if path == f"/{self.id}":
            return None  # the WebSocket handshake goes on
        return connection.respond(http.HTTPStatus.NOT_FOUND,
                                  f"no such target or endpoint: {path}\n")

    def _target(self, host_header: str) -> dict[str, str]:
        address = host_header.strip()
        return {
            "description": "ivm isolate",
            "devtoolsFrontendUrl": self._frontend_url("js_app.html", address),
            "devtoolsFrontendUrlCompat": self._frontend_url("inspector.html", address),
            "faviconUrl": "",
            "id": self.id,
            "title": self.title,
            "type": "node",
            "url": self.target_url,
            "webSocketDebuggerUrl": f"ws://{address}/{self.id}",
        }

    @staticmethod
    def _json(connection: Any, payload: object) -> Any:
        body = json.dumps(payload, indent=2).encode() + b"\n"
        response = connection.respond(http.HTTPStatus.OK, "")
        del response.headers["Content-Type"], response.headers["Content-Length"]
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        response.headers["Content-Length"] = str(len(body))
        return dataclasses.replace(response, body=body)

    async def _handle(self, ws: Any) -> None:
        """One debugger: a session of the isolate for the connection's lifetime."""
        try:
            session = self._isolate.create_inspector_session()  # (never blocks)
        except (IvmError, ValueError) as exc:
            await ws.close(1011, f"no inspector session: {exc}"[:120])
            return
        link = _Link(self, asyncio.get_running_loop(), session)
        session.on_response = link.on_response
        session.on_notification = link.on_notification
        with self._lock:
            self._sessions += 1
        sender = asyncio.create_task(link.send_all(ws))
        link.ws, link.sender = ws, sender
        try:
            if self._on_attach is not None:
                try:
                    self._on_attach()
                except Exception:  # the debugger stays attached
                    _logger.exception("ivm.inspector: on_attach failed")
            await link.receive_all(ws)
        finally:
            sender.cancel()
            with self._lock:
                self._sessions -= 1
            await asyncio.to_thread(session.dispose)

    def _debugger_ready(self) -> None:
        """A client's ``Runtime.runIfWaitingForDebugger`` was answered (and so were its
        messages before it, e.g. its breakpoints): wake who waits for a debugger."""
        with self._lock:
            self._debugger_seen = True
            self._waiters.wake_all()

    def _take_break(self) -> bool:
        """Whether this debugger is the one that gets ``break_on_start``'s pause."""
        with self._lock:
            brk, self._break_pending = self._break_pending, False
            return brk


class _Link:
    """The two directions of one connection: protocol messages to the session, and its
    responses and notifications (from a libivm thread) to the WebSocket, in order."""

    def __init__(self, server: InspectorServer, loop: asyncio.AbstractEventLoop,
                 session: InspectorSession) -> None:
        self.server = server
        self.loop = loop
        self.session = session
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.queued = 0  # bytes in the outbox, under `lock` (posted from libivm threads)
        self.overflowed = False
        self.lock = threading.Lock()
        #: The connection and its sender task, once _handle has them (for _drop).
        self.ws: Any = None
        self.sender: asyncio.Task[None] | None = None
        self.closing: asyncio.Future[None] | None = None
        #: The call id whose response means "the debugger is ready" (see _debugger_ready).
        self.ready_id: int | None = None
        #: break_on_start's breakpoint, until it is hit.
        self.break_id: str | None = None

    def post(self, message: str) -> None:  # a libivm thread; must not block
        with self.lock:
            if self.overflowed:
                return
            self.queued += len(message)
            self.overflowed = self.queued > OUTBOX_LIMIT  # a debugger that does not read
        with contextlib.suppress(RuntimeError):  # the server has stopped
            if self.overflowed:
                self.loop.call_soon_threadsafe(self._drop)
            else:
                self.loop.call_soon_threadsafe(self.outbox.put_nowait, message)

    def _drop(self) -> None:  # the server's loop
        """Disconnects a debugger that fell OUTBOX_LIMIT behind: its sender may wait on a
        full socket forever, so it is cancelled, and the connection is closed (websockets
        aborts it after its close timeout if the client does not answer)."""
        if self.sender is not None:
            self.sender.cancel()
        if self.ws is not None and self.closing is None:
            self.closing = asyncio.ensure_future(
                self.ws.close(1008, "the debugger does not read its messages"))

    def on_response(self, call_id: int, message: str) -> None:  # a libivm thread
        if call_id not in (_BREAK_ID, _UNBREAK_ID):
            self.post(message)
        elif call_id == _BREAK_ID:
            self.break_id = _breakpoint_id(message)
        if call_id == self.ready_id:
            self.ready_id = None
            self.server._debugger_ready()

    def on_notification(self, message: str) -> None:  # a libivm thread
        if self.break_id is not None and '"instrumentation"' in message:
            message = self._started(message, self.break_id)
        self.post(message)

    def _started(self, message: str, break_id: str) -> str:
        """``break_on_start``'s pause (a ``Debugger.paused`` for the instrumentation
        breakpoint): removes the breakpoint, and shows the pause as a plain one (DevTools
        resumes by itself from instrumentation pauses it did not ask for)."""
        event = json.loads(message)
        params = event.get("params", {})
        if event.get("method") != "Debugger.paused" or params.get("reason") != "instrumentation":
            return message
        self.break_id = None
        self.session.dispatch_protocol_message(json.dumps({
            "id": _UNBREAK_ID, "method": "Debugger.removeBreakpoint",
            "params": {"breakpointId": break_id}}))  # fmt: skip
        params["reason"] = "other"
        params.pop("data", None)
        return json.dumps(event)

    async def send_all(self, ws: Any) -> None:
        with contextlib.suppress(Exception):  # the connection closed: the receiver ends too
            while True:
                message = await self.outbox.get()
                with self.lock:
                    self.queued -= len(message)
                await ws.send(message)

    async def receive_all(self, ws: Any) -> None:
        with contextlib.suppress(self.server._ws.exceptions.ConnectionClosed):
            async for message in ws:
                if not isinstance(message, str):
                    await ws.close(1003, "protocol messages are text")
                    return
                try:
                    self.dispatch(message)
                except (IvmError, ValueError) as exc:  # the isolate is gone
                    await ws.close(1011, f"the inspector refused a message: {exc}"[:120])
                    return

    def dispatch(self, message: str) -> None:
        session = self.session
        if not message.lstrip(" \t\r\n").startswith("{"):
            # V8 10.2 answers a message that is JSON but not an object with an id read from
            # uninitialized memory (it can match a pending call's). Every protocol message
            # is an object: the others get this error, with no id, and never reach V8.
            self.post(_not_an_object(message))
            return
        ready = self._ready_call(message) if "runIfWaitingForDebugger" in message else None
        if ready is None:
            session.dispatch_protocol_message(message)
        elif self.server._take_break():
            # Pause before the next script's first statement: an instrumentation breakpoint,
            # removed once hit. (Debugger.pause would not do: V8 10.2 keeps "break on next
            # call" per thread, and the program may run on another one.) The debugger counts
            # as ready once the breakpoint is set.
            self.ready_id = _BREAK_ID
            session.dispatch_protocol_message(message)
            session.dispatch_protocol_message(json.dumps({
                "id": _BREAK_ID, "method": "Debugger.setInstrumentationBreakpoint",
                "params": {"instrumentation": "beforeScriptExecution"}}))
        else:
            self.ready_id = ready
            session.dispatch_protocol_message(message)

    @staticmethod
    def _ready_call(message: str) -> int | None:
        """The id of a ``Runtime.runIfWaitingForDebugger`` call, else None."""
        try:
            call = json.loads(message)
        except ValueError:
            return None
        if isinstance(call, dict) and call.get("method") == "Runtime.runIfWaitingForDebugger":
            call_id = call.get("id")
            if isinstance(call_id, int) and call_id not in (_BREAK_ID, _UNBREAK_ID):
                return call_id
        return None
