"""Validation of the options shared by calls, and their C structs: one per
kind of decision (ivm_source_options_t, ivm_run_options_t,
ivm_result_options_t), each NULL when it holds only defaults."""

from __future__ import annotations

import math
from typing import Any, Mapping, TypedDict

from ._ffi import ffi, lib

__all__ = [
    "EvalKeywords",
    "RunKeywords",
    "cache_options",
    "cached_data_of",
    "compile_args",
    "call_options",
    "code_bytes",
    "result_flags",
    "result_options",
    "result_options_flags",
    "run_options",
    "source_fields",
    "source_options",
    "timeout_ns",
]

_NULL = ffi.NULL


class RunKeywords(TypedDict, total=False):
    """The keywords of :meth:`Script.run_sync` and :meth:`Script.run` that do not
    decide the type of the result, described once for their typing overloads (the
    methods themselves list every keyword)."""

    timeout: float | None
    promise: bool
    transfer_out: bool
    release: bool


class EvalKeywords(TypedDict, total=False):
    """The same for :meth:`Context.eval_sync` and :meth:`Context.eval`."""

    timeout: float | None
    filename: str | None
    line_offset: int
    column_offset: int
    promise: bool
    transfer_out: bool


def timeout_ns(timeout: float | None) -> int:
    """Seconds (None: no limit) as libivm's nanoseconds (0: no limit)."""
    if timeout is None:
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout!r}")
    ns = timeout * 1e9
    # Beyond ~292 years the limit cannot be represented; it is no limit at all.
    return _MAX_TIMEOUT_NS if ns >= _MAX_TIMEOUT_NS else max(1, int(ns))


_MAX_TIMEOUT_NS = 2**63 - 1


def code_bytes(code: object, what: str = "code") -> bytes:
    if not isinstance(code, str):
        raise TypeError(f"{what} must be a str, not {type(code).__name__}")
    try:
        return code.encode()  # strict UTF-8 is faster, and the same without lone surrogates
    except UnicodeEncodeError:
        return code.encode("utf-8", "surrogatepass")


def _offset(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"{what} is out of range")
    return value


def source_fields(
    filename: str | None, line_offset: int, column_offset: int
) -> tuple[bytes | None, int, int]:
    name = None if filename is None else code_bytes(filename, "filename")
    return name, _offset(line_offset, "line_offset"), _offset(column_offset, "column_offset")


