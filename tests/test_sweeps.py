"""A Tune experiment shown as one W&B sweep: online, offline then synced, restored."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trainables
from ray import tune
from support import go_online
from wandb_server import WandbServer

import tune_wandb
from tune_wandb import WandbLoggerCallback
from tune_wandb._experiment_sweep import SWEEP_FILE
from tune_wandb._pool import WorkerPool

TESTS = Path(__file__).parent


def _space() -> dict[str, Any]:
    return {
        "x": tune.grid_search([1.0, 2.0]),
        "lr": tune.loguniform(1e-3, 1e-1),
        "seed": tune.sample_from(lambda _: 7),
        "n": 3,
    }


def _expected_parameters() -> dict[str, Any]:
    return {
        "x": {"values": [1.0, 2.0]},
        "lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-1},
        "n": {"value": 3},
        # No W&B form: listed as the values the trials took.
        "seed": {"values": [7]},
    }


def _wandb_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}


@pytest.mark.usefixtures("no_leftover_processes")
def test_a_call_runs_in_a_child_of_the_launcher_and_says_what_it_raised() -> None:
    pool = WorkerPool()
    try:
        pool.start()
        assert pool.call(os.getpid).result(60) not in (os.getpid(), None)
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            pool.call(operator.truediv, 1, 0).result(60)
    finally:
        pool.close()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_an_online_experiment_is_one_sweep_stopped_at_its_end(
    wandb_server: WandbServer, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_online(wandb_server, monkeypatch, tmp_path / "home")
    before = _wandb_environ()
    space = _space()
    results = tune.Tuner(
        trainables.report_n,
        param_space=space,
        run_config=tune.RunConfig(
            name="swept",
            storage_path=str(storage),
            callbacks=[
                WandbLoggerCallback(
                    project="sweep-project",
                    sweep={"param_space": space, "metric": "loss", "mode": "min"},
                )
            ],
            verbose=0,
        ),
    ).fit()
    assert not results.errors
    # wandb's API ran in a child of the launcher: the driver's environment is as it was.
    assert _wandb_environ() == before

    (sweep,) = wandb_server.sweeps()
    assert (sweep.entity, sweep.project) == ("test-entity", "sweep-project")
    assert sweep.config["metric"] == {"name": "loss", "goal": "minimize"}
    assert sweep.config["method"] == "random"
    assert sweep.config["parameters"] == _expected_parameters()
    assert (sweep.state, sweep.states) == ("FINISHED", ["RUNNING", "FINISHED"])
    trial_ids = sorted(r.metrics["trial_id"] for r in results)
    runs = wandb_server.runs()
    assert sorted(r.run_id.split("-")[0] for r in runs) == trial_ids
    # Every run joined through its own settings.sweep_id, keeping its id and project.
    assert sorted(sweep.run_ids) == sorted(r.run_id for r in runs)
    for record in runs:
        assert (record.sweep, record.project, record.entity) == (
            sweep.id,
            "sweep-project",
            "test-entity",
        )
        assert record.finished and len(record.history) == 3
        assert record.config["seed"] == 7

    saved = json.loads((storage / "swept" / SWEEP_FILE).read_text())
    assert (saved["id"], saved["project"], saved["entity"]) == (
        sweep.id,
        "sweep-project",
        "test-entity",
    )
    assert saved["config"] == sweep.config
    assert wandb_server.errors == []


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_a_restored_experiment_keeps_its_sweep(
    wandb_server: WandbServer, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_online(wandb_server, monkeypatch, tmp_path / "home")
    markers = tmp_path / "markers"
    markers.mkdir()
    config = {"n": 6, "every": 2, "fail_at": [4], "markers": str(markers)}
    tuner = tune.Tuner(
        trainables.checkpointed,
        param_space=config,
        run_config=tune.RunConfig(
            name="restored",
            storage_path=str(storage),
            callbacks=[WandbLoggerCallback(project="p", sweep={"metric": "value", "mode": "max"})],
            verbose=0,
        ),
    )
    assert tuner.fit().errors
    (sweep,) = wandb_server.sweeps()
    assert sweep.state == "FINISHED"

    restored = tune.Tuner.restore(
        str(storage / "restored"), trainables.checkpointed, resume_errored=True
    )
    assert not restored.fit().errors
    assert wandb_server.sweeps() == [sweep]  # no second sweep
    assert sweep.states == ["RUNNING", "FINISHED", "RUNNING", "FINISHED"]
    (record,) = wandb_server.runs()
    assert sweep.run_ids == [record.run_id] and record.sweep == sweep.id
    assert [row["training_iteration"] for row in record.history][-1] == 6
    assert sweep.config["metric"] == {"name": "value", "goal": "maximize"}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_offline_runs_make_their_sweep_when_synced(
    wandb_server: WandbServer, storage: Path, tmp_path: Path
) -> None:
    # Offline (the tests' default): tune_wandb.run fills in the sweep from its own arguments.
    analysis = tune_wandb.run(
        trainables.report_n,
        config=_space(),
        metric="loss",
        mode="min",
        sweep=True,
        name="offline",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="offline-project")],
        verbose=0,
    )
    experiment = storage / "offline"
    saved = json.loads((experiment / SWEEP_FILE).read_text())
    assert "id" not in saved
    assert saved["config"]["parameters"] == _expected_parameters()
    assert saved["config"]["metric"] == {"name": "loss", "goal": "minimize"}
    assert wandb_server.runs() == [] and wandb_server.sweeps() == []

    env = {**os.environ, **wandb_server.env(), "HOME": str(tmp_path)}
    env.pop("WANDB_MODE")
    synced = subprocess.run(
        [sys.executable, "-m", "tune_wandb", "sync", str(experiment), "--sweep"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    (sweep,) = wandb_server.sweeps()
    assert f"W&B sweep test-entity/offline-project/{sweep.id} (2 runs)" in synced.stdout
    runs = wandb_server.runs()
    assert len(runs) == len(analysis.trials) == 2
    assert sorted(sweep.run_ids) == sorted(r.run_id for r in runs)
    assert all(r.sweep == sweep.id and r.project == "offline-project" for r in runs)
    assert sweep.config == saved["config"] and sweep.state == "FINISHED"
    assert json.loads((experiment / SWEEP_FILE).read_text())["id"] == sweep.id


def test_sync_sweep_says_what_to_do_without_a_described_sweep(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tune_wandb", "sync", str(tmp_path), "--sweep"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "describes no W&B sweep" in done.stdout and "sweep=" in done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_without_a_sweep_runs_keep_their_ids_project_and_entity(
    wandb_server: WandbServer, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_online(wandb_server, monkeypatch, tmp_path / "home")
    # As under a W&B agent: wandb.init would take the sweep's project and ignore the run id.
    monkeypatch.setenv("WANDB_SWEEP_ID", "notasweep")
    analysis = tune.run(
        trainables.report_n,
        config={"x": tune.grid_search([1.0]), "n": 2},
        name="plain",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="plain-project")],
        verbose=0,
    )
    (trial,) = analysis.trials
    (record,) = wandb_server.runs()
    assert record.run_id.startswith(f"{trial.trial_id}-")
    assert (record.project, record.entity, record.sweep) == (
        "plain-project",
        "test-entity",
        None,
    )
    assert wandb_server.sweeps() == []
    assert not (storage / "plain" / SWEEP_FILE).exists()
