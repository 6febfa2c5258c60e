"""Each trial's console output in its own run's Logs tab: the router, then real experiments."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wandb_reader import find_runs
from wandb_server import WandbServer

from tune_wandb import WandbLoggerCallback, _console, _pool
from tune_wandb._protocol import ConsoleLines, LogRow, WorkerSetup
from tune_wandb.callback import _warn_once_of_no_output

TESTS = Path(__file__).parent
LINES = 1000  # console_experiment.LINES


class _Run:
    """What the router calls on a run: ``console`` and ``finish``, recorded in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.finished = threading.Event()

    def console(self, stream: str, lines: list[str]) -> None:
        self.events.extend((stream, line) for line in lines)

    def finish(self, exit_code: int) -> None:
        self.events.append(("finish", exit_code))
        self.finished.set()


def _batch(pid: int, lines: list[str], is_err: bool = False) -> dict[str, Any]:
    return {"ip": "10.0.0.1", "pid": pid, "is_err": is_err, "lines": lines, "actor_name": "x"}


def _emit(batch: dict[str, Any]) -> None:
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    global_worker_stdstream_dispatcher.emit(batch)


@pytest.mark.unit
def test_lines_reach_the_run_that_claims_their_process_and_the_end_waits_for_them() -> None:
    router = _console.ConsoleRouter()
    assert router.start()
    a, b = _Run(), _Run()
    try:
        # Lines before any claim are held, then given to the claimant in order.
        _emit(_batch(1, ["a1", "a2"]))
        _emit(_batch(1, ["a-err"], is_err=True))
        router.claim("10.0.0.1", "1", a)
        router.claim("10.0.0.1", 2, b)
        _emit(_batch(2, ["b1"]))
        _emit(_batch(3, ["nobody's"]))
        router.end(a, 0)
        # Ray delivers a trial's last lines after the trial ended: they still land.
        _emit(_batch(1, ["a-late"]))
        assert not a.finished.wait(0.5)
        assert a.finished.wait(_console.QUIET_SECONDS + 2)
        router.end(b, 1)
        started = time.monotonic()
        router.flush(_console.MAX_END_WAIT_SECONDS + 1)
        assert b.finished.is_set()
        # The flush ends with the last run's end, not at its own timeout.
        assert time.monotonic() - started < _console.QUIET_SECONDS + 2
    finally:
        router.stop()
    assert a.events == [
        ("stdout", "a1"),
        ("stdout", "a2"),
        ("stderr", "a-err"),
        ("stdout", "a-late"),
        ("finish", 0),
    ]
    assert b.events == [("stdout", "b1"), ("finish", 1)]
    assert (router.unmatched_lines, router.unmatched_processes) == (1, {("10.0.0.1", "3")})
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    assert _console.HANDLER_NAME not in [n for n, _ in global_worker_stdstream_dispatcher.handlers]


