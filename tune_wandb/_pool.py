"""The driver's side of the process model: one thread that owns every run and worker.

:class:`WorkerPool` starts the launcher (``python -m tune_wandb._launcher``, never
a fork of the driver) and one thread of its own, the *pool thread*, which
alone changes the state of every run and every worker process, as the
manager thread of CPython's process pool does. Other threads only put
results and commands on its queue (a result costs the Tune loop one
``SimpleQueue.put``) and wait on a condition for runs to end, always with a
deadline; no lock is ever held across socket I/O.

The pool thread serves every socket at once and never blocks on one (see
:mod:`tune_wandb._channel`): it filters what was queued, gives each run's rows
to the run's ledger (:mod:`tune_wandb._ledger`), writes batches to the
workers as far as their sockets take them, reads what the workers and the
launcher say, and replaces a worker that died before finishing its run.

A worker process holds one run (a worker of its own) or many (a multiplexed
worker); :meth:`WorkerPool._place` decides as each run opens (see
:data:`DEDICATED_RUNS`, :data:`RUNS_PER_WORKER`). A worker's lifecycle
(:class:`WorkerState`), changed by the pool thread only::

    SPAWNING --WorkerStarted--> RUNNING --no more runs--> FINISHING --runs finished--> FINISHED
       |                           |                          |
       +------- socket closed before its runs finished -------+--> DIED --> every run replaced
    any state before FINISHED --stopped at upload_timeout or close--> STOPPED

(A worker of its own is FINISHING once its run's end marker is written; a
multiplexed worker is told it is retired once it holds no run, or after
:data:`_RUNS_PER_LIFETIME` runs.)

A run's (:class:`RunState`)::

    LOGGING --finish asked--> ENDING --RunFinished--> FINISHED
    LOGGING/ENDING --workers keep dying, no row lands--> GIVEN_UP
    LOGGING/ENDING --stopped--> STOPPED

Every worker has an id of its own (``<run key>#<n>`` for a worker of its
own, ``shared#<n>`` for a multiplexed one): a replacement never takes its
predecessor's. Every run has a number of its own in the pool, which the
messages about it carry. A worker is dead when its socket closes (every
message it sent is read by then); its exit code comes from the launcher.
Shutdown escalates as CPython's process pool does: end marker, join with a
deadline, SIGTERM, SIGKILL; every process is reaped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import enum
import itertools
import logging
import os
import pickle
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cloudpickle

from tune_wandb._channel import Channel
from tune_wandb._ledger import Ledger
from tune_wandb._protocol import (
    EXIT_HUNG,
    EXIT_SERVICE_LOST,
    Batch,
    CallInFork,
    CallReturned,
    Confirmed,
    ConsoleLines,
    LauncherError,
    LogRow,
    OpenRun,
    PieceSettled,
    ProcessSetup,
    Retired,
    RunFailed,
    RunFinished,
    RunStarted,
    ServiceStarted,
    ShutdownLauncher,
    SpawnWorker,
    StopWorker,
    UpdateConfig,
    UploadCheckpoint,
    UploadTrialDir,
    UseService,
    WorkerExited,
    WorkerLog,
    WorkerSetup,
    WorkerStarted,
)

logger = logging.getLogger("tune_wandb")

#: The most messages in one batch to a worker.
_MAX_BATCH = 512
#: The most results and commands the pool thread takes off its queue per
#: round, so that writing and reading keep their turn under a flood.
_MAX_TAKE = 16 * _MAX_BATCH
#: How long results pile up before they are sent. Batching spares the driver
#: a wake-up, a pickle call and a socket write per result; a logging delay of
#: this order is invisible in W&B.
_LINGER_SECONDS = 0.1
#: Rounds with nothing to do before the pool thread polls less often.
_IDLE_ROUNDS = 10
#: How often an idle pool thread looks at its queue (the Tune loop never
#: wakes it: a wake-up is a system call on the Tune loop).
_IDLE_SECONDS = 0.5
#: The most messages of one run held in the driver's memory while its worker
#: cannot keep up; the rest is spooled to a temporary file (see _backlog).
_BACKLOG_IN_MEMORY = 4096
#: Runs starting at once: a burst of trial starts must not start hundreds
#: of wandb.init (and wandb-core processes) together on the driver's node.
_MAX_STARTING = 16
#: A run gets a worker of its own (isolated: its own process and wandb-core)
#: while fewer than this many runs are live; past that, runs share
#: multiplexed workers. Small experiments keep full isolation; see
#: docs/performance.md for the figures that chose it.
DEDICATED_RUNS = 8
#: The most runs a multiplexed worker holds at once: 1,000 concurrent runs
#: in ~16 worker processes (docs/performance.md).
RUNS_PER_WORKER = 64
#: A multiplexed worker takes no new run after it has held this many: it
#: exits once they are finished, and a fresh process takes the next ones
#: (whatever wandb keeps per run in a process stays bounded).
_RUNS_PER_LIFETIME = 4 * RUNS_PER_WORKER
#: A spawn the launcher has not confirmed by then means a stuck launcher.
_SPAWN_SECONDS = 30.0
#: How long the launcher's word on a dead worker's exit code is awaited.
_EXIT_CODE_SECONDS = 2.0
#: How long each escalation step (SIGTERM, SIGKILL) waits for processes to go.
_STOP_STEP_SECONDS = 5.0
#: A worker silent this long (its watchdog thread beats every second) while
#: its run has work is stopped or frozen: it is killed and replaced.
_SILENT_SECONDS = 10.0
#: Deaths in a row with no new row landing after which a run is given up
#: (a worker that cannot start its run would otherwise be started forever).
_MAX_DEATHS_WITHOUT_PROGRESS = 4


class WorkerState(enum.Enum):
    """Where a worker process is in its life; see the module docstring."""

    SPAWNING = "spawning"
    RUNNING = "running"
    FINISHING = "finishing"
    FINISHED = "finished"
    DIED = "died"
    STOPPED = "stopped"


def _isolated_label(run: Run) -> str:
    return f"trial {run.name}"


class RunState(enum.Enum):
    """Where a run is; see the module docstring."""

    LOGGING = "logging"
    ENDING = "ending"
    FINISHED = "finished"
    GIVEN_UP = "given up"
    STOPPED = "stopped"


#: States a run ends in: nothing more happens to it.
_RUN_ENDED = frozenset({RunState.FINISHED, RunState.GIVEN_UP, RunState.STOPPED})
#: Worker states after which nothing is written to it any more.
_WORKER_OVER = frozenset({WorkerState.FINISHED, WorkerState.DIED, WorkerState.STOPPED})

#: Turns a raw result into the row the worker logs (the callback's filters).
Prepare = Callable[[int, dict[str, Any]], LogRow]


def _unfiltered(seq: int, result: dict[str, Any]) -> LogRow:
    """The row of a result logged as it is (runs opened without filters, in tests)."""
    return LogRow(seq, result)


def _end_service(pid: int | None) -> None:
    """SIGKILL a wandb-core of ours that may outlive its owner (checked to be one)."""
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"wandb-core" not in f.read():
                return
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return


#: What a worker's own exit codes mean, for the driver's error.
_EXIT_REASONS = {
    EXIT_SERVICE_LOST: "its wandb-core kept dying",
    EXIT_HUNG: "hung in wandb",
}


def _describe_exit(exitcode: int | None) -> str:
    """``-9``, ``75 (its wandb-core kept dying)``, or why it is not known."""
    if exitcode is None:
        return "unknown (the launcher had died)"
    reason = _EXIT_REASONS.get(exitcode)
    return f"{exitcode} ({reason})" if reason else str(exitcode)


class ThreadClock:
    """CPU time spent by the pool's own threads on the driver (for benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = 0.0

    def add_current_thread(self) -> None:
        """Add the calling thread's CPU time; call it as the thread ends."""
        spent = time.thread_time()
        with self._lock:
            self.seconds += spent


