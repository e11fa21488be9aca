"""Opt-in host basics (ivm.HostBasics, ivm_context_options_t.host): console, encoding, web
globals, inline and in worker processes (docs/host.md). Timers: tests/test_timers.py."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
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


# ---- console -------------------------------------------------------------------------

# (JavaScript arguments of console.log, the line node's console.log prints for them.)
NODE_LINES = [
    ("'a', 1, true, null, undefined", "a 1 true null undefined"),
    ("-0, 10n, Symbol('q'), 1.5e300", "-0 10n Symbol(q) 1.5e+300"),
    ("[\"it's\", 'a\"b', \"a'b\\\"c\", 'x\\x01\\n\\\\']",
     "[ \"it's\", 'a\"b', `a'b\"c`, 'x\\x01\\n\\\\' ]"),
    ("function f() {}, () => {}, async function g() {}, function* h() {}",
     "[Function: f] [Function (anonymous)] [AsyncFunction: g] [GeneratorFunction: h]"),
    ("class A {}, class B extends Array {}, Object.assign(function f() {}, {a: 1})",
     "[class A] [class B extends Array] [Function: f] { a: 1 }"),
    ("{a: {b: {c: {d: 1}}}}", "{ a: { b: { c: [Object] } } }"),
    ("(() => { const o = {x: 1}; o.self = o; o.arr = [o]; return o })()",
     "<ref *1> { x: 1, self: [Circular *1], arr: [ [Circular *1] ] }"),
    ("new Map([[1, {a: 1}]]), new Set(['a']), new WeakMap()",
     "Map(1) { 1 => { a: 1 } } Set(1) { 'a' } WeakMap { <items unknown> }"),
    ("new Uint8Array([1, 2, 3]), new ArrayBuffer(3)",
     "Uint8Array(3) [ 1, 2, 3 ] ArrayBuffer { [Uint8Contents]: <00 00 00>, byteLength: 3 }"),
    ("new Date(0), /a+/gi, [, 1, , , 2]",
     "1970-01-01T00:00:00.000Z /a+/gi [ <1 empty item>, 1, <2 empty items>, 2 ]"),
    ("Object.create(null), {get a() { return 1 }, set b(v) {}, get c() { return 1 }, set c(v) {}}",
     "[Object: null prototype] {} { a: [Getter], b: [Setter], c: [Getter/Setter] }"),
    ("{'a-b': 1, [Symbol('s')]: 2}, new Number(3), new String('ab')",
     "{ 'a-b': 1, [Symbol(s)]: 2 } [Number: 3] [String: 'ab']"),
    ("Promise.resolve(4), new Promise(() => {})", "Promise { 4 } Promise { <pending> }"),
    ("'%s %d %i %f %j %O %c %%', 'str', 42.5, 42.5, '3.5', {a: 1}, {b: 2}, 'css', 'extra'",
     "str 42.5 42 3.5 {\"a\":1} { b: 2 }  % extra"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "[\n  1, 2, 3, 4,  5,\n  6, 7, 8, 9, 10\n]"),
    ("{aaaaaaaaaaaaaaaaaaaaaaaa: 'b'.repeat(60), c: 1}",
     "{\n  aaaaaaaaaaaaaaaaaaaaaaaa: '" + "b" * 60 + "',\n  c: 1\n}"),
    ("new Proxy({a: 1}, {get() { throw 1 }}), new Proxy(function () {}, {})",
     "{ a: 1 } [Function (anonymous)]"),
    ("new Array(1e9)", "[ <1000000000 empty items> ]"),
]


@pytest.mark.parametrize("args, line", NODE_LINES)
def test_console_formats_as_node_does(
    host_context: ivm.Context, lines: list[tuple[str, str]], args: str, line: str
) -> None:
    assert host_context.eval_sync(f"console.log({args})") is ivm.undefined
    assert lines == [("log", line)]


def test_console_levels_in_order(host_context: ivm.Context, lines: list[tuple[str, str]]) -> None:
    host_context.eval_sync(
        """
        console.log('a'); console.info('b'); console.warn('c'); console.error('d');
        console.debug('e'); console.dir('f'); console.assert(1 === 1, 'never');
        console.assert(false, 'g', 1); console.assert(false); console.count(); console.count();
        console.count('x'); console.countReset(); console.count(); console.countReset('nope');
        console.group('h'); console.log('i\\nj'); console.groupEnd(); console.log('k');
        console.table([1]);
        """
    )
    assert lines == [
        ("log", "a"), ("info", "b"), ("warn", "c"), ("error", "d"), ("debug", "e"),
        ("dir", "'f'"), ("assert", "Assertion failed: g 1"), ("assert", "Assertion failed"),
        ("count", "default: 1"), ("count", "default: 2"), ("count", "x: 1"),
        ("count", "default: 1"), ("warn", "Warning: Count for 'nope' does not exist"),
        ("log", "h"), ("log", "  i\n  j"), ("log", "k"), ("log", "[ 1 ]"),
    ]


def test_console_trace_has_a_stack(host_context: ivm.Context, lines: list[tuple[str, str]]) -> None:
    host_context.eval_sync("function where() { console.trace('here %d', 5) }\nwhere()",
                           filename="t.js")
    assert lines == [("trace", "Trace: here 5\n    at where (t.js:1:28)\n    at t.js:2:1")]


def test_console_time(host_context: ivm.Context, lines: list[tuple[str, str]]) -> None:
    host_context.eval_sync(
        "console.time('t'); console.time('t'); console.timeLog('t', {a: 1}); console.timeEnd('t');"
        "console.timeEnd('t'); console.time(); console.timeEnd()"
    )
    assert [level for level, _ in lines] == ["warn", "time", "time", "warn", "time"]
    assert lines[0][1] == "Warning: Label 't' already exists for console.time()"
    assert lines[1][1].startswith("t: ") and lines[1][1].endswith("ms { a: 1 }")
    assert lines[2][1].startswith("t: ") and lines[2][1].endswith("ms")
    assert lines[3][1] == "Warning: No such label 't' for console.timeEnd()"
    assert lines[4][1].startswith("default: ")


def test_console_runs_no_user_code(host_context: ivm.Context, lines: list[tuple[str, str]]) -> None:
    ran = host_context.eval_sync(
        """
        let ran = 0;
        const trap = new Proxy({a: 1}, {get() { ran++; throw 1 }, ownKeys() { ran++; throw 2 },
            getOwnPropertyDescriptor() { ran++; throw 3 }, getPrototypeOf() { ran++; throw 4 }});
        Object.defineProperty(Object.prototype, 'constructor', {get() { ran++; throw 8 }});
        Object.defineProperty(Object.prototype, 'get', {get() { ran++; throw 7 }});
        Object.defineProperty(Object.prototype, 'value', {get() { ran++; throw 6 }});
        Error.prepareStackTrace = () => { ran++; throw 9 };
        const r = Proxy.revocable({}, {}); r.revoke();
        console.log(trap, [trap], {x: 1, get y() { ran++; return 2 }}, r.proxy);
        console.log('%s|%d|%i', {toString() { ran++ }}, {valueOf() { ran++; return 1 }}, {});
        console.log(new Error('boom'));
        ran
        """,
        filename="h.js",
    )
    assert ran == 0
    assert lines[0] == ("log", "{ a: 1 } [ { a: 1 } ] { x: 1, y: [Getter] } <Revoked Proxy>")
    assert lines[1] == ("log", "{ toString: [Function: toString] }|NaN|NaN")
    assert lines[2] == ("log", "Error: boom\n    at h.js:12:21")


def test_console_output_is_bounded(host_context: ivm.Context, lines: list[tuple[str, str]]) -> None:
    host_context.eval_sync(
        """
        const big = 'x'.repeat(10 * 1024 * 1024);
        console.log(big); console.log([big]); console.log('%s', big); console.dir(big);
        const wide = {}; for (let i = 0; i < 1e5; i++) wide['k' + i] = i; console.log(wide);
        console.log('é'.repeat(20000));
        """,
        timeout=30,
    )
    assert len(lines) == 6
    for _, text in lines:
        assert len(text.encode()) <= 16384 + 40
    assert lines[0][1].endswith("… [truncated to 16384 bytes]")
    assert lines[1][1].endswith("'... 10475760 more characters\n]")
    assert lines[5][1].endswith("é… [truncated to 16384 bytes]")


def test_console_max_bytes(any_isolate: ivm.Isolate) -> None:
    got: list[str] = []
    ctx = any_isolate.create_context_sync(
        host=ivm.HostBasics(console=lambda level, text: got.append(text), console_max_bytes=10)
    )
    ctx.eval_sync("console.log('0123456789abc'); console.log('01234567€')")
    assert got == ["0123456789… [truncated to 10 bytes]", "01234567… [truncated to 10 bytes]"]


def test_a_failing_sink_is_ignored(any_isolate: ivm.Isolate) -> None:
    def sink(level: str, text: str) -> None:
        raise RuntimeError("sink failed")

    ctx = any_isolate.create_context_sync(host=ivm.HostBasics(console=sink))
    assert ctx.eval_sync("console.log('a'); console.error({b: 1}); 7") == 7


def test_console_true_logs_to_the_ivm_logger(
    any_isolate: ivm.Isolate, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = any_isolate.create_context_sync(host=ivm.HostBasics(console=True))
    with caplog.at_level(logging.DEBUG, logger="ivm"):
        ctx.eval_sync("console.log('a'); console.warn('b'); console.error('c'); console.debug('d')")
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "ivm"] == [
        (logging.INFO, "a"), (logging.WARNING, "b"), (logging.ERROR, "c"), (logging.DEBUG, "d"),
    ]


def test_console_without_a_sink_writes_stderr(
    isolate: ivm.Isolate, capfd: pytest.CaptureFixture[str]
) -> None:
    opts = ffi.new("ivm_context_options_t *")
    opts.struct_size = ffi.sizeof("ivm_context_options_t")
    opts.host = lib.IVM_HOST_CONSOLE
    out = ffi.new("ivm_context_t **")
    assert lib.ivm_isolate_create_context(isolate._ptr, opts, out) == ffi.NULL
    ctx = ivm.Context._wrap(out[0], isolate)
    ctx.eval_sync("console.log({a: [1]}); console.warn('w')")
    assert capfd.readouterr().err == "log: { a: [ 1 ] }\nwarn: w\n"


@pytest.mark.anyio
async def test_console_in_async_calls(any_isolate: ivm.Isolate) -> None:
    got: list[tuple[str, str]] = []
    ctx = await any_isolate.create_context(
        host=ivm.HostBasics(console=lambda level, text: got.append((level, text)))
    )
    for i in range(3):
        await ctx.eval(f"console.log({i}); console.error([{i}])")
    assert got == [("log", "0"), ("error", "[ 0 ]"), ("log", "1"), ("error", "[ 1 ]"),
                   ("log", "2"), ("error", "[ 2 ]")]


def test_console_methods_are_functions(host_context: ivm.Context) -> None:
    names = host_context.eval_sync("Object.keys(console).join()")
    assert names == ("log,info,warn,error,debug,trace,assert,dir,dirxml,table,time,timeEnd,"
                     "timeLog,count,countReset,group,groupCollapsed,groupEnd")
    assert host_context.eval_sync("Object.keys(globalThis).includes('console')") is False
    assert host_context.eval_sync("console.log.name") == "log"
    with pytest.raises(ivm.JSError, match="not a constructor"):
        host_context.eval_sync("new console.log()")


# ---- encoding ------------------------------------------------------------------------

def js_lines(ctx: ivm.Context, code: str) -> list[str]:
    """Runs `code`, which fills `out`, and returns out's items as strings."""
    return str(ctx.eval_sync(f"(() => {{ const out = []; {code}; return out.join('\\n') }})()")).split("\n")


