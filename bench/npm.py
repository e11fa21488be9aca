"""One file of an npm package, for the benchmarks that run real libraries (bench/run.py's
typescript, bench/snapshot.py's lodash): the package is fetched once with `npm pack` into
CACHE (~/.cache/ivm/npm, never into the repository) and read from its tarball."""

from __future__ import annotations

import glob
import os
import subprocess
import tarfile

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "ivm", "npm")


def package_file(name: str, major: int, path: str) -> str:
    """`path` (e.g. "lib/typescript.js") of npm's `name`@`major`, as text."""
    os.makedirs(CACHE, exist_ok=True)
    pattern = os.path.join(CACHE, f"{name}-{major}.*.tgz")
    packs = sorted(glob.glob(pattern))
    if not packs:
        subprocess.run(["npm", "pack", f"{name}@{major}"], cwd=CACHE, check=True,
                       capture_output=True, timeout=300)
        packs = sorted(glob.glob(pattern))
    with tarfile.open(packs[-1]) as tar:
        member = tar.extractfile(f"package/{path}")
        assert member is not None
        return member.read().decode("utf-8")
