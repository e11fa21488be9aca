"""``ivm.Script``: code compiled once for an isolate, run in any of its contexts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

from ._context import Context
from ._async import submit, submit_ignored
from ._errors import check
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import RunKeywords, cached_data_of, call_options, result_flags, result_options
from ._options import run_options
from ._value import JSPrimitive, take
from ._call import NOT_INTEGER, RUN, RUN_PLAIN, c_method, finish, options_in

if TYPE_CHECKING:  # annotations only; cycle: _isolate imports _script
    from typing_extensions import Unpack  # typing's from Python 3.11

    from ._isolate import Isolate
    from ._external_copy import ExternalCopy
    from ._reference import Reference

__all__ = ["Script"]

_NULL = ffi.NULL


class Script(Handle):
    """A script compiled by :meth:`Isolate.compile_script_sync`."""

    __slots__ = ("_isolate",)
    _free = lib.ivm_script_free
    _dispose = lib.ivm_script_release
    _isolate: Isolate

    @classmethod
    def _wrap(cls, ptr: Any, isolate: Isolate) -> Script:
        self = cls.__new__(cls)
        Handle.__init__(self, ptr)
        self._isolate = isolate
        return self

    def __init__(self) -> None:
        raise TypeError("use Isolate.compile_script_sync() to make a Script")

    def __repr__(self) -> str:
        return f"<ivm.Script of {self._isolate!r}>"

    @property
    def cached_data(self) -> bytes | None:
        """Cache data for later compiles of the same source, if the compile was
        asked for it (``produce_cached_data=True``); otherwise None."""
        return cached_data_of(lib.ivm_script_cached_data, self._ptr)

    @property
    def cached_data_rejected(self) -> bool:
        """Whether the compile was given ``cached_data`` and could not use it."""
        return bool(lib.ivm_script_cached_data_rejected(self._ptr))

    def release(self) -> None:
        """Releases the compiled script. Idempotent; later runs raise ``DisposedError``."""
        check(lib.ivm_script_release(self._ptr))

    def _run_sync(
        self,
        context: Context,
        *,
        timeout: float | None = None,
        promise: bool = False,
        copy: bool = False,
        external_copy: bool = False,
        transfer_out: bool = False,
        reference: bool = False,
        release: bool = False,
    ) -> Any:
        """Runs the script in ``context`` and returns its completion value.

        ``context`` must belong to the script's isolate (``ValueError``
        otherwise). Options, results and errors are those of
        :meth:`Context.eval_sync`. ``release=True`` releases the script once
        the run has ended, however it ended (isolated-vm's ``release`` option).
        """
        cptr = _context_ptr(context)
        _release_flag(release)
        _, run, ropts, _keep = call_options(
            timeout, promise, copy, external_copy, transfer_out, reference
        )
        try:
            x = RUN(self._ptr, cptr, run, ropts)
        finally:
            if release:
                self.release()
        return x if x != NOT_INTEGER else finish()

    @overload
    def run_sync(
        self, context: Context, *, copy: bool = False, external_copy: Literal[False] = False,
        reference: Literal[True], **options: Unpack[RunKeywords],
    ) -> Reference: ...

    @overload
    def run_sync(
        self, context: Context, *, copy: bool = False, external_copy: Literal[True],
        reference: Literal[False] = False, **options: Unpack[RunKeywords],
    ) -> ExternalCopy: ...

    @overload
    def run_sync(
        self, context: Context, *, copy: Literal[False] = False,
        external_copy: Literal[False] = False, reference: Literal[False] = False,
        **options: Unpack[RunKeywords],
    ) -> JSPrimitive: ...

    @overload
    def run_sync(
        self, context: Context, *, copy: bool = False, external_copy: bool = False,
        reference: bool = False, **options: Unpack[RunKeywords],
    ) -> Any: ...

    @options_in(_run_sync)
    def run_sync(self, context: Context, **options: Any) -> Any:
        if options:
            return self._run_sync(context, **options)
        x = RUN_PLAIN(self._ptr, _context_ptr(context))
        return x if x != NOT_INTEGER else finish()

    @overload
    async def run(
        self, context: Context, *, copy: bool = False, external_copy: Literal[False] = False,
        reference: Literal[True], **options: Unpack[RunKeywords],
    ) -> Reference: ...

    @overload
    async def run(
        self, context: Context, *, copy: bool = False, external_copy: Literal[True],
        reference: Literal[False] = False, **options: Unpack[RunKeywords],
    ) -> ExternalCopy: ...

    @overload
    async def run(
        self, context: Context, *, copy: Literal[False] = False,
        external_copy: Literal[False] = False, reference: Literal[False] = False,
        **options: Unpack[RunKeywords],
    ) -> JSPrimitive: ...

    @overload
    async def run(
        self, context: Context, *, copy: bool = False, external_copy: bool = False,
        reference: bool = False, **options: Unpack[RunKeywords],
    ) -> Any: ...

    async def run(
        self,
        context: Context,
        *,
        timeout: float | None = None,
        promise: bool = False,
        copy: bool = False,
        external_copy: bool = False,
        transfer_out: bool = False,
        reference: bool = False,
        release: bool = False,
    ) -> Any:
        """The async twin of :meth:`run_sync` (see :meth:`Context.eval`)."""
        cptr = _context_ptr(context)
        _release_flag(release)
        _, run, ropts, _ = call_options(timeout, promise, copy, external_copy, transfer_out, reference)
        args = (self._ptr, cptr, run, ropts)
        try:
            return await submit(self._isolate._ptr, lib.ivm_script_run_async, args, take)
        finally:
            if release:
                self.release()

    def run_ignored(
        self, context: Context, *, timeout: float | None = None, promise: bool = False
    ) -> None:
        """Queues a run like :meth:`run` and returns at once (see
        :meth:`Context.eval_ignored`)."""
        cptr = _context_ptr(context)
        run = run_options(timeout)
        ropts = result_options(result_flags(promise) | lib.IVM_RESULT_DISCARD)
        args = (self._ptr, cptr, run, ropts)
        submit_ignored(lib.ivm_script_run_async, args, lib.ivm_value_free)


def _release_flag(release: object) -> None:
    if not isinstance(release, bool):
        raise TypeError(f"release must be a bool, not {type(release).__name__}")


def _context_ptr(context: object) -> Any:
    if type(context) is not Context:
        raise TypeError(f"context must be an ivm.Context, not {type(context).__name__}")
    return context._ptr


# The call without options in C, with no Python frame around it (ivm/_call.py).
c_method(Script, "run_sync")
