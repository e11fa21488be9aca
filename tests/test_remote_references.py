"""References and ExternalCopies with isolates in worker processes (issue 11, rref): a
Reference into a worker isolate behaves as an inline one (every operation, sync, async and
ignored, the same results and errors), ExternalCopies cross in both directions, References
between processes are refused with CrossProcessError, and many of them leak nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import pytest

import ivm

SETUP = """
globalThis.obj = {a: 1, nested: {b: [1, 2]}, s: 'x\\u00e9', big: 2n ** 70n,
                  get boom() { throw new RangeError('getter') }};
Object.setPrototypeOf(obj, {inherited: 'planted'});
globalThis.add = function (a, b) { return a + b };
globalThis.thisK = function () { return this.k };
globalThis.thrower = function () { throw new TypeError('from apply') };
globalThis.later = async function (v) { return v * 2 };
globalThis.spin = function () { while (true) {} };
globalThis.frozen = Object.freeze({f: 1});
undefined;
"""


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        return ("memoryview", value.format, value.tolist())
    if isinstance(value, ivm.Reference):
        return ("Reference", value.typeof)
    if isinstance(value, ivm.ExternalCopy):
        return ("ExternalCopy", _plain(value.copy()))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return repr(value)


def _outcome(run: Callable[[], Any]) -> Any:
    try:
        value = run()
        return ("ok", type(value).__name__, _plain(value))
    except ivm.JSError as exc:
        return ("js", type(exc).__name__, exc.name, exc.message, exc.stack)
    except (ivm.IvmError, ValueError, TypeError) as exc:
        return ("ivm", type(exc).__name__, str(exc))


def _obj(ctx: ivm.Context) -> ivm.Reference:
    return ctx.global_.get_sync("obj", reference=True)  # type: ignore[no-any-return]


def _fn(ctx: ivm.Context, name: str) -> ivm.Reference:
    return ctx.global_.get_sync(name, reference=True)  # type: ignore[no-any-return]


def _released(ctx: ivm.Context) -> Any:
    ref = _obj(ctx)
    ref.release()
    ref.release()  # idempotent
    return ref.get_sync("a")


# Operations on references: each must give the same outcome on both sides.
OPS: list[tuple[str, Callable[[ivm.Context], Any]]] = [
    ("typeof global", lambda c: c.global_.typeof),
    ("typeof obj", lambda c: _obj(c).typeof),
    ("typeof fn", lambda c: _fn(c, "add").typeof),
    ("get own", lambda c: _obj(c).get_sync("a")),
    ("get missing", lambda c: _obj(c).get_sync("zzz")),
    ("get inherited", lambda c: _obj(c).get_sync("inherited")),
    ("get inherited unsafe", lambda c: _obj(c).get_sync("inherited", unsafe_inherit=True)),
    ("get string", lambda c: _obj(c).get_sync("s")),
    ("get bigint", lambda c: _obj(c).get_sync("big")),
    ("get object refused", lambda c: _obj(c).get_sync("nested")),
    ("get copy", lambda c: _obj(c).get_sync("nested", copy=True)),
    ("get reference", lambda c: _obj(c).get_sync("nested", reference=True)),
    ("get ref of ref", lambda c: _obj(c).get_sync("nested", reference=True).get_sync("b", copy=True)),
    ("get external copy", lambda c: _obj(c).get_sync("nested", external_copy=True)),
    ("get throwing getter", lambda c: _obj(c).get_sync("boom")),
    ("get integer key", lambda c: c.eval_sync("[5, 6]", reference=True).get_sync(1)),
    ("get of a primitive", lambda c: c.eval_sync("5", reference=True).get_sync("x")),
    ("set", lambda c: (_obj(c).set_sync("n", 5), c.eval_sync("obj.n"))),
    ("set frozen", lambda c: _fn(c, "frozen").set_sync("f", 2)),
    ("set copy", lambda c: (_obj(c).set_sync("m", {"k": [1]}), c.eval_sync("JSON.stringify(obj.m)"))),
    ("delete", lambda c: (_obj(c).delete_sync("a"), c.eval_sync("'a' in obj"))),
    ("delete frozen", lambda c: _fn(c, "frozen").delete_sync("f")),
    ("apply", lambda c: _fn(c, "add").apply_sync(None, [40, 2])),
    ("apply receiver", lambda c: _fn(c, "thisK").apply_sync({"k": 9}, [])),
    ("apply throws", lambda c: _fn(c, "thrower").apply_sync(None, [])),
    ("apply not a function", lambda c: _obj(c).apply_sync(None, [])),
    ("apply promise", lambda c: _fn(c, "later").apply_sync(None, [21], result_options={"promise": True})),
    ("apply reference result", lambda c: _fn(c, "add").apply_sync(None, [[1], [2]],
                                                                 result_options={"reference": True})),
    ("apply timeout", lambda c: _fn(c, "spin").apply_sync(None, [], timeout=0.05)),
    ("copy", lambda c: _obj(c).get_sync("nested", reference=True).copy_sync()),
    ("copy refused", lambda c: _fn(c, "add").copy_sync()),
    ("deref_into", lambda c: c.eval_closure_sync("return $0 === obj", [_obj(c).deref_into()])),
    # A deref_into(release=True) marker enters once; it is released in the worker, where the
    # host cannot see it, so its next use is refused there, as inline refuses it.
    ("deref_into release used twice", lambda c: (lambda m: (
        c.eval_closure_sync("return $0 === obj", [m]), c.eval_closure_sync("return 1", [m])))(
        _obj(c).deref_into(release=True))),
    ("deref_into release then apply", lambda c: (lambda m: (
        c.eval_closure_sync("return 1", [m]), _fn(c, "add").apply_sync(None, [m, 1])))(
        _obj(c).deref_into(release=True))),
    ("deref_into release then set", lambda c: (lambda m: (
        c.eval_closure_sync("return 1", [m]), c.global_.set_sync("again", m)))(
        _obj(c).deref_into(release=True))),
    ("reference argument", lambda c: c.eval_closure_sync(
        "return [typeof $0, $0.typeof, $0.getSync('a')]", [_obj(c)], result_options={"copy": True})),
    ("reference in a copy", lambda c: c.eval_closure_sync(
        "return $0.r.derefInto ? $0.r.getSync('a') : 'no'", [{"r": _obj(c)}],
        arguments_options={"copy": True})),
    ("reference result of eval", lambda c: c.eval_sync("obj", reference=True).get_sync("a")),
    ("released", _released),
    ("released after use", lambda c: (lambda r: (r.get_sync("a"), r.release(), r.copy_sync()))(_obj(c))),
    ("external copy result", lambda c: c.eval_sync("({u: new Uint8Array([1, 2])})", external_copy=True)),
    ("external copy primitive", lambda c: c.eval_sync("'s'", external_copy=True).copy()),
    ("external copy argument", lambda c: c.eval_closure_sync(
        "return [$0 instanceof Object, typeof $0.copy, $0.copy().x]", [ivm.ExternalCopy({"x": 3})],
        result_options={"copy": True})),
    ("external copy copy_into", lambda c: c.eval_closure_sync(
        "return $0.x", [ivm.ExternalCopy({"x": 4}).copy_into()])),
    ("external copy set", lambda c: (c.global_.set_sync("ec", ivm.ExternalCopy([7])),
                                     c.eval_sync("ec.copy()[0]"))),
    ("external copy transfer_in twice", lambda c: (lambda m: (
        c.eval_closure_sync("return $0.length", [m]), c.eval_closure_sync("return 1", [m])))(
        ivm.ExternalCopy(b"abc").copy_into(transfer_in=True))),
    ("external copy released", lambda c: (lambda e: (e.release(), c.eval_closure_sync("return $0", [e])))(
        ivm.ExternalCopy(1))),
    ("transfer_out", lambda c: c.eval_sync("new Uint8Array([5]).buffer", external_copy=True,
                                          transfer_out=True).copy()),
]


@pytest.mark.parametrize(("name", "op"), OPS, ids=[name for name, _ in OPS])
def test_reference_operations_match_inline(rctx: ivm.Context, name: str,
                                           op: Callable[[ivm.Context], Any]) -> None:
    with ivm.Isolate(memory_limit=64) as inline:
        ictx = inline.create_context_sync()
        ictx.eval_sync(SETUP)
        expected = _outcome(lambda: op(ictx))
    rctx.eval_sync(SETUP)
    assert _outcome(lambda: op(rctx)) == expected


def test_global_is_the_global_object(rctx: ivm.Context) -> None:
    rctx.eval_sync("globalThis.globalThis = 5")  # cannot fool it
    g = rctx.global_
    assert g is rctx.global_
    assert g.set_sync("marker", 1) is True
    assert rctx.eval_sync("marker") == 1
    assert rctx.eval_closure_sync("return $0 === this", [g.deref_into()]) is True


def test_references_survive_their_context_release_as_inline(remote: ivm.Isolate) -> None:
    ctx = remote.create_context_sync()
    ref = ctx.eval_sync("({a: 1})", reference=True)
    other = remote.create_context_sync()
    assert other.eval_closure_sync("return $0.getSync('a')", [ref]) == 1
    ctx.release()
    with pytest.raises(ivm.DisposedError):
        ctx.global_  # noqa: B018


def test_disposed_isolate_gives_disposed(rctx: ivm.Context, remote: ivm.Isolate) -> None:
    ref = rctx.eval_sync("({a: 1})", reference=True)
    remote.dispose()
    for call in (lambda: ref.get_sync("a"), lambda: ref.set_sync("a", 2), ref.copy_sync,
                 lambda: ref.apply_sync(None, [])):
        with pytest.raises(ivm.DisposedError):
            call()
    ref.release()


def test_crashed_worker_gives_crashed(rctx: ivm.Context, remote: ivm.Isolate) -> None:
    ref = rctx.eval_sync("({a: 1})", reference=True)
    assert remote.pid is not None
    os.kill(remote.pid, 9)
    with pytest.raises(ivm.IsolateCrashedError):
        ref.get_sync("a")


def test_references_between_processes_are_refused(rctx: ivm.Context) -> None:
    remote_ref = rctx.eval_sync("({a: 1})", reference=True)
    with ivm.Isolate() as inline, ivm.Isolate(process="isolated") as other:
        ictx = inline.create_context_sync()
        octx = other.create_context_sync()
        inline_ref = ictx.eval_sync("({b: 2})", reference=True)
        # inline -> worker, as an argument, inside a copy, as a value to set
        with pytest.raises(ivm.CrossProcessError, match="inline isolate"):
            rctx.eval_closure_sync("return $0", [inline_ref])
        with pytest.raises(ivm.CrossProcessError):
            rctx.eval_closure_sync("return $0", [{"r": inline_ref}], arguments_options={"copy": True})
        with pytest.raises(ivm.CrossProcessError):
            rctx.global_.set_sync("r", inline_ref)
        with pytest.raises(ivm.CrossProcessError):
            remote_ref.set_sync("r", inline_ref.deref_into())
        # worker -> inline
        with pytest.raises(ivm.CrossProcessError, match="inline isolate"):
            ictx.eval_closure_sync("return $0", [remote_ref])
        with pytest.raises(ivm.CrossProcessError):
            inline_ref.set_sync("r", remote_ref)
        # worker -> another worker
        with pytest.raises(ivm.CrossProcessError, match="another worker"):
            octx.eval_closure_sync("return $0", [remote_ref])
        # a TransferError too, and nothing is hurt
        with pytest.raises(ivm.TransferError):
            octx.eval_closure_sync("return $0", [remote_ref])
        assert ictx.eval_sync("1") == 1 and octx.eval_sync("2") == 2
    assert remote_ref.get_sync("a") == 1


def test_references_within_a_group_cross_between_its_isolates() -> None:
    with ivm.ProcessGroup() as pg, ivm.Isolate(group=pg) as a, ivm.Isolate(group=pg) as b:
        ref = a.create_context_sync().eval_sync("({v: 'from a'})", reference=True)
        bctx = b.create_context_sync()
        assert bctx.eval_closure_sync("return $0.get('v')", [ref], result_options={"promise": True}) == "from a"
        # JavaScript in a worker runs as an asynchronous job there: a synchronous call
        # into another isolate is refused as it is from inline asynchronous jobs.
        with pytest.raises(ivm.JSError, match="could deadlock"):
            bctx.eval_closure_sync("return $0.getSync('v')", [ref])


@pytest.mark.anyio
async def test_async_and_ignored_operations(remote: ivm.Isolate,
                                            wait_until_async: Callable[..., Awaitable[bool]],
                                            ignored_errors: list[BaseException]) -> None:
    ctx = await remote.create_context()
    await ctx.eval(SETUP)
    g = ctx.global_
    obj = await g.get("obj", reference=True)
    assert await obj.get("a") == 1
    assert await obj.set("z", 3) is True
    assert await obj.delete("z") is True
    nested = await obj.get("nested", reference=True)
    assert await nested.copy() == await ctx.eval("obj.nested", copy=True) == {"b": [1, 2]}
    add = await g.get("add", reference=True)
    assert await add.apply(None, [1, 2]) == 3
    assert await (await add.apply(None, ["a", "b"], result_options={"reference": True})).copy() == "ab"
    with pytest.raises(ivm.JSError, match="from apply"):
        await (await g.get("thrower", reference=True)).apply(None, [])
    spin = await g.get("spin", reference=True)
    with anyio.move_on_after(0.2) as scope:
        await spin.apply(None, [])
    assert scope.cancelled_caught
    with pytest.raises(ivm.TimeoutError):
        await spin.apply(None, [], timeout=0.05)
    obj.set_ignored("ig", 1)
    add.apply_ignored(None, [1, 2])
    obj.get_ignored("boom")
    obj.delete_ignored("a")
    assert await wait_until_async(lambda: len(ignored_errors) == 1)
    assert isinstance(ignored_errors[0], ivm.JSError)
    assert await ctx.eval("JSON.stringify([obj.ig, 'a' in obj])") == "[1,false]"
    obj.release()
    with pytest.raises(ivm.DisposedError, match="released"):
        await obj.get("a")


def _worker_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_many_references_and_copies_leak_nothing(no_leaks: None, rss_mb: Callable[[], float]) -> None:
    with ivm.Isolate(memory_limit=64, process="isolated") as iso:
        ctx = iso.create_context_sync()
        ctx.eval_sync("globalThis.o = {a: 1, buf: new Uint8Array(1024)}; 1")
        assert iso.pid is not None

        def cycle(n: int) -> None:
            for _ in range(n):
                # 80 KB each: 2,000 kept alive in the worker would pass its 64 MB limit
                ref = ctx.eval_sync("({x: new Array(10000).fill(1.5)})", reference=True)
                assert ref.get_sync("x", reference=True).typeof == "object"
                ref.release()
                ec = ctx.eval_sync("o", external_copy=True)
                assert ctx.eval_closure_sync("return $0.copy().a", [ec]) == 1
                ec.release()
                del ref, ec

        cycle(500)  # warm up: V8's heap and both allocators reach their steady size
        handles, worker_kb, host_mb = iso.reference_count, _worker_rss_kb(iso.pid), rss_mb()
        cycle(2000)
        assert iso.reference_count <= handles
        assert _worker_rss_kb(iso.pid) < worker_kb + 16 * 1024, "the worker grew"
        assert rss_mb() < host_mb + 16, "the host grew"
        assert ivm.ExternalCopy.total_external_size() == 0


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_strings_and_copies_larger_than_a_frame_cross_in_memfds() -> None:
    """Since 0.6 a string or a copy's stream of 256 KiB or more crosses beside the frame in
    a memfd, as large buffers do: so values of any size cross both ways (the host checks a
    worker's copy stream whole before decoding it), and no descriptor leaks."""
    size = 100 << 20
    with ivm.Isolate(memory_limit=1024, process="isolated") as iso:
        ctx = iso.create_context_sync()
        fds = _fd_count()
        out = ctx.eval_sync(f"'ab'.repeat({size // 2}) + '\\ud800'")
        assert len(out) == size + 1 and out.startswith("abab") and out[-1] == "\ud800"
        assert ctx.eval_closure_sync("return $0.length * 0x10000 + $0.charCodeAt($0.length - 1)",
                                     [out]) == (size + 1) * 0x10000 + 0xD800
        del out
        # a copy whose stream (three 8 MiB strings) is larger than a frame, both ways
        parts = ctx.eval_sync("[1, 2, 3].map(i => String(i).repeat(8 << 20))", copy=True)
        assert [(len(p), p[0]) for p in parts] == [(8 << 20, "1"), (8 << 20, "2"), (8 << 20, "3")]
        assert ctx.eval_closure_sync("return $0.map(p => p.length + Number(p[0]))",
                                     [parts], arguments_options={"copy": True},
                                     result_options={"copy": True}) == [
                                         (8 << 20) + 1, (8 << 20) + 2, (8 << 20) + 3]
        # host callbacks: large arguments (CALLBACK) and results (CALLBACK_REPLY)
        echo = ivm.Callback(lambda s: s + "!")
        assert ctx.eval_closure_sync("return $0('z'.repeat(20 << 20)).length",
                                     [echo]) == (20 << 20) + 1
        del parts
        assert _fd_count() <= fds
        assert ctx.eval_sync("'still usable'") == "still usable"


def test_large_buffers_cross_in_sealed_memfds() -> None:
    """Buffers above one frame (16 MiB) cross both ways beside the frame, in memfds; the
    host leaks no descriptor. (Strings too since 0.6: see the next test.)"""
    size = 64 * 1024 * 1024
    with ivm.Isolate(memory_limit=512, process="isolated") as iso:
        ctx = iso.create_context_sync()
        fds = _fd_count()
        out = ctx.eval_sync(f"const u = new Uint8Array({size}); u[1] = 7; u[{size} - 1] = 9; u",
                            copy=True)
        assert len(out) == size and out[1] == 7 and out[-1] == 9
        data = bytearray(size)
        data[3], data[-1] = 4, 8
        assert ctx.eval_closure_sync("const u = new Uint8Array($0); return [u.length, u[3], u.at(-1)]",
                                     [bytes(data)], arguments_options={"copy": True},
                                     result_options={"copy": True}) == [size, 4, 8]
        big = ivm.ExternalCopy(bytes(data))
        assert ctx.eval_closure_sync("return new Uint8Array($0.copy())[3]", [big]) == 4
        back = ctx.eval_sync(f"new Uint8Array({size}).fill(3).buffer", external_copy=True)
        assert back.byte_length == size and back.buffer()[size // 2] == 3
        # the host keeps a worker's buffer in its memfd (a private mapping): an inline
        # isolate may take it over and write it
        moved = ctx.eval_sync(f"new Uint8Array({size}).fill(5).buffer", external_copy=True)
        with ivm.Isolate(memory_limit=256) as inline:
            marker = moved.copy_into(transfer_in=True)
            assert inline.create_context_sync().eval_closure_sync(
                "const u = new Uint8Array($0); u[0] = 1; return u[0] + u[1] + u.length", [marker]) == 6 + size
        g = ctx.global_
        assert g.set_sync("kept", ivm.ExternalCopy(bytes(data)).copy_into())
        assert g.get_sync("kept", copy=True)[3] == 4
        # several large buffers in one value
        parts = ctx.eval_sync("[1, 2, 3].map(i => new Uint8Array(1 << 20).fill(i))", copy=True)
        assert [p[0] for p in parts] == [1, 2, 3]
        assert len(ctx.eval_sync("'x'.repeat(20 * 1024 * 1024)")) == 20 << 20
        # what is not a value still fits one frame
        with pytest.raises(ivm.IvmError, match="too large"):
            ctx.eval_sync("1" + " " * (17 << 20))
        del out, back, parts
        assert _fd_count() <= fds
        assert ctx.eval_sync("'still usable'") == "still usable"
