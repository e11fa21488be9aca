"""Both paths of each copy direction give the same values (docs/values.md, "Two readers").

Into an isolate, plain JSON data is read by V8's JSON.parse, from JSON text that Python
writes (ivm/_cffi_json.c) or that libivm transcodes from a copy stream, and anything else
by the general reader; out of one, plain data goes through V8's serializer and the rest
through the general writer. Random nested values must come out identical whichever paths
they took, and as docs/values.md's table says. Each path is forced from outside:

- into JavaScript, a value alone (an argument or `set_sync` value) takes Python's JSON text
  when it is plain JSON data; an ExternalCopy of it is a pickled stream, which libivm
  transcodes; and the same value inside `[value, undefined]` always takes the general
  reader (undefined is not JSON);
- out of JavaScript, `transfer_out=True` always takes the general writer.

The same runs against a worker-hosted isolate, whose copies the host checks
(libivm/copy_check.cc) before reading them.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ivm  # noqa: E402
from ivm._copy import normalize  # noqa: E402

MAX_SAFE = 2**53 - 1

# Strings with lone surrogates, control characters, quotes and backslashes, Latin-1 and
# astral characters: everything the JSON text must escape or carry.
texts = st.text(
    alphabet=st.one_of(
        st.characters(codec=None, exclude_categories=()),
        st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\xe9", "\ud800", "\udfff", "😀"]),
    ),
    max_size=12,
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-MAX_SAFE, MAX_SAFE),
    st.integers(-(2**31), 2**31),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 2.0, 1e300, 5e-324, 0.1, float(2**53), -float(2**60)]),
    # multiples of 2**-10 (or finer) around 2**43: the JSON text writes the short ones exactly
    st.integers(-(2**54), 2**54).map(lambda n: n / 1024),
    st.integers(-(2**20), 2**20).map(lambda n: n / 2048),
    texts,
)
other_scalars = st.one_of(
    st.just(ivm.undefined),
    st.floats(),                                      # NaN and the infinities
    st.integers().filter(lambda n: abs(n) > MAX_SAFE),   # BigInts
    st.integers(-5, 5).map(ivm.JSBigInt),
    st.binary(max_size=8),
)


def containers(children: Any) -> Any:
    return st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(texts, children, max_size=6),
    )


json_values = st.recursive(json_scalars, containers, max_leaves=30)
any_values = st.recursive(
    st.one_of(json_scalars, other_scalars),
    lambda children: st.one_of(
        containers(children),
        st.tuples(children, children),
        st.dictionaries(st.integers(-3, 3), children, max_size=3),   # a Map
    ),
    max_leaves=30,
)


def same(a: Any, b: Any, ordered: bool = True) -> bool:
    """Exact equality: same types, -0.0 apart from 0.0, NaN equal to NaN, dict key order
    (when `ordered`)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):  # (a tuple's == would compare two NaNs as unequal)
        return len(a) == len(b) and all(same(x, y, ordered) for x, y in zip(a, b))
    if isinstance(a, dict):
        if list(a) != list(b) if ordered else set(a) != set(b):
            return False
        return all(same(a[k], b[k], ordered) for k in a)
    return bool(a == b)


