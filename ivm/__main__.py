"""``python -m ivm``: run a JavaScript file in an isolate with limits."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import ivm


def _show(value: object) -> str:
    if value is ivm.undefined:
        return "undefined"
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    return str(value)


def _run(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8", errors="surrogateescape") as f:
            code = f.read()
    except OSError as exc:
        print(f"ivm: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        with ivm.Isolate(memory_limit=args.memory_limit) as isolate:
            context = isolate.create_context_sync()
            result = context.eval_sync(code, timeout=args.timeout, filename=args.file)
    except ivm.JSError as exc:
        print(exc.stack, file=sys.stderr)
        return 1
    except ivm.IvmError as exc:
        print(f"ivm: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"ivm: {exc}", file=sys.stderr)
        return 2
    print(_show(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ivm", description="Run JavaScript in an isolated V8 isolate."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"ivm {ivm.__version__} (V8 {ivm.v8_version})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate a file and print its completion value")
    run.add_argument("file", help="the JavaScript file")
    run.add_argument("--memory-limit", type=float, default=128, metavar="MB",
                     help="memory limit of the isolate in MB (default 128, minimum 8)")
    run.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="time limit in seconds (default: none)")
    args = parser.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
