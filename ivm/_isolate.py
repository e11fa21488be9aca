"""``ivm.Isolate``: an independent JavaScript VM with its own heap and limits."""

from __future__ import annotations

import atexit
import contextlib
import math
import weakref
import signal
import threading
from dataclasses import dataclass
from typing import Any

from ._async import submit
from ._context import Context
from ._errors import check
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import code_bytes, source_options
from ._script import Script

__all__ = ["HeapStatistics", "Isolate"]

_MIB = 1024 * 1024
_interrupt_installed = False


def _install_interrupt() -> None:
    """Lets Ctrl-C stop JavaScript that the main thread runs synchronously.

    libivm chains its SIGINT handler in front of Python's: the signal
    terminates the main thread's running calls, then Python raises
    KeyboardInterrupt as usual. Only done when Python handles SIGINT (not when
    it is ignored or left to the default action).
    """
    global _interrupt_installed
    if _interrupt_installed or threading.current_thread() is not threading.main_thread():
        return
    _interrupt_installed = True
    if callable(signal.getsignal(signal.SIGINT)):
        err = lib.ivm_interrupt_on_signal(signal.SIGINT)
        if err:
            lib.ivm_error_free(err)


@dataclass(frozen=True)
class HeapStatistics:
    """V8's heap statistics of one isolate, in bytes (counts for contexts)."""

    total_heap_size: int
    total_heap_size_executable: int
    total_physical_size: int
    total_available_size: int
    used_heap_size: int
    heap_size_limit: int
    malloced_memory: int
    peak_malloced_memory: int
    does_zap_garbage: int
    number_of_native_contexts: int
    number_of_detached_contexts: int
    total_global_handles_size: int
    used_global_handles_size: int
    #: Memory V8 accounts outside its heap (ArrayBuffers, WebAssembly memories).
    external_memory: int
    #: ArrayBuffer memory allocated for this isolate, counted against its limit.
    externally_allocated_size: int


def _heap_statistics(raw: Any) -> HeapStatistics:
    return HeapStatistics(**{name: getattr(raw, name) for name in HeapStatistics.__dataclass_fields__})


def _heap_statistics_from(raw: Any) -> HeapStatistics:
    """From an ``ivm_heap_statistics_t *`` made by libivm, which it frees."""
    try:
        return _heap_statistics(raw)
    finally:
        lib.ivm_heap_statistics_free(raw)


# Every live isolate, disposed at interpreter exit while Python still runs:
# host callbacks' finalizers must not run after the interpreter is gone.
_live_isolates: weakref.WeakSet[Isolate] = weakref.WeakSet()


@atexit.register
def _dispose_all_at_exit() -> None:
    for iso in list(_live_isolates):
        with contextlib.suppress(Exception):
            iso.dispose()


