"""End to end: real Ray Tune, real wandb (offline), run files read back."""

from __future__ import annotations

import logging
import pickle
import signal
from pathlib import Path
from typing import Any

import pyarrow.fs
import pytest
import trainables
from conftest import our_processes
from ray import tune
from support import SignalWorker
from wandb_reader import RunData, find_runs

from tune_wandb import WandbLoggerCallback

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session", "no_leftover_processes")]

N_TRIALS = 4
N_RESULTS = 200


def trial_dirs(experiment: Path) -> dict[str, Path]:
    """Trial id -> trial directory, from each trial's params and result files."""
    out = {}
    for result in experiment.glob("*/result.json"):
        first = result.read_text().splitlines()[0]
        out[pickle.loads(pickle.dumps(__import__("json").loads(first)["trial_id"]))] = result.parent
    return out


def check_complete(run: RunData, n: int) -> None:
    assert run.column("training_iteration") == list(range(1, n + 1))
    assert len(run.history) == n
    assert run.exit_code == 0


def check_experiment(
    experiment: Path, project: str, n_trials: int = N_TRIALS
) -> dict[str, RunData]:
    runs = find_runs(experiment)
    assert len(runs) == n_trials
    dirs = trial_dirs(experiment)
    assert len(dirs) == n_trials
    by_trial = {}
    for run_id, run in runs.items():
        trial_id, suffix = run_id.rsplit("-", 1)
        assert len(suffix) == 6 and int(suffix, 16) >= 0
        by_trial[trial_id] = run
        # Written inside the trial's own directory in the experiment's storage.
        assert all(dirs[trial_id] in f.parents for f in run.files)
        assert run.project == project
        assert run.group == experiment.name
        assert run.name.startswith(f"report_n_{trial_id}")
        check_complete(run, N_RESULTS)
        assert "wandb" not in run.config
        assert run.config["trial_id"] == trial_id
        assert {"hostname", "pid", "node_ip", "date"} <= run.config.keys()
        assert "x" in run.config and run.config["n"] == N_RESULTS
        row = run.history[-1]
        assert row["nested/acc"] == pytest.approx((N_RESULTS - 1) / N_RESULTS)
        assert row["nested/deep/v"] == N_RESULTS - 1
        assert row["flag"] is False
        assert row["note"] == "text is not a metric"  # strings are logged as they are
        for dropped in ("done", "trial_id", "config/x", "pid", "date"):
            assert dropped not in row
    suffixes = {run_id.rsplit("-", 1)[1] for run_id in runs}
    assert len(suffixes) == 1
    return by_trial


def param_space(**extra: Any) -> dict[str, Any]:
    return {
        "x": tune.grid_search([1, 2, 3, 4]),
        "n": N_RESULTS,
        "wandb": {"api_key": "never-logged-key"},
        **extra,
    }


@pytest.mark.smoke  # the offline experiment of nox -s smoke / oldest
def test_tune_run_logs_every_result(storage: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    analysis = tune.run(
        trainables.report_n,
        config=param_space(),
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="engine-tests")],
        verbose=0,
    )
    experiment = Path(analysis.experiment_path)
    check_experiment(experiment, "engine-tests")
    assert not our_processes()
    # Nothing report_n reports is left out (tests/test_bad_input.py has what is).
    assert not [r.getMessage() for r in caplog.records if "'note'" in r.getMessage()]


def test_tuner_logs_every_result(storage: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_PROJECT_NAME", "from-ray-variable")
    monkeypatch.setenv("WANDB_PROJECT", "from-wandb-variable")
    tuner = tune.Tuner(
        trainables.report_n,
        param_space=param_space(),
        run_config=tune.RunConfig(
            name="tuner_exp",
            storage_path=str(storage),
            callbacks=[WandbLoggerCallback()],
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert not results.errors
    runs = check_experiment(storage / "tuner_exp", "from-ray-variable")
    assert {r.group for r in runs.values()} == {"tuner_exp"}
    assert not our_processes()


def test_group_excludes_and_config_logging(storage: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_GROUP_NAME", "group-from-env")
    monkeypatch.setenv("WANDB_PROJECT", "wandb-project")
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 5, "lr": 0.5},
        name="cfg",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(excludes=["nested/deep", "flag", "lr"], log_config=True)],
        verbose=0,
    )
    (run,) = find_runs(storage / "cfg").values()
    assert run.project == "wandb-project"
    assert run.group == "group-from-env"
    assert len(run.history) == 5
    for row in run.history:
        assert "nested/acc" in row
        assert "nested/deep/v" not in row and "flag" not in row
    assert run.config["x"] == 1 and run.config["n"] == 5
    assert "lr" not in run.config


def test_init_kwargs_override_choices(storage: Path) -> None:
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 3},
        name="override",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p", group="g", name="my-name", tags=["a"])],
        verbose=0,
    )
    (run,) = find_runs(storage / "override").values()
    assert (run.project, run.group, run.name) == ("p", "g", "my-name")
    check_complete(run, 3)


