"""A class trainable logging to W&B with ``WandbTrainableMixin``.

Put ``WandbTrainableMixin`` before ``tune.Trainable`` in the bases: the trial's
W&B run is started before ``setup`` (so ``setup`` can log already) and is
``self.wandb``; it is finished after ``cleanup``. It is configured by the
trial config's ``"wandb"`` entry, as for ``@wandb_mixin``: here the entry sets
the group, which is otherwise the trainable's name (as in Ray 1.x).

Run it with ``WANDB_MODE=offline python class_trainable.py`` to try it without
a W&B account.
"""

from ray import tune

from tune_wandb import WandbTrainableMixin


class MyTrainable(WandbTrainableMixin, tune.Trainable):
    """A loss that falls as ``lr`` divided by the iteration."""

    def setup(self, config):
        """Log the learning rate once, before the first step."""
        self.lr = config["lr"]
        self.wandb.log({"initial_lr": self.lr})

    def step(self):
        """One iteration: log the loss to W&B and return it to Tune."""
        loss = self.lr / (self.iteration + 1)
        self.wandb.log({"loss": loss})
        return {"loss": loss}


def main(storage_path=None):
    """Run the experiment; ``storage_path=None`` is Ray's default, ``~/ray_results``."""
    return tune.run(
        MyTrainable,
        config={
            "lr": tune.grid_search([0.1, 0.01]),
            "wandb": {"project": "tune-wandb-examples", "group": "class-trainables"},
        },
        stop={"training_iteration": 5},
        storage_path=storage_path,
    )


if __name__ == "__main__":
    main()
