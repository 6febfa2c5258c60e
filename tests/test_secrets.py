"""The API key goes nowhere but to W&B: not on a command line, in a file, a config or a log."""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path

import psutil
import pytest
import trainables
from ray import tune
from wandb_reader import find_runs
from wandb_server import WandbServer, make_api_key

from tune_wandb import WandbLoggerCallback


def _watch_command_lines(key: str, stop: threading.Event, seen: list[str]) -> None:
    """Every 50 ms, every process's command line, until ``stop``."""
    while not stop.is_set():
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or ())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if key in cmdline:
                seen.append(cmdline)
        stop.wait(0.05)


def _files_holding(key: str, *roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                if path.is_file() and key.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
@pytest.mark.parametrize("given_as", ["key_file", "environment", "argument"])
def test_the_key_leaks_nowhere(
    given_as: str,
    wandb_server: WandbServer,
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import ray

    key = make_api_key()
    wandb_server.require_key = key
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server.url)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "user-key-file"
    kwargs: dict[str, str] = {}
    if given_as == "key_file":
        key_file.write_text(key + "\n")
        kwargs["api_key_file"] = str(key_file)
    elif given_as == "environment":
        monkeypatch.setenv("WANDB_API_KEY", key)
    else:
        kwargs["api_key"] = key
    callback = WandbLoggerCallback(project="secrets", upload_checkpoints=True, **kwargs)

    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_watch_command_lines, args=(key, stop, seen))
    watcher.start()
    try:
        tune.run(
            trainables.checkpointed,
            config={"n": 4, "every": 2},
            name="secrets",
            storage_path=str(storage),
            callbacks=[callback],
            verbose=0,
        )
    finally:
        stop.set()
        watcher.join()

    # It did reach W&B, with every request.
    (record,) = wandb_server.runs()
    assert record.finished and record.api_keys == {key}
    assert len(record.history) == 4
    # Not on any process's command line while the experiment ran.
    assert seen == []
    # In no file under the experiment, the W&B directories, HOME or Ray's logs.
    session_logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    wandb_dirs = [Path(p) for p in (tmp_path.parent,) if p.exists()]
    leaks = _files_holding(key, storage, home, session_logs, *wandb_dirs)
    assert [p for p in leaks if p != key_file] == []
    # Not in the logged config, in the run file or at the server.
    (run,) = find_runs(storage / "secrets").values()
    assert key not in repr(run.config) and key not in repr(record.config)
    # Not in the callback's pickled state (Tune saves it with the experiment).
    assert key.encode() not in pickle.dumps(callback)
    # Not in any log record or anything printed.
    captured = capfd.readouterr()
    assert key not in captured.out and key not in captured.err
    assert all(key not in record.getMessage() for record in caplog.records)


def test_wandb_debug_is_warned_of_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    monkeypatch.setenv("WANDB_DEBUG", "true")
    for _ in range(2):
        callback = WandbLoggerCallback(mode="offline")
        callback.setup()
        callback.on_experiment_end([])
    warnings = [r.getMessage() for r in caplog.records if "WANDB_DEBUG" in r.getMessage()]
    assert len(warnings) == 1
    assert "writes the API key into each run's debug-internal.log" in warnings[0]