def test_failed_trial_exit_code(storage: Path) -> None:
    tune.run(
        trainables.fail_after,
        config={"n": 7, "fail": tune.grid_search([False, True])},
        name="failing",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p")],
        raise_on_failed_trial=False,
        verbose=0,
    )
    runs = find_runs(storage / "failing")
    assert sorted(r.exit_code for r in runs.values()) == [0, 1]
    for run in runs.values():
        assert run.column("training_iteration") == list(range(1, 8))


def test_media_and_arrays(
    storage: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray's own TensorBoard logger cannot take these arrays; only W&B is under test.
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    tune.run(
        trainables.with_media,
        name="media",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p")],
        verbose=0,
    )
    (run,) = find_runs(storage / "media").values()
    assert len(run.history) == 3
    row = run.history[-1]
    # wandb stores media as nested keys; the reader joins them with "/".
    assert row["image/_type"] == "image-file"
    assert row["image/width"] == 8
    assert row["images/_type"] == "images/separated" and row["images/count"] == 2
    assert row["video/_type"] == "video-file" and row["video/path"].endswith(".gif")
    assert row["scalar_array"] == 3.0
    assert row["np_scalar"] == 2.0
    assert row["vector"] == [0, 1, 2, 3]  # wandb keeps up to 32 values as a list
    assert not any("'vector'" in r.getMessage() for r in caplog.records)
    media = list((storage / "media").rglob("media/images/*.png"))
    assert len(media) >= 9


def test_remote_storage_gets_finished_copy(tmp_path: Path) -> None:
    base = tmp_path / "bucket"
    base.mkdir()
    fs = pyarrow.fs.SubTreeFileSystem(str(base), pyarrow.fs.LocalFileSystem())
    tune.run(
        trainables.report_n,
        config={"x": tune.grid_search([1, 2]), "n": 50},
        name="remote",
        storage_path="experiments",
        storage_filesystem=fs,
        callbacks=[WandbLoggerCallback(project="p")],
        verbose=0,
    )
    runs = find_runs(base / "experiments" / "remote")
    assert len(runs) == 2
    for run in runs.values():
        check_complete(run, 50)


def test_callback_pickles_without_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("k" * 40 + "\n")
    callback = WandbLoggerCallback(project="p", api_key="secret-key-123", excludes=["a"])
    data = pickle.dumps(callback)
    assert b"secret-key-123" not in data
    clone = pickle.loads(data)
    assert clone.project == "p" and clone.excludes == ("a",) and clone.api_key is None
    from_file = pickle.loads(pickle.dumps(WandbLoggerCallback(api_key_file=str(key_file))))
    assert from_file.api_key_file == str(key_file)
    import wandb

    in_settings = WandbLoggerCallback(settings=wandb.Settings(api_key="k" * 40, console="wrap"))
    data = pickle.dumps(in_settings)
    assert b"k" * 40 not in data
    assert pickle.loads(data).wandb_init_kwargs["settings"]["console"] == "wrap"


def test_restore_continues_the_same_run(storage: Path, tmp_path: Path) -> None:
    config = {"n": 10, "every": 3, "fail_at": [5], "markers": str(tmp_path)}
    tuner = tune.Tuner(
        trainables.checkpointed,
        param_space=config,
        run_config=tune.RunConfig(
            name="restore",
            storage_path=str(storage),
            callbacks=[WandbLoggerCallback(project="p")],
            verbose=0,
        ),
    )
    assert tuner.fit().errors  # the first attempt fails at iteration 5
    (first,) = find_runs(storage / "restore").values()
    assert first.column("training_iteration") == [1, 2, 3, 4]
    assert first.exit_code == 1

    restored = tune.Tuner.restore(
        str(storage / "restore"), trainables.checkpointed, resume_errored=True
    )
    assert not restored.fit().errors
    (run,) = find_runs(storage / "restore").values()
    assert run.run_id == first.run_id
    assert len(run.files) == 2  # wandb gives the resumed piece its own directory
    # Iteration 4 ran twice: before the failure, and again after restoring the
    # checkpoint of iteration 3. Both are logged, as what they are.
    assert run.column("training_iteration") == [1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10]
    assert run.column("value") == [10 * i for i in run.column("training_iteration")]
    assert run.exit_codes == [1, 0]


def test_upload_timeout_stops_stuck_workers_and_says_how_to_sync(
    storage: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    caplog.set_level(logging.ERROR, logger="tune_wandb")
    callback = WandbLoggerCallback(project="p", upload_timeout=2)
    freezer = SignalWorker(callback, at=20, sig=signal.SIGSTOP, settle=0.5)
    started = time.monotonic()
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 40},
        name="stuck",
        storage_path=str(storage),
        callbacks=[callback, freezer],
        verbose=0,
    )
    elapsed = time.monotonic() - started
    assert len(freezer.signalled) == 1
    assert elapsed < 2 + 15 + 20  # upload_timeout, the stop escalation, Tune itself
    messages = [r.getMessage() for r in caplog.records]
    (stuck,) = [m for m in messages if "did not finish within upload_timeout=2s" in m]
    assert "wandb sync " in stuck and str(storage / "stuck") in stuck
    (run,) = find_runs(storage / "stuck").values()
    # What the worker logged before it froze is on disk.
    assert run.column("training_iteration")[:19] == list(range(1, 20))
    assert run.exit_code is None


