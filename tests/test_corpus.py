"""The compatibility corpus: Ray's and W&B's own example scripts, run as users run them.

Each script in tests/corpus/ makes the W&B calls of a public example written by Ray's or
W&B's authors (its header names the repository, path and commit), with its imports
changed to tune_wandb and only the changes docs/migration.md (or Ray's own error
messages) tell a user to make, each marked in a comment. Every script runs in a
subprocess of the project's interpreter, with a temporary HOME (so Tune's default
storage, ``~/ray_results``, and the ``~/.wandb_api_key`` the examples name are the
test's) and W&B offline; the run files are then read back with tests/wandb_reader.py
and compared with what the script means to log.

The checks, per experiment of a script: ``runs`` (one W&B run per trial, in the trial's
directory, finished with exit code 0), ``logged`` (that run holds the rows and config
the script logs), ``where`` (project, group and name of every run of the trial);
``trial_log_path`` for Ray 2.x's callback; per script: ``exit`` (exit code 0, no process
left) and ``terminal`` (no traceback, no false or borrowed warning). A check that fails
today because of a known defect is marked xfail(strict=True) with the failure seen, so
fixing the defect turns it into a pass the suite requires.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_no_processes
from wandb_reader import RunData, find_runs

# The first test to need the scripts runs them all (two at a time): its setup takes the
# corpus' whole time, longer than the suite's per-test timeout on a loaded machine.
# The first test runs every script (the module fixture): 7, two at a time.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CORPUS = Path(__file__).resolve().parent / "corpus"

#: How many corpus scripts run at once: their time is mostly Ray's and wandb's start-up
#: waits, so two at a time keep the corpus under two minutes on two cores.
PARALLEL = 2

#: The group rules. Ray 1.x's WandbLogger and mixins grouped a trial's run by the
#: trainable's name; Ray 2.x's callback and setup_wandb by the experiment's name. When a
#: trial is logged by both kinds, issue 14 asks for one documented rule: either is taken.
TRAINABLE, EXPERIMENT, EITHER = "trainable", "experiment", "either"


@dataclass(frozen=True)
class Experiment:
    """What one experiment of a corpus script means to log, for each of its trials."""

    trainable: str
    project: str
    group: str
    #: Metrics the trial reports to Tune that its run holds, one row per result, on
    #: Tune's training_iteration (the callback's or WandbLogger's rows).
    reported: tuple[str, ...] = ()
    #: Metrics the trial's own code logs with wandb.log, and how many rows of each for
    #: a trial with n Tune results.
    logged: dict[str, Callable[[int], int]] = field(default_factory=dict)
    #: Config keys of the trial that its run's config holds.
    config: frozenset[str] = frozenset({"mean", "sd"})
    #: Config entries that configure the integration, never logged as config.
    not_config: frozenset[str] = frozenset({"wandb"})
    #: Ray 2.x's WandbLoggerCallback adds trial_log_path to each run's config.
    trial_log_path: bool = False


@dataclass(frozen=True)
class Script:
    """A corpus script, its experiments in the order it runs them, its known failures."""

    name: str
    experiments: tuple[Experiment, ...]
    #: (trainable or "", check) -> the known defect that fails this check today.
    known: dict[tuple[str, str], str] = field(default_factory=dict)


def thirty(_results: int) -> int:
    """The examples' trials log 30 values, whatever they report to Tune."""
    return 30


def every(results: int) -> int:
    """One value logged after each result reported to Tune."""
    return results


def all_but_the_last(results: int) -> int:
    # An endless trial stopped by Tune: its thread is held in the report call that
    # ends it, so the wandb.log after it never runs (Ray's own integration the same).
    return results - 1


