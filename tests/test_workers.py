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

import psutil
import pytest
from conftest import wait_no_processes
from wandb_reader import find_runs

from tune_wandb._pool import WorkerHandle, WorkerPool
from tune_wandb._protocol import EXIT_DRIVER_LOST, LogRow, WorkerSetup
from tune_wandb._settings import QUIET_SETTINGS

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def make_setup(root: Path, run_id: str = "run-a") -> WorkerSetup:
    return WorkerSetup(
        trial_id=run_id,
        trial_name=f"trial-{run_id}",
        init_kwargs={
            "id": run_id,
            "name": f"trial-{run_id}",
            "project": "workers",
            "dir": str(root),
            "mode": "offline",
            "resume": "allow",
            "settings": dict(QUIET_SETTINGS),
        },
        driver_pid=os.getpid(),
        env={"WANDB_MODE": "offline"},
    )


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def put_rows(handle: WorkerHandle, start: int, stop: int) -> None:
    for i in range(start, stop):
        handle.put(LogRow(i, {"training_iteration": i, "metric": i * 2.0}))


def test_rows_land_and_run_finishes(tmp_path: Path) -> None:
    pool = WorkerPool()
    try:
        handle = pool.spawn("a", "trial-a", make_setup(tmp_path))
        put_rows(handle, 1, 301)
        handle.finish(0)
        assert pool.wait([handle], timeout=60) == []
        assert handle.finished is not None and handle.finished.rows == 300
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
        handle = pool.spawn("a", "trial-a", make_setup(tmp_path))
        wait_for(lambda: handle.started is not None and handle.pid is not None)
        put_rows(handle, 1, 11)
        assert pool._launcher is not None
        for pid in (handle.pid, pool._launcher.pid):
            os.kill(pid, signal.SIGINT)
        put_rows(handle, 11, 21)
        handle.finish(0)
        assert pool.wait([handle], timeout=60) == []
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == list(range(1, 21))


def test_dead_worker_is_reported_with_exit_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tune_wandb")
    pool = WorkerPool()
    try:
        handle = pool.spawn("a", "trial-a", make_setup(tmp_path))
        wait_for(lambda: handle.started is not None and handle.pid is not None)
        assert handle.pid is not None
        os.kill(handle.pid, signal.SIGKILL)
        wait_for(handle.exited.is_set)
        assert handle.exitcode == -signal.SIGKILL
        # The driver-side handle stays usable: putting to a dead worker never raises.
        put_rows(handle, 1, 5)
    finally:
        pool.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("trial-a" in m and "exit code -9" in m for m in messages), messages


def test_pool_can_restart_after_close(tmp_path: Path) -> None:
    pool = WorkerPool()
    for n in range(2):
        handle = pool.spawn(f"w{n}", f"trial-{n}", make_setup(tmp_path / str(n), f"run-{n}"))
        put_rows(handle, 1, 4)
        handle.finish(0)
        assert pool.wait([handle], timeout=60) == []
        pool.close()
        assert wait_no_processes() == []
    for n in range(2):
        (run,) = find_runs(tmp_path / str(n)).values()
        assert len(run.history) == 3


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for init to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


DRIVER_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_workers import make_setup, put_rows, wait_for
    from tune_wandb._pool import WorkerPool

    pool = WorkerPool()
    handle = pool.spawn("a", "trial-a", make_setup(Path(sys.argv[1])))
    wait_for(lambda: handle.started is not None and handle.pid is not None)
    put_rows(handle, 1, 51)
    time.sleep(1.0)  # the sender thread has flushed the rows to the socket
    print(handle.pid, pool._launcher.pid, flush=True)
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
    from test_workers import make_setup, put_rows
    from tune_wandb._pool import WorkerPool

    pool = WorkerPool()
    handle = pool.spawn("a", "trial-a", make_setup(Path(sys.argv[1])))
    put_rows(handle, 1, 3)
    handle.finish(0)
    assert pool.wait([handle], timeout=60) == []
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
        handle = pool.spawn("a", "trial-a", make_setup(tmp_path))
        for i in range(1, 4):
            handle.put(LogRow(i, {"training_iteration": i, **wide}))
        handle.finish(0)
        assert pool.wait([handle], timeout=60) == []
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == [1, 2, 3]
    for row in run.history:
        assert all(row[key] == value for key, value in wide.items())


def test_a_burst_larger_than_a_batch_lands_in_order(tmp_path: Path) -> None:
    pool = WorkerPool()
    try:
        handle = pool.spawn("a", "trial-a", make_setup(tmp_path))
        put_rows(handle, 1, 3001)  # several batches' worth, queued at once
        handle.finish(0)
        assert pool.wait([handle], timeout=120) == []
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
        handle = pool.spawn("a", "trial-a", make_setup(tmp_path))
        wait_for(lambda: handle.started is not None and handle.pid is not None)
        os.kill(handle.pid, signal.SIGSTOP)  # a worker that cannot keep up at all
        try:
            put_rows(handle, 1, 20_001)
            backlog = handle.sender.backlog
            # The sender keeps taking results off the queue (what the socket's
            # buffer does not hold); past the cap they go to disk.
            wait_for(lambda: backlog.spooled > 10_000)
            assert backlog.in_memory <= 2 * 200
        finally:
            os.kill(handle.pid, signal.SIGCONT)
        handle.finish(0)
        assert pool.wait([handle], timeout=120) == []
        assert backlog.spooled_total > 10_000 and len(backlog) == 0
    finally:
        pool.close()
    (run,) = find_runs(tmp_path).values()
    assert run.column("training_iteration") == list(range(1, 20_001))
