"""Head-node scale benchmark: the real callback driven by N concurrent simulated trials.

Run by ``nox -s bench`` (or ``python benchmarks/scale.py``). Tune's driver and
every logging process of tune-wandb live on the head node; this measures what
logging costs there as the number of concurrent trials grows, without Ray
actors (only the logging side is counted). Each simulated trial is an object
with the attributes ``WandbLoggerCallback`` reads from a Tune ``Trial``
(``tests/support.py``'s ``FakeTrial``); all N start at once, each reports
``--results`` results (offline), and the trials end only once every run has
started, so that all N runs are live at once, as under long Tune trials;
every run must reach its real run file, read back with
``tests/wandb_reader.py``.

Per N and placement policy (``policy``: tune-wandb's default; ``isolated``:
``runs_per_worker=1``, a worker and a wandb-core per trial) it reports:

* peak PSS of all logging processes (launcher, workers, wandb-cores), and
  the peak number of them, sampled by ``sampler.py`` (only processes below
  this one, so that other sessions on a shared machine are not counted);
* the driver's threads spent on logging (``tune-wandb-*``), at their peak;
* logging CPU per trial: ``getrusage(RUSAGE_CHILDREN)`` of this process
  around the experiment (the launcher reaps every worker, each worker its
  wandb-core), minus the sampler's own, plus the pool thread's own clock;
* the callback's time on the driver per result (p50, p99) and per trial
  start (p99), ``perf_counter_ns`` around each hook call;
* rows landed in the run files over rows reported, and runs found;
* how long until every run had started (``wandb.init`` returned), from the
  first trial start: at most 16 runs start at once.

Results go to ``benchmarks/results/scale.{json,md}`` and a chart of memory
against concurrent trials, ``docs/img/scale.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import ProcessSampler, pct  # noqa: E402
from wandb_reader import find_runs  # noqa: E402

#: Seconds between two rounds of results (every trial reports once per round).
ROUND_SECONDS = 0.25


@dataclass
class Point:
    policy: str
    trials: int
    results: int
    wall_s: float
    peak_pss_mb: float
    peak_processes: int
    driver_logging_threads: int
    logging_cpu_s_per_trial: float
    result_us_p50: float
    result_us_p99: float
    start_us_p99: float
    rows_landed: int
    rows_reported: int
    runs_found: int
    all_started_s: float
    load_before: float


def _logging_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("tune-wandb"))


def measure(policy: str, trials: int, results: int, storage: Path) -> Point:
    """One experiment of ``trials`` concurrent simulated trials under ``policy``."""
    from support import FakeTrial

    from tune_wandb import WandbLoggerCallback

    experiment = storage / f"{policy}-{trials}"
    callback = WandbLoggerCallback(
        project="scale",
        upload_timeout=3600,
        runs_per_worker=1 if policy == "isolated" else None,
    )
    fakes = [FakeTrial(f"s{i:05d}", experiment) for i in range(trials)]
    result_ns: list[int] = []
    start_ns: list[int] = []
    threads = 0
    load = os.getloadavg()[0]
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ProcessSampler("tune-wandb", interval=0.5, root=os.getpid()) as sampler:
        t0 = time.perf_counter()
        callback.setup()
        for trial in fakes:
            t = time.perf_counter_ns()
            callback.log_trial_start(trial)
            start_ns.append(time.perf_counter_ns() - t)
        for i in range(1, results + 1):
            for trial in fakes:
                result = {"training_iteration": i, "loss": 1.0 / i, "trial_id": trial.trial_id}
                trial.last_result = result
                t = time.perf_counter_ns()
                callback.log_trial_result(i, trial, result)
                result_ns.append(time.perf_counter_ns() - t)
            threads = max(threads, _logging_threads())
            time.sleep(ROUND_SECONDS)
        runs = [callback._trials[t.trial_id].run for t in fakes]
        while not all(r.started is not None or r.ended for r in runs):
            threads = max(threads, _logging_threads())
            time.sleep(ROUND_SECONDS)
        all_started = time.perf_counter() - t0
        time.sleep(2.0)  # a few samples with every run live
        for trial in fakes:
            callback.log_trial_end(trial)
            trial.status = "TERMINATED"
        callback.on_experiment_end(fakes)
        wall = time.perf_counter() - t0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (
        children1.ru_utime
        + children1.ru_stime
        - children0.ru_utime
        - children0.ru_stime
        - sampler.own_cpu_seconds
    )
    cpu = reaped + callback._pool.thread_clock.seconds
    found = find_runs(experiment)
    return Point(
        policy=policy,
        trials=trials,
        results=results,
        wall_s=wall,
        peak_pss_mb=sampler.peak_pss / 2**20,
        peak_processes=sampler.peak_processes,
        driver_logging_threads=threads,
        logging_cpu_s_per_trial=cpu / trials,
        result_us_p50=pct([n / 1000 for n in result_ns], 0.50),
        result_us_p99=pct([n / 1000 for n in result_ns], 0.99),
        start_us_p99=pct([n / 1000 for n in start_ns], 0.99),
        rows_landed=sum(len(r.history) for r in found.values()),
        rows_reported=trials * results,
        runs_found=len(found),
        all_started_s=all_started,
        load_before=load,
    )


def markdown(points: list[Point]) -> str:
    lines = [
        f"N concurrent simulated trials x {points[0].results} results each, offline, through "
        f"the real callback ({platform.machine()}, {os.cpu_count()} CPUs; load average "
        "before each run in the last row: the machine was shared).",
        "",
        "| | " + " | ".join(f"{p.policy} N={p.trials:,}" for p in points) + " |",
        "| --- |" + " --- |" * len(points),
    ]
    rows: list[tuple[str, Any]] = [
        ("peak PSS of logging processes (MB)", lambda p: f"{p.peak_pss_mb:,.0f}"),
        ("PSS per concurrent trial (MB)", lambda p: f"{p.peak_pss_mb / p.trials:.1f}"),
        ("logging processes (peak)", lambda p: f"{p.peak_processes:,}"),
        ("driver threads for logging", lambda p: str(p.driver_logging_threads)),
        ("logging CPU per trial (CPU-s)", lambda p: f"{p.logging_cpu_s_per_trial:.3f}"),
        (
            "driver time per result p50 / p99 (µs)",
            lambda p: f"{p.result_us_p50:.1f} / {p.result_us_p99:.1f}",
        ),
        ("driver time per trial start p99 (µs)", lambda p: f"{p.start_us_p99:.0f}"),
        ("rows landed / reported", lambda p: f"{p.rows_landed:,} / {p.rows_reported:,}"),
        ("runs in their run files", lambda p: f"{p.runs_found:,}"),
        ("every run started after (s)", lambda p: f"{p.all_started_s:.0f}"),
        ("wall time (s)", lambda p: f"{p.wall_s:.0f}"),
        ("load average before", lambda p: f"{p.load_before:.1f}"),
    ]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(p) for p in points) + " |")
    return "\n".join(lines) + "\n"


def chart(points: list[Point], out: Path) -> None:
    """Peak PSS of the logging processes against concurrent trials, one line per policy."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    styles = {
        "policy": ("tune-wandb (default policy)", "#1f77b4"),
        "isolated": ("a worker per trial (runs_per_worker=1)", "#d62728"),
    }
    offsets = {"policy": (6, -24), "isolated": (8, -4)}
    for policy, (label, color) in styles.items():
        mine = sorted((p for p in points if p.policy == policy), key=lambda p: p.trials)
        if not mine:
            continue
        xs = [p.trials for p in mine]
        ys = [p.peak_pss_mb / 1024 for p in mine]
        ax.plot(xs, ys, marker="o", color=color, label=label)
        for x, y, p in zip(xs, ys, mine, strict=True):
            ax.annotate(
                f"{y:.1f} GB\n{p.peak_processes} procs",
                (x, y),
                textcoords="offset points",
                xytext=offsets[policy],
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_xlim(10, 2000)
    ax.set_ylim(bottom=0, top=max(p.peak_pss_mb for p in points) / 1024 * 1.15)
    ax.set_xlabel("concurrent trials")
    ax.set_ylabel("peak PSS of logging processes (GB)")
    ax.set_title("Memory of tune-wandb's logging on the head node")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="16,256,1000", help="Ns for the default policy")
    parser.add_argument(
        "--isolated", default="16,256", help="Ns for a worker per trial (1,000 needs ~22 GB)"
    )
    parser.add_argument("--results", type=int, default=80)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "scale.png")
    parser.add_argument(
        "--chart-only", action="store_true", help="redraw the chart from the last scale.json"
    )
    args = parser.parse_args()
    if args.chart_only:
        saved = json.loads((args.out / "scale.json").read_text())["points"]
        chart([Point(**p) for p in saved], args.chart)
        return 0
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    plan = [("policy", int(n)) for n in args.trials.split(",") if n] + [
        ("isolated", int(n)) for n in args.isolated.split(",") if n
    ]
    points = []
    with tempfile.TemporaryDirectory(prefix="tune-wandb-scale-") as tmp:
        for policy, trials in plan:
            point = measure(policy, trials, args.results, Path(tmp))
            points.append(point)
            print(json.dumps(asdict(point)), flush=True)
    table = markdown(points)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "points": [asdict(p) for p in points],
            },
            indent=2,
        )
    )
    (args.out / "scale.md").write_text(table)
    chart(points, args.chart)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