class Isolate(Handle):
    """An isolated JavaScript VM: its own heap, memory limit and timeouts.

    ``memory_limit`` is in megabytes (MiB), at least 8. It bounds the
    JavaScript heap, and separately the memory of ArrayBuffers. A call that
    runs past it raises :class:`ivm.MemoryLimitError` and the isolate is
    disposed; the host process lives on.

    An isolate is a context manager that disposes it on exit.
    """

    __slots__ = ("_memory_limit",)
    _free = lib.ivm_isolate_free
    _dispose = lib.ivm_isolate_dispose

    def __init__(self, memory_limit: float = 128) -> None:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, float)):
            raise TypeError(f"memory_limit must be a number of MB, not {type(memory_limit).__name__}")
        if not math.isfinite(memory_limit) or memory_limit < 8:
            raise ValueError(f"memory_limit must be at least 8 (MB), not {memory_limit!r}")
        if memory_limit > 1024 * 1024:
            raise ValueError(f"memory_limit of {memory_limit!r} MB is too large")
        opts = ffi.new("ivm_isolate_options_t *")
        opts.struct_size = ffi.sizeof("ivm_isolate_options_t")
        opts.memory_limit = int(memory_limit * _MIB)
        out = ffi.new("ivm_isolate_t **")
        check(lib.ivm_isolate_new(opts, out))
        if not _interrupt_installed:
            _install_interrupt()
        super().__init__(out[0])
        self._memory_limit = memory_limit
        _live_isolates.add(self)

    def __repr__(self) -> str:
        state = "disposed" if self.is_disposed else "alive"
        return f"<ivm.Isolate memory_limit={self._memory_limit} MB, {state}>"

    @property
    def memory_limit(self) -> float:
        """The memory limit in MB, as given."""
        return self._memory_limit

    def dispose(self) -> None:
        """Disposes the isolate, stopping any JavaScript running in it.

        Idempotent and callable from any thread. Later calls on the isolate and
        its contexts and scripts raise :class:`ivm.DisposedError`. It waits at
        most 100 ms for a host callback the running call is in (which may wait
        for this thread's event loop): past that, the call raises
        ``DisposedError`` once the callback returns, and the isolate is freed
        then.
        """
        check(lib.ivm_isolate_dispose(self._ptr))

    @property
    def is_disposed(self) -> bool:
        """Whether the isolate is disposed (by ``dispose()`` or its memory limit)."""
        return bool(lib.ivm_isolate_is_disposed(self._ptr))

    def terminate(self) -> None:
        """Stops the JavaScript running in this isolate, if any, from any thread.

        The running call raises :class:`ivm.TerminatedError`; the isolate stays
        usable.
        """
        lib.ivm_isolate_terminate(self._ptr)

    def create_context_sync(self) -> Context:
        """A new context (a fresh global object) in this isolate.

        Raises :class:`ivm.DisposedError` or :class:`ivm.MemoryLimitError`.
        """
        out = ffi.new("ivm_context_t **")
        check(lib.ivm_isolate_create_context(self._ptr, ffi.NULL, out))
        return Context._wrap(out[0], self)

    async def create_context(self) -> Context:
        """The async twin of :meth:`create_context_sync`."""
        return await submit(
            self._ptr,
            lib.ivm_isolate_create_context_async,
            (self._ptr, ffi.NULL),
            lambda raw: Context._wrap(raw, self),
        )

    async def compile_script(
        self,
        code: str,
        *,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
    ) -> Script:
        """The async twin of :meth:`compile_script_sync`."""
        src = code_bytes(code)
        source, _keep = source_options(filename, line_offset, column_offset)
        return await submit(
            self._ptr,
            lib.ivm_isolate_compile_script_async,
            (self._ptr, src, len(src), source),
            lambda raw: Script._wrap(raw, self),
        )

    async def get_heap_statistics(self) -> HeapStatistics:
        """The async twin of :meth:`get_heap_statistics_sync` (queued behind the
        isolate's earlier calls)."""
        return await submit(
            self._ptr,
            lib.ivm_isolate_heap_statistics_async,
            (self._ptr,),
            _heap_statistics_from,
        )

    def compile_script_sync(
        self,
        code: str,
        *,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
    ) -> Script:
        """Compiles ``code`` once for this isolate; run it in any of its contexts.

        Raises :class:`ivm.JSError` (``SyntaxError``) for invalid code,
        :class:`ivm.DisposedError` if the isolate is disposed.
        """
        src = code_bytes(code)
        source, keep = source_options(filename, line_offset, column_offset)
        out = ffi.new("ivm_script_t **")
        check(lib.ivm_isolate_compile_script(self._ptr, src, len(src), source, out))
        del keep
        return Script._wrap(out[0], self)

    def get_heap_statistics_sync(self) -> HeapStatistics:
        """V8's heap statistics for this isolate."""
        out = ffi.new("ivm_heap_statistics_t *")
        out.struct_size = ffi.sizeof("ivm_heap_statistics_t")
        check(lib.ivm_isolate_heap_statistics(self._ptr, out))
        return _heap_statistics(out)

    @property
    def cpu_time(self) -> int:
        """CPU time spent running JavaScript in this isolate, in nanoseconds.

        Host callbacks called from JavaScript are not counted (JavaScript they
        run in this isolate is)."""
        out = ffi.new("uint64_t *")
        lib.ivm_isolate_times(self._ptr, out, ffi.NULL)
        return int(out[0])

    @property
    def wall_time(self) -> int:
        """Wall-clock time of the calls into this isolate, in nanoseconds
        (host callbacks they made included)."""
        out = ffi.new("uint64_t *")
        lib.ivm_isolate_times(self._ptr, ffi.NULL, out)
        return int(out[0])

    @property
    def reference_count(self) -> int:
        """How many live contexts and scripts keep objects of this isolate alive."""
        return int(lib.ivm_isolate_reference_count(self._ptr))
