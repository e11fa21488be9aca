"""ExternalCopy's C paths (ivm/_cffi_copy.c): ExternalCopy.copy_into as a C method, and an
external_copy=True result of a C call path made into an ExternalCopy in C. Each is compared
with the Python code it stands for (ExternalCopy._copy_into), inline and in a worker."""

from __future__ import annotations

import gc
import os
import subprocess
import types
from typing import Any, Callable

import pytest

import ivm
from ivm._ffi import ffi, lib

BUFFER = "new Uint8Array([1, 2, 3]).buffer"

FLAGS: list[dict[str, bool]] = [
    {},
    {"release": False},
    {"release": True},
    {"transfer_in": True},
    {"transfer_in": False, "release": True},
    {"release": True, "transfer_in": True},
    {"transfer_in": True, "release": False},
]


def _released(copy: ivm.ExternalCopy) -> bool:
    try:
        copy.size
    except ivm.DisposedError:
        return True
    return False


def _outcome(fn: Any) -> tuple[str, str]:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the type and text are compared
        return type(exc).__name__, str(exc)
    return "no error", ""


@pytest.mark.skipif(os.environ.get("IVM_PY_C_METHODS") == "0", reason="the Python methods kept")
def test_copy_into_is_the_c_method() -> None:
    assert not isinstance(ivm.ExternalCopy.copy_into, types.FunctionType)
    assert isinstance(ivm.ExternalCopy._copy_into, types.FunctionType)
    assert "release" in (ivm.ExternalCopy.copy_into.__doc__ or "")


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_copy_into_makes_the_marker_the_python_method_makes(
    any_context: ivm.Context, flags: dict[str, bool]
) -> None:
    target = any_context.global_
    plain = any_context.eval_sync(BUFFER, external_copy=True, transfer_out=True)
    python = any_context.eval_sync(BUFFER, external_copy=True, transfer_out=True)
    assert type(plain) is ivm.ExternalCopy
    made = plain.copy_into(**flags)
    want = ivm.ExternalCopy._copy_into(python, **flags)
    assert type(made) is type(want) is ivm.CopyInto
    assert _released(plain) == _released(python) == (bool(flags.get("release"))
                                                      or bool(flags.get("transfer_in")))
    assert target.set_sync("made", made) is True
    assert target.set_sync("want", want, timeout=30) is True
    assert any_context.eval_sync("[made, want].map((b) => new Uint8Array(b).join()).join()") == (
        "1,2,3,1,2,3")
    # A second use: a transferring marker is spent on both paths, another passes again.
    again = _outcome(lambda: target.set_sync("again", made)), _outcome(
        lambda: target.set_sync("again", want))
    assert again[0] == again[1]
    assert (again[0][0] == "no error") == (not flags.get("transfer_in"))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((True,), {}),
        ((), {"release": 1}),
        ((), {"release": None}),
        ((), {"transfer_in": "yes"}),
        ((), {"release": True, "transfer_in": 0}),
        ((), {"relase": True}),
        ((), {"release": True, "other": True}),
    ],
    ids=repr,
)
def test_copy_into_refuses_what_the_python_method_refuses(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    plain, python = ivm.ExternalCopy([1]), ivm.ExternalCopy([1])
    got = _outcome(lambda: plain.copy_into(*args, **kwargs))
    want = _outcome(lambda: ivm.ExternalCopy._copy_into(python, *args, **kwargs))
    assert got[0] == "TypeError" and got == want
    assert not _released(plain) and plain.copy() == [1]


def test_copy_into_a_released_copy_raises_as_the_python_method_does() -> None:
    plain, python = ivm.ExternalCopy("x"), ivm.ExternalCopy("x")
    plain.release()
    python.release()
    for flags in FLAGS:
        got = _outcome(lambda: plain.copy_into(**flags))
        assert got[0] == "DisposedError"
        assert got == _outcome(lambda: ivm.ExternalCopy._copy_into(python, **flags))


@pytest.mark.parametrize("handle", ["missing", "null", "int", "other cdata"])
def test_copy_into_with_a_broken_handle_raises_as_the_python_method_does(handle: str) -> None:
    # _ptr is a private slot, but a bad one must raise, never crash: the C method reads it
    # with cffi's own conversion.
    copies = [ivm.ExternalCopy.__new__(ivm.ExternalCopy) for _ in range(2)]
    keep = ffi.new("int *")
    for copy in copies:
        if handle == "null":
            copy._ptr = ffi.cast("ivm_external_copy_t *", 0)  # type: ignore[attr-defined]
        elif handle == "int":
            copy._ptr = 12345  # type: ignore[attr-defined]
        elif handle == "other cdata":
            copy._ptr = keep  # type: ignore[attr-defined]
    got = _outcome(lambda: copies[0].copy_into(release=True))
    assert got[0] != "no error"
    assert got == _outcome(lambda: ivm.ExternalCopy._copy_into(copies[1], release=True))


def test_copy_into_and_copy_results_free_what_they_make(context: ivm.Context) -> None:
    target = context.global_
    context.eval_sync(f"globalThis.b = {BUFFER}; 0")

    def once() -> None:
        copy = context.eval_sync("b", external_copy=True)
        assert target.set_sync("got", copy.copy_into()) is True
        copy.copy_into(release=True)  # made, never used
        moved = context.eval_sync(f"{BUFFER}", external_copy=True, transfer_out=True)
        assert target.set_sync("moved", moved.copy_into(transfer_in=True)) is True

    once()
    gc.collect()
    before = lib.ivm_debug_live_objects()
    for _ in range(50):
        once()
    gc.collect()
    assert lib.ivm_debug_live_objects() == before
    assert context.eval_sync("new Uint8Array(moved).join() + new Uint8Array(got).join()") == (
        "1,2,31,2,3")


def test_an_external_copy_result_is_an_ordinary_external_copy(any_context: ivm.Context) -> None:
    copy = any_context.eval_sync("({ a: [1, 2], s: 'x' })", external_copy=True)
    assert type(copy) is ivm.ExternalCopy
    assert ffi.typeof(copy._ptr) is ffi.typeof("ivm_external_copy_t *")  # type: ignore[attr-defined]
    assert copy.copy() == {"a": [1, 2], "s": "x"}
    assert repr(copy).startswith("<ivm.ExternalCopy of ")
    with copy:
        assert copy.size > 0
    assert _released(copy)


_FAILED_REIMPORT = """
import sys, types
import ivm as old
copy = old.ExternalCopy([1])
iso = old.Isolate()  # (before: it imports a module of ivm)
ctx = iso.create_context_sync()
for name in [m for m in sys.modules if m == "ivm" or m.startswith("ivm.")]:
    del sys.modules[name]
sys.modules["ivm._external_copy"] = types.ModuleType("ivm._external_copy")  # no classes
try:
    import ivm
except ImportError:
    print("refused")
marker = copy.copy_into(release=True)
print(type(marker) is old.CopyInto, ctx.eval_sync("[1]", external_copy=True).copy())
"""


@pytest.mark.skipif(os.environ.get("IVM_PY_C_METHODS") == "0",
                    reason="the C paths' state; the Python ones import the stand-in module")
def test_a_failed_import_of_ivm_again_leaves_the_first_ones_copy_paths_whole(
    run_child: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # (The first version replaced what the C paths read with NULLs, then crashed in copy_into.)
    proc = run_child(_FAILED_REIMPORT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["refused", "True", "[1]"]


_REIMPORT = """
import sys
import ivm as old
copy = old.ExternalCopy([1])
for name in [m for m in sys.modules if m == "ivm" or m.startswith("ivm.")]:
    del sys.modules[name]
import ivm as new
print(type(copy.copy_into()) is old.CopyInto, type(new.ExternalCopy(2).copy_into()) is new.CopyInto)
"""


def test_a_copy_from_an_earlier_import_of_ivm_makes_that_imports_marker(
    run_child: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    proc = run_child(_REIMPORT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True"]
