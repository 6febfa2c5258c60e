"""The worker process: one or many W&B runs, each fed by the driver over one socket.

A worker is forked by the launcher (see :mod:`tune_wandb._launcher`); its entry
point is :func:`worker_main`. The driver opens runs in it
(:class:`~tune_wandb._protocol.OpenRun`) and sends each run's batches, which
name the run; each run starts, logs what it is sent until its end marker
(:class:`~tune_wandb._protocol.FinishRun`) and finishes. A worker never takes
SIGINT (the driver ends it in order on Ctrl-C) and ends its runs by itself
if the driver's process goes away.

Two shapes, one per-run logic (:class:`_Slot`):

* **a worker of its own** (capacity 1, the default for small experiments):
  its one run is served on the main thread, which reads the socket itself;
  the process may do what concerns its one run only (a SIGTERM handler while
  ``wandb.init`` waits for W&B, ending its wandb-core after a failed online
  ``wandb.init`` to log offline instead) and exits once the run is finished.
* **a multiplexed worker** (capacity > 1, for many concurrent trials): the
  main thread reads the socket and hands each run's batches to the run's own
  thread; the runs share one wandb-core (``reinit="create_new"``, the
  process's own output in none of them) and nothing process-wide is changed for one run. A run that
  cannot start here is handed back to the driver
  (:class:`~tune_wandb._protocol.RunFailed`), which gives it a worker of its
  own. A wandb-core death is recovered once for every run of the process
  (:meth:`_Process.renew_service`). It exits once it is
  :class:`~tune_wandb._protocol.Retired` and its runs are finished.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import pickle
import queue
import select
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from tune_wandb import _filters, _runfile, _settings, _wandb_compat
from tune_wandb._protocol import (
    EXIT_DRIVER_LOST,
    EXIT_HUNG,
    EXIT_SERVICE_LOST,
    Batch,
    Confirmed,
    ConsoleLines,
    FinishRun,
    Heartbeat,
    LogRow,
    OpenRun,
    PieceSettled,
    ProcessSetup,
    Retired,
    RunFailed,
    RunFinished,
    RunItem,
    RunStarted,
    UpdateConfig,
    UploadCheckpoint,
    UploadTrialDir,
    UseService,
    WorkerLog,
    WorkerSetup,
)

#: How often a worker without pidfd support checks that its driver lives.
_DRIVER_POLL_SECONDS = 1.0
#: How often a worker tells the driver which rows are in its run file.
_CONFIRM_SECONDS = 1.0
#: A dead worker's piece is taken as complete once it has not grown for this
#: long (wandb-core writes run files every second), or has its exit record.
_QUIET_SECONDS = 3.0
_QUIET_MAX_SECONDS = 30.0
#: How long a replacement worker gives ``wandb sync`` of its dead predecessor's piece.
_UPLOAD_DEAD_PIECE_SECONDS = 60.0
#: How long after ``wandb.finish`` a worker waits for wandb-core to write the
#: end of the run file.
_FILE_CLOSE_SECONDS = 30.0
#: How many times a worker starts a new wandb-core for its runs before a new
#: worker takes them over.
_MAX_SERVICE_RESTARTS = 2
#: How long a worker waits for the launcher's new shared wandb-core.
_SERVICE_RESTART_SECONDS = 15.0
#: How often the watchdog thread tells the driver the worker lives.
_HEARTBEAT_SECONDS = 1.0
#: A ``run.log`` call waiting this long means a hung wandb-core: it is ended.
_STUCK_SECONDS = 10.0
#: A wandb-core stopped (SIGSTOP) this long is ended: stopped, it never resumes by itself.
_STOPPED_SECONDS = 2.0
#: Rows logged that have not reached the run file after this long mean the
#: disk does not take them (wandb-core writes the file every second).
_STALL_SECONDS = 10.0
#: What a run's thread in a multiplexed worker is handed when the driver is gone.
_DRIVER_LOST = "driver lost"


def worker_main(
    sock_fd: int,
    payload: bytes,
    inherited_fds: tuple[int, ...] = (),
    service: tuple[str, int] | None = None,
    requirements: str | None = None,
) -> None:
    """Run the W&B runs the driver opens in this process; the launcher's fork target.

    Args:
        sock_fd: this worker's end of its socket to the driver.
        payload: the cloudpickled :class:`~tune_wandb._protocol.ProcessSetup`.
        inherited_fds: descriptors inherited from the launcher that belong to
            it (its own socket to the driver, other workers' sockets), closed
            here so that their peers see them close when their owners do.
        service: the address (a ``WANDB_SERVICE`` value) and pid of the
            experiment's shared wandb-core, None to start one of its own.
        requirements: the environment's ``requirements.txt``, listed once by
            the launcher, saved with each run instead of wandb listing it again.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    conn = Connection(sock_fd)
    setup: ProcessSetup = cloudpickle.loads(payload)
    code = _Process(conn, setup, service, requirements).run()
    sys.exit(code)


class _PidWatch:
    """Tells when a process that is not this one's child is gone (a pidfd, else polling)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.fd = os.pidfd_open(pid)

    def waitables(self) -> list[Any]:
        return [] if self.fd is None else [self.fd]

    def gone(self) -> bool:
        if self.fd is not None:
            readable, _, _ = select.select([self.fd], [], [], 0)
            return bool(readable)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, a debugger): it makes no progress."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state in (b"T", b"t")


class _ServiceLostError(Exception):
    """This worker's wandb-core died (or was ended as hung) under its run."""


class _HandOverError(Exception):
    """The worker cannot go on with its run; a new worker must take it over.

    ``exit_code`` is the worker's own exit code.
    """

    def __init__(self, exit_code: int, reason: str) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


class _Watchdog:
    """A thread of the worker's own: a heartbeat to the driver, and wandb-core watched.

    Every second it tells the driver the worker is alive (a stopped or frozen
    worker falls silent, and the driver replaces it). It ends wandb-core
    (SIGKILL) when it has been stopped, or has kept a ``run.log`` call of any
    run waiting, for ``_STUCK_SECONDS``: the call then fails with a lost
    connection, and the worker starts a new wandb-core (see
    :meth:`_Slot._recover`). A run still stuck ``_STUCK_SECONDS`` later is
    hung in wandb itself: the process exits, and new workers take its runs over.
    """

    def __init__(self, process: _Process) -> None:
        self.process = process
        self._stop = threading.Event()
        self._stopped_since: float | None = None
        self._killed_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="tune-wandb-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(_HEARTBEAT_SECONDS):
            self.process.send(Heartbeat())
            self._check(time.monotonic())

    def _check(self, now: float) -> None:
        process = self.process
        pid = process.service_pid
        stuck: _Slot | None = None
        for slot in list(process.slots.values()):
            stage, since = slot.stage
            if stage == "log" and now - since > _STUCK_SECONDS:
                stuck = slot
                break
        if pid is not None and _stopped(pid):
            self._stopped_since = self._stopped_since or now
        else:
            self._stopped_since = None
        stopped_for = now - self._stopped_since if self._stopped_since is not None else 0.0
        core_stopped = stopped_for > _STOPPED_SECONDS
        if (stuck or core_stopped) and pid is not None and self._killed_at is None:
            self._killed_at = now
            process.say(
                stuck,
                logging.WARNING,
                f"its wandb-core (pid {pid}) is {'stopped' if core_stopped else 'hung'}; it is "
                "ended and a new one takes over",
            )
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        elif stuck is None:
            self._killed_at = None
        if stuck and self._killed_at is not None and now - self._killed_at > _STUCK_SECONDS:
            process.say(stuck, logging.ERROR, "hung in wandb.log; a new worker takes the run over")
            os._exit(EXIT_HUNG)


class _Process:
    """The worker process: its socket, its runs, and what they share (wandb-core, environment).

    It alone reads the socket (in a worker of its own, on behalf of its one
    run, from the run's own loop) and owns the process-wide state: the
    environment, the shared wandb-core's address, the restarts of wandb-core.
    """

    def __init__(
        self,
        conn: Connection,
        setup: ProcessSetup,
        service: tuple[str, int] | None,
        requirements: str | None,
    ) -> None:
        self.conn = conn
        self.setup = setup
        self.shared_service = service
        self.requirements = requirements
        self.multi = setup.capacity > 1
        self.driver = _PidWatch(setup.driver_pid)
        self._send_lock = threading.Lock()
        #: The runs open in this process, by the driver's number.
        self.slots: dict[int, _Slot] = {}
        #: The wandb-core the runs talk to (for the watchdog), set as runs start.
        self.service_pid: int | None = None
        #: wandb-core restarts, and its generation: one restart serves every run.
        self.restarts = 0
        self.generation = 0
        self.exhausted = False
        self._service_lock = threading.Lock()
        self._service_changed = threading.Condition()
        #: Environment changes around one run's call (artifact staging) are made under it.
        self.env_lock = threading.Lock()
        self.retired = False
        self.driver_lost = False
        #: Set by a run's thread when the whole process must hand its runs over.
        self.handover: _HandOverError | None = None

    # -- messages to the driver ------------------------------------------------

    def send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        # Runs' threads and the watchdog send too: one frame at a time. The
        # driver may be gone; the runs' data is on disk either way.
        with self._send_lock, contextlib.suppress(OSError):
            self.conn.send_bytes(data)

    def say(self, slot: _Slot | None, level: int, text: str) -> None:
        """A message for the driver's log, about one run, or about every run of the process."""
        if slot is not None:
            slot._say(level, text)
        elif not self.multi and self.slots:
            next(iter(self.slots.values()))._say(level, text)
        else:
            self.send(WorkerLog(None, level, f"W&B worker (pid {os.getpid()}): {text}"))

    # -- the process -----------------------------------------------------------

    def run(self) -> int:
        self._apply_env()
        watchdog = _Watchdog(self)
        watchdog.start()
        try:
            return self._serve_many() if self.multi else self._serve_one()
        finally:
            watchdog.stop()

    def _apply_env(self) -> None:
        # The launcher's environment is the driver's as it was when the
        # launcher started; a worker takes the driver's WANDB_* variables as the
        # callback read them when the experiment started (the key left out: it
        # comes through the settings). Once per process: never per run.
        for name in [n for n in os.environ if n.startswith("WANDB_")]:
            del os.environ[name]
        os.environ.update(self.setup.env)
        # wandb prints outside any run's settings too (e.g. "Encoding video...").
        os.environ.setdefault("WANDB_SILENT", "true")
        if self.shared_service and "WANDB_SERVICE" not in self.setup.env:
            os.environ["WANDB_SERVICE"] = self.shared_service[0]
        else:
            self.shared_service = None

    def _serve_one(self) -> int:
        """A worker of its own: its one run, served on this thread."""
        while not self.slots:
            if self.pump(None, _DRIVER_POLL_SECONDS) == "driver":
                return EXIT_DRIVER_LOST
        (slot,) = self.slots.values()
        return slot.run()

    def _serve_many(self) -> int:
        """A multiplexed worker: read the socket, hand each run its batches, until done."""
        while True:
            if self.handover is not None:
                return self.handover.exit_code
            if not self.driver_lost and self.pump(None, _DRIVER_POLL_SECONDS) == "driver":
                self.driver_lost = True
                for slot in self.slots.values():
                    slot.inbox.put(_DRIVER_LOST)
            for number, slot in list(self.slots.items()):
                if slot.thread is not None and not slot.thread.is_alive():
                    del self.slots[number]
            if not self.slots and (self.retired or self.driver_lost):
                break
            if self.driver_lost:
                time.sleep(0.2)
        # Every run is finished: end this process's own wandb-core now rather
        # than at interpreter exit.
        import wandb

        with contextlib.suppress(Exception):
            wandb.teardown()
        return 0

    def pump(self, watch: _PidWatch | None, timeout: float) -> str | None:
        """Wait up to ``timeout`` for the driver's next frame and hand it on.

        Returns ``"driver"`` if the driver is gone, ``"service"`` if ``watch``'s
        process ended first, else None.
        """
        waitables: list[Any] = [self.conn, *self.driver.waitables()]
        if watch is not None:
            waitables += watch.waitables()
        ready = wait(waitables, timeout=timeout)
        if watch is not None and (set(ready) & set(watch.waitables()) or watch.gone()):
            return "service"
        if self.conn not in ready:
            if ready or self.driver.gone():
                return "driver"
            return None
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            return "driver"
        try:
            frame = pickle.loads(data)
        except Exception as exc:
            # A value the driver could pickle and this process cannot load
            # (a class from the user's __main__ inside a wandb.Table): the
            # batch is lost, the worker lives on.
            self.say(None, logging.ERROR, f"could not read a batch of results ({exc!r}); skipped")
            return None
        self._dispatch(frame)
        return None

    def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, Batch):
            slot = self.slots.get(frame.run)
            if slot is not None:
                slot.inbox.put(frame.messages)
        elif isinstance(frame, OpenRun):
            self._open(frame)
        elif isinstance(frame, UseService):
            self._use_service(frame)
        elif isinstance(frame, Retired):
            self.retired = True
        else:
            raise TypeError(f"unexpected message {type(frame).__name__}")

    def _open(self, message: OpenRun) -> None:
        setup: WorkerSetup = cloudpickle.loads(message.payload)
        slot = _Slot(self, message.run, setup)
        self.slots[message.run] = slot
        if self.multi:
            slot.thread = threading.Thread(
                target=slot.run, name=f"tune-wandb-run-{message.run}", daemon=True
            )
            slot.thread.start()

    # -- wandb-core, shared by every run of the process ------------------------

    def _use_service(self, message: UseService) -> None:
        """The shared wandb-core was started again: the next ``wandb.init`` uses it."""
        if self.shared_service is not None:
            with self._service_changed:
                self.shared_service = (message.token, message.pid)
                os.environ["WANDB_SERVICE"] = message.token
                self._service_changed.notify_all()

    def renew_service(self, slot: _Slot, seen: int) -> int:
        """wandb-core died under ``slot``'s run, which ran on generation ``seen``.

        The first run to see a death ends wandb's connection to it and, with
        a shared one, waits for the launcher's new one; the others find that
        done. Returns the generation to start runs on.

        Raises:
            _HandOverError: wandb-core died once too often.
        """
        import wandb

        with self._service_lock:
            if self.generation == seen and not self.exhausted:
                if self.restarts >= _MAX_SERVICE_RESTARTS:
                    self.exhausted = True
                else:
                    self.restarts += 1
                    what = (
                        f"its {len(self.slots)} runs continue"
                        if self.multi
                        else "the run continues"
                    )
                    self.say(
                        None if self.multi else slot,
                        logging.WARNING,
                        f"its wandb-core died; a new one starts and {what} in a new piece "
                        f"(restart {self.restarts} of {_MAX_SERVICE_RESTARTS})",
                    )
                    # Clears wandb's connection and WANDB_SERVICE, whatever it raises.
                    with contextlib.suppress(BaseException):
                        wandb.teardown()
                    if self.shared_service is not None:
                        self._await_shared_service(slot.service)
                    self.generation += 1
            if self.exhausted:
                raise _HandOverError(
                    EXIT_SERVICE_LOST, f"its wandb-core died {self.restarts + 1} times"
                )
            return self.generation

    def _await_shared_service(self, dead: tuple[str, int] | None) -> None:
        """Wait (bounded) for the launcher's successor to ``dead``, else use one of our own.

        The successor may be known already: the launcher can see the shared
        wandb-core die, and say so, before any run here does.
        """
        deadline = time.monotonic() + _SERVICE_RESTART_SECONDS
        if self.multi:
            with self._service_changed:
                while self.shared_service == dead and time.monotonic() < deadline:
                    self._service_changed.wait(0.2)
        else:
            while self.shared_service == dead and time.monotonic() < deadline:
                if self.pump(None, 0.2) == "driver":
                    break
        if self.shared_service == dead:
            self.say(
                None,
                logging.WARNING,
                "the shared wandb-core was not started again in time; this worker starts one "
                "of its own",
            )
            self.shared_service = None
            os.environ.pop("WANDB_SERVICE", None)
        else:
            assert self.shared_service is not None
            os.environ["WANDB_SERVICE"] = self.shared_service[0]


