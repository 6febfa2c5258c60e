"""The delivery ledger (pure logic): unit tests and a hypothesis state machine.

The state machine plays a run's workers against the ledger: results are
appended, batches written (whole, or cut by a death), rows logged into run
files (pieces), confirmed late or not at all, workers killed at any point,
their replacements settling the last piece (or dying first), and the run
finally finished. Whatever the interleaving, the pieces put together hold
every row exactly once, in order, and the end marker with its exit code.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tune_wandb._ledger import Handover, Ledger
from tune_wandb._protocol import ConsoleLines, FinishRun, LogRow, UploadCheckpoint

pytestmark = pytest.mark.unit


def row(ledger: Ledger) -> LogRow:
    message = LogRow(ledger.next_seq(), {})
    ledger.append(message)
    return message


def seqs(batch: tuple[object, ...]) -> list[object]:
    return [getattr(m, "seq", "end") for m in batch]


def test_rows_then_the_end_marker_in_order() -> None:
    ledger = Ledger(backlog_limit=2, chunk=1)  # most of them spooled to disk
    for _ in range(5):
        row(ledger)
    ledger.finish(3)
    ledger.finish(0)  # the first exit code given is kept
    assert seqs(ledger.take(2)) == [1, 2]
    assert ledger.take(2) == ()  # one batch at a time
    ledger.written()
    assert seqs(ledger.take(10)) == [3, 4, 5, "end"]
    ledger.written()
    assert not ledger.pending
    assert ledger.exit_code == 3


def test_a_death_hands_over_what_was_not_confirmed_and_the_end_marker() -> None:
    ledger = Ledger()
    for _ in range(4):
        row(ledger)
    ledger.finish(0)
    ledger.take(10)
    ledger.written()
    ledger.started("piece-1")
    ledger.confirm(seq=1, history=1)
    assert ledger.died() == Handover(piece="piece-1", confirmed=1, resend=3, exit_code=0)
    assert ledger.take(10) == ()  # the replacement settles the piece first
    ledger.settled(landed=3)  # rows 2 and 3 made it into the dead piece
    assert seqs(ledger.take(10)) == [4, "end"]


def test_a_batch_cut_by_a_death_is_sent_again() -> None:
    ledger = Ledger()
    for _ in range(3):
        row(ledger)
    ledger.take(2)  # never written whole
    assert ledger.died() == Handover(piece=None, confirmed=0, resend=2, exit_code=None)
    # No piece was written: nothing to settle, everything to send.
    assert seqs(ledger.take(10)) == [1, 2, 3]


def test_a_replacement_dying_before_its_first_confirmation_hands_over_its_own_rows() -> None:
    # Issue #11: rows resent to a replacement are its own; its successor settles
    # the replacement's piece, not the first one, with the right count.
    ledger = Ledger()
    for _ in range(10):
        row(ledger)
    ledger.take(10)
    ledger.written()
    ledger.started("piece-1")
    ledger.confirm(seq=2, history=2)
    ledger.died()
    ledger.settled(landed=6)  # rows 3-6 landed in piece 1
    batch = ledger.take(100)
    assert seqs(batch) == [7, 8, 9, 10]
    ledger.written()
    ledger.started("piece-2")  # then it logs rows 7 and 8 and dies unconfirmed
    assert ledger.died() == Handover(piece="piece-2", confirmed=0, resend=4, exit_code=None)
    ledger.settled(landed=2)
    assert seqs(ledger.take(100)) == [9, 10]


def test_a_replacement_dying_before_its_run_started_hands_over_the_same_piece() -> None:
    ledger = Ledger()
    for _ in range(6):
        row(ledger)
    ledger.take(10)
    ledger.written()
    ledger.started("piece-1")
    ledger.died()
    ledger.settled(landed=4)
    ledger.take(10)
    ledger.written()  # rows 5 and 6 written to the replacement, which dies in wandb.init
    assert ledger.died() == Handover(piece="piece-1", confirmed=4, resend=2, exit_code=None)
    ledger.settled(landed=4)
    assert seqs(ledger.take(10)) == [5, 6]


def test_checkpoints_handed_over_are_sent_again() -> None:
    ledger = Ledger()
    row(ledger)
    checkpoint = UploadCheckpoint(ledger.next_seq(), "/ckpt")
    ledger.append(checkpoint)
    row(ledger)
    ledger.take(10)
    ledger.written()
    ledger.started("piece-1")
    ledger.died()
    ledger.settled(landed=2)  # both rows landed; a checkpoint leaves no record
    assert ledger.take(10) == (checkpoint,)


def test_console_lines_go_in_order_with_the_rows_and_are_resent_after_a_death() -> None:
    ledger = Ledger()
    first = row(ledger)
    lines = ConsoleLines(ledger.next_seq(), "stderr", ("oops",))
    ledger.append(lines)
    last = row(ledger)
    assert ledger.take(10) == (first, lines, last)
    ledger.written()
    ledger.started("piece-1")
    ledger.died()
    ledger.settled(landed=1)  # the first row landed; lines leave no history record
    assert ledger.take(10) == (lines, last)


def test_progress_counts_every_confirmed_record() -> None:
    ledger = Ledger()
    for _ in range(5):
        row(ledger)
    ledger.take(10)
    ledger.written()
    ledger.started("piece-1")
    ledger.confirm(seq=2, history=2)
    ledger.confirm(seq=2, history=2)  # a repeated confirmation is no new progress
    assert ledger.confirmed_total == 2
    ledger.died()
    ledger.settled(landed=4)
    assert ledger.confirmed_total == 4
    assert ledger.confirmed_seq == 4


def test_nothing_is_appended_after_the_end_marker() -> None:
    ledger = Ledger()
    ledger.finish(0)
    with pytest.raises(ValueError, match="after its end marker"):
        row(ledger)


def test_nothing_is_given_out_once_the_run_finished() -> None:
    ledger = Ledger()
    row(ledger)
    ledger.finish(0)
    ledger.take(10)
    ledger.written()
    ledger.run_finished()
    assert ledger.take(10) == ()
    assert not ledger.pending


# -- the state machine -------------------------------------------------------------


@dataclass
class _Worker:
    """A simulated worker: what it received and has not processed, its piece."""

    handover: Handover | None
    inbox: collections.deque[object] = field(default_factory=collections.deque)
    settled: bool = False
    piece: int | None = None


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(backlog_limit=3, chunk=2)
        self.rows: list[int] = []
        self.pieces: list[list[int]] = []
        self.worker = _Worker(handover=None)
        self.exit_code: int | None = None
        self.finished_with: int | None = None
        self.deaths = 0
        #: A batch taken and not yet written whole.
        self.writing: tuple[object, ...] = ()

    # -- the Tune loop: nothing after the end marker
    @precondition(lambda self: self.exit_code is None)
    @rule()
    def append_row(self) -> None:
        self.rows.append(row(self.ledger).seq)

    @precondition(lambda self: self.exit_code is None)
    @rule()
    def append_checkpoint(self) -> None:
        self.ledger.append(UploadCheckpoint(self.ledger.next_seq(), "/ckpt"))

    @precondition(lambda self: self.exit_code is None)
    @rule(code=st.sampled_from([0, 1, 130]))
    def finish(self, code: int) -> None:
        self.exit_code = code
        self.ledger.finish(code)

    # -- the socket
    @rule(n=st.integers(1, 5))
    def write_whole(self, n: int) -> None:
        batch = self.writing or self.ledger.take(n)
        self.writing = ()
        if batch:
            self.ledger.written()
            self.worker.inbox.extend(batch)

    @precondition(lambda self: not self.writing)
    @rule(n=st.integers(1, 5))
    def start_writing(self, n: int) -> None:
        # Finished by the next write_whole, or cut by a death.
        self.writing = self.ledger.take(n)

    # -- the worker
    def _needs_settling(self) -> bool:
        handover = self.worker.handover
        return handover is not None and handover.piece is not None and not self.worker.settled

    @precondition(lambda self: self._needs_settling())
    @rule()
    def settle(self) -> None:
        handover = self.worker.handover
        assert handover is not None and handover.piece is not None
        self.ledger.settled(len(self.pieces[int(handover.piece)]))
        self.worker.settled = True

    @precondition(lambda self: self.worker.piece is None and not self._needs_settling())
    @rule()
    def start_run(self) -> None:
        self.pieces.append([])
        self.worker.piece = len(self.pieces) - 1
        self.ledger.started(str(self.worker.piece))

    @precondition(lambda self: self.worker.piece is not None and self.finished_with is None)
    @rule(n=st.integers(1, 6))
    def process(self, n: int) -> None:
        assert self.worker.piece is not None
        for _ in range(min(n, len(self.worker.inbox))):
            message = self.worker.inbox.popleft()
            if isinstance(message, LogRow):
                self.pieces[self.worker.piece].append(message.seq)
            elif isinstance(message, FinishRun):
                self.finished_with = message.exit_code
                self.ledger.run_finished()
                return

    @precondition(lambda self: self.worker.piece is not None)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        assert self.worker.piece is not None
        piece = self.pieces[self.worker.piece]
        if piece:
            counted = data.draw(st.integers(1, len(piece)))  # the counter may lag
            self.ledger.confirm(seq=piece[counted - 1], history=counted)

    @precondition(lambda self: self.finished_with is None)
    @rule()
    def die(self) -> None:
        self.deaths += 1
        self.writing = ()
        self.worker = _Worker(handover=self.ledger.died())

    @invariant()
    def nothing_is_logged_twice_or_out_of_order(self) -> None:
        merged = [seq for piece in self.pieces for seq in piece]
        assert merged == sorted(set(merged))

    def teardown(self) -> None:
        # The experiment ends: the run is finished, no more deaths.
        if self.exit_code is None:
            self.finish(0)
        for _ in range(10_000):
            if self.finished_with is not None:
                break
            if self._needs_settling():
                self.settle()
            if self.worker.piece is None:
                self.start_run()
            self.write_whole(5)
            self.process(100)
            self.nothing_is_logged_twice_or_out_of_order()
        assert self.finished_with == self.exit_code
        merged = [seq for piece in self.pieces for seq in piece]
        assert merged == self.rows  # every row, once, in order


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(stateful_step_count=60)


@given(st.lists(st.integers(0, 3), max_size=40))
def test_take_gives_every_message_once_in_order(sizes: list[int]) -> None:
    ledger = Ledger(backlog_limit=4, chunk=2)
    for _ in range(25):
        row(ledger)
    ledger.finish(0)
    out: list[object] = []
    for n in [*sizes, 100]:
        batch = ledger.take(max(n, 1))
        ledger.written()
        out.extend(seqs(batch))
    assert out == [*range(1, 26), "end"]


@pytest.mark.parametrize("landed", [0, 1, 2, 3, 7])
def test_settling_never_drops_more_rows_than_were_handed_over(landed: int) -> None:
    ledger = Ledger()
    for _ in range(3):
        row(ledger)
    ledger.take(10)
    ledger.written()
    ledger.started("piece-1")
    ledger.died()
    ledger.settled(landed)
    assert seqs(ledger.take(10)) == list(range(min(landed, 3) + 1, 4))
