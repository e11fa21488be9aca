"""``python -m ivm``: runs a file in an isolate and prints its result or error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
        ("2n ** 70n", str(2**70)),
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


def test_non_primitive_result_fails(tmp_path: Path) -> None:
    proc = ivm_cli("run", script(tmp_path, "({a: 1})"))
    assert proc.returncode != 0
    assert "Object" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_timeout(tmp_path: Path) -> None:
    proc = ivm_cli("run", script(tmp_path, "while (true) {}"), "--timeout", "0.2")
    assert proc.returncode != 0
    assert "timed out" in proc.stderr
    assert "Traceback" not in proc.stderr


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


def test_no_command_is_a_usage_error() -> None:
    proc = ivm_cli()
    assert proc.returncode != 0
    assert "usage" in proc.stderr


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
    assert result.returncode == 1 and "TimeoutError" in result.stderr
