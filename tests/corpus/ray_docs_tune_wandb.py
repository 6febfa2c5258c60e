# Compatibility corpus: Ray's user guide "Using Weights & Biases with Tune", cell by cell.
#
# Source: ray-project/ray, doc/source/tune/examples/tune-wandb.ipynb at commit
# 0615c6e1221c44be33ce309026b15c4b6a735dc0: a WandbLoggerCallback with the Tuner,
# setup_wandb in a function trainable, and setup_wandb in a class trainable's setup()
# given the trial's id, name, group and project. (The Ray 2.53 documentation publishes
# the same W&B calls with tune.report and tune.RunConfig.)
#
# Written anew, not copied: this repository keeps public code out of its commits, so the
# script makes the same integration calls as its source (names of the trainables,
# arguments, projects, groups, what is reported to Tune and what goes to run.log) with
# the training bodies in our own words. Markdown cells are left out; each code cell is
# introduced by a comment. Changes made for the test suite are marked "# corpus:".

# Cell 1: imports.
import numpy as np
import ray
from ray import air, tune
from ray.air import session

from tune_wandb import WandbLoggerCallback, setup_wandb  # was ray.air.integrations.wandb

# corpus: one grid point instead of five (fewer trials); the trial logs as before.
MEANS = [3]


# Cell 2: a function trainable reporting a noisy loss to Tune.
def train_function(config):
    for _step in range(30):
        loss = np.random.normal(config["mean"], config["sd"])
        session.report({"loss": loss})


# Cell 3: the callback logs what the trials report.
def tune_with_callback():
    """WandbLoggerCallback with the function API."""
    tuner = tune.Tuner(
        train_function,
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=air.RunConfig(callbacks=[WandbLoggerCallback(project="Wandb_example")]),
        param_space={"mean": tune.grid_search(MEANS), "sd": tune.uniform(0.2, 0.8)},
    )
    tuner.fit()


# Cell 4: setup_wandb inside the function trainable; the trial logs with run.log.
def train_function_wandb(config):
    wandb = setup_wandb(config, project="Wandb_example")
    for _step in range(30):
        loss = np.random.normal(config["mean"], config["sd"])
        session.report({"loss": loss})
        wandb.log({"loss": loss})


# Cell 5: the Tuner for it.
def tune_with_setup():
    """setup_wandb with the function API."""
    tuner = tune.Tuner(
        train_function_wandb,
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        param_space={"mean": tune.grid_search(MEANS), "sd": tune.uniform(0.2, 0.8)},
    )
    tuner.fit()


# Cell 6: a class trainable starting its run in setup(), with the trial's id, name, group.
class WandbTrainable(tune.Trainable):
    def setup(self, config):
        self.wandb = setup_wandb(
            config,
            trial_id=self.trial_id,
            trial_name=self.trial_name,
            group="Example",
            project="Wandb_example",
        )

    def step(self):
        for _step in range(30):
            loss = np.random.normal(self.config["mean"], self.config["sd"])
            self.wandb.log({"loss": loss})
        return {"loss": loss, "done": True}

    def save_checkpoint(self, checkpoint_dir: str):
        pass

    def load_checkpoint(self, checkpoint_dir: str):
        pass


# Cell 7: the Tuner for the class.
def tune_trainable():
    """setup_wandb in a class trainable."""
    tuner = tune.Tuner(
        WandbTrainable,
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        param_space={"mean": tune.grid_search(MEANS), "sd": tune.uniform(0.2, 0.8)},
    )
    results = tuner.fit()
    return results.get_best_result().config


# Cell 8: run all three. With mock_api = True the notebook turns W&B off
# (WANDB_MODE=disabled); it says to set it to False to log for real.
import os  # noqa: E402  (the cell's own import, kept where the notebook has it)

mock_api = False  # corpus: False, as the notebook tells a user with a W&B account

if mock_api:
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("WANDB_API_KEY", "abcd")
    ray.init(runtime_env={"env_vars": {"WANDB_MODE": "disabled", "WANDB_API_KEY": "abcd"}})

tune_with_callback()
tune_with_setup()
tune_trainable()
