"""The driver's bounded backlog: order kept, memory capped, the overflow on disk."""

from __future__ import annotations

import collections
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tune_wandb._backlog import Backlog

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 50)),
        st.tuples(st.just("take"), st.integers(1, 60)),
    ),
    max_size=60,
)

pytestmark = pytest.mark.unit


@given(limit=st.integers(1, 20), chunk=st.integers(1, 20), ops=OPS)
def test_backlog_is_a_fifo_with_memory_capped(
    limit: int, chunk: int, ops: list[tuple[str, int]]
) -> None:
    backlog = Backlog(limit, chunk)
    reference: collections.deque[int] = collections.deque()
    counter = 0
    try:
        for op, n in ops:
            if op == "append":
                for _ in range(n):
                    backlog.append(counter)
                    reference.append(counter)
                    counter += 1
            else:
                taken = backlog.take(n)
                assert taken == [reference.popleft() for _ in range(len(taken))]
                # Something is always handed out while anything is waiting.
                assert taken or not reference
            assert len(backlog) == len(reference)
            # Memory: the in-memory part, one chunk read back, one chunk being filled.
            assert backlog.in_memory <= limit + 2 * min(chunk, limit)
        assert backlog.drain() == list(reference)
    finally:
        backlog.close()


def test_values_that_do_not_pickle_are_sanitized_not_lost() -> None:
    def sanitize(message: dict[str, object]) -> None:
        message.pop("lock", None)

    backlog = Backlog(limit=1, chunk=2, sanitize=sanitize)
    try:
        backlog.append({"n": 0})
        backlog.append({"n": 1, "lock": threading.Lock()})
        backlog.append({"n": 2})
        assert backlog.drain() == [{"n": 0}, {"n": 1}, {"n": 2}]
    finally:
        backlog.close()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Backlog(0)
