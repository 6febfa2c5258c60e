# Compatibility corpus: Ray 1.0's W&B example, the three ways it logs.
#
# Source: ray-project/ray, python/ray/tune/examples/wandb_example.py at commit
# 2a86943b13983d677fb2b1b27b25d7096fa5feb3 (the Ray 1.0.1 release): WandbLogger in
# tune.run(loggers=DEFAULT_LOGGERS + (WandbLogger,)) with a "wandb" config entry, a
# function trainable decorated with @wandb_mixin, and a WandbTrainableMixin class.
#
# Written anew, not copied: this repository keeps public code out of its commits, so the
# script makes the same integration calls as its source (names of the trainables,
# config entries, projects, what is reported to Tune and what goes to wandb.log, the
# three tune.run calls in order) with the training bodies in our own words.
# Changes a user makes on Ray 2.60 are marked "# migration:" (docs/migration.md);
# those made for the test suite are marked "# corpus:".
import numpy as np
import wandb
from ray import tune
from ray.tune import Trainable

import tune_wandb  # migration: tune_wandb.run takes loggers=, which tune.run no longer does
from tune_wandb import (
    DEFAULT_LOGGERS,  # migration: was ray.tune.logger
    WandbLogger,  # migration: was ray.tune.integration.wandb, as the next two
    WandbTrainableMixin,
    wandb_mixin,
)

# corpus: one grid point instead of five (fewer trials); the trial logs as before.
MEANS = [3]


def train_function(config, checkpoint_dir=None):
    for _step in range(30):
        loss = np.random.normal(config["mean"], config["sd"])
        tune.report({"loss": loss})  # migration: was tune.report(loss=loss)


def tune_function(api_key_file):
    """WandbLogger, configured by the trials' "wandb" entry (function API)."""
    tune_wandb.run(  # migration: was tune.run
        train_function,
        config={
            "mean": tune.grid_search(MEANS),
            "sd": tune.uniform(0.2, 0.8),
            "wandb": {"api_key_file": api_key_file, "project": "Wandb_example"},
        },
        loggers=DEFAULT_LOGGERS + (WandbLogger,),
    )


@wandb_mixin
def decorated_train_function(config, checkpoint_dir=None):
    for _step in range(30):
        loss = np.random.normal(config["mean"], config["sd"])
        tune.report({"loss": loss})  # migration: was tune.report(loss=loss)
        wandb.log({"loss": loss})


def tune_decorated(api_key_file):
    """The @wandb_mixin decorator on a function trainable."""
    tune.run(
        decorated_train_function,
        config={
            "mean": tune.grid_search(MEANS),
            "sd": tune.uniform(0.2, 0.8),
            "wandb": {"api_key_file": api_key_file, "project": "Wandb_example"},
        },
    )


class WandbTrainable(WandbTrainableMixin, Trainable):
    def step(self):
        for _step in range(30):
            loss = np.random.normal(self.config["mean"], self.config["sd"])
            wandb.log({"loss": loss})
        return {"loss": loss, "done": True}


def tune_trainable(api_key_file):
    """WandbTrainableMixin on a class trainable."""
    tune.run(
        WandbTrainable,
        config={
            "mean": tune.grid_search(MEANS),
            "sd": tune.uniform(0.2, 0.8),
            "wandb": {"api_key_file": api_key_file, "project": "Wandb_example"},
        },
    )


if __name__ == "__main__":
    # corpus: the source's --mock-api switch (which replaced the integration's internals
    # with MagicMock) is left out; this is the run of a user with a W&B key file.
    api_key_file = "~/.wandb_api_key"
    tune_function(api_key_file)
    tune_decorated(api_key_file)
    tune_trainable(api_key_file)
