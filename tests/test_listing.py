"""``tune-wandb ls``: readable at 80 columns, the user's metrics first, whole when piped, JSON."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from offline_runs import Piece, tune_rows, write_offline_runs

from tune_wandb import _listing
from tune_wandb._listing import RunListing
from tune_wandb.sync import LocalRun

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

TRIAL_DIR = "train_linear_1f2e3_{:05d}_{}_batch_size=32,lr={}_2026-01-02_03-04-05"
TUNE_ROW = tune_rows(range(20, 21))[0]


def listing(index: int, **metrics: object) -> RunListing:
    trial_dir = Path("/nonexistent") / TRIAL_DIR.format(index, index, 0.001)
    run = LocalRun(f"1f2e3_{index:05d}-4b6cbc", trial_dir)
    return RunListing(_listing.trial_name(trial_dir.name), run, 20, dict(metrics))


def demo_like(count: int = 3) -> list[RunListing]:
    mine = {"val/loss": 0.0103, "weight_error": 0.0093}
    return [
        listing(i, **{"train/loss": 0.0101 * (i + 1)}, **mine, **TUNE_ROW) for i in range(count)
    ]


def test_trial_names_are_tunes_not_the_directory_names() -> None:
    name = _listing.trial_name(TRIAL_DIR.format(7, 7, 0.03))
    assert name == "train_linear_1f2e3_00007"
    # Searchers other than the grid's draw 8-hex-digit trial ids.
    assert _listing.trial_name("objective_0a1b2c3d_12_x=1_2026-01-02_03-04-05") == (
        "objective_0a1b2c3d"
    )
    assert _listing.trial_name("objective_0a1b2c3d_3_2026-01-02_03-04-05") == "objective_0a1b2c3d"


def test_tune_metrics_match_rays_automatic_result_keys() -> None:
    from ray.tune.result import AUTO_RESULT_KEYS

    # Those tune-wandb never logs or logs into the run config are not metrics.
    not_metrics = {"config", "node_ip", "hostname", "pid", "date", "checkpoint_dir_name"}
    assert set(AUTO_RESULT_KEYS) - not_metrics <= _listing.TUNE_METRICS
    assert set(TUNE_ROW) <= _listing.TUNE_METRICS


def test_at_80_columns_every_line_fits_and_the_users_metrics_lead() -> None:
    text = _listing.table(demo_like(), width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    header = lines[0].split()
    assert header[:6] == ["trial", "run", "id", "rows", "uploaded", "train/loss"]
    assert "training_iteration" not in text and "time_since_restore" not in text
    assert lines[1].split()[:4] == ["train_linear_1f2e3_00000", "1f2e3_00000-4b6cbc", "20", "no"]
    # The columns that do not fit come in a second block, led by the trial.
    second = lines[lines.index("") + 1]
    assert second.split()[0] == "trial" and "weight_error" in second
    assert lines[-1] == "(6 metrics Tune adds to every result not shown: --all shows them.)"


def test_tunes_metrics_on_request_after_the_users() -> None:
    text = _listing.table(demo_like(), width=None, tune_metrics=True)
    header = text.splitlines()[0].split()
    assert header.index("weight_error") < header.index("iterations_since_restore")
    assert "training_iteration" in header


def test_piped_output_is_one_block_and_nothing_is_cut() -> None:
    long_value = "a string much longer than any cell of a terminal's table"
    rows = [listing(0, note=long_value, **{"train/loss": 1.5})]
    assert long_value not in _listing.table(rows, width=80)
    whole = _listing.table(rows, width=None)
    assert long_value in whole
    assert "" not in whole.splitlines() and "--all" not in whole


def test_values_are_short_and_media_named_by_kind() -> None:
    rows = [listing(0, acc=0.123456789, n=3, ok=True, image={"_type": "image-file", "sha": "x"})]
    cells = _listing.table(rows).splitlines()[1].split()
    assert cells[-4:] == ["0.1235", "image-file", "3", "true"]


def test_json_has_every_metric_and_no_invalid_numbers() -> None:
    rows = [listing(0, loss=float("nan"), best=float("-inf"), hist=[1.0, float("inf")], **TUNE_ROW)]
    (run,) = json.loads(_listing.to_json(rows))
    assert run["trial"] == "train_linear_1f2e3_00000"
    assert run["run_id"] == "1f2e3_00000-4b6cbc" and run["rows"] == 20
    assert run["uploaded"] is False
    assert run["metrics"]["loss"] == "NaN" and run["metrics"]["best"] == "-Infinity"
    assert run["metrics"]["hist"] == [1.0, "Infinity"]
    assert run["metrics"]["training_iteration"] == 20


@given(
    names=st.lists(
        st.text("abcdefghij/_", min_size=1, max_size=14), min_size=0, max_size=12, unique=True
    ),
    value=st.floats(allow_nan=True, allow_infinity=True),
    width=st.integers(min_value=20, max_value=240),
    runs=st.integers(min_value=1, max_value=3),
)
def test_blocks_fit_the_width_and_show_every_column_once(
    names: list[str], value: float, width: int, runs: int
) -> None:
    rows = [listing(i, **dict.fromkeys(names, value)) for i in range(runs)]
    text = _listing.table(rows, width=width)
    blocks = [block.splitlines() for block in text.split("\n\n")]
    lead = max(len("trial"), *(len(r.trial) for r in rows))
    widest = max([len("run id") + 12, len("uploaded"), *(len(n) for n in names), 16])
    for block in blocks:
        assert all(len(line) <= max(width, lead + 2 + widest) for line in block)
        assert block[0].split()[0] == "trial"
        assert len(block) == runs + 1
    headers = [h for block in blocks for h in re.split(r"\s{2,}", block[0].strip())]
    assert headers.count("trial") == len(blocks)
    for name in [*names, "run id", "rows", "uploaded"]:
        assert headers.count(name) == 1


# -- the command, as a user runs it ------------------------------------------


def write_experiment(experiment: Path) -> None:
    pieces = []
    for index, lr in enumerate([0.001, 0.01, 0.1]):
        rows = tune_rows(
            range(1, 6),
            **{
                "train/loss": lambda step, lr=lr: lr / step,
                "val/loss": lambda step, lr=lr: 2 * lr / step,
                "weight_error": 0.5,
            },
        )
        trial_dir = experiment / TRIAL_DIR.format(index, index, lr)
        pieces.append(Piece(trial_dir, f"1f2e3_{index:05d}-4b6cbc", rows))
    write_offline_runs(pieces)


def ls_in_terminal(*args: str, cwd: Path, columns: int) -> list[str]:
    """``tune-wandb ls`` with a terminal of ``columns`` columns as its stdout."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tune_wandb", "ls", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
        )
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            output += chunk
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    finally:
        os.close(controller)
    return output.decode().replace("\r\n", "\n").splitlines()


