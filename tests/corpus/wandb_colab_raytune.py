# Compatibility corpus: W&B's Ray Tune colab today, setup_wandb and the callback together.
#
# Source: wandb/examples, colabs/raytune/RayTune_with_wandb.ipynb at commit
# e8f1e01328811aa56d3a8b423bbe817dd8e5c766 (2024-07-26): a function trainable that calls
# setup_wandb(config) (and logs error_rate with it) run by a Tuner with
# WandbLoggerCallback(project="raytune-colab") and an AsyncHyperBandScheduler; the colab
# says the two "can be used together" and shows them together.
#
# Written anew, not copied: this repository keeps public code out of its commits, so the
# script makes the same integration calls as its source (the trainable's name, the
# callback, the Tuner's settings, what is reported and what goes to wandb.log) in our
# own words. Markdown cells are left out; each code cell is introduced by a comment.
# Changes a user makes on Ray 2.60 are marked "# migration:" (docs/migration.md) or
# "# ray 2.60:" (Ray's own removals, which Ray's error message explains); those made for
# the test suite are marked "# corpus:".

# Cell 8: "!pip install -Uq ray[tune] wandb" (a shell command: installed by the test
# environment).

# Cell 9: imports.
import random
import tempfile

import numpy as np
import wandb
from ray import tune
from ray.tune import Checkpoint  # ray 2.60: was ray.train (see train.report below)
from ray.tune.schedulers import AsyncHyperBandScheduler

from tune_wandb import WandbLoggerCallback, setup_wandb  # was ray.air.integrations.wandb

# Cell 10: log in.
wandb.login()


# Cell 12: Ray's MNIST helpers (ray.tune.examples.mnist_pytorch).
# corpus: there is neither torch, nor a GPU, nor a way to download MNIST here. This
# stand-in gives an accuracy per epoch from the same hyperparameters; what the trial
# reports and logs is unchanged.
def stand_in_mnist_epoch(config, epoch):
    return 1.0 - 0.5 / (1.0 + epoch * config["lr"] * 100 * config["momentum"])


# Cell 14: seeds (the torch ones go with torch, see above).
random.seed(2022)
np.random.seed(2022)


# Cell 17: the trainable starts its run with setup_wandb and logs error_rate to it.
def train_mnist(config):
    wandb = setup_wandb(config)
    should_checkpoint = config.get("should_checkpoint", False)
    epoch = 0
    while True:
        acc = stand_in_mnist_epoch(config, epoch)
        epoch += 1
        metrics = {"mean_accuracy": acc}
        if should_checkpoint:
            with tempfile.TemporaryDirectory() as tempdir:
                tune.report(metrics, checkpoint=Checkpoint.from_directory(tempdir))
        else:
            # ray 2.60: was train.report, which Ray 2.60 refuses in a Tune trial
            # ("ray.train.report is deprecated ... use the equivalent ray.tune API").
            tune.report(metrics)
        error_rate = 100 * (1 - acc)
        wandb.log({"error_rate": error_rate})


# Cell 21: the sweep, stopped early by ASHA or at 5 iterations.
sched = AsyncHyperBandScheduler()

resources_per_trial = {"cpu": 1}  # corpus: the source asks for {"gpu": 1}; no GPU here
tuner = tune.Tuner(
    tune.with_resources(train_mnist, resources=resources_per_trial),
    tune_config=tune.TuneConfig(
        metric="mean_accuracy",
        mode="max",
        scheduler=sched,
        num_samples=2,  # corpus: 2 samples instead of 50 (fewer trials)
    ),
    # ray 2.60: was train.RunConfig, which Ray 2.60 refuses with stop= and callbacks=
    # ("RunConfig(stop) is deprecated ..."); tune.RunConfig takes them.
    run_config=tune.RunConfig(
        name="exp",
        stop={"mean_accuracy": 0.98, "training_iteration": 5},
        callbacks=[WandbLoggerCallback(project="raytune-colab")],
    ),
    param_space={
        "lr": tune.loguniform(1e-4, 1e-2),
        "momentum": tune.uniform(0.1, 0.9),
    },
)
results = tuner.fit()

# Cell 22: the best configuration.
print("Best config is:", results.get_best_result().config)
