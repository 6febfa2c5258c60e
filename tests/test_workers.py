"""The process model on its own: the pool, the launcher and the workers, without Ray."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import wait_no_processes
from support import make_setup, put_rows, running, wait_for
from wandb_reader import find_runs

from tune_wandb._pool import RunState, WorkerPool
from tune_wandb._protocol import EXIT_DRIVER_LOST

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def test_rows_land_and_run_finishes(tmp_path: Path) -> None:
    pool = WorkerPool()
    try:
        run = pool.open("a", "trial-a", make_setup(tmp_path))
        put_rows(run, 1, 301)
        run.finish(0)
        assert pool.wait([run], timeout=60) == []
        assert run.finished is not None and run.finished.rows == 300
        assert run.state is RunState.FINISHED
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == list(range(1, 301))
    assert run.column("metric") == [i * 2.0 for i in range(1, 301)]
    assert run.exit_code == 0
    # The launcher lists the environment once; each run still records it.
    requirements = run.files[0].parent / "files" / "requirements.txt"
    assert "wandb==" in requirements.read_text()
    assert "requirements.txt" in run.saved_files
    assert wait_no_processes() == []


def test_workers_and_launcher_ignore_sigint(tmp_path: Path) -> None:
    pool = WorkerPool()
    try:
        run = pool.open("a", "trial-a", make_setup(tmp_path))
        wait_for(lambda: run.started is not None and run.worker_pid is not None)
        put_rows(run, 1, 11)
        assert pool._launcher is not None
        for pid in (run.worker_pid, pool._launcher.pid):
            os.kill(pid, signal.SIGINT)
        put_rows(run, 11, 21)
        run.finish(0)
        assert pool.wait([run], timeout=60) == []
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == list(range(1, 21))


def test_dead_worker_is_reported_with_exit_code_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tune_wandb")
    pool = WorkerPool()
    try:
        run = pool.open("a", "trial-a", make_setup(tmp_path))
        put_rows(run, 1, 11)
        wait_for(lambda: run.ledger.confirmed_seq == 10)
        first = run.worker_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: run.deaths == 1)
        # The run goes on with a new worker of its own.
        put_rows(run, 11, 21)
        run.finish(0)
        assert pool.wait([run], timeout=60) == []
        assert run.worker_pid not in (None, first)
        assert run.worker_id == "a#2"
    finally:
        pool.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"trial-a (pid {first})" in m and "exit code -9" in m for m in messages), messages
    (data,) = find_runs(tmp_path).values()
    assert len(data.files) == 2
    assert data.column("training_iteration") == list(range(1, 21))
    assert data.exit_code == 0


def test_pool_can_restart_after_close(tmp_path: Path) -> None:
    pool = WorkerPool()
    for n in range(2):
        run = pool.open(f"w{n}", f"trial-{n}", make_setup(tmp_path / str(n), f"run-{n}"))
        put_rows(run, 1, 4)
        run.finish(0)
        assert pool.wait([run], timeout=60) == []
        pool.close()
        assert wait_no_processes() == []
    for n in range(2):
        (run,) = find_runs(tmp_path / str(n)).values()
        assert len(run.history) == 3


DRIVER_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from support import make_setup, put_rows, wait_for
    from tune_wandb._pool import WorkerPool

    pool = WorkerPool()
    run = pool.open("a", "trial-a", make_setup(Path(sys.argv[1])))
    wait_for(lambda: run.started is not None and run.worker_pid is not None)
    put_rows(run, 1, 51)
    time.sleep(1.0)  # the pool thread has written the rows to the socket
    print(run.worker_pid, pool._launcher.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_driver_script(tmp_path: Path, template: str) -> subprocess.CompletedProcess[str]:
    """Run ``template`` as a driver script of its own, its runs under tmp_path/runs."""
    script = tmp_path / "driver.py"
    script.write_text(template.format(tests=str(Path(__file__).parent)))
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_worker_and_launcher_exit_when_driver_dies(tmp_path: Path) -> None:
    proc = run_driver_script(tmp_path, DRIVER_SCRIPT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    worker_pid, launcher_pid = map(int, proc.stdout.split())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(map(running, (worker_pid, launcher_pid))):
        time.sleep(0.1)
    assert not running(worker_pid)
    assert not running(launcher_pid)
    (run,) = find_runs(tmp_path / "runs").values()
    assert run.column("training_iteration") == list(range(1, 51))
    assert run.exit_code == EXIT_DRIVER_LOST


START_METHOD_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from support import make_setup, put_rows
    from tune_wandb._pool import WorkerPool

    pool = WorkerPool()
    run = pool.open("a", "trial-a", make_setup(Path(sys.argv[1])))
    put_rows(run, 1, 3)
    run.finish(0)
    assert pool.wait([run], timeout=60) == []
    pool.close()
    assert multiprocessing.get_start_method(allow_none=True) is None
    multiprocessing.set_start_method("spawn")  # still the user's to choose
    print("OK")
    """
)


