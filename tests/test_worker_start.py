"""How worker processes start: the default worker is forked from one zygote per host
process (`ivm-worker --zygote`, started with the first worker), which has loaded and
relocated the worker's libraries; the forked worker is still our child, reaped and
reported like a spawned one, and a zygote that dies is replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

import pytest

import ivm


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")


def _zygotes() -> list[int]:
    """Our live children that are worker zygotes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(int(entry))
            if int(fields[1]) == os.getpid() and fields[0] != "Z" and \
                    _cmdline(int(entry))[1:] == [b"--zygote"]:
                found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


@pytest.fixture(autouse=True)
def default_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IVM_WORKER_PATH", raising=False)


def test_workers_are_forked_from_one_zygote() -> None:
    a = ivm.Isolate(process="isolated")
    b = ivm.Isolate(process="isolated")
    try:
        zygotes = _zygotes()
        assert len(zygotes) == 1
        for iso in (a, b):
            assert iso.pid is not None
            assert int(_stat(iso.pid)[1]) == os.getpid()   # our child, not the zygote's
            assert _cmdline(iso.pid)[0].endswith(b"ivm-worker")
            assert b"--zygote" not in _cmdline(iso.pid)
            status = Path(f"/proc/{iso.pid}/status").read_text()
            assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status
            assert sorted(int(fd) for fd in os.listdir(f"/proc/{iso.pid}/fd")) == [0, 1, 2, 3]
        ctx = b.create_context_sync()
        assert ctx.eval_sync("6 * 7") == 42
    finally:
        a.dispose()
        b.dispose()


def test_a_forked_worker_reports_its_death(wait_until: Callable[..., bool]) -> None:
    iso = ivm.Isolate(process="isolated")
    ctx = iso.create_context_sync()
    assert _zygotes()
    assert iso.pid is not None
    os.kill(iso.pid, signal.SIGKILL)
    with pytest.raises(ivm.IsolateCrashedError, match="SIGKILL"):
        ctx.eval_sync("1")
    iso.dispose()


def test_a_dead_zygote_is_reaped_and_replaced(wait_until: Callable[..., bool]) -> None:
    """Reaped at once (the I/O thread watches its pidfd, since 0.6), not only by the next
    worker start: no zombie is left meanwhile."""
    with ivm.Isolate(process="isolated"):
        pass
    (zygote,) = _zygotes()
    os.kill(zygote, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{zygote}").exists())
    with ivm.Isolate(process="isolated") as iso:
        assert iso.create_context_sync().eval_sync("1 + 1") == 2
        replaced = _zygotes()
        assert len(replaced) == 1 and replaced != [zygote]
    assert not Path(f"/proc/{zygote}").exists()   # reaped: no zombie left


def test_the_test_worker_is_spawned_not_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    """$IVM_WORKER_PATH names a worker of its own: it is started directly."""
    worker = Path(ivm.__file__).resolve().parent / "ivm-worker"
    monkeypatch.setenv("IVM_WORKER_PATH", str(worker))
    with ivm.Isolate(process="isolated") as iso:
        assert iso.pid is not None
        assert _cmdline(iso.pid) == [str(worker).encode()]
        assert int(_stat(iso.pid)[1]) == os.getpid()
