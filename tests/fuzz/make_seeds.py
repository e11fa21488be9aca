"""Writes the seed corpora of tests/fuzz/corpus/ (copy_reader, which the unpickler target
shares, and wire): copy streams made by ivm's Python writer and by libivm from JavaScript
values, and worker frames. Run it with a Python where ivm is installed:
``python -P tests/fuzz/make_seeds.py``. Fuzzing adds nothing here; inputs that the fuzzers
found are added by hand, named for what they found."""

import datetime
import os
import struct
from pathlib import Path

import ivm
from ivm._copy import dumps
from ivm._ffi import ffi, lib

out = str(Path(__file__).resolve().parent / "corpus")
def save(target, name, data):
    with open(f"{out}/{target}/{name}", "wb") as f:
        f.write(data)

def stream_of(v):
    p = ffi.new("const char **"); n = ffi.new("size_t *")
    lib.ivm_value_serialized(v, p, n)
    return bytes(ffi.unpack(p[0], n[0]))

def py_stream(value):
    v = dumps(value)
    try:
        return stream_of(v)
    finally:
        lib.ivm_value_free(v)

cyclic = [1]; cyclic.append(cyclic)
values = {
    "list": [1, 2.5, "x", None, True], "dict": {"a": {"b": [1, 2]}, 1: "one"},
    "map": ivm.JSMap({"k": 1}), "set": {1, 2, "s"}, "bytes": b"abc",
    "view": memoryview(b"abcdefgh").cast("i"),
    "bigint": 2**80, "negbig": -(2**70), "jsbigint": ivm.JSBigInt(3),
    "date": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
    "regexp": ivm.JSRegExp("a+", "gi"), "error": ivm.JSError("m", name="TypeError", stack="s"),
    "undefined": ivm.undefined, "tuple": (1, (2, 3)), "frozenset": frozenset({1}), "cyclic": cyclic,
    "unicode": "h\u00e9llo \U0001f600", "float": -0.0,
}
for name, value in values.items():
    save("copy_reader", f"py-{name}", py_stream(value))
iso = ivm.Isolate()
ctx = iso.create_context_sync()
js = {
    "object": "({a: [1, 2, {b: 3}], m: new Map([[1, 2]]), s: new Set([1]), d: new Date(0),"
              " r: /x/g, u: new Uint8Array([1, 2, 3]), big: 10n ** 30n})",
    "sparse": "[new ArrayBuffer(8), 'str', -0, NaN, [,1]]",
    "views": "(() => { const b = new ArrayBuffer(16);"
             " return [new Int16Array(b, 2, 3), new Float64Array(b, 8, 1), new DataView(b)] })()",
    "shared": "(() => { const o = {x: 1}; return [o, o, {o}] })()",
    "errors": "[new RangeError('r'), new Error('e')]",
    "strings": "['', 'a'.repeat(300), '\\u{1F600}', '\\ud800']",
}
for name, code in js.items():
    copy = ctx.eval_sync(code, external_copy=True)
    o = ffi.new("ivm_value_t **")
    assert lib.ivm_external_copy_read(copy._ptr, o) == ffi.NULL
    save("copy_reader", f"js-{name}", stream_of(o[0]))
    lib.ivm_value_free(o[0])
save("copy_reader", "att-0", b"\x80\x05civm._copy\n_att\nK\x00\x85R.")
save("copy_reader", "buf-1", b"\x80\x05civm._copy\n_buf\nK\x01\x85R.")

def frame(kind, id_, payload=b"", flags=0):
    return struct.pack("<IHHQ", len(payload), kind, flags, id_) + payload
def u32(v): return struct.pack("<I", v)
def by(b): return u32(len(b)) + b
hello = frame(1, 0, u32(0x574d5649) + u32(1) + u32(3000) + by(b"10.2.154.26"))
frames = {
    "hello": hello, "pong": frame(8, 7), "reply-ok": frame(3, 9, u32(0) + by(b"")),
    "reply-error": frame(3, 10, u32(5) + by(b"bad argument")),
    "call-hook": frame(2, 11, u32(0xf0000001) + u32(3) + by(b"x" * 300)),
    "stream": hello + frame(3, 1, u32(0) + by(b"")) + frame(8, 2) + frame(9, 3),
    # A REPLY whose payload after its status is a copy stream: [1, 2], memoized, in a dict.
    "reply-copy": frame(3, 12, u32(0) + b"\x80\x05}(X\x01\x00\x00\x00a](K\x01K\x02e\x94u."),
}
for name, data in frames.items():
    # The first byte chooses how the target cuts the stream into chunks.
    save("wire", name, b"\x07" + data)

# code_cache: a cache this build made for the target's script (its source must match
# tests/fuzz/fuzz_code_cache.cc), and cuts of it.
SCRIPT = "function twice(x) { return 2 * x; }\ntwice(21)"
with ivm.Isolate(memory_limit=16) as iso:
    cache = iso.compile_script_sync(SCRIPT, produce_cached_data=True).cached_data or b""
for name, data in {"valid": cache, "header": cache[:56], "truncated": cache[:-1],
                   "magic": b"IVMC"}.items():
    save("code_cache", name, data)
print(len(os.listdir(f"{out}/copy_reader")), len(os.listdir(f"{out}/wire")),
      len(os.listdir(f"{out}/code_cache")))
