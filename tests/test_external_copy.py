"""ivm.ExternalCopy: copies held outside every isolate — lifecycle, markers,
transfers, sizes, and moving values between isolates."""

from __future__ import annotations

import datetime
import gc
from typing import Any, Iterator

import pytest

import ivm

COPY = {"copy": True}
total = ivm.ExternalCopy.total_external_size


@pytest.fixture
def baseline() -> Iterator[int]:
    """total_external_size() with nothing of the test's alive; checked again after it."""
    gc.collect()
    before = total()
    yield before
    gc.collect()
    assert total() == before, "ExternalCopy bytes outlived the test"


@pytest.fixture
def two_contexts() -> Iterator[tuple[ivm.Context, ivm.Context]]:
    a = ivm.Isolate(memory_limit=64)
    b = ivm.Isolate(memory_limit=64)
    try:
        yield a.create_context_sync(), b.create_context_sync()
    finally:
        a.dispose()
        b.dispose()


# --- making and reading copies


def test_copy_of_a_python_value(baseline: int) -> None:
    value = {"a": [1, 2.5, "s"], "d": datetime.datetime(2001, 2, 3, tzinfo=datetime.timezone.utc)}
    ec = ivm.ExternalCopy(value)
    assert type(ec) is ivm.ExternalCopy
    first, second = ec.copy(), ec.copy()
    assert first == value and second == value
    assert first is not second and first["a"] is not second["a"] and first is not value
    first["a"].append("changed")
    assert ec.copy() == value
    ec.release()


def test_copy_of_a_javascript_value(context: ivm.Context, baseline: int) -> None:
    js = "({m: new Map([[1, [2n]]]), s: new Set(['x']), u: new Uint16Array([7, 8]), r: /a/g, n: null})"
    ec = context.eval_sync(js, external_copy=True)
    assert type(ec) is ivm.ExternalCopy
    value = ec.copy()
    expected = context.eval_sync(js, copy=True)
    assert type(value["m"]) is ivm.JSMap and dict(value["m"]) == {1: [ivm.JSBigInt(2)]}
    assert type(value["m"][1][0]) is ivm.JSBigInt
    assert value["s"] == {"x"} and value["r"] == ivm.JSRegExp("a", "g") and value["n"] is None
    assert value["u"].format == "H" and value["u"].tolist() == [7, 8]
    assert value["u"].tolist() == expected["u"].tolist() and value["m"] == expected["m"]
    # the copy does not follow the JavaScript value
    context.eval_sync("globalThis.o = {x: 1}; 0")
    ec2 = context.eval_sync("o", external_copy=True)
    context.eval_sync("o.x = 2")
    assert ec2.copy() == {"x": 1}
    ec.release()
    ec2.release()


def test_copy_of_primitives(context: ivm.Context, baseline: int) -> None:
    for js, expected in (("'s'", "s"), ("1.5", 1.5), ("undefined", ivm.undefined), ("null", None), ("true", True)):
        ec = context.eval_sync(js, external_copy=True)
        assert type(ec) is ivm.ExternalCopy
        got = ec.copy()
        assert got == expected and type(got) is type(expected)
        ec.release()
    ec = context.eval_sync("5n", external_copy=True)
    assert type(ec.copy()) is ivm.JSBigInt and ec.copy() == 5
    ec.release()


@pytest.mark.parametrize(
    ("value", "check", "through_js"),
    [
        ((1, 2), "Array.isArray($0) && $0[1] === 2", [1, 2]),
        ({1: "a"}, "$0 instanceof Map && $0.get(1) === 'a'", ivm.JSMap({1: "a"})),
        (2**60, "$0 === 2n**60n", ivm.JSBigInt(2**60)),
        (frozenset({1}), "$0 instanceof Set && $0.has(1)", {1}),
        (bytearray(b"x"), "$0 instanceof ArrayBuffer && $0.byteLength === 1", b"x"),
    ],
    ids=["tuple", "dict-int-keys", "big-int", "frozenset", "bytearray"],
)
def test_python_made_copy_is_the_javascript_value(
    context: ivm.Context, value: object, check: str, through_js: object
) -> None:
    # The copy holds the JavaScript form of the value (docs/values.md): reading it
    # back gives what a round trip through JavaScript gives.
    ec = ivm.ExternalCopy(value)
    try:
        assert context.eval_closure_sync(f"return {check}", [ec.copy_into()]) is True
        back = ec.copy()
        assert type(back) is type(through_js) and back == through_js
    finally:
        ec.release()


