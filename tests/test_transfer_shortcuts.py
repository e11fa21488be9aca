"""The shortcuts of a value that moves whole (a marker alone, an ArrayBuffer alone):
the same outcomes as the general writer, reader and pickler, which
IVM_WRITE_SHORTCUT=0 and IVM_READ_SHORTCUT=0 bring back."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import ivm
from ivm._copy import ATTACHMENT_STREAM, to_value
from ivm._ffi import ffi, lib

MIB = 1024 * 1024

# Each case prints one line of JSON: what JavaScript and the host saw.
SCENARIO = r"""
import json, ivm
from ivm._ffi import ffi, lib
out = {}

def outcome(f):
    try:
        return ["ok", f()]
    except Exception as e:
        return [type(e).__name__, str(e)]

def stream_of(ec):
    v = ffi.new("ivm_value_t **")
    lib.ivm_external_copy_read(ec._ptr, v)
    s, n = ffi.new("const char **"), ffi.new("size_t *")
    lib.ivm_value_serialized(v[0], s, n)
    data = ffi.unpack(s[0], n[0]).hex()
    count = lib.ivm_value_attachment_count(v[0])
    lib.ivm_value_free(v[0])
    return [data, count]

a = ivm.Isolate(memory_limit=128)
b = ivm.Isolate(memory_limit=16)
ca, cb = a.create_context_sync(), b.create_context_sync()
ca.eval_sync("globalThis.buf = new ArrayBuffer(1 << 20); new Uint8Array(buf)[5] = 9; 0")

copied = ca.eval_sync("buf", external_copy=True)
out["copy_stream"] = stream_of(copied)
out["copy_source"] = ca.eval_sync("buf.byteLength")
cb.global_.set_sync("c", copied.copy_into(transfer_in=True))
out["copy_in"] = cb.eval_sync("c instanceof ArrayBuffer && c.byteLength + ':' + new Uint8Array(c)[5]")

moved = ca.eval_sync("buf", external_copy=True, transfer_out=True)
out["move_stream"] = stream_of(moved)
out["move_source"] = ca.eval_sync("buf.byteLength")
marker = moved.copy_into(transfer_in=True)
cb.global_.set_sync("m", marker)
out["move_in"] = cb.eval_sync("m.byteLength + ':' + new Uint8Array(m)[5]")
out["marker_again"] = outcome(lambda: cb.global_.set_sync("m2", marker))
out["released_copy"] = outcome(lambda: moved.copy_into())

ca.eval_sync("globalThis.empty = new ArrayBuffer(0); 0")
e = ca.eval_sync("empty", external_copy=True, transfer_out=True)
cb.global_.set_sync("e", e.copy_into(release=True, transfer_in=True))
out["empty"] = cb.eval_sync("e instanceof ArrayBuffer && e.byteLength")

ca.eval_sync("globalThis.mem = new WebAssembly.Memory({initial: 1}); 0")
out["wasm"] = outcome(lambda: ca.eval_sync("mem.buffer", external_copy=True, transfer_out=True).size)

ca.eval_sync("globalThis.big = new ArrayBuffer(4 << 20); 0")
old = ivm.set_copy_limit(2 << 20)
out["limit"] = outcome(lambda: ca.eval_sync("big", external_copy=True, transfer_out=True).size)
ivm.set_copy_limit(old)
out["limit_source"] = ca.eval_sync("big.byteLength")

ca.eval_sync("globalThis.huge = new ArrayBuffer(24 << 20); 0")
hm = ca.eval_sync("huge", external_copy=True, transfer_out=True).copy_into(transfer_in=True)
out["over_budget"] = outcome(lambda: cb.global_.set_sync("h", hm))
out["over_budget_again"] = outcome(lambda: ca.global_.set_sync("h", hm))

