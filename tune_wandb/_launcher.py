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

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import recv_handle

from tune_wandb._protocol import (
    LauncherError,
    ShutdownLauncher,
    SpawnWorker,
    StopWorker,
    WorkerExited,
    WorkerStarted,
)
from tune_wandb._worker import worker_main

#: How long workers get to finish their runs once the driver is gone.
_ORPHAN_GRACE_SECONDS = 60.0


def _warm_up() -> None:
    """Import what every worker needs, once, before any fork."""
    import wandb
    import wandb.sdk.wandb_init  # noqa: F401


class _Launcher:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.ctx = multiprocessing.get_context("fork")
        self.workers: dict[str, BaseProcess] = {}

    def _send(self, message: object) -> None:
        with contextlib.suppress(OSError):
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def serve(self) -> float:
        """Answer requests until told to stop; returns the grace for the workers."""
        while True:
            sentinels = {p.sentinel: wid for wid, p in self.workers.items()}
            ready = wait([self.conn, *sentinels])
            for obj in ready:
                if obj is not self.conn:
                    self._reap(sentinels[obj])  # type: ignore[index]
            if self.conn not in ready:
                continue
            try:
                message = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                return _ORPHAN_GRACE_SECONDS
            if isinstance(message, SpawnWorker):
                self._spawn(message)
            elif isinstance(message, StopWorker):
                self._stop(message)
            elif isinstance(message, ShutdownLauncher):
                return message.grace_seconds

    def _spawn(self, message: SpawnWorker) -> None:
        fd = recv_handle(self.conn)
        try:
            process = self.ctx.Process(
                target=worker_main,
                args=(fd, message.payload, (self.conn.fileno(),)),
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
    """Serve one driver over the socket whose descriptor is ``argv[0]``."""
    args = sys.argv[1:] if argv is None else argv
    # Ctrl-C in the terminal reaches the whole process group; the driver decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(args[0]))
    _warm_up()
    launcher = _Launcher(conn)
    grace = launcher.serve()
    launcher.shutdown(grace)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
