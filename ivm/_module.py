"""``ivm.Module``: an ES module compiled for an isolate, instantiated in one of its
contexts with a resolver for its imports, then evaluated there (docs/modules.md)."""

from __future__ import annotations

import inspect
import itertools
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Mapping, Union

import anyio

from ._async import submit
from ._context import Context
from ._copy import to_value
from ._errors import check
from ._ffi import ffi, lib
from ._handle import Handle
from ._options import cached_data_of, result_flags, result_options, run_options
from ._callback import Callback
from ._reference import DerefInto, Reference
from ._value import sync_result, sync_slots, take

if TYPE_CHECKING:  # annotations only; cycle: _isolate imports _module
    from ._isolate import Isolate

__all__ = ["ImportHook", "Module", "Resolver", "import_callback"]

#: ``resolver(specifier, referrer)`` gives the module an import names; a resolver
#: that takes a third positional parameter also gets the import's attributes
#: (``assert {type: "json"}`` gives ``{"type": "json"}``). :meth:`Module.instantiate`
#: also accepts coroutine functions.
Resolver = Union[
    Callable[[str, "Module"], Union["Module", Awaitable["Module"]]],
    Callable[[str, "Module", dict[str, str]], Union["Module", Awaitable["Module"]]],
]

_NULL = ffi.NULL
_Links = dict[tuple[int, int], "Module"]
# Link tables of instantiations in progress, by key: libivm's resolve
# callback finds them here (the key travels as its user_data).
_linking: dict[int, _Links] = {}
_keys = itertools.count(1)


class Module(Handle):
    """A module compiled by :meth:`Isolate.compile_module_sync`."""

    __slots__ = ("_isolate", "_specifiers", "_attributes", "_linked", "_filename")
    _free = lib.ivm_module_free
    _dispose = lib.ivm_module_release
    _isolate: Isolate
    _specifiers: tuple[str, ...]
    _attributes: tuple[dict[str, str], ...]
    _linked: bool
    _filename: str

    @classmethod
    def _wrap(cls, ptr: Any, isolate: Isolate, filename: str | None = None) -> Module:
        self = cls.__new__(cls)
        Handle.__init__(self, ptr)
        self._isolate = isolate
        self._specifiers = _specifiers(self._ptr)
        self._attributes = tuple(_attributes(self._ptr, i) for i in range(len(self._specifiers)))
        self._linked = False
        self._filename = "<module>" if filename is None else filename
        return self

    def __init__(self) -> None:
        raise TypeError("use Isolate.compile_module_sync() to make a Module")

    def __repr__(self) -> str:
        return f"<ivm.Module of {self._isolate!r}>"

    def _set_meta(self, meta: Mapping[str, object] | None) -> Module:
        """Fills ``import.meta`` with ``meta``'s items (copied); returns self."""
        if meta is None:
            return self
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping, not {type(meta).__name__}")
        check(lib.ivm_module_set_meta(self._ptr, to_value(dict(meta), True)))
        return self

    @property
    def filename(self) -> str:
        """The name it was compiled with (``"<module>"`` by default): the
        ``referrer`` that ``import()`` hooks receive for imports it makes."""
        return self._filename

    @property
    def dependency_specifiers(self) -> list[str]:
        """The specifiers this module imports (``import ... from "x"``), in source order."""
        return list(self._specifiers)

    @property
    def dependency_attributes(self) -> list[dict[str, str]]:
        """The import attributes of each of :attr:`dependency_specifiers`
        (``import j from "./a.json" assert {type: "json"}``: ``{"type": "json"}``)."""
        return [dict(attributes) for attributes in self._attributes]

    @property
    def cached_data(self) -> bytes | None:
        """Cache data for later compiles of the same source, if the compile was
        asked for it (``produce_cached_data=True``); otherwise None."""
        return cached_data_of(lib.ivm_module_cached_data, self._ptr)

    @property
    def cached_data_rejected(self) -> bool:
        """Whether the compile was given ``cached_data`` and could not use it."""
        return bool(lib.ivm_module_cached_data_rejected(self._ptr))

    def release(self) -> None:
        """Releases the module. Idempotent; later calls raise ``DisposedError``.
        Modules that imported it keep what they linked."""
        check(lib.ivm_module_release(self._ptr))

    def instantiate_sync(self, context: Context, resolver: Resolver) -> None:
        """Links this module and every module it imports, in ``context``.

        ``resolver(specifier, referrer)`` is called once per import of each
        module of the graph and returns a :class:`Module` of the same isolate;
        a resolver with a third positional parameter also gets the import's
        attributes (a dict, empty for most imports).
        What it raises propagates; a module of another isolate or context, a
        non-Module, or instantiating twice raises ``ValueError``/``TypeError``.
        """
        cptr = _context_ptr(context, self)
        links = _link_sync(self, resolver)
        key = _register(links)
        try:
            check(lib.ivm_module_instantiate_v2(self._ptr, cptr, lib._ivm_py_resolve,
                                             ffi.cast("void *", key)))
        finally:
            _linking.pop(key, None)
        _mark_linked(self, links)

    async def instantiate(self, context: Context, resolver: Resolver) -> None:
        """The async twin of :meth:`instantiate_sync`; ``resolver`` may be a
        coroutine function. Cancelling it while a resolver waits stops there."""
        cptr = _context_ptr(context, self)
        links = await _link_async(self, resolver)
        key = _register(links)

        def done(raw: Any) -> None:
            _linking.pop(key, None)
            take(raw)

        try:
            await submit(
                self._isolate._ptr,
                lib.ivm_module_instantiate_v2_async,
                (self._ptr, cptr, lib._ivm_py_resolve, ffi.cast("void *", key)),
                done,
            )
        except Exception:
            _linking.pop(key, None)
            raise
        # (A cancelled job may still link: its table stays until it completes.)
        _mark_linked(self, links)

    def evaluate_sync(self, *, timeout: float | None = None, promise: bool = True) -> None:
        """Evaluates the instantiated module. With ``promise`` (the default) this
        waits until its top-level await settles, within ``timeout`` seconds for
        the whole wait; a throw or rejection raises :class:`ivm.JSError`.
        Without it, evaluation stops at the first top-level await and the rest
        runs later, its errors unseen."""
        run, ropts = _evaluate_options(timeout, promise)
        out, slot = sync_slots()
        sync_result(lib.ivm_module_evaluate(self._ptr, run, ropts, out, slot), out, slot)

    async def evaluate(self, *, timeout: float | None = None, promise: bool = True) -> None:
        """The async twin of :meth:`evaluate_sync`; while the module awaits, the
        isolate takes other calls. Cancelling it terminates the module's JavaScript."""
        run, ropts = _evaluate_options(timeout, promise)
        await submit(self._isolate._ptr, lib.ivm_module_evaluate_async,
                     (self._ptr, run, ropts), take)

    @property
    def namespace(self) -> Reference:
        """A :class:`ivm.Reference` to the module's namespace object (its
        exports); the module must be instantiated. In an isolate in a worker
        process it is a Reference into the worker, as inline."""
        out = ffi.new("ivm_value_t **")
        check(lib.ivm_module_namespace(self._ptr, result_options(lib.IVM_RESULT_REFERENCE), out))
        ref = take(out[0])
        assert isinstance(ref, Reference)
        return ref


def _mark_linked(root: Module, links: _Links) -> None:
    root._linked = True
    for dep in links.values():
        dep._linked = True


#: ``import_module(specifier, referrer)``: the module that ``import()`` (and the
#: static imports of the modules it loads) names; referrer is the importing
#: script's or module's filename. It may be a coroutine function.
ImportHook = Callable[[str, str], Union["Module", Awaitable["Module"]]]


def import_callback(hook: ImportHook, isolate: Isolate, context_of: Callable[[], Context]) -> Callback:
    """The host function a context's ``import()`` calls (ivm_context_options_t.import_hook):
    it resolves the module with ``hook``, links it (``hook`` resolving its imports too),
    evaluates it, and gives JavaScript its namespace."""
    if not callable(hook):
        raise TypeError(f"import_module must be callable, not {type(hook).__name__}")

    def checked(dep: object, specifier: str) -> Module:
        if not isinstance(dep, Module):
            raise TypeError(
                f"import_module must return an ivm.Module for {specifier!r}, not {type(dep).__name__}"
            )
        if dep._isolate is not isolate:
            raise ValueError(f"import_module returned a module of another isolate for {specifier!r}")
        return dep

    if inspect.iscoroutinefunction(hook):

        async def resolve(specifier: str, referrer: Module) -> Module:
            return checked(await hook(specifier, referrer._filename), specifier)

        # Linking waits for resolvers, so two import() in flight could both find a module (or
        # a module of the graph the other links) unlinked: one links at a time, and the next
        # finds the whole graph linked.
        link_lock = anyio.Lock()

        async def load(specifier: str, referrer: str) -> DerefInto:
            dep = checked(await hook(specifier, referrer), specifier)
            if not dep._linked:
                async with link_lock:
                    if not dep._linked:
                        await dep.instantiate(context_of(), resolve)
            await dep.evaluate()
            return dep.namespace.deref_into()

        return Callback(load, mode="async")

    def load_sync(specifier: str, referrer: str) -> DerefInto:
        found = hook(specifier, referrer)
        if inspect.isawaitable(found):
            if inspect.iscoroutine(found):
                found.close()
            raise TypeError("import_module returned an awaitable: make it a coroutine function")
        dep = checked(found, specifier)
        if not dep._linked:
            dep.instantiate_sync(context_of(), lambda spec, ref: hook(spec, ref._filename))
        dep.evaluate_sync()
        return dep.namespace.deref_into()

    return Callback(load_sync)


