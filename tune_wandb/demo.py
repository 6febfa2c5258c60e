"""A small but real sweep, logged to W&B offline: ``python -m tune_wandb demo``.

A linear model trained with NumPy by mini-batch gradient descent on a generated
data set; Tune sweeps the learning rate and batch size (8 trials) under ASHA,
which stops the trials that fall behind. Runs are written to
``./tune-wandb-demo/`` (offline, unless ``WANDB_MODE=online`` and a key are
set) and can be uploaded later with ``python -m tune_wandb sync``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np


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


def main(argv: list[str] | None = None) -> int:
    """Run the demo sweep; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="python -m tune_wandb demo", description=__doc__)
    parser.add_argument("--dir", default="tune-wandb-demo", help="where the experiment goes")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tune_wandb import WandbLoggerCallback

    storage = Path(args.dir).resolve()
    online = os.environ.get("WANDB_MODE") == "online" and bool(os.environ.get("WANDB_API_KEY"))
    callback = WandbLoggerCallback(
        project="tune-wandb-demo", mode=None if online else "offline", log_config=True
    )
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
            scheduler=ASHAScheduler(max_t=args.epochs, grace_period=4, reduction_factor=2),
        ),
        run_config=tune.RunConfig(
            name="demo", storage_path=str(storage), callbacks=[callback], verbose=0
        ),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(
        f"Best trial: lr={best.config['lr']} batch_size={best.config['batch_size']}, "
        f"val/loss {best.metrics['val/loss']:.4f}. List the runs with: "
        f"python -m tune_wandb ls {storage / 'demo'}"
    )
    return 0 if not results.errors else 1
