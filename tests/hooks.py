"""Ray's W&B hook functions, as a user would write them (named by env variables)."""

from __future__ import annotations

import os
from typing import Any


def api_key() -> str:
    """WANDB_SETUP_API_KEY_HOOK: returns the key."""
    return "key-from-the-hook-" + "x" * 22


def populate_run_location() -> None:
    """WANDB_POPULATE_RUN_LOCATION_HOOK: sets Ray's project and group variables."""
    os.environ["WANDB_PROJECT_NAME"] = "project-from-hook"
    os.environ["WANDB_GROUP_NAME"] = "group-from-hook"


def record_run(run: Any) -> None:
    """WANDB_PROCESS_RUN_INFO_HOOK: called in the worker with each run."""
    with open(os.environ["WANDB_TEST_HOOK_OUT"], "a") as out:
        out.write(f"{run.id} {run.project}\n")
