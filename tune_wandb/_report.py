"""What the driver's terminal shows: a line per run as it starts, a table at the end.

tune-wandb speaks through the ``tune_wandb`` logger. A program that set up no
logging at all would see only its warnings (Python's last-resort handler), so
:func:`ensure_console` gives the logger a plain stderr handler then, as Ray
does for its own logger; a program that configured logging keeps full control.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from tune_wandb import _commands

logger = logging.getLogger("tune_wandb")

#: Rows of the end table; the rest is counted in one line.
_MAX_TABLE_ROWS = 50


def ensure_console() -> None:
    """Show tune-wandb's INFO lines on stderr if the program configured no logging."""
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


@dataclass(frozen=True)
class RunLine:
    """One run in the end table."""

    trial: str
    run_id: str
    rows: int
    exit_code: int | None
    offline: bool
    finished: bool
    #: Its workers kept dying and its logging was given up.
    given_up: bool = False
    #: Rows that never reached its run file (a full or read-only disk, given up).
    unwritten: int = 0


def status_of(line: RunLine) -> str:
    """``finished``, ``failed``, ``interrupted`` or ``not finished in time``, and where it is.

    Example:
        >>> status_of(RunLine("t", "id", 3, 0, offline=True, finished=True))
        'finished, saved locally, not uploaded'
        >>> status_of(RunLine("t", "id", 3, 1, offline=True, finished=True, unwritten=2))
        'failed (exit code 1), 2 rows not written to disk, saved locally, not uploaded'
    """
    if line.given_up:
        status = "W&B workers kept dying; logging given up"
    elif not line.finished:
        status = "not finished in time"
    elif line.exit_code == 0:
        status = "finished"
    elif line.exit_code == 130:
        status = "interrupted"
    else:
        status = f"failed (exit code {line.exit_code})"
    if line.unwritten:
        status += f", {line.unwritten} rows not written to disk"
    if line.offline or not line.finished:
        status += ", saved locally, not uploaded"
    return status


def summary(lines: list[RunLine], experiment_dir: str | None) -> str:
    """The end-of-experiment table, by trial, and the one command that uploads what is left.

    The command names the interpreter that runs the experiment (or its
    ``tune-wandb`` script), so it works as printed.

    Example:
        >>> lines = [RunLine(f"trial_{i}", f"ab_{i:05}-1f2e3d", 20, 0, True, True) for i in (10, 9)]
        >>> print(summary(lines, "/exp"))  # doctest: +ELLIPSIS
        tune-wandb: 2 W&B runs
        trial     run id           rows  status
        trial_9   ab_00009-1f2e3d  20    finished, saved locally, not uploaded
        trial_10  ab_00010-1f2e3d  20    finished, saved locally, not uploaded
        Upload every run of this experiment that is not uploaded yet with:
          ... sync /exp
    """
    lines = sorted(lines, key=lambda line: (_natural(line.trial), _natural(line.run_id)))
    shown = lines[:_MAX_TABLE_ROWS]
    header = ("trial", "run id", "rows", "status")
    cells = [(s.trial, s.run_id, str(s.rows), status_of(s)) for s in shown]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header[:3])]
    plural = "" if len(lines) == 1 else "s"
    out = [f"tune-wandb: {len(lines)} W&B run{plural}"]
    for row in [header, *cells]:
        out.append(
            "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        )
    if len(lines) > len(shown):
        out.append(f"... and {len(lines) - len(shown)} more")
    if experiment_dir and any(s.offline or not s.finished for s in lines):
        out.append("Upload every run of this experiment that is not uploaded yet with:")
        out.append(f"  {_commands.tune_wandb('sync', experiment_dir)}")
    return "\n".join(out)


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that puts ``trial_9`` before ``trial_10``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text))


_DIGITS = re.compile(r"(\d+)")
