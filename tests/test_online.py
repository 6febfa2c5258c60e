"""The online path, against the W&B-compatible test server on 127.0.0.1."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import trainables
from conftest import our_processes
from ray import tune
from wandb_server import WandbServer, make_api_key

from tune_wandb import WandbLoggerCallback
from tune_wandb._credentials import KeyStatus, check_api_key

N_TRIALS = 4
N_RESULTS = 200


@pytest.fixture
def online(
    wandb_server: WandbServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> WandbServer:
    """The driver online against the test server, with a HOME of its own (no wandb login)."""
    for name, value in wandb_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    wandb_server.require_key = wandb_server.api_key
    return wandb_server


@pytest.mark.slow
@pytest.mark.smoke  # the online experiment of nox -s smoke / oldest
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_every_row_reaches_the_server(online: WandbServer, storage: Path, tmp_path: Path) -> None:
    analysis = tune.run(
        trainables.report_n,
        config={"x": tune.grid_search([1.0, 2.0, 3.0, 4.0]), "n": N_RESULTS},
        name="online",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="online-project")],
        verbose=0,
    )
    assert len(online.runs()) == N_TRIALS
    for trial in analysis.trials:
        (record,) = [r for r in online.runs() if r.run_id.startswith(f"{trial.trial_id}-")]
        assert record.finished and record.exit_code == 0
        assert (record.project, record.group, record.name) == (
            "online-project",
            "online",
            str(trial),
        )
        assert [row["training_iteration"] for row in record.history] == list(
            range(1, N_RESULTS + 1)
        )
        x = trial.config["x"]
        assert [row["loss"] for row in record.history] == [x / (i + 1) for i in range(N_RESULTS)]
        assert record.config["x"] == x and "wandb" not in record.config
        assert record.dropped_rows == 0
        assert record.api_keys == {online.api_key}
    # The run files were written too, inside each trial's directory, and marked
    # uploaded, so `python -m tune_wandb sync` leaves them alone.
    assert len(list(storage.rglob("run-*.wandb"))) == N_TRIALS
    assert len(list(storage.rglob("run-*.wandb.synced"))) == N_TRIALS
    # Online runs leave no `wandb login` behind.
    assert not (tmp_path / "home" / ".netrc").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_a_wrong_key_stops_the_experiment_before_any_run(
    online: WandbServer, storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", make_api_key())
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"refused the API key from WANDB_API_KEY \(HTTP 401"):
        tune.run(
            trainables.report_n,
            config={"x": tune.grid_search([1.0, 2.0]), "n": 3},
            name="wrong_key",
            storage_path=str(storage),
            callbacks=[WandbLoggerCallback(project="p")],
            verbose=0,
        )
    assert time.monotonic() - started < 30
    # Refused once, before any trial: no run at the server, no run file, no
    # wandb-core started for it, nothing written in HOME.
    assert online.runs() == []
    assert not list(storage.rglob("*.wandb"))
    assert [p for p in our_processes() if "wandb-core" in " ".join(p.cmdline())] == []
    assert list((tmp_path / "home").iterdir()) == []


def test_a_key_from_the_entry_is_checked_at_its_first_trial(online: WandbServer) -> None:
    callback = WandbLoggerCallback()
    callback.setup()
    try:
        with pytest.raises(ValueError, match=r"refused the API key from api_key"):
            callback._key_for({"api_key": make_api_key()}, {"mode": "online"})
        assert callback._key_for({"api_key": online.api_key}, {"mode": "online"})
    finally:
        callback.on_experiment_end([])


def test_a_silent_server_delays_the_start_by_the_time_limit_only(
    online: WandbServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    online.hang = True
    callback = WandbLoggerCallback(key_check_timeout=1.0)
    started = time.monotonic()
    try:
        callback.setup()
        assert time.monotonic() - started < 5
    finally:
        online.hang = False
        callback.on_experiment_end([])
    (warning,) = [r.getMessage() for r in caplog.records if "could not check" in r.getMessage()]
    assert "from WANDB_API_KEY with 127.0.0.1 within 1 s" in warning
    assert "going on" in warning


def test_key_check_outcomes(wandb_server: WandbServer) -> None:
    wandb_server.require_key = wandb_server.api_key
    assert check_api_key(wandb_server.api_key, wandb_server.url, 5).status is KeyStatus.ACCEPTED
    refused = check_api_key(make_api_key(), wandb_server.url, 5)
    assert refused.status is KeyStatus.REJECTED and "401" in refused.detail
    wandb_server.refuse = True
    gone = check_api_key(wandb_server.api_key, wandb_server.url, 5)
    assert gone.status is KeyStatus.UNREACHABLE
    assert wandb_server.api_key not in gone.detail
    assert check_api_key("k", "file:///etc/passwd", 1).status is KeyStatus.UNREACHABLE


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_callback_and_mixin_make_one_run_online(online: WandbServer, storage: Path) -> None:
    import tune_wandb

    # The trials' processes were started offline with the session: the entry
    # takes them online, and the driver shares its key with them.
    tune_wandb.share_api_key(api_key=online.api_key)
    analysis = tune.run(
        trainables.WandbCounting,
        config={
            "steps": 4,
            "wandb": {"project": "both", "mode": "online", "settings": {"base_url": online.url}},
        },
        name="both_online",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="both")],
        verbose=0,
    )
    (trial,) = analysis.trials
    # One writer, one run on the server: the Tune results and the trial's own rows.
    (record,) = online.runs()
    assert record.run_id.startswith(f"{trial.trial_id}-")
    assert record.finished and record.exit_code == 0
    tune_rows = [row for row in record.history if "time_this_iter_s" in row]
    assert [row["training_iteration"] for row in tune_rows] == [1, 2, 3, 4]
    assert [row["setup_logged"] for row in record.history if "setup_logged" in row] == [1]