@pytest.mark.unit
def test_held_lines_are_bounded() -> None:
    router = _console.ConsoleRouter()
    router.start()
    run = _Run()
    try:
        for i in range(_console.MAX_HELD_LINES // 100 + 5):
            _emit(_batch(9, [f"{i}-{j}" for j in range(100)]))
        router.claim("10.0.0.1", 9, run)
        router.end(run, 0)
        router.flush(_console.MAX_END_WAIT_SECONDS + 1)
    finally:
        router.stop()
    assert router.unmatched_lines == 500
    assert len(run.events) == _console.MAX_HELD_LINES + 1
    assert run.events[0] == ("stdout", "5-0")  # the oldest went first


@pytest.mark.usefixtures("ray_session")
def test_without_log_to_driver_it_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    _warn_once_of_no_output.cache_clear()
    for _ in range(2):
        callback = WandbLoggerCallback()
        callback.setup()
        assert callback._console is None
        callback.on_experiment_end([])
    said = [r.getMessage() for r in caplog.records if "log_to_driver=False" in r.getMessage()]
    assert len(said) == 1 and "capture_console=False" in said[0]
    caplog.clear()
    quiet = WandbLoggerCallback(capture_console=False)
    quiet.setup()
    quiet.on_experiment_end([])
    assert not [r for r in caplog.records if "log_to_driver" in r.getMessage()]


def _run_experiment(storage: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(TESTS / "console_experiment.py"), str(storage)],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and "EXPERIMENT-DONE" in done.stdout, done.stderr[-3000:]
    return done


def _expected(tag: str) -> list[tuple[str, str]]:
    lines = []
    for i in range(LINES):
        lines.append(("stderr", f"{tag} err {i}") if i % 10 == 0 else ("stdout", f"{tag} out {i}"))
    return [*lines, ("stderr", f"WARNING trial {tag} logged"), ("stdout", f"{tag} after report")]


def _check(output: list[tuple[str, str]], tag: str) -> None:
    """Every line of the trial, in order within each stream, and no other trial's line.

    The trial's process may write more (Python's "Exception ignored in ..."
    as Ray ends the actor): those lines are its own too.
    """
    expected = _expected(tag)
    other = "beta" if tag == "alpha" else "alpha"
    assert not [t for _, t in output if other in t]
    ours = [(s, t) for s, t in output if tag in t]
    for stream in ("stdout", "stderr"):
        assert [t for s, t in ours if s == stream] == [t for s, t in expected if s == stream]


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_every_line_in_its_own_run_offline(storage: Path, tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    _run_experiment(storage, env)
    runs = find_runs(storage / "console")
    assert len(runs) == 2
    for run in runs.values():
        _check(run.output, run.config["tag"])


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_every_line_in_its_own_run_online(
    wandb_server: WandbServer, storage: Path, tmp_path: Path
) -> None:
    env = {**os.environ, **wandb_server.env(), "HOME": str(tmp_path)}
    env.pop("WANDB_MODE")
    _run_experiment(storage, env)
    records = wandb_server.runs()
    assert len(records) == 2
    for record in records:
        assert record.finished
        _check([(line.stream, line.text) for line in record.lines], record.config["tag"])
    assert wandb_server.errors == []


@pytest.mark.unit
def test_the_end_waits_no_longer_than_its_bound() -> None:
    clock = [0.0]
    router = _console.ConsoleRouter(clock=lambda: clock[0])
    router.start()
    run = _Run()
    try:
        router.claim("10.0.0.1", 4, run)
        router.end(run, 0)
        # Lines keep coming: the run still ends, MAX_END_WAIT_SECONDS after its trial did.
        for step in range(int(_console.MAX_END_WAIT_SECONDS) + 2):
            clock[0] = float(step)
            _emit(_batch(4, [f"line {step}"]))
            time.sleep(0.15)
            if run.finished.is_set():
                break
        assert run.finished.wait(2)
        assert clock[0] >= _console.MAX_END_WAIT_SECONDS
    finally:
        router.stop()


@pytest.mark.unit
def test_past_the_backlog_cap_lines_are_dropped_and_counted_never_rows() -> None:
    pool = _pool.WorkerPool()
    run = _pool.Run(pool, "t", "trial_t", WorkerSetup("t", "trial_t", {}, driver_pid=1), None)
    pool._add_console(_pool._Console(run, "stdout", ("kept",)))
    for _ in range(_pool._BACKLOG_IN_MEMORY):
        pool._add_result(run, {"loss": 1.0})
    pool._add_console(_pool._Console(run, "stderr", ("dropped", "too")))
    pool._add_result(run, {"loss": 2.0})  # a row past the cap is spooled, never dropped
    assert run.console_dropped == 2
    messages = run.ledger.take(_pool._BACKLOG_IN_MEMORY + 10)
    assert isinstance(messages[0], ConsoleLines) and messages[0].lines == ("kept",)
    assert sum(isinstance(m, LogRow) for m in messages) == run.rows == _pool._BACKLOG_IN_MEMORY + 1
    run.ledger.close()


_events = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.integers(1, 3), st.booleans(), st.integers(1, 4)),
        st.tuples(st.just("claim"), st.integers(1, 3), st.integers(0, 2)),
    ),
    max_size=40,
)


@pytest.mark.unit
@given(events=_events)
def test_every_line_goes_to_the_run_owning_its_process_in_order(events: list[Any]) -> None:
    router = _console.ConsoleRouter()  # driven directly, as its thread would
    runs = [_Run() for _ in range(3)]
    owner: dict[int, int] = {}
    held: dict[int, list[tuple[str, str]]] = {}
    expected: list[list[tuple[str, str]]] = [[], [], []]
    counter = 0
    for event in events:
        if event[0] == "claim":
            _, pid, index = event
            router._take(_console._Claim(_console.key_of("ip", pid), runs[index]))
            owner[pid] = index
            expected[index].extend(held.pop(pid, []))
        else:
            _, pid, is_err, n = event
            lines = [f"{pid}-{counter + i}" for i in range(n)]
            counter += n
            router._take(_batch(pid, lines, is_err) | {"ip": "ip"})
            stream = "stderr" if is_err else "stdout"
            target = expected[owner[pid]] if pid in owner else held.setdefault(pid, [])
            target.extend((stream, line) for line in lines)
    router._end_all()
    for run, lines in zip(runs, expected, strict=True):
        assert run.events == lines
    assert router.unmatched_lines == sum(len(lines) for lines in held.values())


@pytest.mark.unit
def test_a_callback_pickled_before_sweeps_and_console_capture_still_loads() -> None:
    import pickle

    callback = WandbLoggerCallback(project="p")
    state = callback.__getstate__()
    del state["sweep"], state["capture_console"]
    restored = WandbLoggerCallback.__new__(WandbLoggerCallback)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    assert (restored.sweep, restored.capture_console, restored.project) == (None, True, "p")
    restored._pool.close()
