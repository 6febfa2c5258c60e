"""Ray's modern form: ``setup_wandb`` inside a function trainable, with the ``Tuner``.

``setup_wandb(config, ...)`` returns the trial's W&B run: named by Tune (id,
name, and the experiment's name as group), its config the trial config without
the ``"wandb"`` entry, and written in the trial's directory. Keyword arguments
go to ``wandb.init``. The run is finished when Tune ends the trial, even
without a ``run.finish()``.

Run it with ``WANDB_MODE=offline python setup_wandb.py`` to try it without a
W&B account.
"""

from ray import tune

from tune_wandb import setup_wandb


def train_fn(config):
    """Log a loss to W&B and report it to Tune, five times."""
    run = setup_wandb(config, project="tune-wandb-examples")
    for i in range(5):
        loss = config["lr"] / (i + 1)
        run.log({"loss": loss})
        tune.report({"loss": loss})


def main(storage_path=None):
    """Run the experiment; ``storage_path=None`` is Ray's default, ``~/ray_results``."""
    tuner = tune.Tuner(
        train_fn,
        param_space={"lr": tune.grid_search([0.1, 0.01])},
        run_config=tune.RunConfig(storage_path=storage_path),
    )
    return tuner.fit()


if __name__ == "__main__":
    main()