class _Slot:
    """One run in a worker process: started, logged, finished, recovered.

    In a worker of its own it runs on the main thread; in a multiplexed worker
    on a thread of its own, fed through ``inbox`` by the main thread.
    """

    def __init__(self, process: _Process, number: int, setup: WorkerSetup) -> None:
        self.process = process
        self.number = number
        self.setup = setup
        self.requirements = process.requirements
        self.wb: Any = None
        self.warned: set[str] = set()
        #: The run's batches (and _DRIVER_LOST), as the main thread read them.
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        #: The generation of wandb-core the run was started on (see _Process.renew_service).
        self.generation = 0
        #: The shared wandb-core it was started on, if any: the launcher's news
        #: of a successor can come before the run sees this one die.
        self.service: tuple[str, int] | None = None
        #: Where an offline run's artifact files are staged (inside its run directory).
        self.staging_dir: str | None = None
        #: Rows and checkpoints handled and not yet seen in the run file, in
        #: order: logged again if wandb-core dies before writing them.
        self.unconfirmed: collections.deque[_Handled] = collections.deque()
        self.counter: _runfile.HistoryCounter | None = None
        self.confirmed_history = 0
        self.last_confirm = 0.0
        #: Seqs of the rows logged (a row logged again after a restart counts once).
        self.logged_seqs: set[int] = set()
        #: The wandb-core this worker's run talks to, watched for its death.
        self.service_pid: int | None = None
        self.service_watch: _PidWatch | None = None
        #: What the main thread is doing in wandb, and since when (for the watchdog).
        self.stage: tuple[str, float] = ("start", time.monotonic())
        #: Rows that have not reached the run file for _STALL_SECONDS (said once).
        self.stalled = False
        #: Messages read from the driver and not handled yet, in order (after
        #: wandb-core died: first those it had not written).
        self.todo: collections.deque[RunItem | FinishRun] = collections.deque()

    # -- messages to the driver --------------------------------------------

    def _send(self, message: object) -> None:
        self.process.send(message)

    def _say(self, level: int, text: str) -> None:
        self._send(WorkerLog(self.number, level, f"trial {self.setup.trial_name}: {text}"))

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self._say(logging.WARNING, text)

    def _doing(self, stage: str) -> None:
        self.stage = (stage, time.monotonic())

    # -- the run ------------------------------------------------------------

    def run(self) -> int:
        """Start, log and finish the run; the process's exit code (a worker of its own)."""
        multi = self.process.multi
        try:
            try:
                self._start_run()
            except _HandOverError:
                raise
            except Exception as exc:
                if multi:
                    # A worker of its own can try what this process cannot.
                    self._send(RunFailed(self.number, f"{type(exc).__name__}: {exc}"))
                    return 1
                where = self.setup.init_kwargs.get("dir") or "the trial's directory"
                self._say(
                    logging.ERROR,
                    f"could not start a W&B run in {where}, not even offline: "
                    f"{type(exc).__name__}: {exc}",
                )
                return 1
            exit_code = self._loop()
            self._finish(exit_code)
        except _HandOverError as handover:
            if multi and not self.process.exhausted:
                # This run only (it could not start again): a worker of its own takes it.
                self._send(RunFailed(self.number, str(handover)))
                return handover.exit_code
            self._say(logging.ERROR, f"{handover}; a new worker takes the run over")
            self.process.handover = handover
            return handover.exit_code
        return 0

    def _start_run(self) -> None:
        self._doing("start")
        _check_writable(self.setup.init_kwargs.get("dir"))
        if self.setup.replaces is not None:
            self._take_over(self.setup.replaces)
        self._init_run()

    def _init_run(self) -> None:
        """``wandb.init`` of the run (resumed, in a new piece, if it has pieces already)."""
        self._doing("init")
        process = self.process
        self.generation = process.generation
        self.service = process.shared_service
        kwargs = dict(self.setup.init_kwargs)
        settings = dict(kwargs.pop("settings", None) or {})
        # A stop from the W&B UI would interrupt the worker's main thread (every
        # run of a multiplexed worker); the trial is Tune's to stop.
        settings.setdefault("stop_fn", self._stop_fn())
        if process.multi:
            # Runs share the process: one wandb-core for all of them, and the
            # process's output belongs to none of them.
            kwargs["reinit"] = "create_new"
            # A run logging its trial's lines keeps "wrap" (wandb-core drops
            # console records of a run whose console is off) and releases the
            # process's own streams below.
            if not self.setup.capture_console:
                settings["console"] = "off"
        suffix = _piece_suffix(kwargs.get("dir"), kwargs.get("id"))
        if suffix and "x_sync_dir_suffix" not in settings:
            settings["x_sync_dir_suffix"] = suffix
        save_requirements = self.requirements is not None and "x_save_requirements" not in settings
        if save_requirements:
            settings["x_save_requirements"] = False
        if self.setup.api_key:
            settings["api_key"] = self.setup.api_key
        self.wb = run = self._wandb_init(kwargs, settings)
        if self.setup.capture_console:
            # The run's console capture is for the trial's lines the driver
            # sends; this process's own output stays out of it.
            _wandb_compat.release_own_console(run)
        self.counter = _runfile.HistoryCounter(run.settings.sync_file)
        self.confirmed_history = 0
        own = _wandb_compat.own_service_process()
        if process.shared_service is not None:
            self._watch_service(process.shared_service[1])
        else:
            self._watch_service(own.pid if own is not None else None)
        process.service_pid = self.service_pid
        # wandb stages artifact files in a per-user directory until they are
        # uploaded; an offline run's must travel with the run (to storage, to
        # the machine that runs `wandb sync`).
        self.staging_dir = None
        if run.offline:
            self.staging_dir = os.path.join(run.settings.sync_dir, _STAGING_DIR)
        if save_requirements:
            self._save_requirements(run)
        self._run_info_hook(run)
        # Restored trials report iterations again; with training_iteration as the
        # x-axis instead of wandb's _step, no row is dropped for going backwards.
        run.define_metric("training_iteration")
        run.define_metric("*", step_metric="training_iteration")
        self._send(
            RunStarted(
                run=self.number,
                run_id=run.id,
                name=run.name or self.setup.trial_name,
                url=None if run.offline else run.url,
                run_dir=run.settings.sync_dir,
                offline=bool(run.offline),
                service_pid=None if process.shared_service else self.service_pid,
            )
        )
        self._doing("idle")

    def _stop_fn(self) -> Any:
        """A plain function for wandb's ``stop_fn``.

        wandb deep-copies its settings: a bound method would copy this run's
        state, locks included.
        """

        def stopped_from_ui() -> None:
            self._stopped_from_ui()

        return stopped_from_ui

    def _stopped_from_ui(self) -> None:
        self._say(
            logging.WARNING,
            "W&B was asked to stop the run (from its page); the trial is Tune's to stop, so "
            "its results are still logged",
        )

    def _wandb_init(self, kwargs: dict[str, Any], settings: dict[str, Any]) -> Any:
        """``wandb.init``; online, offline instead if W&B does not answer (said once)."""
        import wandb

        if self.process.multi:
            return self._wandb_init_shared(kwargs, settings)
        offline = _settings.offline_or_disabled(kwargs, os.environ)
        if not offline:
            # wandb.init waits for W&B up to its init_timeout (90 s by default),
            # longer than the driver may wait (upload_timeout): stopped meanwhile,
            # the worker logs offline what it was sent instead of dying with it.
            signal.signal(signal.SIGTERM, _stop_waiting)
        try:
            return self._init_surviving_service(kwargs, settings, _teardown_quietly)
        except Exception as exc:
            if offline:
                raise
            failed = exc
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # The failed run's stream stays in wandb-core, its id "in use" for the
        # offline run, and a graceful teardown waits on the W&B that did not
        # answer: end this worker's own wandb-core, and start again on a new
        # one of its own (a shared one is left alone).
        os.environ.pop("WANDB_SERVICE", None)
        self.process.shared_service = None
        _wandb_compat.kill_own_service()
        with contextlib.suppress(Exception, SystemExit):
            wandb.teardown()
        settings.pop("api_key", None)
        run = wandb.init(settings=wandb.Settings(**settings), **{**kwargs, "mode": "offline"})
        where = run.settings.sync_dir
        # One truth per run: the online attempt's directory holds nothing.
        _runfile.remove_failed_attempts(os.path.dirname(where), run.id)
        self._say(
            logging.WARNING,
            f"wandb.init failed ({failed!r}); logging offline instead, in {where}. "
            f"Upload it later with: wandb sync {where}",
        )
        return run

    def _wandb_init_shared(self, kwargs: dict[str, Any], settings: dict[str, Any]) -> Any:
        """``wandb.init`` in a multiplexed worker: again on a new wandb-core if it died.

        Any other failure is raised: the driver gives the run a worker of its
        own, which can log offline instead (see :meth:`_wandb_init`).
        """

        def renew() -> None:
            # Every run of the process shares the wandb-core: renewed once for all.
            self.generation = self.process.renew_service(self, self.generation)

        return self._init_surviving_service(kwargs, settings, renew)

    def _init_surviving_service(
        self, kwargs: dict[str, Any], settings: dict[str, Any], renew: Callable[[], None]
    ) -> Any:
        """``wandb.init``; if its wandb-core dies in it, ``renew`` and the same init again.

        At most ``_MAX_SERVICE_RESTARTS`` times; any other failure is raised.
        """
        import wandb

        for attempt in range(_MAX_SERVICE_RESTARTS + 1):
            try:
                return wandb.init(settings=wandb.Settings(**settings), **kwargs)
            except Exception as exc:
                lost = isinstance(exc, _wandb_compat.service_lost_errors())
                if attempt == _MAX_SERVICE_RESTARTS or not (lost or _own_service_died()):
                    raise
                self._say(logging.WARNING, f"its wandb-core died in wandb.init ({exc!r})")
                renew()
        raise AssertionError("unreachable")

    def _watch_service(self, pid: int | None) -> None:
        if self.service_watch is not None:
            self.service_watch.close()
        self.service_pid = pid
        self.service_watch = _PidWatch(pid) if pid is not None else None

    def _take_over(self, run_file: str) -> None:
        """Before resuming the run: settle the piece a dead predecessor left."""
        uploaded = False
        if os.environ.get("WANDB_SERVICE"):
            # A shared wandb-core keeps a dead client's stream open: the run
            # id stays "in use" (wandb.init fails) and the rows it holds are
            # neither all written nor uploaded. Finish that stream first.
            uploaded = self._finish_dead_stream(self.setup.init_kwargs.get("id"))
        # The dead worker's wandb-core may still be writing its piece; once it is
        # complete, the driver learns how many rows landed there, and sends the
        # rows it handed over beyond those.
        landed = _wait_until_complete(run_file, self.setup.replaces_writer)
        self._send(PieceSettled(self.number, landed))
        if not uploaded:
            self._upload_dead_piece(run_file)
        if self.setup.storage is not None:
            # Its copy to storage may have been cut short by its death.
            self._copy_to_storage(os.path.dirname(run_file))

    def _upload_dead_piece(self, run_file: str) -> None:
        """Upload what a dead predecessor wrote and its wandb-core did not upload.

        An online piece's rows are in its run file, but its wandb-core died
        with the worker (or exits when it sees its parent gone) before
        uploading them all; the driver does not send those rows again, as
        they are on disk, so they must reach W&B from the file. ``wandb sync`` sends the
        piece again, and W&B keeps only the rows it did not have (each row's
        ``_step`` must move forward).
        """
        from tune_wandb.sync import wandb_sync

        piece = os.path.dirname(run_file)
        offline_run = os.path.basename(piece).startswith("offline-")
        if offline_run or _settings.offline_or_disabled(self.setup.init_kwargs, os.environ):
            return
        if os.path.exists(f"{run_file}.synced"):
            return
        env = dict(os.environ)
        if self.setup.api_key:
            env["WANDB_API_KEY"] = self.setup.api_key  # the child's environment, no file
        env["WANDB_SILENT"] = "true"
        if wandb_sync([piece], env=env, timeout=_UPLOAD_DEAD_PIECE_SECONDS) != 0:
            self._say(
                logging.WARNING,
                f"could not upload the piece a dead worker left in {piece}; it is on disk. "
                f"Upload it later with: wandb sync --include-online {piece}",
            )

    def _finish_dead_stream(self, run_id: str | None) -> bool:
        """Finish the stream a dead predecessor left open in a shared wandb-core.

        Returns whether it did (then the service wrote and uploaded it all).

        Attaching to it and finishing it writes and uploads every row the
        service took from the dead worker, and frees the run id to resume.
        (Closing it with ``inform_finish`` alone drops what it had not uploaded.)
        """
        if not run_id:
            return False
        try:
            dead = _wandb_compat.attach(run_id)
        except Exception:
            return False  # no such stream in the service: nothing to finish
        try:
            if dead is not None:
                dead.finish(exit_code=1)
                return True
        except Exception as exc:
            self._say(logging.WARNING, f"could not finish the dead worker's stream: {exc!r}")
        return False

    def _run_info_hook(self, run: Any) -> None:
        """Ray's WANDB_PROCESS_RUN_INFO_HOOK: the user's function, called with the run."""
        hook = os.environ.get(_settings.PROCESS_RUN_INFO_HOOK)
        if not hook:
            return
        try:
            _settings.load_hook(hook)(run)
        except Exception as exc:
            self._say(logging.WARNING, f"{_settings.PROCESS_RUN_INFO_HOOK}={hook} failed: {exc!r}")

    def _save_requirements(self, run: Any) -> None:
        assert self.requirements is not None
        try:
            path = os.path.join(run.dir, "requirements.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.requirements)
            run.save(path, base_path=run.dir, policy="now")
        except Exception as exc:
            self._say(logging.WARNING, f"could not save requirements.txt with the run: {exc!r}")

    def _loop(self) -> int:
        """Log what the driver sends until the end marker; its exit code."""
        while True:
            try:
                return self._serve()
            except _ServiceLostError:
                self._recover()

    def _serve(self) -> int:
        code = self._drain()
        while code is None:
            driver_lost = self._wait_for_work()
            self._confirm()
            if driver_lost:
                return self._driver_lost()
            code = self._drain()
        return code

    def _wait_for_work(self) -> bool:
        """Wait up to 1 s for the run's batches (moved to ``todo``); whether the driver is gone.

        Raises:
            _ServiceLostError: wandb-core ended meanwhile.
        """
        watch = self.service_watch
        if self.process.multi:
            try:
                items = [self.inbox.get(timeout=_DRIVER_POLL_SECONDS)]
            except queue.Empty:
                items = []
        else:
            event = self.process.pump(watch, _DRIVER_POLL_SECONDS)
            if event == "service":
                assert watch is not None
                raise _ServiceLostError(f"wandb-core (pid {watch.pid}) exited")
            items = [_DRIVER_LOST] if event == "driver" else []
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self.inbox.get_nowait())
        lost = False
        for item in items:
            if item == _DRIVER_LOST:
                lost = True
            else:
                self.todo.extend(item)
        if watch is not None and self.process.multi and watch.gone():
            raise _ServiceLostError(f"wandb-core (pid {watch.pid}) exited")
        return lost

    def _drain(self) -> int | None:
        """Handle the messages read and not handled yet, in order; the end marker's exit code.

        A message is taken off ``todo`` as it is handled: if wandb-core dies
        meanwhile, the rest are still there for the new one.
        """
        while self.todo:
            message = self.todo.popleft()
            if isinstance(message, FinishRun):
                return message.exit_code
            self._handle(message)
        return None

    def _handle(self, message: RunItem) -> None:
        """Log a row or upload a checkpoint; kept until the run file holds it.

        Raises:
            _ServiceLostError: wandb-core died: the message is logged again
                once a new one runs the run.
        """
        # Kept first: if wandb-core dies in the call, the message is logged again.
        handled = _Handled(message, recorded=False, at=time.monotonic())
        self.unconfirmed.append(handled)
        if isinstance(message, ConsoleLines):
            _wandb_compat.publish_console(self.wb, message.stream, message.lines)
        elif isinstance(message, LogRow):
            self.logged_seqs.add(message.seq)
            self._doing("log")
            try:
                handled.recorded = self._log(message)
            finally:
                self._doing("idle")
        elif isinstance(message, UpdateConfig):
            self._update_config(message.config)
        else:
            self._doing("upload")
            try:
                if isinstance(message, UploadTrialDir):
                    self._upload_trial_dir(message)
                else:
                    self._upload_checkpoint(message)
            finally:
                self._doing("idle")

    def _recover(self) -> None:
        """wandb-core died under the run: a new one, the same run in a new piece.

        What the dead wandb-core wrote is final: the rows it holds are
        confirmed, the others are logged again in the new piece, in order.
        At most ``_MAX_SERVICE_RESTARTS`` times; after that, a new worker
        takes the run over (the driver sends it what is unconfirmed).

        Raises:
            _HandOverError: wandb-core died once too often.
        """
        while True:
            self.generation = self.process.renew_service(self, self.generation)
            dead_piece = self.wb.settings.sync_file if self.wb is not None else None
            # The dead piece is final: confirm what it holds, and log the rest
            # again, before what was not handled yet.
            self._confirm(force=True)
            self.todo.extendleft(reversed([h.message for h in self.unconfirmed]))
            self.unconfirmed.clear()
            if dead_piece is not None:
                # Online, what it holds may not have reached W&B: from the file,
                # before the run resumes (so that W&B's step count is right).
                self._upload_dead_piece(dead_piece)
            try:
                self._init_run()
            except _ServiceLostError:
                continue
            except Exception as exc:
                raise _HandOverError(
                    EXIT_SERVICE_LOST, f"could not start its run again ({exc!r})"
                ) from exc
            return

    def _confirm(self, force: bool = False) -> None:
        """Tell the driver which rows are in the run file, about once a second.

        The driver keeps every row it sent until then, to send again to a
        replacement if this worker dies. Rows that do not reach the file for
        ``_STALL_SECONDS`` while wandb-core runs mean a full or read-only
        disk: said once, and the run ends with exit code 1.
        """
        now = time.monotonic()
        if not self.unconfirmed or self.counter is None:
            return
        if not force and now - self.last_confirm < _CONFIRM_SECONDS:
            return
        self.last_confirm = now
        count = self.counter.update()
        seq = None
        while self.confirmed_history < count and self.unconfirmed:
            handled = self.unconfirmed.popleft()
            if handled.recorded:
                self.confirmed_history += 1
            seq = handled.message.seq
        if seq is not None:
            self._send(Confirmed(run=self.number, seq=seq, history=count))
        self._check_writes(now)

    def _check_writes(self, now: float) -> None:
        oldest = next((h.at for h in self.unconfirmed if h.recorded), None)
        if self.stalled or oldest is None or now - oldest < _STALL_SECONDS:
            return
        if self.service_pid is not None and _stopped(self.service_pid):
            return  # not a disk: the watchdog sees to a stopped wandb-core
        self._report_stall()

    def _report_stall(self) -> None:
        """Say once that the run file does not take what is written; the run ends with 1."""
        self.stalled = True
        run_dir = self.wb.settings.sync_dir
        unwritten = self._unwritten()
        cause = _write_error(run_dir)
        self._say(
            logging.ERROR,
            f"{unwritten} rows have not reached its run file in {run_dir} for "
            f"{_STALL_SECONDS:g} s ({cause or 'is the disk full or read-only?'}). They stay "
            "in the driver's memory until the experiment ends; the run will end with exit "
            "code 1.",
        )

    def _raise_if_service_lost(self, exc: Exception) -> None:
        """Turn a wandb call's failure into :class:`_ServiceLostError` if wandb-core is gone.

        One of wandb's errors for a lost wandb-core, or any error while the
        watched wandb-core is gone.
        """
        watch = self.service_watch
        lost = isinstance(exc, _wandb_compat.service_lost_errors())
        if lost or (watch is not None and watch.gone()):
            raise _ServiceLostError(repr(exc)) from exc

    def _unwritten(self) -> int:
        """Rows logged that the run file does not hold (yet)."""
        return sum(1 for h in self.unconfirmed if h.recorded)

    def _driver_lost(self) -> int:
        self._say(logging.WARNING, "lost the Tune driver; finishing the run with what it has")
        return EXIT_DRIVER_LOST

    def _update_config(self, config: dict[str, Any]) -> None:
        try:
            self.wb.config.update(config, allow_val_change=True)
        except Exception as exc:
            self._raise_if_service_lost(exc)
            self._warn_once("config", f"could not update the run config: {exc!r}")

    def _log(self, message: LogRow) -> bool:
        """Log one row; whether it made a history record (confirmations count them)."""
        run = self.wb
        row = message.history
        if message.config:
            self._update_config(message.config)
        for key in _WANDB_OWN_KEYS:
            if key in row:
                del row[key]
                self._warn_once(
                    key,
                    f"result key {key!r} is not logged: wandb ignores it or uses it for its own "
                    "column (_step, _runtime, _timestamp, _wandb); rename it to log it",
                )
        notes = _filters.arrays_to_media(row, self.setup.image_kwargs, self.setup.video_kwargs)
        for key, note in notes.items():
            self._warn_once(key, note)
        try:
            run.log(row)
        except Exception as exc:
            self._raise_if_service_lost(exc)
            return self._log_keywise(row)
        return True

    def _log_keywise(self, row: dict[str, Any]) -> bool:
        """Log a row wandb refused key by key, into one history row as always.

        Each key goes in its own ``log(commit=False)`` call, which encodes it
        whole before it adds anything, so a key wandb refuses is left out and
        the others land together when the row is committed.
        """
        run = self.wb
        for key, value in row.items():
            try:
                run.log({key: value}, commit=False)
            except Exception as exc:
                self._raise_if_service_lost(exc)
                name = _utf8_key(key)
                if name == key:
                    self._warn_once(key, f"wandb.log refused {key!r} ({exc!r}); skipped")
                    continue
                try:
                    run.log({name: value}, commit=False)
                except Exception as again:
                    self._warn_once(key, f"wandb.log refused {key!r} ({again!r}); skipped")
                else:
                    self._warn_once(key, f"key {key!r} is not valid UTF-8; logged as {name!r}")
        try:
            run.log({}, commit=True)
        except Exception as exc:
            self._raise_if_service_lost(exc)
            self._warn_once("<row>", f"wandb.log failed for a row ({exc!r}); row skipped")
            return False
        return True

    def _upload_checkpoint(self, message: UploadCheckpoint) -> None:
        import wandb

        try:
            path = message.path
            if message.filesystem is not None:
                path = _download(message.filesystem, message.path)
            artifact = wandb.Artifact(
                name=f"checkpoint_{_artifact_safe(self.setup.trial_name)}", type="model"
            )
            aliases = ["latest"]
            if message.iteration is not None:
                aliases.append(f"iteration_{message.iteration}")
            self._log_artifact(artifact, path, aliases)
        except Exception as exc:
            self._raise_if_service_lost(exc)
            self._say(logging.WARNING, f"could not upload checkpoint {message.path}: {exc!r}")

    def _upload_trial_dir(self, message: UploadTrialDir) -> None:
        """The trial's directory as an artifact (type ``trial_dir``), as MLflow's ``save_artifact``.

        A missing or empty directory is said and skipped: wandb would log an
        empty artifact.
        """
        import wandb

        try:
            if not _has_files(message.path):
                self._say(
                    logging.WARNING,
                    f"save_trial_dir: {message.path} holds no files (or is gone); no artifact",
                )
                return
            artifact = wandb.Artifact(
                name=f"trial_dir_{_artifact_safe(self.setup.trial_name)}", type="trial_dir"
            )
            self._log_artifact(artifact, message.path, ["latest"])
        except Exception as exc:
            self._raise_if_service_lost(exc)
            self._say(
                logging.WARNING, f"could not upload the trial directory {message.path}: {exc!r}"
            )

    def _log_artifact(self, artifact: Any, path: str, aliases: list[str]) -> None:
        """Add ``path`` to ``artifact`` and log it; offline, staged inside the run directory.

        wandb reads its staging directory from ``WANDB_DATA_DIR`` as it stages:
        set for this call only, under the process's lock (runs share the process).
        """
        if self.staging_dir is None:
            artifact.add_dir(path)
            self.wb.log_artifact(artifact, aliases=aliases)
            return
        with self.process.env_lock:
            before = os.environ.get("WANDB_DATA_DIR")
            os.environ["WANDB_DATA_DIR"] = self.staging_dir
            try:
                artifact.add_dir(path)
                self.wb.log_artifact(artifact, aliases=aliases)
            finally:
                if before is None:
                    os.environ.pop("WANDB_DATA_DIR", None)
                else:
                    os.environ["WANDB_DATA_DIR"] = before

    def _finish(self, exit_code: int) -> None:
        """Finish the run (in a new piece if wandb-core dies meanwhile) and report it."""
        while True:
            try:
                # After a new wandb-core: what the dead one had not written first.
                self._drain()
                self._finish_run(exit_code)
            except _ServiceLostError:
                self._recover()
            else:
                return

    def _finish_run(self, exit_code: int) -> None:
        import wandb

        run = self.wb
        run_dir = run.settings.sync_dir
        run_file = run.settings.sync_file
        offline = bool(run.offline)
        disabled = bool(getattr(run, "disabled", False))
        # Online, finish() returns once wandb uploaded the run.
        uploaded = not offline and not disabled
        self._doing("finish")
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:
            self._raise_if_service_lost(exc)
            uploaded = False
            self._say(logging.ERROR, f"wandb.finish failed ({exc!r}); the run is in {run_dir}")
        # A shared wandb-core writes the end of the file after finish() returns.
        if not disabled and not self._await_exit_record(run_file) and not self.stalled:
            if self.service_watch is not None and self.service_watch.gone():
                raise _ServiceLostError("wandb-core exited before the run file was complete")
            self._say(
                logging.WARNING,
                f"the run file {run_file} had no exit record {_FILE_CLOSE_SECONDS:g}s after "
                "wandb.finish; what it holds is kept",
            )
        self._confirm(force=True)
        unwritten = self._unwritten() if self.stalled else 0
        if self.stalled:
            exit_code = 1  # the run file is missing rows, or its end: it did not succeed
        if uploaded:
            # So that `python -m tune_wandb sync` (and `wandb sync`) leave it alone.
            _runfile.mark_uploaded(run_file)
        if self.setup.storage is not None:
            self._doing("copy")
            run_dir = self._copy_to_storage(run_dir)
        rows = len(self.logged_seqs)
        self._send(RunFinished(self.number, exit_code, rows, run_dir, offline, unwritten=unwritten))
        self._doing("done")
        if not self.process.multi:
            # Ends this worker's wandb-core service, if it has one of its own,
            # now rather than at interpreter exit (a multiplexed worker's, once
            # every run is finished).
            with contextlib.suppress(Exception):
                wandb.teardown()

    def _await_exit_record(self, run_file: str) -> bool:
        """Wait for the run file's exit record; False at once if wandb-core is gone."""
        deadline = time.monotonic() + _FILE_CLOSE_SECONDS
        while not _runfile.wait_for_exit_record(run_file, 0.5):
            self._confirm()  # rows that never reach the file are said within _STALL_SECONDS
            if not self.stalled and _write_error(os.path.dirname(run_file)):
                self._report_stall()  # the disk refused the end of the file
            if time.monotonic() >= deadline or self.stalled:
                return False
            if self.service_watch is not None and self.service_watch.gone():
                # Gone, it may have written the end just before: one last look.
                return _runfile.wait_for_exit_record(run_file, 0.0)
        return True

    def _copy_to_storage(self, local_dir: str) -> str:
        target = self.setup.storage
        assert target is not None
        for attempt in range(3):
            try:
                return _runfile.copy_run_dir(local_dir, target.filesystem, target.fs_path)
            except Exception as exc:
                if attempt == 2:
                    self._say(
                        logging.ERROR,
                        f"could not copy the run to the experiment storage ({exc!r}); "
                        f"it stays in {local_dir}",
                    )
                    break
                time.sleep(1.0 + attempt)
        return local_dir


