"""The messages that cross between the driver, the launcher and the workers.

Three processes talk, each pair over its own ``multiprocessing.connection``
socket:

* driver <-> launcher (one socket per experiment): the driver asks the launcher
  to fork a worker (:class:`SpawnWorker`, whose frame carries the worker's end
  of a fresh socket pair as a passed file descriptor) or to stop one
  (:class:`StopWorker`); the launcher reports :class:`WorkerStarted` and, when
  it has reaped the process, :class:`WorkerExited` with its exit code. The
  driver also has the launcher fork a child that runs one function
  (:class:`CallInFork`, answered by :class:`CallReturned`).
* driver <-> worker (one socket per worker process, which may hold many
  runs): the driver opens each run in the worker (:class:`OpenRun`), then
  sends :class:`Batch` messages naming their run and holding
  :class:`LogRow`, :class:`UploadCheckpoint`, :class:`ConsoleLines`, at the
  trial's end :class:`UpdateConfig` and :class:`UploadTrialDir`, and
  finally :class:`FinishRun`, the run's end marker; the worker answers,
  naming the run,
  :class:`PieceSettled` (a replacement only), :class:`RunStarted`,
  :class:`Confirmed`, :class:`WorkerLog`, :class:`RunFinished` or
  :class:`RunFailed`, and beats :class:`Heartbeat` for the whole process. A
  worker holding many runs exits when told it is :class:`Retired` and its
  runs are done; a worker of one run exits when its run is finished.

Every message is a small frozen dataclass, never a bare tuple or None, so that
a reader can find each one here and a mismatch fails loudly. Messages are
pickled with the standard pickle (only our own processes read them) and
framed as ``multiprocessing.connection`` frames them (see
:mod:`tune_wandb._channel`); the worker's set-up travels once, as a
cloudpickle payload inside SpawnWorker (:class:`ProcessSetup`), and each
run's once inside its OpenRun (:class:`WorkerSetup`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Exit code given to a run whose trial was still running when the experiment
#: ended (Ctrl-C, an error in Tune): 128 + SIGINT, as a shell reports it.
EXIT_INTERRUPTED = 130

#: Exit code given to a run whose worker lost its driver.
EXIT_DRIVER_LOST = 1

#: A worker's own exit code when its wandb-core kept dying (it was restarted
#: twice): a new worker takes the run over.
EXIT_SERVICE_LOST = 75
#: A worker's own exit code when its main loop hung in wandb: a new worker
#: takes the run over.
EXIT_HUNG = 76


# --- driver -> launcher ---------------------------------------------------


@dataclass(frozen=True)
class SpawnWorker:
    """Fork a worker; its socket follows as a passed file descriptor.

    ``payload`` is the cloudpickled :class:`ProcessSetup`.
    """

    worker_id: str
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class StopWorker:
    """End a worker that did not stop by itself: SIGTERM, or SIGKILL if ``kill``."""

    worker_id: str
    kill: bool = False


@dataclass(frozen=True)
class CallInFork:
    """Run a function in a child of the launcher; :class:`CallReturned` answers.

    ``payload`` is the cloudpickled ``(function, args)``: the driver's calls
    into wandb's API run there, never in the driver (see :mod:`tune_wandb._sweep`).
    """

    call_id: str
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class ShutdownLauncher:
    """The experiment is over: reap every worker and exit."""

    grace_seconds: float = 5.0


# --- launcher -> driver ---------------------------------------------------


@dataclass(frozen=True)
class WorkerStarted:
    """A worker process is running."""

    worker_id: str
    pid: int


@dataclass(frozen=True)
class WorkerExited:
    """The launcher reaped a worker; negative exit codes are signal numbers."""

    worker_id: str
    pid: int
    exitcode: int


@dataclass(frozen=True)
class ServiceStarted:
    """The launcher started the experiment's shared wandb-core (again, if it died)."""

    token: str
    pid: int


@dataclass(frozen=True)
class CallReturned:
    """What a :class:`CallInFork` function returned (``value``, cloudpickled) or raised.

    ``error`` is None on success, else the exception's text.
    """

    call_id: str
    value: bytes | None = field(default=None, repr=False)
    error: str | None = None


@dataclass(frozen=True)
class LauncherError:
    """The launcher could not do what it was asked."""

    worker_id: str
    message: str


# --- driver -> worker -----------------------------------------------------


@dataclass(frozen=True)
class LogRow:
    """One Tune result, filtered: a history row and run-config entries."""

    seq: int
    history: dict[str, Any]
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class UploadCheckpoint:
    """Upload a checkpoint directory as a W&B artifact.

    ``filesystem`` is the pyarrow filesystem holding ``path`` (None: local).
    """

    seq: int
    path: str
    filesystem: Any = None
    iteration: int | None = None


@dataclass(frozen=True)
class UploadTrialDir:
    """Log the trial's local directory (``path``, on the driver's node) as a W&B artifact.

    Sent at the trial's end, before :class:`FinishRun` (``save_trial_dir``).
    """

    seq: int
    path: str