def _specifiers(ptr: Any) -> tuple[str, ...]:
    count = ffi.new("size_t *")
    check(lib.ivm_module_dependency_count(ptr, count))
    text = ffi.new("const char **")
    size = ffi.new("size_t *")
    names = []
    for i in range(count[0]):
        check(lib.ivm_module_dependency_specifier(ptr, i, text, size))
        names.append(ffi.unpack(text[0], size[0]).decode("utf-8", "surrogatepass"))
    return tuple(names)


def _attributes(ptr: Any, index: int) -> dict[str, str]:
    count = ffi.new("size_t *")
    check(lib.ivm_module_dependency_attribute_count(ptr, index, count))
    key, key_len = ffi.new("const char **"), ffi.new("size_t *")
    value, value_len = ffi.new("const char **"), ffi.new("size_t *")
    pairs = {}
    for i in range(count[0]):
        check(lib.ivm_module_dependency_attribute(ptr, index, i, key, key_len, value, value_len))
        pairs[ffi.unpack(key[0], key_len[0]).decode("utf-8", "surrogatepass")] = ffi.unpack(
            value[0], value_len[0]
        ).decode("utf-8", "surrogatepass")
    return pairs


def _takes_attributes(resolver: object) -> bool:
    """Whether ``resolver`` takes a third positional parameter (the attributes)."""
    try:
        params = inspect.signature(resolver).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in params) >= 3


def _evaluate_options(timeout: float | None, promise: bool) -> tuple[Any, Any]:
    flags = result_flags(promise) | (0 if promise else lib.IVM_RESULT_DISCARD)
    return run_options(timeout), result_options(flags)


def _context_ptr(context: object, module: Module) -> Any:
    if type(context) is not Context:
        raise TypeError(f"context must be an ivm.Context, not {type(context).__name__}")
    return context._ptr


def _address(module: Module) -> int:
    return int(ffi.cast("uintptr_t", module._ptr))


def _register(links: _Links) -> int:
    key = next(_keys)
    _linking[key] = links
    return key


def _checked(dep: object, specifier: str, root: Module) -> Module:
    if not isinstance(dep, Module):
        raise TypeError(
            f"the resolver must return an ivm.Module for {specifier!r}, not {type(dep).__name__}"
        )
    if dep._isolate is not root._isolate:
        raise ValueError(f"the resolver returned a module of another isolate for {specifier!r}")
    return dep


def _check_resolver(resolver: object) -> None:
    if not callable(resolver):
        raise TypeError(f"resolver must be callable, not {type(resolver).__name__}")


def _walk(root: Module, attributes: bool) -> Generator[tuple[Any, ...], object, _Links]:
    """Walks the import graph below ``root``: yields the arguments of each
    resolver call (specifier, referrer and, if ``attributes``, the import's
    attributes), is sent the result, and returns the table
    (referrer address, import request index) -> module."""
    links: _Links = {}
    graph = [root]
    seen = {id(root)}
    for module in graph:  # grows while it is walked
        for index, specifier in enumerate(module._specifiers):
            key = (_address(module), index)
            request: tuple[Any, ...] = (specifier, module)
            if attributes:
                request += (dict(module._attributes[index]),)
            dep = _checked((yield request), specifier, root)
            links[key] = dep
            if id(dep) not in seen:
                seen.add(id(dep))
                graph.append(dep)
    return links


def _link_sync(root: Module, resolver: Resolver) -> _Links:
    _check_resolver(resolver)
    walk = _walk(root, _takes_attributes(resolver))
    try:
        request = next(walk)
        while True:
            dep = resolver(*request)
            if inspect.isawaitable(dep):
                if inspect.iscoroutine(dep):
                    dep.close()
                raise TypeError("the resolver returned an awaitable: use await module.instantiate()")
            request = walk.send(dep)
    except StopIteration as stop:
        links: _Links = stop.value
        return links


async def _link_async(root: Module, resolver: Resolver) -> _Links:
    """:func:`_link_sync` with a resolver that may be a coroutine function."""
    _check_resolver(resolver)
    walk = _walk(root, _takes_attributes(resolver))
    try:
        request = next(walk)
        while True:
            dep: object = resolver(*request)
            if inspect.isawaitable(dep):
                dep = await dep
            request = walk.send(dep)
    except StopIteration as stop:
        links: _Links = stop.value
        return links


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _ivm_py_resolve(user_data: Any, referrer: Any, request: int, out: Any) -> Any:
    """libivm's resolve callback: a lookup in the table the walk above built."""
    try:
        links = _linking[int(ffi.cast("uintptr_t", user_data))]
        dep = links.get((int(ffi.cast("uintptr_t", referrer)), request))
        if dep is None:
            raise LookupError(f"no module was resolved for import {request}")
        out[0] = dep._ptr
        return _NULL
    except BaseException as exc:  # noqa: BLE001 - nothing may unwind through C
        text = f"module resolution failed: {exc}".encode("utf-8", "surrogatepass")
        return lib.ivm_error_new_host(b"Error", 5, text, len(text), 0, 0)
