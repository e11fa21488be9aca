"""ProcessGroup: a sandboxed worker process (``ivm-worker``) that libivm starts,
watches and reports on."""

from __future__ import annotations

import math

from ._errors import IsolateCrashedError, error_from
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import timeout_ns

__all__ = ["ProcessGroup"]


def _limit(value: float | None, what: str, unit: str, scale: int = 1) -> int:
    """A positive limit (None: none) times `scale`, rounded up, as libivm's uint32
    (0: none)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of {unit} or None, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive, finite number of {unit}, not {value!r}")
    n = math.ceil(value * scale)
    if not 1 <= n < 2**32:
        raise ValueError(f"{what} of {value!r} {unit} is out of range")
    return n


class ProcessGroup(Handle):
    """A worker process for isolates, sandboxed, that may crash without hurting
    this process.

    The worker (``ivm-worker``, shipped beside libivm) starts V8, then closes
    every descriptor but its channel to this process, sets ``no_new_privs``
    and installs a seccomp filter: it can open no file, make no socket, run no
    program. When it dies — killed, out of memory, stopped by the sandbox, or
    killed by ivm for misbehaving — every later call raises
    :class:`ivm.IsolateCrashedError` with the cause (signal or exit status, and
    the end of the worker's stderr).

    ``startup_timeout`` (seconds) bounds its start: past it, the worker is
    killed and the constructor raises ``IsolateCrashedError``. ``max_rss_mb``
    kills it once its resident memory exceeds that many MiB (checked every
    20 ms); ``cpu_limit`` (seconds of CPU time, ``RLIMIT_CPU``) ends it with
    SIGXCPU. Isolates live in a group with ``ivm.Isolate(group=pg)``; a crash of
    the worker takes all of them.

    ``dispose()`` (or leaving a ``with`` block) asks the worker to exit and
    kills it after a 200 ms grace; it is idempotent.
    """

    __slots__ = ()
    _free = lib.ivm_process_group_free
    _dispose = lib.ivm_process_group_dispose

    def __init__(
        self,
        *,
        startup_timeout: float = 10.0,
        max_rss_mb: int | None = None,
        cpu_limit: float | None = None,
    ) -> None:
        opts = ffi.new("ivm_process_group_options_t *")
        opts.struct_size = ffi.sizeof("ivm_process_group_options_t")
        opts.startup_timeout_ms = _limit(startup_timeout, "startup_timeout", "seconds",
                                         scale=1000)
        opts.max_rss_mb = _limit(max_rss_mb, "max_rss_mb", "MiB")
        opts.cpu_limit_s = _limit(cpu_limit, "cpu_limit", "seconds")
        out = ffi.new("ivm_process_group_t **")
        err = lib.ivm_process_group_new(opts, out)
        if err:
            raise error_from(err)
        super().__init__(out[0])

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"<ivm.ProcessGroup pid={self.pid}, {state}>"

    @property
    def pid(self) -> int:
        """The worker's process id (also once it is dead, when it may be reused)."""
        return int(lib.ivm_process_group_pid(self._ptr))

    def ping_sync(self, timeout: float | None = None) -> None:
        """Waits until the worker answers (with the GIL released).

        Raises :class:`ivm.IsolateCrashedError` if it is dead,
        :class:`ivm.DisposedError` once disposed, and :class:`ivm.TimeoutError`
        if it does not answer within ``timeout`` seconds (the worker is left as
        it is).
        """
        run = ffi.NULL
        if timeout is not None:
            run = ffi.new("ivm_run_options_t *")
            run.struct_size = ffi.sizeof("ivm_run_options_t")
            run.timeout_ns = timeout_ns(timeout)
        err = lib.ivm_process_group_ping(self._ptr, run)
        if err:
            raise error_from(err)

    @property
    def crash(self) -> IsolateCrashedError | None:
        """The worker's death as an exception (not raised), or None while it
        lives or after ``dispose()`` ended it."""
        err = lib.ivm_process_group_status(self._ptr)
        if not err:
            return None
        exc = error_from(err)
        return exc if isinstance(exc, IsolateCrashedError) else None

    @property
    def alive(self) -> bool:
        """Whether the worker is alive and not disposed."""
        err = lib.ivm_process_group_status(self._ptr)
        if not err:
            return True
        lib.ivm_error_free(err)
        return False

    def dispose(self) -> None:
        """Ends the worker: asks it to exit, and kills it after a 200 ms grace.
        Idempotent, any thread. Later calls raise :class:`ivm.DisposedError`
        (or :class:`ivm.IsolateCrashedError` if it had crashed before)."""
        self._end()