class _StoppedWaitingError(Exception):
    """The driver stopped the worker (SIGTERM) while ``wandb.init`` waited for W&B."""


def _stop_waiting(signum: int, frame: Any) -> None:
    # Once: a second SIGTERM ends the worker as SIGTERM does.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise _StoppedWaitingError("stopped by the driver while wandb.init waited for W&B")


def _piece_suffix(root: str | None, run_id: str | None) -> str | None:
    """A directory suffix for a run id that already has pieces under ``root``.

    wandb names a run's directory after the second it started and the run id;
    a trial resumed within the same second would otherwise share (and
    overwrite) the directory of the piece before it.
    """
    if not root or not run_id:
        return None
    wandb_dir = os.path.join(root, "wandb")
    try:
        names = os.listdir(wandb_dir)
    except OSError:
        return None
    pieces = [n for n in names if n.endswith(f"-{run_id}") or f"-{run_id}-part" in n]
    return f"part{len(pieces) + 1}" if pieces else None


#: Keys wandb keeps for itself: a result's ``_step`` and ``_runtime`` are
#: ignored, its ``_timestamp`` replaces the row's time, its ``_wandb`` the
#: summary's run facts, and an empty key is dropped without a word.
_WANDB_OWN_KEYS = ("_step", "_runtime", "_timestamp", "_wandb", "")