def result_flags(
    promise: object = False,
    copy: object = False,
    external_copy: object = False,
    transfer_out: object = False,
    reference: object = False,
) -> int:
    """The IVM_RESULT_* flags of a call's result options, validated."""
    for what, value in (
        ("promise", promise),
        ("copy", copy),
        ("external_copy", external_copy),
        ("transfer_out", transfer_out),
        ("reference", reference),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    if [copy, external_copy, reference].count(True) > 1:
        raise ValueError("copy, external_copy and reference are exclusive: pick one")
    if transfer_out and not (copy or external_copy):
        raise ValueError("transfer_out needs copy=True or external_copy=True")
    return (
        (lib.IVM_RESULT_PROMISE if promise else 0)
        | (lib.IVM_RESULT_COPY if copy else 0)
        | (lib.IVM_RESULT_EXTERNAL_COPY if external_copy else 0)
        | (lib.IVM_RESULT_TRANSFER_OUT if transfer_out else 0)
        | (lib.IVM_RESULT_REFERENCE if reference else 0)
    )


_RESULT_KEYS = frozenset({"promise", "copy", "external_copy", "transfer_out", "reference"})


def result_options_flags(options: Mapping[str, object] | None) -> int:
    """IVM_RESULT_* flags from a ``result_options`` mapping."""
    if options is None:
        return 0
    if not isinstance(options, Mapping):
        raise TypeError(f"result_options must be a mapping, not {type(options).__name__}")
    unknown = set(options) - _RESULT_KEYS
    if unknown:
        raise ValueError(f"unknown result option(s): {', '.join(sorted(map(str, unknown)))}")
    return result_flags(**options)


def run_options(timeout: float | None) -> Any:
    """An ``ivm_run_options_t *`` for ``timeout`` seconds (NULL: no limit)."""
    ns = timeout_ns(timeout)
    if not ns:
        return _NULL
    opts = ffi.new("ivm_run_options_t *")
    opts.struct_size = ffi.sizeof("ivm_run_options_t")
    opts.timeout_ns = ns
    return opts


# One immutable struct per combination of flags, shared by every thread:
# libivm only reads it.
_RESULT_OPTIONS: dict[int, Any] = {0: _NULL}


def result_options(flags: int) -> Any:
    """An ``ivm_result_options_t *`` with IVM_RESULT_* ``flags`` already
    validated (result_flags); NULL for none."""
    opts = _RESULT_OPTIONS.get(flags)
    if opts is None:
        opts = ffi.new("ivm_result_options_t *")
        opts.struct_size = ffi.sizeof("ivm_result_options_t")
        opts.flags = flags
        _RESULT_OPTIONS[flags] = opts
    return opts


def source_options(
    filename: str | None = None, line_offset: int = 0, column_offset: int = 0
) -> tuple[Any, Any]:
    """``(options, keepalive)``: an ``ivm_source_options_t *`` (NULL for the
    defaults) and the filename buffer, which the caller holds until the C call
    returns."""
    name, line, column = source_fields(filename, line_offset, column_offset)
    if name is None and not line and not column:
        return _NULL, None
    opts = ffi.new("ivm_source_options_t *")
    opts.struct_size = ffi.sizeof("ivm_source_options_t")
    keep = None
    if name is not None:
        keep = ffi.from_buffer(name)
        opts.filename = keep
        opts.filename_len = len(name)
    opts.line_offset = line
    opts.column_offset = column
    return opts, keep


def cache_options(cached_data: object, produce: object) -> tuple[Any, Any]:
    """``(options, keepalive)``: an ``ivm_cache_options_t *`` (NULL for none)
    and the data buffer, which the caller holds until the C call returns."""
    if not isinstance(produce, bool):
        raise TypeError(f"produce_cached_data must be a bool, not {type(produce).__name__}")
    if cached_data is None and not produce:
        return _NULL, None
    opts = ffi.new("ivm_cache_options_t *")
    opts.struct_size = ffi.sizeof("ivm_cache_options_t")
    opts.flags = lib.IVM_CACHE_PRODUCE if produce else 0
    keep = None
    if cached_data is not None:
        if not isinstance(cached_data, (bytes, bytearray, memoryview)):
            raise TypeError(f"cached_data must be bytes, not {type(cached_data).__name__}")
        data = bytes(cached_data)
        keep = ffi.from_buffer(data)
        opts.data = keep
        opts.data_len = len(data)
    return opts, keep


def compile_args(
    code: str,
    filename: str | None,
    line_offset: int,
    column_offset: int,
    cached_data: object,
    produce_cached_data: object,
) -> tuple[tuple[Any, ...], Any]:
    """``(args, keepalive)`` of a compile call: its ``(code, code_len, source,
    cache)`` arguments and what the caller holds until the C call returns."""
    src = code_bytes(code)
    source, keep_name = source_options(filename, line_offset, column_offset)
    cache, keep_data = cache_options(cached_data, produce_cached_data)
    return (src, len(src), source, cache), (keep_name, keep_data)


def cached_data_of(getter: Any, ptr: Any) -> bytes | None:
    """What a compile produced (``ivm_script_cached_data`` or the module's), or None."""
    text = ffi.new("const char **")
    size = ffi.new("size_t *")
    err = getter(ptr, text, size)
    if err:
        lib.ivm_error_free(err)
        return None
    return ffi.unpack(text[0], size[0]) if size[0] else None


_DEFAULTS: tuple[Any, Any, Any, Any] = (_NULL, _NULL, _NULL, None)
# call_options' result structs by their flags as exact bools (only valid combinations).
_FLAG_OPTIONS: dict[tuple[bool, bool, bool, bool, bool], Any] = {}


def call_options(
    timeout: float | None,
    promise: object = False,
    copy: object = False,
    external_copy: object = False,
    transfer_out: object = False,
    reference: object = False,
    filename: str | None = None,
    line_offset: int = 0,
    column_offset: int = 0,
) -> tuple[Any, Any, Any, Any]:
    """``(source, run, result, keepalive)``: the option structs of an eval or
    a script run, validated; all NULL when every option has its default (the
    common call, kept lean). Hold ``keepalive`` until the C call returns."""
    if (
        timeout is None
        and promise is False
        and copy is False
        and external_copy is False
        and transfer_out is False
        and reference is False
        and filename is None
        and not line_offset
        and not column_offset
    ):
        return _DEFAULTS
    if (
        timeout is None
        and filename is None
        and type(line_offset) is int
        and type(column_offset) is int
        and not line_offset
        and not column_offset
        and type(promise) is bool
        and type(copy) is bool
        and type(external_copy) is bool
        and type(transfer_out) is bool
        and type(reference) is bool
    ):
        # Only result flags (exact bools): their struct, validated once per combination.
        key = (promise, copy, external_copy, transfer_out, reference)
        ropts = _FLAG_OPTIONS.get(key)
        if ropts is None:
            ropts = _FLAG_OPTIONS[key] = result_options(result_flags(*key))
        return _NULL, _NULL, ropts, None
    flags = result_flags(promise, copy, external_copy, transfer_out, reference)
    source, keep = source_options(filename, line_offset, column_offset)
    return source, run_options(timeout), result_options(flags), keep
