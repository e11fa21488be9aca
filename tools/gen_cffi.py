#!/usr/bin/env python3
"""Generate the C source of ivm's cffi extension (API mode) from ``include/ivm.h``.

    python tools/gen_cffi.py include/ivm.h _ivm_cffi.c [--extern ivm/_cffi_extern.h] \\
        [--fast ivm/_cffi_fast.c] [--print-cdef] [-- CC [ARGS...]]

The cdef is the header itself, run through the C preprocessor with ``IVM_CDEF`` defined and
its ``#include`` lines dropped (cffi knows the standard types and must not see system
headers). What cffi cannot parse is then removed: ``__attribute__((...))``, ``extern``
storage classes and ``IVM_API``. Object-like ``IVM_*`` macros whose value is an integer
expression (``IVM_VERSION_MAJOR``, ``IVM_VERSION_NUMBER``, ...) become ``#define NAME ...``
so that the compiler supplies the value. The ``extern "Python"`` declarations (the Python
functions libivm calls) come from the files given by ``--extern``, appended verbatim.
``--fast`` names C helpers compiled into the extension: the file's part above its
``/* --- definitions --- */`` line is appended to the cdef, the whole file to the source.

The compiler defaults to ``$CC`` or ``cc``; Meson passes its own after ``--``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

MODULE = "ivm._ivm_cffi"
_DEFINITIONS = "/* --- definitions --- */"
_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include\b.*$", re.M)


def preprocess(cc: List[str], text: str, extra: List[str]) -> str:
    proc = subprocess.run([*cc, "-x", "c", "-E", "-P", "-DIVM_CDEF", *extra, "-"],
                          input=text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gen_cffi: the preprocessor failed:\n{proc.stderr}")
    return proc.stdout


def _drop_balanced(text: str, keyword: str) -> str:
    """Remove every `keyword ( ... )` with balanced parentheses."""
    out, i = [], 0
    pat = re.compile(r"\b" + re.escape(keyword) + r"\s*\(")
    while True:
        m = pat.search(text, i)
        if m is None:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        i = j


def integer_macros(cc: List[str], text: str) -> List[str]:
    """Names of object-like IVM_* macros whose value is an integer constant expression."""
    defs = preprocess(cc, text, ["-dM"])
    names = []
    for m in re.finditer(r"^#define (IVM_\w+) (.+)$", defs, re.M):
        name, body = m.group(1), m.group(2).strip()
        if name in ("IVM_API", "IVM_CDEF", "IVM_BUILDING_LIBRARY"):
            continue
        if not re.fullmatch(r"[\w\s()+\-*/%<>|&~^]+", body):
            continue
        idents = re.findall(r"\b[A-Za-z_]\w*", body)
        if all(i.startswith("IVM_") for i in idents):
            names.append(name)
    return sorted(names)


def make_cdef(header_text: str, cc: List[str], extern_files: List[Path]) -> str:
    text = _INCLUDE.sub("", header_text)
    body = preprocess(cc, text, [])
    body = "\n".join(ln for ln in body.splitlines() if not ln.lstrip().startswith("#"))
    body = _drop_balanced(body, "__attribute__")
    body = re.sub(r"\b(IVM_API|__extension__|__inline__|__restrict__|__restrict)\b", "",
                  body)
    body = re.sub(r"\bextern\s+(?!\")", "", body)
    body = "\n".join(ln.strip() for ln in body.splitlines())
    body = re.sub(r"\n\s*\n+", "\n\n", body).strip()
    parts = [body]
    macros = integer_macros(cc, text)
    if macros:
        parts.append("\n".join(f"#define {name} ..." for name in macros))
    for f in extern_files:
        parts.append(f.read_text().strip())
    return "\n\n".join(parts) + "\n"


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def split_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, shlex.split(os.environ.get("CC", "cc"))


def main(argv: List[str]) -> int:
    own, cc = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("header", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--extern", type=Path, action="append", default=[],
                    help="file of extern \"Python\" declarations")
    ap.add_argument("--fast", type=Path, action="append", default=[],
                    help="file of C helpers: declarations, then " + _DEFINITIONS)
    ap.add_argument("--print-cdef", action="store_true", help="also print the cdef")
    args = ap.parse_args(own)
    if not cc:
        cc = ["cc"]
    cdef = make_cdef(args.header.read_text(), cc, args.extern)
    source = '#include "ivm.h"\n'
    for f in args.fast:
        text = f.read_text()
        if _DEFINITIONS not in text:
            raise SystemExit(f"gen_cffi: {f} has no {_DEFINITIONS} line")
        cdef += "\n" + _strip_comments(text.split(_DEFINITIONS)[0]).strip() + "\n"
        source += text
    if args.print_cdef:
        print(cdef)

    import cffi  # only now, so --help works without it

    ffi = cffi.FFI()
    try:
        ffi.cdef(cdef)
    except cffi.CDefError as exc:
        numbered = "\n".join(f"{i + 1:4}  {ln}" for i, ln in enumerate(cdef.splitlines()))
        raise SystemExit(f"gen_cffi: cffi rejected the cdef made from {args.header}: "
                         f"{exc}\n{numbered}") from None
    ffi.set_source(MODULE, source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ffi.emit_c_code(str(args.output))
    os.utime(args.output)  # cffi skips rewriting an unchanged file; the build wants it new
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
