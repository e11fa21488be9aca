"""CPU profiles in the DevTools ``Profiler.Profile`` shape
(``Isolate.start_cpu_profiler`` / ``stop_cpu_profiler``; docs/devtools.md)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from ._ffi import ffi

__all__ = ["CpuProfile"]


class CpuProfile:
    """A CPU profile as Chrome DevTools reads it (``Profiler.Profile``).

    ``nodes`` is the call tree: each node a dict with ``id``, ``callFrame``
    (``functionName``, ``scriptId``, ``url``, ``lineNumber`` and
    ``columnNumber``, 0-based), ``hitCount`` and ``children`` (ids).
    ``samples`` names the node of each sample, ``time_deltas`` the
    microseconds since the previous one (the first: since ``start_time``).
    :meth:`save` writes a ``.cpuprofile`` file that DevTools opens
    (Performance panel, "Load profile").
    """

    __slots__ = ("title", "_data")

    def __init__(self, title: str, data: dict[str, Any]) -> None:
        self.title = title
        self._data = data

    @classmethod
    def _from_json(cls, title: str, text: str) -> CpuProfile:
        return cls(title, json.loads(text))

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return list(self._data["nodes"])

    @property
    def start_time(self) -> int:
        """When the profile started, in microseconds (V8's monotonic clock)."""
        return int(self._data["startTime"])

    @property
    def end_time(self) -> int:
        """When it stopped, in microseconds."""
        return int(self._data["endTime"])

    @property
    def samples(self) -> list[int]:
        return list(self._data["samples"])

    @property
    def time_deltas(self) -> list[int]:
        return list(self._data["timeDeltas"])

    def to_dict(self) -> dict[str, Any]:
        """The profile as the DevTools protocol has it (a JSON-ready dict)."""
        copied: dict[str, Any] = json.loads(json.dumps(self._data))
        return copied

    def hot_functions(self) -> list[tuple[str, str, int, int]]:
        """``(functionName, url, lineNumber, hitCount)`` of the nodes that
        were sampled, most samples first (lines 1-based here, as editors show
        them)."""
        rows = [
            (n["callFrame"]["functionName"], n["callFrame"]["url"],
             n["callFrame"]["lineNumber"] + 1, n["hitCount"])
            for n in self._data["nodes"] if n["hitCount"] > 0
        ]
        return sorted(rows, key=lambda r: -r[3])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the profile as JSON, a ``.cpuprofile`` file for DevTools."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self._data, f, ensure_ascii=True)

    def __repr__(self) -> str:
        return (f"<ivm.CpuProfile {self.title!r}: {len(self._data['nodes'])} nodes, "
                f"{len(self._data['samples'])} samples>")


def title_bytes(title: object) -> bytes:
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, not {type(title).__name__}")
    return title.encode("utf-8", "surrogatepass")


def profiler_options(sampling_interval: float | None) -> Any:
    """``ivm_cpu_profiler_options_t`` for an interval in seconds (None: 1 ms)."""
    if sampling_interval is None:
        return ffi.NULL
    if isinstance(sampling_interval, bool) or not isinstance(sampling_interval, (int, float)):
        raise TypeError("sampling_interval must be a number of seconds or None, "
                        f"not {type(sampling_interval).__name__}")
    if not math.isfinite(sampling_interval) or not 50e-6 <= sampling_interval <= 60:
        raise ValueError("sampling_interval must be between 50e-6 and 60 seconds, "
                         f"not {sampling_interval!r}")
    opts = ffi.new("ivm_cpu_profiler_options_t *")
    opts.struct_size = ffi.sizeof("ivm_cpu_profiler_options_t")
    opts.sampling_interval_ns = round(sampling_interval * 1e9)
    return opts

