#!/usr/bin/env python3
"""Provide the V8 that ivm builds against: a private prefix unpacked from Debian packages.

V8 comes from Debian bookworm's ``libnode108`` (Node.js 18, V8 10.2), whose shared library
``libnode.so.108`` exports the V8 API, and ``libnode-dev``, which carries V8's headers. The
packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a cache
directory; nothing is installed system-wide, so no root is needed once the package lists
exist. Any library that libnode needs and the machine lacks (``libcares.so.2`` on a bare
bookworm) is unpacked beside it and reported under "ship", so the Meson build can install it
next to libivm and the installed package stays self-contained.

Usage::

    python tools/build_v8.py                  # make sure the prefix exists, print a summary
    python tools/build_v8.py --print-prefix   # stdout: the prefix path only (for Meson)
    python tools/build_v8.py --print-json     # stdout: include dir, lib dir, libs, versions
    python tools/build_v8.py --print-meson    # stdout, for meson.build: the include dir,
                                              # the inspector's include dir, then
                                              # "soname<TAB>file" per library to ship

V8's inspector API (``v8-inspector.h``) is exported by libnode.so.108 but its header is not in
libnode-dev. It comes from Debian's ``nodejs`` source package of the same upstream version:
``apt-get source --download-only`` with a private deb-src list derived at run time from this
machine's own apt sources (apt checks the tarball against the signed Sources index), of
which only ``deps/v8/include/v8-inspector*.h`` (and ``v8-version.h``, to check that it is the
same V8) are kept, in a directory of the cache beside the prefixes.

Environment:

    IVM_V8_PREFIX   use this prefix (must hold include/node/v8.h or include/v8.h and
                    libnode.so.108 or libv8.so) instead of fetching anything
    IVM_V8_CACHE    cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/ivm/v8)

Standard library only; Python 3.9+. Progress goes to stderr, answers to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

# --- Recorded versions (bookworm) -------------------------------------------------------
# libnode108 and libnode-dev come from the same source package and must match exactly.
NODE_VERSION = "18.20.4+dfsg-1~deb12u3"
NODE_MAJOR = "18"  # a fallback version must keep this upstream major (same V8 ABI line)
PINNED: Dict[str, str] = {
    "libnode108": NODE_VERSION,
    "libnode-dev": NODE_VERSION,
    "libc-ares2": "1.18.1-3",
}
NODE_PACKAGES = ("libnode108", "libnode-dev")
LIBNODE_SONAME = "libnode.so.108"
# Shipped whenever it is found in the prefix, even if this machine happens to have it:
# a bare bookworm does not.
ALWAYS_SHIP = frozenset({"libcares.so.2"})
# Libraries every Linux system has; never shipped.
NEVER_SHIP = frozenset({
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libstdc++.so.6", "libgcc_s.so.1",
})
STAMP = "ivm-v8-stamp.json"
STAMP_FORMAT = 1


class BuildV8Error(Exception):
    """A problem that needs the user's attention; the message names the fix."""


def log(msg: str) -> None:
    print(f"[build_v8] {msg}", file=sys.stderr, flush=True)


def shout(msg: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n[build_v8] WARNING: {msg}\n{bar}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], *, cwd: Optional[Path] = None, check: bool = True,
        quiet: bool = False) -> subprocess.CompletedProcess:
    if not quiet:
        log("$ " + " ".join(cmd))
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and proc.returncode != 0:
        raise BuildV8Error(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stdout}{proc.stderr}".rstrip())
    return proc


# --- Paths ---------------------------------------------------------------------------------

