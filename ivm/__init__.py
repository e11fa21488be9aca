"""ivm — isolated JavaScript for Python.

Many independent V8 isolates in one process, each with its own heap, memory
limit and timeouts; data crosses the boundary only as explicit copies::

    import ivm

    with ivm.Isolate(memory_limit=64) as isolate:
        context = isolate.create_context_sync()
        assert context.eval_sync("6 * 7") == 42

Calling conventions: ``foo_sync()`` blocks the calling thread (with the GIL
released) while V8 runs; ``await foo()`` runs on ivm's small native thread pool
and completes on the caller's asyncio or trio loop; ``foo_ignored()`` queues the
work and returns at once, reporting errors to the ``ivm`` logger and to
:func:`set_ignored_error_handler`.

Rules:

* Calls into one isolate never interleave. Async and ignored calls on one
  isolate run in the order they were made; a sync call waits for the isolate's
  running call (sync or async) to end.
* Cancelling the task awaiting a call stops its JavaScript (or drops the call
  if it has not started); the isolate stays usable.
* Code running for an async call on the pool (a host callback) may not make a
  *synchronous* call into a different isolate: that could deadlock the pool and
  raises :class:`IvmError`. Use the async API there. The same isolate is fine.
* ``dispose()`` fails every queued and running call of the isolate with
  :class:`DisposedError`; ``release()`` does the same for one context or script.
* Ctrl-C stops JavaScript that the main thread runs synchronously and raises
  ``KeyboardInterrupt``.
"""

from __future__ import annotations

from ._async import set_ignored_error_handler as set_ignored_error_handler
from ._callback import Callback as Callback
from ._callback import CallbackMode as CallbackMode
from ._context import Context as Context
from ._copy import JSBigInt as JSBigInt
from ._copy import JSMap as JSMap
from ._copy import JSRegExp as JSRegExp
from ._copy import set_copy_limit as set_copy_limit
from ._errors import CrossProcessError as CrossProcessError
from ._errors import DisposedError as DisposedError
from ._errors import IsolateCrashedError as IsolateCrashedError
from ._errors import IvmError as IvmError
from ._errors import JSError as JSError
from ._errors import MemoryLimitError as MemoryLimitError
from ._errors import TerminatedError as TerminatedError
from ._errors import TimeoutError as TimeoutError
from ._errors import TransferError as TransferError
from ._external_copy import CopyInto as CopyInto
from ._external_copy import ExternalCopy as ExternalCopy
from ._ffi import ffi as _cffi
from ._ffi import lib as _lib
from ._host import HostBasics as HostBasics
from ._inspector import InspectorSession as InspectorSession
from ._isolate import HeapStatistics as HeapStatistics
from ._isolate import Isolate as Isolate
from ._module import Module as Module
from ._profiler import CpuProfile as CpuProfile
from ._process import ProcessGroup as ProcessGroup
from ._rejections import UnhandledRejection as UnhandledRejection
from ._reference import DerefInto as DerefInto
from ._reference import Reference as Reference
from ._script import Script as Script
from ._snapshot import SnapshotScript as SnapshotScript
from ._value import Arguments as Arguments
from ._value import JSPrimitive as JSPrimitive
from ._value import Undefined as Undefined
from ._value import undefined as undefined

#: ivm's version (of libivm, which this package ships).
__version__: str = (
    f"{_lib.IVM_VERSION_MAJOR}.{_lib.IVM_VERSION_MINOR}.{_lib.IVM_VERSION_PATCH}"
)
#: The version of the V8 engine ivm runs on.
v8_version: str = _cffi.string(_lib.ivm_v8_version()).decode()

__all__ = [
    "Arguments",
    "Callback",
    "CallbackMode",
    "Context",
    "CopyInto",
    "CpuProfile",
    "DerefInto",
    "DisposedError",
    "ExternalCopy",
    "HeapStatistics",
    "HostBasics",
    "InspectorSession",
    "Isolate",
    "CrossProcessError",
    "IsolateCrashedError",
    "IvmError",
    "JSBigInt",
    "JSError",
    "JSMap",
    "JSPrimitive",
    "JSRegExp",
    "MemoryLimitError",
    "Module",
    "ProcessGroup",
    "Reference",
    "Script",
    "SnapshotScript",
    "TerminatedError",
    "TimeoutError",
    "TransferError",
    "Undefined",
    "UnhandledRejection",
    "set_copy_limit",
    "set_ignored_error_handler",
    "undefined",
    "v8_version",
]
