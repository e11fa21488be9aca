"""Opt-in host basics (ivm.HostBasics, ivm_context_options_t.host): console, encoding, web
globals, inline and in worker processes (docs/host.md). Timers: tests/test_timers.py."""

from __future__ import annotations

from typing import Iterator

import pytest

import ivm
from ivm._ffi import ffi, lib

BARE_GLOBALS = (
    "console", "setTimeout", "setInterval", "clearTimeout", "clearInterval", "setImmediate",
    "clearImmediate", "queueMicrotask", "TextEncoder", "TextDecoder", "atob", "btoa",
    "structuredClone", "performance", "crypto",
)


@pytest.fixture
def lines() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def host_context(any_isolate: ivm.Isolate, lines: list[tuple[str, str]]) -> Iterator[ivm.Context]:
    """A context of `any_isolate` with every host basic; console lines go to `lines`."""
    ctx = any_isolate.create_context_sync(
        host=ivm.HostBasics.all(console=lambda level, text: lines.append((level, text)))
    )
    try:
        yield ctx
    finally:
        if not any_isolate.is_disposed:
            ctx.release()


def types_of(ctx: ivm.Context, names: tuple[str, ...]) -> list[str]:
    return str(ctx.eval_sync(f"[{', '.join(f'typeof {n}' for n in names)}].join()")).split(",")


def test_the_default_context_is_bare(any_context: ivm.Context) -> None:
    assert types_of(any_context, BARE_GLOBALS) == ["undefined"] * len(BARE_GLOBALS)


def test_host_none_is_bare(any_isolate: ivm.Isolate) -> None:
    ctx = any_isolate.create_context_sync(host=None)
    assert types_of(ctx, BARE_GLOBALS) == ["undefined"] * len(BARE_GLOBALS)
    ctx = any_isolate.create_context_sync(host=ivm.HostBasics())
    assert types_of(ctx, BARE_GLOBALS) == ["undefined"] * len(BARE_GLOBALS)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"console": 1}, TypeError),
        ({"console": "yes"}, TypeError),
        ({"timers": 1}, TypeError),
        ({"encoding": None}, TypeError),
        ({"web": "true"}, TypeError),
        ({"console_max_bytes": 0}, ValueError),
        ({"console_max_bytes": 2**32}, ValueError),
        ({"console_max_bytes": 1.5}, TypeError),
        ({"console_max_bytes": True}, TypeError),
    ],
)
def test_host_basics_checks_its_fields(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc, match="HostBasics"):
        ivm.HostBasics(**kwargs)  # type: ignore[arg-type]


def test_host_must_be_host_basics(isolate: ivm.Isolate) -> None:
    with pytest.raises(TypeError, match="host must be an ivm.HostBasics"):
        isolate.create_context_sync(host=True)  # type: ignore[arg-type]


def test_all_enables_everything() -> None:
    every = ivm.HostBasics.all()
    assert (every.console, every.timers, every.encoding, every.web) == (True, True, True, True)
    assert ivm.HostBasics.all(console=False).console is False


@pytest.mark.parametrize("bits", [0x10, 0x80000000, 0xFFFFFFFF])
def test_unknown_host_bits_are_invalid(any_isolate: ivm.Isolate, bits: int) -> None:
    opts = ffi.new("ivm_context_options_t *")
    opts.struct_size = ffi.sizeof("ivm_context_options_t")
    opts.host = bits
    out = ffi.new("ivm_context_t **")
    err = lib.ivm_isolate_create_context(any_isolate._ptr, opts, out)
    assert err != ffi.NULL
    try:
        assert lib.ivm_error_kind(err) == lib.IVM_ERROR_INVALID_ARGUMENT
        text, size = ffi.new("const char **"), ffi.new("size_t *")
        lib.ivm_error_message(err, text, size)
        assert "unknown bits in ivm_context_options_t.host" in ffi.unpack(text[0], size[0]).decode()
    finally:
        lib.ivm_error_free(err)
