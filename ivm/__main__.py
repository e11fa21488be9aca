"""``python -m ivm``: run a JavaScript file (a script, or an ES module) in an isolate with limits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import ivm


if TYPE_CHECKING:  # (ivm.inspector is imported only when --inspect asks for it)
    from .inspector import InspectorServer


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


#: Exit statuses (also in `python -m ivm --help` and docs/cli.md).
EXIT_OK, EXIT_JS_ERROR, EXIT_USAGE, EXIT_TIMEOUT, EXIT_MEMORY, EXIT_FAILED = 0, 1, 2, 3, 4, 5
EXIT_CODES = """exit status:
  0  the program ran (its result is printed)
  1  JavaScript threw or rejected (a syntax error, a failed import...); the stack is printed
  2  bad usage: unknown option, bad value, unreadable file
  3  the time limit (--timeout) ended the program
  4  the memory limit (--memory-limit) ended the program
  5  the isolate failed otherwise (its worker process crashed, with --isolated)"""


def _run_module(
    isolate: ivm.Isolate, context: ivm.Context, entry: Path, root: Path, timeout: float | None
) -> ivm.Reference:
    load = _module_loader(isolate, root)
    main = load("./" + entry.name, str(entry))
    main.instantiate_sync(context, lambda specifier, referrer: load(specifier, referrer.filename))
    main.evaluate_sync(timeout=timeout)
    result = main.namespace.get_sync("default", reference=True)
    assert isinstance(result, ivm.Reference)
    return result


#: Console levels that go to stderr (the others go to stdout), as in node.
_STDERR_LEVELS = frozenset({"warn", "error", "trace", "assert"})


def _console_line(level: str, text: str) -> None:
    """The CLI's console: each line to stdout or stderr, flushed (it stays in order with
    the result and with the other stream)."""
    stream = sys.stderr if level in _STDERR_LEVELS else sys.stdout
    stream.write(text + "\n")
    stream.flush()


class _Session:
    """One isolate and context: runs code, shows results (node's style or JSON)."""

    def __init__(self, args: argparse.Namespace, import_root: Path | None = None) -> None:
        self.args = args
        process: Literal["inline", "isolated"] = "isolated" if args.isolated else "inline"
        self.inspect_at: tuple[str, int, bool] | None = getattr(args, "inspect_at", None)
        self.server: InspectorServer | None = None
        if self.inspect_at is None:
            self.isolate = ivm.Isolate(memory_limit=args.memory_limit, process=process)
        else:
            self.isolate = ivm.Isolate(memory_limit=args.memory_limit, process=process,
                                       inspector=True)
        loader = _module_loader(self.isolate, import_root) if import_root else None
        host = None if args.no_host else ivm.HostBasics.all(console=_console_line)
        self.context = self.isolate.create_context_sync(import_module=loader, host=host)

    def start_inspector(self, title: str, url: str) -> None:
        """--inspect / --inspect-brk: serves DevTools (node's messages on stderr); with
        --inspect-brk, waits for a debugger and pauses before the program's first statement.
        Raises OSError if the address cannot be bound, ImportError without websockets."""
        if self.inspect_at is None:
            return
        from . import inspector  # (needs the optional websockets package)

        host, port, brk = self.inspect_at
        self.server = inspector.serve(
            self.isolate, host, port, title=title, url=url, break_on_start=brk,
            on_attach=lambda: _console_line("error", "Debugger attached."),
        )  # fmt: skip
        _console_line("error", f"Debugger listening on {self.server.url}")
        _console_line("error", "For help, see: docs/devtools.md (chrome://inspect finds it; "
                               f"or open {self.server.devtools_frontend_url})")
        if brk:
            self.server.wait_for_debugger_sync()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.isolate.dispose()

    def eval(self, code: str, filename: str) -> ivm.Reference:
        result = self.context.eval_sync(
            code, timeout=self.args.timeout, filename=filename, promise=True, reference=True
        )
        assert isinstance(result, ivm.Reference)
        return result

    def show(self, result: ivm.Reference, *, raw_strings: bool = True) -> str:
        if self.args.json:
            text = self.context.eval_closure_sync(
                "const t = JSON.stringify($0); return t === undefined ? 'undefined' : t",
                [result.deref_into()], timeout=self.args.timeout,
            )  # fmt: skip
        elif raw_strings and result.typeof == "string":
            text = result.copy_sync(timeout=self.args.timeout)  # printed as it is, as node -p does
        else:
            # libivm's formatter (the console's): it runs none of the value's code.
            text = result.inspect_sync(timeout=self.args.timeout)
        return str(text)


def _failure(exc: BaseException) -> int:
    """Prints why the program failed; returns its exit status."""
    if isinstance(exc, ivm.JSError):
        print(exc.stack or f"{exc.name}: {exc.message}", file=sys.stderr)
        return EXIT_JS_ERROR
    if isinstance(exc, ImportError):
        print(f"ivm: {exc}", file=sys.stderr)
        return EXIT_JS_ERROR
    print(f"ivm: {type(exc).__name__}: {exc}", file=sys.stderr)
    if isinstance(exc, ivm.TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, ivm.MemoryLimitError):
        return EXIT_MEMORY
    return EXIT_FAILED


def _execute(args: argparse.Namespace, code: str, filename: str, module: Path | None,
             root: Path | None) -> int:
    try:
        session = _Session(args, root)
    except ValueError as exc:
        print(f"ivm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # The URL is the script's as V8 knows it (its filename): --inspect-brk breaks there.
        session.start_inspector(Path(filename).name, str(module) if module else filename)
    except (OSError, ImportError) as exc:
        print(f"ivm: --inspect: {exc}", file=sys.stderr)
        session.close()
        return EXIT_USAGE
    except BaseException:  # Ctrl-C while --inspect-brk waits
        session.close()
        raise
    profile = getattr(args, "cpu_profile", None)
    try:
        if profile is not None:
            interval = args.cpu_profile_interval
            session.isolate.start_cpu_profiler_sync(
                "ivm run", sampling_interval=interval / 1_000_000 if interval is not None else None)
    except ValueError as exc:
        print(f"ivm: --cpu-profile: {exc}", file=sys.stderr)
        session.close()
        return EXIT_USAGE
    try:
        if module is not None and root is not None:
            result = _run_module(session.isolate, session.context, module, root, args.timeout)
        else:
            result = session.eval(code, filename)
        print(session.show(result), flush=True)
        return EXIT_OK
    except (ivm.IvmError, ImportError) as exc:
        return _failure(exc)
    finally:
        if profile is not None:
            _save_profile(session.isolate, profile)
        session.close()


def _save_profile(isolate: ivm.Isolate, path: str) -> None:
    """Stops the run's CPU profile and writes it (also after a failure, if the isolate lives)."""
    try:
        isolate.stop_cpu_profiler_sync("ivm run").save(path)
    except (ivm.IvmError, OSError) as exc:
        print(f"ivm: the CPU profile was not written: {exc}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    as_module = args.module or path.suffix == ".mjs"
    try:
        code = "" if as_module else _read(path)
        entry = path.resolve(strict=True)
    except OSError as exc:
        print(f"ivm: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    root = Path(args.root).resolve() if args.root else entry.parent
    if as_module and not entry.is_relative_to(root):
        print(f"ivm: {args.file} is outside the root {root}", file=sys.stderr)
        return EXIT_USAGE
    return _execute(args, code, args.file, entry if as_module else None, root)


def _eval(args: argparse.Namespace) -> int:
    return _execute(args, args.code, "[eval]", None, None)


def _incomplete(exc: ivm.JSError) -> bool:
    """Whether a SyntaxError only says the input stopped early (the REPL reads on)."""
    return exc.name == "SyntaxError" and any(
        m in exc.message for m in ("Unexpected end of input", "Unterminated template")
    )


def _repl(args: argparse.Namespace) -> int:
    """A small REPL: one isolate and context for the session, history (readline), multi-line
    input, `.exit` (or end of input) to leave. Each input runs with the session's limits."""
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # pragma: no cover - not on this platform
        pass
    try:
        session = _Session(args)
    except ValueError as exc:
        print(f"ivm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"ivm {ivm.__version__} (V8 {ivm.v8_version}); .exit or Ctrl-D to leave")
    status, buffer = EXIT_OK, ""
    try:
        while True:
            try:
                line = input(("... " if buffer else "> ") if interactive else "")
            except EOFError:
                break
            if not buffer and line.strip() == ".exit":
                break
            buffer += line + "\n"
            try:
                print(session.show(session.eval(buffer, "[repl]"), raw_strings=False))
            except ivm.JSError as exc:
                if _incomplete(exc):
                    continue
                status = _failure(exc)
            except ivm.IvmError as exc:
                status = _failure(exc)
                if session.isolate.is_disposed:
                    session = _Session(args)  # (a memory limit ended the old one)
            buffer = ""
    finally:
        session.close()
    return status if not interactive else EXIT_OK


def _limits(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The options that go before or after the command. Only the top-level parser has their
    defaults: a command's parser, given ``defaults=False``, sets only what is given after the
    command, so that ``--timeout 1 eval CODE`` keeps its timeout."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS
    parser.add_argument("--memory-limit", type=float, default=default(128), metavar="MB",
                        help="memory limit of the isolate in MB (default 128, minimum 8)")
    parser.add_argument("--timeout", type=float, default=default(None), metavar="S",
                        help="time limit in seconds (default: none)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print the result as JSON (JSON.stringify) instead of node's style")
    parser.add_argument("--isolated", action="store_true", default=default(False),
                        help="run the isolate in a sandboxed worker process (docs/process.md): "
                             "even a V8 abort ends only the worker (exit status 5)")
    parser.add_argument("--no-host", action="store_true", default=default(False),
                        help="a bare context: no console, timers, TextEncoder, atob, "
                             "structuredClone, crypto... (docs/host.md; default: all of them, "
                             "console.log/info/debug to stdout, warn/error/trace/assert to stderr)")


def _bare_inspect_flags(argv: Sequence[str]) -> list[str]:
    """``--inspect`` and ``--inspect-brk`` take their address after ``=`` only (as node's
    do): a bare one gets the default, so that the file name after it stays the file."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        out.append(f"{arg}=" if arg in ("--inspect", "--inspect-brk") else arg)
    return out


def _inspect_address(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sets ``args.inspect_at`` to ``(host, port, break_on_start)`` or None."""
    args.inspect_at = None
    if args.inspect is not None and args.inspect_brk is not None:
        parser.error("--inspect and --inspect-brk: give one of them")
    given, brk = (args.inspect_brk, True) if args.inspect_brk is not None else (args.inspect, False)
    if given is None:
        return
    host, port = "127.0.0.1", given or "9229"
    if ":" in port:
        host, _, port = port.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        parser.error(f"--inspect{'-brk' if brk else ''}={given}: expected [HOST:]PORT, "
                     "PORT from 0 to 65535")
    args.inspect_at = (host, int(port), brk)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ivm",
        description="Run JavaScript in an isolated V8 isolate. Without a command: a REPL.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"ivm {ivm.__version__} (V8 {ivm.v8_version})",
    )
    _limits(parser)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser(
        "run", epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a file and print its result (awaited if a promise; a module: its default export)",
    )  # fmt: skip
    run.add_argument("file", help="the JavaScript file (*.mjs, or with --module: an ES module)")
    run.add_argument("--module", action="store_true",
                     help="run the file as an ES module (the default for *.mjs)")
    run.add_argument("--root", metavar="DIR", default=None,
                     help="modules may import files below DIR only (default: the file's directory)")
    run.add_argument("--cpu-profile", metavar="FILE", default=None,
                     help="write a CPU profile of the run to FILE (a .cpuprofile that Chrome "
                          "DevTools opens; with --isolated too)")
    run.add_argument("--cpu-profile-interval", metavar="US", type=int, default=None,
                     help="microseconds between the profile's samples (default 1000, min 50)")
    run.add_argument("--inspect", metavar="[HOST:]PORT", default=None,
                     help="serve Chrome DevTools on HOST:PORT (default 127.0.0.1:9229; PORT 0: "
                          "any free one) while the program runs; never on an untrusted network "
                          "(docs/devtools.md)")
    run.add_argument("--inspect-brk", metavar="[HOST:]PORT", default=None,
                     help="as --inspect, but wait for a debugger and pause before the first "
                          "statement")
    _limits(run, defaults=False)
    one = sub.add_parser(
        "eval", epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run CODE given on the command line and print its result",
    )  # fmt: skip
    one.add_argument("code", help="the JavaScript to run")
    _limits(one, defaults=False)
    args = parser.parse_args(_bare_inspect_flags(sys.argv[1:] if argv is None else argv))
    if args.command == "run":
        _inspect_address(parser, args)
    for limit in ("timeout",):
        value = getattr(args, limit)
        if value is not None and not value > 0:
            parser.error(f"--{limit} must be a positive number of seconds")
    if args.command == "run":
        return _run(args)
    if args.command == "eval":
        return _eval(args)
    return _repl(args)


if __name__ == "__main__":
    sys.exit(main())
