"""The peers' extras (#18): metrics=, tags per trial, log_params_on_trial_end, save_trial_dir.

Real Ray Tune and real wandb (offline); the run files are read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trainables
from ray import tune
from wandb_reader import find_runs

from tune_wandb import WandbLoggerCallback

#: The end-to-end tests' marks: a real Tune experiment each.
_with_ray = pytest.mark.usefixtures("ray_session", "no_leftover_processes")


def _metric_keys(row: dict[str, Any]) -> set[str]:
    """A history row's keys but wandb's own (``_step``, ``_runtime``, ``_timestamp``)."""
    return {k for k in row if not k.startswith("_")}


@pytest.mark.slow
@_with_ray
def test_metrics_log_only_the_named_keys_and_the_x_axis(storage: Path) -> None:
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 4},
        name="metrics",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p", metrics=["loss", "nested/deep"])],
        verbose=0,
    )
    (run,) = find_runs(storage / "metrics").values()
    assert len(run.history) == 4
    for row in run.history:
        # Not nested/acc, note, flag, nor Tune's time_total_s, timestamp, ...
        assert _metric_keys(row) == {"loss", "nested/deep/v", "training_iteration"}
    assert run.column("training_iteration") == [1, 2, 3, 4]
    assert run.column("nested/deep/v") == [0, 1, 2, 3]
    # The run config is left alone: the trial's facts are there.
    assert run.config["x"] == 1 and "trial_id" in run.config and "pid" in run.config
    assert run.exit_code == 0


@pytest.mark.slow
@_with_ray
def test_a_trials_tags_are_added_to_the_callbacks(storage: Path) -> None:
    tune.run(
        trainables.report_n,
        config={
            "x": tune.grid_search([1, 2]),
            "n": 2,
            "wandb": {"tags": tune.sample_from(lambda spec: [f"x={spec.config.x}", "tune"])},
        },
        name="tags",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p", tags=["ray", "tune"])],
        verbose=0,
    )
    runs = find_runs(storage / "tags").values()
    assert sorted(tuple(run.tags) for run in runs) == [
        ("ray", "tune", "x=1"),
        ("ray", "tune", "x=2"),
    ]
    for run in runs:
        assert run.tags[-1] == f"x={run.config['x']}"


class _Exploit(tune.Callback):
    """Change the trial's config at its second result, as PBT's exploit does (``set_config``)."""

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict) -> None:
        if result["training_iteration"] == 2:
            trial.set_config({**trial.config, "x": 7, "added": "by pbt"})


@pytest.mark.slow
@_with_ray
@pytest.mark.parametrize("on_end", [True, False])
def test_log_params_on_trial_end_logs_the_final_config(storage: Path, on_end: bool) -> None:
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 4, "secret": "s"},
        name="final",
        storage_path=str(storage),
        callbacks=[
            WandbLoggerCallback(project="p", excludes=["secret"], log_params_on_trial_end=on_end),
            _Exploit(),
        ],
        verbose=0,
    )
    (run,) = find_runs(storage / "final").values()
    assert len(run.history) == 4 and run.exit_code == 0
    assert "secret" not in run.config  # excludes hold for the final config too
    if on_end:
        assert run.config["x"] == 7 and run.config["added"] == "by pbt"
    else:
        # The config the run started with, and nothing after.
        assert run.config["x"] == 1 and "added" not in run.config


@pytest.mark.slow
@_with_ray
def test_save_trial_dir_logs_the_trials_directory_as_an_artifact(storage: Path) -> None:
    analysis = tune.run(
        trainables.report_n,
        config={"x": 1, "n": 3},
        name="savedir",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p", save_trial_dir=True)],
        verbose=0,
    )
    (trial,) = analysis.trials
    (run,) = find_runs(storage / "savedir").values()
    assert run.exit_code == 0 and len(run.history) == 3
    name = f"trial_dir_{trial}"
    assert run.artifacts == [name]
    assert run.artifact_types[name] == "trial_dir"
    files = run.artifact_files[name]
    assert {"params.json", "result.json", "progress.csv"} <= set(files)
    # Offline, the files are staged inside the run directory for `wandb sync`,
    # as they were when the trial ended: every result is in them.
    run_dir = run.files[-1].parent
    staged = Path(files["result.json"])
    assert run_dir in staged.parents
    results = [json.loads(line) for line in staged.read_text().splitlines()]
    assert [r["training_iteration"] for r in results] == [1, 2, 3]
    assert json.loads(Path(files["params.json"]).read_text()) == {"x": 1, "n": 3}


@pytest.mark.slow
@_with_ray
def test_a_failed_trials_directory_holds_its_error(storage: Path) -> None:
    tune.run(
        trainables.fail_after,
        config={"n": 2, "fail": True},
        name="failed",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p", save_trial_dir=True)],
        raise_on_failed_trial=False,
        verbose=0,
    )
    (run,) = find_runs(storage / "failed").values()
    assert run.exit_code == 1 and run.column("loss") == [0.0, 1.0]
    ((name, files),) = run.artifact_files.items()
    assert name.startswith("trial_dir_fail_after_")
    assert "trial failed on purpose" in Path(files["error.txt"]).read_text()


@pytest.mark.slow
@_with_ray
def test_metrics_and_tags_hold_for_a_run_a_mixin_writes(storage: Path) -> None:
    tune.run(
        trainables.WandbCounting,
        config={"steps": 3, "wandb": {"tags": ["mixin"]}},
        name="mixin",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p", metrics=["count"], tags=["callback"])],
        verbose=0,
    )
    (run,) = find_runs(storage / "mixin").values()
    assert run.tags == ["callback", "mixin"]
    # Tune's results, logged by the mixin's run: the named metric and the x-axis
    # only (no time_this_iter_s, timestamp, ...); the trial's own wandb.log rows
    # are the user's, untouched (wandb adds the step metric to them).
    assert set().union(*map(_metric_keys, run.history)) == {
        "count",
        "training_iteration",
        "setup_logged",
    }
    assert len(run.column("count")) == 6  # three from wandb.log, three Tune results
    assert run.column("setup_logged") == [1]
    assert run.exit_codes == [0]


@pytest.mark.slow
@_with_ray
def test_no_extras_by_default(storage: Path) -> None:
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 2},
        name="defaults",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p")],
        verbose=0,
    )
    (run,) = find_runs(storage / "defaults").values()
    assert run.artifacts == [] and run.tags == []
    keys = _metric_keys(run.history[0])
    assert {"loss", "nested/acc", "nested/deep/v", "note", "flag", "time_total_s"} <= keys


@pytest.mark.unit
def test_a_callback_pickled_before_the_extras_still_loads_without_them() -> None:
    import pickle

    callback = WandbLoggerCallback(project="p", metrics=["loss"], save_trial_dir=True)
    state = callback.__getstate__()
    assert state["metrics"] == ("loss",) and state["save_trial_dir"] is True
    del state["metrics"], state["log_params_on_trial_end"], state["save_trial_dir"]
    restored = WandbLoggerCallback.__new__(WandbLoggerCallback)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    assert restored.metrics is None
    assert (restored.log_params_on_trial_end, restored.save_trial_dir) == (False, False)
    restored._pool.close()
    callback._pool.close()


@pytest.mark.unit
def test_metrics_given_as_one_string_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="metrics must be a list of result keys"):
        WandbLoggerCallback(metrics="loss")
