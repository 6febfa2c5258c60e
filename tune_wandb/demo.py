"""A small but real sweep, logged to W&B offline: ``tune-wandb demo``.

A linear model trained with NumPy by mini-batch gradient descent on a generated
data set; Tune sweeps the learning rate and batch size (8 trials) under ASHA,
which stops the trials that fall behind. Each demo is an experiment of its own
in ``./tune-wandb-demo/`` (offline, unless ``WANDB_MODE=online`` and a key are
set); at its end it prints the commands that list, browse and upload its runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tune_wandb import _commands


def train_linear(config: dict[str, Any]) -> None:
    """Fit y = Xw + noise by mini-batch SGD, reporting losses every epoch."""
    from ray import tune

    rng = np.random.default_rng(config["seed"])
    n, d = 2048, 16
    x = rng.normal(size=(n, d))
    w_true = rng.normal(size=d)
    y = x @ w_true + 0.1 * rng.normal(size=n)
    x_train, y_train, x_val, y_val = x[:1536], y[:1536], x[1536:], y[1536:]
    w = np.zeros(d)
    batch = config["batch_size"]
    for _ in range(config["epochs"]):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            grad = 2 * x_train[idx].T @ (x_train[idx] @ w - y_train[idx]) / len(idx)
            w -= config["lr"] * grad
        train_loss = float(np.mean((x_train @ w - y_train) ** 2))
        val_loss = float(np.mean((x_val @ w - y_val) ** 2))
        tune.report(
            {
                "train/loss": train_loss,
                "val/loss": val_loss,
                "weight_error": float(np.linalg.norm(w - w_true)),
            }
        )


#: What ``tune-wandb demo --help`` says (the module docstring, without its markup).
_DESCRIPTION = (
    "Run a small but real sweep, logged to W&B offline: a linear model trained with "
    "NumPy, 4 learning rates x 2 batch sizes under ASHA (8 trials). Each demo is an "
    "experiment of its own in DIR (offline, unless WANDB_MODE=online and a key are set); "
    "at its end it prints the commands that list, browse and upload its runs."
)


def main(argv: list[str] | None = None, prog: str = "tune-wandb demo") -> int:
    """Run the demo sweep; returns a process exit code."""
    parser = argparse.ArgumentParser(prog=prog, description=_DESCRIPTION)
    parser.add_argument(
        "--dir",
        default="tune-wandb-demo",
        help="the directory the demo's experiments go into (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="epochs each trial trains for; ASHA stops some earlier (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, not {args.epochs}")

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tune_wandb import WandbLoggerCallback

    storage = Path(args.dir)
    name = _new_experiment_name(storage)
    online = os.environ.get("WANDB_MODE") == "online" and bool(os.environ.get("WANDB_API_KEY"))
    # The demo's trials print nothing, and its Ray runs with log_to_driver=False
    # to keep the terminal quiet: no console to capture.
    callback = WandbLoggerCallback(
        project="tune-wandb-demo",
        mode=None if online else "offline",
        log_config=True,
        capture_console=False,
    )
    _start_ray_quietly()
    with _tune_output_off():
        tuner = tune.Tuner(
            train_linear,
            param_space={
                "lr": tune.grid_search([0.001, 0.01, 0.03, 0.1]),
                "batch_size": tune.grid_search([32, 128]),
                "epochs": args.epochs,
                "seed": 0,
            },
            # ASHA stops the trials that fall behind early; their runs end then.
            tune_config=tune.TuneConfig(
                metric="val/loss",
                mode="min",
                scheduler=ASHAScheduler(
                    max_t=args.epochs, grace_period=min(4, args.epochs), reduction_factor=2
                ),
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage.resolve()), callbacks=[callback], verbose=0
            ),
        )
        results = tuner.fit()
    best = results.get_best_result()
    experiment = _commands.shown_path(str(storage / name))
    print(
        f"\nBest trial: lr={best.config['lr']} batch_size={best.config['batch_size']}, "
        f"val/loss {best.metrics['val/loss']:.4f}.\n"
        f"List its runs:  {_commands.tune_wandb('ls', experiment)}\n"
        f"Browse them:    {_commands.wandb('leet', os.path.join(experiment, 'wandb'))}"
    )
    return 0 if not results.errors else 1


def _new_experiment_name(storage: Path) -> str:
    """``demo-<date>-<time>``, made unique in ``storage``: each demo is its own experiment."""
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    candidate, number = name, 2
    while (storage / candidate).exists():
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def _start_ray_quietly() -> None:
    """A local Ray for the demo, which shows only Ray's errors.

    Ray's INFO lines and its notice about the local cluster's token
    authentication say nothing about the demo; its workers' output is not
    forwarded either.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )


@contextlib.contextmanager
def _tune_output_off() -> Iterator[None]:
    """No Tune progress output while the demo runs (the end table says it all).

    Tune's newer output prints its configuration box and a TensorBoard hint
    for a temporary directory even with ``verbose=0``; the older one, with
    ``verbose=0``, prints nothing. The variable is restored afterwards.
    """
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["RAY_AIR_NEW_OUTPUT"]
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous
