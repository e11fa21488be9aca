"""``ivm.Reference``: a handle to a value that stays inside its isolate."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ._async import submit_ignored, submit_owning
from ._callback import host_reference
from ._copy import _Marker, arguments_copy, normalize, to_value, to_values
from ._copy import to_value as _to_value
from ._errors import DisposedError, check, raise_error
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import eval_options, result_flags, result_options_flags
from ._value import _tls, fast_options, result, slot_for, take, value_out

__all__ = ["DerefInto", "Reference"]

_NULL = ffi.NULL
_MAX_SAFE = 2**53 - 1
_copysign = math.copysign
_apply = lib.ivm_reference_apply
_free = lib.ivm_value_free
# Immutable values of small integers, shared by synchronous calls (which
# borrow their arguments): no allocation per argument.
_SMALL: dict[int, Any] = {}


def _small_ints() -> None:
    """Fills _SMALL (once, on the first lean call rather than at import)."""
    for i in range(-128, 1024):
        _SMALL[i] = ffi.gc(lib.ivm_value_new_number(float(i)), lib.ivm_value_free)


def _key(key: object) -> Any:
    if type(key) is str or (type(key) is int):
        return to_value(key, False)
    raise TypeError(f"a property key must be a str or an int, not {type(key).__name__}")


def _out() -> Any:
    try:
        return _tls.out
    except AttributeError:
        return value_out()


def _call_slots() -> tuple[Any, Any, Any, Any]:
    if not _SMALL:
        _small_ints()
    opts, slot = fast_options()
    _tls.call = call = (opts, slot, _argv(), _out())
    return call


def _argv() -> Any:
    """This thread's array of 8 argument slots (filled right before a call)."""
    try:
        return _tls.argv
    except AttributeError:
        _tls.argv = argv = ffi.new("ivm_value_t *[8]")
        return argv


