"""Ctrl-C (SIGINT) during a long synchronous call stops the JavaScript."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ivm

# Each child handles SIGINT the Python way even when started with it ignored (a shell's
# background job inherits SIG_IGN, and Python then leaves it so, as does ivm).
CHILD = r"""
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import ivm
isolate = ivm.Isolate(process=sys.argv[2])
context = isolate.create_context_sync()
print("ready", flush=True)
try:
    context.eval_sync(sys.argv[1])
except KeyboardInterrupt:
    # The isolate survived: the JS was terminated, not the process.
    print("interrupted", context.eval_sync("6 * 7"), flush=True)
    sys.exit(0)
print("not interrupted", flush=True)
sys.exit(3)
"""


#: Where the child's isolate lives: inline, or in a worker process (the sync call waits for
#: the worker; Ctrl-C cancels it there).
PLACES = ["inline", "isolated"]


def run_and_interrupt(
    code: str, *, promise: bool = False, process: str = "inline", whole_group: bool = False,
    warm: int = 0,
) -> tuple[int, str, str]:
    child = CHILD.replace("eval_sync(sys.argv[1])", f"eval_sync(sys.argv[1], promise={promise})")
    # `warm` short calls first: a worker then reads with the thread that ran the last one
    # (libivm/worker_follow.cc), and must still read the CANCEL.
    child = child.replace('print("ready"', f'[context.eval_sync("1") for _ in range({warm})]\nprint("ready"')
    proc = subprocess.Popen(
        [sys.executable, "-c", child, code, process],
        cwd=Path(ivm.__file__).parent.parent,  # import the installed ivm, not the source tree
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=whole_group,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # let the JavaScript start
    if whole_group:  # as a terminal's Ctrl-C: the child and its worker processes
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.parametrize("process", PLACES)
def test_ctrl_c_stops_a_busy_loop(process: str) -> None:
    code, out, err = run_and_interrupt("while (true) {}", process=process)
    assert code == 0, err
    assert "interrupted 42" in out


@pytest.mark.parametrize("process", PLACES)
def test_ctrl_c_stops_a_busy_loop_after_a_loop_of_short_calls(process: str) -> None:
    code, out, err = run_and_interrupt("while (true) {}", process=process, warm=3000)
    assert code == 0, err
    assert "interrupted 42" in out


@pytest.mark.parametrize("process", PLACES)
def test_ctrl_c_stops_a_promise_wait(process: str) -> None:
    code, out, err = run_and_interrupt("new Promise(() => {})", promise=True, process=process)
    assert code == 0, err
    assert "interrupted 42" in out


NESTED_CHILD = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import ivm
isolate = ivm.Isolate(process=sys.argv[1])
context = isolate.create_context_sync()
seen = []
def callback():
    try:
        context.eval_sync("while (true) {}")   # nested in the outer call: Ctrl-C stops it
    except BaseException as exc:
        seen.append(type(exc).__name__)
        if sys.argv[2] == "swallow":
            return "swallowed"
        raise
context.eval_closure_sync("globalThis.f = $0", [ivm.Callback(callback)])
print("ready", flush=True)
try:
    print("outer returned", context.eval_sync("f()"), seen, flush=True)
except KeyboardInterrupt:
    print("outer interrupted", seen, flush=True)
except BaseException as exc:
    print("outer raised", type(exc).__name__, exc, seen, flush=True)
print("usable", context.eval_sync("6 * 7"), flush=True)
"""


