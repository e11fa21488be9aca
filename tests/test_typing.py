"""The package is fully typed: mypy --strict and pyright accept it as installed, and the
examples too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ivm


def test_mypy_strict_accepts_the_package(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is part of the test extra")
    # A copy of the installed package's Python sources and stubs, checked on its own
    # (run inside site-packages, mypy would take every module there for ours).
    package = Path(ivm.__file__).parent
    shutil.copytree(package, tmp_path / "ivm", ignore=shutil.ignore_patterns("*.so*", "include"))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", "ivm"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_py_typed_marker_is_installed() -> None:
    assert (Path(ivm.__file__).parent / "py.typed").is_file()


SAMPLE = '''
import ivm

async def main(ctx: ivm.Context, script: ivm.Script) -> None:
    reveal_type(ctx.eval_sync("1"))
    reveal_type(ctx.eval_sync("({})", reference=True))
    reveal_type(ctx.eval_sync("({})", external_copy=True))
    reveal_type(ctx.eval_sync("({})", copy=True))
    reveal_type(await ctx.eval("({})", reference=True))
    reveal_type(await ctx.eval("1", promise=True))
    reveal_type(script.run_sync(ctx, reference=True))
    reveal_type(await script.run(ctx))
    ivm.Callback(print, mode="asnyc")
    ctx.eval_closure_sync("return $0", "abc")
    ctx.eval_closure_sync("return $0", [1, "x"])
'''


def test_results_modes_and_arguments_are_typed_precisely(tmp_path: Path) -> None:
    """Issue 15: reference=True gives a Reference, external_copy=True an ExternalCopy, a
    plain call the primitive union; a misspelt Callback mode and a str as the argument
    list are type errors."""
    pytest.importorskip("mypy", reason="mypy is part of the test extra")
    package = Path(ivm.__file__).parent
    shutil.copytree(package, tmp_path / "ivm", ignore=shutil.ignore_patterns("*.so*", "include"))
    (tmp_path / "sample.py").write_text(SAMPLE)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--no-error-summary",
         "sample.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line.split(": ", 2)[1:] for line in proc.stdout.splitlines() if "sample.py" in line]
    notes = [text for kind, text in lines if kind == "note"]
    errors = [text for kind, text in lines if kind == "error"]
    def kind(revealed: str) -> str:
        name = revealed.removeprefix('Revealed type is "').rstrip('"')
        if "Undefined" in name:  # mypy spells the union several ways
            return "primitive" if "str" in name and "Reference" not in name else name
        return name.rpartition(".")[2]

    want = ["primitive", "Reference", "ExternalCopy", "Any", "Reference", "primitive",
            "Reference", "primitive"]
    assert [kind(n) for n in notes] == want, proc.stdout
    assert len(errors) == 2, proc.stdout
    assert "asnyc" in errors[0] and "mode" in errors[0], proc.stdout
    assert '"str"' in errors[1] and "list[Any]" in errors[1], proc.stdout


EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def run_pyright(tmp_path: Path, *targets: str) -> list[tuple[str, str, str]]:
    """pyright (in its default mode) on a copy of the installed package and `targets` in
    tmp_path: (file name, severity, message) of every diagnostic."""
    pytest.importorskip("pyright", reason="pyright is part of the test extra")
    if shutil.which("node") is None:
        pytest.skip("pyright needs node on PATH")
    package = Path(ivm.__file__).parent
    shutil.copytree(package, tmp_path / "ivm", ignore=shutil.ignore_patterns("*.so*", "include"))
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable,
         "ivm", *targets],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    return [(Path(d["file"]).name, d["severity"], d["message"])
            for d in report["generalDiagnostics"]]


def test_pyright_accepts_the_package_and_the_examples(tmp_path: Path) -> None:
    """Issue 15: pyright, too, passes on the package and docs/examples."""
    if not EXAMPLES.is_dir():
        pytest.skip("docs/examples is not beside the tests")
    for example in EXAMPLES.glob("*.py"):
        shutil.copy(example, tmp_path / example.name)
    found = run_pyright(tmp_path, *sorted(p.name for p in EXAMPLES.glob("*.py")))
    # The one warning allowed: the cffi extension has a stub (.pyi) and no Python source.
    errors = [d for d in found if d[1] == "error" or
              (d[1] == "warning" and "_ivm_cffi" not in d[2])]
    assert not errors, errors


def test_pyright_sees_the_precise_types(tmp_path: Path) -> None:
    (tmp_path / "sample.py").write_text(SAMPLE)
    found = [d for d in run_pyright(tmp_path, "sample.py") if d[0] == "sample.py"]
    revealed = [msg.rpartition(" is ")[2].strip('"') for _, kind, msg in found
                if kind == "information"]
    primitive = "Undefined | bool | int | float | str | None"
    assert revealed == [primitive, "Reference", "ExternalCopy", "Any", "Reference", primitive,
                        "Reference", primitive], found
    errors = [msg for _, kind, msg in found if kind == "error"]
    assert len(errors) == 2 and "asnyc" in errors[0] and "abc" in errors[1], found
