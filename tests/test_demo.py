"""``tune-wandb demo``: quiet, an experiment of its own each time, commands that work as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from offline_runs import Piece, tune_rows, write_offline_runs

from tune_wandb import demo
from tune_wandb.sync import find_local_runs

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

#: As after the README's set-up: the virtual environment is never activated.
NOT_ACTIVATED = {"PATH": "/usr/bin:/bin"}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AIR_NEW_OUTPUT"}
    return subprocess.run(
        command,
        cwd=cwd,
        env={**env, **NOT_ACTIVATED},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_each_demo_gets_a_new_experiment_even_within_one_second(tmp_path: Path) -> None:
    names = []
    for _ in range(3):
        names.append(demo._new_experiment_name(tmp_path))
        (tmp_path / names[-1]).mkdir()
    assert len(set(names)) == 3
    assert names[1] in (f"{names[0]}-2", names[0].replace(names[0][-6:], names[1][-6:]))


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the demo and four commands, beside other pytest-xdist processes
def test_demo_quiet_its_own_experiment_and_commands_that_work(tmp_path: Path) -> None:
    # An earlier demo's experiment, left in the same directory.
    earlier = tmp_path / "tune-wandb-demo" / "demo"
    write_offline_runs([Piece(earlier / "trial_0", "earlier-run", tune_rows(range(1, 3)))])

    proc = run([sys.executable, "-m", "tune_wandb", "demo", "--epochs", "4"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (experiment,) = [p for p in (tmp_path / "tune-wandb-demo").iterdir() if p != earlier]
    assert len(find_local_runs(experiment)) == 8
    assert [run.run_id for run in find_local_runs(earlier)] == ["earlier-run"]
    # The end table counts this demo's runs, its upload command this experiment.
    assert "tune-wandb: 8 W&B runs" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"tune_wandb sync {experiment}")

    output = proc.stdout + proc.stderr
    # Nothing of Ray's: no log lines, no token notice, no Tune boxes or hints.
    assert not re.search(r"(?m)^\S+ \S+\s+(INFO|WARNING) ", output), output
    for noise in ("Token authentication", "TensorBoard", "Configuration for experiment"):
        assert noise not in output
    # Ours: a line per run as it starts and the end table; the demo's next steps.
    assert len(proc.stderr.splitlines()) == 8 + 12, proc.stderr
    assert proc.stdout.startswith("\nBest trial: lr=")

    # The printed commands work as printed, from a shell where .venv is not active.
    steps = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":  " in line)
    listing = run(["/bin/sh", "-c", steps["List its runs"].strip()], tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert len(listing.stdout.splitlines()) == 9 and "train/loss" in listing.stdout
    browse = steps["Browse them"].split()
    assert browse[-2] == "leet"
    assert len(list((tmp_path / browse[-1]).iterdir())) == 8
    assert run([*browse[:-2], "--version"], tmp_path).returncode == 0
