"""``ivm.ExternalCopy``: a structured copy that belongs to no isolate."""

from __future__ import annotations

from typing import Any, Iterable

from ._call import c_method
from ._copy import SINGLE_BUFFER_STREAM, _Marker, buffer_value, dumps, normalize
from ._errors import check
from ._ffi import ffi, lib
from ._handle import Handle
from ._value import take

__all__ = ["CopyInto", "ExternalCopy"]


class ExternalCopy(Handle, _Marker):
    """A copy of a value held outside every isolate (isolated-vm's
    ``ExternalCopy``).

    ``ExternalCopy(value)`` copies a Python value (the types of
    docs/values.md); ``eval_sync(..., external_copy=True)`` makes one from a
    JavaScript value without going through Python objects. :meth:`copy` gives
    a new Python value each time; :meth:`copy_into` gives a marker that becomes
    the JavaScript value when passed into any isolate. :meth:`release` frees
    it (idempotent); later uses raise :class:`ivm.DisposedError`.

    ``transfer_list`` names ``bytearray`` objects inside ``value`` whose
    contents move into the copy: they are emptied, as JavaScript detaches a
    transferred ArrayBuffer, and the memoryviews of them inside ``value`` are
    released, as JavaScript's views of it become empty. Another export of
    one (a memoryview outside ``value``, a NumPy array) raises
    ``BufferError`` and no copy is made. ``transfer_out`` is accepted for
    symmetry with JavaScript values; Python buffers are always copied.
    """

    __slots__ = ()
    _free = lib.ivm_external_copy_free
    _dispose = lib.ivm_external_copy_release

    def __init__(
        self,
        value: object,
        *,
        transfer_list: Iterable[object] | None = None,
        transfer_out: bool = False,
    ) -> None:
        if not isinstance(transfer_out, bool):
            raise TypeError(f"transfer_out must be a bool, not {type(transfer_out).__name__}")
        moved = []
        for item in transfer_list or ():
            if not isinstance(item, bytearray):
                raise TypeError(
                    f"transfer_list holds bytearray objects, not {type(item).__name__}"
                )
            moved.append(item)
        views = _views_over(value, {id(item) for item in moved}) if moved else []
        value = normalize(value)
        v = buffer_value(value, False) if type(value) is bytes else dumps(value)
        out = ffi.new("ivm_external_copy_t **")
        try:
            check(lib.ivm_external_copy_new(v, 0, out))
        finally:
            lib.ivm_value_free(v)
        Handle.__init__(self, out[0])
        try:
            _detach(moved, views)
        except BaseException:
            self.release()
            raise

    @classmethod
    def _wrap(cls, ptr: Any) -> ExternalCopy:
        self = cls.__new__(cls)
        Handle.__init__(self, ptr)
        return self

    def __repr__(self) -> str:
        try:
            return f"<ivm.ExternalCopy of {self.size} bytes>"
        except Exception:
            return "<ivm.ExternalCopy (released)>"

    def copy(self) -> Any:
        """A new Python copy of the value. Raises ``DisposedError`` once released."""
        out = ffi.new("ivm_value_t **")
        check(lib.ivm_external_copy_read(self._ptr, out))
        return take(out[0])

    def copy_into(self, *, release: bool = False, transfer_in: bool = False) -> CopyInto:
        """A marker that becomes this copy's JavaScript value when passed into an
        isolate (as an argument, or inside a copied value).

        ``release=True`` releases this ExternalCopy now: the marker is then the
        only way to the value. ``transfer_in=True`` moves the copy's transferred
        ArrayBuffers into the receiving isolate instead of copying them; the
        marker can then be used once, and this ExternalCopy is released.
        """
        if not isinstance(release, bool) or not isinstance(transfer_in, bool):
            raise TypeError("release and transfer_in must be bool")
        flags = (lib.IVM_COPY_INTO_RELEASE if release else 0) | (
            lib.IVM_COPY_INTO_TRANSFER_IN if transfer_in else 0
        )
        out = ffi.new("ivm_value_t **")
        check(lib.ivm_external_copy_copy_into(self._ptr, flags, out))
        return CopyInto(ffi.gc(out[0], lib.ivm_value_free))

    # The C method that c_method() puts in copy_into's place (ivm/_cffi_copy.c) makes the call
    # with release and transfer_in given as True or False itself and hands every other to this.
    _copy_into = copy_into

    def release(self) -> None:
        """Releases the copy. Idempotent. Markers already made stay usable."""
        check(lib.ivm_external_copy_release(self._ptr))

    def _sizes(self) -> tuple[int, int]:
        size = ffi.new("uint64_t *")
        length = ffi.new("uint64_t *")
        check(lib.ivm_external_copy_size(self._ptr, size, length))
        return int(size[0]), int(length[0])

    @property
    def size(self) -> int:
        """Bytes the copy holds (its stream and its buffers)."""
        return self._sizes()[0]

    @property
    def byte_length(self) -> int:
        """Bytes of the ArrayBuffers in the copy."""
        return self._sizes()[1]

    def buffer(self) -> memoryview:
        """A read-only view of the copy's ArrayBuffer, without copying it.

        Only for a copy whose value is one ArrayBuffer; the view keeps that
        memory alive after the copy is released.
        """
        out = ffi.new("ivm_value_t **")
        check(lib.ivm_external_copy_read(self._ptr, out))
        value = out[0]
        stream = ffi.new("const char **")
        n = ffi.new("size_t *")
        lib.ivm_value_serialized(value, stream, n)
        data = ffi.new("const void **")
        size = ffi.new("size_t *")
        if lib.ivm_value_attachment_count(value) != 1 or not _is_single_buffer(
            ffi.unpack(stream[0], n[0])
        ):
            lib.ivm_value_free(value)
            raise TypeError("ExternalCopy.buffer() needs a copy of one ArrayBuffer")
        check(lib.ivm_value_buffer(value, 0, data, size))
        length = int(size[0])
        owner = ffi.gc(ffi.cast("char *", data[0]), lambda _p: lib.ivm_value_free(value))
        return memoryview(ffi.buffer(owner, length)).toreadonly()

    def _attach(self, value: Any) -> int:
        # Passed as itself: an ExternalCopy object inside the isolate, with
        # copy(), copyInto() and release().
        index = ffi.new("size_t *")
        check(lib.ivm_value_attach_copy(value, self._ptr, lib.IVM_COPY_AS_OBJECT, index))
        return int(index[0])

    @staticmethod
    def total_external_size() -> int:
        """Bytes held by every live ExternalCopy in the process (and the
        markers made from them)."""
        return int(lib.ivm_external_copy_total_size())


