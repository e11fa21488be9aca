"""The synchronous call path of :meth:`Context.eval_sync`,
:meth:`Script.run_sync` and :meth:`Reference.apply_sync`.

Each makes its libivm call through a C helper of the cffi extension
(ivm/_cffi_fast.c) that also classifies the result, with this thread's output
slots (``tls.slots``, made by :func:`slots`); an integer result is read right
there (``res.integer``), and every other outcome goes to :func:`finish`::

    out, res, argv = slots()
    k = EVAL(ptr, src, len(src), source, run, result, out, res)
    return res.integer if k == KIND_INTEGER else finish(k, out, res)

(That one line stays in each caller: a function call more would cost about a
tenth of the whole call.)
"""

from __future__ import annotations

from typing import Any, Final

from ._errors import raise_error
from ._ffi import lib
from ._value import _tls as tls
from ._value import call_slots as slots
from ._value import primitive

__all__ = ["APPLY", "EVAL", "KIND_INTEGER", "RUN", "finish", "slots", "tls"]

#: A number result that Python shows as an int (``res.integer`` holds it).
KIND_INTEGER: Final[int] = lib.IVM_PY_INTEGER
#: The call failed (``res.error`` holds the error).
KIND_ERROR: Final[int] = lib.IVM_PY_ERROR

EVAL: Final = lib.ivm_py_eval
RUN: Final = lib.ivm_py_script_run
APPLY: Final = lib.ivm_py_apply


def finish(kind: int, out: Any, res: Any) -> Any:
    """What a call classified as ``kind`` returns or raises: its error, or its
    result from ``res`` or ``out[0]`` (freed)."""
    if kind == KIND_INTEGER:
        return res.integer
    if kind == KIND_ERROR:
        raise_error(res.error)
    return primitive(kind, out, res.slot)