SCRIPTS = (
    Script(
        "ray_1_0_wandb_example",
        (
            Experiment("train_function", "Wandb_example", TRAINABLE, reported=("loss",)),
            Experiment(
                "decorated_train_function", "Wandb_example", TRAINABLE, logged={"loss": thirty}
            ),
            Experiment("WandbTrainable", "Wandb_example", TRAINABLE, logged={"loss": thirty}),
        ),
    ),
    Script(
        "ray_1_2_wandb_example",
        (
            # The callback keeps Ray 2.60's defaults (issue 14, defect 7).
            Experiment("train_function", "Wandb_example", EXPERIMENT, reported=("loss",)),
            Experiment(
                "decorated_train_function", "Wandb_example", TRAINABLE, logged={"loss": thirty}
            ),
            Experiment("WandbTrainable", "Wandb_example", TRAINABLE, logged={"loss": thirty}),
        ),
    ),
    Script(
        "ray_1_0_wandb_logger_rllib",
        (
            Experiment(
                "PPO",
                "PPO",
                TRAINABLE,
                reported=("episode_reward_mean",),
                config=frozenset({"env"}),
                not_config=frozenset({"wandb", "logger_config"}),
            ),
        ),
    ),
    Script(
        "ray_docs_tune_wandb",
        (
            Experiment(
                "train_function",
                "Wandb_example",
                EXPERIMENT,
                reported=("loss",),
                trial_log_path=True,
            ),
            Experiment(
                "train_function_wandb", "Wandb_example", EXPERIMENT, logged={"loss": thirty}
            ),
            Experiment("WandbTrainable", "Wandb_example", "Example", logged={"loss": thirty}),
        ),
    ),
    Script(
        "wandb_pytorch_test",
        (
            Experiment(
                "train_mnist",
                "ray-example",
                EITHER,
                reported=("mean_accuracy",),
                logged={"error_rate": every},
                config=frozenset({"lr", "momentum"}),
            ),
        ),
    ),
    Script(
        "wandb_colab_raytune_2022",
        (
            Experiment(
                "train_mnist",
                "raytune",
                TRAINABLE,
                reported=("mean_accuracy",),
                logged={"error_rate": every},
                config=frozenset({"lr", "momentum"}),
            ),
        ),
    ),
    Script(
        "wandb_colab_raytune",
        (
            Experiment(
                "train_mnist",
                "raytune-colab",
                EXPERIMENT,
                reported=("mean_accuracy",),
                logged={"error_rate": all_but_the_last},
                config=frozenset({"lr", "momentum"}),
                trial_log_path=True,
            ),
        ),
    ),
)


@dataclass
class Outcome:
    """One corpus script's run: its exit, its terminal, its HOME."""

    returncode: int
    stdout: str
    stderr: str
    home: Path
    _trials: list[Any] | None = None

    def trials(self, trainable: str) -> list[Any]:
        """The trials of the script's experiment(s) of ``trainable``, from Tune's state."""
        if self._trials is None:
            from ray import tune

            self._trials = []
            for experiment in sorted((self.home / "ray_results").iterdir()):
                self._trials += tune.ExperimentAnalysis(str(experiment)).trials
        return [t for t in self._trials if t.trainable_name == trainable]


def run_script(name: str, home: Path) -> Outcome:
    """Run a corpus script as a user would: ``python script.py`` in their home directory."""
    home.mkdir(parents=True)
    # The examples read ~/.wandb_api_key; a user with a W&B account has one (offline,
    # nothing reads it but the integration's key check).
    (home / ".wandb_api_key").write_text("0123456789abcdef0123456789abcdef01234567\n")
    env = {**os.environ, "HOME": str(home), "WANDB_MODE": "offline"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, str(CORPUS / f"{name}.py")],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        # Two scripts at a time beside three other pytest-xdist processes.
        timeout=600,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr, home)


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """Every corpus script the selected tests need, run once, two at a time."""
    needed = sorted(
        {
            item.callspec.params["script"].name
            for item in request.session.items
            if getattr(item, "module", None) is request.module
            and hasattr(item, "callspec")
            and "script" in item.callspec.params
        }
    )
    root = tmp_path_factory.mktemp("corpus")
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        done = pool.map(lambda name: run_script(name, root / name), needed)
        return dict(zip(needed, done, strict=True))


def cases(check: str) -> list[Any]:
    """(script, experiment) parameters for ``check``, known failures marked xfail."""
    params = []
    for script in SCRIPTS:
        for experiment in script.experiments:
            if check == "trial_log_path" and not experiment.trial_log_path:
                continue
            reason = script.known.get((experiment.trainable, check))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(
                pytest.param(
                    script, experiment, marks=marks, id=f"{script.name}-{experiment.trainable}"
                )
            )
    return params


def script_cases(check: str) -> list[Any]:
    params = []
    for script in SCRIPTS:
        reason = script.known.get(("", check))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(script, marks=marks, id=script.name))
    return params


def trial_runs(outcome: Outcome, experiment: Experiment) -> list[tuple[Any, list[RunData]]]:
    """Each trial of ``experiment`` with the W&B runs written in its directory."""
    trials = outcome.trials(experiment.trainable)
    assert trials, f"no trial of {experiment.trainable}: exit {outcome.returncode}"
    return [(trial, list(find_runs(Path(trial.path)).values())) for trial in trials]


def results_of(trial: Any) -> int:
    """How many results the trial reported to Tune (its result.json lines)."""
    return len((Path(trial.path) / "result.json").read_text().splitlines())


def the_run(trial: Any, runs: list[RunData]) -> RunData:
    assert len(runs) == 1, f"{trial}: {len(runs)} W&B runs: {[r.run_id for r in runs]}"
    return runs[0]


@pytest.mark.parametrize(("script", "experiment"), cases("runs"))
def test_one_finished_run_per_trial(
    outcomes: dict[str, Outcome], script: Script, experiment: Experiment
) -> None:
    for trial, runs in trial_runs(outcomes[script.name], experiment):
        assert trial.status == "TERMINATED", trial.error_file
        run = the_run(trial, runs)
        assert run.exit_codes == [0]
        assert all(Path(trial.path) in path.parents for path in run.files)


