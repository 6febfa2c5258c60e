# Compatibility corpus: W&B's Ray Tune colab of 2022, WandbLogger and @wandb_mixin together.
#
# Source: wandb/examples, colabs/raytune/RayTune_with_wandb.ipynb at commit
# 7d6c14e2b8e0c8a6702c45cf2aeb78f457bac2c1 (2022-02-04): a function trainable decorated
# with @wandb_mixin (logging error_rate with wandb.log) run by tune.run with
# loggers=[WandbLogger] (logging what the trial reports), both configured by the "wandb"
# entry {"project": "raytune", "job_type": "raytune-demo"}. The colab says the two
# "can be used together" and shows them together.
#
# Written anew, not copied: this repository keeps public code out of its commits, so the
# script makes the same integration calls as its source (the trainable's name, the
# loggers, the config entry, what is reported and what goes to wandb.log) in our own
# words. Markdown cells are left out; each code cell is introduced by a comment.
# Changes a user makes on Ray 2.60 are marked "# migration:" (docs/migration.md); those
# made for the test suite are marked "# corpus:".

# Cell 6: "!pip install -U ray wandb" (a shell command: installed by the test environment).

# Cell 7: imports.
import random

import numpy as np
import wandb
from ray import tune

import tune_wandb  # migration: tune_wandb.run takes loggers=, which tune.run no longer does
from tune_wandb import WandbLogger, wandb_mixin  # migration: was ray.tune.integration.wandb


# Cell 9: Ray's MNIST helpers (ray.tune.examples.mnist_pytorch).
# corpus: there is neither torch, nor a GPU, nor a way to download MNIST here. This
# stand-in gives an accuracy per epoch from the same hyperparameters; what the trial
# reports and logs is unchanged.
def stand_in_mnist_epoch(config, epoch):
    return 1.0 - 0.5 / (1.0 + epoch * config["lr"] * 100 * config["momentum"])


# Cell 11: seeds (the torch ones go with torch, see above).
random.seed(2022)
np.random.seed(2022)


# Cell 14: the trainable; @wandb_mixin lets it call wandb.log.
@wandb_mixin
def train_mnist(config):
    for epoch in range(10):
        acc = stand_in_mnist_epoch(config, epoch)
        # With WandbLogger, what the trial reports to Tune goes to W&B too.
        tune.report({"mean_accuracy": acc})  # migration: was tune.report(mean_accuracy=acc)
        # The mixin's run takes the trial's own metrics.
        error_rate = 100 * (1 - acc)
        wandb.log({"error_rate": error_rate})


# Cell 17: log in.
wandb.login()

# Cell 18: the wandb.init arguments, passed in the trials' config.
wandb_init = {"project": "raytune", "job_type": "raytune-demo"}

# Cell 20: the sweep.
analysis = tune_wandb.run(  # migration: was tune.run
    train_mnist,
    loggers=[WandbLogger],
    # corpus: the source asks for resources_per_trial={"gpu": 1}; there is no GPU here.
    config={
        "wandb": wandb_init,
        # corpus: two learning rates and one momentum instead of 3 x 2 (fewer trials).
        "lr": tune.grid_search([0.001, 0.1]),
        "momentum": tune.grid_search([0.9]),
    },
)

# corpus: the source's cell omits mode=, which ExperimentAnalysis.get_best_config has
# required since Ray 1.0 ("No `mode` has been passed ..."): the cell failed there too.
print("Best config: ", analysis.get_best_config(metric="mean_accuracy", mode="max"))
