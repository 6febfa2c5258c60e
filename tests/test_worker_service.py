"""A worker's shared wandb-core renewed while the launcher and the runs race to report its death."""

from __future__ import annotations

import multiprocessing
import os
import time
from types import SimpleNamespace

import pytest

from tune_wandb import _worker
from tune_wandb._protocol import ProcessSetup, UseService

pytestmark = pytest.mark.unit

#: The dead shared wandb-core and its successor: (address, pid).
DEAD, NEW = ("dead-address", 1), ("new-address", 2)


@pytest.mark.parametrize("capacity", [1, 4], ids=["own", "multiplexed"])
def test_a_successor_announced_before_a_run_sees_the_death_is_used_at_once(
    capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # wandb.teardown (real, with nothing set up) clears it: restored after the test.
    monkeypatch.setenv("WANDB_SERVICE", DEAD[0])
    ours, _driver = multiprocessing.Pipe()
    process = _worker._Process(
        ours, ProcessSetup(driver_pid=os.getpid(), capacity=capacity), DEAD, None
    )
    said: list[str] = []
    slot = SimpleNamespace(service=DEAD, _say=lambda level, text: said.append(text))
    # The launcher saw the shared wandb-core die and started its successor
    # before the run's next call failed.
    process._use_service(UseService(*NEW))
    started = time.monotonic()
    generation = process.renew_service(slot, 0)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5  # not the 15 s wait for a successor
    assert generation == 1
    assert process.shared_service == NEW
    assert os.environ["WANDB_SERVICE"] == NEW[0]
    assert not [text for text in said if "of its own" in text]
