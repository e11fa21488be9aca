"""The package is fully typed: mypy --strict accepts it as installed."""

from __future__ import annotations

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
