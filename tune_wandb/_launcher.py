"""The launcher: a process of our own that forks the workers.

The driver starts it as ``python -m tune_wandb._launcher FD`` (see
:mod:`tune_wandb._pool`), so it never runs the user's ``__main__`` and never
touches the process-wide start method of the user's ``multiprocessing``. It
imports wandb once, then forks a worker on each request; forking is safe here
because the launcher has a single thread, and cheap because every worker
inherits the imported wandb.

As the parent, it watches each worker's ``sentinel`` and reports each exit,
with its exit code, to the driver. When the driver's socket closes (the driver
ended or died) it stops taking requests, gives its workers time to finish their
runs, then ends and reaps them.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from tune_wandb import _wandb_compat
from tune_wandb._calls import ForkedCalls
from tune_wandb._channel import FrameReader, frame, receive_with_fds
from tune_wandb._protocol import (
    CallInFork,
    LauncherError,
    ServiceStarted,
    ShutdownLauncher,
    SpawnWorker,
    StopWorker,
    WorkerExited,
    WorkerStarted,
)
from tune_wandb._worker import worker_main

#: How long workers get to finish their runs once the driver is gone.
_ORPHAN_GRACE_SECONDS = 60.0

#: What ``wandb.init`` and a run import lazily (wandb 0.31, measured with
#: ``sys.modules`` before and after a run). Imported once here, they cost a
#: forked worker nothing: 0.17 CPU-s less per trial.
_WARM_MODULES = (
    "wandb.sdk.wandb_init",
    "wandb.sdk.wandb_run",
    "wandb.sdk.launch",
    "wandb.sdk.launch.inputs.internal",
    "wandb.apis.public",
    "wandb.sdk.lib.gitlib",
    "wandb._analytics",
    "wandb.docker",
    "wandb.sdk.data_types.image",
    "wandb.sdk.data_types.video",
    "requests",
    "psutil",
    "yaml",
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk._logs",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
)

#: A shared wandb-core exits by itself after this long without clients, in
#: case the launcher is killed before it can stop it.
_SERVICE_IDLE_TIMEOUT = "2m"
#: How often the launcher checks that the shared wandb-core lives.
_SERVICE_POLL_SECONDS = 0.5


def _warm_up() -> str | None:
    """Import what every worker needs, once, before any fork.

    Modules missing from another wandb version are skipped: warming up is an
    optimisation, never a requirement. Returns the ``requirements.txt`` of
    this environment (None if it cannot be listed): ``wandb.init`` would
    otherwise read every installed distribution's metadata in every worker,
    ~30% of a worker's Python time.
    """
    import importlib

    import wandb  # noqa: F401

    for name in _WARM_MODULES:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    requirements = _wandb_compat.installed_requirements()
    # Objects that exist now are shared with every worker by fork; keeping the
    # collector off them keeps those pages shared instead of copied on write.
    gc.freeze()
    return requirements


class _SharedService:
    """One wandb-core for every worker of the experiment (``WANDB_SERVICE``).

    Started with wandb's own detached-service helper, which starts the process
    and reads its address without starting a thread, so the launcher can still
    fork safely afterwards. Not started when the user's environment already
    names a service.
    """

    def __init__(self, wanted: bool) -> None:
        self.process: Any = None
        self.token: str | None = None
        if wanted and not os.environ.get("WANDB_SERVICE"):
            self.start()

    def start(self) -> bool:
        """Start a wandb-core; whether it runs."""
        try:
            self.process, self.token = _wandb_compat.start_detached_service(_SERVICE_IDLE_TIMEOUT)
        except Exception as exc:
            self.process, self.token = None, None
            print(f"tune-wandb: no shared wandb-core ({exc!r}); one per worker", file=sys.stderr)
            return False
        return True

    @property
    def address(self) -> tuple[str, int] | None:
        """``(WANDB_SERVICE value, pid)`` for the workers; None: each starts its own."""
        if self.process is None or self.token is None:
            return None
        return self.token, self.process.pid

    def died(self) -> bool:
        """Whether the service ended (reaped if so)."""
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        """End the service (its runs are finished by now) and reap it."""
        process = self.process
        if process is None:
            return
        for send in (process.terminate, process.kill):
            with contextlib.suppress(OSError):
                send()
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                continue
            return


class _Launcher:
    def __init__(
        self, sock: socket.socket, service: _SharedService, requirements: str | None
    ) -> None:
        self.sock = sock
        self.service = service
        self.requirements = requirements
        self.ctx = multiprocessing.get_context("fork")
        self.workers: dict[str, BaseProcess] = {}
        self._reader = FrameReader()
        #: Worker sockets passed by the driver, in the order of their requests.
        self._fds: collections.deque[int] = collections.deque()
        self.calls = ForkedCalls(self.ctx, self._send)

    def _send(self, message: object) -> None:
        # Blocking: the driver's pool thread always reads this socket.
        with contextlib.suppress(OSError):
            self.sock.sendall(frame(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)))

    def serve(self) -> float:
        """Answer requests until told to stop; returns the grace for the workers."""
        self._announce_service()
        while True:
            sentinels = {p.sentinel: wid for wid, p in self.workers.items()}
            # A timeout, to notice the shared wandb-core's end (not our child's sentinel).
            ready = wait(
                [self.sock, *sentinels, *self.calls.waitables()], timeout=_SERVICE_POLL_SECONDS
            )
            if self.service.died():
                self._restart_service()
            self.calls.serve(ready)
            for obj in ready:
                if obj in sentinels:
                    self._reap(sentinels[obj])
            if self.sock not in ready:
                continue
            try:
                data = receive_with_fds(self.sock, self._fds)
            except OSError:
                data = b""
            if not data:
                return _ORPHAN_GRACE_SECONDS
            for payload in self._reader.feed(data):
                message = pickle.loads(payload)
                if isinstance(message, SpawnWorker):
                    self._spawn(message)
                elif isinstance(message, StopWorker):
                    self._stop(message)
                elif isinstance(message, CallInFork):
                    # The child must not keep this launcher's socket, nor the workers' to come.
                    self.calls.start(message, (self.sock.fileno(), *self._fds))
                elif isinstance(message, ShutdownLauncher):
                    return message.grace_seconds

    def _spawn(self, message: SpawnWorker) -> None:
        # Each request's frame carried its worker's socket, in order.
        fd = self._fds.popleft()
        try:
            process = self.ctx.Process(
                target=worker_main,
                args=(
                    fd,
                    message.payload,
                    # What the worker must not keep: this launcher's socket, and
                    # the sockets of the workers not forked yet.
                    (self.sock.fileno(), *self._fds),
                    self.service.address,
                    self.requirements,
                ),
                name=f"tune-wandb-worker-{message.worker_id}",
                daemon=False,
            )
            process.start()
        except Exception as exc:
            self._send(LauncherError(message.worker_id, f"could not fork a worker: {exc!r}"))
            return
        finally:
            # The worker holds its own copy; the launcher must not keep the socket open.
            with contextlib.suppress(OSError):
                os.close(fd)
        self.workers[message.worker_id] = process
        assert process.pid is not None
        self._send(WorkerStarted(message.worker_id, process.pid))

    def _announce_service(self) -> None:
        """Tell the driver the shared wandb-core's address (it tells live workers)."""
        address = self.service.address
        if address is not None:
            self._send(ServiceStarted(*address))

    def _restart_service(self) -> None:
        """The shared wandb-core died: a new one for every worker, live or to come."""
        if self.service.start():
            self._announce_service()

    def _stop(self, message: StopWorker) -> None:
        process = self.workers.get(message.worker_id)
        if process is None or not process.is_alive():
            return
        if message.kill:
            process.kill()
        else:
            process.terminate()
            assert process.pid is not None
            # A stopped worker (SIGSTOP, a debugger) takes SIGTERM only once continued.
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGCONT)

    def _reap(self, worker_id: str) -> None:
        process = self.workers.pop(worker_id)
        process.join()
        assert process.pid is not None
        assert process.exitcode is not None
        self._send(WorkerExited(worker_id, process.pid, process.exitcode))

    def shutdown(self, grace: float) -> None:
        """End every worker: join with a deadline, then SIGTERM, then SIGKILL."""
        self.calls.kill_all()
        deadline = time.monotonic() + grace
        for step in ("join", "terminate", "kill"):
            for worker_id, process in list(self.workers.items()):
                if step == "terminate" and process.is_alive():
                    process.terminate()
                elif step == "kill" and process.is_alive():
                    process.kill()
                process.join(max(0.0, deadline - time.monotonic()) if step == "join" else 2.0)
                if not process.is_alive():
                    self._reap(worker_id)
            if not self.workers:
                return


def main(argv: list[str] | None = None) -> int:
    """Serve one driver over the socket whose descriptor is ``argv[0]``.

    ``--no-shared-service`` lets every worker start a wandb-core of its own.
    """
    args = sys.argv[1:] if argv is None else argv
    shared = "--no-shared-service" not in args
    args = [a for a in args if not a.startswith("--")]
    # Ctrl-C in the terminal reaches the whole process group; the driver decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    sock.setblocking(True)
    requirements = _warm_up()
    service = _SharedService(wanted=shared)
    try:
        launcher = _Launcher(sock, service, requirements)
        grace = launcher.serve()
        launcher.shutdown(grace)
    finally:
        service.stop()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
