"""One writer per trial's run when the callback and a mixin (or ``setup_wandb``) meet.

W&B accepts several writers of one run only in shared mode, which is online
only, and two offline pieces of one run written at the same time collide at
``wandb sync``. So when a trial is logged both by :class:`WandbLoggerCallback`
(or ``WandbLogger``) and by a run its own process starts (``@wandb_mixin``,
``WandbTrainableMixin``, ``setup_wandb``), the run in the trial's process is the
trial's one run: it also logs the results the trial reports to Tune, and the
callback opens no run for that trial.

The two sides meet in Ray's internal key-value store (the GCS), which every
process of the cluster reaches:

- the callback publishes its settings (run-id token, project, group, excludes,
  ``log_config``, ``wandb.init`` arguments) under the driver's Ray job id in its
  ``setup``, before any trial process starts (Tune tells a callback nothing of
  the experiment's path before its trials start), and withdraws them at the
  experiment's end; the trials' actors belong to the same job;
- whichever side starts the trial's run first claims the trial: the trial's
  process when it starts its run, the callback when it would open its own (at
  a class trainable's start, whose ``setup`` has run by then, or at a function
  trainable's first result, whose function starts after Tune's trial start).

A claim is an atomic put that does not overwrite, so exactly one side writes
each trial's run. Both sides derive the run id from the callback's token.
Limit: two experiments run at once by one driver (in threads) share the job:
the later callback's settings are the ones its trial processes see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("tune_wandb")

#: The internal KV namespace of tune-wandb's entries.
_NAMESPACE = "tune_wandb"

#: Claim values: who writes the trial's run.
CALLBACK, TRIAL = "callback", "trial"


@dataclass(frozen=True)
class CallbackSettings:
    """What a trial's process needs of the callback to write the run the callback would.

    Attributes:
        token: the experiment's run-id token.
        project: the callback's project, resolved on the driver (None: wandb's default).
        group: the callback's group (None: ``WANDB_GROUP_NAME``, else the experiment).
        excludes: result keys logged neither to history nor to config.
        log_config: log each result's ``config`` into the run config.
        metrics: the history keys logged (None: all).
        init_kwargs: the callback's own ``wandb.init`` arguments (no key in them).
        api_key_file: the callback's key file, read on the trial's node if there.
        group_by_trainable: the callback is ``WandbLogger``'s, whose default group
            is the trainable's name (Ray 1.x's).
    """

    token: str
    project: str | None = None
    group: str | None = None
    excludes: tuple[str, ...] = ()
    log_config: bool = False
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    api_key_file: str | None = None
    group_by_trainable: bool = False
    metrics: tuple[str, ...] | None = None


def _settings_key() -> bytes | None:
    """This driver's (or trial's) Ray job's key; None outside a Ray job."""
    try:
        import ray

        # get_runtime_context() would start a Ray instance in this process.
        if not ray.is_initialized():
            return None
        return f"callback:{ray.get_runtime_context().get_job_id()}".encode()
    except Exception:
        return None


def _claim_key(experiment_path: str, trial_id: str) -> bytes:
    return f"claim:{experiment_path}:{trial_id}".encode()


def _kv() -> Any | None:
    """Ray's internal KV module, None when this process is not connected to Ray."""
    try:
        from ray.experimental import internal_kv

        return internal_kv if internal_kv._internal_kv_initialized() else None
    except Exception:
        return None


def publish(settings: CallbackSettings) -> bool:
    """Publish the callback's settings for the job's trials; whether it could."""
    kv, key = _kv(), _settings_key()
    if kv is None or key is None:
        return False
    from ray import cloudpickle

    try:
        kv._internal_kv_put(key, cloudpickle.dumps(settings), namespace=_NAMESPACE)
    except Exception:
        logger.debug("tune-wandb: could not publish the callback's settings", exc_info=True)
        return False
    return True


def withdraw(experiment_paths: Iterable[str]) -> None:
    """Forget the callback's settings and the experiments' claims (at the experiment's end)."""
    kv, key = _kv(), _settings_key()
    if kv is None or key is None:
        return
    try:
        kv._internal_kv_del(key, namespace=_NAMESPACE)
        for path in experiment_paths:
            kv._internal_kv_del(_claim_key(path, ""), del_by_prefix=True, namespace=_NAMESPACE)
    except Exception:
        logger.debug("tune-wandb: could not withdraw the callback's settings", exc_info=True)


def callback_settings() -> CallbackSettings | None:
    """The settings of the job's callback, None if it has none (or no Ray here)."""
    kv, key = _kv(), _settings_key()
    if kv is None or key is None:
        return None
    from ray import cloudpickle

    try:
        data = kv._internal_kv_get(key, namespace=_NAMESPACE)
        settings = cloudpickle.loads(data) if data else None
    except Exception:
        logger.debug("tune-wandb: could not read the callback's settings", exc_info=True)
        return None
    return settings if isinstance(settings, CallbackSettings) else None


def claim(experiment_path: str, trial_id: str, who: str) -> str:
    """Claim the trial's run for ``who``; returns who writes it (``who`` if first).

    The callback claims a trial once, so a claim already there is the
    trial's: one round trip to the GCS on the Tune loop, per trial. A trial's
    process claims again when Tune retries the trial, and reads who holds it.
    Without Ray's KV (tests calling the callback's hooks directly), each side
    writes its own.
    """
    kv = _kv()
    if kv is None:
        return who
    key = _claim_key(experiment_path, trial_id)
    try:
        if not kv._internal_kv_put(key, who.encode(), overwrite=False, namespace=_NAMESPACE):
            return who
        if who == CALLBACK:
            return TRIAL
        owner = kv._internal_kv_get(key, namespace=_NAMESPACE)
    except Exception:
        logger.debug("tune-wandb: could not claim trial %s", trial_id, exc_info=True)
        return who
    return owner.decode() if owner else who
