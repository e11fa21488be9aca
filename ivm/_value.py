"""Values crossing from libivm into Python."""

from __future__ import annotations

import importlib
import math
import threading
from typing import Any, Final, Union

from ._errors import check, raise_error
from ._ffi import ffi, lib

__all__ = ["Arguments", "JSPrimitive", "Undefined", "undefined"]

#: The largest integer a JavaScript number holds exactly (Number.MAX_SAFE_INTEGER): the
#: bound of both directions' int rule (js_number below; ints passed into JavaScript, within
#: it a number, beyond it a BigInt: ivm._copy, ivm._callback; ivm/_cffi_fast.c's
#: IVM_PY_MAX_SAFE in C).
MAX_SAFE: Final = 2**53 - 1
_copysign = math.copysign

# The kinds of ivm_primitive_t (a call's `primitive_out`, a host call's arguments):
# KIND_VALUE means the value is not there (the call's `out` holds it).
KIND_VALUE: Final = 0
KIND_UNDEFINED: Final[int] = lib.IVM_VALUE_UNDEFINED
KIND_NULL: Final[int] = lib.IVM_VALUE_NULL
KIND_BOOLEAN: Final[int] = lib.IVM_VALUE_BOOLEAN
KIND_NUMBER: Final[int] = lib.IVM_VALUE_NUMBER
KIND_STRING: Final[int] = lib.IVM_VALUE_STRING


def js_number(x: float) -> int | float:
    """A JavaScript number in Python: an ``int`` when it is integral, safe
    (within +-(2**53 - 1)) and not -0, else the ``float`` (docs/values.md).
    The one rule; ivm/_cffi_fast.c applies it in C to the results of the
    synchronous calls."""
    if -MAX_SAFE <= x <= MAX_SAFE and x.is_integer() and (x or _copysign(1.0, x) > 0):
        return int(x)
    return x


class Undefined:
    """The type of :data:`ivm.undefined`, JavaScript's ``undefined``.

    A falsy singleton, distinct from ``None`` (JavaScript's ``null``).
    """

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ivm.undefined"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "undefined"


undefined: Final = Undefined()

#: What a JavaScript primitive becomes in Python.
JSPrimitive = Union[Undefined, None, bool, int, float, str]

#: The arguments of a call into JavaScript: a list or a tuple. (A ``str`` or
#: ``bytes`` is an iterable too, and the runtime refuses it; this type refuses
#: it before the program runs.)
Arguments = Union[list[Any], tuple[Any, ...]]


_tls = threading.local()


def value_out() -> Any:
    """This thread's ``ivm_value_t **`` output slot, reused by every call.

    Each call reads its result right after libivm returns, so nested calls on
    one thread (host callbacks) never see each other's values.
    """
    try:
        return _tls.out
    except AttributeError:
        _tls.out = out = ffi.new("ivm_value_t **")
        return out


def value_array(values: list[Any]) -> Any:
    """An ``ivm_value_t *[]`` holding ``values`` for one call (NULL when empty)."""
    return ffi.new("ivm_value_t *[]", values) if values else ffi.NULL


def argv_slots() -> Any:
    """This thread's array of 8 argument slots, filled right before a call
    (``_tls.argv`` on the hot path)."""
    try:
        return _tls.argv
    except AttributeError:
        _tls.argv = argv = ffi.new("ivm_value_t *[8]")
        return argv


def sync_slots() -> tuple[Any, Any]:
    """This thread's ``(ivm_value_t **out, ivm_primitive_t *primitive_out)``:
    the outputs of the synchronous calls that return a value and have no
    helper in ivm/_cffi_fast.c (a primitive result lands in the slot, with no
    value to free)."""
    try:
        return _tls.sync  # type: ignore[no-any-return]
    except AttributeError:
        _tls.sync = slots = (value_out(), ffi.new("ivm_primitive_t *"))
        return slots


