"""Command line: ``python -m tune_wandb demo``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch a ``tune_wandb`` subcommand."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m tune_wandb demo [--dir DIR] [--epochs N]")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from tune_wandb.demo import main as demo_main

        return demo_main(rest)
    print(f"unknown command {command!r}; try: python -m tune_wandb demo", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
