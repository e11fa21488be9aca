"""docs/examples/dask_job_runner.py runs on a real Dask cluster (where dask installs: the
`dask` extra, also in `test`); the trio job runner's tests are in test_async.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ivm

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_dask_job_runner_example_contains_crashes_in_actors() -> None:
    pytest.importorskip("distributed")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "dask_job_runner.py")],
        cwd=Path(ivm.__file__).parent.parent,  # beside the installed package (see test_async)
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    job = r"^job +\d+ +{} +{} +dask worker \d+, isolate \d+ \(ivm worker \d+\): {}"
    assert re.search(
        job.format("engine abort", "FAIL", r"IsolateCrashedError: worker process \d+ was killed by "
                   r"signal \d+ .* -> isolate \d+ replaced \(ivm worker \d+\)$"), out, re.M), out
    assert re.search(job.format("memory hog", "FAIL", "MemoryLimitError"), out, re.M), out
    assert re.search(job.format("infinite loop", "FAIL", "TimeoutError"), out, re.M), out
    assert re.search(job.format("sum to 1000", "ok", "500500$"), out, re.M), out
    # The jobs after the crash, on the same actor, still ran.
    assert re.search(job.format("greeting", "ok", "'hello from a worker'$"), out, re.M), out
    assert re.search(r"^summary: 10 jobs, 5 ok, 5 failed, 2 isolates replaced", out, re.M), out
    # Both Dask workers took jobs.
    assert len(set(re.findall(r"dask worker (\d+)", out))) == 2, out
