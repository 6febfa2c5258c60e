"""The package's own run-file check, against files real wandb wrote."""

from __future__ import annotations

import os
from pathlib import Path

from support import make_setup

from tune_wandb import _runfile
from tune_wandb._pool import WorkerPool


def write_run(root: Path, rows: int) -> Path:
    pool = WorkerPool()
    try:
        run = pool.open("a", "trial-a", make_setup(root))
        for i in range(1, rows + 1):
            run.put({"training_iteration": i, "payload": float(i)})
        run.finish(0)
        assert pool.wait([run], timeout=60) == []
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


def test_history_counter_reads_a_growing_file_in_steps(tmp_path: Path) -> None:
    from wandb_reader import read_run_files

    path = write_run(tmp_path, 2000)
    data = path.read_bytes()
    expected = len(read_run_files([path]).history)
    assert expected == 2000
    # The file as wandb-core writes it: appended in arbitrary steps, torn
    # chunks in between; the count never runs ahead and ends exact.
    growing = tmp_path / "growing.wandb"
    counter = _runfile.HistoryCounter(growing)
    assert counter.update() == 0
    counts = []
    for end in [*range(7, len(data), 7919), len(data)]:
        growing.write_bytes(data[:end])
        counts.append(counter.update())
        assert counts[-1] <= len(read_run_files([growing]).history)
    assert counts == sorted(counts)
    assert counts[-1] == expected and counter.exited
    assert _runfile.HistoryCounter(path).update() == expected
