#!/usr/bin/env python3
"""Run one coverage-guided fuzz target for a while.

Usage::

    python3 tools/fuzz.py TARGET [--seconds N] [--build-dir DIR] [-- LIBFUZZER_ARGS...]
    python3 tools/fuzz.py --list

Targets (every reader of bytes that ivm does not trust):

    copy_reader   libivm's copy-format reader, through ivm.h (libFuzzer, clang)
    code_cache    the code-cache header checks, through ivm.h (libFuzzer)
    wire          the worker frame reader and payload codec, libivm/wire.cc (libFuzzer)
    unpickler     ivm/_copy.py's restricted Unpickler (atheris, in a Python where ivm is
                  installed: --python, default this one)

The libFuzzer targets are built once with clang (-Dfuzz=true -Dsanitize=address,undefined)
in a build directory outside the repository (default: ${XDG_CACHE_HOME:-~/.cache}/ivm/
fuzz-HASH, one per checkout), then rebuilt incrementally. Seeds come from
tests/fuzz/corpus/TARGET/ (never written); what the fuzzer finds on the way goes to a corpus
in the build directory, and a crashing input to BUILD_DIR/artifacts/. Exits non-zero when
the target found something, and prints the figures it reached: executions, and for libFuzzer
its cov: (edges) and ft: (features).

Environment: CC/CXX (default clang, clang++), MESON (default: meson on PATH, else this
Python's mesonbuild).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUZZ_DIR = REPO / "tests" / "fuzz"
LIBFUZZER = {"copy_reader": "fuzz_copy_reader", "code_cache": "fuzz_code_cache",
             "wire": "fuzz_wire"}
PYTHON_TARGETS = {"unpickler": "fuzz_unpickler.py"}
# Seed directories per target: the unpickler reads the same streams as the copy reader.
SEEDS = {"copy_reader": ["copy_reader"], "code_cache": ["code_cache"], "wire": ["wire"],
         "unpickler": ["copy_reader", "unpickler"]}
# libFuzzer's lines for each new or smaller input: kept for the figures, not printed.
NOISE = re.compile(r"#\d+\s+(NEW|REDUCE)\b|\s*NEW_FUNC|\"|###### ")
SUPPRESSIONS = REPO / "tools" / "sanitize.supp"


def log(msg: str) -> None:
    print(f"fuzz.py: {msg}", file=sys.stderr, flush=True)


def default_build_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    # One per checkout: a Meson build directory belongs to one source tree.
    tag = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    return Path(cache) / "ivm" / f"fuzz-{tag}"


def meson_cmd() -> list[str]:
    if os.environ.get("MESON"):
        return [os.environ["MESON"]]
    found = shutil.which("meson")
    return [found] if found else [sys.executable, "-m", "mesonbuild.mesonmain"]


def build(build_dir: Path, exe: str) -> Path:
    """Configures (once) and builds one libFuzzer target; returns its path."""
    env = dict(os.environ)
    env.setdefault("CC", "clang")
    env.setdefault("CXX", "clang++")
    if not shutil.which(env["CXX"]):
        sys.exit(f"fuzz.py: {env['CXX']} not found: the libFuzzer targets need clang "
                 "(Debian: apt-get install clang)")
    if not (build_dir / "build.ninja").exists():
        log(f"configuring {build_dir}")
        # b_lundef=false: clang links the sanitizer runtimes into executables only, so
        # libivm.so keeps their symbols undefined until the fuzzer binary provides them.
        subprocess.run(meson_cmd() + [
            "setup", str(build_dir), str(REPO), "-Dfuzz=true",
            "-Dsanitize=address,undefined", "-Db_lundef=false",
            "-Dbuildtype=debugoptimized", "-Db_ndebug=false"], env=env, check=True,
            stdout=subprocess.DEVNULL)
    log(f"building {exe}")
    subprocess.run(meson_cmd() + ["compile", "-C", str(build_dir), exe], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return build_dir / exe


# copy_reader and code_cache run without LeakSanitizer: V8 keeps many of its blocks reachable only from its
# heap pages, which are mmap'd memory that LeakSanitizer does not scan, so every input
# "leaks" V8's own blocks. The target counts libivm's objects after each input instead
# (ivm_debug_live_objects), and tools/sanitize.py checks libivm's leaks process-wide.
NO_LEAK_CHECK = {"copy_reader", "code_cache"}


def sanitizer_env(target: str) -> dict[str, str]:
    env = dict(os.environ)
    leaks = 0 if target in NO_LEAK_CHECK else 1
    env.setdefault("ASAN_OPTIONS", f"detect_leaks={leaks}:abort_on_error=1:symbolize=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    env.setdefault("LSAN_OPTIONS", f"suppressions={SUPPRESSIONS}:print_suppressions=0")
    return env


def corpus_dirs(target: str, build_dir: Path) -> tuple[Path, list[Path]]:
    work = build_dir / "corpus" / target
    work.mkdir(parents=True, exist_ok=True)
    seeds = [FUZZ_DIR / "corpus" / name for name in SEEDS[target]]
    return work, [s for s in seeds if s.is_dir()]


def report(output: str, target: str, code: int) -> None:
    """Prints the last figures libFuzzer (or atheris) gave: executions, cov:, ft:."""
    stats = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", output, re.M)
    runs = re.findall(r"stat::number_of_executed_units: (\d+)", output)
    execs = runs[-1] if runs else (stats[-1][0] if stats else "?")
    cov, ft = (stats[-1][1], stats[-1][2]) if stats else ("?", "?")
    verdict = "clean" if code == 0 else f"FOUND SOMETHING (exit {code})"
    print(f"{target}: {verdict}; executions {execs}, cov {cov}, ft {ft}", flush=True)


def run(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs the fuzzer, passing its stderr through and keeping a copy to read figures from."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if not NOISE.match(line):
            sys.stderr.write(line)
    return proc.wait(), "".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", choices=sorted(LIBFUZZER) + sorted(PYTHON_TARGETS))
    parser.add_argument("--seconds", type=int, default=60, help="how long to run (default 60)")
    parser.add_argument("--build-dir", type=Path, default=default_build_dir())
    parser.add_argument("--python", default=sys.executable,
                        help="the Python (with ivm and atheris) that runs the Python targets")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("extra", nargs="*", help="after --: more libFuzzer arguments")
    args = parser.parse_args()
    if args.list or not args.target:
        print("\n".join(sorted(LIBFUZZER) + sorted(PYTHON_TARGETS)))
        return 0
    build_dir = args.build_dir.resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    work, seeds = corpus_dirs(args.target, build_dir)
    artifacts = build_dir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    flags = [f"-max_total_time={args.seconds}", "-timeout=30", "-rss_limit_mb=4096",
             "-print_final_stats=1", f"-artifact_prefix={artifacts}/{args.target}-"]
    if args.target in LIBFUZZER:
        exe = build(build_dir, LIBFUZZER[args.target])
        cmd = [str(exe)] + flags + args.extra + [str(work)] + [str(s) for s in seeds]
    else:
        script = FUZZ_DIR / PYTHON_TARGETS[args.target]
        cmd = [args.python, "-P", str(script)] + flags + args.extra + \
            [str(work)] + [str(s) for s in seeds]
    log(" ".join(cmd))
    code, output = run(cmd, sanitizer_env(args.target))
    report(output, args.target, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