@pytest.mark.slow
def test_ls_in_a_terminal_and_piped(tmp_path: Path) -> None:
    write_experiment(tmp_path / "experiment")

    terminal = ls_in_terminal("experiment", cwd=tmp_path, columns=80)
    assert all(len(line) <= 80 for line in terminal), "\n".join(terminal)
    assert terminal[0].split()[:6] == ["trial", "run", "id", "rows", "uploaded", "train/loss"]
    assert [line.split()[0] for line in terminal[1:4]] == [
        "train_linear_1f2e3_00000",
        "train_linear_1f2e3_00001",
        "train_linear_1f2e3_00002",
    ]
    assert terminal[1].split()[2:5] == ["5", "no", "0.0002"]
    assert "--all shows them" in terminal[-1]

    piped = subprocess.run(
        [sys.executable, "-m", "tune_wandb", "ls", "experiment"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert len(piped) == 4  # one block: the header and a line per run
    assert piped[0].split()[4:] == ["uploaded", "train/loss", "val/loss", "weight_error"]
    assert piped[3].split()[4:] == ["0.02", "0.04", "0.5"]

    every = subprocess.run(
        [sys.executable, "-m", "tune_wandb", "ls", "--all", "--json", "experiment"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    runs = json.loads(every)
    assert [run["trial"] for run in runs] == [line.split()[0] for line in piped[1:]]
    assert list(runs[0]["metrics"])[:3] == ["train/loss", "val/loss", "weight_error"]
    assert runs[0]["metrics"]["training_iteration"] == 5
    assert runs[2]["pieces"][0].startswith(str(tmp_path / "experiment"))