def sync_result(err: Any, out: Any, slot: Any) -> Any:
    """The synchronous call path, with sync_slots(): every libivm call that
    returns a value is made as ``out, slot = sync_slots()`` then
    ``sync_result(lib.ivm_...(..., out, slot), out, slot)``, which raises the
    call's error or returns its result: from the slot for undefined, null,
    booleans and numbers, else the value in ``out[0]`` (freed). (Two small
    steps rather than one wrapper taking the function and its arguments,
    which would cost a tuple per call. ``Context.eval_sync``,
    ``Script.run_sync`` and ``Reference.apply_sync`` take the faster path of
    ivm/_call.py.)"""
    if err:
        raise_error(err)
    return primitive(slot.kind, out, slot)


def primitive(kind: int, out: Any, slot: Any) -> Any:
    """The result of a call whose ``primitive_out`` is ``slot`` (of this
    ``kind``): from the slot, or the value in ``out[0]`` (freed)."""
    if kind == KIND_NUMBER:
        return js_number(slot.number)
    if kind == KIND_VALUE:
        return take(out[0])
    if kind == KIND_UNDEFINED:
        return undefined
    if kind == KIND_NULL:
        return None
    return slot.boolean != 0


_kind = lib.ivm_value_kind
_number = lib.ivm_value_number
_free = lib.ivm_value_free


def take(v: Any) -> Any:
    """Converts and frees a libivm value."""
    # The hot path: a number (ivm_value_number is NaN for every other kind).
    x: float = _number(v)
    if x == x:
        _free(v)
        return js_number(x)
    try:
        return peek(v)
    finally:
        _free(v)


_LATE: dict[str, Any] = {}


def _late(module: str, name: str) -> Any:
    """``name`` of ivm's ``module``, imported on first use (cycles: _copy,
    _external_copy and _reference import _value), then kept: an import
    statement on each result costs the import machinery's lookups."""
    obj = _LATE.get(name)
    if obj is None:
        obj = _LATE[name] = getattr(importlib.import_module(module, __package__), name)
    return obj


def peek(v: Any) -> Any:
    """Converts a libivm value (borrowed: not freed)."""
    x: float = _number(v)
    if x == x:  # a number (NaN for every other kind)
        return js_number(x)
    kind = _kind(v)
    if kind == KIND_NUMBER:  # NaN
        return x
    if kind == KIND_STRING:
        p = ffi.new("const char **")
        n = ffi.new("size_t *")
        lib.ivm_value_string(v, p, n)
        text: str = ffi.unpack(p[0], n[0]).decode("utf-8", "surrogatepass")
        return text
    if kind == lib.IVM_VALUE_UNDEFINED:
        return undefined
    if kind == lib.IVM_VALUE_NULL:
        return None
    if kind == lib.IVM_VALUE_BOOLEAN:
        return bool(lib.ivm_value_boolean(v))
    if kind == lib.IVM_VALUE_BIGINT:
        neg = ffi.new("int *")
        words = ffi.new("const uint64_t **")
        count = ffi.new("size_t *")
        lib.ivm_value_bigint(v, neg, words, count)
        if count[0] == 0:
            return 0
        magnitude = int.from_bytes(ffi.buffer(words[0], count[0] * 8), "little")
        return -magnitude if neg[0] else magnitude
    if kind == 7:  # IVM_VALUE_SERIALIZED
        return _late("._copy", "load_value")(v)
    if kind == 8:  # IVM_VALUE_EXTERNAL_COPY
        out = ffi.new("ivm_external_copy_t **")
        check(lib.ivm_value_external_copy(v, out))
        return _late("._external_copy", "ExternalCopy")._wrap(out[0])
    if kind == 9:  # IVM_VALUE_REFERENCE
        ref = ffi.new("ivm_reference_t **")
        check(lib.ivm_value_reference(v, ref))
        return _late("._reference", "Reference")._wrap(ref[0])
    raise TypeError(f"libivm returned a value of unknown kind {kind}")
