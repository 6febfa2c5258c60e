"""The driver's W&B key, for runs started in trials on other nodes.

``WandbLoggerCallback`` starts every run on the driver's machine, where the
key is. The mixins and ``setup_wandb`` start runs in the trial's own process,
wherever Ray placed it; a key file or ``wandb login`` on the driver's machine
is not there. :func:`share_api_key` keeps the driver's key in the memory of a
small actor of the experiment's Ray job, and those runs ask it when their
node has no key of its own. The key never goes into a config, a command
line, an environment variable or a file.
"""

from __future__ import annotations

import os
from typing import Any

from tune_wandb import _settings

#: The holder actor's name, in the Ray job's namespace.
_HOLDER_NAME = "tune_wandb_api_key"

#: The driver's handle on the holder, by Ray job id; it keeps the holder alive.
_DRIVER_HANDLES: dict[str, Any] = {}


def share_api_key(api_key: str | None = None, api_key_file: str | None = None) -> None:
    """Make the driver's W&B key available to the trials of this Ray job, on every node.

    Call it in the driver before ``tune.run`` / ``Tuner.fit`` when trials that
    use :func:`~tune_wandb.wandb_mixin`, :class:`~tune_wandb.WandbTrainableMixin`
    or :func:`~tune_wandb.setup_wandb` may run on nodes without a key (no key
    file there, no ``WANDB_API_KEY``, no ``wandb login``).
    :func:`tune_wandb.run` calls it for you when W&B is online. The key is
    ``api_key``, else the first line of ``api_key_file`` (read here, on the
    driver's machine), else ``WANDB_API_KEY``, else the key ``wandb login``
    stored. It is kept in memory by an actor of this job that uses no CPU and
    ends with the job; a run in a trial asks it only when its node has no key.
    Calling it again replaces the key.

    Example:
        >>> import tune_wandb
        >>> tune_wandb.share_api_key(api_key_file="~/.wandb_key")  # doctest: +SKIP
        >>> tune.run(my_mixin_trainable, config=...)  # doctest: +SKIP

    Raises:
        ValueError: no key was found, or both ``api_key`` and ``api_key_file``
            were given.
    """
    key = _driver_key(api_key, api_key_file)
    if not key:
        raise ValueError(
            "tune_wandb.share_api_key found no W&B API key: pass api_key_file=, set "
            "WANDB_API_KEY or run `wandb login` on this machine."
        )
    import ray

    if not ray.is_initialized():
        ray.init()
    # One holder per Ray job (a driver may shut Ray down and start it again).
    job = ray.get_runtime_context().get_job_id()
    holder = _DRIVER_HANDLES.get(job)
    if holder is None:
        holder = _holder_class().options(name=_HOLDER_NAME, get_if_exists=True).remote()
        # Ray ends an actor, named or not, when the handle that created it is gone.
        _DRIVER_HANDLES[job] = holder
    # A method argument travels in the call itself; a constructor argument
    # would be kept in Ray's actor table for restarts.
    ray.get(holder.set.remote(key))


def _driver_key(api_key: str | None, api_key_file: str | None) -> str | None:
    found = _settings.find_api_key(api_key_file, api_key, os.environ)
    return found[0] if found is not None else None


def shared_api_key() -> str | None:
    """The key :func:`share_api_key` shared in this Ray job, or None (none, or no Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        holder = ray.get_actor(_HOLDER_NAME)
    except Exception:
        # No holder: nobody shared a key. Any other failure means the same to the caller.
        return None
    key: str | None = ray.get(holder.get.remote(), timeout=30)
    return key


def _holder_class() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class _KeyHolder:
        """Keeps one key in memory for the job's trials."""

        def __init__(self) -> None:
            self._key: str | None = None

        def set(self, key: str) -> None:
            self._key = key

        def get(self) -> str | None:
            return self._key

        def __repr__(self) -> str:
            # Ray shows actor reprs in its logs and dashboard.
            return "tune_wandb key holder"

    return _KeyHolder
