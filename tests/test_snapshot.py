"""Snapshots: ``Isolate.create_snapshot`` and ``Isolate(snapshot=...)``: globals restored in
every context, ivm's per-context set-up (References, callbacks, modules) in such isolates,
bad blobs refused before V8 sees them, scripts V8 cannot snapshot, worker-hosted isolates."""

from __future__ import annotations

import struct

import pytest

import ivm

LIB = """
globalThis.config = {name: 'lib', list: [1, 2, 3]};
function double(n) { return n * 2; }
class Counter { constructor() { this.n = 0; } inc() { return ++this.n; } }
var seen = new Map([['a', 1]]);
"""


@pytest.fixture(scope="module")
def snapshot() -> bytes:
    return ivm.Isolate.create_snapshot([(LIB, "lib.js")], process="inline")


def test_globals_are_restored_in_every_context(snapshot: bytes) -> None:
    with ivm.Isolate(snapshot=snapshot) as iso:
        one, two = iso.create_context_sync(), iso.create_context_sync()
        assert one.eval_sync("double(21) + new Counter().inc() + seen.get('a')") == 44
        assert one.eval_sync("config.list.push(4); config.list.length") == 4
        assert two.eval_sync("config.list.length") == 3   # each context has its own copy
        assert two.eval_sync("config.name") == "lib"


def test_a_snapshot_made_in_a_worker_is_the_same(snapshot: bytes) -> None:
    made = ivm.Isolate.create_snapshot([(LIB, "lib.js")])   # the default: a worker
    with ivm.Isolate(snapshot=made) as iso:
        assert iso.create_context_sync().eval_sync("double(4)") == 8
    assert abs(len(made) - len(snapshot)) < len(snapshot) // 10


def test_contexts_have_the_builtins_the_snapshot_creator_leaves_out(snapshot: bytes) -> None:
    with ivm.Isolate(snapshot=snapshot) as iso:
        ctx = iso.create_context_sync()
        assert ctx.eval_sync(
            "[typeof WebAssembly, typeof SharedArrayBuffer, typeof Atomics].join()"
        ) == "object,function,object"


def test_references_callbacks_copies_and_modules_work(snapshot: bytes) -> None:
    with ivm.Isolate(snapshot=snapshot) as iso:
        ctx = iso.create_context_sync()
        calls: list[int] = []
        ctx.global_.set_sync("record", ivm.Callback(lambda n: calls.append(n) or n + 1))
        assert ctx.eval_sync("record(double(5))") == 11 and calls == [10]
        ref = ctx.eval_sync("config", reference=True)
        assert isinstance(ref, ivm.Reference) and ref.get_sync("name") == "lib"
        assert ctx.eval_sync("config", copy=True) == {"name": "lib", "list": [1, 2, 3]}
        ctx.global_.set_sync("copied", ivm.ExternalCopy({"x": 1}).copy_into())
        assert ctx.eval_sync("copied.x + double(1)") == 3
        mod = iso.compile_module_sync("export default double(50);", filename="file:///m.mjs")
        mod.instantiate_sync(ctx, lambda spec, ref: mod)
        mod.evaluate_sync()
        assert mod.namespace.get_sync("default") == 100
        ref.release()


async def test_async_calls_work(snapshot: bytes, anyio_backend: str) -> None:
    with ivm.Isolate(snapshot=snapshot) as iso:
        ctx = await iso.create_context()
        assert await ctx.eval("double(8)") == 16


def test_one_megabyte_of_state_round_trips() -> None:
    state = """
    globalThis.text = 'abcdefgh'.repeat(1 << 17);                 // 1 MiB of characters
    globalThis.bytes = new Uint8Array(1 << 20).map((_, i) => i % 251);
    globalThis.rows = Array.from({length: 20000}, (_, i) => ({i, s: 'r' + i}));
    """
    snap = ivm.Isolate.create_snapshot([state], process="inline")
    assert len(snap) > 2 << 20
    with ivm.Isolate(snapshot=snap) as iso:
        ctx = iso.create_context_sync()
        assert ctx.eval_sync("text.length") == 1 << 20
        assert ctx.eval_sync("text.slice(-3)") == "fgh"
        assert ctx.eval_sync("bytes.length === (1 << 20) && bytes[1000] === 1000 % 251")
        assert ctx.eval_sync("rows.length + rows[19999].i") == 39999
        assert ctx.eval_sync("rows[123].s") == "r123"


def test_a_warmup_keeps_compiled_code_not_its_globals() -> None:
    snap = ivm.Isolate.create_snapshot(
        ["function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }"],
        warmup_script="globalThis.leftover = fib(15);", process="inline")
    with ivm.Isolate(snapshot=snap) as iso:
        ctx = iso.create_context_sync()
        assert ctx.eval_sync("fib(20)") == 6765
        assert ctx.eval_sync("typeof leftover") == "undefined"


def test_script_order_and_filenames() -> None:
    snap = ivm.Isolate.create_snapshot(
        ["var a = 1;", ("var b = a + 1;", "b.js"), ivm.SnapshotScript("var c = b + 1;", "c.js")],
        process="inline")
    with ivm.Isolate(snapshot=snap) as iso:
        assert iso.create_context_sync().eval_sync("a + b + c") == 6
    with pytest.raises(ivm.JSError) as info:
        ivm.Isolate.create_snapshot(["var a = 1;", ("a.b.c = 1;", "bad.js")], process="inline")
    assert info.value.name == "TypeError" and "bad.js:1" in (info.value.stack or "")