def _utf8_key(key: str) -> str:
    """``key`` with each lone surrogate (wandb cannot encode it) as U+FFFD, as in values."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in key)


def _download(filesystem: Any, path: str) -> str:
    import tempfile

    import pyarrow.fs

    local = tempfile.mkdtemp(prefix="tune-wandb-ckpt-")
    pyarrow.fs.copy_files(path, local, source_filesystem=filesystem)
    return local


#: Where an offline run's artifact files are staged, inside its run directory.
_STAGING_DIR = "artifact-staging"


def _wait_until_complete(run_file: str, writer: int | None) -> int:
    """Wait until a dead worker's run file is complete; its history record count.

    Complete: its wandb-core (``writer``) is gone, or, where it is not known,
    the file ends with its exit record or has not grown for ``_QUIET_SECONDS``.
    """
    if writer is not None:
        watch = _PidWatch(writer)
        deadline = time.monotonic() + _QUIET_MAX_SECONDS
        while not watch.gone() and time.monotonic() < deadline:
            time.sleep(0.05)
        watch.close()
        if time.monotonic() < deadline:
            return _runfile.HistoryCounter(run_file).update()
    counter = _runfile.HistoryCounter(run_file)
    deadline = time.monotonic() + _QUIET_MAX_SECONDS
    last_size, last_change = -1, time.monotonic()
    while True:
        counter.update()
        try:
            size = os.stat(run_file).st_size
        except OSError:
            size = -1
        now = time.monotonic()
        if size != last_size:
            last_size, last_change = size, now
        if counter.exited or now - last_change >= _QUIET_SECONDS or now >= deadline:
            return counter.count
        time.sleep(0.2)


class _Handled:
    """A message the worker handled, kept until its run file holds it."""

    __slots__ = ("at", "message", "recorded")

    def __init__(self, message: RunItem, recorded: bool, at: float) -> None:
        self.message = message
        #: It made a history record (a row wandb took): confirmations count these.
        self.recorded = recorded
        self.at = at


def _teardown_quietly() -> None:
    """End wandb's connection to its dead wandb-core; the next ``wandb.init`` starts one."""
    import wandb

    with contextlib.suppress(BaseException):
        wandb.teardown()


