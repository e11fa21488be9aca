"""``python -m ivm``: runs a file in an isolate and prints its result or error."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import ivm


def ivm_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # The environment (PYTHONPATH included) is inherited, and the child runs in the directory
    # that holds the imported ivm package: `-m` puts the working directory first on sys.path,
    # so from the source tree it would import the uncompiled ivm/ there instead.
    return subprocess.run(
        [sys.executable, "-m", "ivm", *args],
        cwd=Path(ivm.__file__).parent.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


def script(tmp_path: Path, code: str, name: str = "main.js") -> str:
    path = tmp_path / name
    path.write_text(code, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("code", "printed"),
    [
        ("'hi ' + 6 * 7", "hi 42"),
        ("6 * 7", "42"),
        ("1.5", "1.5"),
        ("2n ** 70n", str(2**70) + "n"),
        ("undefined", "undefined"),
        ("null", "null"),
        ("true", "true"),
        ("false", "false"),
        ("NaN", "NaN"),
        ("-Infinity", "-Infinity"),
        ("'caf\u00e9'", "caf\u00e9"),
        ("'line1\\nline2'", "line1\nline2"),
    ],
)
def test_run_prints_result(tmp_path: Path, code: str, printed: str) -> None:
    proc = ivm_cli("run", script(tmp_path, code))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == printed + "\n"
    assert proc.stderr == ""


def test_run_multiline_program(tmp_path: Path) -> None:
    code = "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) }\nfib(20)\n"
    proc = ivm_cli("run", script(tmp_path, code))
    assert (proc.returncode, proc.stdout) == (0, "6765\n")


def test_error_prints_stack_and_fails(tmp_path: Path) -> None:
    path = script(tmp_path, "1;\n\nthrow new TypeError('bad thing')\n", "err.js")
    proc = ivm_cli("run", path)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "TypeError: bad thing" in proc.stderr
    assert f"{path}:3:" in proc.stderr


def test_syntax_error_fails(tmp_path: Path) -> None:
    proc = ivm_cli("run", script(tmp_path, "let x = ;"))
    assert proc.returncode != 0
    assert "SyntaxError" in proc.stderr


def test_objects_print_in_nodes_style(tmp_path: Path) -> None:
    """Any result prints, as node's util.inspect would show it: nesting, cycles, Maps,
    functions, getters (not run), holes, null prototypes, typed arrays, errors."""
    code = (
        "const o = {a: 1, s: 'x', f() {}, m: new Map([[1, 'one']]), t: new Uint8Array(2),"
        " get g() { throw new Error('never run') }, n: Object.create(null)};"
        " o.self = o; o.holes = [1, , 3]; o"
    )
    proc = ivm_cli("run", script(tmp_path, code))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for part in ["<ref *1> {", "a: 1", "s: 'x'", "f: [Function: f]", "m: Map(1) { 1 => 'one' }",
                 "t: Uint8Array(2) [ 0, 0 ]", "g: [Getter]", "n: [Object: null prototype] {}",
                 "self: [Circular *1]", "holes: [ 1, <1 empty item>, 3 ]"]:
        assert part in out, out
    err = ivm_cli("eval", "new RangeError('shown, not thrown')")
    assert err.returncode == 0 and err.stdout.startswith("RangeError: shown, not thrown\n    at ")


def test_promise_results_are_awaited_and_json_prints_json() -> None:
    assert ivm_cli("eval", "Promise.resolve({a: [1, 'x']})").stdout == "{ a: [ 1, 'x' ] }\n"
    assert ivm_cli("eval", "--json", "Promise.resolve({a: [1, 'x']})").stdout == '{"a":[1,"x"]}\n'
    assert ivm_cli("eval", "--json", "undefined").stdout == "undefined\n"
    rejected = ivm_cli("eval", "Promise.reject(new TypeError('later'))")
    assert rejected.returncode == 1 and "TypeError: later" in rejected.stderr


def test_output_is_bounded() -> None:
    proc = ivm_cli("eval", "({big: 'x'.repeat(1e7), many: Array.from({length: 1e5}, (_, i) => i)})")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) < 100_000
    assert "more characters" in proc.stdout and "..." in proc.stdout


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["eval", "6 * 7"], 0, ""),
        (["eval", "throw new TypeError('boom')"], 1, "TypeError: boom"),
        (["eval", "let = ;"], 1, "SyntaxError"),
        (["eval", "--memory-limit", "4", "1"], 2, "memory_limit"),
        (["eval", "--timeout", "0", "1"], 2, "--timeout"),
        (["run", "/nonexistent/x.js"], 2, "cannot read"),
        (["eval", "--timeout", "0.2", "while (true) {}"], 3, "TimeoutError"),
        (["eval", "--memory-limit", "16", "const a = []; while (true) a.push(new Array(1e5).fill(1))"],
         4, "MemoryLimitError"),
        (["eval", "--isolated", "'x'.repeat(2 ** 27).split('')"], 5, "IsolateCrashedError"),
    ],
    ids=["ok", "throw", "syntax", "bad-limit", "bad-timeout", "unreadable", "timeout", "memory",
         "crash"],
)
def test_every_documented_exit_status(args: list[str], status: int, says: str) -> None:
    proc = ivm_cli(*args)
    assert proc.returncode == status, proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"  {status}  " in ivm_cli("--help").stdout  # documented in --help


def test_timeout(tmp_path: Path) -> None:
    proc = ivm_cli("run", script(tmp_path, "while (true) {}"), "--timeout", "0.2")
    assert proc.returncode != 0
    assert "timed out" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["run", "eval"])
def test_options_before_the_command_apply(tmp_path: Path, command: str) -> None:
    # argparse would let the command's own defaults overwrite them (a hang here: no timeout).
    def target(code: str, name: str) -> str:
        return script(tmp_path, code, name) if command == "run" else code

    proc = ivm_cli("--timeout", "0.2", command, target("while (true) {}", "loop.js"), timeout=30)
    assert proc.returncode != 0 and "timed out" in proc.stderr, proc.stderr
    assert ivm_cli("--json", command, target("({a: [1, 2.5]})", "obj.js")).stdout == '{"a":[1,2.5]}\n'
    assert ivm_cli("--no-host", command, target("typeof console", "bare.js")).stdout == "undefined\n"
    # 24 MB of live data (as test_memory_limit_is_applied): too much for 16 MB.
    big = target("const k = []; for (let i = 0; i < 60; i++) k.push(new Array(1e5).fill(1.5)); "
                 "k.length", "big.js")
    assert ivm_cli("--memory-limit", "16", command, big, "--timeout", "60").returncode != 0
    # After the command, as before; and one given after the command wins over one before it.
    assert ivm_cli(command, big, "--timeout", "60").stdout == "60\n"
    assert ivm_cli("--memory-limit", "16", command, big, "--memory-limit", "128").stdout == "60\n"


def test_timeout_not_reached(tmp_path: Path) -> None:
    proc = ivm_cli("run", script(tmp_path, "'quick'"), "--timeout", "30")
    assert (proc.returncode, proc.stdout) == (0, "quick\n")


def test_memory_limit(tmp_path: Path) -> None:
    code = "const a = []; while (true) a.push(new Array(1e5).fill(1))"
    proc = ivm_cli("run", script(tmp_path, code), "--memory-limit", "16", "--timeout", "60")
    assert proc.returncode != 0
    assert "MemoryLimitError" in proc.stderr or "memory limit" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_memory_limit_is_applied(tmp_path: Path) -> None:
    # 24 MB of live data: fine under the default limit, too much for 16 MB.
    code = "const k = []; for (let i = 0; i < 60; i++) k.push(new Array(1e5).fill(1.5)); k.length"
    path = script(tmp_path, code)
    assert ivm_cli("run", path, "--timeout", "60").stdout == "60\n"
    assert ivm_cli("run", path, "--memory-limit", "16", "--timeout", "60").returncode != 0


@pytest.mark.parametrize(
    "args",
    [["--memory-limit", "4"], ["--timeout", "0"], ["--timeout", "-1"], ["--memory-limit", "x"]],
)
def test_invalid_options(tmp_path: Path, args: list[str]) -> None:
    proc = ivm_cli("run", script(tmp_path, "1"), *args)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr


def test_missing_file(tmp_path: Path) -> None:
    proc = ivm_cli("run", str(tmp_path / "missing.js"))
    assert proc.returncode != 0
    assert "missing.js" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_a_command_a_repl_reads_lines() -> None:
    """The REPL: one context for the session, multi-line input, results in node's style,
    errors shown without ending it, .exit. (Piped input: no prompts; the status is the last
    error's.)"""
    session = "let x = 20\nfunction f(a) {\n  return a * 2\n}\nf(x + 1)\n'str'\nthrow new Error('oops')\n" \
              "x\n.exit\nnever\n"
    proc = subprocess.run(
        [sys.executable, "-m", "ivm"], cwd=Path(ivm.__file__).parent.parent, input=session,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.split("\n")[:5] == ["undefined", "undefined", "42", "'str'", "20"], proc.stdout
    assert "Error: oops" in proc.stderr and "never" not in proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert ivm_cli().returncode == 0  # no input at all: an empty session


def test_version() -> None:
    proc = ivm_cli("--version")
    assert proc.returncode == 0
    assert ivm.__version__ in proc.stdout
    assert ivm.v8_version in proc.stdout
    assert ivm.v8_version.startswith("10.2.")


def test_run_a_module_with_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    script(tmp_path, "export const base = 40; export const url = import.meta.url;", "lib/base.mjs")
    script(tmp_path, "import {base} from './base.mjs'; export const two = base + 2;", "lib/two.mjs")
    entry = script(
        tmp_path,
        "import {two} from './lib/two.mjs';\n"
        "const {url} = await import('./lib/base.mjs');\n"
        "export default `${two} ${url.endsWith('/lib/base.mjs')}`;",
        "app.mjs",
    )
    result = ivm_cli("run", entry)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42 true\n"


def test_module_imports_stay_below_the_root(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    script(tmp_path, "export default 'secret';", "outside.mjs")
    entry = script(tmp_path, "import s from '../outside.mjs'; export default s;", "app/main.mjs")
    refused = ivm_cli("run", entry)
    assert refused.returncode == 1
    assert "outside the root" in refused.stderr and "../outside.mjs" in refused.stderr
    assert ivm_cli("run", entry, "--root", str(tmp_path)).stdout == "secret\n"
    bare = script(tmp_path, "import _ from 'lodash';", "app/bare.mjs")
    result = ivm_cli("run", bare)
    assert result.returncode == 1 and "only relative paths" in result.stderr
    missing = script(tmp_path, "import x from './nope.mjs';", "app/missing.mjs")
    result = ivm_cli("run", missing)
    assert result.returncode == 1 and "nope.mjs" in result.stderr
    (tmp_path / "app" / "link.mjs").symlink_to(tmp_path / "outside.mjs")
    linked = script(tmp_path, "import s from './link.mjs';", "app/linked.mjs")
    result = ivm_cli("run", linked)
    assert result.returncode == 1 and "outside the root" in result.stderr
    dynamic = script(tmp_path, "await import('../outside.mjs');", "app/dynamic.mjs")
    result = ivm_cli("run", dynamic)
    assert result.returncode == 1 and "outside the root" in result.stderr


def test_module_flag_and_errors(tmp_path: Path) -> None:
    entry = script(tmp_path, "export default await Promise.resolve(7);", "plain.js")
    assert ivm_cli("run", entry).returncode != 0  # not a module without --module
    assert ivm_cli("run", "--module", entry).stdout == "7\n"
    failing = script(tmp_path, "await null;\nthrow new TypeError('boom');", "fail.mjs")
    result = ivm_cli("run", failing)
    assert result.returncode == 1 and "TypeError: boom" in result.stderr and "fail.mjs:2" in result.stderr
    hang = script(tmp_path, "await new Promise(() => {});", "hang.mjs")
    result = ivm_cli("run", hang, "--timeout", "0.3")
    assert result.returncode == 3 and "TimeoutError" in result.stderr


CONSOLE_PROGRAM = """
console.log('out', {a: [1]}); console.warn('warn'); console.info('info'); console.error('err');
console.debug('debug'); console.dir('dir'); console.count(); console.trace('tr');
console.assert(false, 'as'); console.time('t'); console.timeEnd('t');
[typeof atob, typeof TextEncoder, typeof structuredClone, typeof crypto].join()
"""


@pytest.mark.parametrize("command", ["run", "eval"])
def test_console_goes_to_stdout_and_stderr(tmp_path: Path, command: str) -> None:
    target = script(tmp_path, CONSOLE_PROGRAM) if command == "run" else CONSOLE_PROGRAM
    proc = ivm_cli(command, target)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[:5] == ["out { a: [ 1 ] }", "info", "debug", "'dir'", "default: 1"]
    assert out[5].startswith("t: ") and out[5].endswith("ms")
    assert out[6] == "function,function,function,object"
    err = proc.stderr.splitlines()
    assert err[:3] == ["warn", "err", "Trace: tr"]
    assert err[3].startswith("    at ") and err[-1] == "Assertion failed: as"


def test_no_host_gives_a_bare_context(tmp_path: Path) -> None:
    proc = ivm_cli("eval", "--no-host",
                   "[typeof console, typeof TextEncoder, typeof setTimeout, typeof crypto].join()")
    assert (proc.returncode, proc.stdout) == (0, "undefined,undefined,undefined,undefined\n")
    proc = ivm_cli("eval", "--no-host", "console.log(1)")
    assert proc.returncode == 1 and "ReferenceError: console is not defined" in proc.stderr


def test_console_in_the_repl() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ivm"], cwd=Path(ivm.__file__).parent.parent,
        input="console.log('a', [1])\nconsole.error('b')\n.exit\n",
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "a [ 1 ]\nundefined\nundefined\n"
    assert proc.stderr == "b\n"
    proc = subprocess.run(
        [sys.executable, "-m", "ivm", "--no-host"], cwd=Path(ivm.__file__).parent.parent,
        input="typeof console\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout == "'undefined'\n"


def test_console_output_is_bounded_in_the_cli(tmp_path: Path) -> None:
    proc = ivm_cli("eval", "console.log('x'.repeat(1e7)); 1")
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.endswith("… [truncated to 16384 bytes]") and len(first.encode()) < 16500
    assert second == "1"


def test_results_quote_and_name_as_console_does() -> None:
    """The CLI's results and console lines come from one formatter (libivm's): they agree on
    quotes and function kinds."""
    code = "x = [\"it's\", `a'b\"c`, 'a\\x01\\v', function* g() {}, async () => 1]; console.log(x); x"
    proc = ivm_cli("eval", code)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split("\n[")
    assert len(printed) == 2 and printed[0] == "[" + printed[1].rstrip("\n")
    assert printed[0] == ("[\n  \"it's\",\n  `a'b\"c`,\n  'a\\x01\\x0B',\n  [GeneratorFunction: g],\n"
                          "  [AsyncFunction (anonymous)]\n]")


# -- --inspect and --inspect-brk (docs/devtools.md) ----------------------------------------


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--inspect=notaport"], "expected [HOST:]PORT"),
        (["--inspect-brk=127.0.0.1:70000"], "expected [HOST:]PORT"),
        (["--inspect=1", "--inspect-brk=2"], "give one of them"),
    ],
)
def test_inspect_flags_are_checked(tmp_path: Path, flags: list[str], says: str) -> None:
    proc = ivm_cli("run", *flags, script(tmp_path, "1"))
    assert proc.returncode == 2
    assert says in proc.stderr
    assert proc.stdout == ""


def test_inspect_on_a_taken_port_is_a_usage_error(tmp_path: Path) -> None:
    pytest.importorskip("websockets")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = ivm_cli("run", f"--inspect={port}", script(tmp_path, "1"))
    assert proc.returncode == 2
    assert "ivm: --inspect: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inspect_serves_while_the_program_runs(tmp_path: Path) -> None:
    pytest.importorskip("websockets")
    # A bare --inspect (the default address) must leave the file name alone; 9229 may be
    # taken on this machine, which is then a clean usage error naming the address.
    proc = ivm_cli("run", "--inspect", script(tmp_path, "'ran ' + 6 * 7"))
    if proc.returncode == 2:
        assert "ivm: --inspect: " in proc.stderr and "9229" in proc.stderr
    else:
        assert (proc.returncode, proc.stdout) == (0, "ran 42\n"), proc.stderr
        assert re.search(r"^Debugger listening on ws://127\.0\.0\.1:9229/[-0-9a-f]{36}$",
                         proc.stderr, re.M)


@pytest.mark.parametrize("placement", [[], ["--isolated"]], ids=["inline", "isolated"])
def test_inspect_brk_waits_pauses_on_the_first_line_and_runs_on(
        tmp_path: Path, placement: list[str]) -> None:  # fmt: skip
    pytest.importorskip("websockets")
    from websockets.sync.client import connect

    path = script(tmp_path, "const a = 20;\nconst b = a + 1;\n'answer ' + (a * 2 + b / 21)\n")
    with subprocess.Popen(
        [sys.executable, "-m", "ivm", "run", *placement, "--inspect-brk=127.0.0.1:0", path],
        cwd=Path(ivm.__file__).parent.parent, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as child:  # fmt: skip
        try:
            assert child.stderr is not None and child.stdout is not None
            listening = child.stderr.readline()
            found = re.fullmatch(r"Debugger listening on (ws://127\.0\.0\.1:\d+/[-0-9a-f]{36})\n", listening)
            assert found, listening
            assert child.stderr.readline().startswith("For help, see: ")
            with connect(found.group(1), max_size=None) as ws:
                assert child.stderr.readline() == "Debugger attached.\n"

                scripts: dict[str, str] = {}  # scriptId -> url

                def until(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
                    while True:
                        message: dict[str, Any] = json.loads(ws.recv(timeout=60))
                        if message.get("method") == "Debugger.scriptParsed":
                            scripts[message["params"]["scriptId"]] = message["params"]["url"]
                        if check(message):
                            return message

                def call(call_id: int, method: str, **params: object) -> dict[str, Any]:
                    ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
                    return until(lambda m: m.get("id") == call_id)

                call(1, "Debugger.enable")
                call(2, "Debugger.setBreakpointByUrl", url=path, lineNumber=2)
                call(3, "Runtime.runIfWaitingForDebugger")
                paused = until(lambda m: m.get("method") == "Debugger.paused")
                frame = paused["params"]["callFrames"][0]
                location = frame["location"]
                assert (scripts[location["scriptId"]], location["lineNumber"]) == (path, 0)
                assert child.poll() is None  # paused before its first statement
                call(4, "Debugger.resume")
                paused = until(lambda m: m.get("method") == "Debugger.paused")
                frame = paused["params"]["callFrames"][0]
                assert frame["location"]["lineNumber"] == 2  # the breakpoint
                reply = call(5, "Debugger.evaluateOnCallFrame", callFrameId=frame["callFrameId"],
                             expression="a + b")
                assert reply["result"]["result"]["value"] == 41
                call(6, "Debugger.resume")
                assert child.wait(timeout=60) == 0
            assert child.stdout.read() == "answer 41\n"
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