def test_text_encoder(host_context: ivm.Context) -> None:
    assert js_lines(host_context, """
        const te = new TextEncoder();
        out.push(te.encoding, String(te.encode('héllo😀\\ud800')), te.encode().length,
                 te.encode(12).join(), Object.prototype.toString.call(te));
        out.push(JSON.stringify(te.encodeInto('😀a', new Uint8Array(5))),
                 JSON.stringify(te.encodeInto('aé😀', new Uint8Array(4))));
        try { te.encodeInto('a', []) } catch (e) { out.push(e.name) }
    """) == [
        "utf-8", "104,195,169,108,108,111,240,159,152,128,239,191,189", "0", "49,50",
        "[object TextEncoder]", '{"read":3,"written":5}', '{"read":2,"written":3}', "TypeError",
    ]


def test_text_decoder(host_context: ivm.Context) -> None:
    codes = "split('').map(c => c.charCodeAt(0).toString(16)).join()"
    assert js_lines(host_context, f"""
        const td = new TextDecoder();
        out.push(td.encoding, td.fatal, td.ignoreBOM,
                 td.decode(new Uint8Array([0xEF, 0xBB, 0xBF, 0x68, 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80])),
                 td.decode(new Uint8Array([0xC3, 0x28, 0xF0, 0x9F, 0x41, 0xED, 0xA0, 0x80])).{codes},
                 td.decode(new Uint8Array([0x61, 0x62]).buffer), td.decode(new DataView(new ArrayBuffer(1))).length,
                 td.decode().length);
        try {{ new TextDecoder('utf-8', {{fatal: true}}).decode(new Uint8Array([0xff])) }}
        catch (e) {{ out.push(e.name + ': ' + e.message) }}
        for (const label of ['latin1', 'utf-32', 'x']) {{
            try {{ new TextDecoder(label) }} catch (e) {{ out.push(e.name + ': ' + e.message) }}
        }}
        const d16 = new TextDecoder(' UTF-16 ');
        out.push(d16.encoding, d16.decode(new Uint8Array([0xFF, 0xFE, 0x68, 0, 0x3D, 0xD8, 0x00, 0xDE, 0x41])).{codes});
        try {{ new TextDecoder('utf-16le', {{fatal: true}}).decode(new Uint8Array([0x00, 0xD8])) }}
        catch (e) {{ out.push(e.message) }}
        const s = new TextDecoder();
        out.push(s.decode(new Uint8Array([0xF0, 0x9F]), {{stream: true}}) + '|' +
                 s.decode(new Uint8Array([0x98, 0x80]), {{stream: true}}) + '|' + s.decode());
        out.push(new TextDecoder('utf8', {{ignoreBOM: true}}).decode(new Uint8Array([0xEF, 0xBB, 0xBF, 0x41])).length);
        try {{ td.decode('str') }} catch (e) {{ out.push(e.name) }}
        try {{ TextDecoder.prototype.decode.call({{}}) }} catch (e) {{ out.push(e.name) }}
    """) == [
        "utf-8", "false", "false", "hé😀", "fffd,28,fffd,41,fffd,fffd,fffd", "ab", "1", "0",
        "TypeError: The encoded data was not valid for encoding utf-8",
        'RangeError: The "latin1" encoding is not supported',
        'RangeError: The "utf-32" encoding is not supported',
        'RangeError: The "x" encoding is not supported',
        "utf-16le", "68,d83d,de00,fffd", "The encoded data was not valid for encoding utf-16le",
        "|😀|", "2", "TypeError", "TypeError",
    ]