def test_user_start_method_stays_free(tmp_path: Path) -> None:
    proc = run_driver_script(tmp_path, START_METHOD_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


def test_wide_rows_span_blocks_of_the_run_file(tmp_path: Path) -> None:
    # A 3,000-key row is ~100 KB: its record spans several 32 KiB blocks
    # (FIRST, MIDDLE..., LAST chunks), which the reader must put back together.
    pool = WorkerPool()
    wide = {f"metric_{k:05d}_with_a_long_name": float(k) for k in range(3000)}
    try:
        run = pool.open("a", "trial-a", make_setup(tmp_path))
        for i in range(1, 4):
            run.put({"training_iteration": i, **wide})
        run.finish(0)
        assert pool.wait([run], timeout=60) == []
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == [1, 2, 3]
    for row in run.history:
        assert all(row[key] == value for key, value in wide.items())


def test_a_burst_larger_than_a_batch_lands_in_order(tmp_path: Path) -> None:
    pool = WorkerPool()
    try:
        run = pool.open("a", "trial-a", make_setup(tmp_path))
        put_rows(run, 1, 3001)  # several batches' worth, queued at once
        run.finish(0)
        assert pool.wait([run], timeout=120) == []
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == list(range(1, 3001))


def test_a_stalled_worker_backlog_is_spooled_and_delivered_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tune_wandb import _pool

    monkeypatch.setattr(_pool, "_BACKLOG_IN_MEMORY", 200)
    pool = WorkerPool()
    try:
        run = pool.open("a", "trial-a", make_setup(tmp_path))
        wait_for(lambda: run.started is not None and run.worker_pid is not None)
        pid = run.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a worker that cannot keep up at all
        try:
            put_rows(run, 1, 20_001)
            ledger = run.ledger
            # The pool thread keeps taking results off the queue (what the
            # socket's buffer does not hold); past the cap they go to disk.
            wait_for(lambda: ledger.spooled > 10_000)
            assert ledger.in_memory <= 2 * 200
        finally:
            os.kill(pid, signal.SIGCONT)
        run.finish(0)
        assert pool.wait([run], timeout=120) == []
        assert ledger.spooled_total > 10_000 and ledger.unsent == 0
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == list(range(1, 20_001))


# -- many runs per worker ------------------------------------------------------------------


def test_runs_share_a_worker_and_each_lands_whole(tmp_path: Path) -> None:
    pool = WorkerPool(runs_per_worker=3)
    try:
        runs = [
            pool.open(f"r{n}", f"trial-{n}", make_setup(tmp_path / str(n), f"run-{n}"))
            for n in range(5)
        ]
        for run in runs:
            put_rows(run, 1, 201)
        wait_for(lambda: all(r.started is not None and r.worker_pid is not None for r in runs))
        # Five runs, workers of three: two processes, the first holding three runs.
        assert len({r.worker_pid for r in runs}) == 2
        assert [r.worker_id for r in runs] == ["shared#1"] * 3 + ["shared#2"] * 2
        for run in runs:
            run.finish(0)
        assert pool.wait(runs, timeout=120) == []
        assert all(r.state is RunState.FINISHED for r in runs)
    finally:
        pool.close()
    for n in range(5):
        (data,) = find_runs(tmp_path / str(n)).values()
        assert data.run_id == f"run-{n}"
        assert data.column("training_iteration") == list(range(1, 201))
        assert data.exit_code == 0
    assert wait_no_processes() == []


def test_placement_policy_isolates_the_first_runs_then_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tune_wandb import _pool

    monkeypatch.setattr(_pool, "DEDICATED_RUNS", 2)
    monkeypatch.setattr(_pool, "RUNS_PER_WORKER", 2)
    pool = WorkerPool()
    try:
        runs = [
            pool.open(f"r{n}", f"trial-{n}", make_setup(tmp_path / str(n), f"run-{n}"))
            for n in range(5)
        ]
        wait_for(lambda: all(r.worker_pid is not None for r in runs), timeout=60)
        # Two live runs get workers of their own; the next share workers of two.
        assert [r.worker_id for r in runs] == ["r0#1", "r1#1", "shared#1", "shared#1", "shared#2"]
        for run in runs:
            put_rows(run, 1, 11)
            run.finish(0)
        assert pool.wait(runs, timeout=120) == []
        # Once they are finished, a new run is alone again: a worker of its own.
        late = pool.open("late", "trial-late", make_setup(tmp_path / "late", "run-late"))
        wait_for(lambda: late.worker_id is not None)
        assert late.worker_id == "late#1"
        late.finish(0)
        assert pool.wait([late], timeout=60) == []
    finally:
        pool.close()
    assert len(find_runs(tmp_path)) == 6


def test_a_killed_shared_worker_hands_every_run_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tune_wandb")
    pool = WorkerPool(runs_per_worker=3)
    try:
        runs = [
            pool.open(f"r{n}", f"trial-{n}", make_setup(tmp_path / str(n), f"run-{n}"))
            for n in range(3)
        ]
        for run in runs:
            put_rows(run, 1, 51)
        wait_for(lambda: all(r.ledger.confirmed_seq == 50 for r in runs), timeout=60)
        (first,) = {r.worker_pid for r in runs}
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: all(r.deaths == 1 for r in runs))
        for run in runs:
            put_rows(run, 51, 101)
            run.finish(0)
        assert pool.wait(runs, timeout=120) == []
        # The three runs went on together in one new worker.
        assert len({r.worker_pid for r in runs} - {first}) == 1
    finally:
        pool.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"(pid {first})" in m and "3 runs" in m and "-9" in m for m in messages), messages
    for n in range(3):
        (data,) = find_runs(tmp_path / str(n)).values()
        assert len(data.files) == 2  # a piece before the kill, one after
        assert data.column("training_iteration") == list(range(1, 101))
        assert data.exit_codes[-1] == 0


