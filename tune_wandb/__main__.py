"""Command line: ``tune-wandb {demo,ls,sync}``, also ``python -m tune_wandb``."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

#: The program's name in usage lines when run as ``python -m tune_wandb``.
MODULE_PROG = "python -m tune_wandb"


def main(argv: list[str] | None = None, prog: str = "tune-wandb") -> int:
    """Run a ``tune-wandb`` subcommand; returns the process exit code.

    ``prog`` names the program in usage lines: the console script's name, or
    :data:`MODULE_PROG` when run as a module.
    """
    try:
        return _main(argv, prog)
    except BrokenPipeError:
        # The reader went away (``tune-wandb ls DIR | head``): stop quietly, as
        # the Python docs advise, so the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None, prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="tune-wandb: log Ray Tune experiments to Weights & Biases.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="run a small sweep logged offline into ./tune-wandb-demo/ (see demo --help)",
        add_help=False,
    )
    ls = commands.add_parser(
        "ls",
        help="list the W&B runs of a Tune experiment directory",
        description="List the W&B runs of a Tune experiment directory: trial, run id, rows, "
        "uploaded or not, and the last value of each of your metrics.",
    )
    ls.add_argument("experiment_dir", metavar="EXPERIMENT_DIR")
    ls.add_argument(
        "--all",
        action="store_true",
        help="also show the metrics Tune adds to every result (training_iteration, ...)",
    )
    ls.add_argument(
        "--json", action="store_true", help="print every run and metric as JSON, for programs"
    )
    sync = commands.add_parser(
        "sync",
        help="upload the runs of a Tune experiment directory that are not uploaded yet",
        description="Upload the W&B runs of a Tune experiment directory that are not uploaded "
        "yet, through wandb sync: the API key is checked with the W&B server first, the pieces "
        "of a resumed run go up together and in order, runs already uploaded are skipped.",
    )
    sync.add_argument("experiment_dir", metavar="EXPERIMENT_DIR")
    sync.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="stop a run's upload after this long and go on with the next (default: 600)",
    )
    sync.add_argument(
        "--sweep",
        action="store_true",
        help="then show the uploaded runs as the experiment's W&B sweep (an experiment run "
        "with WandbLoggerCallback(sweep=...)): made once, joined by runs uploaded later",
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        from tune_wandb.demo import main as demo_main

        return demo_main(rest, prog=f"{prog} demo")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 2
    from tune_wandb import sync as local_runs

    experiment = Path(args.experiment_dir)
    if not experiment.is_dir():
        print(f"tune-wandb: {experiment} is not a directory", file=sys.stderr)
        return 2
    if args.command == "ls":
        return _ls(experiment, args.all, args.json)
    failed = local_runs.sync(experiment, timeout=args.timeout)
    if args.sweep and local_runs.sync_sweep(experiment) != 0:
        return 1
    return 1 if failed else 0


def _version() -> str:
    """tune-wandb's version, and Ray's and wandb's, for bug reports (without importing them)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"tune-wandb {version('tune-wandb')} (Ray {version('ray')}, wandb {version('wandb')})"


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return seconds


def _ls(experiment: Path, tune_metrics: bool, as_json: bool) -> int:
    from tune_wandb import _listing
    from tune_wandb.sync import find_local_runs

    listings = _listing.read(find_local_runs(experiment))
    if as_json:
        print(_listing.to_json(listings))
    elif not listings:
        print(f"No W&B runs under {experiment}.")
    else:
        # A terminal's width; a pipe or a file gets every column, uncut.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        print(_listing.table(listings, width, tune_metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog=MODULE_PROG))
