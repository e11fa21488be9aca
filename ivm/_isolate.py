"""``ivm.Isolate``: an independent JavaScript VM with its own heap and limits."""

from __future__ import annotations

import atexit
import contextlib
import math
import weakref
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping

from ._async import submit
from ._catastrophic import CatastrophicHandler, register as register_catastrophic
from ._context import Context
from ._callback import Callback
from ._errors import DisposedError, check
from ._ffi import ffi, lib
from ._handle import Handle
from ._host import HostBasics, console_callback, host_bits
from ._inspector import InspectorSession
from ._options import compile_args
from ._profiler import CpuProfile, profiler_options, title_bytes
from ._snapshot import create_snapshot, snapshot_option
from ._value import take
from ._module import ImportHook, Module, import_callback
from ._rejections import RejectionHandler, rejection_callback
from ._script import Script

if TYPE_CHECKING:
    from ._process import ProcessGroup

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
    disposed; the host process lives on. The heap's young generation (short-
    lived objects) is inside the limit: up to 3/32 of it, at most 24 MiB, so
    long-lived data fits in a little less (about 104 MiB at the default 128).

    ``process="isolated"`` runs the isolate in a worker process of its own
    (a sandboxed ``ivm-worker``, see :class:`ivm.ProcessGroup`), and
    ``group=pg`` in the worker of process group ``pg``, shared with other
    isolates. Everything else works alike: References into the worker,
    ExternalCopies and host callbacks cross (a Reference never crosses
    between processes: :class:`ivm.CrossProcessError`; docs/process.md says
    what else is refused). When the worker dies, every pending and
    later call raises :class:`ivm.IsolateCrashedError` with the cause; the
    host process lives on.

    ``on_catastrophic_error(cause)`` is called once with the cause (a str) when
    the isolate ends catastrophically: for an isolate in a worker, when the
    worker crashes (the message of the ``IsolateCrashedError`` its calls then
    raise), on a thread of libivm's; inline, when V8's fatal-error or
    out-of-memory handler runs, on the thread that ran into it, just before
    the process aborts. Never once ``dispose()`` has returned. What it raises
    is logged on the ``ivm`` logger.

    ``snapshot`` (bytes from :meth:`create_snapshot`) starts every context of
    the isolate with the globals the snapshot's scripts left. Bytes that are
    not such a snapshot of this ivm and V8 build (garbage, truncated, another
    version) raise ``ValueError`` before V8 sees them.

    ``inspector=True`` gives the isolate V8's inspector: Chrome DevTools
    protocol sessions connect to it (:meth:`create_inspector_session`,
    ``ivm.inspector.serve``), its contexts appear in DevTools, and
    ``console`` calls reach it, inline or in a worker process (the
    protocol's messages then cross the worker's channel).

    An isolate is a context manager that disposes it on exit.
    """

    __slots__ = ("_memory_limit", "_group", "_import_module", "_forget_catastrophic")
    _free = lib.ivm_isolate_free
    _dispose = lib.ivm_isolate_dispose

    def __init__(
        self,
        memory_limit: float = 128,
        *,
        process: Literal["inline", "isolated"] = "inline",
        group: ProcessGroup | None = None,
        on_catastrophic_error: CatastrophicHandler | None = None,
        snapshot: bytes | None = None,
        inspector: bool = False,
    ) -> None:
        from ._process import ProcessGroup

        if process not in ("inline", "isolated"):
            raise ValueError(f"process must be 'inline' or 'isolated', not {process!r}")
        if group is not None and not isinstance(group, ProcessGroup):
            raise TypeError(f"group must be an ivm.ProcessGroup or None, not {type(group).__name__}")
        if group is not None and process == "isolated":
            raise ValueError("give either process='isolated' (a worker of its own) or group, not both")
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, float)):
            raise TypeError(f"memory_limit must be a number of MB, not {type(memory_limit).__name__}")
        if not math.isfinite(memory_limit) or memory_limit < 8:
            raise ValueError(f"memory_limit must be at least 8 (MB), not {memory_limit!r}")
        if memory_limit > 1024 * 1024:
            raise ValueError(f"memory_limit of {memory_limit!r} MB is too large")
        if not isinstance(inspector, bool):
            raise TypeError(f"inspector must be a bool, not {type(inspector).__name__}")
        opts = ffi.new("ivm_isolate_options_t *")
        opts.struct_size = ffi.sizeof("ivm_isolate_options_t")
        opts.memory_limit = int(memory_limit * _MIB)
        opts.placement = lib.IVM_PLACEMENT_PROCESS if process == "isolated" else lib.IVM_PLACEMENT_INLINE
        opts.group = group._ptr if group is not None else ffi.NULL
        opts.inspector = 1 if inspector else 0
        keep_snapshot = snapshot_option(snapshot, opts)
        forget = None
        if on_catastrophic_error is not None:
            opts.on_catastrophic_error_data, forget = register_catastrophic(on_catastrophic_error)
            opts.on_catastrophic_error = lib._ivm_py_catastrophic
        out = ffi.new("ivm_isolate_t **")
        try:
            check(lib.ivm_isolate_new(opts, out))
            del keep_snapshot
        except BaseException:
            if forget is not None:
                forget()
            raise
        if not _interrupt_installed:
            _install_interrupt()
        super().__init__(out[0])
        self._memory_limit = memory_limit
        self._group = group  # the worker's handle outlives the isolate's
        self._forget_catastrophic = forget
        if forget is not None:
            weakref.finalize(self, forget)
        _live_isolates.add(self)

    def __repr__(self) -> str:
        state = "disposed" if self.is_disposed else "alive"
        return f"<ivm.Isolate memory_limit={self._memory_limit} MB, {state}>"

    @property
    def pid(self) -> int | None:
        """The process id of the worker this isolate lives in; None when it is
        inline (in this process)."""
        pid = int(lib.ivm_isolate_pid(self._ptr))
        return pid if pid != 0 else None

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

        A thread that calls an isolate with the ``*_sync`` methods keeps it
        entered in V8 between calls (they cost less so). Disposed from another
        thread, such an isolate is unusable at once, but its memory is freed by
        that thread at its next call of any isolate (synchronous or not) or when it
        ends. ``IVM_KEEP_ENTRY=0`` in the environment turns this off.
        """
        check(lib.ivm_isolate_dispose(self._ptr))
        if self._forget_catastrophic is not None:
            self._forget_catastrophic()

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

    def create_context_sync(
        self,
        *,
        import_module: ImportHook | None = None,
        on_unhandled_rejection: RejectionHandler | None = None,
        host: HostBasics | None = None,
    ) -> Context:
        """A new context (a fresh global object) in this isolate.

        ``host`` opts into host basics (:class:`ivm.HostBasics`: console,
        timers, encoding, web globals; docs/host.md). Without it the context is
        bare: no ``console``, no ``setTimeout``, nothing the host did not give.

        ``import_module(specifier, referrer)`` enables ``import()`` in it
        (default: :attr:`import_module`): it returns the :class:`ivm.Module` to
        load, which ivm links (with the same hook) and evaluates; it may be a
        coroutine function (docs/modules.md, "Dynamic import()").

        ``on_unhandled_rejection(event)`` receives an :class:`ivm.UnhandledRejection`
        for each promise rejected with no handler, at the end of the call that
        ran it; without one, they are logged on the ``ivm`` logger.

        Raises :class:`ivm.DisposedError` or :class:`ivm.MemoryLimitError`.
        """
        opts, cell, keep = self._context_options(import_module, on_unhandled_rejection, host)
        out = ffi.new("ivm_context_t **")
        check(lib.ivm_isolate_create_context(self._ptr, opts, out))
        del keep
        context = Context._wrap(out[0], self)
        cell.append(weakref.ref(context))
        return context

    async def create_context(
        self,
        *,
        import_module: ImportHook | None = None,
        on_unhandled_rejection: RejectionHandler | None = None,
        host: HostBasics | None = None,
    ) -> Context:
        """The async twin of :meth:`create_context_sync`."""
        opts, cell, _keep = self._context_options(import_module, on_unhandled_rejection, host)

        def wrap(raw: Any) -> Context:
            context = Context._wrap(raw, self)
            cell.append(weakref.ref(context))
            return context

        return await submit(self._ptr, lib.ivm_isolate_create_context_async, (self._ptr, opts), wrap)

    @property
    def import_module(self) -> ImportHook | None:
        """The ``import_module`` hook of contexts created later without their
        own (None, the default: ``import()`` rejects)."""
        return getattr(self, "_import_module", None)

    @import_module.setter
    def import_module(self, hook: ImportHook | None) -> None:
        if hook is not None and not callable(hook):
            raise TypeError(f"import_module must be callable or None, not {type(hook).__name__}")
        self._import_module = hook

    def _context_options(
        self,
        import_module: ImportHook | None,
        on_rejection: RejectionHandler | None,
        host: HostBasics | None = None,
    ) -> tuple[Any, list[weakref.ref[Context]], Any]:
        """The context options, the cell for (a weak reference to) the new
        context, where its import hook finds it, and what the caller keeps
        alive until the C call returns (libivm then holds its own share)."""
        cell: list[weakref.ref[Context]] = []
        opts = ffi.new("ivm_context_options_t *")
        opts.struct_size = ffi.sizeof("ivm_context_options_t")
        rejections = rejection_callback(on_rejection)
        opts.on_unhandled_rejection = rejections._ptr
        console = self._host_options(opts, host)
        hook = import_module if import_module is not None else self.import_module
        if hook is None:
            return opts, cell, (rejections, console)

        def context_of() -> Context:
            context = cell[0]() if cell else None
            if context is None:
                raise DisposedError("the context of this import() is gone")
            return context

        callback = import_callback(hook, self, context_of)
        opts.import_hook = callback._ptr
        return opts, cell, (rejections, callback, console)

    @staticmethod
    def _host_options(opts: Any, host: HostBasics | None) -> Callback | None:
        """Fills the host basics into ``opts``; returns the console callback to
        keep alive until the C call returns."""
        if host is None:
            return None
        if not isinstance(host, HostBasics):
            raise TypeError(f"host must be an ivm.HostBasics or None, not {type(host).__name__}")
        opts.host = host_bits(host)
        opts.console_max_bytes = host.console_max_bytes
        console = console_callback(host)
        if console is not None:
            opts.console = console._ptr
        return console

    async def compile_script(
        self,
        code: str,
        *,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        cached_data: bytes | None = None,
        produce_cached_data: bool = False,
    ) -> Script:
        """The async twin of :meth:`compile_script_sync`."""
        args, _keep = compile_args(code, filename, line_offset, column_offset, cached_data,
                                   produce_cached_data)
        return await submit(self._ptr, lib.ivm_isolate_compile_script_async, (self._ptr, *args),
                            lambda raw: Script._wrap(raw, self))

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
        cached_data: bytes | None = None,
        produce_cached_data: bool = False,
    ) -> Script:
        """Compiles ``code`` once for this isolate; run it in any of its contexts.

        ``cached_data`` (from an earlier compile's :attr:`Script.cached_data`)
        skips most of the compile; data for another source, ivm or V8 build, or
        corrupt data, is not used (:attr:`Script.cached_data_rejected`). Never
        take cached data from an untrusted party. ``produce_cached_data``
        makes :attr:`Script.cached_data` (docs/modules.md, "Code cache").

        Raises :class:`ivm.JSError` (``SyntaxError``) for invalid code,
        :class:`ivm.DisposedError` if the isolate is disposed.
        """
        args, keep = compile_args(code, filename, line_offset, column_offset, cached_data,
                                  produce_cached_data)
        out = ffi.new("ivm_script_t **")
        check(lib.ivm_isolate_compile_script(self._ptr, *args, out))
        del keep
        return Script._wrap(out[0], self)

    def compile_module_sync(
        self,
        code: str,
        *,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        cached_data: bytes | None = None,
        produce_cached_data: bool = False,
        meta: Mapping[str, object] | None = None,
    ) -> Module:
        """Compiles ``code`` as an ES module for this isolate (docs/modules.md).
        ``cached_data`` and ``produce_cached_data`` work as for
        :meth:`compile_script_sync`. ``meta`` (a mapping of copyable values,
        e.g. ``{"url": "file:///app/main.mjs"}``) fills ``import.meta``.

        Raises :class:`ivm.JSError` (``SyntaxError``) for invalid code,
        :class:`ivm.DisposedError` if the isolate is disposed.
        """
        args, keep = compile_args(code, filename, line_offset, column_offset, cached_data,
                                  produce_cached_data)
        out = ffi.new("ivm_module_t **")
        check(lib.ivm_isolate_compile_module(self._ptr, *args, out))
        del keep
        return Module._wrap(out[0], self, filename)._set_meta(meta)

    async def compile_module(
        self,
        code: str,
        *,
        filename: str | None = None,
        line_offset: int = 0,
        column_offset: int = 0,
        cached_data: bytes | None = None,
        produce_cached_data: bool = False,
        meta: Mapping[str, object] | None = None,
    ) -> Module:
        """The async twin of :meth:`compile_module_sync`."""
        args, _keep = compile_args(code, filename, line_offset, column_offset, cached_data,
                                   produce_cached_data)
        return await submit(self._ptr, lib.ivm_isolate_compile_module_async, (self._ptr, *args),
                            lambda raw: Module._wrap(raw, self, filename)._set_meta(meta))

    def get_heap_statistics_sync(self) -> HeapStatistics:
        """V8's heap statistics for this isolate."""
        out = ffi.new("ivm_heap_statistics_t *")
        out.struct_size = ffi.sizeof("ivm_heap_statistics_t")
        check(lib.ivm_isolate_heap_statistics(self._ptr, out))
        return _heap_statistics(out)

    create_snapshot = staticmethod(create_snapshot)

    def create_inspector_session(self) -> InspectorSession:
        """Connects a new Chrome DevTools protocol session to the isolate's
        inspector (:class:`ivm.InspectorSession`). Several may be connected
        at once. Never blocks: the connection is queued, and messages sent
        after it are served after it.

        Raises ``ValueError`` if the isolate was made without
        ``inspector=True``, :class:`ivm.DisposedError`.
        """
        return InspectorSession(self)

    def start_cpu_profiler_sync(self, title: str = "", *,
                                sampling_interval: float | None = None) -> None:
        """Starts recording a CPU profile named ``title`` (V8's sampling
        profiler; several may record at once). ``sampling_interval`` is the
        time between samples in seconds (default 1 ms, at least 50 us).

        An isolate in a worker process records there (the profile comes
        back when it stops).

        Raises ``ValueError`` if a profile of that title is already
        recording, :class:`ivm.DisposedError`.
        """
        t = title_bytes(title)
        check(lib.ivm_isolate_start_cpu_profiler(self._ptr, t, len(t),
                                                 profiler_options(sampling_interval)))

    async def start_cpu_profiler(self, title: str = "", *,
                                 sampling_interval: float | None = None) -> None:
        """The async twin of :meth:`start_cpu_profiler_sync`."""
        t = title_bytes(title)
        opts = profiler_options(sampling_interval)
        await submit(self._ptr, lib.ivm_isolate_start_cpu_profiler_async,
                     (self._ptr, t, len(t), opts), take)

    def stop_cpu_profiler_sync(self, title: str = "") -> CpuProfile:
        """Stops the CPU profile named ``title`` and returns it
        (:class:`ivm.CpuProfile`; ``.save("x.cpuprofile")`` for DevTools).

        Raises ``ValueError`` if no profile of that title is recording,
        :class:`ivm.DisposedError`.
        """
        t = title_bytes(title)
        out = ffi.new("ivm_value_t **")
        check(lib.ivm_isolate_stop_cpu_profiler(self._ptr, t, len(t), out))
        return CpuProfile._from_json(title, take(out[0]))

    async def stop_cpu_profiler(self, title: str = "") -> CpuProfile:
        """The async twin of :meth:`stop_cpu_profiler_sync`."""
        t = title_bytes(title)
        return await submit(self._ptr, lib.ivm_isolate_stop_cpu_profiler_async,
                            (self._ptr, t, len(t)),
                            lambda raw: CpuProfile._from_json(title, take(raw)))

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
