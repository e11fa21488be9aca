"""``ivm.Reference``: a handle to a value that stays inside its isolate."""

from __future__ import annotations

from typing import Any, Mapping

from ._async import submit_ignored, submit_owning
from ._callback import host_reference
from ._copy import _Marker, arguments_copy, normalize, to_value, to_values
from ._errors import DisposedError, check
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import result_flags, result_options_flags, run_options
from ._options import result_options as _result_options
from ._value import Arguments, argv_slots, sync_result, sync_slots, take, value_array
from ._call import APPLY, APPLY_FAST, NOT_INTEGER, SLOW, c_method, finish, options_in

__all__ = ["DerefInto", "Reference"]

_NULL = ffi.NULL
_free = lib.ivm_value_free
def _key(key: object) -> Any:
    if type(key) is str or (type(key) is int):
        return to_value(key, False)
    raise TypeError(f"a property key must be a str or an int, not {type(key).__name__}")


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
        ropts = _result_options(result_flags(promise, copy, external_copy, False, reference))
        get = _get_flags(unsafe_inherit)
        run = run_options(timeout)
        k = _key(key)
        try:
            out, slot = sync_slots()
            err = lib.ivm_reference_get(self._ptr, k, get, run, ropts, out, slot)
            return sync_result(err, out, slot)
        finally:
            lib.ivm_value_free(k)

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
        ropts = _result_options(result_flags(promise, copy, external_copy, False, reference))
        options = (_get_flags(unsafe_inherit), run_options(timeout), ropts)
        return await _submit_owned(self, lib.ivm_reference_get_async, [_key(key)], options)

    def get_ignored(self, key: str | int, *, timeout: float | None = None) -> None:
        """Queues :meth:`get` (getters run) and returns at once."""
        run = run_options(timeout)
        ropts = _result_options(lib.IVM_RESULT_DISCARD)
        args = (self._ptr, _key(key), 0, run, ropts)
        submit_ignored(lib.ivm_reference_get_async, args, lib.ivm_value_free)

    # --- set

    def _set_sync(
        self, key: str | int, value: object, *, copy: bool = False, timeout: float | None = None
    ) -> bool:
        """``value[key] = value`` (setters run). Returns ``True``, as
        isolated-vm's ``setSync`` does: like a sloppy-mode assignment, one
        that JavaScript ignores (a frozen object, a Proxy's ``set`` returning
        false) is not reported.

        ``value``: primitives, markers (``copy_into()``, ``deref_into()``) and
        callbacks pass as they are; other values need ``copy=True``."""
        v = to_value(value, _bool("copy", copy), borrow=True)
        try:
            run = run_options(timeout)
            k = _key(key)
        except BaseException:
            lib.ivm_value_free(v)
            raise
        try:
            out, slot = sync_slots()
            return bool(sync_result(lib.ivm_reference_set(self._ptr, k, v, run, out, slot), out, slot))
        finally:
            lib.ivm_value_free(k)
            lib.ivm_value_free(v)

    @options_in(_set_sync)
    def set_sync(self, key: str | int, value: object, **options: Any) -> bool:
        # The call without options is Reference.set_sync's C method (ivm/_cffi_fast.c),
        # which converts a str or safe-int key and a primitive or copy_into() value
        # itself; this Python method stays for IVM_PY_C_METHODS=0 and type checkers.
        return self._set_sync(key, value, **options)

    async def set(
        self, key: str | int, value: object, *, copy: bool = False, timeout: float | None = None
    ) -> bool:
        """The async twin of :meth:`set_sync`."""
        run = run_options(timeout)
        values = [_key(key)]
        try:
            values.append(to_value(value, _bool("copy", copy)))
        except BaseException:
            lib.ivm_value_free(values[0])
            raise
        return bool(await _submit_owned(self, lib.ivm_reference_set_async, values, (run,)))

    def set_ignored(
        self, key: str | int, value: object, *, copy: bool = False, timeout: float | None = None
    ) -> None:
        """Queues :meth:`set` and returns at once."""
        run = run_options(timeout)
        k = _key(key)
        try:
            v = to_value(value, _bool("copy", copy))
        except BaseException:
            lib.ivm_value_free(k)
            raise
        submit_ignored(lib.ivm_reference_set_async, (self._ptr, k, v, run), lib.ivm_value_free)

    # --- delete

    def delete_sync(self, key: str | int, *, timeout: float | None = None) -> bool:
        """``delete value[key]``; returns whether it succeeded."""
        run = run_options(timeout)
        k = _key(key)
        try:
            out, slot = sync_slots()
            return bool(sync_result(lib.ivm_reference_delete(self._ptr, k, run, out, slot), out, slot))
        finally:
            lib.ivm_value_free(k)

    async def delete(self, key: str | int, *, timeout: float | None = None) -> bool:
        """The async twin of :meth:`delete_sync`."""
        run = run_options(timeout)
        return bool(
            await _submit_owned(self, lib.ivm_reference_delete_async, [_key(key)], (run,))
        )

    def delete_ignored(self, key: str | int, *, timeout: float | None = None) -> None:
        """Queues :meth:`delete` and returns at once."""
        run = run_options(timeout)
        args = (self._ptr, _key(key), run)
        submit_ignored(lib.ivm_reference_delete_async, args, lib.ivm_value_free)

    # --- apply

    def _apply_values(
        self, receiver: object, arguments: Arguments, arguments_options: Any
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

    def _apply_call(
        self,
        receiver: object,
        arguments: Arguments,
        arguments_options: Any,
        flags: int,
        timeout: float | None,
    ) -> tuple[tuple[Any, ...], list[Any]]:
        """The arguments of ``ivm_reference_apply_async`` before its outputs,
        and the values in them, which libivm takes once the call is made."""
        ropts = _result_options(flags)
        run = run_options(timeout)
        recv, values = self._apply_values(receiver, arguments, arguments_options)
        args = (self._ptr, recv, value_array(values), len(values), run, ropts)
        return args, [*values, recv]

    def _apply_sync(
        self,
        receiver: object,
        arguments: Arguments = (),
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
        ropts = _result_options(result_options_flags(result_options))
        run = run_options(timeout)
        recv, values = self._apply_values(receiver, arguments, arguments_options)
        n = len(values)
        try:
            if n == 0:
                argv = _NULL
            elif n <= 8:
                argv = argv_slots()
                for i, v in enumerate(values):
                    argv[i] = v
            else:
                argv = ffi.new("ivm_value_t *[]", values)
            x = APPLY(self._ptr, recv, argv, n, run, ropts)
            return x if x != NOT_INTEGER else finish()
        finally:
            for v in values:
                _free(v)
            if recv != _NULL:
                _free(recv)

    @options_in(_apply_sync)
    def apply_sync(self, receiver: object, arguments: Arguments = (), **options: Any) -> Any:
        if options or receiver is not None:
            return self._apply_sync(receiver, arguments, **options)
        # The common call: one C call (APPLY_FAST, ivm/_cffi_fast.c) converts the
        # arguments, calls with the GIL released and converts the result.
        try:
            addr = self._addr
        except AttributeError:
            addr = self._address()
        x = APPLY_FAST(addr, arguments)
        return x if x is not SLOW else self._apply_sync(None, arguments)

    async def apply(
        self,
        receiver: object,
        arguments: Arguments = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        result_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The async twin of :meth:`apply_sync`."""
        flags = result_options_flags(result_options)
        args, owned = self._apply_call(receiver, arguments, arguments_options, flags, timeout)
        cfunc, cancel = lib.ivm_reference_apply_async, lib.ivm_reference_cancel_job
        return await submit_owning(self._ptr, cfunc, args, owned, take, cancel)

    def apply_ignored(
        self,
        receiver: object,
        arguments: Arguments = (),
        *,
        arguments_options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Queues :meth:`apply` and returns at once."""
        discard = lib.IVM_RESULT_DISCARD
        args, _ = self._apply_call(receiver, arguments, arguments_options, discard, timeout)
        submit_ignored(lib.ivm_reference_apply_async, args, lib.ivm_value_free)

    # --- the value itself

    def copy_sync(self, *, timeout: float | None = None) -> Any:
        """A structured copy of the referenced value (docs/values.md)."""
        run = run_options(timeout)
        ropts = _result_options(lib.IVM_RESULT_COPY)
        return self._get_self(run, ropts)

    async def copy(self, *, timeout: float | None = None) -> Any:
        """The async twin of :meth:`copy_sync`."""
        options = (0, run_options(timeout), _result_options(lib.IVM_RESULT_COPY))
        return await _submit_owned(self, lib.ivm_reference_get_async, [_NULL], options)

    def inspect_sync(self, *, timeout: float | None = None) -> str:
        """The referenced value as node's ``util.inspect`` shows it (strings
        quoted, nesting to depth 2, cycles, Maps, errors with their stacks), made
        inside the isolate by the host console's formatter: it runs none of the
        value's JavaScript (getters show as ``[Getter]``, Proxies as their targets),
        and the text is at most about 1 MiB."""
        text = self._get_self(run_options(timeout), _result_options(lib.IVM_RESULT_INSPECT))
        assert isinstance(text, str)
        return text

    async def inspect(self, *, timeout: float | None = None) -> str:
        """The async twin of :meth:`inspect_sync`."""
        options = (0, run_options(timeout), _result_options(lib.IVM_RESULT_INSPECT))
        text = await _submit_owned(self, lib.ivm_reference_get_async, [_NULL], options)
        assert isinstance(text, str)
        return text

    def _external_copy(self, transfer_out: bool) -> Any:
        flags = lib.IVM_RESULT_EXTERNAL_COPY | (lib.IVM_RESULT_TRANSFER_OUT if transfer_out else 0)
        return self._get_self(_NULL, _result_options(flags))

    def _get_self(self, run: Any, ropts: Any) -> Any:
        """The referenced value itself, in the form ``ropts`` asks for."""
        out, slot = sync_slots()
        err = lib.ivm_reference_get(self._ptr, _NULL, 0, run, ropts, out, slot)
        return sync_result(err, out, slot)

    def deref(self) -> Any:
        """Only possible inside the reference's own isolate: from Python, a
        JavaScript value has no Python identity. Raises ``TypeError``; use
        :meth:`copy_sync` for its value or :meth:`deref_into` to pass it back
        into its isolate."""
        raise TypeError(
            "deref() of a Reference to a JavaScript value only works inside its isolate; "
            "use copy_sync() for a Python copy or deref_into() to pass the value itself"
        )

    def deref_into(self, *, release: bool = False) -> DerefInto:
        """A marker that becomes the referenced value itself when passed into
        its own isolate (any other isolate refuses it with TransferError).
        With ``release=True`` the reference is released once the value has
        entered the isolate (isolated-vm's ``derefInto({release: true})``)."""
        return DerefInto(self, release=_bool("release", release))

    def _attach(self, value: Any) -> int:
        index = ffi.new("size_t *")
        check(lib.ivm_value_attach_reference(value, self._ptr, 0, index))
        return int(index[0])


# The calls without options in C, with no Python frame around them (ivm/_call.py).
c_method(Reference, "apply_sync")
c_method(Reference, "set_sync")


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

    def deref_into(self, *, release: bool = False) -> DerefInto:
        raise TypeError("deref_into() is for references to JavaScript values")

    def apply_sync(self, receiver: object, arguments: Arguments = (), **_: Any) -> Any:
        """Calls the referenced Python function with ``arguments``."""
        if not callable(self._value):
            raise TypeError("Reference is not a function")
        return self._value(*arguments)

    def copy_sync(self, *, timeout: float | None = None) -> Any:
        """A copy of the value in its JavaScript form (docs/values.md)."""
        return normalize(self._value)

    def _host_only(self, *_: Any, **__: Any) -> Any:
        raise TypeError("a Reference to a host value only supports apply, copy and deref")

    get_sync = set_sync = delete_sync = inspect_sync = _host_only
    get = set = delete = get_ignored = set_ignored = delete_ignored = inspect = _host_only
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

    __slots__ = ("_ref", "_flags")

    def __init__(self, ref: Reference, *, release: bool = False) -> None:
        self._ref = ref
        self._flags = lib.IVM_ATTACH_DEREF | (lib.IVM_ATTACH_RELEASE if release else 0)

    def __repr__(self) -> str:
        release = "release=True" if self._flags & lib.IVM_ATTACH_RELEASE else ""
        return f"<ivm.Reference.deref_into({release}) of {self._ref!r}>"

    def _attach(self, value: Any) -> int:
        index = ffi.new("size_t *")
        check(lib.ivm_value_attach_reference(value, self._ref._ptr, self._flags, index))
        return int(index[0])


def _get_flags(unsafe_inherit: object) -> int:
    """The IVM_GET_* flags of a get."""
    return lib.IVM_GET_UNSAFE_INHERIT if _bool("unsafe_inherit", unsafe_inherit) else 0


def _bool(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    return value


async def _submit_owned(
    ref: Reference, cfunc: Any, values: list[Any], options: tuple[Any, ...]
) -> Any:
    """Runs a ``*_async`` reference operation that takes ownership of
    ``values`` (a key, or a key and a value) once made; ``options`` are its
    arguments after them (flags, run and result options)."""
    return await submit_owning(
        ref._ptr,
        cfunc,
        (ref._ptr, *values, *options),
        values,
        take,
        lib.ivm_reference_cancel_job,
    )
