"""The driver's side of the process model: the launcher, the workers, their sockets.

:class:`WorkerPool` starts the launcher (``python -m tune_wandb._launcher``, never
a fork of the driver) and asks it, from a feeder thread, for one worker per
trial. Each worker has a socket of its own, fed by a sender thread that
filters, batches, pickles and sends, so that putting a result costs the Tune
loop a queue append and nothing that waits on a worker, on W&B or on the
network. A monitor thread reads what workers and the launcher say, and reports
a worker that died before finishing its run, with its exit code.

Shutdown escalates as CPython's process pool does: end marker, join with a
deadline, SIGTERM, SIGKILL; every process is reaped.
"""

from __future__ import annotations

import _thread
import collections
import contextlib
import logging
import os
import pickle
import queue
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import send_handle
from typing import Any

import cloudpickle

from tune_wandb._backlog import Backlog
from tune_wandb._protocol import (
    Batch,
    Confirmed,
    FinishRun,
    LauncherError,
    LogRow,
    Resend,
    RunFinished,
    RunStarted,
    ShutdownLauncher,
    SpawnWorker,
    StopWorker,
    UploadCheckpoint,
    WorkerExited,
    WorkerLog,
    WorkerSetup,
    WorkerStarted,
)

logger = logging.getLogger("tune_wandb")

#: The most messages a sender puts in one batch.
_MAX_BATCH = 512
#: The most messages a sender takes off its queue per round: more than a batch,
#: so that the queue empties even while the worker takes nothing.
_MAX_TAKE = 16 * _MAX_BATCH
#: How long a sender lets messages pile up before it sends them. Batching
#: spares the driver a thread wake-up, a pickle call and a socket write per
#: result; a logging delay of this order is invisible in W&B.
_LINGER_SECONDS = 0.1
#: Empty polls (of _LINGER_SECONDS each) before a sender blocks until the next message.
_IDLE_POLLS = 10
#: The most messages of one run held in the driver's memory while its worker
#: cannot keep up; the rest is spooled to a temporary file (see _backlog).
_BACKLOG_IN_MEMORY = 4096
#: How long each escalation step (SIGTERM, SIGKILL) waits for processes to go.
_STOP_STEP_SECONDS = 5.0


@dataclass(frozen=True)
class _SpawnRequest:
    """Internal: a worker for the feeder thread to ask the launcher for."""

    handle: WorkerHandle
    setup: WorkerSetup


@dataclass(frozen=True)
class _StopFeeder:
    """Internal marker: the feeder thread ends."""


@dataclass(frozen=True)
class _StopSender:
    """Internal marker: the sender thread ends without sending anything more."""


@dataclass(slots=True)
class RawResult:
    """A Tune result not filtered yet: the sender thread makes it a LogRow.

    Never crosses a process; not frozen, as that makes it slower to build on
    the Tune loop.
    """

    seq: int
    result: dict[str, Any]


#: Turns a raw result into the row the worker logs (the callback's filters).
Prepare = Callable[[int, dict[str, Any]], LogRow]


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


