"""Opt-in host basics of a context: console, timers, encoding and web globals
(docs/host.md). The default context stays bare."""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from typing import Any, Callable, Final, Union

from ._callback import Callback
from ._ffi import lib

__all__ = ["ConsoleSink", "HostBasics", "console_callback", "host_bits"]

_log = logging.getLogger("ivm")

#: What ``HostBasics(console=...)`` takes besides a bool: called with
#: ``(level, text)`` once per console call.
ConsoleSink = Callable[[str, str], object]

#: The ``ivm`` logger's level for each console level.
LOG_LEVELS: Final = {
    "log": logging.INFO,
    "info": logging.INFO,
    "dir": logging.INFO,
    "time": logging.INFO,
    "count": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "assert": logging.ERROR,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}
_MAX_BYTES: Final = 2**32 - 1


@dataclass(frozen=True)
class HostBasics:
    """Which host basics a new context gets (``create_context(host=...)``).

    * ``console``: ``console.log`` and friends. True sends each call's line to
      the ``ivm`` logger (log/info/dir/time/count at INFO, warn at WARNING,
      error/assert at ERROR, debug/trace at DEBUG); a callable gets
      ``(level, text)`` instead, in the order of the calls, on the thread that
      runs the JavaScript. Values are formatted inside the isolate, as node's
      ``util.inspect`` does, so logging never fails on uncopyable values.
    * ``timers``: setTimeout, setInterval, setImmediate (and their clear
      functions) and queueMicrotask, on the isolate's own queue.
    * ``encoding``: TextEncoder, TextDecoder (utf-8, utf-16le), atob, btoa.
    * ``web``: structuredClone, performance.now, crypto.getRandomValues and
      crypto.randomUUID.
    * ``console_max_bytes``: the most bytes of one console call's text (longer
      text is cut and marked).
    """

    console: Union[bool, ConsoleSink] = False
    timers: bool = False
    encoding: bool = False
    web: bool = False
    console_max_bytes: int = 16384

    def __post_init__(self) -> None:
        if not isinstance(self.console, bool) and not callable(self.console):
            raise TypeError(
                f"HostBasics console must be a bool or callable, not {type(self.console).__name__}"
            )
        for name in ("timers", "encoding", "web"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"HostBasics {name} must be a bool, not {type(value).__name__}")
        limit = self.console_max_bytes
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(
                f"HostBasics console_max_bytes must be an int, not {type(limit).__name__}"
            )
        if not 1 <= limit <= _MAX_BYTES:
            raise ValueError(f"HostBasics console_max_bytes must be in 1..{_MAX_BYTES}, not {limit}")

    @classmethod
    def all(cls, console: Union[bool, ConsoleSink] = True) -> HostBasics:
        """Every host basic, with ``console`` as given (default: the ``ivm`` logger)."""
        return cls(console=console, timers=True, encoding=True, web=True)


def host_bits(host: HostBasics) -> int:
    """The ``ivm_context_options_t.host`` bits of ``host``."""
    bits = 0
    if host.console is not False:
        bits |= lib.IVM_HOST_CONSOLE
    if host.timers:
        bits |= lib.IVM_HOST_TIMERS
    if host.encoding:
        bits |= lib.IVM_HOST_ENCODING
    if host.web:
        bits |= lib.IVM_HOST_WEB
    return bits


def _log_line(level: object, text: object) -> None:
    _log.log(LOG_LEVELS.get(str(level), logging.INFO), "%s", text)


_default: Callback | None = None


@atexit.register
def _drop_default() -> None:
    """Lets go of the shared logger callback while the interpreter can still run
    its finalizer."""
    global _default
    _default = None


def console_callback(host: HostBasics) -> Callback | None:
    """The ``ivm_context_options_t.console`` callback of ``host`` (None: no console)."""
    global _default
    sink = host.console
    if sink is False:
        return None
    if sink is True:
        if _default is None:   # (only after the atexit drop)
            _default = Callback(_log_line)
        return _default
    fn: Any = sink

    def line(level: object, text: object) -> None:
        fn(str(level), str(text))

    return Callback(line)


# Made at import, as _rejections' default is: every context logging to the ivm
# logger shares it.
_default = Callback(_log_line)
