"""Command line: ``python -m tune_wandb {demo,ls,sync}`` (also installed as ``tune-wandb``)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys


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
    ls = commands.add_parser("ls", help="list the W&B runs of a Tune experiment directory")
    ls.add_argument("experiment_dir", metavar="EXPERIMENT_DIR")
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
    from pathlib import Path

    from tune_wandb import sync as local_runs

    experiment = Path(args.experiment_dir)
    if not experiment.is_dir():
        print(f"tune-wandb: {experiment} is not a directory", file=sys.stderr)
        return 2
    if args.command == "ls":
        runs = local_runs.find_local_runs(experiment)
        if not runs:
            print(f"No W&B runs under {experiment}.")
            return 0
        print(local_runs.format_table(runs, shutil.get_terminal_size().columns))
        return 0
    return 1 if local_runs.sync(experiment, timeout=args.timeout) else 0


if __name__ == "__main__":
    sys.exit(main())
