"""Side-by-side benchmark: no callback, tune-wandb, and Ray's built-in W&B callback.

Run with ``nox -s bench`` (or ``python benchmarks/bench.py``). All modes run in
one process against one Ray instance, interleaved over ``--repeats`` rounds (5),
because the machine is noisy; figures are medians over the rounds.

Per mode it measures:

* wall time of the experiment and its ratio to no callback;
* the callback's time on the driver per result (p50, p99) and per trial start,
  from a proxy callback wrapped around it;
* the driver process's CPU per result above no callback (``time.process_time``
  covers every thread, so a sender thread's pickling counts);
* CPU-seconds and peak PSS of all logging processes (launcher, workers and
  wandb-core for tune-wandb; Ray's logging and queue actors and their wandb-core
  for the built-in), sampled with psutil;
* rows landed in the experiment's storage copy, read back from the run files,
  over rows reported.

A scale run starts 64 trials at once for tune-wandb (fractional CPUs) and 16
for Ray's built-in callback (at 64 its two actors per trial need ~16 GB), and
reports the peak PSS of the logging processes per concurrent trial and how
many there were (``scale.py`` measures tune-wandb alone up to 1,000 trials).
Results go to a JSON file and a Markdown table (``--update-readme`` also puts
the table into README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from wandb_reader import find_runs  # noqa: E402

MODES = ("none", "tune-wandb", "tune-wandb-shared-core", "ray-builtin", "tune-wandb-no-console")
#: ``tune-wandb-no-console`` (``capture_console=False``) is for ``--log-to-driver --print``,
#: where it and ``tune-wandb`` differ by the cost of console capture.
DEFAULT_MODES = MODES[:4]


# -- the trainable -----------------------------------------------------------


def busy_trainable(config: dict[str, Any]) -> None:
    """Report ``n`` results, each after ``compute_ms`` of CPU work (or sleep)."""
    from ray import tune

    seconds = config["compute_ms"] / 1000.0
    for i in range(config["n"]):
        if config["sleep"]:
            time.sleep(seconds)
        else:
            end = time.perf_counter() + seconds
            x = 0
            while time.perf_counter() < end:
                x += 1
        if config.get("print"):
            print(f"step {i}: loss {1.0 / (i + 1):.4f}", flush=True)
        tune.report({"loss": 1.0 / (i + 1), "acc": i / config["n"], "lr": config["lr"]})


# -- measuring the driver ------------------------------------------------------


def timed_callback(inner: Any) -> Any:
    """A Tune callback forwarding every hook to ``inner`` and timing the hot ones."""
    from ray.tune import Callback

    class Timed(Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.inner = inner
            self.result_ns: list[int] = []
            self.start_ns: list[int] = []
            self.end_ns = 0

        def setup(self, *args: Any, **kwargs: Any) -> None:
            self.inner.setup(*args, **kwargs)

        def on_trial_result(self, *args: Any, **kwargs: Any) -> None:
            t = time.perf_counter_ns()
            self.inner.on_trial_result(*args, **kwargs)
            self.result_ns.append(time.perf_counter_ns() - t)

        def on_trial_start(self, *args: Any, **kwargs: Any) -> None:
            t = time.perf_counter_ns()
            self.inner.on_trial_start(*args, **kwargs)
            self.start_ns.append(time.perf_counter_ns() - t)

        def on_trial_save(self, *args: Any, **kwargs: Any) -> None:
            self.inner.on_trial_save(*args, **kwargs)

        def on_trial_complete(self, *args: Any, **kwargs: Any) -> None:
            self.inner.on_trial_complete(*args, **kwargs)

        def on_trial_error(self, *args: Any, **kwargs: Any) -> None:
            self.inner.on_trial_error(*args, **kwargs)

        def on_trial_restore(self, *args: Any, **kwargs: Any) -> None:
            self.inner.on_trial_restore(*args, **kwargs)

        def on_experiment_end(self, *args: Any, **kwargs: Any) -> None:
            t = time.perf_counter_ns()
            self.inner.on_experiment_end(*args, **kwargs)
            self.end_ns = time.perf_counter_ns() - t

        def get_state(self) -> Any:
            return self.inner.get_state()

        def set_state(self, state: Any) -> None:
            self.inner.set_state(state)

    return Timed()


# -- measuring the logging processes --------------------------------------------


class ProcessSampler:
    """Runs sampler.py beside the experiment (its /proc reads cost the driver nothing)."""

    def __init__(self, mode: str, interval: float = 0.25, root: int | None = None) -> None:
        self.args = [
            sys.executable,
            str(Path(__file__).with_name("sampler.py")),
            mode,
            str(interval),
            *(() if root is None else (str(root),)),
        ]
        self.cpu_seconds = 0.0
        self.peak_pss = 0

    def __enter__(self) -> ProcessSampler:
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.3)  # its first sample sets the baseline of processes already alive
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate(timeout=60)
        data = json.loads(out)
        self.cpu_seconds = data["cpu_seconds"]
        self.peak_pss = data["peak_pss"]
        self.peak_processes = data["peak_processes"]
        self.own_cpu_seconds = data["sampler_cpu_seconds"]


# -- one experiment ------------------------------------------------------------


@dataclass
class Run:
    mode: str
    trials: int
    concurrency: int
    wall_s: float
    driver_cpu_s: float
    results: int
    result_us: list[float] = field(default_factory=list)
    start_ms: list[float] = field(default_factory=list)
    logging_cpu_s: float = 0.0
    # CPU of the driver's children reaped during the experiment: for tune-wandb,
    # the launcher with every worker and wandb-core under it, counted exactly.
    reaped_children_cpu_s: float = 0.0
    callback_thread_cpu_s: float = 0.0
    logging_peak_pss_mb: float = 0.0
    logging_peak_processes: int = 0
    rows_landed: int = 0
    #: The callback's on_experiment_end: waiting for the runs to finish.
    end_s: float = 0.0


def make_callback(mode: str) -> Any:
    if mode.startswith("tune-wandb"):
        from tune_wandb import WandbLoggerCallback

        return WandbLoggerCallback(
            project="bench",
            shared_service=mode.endswith("shared-core"),
            capture_console=not mode.endswith("no-console"),
        )
    if mode == "ray-builtin":
        from ray.air.integrations.wandb import WandbLoggerCallback as RayCallback

        return RayCallback(project="bench")
    return None


def run_experiment(
    mode: str,
    storage: Path,
    *,
    trials: int,
    results: int,
    compute_ms: float,
    concurrency: int,
    sleep: bool,
    name: str,
    print_lines: bool = False,
) -> Run:
    from ray import tune

    callback = make_callback(mode)
    timed = timed_callback(callback) if callback is not None else None
    resources = {"cpu": 2 / concurrency}
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ProcessSampler(mode) as sampler:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        tune.run(
            busy_trainable,
            config={
                "lr": tune.grid_search([10.0**-k for k in range(trials)]),
                "n": results,
                "compute_ms": compute_ms,
                "sleep": sleep,
                "print": print_lines,
            },
            name=name,
            storage_path=str(storage),
            resources_per_trial=resources,
            max_concurrent_trials=concurrency,
            callbacks=[timed] if timed is not None else [],
            verbose=0,
        )
        wall = time.perf_counter() - t0
        driver_cpu = time.process_time() - cpu0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = Run(
        mode=mode,
        trials=trials,
        concurrency=concurrency,
        wall_s=wall,
        driver_cpu_s=driver_cpu,
        results=trials * results,
        logging_cpu_s=sampler.cpu_seconds,
        reaped_children_cpu_s=(
            children1.ru_utime
            + children1.ru_stime
            - children0.ru_utime
            - children0.ru_stime
            - sampler.own_cpu_seconds
        ),
        logging_peak_pss_mb=sampler.peak_pss / 2**20,
        logging_peak_processes=sampler.peak_processes,
    )
    if timed is not None:
        pool = getattr(callback, "_pool", None)
        if pool is not None:
            run.callback_thread_cpu_s = pool.thread_clock.seconds
        run.result_us = [ns / 1000 for ns in timed.result_ns]
        run.start_ms = [ns / 1e6 for ns in timed.start_ns]
        run.end_s = timed.end_ns / 1e9
        runs = find_runs(storage / name)
        run.rows_landed = sum(len(r.history) for r in runs.values())
    return run


# -- the report ------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(runs: list[Run], scale: list[Run]) -> dict[str, Any]:
    by_mode: dict[str, list[Run]] = {m: [r for r in runs if r.mode == m] for m in MODES}
    base_wall = statistics.median(r.wall_s for r in by_mode["none"])
    base_cpu = statistics.median(r.driver_cpu_s for r in by_mode["none"])
    summary: dict[str, Any] = {}
    for mode, mode_runs in by_mode.items():
        if not mode_runs:
            continue
        n_results = mode_runs[0].results
        trials = mode_runs[0].trials
        wall = statistics.median(r.wall_s for r in mode_runs)
        entry: dict[str, Any] = {
            "wall_s": wall,
            "wall_ratio": wall / base_wall,
            "driver_cpu_us_per_result_above_none": (
                (statistics.median(r.driver_cpu_s for r in mode_runs) - base_cpu) / n_results * 1e6
            ),
        }
        if mode != "none":
            result_us = [u for r in mode_runs for u in r.result_us]
            start_ms = [u for r in mode_runs for u in r.start_ms]
            entry.update(
                {
                    "result_us_p50": pct(result_us, 0.50),
                    "result_us_p99": pct(result_us, 0.99),
                    "trial_start_ms_p50": pct(start_ms, 0.50),
                    "trial_start_ms_max": max(start_ms) if start_ms else float("nan"),
                    "logging_cpu_s_per_trial": statistics.median(
                        r.logging_cpu_s / trials for r in mode_runs
                    ),
                    "logging_peak_pss_mb": statistics.median(
                        r.logging_peak_pss_mb for r in mode_runs
                    ),
                    "rows_landed": min(r.rows_landed for r in mode_runs),
                    "rows_reported": n_results,
                }
            )
        if mode.startswith("tune-wandb"):
            # Only tune-wandb's logging processes are the driver's children, and
            # only its threads keep a clock.
            entry["logging_cpu_s_per_trial_reaped"] = statistics.median(
                r.reaped_children_cpu_s / trials for r in mode_runs
            )
            entry["callback_threads_cpu_us_per_result"] = statistics.median(
                r.callback_thread_cpu_s / n_results * 1e6 for r in mode_runs
            )
        summary[mode] = entry
    for run in scale:
        summary.setdefault(run.mode, {})["scale_pss_mb_per_concurrent_trial"] = (
            run.logging_peak_pss_mb / run.concurrency
        )
        summary[run.mode]["scale_concurrency"] = run.concurrency
        summary[run.mode]["scale_peak_processes"] = run.logging_peak_processes
    return summary


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    def f(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    cols = [m for m in MODES if m in summary]
    rows = [
        ("wall time (s)", "wall_s", ".1f"),
        ("wall / no callback", "wall_ratio", ".2f"),
        ("driver time per result, p50 (µs)", "result_us_p50", ".1f"),
        ("driver time per result, p99 (µs)", "result_us_p99", ".1f"),
        ("driver time per trial start, p50 (ms)", "trial_start_ms_p50", ".2f"),
        ("driver time per trial start, max (ms)", "trial_start_ms_max", ".2f"),
        (
            "driver CPU per result above no callback (µs)",
            "driver_cpu_us_per_result_above_none",
            ".0f",
        ),
        (
            "callback's own threads' CPU per result (µs)",
            "callback_threads_cpu_us_per_result",
            ".0f",
        ),
        ("logging CPU per trial, sampled (CPU-s)", "logging_cpu_s_per_trial", ".2f"),
        ("logging CPU per trial, reaped children (CPU-s)", "logging_cpu_s_per_trial_reaped", ".2f"),
        (f"logging peak PSS at {args.concurrency} concurrent (MB)", "logging_peak_pss_mb", ".0f"),
        ("scale run: concurrent trials", "scale_concurrency", "d"),
        (
            "scale run: logging PSS per concurrent trial (MB)",
            "scale_pss_mb_per_concurrent_trial",
            ".0f",
        ),
        ("scale run: logging processes (peak)", "scale_peak_processes", "d"),
    ]
    lines = [
        f"{args.trials} trials x {args.results} results x {args.compute_ms:g} ms of compute, "
        f"{args.concurrency} at a time, offline; medians of {args.repeats} interleaved rounds "
        f"({platform.machine()}, {os.cpu_count()} CPUs).",
        "",
        "| | " + " | ".join(cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(f(summary[m].get(key), fmt) for m in cols) + " |")
    landed = []
    for m in cols:
        if "rows_landed" in summary[m]:
            s = summary[m]
            landed.append(f"{s['rows_landed']}/{s['rows_reported']}")
        else:
            landed.append("-")
    lines.append("| rows in the storage copy / reported | " + " | ".join(landed) + " |")
    return "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
    if start not in text:
        print("README.md has no bench-table markers; not updated", file=sys.stderr)
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--results", type=int, default=100)
    parser.add_argument("--compute-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--scale", type=int, default=64, help="concurrent trials of the scale run (0: none)"
    )
    parser.add_argument(
        "--scale-builtin",
        type=int,
        default=16,
        help="concurrent trials of Ray's built-in callback's scale run (0: none)",
    )
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"of {','.join(MODES)}")
    parser.add_argument(
        "--log-to-driver",
        action="store_true",
        help="ray.init(log_to_driver=True), Ray's default: trial output reaches the driver",
    )
    parser.add_argument("--print", action="store_true", help="each result also prints a line")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if "none" not in modes:
        modes.insert(0, "none")

    os.environ.setdefault("WANDB_MODE", "offline")  # the benchmark's own process
    os.environ.setdefault("WANDB_SILENT", "true")
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=args.log_to_driver,
        configure_logging=False,
    )
    runs: list[Run] = []
    scale: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="tune-wandb-bench-") as tmp:
        storage = Path(tmp)
        common = dict(
            trials=args.trials,
            results=args.results,
            compute_ms=args.compute_ms,
            concurrency=args.concurrency,
            sleep=False,
            print_lines=args.print,
        )
        # A warm-up experiment, so that no mode pays Ray's first-trial costs.
        run_experiment("none", storage, name="warmup", **{**common, "trials": 2, "results": 5})
        for round_no in range(args.repeats):
            for mode in modes:
                run = run_experiment(mode, storage, name=f"{mode}-{round_no}", **common)
                runs.append(run)
                print(
                    f"round {round_no} {mode}: wall {run.wall_s:.1f}s "
                    f"(experiment end {run.end_s:.1f}s) rows {run.rows_landed}",
                    flush=True,
                )
        if args.scale:
            for mode in modes:
                n = args.scale_builtin if mode == "ray-builtin" else args.scale
                if mode == "none" or not n:
                    continue
                run = run_experiment(
                    mode,
                    storage,
                    name=f"scale-{mode}",
                    trials=n,
                    results=50,
                    compute_ms=50,
                    concurrency=n,
                    sleep=True,
                )
                scale.append(run)
                print(f"scale {mode}: peak PSS {run.logging_peak_pss_mb:.0f} MB", flush=True)
    ray.shutdown()

    summary = summarize(runs, scale)
    table = markdown(summary, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "summary": summary,
                "runs": [asdict(r) | {"result_us": None, "start_ms": None} for r in runs],
                "scale": [asdict(r) | {"result_us": None, "start_ms": None} for r in scale],
            },
            indent=2,
        )
    )
    (args.out / "bench.md").write_text(table)
    print(table)
    if args.update_readme:
        update_readme(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
