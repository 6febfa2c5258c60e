# Compatibility corpus: Ray 1.0's WandbLogger docstring, its RLlib example.
#
# Source: ray-project/ray, python/ray/tune/integration/wandb.py at commit
# 2a86943b13983d677fb2b1b27b25d7096fa5feb3 (the Ray 1.0.1 release), the "Example for
# RLLib" of WandbLogger's docstring: tune.run("PPO", loggers=[WandbLogger]) with the
# "wandb" entry inside the config's "logger_config" (RLlib's place for logger settings):
# {"project": "PPO", "api_key_file": "~/.wandb_api_key"}.
#
# Written anew, not copied: this repository keeps public code out of its commits, so the
# script makes the same integration calls as its source in our own words. Changes a user
# makes on Ray 2.60 are marked "# migration:" (docs/migration.md); those made for the
# test suite are marked "# corpus:".
from ray import tune

import tune_wandb  # migration: tune_wandb.run takes loggers=, which tune.run no longer does
from tune_wandb import WandbLogger  # migration: was ray.tune.integration.wandb


# corpus: RLlib (and its PPO on CartPole) is not installed here. A small trainable is
# registered under the name "PPO" in its place, so the call below is the docstring's; it
# reports an RLlib-style result for five iterations.
def stand_in_ppo(config):
    for iteration in range(5):
        tune.report({"episode_reward_mean": 10.0 * (iteration + 1)})


tune.register_trainable("PPO", stand_in_ppo)

tune_wandb.run(  # migration: was tune.run
    "PPO",
    config={
        "env": "CartPole-v0",
        "logger_config": {
            "wandb": {
                "project": "PPO",
                "api_key_file": "~/.wandb_api_key",
            }
        },
    },
    loggers=[WandbLogger],
)
