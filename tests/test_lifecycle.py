"""The worker lifecycle through the real callback, with simulated trials (no Ray actors).

Each test drives ``WandbLoggerCallback``'s Tune hooks with objects shaped like
Tune's trials, so that a worker can be killed at an exact point of its life
(after its end marker, right after a replacement was handed its rows) and a
burst of trial starts can be as large as a head node's.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
from support import FakeTrial, report, wait_for
from wandb_reader import find_runs

from tune_wandb import WandbLoggerCallback
from tune_wandb._pool import RunState

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_processes")]


def new_callback(**kwargs: object) -> WandbLoggerCallback:
    callback = WandbLoggerCallback(project="lifecycle", **kwargs)  # type: ignore[arg-type]
    callback.setup()
    return callback


def kill_current_worker(callback: WandbLoggerCallback, trial: FakeTrial) -> int:
    run = callback._trials[trial.trial_id].run
    pid = run.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def check_rows(experiment: Path, n: int, deaths: int) -> None:
    """Every row 1..n landed, in order, at most one twice per death; the run finished 0."""
    (run,) = find_runs(experiment).values()
    rows = run.column("training_iteration")
    assert sorted(set(rows)) == list(range(1, n + 1)), rows
    assert len(rows) - n <= deaths
    assert run.exit_code == 0


def test_a_worker_killed_after_its_end_marker_is_replaced_and_finishes_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tune_wandb")
    experiment = tmp_path / "after-end"
    callback = new_callback(upload_timeout=120)
    trial = FakeTrial("t0001", experiment)
    callback.log_trial_start(trial)
    report(callback, trial, 1, 31)
    run = callback._trials[trial.trial_id].run
    wait_for(lambda: run.ledger.confirmed_seq == 30)
    # SIGSTOP first, so that the end marker is written to a worker that cannot
    # finish the run before it is killed.
    pid = run.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    callback.log_trial_end(trial)
    wait_for(lambda: run.state is RunState.ENDING and run.ledger.pending is False)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    trial.status = "TERMINATED"
    callback.on_experiment_end([trial])
    # The replacement was given the end marker again: no upload_timeout waited.
    assert time.monotonic() - started < 30
    assert run.deaths == 1 and run.state is RunState.FINISHED
    assert run.finished is not None and run.finished.exit_code == 0
    check_rows(experiment, 30, deaths=1)
    assert any("exit code -9" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("settle", [0.0, 0.6], ids=["at-once", "after-some-rows"])
def test_a_replacement_killed_before_its_first_confirmation_hands_over_its_rows(
    settle: float, tmp_path: Path
) -> None:
    # Issue #11: rows resent to a replacement were not tracked as its own; the
    # old engine lost up to 100 of these 400 rows.
    experiment = tmp_path / "twice"
    callback = new_callback()
    trial = FakeTrial("t0002", experiment)
    callback.log_trial_start(trial)
    report(callback, trial, 1, 201)
    run = callback._trials[trial.trial_id].run
    wait_for(lambda: run.ledger.confirmed_seq == 200)
    # Rows 201-300 reach the first worker's socket and are never logged.
    first = run.worker_pid
    assert first is not None
    os.kill(first, signal.SIGSTOP)
    report(callback, trial, 201, 301)
    wait_for(lambda: run.rows == 300 and not run.ledger.pending)
    os.kill(first, signal.SIGKILL)
    # The replacement settles the dead piece, is handed rows 201-300, starts
    # its run, and is killed before it confirms any of them.
    wait_for(lambda: run.started is not None and run.started.run_dir.endswith("part2"))
    time.sleep(settle)
    kill_current_worker(callback, trial)
    report(callback, trial, 301, 401)
    callback.log_trial_end(trial)
    trial.status = "TERMINATED"
    callback.on_experiment_end([trial])
    assert run.deaths == 2 and run.state is RunState.FINISHED
    check_rows(experiment, 400, deaths=2)


def test_a_burst_of_trial_starts_ends_in_bounded_time_with_every_row(tmp_path: Path) -> None:
    # Issue #11: 1,000 trial starts in a burst deadlocked the driver (a lock
    # held across a blocking send to the launcher).
    experiment = tmp_path / "burst"
    callback = new_callback(shared_service=True)
    trials = [FakeTrial(f"b{i:04d}", experiment) for i in range(300)]
    started = time.monotonic()
    for trial in trials:
        callback.log_trial_start(trial)
    for trial in trials:
        report(callback, trial, 1, 6)
        callback.log_trial_end(trial)
        trial.status = "TERMINATED"
    callback.on_experiment_end(trials)
    elapsed = time.monotonic() - started
    runs = find_runs(experiment)
    assert len(runs) == 300
    for data in runs.values():
        assert data.column("training_iteration") == [1, 2, 3, 4, 5]
        assert data.exit_code == 0
    assert elapsed < 300, elapsed
