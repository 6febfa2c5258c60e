"""``python -m tune_wandb ls`` and ``sync``, against the W&B test server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from offline_runs import Piece, tune_rows, write_offline_runs
from test_workers import make_setup
from wandb_server import WandbServer

from tune_wandb._pool import WorkerPool
from tune_wandb._protocol import LogRow

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def write_piece(trial_dir: Path, run_id: str, rows: range) -> None:
    """One piece of an offline run, as a worker writes it (a second one resumes)."""
    pool = WorkerPool()
    try:
        handle = pool.spawn(run_id, run_id, make_setup(trial_dir, run_id))
        for i in rows:
            handle.put(LogRow(i, {"training_iteration": i, "loss": 1 / i}))
        handle.finish(0)
        assert pool.wait([handle], timeout=60) == []
    finally:
        pool.close()


def tune_wandb_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tune_wandb", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def online_env(server: WandbServer, tmp_path: Path) -> dict[str, str]:
    return {**server.env(), "WANDB_CONFIG_DIR": str(tmp_path / "config")}


@pytest.mark.slow
def test_ls_and_sync_take_a_path_relative_to_the_working_directory(
    tmp_path: Path, wandb_server: WandbServer
) -> None:
    rows = tune_rows(range(1, 4), loss=lambda step: 1 / step)
    write_offline_runs([Piece(tmp_path / "experiment" / "trial_a", "run-a", rows)])

    assert "trial_a" in tune_wandb_cli("ls", "experiment", cwd=tmp_path)
    report = tune_wandb_cli("sync", "experiment", cwd=tmp_path, env=online_env(wandb_server, tmp_path))
    assert "Uploaded 1 run(s), 0 failed" in report
    assert [row["loss"] for row in wandb_server.run("run-a").history] == [1, 0.5, 1 / 3]


@pytest.mark.slow
def test_ls_and_sync_upload_each_run_once_pieces_in_order(
    tmp_path: Path, wandb_server: WandbServer
) -> None:
    experiment = tmp_path / "experiment"
    # Trial a's run was resumed (two pieces); trial b's has one.
    write_piece(experiment / "trial_a", "run-a", range(1, 6))
    write_piece(experiment / "trial_a", "run-a", range(6, 11))
    write_piece(experiment / "trial_b", "run-b", range(1, 4))

    listing = tune_wandb_cli("ls", str(experiment), cwd=tmp_path, env={"COLUMNS": "200"})
    lines = listing.splitlines()
    assert lines[0].split()[:4] == ["trial", "run", "id", "rows"]
    row_a = next(line for line in lines if line.startswith("trial_a"))
    assert row_a.split()[:5] == ["trial_a", "run-a", "10", "no", "(offline)"]
    assert "loss=0.1" in row_a and "training_iteration=10" in row_a
    assert next(line for line in lines if line.startswith("trial_b")).split()[2] == "3"

    online = {**wandb_server.env(), "WANDB_CONFIG_DIR": str(tmp_path / "config")}
    report = tune_wandb_cli("sync", str(experiment), cwd=tmp_path, env=online)
    assert "2 W&B run(s)" in report and "2 to upload" in report
    assert "[1/2] trial_a (run run-a, 2 pieces): uploaded" in report
    assert "Uploaded 2 run(s), 0 failed, 0 skipped." in report
    a = wandb_server.run("run-a")
    # The pieces went up in order, as one run whose steps go on.
    assert [row["training_iteration"] for row in a.history] == list(range(1, 11))
    assert a.dropped_rows == 0
    assert [row["training_iteration"] for row in wandb_server.run("run-b").history] == [1, 2, 3]

    again = tune_wandb_cli("sync", str(experiment), cwd=tmp_path, env=online)
    assert "0 to upload, 2 already uploaded" in again
    assert len(wandb_server.run("run-a").history) == 10
    assert "yes" in tune_wandb_cli("ls", str(experiment), cwd=tmp_path).splitlines()[1].split()
    # Nothing of wandb's (its CLI's ./wandb/ logs) in the user's directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment"]


def test_console_script_and_usage_errors(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "tune-wandb"
    assert script.exists(), "the tune-wandb console script is installed with the package"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "sync" in proc.stdout and "ls" in proc.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "tune_wandb", "ls", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    assert "No W&B runs" in tune_wandb_cli("ls", str(tmp_path), cwd=tmp_path)
