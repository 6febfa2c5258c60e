"""The example scripts in docs/examples, run against real wandb (offline) and read back.

Each example is loaded from its file, sent to Ray's workers by value, and its
``main()`` run once per session into a temporary storage; the tests then read
the ``run-*.wandb`` files with the independent reader and compare them with
what each trial's config says should be there.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from wandb_reader import RunData, find_runs, iter_records, run_of_trial

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
EXAMPLES_PAGE = EXAMPLES.parent / "examples.md"
ORDER = ("seed_logger", "seed_mixin", "class_trainable", "setup_wandb")

#: Trial facts the callback adds to the run config from each result.
AUTO_CONFIG = {"trial_id", "hostname", "pid", "node_ip", "date", "experiment_id", "experiment_tag"}


def load_example(name: str) -> ModuleType:
    """Import docs/examples/<name>.py; its functions and classes go to Ray by value."""
    from ray import cloudpickle

    module_name = f"tune_wandb_docs_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # register_pickle_by_value looks it up there
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


@dataclass
class Ran:
    """One example's experiment: Tune's trials and the W&B runs on disk."""

    trials: list[Any]
    runs: dict[str, RunData]
    experiment: str


_RAN: dict[str, Ran] = {}


@pytest.fixture
def run_example(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Ran]:
    """Run an example's ``main()`` (once per session) into a temporary storage."""
    from ray import tune

    def run(name: str) -> Ran:
        if name not in _RAN:
            storage = tmp_path_factory.mktemp(name)
            home = tmp_path_factory.mktemp("home")  # no ~/.wandb_key: reading it would fail
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("HOME", str(home))
                result = load_example(name).main(storage_path=str(storage))
            if isinstance(result, tune.ResultGrid):
                assert not result.errors
                result = tune.ExperimentAnalysis(result.experiment_path)
            (experiment,) = {t.experiment_dir_name for t in result.trials}
            _RAN[name] = Ran(list(result.trials), find_runs(storage), experiment)
        return _RAN[name]

    return run


def user_config(run: RunData) -> dict[str, Any]:
    """The run config without wandb's own ``_wandb`` and the callback's trial facts."""
    facts = {"_wandb", "trial_log_path"}
    return {k: v for k, v in run.config.items() if k not in facts and k not in AUTO_CONFIG}


def user_rows(run: RunData) -> list[dict[str, Any]]:
    """History rows as logged from the trial's code: wandb's ``_`` keys left out.

    ``training_iteration`` is left out too: the callback's runs log Tune's
    own, the in-trial runs must not make one up (checked below).
    """
    return [
        {k: v for k, v in row.items() if not k.startswith("_") and k != "training_iteration"}
        for row in run.history
    ]


def check_run(run: RunData, trial: Any, ran: Ran, project: str, group: str | None = None) -> None:
    """What every example's runs share: naming, config, no key, a clean finish, place."""
    assert re.fullmatch(rf"{trial.trial_id}-[0-9a-f]{{6}}", run.run_id)
    assert run.name == str(trial)
    assert run.group == (group or ran.experiment)
    assert run.project == project
    expected = {k: v for k, v in trial.config.items() if k != "wandb"}
    assert {k: run.config[k] for k in expected} == expected
    # The "wandb" entry (project, key file) is nowhere in the run config.
    assert "wandb" not in run.config
    dumped = json.dumps(run.config)
    assert "api_key" not in dumped and ".wandb_key" not in dumped
    assert run.exit_code == 0
    # Written inside the trial's directory in the experiment's storage.
    assert all(Path(trial.path) in f.parents for f in run.files)


def check_ids(ran: Ran) -> None:
    assert len(ran.runs) == len(ran.trials)
    # One experiment: every run id carries the same experiment suffix.
    assert len({run_id.rsplit("-", 1)[1] for run_id in ran.runs}) == 1