class Run:
    """The driver's view of one W&B run: its worker, its ledger, what the worker said.

    Made by :meth:`WorkerPool.open`. Its methods only queue a message for the
    pool thread, which alone changes its attributes; other threads read them.
    """

    def __init__(
        self,
        pool: WorkerPool,
        key: str,
        name: str,
        setup: WorkerSetup,
        prepare: Prepare | None,
        gate: concurrent.futures.Future[Callable[[WorkerSetup], WorkerSetup]] | None = None,
    ) -> None:
        #: The run's number in the pool: the messages about it carry it.
        self.number = next(pool._numbers)
        self.key = key
        self.name = name
        self.setup = setup
        self.prepare = prepare or _unfiltered
        #: The worker starts once this is done; its result amends the setup.
        self.gate = gate
        self._inbox_put = pool._inbox.put
        self._wake = pool._wake
        self.state = RunState.LOGGING
        #: The current worker's id and pid (None until the launcher forked it).
        self.worker_id: str | None = None
        self.worker_pid: int | None = None
        #: What the last worker said when it started the run / finished it.
        self.started: RunStarted | None = None
        self.finished: RunFinished | None = None
        #: Results queued for the run; workers that died before finishing it.
        self.rows = 0
        #: Console lines dropped because the run's worker could not keep up.
        self.console_dropped = 0
        self.deaths = 0
        self.ledger = Ledger(_BACKLOG_IN_MEMORY, _MAX_BATCH, self._make_picklable)
        self._unpicklable: set[str] = set()
        self._progress_at_last_death = 0
        self._deaths_without_progress = 0
        self._generation = 0
        #: The wandb-core that writes the run's last piece (None: unknown, or shared).
        self._piece_writer: int | None = None
        #: What its workers said (each message is logged once).
        self._said: set[str] = set()
        #: Placed in a worker that has not said RunStarted for it yet.
        self._starting = False
        #: It could not start in a multiplexed worker: it gets workers of its own.
        self._isolate = False

    def __repr__(self) -> str:
        return f"<Run {self.key} {self.state.value}>"

    # -- from any thread: queued for the pool thread -------------------------------

    def put(self, result: dict[str, Any]) -> None:
        """Queue a result (filtered on the pool thread); returns at once."""
        self._inbox_put((self, result))

    def checkpoint(self, path: str, filesystem: Any = None, iteration: int | None = None) -> None:
        """Queue a checkpoint directory for upload as an artifact."""
        self._inbox_put(_Checkpoint(self, path, filesystem, iteration))

    def trial_end(self, config: dict[str, Any] | None, trial_dir: str | None) -> None:
        """Queue the trial's final run config and its directory's upload, if given.

        Put before :meth:`finish`, they travel after every row and before the end marker.
        """
        self._inbox_put(_TrialEnd(self, config, trial_dir))

    def console(self, stream: str, lines: list[str]) -> None:
        """Queue lines the trial wrote to ``stream`` (stdout, stderr) for its Logs tab."""
        self._inbox_put(_Console(self, stream, tuple(lines)))

    def finish(self, exit_code: int) -> None:
        """Queue the end marker: the run finishes once everything before it is logged."""
        self._inbox_put(_Finish(self, exit_code))
        self._wake()

    # -- read by other threads -------------------------------------------------------

    @property
    def ended(self) -> bool:
        """Finished, given up or stopped: nothing more happens to the run."""
        return self.state in _RUN_ENDED

    @property
    def run_file(self) -> str | None:
        """The run file the current piece is written to, once its worker started it."""
        started = self.started
        if started is None:
            return None
        return os.path.join(started.run_dir, f"run-{started.run_id}.wandb")

    @property
    def run_dir(self) -> str | None:
        """Where the run's files are, as far as the driver knows."""
        if self.finished is not None:
            return self.finished.run_dir
        return self.started.run_dir if self.started is not None else None

    # -- the pool thread's ---------------------------------------------------------------

    def _make_picklable(self, message: Any) -> None:
        """Take out of a row, in place, each value that cannot be pickled (said once per key)."""
        if not isinstance(message, LogRow):
            return
        for part in (message.history, message.config or {}):
            for key in list(part):
                try:
                    pickle.dumps(part[key], protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:
                    del part[key]
                    if key not in self._unpicklable:
                        self._unpicklable.add(key)
                        logger.warning(
                            "tune-wandb: trial %s: the value of %r cannot be pickled for the "
                            "W&B worker (%r), so it is not logged (said once per trial).",
                            self.name,
                            key,
                            exc,
                        )

    def _next_worker_id(self) -> str:
        self._generation += 1
        return f"{self.key}#{self._generation}"


@dataclass(frozen=True)
class _Open:
    run: Run


@dataclass(frozen=True)
class _Checkpoint:
    run: Run
    path: str
    filesystem: Any
    iteration: int | None


@dataclass(frozen=True)
class _TrialEnd:
    run: Run
    config: dict[str, Any] | None
    trial_dir: str | None


@dataclass(frozen=True)
class _Console:
    run: Run
    stream: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Finish:
    run: Run
    exit_code: int


@dataclass(frozen=True)
class _Stop:
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class _Close:
    pass


@dataclass(frozen=True)
class _Call:
    future: concurrent.futures.Future[Any]
    payload: bytes


class _Worker:
    """The pool thread's record of one worker process (never shared with other threads)."""

    def __init__(self, worker_id: str, capacity: int, channel: Channel) -> None:
        self.id = worker_id
        #: The most runs it holds at once (1: a worker of its own).
        self.capacity = capacity
        #: The runs it holds now (opened, not finished), by number.
        self.runs: dict[int, Run] = {}
        #: Runs it was ever given (a multiplexed worker is retired after _RUNS_PER_LIFETIME).
        self.held = 0
        self.channel = channel
        self.state = WorkerState.SPAWNING
        self.spawned_at = time.monotonic()
        self.pid: int | None = None
        self.exitcode: int | None = None
        #: The launcher reported the exit, or never will (it died).
        self.exit_known = False
        #: The socket closed: every message of the worker has been read.
        self.gone = False
        #: The frames queued on the socket, in order: the run of a batch, or
        #: None for a control frame (a run opened, a new shared wandb-core's address).
        self.frames: collections.deque[Run | None] = collections.deque()
        #: When the worker last said anything (its watchdog beats every second).
        self.last_heard = time.monotonic()
        #: The wandb-core the worker started for itself, ended with it.
        self.service_pid: int | None = None
        #: Who it was, for the report of its death (its runs are handed over by then).
        self.lost = ""
        self.lost_where = ""
        #: When to report a death whose exit code has not come (pool thread's clock).
        self.report_at: float | None = None
        #: When the next stop step is due, and whether SIGKILL was sent.
        self.stop_at: float | None = None
        self.killed = False

    @property
    def multiplexed(self) -> bool:
        return self.capacity > 1

    def has_room(self) -> bool:
        """Whether a new run may be placed here."""
        return (
            self.multiplexed
            and not self.gone
            and self.state in (WorkerState.SPAWNING, WorkerState.RUNNING)
            and len(self.runs) < self.capacity
            and self.held < _RUNS_PER_LIFETIME
        )

    def label(self) -> str:
        """How messages name it: its trial, or its pid and how many runs it holds."""
        if not self.multiplexed:
            run = next(iter(self.runs.values()), None)
            return f"of trial {run.name}" if run is not None else f"{self.id}"
        names = ", ".join(r.name for r in list(self.runs.values())[:3])
        more = ", ..." if len(self.runs) > 3 else ""
        return f"{self.id} ({len(self.runs)} runs: {names}{more})"


class WorkerPool:
    """Starts and ends the workers of one experiment, from one thread of its own.

    The pool can be closed and started again (one per callback, reused
    across experiments run with the same callback object).

    Example:
        >>> pool = WorkerPool()
        >>> run = pool.open("a", "trial-a", setup)  # doctest: +SKIP
        >>> run.put({"training_iteration": 1, "loss": 0.5})  # doctest: +SKIP
        >>> run.finish(0)  # doctest: +SKIP
        >>> pool.wait([run], timeout=60)  # doctest: +SKIP
        []
        >>> pool.close()
    """

    def __init__(self, shared_service: bool = False, runs_per_worker: int | None = None) -> None:
        if runs_per_worker is not None and runs_per_worker < 1:
            raise ValueError(f"runs_per_worker must be >= 1, not {runs_per_worker!r}")
        self.shared_service = shared_service
        #: Runs per worker process: None for the policy (a worker of its own
        #: while fewer than DEDICATED_RUNS are live, then RUNS_PER_WORKER per
        #: worker), 1 for a worker per run always, N to share workers of N always.
        self.runs_per_worker = runs_per_worker
        self.thread_clock = ThreadClock()
        self._numbers = itertools.count(1)
        self._shared_ids = itertools.count(1)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: The queue's own put, for ``(run, result)``: no Python frame between
        #: the Tune loop and the queue (see :meth:`Run.put`).
        self.put: Callable[[tuple[Run, dict[str, Any]]], None] = self._inbox.put
        #: Notified by the pool thread whenever a run's state changes.
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # -- the pool thread's own state (read, never written, by other threads)
        self._runs: list[Run] = []
        self._workers: dict[str, _Worker] = {}
        self._to_place: list[Run] = []
        self._launcher: subprocess.Popen[bytes] | None = None
        self._launcher_channel: Channel | None = None
        self._selector: selectors.BaseSelector | None = None
        self._closing = False
        self._close_deadline = 0.0
        self._idle_rounds = 0
        self._state_changed = False
        #: The shared wandb-cores the launchers started (ended at close if orphaned).
        self._service_pids: list[int] = []
        #: What workers said about no run in particular (each message is logged once).
        self._said: set[str] = set()
        #: Calls sent to the launcher and not answered yet, by id.
        self._calls: dict[str, concurrent.futures.Future[Any]] = {}
        self._call_ids = itertools.count(1)

    # -- any thread ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the pool thread (and the launcher) if they are not running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closing = False
        self._runs, self._workers, self._to_place = [], {}, []
        self._service_pids = []
        # Started here rather than on the pool thread: it warms up (imports
        # wandb) while Tune starts its first trials.
        self._start_launcher()
        self._thread = threading.Thread(target=self._serve, name="tune-wandb-pool", daemon=True)
        self._thread.start()

    def open(
        self,
        key: str,
        name: str,
        setup: WorkerSetup,
        prepare: Prepare | None = None,
        gate: concurrent.futures.Future[Callable[[WorkerSetup], WorkerSetup]] | None = None,
    ) -> Run:
        """Open a run and queue the start of its worker; returns at once.

        ``prepare`` turns each result put on the run into the row the worker
        logs, on the pool thread (default: the result as it is). With a
        ``gate``, the worker starts only once the gate is done (its results
        wait in the run's ledger meanwhile); the function it gives amends
        the worker's setup (a failed gate leaves the setup as it is).
        """
        if self._thread is None or not self._thread.is_alive():
            self.start()
        run = Run(self, key, name, setup, prepare, gate)
        self._inbox.put(_Open(run))
        # A trial's start is worth a wake-up (a result is not): its worker
        # should be starting while the trial's first results come.
        self._wake()
        return run

    def call(self, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``function(*args)`` in a child the launcher forks; its future result.

        Returns at once. The future fails with :class:`RuntimeError` if the
        function raised (its text), its process died, or the launcher is gone.
        Both the function and what it returns cross processes with cloudpickle.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            payload = cloudpickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            future.set_exception(RuntimeError(f"cannot send {function!r} to the launcher: {exc!r}"))
            return future
        if self._thread is None or not self._thread.is_alive():
            self.start()
        self._inbox.put(_Call(future, payload))
        self._wake()
        return future

    def wait(self, runs: list[Run], timeout: float) -> list[Run]:
        """Wait up to ``timeout`` seconds until every run has ended; the runs still going."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                pending = [r for r in runs if not r.ended]
                left = deadline - time.monotonic()
                if not pending or left <= 0 or not self._serving():
                    return pending
                self._changed.wait(min(left, 1.0))

    def stop(self, runs: list[Run]) -> None:
        """End the workers of runs that did not finish in time: SIGTERM, then SIGKILL.

        Returns once they are gone, or after both steps' time.
        """
        if not runs or not self._serving():
            return
        self._inbox.put(_Stop(tuple(runs)))
        self._wake()
        self.wait(runs, 2 * _STOP_STEP_SECONDS + 1.0)

    def close(self) -> None:
        """End every worker (see :meth:`stop`), then the launcher and the pool thread.

        Every process is reaped; returns within about three escalation steps.
        """
        thread = self._thread
        if thread is None:
            return
        if thread.is_alive():
            self._inbox.put(_Close())
            self._wake()
            if thread is not threading.current_thread():
                thread.join(4 * _STOP_STEP_SECONDS)
        self._thread = None
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def _serving(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    # -- the pool thread -------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._closed():
                self._round()
        except Exception:
            logger.exception("tune-wandb: the W&B pool thread failed; W&B logging stops here")
            self._kill_everything()
        finally:
            self._release()
            self.thread_clock.add_current_thread()
            with self._changed:
                self._changed.notify_all()

    def _round(self) -> None:
        took = self._intake()
        self._place_waiting()
        wrote = self._write_all()
        busy = took or wrote
        self._idle_rounds = 0 if busy else self._idle_rounds + 1
        timeout = _LINGER_SECONDS if self._idle_rounds < _IDLE_ROUNDS else _IDLE_SECONDS
        assert self._selector is not None
        for key, events in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake()
            elif key.data == "launcher":
                self._serve_launcher(events)
            else:
                self._serve_worker(key.data, events)
        self._check_deadlines()
        if self._state_changed:
            self._state_changed = False
            with self._changed:
                self._changed.notify_all()

    def _changed_state(self) -> None:
        self._state_changed = True

    # -- the queue ----------------------------------------------------------------------------

    def _intake(self) -> bool:
        get = self._inbox.get_nowait
        took = 0
        with contextlib.suppress(queue.Empty):
            while took < _MAX_TAKE:
                item = get()
                took += 1
                if type(item) is tuple:
                    self._add_result(*item)
                else:
                    self._command(item)
        return took > 0

    def _add_result(self, run: Run, result: dict[str, Any]) -> None:
        # A run given up keeps its rows (unsent) until the experiment ends.
        if run.state not in (RunState.LOGGING, RunState.GIVEN_UP):
            logger.debug("tune-wandb: a result for %s after its end marker is dropped", run)
            return
        seq = run.ledger.next_seq()
        try:
            row = run.prepare(seq, result)
        except Exception:
            # A bug in the filters must cost one row, never the trial's logging.
            logger.exception("tune-wandb: could not filter a result; it is skipped")
            return
        run.ledger.append(row)
        run.rows += 1

    def _command(self, command: Any) -> None:
        if isinstance(command, _Open):
            self._runs.append(command.run)
            self._to_place.append(command.run)
        elif isinstance(command, _Checkpoint):
            run = command.run
            if run.state is RunState.LOGGING:
                seq = run.ledger.next_seq()
                run.ledger.append(
                    UploadCheckpoint(seq, command.path, command.filesystem, command.iteration)
                )
        elif isinstance(command, _TrialEnd):
            self._add_trial_end(command)
        elif isinstance(command, _Console):
            self._add_console(command)
        elif isinstance(command, _Finish):
            run = command.run
            if run.state is RunState.LOGGING:
                run.ledger.finish(command.exit_code)
                run.state = RunState.ENDING
                self._changed_state()
        elif isinstance(command, _Stop):
            for run in command.runs:
                self._stop_run(run)
        elif isinstance(command, _Close):
            self._begin_close()
        elif isinstance(command, _Call):
            self._send_call(command)

    def _add_trial_end(self, command: _TrialEnd) -> None:
        run = command.run
        if run.state is not RunState.LOGGING:
            return
        if command.config is not None:
            run.ledger.append(UpdateConfig(run.ledger.next_seq(), command.config))
        if command.trial_dir is not None:
            run.ledger.append(UploadTrialDir(run.ledger.next_seq(), command.trial_dir))

    def _add_console(self, command: _Console) -> None:
        """Console lines go with the rows, unless the run's backlog is at its cap.

        Past the cap (what the driver holds in memory), lines are dropped and
        counted, so that they never push rows to the spool.
        """
        run = command.run
        if run.state is not RunState.LOGGING:
            return
        if run.ledger.unsent >= _BACKLOG_IN_MEMORY:
            run.console_dropped += len(command.lines)
            return
        run.ledger.append(ConsoleLines(run.ledger.next_seq(), command.stream, command.lines))

    def _send_call(self, command: _Call) -> None:
        call_id = str(next(self._call_ids))
        channel = self._launcher_for_spawn()
        if channel is None or self._closing:
            command.future.set_exception(RuntimeError("no launcher to run the call"))
            return
        self._calls[call_id] = command.future
        channel.send(pickle.dumps(CallInFork(call_id, command.payload)))
        self._flush_launcher()

    def _call_returned(self, message: CallReturned) -> None:
        future = self._calls.pop(message.call_id, None)
        if future is None or future.done():
            return
        if message.error is not None:
            future.set_exception(RuntimeError(message.error))
            return
        try:
            future.set_result(cloudpickle.loads(message.value or b""))
        except Exception as exc:
            future.set_exception(RuntimeError(f"unreadable answer: {exc!r}"))

    def _fail_calls(self, reason: str) -> None:
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(RuntimeError(reason))

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    # -- placing runs in workers --------------------------------------------------------

    def _starting(self) -> int:
        return sum(
            1 for w in self._workers.values() if not w.gone for r in w.runs.values() if r._starting
        )

    def _place_waiting(self) -> None:
        if not self._to_place or self._closing:
            return
        room = _MAX_STARTING - self._starting()
        waiting: list[Run] = []
        for run in self._to_place:
            if run.ended:
                continue
            if room > 0 and self._through_gate(run):
                self._place(run)
                room -= 1
            else:
                waiting.append(run)
        self._to_place = waiting

    @staticmethod
    def _through_gate(run: Run) -> bool:
        """Whether the run may be placed (its setup amended by its gate once done)."""
        gate = run.gate
        if gate is None:
            return True
        if not gate.done():
            return False
        run.gate = None
        if not gate.cancelled() and gate.exception() is None:
            try:
                run.setup = gate.result()(run.setup)
            except Exception:
                logger.exception("tune-wandb: trial %s: its run starts unchanged", run.name)
        return True

    def _capacity_for(self, run: Run) -> int:
        """How many runs the worker of ``run`` may hold: 1 for a worker of its own."""
        if run._isolate:
            return 1
        if self.runs_per_worker is not None:
            return self.runs_per_worker
        # Live: placed in a worker and not ended (runs waiting to be placed,
        # as in a burst of trial starts, are not live yet).
        live = sum(
            1 for r in self._runs if r.worker_id is not None and not r.ended and r is not run
        )
        return 1 if live < DEDICATED_RUNS else RUNS_PER_WORKER

    def _place(self, run: Run, replaces: str | None = None) -> None:
        """Open ``run`` in a worker: one of its own, or a multiplexed one with room."""
        capacity = self._capacity_for(run)
        worker = None
        if capacity > 1:
            worker = next((w for w in self._workers.values() if w.has_room()), None)
        if worker is None:
            if capacity == 1:
                worker_id = run._next_worker_id()
            else:
                run._next_worker_id()  # its next worker of its own must not take an old id
                worker_id = f"shared#{next(self._shared_ids)}"
            worker = self._new_worker(worker_id, capacity, run.setup)
            if worker is None:
                logger.error(
                    "tune-wandb: no launcher to start the W&B worker of trial %s", run.name
                )
                run.worker_id, run.worker_pid = worker_id, None
                self._hand_over(run)
                return
        setup = run.setup
        if replaces:
            setup = replace(setup, replaces=replaces, replaces_writer=run._piece_writer)
        payload = cloudpickle.dumps(setup, protocol=pickle.HIGHEST_PROTOCOL)
        worker.channel.send(pickle.dumps(OpenRun(run.number, payload)))
        worker.frames.append(None)
        worker.runs[run.number] = run
        worker.held += 1
        run.worker_id, run.worker_pid = worker.id, worker.pid
        run._starting = True
        self._flush(worker)

    def _new_worker(self, worker_id: str, capacity: int, setup: WorkerSetup) -> _Worker | None:
        """Ask the launcher for a new worker process; None if there is no launcher."""
        process = ProcessSetup(driver_pid=setup.driver_pid, env=setup.env, capacity=capacity)
        payload = cloudpickle.dumps(process, protocol=pickle.HIGHEST_PROTOCOL)
        channel = self._launcher_for_spawn()
        if channel is None:
            return None
        ours, theirs = socket.socketpair()
        worker = _Worker(worker_id, capacity, Channel(ours))
        self._workers[worker_id] = worker
        assert self._selector is not None
        self._selector.register(worker.channel.sock, selectors.EVENT_READ, worker)
        message = pickle.dumps(SpawnWorker(worker_id, payload), protocol=pickle.HIGHEST_PROTOCOL)
        channel.send(message, fds=(theirs.detach(),))
        self._flush_launcher()
        return worker

    def _retire(self, worker: _Worker) -> None:
        """A multiplexed worker holds no run and gets none: it exits (its wandb-core with it)."""
        worker.state = WorkerState.FINISHED
        worker.channel.send(pickle.dumps(Retired()))
        worker.frames.append(None)
        self._flush(worker)

    # -- the launcher ----------------------------------------------------------------------------

    def _start_launcher(self) -> bool:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # The launcher imports what the driver can import, and nothing runs the
        # user's script: sys.path holds directories, not modules to execute.
        path = [p for p in sys.path if p]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        try:
            self._launcher = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tune_wandb._launcher",
                    str(theirs.fileno()),
                    *(() if self.shared_service else ("--no-shared-service",)),
                ],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                # Out of the terminal's process group: Ctrl-C is the driver's to handle.
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            logger.error("tune-wandb: could not start the launcher of W&B workers: %r", exc)  # noqa: TRY400
            return False
        finally:
            theirs.close()
        self._launcher_channel = Channel(ours)
        assert self._selector is not None
        self._selector.register(ours, selectors.EVENT_READ, "launcher")
        return True

    def _launcher_for_spawn(self) -> Channel | None:
        """The launcher's channel, starting a new launcher if the last one died."""
        if self._launcher_channel is None and not self._start_launcher():
            return None
        return self._launcher_channel

    def _tell_launcher(self, message: object) -> bool:
        channel = self._launcher_channel
        if channel is None or channel.broken:
            return False
        channel.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        self._flush_launcher()
        return True

    def _flush_launcher(self) -> None:
        channel = self._launcher_channel
        if channel is None:
            return
        channel.flush()
        self._watch(channel, "launcher")
        if channel.broken:
            self._launcher_lost()

    def _serve_launcher(self, events: int) -> None:
        channel = self._launcher_channel
        if channel is None:
            return
        if events & selectors.EVENT_WRITE:
            self._flush_launcher()
        if events & selectors.EVENT_READ:
            for data in channel.receive():
                self._on_launcher_message(pickle.loads(data))
            if channel.eof:
                self._launcher_lost()

    def _on_launcher_message(self, message: Any) -> None:
        if isinstance(message, ServiceStarted):
            self._service_started(message)
            return
        if isinstance(message, CallReturned):
            self._call_returned(message)
            return
        worker = self._workers.get(getattr(message, "worker_id", ""))
        if worker is None:
            return
        if isinstance(message, WorkerStarted):
            worker.pid = message.pid
            worker.last_heard = time.monotonic()
            if worker.state is WorkerState.SPAWNING:
                worker.state = WorkerState.RUNNING
            for run in worker.runs.values():
                run.worker_pid = message.pid
            self._changed_state()
        elif isinstance(message, WorkerExited):
            worker.exitcode, worker.exit_known = message.exitcode, True
            if not worker.gone:
                # Dead: what it wrote is all there; nothing more will come.
                self._read_worker(worker)
                self._worker_gone(worker)
            self._report_death(worker)
        elif isinstance(message, LauncherError):
            logger.error("tune-wandb: W&B worker %s: %s", worker.label(), message.message)
            worker.exit_known = True
            self._worker_gone(worker)

    def _service_started(self, message: ServiceStarted) -> None:
        """The launcher (re)started the shared wandb-core: live workers move to it."""
        again = bool(self._service_pids)
        self._service_pids.append(message.pid)
        if not again:
            return
        logger.warning(
            "tune-wandb: the shared wandb-core ended; a new one (pid %d) takes over, and each "
            "live run continues on it in a new piece",
            message.pid,
        )
        control = pickle.dumps(UseService(message.token, message.pid))
        for worker in self._workers.values():
            if not worker.gone and worker.state not in _WORKER_OVER:
                worker.channel.send(control)
                worker.frames.append(None)
                self._flush(worker)

    def _launcher_lost(self) -> None:
        """The launcher died or was shut down: its workers' exit codes will not come."""
        channel, self._launcher_channel = self._launcher_channel, None
        if channel is not None:
            assert self._selector is not None
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(channel.sock)
            channel.close()
        self._fail_calls("the launcher ended before answering")
        launcher, self._launcher = self._launcher, None
        if launcher is not None:
            # Its socket closed: it is dead or dying; reaped here, killed if not.
            try:
                launcher.wait(1.0)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
        for worker in self._workers.values():
            if not worker.exit_known:
                worker.exit_known = True
                self._report_death(worker)

    # -- workers --------------------------------------------------------------------------------

    def _watch(self, channel: Channel, data: Any) -> None:
        """Listen for writability on ``channel`` only while it has frames to write."""
        if channel.eof or self._selector is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if channel.writing else 0)
        with contextlib.suppress(KeyError, ValueError):
            if self._selector.get_key(channel.sock).events != events:
                self._selector.modify(channel.sock, events, data)

    def _write_all(self) -> bool:
        wrote = False
        for worker in list(self._workers.values()):
            if worker.gone or worker.state in _WORKER_OVER or not worker.runs:
                continue
            wrote |= self._write(worker)
        return wrote

    def _write(self, worker: _Worker) -> bool:
        """Send its runs' next batches as far as the socket takes them.

        One batch per run on the socket at a time (the ledger gives none
        while one is being written), each run in turn: a chatty run does not
        starve the others of its worker.
        """
        wrote = False
        while not worker.gone:
            for run in list(worker.runs.values()):
                batch = run.ledger.take(_MAX_BATCH)
                if batch:
                    worker.channel.send(self._pickle(run, batch))
                    worker.frames.append(run)
            if not self._flush(worker):
                break
            wrote = True
        if not worker.multiplexed and worker.state is WorkerState.RUNNING:
            ledger = next((r.ledger for r in worker.runs.values()), None)
            if ledger is not None and not ledger.pending and ledger.exit_code is not None:
                worker.state = WorkerState.FINISHING
                self._changed_state()
        return wrote

    def _flush(self, worker: _Worker) -> bool:
        """Write what the worker's socket takes; whether a batch was written whole."""
        channel = worker.channel
        batch_done = False
        for _ in range(channel.flush()):
            run = worker.frames.popleft()
            if run is not None:
                run.ledger.written()
                batch_done = True
        self._watch(channel, worker)
        if channel.broken and not worker.gone:
            self._read_worker(worker)
            self._worker_gone(worker)
        return batch_done

    def _pickle(self, run: Run, messages: tuple[Any, ...]) -> bytes:
        try:
            return pickle.dumps(Batch(run.number, messages), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            # The filters pass only values that pickle, but for wandb media
            # made by the user (a wandb.Table holding a lock): such a value is
            # taken out of its row, in place, and the rest of the batch goes.
            for message in messages:
                run._make_picklable(message)
            return pickle.dumps(Batch(run.number, messages), protocol=pickle.HIGHEST_PROTOCOL)

    def _serve_worker(self, worker: _Worker, events: int) -> None:
        if events & selectors.EVENT_WRITE and not worker.gone:
            self._write(worker)
        if events & selectors.EVENT_READ and not worker.gone:
            self._read_worker(worker)
            if worker.channel.eof:
                self._worker_gone(worker)

    def _read_worker(self, worker: _Worker) -> None:
        frames = worker.channel.receive()
        if frames:
            worker.last_heard = time.monotonic()
        for data in frames:
            try:
                message = pickle.loads(data)
            except Exception:
                logger.exception("tune-wandb: unreadable message from worker %s", worker.id)
                continue
            self._on_worker_message(worker, message)

    def _on_worker_message(self, worker: _Worker, message: Any) -> None:
        number = getattr(message, "run", None)
        run = worker.runs.get(number) if number is not None else None
        if isinstance(message, WorkerLog):
            self._log_worker(run, message)
        elif run is None:
            return  # a heartbeat, or a run this worker no longer holds
        elif isinstance(message, Confirmed):
            run.ledger.confirm(message.seq, message.history)
        elif isinstance(message, PieceSettled):
            run.ledger.settled(message.history)
        elif isinstance(message, RunStarted):
            run._starting = False
            worker.service_pid = run._piece_writer = message.service_pid
            run.started = message
            run.ledger.started(os.path.join(message.run_dir, f"run-{message.run_id}.wandb"))
            where = message.url or message.run_dir
            logger.info("tune-wandb: W&B run %s (%s): %s", message.name, message.run_id, where)
            self._changed_state()
        elif isinstance(message, RunFinished):
            run.finished = message
            if not message.unwritten:
                # Rows the disk did not take stay in the ledger (and its spool)
                # until the experiment ends.
                run.ledger.run_finished()
            del worker.runs[run.number]
            if run.state is not RunState.STOPPED:
                run.state = RunState.FINISHED
            if worker.state is not WorkerState.STOPPED:
                if not worker.multiplexed:
                    worker.state = WorkerState.FINISHED
                elif not worker.runs:
                    self._retire(worker)
            self._changed_state()
        elif isinstance(message, RunFailed):
            self._isolate(worker, run, message.reason)

    def _log_worker(self, run: Run | None, message: WorkerLog) -> None:
        # Said once per run (a replacement that fails as its predecessor did
        # would say the same again); once per pool for a whole process.
        said = run._said if run is not None else self._said
        if message.message not in said:
            said.add(message.message)
            logger.log(message.level, "tune-wandb: %s", message.message)

    def _isolate(self, worker: _Worker, run: Run, reason: str) -> None:
        """A run could not start in a multiplexed worker: a worker of its own takes it."""
        del worker.runs[run.number]
        run._starting = False
        run._isolate = True
        if reason not in run._said:
            run._said.add(reason)
            logger.warning(
                "tune-wandb: trial %s: its W&B run could not start in a shared worker (%s); "
                "it gets a worker of its own",
                run.name,
                reason,
            )
        self._hand_over(run)
        # SPAWNING too: the launcher's WorkerStarted may come after the worker's own word.
        if not worker.runs and worker.state in (WorkerState.SPAWNING, WorkerState.RUNNING):
            self._retire(worker)

    def _worker_gone(self, worker: _Worker) -> None:
        """The worker's socket closed: it is dead (or about to be), every message read."""
        if worker.gone:
            return
        worker.gone = True
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.channel.sock)
        worker.channel.close()
        self._changed_state()
        if worker.state in (WorkerState.FINISHED, WorkerState.STOPPED):
            self._forget_if_done(worker)
            return
        worker.state = WorkerState.DIED
        worker.report_at = time.monotonic() + _EXIT_CODE_SECONDS
        worker.lost = worker.label()
        first = next(iter(worker.runs.values()), None)
        worker.lost_where = (
            first.run_dir if first is not None else None
        ) or "the trial's directory"
        # Its own wandb-core would idle on for minutes; ended, its pieces are final.
        _end_service(worker.service_pid)
        self._report_death(worker)
        self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        """Hand each run a dead worker held to a new worker, unless its workers keep dying."""
        runs = list(worker.runs.values())
        worker.runs.clear()
        for run in runs:
            run._starting = False
            self._hand_over(run)

    def _hand_over(self, run: Run) -> None:
        """The run lost its worker: place it again, with what did not land, or give it up."""
        if run.ended:
            return
        handover = run.ledger.died()
        run.deaths += 1
        progress = run.ledger.confirmed_total
        if progress > run._progress_at_last_death:
            run._deaths_without_progress = 0
        run._progress_at_last_death = progress
        run._deaths_without_progress += 1
        if run._deaths_without_progress >= _MAX_DEATHS_WITHOUT_PROGRESS:
            self._give_up(run)
            return
        if self._closing:
            return
        self._place(run, replaces=handover.piece)

    def _give_up(self, run: Run) -> None:
        run.state = RunState.GIVEN_UP
        self._changed_state()
        # The rows stay in its ledger (memory, spool) until the experiment ends.
        logger.error(
            "tune-wandb: the W&B workers of trial %s died %d times without writing a new row; "
            "W&B logging of this trial stops here (the reasons are in the errors above), with "
            "%d rows not written. What they wrote is on disk in %s; Tune's own result files "
            "keep every result.",
            run.name,
            run._deaths_without_progress,
            run.ledger.not_written,
            run.run_dir or run.setup.init_kwargs.get("dir") or "the trial's directory",
        )

    def _report_death(self, worker: _Worker) -> None:
        """Say once that a worker died before finishing its runs, with its exit code if known."""
        if worker.state is not WorkerState.DIED or worker.report_at is None:
            return
        if not worker.exit_known and time.monotonic() < worker.report_at:
            return
        worker.report_at = None
        exitcode = worker.exitcode if worker.exit_known and worker.exitcode is not None else None
        if worker.multiplexed:
            logger.error(
                "tune-wandb: the W&B worker %s (pid %s) ended with exit code %s before "
                "finishing its runs; what they logged is on disk in their trials' directories, "
                "and new workers take them over",
                worker.lost,
                worker.pid,
                _describe_exit(exitcode),
            )
        else:
            logger.error(
                "tune-wandb: the W&B worker %s (pid %s) ended with exit code %s before "
                "finishing its run; what it logged is on disk in %s",
                worker.lost,
                worker.pid,
                _describe_exit(exitcode),
                worker.lost_where,
            )
        self._forget_if_done(worker)

    def _forget_if_done(self, worker: _Worker) -> None:
        if worker.gone and (worker.exit_known or worker.report_at is None):
            self._workers.pop(worker.id, None)

    # -- stopping -----------------------------------------------------------------------------

    def _stop_run(self, run: Run) -> None:
        if run.ended:
            return
        run.state = RunState.STOPPED
        with contextlib.suppress(ValueError):
            self._to_place.remove(run)
        self._changed_state()
        for worker in self._workers.values():
            if run.number not in worker.runs or worker.gone:
                continue
            # A multiplexed worker is stopped once every run it holds is.
            if all(r.ended for r in worker.runs.values()):
                self._stop_worker(worker)

    def _stop_worker(self, worker: _Worker) -> None:
        worker.state = WorkerState.STOPPED
        worker.stop_at = time.monotonic() + _STOP_STEP_SECONDS
        self._signal(worker, kill=False)

    def _signal(self, worker: _Worker, kill: bool) -> None:
        """SIGTERM (or SIGKILL) a worker through the launcher, or directly if it is gone."""
        if self._tell_launcher(StopWorker(worker.id, kill=kill)):
            return
        if worker.pid is None:
            return
        with contextlib.suppress(OSError):
            os.kill(worker.pid, signal.SIGKILL if kill else signal.SIGTERM)
            if not kill:
                # A stopped worker (SIGSTOP, a debugger) takes SIGTERM only once continued.
                os.kill(worker.pid, signal.SIGCONT)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if (
                worker.state in (WorkerState.RUNNING, WorkerState.FINISHING)
                and not worker.gone
                and now - worker.last_heard > _SILENT_SECONDS
                and any(r.ledger.busy for r in worker.runs.values())
            ):
                logger.error(
                    "tune-wandb: the W&B worker %s (pid %s) has said nothing for %.0f s "
                    "(stopped or frozen); it is ended and new workers take its runs over",
                    worker.label(),
                    worker.pid,
                    now - worker.last_heard,
                )
                worker.last_heard = now  # said once; the socket's close follows the kill
                self._signal(worker, kill=True)
            if worker.report_at is not None and now >= worker.report_at:
                worker.exit_known = True
                self._report_death(worker)
            if worker.stop_at is not None and not worker.gone and now >= worker.stop_at:
                if worker.killed:
                    worker.stop_at = None  # signalled twice; the socket's close is awaited
                else:
                    worker.killed = True
                    worker.stop_at = now + _STOP_STEP_SECONDS
                    self._signal(worker, kill=True)
            if (
                worker.state is WorkerState.SPAWNING
                and worker.pid is None
                and now - worker.spawned_at > _SPAWN_SECONDS
                and self._launcher is not None
            ):
                logger.error(
                    "tune-wandb: the launcher did not start a W&B worker within %.0f s; it is "
                    "killed and started again",
                    _SPAWN_SECONDS,
                )
                with contextlib.suppress(OSError):
                    self._launcher.kill()
                worker.spawned_at = now

    # -- closing ---------------------------------------------------------------------------------

    def _begin_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._to_place.clear()
        for run in self._runs:
            self._stop_run(run)
        self._close_deadline = time.monotonic() + 2 * _STOP_STEP_SECONDS + 1.0

    def _closed(self) -> bool:
        if not self._closing:
            return False
        live = any(not w.gone for w in self._workers.values())
        return not live or time.monotonic() >= self._close_deadline

    def _release(self) -> None:
        """End the launcher and close every socket (the pool thread's last act)."""
        for worker in self._workers.values():
            worker.channel.close()
        self._workers.clear()
        self._shut_launcher_down()
        self._fail_calls("the pool closed before the call was answered")
        # A launcher killed mid-experiment left its shared wandb-core behind.
        for pid in self._service_pids:
            _end_service(pid)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        # Anything still open is over: waiters must not wait for it.
        for run in self._runs:
            if not run.ended:
                run.state = RunState.STOPPED

    def _shut_launcher_down(self) -> None:
        """Tell the launcher to exit; wait, then SIGTERM, then SIGKILL; reap it."""
        launcher, channel = self._launcher, self._launcher_channel
        self._launcher, self._launcher_channel = None, None
        if channel is not None and not channel.broken:
            channel.send(pickle.dumps(ShutdownLauncher(grace_seconds=0.0)))
            deadline = time.monotonic() + _STOP_STEP_SECONDS
            while channel.writing and not channel.broken and time.monotonic() < deadline:
                channel.flush()
                time.sleep(0.01)
        if launcher is not None:
            for step in ("wait", "terminate", "kill"):
                if step == "terminate":
                    launcher.terminate()
                elif step == "kill":
                    launcher.kill()
                try:
                    launcher.wait(_STOP_STEP_SECONDS if step != "kill" else None)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if channel is not None:
            channel.close()

    def _kill_everything(self) -> None:
        """After a bug in the pool thread: no worker may outlive the driver's logging."""
        for worker in self._workers.values():
            if worker.pid is not None and not worker.gone:
                with contextlib.suppress(OSError):
                    os.kill(worker.pid, signal.SIGKILL)