@pytest.mark.parametrize("process", ["inline", "isolated"])
def test_a_throwing_script_fails_creation(process: str) -> None:
    with pytest.raises(ivm.JSError, match="boom") as info:
        ivm.Isolate.create_snapshot([("throw new RangeError('boom')", "lib.js")],
                                    process=process)  # type: ignore[arg-type]
    assert info.value.name == "RangeError" and "lib.js:1" in (info.value.stack or "")


@pytest.mark.parametrize("process", ["inline", "isolated"])
def test_a_timeout_ends_a_script_that_never_returns(process: str) -> None:
    with pytest.raises(ivm.TimeoutError):
        ivm.Isolate.create_snapshot(["while (true) {}"], timeout=0.2,
                                    process=process)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [
    # V8 10.2 aborts on both while serializing ("Check failed" / a global handle it
    # cannot serialize): in the worker that is an error, and this process lives on.
    "globalThis.registry = new FinalizationRegistry(() => {}); registry.register({}, 1);",
    "globalThis.format = new Intl.NumberFormat('en');",
])
def test_what_v8_cannot_serialize_is_a_clear_error(code: str) -> None:
    with pytest.raises(ValueError, match="V8 could not make the snapshot"):
        ivm.Isolate.create_snapshot([code])
    with ivm.Isolate() as iso:   # the host is fine
        assert iso.create_context_sync().eval_sync("1 + 1") == 2


def _field(snapshot: bytes, offset: int, value: int) -> bytes:
    """`snapshot` with the u32 header field at `offset` replaced (ivm's header, snapshot.cc)."""
    return snapshot[:offset] + struct.pack("<I", value) + snapshot[offset + 4:]


def bad_snapshots(snapshot: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(snapshot)
    flipped[len(flipped) // 2] ^= 0xFF
    v8_version = snapshot[:40] + b"9.9.999".ljust(32, b"\0") + snapshot[72:]
    return {
        "empty": (b"", "empty"),
        "garbage": (b"\x7fELF" + bytes(range(256)) * 40, "not an ivm snapshot"),
        "truncated": (snapshot[:-1000], "truncated"),
        "header only": (snapshot[:72], "truncated"),
        "trailing bytes": (snapshot + b"x", "trailing"),
        "corrupt": (bytes(flipped), "checksum"),
        "another ivm version": (_field(snapshot, 8, 5000), "another version of ivm"),
        "another format": (_field(snapshot, 4, 2), "another version of ivm"),
        "another V8 flags tag": (_field(snapshot, 12, 12345), "another V8 build"),
        "another V8 version": (v8_version, "another V8 build"),
        "unknown flags": (_field(snapshot, 16, 0x80), "unknown flags"),
    }


@pytest.mark.parametrize("case", list(bad_snapshots(b"\0" * 200)))
@pytest.mark.parametrize("process", ["inline", "isolated"])
def test_bad_snapshots_are_refused_before_v8_sees_them(snapshot: bytes, case: str,
                                                       process: str) -> None:
    data, message = bad_snapshots(snapshot)[case]
    with pytest.raises(ValueError, match=message):
        ivm.Isolate(snapshot=data, process=process)  # type: ignore[arg-type]
    with ivm.Isolate(snapshot=snapshot) as iso:   # nothing was harmed
        assert iso.create_context_sync().eval_sync("double(2)") == 4


def test_a_worker_hosted_isolate_starts_from_a_snapshot(snapshot: bytes) -> None:
    with ivm.Isolate(snapshot=snapshot, process="isolated") as iso:
        assert iso.pid is not None
        ctx = iso.create_context_sync()
        assert ctx.eval_sync("double(21) + config.list.length") == 45
        assert ctx.eval_sync("config", copy=True)["name"] == "lib"
    group = ivm.ProcessGroup()
    try:
        with ivm.Isolate(snapshot=snapshot, group=group) as iso:
            assert iso.create_context_sync().eval_sync("new Counter().inc()") == 1
    finally:
        group.dispose()


def test_memory_limits_still_hold(snapshot: bytes) -> None:
    with ivm.Isolate(memory_limit=16, snapshot=snapshot) as iso:
        ctx = iso.create_context_sync()
        with pytest.raises(ivm.MemoryLimitError):
            ctx.eval_sync("const a = []; while (true) a.push({x: a.length, s: 'y' + a.length});")


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="list of scripts"):
        ivm.Isolate.create_snapshot("var a = 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="snapshot script"):
        ivm.Isolate.create_snapshot([42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="warmup_script"):
        ivm.Isolate.create_snapshot([], warmup_script=b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="process"):
        ivm.Isolate.create_snapshot([], process="elsewhere")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        ivm.Isolate.create_snapshot([], timeout=-1)
    with pytest.raises(TypeError, match="snapshot must be bytes"):
        ivm.Isolate(snapshot="abc")  # type: ignore[arg-type]


def test_an_empty_list_makes_a_plain_snapshot() -> None:
    snap = ivm.Isolate.create_snapshot([], process="inline")
    with ivm.Isolate(snapshot=snap) as iso:
        assert iso.create_context_sync().eval_sync("typeof Array") == "function"


def test_no_leaks(snapshot: bytes, no_leaks: None) -> None:
    ivm.Isolate.create_snapshot(["var a = 1;"], process="inline")
    with pytest.raises(ivm.JSError):
        ivm.Isolate.create_snapshot(["throw 1"], process="inline")
    with pytest.raises(ValueError):
        ivm.Isolate(snapshot=b"nope")
    with ivm.Isolate(snapshot=snapshot) as iso:
        iso.create_context_sync().eval_sync("double(1)")
