"""``python -m tune_wandb ls`` and ``sync``, against the W&B test server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from offline_runs import Piece, tune_rows, write_offline_runs
from wandb_server import WandbServer, make_api_key

from tune_wandb import sync

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tune_wandb", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def tune_wandb_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = run_cli(*args, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def write_two_runs(experiment: Path) -> None:
    write_offline_runs(
        [
            Piece(experiment / "trial_a", "run-a", tune_rows(range(1, 3), loss=0.5)),
            Piece(experiment / "trial_b", "run-b", tune_rows(range(1, 3), loss=0.25)),
        ]
    )


def online_env(server: WandbServer, tmp_path: Path) -> dict[str, str]:
    return {**server.env(), "WANDB_CONFIG_DIR": str(tmp_path / "config")}


@pytest.mark.slow
def test_ls_and_sync_take_a_path_relative_to_the_working_directory(
    tmp_path: Path, wandb_server: WandbServer
) -> None:
    rows = tune_rows(range(1, 4), loss=lambda step: 1 / step)
    write_offline_runs([Piece(tmp_path / "experiment" / "trial_a", "run-a", rows)])

    assert "trial_a" in tune_wandb_cli("ls", "experiment", cwd=tmp_path)
    report = tune_wandb_cli(
        "sync", "experiment", cwd=tmp_path, env=online_env(wandb_server, tmp_path)
    )
    assert "Uploaded 1 run(s), 0 failed" in report
    assert [row["loss"] for row in wandb_server.run("run-a").history] == [1, 0.5, 1 / 3]


@pytest.mark.slow
def test_ls_and_sync_upload_each_run_once_pieces_in_order(
    tmp_path: Path, wandb_server: WandbServer
) -> None:
    experiment = tmp_path / "experiment"
    # Trial a's run was resumed (two pieces); trial b's has one.
    write_offline_runs(
        [
            Piece(experiment / "trial_a", "run-a", tune_rows(range(1, 6), loss=lambda i: 1 / i)),
            Piece(
                experiment / "trial_a",
                "run-a",
                tune_rows(range(6, 11), loss=lambda i: 1 / i),
                suffix="part2",
            ),
            Piece(experiment / "trial_b", "run-b", tune_rows(range(1, 4), loss=lambda i: 1 / i)),
        ]
    )

    lines = tune_wandb_cli("ls", str(experiment), cwd=tmp_path).splitlines()
    assert lines[0].split() == ["trial", "run", "id", "rows", "uploaded", "loss"]
    assert lines[1].split() == ["trial_a", "run-a", "10", "no", "0.1"]
    assert lines[2].split() == ["trial_b", "run-b", "3", "no", "0.3333"]

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
    assert tune_wandb_cli("ls", str(experiment), cwd=tmp_path).splitlines()[1].split()[3] == "yes"
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


def test_usage_names_the_program_as_it_was_run_and_help_is_plain_text(tmp_path: Path) -> None:
    script = str(Path(sys.executable).parent / "tune-wandb")
    module = [sys.executable, "-m", "tune_wandb"]
    for command, program in [([script], "tune-wandb"), (module, "python -m tune_wandb")]:
        usage = subprocess.run(
            [*command, "demo", "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert usage.startswith(f"usage: {program} demo ")
        # Plain text: no reST markup; every option says what it does.
        assert "``" not in usage
        assert "--epochs EPOCHS  epochs each trial trains for" in usage
        top = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True)
        assert top.stdout.startswith(f"usage: {program} ")


def test_version_names_the_versions_that_matter_in_a_bug_report(tmp_path: Path) -> None:
    from importlib.metadata import version

    printed = tune_wandb_cli("--version", cwd=tmp_path).strip()
    assert printed == (
        f"tune-wandb {version('tune-wandb')} (Ray {version('ray')}, wandb {version('wandb')})"
    )


@pytest.mark.parametrize("timeout", ["0", "-5", "soon", "inf", "nan"])
def test_sync_timeout_must_be_seconds_above_zero(timeout: str, tmp_path: Path) -> None:
    proc = run_cli("sync", "--timeout", timeout, str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"--timeout: must be a number of seconds above 0, not {timeout!r}" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["no key", "refused key", "no server"])
def test_sync_checks_key_and_server_once_before_any_upload(
    problem: str, tmp_path: Path, wandb_server: WandbServer
) -> None:
    write_two_runs(tmp_path / "experiment")
    # HOME: no ~/.netrc of `wandb login` to fall back on.
    env = {**online_env(wandb_server, tmp_path), "HOME": str(tmp_path / "home")}
    if problem == "no key":
        env.pop("WANDB_API_KEY")
        expected = "No W&B API key: run `wandb login` (or set WANDB_API_KEY)"
    elif problem == "refused key":
        wandb_server.require_key = wandb_server.api_key
        env["WANDB_API_KEY"] = make_api_key()
        expected = "W&B at 127.0.0.1 refused the API key from WANDB_API_KEY (HTTP 401"
    else:
        wandb_server.refuse = True
        expected = "Could not reach W&B at 127.0.0.1 within 10 s"

    proc = run_cli("sync", "experiment", cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert proc.stdout.count(expected) == 1, proc.stdout + proc.stderr
    assert "then run this command again. Nothing was uploaded." in proc.stdout
    assert "[1/2]" not in proc.stdout  # no run was tried
    wandb_server.refuse = False
    assert wandb_server.runs() == []


@pytest.mark.slow
def test_sync_stops_a_run_that_does_not_upload_in_time_and_tries_the_next(
    tmp_path: Path, wandb_server: WandbServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = tmp_path / "experiment"
    write_two_runs(experiment)
    for name, value in online_env(wandb_server, tmp_path).items():
        monkeypatch.setenv(name, value)
    wandb_server.hang = True

    out = io.StringIO()
    assert sync.sync(experiment, out=out, key_check_timeout=1) == 2
    assert "Could not reach W&B at 127.0.0.1 within 1 s (timed out)" in out.getvalue()

    out = io.StringIO()
    assert sync.sync(experiment, out=out, timeout=3, key_check_timeout=0) == 2
    report = out.getvalue()
    assert "[1/2] trial_a (run run-a, 1 piece): FAILED (not uploaded within 3 s, stopped)" in report
    assert "[2/2] trial_b (run run-b, 1 piece): FAILED (not uploaded within 3 s, stopped)" in report
    assert "Uploaded 0 run(s), 2 failed, 0 skipped." in report
    assert "Upload the failed run(s) with the same command, " in report
    assert "Give each run more time with --timeout SECONDS." in report

    # The advice holds: once W&B answers, the same call uploads both.
    wandb_server.hang = False
    out = io.StringIO()
    assert sync.sync(experiment, out=out) == 0, out.getvalue()
    assert all(run.uploaded for run in sync.find_local_runs(experiment))


def test_sync_names_trials_as_tune_does(tmp_path: Path) -> None:
    trial_dir = tmp_path / "train_linear_1f2e3_00000_0_batch_size=32,lr=0.0010_2026-01-02_03-04-05"
    piece = trial_dir / "wandb" / "offline-run-20260102_030405-1f2e3_00000-4b6cbc"
    piece.mkdir(parents=True)
    (piece / "run-1f2e3_00000-4b6cbc.wandb").touch()
    tried: list[list[str]] = []

    out = io.StringIO()
    failed = sync.sync(
        tmp_path, out=out, run_command=lambda p: tried.append(p) or 1, key_check_timeout=0
    )
    assert failed == 1
    assert tried == [[str(piece)]]
    prefix = "[1/1] train_linear_1f2e3_00000 (run 1f2e3_00000-4b6cbc, 1 piece)"
    assert f"{prefix}: FAILED (wandb sync exit code 1)" in out.getvalue().splitlines()
