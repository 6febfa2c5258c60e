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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tune_wandb.callback import WandbLoggerCallback
    from tune_wandb.keyshare import share_api_key
    from tune_wandb.legacy import DEFAULT_LOGGERS, WandbLogger, loggers_to_callbacks, run
    from tune_wandb.mixin import WandbTrainableMixin, setup_wandb, wandb_mixin

__all__ = [
    "DEFAULT_LOGGERS",
    "WandbLogger",
    "WandbLoggerCallback",
    "WandbTrainableMixin",
    "loggers_to_callbacks",
    "run",
    "setup_wandb",
    "share_api_key",
    "wandb_mixin",
]
__version__ = "0.1.0.dev0"

_PUBLIC = {
    "WandbLoggerCallback": "tune_wandb.callback",
    "DEFAULT_LOGGERS": "tune_wandb.legacy",
    "WandbLogger": "tune_wandb.legacy",
    "loggers_to_callbacks": "tune_wandb.legacy",
    "run": "tune_wandb.legacy",
    "wandb_mixin": "tune_wandb.mixin",
    "WandbTrainableMixin": "tune_wandb.mixin",
    "setup_wandb": "tune_wandb.mixin",
    "share_api_key": "tune_wandb.keyshare",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: the launcher and the workers import this package
    # too, and must not pay for importing Ray (~100 MB in every one of them).
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tune_wandb' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