plain = ivm.ExternalCopy({"a": [1, 2]})
cb.global_.set_sync("p", plain.copy_into())
out["plain"] = cb.eval_sync("JSON.stringify(p)")
cb.global_.set_sync("x", plain)
out["as_object"] = cb.eval_sync("typeof x.copy + ':' + JSON.stringify(x.copy())")
cb.global_.set_sync("f", ivm.Callback(lambda n: n * 2))
out["callback"] = cb.eval_sync("typeof f + ':' + f(21)")
out["reference"] = outcome(lambda: cb.global_.set_sync("r", ca.global_))
out["reference_seen"] = cb.eval_sync("typeof r")
a.dispose()
b.dispose()
print(json.dumps(out, sort_keys=True))
"""


def _run(shortcuts: bool) -> dict[str, object]:
    env = dict(os.environ)
    for name in ("IVM_WRITE_SHORTCUT", "IVM_READ_SHORTCUT"):
        if shortcuts:
            env.pop(name, None)
        else:
            env[name] = "0"
    done = subprocess.run([sys.executable, "-P", "-c", SCENARIO], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_shortcuts_change_no_outcome() -> None:
    fast, general = _run(True), _run(False)
    assert fast == general
    # And the outcomes are the documented ones.
    assert fast["move_source"] == 0 and fast["copy_source"] == MIB
    assert fast["move_in"] == f"{MIB}:9" and fast["copy_in"] == f"{MIB}:9"
    assert fast["move_stream"] == fast["copy_stream"] and fast["move_stream"][1] == 1
    assert fast["marker_again"][0] == "TransferError"
    assert fast["empty"] == 0
    assert fast["wasm"][0] == "TransferError" and "detached" in fast["wasm"][1]
    assert fast["limit"][0] == "TransferError" and "copy size limit" in fast["limit"][1]
    assert fast["limit_source"] == 4 * MIB   # refused before anything was detached
    assert fast["over_budget"][0] == "TransferError" and "memory limit" in fast["over_budget"][1]
    assert fast["over_budget_again"][0] == "TransferError"   # a transfer is tried once
    assert fast["plain"] == '{"a":[1,2]}'
    assert fast["as_object"] == 'function:{"a":[1,2]}'
    assert fast["callback"] == "function:42"


def _stream(value: object) -> bytes:
    s, n = ffi.new("const char **"), ffi.new("size_t *")
    lib.ivm_value_serialized(value, s, n)
    return bytes(ffi.unpack(s[0], n[0]))


@pytest.mark.skipif(os.environ.get("IVM_READ_SHORTCUT") == "0", reason="shortcut turned off")
def test_a_marker_alone_is_sent_as_libivms_attachment_stream() -> None:
    """A marker passed alone is `_att(0)` byte for byte (the stream libivm's reader takes
    without its opcode loop), not the pickler's longer stream of the same value."""
    ec = ivm.ExternalCopy(b"abc")
    for marker in (ec.copy_into(), ec, ivm.Callback(lambda: None)):
        value = to_value(marker, False)
        try:
            assert _stream(value) == ATTACHMENT_STREAM
            assert lib.ivm_value_attachment_count(value) == 1
        finally:
            lib.ivm_value_free(value)
    ec.release()


def test_a_lone_buffer_moved_many_times_keeps_its_bytes() -> None:
    a = ivm.Isolate(memory_limit=64)
    b = ivm.Isolate(memory_limit=64)
    try:
        ca, cb = a.create_context_sync(), b.create_context_sync()
        ca.eval_sync("globalThis.x = new ArrayBuffer(8 << 20); new Uint8Array(x).fill(3); 0")
        src, dst = ca, cb
        for i in range(20):
            ec = src.eval_sync("x", external_copy=True, transfer_out=True)
            dst.global_.set_sync("x", ec.copy_into(release=True, transfer_in=True))
            assert src.eval_sync("x.byteLength") == 0
            assert dst.eval_sync("new Uint8Array(x).every(v => v === 3)") is True
            src, dst = dst, src
    finally:
        a.dispose()
        b.dispose()
