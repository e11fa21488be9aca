"""``ivm.Script``: code compiled once for an isolate, run in any of its contexts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._context import Context
from ._async import submit, submit_ignored
from ._errors import check, raise_error
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import eval_options, result_flags
from ._value import _tls, fast_options, result, slot_for, take, value_out

if TYPE_CHECKING:  # annotations only; cycle: _isolate imports _script
    from ._isolate import Isolate

__all__ = ["Script"]

_NULL = ffi.NULL
_run = lib.ivm_script_run



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

    def release(self) -> None:
        """Releases the compiled script. Idempotent; later runs raise ``DisposedError``."""
        check(lib.ivm_script_release(self._ptr))

    def run_sync(
        self,
        context: Context,
        *,
        timeout: float | None = None,
        promise: bool = False,
        copy: bool = False,
        external_copy: bool = False,
        transfer_out: bool = False,
        reference: bool = False,
    ) -> Any:
        """Runs the script in ``context`` and returns its completion value.

        ``context`` must belong to the script's isolate (``ValueError``
        otherwise). Options, results and errors are those of
        :meth:`Context.eval_sync`.
        """
        if type(context) is not Context:
            raise TypeError(f"context must be an ivm.Context, not {type(context).__name__}")
        if timeout is None and not (
            promise is not False or copy is not False or external_copy is not False
            or transfer_out is not False
            or reference is not False
        ):
            try:
                opts, slot = _tls.fast
            except AttributeError:
                opts, slot = fast_options()
        else:
            flags = result_flags(False, copy, external_copy, transfer_out, reference)
            opts = eval_options(timeout, promise=promise, flags=flags)[0]
            if opts == _NULL:
                opts, slot = fast_options()
            else:
                slot = slot_for(opts)
        try:
            out = _tls.out
        except AttributeError:
            out = value_out()
        err = _run(self._ptr, context._ptr, opts, out)
        if err:
            raise_error(err)
        return result(slot, out)

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
    ) -> Any:
        """The async twin of :meth:`run_sync` (see :meth:`Context.eval`)."""
        if type(context) is not Context:
            raise TypeError(f"context must be an ivm.Context, not {type(context).__name__}")
        flags = result_flags(False, copy, external_copy, transfer_out, reference)
        opts, _keep = eval_options(timeout, promise=promise, flags=flags)
        return await submit(
            self._isolate._ptr, lib.ivm_script_run_async, (self._ptr, context._ptr, opts), take
        )

    def run_ignored(
        self, context: Context, *, timeout: float | None = None, promise: bool = False
    ) -> None:
        """Queues a run like :meth:`run` and returns at once (see
        :meth:`Context.eval_ignored`)."""
        if type(context) is not Context:
            raise TypeError(f"context must be an ivm.Context, not {type(context).__name__}")
        opts, _keep = eval_options(timeout, promise=promise, flags=lib.IVM_EVAL_DISCARD)
        sptr, cptr = self._ptr, context._ptr
        submit_ignored(
            lambda done, ud, job: lib.ivm_script_run_async(sptr, cptr, opts, done, ud, job),
            lib.ivm_value_free,
        )
