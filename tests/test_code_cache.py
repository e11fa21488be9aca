"""Code cache: scripts and modules produce cache data in ivm's wrapping, later compiles of
the same source use it, and data for another source, kind or build, or corrupt data, is
refused before V8 sees it (docs/modules.md, "Code cache")."""

from __future__ import annotations

import random
import struct

import pytest

import ivm

SOURCE = "function twice(x) { return 2 * x; }\ntwice(21)"
MODULE = "export function twice(x) { return 2 * x; }\nexport default twice(21);"
HEADER = 56


def test_a_script_cache_round_trip(any_isolate: ivm.Isolate) -> None:
    ctx = any_isolate.create_context_sync()
    first = any_isolate.compile_script_sync(SOURCE, produce_cached_data=True)
    data = first.cached_data
    assert isinstance(data, bytes) and data[:4] == b"IVMC" and len(data) > HEADER
    assert first.cached_data_rejected is False
    again = any_isolate.compile_script_sync(SOURCE, cached_data=data)
    assert again.cached_data_rejected is False
    assert again.cached_data is None  # not asked to produce
    assert again.run_sync(ctx) == 42
    # The data is not tied to the isolate that made it.
    other = ivm.Isolate(memory_limit=16)
    try:
        used = other.compile_script_sync(SOURCE, cached_data=bytearray(data))
        assert used.cached_data_rejected is False
        assert used.run_sync(other.create_context_sync()) == 42
    finally:
        other.dispose()


def test_a_module_cache_round_trip(context: ivm.Context) -> None:
    iso = context.isolate
    data = iso.compile_module_sync(MODULE, produce_cached_data=True).cached_data
    assert data is not None
    m = iso.compile_module_sync(MODULE, cached_data=memoryview(data))
    assert m.cached_data_rejected is False
    m.instantiate_sync(context, lambda s, r: m)
    m.evaluate_sync()
    assert m.namespace.get_sync("default") == 42


@pytest.mark.anyio
async def test_async_compiles_produce_and_use_caches(any_isolate: ivm.Isolate) -> None:
    script = await any_isolate.compile_script(SOURCE, produce_cached_data=True)
    assert script.cached_data is not None
    used = await any_isolate.compile_script(SOURCE, cached_data=script.cached_data)
    assert used.cached_data_rejected is False
    module = await any_isolate.compile_module(MODULE, produce_cached_data=True)
    assert module.cached_data is not None
    again = await any_isolate.compile_module(MODULE, cached_data=module.cached_data)
    assert again.cached_data_rejected is False


def test_a_cache_for_another_source_of_the_same_length_is_rejected(any_isolate: ivm.Isolate) -> None:
    data = any_isolate.compile_script_sync(SOURCE, produce_cached_data=True).cached_data
    other = SOURCE.replace("21", "12")
    assert len(other) == len(SOURCE)
    s = any_isolate.compile_script_sync(other, cached_data=data)
    assert s.cached_data_rejected is True
    assert s.run_sync(any_isolate.create_context_sync()) == 24  # compiled from its own source


def test_a_cache_of_the_other_kind_is_rejected(any_isolate: ivm.Isolate) -> None:
    # One source text, valid both as a script and as a module.
    both = "var twice = (x) => 2 * x;\ntwice(21);"
    script_data = any_isolate.compile_script_sync(both, produce_cached_data=True).cached_data
    module_data = any_isolate.compile_module_sync(both, produce_cached_data=True).cached_data
    assert script_data and module_data
    assert any_isolate.compile_module_sync(both, cached_data=script_data).cached_data_rejected
    assert any_isolate.compile_script_sync(both, cached_data=module_data).cached_data_rejected


@pytest.mark.parametrize("field, offset", [("ivm version", 8), ("V8 version and flags", 12)])
def test_a_cache_of_another_build_is_rejected(any_isolate: ivm.Isolate, field: str, offset: int) -> None:
    data = bytearray(any_isolate.compile_script_sync(SOURCE, produce_cached_data=True).cached_data or b"")
    (value,) = struct.unpack_from("<I", data, offset)
    struct.pack_into("<I", data, offset, value ^ 0x10)
    assert any_isolate.compile_script_sync(SOURCE, cached_data=bytes(data)).cached_data_rejected


def test_corrupt_cache_data_is_rejected_and_never_crashes(any_isolate: ivm.Isolate) -> None:
    ctx = any_isolate.create_context_sync()
    data = any_isolate.compile_script_sync(SOURCE, produce_cached_data=True).cached_data
    assert data is not None
    rng = random.Random(1234)
    blobs: list[bytes] = [b"", b"IVMC", data[:HEADER], data[: len(data) - 1], data + b"\0"]
    for i in range(len(data)):  # every single-byte change
        b = bytearray(data)
        b[i] ^= 1 << rng.randrange(8)
        blobs.append(bytes(b))
    blobs += [bytes(rng.randrange(256) for _ in range(rng.randrange(200))) for _ in range(200)]
    for blob in blobs:
        s = any_isolate.compile_script_sync(SOURCE, cached_data=blob)
        assert s.cached_data_rejected, blob[:64]
        assert s.run_sync(ctx) == 42


def test_bad_cache_arguments(any_isolate: ivm.Isolate) -> None:
    with pytest.raises(TypeError, match="cached_data"):
        any_isolate.compile_script_sync(SOURCE, cached_data="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="produce_cached_data"):
        any_isolate.compile_module_sync(MODULE, produce_cached_data=1)  # type: ignore[arg-type]
    s = any_isolate.compile_script_sync(SOURCE)
    assert s.cached_data is None and s.cached_data_rejected is False
