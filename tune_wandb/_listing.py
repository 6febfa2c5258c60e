"""What ``tune-wandb ls`` prints: a table for people, JSON for programs.

One row per run: the trial's name as Tune's own tables show it, the run id,
how many rows the run holds, whether it is uploaded, then the last value of
each of the user's metrics, one column each, before those Tune adds to every
result (shown on request). In a terminal, columns that do not fit its width
go into further blocks, each led by the trial's name, and long values are
shortened; written to a pipe or a file, the table is one block and nothing
is cut.

No table library: neither ``ray[tune]`` nor ``wandb`` installs one (Ray
vendors ``tabulate`` under a private module), and column blocks that fit a
terminal's width are a few lines here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tune_wandb.sync import LocalRun

#: Metrics Tune adds to every result (``ray.tune.result.AUTO_RESULT_KEYS``,
#: less those tune-wandb keeps in the run config instead), listed after the
#: user's own and only on request.
TUNE_METRICS = frozenset(
    {
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_since_restore",
        "timesteps_total",
        "episodes_total",
    }
)

#: A trial directory Tune named: ``<trainable>_<trial id>_<index>[_<params>]_<date>``.
_TRIAL_DIR = re.compile(r"(?P<name>.+?_(?:[0-9a-f]{5}_\d{5}|[0-9a-f]{8}))_\d+(?:_.*)?")

#: The longest value a terminal's table shows; longer ones end in "...".
_MAX_CELL = 16

_GAP = "  "


@dataclass(frozen=True)
class RunListing:
    """One run as ``ls`` shows it.

    Attributes:
        trial: the trial's name (``<trainable>_<trial id>``), or the trial
            directory's name if Tune did not name it.
        run: the run on disk.
        rows: how many history rows its run files hold.
        metrics: the last value of each metric, the user's first, each group
            in alphabetical order.
    """

    trial: str
    run: LocalRun
    rows: int
    metrics: dict[str, Any]


def trial_name(directory_name: str) -> str:
    """The trial's name in the name of a trial directory Tune made.

    Example:
        >>> trial_name("train_fn_1f2e3_00004_4_lr=0.0100_2025-01-02_03-04-05")
        'train_fn_1f2e3_00004'
        >>> trial_name("my-own-dir")
        'my-own-dir'
    """
    match = _TRIAL_DIR.fullmatch(directory_name)
    return match.group("name") if match else directory_name


def read(runs: Iterable[LocalRun]) -> list[RunListing]:
    """Read each run's files for its listing."""
    listings = []
    for run in runs:
        rows, last = run.history()
        metrics = {key: last[key] for key in sorted(last, key=_metric_order)}
        listings.append(RunListing(trial_name(run.trial_dir.name), run, rows, metrics))
    return listings


def table(
    listings: Sequence[RunListing], width: int | None = None, tune_metrics: bool = False
) -> str:
    """The table; ``width`` is the terminal's (None: one block, nothing cut).

    Example:
        >>> from pathlib import Path
        >>> from tune_wandb.sync import LocalRun
        >>> run = LocalRun("1f2e3_00000-ab12cd", Path("train_1f2e3_00000_0_2025-01-02_03-04-05"))
        >>> print(table([RunListing("train_1f2e3_00000", run, 20, {"loss": 0.0123456})]))
        trial              run id              rows  uploaded     loss
        train_1f2e3_00000  1f2e3_00000-ab12cd    20  no        0.01235
    """
    names = sorted({k for listing in listings for k in listing.metrics}, key=_metric_order)
    hidden = [k for k in names if k in TUNE_METRICS] if not tune_metrics else []
    names = [k for k in names if k not in hidden]
    cut = width is not None
    trials = _Column("trial", [x.trial for x in listings])
    fixed = [
        _Column("run id", [x.run.run_id for x in listings]),
        _Column("rows", [str(x.rows) for x in listings], right=True),
        _Column("uploaded", ["yes" if x.run.uploaded else "no" for x in listings]),
    ]
    metrics = [
        _Column(name, [_cell(x.metrics.get(name, "-"), cut) for x in listings], right=True)
        for name in names
    ]
    blocks = _blocks(trials, fixed + metrics, width)
    text = "\n\n".join(_render([trials, *block]) for block in blocks)
    if hidden and cut:
        text += f"\n({len(hidden)} metrics Tune adds to every result not shown: --all shows them.)"
    return text


def to_json(listings: Sequence[RunListing]) -> str:
    """Every run and the last value of every metric, as a JSON array.

    Non-finite numbers are the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` (JSON has no such numbers).
    """
    return json.dumps(
        [
            {
                "trial": x.trial,
                "run_id": x.run.run_id,
                "trial_dir": str(x.run.trial_dir.absolute()),
                "pieces": [str(p.absolute()) for p in x.run.pieces],
                "rows": x.rows,
                "uploaded": x.run.uploaded,
                "offline": x.run.offline,
                "metrics": {k: _finite(v) for k, v in x.metrics.items()},
            }
            for x in listings
        ],
        indent=2,
        allow_nan=False,
    )


def _metric_order(name: str) -> tuple[bool, str]:
    """The user's metrics first, Tune's after them; each group alphabetically."""
    return (name in TUNE_METRICS, name)


@dataclass(frozen=True)
class _Column:
    header: str
    cells: list[str]
    right: bool = False

    @property
    def width(self) -> int:
        return max([len(self.header), *(len(c) for c in self.cells)])

    def text(self, row: int) -> str:
        cell = self.header if row < 0 else self.cells[row]
        return cell.rjust(self.width) if self.right else cell.ljust(self.width)


def _blocks(lead: _Column, columns: list[_Column], width: int | None) -> list[list[_Column]]:
    """``columns`` in blocks that fit ``width`` beside ``lead`` (at least one each)."""
    if width is None:
        return [columns]
    blocks: list[list[_Column]] = [[]]
    used = lead.width
    for column in columns:
        if blocks[-1] and used + len(_GAP) + column.width > width:
            blocks.append([])
            used = lead.width
        blocks[-1].append(column)
        used += len(_GAP) + column.width
    return blocks


def _render(columns: list[_Column]) -> str:
    rows = len(columns[0].cells)
    return "\n".join(
        _GAP.join(column.text(row) for column in columns).rstrip() for row in range(-1, rows)
    )


def _cell(value: Any, cut: bool) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, dict) and isinstance(value.get("_type"), str):
        text = value["_type"]  # wandb media and histograms: their kind
    else:
        text = json.dumps(value)
    if cut and len(text) > _MAX_CELL:
        return text[: _MAX_CELL - 3] + "..."
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