def config_updates(run: RunData) -> dict[str, Any]:
    """The run config as sent after ``wandb.init``: the config records merged."""
    updates: dict[str, Any] = {}
    for path in run.files:
        for record in iter_records(path):
            if record.WhichOneof("record_type") == "config":
                for item in record.config.update:
                    key = "/".join(item.nested_key) if item.nested_key else item.key
                    updates[key] = json.loads(item.value_json)
    return updates


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_seed_logger_example(run_example: Callable[[str], Ran]) -> None:
    ran = run_example("seed_logger")
    assert len(ran.trials) == 3
    check_ids(ran)
    for trial in ran.trials:
        run = run_of_trial(ran.runs, trial.trial_id)
        # Ray 1.x's WandbLogger grouped by the trainable's name.
        check_run(run, trial, ran, project="Optimization_Project", group=trial.trainable_name)
        total = trial.config["parameter_1"] + trial.config["parameter_2"]
        # One row per tune.report, on Tune's iteration axis.
        assert [(row["training_iteration"], row["loss"]) for row in run.history] == [
            (i + 1, total / (i + 1)) for i in range(10)
        ]
        assert not any("config" in k or k == "done" for row in run.history for k in row)
        assert user_config(run) == {k: v for k, v in trial.config.items() if k != "wandb"}
        assert run.config["trial_id"] == trial.trial_id
        # log_config=True: the trial's config is sent as a config update, from the results.
        updates = config_updates(run)
        assert {k: updates.get(k) for k in ("parameter_1", "parameter_2")} == {
            "parameter_1": trial.config["parameter_1"],
            "parameter_2": trial.config["parameter_2"],
        }
        assert "wandb" not in updates
        # DEFAULT_LOGGERS: Ray's JSON, CSV and TensorBoard files are still written.
        trial_dir = Path(trial.path)
        assert (trial_dir / "result.json").exists() and (trial_dir / "progress.csv").exists()
        assert list(trial_dir.glob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_seed_mixin_example(run_example: Callable[[str], Ran]) -> None:
    ran = run_example("seed_mixin")
    assert len(ran.trials) == 3
    check_ids(ran)
    for trial in ran.trials:
        run = run_of_trial(ran.runs, trial.trial_id)
        # Ray 1.x's mixin grouped by the trainable's name.
        check_run(run, trial, ran, project="Optimization_Project", group=trial.trainable_name)
        assert user_rows(run) == [{"loss": trial.config["a"] + trial.config["b"]}] * 10
        assert user_config(run) == {"a": trial.config["a"], "b": trial.config["b"]}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_class_trainable_example(run_example: Callable[[str], Ran]) -> None:
    ran = run_example("class_trainable")
    assert sorted(t.config["lr"] for t in ran.trials) == [0.01, 0.1]
    check_ids(ran)
    for trial in ran.trials:
        run = run_of_trial(ran.runs, trial.trial_id)
        # The entry's group wins over the experiment's name.
        check_run(run, trial, ran, project="tune-wandb-examples", group="class-trainables")
        lr = trial.config["lr"]
        # setup logs before the first step; then one row per step.
        assert user_rows(run) == [{"initial_lr": lr}] + [{"loss": lr / (i + 1)} for i in range(5)]
        assert trial.last_result["training_iteration"] == 5


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_setup_wandb_example(run_example: Callable[[str], Ran]) -> None:
    ran = run_example("setup_wandb")
    assert sorted(t.config["lr"] for t in ran.trials) == [0.01, 0.1]
    check_ids(ran)
    for trial in ran.trials:
        run = run_of_trial(ran.runs, trial.trial_id)
        check_run(run, trial, ran, project="tune-wandb-examples")
        lr = trial.config["lr"]
        assert user_rows(run) == [{"loss": lr / (i + 1)} for i in range(5)]
        assert user_config(run) == {"lr": lr}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seed_mixin", "class_trainable", "setup_wandb"])
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_in_trial_rows_have_no_made_up_step(name: str, run_example: Callable[[str], Ran]) -> None:
    ran = run_example(name)
    for run in ran.runs.values():
        assert [
            row["training_iteration"] for row in run.history if "training_iteration" in row
        ] == []


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_class_trainable_run_config_is_the_trial_config(
    run_example: Callable[[str], Ran],
) -> None:
    ran = run_example("class_trainable")
    for trial in ran.trials:
        run = run_of_trial(ran.runs, trial.trial_id)
        assert user_config(run) == {"lr": trial.config["lr"]}


def test_examples_page_shows_each_example_file_as_it_is() -> None:
    page = EXAMPLES_PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", page, flags=re.DOTALL | re.MULTILINE)
    files = [(EXAMPLES / f"{name}.py").read_text(encoding="utf-8") for name in ORDER]
    assert blocks == files
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(ORDER)
    for name in ORDER:
        assert f"(examples/{name}.py)" in page


@pytest.mark.parametrize("name", ORDER)
def test_example_is_a_script_with_a_main(name: str) -> None:
    source = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
    assert source.startswith('"""')
    assert source.rstrip().endswith('if __name__ == "__main__":\n    main()')
    assert "def main(storage_path=None):" in source
