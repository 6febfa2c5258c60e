"""Commands tune-wandb prints work as printed; the end table lists trials in order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tune_wandb import _report

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PRINT_COMMANDS = (
    "from tune_wandb import _commands; "
    "print(_commands.tune_wandb('--help')); print(_commands.wandb('--help'))"
)


@pytest.mark.parametrize("activated", [False, True])
def test_printed_commands_run_this_installation(activated: bool, tmp_path: Path) -> None:
    # As after `python3 -m venv .venv && .venv/bin/python -m pip install .`: the
    # environment's bin directory is on PATH only once it is activated.
    path = os.pathsep.join([str(BIN), "/usr/bin", "/bin"] if activated else ["/usr/bin", "/bin"])
    env = {**os.environ, "PATH": path}
    printed = subprocess.run(
        [sys.executable, "-c", PRINT_COMMANDS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    if activated:
        assert printed == ["tune-wandb --help", "wandb --help"]
    else:
        interpreter = os.path.relpath(sys.executable, ROOT)
        assert printed == [f"{interpreter} -m tune_wandb --help", f"{interpreter} -m wandb --help"]
    for command in printed:
        # Pasted into a shell, as a user would.
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"


def test_an_interpreter_outside_the_directory_is_named_by_its_absolute_path(
    tmp_path: Path,
) -> None:
    printed = subprocess.run(
        [sys.executable, "-c", PRINT_COMMANDS],
        cwd=tmp_path,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert printed[0] == f"{sys.executable} -m tune_wandb --help"


def test_end_table_lists_trials_in_order_not_in_completion_order() -> None:
    finished = [3, 0, 12, 1, 2]
    lines = [
        _report.RunLine(f"train_1f2e3_{i:05d}", f"1f2e3_{i:05d}-4b6cbc", 20, 0, True, True)
        for i in finished
    ] + [_report.RunLine("custom_10", "r10", 1, 0, True, True)]
    lines.append(_report.RunLine("custom_9", "r9", 1, 0, True, True))
    table = _report.summary(lines, "/exp").splitlines()[2:9]
    assert [row.split()[0] for row in table] == [
        "custom_9",
        "custom_10",
        "train_1f2e3_00000",
        "train_1f2e3_00001",
        "train_1f2e3_00002",
        "train_1f2e3_00003",
        "train_1f2e3_00012",
    ]
