"""Command line: ``python -m tune_wandb {demo,ls,sync}`` (also installed as ``tune-wandb``)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run a ``tune_wandb`` subcommand; returns the process exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``tune-wandb ls DIR | head``): stop quietly, as
        # the Python docs advise, so the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tune_wandb",
        description="tune-wandb: log Ray Tune experiments to Weights & Biases.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "demo", help="run a small sweep logged offline into ./tune-wandb-demo/", add_help=False
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
        "sync", help="upload the runs of a Tune experiment directory that are not uploaded yet"
    )
    sync.add_argument("experiment_dir", metavar="EXPERIMENT_DIR")
    sync.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="stop a run's upload after this long and go on with the next (default: 600)",
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        from tune_wandb.demo import main as demo_main

        return demo_main(rest)
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
    return 1 if local_runs.sync(experiment, timeout=args.timeout) else 0


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
    sys.exit(main())
