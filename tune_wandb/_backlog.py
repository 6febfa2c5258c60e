"""A run's backlog on the driver: bounded in memory, the overflow spooled to disk.

A worker that cannot keep up (a slow disk, a stalled or stopped process) must
not make the Tune driver hold every result of a long run in memory, and must
not lose any either. :class:`Backlog` keeps the oldest messages in memory up
to a limit; past it, messages are pickled in chunks to an unnamed temporary
file (deleted by the OS when closed, or when the driver dies) and read back
in order as the worker catches up.
"""

from __future__ import annotations

import collections
import pickle
import struct
import tempfile
import weakref
from collections.abc import Callable
from typing import IO, Any

_FRAME = struct.Struct("<Q")


class Backlog:
    """A FIFO of messages: up to ``limit`` in memory, the rest on disk.

    Not thread-safe: one sender thread owns it.

    Args:
        limit: the most messages held in memory (reading back adds one chunk).
        chunk: messages pickled to disk together.
        sanitize: called on a message that fails to pickle, to make it
            picklable in place (drop what cannot be), before one more try.

    Example:
        >>> backlog = Backlog(limit=2, chunk=1)
        >>> for i in range(5):
        ...     backlog.append(i)
        >>> backlog.in_memory, backlog.spooled
        (2, 3)
        >>> backlog.take(10), backlog.take(10), backlog.take(10)
        ([0, 1], [2], [3])
        >>> backlog.close()
    """

    def __init__(
        self, limit: int, chunk: int = 512, sanitize: Callable[[Any], None] | None = None
    ) -> None:
        if limit < 1 or chunk < 1:
            raise ValueError("limit and chunk must be at least 1")
        self.limit = limit
        self.chunk = min(chunk, limit)
        self._sanitize = sanitize
        self._head: collections.deque[Any] = collections.deque()
        self._tail: list[Any] = []
        self._file: IO[bytes] | None = None
        self._finalizer: Callable[[], Any] = lambda: None
        self._read_pos = 0
        self._write_pos = 0
        self._on_disk = 0
        #: Messages ever spooled to disk (for logs and benchmarks).
        self.spooled_total = 0

    def __len__(self) -> int:
        return len(self._head) + self._on_disk + len(self._tail)

    @property
    def in_memory(self) -> int:
        """Messages held in memory now."""
        return len(self._head) + len(self._tail)

    @property
    def spooled(self) -> int:
        """Messages on disk now, or waiting to be written there."""
        return self._on_disk + len(self._tail)

    def append(self, message: Any) -> None:
        """Add ``message`` at the end."""
        if not self._on_disk and not self._tail and len(self._head) < self.limit:
            self._head.append(message)
            return
        # Once anything is spooled, everything after it is too, so order holds.
        self._tail.append(message)
        self.spooled_total += 1
        if len(self._tail) >= self.chunk:
            self._spool()

    def take(self, n: int) -> list[Any]:
        """Remove and return up to ``n`` messages from the front."""
        if not self._head:
            self._refill()
        head = self._head
        return [head.popleft() for _ in range(min(n, len(head)))]

    def drain(self) -> list[Any]:
        """Remove and return every message, in order."""
        out: list[Any] = []
        while len(self):
            out.extend(self.take(len(self)))
        return out

    def close(self) -> None:
        """Drop the spool file (its messages with it)."""
        if self._file is not None:
            self._finalizer()
            self._file = None
        self._read_pos = self._write_pos = self._on_disk = 0

    def _spool(self) -> None:
        if self._file is None:
            # Open while anything is spooled; closed when all is read back, by
            # close(), or when an abandoned backlog is collected.
            self._file = tempfile.TemporaryFile(prefix="tune-wandb-backlog-")  # noqa: SIM115
            self._finalizer = weakref.finalize(self, self._file.close)
        data = self._dumps(self._tail)
        self._file.seek(self._write_pos)
        self._file.write(_FRAME.pack(len(data)))
        self._file.write(data)
        self._write_pos = self._file.tell()
        self._on_disk += len(self._tail)
        self._tail = []

    def _dumps(self, messages: list[Any]) -> bytes:
        try:
            return pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            if self._sanitize is None:
                raise
            for message in messages:
                self._sanitize(message)
            return pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)

    def _refill(self) -> None:
        if self._on_disk:
            assert self._file is not None
            self._file.seek(self._read_pos)
            (size,) = _FRAME.unpack(self._file.read(_FRAME.size))
            messages = pickle.loads(self._file.read(size))
            self._read_pos = self._file.tell()
            self._on_disk -= len(messages)
            self._head.extend(messages)
            if not self._on_disk:
                self.close()
        elif self._tail:
            self._head.extend(self._tail)
            self._tail = []
