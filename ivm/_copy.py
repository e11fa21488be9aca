"""Structured copies between Python and JavaScript (docs/values.md).

libivm writes and reads copies in the ivm copy format: a subset of pickle
protocol 5 whose only callables are the names defined here (``ivm._copy``).
Python reads them with an :class:`pickle.Unpickler` that resolves those names
and nothing else, and writes them with a :class:`pickle.Pickler` that refuses
every type outside the documented table. Both run in C for the common types.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
import io
import pickle
import struct
import types
from typing import Any, Callable, Final, cast

from ._errors import JSError, TransferError, check, raise_error
from ._ffi import ffi, lib
from ._value import MAX_SAFE, Undefined, js_number, undefined

__all__ = ["JSBigInt", "JSMap", "JSRegExp", "dumps", "load_value", "set_copy_limit"]

_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MS: Final = datetime.timedelta(milliseconds=1)


class JSBigInt(int):
    """A JavaScript BigInt: an ``int`` that goes back into JavaScript as a
    BigInt, whatever its size (a plain ``int`` becomes a number when it is
    within ±(2**53-1))."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"JSBigInt({int(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (JSBigInt, (int(self),))


class JSMap(dict):  # type: ignore[type-arg]
    """A JavaScript Map: a ``dict`` that goes back into JavaScript as a Map,
    whatever its keys (a plain ``dict`` becomes an Object when all its keys are
    ``str``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"JSMap({dict.__repr__(self)})"


class JSRegExp:
    """A JavaScript RegExp as data: its ``source`` and ``flags``. Never a
    Python :mod:`re` pattern: JavaScript's syntax differs."""

    __slots__ = ("source", "flags")
    source: str
    flags: str

    def __init__(self, source: str, flags: str = "") -> None:
        if not isinstance(source, str) or not isinstance(flags, str):
            raise TypeError("JSRegExp(source, flags) takes two str")
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "flags", flags)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("JSRegExp is immutable")

    def __repr__(self) -> str:
        return f"JSRegExp({self.source!r}, {self.flags!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JSRegExp):
            return NotImplemented
        return self.source == other.source and self.flags == other.flags

    def __hash__(self) -> int:
        return hash((JSRegExp, self.source, self.flags))

    def __reduce__(self) -> tuple[Any, ...]:
        return (JSRegExp, (self.source, self.flags))


# Typed array kinds in `_view` (libivm/copy.cc), with memoryview formats.
_FORMATS: Final = ("b", "B", "B", "h", "H", "i", "I", "f", "d", "q", "Q", "c")
_SIZES: Final = {f: struct.calcsize(f) for f in set(_FORMATS)}
_KIND_BY_FORMAT: Final = {
    "b": 0, "B": 1, "h": 3, "H": 4, "i": 5, "I": 6, "f": 7, "d": 8, "q": 9, "Q": 10,
    "l": 9, "L": 10, "c": 11,
}


# --- the names a copy may call (each also used when writing one)

def _undefined() -> Undefined:
    return undefined


def _date(ms: float) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(milliseconds=ms)


def _view(buffer: Any, kind: int, offset: int, length: int) -> memoryview:
    fmt = _FORMATS[kind]
    view = memoryview(buffer)[offset : offset + length * _SIZES[fmt]]
    return view.cast(fmt) if fmt != "B" else view  # type: ignore[call-overload]


def _error(name: str, message: str, stack: str) -> Any:
    return JSError(message, name=name, stack=stack or None)


def _buf(index: int) -> bytes:   # pragma: no cover - replaced per load
    raise pickle.UnpicklingError("_buf outside a copy")


def _sab(index: int) -> bytes:   # pragma: no cover - replaced per load
    raise pickle.UnpicklingError("_sab outside a copy")


def _att(index: int) -> Any:   # pragma: no cover - replaced per load
    raise pickle.UnpicklingError("_att outside a copy")


_FUNCTION: Final = types.FunctionType
_TAGS: Final = frozenset({_undefined, _date, _view, _error, _buf, _sab, _att, JSBigInt, JSMap, JSRegExp})
_ALLOWED: Final = {
    "_undefined": _undefined, "_date": _date, "_view": _view, "_error": _error,
    "JSBigInt": JSBigInt, "JSMap": JSMap, "JSRegExp": JSRegExp,
}


# --- reading (libivm → Python)

class _Reader(pickle.Unpickler):
    def __init__(self, data: Any, value: Any) -> None:
        super().__init__(io.BytesIO(data))
        self._value = value

    def find_class(self, module: str, name: str) -> Any:
        if module == "ivm._copy":
            fn = _ALLOWED.get(name)
            if fn is not None:
                return fn
            if name in ("_buf", "_sab"):
                return self._buffer
            if name == "_att":
                return self._attachment
        raise pickle.UnpicklingError(f"a copy may not name {module}.{name}")

    def _attachment(self, index: int) -> Any:
        """A Reference or ExternalCopy object inside the value, as itself."""
        kind = lib.ivm_value_attachment_kind(self._value, index)
        if kind == lib.IVM_ATTACHMENT_REFERENCE:
            from ._reference import Reference  # cycle: _reference imports _copy

            ref = ffi.new("ivm_reference_t **")
            check(lib.ivm_value_attachment_reference(self._value, index, ref))
            return Reference._wrap(ref[0])
        if kind == lib.IVM_ATTACHMENT_COPY:
            from ._external_copy import ExternalCopy  # cycle: _external_copy imports _copy

            copy = ffi.new("ivm_external_copy_t **")
            check(lib.ivm_value_attachment_copy(self._value, index, copy))
            return ExternalCopy._wrap(copy[0])
        raise TransferError("a Reference to a host value cannot be copied back to Python")

    def _buffer(self, index: int) -> bytes:
        data = ffi.new("const void **")
        size = ffi.new("size_t *")
        err = lib.ivm_value_buffer(self._value, index, data, size)
        if err:
            raise_error(err)
        if size[0] == 0:
            return b""
        unpacked: bytes = ffi.unpack(ffi.cast("const char *", data[0]), size[0])
        return unpacked


# The stream's opcodes for data read in one C loop (ivm/_cffi_load.c); NotImplemented for
# any other stream (attachments, malformed ones), which _Reader then reads.
if not lib.ivm_py_load_install():  # pragma: no cover - only out of memory
    raise ImportError("ivm: could not make its copy reader (ivm/_cffi_load.c)")
LOAD_FAST: Final = cast("Callable[[Any], Any]", globals()["LOAD_FAST"])


def load_value(value: Any) -> Any:
    """The Python form of an ``IVM_VALUE_SERIALIZED`` value (not freed here)."""
    p = ffi.new("const char **")
    n = ffi.new("size_t *")
    lib.ivm_value_serialized(value, p, n)
    stream = ffi.buffer(p[0], n[0])
    result = LOAD_FAST(stream)
    if result is NotImplemented:
        result = _Reader(stream, value).load()
    return result


# --- writing (Python → libivm)

class _Marker:
    """Something that enters an isolate as an attachment (ExternalCopy markers;
    later References and Callbacks). Subclasses implement ``_attach``."""

    __slots__ = ()

    def _attach(self, value: Any) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


def _reduce_datetime(obj: datetime.datetime) -> tuple[Any, ...]:
    if obj.tzinfo is None or obj.utcoffset() is None:
        raise TypeError(
            "a naive datetime cannot be copied into JavaScript: give it a timezone "
            "(e.g. datetime.timezone.utc)"
        )
    return (_date, (float((obj - _EPOCH) // _MS),))


def _reduce_memoryview(obj: memoryview) -> tuple[Any, ...]:
    fmt = obj.format.lstrip("@=<")
    kind = _KIND_BY_FORMAT.get(fmt)
    if kind is None or obj.ndim != 1 or not obj.c_contiguous:
        raise TypeError(
            f"a memoryview of format {obj.format!r} with {obj.ndim} dimension(s) has no "
            "JavaScript typed array; use a 1-dimensional contiguous view of format "
            "b, B, h, H, i, I, f, d, q, Q or c"
        )
    length = obj.nbytes // obj.itemsize
    base: Any = obj.obj
    if type(base) in (bytes, bytearray):
        offset = int(ffi.cast("uintptr_t", ffi.from_buffer(obj))) - int(
            ffi.cast("uintptr_t", ffi.from_buffer(base))
        )
        if 0 <= offset <= len(base) - obj.nbytes:
            return (_view, (base, kind, offset, length))
    return (_view, (obj.tobytes(), kind, 0, length))


class _Writer(pickle.Pickler):
    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=5)
        self.markers: list[_Marker] = []

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t in _REDUCERS:
            return _REDUCERS[t](obj)
        if isinstance(obj, _Marker):
            self.markers.append(obj)
            return (_att, (len(self.markers) - 1,))
        if (t is type or t is _FUNCTION) and obj in _TAGS:
            return NotImplemented   # the names of the copy format itself
        if isinstance(obj, JSError):
            return (_error, (obj.name, obj.message, obj.stack))
        raise TypeError(
            f"an object of type {t.__module__}.{t.__qualname__} cannot be copied into "
            "JavaScript (see docs/values.md for the types that can)"
        )


_REDUCERS: Final[dict[type, Callable[[Any], Any]]] = {
    Undefined: lambda obj: (_undefined, ()),
    JSBigInt: lambda obj: (JSBigInt, (int(obj),)),
    JSMap: lambda obj: (JSMap, (), None, None, iter(obj.items())),
    JSRegExp: lambda obj: (JSRegExp, (obj.source, obj.flags)),
    datetime.datetime: _reduce_datetime,
    memoryview: _reduce_memoryview,
}


def dumps(obj: Any) -> Any:
    """An owned ``ivm_value_t *`` (IVM_VALUE_SERIALIZED) copying ``obj``, with
    its markers attached. Raises ``TypeError`` for what cannot be copied."""
    f = io.BytesIO()
    writer = _Writer(f)
    try:
        writer.dump(obj)
    except RecursionError:
        raise TransferError(
            "the value is nested too deeply to be copied into JavaScript"
        ) from None
    stream = f.getbuffer()
    out = ffi.new("ivm_value_t **")
    check(lib.ivm_value_new_serialized(ffi.from_buffer(stream), stream.nbytes, out))
    value = out[0]
    try:
        for marker in writer.markers:
            marker._attach(value)
    except BaseException:
        lib.ivm_value_free(value)
        raise
    return value


# Plain JSON data (dicts with str keys, lists, strs, safe ints, finite floats, bools, None,
# nothing shared) as one copy stream naming ``_json`` with its JSON text, written in one C
# pass (ivm/_cffi_json.c), which libivm hands to V8's JSON.parse; None for anything else.
# Such streams only go into isolates: Python's readers refuse ``_json`` (not in _ALLOWED),
# so a worker cannot make the host parse JSON text of its choosing.
if not lib.ivm_py_json_install():  # pragma: no cover - only out of memory
    raise ImportError("ivm: could not make its JSON writer (ivm/_cffi_json.c)")
JSON_STREAM: Final = cast("Callable[..., bytes | bool | None]", globals()["JSON_STREAM"])


def dumps_plain(obj: Any) -> Any:
    """:func:`dumps` for a value going into an isolate (arguments, ``set_sync`` values,
    callback results): plain JSON data as JSON text, anything else as :func:`dumps`."""
    out = ffi.new("ivm_value_t **")
    if JSON_STREAM(obj, ffi.buffer(out)) is None:
        return dumps(obj)
    return out[0]


# --- one marker: the stream libivm writes for it (copy.h's kAttachmentStream)

SINGLE_MARKER_STREAM: Final = b"\x80\x05civm._copy\n_att\nK\x00\x85R."


def marker_value(marker: _Marker) -> Any:
    """An owned ``ivm_value_t *`` that is only ``marker``: the same value as
    ``dumps(marker)`` (not the same bytes: the short stream libivm recognises), without a
    pickler (a marker passed as an argument or a value)."""
    out = ffi.new("ivm_value_t **")
    check(lib.ivm_value_new_serialized(SINGLE_MARKER_STREAM, len(SINGLE_MARKER_STREAM), out))
    value = out[0]
    try:
        marker._attach(value)
    except BaseException:
        lib.ivm_value_free(value)
        raise
    return value


# --- one ArrayBuffer, kept out of the stream

# The stream libivm writes for a copy whose value is one ArrayBuffer: _buf(0).
SINGLE_BUFFER_STREAM: Final = b"\x80\x05civm._copy\n_buf\n\x94K\x00\x85R\x94."


def buffer_value(data: bytes | bytearray, borrow: bool) -> Any:
    """An owned ``ivm_value_t *`` for one ArrayBuffer holding ``data``. With
    ``borrow`` (only for ``bytes``, which cannot change), libivm reads
    ``data`` in place: the caller keeps it alive until the value is freed."""
    out = ffi.new("ivm_value_t **")
    check(lib.ivm_value_new_serialized(SINGLE_BUFFER_STREAM, len(SINGLE_BUFFER_STREAM), out))
    value = out[0]
    flags = lib.IVM_ATTACH_BORROW if borrow and type(data) is bytes else 0
    err = lib.ivm_value_attach_buffer(value, ffi.from_buffer(data), len(data), flags, ffi.NULL)
    if err:
        lib.ivm_value_free(value)
        check(err)
    return value


# --- the JavaScript form of a Python value, in Python

def normalize(obj: Any) -> Any:
    """What ``obj`` becomes after a trip through JavaScript (docs/values.md),
    computed in Python: tuples become lists, frozensets sets, bytearrays
    bytes, integral floats ints, ints outside ±(2**53-1) JSBigInt, dicts with
    a non-str key JSMap. Shared and cyclic structure is kept."""
    memo: dict[int, Any] = {}

    def walk(o: Any) -> Any:
        t = type(o)
        if t is str or t is bool or o is None or t is Undefined:
            return o
        if t is int:
            return o if -MAX_SAFE <= o <= MAX_SAFE else JSBigInt(o)
        if t is float:
            return js_number(o)
        if t is JSBigInt:
            return o
        done = memo.get(id(o))
        if done is not None:
            return done
        if t is list or t is tuple:
            out_list: list[Any] = []
            memo[id(o)] = out_list
            out_list.extend(walk(x) for x in o)
            return out_list
        if t is dict or t is JSMap:
            keys = [walk(k) for k in o]
            is_map = t is JSMap or any(type(k) is not str for k in keys)
            out_dict: dict[Any, Any] = JSMap() if is_map else {}
            memo[id(o)] = out_dict
            for k, v in zip(keys, o.values()):
                out_dict[k] = walk(v)
            return out_dict
        if t is set or t is frozenset:
            out_set: set[Any] = set()
            memo[id(o)] = out_set
            out_set.update(walk(x) for x in o)
            return out_set
        if t is bytearray:
            memo[id(o)] = b = bytes(o)
            return b
        return o   # bytes, memoryview, datetime, JSRegExp, JSError, markers: as they are

    try:
        return walk(obj)
    except RecursionError:
        raise TransferError("the value is nested too deeply to be copied") from None


def set_copy_limit(nbytes: int | None) -> int:
    """Sets the largest structured copy (stream and buffers, in bytes) made of
    a JavaScript value; a larger one raises :class:`ivm.TransferError`.
    ``None`` restores the default (2 GiB). Returns the previous limit.
    Process-wide."""
    if nbytes is None:
        nbytes = 0
    elif isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int or None, not {type(nbytes).__name__}")
    elif not 0 < nbytes < 2**64:
        raise ValueError(f"nbytes must be positive, not {nbytes}")
    return int(lib.ivm_set_copy_limit(nbytes))


# --- arguments (Python → libivm, one value per argument)

_new_number = lib.ivm_value_new_number
_new_string = lib.ivm_value_new_string


def to_value(obj: object, copy: bool, borrow: bool = False) -> Any:
    """An owned ``ivm_value_t *`` for one argument.

    Primitives always pass; markers (``ExternalCopy.copy_into()``) pass as
    themselves; anything else needs ``copy`` (a structured copy), or raises
    :class:`ivm.TransferError` saying so.
    """
    t = type(obj)
    if t is float:
        return _new_number(obj)
    if t is int:
        if -MAX_SAFE <= obj <= MAX_SAFE:  # type: ignore[operator]
            return _new_number(float(obj))  # type: ignore[arg-type]
        return dumps(obj)
    if t is str:
        data = obj.encode("utf-8", "surrogatepass")  # type: ignore[attr-defined]
        return _new_string(data, len(data))
    if obj is None:
        return lib.ivm_value_new_null()
    if t is bool:
        return lib.ivm_value_new_boolean(1 if obj else 0)
    if t is Undefined:
        return lib.ivm_value_new_undefined()
    if t is JSBigInt:
        return dumps(obj)
    if copy and (t is bytes or t is bytearray):
        return buffer_value(obj, borrow)  # type: ignore[arg-type]
    if copy:
        return dumps_plain(obj)
    if isinstance(obj, _Marker):
        return marker_value(obj)
    raise TransferError(
        f"an object of type {t.__qualname__} is not a primitive: copy it into JavaScript with "
        "copy=True (arguments_options={'copy': True} for arguments)"
    )


def to_values(arguments: Any, arguments_options: Any) -> list[Any]:
    """Owned ``ivm_value_t *`` for each of ``arguments`` (a list or tuple of
    values), as ``arguments_options`` asks; none are left behind on error."""
    if isinstance(arguments, (str, bytes)) or not isinstance(arguments, Iterable):
        raise TypeError(
            f"arguments must be a list or tuple of values, not {type(arguments).__name__}"
        )
    copy = arguments_copy(arguments_options)
    values: list[Any] = []
    try:
        for arg in arguments:
            v = to_value(arg, copy)
            if v == ffi.NULL:
                raise MemoryError("libivm could not allocate a value")
            values.append(v)
    except BaseException:
        for v in values:
            lib.ivm_value_free(v)
        raise
    return values


def arguments_copy(options: Any) -> bool:
    """Whether ``arguments_options`` asks for structured copies."""
    if options is None:
        return False
    if not isinstance(options, Mapping):
        raise TypeError(f"arguments_options must be a mapping, not {type(options).__name__}")
    unknown = set(options) - {"copy"}
    if unknown:
        raise ValueError(f"unknown argument option(s): {', '.join(sorted(map(str, unknown)))}")
    copy = options.get("copy", False)
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be a bool, not {type(copy).__name__}")
    return copy
