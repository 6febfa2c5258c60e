"""What the worker says about a disk that refuses a run file (``_worker._write_error``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tune_wandb._worker import _write_error

pytestmark = pytest.mark.unit


def _log(run_dir: Path, *entries: object, torn: str = "") -> None:
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    lines = [json.dumps(e) for e in entries]
    (logs / "debug-internal.log").write_text("\n".join(lines) + "\n" + torn)


def test_the_cause_of_wandb_cores_last_write_error(tmp_path: Path) -> None:
    _log(
        tmp_path,
        {"level": "ERROR", "msg": "writer: write /x/run.wandb: no space left on device"},
        {"level": "INFO", "msg": "writer: started"},
        {"level": "ERROR", "msg": "writer: closing: write /x/run.wandb: file too large"},
        torn='{"level": "ERR',
    )
    assert _write_error(str(tmp_path)) == "file too large"


def test_info_lines_about_writing_are_no_cause(tmp_path: Path) -> None:
    _log(
        tmp_path,
        {"level": "INFO", "msg": "handler: write of the run file is slow"},
        {"level": "ERROR", "msg": "sender: upload failed: 503"},
    )
    assert _write_error(str(tmp_path)) == ""


def test_no_log_no_cause(tmp_path: Path) -> None:
    assert _write_error(str(tmp_path)) == ""
