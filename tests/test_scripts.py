"""User scripts as users write them: no main guard, ``python -c``, their own start method."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import wait_no_processes
from support import ENDLESS
from wandb_reader import find_runs

pytestmark = pytest.mark.slow

# Like most Tune scripts (and the seed's examples): no `if __name__ == "__main__":`.
# Every time this body runs, it appends a line to the marker file; a worker that
# re-ran the user's __main__ (as spawn and forkserver do) would add lines.
UNGUARDED = textwrap.dedent(
    """
    import os
    import sys

    with open(sys.argv[1], "a") as marker:
        marker.write(f"ran in {os.getpid()}\\n")

    import ray
    from ray import tune
    from tune_wandb import WandbLoggerCallback

    def train(config):
        for i in range(config["n"]):
            tune.report({"loss": config["x"] / (i + 1)})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tune.run(
        train,
        config={"x": tune.grid_search([1, 2, 3, 4]), "n": 200},
        name="script",
        storage_path=sys.argv[2],
        callbacks=[WandbLoggerCallback(project="scripts")],
        verbose=0,
    )
    print("SCRIPT-DONE")
    """
)


def run_user_code(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("how", ["file", "dash-c"])
def test_unguarded_script_runs_once(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "marker.txt"
    storage = tmp_path / "storage"
    if how == "file":
        script = tmp_path / "user_script.py"
        script.write_text(UNGUARDED)
        args = [str(script), str(marker), str(storage)]
    else:
        args = ["-c", UNGUARDED, str(marker), str(storage)]
    proc = run_user_code(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SCRIPT-DONE" in proc.stdout
    # The workers' banners are silenced ("wandb: ..."; tune-wandb's own lines stay).
    assert not re.search(r"(?m)^wandb:", proc.stdout + proc.stderr)
    assert len(marker.read_text().splitlines()) == 1
    runs = find_runs(storage / "script")
    assert len(runs) == 4
    # The terminal: a line per run as it starts, where it is; one table at the end.
    for run_id in runs:
        (line,) = [x for x in proc.stderr.splitlines() if f"({run_id})" in x]
        assert line.startswith("tune-wandb: W&B run train_") and "offline-run-" in line
    table = proc.stderr[proc.stderr.index("tune-wandb: 4 W&B runs") :].splitlines()
    assert table[1].split() == ["trial", "run", "id", "rows", "status"]
    assert all(line.split()[2:4] == ["200", "finished,"] for line in table[2:6])
    # The interpreter that ran the script (or its tune-wandb script on PATH).
    programs = ("tune-wandb", f"{sys.executable} -m tune_wandb")
    assert table[7] in [f"  {program} sync {storage / 'script'}" for program in programs]
    for run in runs.values():
        assert run.column("training_iteration") == list(range(1, 201))
        assert run.exit_code == 0
        assert run.project == "scripts"
    assert wait_no_processes() == []


def test_ctrl_c_finishes_every_run_as_interrupted(tmp_path: Path) -> None:
    import json
    import signal
    import time

    storage = tmp_path / "storage"
    script = tmp_path / "endless.py"
    script.write_text(ENDLESS)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(storage)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(storage.glob("ctrlc/*/wandb/offline-run-*"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "RETURNED" in out
    assert not re.search(r"(?m)^wandb:", out + err)  # the workers' wandb banners are silenced
    runs = find_runs(storage / "ctrlc")
    assert len(runs) == 2
    for trial_dir in (storage / "ctrlc").glob("train_*"):
        reported = [
            json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()
        ]
        (run,) = find_runs(trial_dir).values()
        # Every result Tune processed is in the run, and the run says it was interrupted.
        assert run.column("training_iteration") == [r["training_iteration"] for r in reported]
        assert len(reported) > 10
        assert run.exit_code == 130
    # The end table says so too.
    assert err.count("interrupted, saved locally, not uploaded") == 2
    assert wait_no_processes() == []
