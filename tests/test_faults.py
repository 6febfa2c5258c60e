"""Faults through real Tune: retries and restores, Ctrl-C, a dead driver, bad values, W&B down.

Every scenario counts each run's rows by ``training_iteration``: in the run
files on disk (offline, or what an online worker wrote beside its uploads) and
at the W&B-compatible test server (online). The deaths and freezes of our own
processes at every stage are tests/test_fault_matrix.py's; docs/faults.md sums
both up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trainables
from conftest import wait_no_processes
from ray import tune
from support import ENDLESS, go_online, running
from wandb_reader import find_runs, run_of_trial
from wandb_server import RunRecord, WandbServer

from tune_wandb import WandbLoggerCallback
from tune_wandb._protocol import EXIT_DRIVER_LOST, EXIT_INTERRUPTED

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session", "no_leftover_processes")]

TESTS = Path(__file__).parent


def in_mode(
    mode: str, server: WandbServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if mode == "online":
        go_online(server, monkeypatch, tmp_path / "home")


def iterations(record: RunRecord) -> list[int]:
    """The training_iteration of each row the server kept, in order."""
    return [row["training_iteration"] for row in record.history]


def check_every_row_at_most_one_twice(seen: list[int], n: int) -> None:
    assert sorted(set(seen)) == list(range(1, n + 1))
    assert len(seen) - n <= 1


def messages(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    """The log messages holding every one of ``parts``."""
    return [m for m in (r.getMessage() for r in caplog.records) if all(p in m for p in parts)]


class _Clock(tune.Callback):
    """When the first trial started and the last one completed (time.monotonic)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.completed: float | None = None

    def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self.completed = time.monotonic()

    @property
    def phase(self) -> float:
        assert self.started is not None and self.completed is not None
        return self.completed - self.started