def _is_single_buffer(stream: bytes) -> bool:
    # `_buf(0)` and STOP (after PROTO and maybe a FRAME): a copy whose value
    # is one ArrayBuffer.
    return stream.endswith(SINGLE_BUFFER_STREAM[2:])


class CopyInto(_Marker):
    """What :meth:`ExternalCopy.copy_into` returns: becomes the copy's
    JavaScript value when passed into an isolate."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "<ivm.ExternalCopy marker>"

    def _attach(self, value: Any) -> int:
        index = ffi.new("size_t *")
        check(lib.ivm_value_attach_marker(value, self._value, index))
        return int(index[0])


def _views_over(value: object, buffers: set[int]) -> list[memoryview]:
    """The memoryviews inside `value` (lists, tuples, dicts, sets) of the objects whose
    ids are `buffers`."""
    views: list[memoryview] = []
    seen: set[int] = set()
    stack = [value]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, memoryview):
            if id(o.obj) in buffers:
                views.append(o)
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
    return views


def _detach(moved: list[bytearray], views: list[memoryview]) -> None:
    """Empties the transferred bytearrays once their views in the value are released.
    Raises BufferError (emptying nothing) if one is still exported elsewhere."""
    for view in views:
        try:
            view.release()
        except BufferError:
            raise BufferError(
                "transfer_list: a memoryview inside the value is itself exported "
                "(another memoryview or buffer made from it): release that first"
            ) from None
    for item in moved:
        try:
            item.append(0)   # resizing fails while anything exports its buffer
        except BufferError:
            raise BufferError(
                "transfer_list: a bytearray is still exported outside the value (a "
                "memoryview or an array made from it): release that before transferring it"
            ) from None
        del item[-1]
    for item in moved:
        item.clear()


c_method(ExternalCopy, "copy_into")
