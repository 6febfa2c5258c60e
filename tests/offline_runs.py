"""Offline W&B runs written by wandb itself, laid out as tune-wandb lays them out.

The runs of an experiment are ``<experiment>/<trial dir>/wandb/offline-run-*``;
a resumed run has more pieces, the later ones with a ``-partN`` suffix. They
are written by real wandb in one process of their own (one wandb-core for all),
independently of tune-wandb's workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_WRITER = """
import json, sys
import wandb

for spec in json.loads(sys.argv[1]):
    settings = wandb.Settings(
        silent=True,
        console="off",
        x_disable_stats=True,
        x_disable_meta=True,
        x_save_requirements=False,
        x_sync_dir_suffix=spec["suffix"],
    )
    run = wandb.init(
        id=spec["run_id"],
        name=spec["name"],
        project="offline-runs",
        dir=spec["trial_dir"],
        mode="offline",
        resume="allow",
        config=spec["config"],
        settings=settings,
    )
    for row in spec["rows"]:
        run.log(row)
    run.finish()
wandb.teardown()
"""


@dataclass
class Piece:
    """One piece of an offline run: its rows, logged in order."""

    trial_dir: Path
    run_id: str
    rows: list[dict[str, Any]]
    name: str | None = None
    #: ``part2`` and on for the pieces of a resumed run.
    suffix: str = ""
    config: dict[str, Any] = field(default_factory=dict)


def tune_rows(steps: range, **metrics: Any) -> list[dict[str, Any]]:
    """Rows as Tune reports them: the user's metrics (a function of the step) and Tune's own."""
    rows = []
    for step in steps:
        row: dict[str, Any] = {}
        for key, value in metrics.items():
            row[key] = value(step) if callable(value) else value
        row.update(
            training_iteration=step,
            time_this_iter_s=0.01,
            time_total_s=0.01 * step,
            iterations_since_restore=step,
            time_since_restore=0.01 * step,
            timestamp=1_700_000_000 + step,
        )
        rows.append(row)
    return rows


def write_offline_runs(pieces: list[Piece]) -> None:
    """Write ``pieces`` in order, each as its own offline run directory."""
    specs = []
    for piece in pieces:
        spec = asdict(piece)
        spec["trial_dir"] = str(piece.trial_dir)
        spec["name"] = piece.name or piece.trial_dir.name
        specs.append(spec)
        piece.trial_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, json.dumps(specs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