def _own_service_died() -> bool:
    """Whether the wandb-core this process started has exited."""
    process = _wandb_compat.own_service_process()
    return process is not None and process.poll() is not None


def _check_writable(root: str | None) -> None:
    """Make sure the run's directory takes files (wandb would quietly use /tmp instead).

    Raises:
        OSError: it does not (read-only, full, no permission), naming it.
    """
    if not root:
        return
    wandb_dir = os.path.join(root, "wandb")
    try:
        os.makedirs(wandb_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tune-wandb-probe-", dir=wandb_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror}: cannot write in {wandb_dir}") from exc


def _write_error(run_dir: str) -> str:
    """The last write error wandb-core logged for a run (its debug-internal.log), if any."""
    path = os.path.join(run_dir, "logs", "debug-internal.log")
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 65536))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)  # wandb-core logs JSON lines
            level, message = str(entry.get("level", "")), str(entry.get("msg", ""))
        except (ValueError, AttributeError):
            continue  # a torn line (the log may be cut short by the same disk)
        # Only its errors: an INFO line about its writer is no cause.
        if level.upper() == "ERROR" and "write" in message.lower():
            # "...: write <path>: file too large": the last part is the cause.
            return message.rsplit(": ", 1)[-1].strip()[:200]
    return ""


def _has_files(path: str) -> bool:
    """Whether the directory ``path`` holds at least one file, at any depth."""
    return any(files for _, _, files in os.walk(path))


def _artifact_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