def test_values_outside_the_table(baseline: int) -> None:
    for value in (object(), [lambda: 1], {"d": datetime.datetime(2000, 1, 1)}):
        with pytest.raises(TypeError):
            ivm.ExternalCopy(value)
    with pytest.raises(TypeError):
        ivm.ExternalCopy(1, transfer_out=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytearray"):
        ivm.ExternalCopy(b"x", transfer_list=[b"x"])


def test_uncopyable_javascript_value(context: ivm.Context, baseline: int) -> None:
    with pytest.raises(ivm.TransferError, match=r"^a function at \$\.f cannot be copied"):
        context.eval_sync("({f() {}})", external_copy=True)


# --- release


def test_release_is_idempotent_and_disposes(baseline: int) -> None:
    ec = ivm.ExternalCopy([1, "two"])
    assert ec.size > 0
    ec.release()
    ec.release()
    for use in (ec.copy, ec.copy_into, lambda: ec.size, lambda: ec.byte_length, ec.buffer,
                lambda: ec.copy_into(release=True), lambda: ec.copy_into(transfer_in=True)):
        with pytest.raises(ivm.DisposedError):
            use()
    assert repr(ec) == "<ivm.ExternalCopy (released)>"


def test_total_external_size_follows_copies(baseline: int) -> None:
    a = ivm.ExternalCopy(["x" * 1000])
    assert total() == baseline + a.size
    assert a.size > 1000 and repr(a) == f"<ivm.ExternalCopy of {a.size} bytes>"
    b = ivm.ExternalCopy(list(range(100)))
    assert total() == baseline + a.size + b.size
    a.release()
    assert total() == baseline + b.size
    del b
    gc.collect()
    assert total() == baseline


def test_ten_thousand_create_release_cycles(context: ivm.Context) -> None:
    gc.collect()
    start = total()
    for i in range(10_000):
        ec = ivm.ExternalCopy({"i": i, "b": b"xy", "l": [i, str(i)]})
        ec.release()
    for i in range(10_000):
        ec = context.eval_sync(f"[{i}, new ArrayBuffer(16)]", external_copy=True)
        ec.release()
    del ec
    gc.collect()
    assert total() == start
    assert start == 0


# --- markers


def test_copy_into_marker(context: ivm.Context, baseline: int) -> None:
    ec = ivm.ExternalCopy({"a": [1, 2], "b": b"xyz"})
    marker = ec.copy_into()
    assert type(marker) is ivm.CopyInto and repr(marker) == "<ivm.ExternalCopy marker>"
    check = "return $0.a[1] === 2 && new Uint8Array($0.b)[2] === 122 && !($0 instanceof Map)"
    # a marker passes without arguments_options, and can be used again
    assert context.eval_closure_sync(check, [marker]) is True
    assert context.eval_closure_sync(check, [marker]) is True
    # each use is a new JavaScript value
    assert context.eval_closure_sync("return $0 !== $1 && $0.a[0] === $1.a[0]", [marker, marker]) is True
    # inside a copied argument
    assert context.eval_closure_sync(
        "return $0[0].x.a[0] === 1 && $0[1] === 'y'", [[{"x": marker}, "y"]], arguments_options=COPY
    ) is True
    # a marker made before release stays usable
    ec.release()
    assert context.eval_closure_sync(check, [marker]) is True
    del marker


def test_copy_into_release(context: ivm.Context, baseline: int) -> None:
    ec = ivm.ExternalCopy([1, 2, 3])
    marker = ec.copy_into(release=True)
    with pytest.raises(ivm.DisposedError):
        ec.copy()
    with pytest.raises(ivm.DisposedError):
        ec.copy_into(release=True)
    assert context.eval_closure_sync("return $0.length === 3 && $0[2] === 3", [marker]) is True
    del marker


def test_a_marker_alone_is_the_value_it_stands_for(context: ivm.Context, baseline: int) -> None:
    # A marker passed by itself (a set_sync value, an argument) is written without a
    # pickler (ivm._copy.marker_value): the same value as inside a copied argument.
    ref = context.eval_sync("globalThis.o = {}; o", reference=True)
    ec = ivm.ExternalCopy({"a": [1, 2]})
    assert ref.set_sync("m", ec.copy_into()) is True
    assert ref.set_sync("e", ec) is True   # an ExternalCopy object inside the isolate
    assert context.eval_sync("o.m.a[1] === 2 && o.e.copy().a[0] === 1") is True
    ec.release()
    with pytest.raises(ivm.DisposedError):   # and its value is freed (baseline checks)
        ref.set_sync("e2", ec)
    moved = context.eval_sync("new Uint8Array([5, 6]).buffer", external_copy=True, transfer_out=True)
    marker = moved.copy_into(release=True, transfer_in=True)
    assert ref.set_sync("b", marker) is True
    with pytest.raises(ivm.TransferError, match="already transferred"):
        ref.set_sync("b2", marker)
    assert context.eval_sync("new Uint8Array(o.b)[1] === 6 && !('e2' in o) && !('b2' in o)") is True
    context.eval_sync("o.e.release(); 0")
    del marker


def test_copy_into_validates_its_options(baseline: int) -> None:
    ec = ivm.ExternalCopy(1)
    with pytest.raises(TypeError):
        ec.copy_into(release=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ec.copy_into(transfer_in="yes")  # type: ignore[arg-type]
    ec.release()


def test_copy_into_transfer_in_is_single_use(context: ivm.Context, baseline: int) -> None:
    ec = context.eval_sync("[new Uint8Array([1, 2, 3]).buffer, 'tag']", external_copy=True, transfer_out=True)
    marker = ec.copy_into(transfer_in=True)
    assert context.eval_closure_sync(
        "return new Uint8Array($0[0])[2] === 3 && $0[1] === 'tag'", [marker]
    ) is True
    with pytest.raises(ivm.TransferError, match="already transferred"):
        context.eval_closure_sync("return 1", [marker])
    with pytest.raises(ivm.TransferError, match="already transferred"):
        context.eval_closure_sync("return 1", [[marker]], arguments_options=COPY)
    with pytest.raises(ivm.DisposedError):
        ec.copy()
    del marker


def test_markers_of_one_copy_in_one_argument(context: ivm.Context, baseline: int) -> None:
    ec = ivm.ExternalCopy({"k": "v"})
    marker = ec.copy_into()
    assert context.eval_closure_sync(
        "return $0.length === 2 && $0[0].k === 'v' && $0[1].k === 'v'", [[marker, marker]], arguments_options=COPY
    ) is True
    ec.release()
    del marker


# --- transfers


def test_transfer_out_detaches_and_moves(context: ivm.Context, baseline: int) -> None:
    context.eval_sync("globalThis.buf = new Uint8Array([1, 2, 3, 4]).buffer; 0")
    ec = context.eval_sync("buf", external_copy=True, transfer_out=True)
    assert context.eval_sync("buf.byteLength") == 0
    assert ec.byte_length == 4 and ec.size >= 4
    assert ec.copy() == b"\x01\x02\x03\x04"
    view = ec.buffer()
    assert view.readonly and view.format == "B" and view.tobytes() == b"\x01\x02\x03\x04"
    # zero copy: two views over the same memory
    addr = ivm._ffi.ffi.cast("uintptr_t", ivm._ffi.ffi.from_buffer(view))
    assert int(addr) == int(ivm._ffi.ffi.cast("uintptr_t", ivm._ffi.ffi.from_buffer(ec.buffer())))
    # the view outlives the copy
    ec.release()
    assert view.tobytes() == b"\x01\x02\x03\x04"
    del view


def test_transfer_out_of_a_typed_array(context: ivm.Context, baseline: int) -> None:
    context.eval_sync("globalThis.ta = new Uint16Array([1, 2]); 0")
    ec = context.eval_sync("ta", external_copy=True, transfer_out=True)
    assert context.eval_sync("ta.buffer.byteLength") == 0 and context.eval_sync("ta.length") == 0
    value = ec.copy()
    assert value.format == "H" and value.tolist() == [1, 2] and ec.byte_length == 4
    ec.release()


def test_without_transfer_out_nothing_is_detached(context: ivm.Context, baseline: int) -> None:
    context.eval_sync("globalThis.kb = new ArrayBuffer(6); 0")
    ec = context.eval_sync("kb", external_copy=True)
    assert context.eval_sync("kb.byteLength") == 6 and ec.byte_length == 6
    ec.release()


def test_buffer_needs_a_copy_of_one_array_buffer(context: ivm.Context, baseline: int) -> None:
    for ec in (ivm.ExternalCopy([b"abc"]), context.eval_sync("[new ArrayBuffer(2)]", external_copy=True),
               ivm.ExternalCopy("s")):
        with pytest.raises(TypeError, match="one ArrayBuffer"):
            ec.buffer()
        ec.release()
    ec = context.eval_sync("new Uint8Array([7, 8]).buffer", external_copy=True)
    assert ec.buffer().tobytes() == b"\x07\x08"
    ec.release()


def test_python_bytes_copy_sizes_and_buffer(baseline: int) -> None:
    # A copy of a Python bytes object is a copy of one ArrayBuffer.
    ec = ivm.ExternalCopy(b"a" * 1000)
    try:
        assert ec.byte_length == 1000
        assert ec.size >= 1000
        assert ec.buffer().tobytes() == b"a" * 1000
    finally:
        ec.release()


def test_transfer_list_empties_bytearrays(context: ivm.Context, baseline: int) -> None:
    data = bytearray(b"hello")
    other = bytearray(b"kept")
    ec = ivm.ExternalCopy({"x": data, "y": other}, transfer_list=[data])
    assert data == bytearray() and other == bytearray(b"kept")
    assert context.eval_closure_sync(
        "return String.fromCharCode(...new Uint8Array($0.x)) === 'hello' && $0.y.byteLength === 4", [ec.copy_into()]
    ) is True
    value = ec.copy()
    assert bytes(value["x"]) == b"hello"
    ec.release()


# --- between isolates


def test_copy_from_one_isolate_to_another(two_contexts: tuple[ivm.Context, ivm.Context], baseline: int) -> None:
    a, b = two_contexts
    ec = a.eval_sync(
        "({m: new Map([[1, [2, 3]]]), d: new Date(5), u: new Uint16Array([7, 8]), e: new RangeError('r')})",
        external_copy=True,
    )
    assert b.eval_closure_sync(
        "return $0.m instanceof Map && $0.m.get(1)[1] === 3 && $0.d instanceof Date && $0.d.getTime() === 5"
        " && $0.u instanceof Uint16Array && $0.u[1] === 8 && $0.e instanceof RangeError && $0.e.message === 'r'",
        [ec.copy_into()],
    ) is True
    # the copy outlives the isolate it came from
    a.isolate.dispose()
    assert b.eval_closure_sync("return $0.u.length", [ec.copy_into()]) == 2
    assert ec.copy()["d"] == datetime.datetime(1970, 1, 1, 0, 0, 0, 5000, tzinfo=datetime.timezone.utc)
    ec.release()


def test_large_buffer_counts_in_the_receiving_isolate(
    two_contexts: tuple[ivm.Context, ivm.Context], baseline: int
) -> None:
    a, b = two_contexts
    size = 8 << 20
    ec = a.eval_sync(f"new ArrayBuffer({size})", external_copy=True)
    assert ec.byte_length == size and size < ec.size
    before = b.isolate.get_heap_statistics_sync().externally_allocated_size
    assert b.eval_closure_sync("globalThis.kept = $0; return $0.byteLength", [ec.copy_into()]) == size
    after = b.isolate.get_heap_statistics_sync().externally_allocated_size
    assert after - before >= size
    ec.release()


def test_transfer_in_moves_into_the_receiving_isolate(
    two_contexts: tuple[ivm.Context, ivm.Context], baseline: int
) -> None:
    a, b = two_contexts
    size = 8 << 20
    a.eval_sync(f"globalThis.big = new Uint8Array({size}); big[{size - 1}] = 9; 0")
    ec = a.eval_sync("big.buffer", external_copy=True, transfer_out=True)
    assert a.eval_sync("big.byteLength") == 0
    assert total() == baseline + ec.size
    before = b.isolate.get_heap_statistics_sync().externally_allocated_size
    marker = ec.copy_into(transfer_in=True)
    assert b.eval_closure_sync(
        f"globalThis.moved = new Uint8Array($0); return moved[{size - 1}] + moved.length", [marker]
    ) == 9 + size
    after = b.isolate.get_heap_statistics_sync().externally_allocated_size
    assert after - before >= size
    # it is the receiving isolate's now: the copy holds nothing
    with pytest.raises(ivm.DisposedError):
        ec.copy()
    del marker
    gc.collect()
    assert total() == baseline


def test_copy_into_an_isolate_too_small(baseline: int) -> None:
    ec = ivm.ExternalCopy(b"z" * (40 << 20))
    small = ivm.Isolate(memory_limit=16)
    try:
        ctx = small.create_context_sync()
        with pytest.raises((ivm.TransferError, ivm.MemoryLimitError)):
            ctx.eval_closure_sync("return $0.byteLength", [ec.copy_into()])
    finally:
        small.dispose()
    assert ec.copy()[:3] == b"zzz"
    ec.release()


# --- async


@pytest.mark.anyio
async def test_async_external_copy_and_markers(context: ivm.Context, baseline: int) -> None:
    ec = await context.eval("({list: [1, 2], set: new Set([3])})", external_copy=True)
    assert type(ec) is ivm.ExternalCopy and ec.copy() == {"list": [1, 2], "set": {3}}
    assert await context.eval_closure("return $0.list[1] + $0.set.size", [ec.copy_into()]) == 3
    result = await context.eval_closure(
        "return {copied: $0}", [ec.copy_into()], result_options={"external_copy": True}
    )
    assert type(result) is ivm.ExternalCopy and result.copy() == {"copied": {"list": [1, 2], "set": {3}}}
    context.eval_sync("globalThis.ab = new ArrayBuffer(5); 0")
    moved = await context.eval("ab", external_copy=True, transfer_out=True)
    assert moved.byte_length == 5 and await context.eval("ab.byteLength") == 0
    for c in (ec, result, moved):
        c.release()