def test_atob_btoa(host_context: ivm.Context) -> None:
    assert js_lines(host_context, """
        out.push(btoa('hello'), btoa(''), btoa('ab'), btoa('\\xff\\xfe'), atob('aGVsbG8='),
                 atob(' aGVs\\nbG8 '), atob('YQ'), atob('').length, btoa(12));
        for (const bad of ['a', 'a===', '*abc', 'ab=c', 'é']) {
            try { atob(bad); out.push('accepted ' + bad) }
            catch (e) { out.push(`${e.name} ${e.code} ${e instanceof Error} ${e.message}`) }
        }
        try { btoa('€') } catch (e) { out.push(e.name + ': ' + e.message) }
        try { atob() } catch (e) { out.push(e.name) }
    """) == [
        "aGVsbG8=", "", "YWI=", "//4=", "hello", "hello", "a", "0", "MTI=",
        *["InvalidCharacterError 5 true The string to be decoded is not correctly encoded."] * 5,
        "InvalidCharacterError: Invalid character", "TypeError",
    ]


# ---- web -----------------------------------------------------------------------------

def test_structured_clone(host_context: ivm.Context) -> None:
    assert js_lines(host_context, """
        const o = {a: [1, {b: new Date(0)}], m: new Map([[1, 2]]), s: new Set([3]), r: /x/g,
                   e: new RangeError('r'), big: 10n, u: new Uint8Array([1, 2])};
        o.self = o;
        const c = structuredClone(o);
        out.push(c !== o, c.self === c, c.a[1].b.getTime(), c.m.get(1), c.s.has(3), c.r,
                 c.e instanceof RangeError, c.e.message, c.big, c.u);
        const buf = new ArrayBuffer(8); new Uint8Array(buf)[0] = 7;
        const moved = structuredClone({buf}, {transfer: [buf]});
        out.push(buf.byteLength, moved.buf.byteLength, new Uint8Array(moved.buf)[0]);
        const bad = [() => 1, Symbol('x'), {f() {}}, new SharedArrayBuffer(1),
                     new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]))];
        for (const v of bad) { try { structuredClone(v) } catch (e) { out.push(e.name + ' ' + e.code) } }
        for (const t of [[buf], [1], [buf2 = new ArrayBuffer(1), buf2]]) {
            try { structuredClone(1, {transfer: t}) } catch (e) { out.push(e.name) }
        }
        try { structuredClone() } catch (e) { out.push(e.name) }
        try { structuredClone(1, 2) } catch (e) { out.push(e.name) }
    """.replace("buf2 =", "globalThis.buf2 =")) == [
        "true", "true", "0", "2", "true", "/x/g", "true", "r", "10", "1,2", "0", "8", "7",
        *["DataCloneError 25"] * 5, "DataCloneError", "DataCloneError", "DataCloneError",
        "TypeError", "TypeError",
    ]


