"""Snapshots: heaps made once by running scripts, loaded by new isolates
(``Isolate.create_snapshot``, ``Isolate(snapshot=...)``; docs/devtools.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Union

from ._errors import check
from ._ffi import ffi, lib
from ._options import timeout_ns

__all__ = ["SnapshotScript", "create_snapshot"]


@dataclass(frozen=True)
class SnapshotScript:
    """One script of a snapshot: its code and the file name its stack traces show."""

    code: str
    filename: str = "<snapshot>"


#: What ``create_snapshot`` takes for each script.
ScriptLike = Union[str, "tuple[str, str]", SnapshotScript]


def _script(item: object) -> SnapshotScript:
    if isinstance(item, SnapshotScript):
        return item
    if isinstance(item, str):
        return SnapshotScript(item)
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return SnapshotScript(item[0], item[1])
    raise TypeError(
        "each snapshot script must be a str, a (code, filename) tuple of str or an "
        f"ivm.SnapshotScript, not {type(item).__name__}"
    )


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def create_snapshot(
    scripts: Iterable[ScriptLike],
    *,
    warmup_script: str | None = None,
    timeout: float | None = None,
    process: Literal["isolated", "inline"] = "isolated",
) -> bytes:
    """Runs ``scripts`` in a fresh isolate and returns its heap as a
    snapshot, for ``Isolate(snapshot=...)``.

    Each script is a str, a ``(code, filename)`` tuple or an
    :class:`ivm.SnapshotScript`; they run in order in one context, as
    classic scripts (microtasks run after each). ``warmup_script`` then
    runs in a throw-away context so that the snapshot keeps the code it
    compiled (its globals are not kept). ``timeout`` (seconds) bounds the
    scripts. It blocks the calling thread (with the GIL released).

    V8 can serialize plain JavaScript data, functions, classes, typed
    arrays and their buffers, but not everything (Intl objects, a
    FinalizationRegistry with registrations...), and it aborts the
    process on those: ``process="isolated"`` (the default) therefore
    runs the scripts in a throw-away worker process, where that raises
    ``ValueError`` with V8's message; ``"inline"`` saves the worker's
    start-up (some 30-40 ms) for trusted scripts. While they run,
    ``SharedArrayBuffer``, ``Atomics`` and ``WebAssembly`` are not
    defined (isolates made from the snapshot have them).

    Raises :class:`ivm.JSError` if a script throws,
    :class:`ivm.TimeoutError`, :class:`ivm.MemoryLimitError` (over
    1 GiB of heap) and ``ValueError`` for a heap V8 cannot serialize (or
    bad arguments).
    """
    if isinstance(scripts, (str, bytes)):
        raise TypeError("scripts must be a list of scripts, not a single str")
    items = [_script(s) for s in scripts]
    if warmup_script is not None and not isinstance(warmup_script, str):
        raise TypeError(f"warmup_script must be a str or None, not {type(warmup_script).__name__}")
    if process not in ("isolated", "inline"):
        raise ValueError(f"process must be 'isolated' or 'inline', not {process!r}")
    keep: list[Any] = []
    arr = ffi.new("ivm_snapshot_script_t[]", max(len(items), 1))
    for i, s in enumerate(items):
        code, name = _utf8(s.code), _utf8(s.filename)
        keep += [code, name]
        arr[i].code, arr[i].code_len = ffi.from_buffer(code), len(code)
        arr[i].filename, arr[i].filename_len = ffi.from_buffer(name), len(name)
    opts = ffi.new("ivm_snapshot_options_t *")
    opts.struct_size = ffi.sizeof("ivm_snapshot_options_t")
    if warmup_script is not None:
        warm = _utf8(warmup_script)
        keep.append(warm)
        opts.warmup, opts.warmup_len = ffi.from_buffer(warm), len(warm)
    opts.timeout_ns = timeout_ns(timeout)
    opts.placement = lib.IVM_PLACEMENT_PROCESS if process == "isolated" else lib.IVM_PLACEMENT_INLINE
    out = ffi.new("ivm_snapshot_t **")
    check(lib.ivm_snapshot_create(arr, len(items), opts, out))
    snapshot = ffi.gc(out[0], lib.ivm_snapshot_free)
    data, size = ffi.new("const char **"), ffi.new("size_t *")
    lib.ivm_snapshot_data(snapshot, data, size)
    return bytes(ffi.buffer(data[0], size[0]))


def snapshot_option(snapshot: object, opts: Any) -> Any:
    """Sets ``opts.snapshot`` (an ``ivm_isolate_options_t``) from the bytes
    ``snapshot``; returns what must stay alive for the C call."""
    if snapshot is None:
        return None
    if not isinstance(snapshot, (bytes, bytearray, memoryview)):
        raise TypeError(f"snapshot must be bytes or None, not {type(snapshot).__name__}")
    buf = ffi.from_buffer(snapshot)
    opts.snapshot, opts.snapshot_len = buf, len(buf)
    return buf
