"""Hostile copy streams: libivm's reader must turn any malformed stream into an error,
never a crash, a hang or a corrupt isolate. The streams are valid copies, mutated."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pytest

import ivm
from ivm._copy import dumps
from ivm._ffi import ffi, lib


def _stream(value: Any) -> bytes:
    v = dumps(value)
    try:
        p = ffi.new("const char **")
        n = ffi.new("size_t *")
        lib.ivm_value_serialized(v, p, n)
        return bytes(ffi.unpack(p[0], n[0]))
    finally:
        lib.ivm_value_free(v)


def _seeds(context: ivm.Context) -> list[bytes]:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    values: list[Any] = [
        [1, 2.5, "x", None, True], {"a": {"b": [1, 2]}, 1: "one"}, ivm.JSMap({"k": 1}),
        {1, 2, "s"}, b"abc", bytearray(b"xyz"), memoryview(b"abcdefgh").cast("i"), 2**80,
        -(2**70), ivm.JSBigInt(3), datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        ivm.JSRegExp("a+", "gi"), ivm.JSError("m", name="TypeError", stack="s"), ivm.undefined,
        (1, (2, 3)), frozenset({1}), cyclic,
    ]
    seeds = [_stream(v) for v in values]
    for code in (
        "({a: [1, 2, {b: 3}], m: new Map([[1, 2]]), s: new Set([1]), d: new Date(0), r: /x/g,"
        " u: new Uint8Array([1, 2, 3]), big: 10n ** 30n})",
        "[new ArrayBuffer(8), 'str', -0, NaN, [,1]]",
    ):
        copy = context.eval_sync(code, external_copy=True)
        out = ffi.new("ivm_value_t **")
        assert lib.ivm_external_copy_read(copy._ptr, out) == ffi.NULL
        p = ffi.new("const char **")
        n = ffi.new("size_t *")
        lib.ivm_value_serialized(out[0], p, n)
        seeds.append(bytes(ffi.unpack(p[0], n[0])))
        lib.ivm_value_free(out[0])
    return seeds


def _mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    s = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.5 and s:
            s[rng.randrange(len(s))] = rng.randrange(256)
        elif op < 0.7 and s:
            del s[rng.randrange(len(s)):]
        elif op < 0.85:
            pos = rng.randrange(len(s) + 1)
            s[pos:pos] = bytes([rng.randrange(256)])
        else:
            other = rng.choice(seeds)
            pos = rng.randrange(len(s) + 1)
            s[pos:pos] = other[rng.randrange(len(other)):][:8]
    return bytes(s)


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_streams_fail_cleanly(seed: int) -> None:
    isolate = ivm.Isolate(memory_limit=64)
    try:
        context = isolate.create_context_sync()
        seeds = _seeds(context)
        rng = random.Random(seed)
        code = b"return typeof $0"
        outcomes: dict[object, int] = {}
        for _ in range(1500):
            data = _mutate(rng, seeds)
            out = ffi.new("ivm_value_t **")
            assert lib.ivm_value_new_serialized(data, len(data), out) == ffi.NULL
            value = out[0]
            lib.ivm_value_attach_buffer(value, b"12345678", 8, 0, ffi.NULL)
            argv = ffi.new("ivm_value_t *[]", [value])
            result = ffi.new("ivm_value_t **")
            err = lib.ivm_context_eval_closure(context._ptr, code, len(code), argv, 1, ffi.NULL,
                                               ffi.NULL, ffi.NULL, result, ffi.NULL)
            lib.ivm_value_free(value)
            if err:
                kind = lib.ivm_error_kind(err)
                lib.ivm_error_free(err)
                # A malformed stream is a TransferError; a well-formed one may still make
                # JavaScript throw (a bad RegExp, say).
                assert kind in (lib.IVM_ERROR_TRANSFER, lib.IVM_ERROR_JS_EXCEPTION), kind
                outcomes[kind] = outcomes.get(kind, 0) + 1
            else:
                outcomes["ok"] = outcomes.get("ok", 0) + 1
                lib.ivm_value_free(result[0])
        assert outcomes.get(lib.IVM_ERROR_TRANSFER, 0) > 0 and outcomes.get("ok", 0) > 0
        assert context.eval_sync("[1, 2].map(x => x * 2).join()") == "2,4"   # still usable
    finally:
        isolate.dispose()
