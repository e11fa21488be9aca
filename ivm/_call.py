"""The synchronous call path of :meth:`Context.eval_sync`,
:meth:`Script.run_sync` and :meth:`Reference.apply_sync`.

Each makes its libivm call through a C helper of the cffi extension
(ivm/_cffi_fast.c) that also classifies the result: it returns an integer
result itself, and ``NOT_INTEGER`` for every other outcome, which
:func:`finish` then reads from the helper's record of this thread::

    x = EVAL(ptr, src, len(src), source, run, result)
    return x if x != NOT_INTEGER else finish()

(That one line stays in each caller: a function call more would cost about a
tenth of the whole call.) For the same reason each public sync method takes its
options as ``**options`` (see :func:`options_in`). The ``*_PLAIN`` helpers are the
same calls with every option at its default: a call given no options passes no
option pointers, which cffi would convert one by one.

``Reference.apply_sync(None, arguments)`` without options goes further:
``APPLY_FAST(address, arguments)`` is a CPython builtin written in
ivm/_cffi_fast.c (not a cffi function, so no cdata conversions) that converts
the arguments (ints within +-(2**53 - 1), floats, strs, bools, None and
undefined; exact types only, at most 8; small ints and the constants are
shared libivm values), makes the call with the GIL released, and returns a
primitive or string result itself, anything else (and errors) through
:func:`finish`. For any other argument it returns ``SLOW`` before calling, and
the general path (``Reference._apply_sync``) converts (or refuses) it as
always.

Finally :func:`c_method` puts C methods of ivm/_cffi_fast.c in place of
``Reference.apply_sync``, ``Context.eval_sync``, ``Script.run_sync`` and
``Reference.set_sync``: each makes the call without options itself (apply as
``APPLY_FAST`` does; eval with an exact ``str``, its bytes read in place when
ASCII; run with an exact ``Context``; set with a key and a value that
``APPLY_FAST`` would convert, or a ``copy_into()`` marker, whose own value it
passes), with no Python frame and no ``**options`` dict around it, and
hands every other call to the Python twin ``_<name>`` with the same
arguments. Their handles' addresses come from the slot ``Handle._addr``. The
Python methods remain for type checkers and as the logic the C ones follow.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Final, TypeVar, cast

from ._errors import raise_error
from ._ffi import lib
from ._value import KIND_VALUE, primitive, take

__all__ = [
    "APPLY", "APPLY_FAST", "EVAL", "EVAL_PLAIN", "NOT_INTEGER", "RUN",
    "RUN_PLAIN", "SLOW", "c_getter", "c_method", "finish", "options_in",
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


#: What APPLY_FAST returns when it leaves a call to Python (before making it).
SLOW: Final = object()

# APPLY_FAST (a builtin written in C, not a cffi function): ivm_py_install makes it, reading
# finish and SLOW above, and sets it here.
if not lib.ivm_py_install():  # pragma: no cover - only out of memory
    raise ImportError("ivm: could not make its C call path (ivm/_cffi_fast.c)")
APPLY_FAST: Final = cast("Callable[[int, object], Any]", globals()["APPLY_FAST"])


_F = TypeVar("_F", bound=Callable[..., Any])


def options_in(full: Callable[..., Any]) -> Callable[[_F], _F]:
    """Decorates a public sync method written ``(self, first, [...,] **options)``
    whose body makes the call without options and hands any ``options`` to
    ``full``, the same method with its keyword-only parameters spelled out.

    Why: CPython fills each missing keyword-only argument from
    ``__kwdefaults__`` by a dict lookup, about a sixth of the whole
    ``Context.eval_sync("1+1")``. Users see ``full``: its signature
    (``inspect.signature``, ``help()``, the API docs) and docstring; Python
    checks the options against its parameters, and ``full`` takes the method's
    name so that a misspelled keyword reads ``Context.eval_sync() got an
    unexpected keyword argument 'tmeout'``, as it would without this split.
    """

    def decorate(fast: _F) -> _F:
        full.__name__ = fast.__name__
        full.__qualname__ = fast.__qualname__
        fast.__doc__ = full.__doc__
        fast.__signature__ = inspect.signature(full)  # type: ignore[attr-defined]
        # What tools that read the source (Sphinx's preserved defaults) look at.
        fast.__wrapped__ = full  # type: ignore[attr-defined]
        return fast

    return decorate


def c_method(cls: type, name: str) -> None:
    """Replaces ``cls.<name>`` (``apply_sync``, ``eval_sync``, ``run_sync`` or ``set_sync``, each an
    ``options_in`` method, or ``ExternalCopy.copy_into``) by its C method of ivm/_cffi_fast.c or
    ivm/_cffi_copy.c (ivm_py_install_method):
    the call without options made in C as the Python method makes it, with no Python
    frame around it (a Python method with ``**options`` costs about a sixth of the
    call); every other call goes to ``cls._<name>`` with the same arguments. The C
    method shows the Python one's signature (its text signature) and docstring; the
    Python method stays what type checkers read and the logic the C one follows."""
    if os.environ.get("IVM_PY_C_METHODS") == "0":
        return  # the Python methods stay (docs/conf.py: Sphinx reads their annotations)
    method = getattr(cls, name)
    sig = inspect.signature(method)
    params = [p.replace(annotation=p.empty) for p in sig.parameters.values()]
    text = str(sig.replace(parameters=params, return_annotation=sig.empty))
    if not text.startswith("(self, "):  # pragma: no cover - a new method to adapt
        raise TypeError(f"{cls.__name__}.{name} must take self and arguments")
    doc = f"{name}($self, {text[len('(self, '):]}\n--\n\n{method.__doc__ or ''}"
    if not lib.ivm_py_install_method(
        cls.__module__.encode(), cls.__name__.encode(), name.encode(), doc.encode()
    ):  # pragma: no cover - only out of memory
        raise ImportError(f"ivm: could not make the C method {cls.__name__}.{name}")


def c_getter(cls: type, name: str, slot: str, make: str) -> None:
    """Replaces the property ``cls.<name>``, which returns the slot ``slot`` once
    ``cls.<make>`` has filled it, by a C getter of ivm/_cffi_fast.c
    (ivm_py_install_getter) that reads the slot with no Python frame and calls ``make``
    while it holds None. Same knob as :func:`c_method`."""
    if os.environ.get("IVM_PY_C_METHODS") == "0":
        return
    doc = getattr(cls, name).__doc__ or ""
    if not lib.ivm_py_install_getter(
        cls.__module__.encode(), cls.__name__.encode(), name.encode(), slot.encode(),
        make.encode(), doc.encode(),
    ):  # pragma: no cover - only out of memory
        raise ImportError(f"ivm: could not make the C getter {cls.__name__}.{name}")
