"""Validation of the options shared by calls, and their C structs."""

from __future__ import annotations

import math
from typing import Any, Mapping

from ._ffi import ffi, lib

__all__ = [
    "code_bytes",
    "eval_options",
    "result_flags",
    "result_options_flags",
    "script_options",
    "source_fields",
    "timeout_ns",
]


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
    """The IVM_EVAL_* flags of a call's result options, validated."""
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
        (lib.IVM_EVAL_PROMISE if promise else 0)
        | (lib.IVM_EVAL_COPY if copy else 0)
        | (lib.IVM_EVAL_EXTERNAL_COPY if external_copy else 0)
        | (lib.IVM_EVAL_TRANSFER_OUT if transfer_out else 0)
        | (lib.IVM_EVAL_REFERENCE if reference else 0)
    )


_RESULT_KEYS = frozenset({"promise", "copy", "external_copy", "transfer_out", "reference"})


def result_options_flags(options: Mapping[str, object] | None) -> int:
    """IVM_EVAL_* flags from a ``result_options`` mapping."""
    if options is None:
        return 0
    if not isinstance(options, Mapping):
        raise TypeError(f"result_options must be a mapping, not {type(options).__name__}")
    unknown = set(options) - _RESULT_KEYS
    if unknown:
        raise ValueError(f"unknown result option(s): {', '.join(sorted(map(str, unknown)))}")
    return result_flags(**options)


def eval_options(
    timeout: float | None,
    filename: str | None = None,
    line_offset: int = 0,
    column_offset: int = 0,
    promise: bool = False,
    flags: int = 0,
) -> tuple[Any, Any]:
    """``(options, keepalive)``: an ``ivm_eval_options_t *`` (NULL for the
    defaults) and an object the caller holds until the C call returns.
    ``flags`` are IVM_EVAL_* flags already validated (result_flags)."""
    ns = timeout_ns(timeout)
    name, line, column = source_fields(filename, line_offset, column_offset)
    if not isinstance(promise, bool):
        raise TypeError(f"promise must be a bool, not {type(promise).__name__}")
    if promise:
        flags |= lib.IVM_EVAL_PROMISE
    if not ns and name is None and not line and not column and not flags:
        return ffi.NULL, None
    opts = ffi.new("ivm_eval_options_t *")
    opts.struct_size = ffi.sizeof("ivm_eval_options_t")
    opts.timeout_ns = ns
    opts.flags = flags
    return opts, _fill_source(opts, name, line, column)


def script_options(
    filename: str | None, line_offset: int, column_offset: int
) -> tuple[Any, Any]:
    """``(options, keepalive)``: an ``ivm_script_options_t *`` and an object the
    caller holds until the C call returns."""
    name, line, column = source_fields(filename, line_offset, column_offset)
    opts = ffi.new("ivm_script_options_t *")
    opts.struct_size = ffi.sizeof("ivm_script_options_t")
    return opts, _fill_source(opts, name, line, column)


def _fill_source(opts: Any, name: bytes | None, line: int, column: int) -> Any:
    """Sets the source fields shared by eval and script options; returns the
    filename buffer, which must outlive the call."""
    keep = None
    if name is not None:
        keep = ffi.from_buffer(name)
        opts.filename = keep
        opts.filename_len = len(name)
    opts.line_offset = line
    opts.column_offset = column
    return keep