# -- 1. a trial retried by Tune, then the experiment restored -------------------


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_retried_and_restored_trial_continues_its_run(
    mode: str,
    wandb_server: WandbServer,
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_mode(mode, wandb_server, monkeypatch, tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()
    # Fails at 5 (retried by Tune from the checkpoint of 3), then at 8: no
    # retry left, the experiment ends with an error; restored, it goes on
    # from the checkpoint of 6.
    config = {"n": 10, "every": 3, "fail_at": [5, 8], "markers": str(markers)}
    tuner = tune.Tuner(
        trainables.checkpointed,
        param_space=config,
        run_config=tune.RunConfig(
            name="retried",
            storage_path=str(storage),
            callbacks=[WandbLoggerCallback(project="p")],
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    assert tuner.fit().errors
    (first,) = find_runs(storage / "retried").values()
    # The retry went on in the same run, with the same worker: one piece.
    assert first.column("training_iteration") == [1, 2, 3, 4, 4, 5, 6, 7]
    assert first.exit_codes == [1]
    if mode == "online":
        (record,) = wandb_server.runs()
        assert record.finished and record.exit_code == 1
        assert iterations(record) == [1, 2, 3, 4, 4, 5, 6, 7]

    restored = tune.Tuner.restore(
        str(storage / "retried"), trainables.checkpointed, resume_errored=True
    )
    assert not restored.fit().errors
    (run,) = find_runs(storage / "retried").values()
    assert run.run_id == first.run_id
    assert len(run.files) == 2  # the restored experiment's worker wrote a piece of its own
    # Iterations re-run after a checkpoint was restored are logged again, as what they are.
    expected = [1, 2, 3, 4, 4, 5, 6, 7, 7, 8, 9, 10]
    assert run.column("training_iteration") == expected
    assert run.column("value") == [10 * i for i in expected]
    assert run.exit_codes == [1, 0]
    if mode == "online":
        (record,) = wandb_server.runs()  # one run: no second one for the restore
        assert record.run_id == run.run_id
        assert record.finished and record.exit_code == 0
        assert iterations(record) == expected
        assert record.dropped_rows == 0  # wandb's _step went on from where the run was


# -- 2. Ctrl-C, online -----------------------------------------------------------


def test_ctrl_c_online_finishes_every_run_as_interrupted(
    wandb_server: WandbServer, tmp_path: Path
) -> None:
    # Offline: test_scripts' test_ctrl_c_finishes_every_run_as_interrupted.
    storage = tmp_path / "storage"
    script = tmp_path / "endless.py"
    script.write_text(ENDLESS)
    home = tmp_path / "home"
    home.mkdir()
    wandb_server.require_key = wandb_server.api_key
    env = {**os.environ, **wandb_server.env(), "HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(storage)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while len([r for r in wandb_server.runs() if len(r.history) >= 10]) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        interrupted = time.time()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    (returned,) = [float(line.split()[1]) for line in out.splitlines() if "RETURNED" in line]
    # The runs were finished right away, not after upload_timeout (120 s).
    assert returned - interrupted < 30
    records = wandb_server.runs()
    assert len(records) == 2
    for trial_dir in (storage / "ctrlc").glob("train_*"):
        reported = [
            json.loads(line)["training_iteration"]
            for line in (trial_dir / "result.json").read_text().splitlines()
        ]
        (run,) = find_runs(trial_dir).values()
        record = wandb_server.run(run.run_id)
        assert record.finished and record.exit_code == EXIT_INTERRUPTED
        # Every result Tune processed before it stopped reached the server.
        assert iterations(record) == reported
        assert record.dropped_rows == 0
        assert run.column("training_iteration") == reported
        assert run.exit_code == EXIT_INTERRUPTED
    assert wait_no_processes() == []


# -- 3. the driver dies, online ----------------------------------------------------

DRIVER_DIES = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path.insert(0, {tests!r})
    from dataclasses import replace
    from pathlib import Path
    from support import make_setup, put_rows, wait_for
    from tune_wandb._pool import WorkerPool

    env = json.loads(sys.argv[2])
    key = env.pop("WANDB_API_KEY")
    setup = replace(make_setup(Path(sys.argv[1]), "run-a", mode="online"), env=env, api_key=key)
    pool = WorkerPool()
    run = pool.open("a", "trial-a", setup)
    wait_for(lambda: run.started is not None and run.worker_pid is not None)
    put_rows(run, 1, 51)
    wait_for(lambda: run.ledger.confirmed_seq == 50)  # all 50 in the run file
    print(run.worker_pid, pool._launcher.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_driver_killed_online_worker_finishes_the_run_and_exits(
    wandb_server: WandbServer, tmp_path: Path
) -> None:
    # Offline: test_workers' test_worker_and_launcher_exit_when_driver_dies.
    wandb_server.require_key = wandb_server.api_key
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_DIES.format(tests=str(TESTS)))
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), str(runs_dir), json.dumps(wandb_server.env())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    died = time.monotonic()
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    worker_pid, launcher_pid = map(int, proc.stdout.split())
    deadline = died + 15
    while time.monotonic() < deadline and any(map(running, (worker_pid, launcher_pid))):
        time.sleep(0.1)
    assert not running(worker_pid) and not running(launcher_pid)
    # The worker finished its run at the server, as a failure, with every row.
    record = wandb_server.run("run-a")
    assert record.finished and record.exit_code == EXIT_DRIVER_LOST
    assert iterations(record) == list(range(1, 51))
    # And on disk.
    (run,) = find_runs(runs_dir).values()
    assert run.column("training_iteration") == list(range(1, 51))
    assert run.exit_code == EXIT_DRIVER_LOST
    assert wait_no_processes() == []


# -- 4. a value that makes wandb.log raise -------------------------------------------


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_value_wandb_log_refuses_is_skipped_and_the_rest_lands(
    mode: str,
    wandb_server: WandbServer,
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    in_mode(mode, wandb_server, monkeypatch, tmp_path)
    analysis = tune.run(
        trainables.broken_media,
        config={"n": 30, "bad_at": 5},
        name="broken",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p")],
        verbose=0,
    )
    (trial,) = analysis.trials
    # One warning, naming the trial and the key; the worker lived on.
    (warning,) = messages(caplog, "'bad'")
    assert str(trial) in warning and "wandb.log refused 'bad'" in warning
    assert "not JSON serializable" in warning
    assert not messages(caplog, "exit code")
    (run,) = find_runs(storage / "broken").values()
    assert len(run.files) == 1
    assert run.column("training_iteration") == list(range(1, 31))
    assert run.column("ok") == list(range(1, 31))  # the rest of row 5 too
    assert run.column("bad") == []
    assert run.exit_code == 0
    if mode == "online":
        record = wandb_server.run(run.run_id)
        assert record.finished and record.exit_code == 0
        assert iterations(record) == list(range(1, 31))
        assert [row["ok"] for row in record.history] == list(range(1, 31))
        assert not any("bad" in row for row in record.history)


# -- 5. slow and dead W&B ------------------------------------------------------------


# Compares the trials' time with and without logging: alone, not beside other tests.
@pytest.mark.serial
def test_a_slow_server_costs_the_trials_nothing(
    wandb_server: WandbServer,
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = {"x": tune.grid_search([1, 2]), "n": 50, "pause": 0.1}

    def trial_phase(name: str, callbacks: list[Any]) -> float:
        clock = _Clock()
        tune.run(
            trainables.paced,
            config=config,
            name=name,
            storage_path=str(storage),
            callbacks=[*callbacks, clock],
            verbose=0,
        )
        return clock.phase

    without = trial_phase("without", [])
    go_online(wandb_server, monkeypatch, tmp_path / "home")
    wandb_server.latency = 1.0  # before every answer
    callback = WandbLoggerCallback(project="p")
    with_callback = trial_phase("slow", [callback])
    assert with_callback <= 1.10 * without, (with_callback, without)
    records = wandb_server.runs()
    assert len(records) == 2
    for record in records:
        assert record.finished and record.exit_code == 0
        assert iterations(record) == list(range(1, 51))


class _HangAt(tune.Callback):
    """Makes the test server stop answering once a trial reports iteration ``at``.

    Mid-run (``at`` > 0), only once every trial's W&B run has started, so that
    no ``wandb.init`` is caught waiting; ``hung_at`` says at which iteration.
    """

    def __init__(self, server: WandbServer, at: int, logger_callback: WandbLoggerCallback) -> None:
        self.server = server
        self.at = at
        self.logger_callback = logger_callback
        self.hung_at: int | None = None

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: Any, **info: Any
    ) -> None:
        if self.hung_at is not None or result["training_iteration"] < self.at:
            return
        logging_trials = self.logger_callback._trials
        if len(logging_trials) == len(trials) and all(
            state.run.started is not None for state in logging_trials.values()
        ):
            self.server.hang = True
            self.hung_at = result["training_iteration"]


@pytest.mark.parametrize("hang_at", [0, 10], ids=["from-the-start", "mid-run"])
def test_a_server_that_never_answers_costs_upload_timeout_and_keeps_every_row(
    hang_at: int,
    wandb_server: WandbServer,
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tune_wandb")
    go_online(wandb_server, monkeypatch, tmp_path / "home")
    wandb_server.hang = hang_at == 0
    clock = _Clock()
    callback = WandbLoggerCallback(project="p", upload_timeout=10, key_check_timeout=2)
    hanger = _HangAt(wandb_server, hang_at, callback)
    analysis = tune.run(
        trainables.paced,
        config={"x": tune.grid_search([1, 2]), "n": 30, "pause": 0.1},
        name="hang",
        storage_path=str(storage),
        callbacks=[
            callback,
            hanger,
            clock,
        ],
        verbose=0,
    )
    returned = time.monotonic()
    assert clock.completed is not None
    if hang_at:
        assert hanger.hung_at is not None and hanger.hung_at < 30  # mid-run indeed
    # upload_timeout, then up to one 5 s step of stopping the workers.
    assert returned - clock.completed < 10 + 7
    runs = find_runs(storage / "hang")
    for trial in analysis.trials:
        run = run_of_trial(runs, trial.trial_id)
        assert run.column("training_iteration") == list(range(1, 31))
        assert run.exit_code == 0
        if hang_at == 0:
            # wandb.init was still waiting when the worker was stopped: it
            # logged offline what it held, and said where.
            (run_dir,) = [f.parent for f in run.files if f.parent.name.startswith("offline-")]
            (said,) = messages(caplog, str(trial), "logging offline instead")
            assert f"wandb sync {run_dir}" in said
        else:
            # Stopped in wandb.finish, waiting on uploads: its run file was whole.
            (run_dir,) = [f.parent for f in run.files]
        # One truth per run: what is said of it at the timeout, the end table says too.
        (table,) = messages(caplog, "trial", "run id", "rows", "status")
        (row,) = [line for line in table.splitlines() if line.startswith(str(trial) + " ")]
        if "not finished in time" in row:
            (line,) = messages(caplog, str(trial), "did not finish within upload_timeout=10s")
        else:
            assert row.endswith("finished, saved locally, not uploaded")
            assert not messages(caplog, str(trial), "did not finish")
            (line,) = messages(
                caplog, str(trial), "was not uploaded within upload_timeout=10s; it is finished"
            )
        assert line.endswith(f"Upload it with: wandb sync {run_dir}")
        # No run directory without a run in it (a failed online attempt's).
        for directory in (Path(trial.path) / "wandb").glob("*run-*"):
            assert [f for f in directory.glob("*.wandb") if f.stat().st_size > 7], directory
    wandb_server.hang = False


@pytest.mark.parametrize("fault", ["refuse", "hang"])
def test_wandb_init_failing_falls_back_to_offline(
    fault: str,
    wandb_server: WandbServer,
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    go_online(wandb_server, monkeypatch, tmp_path / "home")
    setattr(wandb_server, fault, True)
    clock = _Clock()
    analysis = tune.run(
        trainables.report_n,
        config={"x": tune.grid_search([1, 2]), "n": 30},
        name="initfail",
        storage_path=str(storage),
        callbacks=[
            WandbLoggerCallback(project="p", key_check_timeout=2, settings={"init_timeout": 5}),
            clock,
        ],
        verbose=0,
    )
    assert clock.completed is not None
    assert time.monotonic() - clock.completed < 15  # no upload_timeout waited
    runs = find_runs(storage / "initfail")
    for trial in analysis.trials:
        run = run_of_trial(runs, trial.trial_id)
        assert run.column("training_iteration") == list(range(1, 31))
        assert run.exit_code == 0
        (offline_dir,) = [f.parent for f in run.files if f.parent.name.startswith("offline-")]
        (said,) = messages(caplog, str(trial), "logging offline instead")  # once
        assert f"wandb sync {offline_dir}" in said
    assert not messages(caplog, "could not start a W&B run")
    assert not messages(caplog, "did not finish within upload_timeout")
    setattr(wandb_server, fault, False)
