"""Bad input, end to end: real Ray Tune, real wandb (offline), run files read back.

Every kind of value in docs/bad-input.md is reported by one trial beside a
plain metric ``ok``; the test checks that each became what the table says,
that no row lost ``ok``, that nothing raised (the trial and its run ended
normally, the worker was never replaced) and that each value left out was
named, with its trial, in a warning.
"""

from __future__ import annotations

import decimal
import logging
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import trainables
from ray import tune
from wandb_reader import RunData, find_runs

from tune_wandb import WandbLoggerCallback

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session", "no_leftover_processes")]

N = 3


class _Inject(tune.Callback):
    """Adds what a trial cannot report to its results and config, as a user's callback may.

    Ray cannot carry a lock or a generator from a trial (they do not pickle),
    and Tune's own metric analysis fails on a complex or Decimal number a
    trial reports; a callback placed before the logger can still add them.
    :class:`_Remove`, after the logger, takes them out again so that Tune can
    save its own state.
    """

    def __init__(self, file: Any) -> None:
        self.file = file

    def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        trial.config["open_file"] = self.file

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        import wandb

        # A function trainable's run opens at its first result: the config holds it then too.
        trial.config["open_file"] = self.file

        result.update(
            {
                "lock": threading.Lock(),
                "generator": (i for i in range(3)),
                # wandb media that pass the filters but do not pickle.
                "table": wandb.Table(columns=["a"], data=[[threading.Lock()]]),
                ("tuple", "key"): 5,
                "complex": 1 + 2j,
                "decimal": decimal.Decimal("1.25"),
                "surrogate\ud800key": 6,
                # A new dict: the logger copies the result, not the dicts in it.
                "nested": {"lock": threading.Lock(), "ok": 7},
            }
        )


_INJECTED = (
    "nested",
    "lock",
    "generator",
    "table",
    ("tuple", "key"),
    "complex",
    "decimal",
    "surrogate\ud800key",
)


class _Remove(tune.Callback):
    def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        trial.config.pop("open_file", None)

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        trial.config.pop("open_file", None)
        for key in _INJECTED:
            result.pop(key, None)


@pytest.fixture
def tune_loggers_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's own TensorBoard and CSV loggers cannot take these values; only W&B is under test.
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("tune_wandb")
    ]


def _said(messages: list[str], key: str, trial: str) -> bool:
    return any(repr(key) in m and trial in m for m in messages)


def _check_histogram(run: RunData, key: str) -> None:
    for row in run.history:
        assert row[f"{key}/_type"] == "histogram", key
        assert len(row[f"{key}/values"]) == 32


@pytest.mark.usefixtures("tune_loggers_off")
def test_every_kind_of_bad_input(
    storage: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    with (tmp_path / "notes.txt").open("w") as file:
        analysis = tune.run(
            trainables.bad_input,
            config={"n": N, "fn": trainables.report_n, "cls": trainables.Opaque},
            name="bad",
            storage_path=str(storage),
            callbacks=[_Inject(file), WandbLoggerCallback(project="p"), _Remove()],
            verbose=0,
        )
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED" and trial.error_file is None
    (run,) = find_runs(storage / "bad").values()
    # The worker was never replaced (one piece) and finished the run.
    assert len(run.files) == 1 and run.exit_code == 0
    assert len(run.history) == N
    assert run.column("ok") == list(range(N))

    first, last = run.history[0], run.history[-1]
    assert math.isnan(first["nan"]) and first["inf"] == math.inf and first["ninf"] == -math.inf
    assert first["none"] is None and "none" not in run.summary  # None leaves the summary alone
    assert first["text"] == "héllo ☃" and run.summary["text"] == "héllo ☃"
    assert [row["flag"] for row in run.history] == [True, False, True]
    assert last["deep/l2/l3/l4/l5/l6"] == N - 1 and last["deep/l2/l3/l4/l5/s"] == "six deep"
    assert not any(key.startswith("empty") for key in first)
    assert first["list"] == [1, 2.5, None] and first["tuple"] == [3, 4]
    assert first["arr0"] == 2.5
    assert first["arr1"] == [0, 1, 2, 3, 4]
    assert first["arr2"] == [[1, 1, 1], [1, 1, 1]]
    for key in ("arr1_big", "arr6", "f16_big", "bool_big", "nan_big", "chw"):
        _check_histogram(run, key)
    assert sum(first["nan_big/values"]) == 40  # the finite values only
    assert first["image/_type"] == "image-file"
    assert first["complex"] == "1+2j" and first["complex_arr"] == ["1+2j", "3j"]
    assert first["dates"] == ["2024-01-02", "NaT"]
    assert first["str_arr"] == ["a", "b"] and first["obj_arr"] == [1, "a", None]
    assert first["tensor"] == [0.5, 1.5] and first["tensor_scalar"] == 3.0
    assert first["when"] == "2024-01-02T03:04:05"
    assert first["duration"] == 120.0 and first["decimal"] == 1.25
    for key, value in {"key/with/slash": 1, "key.with.dot": 2, "key with space": 3}.items():
        assert first[key] == value
    assert first["ключ ☃"] == 4
    assert first["('tuple', 'key')"] == 5
    assert first["surrogate\ufffdkey"] == 6
    assert first["nested/ok"] == 7
    assert [row["_step"] for row in run.history] == list(range(N))  # wandb's own, not 100
    for key in ("lambda", "opaque", "lock", "generator", "nested/lock", "table"):
        assert not any(k == key or k.startswith(f"{key}/") for k in first), key

    assert run.config["fn"] == "trainables.report_n"
    assert run.config["cls"] == "trainables.Opaque"
    assert run.config["open_file"].startswith("<_io.TextIOWrapper name=")
    assert "notes.txt" in run.config["open_file"]

    messages = _warnings(caplog)
    name = str(trial)
    for key in ("lambda", "opaque", "lock", "generator", "nested/lock"):
        assert _said(messages, key, name), key
        # Once per key per trial, not once per result.
        assert sum(repr(key) in m for m in messages) == 1, key
    for key in ("table", "chw", "nan_big", "_step", "surrogate\ud800key"):
        assert _said(messages, key, name), key
    assert not any("exit code" in m or "could not filter" in m for m in messages)
    assert not any("'empty'" in m or "'none'" in m or "'text'" in m for m in messages)


@pytest.mark.usefixtures("tune_loggers_off")
def test_ten_thousand_keys(storage: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    analysis = tune.run(
        trainables.many_keys,
        config={"n": 2, "keys": 10_000},
        name="wide",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback(project="p")],
        verbose=0,
    )
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED"
    (run,) = find_runs(storage / "wide").values()
    assert len(run.files) == 1 and run.exit_code == 0
    assert run.column("ok") == [0, 1]
    for i, row in enumerate(run.history):
        keys = [k for k in row if k.startswith("k")]
        assert len(keys) == 10_000
        assert row["k09999"] == i + 9999.0
    assert not _warnings(caplog)
