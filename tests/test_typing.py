"""The package is fully typed: mypy --strict accepts it as installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ivm


def test_mypy_strict_accepts_the_package() -> None:
    pytest.importorskip("mypy", reason="mypy is part of the test extra")
    site = Path(ivm.__file__).parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", "ivm"],
        cwd=site,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_py_typed_marker_is_installed() -> None:
    assert (Path(ivm.__file__).parent / "py.typed").is_file()