def test_performance_now(host_context: ivm.Context) -> None:
    assert js_lines(host_context, """
        const t0 = performance.now(); let x = 0; for (let i = 0; i < 1e6; i++) x += i;
        const t1 = performance.now();
        out.push(t0 >= 0, t1 > t0, t1 < 60000,
                 Math.abs(t1 * 1000 - Math.round(t1 * 200) * 5) < 1e-6,
                 Math.abs(performance.timeOrigin - Date.now()) < 60000);
    """) == ["true"] * 5


def test_crypto(host_context: ivm.Context) -> None:
    assert js_lines(host_context, """
        const a = new Uint32Array(4); out.push(crypto.getRandomValues(a) === a, a.some(v => v !== 0));
        out.push(crypto.getRandomValues(new Uint8Array(65536)).length,
                 crypto.getRandomValues(new BigInt64Array(2)).length);
        for (const bad of [new Uint8Array(65537), new Float32Array(2), [1, 2], undefined]) {
            try { crypto.getRandomValues(bad) } catch (e) { out.push(e.name + ' ' + e.code) }
        }
        const u = crypto.randomUUID();
        out.push(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(u),
                 u !== crypto.randomUUID());
    """) == ["true", "true", "65536", "2", "QuotaExceededError 22", "TypeMismatchError 17",
             "TypeError undefined", "TypeError undefined", "true", "true"]


