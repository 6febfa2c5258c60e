"""The ``loggers=`` API of Ray Tune's old W&B integration, on today's Ray.

Ray 2.60 has neither ``Logger`` classes nor a ``loggers=`` argument, so the
classes here are names for callbacks: :func:`run` (``ray.tune.run`` that also
takes ``loggers=``) and :func:`loggers_to_callbacks` turn each into the
callback that does its work today. The old integration's first example runs
with only the imports changed::

    from tune_wandb import DEFAULT_LOGGERS, WandbLogger
    import tune_wandb

    tune_wandb.run(
        train_fn,
        config={..., "wandb": {"project": "Optimization_Project", "log_config": True}},
        loggers=DEFAULT_LOGGERS + (WandbLogger,),
    )

``loggers=(WandbLogger,)`` alone once meant "no JSON and CSV files"; Ray now
writes them whatever the callbacks, unless ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``
is set in the environment (tune-wandb never sets it for you).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

from tune_wandb import _settings, _sweep_config
from tune_wandb._filters import WANDB_CONFIG_KEY, wandb_entry
from tune_wandb.callback import WandbLoggerCallback
from tune_wandb.keyshare import share_api_key

logger = logging.getLogger("tune_wandb")

__all__ = ["DEFAULT_LOGGERS", "WandbLogger", "loggers_to_callbacks", "run"]


class LegacyLogger:
    """A logger class of the old ``loggers=`` argument: a name for a callback.

    Not instantiated: pass the class itself in ``loggers=`` to :func:`run`, or
    turn a tuple of them into callbacks with :func:`loggers_to_callbacks`.
    """

    #: The callback class that does this logger's work (built with no arguments).
    callback_class: ClassVar[type]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"{type(self).__name__} is not instantiated on Ray 2.60: pass the class in "
            f"tune_wandb.run(..., loggers=(..., {type(self).__name__})), or use "
            f"{self.callback_class.__name__}() in callbacks=[...]."
        )

    @classmethod
    def callback_factory(cls) -> Any:
        """A new instance of the callback that does this logger's work."""
        return cls.callback_class()


class JsonLogger(LegacyLogger):
    """``result.json`` per trial: Ray's ``JsonLoggerCallback``.

    Example:
        >>> isinstance(JsonLogger.callback_factory(), JsonLoggerCallback)
        True
    """

    callback_class = JsonLoggerCallback


class CSVLogger(LegacyLogger):
    """``progress.csv`` per trial: Ray's ``CSVLoggerCallback``.

    Example:
        >>> isinstance(CSVLogger.callback_factory(), CSVLoggerCallback)
        True
    """

    callback_class = CSVLoggerCallback


class TBXLogger(LegacyLogger):
    """TensorBoard event files per trial: Ray's ``TBXLoggerCallback``.

    Example:
        >>> isinstance(TBXLogger.callback_factory(), TBXLoggerCallback)
        True
    """

    callback_class = TBXLoggerCallback


class WandbLogger(LegacyLogger):
    """Each trial to its own W&B run: a :class:`~tune_wandb.WandbLoggerCallback`.

    Configured by each trial's ``"wandb"`` config entry, as the old
    ``ray.tune.integration.wandb.WandbLogger`` was: its keys go to
    ``wandb.init``, except ``api_key_file``, ``api_key``, ``excludes`` and
    ``log_config``, which configure the integration; ``group``, ``run_id``
    (or ``id``) and ``run_name`` (or ``name``) override Tune's choices. As in
    Ray 1.x, the default group is the trainable's name. Same worker process
    per trial, same filtering, same guarantees as the callback.

    Example:
        >>> from tune_wandb import DEFAULT_LOGGERS, WandbLogger
        >>> loggers = DEFAULT_LOGGERS + (WandbLogger,)
        >>> [type(c).__name__ for c in loggers_to_callbacks(loggers)][-1]
        'WandbLoggerCallback'
    """

    callback_class = WandbLoggerCallback

    @classmethod
    def callback_factory(cls) -> Any:
        """A :class:`~tune_wandb.WandbLoggerCallback` with Ray 1.x's default group.

        Ray 1.x's ``WandbLogger`` grouped each trial's run by the trainable's
        name (``trial.trainable_name``), so runs of several experiments of one
        trainable share a group; the callback's default is Ray 2.x's, the
        experiment's name.
        """
        callback = WandbLoggerCallback()
        callback.group_by_trainable = True
        return callback


#: The loggers Ray Tune once used by default: JSON, CSV and TensorBoard.
DEFAULT_LOGGERS: tuple[type[LegacyLogger], ...] = (JsonLogger, CSVLogger, TBXLogger)


