"""The C ABI as shipped: tests/c/test_basic.c and tests/c/test_values.c compiled against
the installed package's ivm.h and libivm.so alone, with strict warnings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import ivm

C_TESTS = Path(__file__).resolve().parent / "c"
PKG = Path(os.path.dirname(ivm.__file__))
STRICT = ["-Wall", "-Wextra", "-pedantic", "-Werror"]


def compiler(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"no {name} on PATH")
    return path


def build(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}"


def test_package_ships_header_and_library() -> None:
    assert (PKG / "include" / "ivm.h").is_file()
    assert (PKG / "libivm.so").is_file()


def run_c_test(tmp_path: Path, name: str) -> None:
    """Compiles tests/c/<name>.c against the installed package alone and runs it."""
    cc = compiler("cc")
    exe = tmp_path / name
    build([cc, "-std=c99", *STRICT, "-I", str(PKG / "include"), str(C_TESTS / f"{name}.c"),
           "-o", str(exe), str(PKG / "libivm.so"), f"-Wl,-rpath,{PKG}", "-lm"])
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    assert int(match.group(1)) > 0
    assert match.group(2) == "0", proc.stderr


def test_c_basic(tmp_path: Path) -> None:
    run_c_test(tmp_path, "test_basic")


def test_c_values(tmp_path: Path) -> None:
    """Structured and external copies between isolates, host callbacks, deferred
    results and References through the C ABI (tests/c/test_values.c)."""
    run_c_test(tmp_path, "test_values")


def test_c_process(tmp_path: Path) -> None:
    """Worker processes through the C ABI: start, sandbox, ping, a killed worker reported
    as IVM_ERROR_CRASHED, disposal (tests/c/test_process.c)."""
    run_c_test(tmp_path, "test_process")


def test_c_inspector(tmp_path: Path) -> None:
    """The inspector through the C ABI: pause on `debugger;`, evaluate in the paused frame,
    resume; a paused call's timeout; refusals (tests/c/test_inspector.c)."""
    run_c_test(tmp_path, "test_inspector")


def test_header_compiles_as_strict_c99(tmp_path: Path) -> None:
    cc = compiler("cc")
    build([cc, "-std=c99", *STRICT, "-I", str(PKG / "include"), "-c",
           str(C_TESTS / "header_c99.c"), "-o", str(tmp_path / "h.o")])


def test_header_compiles_as_cxx_twice_included(tmp_path: Path) -> None:
    cxx = compiler("c++")
    build([cxx, "-std=c++11", *STRICT, "-I", str(PKG / "include"), "-c",
           str(C_TESTS / "header_cxx.cc"), "-o", str(tmp_path / "h.o")])


def test_cdef_carries_typed_completions_and_option_structs() -> None:
    """tools/gen_cffi.py takes ivm.h's completion (a struct with a named union of typed
    results), the three option structs and their enums through to cffi."""
    from ivm._ffi import ffi, lib

    c = ffi.new("ivm_completion_t *")
    assert ffi.sizeof(c.result) == ffi.sizeof("void *")  # arrays of completions keep their layout
    for member, ctype in (("value", "ivm_value_t *"), ("context", "ivm_context_t *"),
                          ("script", "ivm_script_t *"),
                          ("heap_statistics", "ivm_heap_statistics_t *")):
        assert ffi.typeof(getattr(c.result, member)) is ffi.typeof(ctype)
    assert (lib.IVM_COMPLETION_NONE, lib.IVM_COMPLETION_VALUE, lib.IVM_COMPLETION_CONTEXT,
            lib.IVM_COMPLETION_SCRIPT, lib.IVM_COMPLETION_HEAP_STATISTICS) == (0, 1, 2, 3, 4)
    # The result flags kept the values of 0.2's IVM_EVAL_* flags.
    assert (lib.IVM_RESULT_PROMISE, lib.IVM_RESULT_COPY, lib.IVM_RESULT_EXTERNAL_COPY,
            lib.IVM_RESULT_TRANSFER_OUT, lib.IVM_RESULT_REFERENCE,
            lib.IVM_RESULT_DISCARD) == (1, 2, 4, 8, 16, 32)
    assert lib.IVM_GET_UNSAFE_INHERIT == 1
    for name, fields in (("ivm_source_options_t",
                          ["struct_size", "filename", "filename_len", "line_offset",
                           "column_offset"]),
                         ("ivm_run_options_t", ["struct_size", "timeout_ns"]),
                         ("ivm_result_options_t", ["struct_size", "flags"])):
        assert [f for f, _ in ffi.typeof(name).fields] == fields