@pytest.mark.parametrize(("script", "experiment"), cases("logged"))
def test_the_run_holds_what_the_script_logs(
    outcomes: dict[str, Outcome], script: Script, experiment: Experiment
) -> None:
    for trial, runs in trial_runs(outcomes[script.name], experiment):
        run = the_run(trial, runs)
        results = results_of(trial)
        if experiment.reported:
            # One row per Tune result, on Tune's iteration axis, none lost or repeated.
            assert run.column("training_iteration") == list(range(1, results + 1))
            for metric in experiment.reported:
                assert len(run.column(metric)) == results, metric
        else:
            # Only the trial's wandb.log calls: no Tune rows made up.
            assert run.column("training_iteration") == []
        for metric, rows in experiment.logged.items():
            values = run.column(metric)
            assert len(values) == rows(results), metric
            # Numbers, not text: wandb's JSON writes a whole float as an integer (50.0 -> 50).
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        for key in experiment.config:
            assert run.config.get(key) == trial.config[key], key
        assert not experiment.not_config & run.config.keys()
        # log_config=True puts the trial config in the run config, never in the
        # history (Ray 2.60's callback also logs config/<k> rows: docs/migration.md).
        assert not [k for row in run.history for k in row if k.startswith("config/")]
        assert "api_key" not in json.dumps(run.config)


@pytest.mark.parametrize(("script", "experiment"), cases("where"))
def test_every_run_is_where_the_script_puts_it(
    outcomes: dict[str, Outcome], script: Script, experiment: Experiment
) -> None:
    for trial, runs in trial_runs(outcomes[script.name], experiment):
        assert runs, f"{trial}: no W&B run in {trial.path}"
        groups = {
            TRAINABLE: {experiment.trainable},
            EXPERIMENT: {trial.experiment_dir_name},
            EITHER: {experiment.trainable, trial.experiment_dir_name},
        }.get(experiment.group, {experiment.group})
        for run in runs:
            assert run.project == experiment.project, run.run_id
            assert run.group in groups, (run.run_id, run.group)
            assert run.name == str(trial), run.run_id
            assert re.fullmatch(rf"{trial.trial_id}-[0-9a-f]{{6}}", run.run_id)


@pytest.mark.parametrize(("script", "experiment"), cases("trial_log_path"))
def test_callback_runs_carry_trial_log_path(
    outcomes: dict[str, Outcome], script: Script, experiment: Experiment
) -> None:
    for trial, runs in trial_runs(outcomes[script.name], experiment):
        assert runs
        for run in runs:
            assert Path(run.config["trial_log_path"]) == Path(trial.path)


@pytest.mark.parametrize("script", script_cases("exit"))
def test_script_exits_cleanly(outcomes: dict[str, Outcome], script: Script) -> None:
    outcome = outcomes[script.name]
    assert outcome.returncode == 0, outcome.stderr[-4000:]
    for experiment in script.experiments:
        assert outcome.trials(experiment.trainable)
    assert wait_no_processes() == []


def tracebacks(said: str) -> list[str]:
    """The tracebacks printed, except Ray's own as it stops a trial's actor.

    Ray's SIGTERM handler raises SystemExit in whatever the actor runs when Tune stops
    it; inside a garbage-collection callback Python prints "Exception ignored in:
    <function WeakSet.__init__.<locals>._remove ...>", a traceback through Ray's
    ``sigterm_handler`` and "SystemExit: 1". It comes and goes with timing, for any
    trial (seen in other suites' trials too), and is neither the script's nor ours.
    """
    blocks = said.split("Traceback (most recent call last):")[1:]
    return [b[:2000] for b in blocks if "in sigterm_handler" not in b.split("Traceback")[0]]


@pytest.mark.parametrize("script", script_cases("terminal"))
def test_terminal_says_only_what_is_true(outcomes: dict[str, Outcome], script: Script) -> None:
    said = outcomes[script.name].stdout + outcomes[script.name].stderr
    assert tracebacks(said) == []
    # Every corpus script names its project.
    assert "no W&B project given" not in said
    # Ray's warning for a probe of the trial context outside a function trainable.
    assert "get_trial_id` is meant to only be called" not in said


def test_every_script_credits_its_source_and_marks_its_changes() -> None:
    scripts = [p for p in sorted(CORPUS.glob("*.py")) if p.stem not in {"__init__", "conftest"}]
    assert {p.stem for p in scripts} == {s.name for s in SCRIPTS}
    for path in scripts:
        text = path.read_text()
        head = text.split("\n\n", 1)[0]
        assert re.search(
            r"Source: (ray-project/ray|wandb/examples), \S+ at commit\s+(# )?[0-9a-f]{40}", head
        ), path.name
        # Nothing of Ray's or W&B's integration is imported: only tune_wandb's.
        imports = re.findall(r"(?m)^(?:from|import) \S+", text)
        assert not [i for i in imports if re.search(r"integration|air\.callbacks", i)]
        assert "from tune_wandb" in imports, path.name
