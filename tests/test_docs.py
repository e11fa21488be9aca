"""The documentation builds: Sphinx, with the guide, the API reference generated from the
installed package's docstrings and the design notes, and warnings as errors (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ivm

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_documentation_builds_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="sphinx is part of the test extra")
    pytest.importorskip("myst_parser", reason="myst-parser is part of the test extra")
    if not (DOCS / "conf.py").is_file():
        pytest.skip("docs/ is not beside the tests")
    proc = subprocess.run(
        # -P: autodoc imports the installed ivm, never the source tree's (no compiled parts).
        [sys.executable, "-P", "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    # The reference documents every public name of the package.
    missing = [name for name in ivm.__all__ if f'id="ivm.{name}"' not in api]
    assert not missing, missing
    for page in ("guide/quickstart.html", "guide/security.html", "guide/c-abi.html"):
        assert (tmp_path / "html" / page).is_file()
