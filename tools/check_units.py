#!/usr/bin/env python3
"""Short units (issue 10): no source file in libivm/ or ivm/ over MAX_FILE_LINES lines, and no
function over MAX_FUNCTION_LINES lines, except an opcode switch that says why in a comment
holding ALLOW (e.g. ``// long-function: one case per wire op, ...``).

    python3 tools/check_units.py [--list N]

Lines are physical lines, blank and comment lines included; a function runs from the first
line of its declaration (decorators included) to its closing brace or last statement.
C and C++ functions are found by their braces (comments, strings and preprocessor lines left
out), Python functions by the ast. Exits 1 and names each unit over its limit."""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

MAX_FILE_LINES = 1000
MAX_FUNCTION_LINES = 120
ALLOW = "long-function:"
ROOT = Path(__file__).resolve().parent.parent
DIRS = ("libivm", "ivm")
C_SUFFIXES = {".c", ".cc", ".cpp", ".h", ".hpp"}

_SCOPE = re.compile(r"\b(namespace|class|struct|union)\b|\bextern\s*\"")
_DIRECTIVE = re.compile(r"[ \t]*#")
_CTOR_INIT = re.compile(r"\)\s*(noexcept\s*)?:(?!:)")
_NOT_FUNCTION = re.compile(r"=\s*$|\benum\b|\b(if|for|while|switch|catch|do|else|try)\b\s*(\(|$)")


def _strip_c(text: str) -> tuple[str, str]:
    """`text` with comments, string and char literals and preprocessor lines blanked (newlines
    kept, so offsets map to the same lines); and the comments alone, likewise."""
    code, comments = [], []
    i, n = 0, len(text)
    line_start = True
    while i < n:
        c = text[i]
        if line_start and _DIRECTIVE.match(text, i):
            j = i
            while j < n:  # to the end of the line, with its continuations
                if text[j] == "\n" and text[j - 1] != "\\":
                    break
                j += 1
            blank = re.sub(r"[^\n]", " ", text[i:j])
            code.append(blank)
            comments.append(blank)
            i = j
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            code.append(" " * (j - i))
            comments.append(text[i:j])
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            code.append(re.sub(r"[^\n]", " ", text[i:j]))
            comments.append(text[i:j])
            i = j
            continue
        if c == "R" and text.startswith('R"', i):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if m:
                end = text.find(")" + m.group(1) + '"', i)
                j = n if end < 0 else end + len(m.group(1)) + 2
                code.append(re.sub(r"[^\n]", " ", text[i:j]))
                comments.append(re.sub(r"[^\n]", " ", text[i:j]))
                i = j
                continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            code.append(c + re.sub(r"[^\n]", " ", text[i + 1:j - 1]) + c)
            comments.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        code.append(c)
        comments.append("\n" if c == "\n" else " ")
        line_start = c == "\n"
        i += 1
    return "".join(code), "".join(comments)


def c_functions(text: str) -> list[tuple[str, int, int, bool]]:
    """(name, first line, last line, allowed) of each function defined in C/C++ `text`."""
    code, comments = _strip_c(text)
    out = []
    stack: list[str] = []  # per open brace: "scope", "function" or "block"
    header_start = 0  # offset where the current declaration began
    func_open: list[tuple[int, str]] = []
    for i, c in enumerate(code):
        if c == "{":
            header = code[header_start:i].strip()
            in_scope = all(kind == "scope" for kind in stack)
            if in_scope and _CTOR_INIT.search(header) and re.search(r"[\w>]$", header):
                stack.append("init")  # a member's brace initializer, in a constructor's list
                continue
            if in_scope and _SCOPE.search(header) and "(" not in header:
                stack.append("scope")
            elif in_scope and "(" in header and not _NOT_FUNCTION.search(header):
                stack.append("function")
                first = header_start + len(code[header_start:i]) - len(code[header_start:i].lstrip())
                name = re.findall(r"([\w:~<>]+)\s*\(", header)
                func_open.append((first, name[0] if name else "?"))
            else:
                stack.append("block")
            header_start = i + 1
        elif c == "}":
            kind = stack.pop() if stack else "block"
            if kind == "init":
                continue
            if kind == "function":
                first, name = func_open.pop()
                first_line = code.count("\n", 0, first) + 1
                last_line = code.count("\n", 0, i) + 1
                allowed = ALLOW in comments[first:i]
                out.append((name, first_line, last_line, allowed))
            header_start = i + 1
        elif c == ";":
            header_start = i + 1
    return out


def py_functions(text: str) -> list[tuple[str, int, int, bool]]:
    out = []
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            last = node.end_lineno or node.lineno
            allowed = any(ALLOW in line for line in lines[first - 1:last])
            out.append((node.name, first, last, allowed))
    return out


def units(root: Path = ROOT) -> tuple[list[tuple[str, int]], list[tuple[str, str, int, bool]]]:
    """(file, lines) of each source file, and (file, function, lines, allowed) of each function,
    in libivm/ and ivm/."""
    files, functions = [], []
    for d in DIRS:
        for path in sorted((root / d).rglob("*")):
            if path.suffix not in C_SUFFIXES | {".py"} or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
            rel = str(path.relative_to(root))
            files.append((rel, len(text.splitlines())))
            found = py_functions(text) if path.suffix == ".py" else c_functions(text)
            for name, first, last, allowed in found:
                functions.append((f"{rel}:{first}", name, last - first + 1, allowed))
    return files, functions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", type=int, default=0, metavar="N",
                        help="also print the N longest files and functions")
    args = parser.parse_args()
    files, functions = units()
    bad = [f"{f}: {n} lines (the limit is {MAX_FILE_LINES})" for f, n in files
           if n > MAX_FILE_LINES]
    bad += [f"{where}: {name}() is {n} lines (the limit is {MAX_FUNCTION_LINES})"
            for where, name, n, allowed in functions if n > MAX_FUNCTION_LINES and not allowed]
    if args.list:
        for f, n in sorted(files, key=lambda x: -x[1])[:args.list]:
            print(f"{n:6} {f}")
        for where, name, n, allowed in sorted(functions, key=lambda x: -x[2])[:args.list]:
            print(f"{n:6} {where} {name}{'  (allowed)' if allowed else ''}")
    for line in bad:
        print(line)
    print(f"{len(files)} files, {len(functions)} functions: "
          + ("all within the limits" if not bad else f"{len(bad)} over"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
