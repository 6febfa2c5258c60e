"""The fault matrix: each fault, in each process we start, at each stage of a run.

As loky's crash tests do, one table of cases (:data:`CASES`) drives one
harness. Each case names the process hit (a worker, its wandb-core, the
launcher, the disk), what is done to it (SIGKILL, SIGSTOP, a file size
limit, a read-only directory) and when (before its run starts, during
``wandb.init``, right after a replacement was handed its rows, mid-run,
after the end marker while finishing, while copying the run to non-local
storage), and the modes it runs in: offline or online (the W&B test
server), a wandb-core per worker or one shared, the trial in a worker of its
own or in a multiplexed worker with two other trials (``runs_per_worker=3``:
a fault there hits all three, and every one must come through). The harness
drives the real
callback with a simulated trial (no Ray actors), so that each fault lands
at its stage, then checks:

- what landed: every row of every trial, at most one twice per death (the
  disk cases: the rows the disk took, the rest said, the run ended with
  exit code 1);
- the run's exit code, in its files and at the server;
- how long ``on_experiment_end`` took after the fault (never the whole
  ``upload_timeout`` because of a death);
- no process left (the ``no_leftover_processes`` fixture).

docs/faults.md has a row per case. A chaos test ends the module: random
logging processes killed every 1.5 s while four trials report.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from slowfs import slow_filesystem
from support import FakeTrial, go_online, report, wait_for
from wandb_reader import RunData, find_runs
from wandb_server import WandbServer

from tune_wandb import WandbLoggerCallback
from tune_wandb._pool import Run, RunState

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_processes")]

#: Rows each trial reports, and the pause between two.
ROWS = 120
PAUSE = 0.02
#: upload_timeout: long, so that waiting for it would show.
UPLOAD_TIMEOUT = 120


@dataclass(frozen=True)
class Case:
    """One fault: which process, what is done to it, when, and in which modes.

    ``within`` bounds the seconds from the fault until ``on_experiment_end``
    returns; ``disk`` cases expect rows missing, said, and exit code 1.
    """

    target: str
    action: str
    stage: str
    modes: tuple[str, ...] = ("offline",)
    services: tuple[str, ...] = ("own",)
    workers: tuple[str, ...] = ("own",)
    within: float = 30.0
    disk: bool = False

    @property
    def name(self) -> str:
        return f"{self.target}-{self.action}-{self.stage}"


BOTH_MODES = ("offline", "online")
BOTH_SERVICES = ("own", "shared")
#: The trial in a worker of its own, and in a multiplexed worker with two others.
BOTH_WORKERS = ("own", "multiplexed")

#: The matrix. Shared-service cases are those where sharing changes what
#: happens (a wandb-core's death, a dead worker's open stream, the launcher's).
CASES = [
    Case("worker", "kill", "before-start", BOTH_MODES),
    Case("worker", "kill", "during-init", BOTH_MODES),
    Case("worker", "kill", "after-resend", BOTH_MODES, BOTH_SERVICES, BOTH_WORKERS),
    Case("worker", "kill", "mid-run", BOTH_MODES, BOTH_SERVICES, BOTH_WORKERS),
    Case("worker", "kill", "after-end", BOTH_MODES, BOTH_SERVICES, BOTH_WORKERS),
    Case("worker", "kill", "copying"),
    Case("core", "kill", "during-init", BOTH_MODES),
    Case("core", "kill", "after-resend", BOTH_MODES, workers=BOTH_WORKERS),
    Case("core", "kill", "mid-run", BOTH_MODES, BOTH_SERVICES, BOTH_WORKERS),
    Case("core", "kill", "after-end", BOTH_MODES, BOTH_SERVICES, BOTH_WORKERS),
    Case("core", "stop", "mid-run", BOTH_MODES, BOTH_SERVICES, BOTH_WORKERS),
    Case("core", "stop", "after-end", services=BOTH_SERVICES),
    Case("worker", "stop", "mid-run", BOTH_MODES, workers=BOTH_WORKERS, within=40.0),
    Case("worker", "stop", "after-end", within=40.0),
    Case("launcher", "kill", "mid-run", BOTH_MODES, BOTH_SERVICES, BOTH_WORKERS),
    Case("disk", "fsize", "mid-run", disk=True),
    Case("disk", "readonly", "before-start", disk=True),
]


def _params() -> Iterator[Any]:
    for case in CASES:
        for mode in case.modes:
            for service in case.services:
                for workers in case.workers:
                    # The multiplexed axis doubles the matrix: its online and
                    # shared-core cases are kept to those where they differ
                    # most (a worker or its wandb-core killed mid-run).
                    most = case.name in ("worker-kill-mid-run", "core-kill-mid-run")
                    first = (mode, service) == ("offline", "own")
                    if workers == "multiplexed" and not (first or most):
                        continue
                    suffix = "-multiplexed" if workers == "multiplexed" else ""
                    name = f"{case.name}-{mode}-{service}{suffix}"
                    yield pytest.param(case, mode, service, workers, id=name)


# -- the harness ----------------------------------------------------------------------


class Harness:
    """One simulated trial logged by the real callback, and the means to hurt it."""

    def __init__(self, tmp_path: Path, service: str, stage: str, workers: str = "own") -> None:
        self.tmp_path = tmp_path
        self.callback = WandbLoggerCallback(
            project="matrix",
            shared_service=service == "shared",
            upload_timeout=UPLOAD_TIMEOUT,
            # Multiplexed: the trial shares its worker with two others.
            runs_per_worker=3 if workers == "multiplexed" else 1,
        )
        if stage == "copying":
            bucket = tmp_path / "bucket"
            bucket.mkdir()
            self.stored = bucket / "exp"
            self.trial = FakeTrial(
                "m0001",
                Path("exp"),
                filesystem=slow_filesystem(str(bucket)),
                staging_root=tmp_path / "staging",
            )
        else:
            self.stored = tmp_path / "exp"
            self.trial = FakeTrial("m0001", self.stored)
        #: The trials sharing its worker (multiplexed), fed and ended with it.
        self.others = (
            [FakeTrial(f"m000{n}", self.stored) for n in (2, 3)] if workers == "multiplexed" else []
        )
        self.fault_at: float | None = None
        self.reported = threading.Event()
        #: The feeder waits before row ``hold_at`` until ``go`` is set (None: no wait).
        self.hold_at: int | None = None
        self.go = threading.Event()
        self._feeder: threading.Thread | None = None
        self._stopped: list[int] = []

    def start(self, hold_at: int | None = None) -> None:
        self.hold_at = hold_at
        self.callback.setup()
        self.callback.log_trial_start(self.trial)
        for other in self.others:
            self.callback.log_trial_start(other)
        #: Each trial's run (the callback forgets its trials at the experiment's end).
        self.runs = {t.trial_id: self.callback._trials[t.trial_id].run for t in self.trials}
        self.run: Run = self.runs[self.trial.trial_id]
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        for i in range(1, ROWS + 1):
            if i == self.hold_at:
                self.go.wait(60)
            report(self.callback, self.trial, i, i + 1)
            for other in self.others:
                report(self.callback, other, i, i + 1)
            time.sleep(PAUSE)
        self.reported.set()

    def stop(self, pid: int) -> None:
        """SIGSTOP a process; :meth:`clean_up` continues it if the test fails."""
        self._stopped.append(pid)
        _signal(pid, signal.SIGSTOP)

    def hit(self, pid: int, action: str) -> None:
        """The case's action on ``pid``: SIGKILL, or SIGSTOP (``stop``)."""
        if action == "stop":
            self.stop(pid)
        else:
            _signal(pid, signal.SIGKILL)

    def clean_up(self) -> None:
        """After a failure: nothing stopped, nothing left running."""
        for pid in self._stopped:
            _signal(pid, signal.SIGCONT)
        self.go.set()
        if self.trial.trial_id in self.callback._trials:
            for trial in self.trials:
                trial.status = "TERMINATED"
            self.callback.on_experiment_end(self.trials)

    @property
    def trials(self) -> list[FakeTrial]:
        return [self.trial, *self.others]

    def callback_run(self, trial: FakeTrial) -> Run:
        return self.runs[trial.trial_id]

    def hurt(self, fault: Callable[[], None]) -> None:
        fault()
        if self.fault_at is None:
            self.fault_at = time.monotonic()

    def end(self) -> float:
        """End the trial and the experiment; the seconds since the fault."""
        assert self._feeder is not None
        self._feeder.join(60)
        for trial in self.trials:
            self.callback.log_trial_end(trial)
            trial.status = "TERMINATED"
        self.callback.on_experiment_end(self.trials)
        assert self.fault_at is not None, "the fault was never injected"
        return time.monotonic() - self.fault_at

    # -- the processes
    def worker_pid(self) -> int:
        wait_for(lambda: self.run.worker_pid is not None)
        pid = self.run.worker_pid
        assert pid is not None
        return pid

    def core_pid(self, shared: bool) -> int:
        if shared:
            pids = self.callback._pool._service_pids
            wait_for(lambda: bool(pids))
            return pids[-1]
        wait_for(lambda: self.run.started is not None)
        started = self.run.started
        assert started is not None and started.service_pid is not None
        return started.service_pid

    def launcher_pid(self) -> int:
        launcher = self.callback._pool._launcher
        assert launcher is not None
        return launcher.pid

    def wait_confirmed(self, seq: int) -> None:
        wait_for(lambda: self.run.ledger.confirmed_seq >= seq, timeout=60)

    def wait_end_written(self) -> None:
        """Trial ended, its end marker written to the worker's socket."""
        self.reported.wait(60)
        self.callback.log_trial_end(self.trial)
        wait_for(lambda: self.run.state is RunState.ENDING and not self.run.ledger.pending)


