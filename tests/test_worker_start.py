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


# What a worker's start-up no longer does for it (libivm/worker_server.cc, WarmUp): ICU's
# locale data, collation, segmentation, number and date formats in many locales, calendars
# and time zones, all loaded on first use in a sandboxed worker. A first use that named a
# path (a file ICU opens lazily) would be a forbidden system call and kill the worker.
_INTL_AFTER_START = r"""JSON.stringify([
  new Intl.DateTimeFormat('en-US', {timeZone: 'America/New_York', dateStyle: 'full',
                                    timeStyle: 'long'}).format(0),
  new Intl.DateTimeFormat('ja-JP-u-ca-japanese', {timeZone: 'Asia/Tokyo', era: 'long',
                                                  timeZoneName: 'long'}).format(0),
  new Intl.DateTimeFormat('he-u-ca-hebrew', {dateStyle: 'long', timeZone: 'UTC'}).format(0),
  new Intl.DateTimeFormat('ar-SA-u-ca-islamic-nu-arab', {timeZone: 'Asia/Riyadh'})
    .formatToParts(0).map(p => p.type + '=' + p.value).join(';'),
  new Intl.DateTimeFormat('zh-u-ca-chinese', {timeZone: 'Australia/Lord_Howe',
                                               timeZoneName: 'shortGeneric'}).format(0),
  new Intl.DateTimeFormat('de', {timeZone: 'Europe/Berlin', hour: 'numeric'})
    .formatRange(0, 7200000),
  new Intl.DateTimeFormat(undefined, {timeZone: 'Etc/GMT+5'}).resolvedOptions().timeZone,
  new Date(0).toLocaleString('fr-CA', {timeZone: 'America/Montreal', timeZoneName: 'long'}),
  new Date(0).toLocaleTimeString('ko-KR'), new Date(0).toLocaleDateString('th-TH'),
  Date.parse('Thu, 01 Jan 1970 00:00:00 GMT+0100'),
  new Intl.NumberFormat('de-DE', {style: 'currency', currency: 'EUR'}).format(1234.5),
  new Intl.NumberFormat('hi-IN', {notation: 'compact'}).format(12345678),
  new Intl.NumberFormat('en', {style: 'unit', unit: 'kilometer-per-hour',
                               unitDisplay: 'long'}).format(50),
  new Intl.NumberFormat('ar-EG').format(1234.5), (1.5).toLocaleString('fa-IR'),
  new Intl.NumberFormat('en', {maximumSignificantDigits: 2}).format(3.14159),
  new Intl.Collator('fr').compare('a', 'b'), ['b', 'a', 'C'].sort(new Intl.Collator('sv').compare),
  new Intl.Collator('de', {numeric: true, sensitivity: 'base'}).compare('a10', 'A9'),
  'ä'.localeCompare('z', 'de'), 'ä'.localeCompare('z', 'sv'),
  new Intl.Collator('zh-u-co-pinyin').compare('\u4e2d', '\u6587'),
  'I\u0130'.toLocaleLowerCase('tr'), 'i\u0307'.toLocaleUpperCase('lt'), 'ß'.toUpperCase(),
  new Intl.PluralRules('en').select(1), new Intl.PluralRules('cy', {type: 'ordinal'}).select(3),
  new Intl.RelativeTimeFormat('en').format(-1, 'day'),
  new Intl.RelativeTimeFormat('ru', {numeric: 'auto'}).format(2, 'week'),
  Array.from(new Intl.Segmenter('ja', {granularity: 'word'}).segment('\u65e5\u672c\u8a9e\u3067\u3059'),
             s => s.segment).join('|'),
  Array.from(new Intl.Segmenter('th', {granularity: 'word'}).segment('\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a'),
             s => s.segment).join('|'),
  Array.from(new Intl.Segmenter('en', {granularity: 'sentence'}).segment('Hi. Bye.')).length,
  Array.from(new Intl.Segmenter('en').segment('e\u0301\ud83d\udc4d\ud83c\udffd')).length,
  new Intl.ListFormat('es', {type: 'disjunction'}).format(['a', 'b', 'c']),
  new Intl.DisplayNames('en', {type: 'region'}).of('DE'),
  new Intl.DisplayNames('ja', {type: 'language'}).of('fr-CA'),
  new Intl.DisplayNames('de', {type: 'currency'}).of('JPY'),
  new Intl.Locale('zh-Hant').maximize().toString(), Intl.getCanonicalLocales('EN-us')[0],
  ['calendar', 'collation', 'currency', 'numberingSystem', 'timeZone', 'unit']
    .map(k => Intl.supportedValuesOf(k).length),
  Intl.DateTimeFormat.supportedLocalesOf(['sw', 'xx']),
  'e\u0301'.normalize('NFC'), '\ufb01'.normalize('NFKD'),
  /\p{Script=Greek}+/u.exec('ab\u03b1\u03b2')[0], /\u212a/iu.test('k'),
])"""


def test_intl_runs_in_a_fresh_sandboxed_worker() -> None:
    with ivm.Isolate() as inline:
        expected = inline.create_context_sync().eval_sync(_INTL_AFTER_START)
    with ivm.Isolate(process="isolated") as iso:
        assert iso.pid is not None
        assert "Seccomp:\t2" in Path(f"/proc/{iso.pid}/status").read_text()
        # The worker's first JavaScript after its start-up: nothing was loaded before it.
        assert iso.create_context_sync().eval_sync(_INTL_AFTER_START) == expected
        assert iso.create_context_sync().eval_sync("1 + 1") == 2


def test_intl_ignores_icu_data_in_a_worker(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """$ICU_DATA would make ICU look for files at each first use of a locale's data, which the
    sandbox forbids: the worker ignores it (a worker spawned now has it in its environment;
    a forked one has the zygote's)."""
    with ivm.Isolate() as inline:
        expected = inline.create_context_sync().eval_sync(_INTL_AFTER_START)
    monkeypatch.setenv("ICU_DATA", str(tmp_path))
    monkeypatch.setenv("IVM_WORKER_PATH", str(Path(ivm.__file__).resolve().parent / "ivm-worker"))
    with ivm.Isolate(process="isolated") as iso:
        assert iso.create_context_sync().eval_sync(_INTL_AFTER_START) == expected