@pytest.mark.parametrize("process", PLACES)
@pytest.mark.parametrize("callback", ["raise", "swallow"])
def test_ctrl_c_stops_a_call_nested_in_a_host_callback(process: str, callback: str) -> None:
    """Sync call -> JavaScript -> host callback -> sync call into the same isolate, Ctrl-C:
    the innermost call stops with KeyboardInterrupt; the outer one sees what the callback
    makes of it, as inline: re-raised, KeyboardInterrupt; swallowed, the termination of the
    isolate's JavaScript (TerminatedError). In a worker the host cancels only the nested
    call (it used to cancel the outer call too: IvmError "The call was cancelled")."""
    proc = subprocess.Popen(
        [sys.executable, "-c", NESTED_CHILD, process, callback],
        cwd=Path(ivm.__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # let the nested loop start
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    want = ("outer interrupted ['KeyboardInterrupt']" if callback == "raise"
            else "outer raised TerminatedError Script execution was terminated."
            " ['KeyboardInterrupt']")
    assert want in out and "usable 42" in out, out + err


def test_ctrl_c_to_the_whole_process_group_spares_the_worker() -> None:
    """A terminal signals every process of its foreground group: the worker ignores SIGINT
    (the host cancels the call), so the isolate survives and answers after the interrupt."""
    code, out, err = run_and_interrupt("while (true) {}", process="isolated", whole_group=True)
    assert code == 0, err
    assert "interrupted 42" in out


def test_without_ctrl_c_the_loop_is_not_interrupted() -> None:
    # The counterpart: the child reports "not interrupted" when the code ends by itself.
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "1 + 1", "inline"],
        cwd=Path(ivm.__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "not interrupted" in proc.stdout


LEAK_CHILD = r"""
import gc, signal
signal.signal(signal.SIGINT, signal.default_int_handler)
import ivm
from ivm._ffi import lib
isolate = ivm.Isolate()
context = isolate.create_context_sync()
context.eval_sync("1")
gc.collect()
before = lib.ivm_debug_live_objects()
for _ in range(3):
    print("ready", flush=True)
    try:
        context.eval_sync("while (true) {}")
    except KeyboardInterrupt:
        pass
gc.collect()
print("live", before, lib.ivm_debug_live_objects(), flush=True)
"""


def _interrupt_each_round(code: str, *args: str, rounds: int) -> tuple[int, str, str]:
    """Runs `code` in a child that prints "ready" before each round of JavaScript; sends
    it SIGINT 0.3 s after each; returns its exit status and output."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=Path(ivm.__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        for _ in range(rounds):
            # (bounded: a child whose loop was not stopped never prints again; one line
            # each round, so none waits in the pipe's buffer unseen by select)
            assert select.select([proc.stdout], [], [], 30)[0], "the child stopped answering"
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.3)  # let the JavaScript start
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, out, err


def test_ctrl_c_leaks_no_error_object() -> None:
    """Python raises KeyboardInterrupt as the interrupted call returns, before ivm can free
    the call's error: each Ctrl-C used to leak one ivm_error_t. The error of a call that
    the signal stopped is now a shared static object that ivm_error_free leaves alone."""
    returncode, out, err = _interrupt_each_round(LEAK_CHILD, rounds=3)
    assert returncode == 0, err
    _, before, after = out.split()
    assert int(after) == int(before), f"{int(after) - int(before)} libivm objects leaked"


CHAIN_CHILD = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import ivm
depth = int(sys.argv[1])
contexts = [ivm.Isolate().create_context_sync() for _ in range(depth)]
for i, context in enumerate(contexts[:-1]):
    inner = contexts[i + 1]
    callback = ivm.Callback(lambda c=inner: c.eval_sync("f()"))
    context.eval_closure_sync("globalThis.f = $0", [callback])
contexts[-1].eval_sync("globalThis.f = () => { for (;;) {} }; 0")
results = []
for round in range(2):
    print("ready", flush=True)
    try:
        contexts[0].eval_sync("f()")
    except KeyboardInterrupt:
        results.append([c.eval_sync("6 * 7") for c in contexts] == [42] * depth)
print("interrupted", results, flush=True)
"""


@pytest.mark.parametrize("depth", [2, 20])
def test_ctrl_c_stops_a_chain_of_isolates_nested_through_callbacks(depth: int) -> None:
    """One call per isolate, each nested in a host callback of the previous one: libivm
    lists the first 16 without a lock and the deeper ones under its mutex (signals.cc);
    Ctrl-C stops the innermost loop either way, twice (the listing is undone each time)."""
    returncode, out, err = _interrupt_each_round(CHAIN_CHILD, str(depth), rounds=2)
    assert returncode == 0, out + err
    assert out.strip() == "interrupted [True, True]", out + err


IDLE_CHILD = r"""
import gc, signal, threading
signal.signal(signal.SIGINT, signal.default_int_handler)
import ivm
# Isolates that each made a call on this thread and were then disposed: each kept its
# lock-free listing between calls, and gave it back at its disposal.
for _ in range(20):
    ivm.Isolate().create_context_sync().eval_sync("1")
gc.collect()
# An isolate listed by a call on this thread, now busy on another thread: Ctrl-C stops
# only this thread's JavaScript, so its call ends by its timeout.
other = ivm.Isolate().create_context_sync()
other.eval_sync("1")
outcome = []
def run_other():
    try:
        other.eval_sync("for (;;) {}", timeout=3)
    except ivm.TimeoutError:
        outcome.append("timeout")
    except BaseException as e:
        outcome.append(type(e).__name__)
thread = threading.Thread(target=run_other)
thread.start()
mine = ivm.Isolate().create_context_sync()
print("ready", flush=True)
try:
    mine.eval_sync("for (;;) {}")
except KeyboardInterrupt:
    thread.join()
    print("interrupted", outcome, mine.eval_sync("6 * 7"), flush=True)
"""


def test_ctrl_c_spares_an_idle_listed_isolate_busy_on_another_thread() -> None:
    """An isolate keeps its lock-free listing (signals.cc) between its calls on the
    watched thread, flagged idle: Ctrl-C must not stop its call on another thread, and the
    listings of disposed isolates are given back (the watcher never reads a freed one)."""
    returncode, out, err = _interrupt_each_round(IDLE_CHILD, rounds=1)
    assert returncode == 0, out + err
    assert out.strip() == "interrupted ['timeout'] 42", out + err


@pytest.mark.parametrize("process", PLACES)
def test_ctrl_c_between_short_calls_never_cancels_the_next_one(process: str) -> None:
    """A loop of short calls with SIGINT every few milliseconds: each signal is a
    KeyboardInterrupt, and no call fails for it. libivm's watcher reads the signal a thread
    wake-up after it came; the call it came in may have ended by then and the next one
    begun, which it cancelled (IvmError 'The call was cancelled': 39-92 in 5 s on a worker
    isolate, before the watcher compared the signal's number with the call's start)."""
    child = r"""
import os, random, signal, threading, time, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import ivm
context = ivm.Isolate(process=sys.argv[1]).create_context_sync()
go = True
def kill():
    while go:
        time.sleep(random.uniform(0.002, 0.005))
        os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=kill, daemon=True).start()
counts = {"ok": 0, "interrupted": 0, "failed": 0}
failures = []
end = time.monotonic() + 2
while True:
    try:
        if time.monotonic() > end:
            break
        try:
            if context.eval_sync("1 + 1") == 2:
                counts["ok"] += 1
        except ivm.IvmError as exc:
            counts["failed"] += 1
            failures.append(repr(exc))
    except KeyboardInterrupt:
        counts["interrupted"] += 1
go = False
while True:
    try:
        time.sleep(0.05)
        break
    except KeyboardInterrupt:
        pass
print(counts["ok"] > 0, counts["interrupted"] > 50, counts["failed"], failures[:3], flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", child, process], capture_output=True, text=True,
                          timeout=60, cwd=Path(ivm.__file__).parent.parent)
    assert proc.stdout.strip() == "True True 0 []", (proc.stdout, proc.stderr[-2000:])
