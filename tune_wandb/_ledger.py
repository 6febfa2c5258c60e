"""The delivery ledger: one run's messages, from the Tune loop until they are in its run file.

A run is written by one worker at a time; a worker that dies leaves a piece
of the run (its run file) and is replaced by a worker that continues the
same run in a new piece. The ledger is the one place that knows where every
message of the run is:

* **unsent**: filtered, never written to any worker (bounded in memory, the
  rest spooled to disk, see :mod:`tune_wandb._backlog`);
* **writing**: the batch being written to the current worker's socket;
* **in flight**: written whole to the current worker, not yet confirmed;
* **to resend**: written to a worker that died without confirming them.

Confirmation counts history records in the worker's run file (see
:class:`~tune_wandb._protocol.Confirmed`). When a worker dies, the rows it
was given and did not confirm are handed over: the replacement first
*settles* the dead worker's piece (waits until it is complete and counts its
history records) and reports the count; the ledger drops the rows that
count says landed, and sends the rest again, before anything never sent.
Rows a replacement skipped are never sent to anyone again, and rows it was
given are tracked as its own: a replacement that dies too hands over exactly
what it had, whether or not it had started a piece of its own.

The end marker is recorded too: a worker that dies after it was sent has its
replacement sent it again, with the same exit code.

Pure logic, owned by one thread (the pool's), tested on its own
(``tests/test_ledger.py``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tune_wandb._backlog import Backlog
from tune_wandb._protocol import FinishRun, LogRow, RunItem

#: What the ledger carries: a row, a checkpoint, console lines, the trial's
#: end (each with its ``seq``), or the end marker.
Message = RunItem | FinishRun
#: What the ledger carries but the end marker.
Item = RunItem


@dataclass(frozen=True)
class Handover:
    """What a replacement worker needs once its predecessor died.

    Attributes:
        piece: the run file of the last piece written (None: no piece yet),
            which the replacement settles before it resumes the run.
        confirmed: history records of ``piece`` already known to be in it.
        resend: messages to send again once the piece is settled.
        exit_code: the exit code of the end marker the run was given, if any.
    """

    piece: str | None
    confirmed: int
    resend: int
    exit_code: int | None


class Ledger:
    """Where each message of one run is, from ``append`` until it is in the run file.

    Args:
        backlog_limit: messages never sent held in memory before the rest is
            spooled to disk.
        chunk: messages spooled together.
        sanitize: makes a message picklable in place, for the spool.

    Example:
        >>> ledger = Ledger()
        >>> for _ in range(3):
        ...     ledger.append(LogRow(ledger.next_seq(), {"x": 1}))
        >>> ledger.finish(0)
        >>> [getattr(m, "seq", "end") for m in ledger.take(10)]
        [1, 2, 3, 'end']
        >>> ledger.written()
        >>> ledger.started("run-1.wandb")
        >>> ledger.confirm(seq=2, history=2)
        >>> ledger.died()
        Handover(piece='run-1.wandb', confirmed=2, resend=1, exit_code=0)
        >>> ledger.take(10)  # nothing until the replacement settled the piece
        ()
        >>> ledger.settled(landed=2)  # row 3 is not in the dead piece
        >>> [getattr(m, "seq", "end") for m in ledger.take(10)]
        [3, 'end']
    """

    def __init__(
        self,
        backlog_limit: int = 4096,
        chunk: int = 512,
        sanitize: Callable[[Any], None] | None = None,
    ) -> None:
        self._last_seq = 0
        self._unsent = Backlog(backlog_limit, chunk, sanitize)
        #: Handed over, to be sent before anything unsent: rows a dead worker
        #: did not confirm (filtered by ``settled``).
        self._resend: collections.deque[Item] = collections.deque()
        self._writing: tuple[Message, ...] = ()
        self._in_flight: collections.deque[Item] = collections.deque()
        #: The piece the current worker writes, once it said so, and its confirmed count.
        self._piece: str | None = None
        self._piece_confirmed = 0
        #: The piece a replacement must settle first (None: nothing to settle).
        self._dead_piece: str | None = None
        self._dead_confirmed = 0
        self._awaiting_settlement = False
        self._exit_code: int | None = None
        self._end_written = False
        #: History records confirmed over all pieces: a run making progress.
        self.confirmed_total = 0
        #: The highest seq confirmed so far.
        self.confirmed_seq = 0
        #: The run's worker said it finished the run.
        self.finished = False

    # -- from the Tune loop (through the pool's thread) -------------------------

    def next_seq(self) -> int:
        """The sequence number of the next row or checkpoint."""
        self._last_seq += 1
        return self._last_seq

    def append(self, message: Item) -> None:
        """Queue a row or checkpoint (numbered by :meth:`next_seq`) for the run's worker.

        Raises:
            ValueError: the run was already asked to finish (its end marker
                may be written): a trial started again gets a new run.
        """
        if self._exit_code is not None:
            raise ValueError(f"message {message.seq} appended to a run after its end marker")
        self._unsent.append(message)

    def finish(self, exit_code: int) -> None:
        """Ask for the run to end with ``exit_code`` once every message before is sent.

        The first exit code given is kept.
        """
        if self._exit_code is None:
            self._exit_code = exit_code

    @property
    def exit_code(self) -> int | None:
        """The exit code the run was asked to end with, if it was."""
        return self._exit_code

    # -- writing to the current worker ------------------------------------------

    def take(self, n: int) -> tuple[Message, ...]:
        """The next batch for the current worker: at most ``n`` messages, the end marker last.

        Empty while a batch is being written, while the replacement has not
        settled its predecessor's piece, or when there is nothing to send.
        """
        if self._writing or self._awaiting_settlement or self.finished:
            return ()
        batch: list[Message] = []
        while self._resend and len(batch) < n:
            batch.append(self._resend.popleft())
        while len(batch) < n and self._unsent:
            batch.extend(self._unsent.take(n - len(batch)))
        if (
            len(batch) < n
            and not self._resend
            and not self._unsent
            and self._exit_code is not None
            and not self._end_written
        ):
            batch.append(FinishRun(self._exit_code))
        self._writing = tuple(batch)
        return self._writing

    def written(self) -> None:
        """The batch from :meth:`take` reached the worker's socket whole."""
        for message in self._writing:
            if isinstance(message, FinishRun):
                self._end_written = True
            else:
                self._in_flight.append(message)
        self._writing = ()

    @property
    def pending(self) -> bool:
        """Whether anything is left to send to a worker (the end marker included)."""
        if self.finished:
            return False
        end_due = self._exit_code is not None and not self._end_written
        return bool(self._resend or self._unsent or self._writing or end_due)

    @property
    def busy(self) -> bool:
        """Whether the run's worker has work: rows to take or confirm, or the run to finish."""
        if self.finished:
            return False
        return self.pending or bool(self._in_flight) or self._end_written

    @property
    def not_written(self) -> int:
        """Rows and checkpoints not known to be in the run file (sent or not)."""
        return len(self._in_flight) + len(self._resend) + len(self._writing) + len(self._unsent)

    @property
    def unsent(self) -> int:
        """Messages never sent to any worker (for reports)."""
        return len(self._unsent)

    @property
    def in_memory(self) -> int:
        """Messages never sent held in memory now."""
        return self._unsent.in_memory

    @property
    def spooled(self) -> int:
        """Messages never sent spooled to disk now."""
        return self._unsent.spooled

    @property
    def spooled_total(self) -> int:
        """Messages ever spooled to disk (for logs and benchmarks)."""
        return self._unsent.spooled_total

    # -- what the current worker says ---------------------------------------------

    def settled(self, landed: int) -> None:
        """The replacement counted ``landed`` history records in its predecessor's piece.

        The first rows handed over that many beyond those confirmed are in
        that piece: they are dropped; the rest are sent first. Checkpoints
        handed over are sent again (they leave no history record).
        """
        landed_rows = max(0, landed - self._dead_confirmed)
        kept: collections.deque[Item] = collections.deque()
        for message in self._resend:
            if landed_rows and isinstance(message, LogRow):
                landed_rows -= 1
                self.confirmed_seq = max(self.confirmed_seq, message.seq)
                continue
            kept.append(message)
        self.confirmed_total += max(0, landed - self._dead_confirmed)
        self._resend = kept
        self._dead_confirmed = max(self._dead_confirmed, landed)
        self._awaiting_settlement = False

    def started(self, piece: str) -> None:
        """The current worker started writing ``piece`` (its run file)."""
        self._piece = piece
        self._piece_confirmed = 0

    def confirm(self, seq: int, history: int) -> None:
        """Rows up to ``seq`` are in the current piece, which holds ``history`` history records."""
        in_flight = self._in_flight
        while in_flight and in_flight[0].seq <= seq:
            in_flight.popleft()
        self.confirmed_total += max(0, history - self._piece_confirmed)
        self._piece_confirmed = max(self._piece_confirmed, history)
        self.confirmed_seq = max(self.confirmed_seq, seq)

    def run_finished(self) -> None:
        """The worker finished the run: everything it was given is in the run file."""
        self.finished = True
        self._in_flight.clear()
        self._resend.clear()
        self._writing = ()
        self._unsent.close()

    # -- a death ---------------------------------------------------------------------

    def died(self) -> Handover:
        """The current worker died: what its replacement needs.

        Everything it was given and did not confirm (the batch it was being
        written included) is to be sent again after the replacement settles
        the last piece written: the dead worker's own if it started one,
        else the piece its own predecessor left.
        """
        resend: list[Item] = [*self._in_flight]
        for message in self._writing:
            if not isinstance(message, FinishRun):
                resend.append(message)
        resend.extend(self._resend)
        self._in_flight.clear()
        self._writing = ()
        self._resend = collections.deque(resend)
        self._end_written = False
        if self._piece is not None:
            # Its rows before the handover were settled; all it was given since
            # is unconfirmed in its own piece.
            self._dead_piece, self._dead_confirmed = self._piece, self._piece_confirmed
        self._piece, self._piece_confirmed = None, 0
        self._awaiting_settlement = self._dead_piece is not None and bool(self._resend)
        return Handover(
            piece=self._dead_piece,
            confirmed=self._dead_confirmed,
            resend=len(self._resend),
            exit_code=self._exit_code,
        )

    def close(self) -> None:
        """Drop everything the ledger holds, the spool file with it."""
        self._in_flight.clear()
        self._resend.clear()
        self._writing = ()
        self._unsent.close()