class Reference(Handle, _Marker):
    """A reference to a JavaScript value that stays in its isolate
    (isolated-vm's ``Reference``).

    Made by ``eval_sync(..., reference=True)``, ``Context.global_`` and
    ``get_sync(..., reference=True)``. Every operation is a call into the
    value's isolate, in the context where the reference was made, with a
    ``timeout`` and the result options of :meth:`Context.eval_sync`
    (``copy``, ``external_copy``, ``reference``, ``promise``). Each has an
    async twin (``get``, ``set``, ``delete``, ``apply``, ``copy``) and a
    fire-and-forget one (``*_ignored``). :meth:`release` is idempotent; a
    released reference, or one whose isolate is disposed, raises
    :class:`ivm.DisposedError`.
    """

    __slots__ = ()
    _free = lib.ivm_reference_free
    _dispose = lib.ivm_reference_release

    @classmethod
    def _wrap(cls, ptr: Any) -> Reference:
        self = object.__new__(cls)
        Handle.__init__(self, ptr)
        return self

    def __new__(cls, value: object = None, /) -> Reference:
        # Reference(value): a reference to a host value (HostReference).
        if cls is Reference:
            return HostReference(value)
        return object.__new__(cls)

    def __init__(self, value: object = None, /) -> None:
        pass

    def __repr__(self) -> str:
        t = self.typeof
        return f"<ivm.Reference to {'an' if t[:1] in 'aeiou' else 'a'} {t}>"

    @property
    def typeof(self) -> str:
        """``typeof`` the referenced value, as when the reference was made."""
        p = ffi.new("const char **")
        n = ffi.new("size_t *")
        lib.ivm_reference_typeof(self._ptr, p, n)
        text: str = ffi.unpack(p[0], n[0]).decode("utf-8", "surrogatepass")
        return text

    def release(self) -> None:
        """Releases the reference. Idempotent; never blocks."""
        check(lib.ivm_reference_release(self._ptr))

    # --- get

    def get_sync(
        self,
        key: str | int,
        *,
        copy: bool = False,
        external_copy: bool = False,
        reference: bool = False,
        promise: bool = False,
        timeout: float | None = None,
        unsafe_inherit: bool = False,
    ) -> Any:
        """``value[key]`` (getters run, under ``timeout``), returned in the form
        the options ask for (primitives always pass).

        Only own properties are read: an inherited one reads as ``undefined``
        unless ``unsafe_inherit=True`` (isolated-vm's ``unsafeInherit``), since
        the isolate's code may have planted it on a prototype."""
        flags = result_flags(promise, copy, external_copy, False, reference) | _inherit(
            unsafe_inherit
        )
        opts, _keep = eval_options(timeout, flags=flags)
        k = _key(key)
        out = _out()
        try:
            err = lib.ivm_reference_get(self._ptr, k, opts, out)
        finally:
            lib.ivm_value_free(k)
        if err:
            raise_error(err)
        return take(out[0])

    async def get(
        self,
        key: str | int,
        *,
        copy: bool = False,
        external_copy: bool = False,
        reference: bool = False,
        promise: bool = False,
        timeout: float | None = None,
        unsafe_inherit: bool = False,
    ) -> Any:
        """The async twin of :meth:`get_sync`."""
        flags = result_flags(promise, copy, external_copy, False, reference) | _inherit(
            unsafe_inherit
        )
        opts, _keep = eval_options(timeout, flags=flags)
        return await _submit_owned(self, lib.ivm_reference_get_async, [_key(key)], opts)

    def get_ignored(self, key: str | int, *, timeout: float | None = None) -> None:
        """Queues :meth:`get` (getters run) and returns at once."""
        opts, keep = eval_options(timeout, flags=lib.IVM_EVAL_DISCARD)
        k = _key(key)
        ptr = self._ptr
        submit_ignored(
            lambda done, ud, job: lib.ivm_reference_get_async(ptr, k, opts, done, ud, job),
            lib.ivm_value_free,
        )
        del keep

    # --- set

    def set_sync(
        self, key: str | int, value: object, *, copy: bool = False, timeout: float | None = None
    ) -> bool:
        """``value[key] = value`` (setters run). Returns ``True``, as
        isolated-vm's ``setSync`` does: like a sloppy-mode assignment, one
        that JavaScript ignores (a frozen object, a Proxy's ``set`` returning
        false) is not reported.

        ``value``: primitives, markers (``copy_into()``, ``deref_into()``) and
        callbacks pass as they are; other values need ``copy=True``."""
        v = to_value(value, _bool("copy", copy), borrow=True)
        opts, _keep = eval_options(timeout)
        k = _key(key)
        out = _out()
        try:
            err = lib.ivm_reference_set(self._ptr, k, v, opts, out)
        finally:
            lib.ivm_value_free(k)
            lib.ivm_value_free(v)
        if err:
            raise_error(err)
        return bool(take(out[0]))

    async def set(
        self, key: str | int, value: object, *, copy: bool = False, timeout: float | None = None
    ) -> bool:
        """The async twin of :meth:`set_sync`."""
        opts, _keep = eval_options(timeout)
        values = [_key(key)]
        try:
            values.append(to_value(value, _bool("copy", copy)))
        except BaseException:
            lib.ivm_value_free(values[0])
            raise
        return bool(await _submit_owned(self, lib.ivm_reference_set_async, values, opts))

    def set_ignored(
        self, key: str | int, value: object, *, copy: bool = False, timeout: float | None = None
    ) -> None:
        """Queues :meth:`set` and returns at once."""
        opts, keep = eval_options(timeout, flags=lib.IVM_EVAL_DISCARD)
        k = _key(key)
        try:
            v = to_value(value, _bool("copy", copy))
        except BaseException:
            lib.ivm_value_free(k)
            raise
        ptr = self._ptr
        submit_ignored(
            lambda done, ud, job: lib.ivm_reference_set_async(ptr, k, v, opts, done, ud, job),
            lib.ivm_value_free,
        )
        del keep

    # --- delete

    def delete_sync(self, key: str | int, *, timeout: float | None = None) -> bool:
        """``delete value[key]``; returns whether it succeeded."""
        opts, _keep = eval_options(timeout)
        k = _key(key)
        out = _out()
        try:
            err = lib.ivm_reference_delete(self._ptr, k, opts, out)
        finally:
            lib.ivm_value_free(k)
        if err:
            raise_error(err)
        return bool(take(out[0]))

    async def delete(self, key: str | int, *, timeout: float | None = None) -> bool:
        """The async twin of :meth:`delete_sync`."""
        opts, _keep = eval_options(timeout)
        return bool(await _submit_owned(self, lib.ivm_reference_delete_async, [_key(key)], opts))

    def delete_ignored(self, key: str | int, *, timeout: float | None = None) -> None:
        """Queues :meth:`delete` and returns at once."""
        opts, keep = eval_options(timeout, flags=lib.IVM_EVAL_DISCARD)
        k = _key(key)
        ptr = self._ptr
        submit_ignored(
            lambda done, ud, job: lib.ivm_reference_delete_async(ptr, k, opts, done, ud, job),
            lib.ivm_value_free,
        )
        del keep

    # --- apply

    def _apply_values(
        self, receiver: object, arguments: Iterable[object], arguments_options: Any
    ) -> tuple[Any, list[Any]]:
        values = to_values(arguments, arguments_options)
        if receiver is None:
            return _NULL, values
        try:
            return to_value(receiver, arguments_copy(arguments_options)), values
        except BaseException:
            for v in values:
                lib.ivm_value_free(v)
            raise

    def apply_sync(
        self,
        receiver: object,
        arguments: Iterable[object] = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        result_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Calls the referenced function with ``this`` = ``receiver`` (``None``:
        undefined) and ``arguments``; returns its result in the form
        ``result_options`` asks for (``copy``, ``external_copy``,
        ``reference``, ``promise``). Arguments pass as for
        :meth:`Context.eval_closure_sync`."""
        t = type(arguments)
        if (
            receiver is None
            and timeout is None
            and result_options is None
            and arguments_options is None
            and (t is list or t is tuple)
            and len(arguments) <= 8  # type: ignore[arg-type]
        ):
            # The common call, kept lean: this thread's option block, result
            # slot and argument array; shared values for small integers.
            try:
                opts, slot, argv, out = _tls.call
            except AttributeError:
                opts, slot, argv, out = _call_slots()
            owned = None
            n = 0
            for a in arguments:
                v = _SMALL.get(a) if type(a) is int else None
                if v is None:
                    v = _to_value(a, False)
                    if owned is None:
                        owned = [v]
                    else:
                        owned.append(v)
                argv[n] = v
                n += 1
            try:
                err = _apply(self._ptr, _NULL, argv, n, opts, out)
            finally:
                if owned is not None:
                    for v in owned:
                        _free(v)
            if err:
                raise_error(err)
            k = slot.kind
            if k == 4:
                x: float = slot.number
                if -_MAX_SAFE <= x <= _MAX_SAFE and x.is_integer() and (x or _copysign(1.0, x) > 0):
                    return int(x)
                return x
            return result(slot, out)
        if timeout is None and result_options is None:
            try:
                opts, slot = _tls.fast
            except AttributeError:
                opts, slot = fast_options()
        else:
            opts, _keep = eval_options(timeout, flags=result_options_flags(result_options))
            if opts == _NULL:
                opts, slot = fast_options()
            else:
                slot = slot_for(opts)
        recv, values = self._apply_values(receiver, arguments, arguments_options)
        out = _out()
        n = len(values)
        try:
            if n == 0:
                argv = _NULL
            elif n <= 8:
                argv = _argv()
                for i, v in enumerate(values):
                    argv[i] = v
            else:
                argv = ffi.new("ivm_value_t *[]", values)
            err = _apply(self._ptr, recv, argv, n, opts, out)
        finally:
            for v in values:
                _free(v)
            if recv != _NULL:
                _free(recv)
        if err:
            raise_error(err)
        return result(slot, out)

    async def apply(
        self,
        receiver: object,
        arguments: Iterable[object] = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        result_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The async twin of :meth:`apply_sync`."""
        flags = result_options_flags(result_options)
        opts, _keep = eval_options(timeout, flags=flags)
        recv, values = self._apply_values(receiver, arguments, arguments_options)
        argv = ffi.new("ivm_value_t *[]", values) if values else _NULL
        return await submit_owning(
            self._ptr,
            lib.ivm_reference_apply_async,
            (self._ptr, recv, argv, len(values), opts),
            [*values, recv],
            take,
            lib.ivm_reference_cancel_job,
        )

    def apply_ignored(
        self,
        receiver: object,
        arguments: Iterable[object] = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Queues :meth:`apply` and returns at once."""
        opts, keep = eval_options(timeout, flags=lib.IVM_EVAL_DISCARD)
        recv, values = self._apply_values(receiver, arguments, arguments_options)
        argv = ffi.new("ivm_value_t *[]", values) if values else _NULL
        ptr = self._ptr
        submit_ignored(
            lambda done, ud, job: lib.ivm_reference_apply_async(
                ptr, recv, argv, len(values), opts, done, ud, job
            ),
            lib.ivm_value_free,
        )
        del keep

    # --- the value itself

    def copy_sync(self, *, timeout: float | None = None) -> Any:
        """A structured copy of the referenced value (docs/values.md)."""
        opts, _keep = eval_options(timeout, flags=lib.IVM_EVAL_COPY)
        out = _out()
        err = lib.ivm_reference_get(self._ptr, _NULL, opts, out)
        if err:
            raise_error(err)
        return take(out[0])

    async def copy(self, *, timeout: float | None = None) -> Any:
        """The async twin of :meth:`copy_sync`."""
        opts, _keep = eval_options(timeout, flags=lib.IVM_EVAL_COPY)
        return await _submit_owned(self, lib.ivm_reference_get_async, [_NULL], opts)

    def _external_copy(self, transfer_out: bool) -> Any:
        flags = lib.IVM_EVAL_EXTERNAL_COPY | (lib.IVM_EVAL_TRANSFER_OUT if transfer_out else 0)
        opts, _keep = eval_options(None, flags=flags)
        out = _out()
        err = lib.ivm_reference_get(self._ptr, _NULL, opts, out)
        if err:
            raise_error(err)
        return take(out[0])

    def deref(self) -> Any:
        """Only possible inside the reference's own isolate: from Python, a
        JavaScript value has no Python identity. Raises ``TypeError``; use
        :meth:`copy_sync` for its value or :meth:`deref_into` to pass it back
        into its isolate."""
        raise TypeError(
            "deref() of a Reference to a JavaScript value only works inside its isolate; "
            "use copy_sync() for a Python copy or deref_into() to pass the value itself"
        )

    def deref_into(self) -> DerefInto:
        """A marker that becomes the referenced value itself when passed into
        its own isolate (any other isolate refuses it with TransferError)."""
        return DerefInto(self)

    def _attach(self, value: Any) -> int:
        index = ffi.new("size_t *")
        check(lib.ivm_value_attach_reference(value, self._ptr, 0, index))
        return int(index[0])


class HostReference(Reference):
    """``ivm.Reference(value)``: a reference to a Python value (isolated-vm's
    ``new ivm.Reference(hostValue)``).

    Passed into an isolate, it is a Reference object there: ``typeof`` is
    ``"function"`` for a callable; ``applySync`` calls it and returns a copy
    of its result; ``apply`` returns a promise (the function, plain or
    ``async``, runs on the event loop that was running when the reference was
    made, or at once without one); ``applyIgnored`` runs it later;
    ``applySyncPromise`` blocks the isolate (not the event loop) until an
    async function has finished: synchronous-looking JavaScript over async
    Python, for isolates called asynchronously (``await context.eval``);
    ``copySync``/``copy`` give a copy of the value. Nothing else of the
    value (attributes, items) is reachable from JavaScript. From Python,
    :meth:`deref` gives the value itself.
    """

    __slots__ = ("_value", "_cb")
    _value: Any
    _cb: Any

    def __new__(cls, value: object = None, /) -> HostReference:
        self = object.__new__(cls)
        self._value = value
        self._cb, _state = host_reference(value)
        return self

    def __init__(self, value: object = None, /) -> None:
        pass

    def __repr__(self) -> str:
        return f"<ivm.Reference to host {self.typeof} {self._value!r}>"

    @property
    def typeof(self) -> str:
        return "function" if callable(self._value) else "object"

    def release(self) -> None:
        """Releases the reference: isolates keep what they already hold."""
        self._cb = None

    def deref(self) -> Any:
        """The referenced Python value itself."""
        return self._value

    def deref_into(self) -> DerefInto:
        raise TypeError("deref_into() is for references to JavaScript values")

    def apply_sync(self, receiver: object, arguments: Iterable[object] = (), **_: Any) -> Any:
        """Calls the referenced Python function with ``arguments``."""
        if not callable(self._value):
            raise TypeError("Reference is not a function")
        return self._value(*arguments)

    def copy_sync(self, *, timeout: float | None = None) -> Any:
        """A copy of the value in its JavaScript form (docs/values.md)."""
        return normalize(self._value)

    def _host_only(self, *_: Any, **__: Any) -> Any:
        raise TypeError("a Reference to a host value only supports apply, copy and deref")

    get_sync = set_sync = delete_sync = _host_only
    get = set = delete = get_ignored = set_ignored = delete_ignored = _host_only
    apply = apply_ignored = copy = _host_only

    def _attach(self, value: Any) -> int:
        if self._cb is None:
            raise DisposedError("Reference has been released")
        index = ffi.new("size_t *")
        flags = lib.IVM_ATTACH_AS_REFERENCE | (
            0 if callable(self._value) else lib.IVM_ATTACH_NOT_CALLABLE
        )
        check(lib.ivm_value_attach_callback(value, self._cb, flags, index))
        return int(index[0])


class DerefInto(_Marker):
    """What :meth:`Reference.deref_into` returns."""

    __slots__ = ("_ref",)

    def __init__(self, ref: Reference) -> None:
        self._ref = ref

    def __repr__(self) -> str:
        return f"<ivm.Reference.deref_into() of {self._ref!r}>"

    def _attach(self, value: Any) -> int:
        index = ffi.new("size_t *")
        check(lib.ivm_value_attach_reference(value, self._ref._ptr, lib.IVM_ATTACH_DEREF, index))
        return int(index[0])


def _inherit(unsafe_inherit: object) -> int:
    return lib.IVM_EVAL_UNSAFE_INHERIT if _bool("unsafe_inherit", unsafe_inherit) else 0


def _bool(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    return value


async def _submit_owned(ref: Reference, cfunc: Any, values: list[Any], opts: Any) -> Any:
    """Runs a ``*_async`` reference operation that takes ownership of
    ``values`` (a key, or a key and a value) once made."""
    return await submit_owning(
        ref._ptr, cfunc, (ref._ptr, *values, opts), values, take, lib.ivm_reference_cancel_job
    )
