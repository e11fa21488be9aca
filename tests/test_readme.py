"""Every Python block of the README and of docs/*.md runs as a complete program, on its
own, in a fresh interpreter (issue 15: no block leans on another's names)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ivm

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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
