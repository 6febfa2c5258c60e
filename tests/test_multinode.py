"""Runs of trials on another node reach the experiment's storage (simulated cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_reader import find_runs, run_of_trial
from wandb_server import WandbServer, make_api_key

TESTS = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_runs_of_trials_on_a_second_node_reach_storage(
    tmp_path: Path, wandb_server: WandbServer
) -> None:
    key = make_api_key()
    wandb_server.require_key = key
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]),
        "WANDB_BASE_URL": wandb_server.url,
        "TEST_WANDB_KEY": key,
    }
    subprocess.run(
        [sys.executable, str(TESTS / "multinode_experiment.py"), str(tmp_path)],
        env=env,
        check=True,
        timeout=240,
    )
    facts = json.loads((tmp_path / "facts.json").read_text())
    writes = [json.loads(line) for line in (tmp_path / "writes.jsonl").read_text().splitlines()]
    for name in ("callback", "mixin"):
        runs = find_runs(tmp_path / "bucket" / "experiments" / name)
        assert len(runs) == 2
        for trial_id, trial in facts["trials"][name].items():
            # Every trial ran on the second node.
            assert trial["node"] == facts["second"]
            run = run_of_trial(runs, trial_id)
            (run_id,) = [r for r, data in runs.items() if data is run]
            assert run.exit_code == 0 and run.project == "multinode"
            x = run.config["x"]
            assert run.column("score") == [x * i for i in range(20)]
            run_file = next(
                w
                for w in writes
                if f"/{name}/" in w["path"] and w["path"].endswith(f"run-{run_id}.wandb")
            )
            if name == "callback":
                # The callback's worker, on the driver's node, copied the finished run.
                assert run_file["node"] is None and run_file["pid"] not in (
                    trial["pid"],
                    facts["driver_pid"],
                )
            else:
                # The trial's own process on the second node copied it.
                assert (run_file["node"], run_file["pid"]) == (facts["second"], trial["pid"])
    # Online: the mixin's trials on the second node logged with the key the
    # driver shared, which Ray stored nowhere in the experiment.
    online = facts["trials"]["online"]
    assert len(online) == 2
    for trial_id, trial in online.items():
        assert trial["node"] == facts["second"]
        (record,) = [r for r in wandb_server.runs() if r.run_id.startswith(f"{trial_id}-")]
        assert record.finished and record.exit_code == 0
        x = record.config["x"]
        assert [row["score"] for row in record.history] == [x * i for i in range(20)]
        assert record.api_keys == {key}
    # Marked uploaded, so `python -m tune_wandb sync` leaves them alone.
    assert len(list((tmp_path / "bucket" / "experiments" / "online").rglob("*.wandb.synced"))) == 2
    for path in (tmp_path / "bucket").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
