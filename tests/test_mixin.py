"""@wandb_mixin: the run started in the trial's own process."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import trainables
from ray import tune
from wandb_reader import find_runs, run_of_trial

from tune_wandb import wandb_mixin


def test_decorator_keeps_the_signature_for_tune() -> None:
    def train(config: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        """Docs."""

    wrapped = wandb_mixin(train)
    assert inspect.signature(wrapped) == inspect.signature(train)
    assert wrapped.__name__ == "train" and wrapped.__doc__ == "Docs."


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_seed_mixin_example_logs_each_trial_to_its_run(storage: Path) -> None:
    analysis = tune.run(
        trainables.seed_mixin_fn,
        config={
            "a": tune.grid_search([1, 2]),
            "b": 4,
            "fail": tune.grid_search([False, True]),
            "wandb": {"project": "Optimization_Project", "api_key_file": "/path/to/file"},
        },
        name="mixin",
        storage_path=str(storage),
        raise_on_failed_trial=False,
        verbose=0,
    )
    runs = find_runs(storage / "mixin")
    assert len(runs) == 4
    for trial in analysis.trials:
        run = run_of_trial(runs, trial.trial_id)
        assert run.project == "Optimization_Project"
        # Ray 1.x's mixin grouped by the trainable's name.
        assert run.group == "seed_mixin_fn"
        assert run.name == str(trial)
        assert run.column("loss") == [trial.config["a"] + 4] * 10
        assert "wandb" not in run.config and run.config["a"] == trial.config["a"]
        # A failed trial's run says so; the exception still reached Tune.
        assert run.exit_code == (1 if trial.config["fail"] else 0)
        assert (trial.status == "ERROR") == trial.config["fail"]
        # Written inside the trial's directory in the experiment's storage.
        assert all(Path(trial.path) in f.parents for f in run.files)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_retried_trial_continues_the_same_run(storage: Path, tmp_path: Path) -> None:
    trainable = tune.with_resources(
        tune.with_parameters(trainables.mixin_fails_once, data=[1, 2, 3]), {"cpu": 1}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"marker": str(tmp_path / "failed"), "wandb": {"project": "p"}},
        run_config=tune.RunConfig(
            name="retry",
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    assert not tuner.fit().errors
    (run,) = find_runs(storage / "retry").values()
    assert len(run.files) == 2  # the retry resumed the same run id
    assert run.column("row") == [1, 2, 1, 2, 3, 4, 5]
    assert run.exit_codes == [1, 0]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_class_trainable_mixin(storage: Path) -> None:
    analysis = tune.run(
        trainables.WandbCounting,
        config={"steps": 4, "wandb": {"project": "classes", "run_name": "counting"}},
        name="classmixin",
        storage_path=str(storage),
        verbose=0,
    )
    (trial,) = analysis.trials
    (run,) = find_runs(storage / "classmixin").values()
    assert run.run_id.startswith(trial.trial_id)
    assert (run.project, run.name, run.group) == ("classes", "counting", "WandbCounting")
    assert run.column("setup_logged") == [1]
    assert run.column("count") == [1, 2, 3, 4]
    assert run.exit_code == 0
    assert "wandb" not in run.config and run.config["steps"] == 4


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_mixin_run_reaches_non_local_storage(tmp_path: Path) -> None:
    import pyarrow.fs

    base = tmp_path / "bucket"
    base.mkdir()
    tune.run(
        trainables.seed_mixin_fn,
        config={"a": 1, "b": 4, "wandb": {"project": "p"}},
        name="remote_mixin",
        storage_path="experiments",
        storage_filesystem=pyarrow.fs.SubTreeFileSystem(str(base), pyarrow.fs.LocalFileSystem()),
        verbose=0,
    )
    (run,) = find_runs(base / "experiments" / "remote_mixin").values()
    assert run.column("loss") == [5] * 10
    assert run.exit_code == 0


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_setup_wandb_run_is_finished_when_the_trial_ends(storage: Path) -> None:
    analysis = tune.run(
        trainables.uses_setup_wandb,
        config={"x": tune.grid_search([1, 2]), "wandb": {"tags": ["t"]}},
        name="setup",
        storage_path=str(storage),
        verbose=0,
    )
    runs = find_runs(storage / "setup")
    assert len(runs) == 2
    for trial in analysis.trials:
        run = run_of_trial(runs, trial.trial_id)
        assert (run.project, run.name, run.group) == ("setup-project", "named-by-setup", "setup")
        assert run.column("row") == list(range(1, 8))
        # Never finished by the user: finished by tune-wandb when Tune ended the trial.
        assert run.exit_code == 0
        assert run.config["x"] == trial.config["x"] and "wandb" not in run.config


def test_setup_wandb_off_rank_zero_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from tune_wandb import mixin, setup_wandb

    monkeypatch.setattr(mixin, "_train_world_rank", lambda: 1)
    run = setup_wandb({"a": 1}, project="p")
    assert run.disabled
    run.finish()
    with pytest.raises(ValueError, match="not both"):
        setup_wandb({}, api_key="k", api_key_file="/f")


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
@pytest.mark.parametrize(("rank_zero_only", "fail"), [(True, False), (False, True)])
# Importing ray.data (the trainer does) sets deprecated options of its own context.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_setup_wandb_in_ray_train_v2_workers(
    storage: Path, rank_zero_only: bool, fail: bool
) -> None:
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    trainer = DataParallelTrainer(
        trainables.train_v2_worker,
        train_loop_config={"lr": 0.1, "rank_zero_only": rank_zero_only, "fail": fail},
        scaling_config=ray.train.ScalingConfig(num_workers=2),
        run_config=ray.train.RunConfig(
            storage_path=str(storage),
            name="train_v2",
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    if fail:
        with pytest.raises(Exception, match="worker failed on purpose"):
            trainer.fit()
    else:
        trainer.fit()
    # Train V2 runs have no trial directory: they are in the experiment's.
    runs = find_runs(storage / "train_v2" / "wandb")
    ranks = [0] if rank_zero_only else [0, 1]
    assert sorted(run.name for run in runs.values()) == [
        "train_v2" + (f"-rank{r}" if r else "") for r in ranks
    ]
    for run in runs.values():
        rank = 1 if run.name.endswith("-rank1") else 0
        assert run.project == "train-v2" and run.group == "train_v2"
        assert run.column("row") == list(range(5)) and run.column("rank") == [rank] * 5
        assert run.config["lr"] == 0.1
        # Finished by tune-wandb when the training function ended (raised: 1).
        assert run.exit_code == (1 if fail else 0)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_setup_wandb_in_a_class_trainables_setup(storage: Path) -> None:
    # Ray's docs and example: setup_wandb(config, trial_id=self.trial_id, ...) in setup().
    analysis = tune.run(
        trainables.SetupWandbClass,
        config={"fail_at": tune.grid_search([None, 2])},
        name="classsetup",
        storage_path=str(storage),
        raise_on_failed_trial=False,
        verbose=0,
    )
    for trial in analysis.trials:
        (run,) = find_runs(Path(trial.path)).values()
        assert run.run_id.startswith(trial.trial_id + "-")
        assert (run.project, run.group, run.name) == ("cls", "G", str(trial))
        failed = trial.config["fail_at"] == 2
        assert run.column("row") == ([1] if failed else [1, 2, 3])
        # Finished when Tune stopped the trainable: 1 for the trial whose step raised.
        assert run.exit_codes == [1 if failed else 0]
        assert (trial.status == "ERROR") == failed


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_callback_and_class_mixin_make_one_run_per_trial(storage: Path) -> None:
    from tune_wandb import WandbLoggerCallback

    analysis = tune.run(
        trainables.WandbCounting,
        config={"steps": 4, "wandb": {"project": "classes"}},
        name="both",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="callback-project", group="callback-group")],
        verbose=0,
    )
    (trial,) = analysis.trials
    # One writer: the mixin's run, with the callback's id, group and Tune's results too.
    (run,) = find_runs(storage / "both").values()
    assert (run.project, run.group, run.name) == ("classes", "callback-group", str(trial))
    tune_rows = [row for row in run.history if "time_this_iter_s" in row]
    assert [row["training_iteration"] for row in tune_rows] == [1, 2, 3, 4]
    assert run.column("setup_logged") == [1]
    assert len(run.column("count")) == 8  # four from wandb.log, four Tune results
    assert run.exit_codes == [0]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
@pytest.mark.parametrize("writer", ["callback", "mixin", "setup_wandb"])
def test_exit_code_follows_the_trials_final_status(storage: Path, writer: str) -> None:
    from tune_wandb import WandbLoggerCallback

    # The error comes after the last result, from Tune's checkpoint at the end.
    trainable = {
        "callback": trainables.NoCheckpoints,
        "mixin": trainables.MixinNoCheckpoints,
        "setup_wandb": trainables.SetupWandbNoCheckpoints,
    }[writer]
    tuner = tune.Tuner(
        trainable,
        param_space={"wandb": {"project": "p"}},
        run_config=tune.RunConfig(
            name="final_status",
            storage_path=str(storage),
            stop={"training_iteration": 3},
            callbacks=[WandbLoggerCallback(project="p")] if writer == "callback" else [],
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert len(results.errors) == 1
    (run,) = find_runs(storage / "final_status").values()
    assert run.exit_codes == [1]


def test_setup_wandb_outside_tune_prints_no_warning_of_rays(tmp_path: Path) -> None:
    import warnings

    from tune_wandb import setup_wandb

    # Ray's own setup_wandb prints nothing here; our probe of the trial context
    # must not make Ray say "`get_trial_id` is meant to only be called ...".
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = setup_wandb({"a": 1}, mode="disabled", dir=str(tmp_path))
        run.finish()
    assert [str(w.message) for w in caught if "meant to only be called" in str(w.message)] == []


def test_class_mixin_on_a_class_that_is_no_trainable_says_what_to_do() -> None:
    from tune_wandb import WandbTrainableMixin

    class NotATrainable(WandbTrainableMixin):
        pass

    # Ray's mixin says what to do; object.__init__'s TypeError did not.
    with pytest.raises(ValueError, match=r"\(WandbTrainableMixin, tune.Trainable\)"):
        NotATrainable({"wandb": {"project": "p"}})