def test_a_run_that_cannot_start_in_a_shared_worker_is_isolated_and_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the run's directory should be")
    pool = WorkerPool(runs_per_worker=3)
    try:
        good = [
            pool.open(f"g{n}", f"trial-g{n}", make_setup(tmp_path / f"g{n}", f"run-g{n}"))
            for n in range(2)
        ]
        bad = pool.open("bad", "trial-bad", make_setup(blocked, "run-bad"))
        for run in [*good, bad]:
            put_rows(run, 1, 31)
            run.finish(0)
        assert pool.wait([*good, bad], timeout=120) == []
        assert bad.state is RunState.GIVEN_UP
        # It left the shared worker for workers of its own.
        assert bad.worker_id is not None and bad.worker_id.startswith("bad#")
        assert all(r.state is RunState.FINISHED for r in good)
    finally:
        pool.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not start in a shared worker" in m for m in messages), messages
    for n in range(2):
        (data,) = find_runs(tmp_path / f"g{n}").values()
        assert data.column("training_iteration") == list(range(1, 31))
        assert data.exit_code == 0


def test_runs_per_worker_must_be_a_positive_whole_number() -> None:
    from tune_wandb import WandbLoggerCallback

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="runs_per_worker"):
            WandbLoggerCallback(runs_per_worker=bad)  # type: ignore[arg-type]
    assert WandbLoggerCallback(runs_per_worker=1)._pool.runs_per_worker == 1