def test_each_item_alone(any_isolate: ivm.Isolate) -> None:
    groups = {
        "console": ("console",),
        "encoding": ("TextEncoder", "TextDecoder", "atob", "btoa"),
        "web": ("structuredClone", "performance", "crypto"),
    }
    for item, names in groups.items():
        ctx = any_isolate.create_context_sync(host=ivm.HostBasics(**{item: True}))
        for other, other_names in groups.items():
            want = "undefined" if other != item else None
            for name, kind in zip(other_names, types_of(ctx, other_names)):
                assert (kind == "undefined") == (want is not None), (item, name, kind)
        assert ctx.eval_sync("Object.keys(globalThis).length") == 0


# ---- must-holds: real libraries, hostile values ---------------------------------------

NPM_CACHE = Path(os.environ.get("IVM_NPM_CACHE", Path.home() / ".cache" / "ivm" / "npm"))
# (package@version, the UMD bundle inside its tarball)
BUNDLES = {
    "lodash": ("lodash@4.17.21", "package/lodash.js"),
    "marked": ("marked@12.0.2", "package/marked.min.js"),
    "handlebars": ("handlebars@4.7.8", "package/dist/handlebars.js"),
}


def npm_bundle(spec: str, member: str) -> str:
    """The text of `member` of npm package `spec`, fetched once with `npm pack` into
    NPM_CACHE (skips when npm is missing)."""
    name, version = spec.rsplit("@", 1)
    tarball = NPM_CACHE / f"{name}-{version}.tgz"
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is missing: cannot fetch the library bundles")
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "pack", spec, "--pack-destination", str(NPM_CACHE)],
                       check=True, capture_output=True, timeout=300)
    with tarfile.open(tarball) as tar:
        data = tar.extractfile(member)
        assert data is not None, f"{member} is not in {tarball}"
        return io.TextIOWrapper(data, encoding="utf-8").read()


