"""The old integration's ``@wandb_mixin`` example, on Ray 2.60.

``@wandb_mixin`` starts the trial's W&B run in the trial's own process before
``train_fn`` runs, so plain ``wandb.log`` goes to it; the run is finished when
``train_fn`` returns. It is configured by the trial config's ``"wandb"``
entry: ``project`` goes to ``wandb.init``, ``api_key_file`` is read only when
logging online. Tune names the run (id, name, group); the entry's ``run_id``,
``run_name`` and ``group`` would override them.

Corrected from the seed document: ``train_fn`` reads ``config`` (the seed read
``self.config``, which a function does not have), ``tune.report`` takes a
dict, and the imports come from ``tune_wandb``. ``num_samples`` and
``storage_path`` are added.

Run it with ``WANDB_MODE=offline python seed_mixin.py`` to try it without a
W&B account.
"""

import wandb
from ray import tune

from tune_wandb import wandb_mixin


@wandb_mixin
def train_fn(config):
    """Log the sum of ``a`` and ``b`` to W&B and report it to Tune, ten times."""
    for _ in range(10):
        loss = config["a"] + config["b"]
        wandb.log({"loss": loss})
        tune.report({"loss": loss})


def main(storage_path=None):
    """Run the experiment; ``storage_path=None`` is Ray's default, ``~/ray_results``."""
    return tune.run(
        train_fn,
        config={
            # define search space here
            "a": tune.choice([1, 2, 3]),
            "b": tune.choice([4, 5, 6]),
            # wandb configuration
            "wandb": {
                "project": "Optimization_Project",
                "api_key_file": "~/.wandb_key",
            },
        },
        num_samples=3,
        storage_path=storage_path,
    )


if __name__ == "__main__":
    main()
