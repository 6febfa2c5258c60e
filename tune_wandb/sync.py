"""The W&B runs of a Tune experiment on disk: list them, upload what is not uploaded.

``python -m tune_wandb ls EXPERIMENT_DIR`` prints a table of the runs found
under a Tune experiment directory (each trial's ``wandb/`` directory);
``python -m tune_wandb sync EXPERIMENT_DIR`` uploads every run that is not
uploaded yet through wandb's own ``wandb sync``, the pieces of a resumed run
together and in order, and says what it did. A run counts as uploaded when
wandb marked each of its pieces synced (a ``run-<id>.wandb.synced`` file, which
``wandb sync`` writes, and tune-wandb's workers write after an online run
finished uploading).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tune_wandb import _runfile

#: A run directory's name: ``[offline-]run-<time>-<id>[-partN]``.
_RUN_DIR = re.compile(r"(?P<offline>offline-)?run-(?P<time>\d{8}_\d{6})-(?P<rest>.+)")
_PART = re.compile(r"-part(\d+)$")


@dataclass
class LocalRun:
    """One W&B run of an experiment, as it is on disk (all its pieces).

    Attributes:
        run_id: the W&B run id.
        trial_dir: the trial directory the run is in.
        pieces: the run directories, in the order they were written (a trial
            retried, restored or given a new worker resumes its run in a new
            piece).
        offline: whether any piece was written offline.
    """

    run_id: str
    trial_dir: Path
    pieces: list[Path] = field(default_factory=list)
    offline: bool = False

    @property
    def run_files(self) -> list[Path]:
        """The ``run-<id>.wandb`` file of each piece."""
        return [piece / f"run-{self.run_id}.wandb" for piece in self.pieces]

    @property
    def uploaded(self) -> bool:
        """Whether every piece is marked synced."""
        return all(Path(f"{f}.synced").exists() for f in self.run_files)

    def history(self) -> tuple[int, dict[str, Any]]:
        """``(rows, last value of each metric)``, read from the run files."""
        from wandb.proto import wandb_internal_pb2

        rows = 0
        last: dict[str, Any] = {}
        for path in self.run_files:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            for payload in _runfile.iter_payloads(data):
                if _runfile.record_type_field(payload) != 2:
                    continue
                record = wandb_internal_pb2.Record()
                record.ParseFromString(payload)
                rows += 1
                for item in record.history.item:
                    key = "/".join(item.nested_key) if item.nested_key else item.key
                    if key.startswith("_"):
                        continue
                    try:
                        last[key] = json.loads(item.value_json)
                    except ValueError:
                        last[key] = item.value_json
        return rows, last


def find_local_runs(experiment_dir: str | Path) -> list[LocalRun]:
    """Every W&B run under a Tune experiment directory, its pieces in order.

    Example:
        >>> find_local_runs("/nonexistent")
        []
    """
    runs: dict[str, LocalRun] = {}
    root = Path(experiment_dir)
    for run_file in sorted(root.rglob("run-*.wandb")):
        piece = run_file.parent
        match = _RUN_DIR.fullmatch(piece.name)
        if match is None or piece.is_symlink():
            continue  # e.g. wandb's latest-run link, or a copy of it
        run_id = run_file.stem[len("run-") :]
        run = runs.setdefault(run_id, LocalRun(run_id, piece.parent.parent))
        run.pieces.append(piece)
        run.offline = run.offline or bool(match.group("offline"))
    for run in runs.values():
        run.pieces.sort(key=_piece_order)
    return sorted(runs.values(), key=lambda r: (str(r.trial_dir), r.run_id))


def _piece_order(piece: Path) -> tuple[int, str]:
    part = _PART.search(piece.name)
    return (int(part.group(1)) if part else 1, piece.name)


def format_table(runs: Iterable[LocalRun], width: int = 120) -> str:
    """The ``ls`` table: trial, run id, rows, uploaded, last value of each metric."""
    header = ("trial", "run id", "rows", "uploaded", "last values")
    lines = []
    for run in runs:
        rows, last = run.history()
        values = ", ".join(f"{k}={_short(v)}" for k, v in sorted(last.items()))
        uploaded = "yes" if run.uploaded else ("no (offline)" if run.offline else "no")
        lines.append((run.trial_dir.name, run.run_id, str(rows), uploaded, values))
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header[:4])]
    out = []
    for line in [header, *lines]:
        fixed = "  ".join(cell.ljust(w) for cell, w in zip(line[:4], widths, strict=True))
        room = max(10, width - len(fixed) - 2)
        tail = line[4] if len(line[4]) <= room else line[4][: room - 3] + "..."
        out.append(f"{fixed}  {tail}".rstrip())
    return "\n".join(out)


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:21] + "..."


def sync(
    experiment_dir: str | Path,
    out: TextIO | None = None,
    run_command: Callable[[list[str]], int] | None = None,
) -> int:
    """Upload every run under ``experiment_dir`` that is not uploaded yet.

    Each run's pieces go to one ``wandb sync`` call, which uploads them in
    the order they were written; runs already uploaded are skipped. Prints one
    line per run as it goes. Returns how many runs failed to upload.
    """
    out = out or sys.stdout
    run_command = run_command or wandb_sync
    runs = find_local_runs(experiment_dir)
    todo = [r for r in runs if not r.uploaded]
    skipped = len(runs) - len(todo)
    print(
        f"{len(runs)} W&B run(s) under {experiment_dir}: {len(todo)} to upload, "
        f"{skipped} already uploaded.",
        file=out,
    )
    failed = 0
    for number, run in enumerate(todo, 1):
        pieces = f"{len(run.pieces)} pieces" if len(run.pieces) > 1 else "1 piece"
        prefix = f"[{number}/{len(todo)}] {run.trial_dir.name} (run {run.run_id}, {pieces})"
        print(f"{prefix}: uploading...", file=out, flush=True)
        code = run_command([str(p) for p in run.pieces])
        if code == 0 and run.uploaded:
            print(f"{prefix}: uploaded", file=out, flush=True)
        else:
            failed += 1
            print(f"{prefix}: FAILED (wandb sync exit code {code})", file=out, flush=True)
    done = len(todo) - failed
    print(f"Uploaded {done} run(s), {failed} failed, {skipped} skipped.", file=out)
    return failed


def wandb_sync(
    pieces: list[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> int:
    """``wandb sync`` of one run's pieces, in a process of its own; its exit code.

    ``env`` replaces this process's environment for it; past ``timeout``
    seconds it is killed and the result is 1. Also used by a worker that
    uploads the piece its dead predecessor left.

    Example:
        >>> wandb_sync(["/nonexistent/run-dir"], timeout=60)  # doctest: +SKIP
        0
    """
    # Absolute: wandb's CLI runs in a directory of its own (below).
    paths = [os.path.abspath(piece) for piece in pieces]
    command = [sys.executable, "-m", "wandb", "sync", "--include-online", *paths]
    env = dict(os.environ if env is None else env)
    env.setdefault("WANDB_SILENT", "false")
    # wandb's CLI writes its debug logs into ./wandb/: not into the user's directory.
    with tempfile.TemporaryDirectory(prefix="tune-wandb-sync-") as cwd:
        try:
            return subprocess.run(
                command, env=env, cwd=cwd, check=False, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return 1