@dataclass(frozen=True)
class UpdateConfig:
    """Update the run config with ``config`` (the trial's final config, at its end)."""

    seq: int
    config: dict[str, Any]


@dataclass(frozen=True)
class ConsoleLines:
    """Lines a trial wrote to ``stream`` (``"stdout"`` or ``"stderr"``), for the run's Logs tab.

    They travel with the rows, in order, numbered by the same ``seq``.
    """

    seq: int
    stream: str
    lines: tuple[str, ...]


#: What travels to a run's worker in order, each numbered by ``seq``.
RunItem = LogRow | UploadCheckpoint | UploadTrialDir | UpdateConfig | ConsoleLines


@dataclass(frozen=True)
class FinishRun:
    """The end marker: finish the run with ``exit_code``, then exit."""

    exit_code: int = 0


@dataclass(frozen=True)
class OpenRun:
    """Start run number ``run`` in this worker; ``payload`` is its cloudpickled WorkerSetup.

    ``run`` is the driver's number for the run, unique within the pool: every
    message about the run, either way, carries it.
    """

    run: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class Batch:
    """Messages for run ``run`` sent together: the pool thread batches what piled up."""

    run: int
    messages: tuple[RunItem | FinishRun, ...]


@dataclass(frozen=True)
class Retired:
    """No run will be opened in this worker any more: exit once its runs are finished."""


@dataclass(frozen=True)
class UseService:
    """The shared wandb-core was started again: its address (``WANDB_SERVICE``) and pid."""

    token: str
    pid: int


# --- worker -> driver -----------------------------------------------------


@dataclass(frozen=True)
class PieceSettled:
    """A replacement's first word: its predecessor's piece holds ``history`` history records.

    Sent once the piece is complete (see :class:`WorkerSetup`'s ``replaces``),
    before the replacement resumes the run; the driver's ledger drops the
    rows handed over that landed there and sends the others.
    """

    run: int
    history: int


@dataclass(frozen=True)
class RunStarted:
    """``wandb.init`` returned: where the run lives."""

    run: int
    run_id: str
    name: str
    url: str | None
    run_dir: str
    offline: bool
    #: The wandb-core this worker started for itself (None: a shared one), so
    #: that the driver can end it if the worker dies.
    service_pid: int | None = None


@dataclass(frozen=True)
class Heartbeat:
    """The worker is alive (sent every second by its watchdog thread)."""


@dataclass(frozen=True)
class Confirmed:
    """Rows up to ``seq`` are in the run file, which holds ``history`` history records.

    Sent at most about once a second; the driver forgets those rows, and
    keeps the rest to send again if the worker dies.
    """

    run: int
    seq: int
    history: int


@dataclass(frozen=True)
class WorkerLog:
    """A message for the driver's log, at a ``logging`` level, about run ``run`` (None: all)."""

    run: int | None
    level: int
    message: str


@dataclass(frozen=True)
class RunFinished:
    """``wandb.finish`` returned; ``run_dir`` is where the finished run is stored."""

    run: int
    exit_code: int
    rows: int
    run_dir: str
    offline: bool
    #: Rows that never reached the run file (a full or read-only disk).
    unwritten: int = 0


@dataclass(frozen=True)
class RunFailed:
    """A worker holding many runs could not start (or restart) run ``run``.

    The worker goes on with its other runs; the driver hands this one to a
    worker of its own, which can do what a shared process cannot (end its
    wandb-core, log offline instead).
    """

    run: int
    reason: str


@dataclass(frozen=True)
class StorageTarget:
    """Where a finished run directory must be copied: a non-local storage filesystem."""

    filesystem: Any
    fs_path: str


@dataclass(frozen=True)
class ProcessSetup:
    """What a worker process needs whatever runs it holds, sent once in SpawnWorker.

    ``env`` is the driver's ``WANDB_*`` variables as the callback read them
    (the key left out); ``capacity`` the most runs the worker holds at once
    (1: a worker of its own for one run, which exits once it is finished).
    """

    driver_pid: int
    env: dict[str, str] = field(default_factory=dict)
    capacity: int = 1


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs for one run, sent once as a cloudpickle payload.

    ``api_key`` is kept out of ``repr`` so it cannot reach a log by accident;
    it crosses only the driver-worker socket, never a command line or a file.
    """

    trial_id: str
    trial_name: str
    init_kwargs: dict[str, Any]
    driver_pid: int
    env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    storage: StorageTarget | None = None
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    video_kwargs: dict[str, Any] = field(default_factory=dict)
    #: A replacement worker's: the run file of the last piece written, which it
    #: settles (see :class:`PieceSettled`) before it resumes the run, and the
    #: pid of the wandb-core that wrote it (None: unknown, or a shared one).
    replaces: str | None = None
    replaces_writer: int | None = None
    #: The driver sends the trial's console lines (:class:`ConsoleLines`): the
    #: run's settings turn wandb's console capture on, and the worker takes
    #: its own streams back out of it.
    capture_console: bool = False
