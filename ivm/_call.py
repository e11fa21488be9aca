"""The synchronous call path of :meth:`Context.eval_sync`,
:meth:`Script.run_sync` and :meth:`Reference.apply_sync`.

Each makes its libivm call through a C helper of the cffi extension
(ivm/_cffi_fast.c) that also classifies the result: it returns an integer
result itself, and ``NOT_INTEGER`` for every other outcome, which
:func:`finish` then reads from the helper's record of this thread::

    x = EVAL(ptr, src, len(src), source, run, result)
    return x if x != NOT_INTEGER else finish()

(That one line stays in each caller: a function call more would cost about a
tenth of the whole call.) The ``*_PLAIN`` helpers are the same calls with every
option at its default: a caller whose options are all default (``call_options``
returned ``DEFAULTS``) passes no option pointers, which cffi would convert one by
one.
"""

from __future__ import annotations

from typing import Any, Final

from ._errors import raise_error
from ._ffi import lib
from ._options import _DEFAULTS as DEFAULTS
from ._value import KIND_VALUE, primitive, take

__all__ = [
    "APPLY", "APPLY_PLAIN", "DEFAULTS", "EVAL", "EVAL_PLAIN", "NOT_INTEGER", "RUN", "RUN_PLAIN",
    "finish",
]

#: What a helper returns when its result is not an integer (2**53, which never is).
NOT_INTEGER: Final[int] = lib.IVM_PY_NOT_INTEGER
#: The call failed (the record's ``error`` holds the error).
KIND_ERROR: Final[int] = lib.IVM_PY_ERROR

EVAL: Final = lib.ivm_py_eval
RUN: Final = lib.ivm_py_script_run
APPLY: Final = lib.ivm_py_apply
EVAL_PLAIN: Final = lib.ivm_py_eval_plain
RUN_PLAIN: Final = lib.ivm_py_script_run_plain
APPLY_PLAIN: Final = lib.ivm_py_apply_plain
_last = lib.ivm_py_last


def finish() -> Any:
    """The outcome of the helper call this thread just made, when it returned
    ``NOT_INTEGER``: its error raised, or its result (a value freed)."""
    res = _last()
    kind: int = res.kind
    if kind == KIND_ERROR:
        raise_error(res.error)
    if kind == KIND_VALUE:
        return take(res.value)
    return primitive(kind, None, res.slot)