def loggers_to_callbacks(loggers: Iterable[Any]) -> list[Any]:
    """Turn an old ``loggers=`` tuple into the callbacks that do its work today.

    For the ``Tuner``: ``tune.RunConfig(callbacks=loggers_to_callbacks(...))``.

    Example:
        >>> [type(c).__name__ for c in loggers_to_callbacks(DEFAULT_LOGGERS + (WandbLogger,))]
        ['JsonLoggerCallback', 'CSVLoggerCallback', 'TBXLoggerCallback', 'WandbLoggerCallback']

    Raises:
        TypeError: an entry is not one of tune-wandb's logger classes.
    """
    if isinstance(loggers, type) or not isinstance(loggers, Iterable):
        loggers = (loggers,)
    callbacks: list[Any] = []
    seen: set[type] = set()
    for entry in loggers:
        if not (isinstance(entry, type) and issubclass(entry, LegacyLogger)):
            raise TypeError(
                f"loggers= takes tune-wandb's logger classes (DEFAULT_LOGGERS, WandbLogger, "
                f"JsonLogger, CSVLogger, TBXLogger), not {entry!r}. Ray 2.60 has no Logger "
                "classes: pass any other logging as callbacks=[...]."
            )
        if entry not in seen:
            seen.add(entry)
            callbacks.append(entry.callback_factory())
    return callbacks


def run(
    run_or_experiment: Any,
    *args: Any,
    loggers: Iterable[Any] | None = None,
    callbacks: list[Any] | None = None,
    config: Mapping[str, Any] | None = None,
    sweep: bool | dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """``ray.tune.run`` that also takes the old ``loggers=`` argument, and ``sweep=``.

    ``loggers`` is turned into callbacks (see :func:`loggers_to_callbacks`) and
    added to ``callbacks``; everything else is passed through. An ``api_key``
    written into the config's ``"wandb"`` entry is taken out before Ray sees
    the config (Ray would store it in ``params.json``, ``params.pkl``,
    ``result.json`` and the experiment state) and handed to the W&B callbacks
    in memory, with a warning that points to ``api_key_file`` or
    ``WANDB_API_KEY``.

    ``sweep=True`` shows the experiment as a W&B sweep (see docs/sweeps.md):
    its W&B callbacks are given ``config`` as the search space and
    ``metric`` and ``mode`` as the sweep's metric and goal; a dict of
    ``WandbLoggerCallback``'s ``sweep=`` keys overrides any of them.

    Example:
        >>> from tune_wandb import DEFAULT_LOGGERS, WandbLogger, run
        >>> run(train_fn, config={"wandb": {"project": "p"}},  # doctest: +SKIP
        ...     loggers=DEFAULT_LOGGERS + (WandbLogger,))

    Returns:
        The ``ExperimentAnalysis`` of ``ray.tune.run``.
    """
    all_callbacks = list(callbacks or [])
    if loggers is not None:
        all_callbacks += loggers_to_callbacks(loggers)
    if config is not None:
        config, key = _take_key_out(config)
        if key is not None:
            _give_key(all_callbacks, key)
        _share_key(config, key)
    if sweep:
        # After the key is taken out: the space is saved with the callback.
        _give_sweep(all_callbacks, sweep, config, kwargs.get("metric"), kwargs.get("mode"))
    tune_run: Callable[..., Any] = tune.run
    return tune_run(run_or_experiment, *args, callbacks=all_callbacks, config=config, **kwargs)


def _give_sweep(
    callbacks: list[Any],
    sweep: bool | dict[str, Any],
    config: Mapping[str, Any] | None,
    metric: str | None,
    mode: str | None,
) -> None:
    """Give the W&B callbacks without a sweep of their own this run's search, as a sweep."""
    given = _sweep_config.check_sweep_arg(sweep) or {}
    spec = {"param_space": config, "metric": metric, "mode": mode, **given}
    spec = {k: v for k, v in spec.items() if v is not None}
    targets = [c for c in callbacks if isinstance(c, WandbLoggerCallback)]
    if not targets:
        raise TypeError(
            "tune_wandb.run(sweep=...) shows the experiment as a W&B sweep through its W&B "
            "callback: add loggers=DEFAULT_LOGGERS + (WandbLogger,) or "
            "callbacks=[WandbLoggerCallback(...)]."
        )
    for callback in targets:
        if callback.sweep is None:
            callback.sweep = _sweep_config.check_sweep_arg(spec)


def _take_key_out(config: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    entry = config.get(WANDB_CONFIG_KEY)
    if not isinstance(entry, Mapping) or "api_key" not in entry:
        return dict(config), None
    logger.warning(
        'tune-wandb: an api_key in the config\'s "wandb" entry would be stored by Ray in '
        "params.json, params.pkl, result.json and the experiment state; tune_wandb.run took "
        "it out and keeps it in memory. Prefer api_key_file or the WANDB_API_KEY variable."
    )
    cleaned = {k: v for k, v in entry.items() if k != "api_key"}
    return {**config, WANDB_CONFIG_KEY: cleaned}, entry["api_key"]


def _share_key(config: Mapping[str, Any], key: str | None) -> None:
    """Online, share the driver's key with trials that start runs themselves (mixins)."""
    entry = wandb_entry(config)
    init_kwargs = dict(entry) if isinstance(entry, Mapping) else {}
    if _settings.offline_or_disabled(init_kwargs, os.environ):
        return
    key_file = init_kwargs.get("api_key_file")
    try:
        share_api_key(api_key=key, api_key_file=None if key else key_file)
    except (ValueError, OSError) as error:
        # The callbacks check keys themselves; trials without one say so clearly.
        logger.debug("tune-wandb: no key shared with the trials: %s", error)


def _give_key(callbacks: list[Any], key: str) -> None:
    for callback in callbacks:
        if isinstance(callback, WandbLoggerCallback) and not (
            callback.api_key or callback.api_key_file
        ):
            callback.api_key = key
