"""The public surface: ``ivm.__all__``, typing marker, version and ``ivm.undefined``."""

from __future__ import annotations

import __future__
import copy
import os
import pickle
import re
import types
from pathlib import Path

import pytest

import ivm

EXPECTED_ALL = {
    "Arguments", "Callback", "CallbackMode", "Context", "CopyInto", "CpuProfile", "CrossProcessError", "DerefInto", "DisposedError", "ExternalCopy", "HeapStatistics", "HostBasics", "InspectorSession", "Isolate",
    "IsolateCrashedError", "IvmError", "JSBigInt", "JSError", "JSMap", "JSPrimitive", "JSRegExp", "MemoryLimitError", "Module", "ProcessGroup", "Reference", "Script", "SnapshotScript", "TerminatedError", "TimeoutError",
    "TransferError", "UnhandledRejection", "Undefined", "set_copy_limit", "set_ignored_error_handler", "undefined", "v8_version",
}


def test_all_names_exist_and_are_public() -> None:
    assert len(ivm.__all__) == len(set(ivm.__all__))
    for name in ivm.__all__:
        assert not name.startswith("_"), name
        assert hasattr(ivm, name), name


def test_all_is_the_documented_api() -> None:
    assert set(ivm.__all__) == EXPECTED_ALL


def test_every_public_attribute_is_exported() -> None:
    public = {
        name for name, value in vars(ivm).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert public == set(ivm.__all__)


def test_star_import() -> None:
    namespace: dict[str, object] = {}
    exec("from ivm import *", namespace)
    assert EXPECTED_ALL <= set(namespace)


def test_exported_classes_present_themselves_as_ivm() -> None:
    for name in ivm.__all__:
        value = getattr(ivm, name)
        if isinstance(value, type):
            assert value.__module__.startswith("ivm"), name
            assert value.__doc__, name


def test_py_typed_is_shipped() -> None:
    assert os.path.isfile(os.path.join(os.path.dirname(ivm.__file__), "py.typed"))


def test_version_is_the_meson_project_version() -> None:
    meson_build = Path(__file__).resolve().parent.parent / "meson.build"
    if not meson_build.is_file():
        pytest.skip("meson.build not found next to the tests")
    match = re.search(r"project\([^)]*?version\s*:\s*'([^']+)'", meson_build.read_text(), re.S)
    assert match, "no version in meson.build's project()"
    assert ivm.__version__ == match.group(1)


def test_version_format() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", ivm.__version__)
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+.*", ivm.v8_version)


def test_undefined_is_a_falsy_singleton() -> None:
    assert not ivm.undefined
    assert bool(ivm.undefined) is False
    assert ivm.undefined is not None
    assert ivm.undefined != None  # noqa: E711
    assert ivm.Undefined() is ivm.undefined
    assert type(ivm.undefined) is ivm.Undefined
    assert repr(ivm.undefined) == "ivm.undefined"
    assert copy.copy(ivm.undefined) is ivm.undefined
    assert copy.deepcopy(ivm.undefined) is ivm.undefined
    assert pickle.loads(pickle.dumps(ivm.undefined)) is ivm.undefined


def test_undefined_has_no_instance_dict() -> None:
    with pytest.raises(AttributeError):
        ivm.undefined.x = 1  # type: ignore[attr-defined]


def test_heap_statistics_is_a_frozen_dataclass() -> None:
    import dataclasses

    assert dataclasses.is_dataclass(ivm.HeapStatistics)
    names = {f.name for f in dataclasses.fields(ivm.HeapStatistics)}
    assert {"total_heap_size", "used_heap_size", "heap_size_limit", "total_available_size",
            "malloced_memory", "external_memory", "externally_allocated_size"} <= names
    with ivm.Isolate(memory_limit=16) as iso:
        stats = iso.get_heap_statistics_sync()
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.used_heap_size = 0  # type: ignore[misc]
