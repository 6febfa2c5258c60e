# Compatibility corpus: Ray 1.2's W&B example, with the WandbLoggerCallback.
#
# Source: ray-project/ray, python/ray/tune/examples/wandb_example.py at commit
# b87fc1be5505c577f01807fd342e0cdb2e129081 (the Ray 1.2.0 release; the same file from
# Ray 1.1 to 1.13): tune.run(callbacks=[WandbLoggerCallback(api_key_file=...,
# project="Wandb_example")], metric="loss", mode="min"), a function trainable decorated
# with @wandb_mixin, and a WandbTrainableMixin class, each run by tune.run.
#
# Written anew, not copied: this repository keeps public code out of its commits, so the
# script makes the same integration calls as its source (names of the trainables,
# arguments, config entries, projects, what is reported to Tune and what goes to
# wandb.log, the three tune.run calls in order) with the training bodies in our own
# words. Changes a user makes on Ray 2.60 are marked "# migration:" (docs/migration.md);
# those made for the test suite are marked "# corpus:".
import numpy as np
import wandb
from ray import tune
from ray.tune import Trainable

# migration: was ray.tune.integration.wandb
from tune_wandb import WandbLoggerCallback, WandbTrainableMixin, wandb_mixin

# corpus: one grid point instead of five (fewer trials); the trial logs as before.
MEANS = [3]


def train_function(config, checkpoint_dir=None):
    for _step in range(30):
        loss = np.random.normal(config["mean"], config["sd"])
        tune.report({"loss": loss})  # migration: was tune.report(loss=loss)


def tune_function(api_key_file):
    """The WandbLoggerCallback with the function API."""
    analysis = tune.run(
        train_function,
        metric="loss",
        mode="min",
        config={"mean": tune.grid_search(MEANS), "sd": tune.uniform(0.2, 0.8)},
        callbacks=[WandbLoggerCallback(api_key_file=api_key_file, project="Wandb_example")],
    )
    return analysis.best_config


@wandb_mixin
def decorated_train_function(config, checkpoint_dir=None):
    for _step in range(30):
        loss = np.random.normal(config["mean"], config["sd"])
        tune.report({"loss": loss})  # migration: was tune.report(loss=loss)
        wandb.log({"loss": loss})


def tune_decorated(api_key_file):
    """The @wandb_mixin decorator on a function trainable."""
    analysis = tune.run(
        decorated_train_function,
        metric="loss",
        mode="min",
        config={
            "mean": tune.grid_search(MEANS),
            "sd": tune.uniform(0.2, 0.8),
            "wandb": {"api_key_file": api_key_file, "project": "Wandb_example"},
        },
    )
    return analysis.best_config


class WandbTrainable(WandbTrainableMixin, Trainable):
    def step(self):
        for _step in range(30):
            loss = np.random.normal(self.config["mean"], self.config["sd"])
            wandb.log({"loss": loss})
        return {"loss": loss, "done": True}


def tune_trainable(api_key_file):
    """WandbTrainableMixin on a class trainable."""
    analysis = tune.run(
        WandbTrainable,
        metric="loss",
        mode="min",
        config={
            "mean": tune.grid_search(MEANS),
            "sd": tune.uniform(0.2, 0.8),
            "wandb": {"api_key_file": api_key_file, "project": "Wandb_example"},
        },
    )
    return analysis.best_config


if __name__ == "__main__":
    # corpus: the source's --mock-api switch (which replaced the integration's internals
    # with MagicMock) is left out; this is the run of a user with a W&B key file.
    api_key_file = "~/.wandb_api_key"
    tune_function(api_key_file)
    tune_decorated(api_key_file)
    tune_trainable(api_key_file)