def test_checkpoints_uploaded_as_artifacts(storage: Path) -> None:
    tune.run(
        trainables.checkpointed,
        config={"n": 6, "every": 3},
        name="ckpt",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p", upload_checkpoints=True)],
        verbose=0,
    )
    (run,) = find_runs(storage / "ckpt").values()
    check_complete(run, 6)
    assert len(run.artifacts) == 2
    assert all(name.startswith("checkpoint_checkpointed_") for name in run.artifacts)
    # Offline, the staged files that `wandb sync` will upload are kept inside
    # the run directory, not in a per-user directory.
    # (The experiment's own wandb/ directory holds a link to it too.)
    (run_dir,) = [p for p in (storage / "ckpt").rglob("offline-run-*") if not p.is_symlink()]
    staged = [p.read_text() for p in (run_dir / "artifact-staging").rglob("*") if p.is_file()]
    assert sorted(staged) == ["3", "6"]


@pytest.mark.smoke  # the worker kill of nox -s smoke / oldest
def test_dead_worker_is_replaced_and_the_run_continues(
    storage: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Through real Tune; every other stage and process: tests/test_fault_matrix.py.
    caplog.set_level(logging.ERROR, logger="tune_wandb")
    callback = WandbLoggerCallback(project="p")
    tune.run(
        trainables.report_n,
        config={"x": 1, "n": 40},
        name="killed",
        storage_path=str(storage),
        callbacks=[
            callback,
            SignalWorker(callback, at=25, sig=signal.SIGKILL),
        ],
        verbose=0,
    )
    assert any("exit code -9" in r.getMessage() for r in caplog.records)
    (run,) = find_runs(storage / "killed").values()
    # The replacement worker resumed the same run, in a piece of its own, and
    # logged what the dead worker had not written and everything after: every
    # row landed, at most one of them twice.
    assert len(run.files) == 2
    iterations = run.column("training_iteration")
    assert sorted(set(iterations)) == list(range(1, 41))
    assert len(iterations) - 40 <= 1
    assert run.exit_codes[-1] == 0


def test_a_worker_that_cannot_start_is_given_up_after_a_few_deaths(
    storage: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tune_wandb")
    analysis = tune.run(
        trainables.report_n,
        config={"x": 1, "n": 30},
        name="doomed",
        storage_path=str(storage),
        # wandb.init refuses the run id even offline: every worker dies at start.
        callbacks=[WandbLoggerCallback(project="p", id="no/slashes/in/run/ids")],
        verbose=0,
    )
    (trial,) = analysis.trials
    # The experiment is unharmed; Tune's own files keep every result.
    assert trial.status == "TERMINATED" and trial.last_result["training_iteration"] == 30
    starts = [r for r in caplog.records if "could not start a W&B run" in r.getMessage()]
    gave_up = [r for r in caplog.records if "logging of this trial stops here" in r.getMessage()]
    # One worker and three replacements, not one per result.
    assert len(starts) <= 4 and len(gave_up) == 1
    assert "died 4 times" in gave_up[0].getMessage()
