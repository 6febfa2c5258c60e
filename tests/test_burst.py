"""Many trials at once through the real callback, with simulated trials (no Ray actors).

Objects shaped like Tune's trials drive ``WandbLoggerCallback``'s hooks, so
that a burst of trial starts can be as large as a head node's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import FakeTrial, report
from wandb_reader import find_runs

from tune_wandb import WandbLoggerCallback

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_processes")]


def test_a_burst_of_trial_starts_ends_in_bounded_time_with_every_row(tmp_path: Path) -> None:
    # Issue #11: 1,000 trial starts in a burst deadlocked the driver (a lock
    # held across a blocking send to the launcher).
    experiment = tmp_path / "burst"
    callback = WandbLoggerCallback(project="burst", shared_service=True)
    callback.setup()
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
