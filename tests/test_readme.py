"""Every Python block of the README and of docs/**/*.md runs as a complete program, on its
own, in a fresh interpreter (issue 15: no block leans on another's names); every C block of
the docs compiles against the installed package alone and runs, printing the text block that
follows it, if one does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ivm

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks() -> list[tuple[str, str]]:
    found = []
    for path in FILES:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            found.append((f"{path.relative_to(ROOT)}#{i + 1}", block))
    return found


BLOCKS = blocks()


def c_blocks() -> list[tuple[str, str, str | None]]:
    """(name, C program, expected output or None) of the docs' C blocks. A block with its own
    main() is a program; the other blocks of a page are fragments, which are compiled together,
    in order, as the body of one main() that declares the handles they use without making
    them (`iso`, `ctx`)."""
    found = []
    for path in FILES:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        fences = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
        fragments = []
        for i, (lang, body) in enumerate(fences):
            if lang != "c":
                continue
            if "int main(" not in body:
                fragments.append(body)
                continue
            following = fences[i + 1] if i + 1 < len(fences) else None
            expected = following[1] if following and following[0] == "text" else None
            found.append((f"{path.relative_to(ROOT)}#c{len(found) + 1}", body, expected))
        if fragments:
            body = "\n".join(fragments)
            # The handles a page's fragments use without making them.
            given = "".join(f"  {decl} = NULL;\n" for decl, name in
                            (("ivm_isolate_t *iso", "iso"), ("ivm_context_t *ctx", "ctx"))
                            if re.search(rf"\b{name}\b", body)
                            and not re.search(rf"\*\s*{name}\s*[;=]", body))
            program = ('#include "ivm.h"\n#include <stddef.h>\n'
                       "int main(void) {\n" + given + body + "\n  return 0;\n}\n")
            found.append((f"{path.relative_to(ROOT)}#fragments", program, "COMPILE ONLY"))
    return found


C_BLOCKS = c_blocks()


def test_the_readme_has_examples() -> None:
    if not (ROOT / "README.md").is_file():
        pytest.skip("README.md is not beside the tests")
    assert sum(name.startswith("README") for name, _ in BLOCKS) >= 3


@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_block_runs_as_a_complete_program(code: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(ivm.__file__).parent.parent,  # the installed package, not the source tree
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_the_async_example_runs_under_trio_too() -> None:
    """The README's async block says "asyncio or trio alike": run its main() with trio."""
    pytest.importorskip("trio")
    code = next(c for name, c in BLOCKS if name.startswith("README") and "async def main" in c)
    code = code.replace("asyncio.run(main())", "import trio; trio.run(main)")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(ivm.__file__).parent.parent,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_the_docs_have_a_c_example() -> None:
    if not (ROOT / "docs").is_dir():
        pytest.skip("docs/ is not beside the tests")
    assert C_BLOCKS


@pytest.mark.parametrize(("code", "expected"), [(c, e) for _, c, e in C_BLOCKS],
                         ids=[name for name, _, _ in C_BLOCKS])
def test_c_block_compiles_and_runs(code: str, expected: str | None, tmp_path: Path) -> None:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    pkg = Path(ivm.__file__).parent
    source = tmp_path / "example.c"
    source.write_text(code, encoding="utf-8")
    exe = tmp_path / "example"
    build = subprocess.run(
        [cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-Wno-unused",
         "-Wno-unused-but-set-variable", "-I", str(pkg / "include"),
         str(source), "-o", str(exe), str(pkg / "libivm.so"), f"-Wl,-rpath,{pkg}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    if expected == "COMPILE ONLY":
        return
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if expected is not None:
        assert proc.stdout == expected
