"""tune-wandb: log Ray Tune experiments to Weights & Biases without slowing Tune down.

Example:
    >>> from ray import tune
    >>> from tune_wandb import WandbLoggerCallback
    >>> callback = WandbLoggerCallback(project="my-project")
    >>> # tune.run(train, config=..., callbacks=[callback])
"""

from __future__ import annotations

import importlib.util

# Checked without importing wandb: the driver never needs it, and importing it
# costs the user's script most of a second.
if importlib.util.find_spec("wandb") is None:  # pragma: no cover - needs wandb uninstalled
    raise ImportError(
        "tune-wandb needs the wandb package: install it with `pip install wandb` "
        "(or `pip install tune-wandb`, which brings it)."
    )

from tune_wandb.callback import WandbLoggerCallback

__all__ = ["WandbLoggerCallback"]
__version__ = "0.1.0.dev0"
