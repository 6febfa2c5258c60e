"""The old integration's API: the "wandb" entry, WandbLogger, DEFAULT_LOGGERS, run(loggers=)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trainables
from ray import tune
from wandb_reader import find_runs, run_of_trial

import tune_wandb
from tune_wandb import DEFAULT_LOGGERS, WandbLogger, WandbLoggerCallback, loggers_to_callbacks


def test_loggers_map_to_callbacks() -> None:
    names = [type(c).__name__ for c in loggers_to_callbacks(DEFAULT_LOGGERS + (WandbLogger,))]
    assert names == [
        "JsonLoggerCallback",
        "CSVLoggerCallback",
        "TBXLoggerCallback",
        "WandbLoggerCallback",
    ]
    assert [type(c).__name__ for c in loggers_to_callbacks(WandbLogger)] == ["WandbLoggerCallback"]
    assert len(loggers_to_callbacks((WandbLogger, WandbLogger))) == 1


@pytest.mark.parametrize("bad", [object, "WandbLogger", WandbLoggerCallback, 42])
def test_other_loggers_are_refused_clearly(bad: object) -> None:
    with pytest.raises(TypeError, match="loggers= takes tune-wandb's logger classes"):
        tune_wandb.run(trainables.seed_train_fn, loggers=(bad,))


def test_logger_classes_are_not_instantiated() -> None:
    with pytest.raises(TypeError, match=r"not instantiated on Ray 2\.60"):
        WandbLogger({}, "/tmp", None)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_seed_first_example_runs_with_only_the_imports_changed(
    storage: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    analysis = tune_wandb.run(
        trainables.seed_train_fn,
        config={
            # define search space here
            "parameter_1": tune.choice([1, 2, 3]),
            "parameter_2": tune.choice([4, 5, 6]),
            # wandb configuration
            "wandb": {
                "project": "Optimization_Project",
                "api_key_file": "/path/to/file",  # offline: never read
                "api_key": "key-in-the-config-0123456789",
                "log_config": True,
            },
        },
        loggers=DEFAULT_LOGGERS + (WandbLogger,),
        num_samples=3,
        storage_path=str(storage),
        name="seed",
        verbose=0,
    )
    runs = find_runs(storage / "seed")
    assert len(runs) == 3
    for trial in analysis.trials:
        run = run_of_trial(runs, trial.trial_id)
        assert run.project == "Optimization_Project"
        assert run.column("loss") == [
            trial.config["parameter_1"] + trial.config["parameter_2"] + i for i in range(10)
        ]
        assert run.config["parameter_1"] == trial.config["parameter_1"]
        assert "wandb" not in run.config and "api_key" not in str(run.config)
        trial_dir = Path(trial.path)
        assert (trial_dir / "result.json").exists() and (trial_dir / "progress.csv").exists()
    # The key was taken out of the config before Ray stored it.
    stored = "".join(p.read_text(errors="ignore") for p in (storage / "seed").rglob("*.json"))
    assert "key-in-the-config-0123456789" not in stored
    assert any("tune_wandb.run took it out" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_callback_without_arguments_reads_each_trials_entry(storage: Path) -> None:
    tune.run(
        trainables.report_n,
        config={
            "x": tune.grid_search([1, 2]),
            "n": 5,
            "wandb": {
                "project": "from-entry",
                "group": "entry-group",
                "run_name": tune.sample_from(lambda spec: f"named-{spec.config.x}"),
                "excludes": ["nested"],
                "tags": ["legacy"],
            },
        },
        name="entry",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="callback-default", group="callback-group")],
        verbose=0,
    )
    runs = find_runs(storage / "entry")
    assert sorted(r.name for r in runs.values()) == ["named-1", "named-2"]
    for run in runs.values():
        assert (run.project, run.group) == ("from-entry", "entry-group")
        assert all(not k.startswith("nested") for row in run.history for k in row)
        assert len(run.history) == 5


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_entry_run_id_overrides_the_id(storage: Path) -> None:
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 3, "wandb": {"run_id": "my-own-id", "project": "p"}},
        name="ids",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback()],
        verbose=0,
    )
    assert list(find_runs(storage / "ids")) == ["my-own-id"]


def test_bad_entry_is_a_clear_error() -> None:
    from tune_wandb._settings import split_entry

    with pytest.raises(TypeError, match='"wandb" entry of a Tune config must be a dict'):
        split_entry(["project"])
    with pytest.raises(TypeError, match="excludes must be a list"):
        WandbLoggerCallback(excludes="loss")


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_ray_documented_example_with_only_the_import_changed(storage: Path) -> None:
    # from ray.air.integrations.wandb import WandbLoggerCallback
    from tune_wandb import WandbLoggerCallback as DropInCallback

    tuner = tune.Tuner(
        trainables.ray_docs_train_func,
        param_space={
            "lr": tune.grid_search([0.001, 0.01, 0.1, 1.0]),
            "epochs": 10,
        },
        run_config=tune.RunConfig(
            callbacks=[DropInCallback(project="Optimization_Project")],
            name="ray_docs",
            storage_path=str(storage),
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert not results.errors
    runs = find_runs(storage / "ray_docs")
    assert len(runs) == 4
    for run in runs.values():
        assert run.project == "Optimization_Project"
        assert run.column("training_iteration") == list(range(1, 9))
        assert len(run.column("acc")) == 8 and len(run.column("loss")) == 8
        assert run.exit_code == 0


def test_rays_deprecated_save_checkpoints_alias() -> None:
    with pytest.warns(DeprecationWarning, match="upload_checkpoints"):
        callback = WandbLoggerCallback(save_checkpoints=True)
    assert callback.upload_checkpoints is True
    assert "save_checkpoints" not in callback.wandb_init_kwargs


@pytest.mark.unit
def test_rllib_logger_config_entry_configures_the_run() -> None:
    # Ray 1.x's WandbLogger docstring, "Example for RLLib": the entry in logger_config.
    from tune_wandb._initargs import trial_run

    run = trial_run(
        trial_id="a_00000",
        name="PPO_a_00000",
        experiment="exp",
        token="t",  # noqa: S106 - the run-id token, not a secret
        config={
            "env": "CartPole-v0",
            "logger_config": {"wandb": {"project": "PPO", "api_key_file": "~/.key"}},
        },
        run_root="/tmp/exp/a",
        settings={},
        environ={},
    )
    assert run.init_kwargs["project"] == "PPO"
    assert run.options == {"api_key_file": "~/.key"}
    # logger_config configured the logger: it is no hyperparameter.
    assert run.init_kwargs["config"] == {"env": "CartPole-v0"}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_no_false_warning_of_a_missing_project(
    storage: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The old integration's examples name the project in the trials' entry only.
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    tune_wandb.run(
        trainables.report_n,
        config={"x": 1, "n": 2, "wandb": {"project": "from-entry"}},
        loggers=[WandbLogger],
        name="entry_project",
        storage_path=str(storage),
        verbose=0,
    )
    (run,) = find_runs(storage / "entry_project").values()
    assert run.project == "from-entry"
    assert not [r for r in caplog.records if "no W&B project given" in r.getMessage()]
    # When a run really has no project, it is said, once.
    callback = WandbLoggerCallback()
    callback._say_if_no_project({"project": None}, "t_00000")
    callback._say_if_no_project({}, "t_00001")
    said = [r.getMessage() for r in caplog.records if "no W&B project given" in r.getMessage()]
    assert len(said) == 1 and "t_00000" in said[0]