class _Sender:
    """A worker's outbound queue: a thread filters, pickles and sends what is put.

    The caller's cost is one ``SimpleQueue.put``. Filtering (``prepare``),
    pickling and the socket write happen on this thread, which lets messages
    pile up for a moment and sends them as one batch.
    """

    def __init__(self, prepare: Prepare | None, clock: ThreadClock) -> None:
        self._conn: Connection | None = None
        self._prepare = prepare
        self._clock = clock
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: The queue's own put: no Python frame between the caller and the queue.
        #: Messages put before the worker's socket exists wait in the queue.
        self.put: Callable[[Any], None] = self._queue.put
        #: For warnings: the trial, and the keys already said to be unpicklable.
        self.trial_name = ""
        self.unpicklable: set[str] = set()
        #: Rows and checkpoints sent and not yet confirmed in the run file, in order.
        self.unconfirmed: collections.deque[LogRow | UploadCheckpoint] = collections.deque()
        #: The last :class:`Confirmed`: rows up to ``seq`` are in the run file,
        #: which then held ``history`` history records.
        self.confirmed = Confirmed(seq=0, history=0)
        #: What the worker was not sent yet: filtered, in order; past
        #: ``_BACKLOG_IN_MEMORY`` messages it is spooled to disk.
        self.backlog = Backlog(_BACKLOG_IN_MEMORY, _MAX_BATCH, self._make_picklable)
        #: The framed batch being written, what is left of it, and its messages.
        self._out: memoryview = memoryview(b"")
        self._out_messages: tuple[Any, ...] = ()
        self.stopped = threading.Event()

    def start(self, conn: Connection) -> None:
        """Start sending on ``conn``."""
        self._conn = conn
        # threading.Thread.start() waits until the new thread runs, milliseconds
        # on a busy machine; the low-level start returns at once.
        _thread.start_new_thread(self._run, ())

    def _pickle(self, messages: tuple[Any, ...]) -> bytes:
        try:
            return pickle.dumps(Batch(messages), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            # The filters pass only values that pickle, but for wandb media
            # made by the user (a wandb.Table holding a lock): such a value is
            # taken out of its row, in place, and the rest of the batch goes.
            for message in messages:
                self._make_picklable(message)
            return pickle.dumps(Batch(messages), protocol=pickle.HIGHEST_PROTOCOL)

    def _make_picklable(self, message: Any) -> None:
        if isinstance(message, LogRow):
            for part in (message.history, message.config or {}):
                for key in list(part):
                    try:
                        pickle.dumps(part[key], protocol=pickle.HIGHEST_PROTOCOL)
                    except Exception as exc:
                        del part[key]
                        if key not in self.unpicklable:
                            self.unpicklable.add(key)
                            logger.warning(
                                "tune-wandb: trial %s: the value of %r cannot be pickled for "
                                "the W&B worker (%r), so it is not logged (said once per trial).",
                                self.trial_name,
                                key,
                                exc,
                            )
        for inner in getattr(message, "messages", ()):
            self._make_picklable(inner)

    def _ready(self, message: Any) -> Any:
        if isinstance(message, RawResult):
            assert self._prepare is not None
            try:
                return self._prepare(message.seq, message.result)
            except Exception:
                # A bug in the filters must cost one row, never the trial's logging.
                logger.exception("tune-wandb: could not filter a result; it is skipped")
                return None
        return message

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._clock.add_current_thread()
            self.stopped.set()

    def confirm(self, confirmed: Confirmed) -> None:
        """The worker's word that rows up to ``confirmed.seq`` are on disk (monitor thread)."""
        self.confirmed = confirmed
        unconfirmed = self.unconfirmed
        with contextlib.suppress(IndexError):
            while unconfirmed[0].seq <= confirmed.seq:
                unconfirmed.popleft()

    def leftovers(self, timeout: float) -> tuple[list[Any], list[Any]]:
        """After the worker died: ``(sent, not sent)``, in order, for its replacement.

        ``sent`` are rows and checkpoints the dead worker was sent and did
        not confirm; ``not sent`` is the rest, still raw. Waits up to
        ``timeout`` for this sender's thread to stop.
        """
        self._queue.put(_StopSender())
        self.stopped.wait(timeout)
        sent = list(self.unconfirmed)
        self.unconfirmed.clear()
        # A batch written in part never reached the worker whole.
        rest = [*self._out_messages, *self.backlog.drain()]
        self._out_messages, self._out = (), memoryview(b"")
        self.backlog.close()
        with contextlib.suppress(queue.Empty):
            while True:
                rest.append(self._queue.get_nowait())
        rest = [m for m in rest if not isinstance(m, _StopSender)]
        return sent, rest

    def _loop(self) -> None:
        assert self._conn is not None
        # The sender's own descriptor for the same socket: it writes without
        # blocking (MSG_DONTWAIT), so a worker that does not read never stops
        # this thread from taking results off the queue into the backlog. The
        # monitor thread reads the socket's other direction through the
        # Connection, unaffected.
        sock = socket.socket(fileno=os.dup(self._conn.fileno()))
        try:
            self._pump(sock)
        finally:
            sock.close()

    def _pump(self, sock: socket.socket) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        backlog = self.backlog
        idle = 0
        busy = False
        while True:
            if self._out:
                # The worker has not taken the last batch yet: wait until it
                # can take more, or for the next batch's worth of time.
                select.select([], [sock], [], _LINGER_SECONDS)
            elif idle >= _IDLE_POLLS and not backlog:
                # Nothing came for a while: block, so a paused trial costs nothing.
                if not self._take(get()):
                    return
                idle = 0
            elif not busy:
                # Polling on a timer rather than blocking in get() means that a
                # put() never wakes this thread: the Tune loop pays no thread
                # wake-up, and this thread takes the GIL once per batch.
                time.sleep(_LINGER_SECONDS)
            taken = 0
            with contextlib.suppress(queue.Empty):
                while taken < _MAX_TAKE:
                    if not self._take(get_nowait()):
                        return
                    taken += 1
            if not self._write(sock):
                return
            # More waiting (a full batch taken, or a backlog the worker can
            # take now): go round without sleeping first.
            busy = taken >= _MAX_TAKE or (bool(backlog) and not self._out)
            idle = 0 if taken or self._out or backlog else idle + 1

    def _take(self, message: Any) -> bool:
        """Put a message from the queue into the backlog; False at a stop marker."""
        if isinstance(message, _StopSender):
            return False
        ready = self._ready(message)
        if ready is not None:
            self.backlog.append(ready)
        return True

    def _write(self, sock: socket.socket) -> bool:
        """Send what the worker can take now; False when this sender is done."""
        while True:
            if not self._out:
                messages = tuple(self.backlog.take(_MAX_BATCH))
                if not messages:
                    return True
                data = self._pickle(messages)
                self._out = memoryview(_frame(data))
                self._out_messages = messages
            try:
                sent = sock.send(self._out, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                # The worker is gone: what it did not get waits for its replacement.
                return False
            self._out = self._out[sent:]
            if self._out:
                return True
            messages, self._out_messages = self._out_messages, ()
            self.unconfirmed.extend(
                m for m in messages if isinstance(m, (LogRow, UploadCheckpoint))
            )
            if any(isinstance(m, FinishRun) for m in messages):
                return False


def _frame(data: bytes) -> bytes:
    """``data`` framed as ``multiprocessing.connection.Connection.send_bytes`` frames it."""
    if len(data) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(data)) + data
    return struct.pack("!i", len(data)) + data


class WorkerHandle:
    """The driver's view of one trial's worker."""

    def __init__(
        self,
        worker_id: str,
        trial_name: str,
        prepare: Prepare | None = None,
        clock: ThreadClock | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.trial_name = trial_name
        #: The driver's end of the worker's socket, set by the pool's feeder thread.
        self.conn: Connection | None = None
        self.sender = _Sender(prepare, clock or ThreadClock())
        self.sender.trial_name = trial_name
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.started: RunStarted | None = None
        self.finished: RunFinished | None = None
        self.finishing = False
        self.stopped_by_us = False
        self.conn_open = False
        self.exited = threading.Event()

    def put(self, message: RawResult | LogRow | UploadCheckpoint | Resend) -> None:
        """Queue a message for the worker; returns at once."""
        self.sender.put(message)

    @property
    def put_nowait(self) -> Callable[[Any], None]:
        """The sender queue's own ``put``, for the one call per result on the Tune loop."""
        return self.sender.put

    def finish(self, exit_code: int) -> None:
        """Send the end marker (once); returns at once."""
        if not self.finishing:
            self.finishing = True
            self.sender.put(FinishRun(exit_code))

    @property
    def run_file(self) -> str | None:
        """The run file this worker writes, once its run started."""
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


class WorkerPool:
    """Starts and ends the workers of one experiment.

    The pool can be closed and started again (one per callback, reused
    across experiments run with the same callback object).
    """

    def __init__(self, shared_service: bool = False) -> None:
        self.shared_service = shared_service
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._workers: dict[str, WorkerHandle] = {}
        self._launcher: subprocess.Popen[bytes] | None = None
        self._launcher_conn: Connection | None = None
        self._monitor: threading.Thread | None = None
        self._wake_r: Connection | None = None
        self._wake_w: Connection | None = None
        self._closing = False
        self.thread_clock = ThreadClock()
        self._spawns: queue.SimpleQueue[_SpawnRequest | _StopFeeder] = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._running = False

    # -- start --------------------------------------------------------------

    def start(self) -> None:
        """Start the launcher and the monitor thread if they are not running."""
        with self._lock:
            self._closing = False
            self._running = True
            if self._launcher is None or self._launcher.poll() is not None:
                self._start_launcher()
            if self._feeder is None or not self._feeder.is_alive():
                self._feeder = threading.Thread(
                    target=self._feed_loop, name="tune-wandb-feeder", daemon=True
                )
                self._feeder.start()
            if self._monitor is None or not self._monitor.is_alive():
                wake_r, wake_w = socket.socketpair()
                self._wake_r = Connection(wake_r.detach())
                self._wake_w = Connection(wake_w.detach())
                self._monitor = threading.Thread(
                    target=self._monitor_loop, name="tune-wandb-monitor", daemon=True
                )
                self._monitor.start()

    def _start_launcher(self) -> None:
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
        finally:
            theirs.close()
        self._launcher_conn = Connection(ours.detach())
        self._wake()

    def spawn(
        self,
        worker_id: str,
        trial_name: str,
        setup: WorkerSetup,
        prepare: Prepare | None = None,
    ) -> WorkerHandle:
        """Ask for a worker; returns at once, with nothing but Python objects made.

        The socket, the payload and the request to the launcher are made on the
        pool's feeder thread: any system call on the Tune loop hands the GIL to
        another thread, which may keep it for the interpreter's whole switch
        interval (5 ms). ``prepare`` turns the :class:`RawResult` messages put on
        the handle into rows, on the handle's sender thread.
        """
        if not self._running:
            self.start()
        handle = WorkerHandle(worker_id, trial_name, prepare, self.thread_clock)
        self._workers[worker_id] = handle
        self._spawns.put(_SpawnRequest(handle, setup))
        return handle

    def _feed_loop(self) -> None:
        try:
            while True:
                request = self._spawns.get()
                if not isinstance(request, _SpawnRequest):
                    return
                self._feed(request)
        finally:
            self.thread_clock.add_current_thread()

    def _feed(self, request: _SpawnRequest) -> None:
        handle = request.handle
        payload = cloudpickle.dumps(request.setup, protocol=pickle.HIGHEST_PROTOCOL)
        ours, theirs = socket.socketpair()
        handle.conn = Connection(ours.detach())
        handle.conn_open = True
        handle.sender.start(handle.conn)
        with self._lock:
            try:
                # A launcher that died since the last trial is started again, once.
                for attempt in (1, 2):
                    try:
                        self._send_spawn(handle.worker_id, payload, theirs.fileno())
                        break
                    except OSError:
                        if attempt == 2:
                            raise
                        self._start_launcher()
            except OSError as exc:
                logger.error(  # noqa: TRY400 - the cause is in the message; no traceback wanted
                    "tune-wandb: could not reach the launcher to start a worker for %s: %r",
                    handle.trial_name,
                    exc,
                )
            finally:
                theirs.close()
            self._wake()

    def _send_spawn(self, worker_id: str, payload: bytes, fd: int) -> None:
        conn, launcher = self._launcher_conn, self._launcher
        if conn is None or launcher is None or launcher.poll() is not None:
            raise OSError("the launcher is not running")
        conn.send_bytes(pickle.dumps(SpawnWorker(worker_id, payload)))
        send_handle(conn, fd, launcher.pid)

    def handles(self) -> list[WorkerHandle]:
        """Every worker this pool started and has not forgotten."""
        with self._lock:
            return list(self._workers.values())

    # -- the monitor thread ---------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send_bytes(b"")

    def _monitor_loop(self) -> None:
        try:
            self._monitor_forever()
        finally:
            self.thread_clock.add_current_thread()

    def _monitor_forever(self) -> None:
        # Only this thread reads from or closes the sockets once they are
        # registered, so a socket is never closed under a wait() on it.
        while True:
            with self._lock:
                if self._closing:
                    self._close_all_conns()
                    return
                wake, launcher = self._wake_r, self._launcher_conn
                by_conn = {
                    h.conn: h for h in self._workers.values() if h.conn_open and h.conn is not None
                }
            waitables: list[Any] = [c for c in (wake, launcher) if c is not None]
            ready = wait([*waitables, *by_conn], timeout=1.0)
            for conn in ready:
                if conn is wake:
                    with contextlib.suppress(OSError, EOFError):
                        while wake is not None and wake.poll():
                            wake.recv_bytes()
                elif conn is launcher:
                    self._read_launcher(conn)
                else:
                    self._read_worker(by_conn[conn])  # type: ignore[index]

    def _close_all_conns(self) -> None:
        if self._launcher_conn is not None:
            self._launcher_conn.close()
            self._launcher_conn = None
        for handle in self._workers.values():
            handle.sender.put(_StopSender())
            if handle.conn_open:
                handle.conn_open = False
                with contextlib.suppress(OSError):
                    if handle.conn is not None:
                        handle.conn.close()
        self._workers.clear()

    def _read_launcher(self, conn: Connection) -> None:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            with self._lock:
                self._launcher_conn = None
                lost = [h for h in self._workers.values() if not h.exited.is_set()]
            conn.close()
            for handle in lost:
                self._drain(handle)
                self._mark_exited(handle, None)
            return
        with self._lock:
            target = self._workers.get(getattr(message, "worker_id", ""))
        if target is None:
            return
        handle = target
        if isinstance(message, WorkerStarted):
            handle.pid = message.pid
        elif isinstance(message, WorkerExited):
            self._drain(handle)
            self._mark_exited(handle, message.exitcode)
        elif isinstance(message, LauncherError):
            logger.error("tune-wandb: trial %s: %s", handle.trial_name, message.message)
            self._mark_exited(handle, None)

    def _read_worker(self, handle: WorkerHandle) -> None:
        try:
            assert handle.conn is not None
            message = pickle.loads(handle.conn.recv_bytes())
        except (EOFError, OSError):
            handle.conn_open = False
            return
        if isinstance(message, RunStarted):
            handle.started = message
            where = message.url or message.run_dir
            logger.info("tune-wandb: W&B run %s (%s): %s", message.name, message.run_id, where)
        elif isinstance(message, Confirmed):
            handle.sender.confirm(message)
        elif isinstance(message, WorkerLog):
            logger.log(message.level, "tune-wandb: %s", message.message)
        elif isinstance(message, RunFinished):
            handle.finished = message
            with self._changed:
                self._changed.notify_all()

    def _drain(self, handle: WorkerHandle) -> None:
        """Read what a dead worker said before it went."""
        while handle.conn_open:
            try:
                if handle.conn is None or not handle.conn.poll():
                    break
            except (OSError, EOFError):
                break
            self._read_worker(handle)

    def _mark_exited(self, handle: WorkerHandle, exitcode: int | None) -> None:
        handle.exitcode = exitcode
        if handle.finished is None and not handle.stopped_by_us:
            where = handle.run_dir or "the trial's directory"
            logger.error(
                "tune-wandb: the W&B worker of trial %s (pid %s) ended with exit code %s "
                "before finishing its run; what it logged is on disk in %s",
                handle.trial_name,
                handle.pid,
                exitcode,
                where,
            )
        handle.sender.put(_StopSender())
        handle.exited.set()
        with contextlib.suppress(OSError):
            if handle.conn is not None:
                handle.conn.close()
        handle.conn_open = False
        with self._changed:
            self._changed.notify_all()

    # -- ends -----------------------------------------------------------------

    def wait(self, handles: list[WorkerHandle], timeout: float) -> list[WorkerHandle]:
        """Wait until every handle's run finished or its worker exited.

        Returns the handles still pending at the deadline.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                pending = [h for h in handles if h.finished is None and not h.exited.is_set()]
                left = deadline - time.monotonic()
                if not pending or left <= 0:
                    return pending
                self._changed.wait(min(left, 1.0))

    def stop(self, handles: list[WorkerHandle]) -> None:
        """End workers that did not finish in time: SIGTERM, then SIGKILL."""
        for kill in (False, True):
            alive = [h for h in handles if not h.exited.is_set()]
            if not alive:
                return
            for handle in alive:
                handle.stopped_by_us = True
                self._tell_launcher(StopWorker(handle.worker_id, kill=kill))
            deadline = time.monotonic() + _STOP_STEP_SECONDS
            for handle in alive:
                handle.exited.wait(max(0.0, deadline - time.monotonic()))

    def _tell_launcher(self, message: object) -> None:
        with self._lock:
            conn = self._launcher_conn
            if conn is None:
                return
            with contextlib.suppress(OSError):
                conn.send_bytes(pickle.dumps(message))

    def close(self) -> None:
        """End the launcher and the monitor thread; every process is reaped.

        Workers still running are ended first (see :meth:`stop`).
        """
        self._running = False
        feeder = self._feeder
        if feeder is not None:
            self._spawns.put(_StopFeeder())
            feeder.join(_STOP_STEP_SECONDS)
            self._feeder = None
        with self._lock:
            handles = [h for h in self._workers.values() if not h.exited.is_set()]
        self.stop(handles)
        launcher = self._launcher
        if launcher is not None:
            self._tell_launcher(ShutdownLauncher(grace_seconds=0.0))
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
        monitor = self._monitor
        with self._lock:
            self._closing = True
            self._launcher = None
            self._wake()
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join(_STOP_STEP_SECONDS)
        with self._lock:
            self._close_all_conns()
        self._monitor = None
        for conn in (self._wake_r, self._wake_w):
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
        self._wake_r = self._wake_w = None
