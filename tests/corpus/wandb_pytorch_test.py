# Compatibility corpus: W&B's Ray Tune example script, the callback and the mixin together.
#
# Source: wandb/examples, examples/ray-tune/pytorch-test.py at commit
# 719d83bcf4ee00d706f7c0d5eebbedb7c402fd95: a function trainable decorated with
# @wandb_mixin (which logs error_rate with wandb.log) run by tune.run with a
# WandbLoggerCallback(project="ray-example", log_config=True) (which logs what the trial
# reports to Tune), the trials' "wandb" entry naming the same project.
#
# Written anew, not copied: this repository keeps public code out of its commits, so the
# script makes the same integration calls as its source (the trainable's name, the
# callback's arguments, the config entry, what is reported and what goes to wandb.log)
# in our own words. Changes a user makes on Ray 2.60 are marked "# migration:"
# (docs/migration.md); those made for the test suite are marked "# corpus:".
import wandb
from ray import tune

from tune_wandb import (
    WandbLoggerCallback,  # migration: was ray.air.callbacks.wandb
    wandb_mixin,  # migration: was ray.tune.integration.wandb
)


# corpus: the source trains Ray's MNIST ConvNet (ray.tune.examples.mnist_pytorch) on a
# GPU; there is neither torch, nor a GPU, nor a way to download MNIST here. This stand-in
# gives an accuracy per epoch from the same hyperparameters; what the trial reports and
# logs is unchanged.
def stand_in_mnist_epoch(config, epoch):
    return 1.0 - 0.5 / (1.0 + epoch * config["lr"] * 100 * config["momentum"])


@wandb_mixin
def train_mnist(config):
    for epoch in range(10):
        acc = stand_in_mnist_epoch(config, epoch)

        # With the WandbLoggerCallback, what the trial reports to Tune goes to W&B too.
        print(f"DEBUG: tune.report run_id={wandb.run.id} mean_accuracy={acc}")
        tune.report({"mean_accuracy": acc})  # migration: was tune.report(mean_accuracy=acc)

        # The mixin lets the trial log its own metrics with wandb.log.
        error_rate = 100 * (1 - acc)
        wandb.log({"error_rate": error_rate})


if __name__ == "__main__":
    wandb.login()
    analysis = tune.run(
        train_mnist,
        callbacks=[WandbLoggerCallback(project="ray-example", log_config=True)],
        # corpus: the source asks for resources_per_trial={"gpu": 1}; there is no GPU here.
        config={
            # Any wandb.init argument can go in the "wandb" entry.
            "wandb": {"project": "ray-example"},
            # corpus: two learning rates and one momentum instead of 3 x 2 (fewer trials).
            "lr": tune.grid_search([0.001, 0.1]),
            "momentum": tune.grid_search([0.9]),
        },
    )
