"""Helpers shared by the test modules (tests never import each other).

- worker set-ups and rows for driving the pool without Ray;
- simulated Tune trials, for driving the callback without Ray;
- a Tune callback that signals a trial's worker at a given iteration;
- scripts run as user programs.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from ray import tune

from tune_wandb import WandbLoggerCallback
from tune_wandb._pool import Run
from tune_wandb._protocol import WorkerSetup
from tune_wandb._settings import QUIET_SETTINGS

# -- the pool without Ray ---------------------------------------------------------------


def make_setup(root: Path, run_id: str = "run-a", mode: str = "offline") -> WorkerSetup:
    """A worker's set-up for run ``run_id`` written under ``root``, as the callback makes it."""
    return WorkerSetup(
        trial_id=run_id,
        trial_name=f"trial-{run_id}",
        init_kwargs={
            "id": run_id,
            "name": f"trial-{run_id}",
            "project": "workers",
            "dir": str(root),
            "mode": mode,
            "resume": "allow",
            "settings": dict(QUIET_SETTINGS),
        },
        driver_pid=os.getpid(),
        env={"WANDB_MODE": mode} if mode == "offline" else {},
    )


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def put_rows(run: Run, start: int, stop: int) -> None:
    """Results ``start`` .. ``stop - 1``: ``training_iteration`` and a ``metric``."""
    for i in range(start, stop):
        run.put({"training_iteration": i, "metric": i * 2.0})


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for init to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def go_online(server: Any, monkeypatch: Any, home: Path) -> None:
    """The driver online against the W&B test server (the callback hands WANDB_* to workers)."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    server.require_key = server.api_key


# -- the callback without Ray ----------------------------------------------------------------


@dataclass
class FakeStorage:
    """The parts of Ray's ``StorageContext`` the callback reads.

    ``experiment_path`` is on ``storage_filesystem`` (None: the local disk);
    the driver's staging directory is always local, beside ``staging_root``.
    """

    experiment_path: Path
    trial_dir_name: str
    storage_filesystem: Any = None
    staging_root: Path | None = None

    @property
    def experiment_fs_path(self) -> str:
        return str(self.experiment_path)

    @property
    def experiment_driver_staging_path(self) -> str:
        root = self.staging_root or self.experiment_path.parent / "staging"
        return str(root / self.experiment_path.name)


@dataclass
class FakeTrial:
    """What the callback reads of a Tune ``Trial``, for simulated trials without Ray actors.

    With ``filesystem`` (a pyarrow filesystem), the experiment is stored
    there, as on non-local storage, and staged under ``staging_root``.
    """

    trial_id: str
    experiment: Path
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "RUNNING"
    checkpoint: Any = None
    last_result: dict[str, Any] = field(default_factory=dict)
    filesystem: Any = None
    staging_root: Path | None = None

    def __post_init__(self) -> None:
        self.storage = FakeStorage(
            self.experiment, f"train_{self.trial_id}", self.filesystem, self.staging_root
        )
        self.path = str(self.experiment / self.storage.trial_dir_name)
        self.local_path = self.path

    @property
    def experiment_dir_name(self) -> str:
        return self.experiment.name

    def __str__(self) -> str:
        return f"train_{self.trial_id}"


def report(callback: WandbLoggerCallback, trial: FakeTrial, start: int, stop: int) -> None:
    """Report results ``start`` .. ``stop - 1`` of ``trial`` as Tune would."""
    for i in range(start, stop):
        result = {"training_iteration": i, "loss": 1.0 / i, "trial_id": trial.trial_id}
        trial.last_result = result
        callback.log_trial_result(i, trial, result)


# -- signalling a trial's worker ----------------------------------------------------------------


class SignalWorker(tune.Callback):
    """Sends ``sig`` to the trial's tune-wandb worker once, when the trial reaches ``at``."""

    def __init__(
        self,
        logger_callback: WandbLoggerCallback,
        at: int,
        sig: int,
        settle: float = 0.0,
    ) -> None:
        self.logger_callback = logger_callback
        self.at = at
        self.sig = sig
        self.settle = settle
        self.signalled: list[int] = []

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: Any, **info: Any
    ) -> None:
        if result["training_iteration"] != self.at:
            return
        run = self.logger_callback._trials[trial.trial_id].run
        wait_for(lambda: run.worker_pid is not None and run.started is not None)
        time.sleep(self.settle)  # let the worker log what it has been sent so far
        pid = run.worker_pid
        assert pid is not None
        os.kill(pid, self.sig)
        self.signalled.append(pid)


# -- user scripts --------------------------------------------------------------------------------

#: A Tune script whose two trials never end, for Ctrl-C tests; argv[1] is the storage.
ENDLESS = textwrap.dedent(
    """
    import sys, time
    import ray
    from ray import tune
    from tune_wandb import WandbLoggerCallback

    def train(config):
        for i in range(100000):
            time.sleep(0.02)
            tune.report({"loss": 1.0 / (i + 1)})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tune.run(
        train,
        config={"x": tune.grid_search([1, 2])},
        name="ctrlc",
        storage_path=sys.argv[1],
        # A long upload_timeout: tests check that runs already done are not waited on.
        callbacks=[WandbLoggerCallback(project="p", upload_timeout=120)],
        verbose=0,
    )
    print("RETURNED", time.time(), flush=True)
    """
)
