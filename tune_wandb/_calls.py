"""Functions run in a fork of the launcher, for the driver (wandb's API, never in the driver).

The launcher owns a :class:`ForkedCalls`: on each
:class:`~tune_wandb._protocol.CallInFork` it forks a child that runs
:func:`call_main`, which sends its :class:`~tune_wandb._protocol.CallReturned`
through a pipe; the launcher forwards it to the driver, or says how the child
ended if it died first. A call still running after :data:`CALL_SECONDS` is
killed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from tune_wandb._protocol import CallInFork, CallReturned

#: How long a call may run before the launcher kills it.
CALL_SECONDS = 120.0


def call_main(writer: Connection, call_id: str, payload: bytes, close_fds: Iterable[int]) -> None:
    """Run one call; the fork target. Sends its :class:`CallReturned` on ``writer``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        function, args = cloudpickle.loads(payload)
        answer = CallReturned(call_id, value=cloudpickle.dumps(function(*args)))
    except BaseException as exc:  # every failure is the driver's to report
        answer = CallReturned(call_id, error=f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(OSError):
        writer.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    writer.close()


@dataclass
class _Running:
    process: Any
    reader: Connection | None
    deadline: float
    answered: bool = False


class ForkedCalls:
    """The launcher's calls in flight: start, watch, answer, kill."""

    def __init__(self, ctx: Any, send: Callable[[object], None]) -> None:
        self._ctx = ctx
        self._send = send
        self._running: dict[str, _Running] = {}

    def start(self, message: CallInFork, close_fds: Iterable[int]) -> None:
        """Fork the call's child (an error answers at once if it cannot be forked)."""
        reader, writer = self._ctx.Pipe(duplex=False)
        try:
            process = self._ctx.Process(
                target=call_main,
                args=(writer, message.call_id, message.payload, tuple(close_fds)),
                name=f"tune-wandb-call-{message.call_id}",
                daemon=False,
            )
            process.start()
        except Exception as exc:
            reader.close()
            self._send(CallReturned(message.call_id, error=f"could not fork: {exc!r}"))
            return
        finally:
            writer.close()
        self._running[message.call_id] = _Running(process, reader, time.monotonic() + CALL_SECONDS)

    def waitables(self) -> list[Any]:
        """What the launcher's ``wait`` watches for the calls."""
        out: list[Any] = []
        for call in self._running.values():
            out.append(call.process.sentinel)
            if call.reader is not None:
                out.append(call.reader)
        return out

    def serve(self, ready: Iterable[Any]) -> None:
        """Forward answers, reap children that ended, kill those past their deadline."""
        ready = set(ready)
        now = time.monotonic()
        for call_id, call in list(self._running.items()):
            if call.reader is not None and call.reader in ready:
                self._read(call_id, call)
            if call.process.sentinel in ready:
                if call.reader is not None:
                    self._read(call_id, call)
                self._reap(call_id, call)
            elif now > call.deadline:
                call.process.kill()
                call.deadline = float("inf")

    def kill_all(self) -> None:
        """End every call still running (the launcher is shutting down) and reap it."""
        for call_id, call in list(self._running.items()):
            call.process.kill()
            call.process.join(2.0)
            self._reap(call_id, call)

    def _read(self, call_id: str, call: _Running) -> None:
        assert call.reader is not None
        try:
            data = call.reader.recv_bytes()
        except (EOFError, OSError):
            data = b""
        call.reader.close()
        call.reader = None
        if data:
            call.answered = True
            self._send(pickle.loads(data))

    def _reap(self, call_id: str, call: _Running) -> None:
        call.process.join()
        del self._running[call_id]
        if not call.answered:
            self._send(
                CallReturned(
                    call_id,
                    error=f"the call's process ended with exit code {call.process.exitcode}",
                )
            )