@pytest.fixture(scope="module")
def bundles() -> dict[str, str]:
    return {name: npm_bundle(spec, member) for name, (spec, member) in BUNDLES.items()}


@pytest.mark.anyio
async def test_libraries_run_as_written(any_isolate: ivm.Isolate, bundles: dict[str, str]) -> None:
    """marked, handlebars and lodash (their UMD bundles, unchanged) load and work with host
    basics on, with no glue code; their own console calls arrive as lines."""
    got: list[tuple[str, str]] = []
    ctx = await any_isolate.create_context(
        host=ivm.HostBasics.all(console=lambda level, text: got.append((level, text)))
    )
    for name, code in bundles.items():
        await ctx.eval(code, filename=f"{name}.js", timeout=30)
    assert await ctx.eval("_.chunk([1, 2, 3, 4, 5], 2).map(c => c.join('')).join('|')") == "12|34|5"
    assert await ctx.eval("marked.parse('# hi *there*')") == "<h1>hi <em>there</em></h1>\n"
    assert await ctx.eval("Handlebars.compile('Hello {{name}}!')({name: 'w'})") == "Hello w!"
    await ctx.eval("Handlebars.log('error', 'from handlebars'); console.log(_.VERSION, [_.chunk])")
    assert got == [("error", "from handlebars"), ("log", "4.17.21 [ [Function: chunk] ]")]
    await ctx.eval("console.log(_); console.log(Handlebars); console.dir(marked)")
    assert len(got) == 5 and all(len(text.encode()) <= 16384 + 40 for _, text in got[2:])
    assert got[2][1].startswith("<ref *1> [Function: lodash] {")


@pytest.mark.anyio
async def test_console_never_fails(any_isolate: ivm.Isolate) -> None:
    """console.log of a function, a cycle, a Proxy (its traps never run) and a 10 MB string
    returns normally and quickly, with bounded lines, in sync and async calls."""
    got: list[tuple[str, str]] = []
    ctx = await any_isolate.create_context(
        host=ivm.HostBasics(console=lambda level, text: got.append((level, text)))
    )
    code = """{
        globalThis.trapped = 0;
        const handler = {};
        for (const trap of ['get', 'set', 'has', 'ownKeys', 'getOwnPropertyDescriptor',
                            'getPrototypeOf', 'apply', 'construct', 'defineProperty']) {
            handler[trap] = () => { trapped++; throw new Error(trap) };
        }
        const cycle = {name: 'c'}; cycle.self = cycle; cycle.list = [cycle, new Map([[cycle, cycle]])];
        const proxy = new Proxy({secret: 1}, handler);
        const big = 'y'.repeat(10 * 1024 * 1024);
        console.log(function f() {}, cycle, proxy, new Proxy(function g() {}, handler), big);
        console.log(big); console.error({big, proxy, cycle});
    } trapped"""
    assert await ctx.eval(code, timeout=30) == 0
    assert ctx.eval_sync(code, timeout=30) == 0
    assert len(got) == 6
    for _, text in got:
        assert len(text.encode()) <= 16384 + 40
    assert got[0][1].startswith(
        "[Function: f] <ref *1> {\n  name: 'c',\n  self: [Circular *1],\n"
        "  list: [ [Circular *1], Map(1) { [Circular *1] => [Circular *1] } ]\n}"
        " { secret: 1 } [Function: g] yyyy"
    )


@pytest.mark.anyio
async def test_lodash_timers_beside_text_encoder(
    any_isolate: ivm.Isolate, bundles: dict[str, str]
) -> None:
    """Must hold: a library that uses setTimeout (lodash's debounce, delay and defer, which
    it finds on the global as it loads) works unchanged, beside TextEncoder."""
    ctx = await any_isolate.create_context(host=ivm.HostBasics(timers=True, encoding=True))
    await ctx.eval(bundles["lodash"], filename="lodash.js", timeout=30)
    got = await ctx.eval(
        """new Promise(resolve => {
             const seen = [], encoder = new TextEncoder();
             const save = _.debounce(text => seen.push(encoder.encode(text).length), 20);
             save('a'); save('hé'); save('日本');
             _.delay(word => seen.push(word), 60, 'delayed');
             _.defer(() => seen.push('deferred'));
             setTimeout(() => resolve(seen), 100);
           })""",
        promise=True,
        copy=True,
        timeout=30,
    )
    assert got == ["deferred", 6, "delayed"]
