"""``InspectorSession``: a Chrome DevTools protocol session with an isolate's inspector.

An isolate made with ``Isolate(inspector=True)`` has V8's inspector; each session
(``isolate.create_inspector_session()``) sends protocol messages in
(``dispatch_protocol_message``) and receives responses and notifications through
``on_response`` and ``on_notification``, in isolated-vm's shape. libivm calls
``_ivm_py_inspector_message`` with an integer key (never a pointer to a Python object, so
a late call finds nothing rather than freed memory), on the thread that holds the
isolate at that moment.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable

from ._errors import DisposedError, check
from ._ffi import ffi, lib
from ._handle import Handle

if TYPE_CHECKING:
    from ._isolate import Isolate

__all__ = ["InspectorSession"]

#: The largest protocol message (in UTF-8 bytes) a session accepts.
MAX_MESSAGE_BYTES: int = int(lib.IVM_INSPECTOR_MAX_MESSAGE)

#: ``on_response(call_id, message)``: the answer to the command whose ``id`` is call_id.
ResponseHandler = Callable[[int, str], object]
#: ``on_notification(message)``: an event (``Debugger.paused``, ``Runtime.consoleAPICalled``...).
NotificationHandler = Callable[[str], object]

_log = logging.getLogger("ivm")
_sessions: dict[int, weakref.ref[InspectorSession]] = {}
_keys = itertools.count(1)
_lock = threading.Lock()


class InspectorSession(Handle):
    """A Chrome DevTools protocol session with an isolate's inspector.

    Made by :meth:`ivm.Isolate.create_inspector_session` (the isolate needs
    ``inspector=True``). :meth:`dispatch_protocol_message` queues one JSON
    message and never blocks; the answer comes to ``on_response(call_id,
    message)`` and events to ``on_notification(message)`` (both may be set or
    changed at any time, or None to drop messages).

    Both run on a thread of libivm's: the one running the isolate's
    JavaScript at that moment (a caller's thread, a pool thread, or the
    thread of a call paused in the debugger), which holds the isolate. They
    must not block, nor call into the isolate; hand the message to your own
    thread or event loop (``loop.call_soon_threadsafe``). What they raise is
    logged on the ``ivm`` logger.

    While JavaScript is paused (a breakpoint, ``debugger;``, a step), its call
    waits, and so do the isolate's other calls; the paused call's timeout,
    ``isolate.terminate()``, cancellation and disposal still end it.
    :meth:`dispose` (idempotent; also on leaving a ``with`` block) disconnects
    the session; JavaScript paused for it alone resumes. The inspector runs
    any JavaScript its peer asks for: never expose a session to untrusted
    peers.
    """

    __slots__ = ("on_response", "on_notification", "_key", "_lock", "_isolate")
    _free = lib.ivm_inspector_session_free

    on_response: ResponseHandler | None
    on_notification: NotificationHandler | None

    def __init__(self, isolate: Isolate) -> None:
        self.on_response = None
        self.on_notification = None
        self._lock = threading.Lock()
        self._isolate = isolate
        with _lock:
            self._key = next(_keys)
        opts = ffi.new("ivm_inspector_session_options_t *")
        opts.struct_size = ffi.sizeof("ivm_inspector_session_options_t")
        opts.on_message = lib._ivm_py_inspector_message
        opts.user_data = ffi.cast("void *", self._key)
        out = ffi.new("ivm_inspector_session_t **")
        with _lock:
            _sessions[self._key] = weakref.ref(self)
        try:
            check(lib.ivm_inspector_session_new(isolate._ptr, opts, out))
        except BaseException:
            with _lock:
                _sessions.pop(self._key, None)
            raise
        super().__init__(out[0])
        weakref.finalize(self, _forget, self._key)

    def __repr__(self) -> str:
        state = "disposed" if self._ptr is None else "connected"
        return f"<ivm.InspectorSession {state}>"

    @property
    def is_disposed(self) -> bool:
        """Whether :meth:`dispose` was called."""
        return self._ptr is None

    def dispatch_protocol_message(self, message: str) -> None:
        """Queues one protocol message (JSON text) for the inspector.

        Never blocks; callable from any thread. A message V8 cannot parse or a
        method it does not know is answered with a protocol error (through
        ``on_response``). Raises ``TypeError`` for a non-str, ``ValueError``
        for a message over 4 MiB of UTF-8, :class:`ivm.DisposedError` once the
        session or its isolate is disposed.
        """
        if not isinstance(message, str):
            raise TypeError(f"message must be a str, not {type(message).__name__}")
        data = message.encode("utf-8", "surrogatepass")
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError(f"the protocol message is {len(data)} bytes long, over the "
                             f"{MAX_MESSAGE_BYTES} bytes a session accepts")
        with self._lock:
            if self._ptr is None:
                raise DisposedError("the inspector session is disposed")
            check(lib.ivm_inspector_session_dispatch(self._ptr, data, len(data)))

    def dispose(self) -> None:
        """Disconnects the session; idempotent, callable from any thread (and
        from its own handlers). No handler is called once it returns (one
        running on another thread is waited for)."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)  # ivm_inspector_session_free
            _forget(self._key)

    def _end(self) -> None:
        self.dispose()


def _forget(key: int) -> None:
    with _lock:
        _sessions.pop(key, None)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _ivm_py_inspector_message(user_data: Any, kind: int, call_id: int, message: Any,
                              length: int) -> None:
    """libivm: a protocol message for a session. Never raises into C."""
    try:
        with _lock:
            ref = _sessions.get(int(ffi.cast("uintptr_t", user_data)))
        session = ref() if ref is not None else None
        if session is None:
            return
        text = ffi.unpack(message, length).decode("utf-8", "replace")
        if kind == lib.IVM_INSPECTOR_RESPONSE:
            on_response = session.on_response
            if on_response is not None:
                on_response(int(call_id), text)
        else:
            on_notification = session.on_notification
            if on_notification is not None:
                on_notification(text)
    except BaseException:  # noqa: BLE001 - nothing may unwind through C
        _log.exception("ivm: an inspector session's handler raised")
