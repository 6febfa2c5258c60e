"""The package's own run-file check, against files real wandb wrote."""

from __future__ import annotations

import os
from pathlib import Path

from test_workers import make_setup

from tune_wandb import _runfile
from tune_wandb._pool import WorkerPool
from tune_wandb._protocol import LogRow


def write_run(root: Path, rows: int) -> Path:
    pool = WorkerPool()
    try:
        handle = pool.spawn("a", "trial-a", make_setup(root))
        for i in range(1, rows + 1):
            handle.put(LogRow(i, {"training_iteration": i, "payload": float(i)}))
        handle.finish(0)
        assert pool.wait([handle], timeout=60) == []
    finally:
        pool.close()
    (path,) = root.rglob("run-*.wandb")
    return path


def test_complete_file_ends_with_exit_record(tmp_path: Path) -> None:
    path = write_run(tmp_path, 2000)
    assert os.path.getsize(path) > 3 * 32 * 1024  # several blocks
    record = _runfile.last_record(path)
    assert record is not None and record.WhichOneof("record_type") == "exit"
    assert _runfile.wait_for_exit_record(path, timeout=0.1)


def test_torn_file_is_read_up_to_the_tear(tmp_path: Path) -> None:
    path = write_run(tmp_path, 50)
    data = path.read_bytes()
    torn = tmp_path / "torn.wandb"
    torn.write_bytes(data[: len(data) - 5])
    record = _runfile.last_record(torn)
    assert record is not None and record.WhichOneof("record_type") != "exit"
    assert not _runfile.wait_for_exit_record(torn, timeout=0.2)
    assert _runfile.last_record(tmp_path / "missing.wandb") is None
    (tmp_path / "junk.wandb").write_bytes(b"not a run file")
    assert _runfile.last_record(tmp_path / "junk.wandb") is None