def _child_core(worker_pid: int) -> int | None:
    """The wandb-core a worker started, once it exists."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(worker_pid).children():
            if "wandb-core" in " ".join(child.cmdline()):
                return child.pid
    return None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def inject(h: Harness, case: Case, shared: bool, tmp_path: Path) -> None:  # noqa: PLR0912
    """Bring the run to ``case.stage`` and do ``case.action`` to ``case.target`` there."""
    kill = signal.SIGKILL
    if case.target == "launcher":
        h.wait_confirmed(40)
        h.hurt(lambda: _signal(h.launcher_pid(), kill))
    elif case.target == "disk" and case.action == "fsize":
        # The feeder holds row 61 until the disk is full, so rows are left to refuse.
        h.wait_confirmed(60)
        core = h.core_pid(shared)
        assert h.run.run_file is not None
        # The run file grows no more: a full disk.
        limit = os.path.getsize(h.run.run_file)
        h.hurt(lambda: psutil.Process(core).rlimit(psutil.RLIMIT_FSIZE, (limit, limit)))
        h.go.set()
    elif case.target == "disk":  # readonly, before the run starts: set up in the test
        h.hurt(lambda: None)
    elif case.stage == "before-start":
        pid = h.worker_pid()
        h.hurt(lambda: _signal(pid, kill))
        assert h.run.started is None, "the run had started"
    elif case.stage == "during-init":
        pid = h.worker_pid()
        wait_for(lambda: _child_core(pid) is not None, timeout=60)
        core = _child_core(pid)
        assert core is not None
        # Stopped, the worker says nothing more: a run not started yet is in wandb.init.
        h.stop(pid)
        time.sleep(0.3)
        in_init = h.run.started is None
        h.hurt(lambda: _signal(core if case.target == "core" else pid, kill))
        _signal(pid, signal.SIGCONT)
        assert in_init, "wandb.init had returned"
    elif case.stage == "after-resend":
        # Rows reach the first worker's socket and are never logged: its
        # replacement is handed them; it is hit before it confirms any.
        h.wait_confirmed(40)
        first = h.worker_pid()
        h.stop(first)
        h.go.set()  # rows 61 on, to a worker that takes nothing
        wait_for(lambda: h.run.rows >= 80 and not h.run.ledger.pending, timeout=60)
        _signal(first, kill)
        wait_for(lambda: h.run.worker_pid not in (None, first) and _is_part2(h.run))
        if case.target == "core":
            h.hurt(lambda: _signal(h.core_pid(shared), kill))
        else:
            h.hurt(lambda: _signal(h.worker_pid(), kill))
    elif case.stage == "mid-run":
        h.wait_confirmed(40)
        pid = h.core_pid(shared) if case.target == "core" else h.worker_pid()
        h.hurt(lambda: h.hit(pid, case.action))
    elif case.stage == "after-end":
        h.wait_confirmed(40)
        worker = h.worker_pid()
        core = h.core_pid(shared)
        h.stop(worker)  # the end marker waits in its socket
        h.wait_end_written()
        if case.target == "worker":
            h.hurt(lambda: h.hit(worker, case.action))
            if case.action == "stop":
                return  # left stopped: the driver must notice
        else:
            h.hurt(lambda: h.hit(core, case.action))
        _signal(worker, signal.SIGCONT)
    elif case.stage == "copying":
        h.reported.wait(60)
        worker = h.worker_pid()
        copied = h.stored / h.trial.storage.trial_dir_name / "wandb"
        h.callback.log_trial_end(h.trial)
        wait_for(lambda: copied.exists() and any(copied.rglob("*")), timeout=60)
        h.hurt(lambda: _signal(worker, kill))
    else:
        raise AssertionError(f"no such stage: {case.stage}")


def _is_part2(run: Run) -> bool:
    started = run.started
    return started is not None and started.run_dir.endswith("part2")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` mounted read-only over itself (root only), for the length of the block."""
    path.mkdir(parents=True, exist_ok=True)
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if not mount or not umount:
        pytest.skip("needs mount(8)")
    if subprocess.run([mount, "--bind", str(path), str(path)], check=False).returncode:
        pytest.skip("needs a bind mount (root)")
    try:
        subprocess.run([mount, "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run([umount, "-l", str(path)], check=False)


# -- the checks ------------------------------------------------------------------------


def check_rows(rows: list[int], faults: int) -> None:
    """Every row 1..ROWS, at most one twice per fault."""
    missing = sorted(set(range(1, ROWS + 1)) - set(rows))
    assert not missing, missing
    assert len(rows) - ROWS <= faults


def stored_runs(h: Harness) -> list[RunData]:
    """The run of each trial, the trial hurt first."""
    runs = find_runs(h.stored)
    assert len(runs) == len(h.trials), sorted(runs)
    return [
        next(d for d in runs.values() if d.run_id.startswith(f"{t.trial_id}-")) for t in h.trials
    ]


def stored_run(h: Harness) -> RunData:
    return stored_runs(h)[0]


@pytest.mark.parametrize(("case", "mode", "service", "workers"), list(_params()))
def test_fault(
    case: Case,
    mode: str,
    service: str,
    workers: str,
    tmp_path: Path,
    wandb_server: WandbServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="tune_wandb")
    if mode == "online":
        go_online(wandb_server, monkeypatch, tmp_path / "home")
    shared = service == "shared"
    h = Harness(tmp_path, service, case.stage, workers)
    guard = (
        read_only(h.stored / h.trial.storage.trial_dir_name)
        if case.action == "readonly"
        else contextlib.nullcontext()
    )
    with guard:
        # After a resend: rows 61 on wait until the first worker is stopped.
        h.start(hold_at=61 if case.stage == "after-resend" or case.action == "fsize" else None)
        try:
            inject(h, case, shared, tmp_path)
            took = h.end()
        except BaseException:
            h.clean_up()
            raise
    assert took < case.within, f"{took:.1f} s after the fault"
    run = h.run
    if case.disk:
        check_disk(h, case, caplog)
        return
    runs = [h.callback_run(t) for t in h.trials]
    for run in runs:
        assert run.state is RunState.FINISHED, run
        assert run.finished is not None and run.finished.exit_code == 0
    faults = 2 if case.stage == "after-resend" else 1
    for data in stored_runs(h):
        check_rows(data.column("training_iteration"), faults)
        assert data.exit_codes[-1] == 0
        if mode == "online":
            record = wandb_server.run(data.run_id)
            assert record.finished and record.exit_code == 0
            check_rows([row["training_iteration"] for row in record.history], faults)


def check_disk(h: Harness, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    """A disk that does not take the run: said within 10 s, the rows kept, exit code 1."""
    run = h.run
    said = [
        r
        for r in caplog.records
        if r.levelname == "ERROR" and str(h.trial) in r.getMessage() and "not" in r.getMessage()
    ]
    assert said, [r.getMessage() for r in caplog.records]
    assert h.fault_at is not None
    message = said[0].getMessage()
    if case.action == "fsize":
        assert "rows have not reached its run file" in message and "file too large" in message
        assert run.finished is not None and run.finished.exit_code == 1
        assert 0 < run.finished.unwritten < ROWS
        assert run.ledger.not_written == run.finished.unwritten  # kept until the end
    else:
        assert "Read-only file system" in message or "read-only" in message.lower()
        assert run.state is RunState.GIVEN_UP
        assert run.ledger.not_written == ROWS
    (table,) = [r.getMessage() for r in caplog.records if "W&B run" in r.getMessage()][-1:]
    assert "rows not written" in table or "logging given up" in table


# -- chaos -------------------------------------------------------------------------------


def test_chaos_random_logging_processes_killed_every_second_and_a_half(tmp_path: Path) -> None:
    # Issue #13: 4 trials x 500 results, a random worker or wandb-core killed
    # every 1.5 s, ten times: every row lands and every run finishes 0.
    experiment = tmp_path / "chaos"
    callback = WandbLoggerCallback(project="chaos", upload_timeout=UPLOAD_TIMEOUT)
    callback.setup()
    trials = [FakeTrial(f"c{i:04d}", experiment) for i in range(4)]
    for trial in trials:
        callback.log_trial_start(trial)
    done = threading.Event()

    def feed() -> None:
        for i in range(1, 501):
            for trial in trials:
                report(callback, trial, i, i + 1)
            time.sleep(0.04)
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    chooser = random.Random(13)
    killed = []

    def candidates() -> list[int]:
        runs = [callback._trials[t.trial_id].run for t in trials]
        pids = [r.worker_pid for r in runs] + [
            r.started.service_pid for r in runs if r.started is not None
        ]
        return [pid for pid in pids if pid is not None and psutil.pid_exists(pid)]

    for _ in range(10):
        time.sleep(1.5)
        # On a loaded machine the launcher may still be importing wandb.
        wait_for(lambda: bool(candidates()), timeout=60)
        victim = chooser.choice(candidates())
        _signal(victim, signal.SIGKILL)
        killed.append(victim)
    assert done.wait(120)
    for trial in trials:
        callback.log_trial_end(trial)
        trial.status = "TERMINATED"
    callback.on_experiment_end(trials)
    assert len(killed) == 10
    runs = find_runs(experiment)
    assert len(runs) == 4
    total = 0
    for data in runs.values():
        rows = data.column("training_iteration")
        assert sorted(set(rows)) == list(range(1, 501))
        assert data.exit_codes[-1] == 0
        total += len(set(rows))
    assert total == 2000
