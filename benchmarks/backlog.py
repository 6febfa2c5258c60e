"""The driver's memory while a worker cannot keep up: 100,000 results to a stopped worker.

Run with ``nox -s bench`` (after the side-by-side benchmark) or
``python benchmarks/backlog.py``. For each setting, one worker is started and
stopped with SIGSTOP (it takes nothing), 100,000 Tune-like results are queued
for its run as the callback queues them, and the driver's RSS is measured once
the pool thread has taken them all off its queue; the worker is then continued
(SIGCONT) and every row is counted in its run file. Settings, side by side in
one process: the backlog capped in memory (tune-wandb's default, the rest
spooled to disk) and uncapped (everything held in RAM, as a plain queue would).
Writes ``benchmarks/results/backlog.{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tune_wandb import _filters, _pool, _runfile  # noqa: E402
from tune_wandb._pool import WorkerPool  # noqa: E402
from tune_wandb._protocol import LogRow, WorkerSetup  # noqa: E402
from tune_wandb._settings import QUIET_SETTINGS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def tune_result(i: int) -> dict[str, Any]:
    """A result shaped like Tune's: metrics plus Tune's own keys."""
    return {
        "loss": 1.0 / (i + 1),
        "accuracy": i / 100_000,
        "lr": 0.01,
        "nested": {"a": float(i), "b": i % 7},
        "training_iteration": i,
        "time_this_iter_s": 0.001,
        "time_total_s": i * 0.001,
        "timestamp": 1_700_000_000 + i,
        "done": False,
        "trial_id": "abc12_00000",
        "date": "2026-11-28_10-00-00",
        "pid": 1234,
        "hostname": "node",
        "node_ip": "10.0.0.1",
        "iterations_since_restore": i,
        "time_since_restore": i * 0.001,
        "config": {"lr": 0.01},
    }


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def run_one(results: int, cap: int, root: Path) -> dict[str, Any]:
    _pool._BACKLOG_IN_MEMORY = cap
    splitter = _filters.Splitter(_filters.Rules())

    def prepare(seq: int, result: dict[str, Any]) -> LogRow:
        history, config, _ = splitter.split(result)
        return LogRow(seq, history, config)

    setup = WorkerSetup(
        trial_id="t",
        trial_name="t",
        init_kwargs={
            "id": f"backlog-{cap}",
            "project": "backlog",
            "dir": str(root),
            "mode": "offline",
            "settings": dict(QUIET_SETTINGS),
        },
        driver_pid=os.getpid(),
        env={"WANDB_MODE": "offline"},
    )
    pool = WorkerPool()
    try:
        run = pool.open("t", "t", setup, prepare)
        deadline = time.monotonic() + 60
        while run.started is None or run.worker_pid is None:
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.05)
        pid = run.worker_pid
        gc.collect()
        before = rss_mb()
        os.kill(pid, signal.SIGSTOP)
        put = pool.put  # what the callback calls on the Tune loop
        started = time.perf_counter()
        for i in range(1, results + 1):
            put((run, dict(tune_result(i))))
        put_seconds = time.perf_counter() - started
        ledger = run.ledger
        while run.rows < results:
            time.sleep(0.1)
        time.sleep(0.5)
        gc.collect()
        stalled = rss_mb()
        in_memory, spooled = ledger.in_memory, ledger.spooled
        os.kill(pid, signal.SIGCONT)
        caught_up = time.perf_counter()
        run.finish(0)
        assert pool.wait([run], timeout=600) == []
        drain_seconds = time.perf_counter() - caught_up
        assert run.run_file is not None
        rows = _runfile.HistoryCounter(run.run_file).update()
    finally:
        pool.close()
    return {
        "cap": cap,
        "results": results,
        "put_us_per_result": put_seconds / results * 1e6,
        "rss_before_mb": before,
        "rss_stalled_mb": stalled,
        "rss_growth_mb": stalled - before,
        "in_memory_when_stalled": in_memory,
        "spooled_when_stalled": spooled,
        "delivery_seconds_after_continue": drain_seconds,
        "rows_in_run_file": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=100_000)
    args = parser.parse_args()
    os.environ["WANDB_MODE"] = "offline"
    default_cap = _pool._BACKLOG_IN_MEMORY
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cap in (("capped (default)", default_cap), ("uncapped", 10**9)):
            root = Path(tmp) / str(cap)
            root.mkdir()
            run = run_one(args.results, cap, root)
            run["setting"] = name
            runs.append(run)
            print(json.dumps(run))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backlog.json").write_text(json.dumps(runs, indent=2) + "\n")
    lines = [
        f"{args.results:,} results to a stopped worker (SIGSTOP), then SIGCONT.",
        "",
        "| backlog | driver RSS growth while stalled | in memory / spooled | "
        "put per result | delivered after SIGCONT | rows in run file |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run['setting']} | {run['rss_growth_mb']:.0f} MB | "
            f"{run['in_memory_when_stalled']:,} / {run['spooled_when_stalled']:,} | "
            f"{run['put_us_per_result']:.1f} µs | {run['delivery_seconds_after_continue']:.0f} s | "
            f"{run['rows_in_run_file']:,} |"
        )
    (RESULTS / "backlog.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
