"""The old integration's first example, ``WandbLogger``, on Ray 2.60.

Each trial is logged to its own W&B run by ``WandbLogger``, configured by the
trial config's ``"wandb"`` entry: ``project`` goes to ``wandb.init``,
``api_key_file`` and ``log_config`` configure the logger (the key file is read
only when logging online). With ``log_config`` on, each result's config is
logged into the run config as it changes (as it does under
``PopulationBasedTraining``).

Changed from the seed document only where Ray 2.60 requires it: the imports
come from ``tune_wandb``, ``tune_wandb.run`` stands in for ``tune.run`` (which
lost ``loggers=``), and ``tune.report`` takes a dict. ``train_fn``,
``num_samples`` and ``storage_path`` are added to make it a whole script.

Run it with ``WANDB_MODE=offline python seed_logger.py`` to try it without a
W&B account; upload later with ``wandb sync <trial dir>/wandb/offline-run-*``.
"""

from ray import tune

import tune_wandb
from tune_wandb import DEFAULT_LOGGERS, WandbLogger


def train_fn(config):
    """Report a loss computed from the two parameters, ten times."""
    for i in range(10):
        loss = (config["parameter_1"] + config["parameter_2"]) / (i + 1)
        tune.report({"loss": loss})


def main(storage_path=None):
    """Run the experiment; ``storage_path=None`` is Ray's default, ``~/ray_results``."""
    return tune_wandb.run(
        train_fn,
        config={
            # define search space here
            "parameter_1": tune.choice([1, 2, 3]),
            "parameter_2": tune.choice([4, 5, 6]),
            # wandb configuration
            "wandb": {
                "project": "Optimization_Project",
                "api_key_file": "~/.wandb_key",
                "log_config": True,
            },
        },
        loggers=DEFAULT_LOGGERS + (WandbLogger,),
        num_samples=3,
        storage_path=storage_path,
    )


if __name__ == "__main__":
    main()
