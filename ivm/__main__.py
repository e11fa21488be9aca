"""``python -m ivm``: run a JavaScript file (a script, or an ES module) in an isolate with limits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

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


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def _module_loader(isolate: ivm.Isolate, root: Path) -> Callable[[str, str], ivm.Module]:
    """``import_module(specifier, referrer)`` for files below ``root``: relative
    specifiers only, resolved against the importing file, symlinks followed."""
    loaded: dict[Path, ivm.Module] = {}

    def load(specifier: str, referrer: str) -> ivm.Module:
        if not specifier.startswith(("./", "../", "/")):
            raise ImportError(
                f"cannot import {specifier!r} from {referrer}: only relative paths are resolved"
            )
        base = Path(referrer).parent if Path(referrer).is_absolute() else root
        target = (base / specifier).resolve()
        if not target.is_relative_to(root):
            raise ImportError(f"import of {specifier!r} from {referrer} is outside the root {root}")
        module = loaded.get(target)
        if module is None:
            try:
                code = _read(target)
            except OSError as exc:
                raise ImportError(f"cannot import {specifier!r} from {referrer}: {exc.strerror}") from None
            module = isolate.compile_module_sync(code, filename=str(target), meta={"url": target.as_uri()})
            loaded[target] = module
        return module

    return load


def _run_module(isolate: ivm.Isolate, entry: Path, root: Path, timeout: float | None) -> object:
    load = _module_loader(isolate, root)
    context = isolate.create_context_sync(import_module=load)
    main = load("./" + entry.name, str(entry))
    main.instantiate_sync(context, lambda specifier, referrer: load(specifier, referrer.filename))
    main.evaluate_sync(timeout=timeout)
    return main.namespace.get_sync("default")


def _run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    as_module = args.module or path.suffix == ".mjs"
    try:
        code = "" if as_module else _read(path)
        entry = path.resolve(strict=True)
    except OSError as exc:
        print(f"ivm: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    root = Path(args.root).resolve() if args.root else entry.parent
    if as_module and not entry.is_relative_to(root):
        print(f"ivm: {args.file} is outside the root {root}", file=sys.stderr)
        return 2
    try:
        with ivm.Isolate(memory_limit=args.memory_limit) as isolate:
            if as_module:
                result = _run_module(isolate, entry, root, args.timeout)
            else:
                context = isolate.create_context_sync()
                result = context.eval_sync(code, timeout=args.timeout, filename=args.file)
    except ImportError as exc:
        print(f"ivm: {exc}", file=sys.stderr)
        return 1
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
    run = sub.add_parser(
        "run",
        help="evaluate a file and print its completion value (a module: its default export)",
    )
    run.add_argument("file", help="the JavaScript file (*.mjs, or with --module: an ES module)")
    run.add_argument("--module", action="store_true",
                     help="run the file as an ES module (the default for *.mjs)")
    run.add_argument("--root", metavar="DIR", default=None,
                     help="modules may import files below DIR only (default: the file's directory)")
    run.add_argument("--memory-limit", type=float, default=128, metavar="MB",
                     help="memory limit of the isolate in MB (default 128, minimum 8)")
    run.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="time limit in seconds (default: none)")
    args = parser.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