def joined(value: Any) -> Any:
    """`value` with each surrogate pair held as two code points made one character, as
    JavaScript reads it (docs/values.md, "Surrogate pairs as two code points")."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [joined(x) for x in value]
    if isinstance(value, dict):
        return type(value)((joined(k), joined(v)) for k, v in value.items())
    return value


def four_ways(ctx: ivm.Context, value: Any) -> list[Any]:
    """`value` into the isolate by each reader, and back out by each writer."""
    ctx.global_.set_sync("fast", value, copy=True)
    ctx.global_.set_sync("transcoded", ivm.ExternalCopy(value).copy_into())
    ctx.global_.set_sync("general", [value, ivm.undefined], copy=True)
    return [
        ctx.eval_sync(where, copy=True, transfer_out=general_writer)
        for where in ("fast", "transcoded", "general[0]")
        for general_writer in (False, True)
    ]


def check_round_trips(ctx: ivm.Context, value: Any) -> None:
    results = four_ways(ctx, value)
    for other in results[1:]:
        assert same(results[0], other), (value, results)
    # As the table says: the JavaScript form computed in Python (JavaScript orders
    # integer-like keys first, so key order is not compared here).
    assert same(results[0], joined(normalize(value)), ordered=False), (value, results[0])


SETTINGS = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("values", [json_values, any_values], ids=["json_data", "any_data"])
@settings(max_examples=150, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_values_round_trip_identically_on_both_paths(
    context: ivm.Context, values: Any, data: Any
) -> None:
    check_round_trips(context, data.draw(values))


@settings(max_examples=40, **SETTINGS)  # type: ignore[arg-type]
@given(value=any_values)
def test_both_paths_agree_in_a_worker_hosted_isolate(
    any_context: ivm.Context, value: Any
) -> None:
    check_round_trips(any_context, value)


@pytest.mark.parametrize(
    "value",
    [
        {"__proto__": {"a": 1}, "1": 2, "b": [None, True, False]},
        {"b": 1, "10": 2, "2": 3, "-1": 4, "01": 5, "4294967295": 6},
        {"a": 1, "a\x00": 2, "\ud800": "\udc00", "\ud83d\ude00": "😀"},
        [0.0, -0.0, 5e-324, 1.7976931348623157e308, 2**53 - 1, -(2**53 - 1), 1e21, 123.456],
        # binary fractions on both sides of the JSON text's exact form (2**-10 steps below 2**43)
        [0.5, -0.5, 1.25, -1023 - 1023 / 1024, 2.0**43 - 1 / 1024, -(2.0**43) + 0.5, 2.0**43,
         2.0**43 + 1, 1 / 1024, -3 / 1024, 1 / 2048, 2.0**42 + 0.5, 7.0, -7.0, 1e-300, 0.1],
        ["é" * 300, "\u0100" * 300, "x" * 70000, '"\\/\b\f\n\r\t'],
        [[[[[[[[[[[]]]]]]]]]], {}, [], {"": {}}],
        [list(range(1500)), {str(i): i for i in range(1500)}],
        # an empty dict followed by siblings that are not strs stays a dict (the general
        # reader once took them for its first key and made it a Map)
        [{}, None], [{}, 1.5, {}], ({}, (1, 2, 3, 4)), [{}, ivm.JSBigInt(1)], {"a": {}, "b": 2},
    ],
)
def test_edge_cases_agree_on_both_paths(context: ivm.Context, value: Any) -> None:
    check_round_trips(context, value)


def test_plain_json_data_keeps_javascript_property_semantics(context: ivm.Context) -> None:
    context.global_.set_sync("v", {"__proto__": {"x": 1}, "2": "b", "1": "a"}, copy=True)
    assert context.eval_sync(
        "Object.getPrototypeOf(v) === Object.prototype && Object.hasOwn(v, '__proto__')"
        " && v.x === undefined && Object.keys(v).join() === '1,2,__proto__'"
    )


def test_shared_and_deep_values_take_the_general_reader(context: ivm.Context) -> None:
    shared: list[Any] = [1]
    context.global_.set_sync("v", [shared, shared], copy=True)
    assert context.eval_sync("v[0] === v[1]")
    deep: Any = []
    for _ in range(300):   # deeper than the JSON path takes (200), within the reader's limit
        deep = [deep]
    context.global_.set_sync("d", deep, copy=True)
    assert context.eval_sync("let n = 0, x = d; while (x.length) { x = x[0]; n++; } n") == 300


@settings(max_examples=150, **SETTINGS)  # type: ignore[arg-type]
@given(value=any_values)
def test_python_json_text_only_for_plain_data_and_is_the_value(value: Any) -> None:
    import json
    import pickle

    from ivm._copy import JSON_STREAM, _Reader

    stream = JSON_STREAM(value)
    if stream is None:
        return
    head = b"\x80\x05civm._copy\n_json\n\x8e"
    assert stream.startswith(head) and stream.endswith(b"\x85R.")
    text = stream[len(head) + 8 : -3]
    assert int.from_bytes(stream[len(head) : len(head) + 8], "little") == len(text)
    # The text is the value (json.loads joins surrogate pairs; integral floats end in .0).
    assert same(json.loads(text.decode("latin-1")), joined(value))
    # Python's readers refuse the name: only isolates read such streams.
    with pytest.raises(pickle.UnpicklingError, match="may not name ivm._copy._json"):
        _Reader(stream, None).load()


def test_python_json_text_is_refused_for_everything_but_plain_data() -> None:
    from ivm._copy import JSON_STREAM

    class Sub(dict):  # type: ignore[type-arg]
        pass

    shared: list[Any] = []
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    deep: Any = []
    for _ in range(199):
        deep = [deep]
    assert JSON_STREAM(deep) is not None and JSON_STREAM([deep]) is None   # 200 levels, 201
    for value in ([shared, shared], cyclic, (1,), [(1,)], [2**53], [-(2**53)], [ivm.JSBigInt(1)],
                  [float("nan")], [float("inf")], [ivm.undefined], [b""], {1: 2}, {True: 1},
                  [Sub()], Sub(), [{1}], 5, "s", None, [ivm.JSMap()], ["x" * (2 << 20)]):
        assert JSON_STREAM(value) is None, value
    assert JSON_STREAM([2**53 - 1, -(2**53 - 1), 1.5, "x" * 100000]) is not None
    assert JSON_STREAM(["\u0100" * 300000]) is not None   # 1.8 MB of text


def test_python_json_text_finds_containers_shared_only_inside_the_value() -> None:
    from ivm._copy import JSON_STREAM

    # The writer sets aside only containers with one reference (the one it came through);
    # one that only the value itself holds twice is still met twice.
    inner: Any = {"a": [1]}
    value: Any = [[inner], {"x": inner}]
    del inner
    assert JSON_STREAM(value) is None
    ring: Any = [1]
    ring.append([ring])
    value = [ring]
    del ring
    assert JSON_STREAM(value) is None
    assert JSON_STREAM([[{"a": [i]} for i in range(3)]]) is not None


def test_python_json_text_bound_does_not_depend_on_earlier_calls() -> None:
    from ivm._copy import JSON_STREAM

    # A str counts at its longest escaped form (6 bytes a character) against the 2 MiB
    # bound, also when the buffer kept from an earlier, larger call has room for it.
    value = ["x" * 400000]
    assert JSON_STREAM(value) is None
    assert JSON_STREAM(["\u0100" * 170000, "\u0100" * 80000]) is not None   # 2.5 MB kept
    assert JSON_STREAM(value) is None


def test_python_json_text_finds_shared_values_in_every_call() -> None:
    from ivm._copy import JSON_STREAM

    # The writer keeps its set of containers met between calls (ivm/_cffi_json.c): what an
    # earlier call met is not "met before" in the next one, and what the next one meets
    # twice is, small after large and large after small.
    rows = [{"id": i, "tags": [i]} for i in range(5000)]
    for _ in range(2):
        assert JSON_STREAM(rows) is not None
        assert JSON_STREAM(rows[:10]) is not None
        assert JSON_STREAM([rows[0], rows[0]]) is None
        assert JSON_STREAM(rows + [rows[4999]["tags"]]) is None
        assert JSON_STREAM([rows[1]["tags"], rows[2]["tags"]]) is not None
    big = ["\u0100" * 150000, "\u0101" * 150000]   # large buffers, then small ones
    assert JSON_STREAM(big) is not None and JSON_STREAM([[]]) is not None
    assert JSON_STREAM([big, big]) is None and JSON_STREAM([[], []]) is not None


def test_python_json_text_writes_numbers_exactly() -> None:
    import decimal

    from ivm._copy import JSON_STREAM

    head = len(b"\x80\x05civm._copy\n_json\n\x8e") + 8
    ints = [0, 7, 9, 10, 99, 100, 101, 999, 1000, 65535, 10**15, 2**53 - 1, -1, -10, -(2**53 - 1)]
    # multiples of 2**-10 below 2**43 in their exact decimal expansion, the rest as repr()
    short = [0.0, 1.5, -0.25, 7.0, 1 / 1024, 1023 / 1024, -float(2**43 - 1),
             (2**43 - 1) + 1023 / 1024, -5 / 1024, 100.125]
    other = [2.0**43, 0.1, 1e300, 5e-324, 1 / 2048, -0.0]
    stream = JSON_STREAM(ints + short + other)
    assert stream is not None
    text = stream[head:-3].decode()

    def exact(f: float) -> str:
        t = format(decimal.Decimal(f), "f")
        return t if "." in t else t + ".0"
    expected = [str(n) for n in ints] + [exact(f) for f in short] + [repr(f) for f in other]
    assert text == "[" + ",".join(expected) + "]"
    assert exact(1 / 1024) == "0.0009765625" and exact(-0.25) == "-0.25"


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 255, 256])
def test_strings_out_of_javascript_at_word_and_length_boundaries(context: ivm.Context, n: int) -> None:
    # V8 writes Latin-1 strings as one byte a character: their ASCII prefix is found eight
    # bytes at a time (libivm/copy_translate.cc), short ones are written in one step
    # (pickle.h, Emitter::Text); the general writer (transfer_out) is the reference.
    for tail in ["", "\xe9", "\xe9z", "\u0100", "\ud800", "😀"]:
        text = "a" * n + tail
        context.global_.set_sync("t", text)
        value = context.eval_sync("[t, {[t]: t}]", copy=True)
        assert value == [text, {text: text}], (n, tail)
        assert value == context.eval_sync("[t, {[t]: t}]", copy=True, transfer_out=True)


@pytest.mark.parametrize("text", ["ab", "a" * 7, "a" * 8, "a" * 9, "key" * 11, "x" * 100,
                                  "abcdefg\xe9", "abcdefgh\xe9", "\xe9abcdefgh", "a\ud800",
                                  "\x7f" * 9, "a\x00b", "😀a", "", "a", "\xe9"])
def test_fast_loader_reads_strings_as_the_decoder(text: str) -> None:
    import pickle

    # ASCII strs are made directly, the rest decoded (ivm/_cffi_load.c): both as pickle.
    for stream in (pickle.dumps(text, 5), pickle.dumps([text, {text: text}], 5)):
        fast, slow = _fast_and_pickle(stream)
        assert fast == slow and type(fast) is type(slow)
    value = _fast_and_pickle(pickle.dumps(text, 5))[0]
    assert value.isascii() == text.isascii() and len(value) == len(text)


def _fast_and_pickle(stream: bytes) -> tuple[Any, Any]:
    """ivm/_cffi_load.c's reading of `stream` and the pickle reader's (or its exception)."""
    from ivm._copy import LOAD_FAST, _Reader

    fast = LOAD_FAST(stream)
    try:
        slow: Any = _Reader(stream, None).load()
    except Exception as e:   # noqa: BLE001 - whatever pickle raises
        slow = e
    return fast, slow


@settings(max_examples=150, **SETTINGS)  # type: ignore[arg-type]
@given(value=any_values, memoize=st.booleans())
def test_fast_loader_reads_as_pickle_or_leaves_it(value: Any, memoize: bool) -> None:
    import io
    import pickle

    from ivm._copy import _Writer

    f = io.BytesIO()
    _Writer(f).dump([value, value] if memoize else value)
    stream = f.getvalue()
    fast, slow = _fast_and_pickle(stream)
    if fast is not NotImplemented:
        assert same(fast, slow), (value, fast, slow)
        if memoize and isinstance(value, (list, dict)):
            assert fast[0] is fast[1]
    # Data libivm's writer makes: the same value out of JavaScript (read by both).
    fast, slow = _fast_and_pickle(pickle.dumps(slow if not isinstance(slow, Exception) else 0, 5))
    assert fast is NotImplemented or same(fast, slow)


def test_fast_loader_leaves_attachments_and_bad_streams_to_pickle(context: ivm.Context) -> None:
    from ivm._copy import LOAD_FAST

    for body in STREAM_SHAPES:
        fast, slow = _fast_and_pickle(b"\x80\x05" + body + b".")
        if isinstance(slow, Exception):
            assert fast is NotImplemented, body
        else:
            assert fast is NotImplemented or same(fast, slow), body
    for bad in (b"", b".", b"\x80\x06N.", b"]\x8c\x05ab", b"Nh\x00.", b"\x95\xff" + b"\x00" * 7 + b"N.",
                b"civm._copy\n_buf\nK\x00\x85R.", b"cos\nsystem\n.", b"](K\x01u.", b"}K\x01s.",
                b"N(.", b"(Na.", b"](]]u.", b"civm._copy\n_date\nK\x01R."):
        assert LOAD_FAST(bad) is NotImplemented, bad
        assert isinstance(_fast_and_pickle(bad)[1], Exception), bad
    assert LOAD_FAST(b"](K\x01K\x02e.") == [1, 2]
    assert LOAD_FAST(b"civm._copy\n_undefined\n)R.") is ivm.undefined
    # Attachments go through pickle's reader, which has the value's buffers.
    assert context.eval_sync("new Uint8Array([1, 2]).buffer", copy=True) == b"\x01\x02"
    assert context.eval_sync("[1n, new Date(0), /a/g, new Map([[1, 2]]), new Set([3])]",
                             copy=True) == [ivm.JSBigInt(1), __import__("datetime").datetime(
                                 1970, 1, 1, tzinfo=__import__("datetime").timezone.utc),
                                 ivm.JSRegExp("a", "g"), ivm.JSMap({1: 2}), {3}]


def test_fast_loader_numbers_the_memo_as_pickle(context: ivm.Context) -> None:
    from ivm._copy import LOAD_FAST

    # A PUT at any index but the next one is pickle's to read (or refuse): the fast
    # reader would number the memo its own way.
    for gappy in (b"\x80\x05K\x01q\x05K\x02\x94h\x06\x87.", b"\x80\x05K\x01q\x03h\x03\x86.",
                  b"\x80\x05K\x01\x94K\x02q\x00h\x00\x86."):
        assert LOAD_FAST(gappy) is NotImplemented, gappy
    assert LOAD_FAST(b"\x80\x05K\x01q\x00K\x02\x94h\x00h\x01\x87.") == (2, 1, 2)


@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
def test_fast_loader_lets_an_interrupt_through(
        context: ivm.Context, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]) -> None:
    import ivm._copy as C

    calls = []

    def interrupted(*args: Any) -> Any:
        calls.append(args)
        raise error()
    # As a signal handler's KeyboardInterrupt would surface in the middle of a copy out:
    # it reaches the caller, once, instead of the copy starting over in pickle's reader.
    monkeypatch.setitem(C._ALLOWED, "_date", interrupted)
    with pytest.raises(error):
        context.eval_sync("[1, new Date(0)]", copy=True)
    assert len(calls) == 1


def _json_stream(text: bytes, length: int | None = None) -> bytes:
    n = len(text) if length is None else length
    return b"\x80\x05civm._copy\n_json\n\x8e" + n.to_bytes(8, "little") + text + b"\x85R."


def test_json_streams_made_by_hand(context: ivm.Context) -> None:
    ok, value = _read_stream(context, _json_stream('[1, {"a": "\xe9\\ud800", "b": -0}]'.encode("latin-1")))
    assert ok and same(value, [1, {"a": "\xe9\ud800", "b": -0.0}])
    assert _read_stream(context, _json_stream(b"[1,")) == (False, 1)   # JSON.parse's SyntaxError
    assert _read_stream(context, _json_stream(b"")) == (False, 1)
    # Not that form (a length that does not match), or longer than 2 MiB of text: the general
    # reader, which takes no _json.
    assert _read_stream(context, _json_stream(b"[1]", 2)) == (False, 9)
    assert _read_stream(context, _json_stream(b" " * (2 << 20) + b"1")) == (False, 9)
    assert _read_stream(context, _json_stream(b" " * ((2 << 20) - 1) + b"1")) == (True, 1)


# Streams of JSON data in shapes Python's pickle does not write (a host in C, a worker may):
# the JSON reader reads each as Python and the general reader do, or leaves it to the
# general reader. Each body is a stream without PROTO and STOP.
L, D, M, T0 = b"]", b"}", b"(", b")"   # EMPTY_LIST, EMPTY_DICT, MARK, EMPTY_TUPLE
APPEND, APPENDS, SETITEM, SETITEMS, MEMO = b"a", b"e", b"s", b"u", b"\x94"


def _int(n: int) -> bytes:
    return b"K" + bytes([n])


def _str(s: str) -> bytes:
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _get(slot: int) -> bytes:
    return b"h" + bytes([slot])


STREAM_SHAPES = [
    L + M + L + _int(5) + APPENDS,                                  # [[], 5]
    L + L + _int(5) + APPEND + APPEND,                              # [[5]]
    L + M + L + _int(5) + APPEND + _int(6) + APPENDS,               # [[5], 6]
    L + M + L + _int(5) + APPEND + L + D + APPENDS,                 # [[5], [], {}]
    D + _str("a") + D + SETITEM,                                    # {"a": {}}
    D + M + _str("a") + D + _str("b") + _int(1) + SETITEM + SETITEMS,   # {"a": {"b": 1}}
    D + M + _str("a") + D + _str("b") + _int(1) + SETITEMS,         # {"a": {}, "b": 1}
    L + M + _int(1) + APPENDS + M + APPENDS + M + _int(2) + _int(3) + APPENDS,
    L + M + L + M + L + APPENDS + _int(1) + APPENDS + _int(2) + APPENDS,   # [[[], 1], 2]
    D + M + _str("k") + MEMO + _int(1) + SETITEMS + L + APPEND,     # a dict appended to [] ...
    L + M + D + M + _str("k") + MEMO + _int(1) + SETITEMS + D + M + _get(0) + _int(2)
    + SETITEMS + APPENDS,                                           # [{"k": 1}, {"k": 2}]
    L + M + T0 + T0 + APPENDS,                                      # [[], []]
    L + M + T0 + MEMO + _get(0) + APPENDS,                          # one empty tuple twice
    L + MEMO + M + _str("s") + MEMO + _get(1) + APPENDS,            # a str twice
    L + M + _int(1) + APPEND,                                       # a mark inside APPEND
    L + _int(1) + M + APPEND + APPENDS,                             # a mark above the item
    L + M + L + MEMO + _get(0) + APPENDS,                           # one list twice
    D + M + _int(1) + _int(2) + SETITEMS,                           # not a str key: a Map
    L + M + _int(1) + SETITEMS,                                     # SETITEMS on a list
    D + _str("a") + APPEND,                                         # APPEND on a dict
    L + _int(1) + _int(2) + APPEND,                                 # APPEND on an int
    L + M + L + _int(1) + _int(2) + APPEND + APPENDS,               # [[2]] or [[], 1]?
]


def _read_stream(context: ivm.Context, stream: bytes) -> tuple[bool, Any]:
    """(True, the value read into JavaScript and copied back) or (False, the error kind)."""
    from ivm._ffi import ffi, lib

    out = ffi.new("ivm_value_t **")
    assert lib.ivm_value_new_serialized(stream, len(stream), out) == ffi.NULL
    argv = ffi.new("ivm_value_t *[]", [out[0]])
    code = b"globalThis.v = $0"
    result = ffi.new("ivm_value_t **")
    err = lib.ivm_context_eval_closure(context._ptr, code, len(code), argv, 1, ffi.NULL,
                                       ffi.NULL, ffi.NULL, result, ffi.NULL)
    lib.ivm_value_free(out[0])
    if err:
        kind = lib.ivm_error_kind(err)
        lib.ivm_error_free(err)
        return False, kind
    lib.ivm_value_free(result[0])
    return True, context.eval_sync("v", copy=True)


@pytest.mark.parametrize("body", STREAM_SHAPES, ids=range(len(STREAM_SHAPES)))
def test_stream_shapes_read_as_python_and_the_general_reader_read_them(
    context: ivm.Context, body: bytes
) -> None:
    import io
    import pickle

    undefined_call = b"civm._copy\n_undefined\n" + T0 + b"R"   # GLOBAL, (), REDUCE
    alone = b"\x80\x05" + body + b"."
    # The same value inside [value, undefined]: the general reader's (no memo slot moves).
    wrapped = b"\x80\x05" + L + M + body + undefined_call + APPENDS + b"."
    try:
        expected: Any = normalize(pickle.Unpickler(io.BytesIO(alone)).load())
        python_ok = True
    except Exception:
        python_ok = False
    general_ok, general = _read_stream(context, wrapped)
    twice = "Array.isArray(x) && typeof x[0] === 'object' && x[0] !== null && x[0] === x[1]"
    general_shared = general_ok and context.eval_sync(f"(x => {twice})(v[0])")
    ok, value = _read_stream(context, alone)
    assert ok == general_ok == python_ok, (ok, value, general_ok, general, python_ok)
    if ok:
        assert same(value, expected) and same(general[0], expected), (value, general, expected)
        # One object recalled twice stays one object, on both readers.
        shared = body in (STREAM_SHAPES[12], STREAM_SHAPES[16])
        assert context.eval_sync(f"(x => {twice})(v)") == general_shared == shared


def test_python_json_value_is_the_stream() -> None:
    from ivm._copy import JSON_STREAM
    from ivm._ffi import ffi, lib

    value = [{"id": i, "name": f"row-{i}", "value": i + 0.5} for i in range(3000)]
    out = ffi.new("ivm_value_t **")
    assert JSON_STREAM(value, ffi.buffer(out)) is True
    try:
        p = ffi.new("const char **")
        n = ffi.new("size_t *")
        lib.ivm_value_serialized(out[0], p, n)
        assert ffi.buffer(p[0], n[0])[:] == JSON_STREAM(value)
    finally:
        lib.ivm_value_free(out[0])
    assert JSON_STREAM(ivm.undefined, ffi.buffer(out)) is None
    assert JSON_STREAM([ivm.undefined], ffi.buffer(out)) is None
    with pytest.raises(ValueError, match="cannot hold a pointer"):
        JSON_STREAM([1], bytearray(2))
    with pytest.raises(BufferError):
        JSON_STREAM([1], b"12345678")   # not writable
    with pytest.raises(TypeError):
        JSON_STREAM()


def test_large_copies_of_changing_sizes_in_turn(context: Any) -> None:
    # The buffers of large copies are kept for the next ones (libivm/copy_buffers.cc): copies
    # of other sizes, larger and smaller, each both ways, come out whole and exact.
    for rows in (3000, 30000, 8000, 60000, 2000, 30000):
        value = [{"id": i, "name": f"row-{i}", "value": i + 0.5, "ok": i % 3 == 0}
                 for i in range(rows)]
        context.global_.set_sync("v", value, copy=True)
        assert context.eval_sync("v.length") == rows
        assert context.eval_sync("v", copy=True) == value
        ref = ivm.ExternalCopy(value)   # a pickled stream, transcoded by libivm
        assert ref.copy() == value
        context.global_.set_sync("w", ref.copy_into(), copy=False)
        assert context.eval_sync("JSON.stringify(w) === JSON.stringify(v)")


def test_a_long_lived_copy_does_not_keep_a_much_larger_kept_buffer(context: Any) -> None:
    # ExternalCopy results made right after a large copy freed its buffer into libivm's kept
    # ones (copy_buffers.cc) must not each hold a buffer many times their size: malloc's
    # in-use bytes grow by about what the copies hold.
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()]

    mallinfo2.restype = MallInfo2

    def in_use() -> int:
        m = mallinfo2()
        return int(m.uordblks + m.hblkhd)

    context.eval_sync("globalThis.big = Array.from({length: 40000}, (_, i) => "
                      "({id: i, name: 'row-' + i, value: i + 0.5})); globalThis.small = "
                      "Array.from({length: 5000}, (_, i) => ({id: i, name: 'r' + i})); 0")
    kept = []
    context.eval_sync("big", copy=True)
    before = in_use()
    for _ in range(40):
        context.eval_sync("big", copy=True)   # a large copy, read and freed
        kept.append(context.eval_sync("small", external_copy=True))
    held = sum(copy.size for copy in kept)
    assert in_use() - before < 3 * held   # with 4 MiB buffers kept: over 20 times
    assert kept[-1].copy()[4999] == {"id": 4999, "name": "r4999"}
    for copy in kept:
        copy.release()