def cache_root() -> Path:
    env = os.environ.get("IVM_V8_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(xdg).expanduser() / "ivm" / "v8").resolve()


def cache_key() -> str:
    """Directory name: changes whenever a recorded version does."""
    try:
        arch = run(["dpkg", "--print-architecture"], quiet=True).stdout.strip()
    except (OSError, BuildV8Error):
        arch = os.uname().machine
    pins = json.dumps([PINNED, STAMP_FORMAT], sort_keys=True).encode()
    key = f"libnode108-{NODE_VERSION}-{arch}-{hashlib.sha256(pins).hexdigest()[:8]}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Serialise concurrent builds that share one cache."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- Prefix layout ---------------------------------------------------------------------------

def find_include_dir(prefix: Path) -> Optional[Path]:
    for cand in (prefix / "usr/include/node", prefix / "include/node",
                 prefix / "usr/include/v8", prefix / "include/v8", prefix / "include"):
        if (cand / "v8.h").is_file() and (cand / "libplatform/libplatform.h").is_file():
            return cand
    return None


def find_libnode(prefix: Path) -> Optional[Path]:
    """The library that defines V8's symbols: libnode.so.108, else a libv8.so."""
    dirs = [prefix / "usr/lib", prefix / "lib", prefix / "lib64"]
    dirs = [d for base in dirs for d in [base, *sorted(base.glob("*-linux-gnu*"))]]
    for name in (LIBNODE_SONAME, "libv8.so"):
        for d in dirs:
            if (d / name).exists():
                return d / name
    return None


def needed(lib: Path) -> List[str]:
    """DT_NEEDED entries of an ELF file (readelf comes with binutils, like the compiler)."""
    if shutil.which("readelf") is None:
        raise BuildV8Error("readelf not found: install binutils (apt-get install binutils)")
    out = run(["readelf", "-d", "-W", str(lib)], quiet=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def soname(lib: Path) -> str:
    out = run(["readelf", "-d", "-W", str(lib)], quiet=True).stdout
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return m.group(1) if m else lib.name


_system_libs: Optional[set] = None


def system_has(name: str) -> bool:
    """Whether the dynamic loader finds `name` without our help."""
    global _system_libs
    if _system_libs is None:
        _system_libs = set()
        ldconfig = shutil.which("ldconfig") or next(
            (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
        if ldconfig:
            out = run([ldconfig, "-p"], check=False, quiet=True).stdout
            _system_libs = set(re.findall(r"^\s*(\S+) \(", out, re.M))
    if name in _system_libs:
        return True
    dirs = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"]
    dirs += [str(p) for d in ("/lib", "/usr/lib") for p in Path(d).glob("*-linux-gnu*")]
    return any(os.path.exists(os.path.join(d, name)) for d in dirs)


def libs_to_ship(prefix: Path) -> List[Tuple[str, Path]]:
    """(soname, real file) for libnode and each library it needs that the machine lacks.

    Meson installs each one, under its soname, next to libivm, and links libivm directly
    against all of them (RUNPATH of libivm does not apply to libnode's own dependencies,
    but an already-loaded soname satisfies them).
    """
    libnode = find_libnode(prefix)
    if libnode is None:
        raise BuildV8Error(f"no {LIBNODE_SONAME} or libv8.so under {prefix}")
    libdir = libnode.parent
    ship: Dict[str, Path] = {soname(libnode.resolve()): libnode.resolve()}
    todo = [libnode.resolve()]
    missing: List[str] = []
    while todo:
        for name in needed(todo.pop()):
            if name in ship or name in NEVER_SHIP:
                continue
            local = libdir / name
            if local.exists() and (name in ALWAYS_SHIP or not system_has(name)):
                ship[name] = local.resolve()
                todo.append(local.resolve())
            elif not system_has(name) and not local.exists():
                missing.append(name)
    if missing:
        raise BuildV8Error(
            f"{libnode} needs {', '.join(sorted(set(missing)))}, found neither on this "
            f"machine nor in {libdir}: delete {prefix} and rerun this script, or install "
            "the package that provides it (apt-get install ...)")
    return sorted(ship.items())


def describe(prefix: Path) -> dict:
    inc = find_include_dir(prefix)
    libnode = find_libnode(prefix)
    if inc is None or libnode is None:
        raise BuildV8Error(
            f"{prefix} is not a V8 prefix: it needs include/node/v8.h (with libplatform/) "
            f"and lib/.../{LIBNODE_SONAME} (or libv8.so); without IVM_V8_PREFIX or "
            "-Dv8_prefix, tools/build_v8.py fetches V8 itself")
    stamp_path = prefix / STAMP
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    v8ver = {}
    vh = (inc / "v8-version.h")
    if vh.is_file():
        text = vh.read_text()
        for key in ("MAJOR_VERSION", "MINOR_VERSION", "BUILD_NUMBER", "PATCH_LEVEL"):
            m = re.search(rf"#define V8_{key}\s+(\d+)", text)
            v8ver[key] = m.group(1) if m else "?"
    return {
        "prefix": str(prefix),
        "include_dir": str(inc),
        "lib_dir": str(libnode.parent),
        "libnode": str(libnode.resolve()),
        "ship": [{"soname": n, "file": str(f)} for n, f in libs_to_ship(prefix)],
        "v8_version": ".".join(v8ver[k] for k in ("MAJOR_VERSION", "MINOR_VERSION",
                                                    "BUILD_NUMBER", "PATCH_LEVEL"))
        if v8ver else None,
        "packages": stamp.get("packages", {}),
        "source": "IVM_V8_PREFIX" if os.environ.get("IVM_V8_PREFIX") else "cache",
    }


# --- apt -------------------------------------------------------------------------------------

class Apt:
    def __init__(self) -> None:
        missing = [t for t in ("apt-get", "apt-cache", "dpkg", "dpkg-deb")
                   if shutil.which(t) is None]
        if missing:
            raise BuildV8Error(
                f"{', '.join(missing)} not found. ivm fetches V8 from Debian's libnode108 "
                "packages and needs a Debian/Ubuntu system with apt; elsewhere set "
                "IVM_V8_PREFIX to a directory holding V8 10.2 headers (include/node/v8.h) "
                f"and {LIBNODE_SONAME}")
        self.updated = False

    def update(self) -> None:
        if self.updated:
            return
        self.updated = True
        if os.geteuid() != 0:
            raise BuildV8Error(
                "the apt package lists lack the recorded V8 packages and refreshing them "
                "needs root: run `sudo apt-get update` once, then retry")
        log("refreshing the package lists (apt-get update)")
        run(["apt-get", "update", "-q"])

    def versions(self, pkg: str) -> List[str]:
        """Versions of `pkg` the package lists offer, newest first."""
        out = run(["apt-cache", "madison", pkg], check=False, quiet=True).stdout
        vers = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[0] == pkg and parts[2].endswith("Packages") \
                    and parts[1] not in vers:
                vers.append(parts[1])
        return sort_versions(vers)

    def depends(self, pkg: str, version: str) -> List[str]:
        out = run(["apt-cache", "depends", f"{pkg}={version}"], check=False,
                  quiet=True).stdout
        return re.findall(r"^\s*\|?Depends: ([^\s<>]+)", out, re.M)

    @staticmethod
    def installed(pkg: str) -> bool:
        proc = run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False, quiet=True)
        return proc.returncode == 0 and proc.stdout.strip().endswith(" installed")

    def download(self, pins: Dict[str, str], dest: Path) -> None:
        # As root, apt drops to the _apt user and warns that it cannot write `dest`;
        # it then downloads as root, which is fine.
        run(["apt-get", "download", "-q", *[f"{p}={v}" for p, v in sorted(pins.items())]],
            cwd=dest)


def compare_versions(a: str, op: str, b: str) -> bool:
    return run(["dpkg", "--compare-versions", a, op, b], check=False,
               quiet=True).returncode == 0


def sort_versions(vers: List[str]) -> List[str]:
    return sorted(vers, key=functools.cmp_to_key(
        lambda a, b: 0 if a == b else (-1 if compare_versions(a, "gt", b) else 1)))


def upstream(version: str) -> str:
    v = version.split(":", 1)[-1]
    return v.rsplit("-", 1)[0] if "-" in v else v


def resolve_versions(apt: Apt) -> Dict[str, str]:
    """The versions to download: the recorded ones, or the newest same-major fallback."""
    for attempt in (1, 2):
        avail = {p: apt.versions(p) for p in PINNED}
        if all(v in avail[p] for p, v in PINNED.items()):
            return dict(PINNED)
        if attempt == 1 and not apt.updated:
            gone = [f"{p}={v}" for p, v in PINNED.items() if v not in avail[p]]
            log(f"not in the package lists: {', '.join(gone)}")
            apt.update()
            continue
        break
    chosen = dict(PINNED)
    node_common = [v for v in avail["libnode108"] if v in avail["libnode-dev"]]
    if NODE_VERSION not in node_common:
        same_major = [v for v in node_common if upstream(v).startswith(NODE_MAJOR + ".")]
        if not same_major:
            raise BuildV8Error(
                f"apt offers no libnode108/libnode-dev {NODE_VERSION} nor any other Node.js "
                f"{NODE_MAJOR}.x (offered: {', '.join(node_common) or 'none'}). ivm needs "
                f"the V8 of Node.js {NODE_MAJOR} from Debian bookworm: use a bookworm "
                "system, or set IVM_V8_PREFIX to such a prefix")
        for p in NODE_PACKAGES:
            chosen[p] = same_major[0]
        shout(f"recorded libnode108 {NODE_VERSION} is no longer offered by apt; using "
              f"{same_major[0]} instead. Update NODE_VERSION in tools/build_v8.py.")
    for p in PINNED:
        if p in NODE_PACKAGES or PINNED[p] in avail[p]:
            continue
        if not avail[p]:
            raise BuildV8Error(f"apt offers no version of {p}: is this Debian bookworm?")
        chosen[p] = avail[p][0]
        shout(f"recorded {p} {PINNED[p]} is no longer offered by apt; using {chosen[p]}")
    return chosen


def fetch(prefix: Path) -> None:
    apt = Apt()
    pins = resolve_versions(apt)
    # Any library package libnode depends on that this machine lacks comes along too
    # (its JavaScript-only node-* dependencies are not needed to embed V8).
    extras = {}
    for dep in apt.depends("libnode108", pins["libnode108"]):
        if dep in pins or dep.startswith("node-") or apt.installed(dep):
            continue
        if dep.startswith("lib") or dep.startswith("zlib"):
            vers = apt.versions(dep)
            if vers:
                extras[dep] = vers[0]
    if extras:
        log("also fetching missing dependencies: "
            + ", ".join(f"{p}={v}" for p, v in sorted(extras.items())))
    pins.update(extras)

    root = prefix.parent
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        debs = work / "debs"
        debs.mkdir()
        try:
            apt.download(pins, debs)
        except BuildV8Error as exc:
            if apt.updated:
                raise
            # Lists that name versions the mirror no longer has: refresh once and retry.
            log(f"download failed, refreshing the package lists and retrying:\n{exc}")
            apt.update()
            pins.update(resolve_versions(apt))
            for f in debs.iterdir():
                f.unlink()
            apt.download(pins, debs)
        staging = work / "prefix"
        staging.mkdir()
        got = {}
        for deb in sorted(debs.glob("*.deb")):
            pkg = run(["dpkg-deb", "-f", str(deb), "Package"], quiet=True).stdout.strip()
            ver = run(["dpkg-deb", "-f", str(deb), "Version"], quiet=True).stdout.strip()
            got[pkg] = ver
            run(["dpkg", "-x", str(deb), str(staging)])
        if got != pins:
            raise BuildV8Error(f"apt-get download gave {got}, expected {pins}")
        stamp = {"format": STAMP_FORMAT, "packages": got, "recorded": PINNED}
        (staging / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        describe(staging)  # validate before publishing
        if prefix.exists():
            shutil.rmtree(prefix)  # a partial leftover without a stamp
        os.rename(staging, prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cached(prefix: Path) -> bool:
    """Whether `prefix` is a complete cached prefix (stamp written last, files intact)."""
    if not (prefix / STAMP).is_file():
        return False
    if find_include_dir(prefix) is None or find_libnode(prefix) is None:
        log(f"cached prefix {prefix} is damaged; fetching it again")
        (prefix / STAMP).unlink()
        return False
    return True


def ensure_prefix() -> Path:
    env = os.environ.get("IVM_V8_PREFIX")
    if env:
        prefix = Path(env).expanduser().resolve()
        describe(prefix)
        log(f"using IVM_V8_PREFIX={prefix}")
        return prefix
    root = cache_root()
    prefix = root / cache_key()
    if cached(prefix):
        log(f"using cached V8 prefix {prefix}")
        return prefix
    with locked(root):
        if cached(prefix):  # another build finished it while we waited
            log(f"using cached V8 prefix {prefix}")
            return prefix
        for stale in root.glob(".tmp-*"):  # left by an interrupted run; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        log(f"fetching V8 (Debian libnode108) into {prefix}")
        fetch(prefix)
    log(f"V8 prefix ready: {prefix}")
    return prefix


# --- V8's inspector headers (from the nodejs source package) ---------------------------------

INSPECTOR_HEADERS = ("v8-inspector.h", "v8-inspector-protocol.h")
SOURCE_PACKAGE = "nodejs"


def deb_src_lines() -> List[str]:
    """One-line deb-src entries for every enabled deb entry of this machine's apt sources."""
    lines: List[str] = []
    etc = Path("/etc/apt")
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for f in one_line:
        if not f.is_file():
            continue
        for raw in f.read_text(errors="replace").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("deb "):
                lines.append("deb-src " + line[4:])
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        if not f.is_file():
            continue
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields: Dict[str, str] = {}
            key = None
            for raw in stanza.splitlines():
                if raw.startswith("#"):
                    continue
                if raw[:1] in (" ", "\t") and key:
                    fields[key] += " " + raw.strip()
                elif ":" in raw:
                    key, _, value = raw.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            opts = f" [signed-by={fields['signed-by']}]" if fields.get("signed-by", "").startswith("/") else ""
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    lines.append(f"deb-src{opts} {uri} {suite} {fields.get('components', '')}".rstrip())
    return lines


def fetch_source_tarball(version: str, work: Path) -> Path:
    """Downloads the orig tarball of nodejs `version` (or of a revision with the same
    upstream version) into `work` with a private deb-src list; returns its path."""
    lines = deb_src_lines()
    if not lines:
        raise BuildV8Error("this machine's apt sources name no deb entries to derive a "
                           "deb-src list from")
    apt_dir = work / "apt"
    for d in ("lists/partial", "parts", "cache/archives/partial"):
        (apt_dir / d).mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.list").write_text("\n".join(lines) + "\n")
    opts = ["-o", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={apt_dir / 'parts'}",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
            "-o", f"Dir::Cache={apt_dir / 'cache'}"]
    log("reading the source package lists (private deb-src list)")
    run(["apt-get", *opts, "update", "-q"])
    out = run(["apt-cache", *opts, "showsrc", SOURCE_PACKAGE], check=False, quiet=True).stdout
    offered = re.findall(r"^Version: (\S+)", out, re.M)
    candidates = [version] + [v for v in sort_versions(offered)
                              if v != version and upstream(v) == upstream(version)]
    if version not in offered:
        candidates = candidates[1:]
    dl = work / "src"
    dl.mkdir()
    orig = f"{SOURCE_PACKAGE}_{upstream(version).split(':')[-1]}.orig.tar.xz"
    for cand in candidates:
        # The .dsc of a superseded revision may be gone while its orig tarball (shared by
        # every revision of the upstream version, checked against the Sources index) is
        # there: apt then fails, but the tarball is what is needed.
        proc = run(["apt-get", *opts, "source", "--download-only", "-q",
                    f"{SOURCE_PACKAGE}={cand}"], cwd=dl, check=False)
        if (dl / orig).is_file():
            return dl / orig
        log(f"apt-get source {SOURCE_PACKAGE}={cand} gave no {orig}:\n"
            f"{(proc.stdout + proc.stderr).strip()}")
    raise BuildV8Error(
        f"could not download the {SOURCE_PACKAGE} source package of upstream version "
        f"{upstream(version)} (offered: {', '.join(offered) or 'none'}); V8's inspector "
        "headers come from it")


def v8_version_defines(text: str) -> Tuple[str, ...]:
    return tuple(re.findall(r"#define V8_(?:MAJOR|MINOR|BUILD|PATCH)\w*\s+(\d+)", text))


def extract_inspector_headers(tarball: Path, dest: Path, expect_version: Optional[str]) -> None:
    import tarfile
    wanted = {f"deps/v8/include/{h}" for h in (*INSPECTOR_HEADERS, "v8-version.h")}
    got: Dict[str, bytes] = {}
    with tarfile.open(tarball, "r:xz") as tar:
        for member in tar:
            rel = member.name.split("/", 1)[-1]
            if rel in wanted and member.isfile():
                fh = tar.extractfile(member)
                if fh is not None:
                    got[rel.rsplit("/", 1)[-1]] = fh.read()
            if len(got) == len(wanted):
                break
    missing = sorted({w.rsplit("/", 1)[-1] for w in wanted} - set(got))
    if missing:
        raise BuildV8Error(f"{tarball.name} lacks deps/v8/include/{', '.join(missing)}")
    if expect_version is not None and \
            v8_version_defines(got["v8-version.h"].decode()) != v8_version_defines(expect_version):
        raise BuildV8Error(f"the V8 of {tarball.name} is not the V8 of libnode108")
    dest.mkdir(parents=True, exist_ok=True)
    for name in INSPECTOR_HEADERS:
        (dest / name).write_bytes(got[name])


def ensure_inspector_headers(prefix: Path, info: dict) -> Path:
    """The directory holding v8-inspector.h for the V8 of `prefix` (fetched once)."""
    inc = Path(info["include_dir"])
    if (inc / "v8-inspector.h").is_file():
        return inc
    version = info.get("packages", {}).get("libnode108") or NODE_VERSION
    root = cache_root()
    key = re.sub(r"[^A-Za-z0-9._-]", "_", f"v8-inspector-{upstream(version)}")
    dest = root / key
    if all((dest / h).is_file() for h in INSPECTOR_HEADERS):
        return dest
    with locked(root):
        if all((dest / h).is_file() for h in INSPECTOR_HEADERS):
            return dest
        missing = [t for t in ("apt-get", "apt-cache") if shutil.which(t) is None]
        if missing or os.geteuid() != 0:
            raise BuildV8Error(
                f"{inc} has no v8-inspector.h, and fetching it from Debian's {SOURCE_PACKAGE} "
                "source package needs apt as root; put v8-inspector.h and "
                f"v8-inspector-protocol.h of V8 {info.get('v8_version')} into {dest}")
        log(f"fetching V8's inspector headers ({SOURCE_PACKAGE} {upstream(version)}) into {dest}")
        work = Path(tempfile.mkdtemp(prefix=".tmp-src-", dir=root))
        try:
            tarball = fetch_source_tarball(version, work)
            vh = inc / "v8-version.h"
            staging = work / "headers"
            extract_inspector_headers(tarball, staging,
                                      vh.read_text() if vh.is_file() else None)
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(staging, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--print-prefix", action="store_true", help="print the prefix path")
    out.add_argument("--print-json", action="store_true", help="print a JSON description")
    out.add_argument("--print-meson", action="store_true",
                     help="print the include dir, the inspector's include dir, then "
                          "'soname<TAB>file' for each library to ship, libnode first "
                          "(what meson.build reads)")
    ap.add_argument("--prefix", help="describe this prefix instead (like IVM_V8_PREFIX)")
    args = ap.parse_args(argv)
    if args.prefix:
        os.environ["IVM_V8_PREFIX"] = args.prefix
    try:
        info = describe(ensure_prefix())
        info["inspector_include_dir"] = str(ensure_inspector_headers(Path(info["prefix"]), info))
    except BuildV8Error as exc:
        print(f"[build_v8] error: {exc}", file=sys.stderr)
        return 1
    if args.print_prefix:
        print(info["prefix"])
    elif args.print_json:
        print(json.dumps(info, indent=2))
    elif args.print_meson:
        print(info["include_dir"])
        print(info["inspector_include_dir"])
        ship = sorted(info["ship"], key=lambda lib: lib["file"] != info["libnode"])
        for lib in ship:
            print(f"{lib['soname']}\t{lib['file']}")
    else:
        print(f"V8 {info['v8_version']} prefix: {info['prefix']}")
        print(f"  headers:  {info['include_dir']}")
        print(f"  inspector headers: {info['inspector_include_dir']}")
        print(f"  library:  {info['libnode']}")
        for lib in info["ship"]:
            print(f"  ship:     {lib['soname']} <- {lib['file']}")
        for pkg, ver in sorted(info["packages"].items()):
            print(f"  package:  {pkg} {ver}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
