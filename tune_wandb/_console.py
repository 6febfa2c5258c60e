"""Each trial's console output, from Ray's driver-side stream to the trial's W&B run.

With ``log_to_driver`` (Ray's default) the driver receives every worker's
stdout and stderr in batches (``ip``, ``pid``, ``is_err``, ``lines``, no
timestamps) through ``ray._private.ray_logging.global_worker_stdstream_dispatcher``,
whose handlers run on Ray's print thread under its lock. Ours only puts the
batch on a queue. One thread of ours, the *console thread*, owns everything
else: which run owns which worker process (``(ip, pid)``, claimed from the
trial's results and from its actor at start), lines of a process no run has
claimed yet (held, then given to the run that claims it), and the end of each
run, which waits until its lines have stopped coming (Ray delivers them about
a second late) before the end marker is queued.

Lines no run ever claimed (Ray Train workers inside a trial, other actors, a
trial reusing an actor another trial used before it claimed it) are counted
and said once at the end.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("tune_wandb")

#: The name of our handler in Ray's dispatcher.
HANDLER_NAME = "tune_wandb_console"
#: Ray's own handler, there only with ``log_to_driver``.
_RAY_HANDLER_NAME = "ray_print_logs"
#: A run's end waits until its process wrote nothing for this long...
QUIET_SECONDS = 1.5
#: ...but no longer than this after the trial ended.
MAX_END_WAIT_SECONDS = 10.0
#: Lines of one process held while no run claims it.
MAX_HELD_LINES = 10_000

#: ``(ip, pid)`` of a worker process, the pid as text.
Key = tuple[str, str]


def key_of(ip: Any, pid: Any) -> Key:
    """The key of a worker process, as batches and results name it."""
    return (str(ip), str(pid))


@dataclass(frozen=True)
class _Claim:
    key: Key
    run: Any


@dataclass(frozen=True)
class _End:
    run: Any
    exit_code: int
    at: float


@dataclass(frozen=True)
class _Flush:
    done: threading.Event


_STOP = object()


def ray_forwards_output() -> bool | None:
    """Whether Ray forwards the workers' output to this driver; None if Ray cannot tell.

    ``ray._private.ray_logging.global_worker_stdstream_dispatcher.handlers``
    holds Ray's own printing handler only when ``log_to_driver`` is on.
    """
    try:
        import ray
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        if not ray.is_initialized():
            return None
        return any(name == _RAY_HANDLER_NAME for name, _ in dispatcher.handlers)
    except Exception:
        return None


class ConsoleRouter:
    """Routes Ray's batches of worker output to the runs that own the processes.

    Each run is the pool's :class:`~tune_wandb._pool.Run`; only its
    ``console(stream, lines)`` and ``finish(exit_code)`` are called, from the
    console thread.

    Example:
        >>> router = ConsoleRouter()
        >>> router.held_lines, router.unmatched_lines
        (0, 0)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._installed = False
        # -- the console thread's own state
        self._owners: dict[Key, Any] = {}
        self._held: dict[Key, collections.deque[tuple[str, list[str]]]] = {}
        self._last_line: dict[int, float] = {}
        self._ends: list[_End] = []
        self._flushes: list[threading.Event] = []
        #: Lines held for processes no run claimed yet, and lines dropped so.
        self.held_lines = 0
        self.unmatched_lines = 0
        self.unmatched_processes: set[Key] = set()

    # -- any thread ---------------------------------------------------------------------

    def start(self) -> bool:
        """Hook into Ray's dispatcher and start the console thread; whether it could."""
        if self._thread is not None:
            return True
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

            dispatcher.add_handler(HANDLER_NAME, self._queue.put)
        except Exception as exc:
            logger.warning(
                "tune-wandb: cannot read the trials' console output from Ray (%r); the runs' "
                "Logs tabs stay empty",
                exc,
            )
            return False
        self._installed = True
        self._thread = threading.Thread(target=self._serve, name="tune-wandb-console", daemon=True)
        self._thread.start()
        return True

    def claim(self, ip: Any, pid: Any, run: Any) -> None:
        """``run`` owns the worker process ``(ip, pid)`` from now on."""
        self._queue.put(_Claim(key_of(ip, pid), run))

    def end(self, run: Any, exit_code: int) -> None:
        """Finish ``run`` once its lines stopped coming (at most ``MAX_END_WAIT_SECONDS``)."""
        if self._thread is None:
            run.finish(exit_code)
            return
        self._queue.put(_End(run, exit_code, self._clock()))

    def flush(self, timeout: float) -> None:
        """Wait until every batch queued so far is routed and every run asked to end has ended.

        Runs end as usual, once their lines stopped coming; ``timeout`` bounds the wait.
        """
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(_Flush(done))
        done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Unhook from Ray, route what was queued, end the console thread."""
        if self._installed:
            with contextlib.suppress(Exception):
                from ray._private.ray_logging import (
                    global_worker_stdstream_dispatcher as dispatcher,
                )

                dispatcher.remove_handler(HANDLER_NAME)
            self._installed = False
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    # -- the console thread --------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.1 if self._ends else None)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    self._end_all()
                    return
                if item is not None:
                    self._take(item)
                self._end_quiet_runs()
        except Exception:
            logger.exception("tune-wandb: the console thread failed; console lines stop here")
            self._end_all()

    def _take(self, item: Any) -> None:
        if isinstance(item, dict):
            self._route(item)
        elif isinstance(item, _Claim):
            self._owners[item.key] = item.run
            for stream, lines in self._held.pop(item.key, ()):
                self.held_lines -= len(lines)
                self._give(item.run, stream, lines)
        elif isinstance(item, _End):
            self._ends.append(item)
        elif isinstance(item, _Flush):
            self._flushes.append(item.done)

    def _route(self, batch: dict[str, Any]) -> None:
        lines = batch.get("lines")
        # Not a worker process: Ray's own (its pid is "autoscaler", "raylet", ...).
        if not lines or not str(batch.get("pid")).isdigit():
            return
        key = key_of(batch.get("ip"), batch.get("pid"))
        stream = "stderr" if batch.get("is_err") else "stdout"
        run = self._owners.get(key)
        if run is not None:
            self._give(run, stream, list(lines))
            return
        held = self._held.setdefault(key, collections.deque())
        held.append((stream, list(lines)))
        self.held_lines += len(lines)
        while self.held_lines > MAX_HELD_LINES and held:
            _, dropped = held.popleft()
            self.held_lines -= len(dropped)
            self._unmatched(key, len(dropped))

    def _give(self, run: Any, stream: str, lines: list[str]) -> None:
        self._last_line[id(run)] = self._clock()
        run.console(stream, lines)

    def _unmatched(self, key: Key, count: int) -> None:
        self.unmatched_lines += count
        self.unmatched_processes.add(key)

    def _end_quiet_runs(self) -> None:
        if self._ends:
            now = self._clock()
            waiting = []
            for end in self._ends:
                last = self._last_line.get(id(end.run), end.at)
                quiet = now - max(last, end.at) >= QUIET_SECONDS
                if quiet or now - end.at >= MAX_END_WAIT_SECONDS:
                    self._finish(end)
                else:
                    waiting.append(end)
            self._ends = waiting
        # At once, in the same turn as the last end: with nothing left to wait
        # for, the thread next blocks on its queue, and a flush would wait out
        # its timeout.
        if not self._ends:
            flushes, self._flushes = self._flushes, []
            for done in flushes:
                done.set()

    def _end_all(self) -> None:
        for done in self._flushes:
            done.set()
        self._flushes = []
        ends, self._ends = self._ends, []
        for end in ends:
            self._finish(end)
        for key, held in self._held.items():
            self._unmatched(key, sum(len(lines) for _, lines in held))
        self._held.clear()
        self.held_lines = 0

    def _finish(self, end: _End) -> None:
        self._last_line.pop(id(end.run), None)
        for key in [k for k, run in self._owners.items() if run is end.run]:
            del self._owners[key]
        end.run.finish(end.exit_code)
