"""Draw the benchmark chart: ``docs/img/bench.png`` from ``benchmarks/results/bench.json``.

Run by ``nox -s bench`` after ``bench.py`` (or ``python benchmarks/chart.py``).
Two panels, one bar per mode, each median labelled:

* wall time over the no-callback run of the same round (the dots are the
  single rounds, the bar their median as in the README's table);
* the callback's time on the Tune driver per result, p50 (bar) and p99
  (marker), on a log scale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench.json"
DEFAULT_OUT = ROOT / "docs" / "img" / "bench.png"

MODES = ("none", "tune-wandb", "tune-wandb-shared-core", "ray-builtin")
LABELS = {
    "none": "no callback",
    "tune-wandb": "tune-wandb",
    "tune-wandb-shared-core": "tune-wandb\nshared core",
    "ray-builtin": "Ray 2.60's\ncallback",
}
COLORS = {
    "none": "#9e9e9e",
    "tune-wandb": "#1f77b4",
    "tune-wandb-shared-core": "#6baed6",
    "ray-builtin": "#d62728",
}


def round_ratios(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each mode's wall time over the no-callback run of the same round.

    Rounds are interleaved: the k-th run of each mode belongs to round k.
    """
    by_mode: dict[str, list[float]] = {}
    for run in runs:
        by_mode.setdefault(run["mode"], []).append(run["wall_s"])
    base = by_mode.get("none", [])
    return {
        mode: [wall / none for wall, none in zip(walls, base, strict=False) if none]
        for mode, walls in by_mode.items()
    }


def draw(data: dict[str, Any], out: Path) -> Path:
    """Draw the chart of one ``bench.json`` into ``out``; returns ``out``."""
    summary = data["summary"]
    args = data.get("args", {})
    modes = [m for m in MODES if m in summary]
    ratios = round_ratios(data.get("runs", []))

    fig, (wall_ax, result_ax) = plt.subplots(
        1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [4, 3]}
    )

    # Wall time over no callback: the median bar, each round a dot.
    xs = range(len(modes))
    medians = [summary[m]["wall_ratio"] for m in modes]
    wall_ax.bar(xs, medians, color=[COLORS[m] for m in modes], width=0.6, zorder=2)
    for x, mode in zip(xs, modes, strict=True):
        rounds = ratios.get(mode, [])
        wall_ax.scatter([x] * len(rounds), rounds, color="black", s=12, zorder=3, alpha=0.7)
        top = max([summary[mode]["wall_ratio"], *rounds])
        wall_ax.annotate(
            f"{summary[mode]['wall_ratio']:.2f}x",
            (x, top),
            textcoords="offset points",
            xytext=(0, 5),
            ha="center",
            fontweight="bold",
        )
    wall_ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    wall_ax.set_xticks(list(xs), [LABELS[m] for m in modes])
    wall_ax.set_ylabel("wall time / no callback")
    wall_ax.set_ylim(0, max([*medians, *(max(r) for r in ratios.values() if r)]) * 1.18)
    wall_ax.set_title("Wall time (bar: median; dots: each round)")
    wall_ax.grid(axis="y", alpha=0.3, zorder=0)

    # Driver time per result: p50 bar, p99 marker, log scale.
    timed = [m for m in modes if summary[m].get("result_us_p50") is not None]
    xs2 = range(len(timed))
    p50 = [summary[m]["result_us_p50"] for m in timed]
    p99 = [summary[m]["result_us_p99"] for m in timed]
    result_ax.bar(xs2, p50, color=[COLORS[m] for m in timed], width=0.6, zorder=2)
    result_ax.scatter(xs2, p99, marker="_", s=400, color="black", zorder=3, label="p99")
    for x, low, high in zip(xs2, p50, p99, strict=True):
        # Both labels above the higher of the two: p50 and p99 may be close.
        top = max(low, high)
        result_ax.annotate(
            f"p99 {_us(high)}",
            (x, top),
            textcoords="offset points",
            xytext=(0, 5),
            ha="center",
            fontsize=8,
        )
        result_ax.annotate(
            f"p50 {_us(low)}",
            (x, top),
            textcoords="offset points",
            xytext=(0, 16),
            ha="center",
            fontweight="bold",
        )
    result_ax.set_yscale("log")
    result_ax.set_ylim(min(p50) / 2, max(p99) * 12)
    result_ax.set_xticks(list(xs2), [LABELS[m] for m in timed])
    result_ax.set_ylabel("µs on the Tune loop per result")
    result_ax.set_title("Driver time per result (bar: p50)")
    result_ax.grid(axis="y", alpha=0.3, zorder=0)
    result_ax.legend(loc="upper left", frameon=False)

    fig.suptitle(
        f"{args.get('trials', '?')} trials x {args.get('results', '?')} results x "
        f"{float(args.get('compute_ms', 0)):g} ms of compute, {args.get('concurrency', '?')} "
        f"at a time, offline; medians of {args.get('repeats', '?')} interleaved rounds",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    # No software version in the file: the same figures draw the same bytes.
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out


def _us(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:,.1f} ms"
    return f"{value:.1f} µs" if value < 100 else f"{value:.0f} µs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="bench.py's results")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    print(f"wrote {draw(data, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
