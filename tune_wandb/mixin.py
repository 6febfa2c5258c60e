"""Runs started inside a trial's own process: the mixins and ``setup_wandb``.

The old integration's decorator for function trainables, and its mixin for
class trainables. In the trial's process they start the trial's W&B run
before the trial's code runs, so plain ``wandb.log(...)`` goes to that run,
and finish it when the trial's code ends.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tune_wandb import _filters, _handoff, _initargs, _runfile, _settings, _wandb_compat

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("tune_wandb")

#: The config key under which Tune hands a class trainable its trial's facts.
_TRIAL_INFO = "__trial_info__"

#: The settings of a run in the trial's own process: quiet, but with its
#: console and system metrics, which describe the trial there.
_IN_TRIAL_SETTINGS = {
    name: value
    for name, value in _settings.QUIET_SETTINGS.items()
    if name not in ("console", "x_disable_stats", "x_disable_machine_info")
}

#: Keys Tune adds to a class trainable's config for ``Trainable.__init__``.
_TUNE_PRIVATE_KEYS = frozenset({_TRIAL_INFO, "__stdout_file__", "__stderr_file__"})


def wandb_mixin(func: F) -> F:
    """Start the trial's W&B run around a function trainable.

    Configured by the trial config's ``"wandb"`` entry (its keys go to
    ``wandb.init``, except ``api_key_file``, ``api_key``, ``excludes`` and
    ``log_config``). The run's id is the trial id with a suffix derived from
    the experiment, its name the trial's name, its group the trainable's
    name (as in Ray 1.x); the entry's ``run_id`` (or ``id``), ``run_name``
    (or ``name``) and ``group`` override them. With a
    :class:`~tune_wandb.WandbLoggerCallback` in the experiment too, this run
    is the trial's one run and also holds its Tune results. Its config is the
    trial config without the ``"wandb"`` entry. A trial retried or restored
    continues the same run.
    The run is written inside the trial's directory in the experiment's
    storage.

    Example:
        >>> import wandb
        >>> from ray import tune
        >>> from tune_wandb import wandb_mixin
        >>> @wandb_mixin
        ... def train_fn(config):
        ...     for i in range(10):
        ...         loss = config["a"] + config["b"]
        ...         wandb.log({"loss": loss})
        ...         tune.report({"loss": loss})
        >>> tune.run(train_fn, config={  # doctest: +SKIP
        ...     "a": tune.choice([1, 2, 3]), "b": tune.choice([4, 5, 6]),
        ...     "wandb": {"project": "Optimization_Project", "api_key_file": "~/.wandb_key"}})
    """

    @functools.wraps(func)
    def run_with_wandb(config: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        trainable = _running_trainable()
        if trainable is not None:
            trial = TrialInfo.of_trainable(trainable)
        else:
            trial = TrialInfo.from_tune_context()
        run = start_trial_run(trial, config, trainable=trainable, group_by_trainable=True)
        try:
            result = func(config, *args, **kwargs)
        except BaseException:
            finish_trial_run(trial, run, exit_code=1)
            raise
        finish_trial_run(trial, run, exit_code=0)
        return result

    return run_with_wandb  # type: ignore[return-value]


class WandbTrainableMixin:
    """Start the trial's W&B run in a class trainable; ``self.wandb`` is the run.

    Put it before ``tune.Trainable`` in the bases. The run is started before
    the trainable's ``setup`` (so ``setup`` can log) with the trial's id, name
    and group (configured by the ``"wandb"`` config entry, as for
    :func:`wandb_mixin`), and finished after its ``cleanup`` (exit code 0;
    1 if ``setup``, a ``step`` or a checkpoint raised: Tune marks the trial
    ERROR). The run is also wandb's module-level run, so
    ``wandb.log`` works as well as ``self.wandb.log``. Outside Tune (no trial),
    ``self.wandb`` is None.

    Example:
        >>> from ray import tune
        >>> from tune_wandb import WandbTrainableMixin
        >>> class MyTrainable(WandbTrainableMixin, tune.Trainable):
        ...     def step(self):
        ...         loss = self.config["a"] / (self.iteration + 1)
        ...         self.wandb.log({"loss": loss})
        ...         return {"loss": loss}
    """

    wandb: Any

    def __init__(self, config: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        # Trainable.__init__ calls setup(), which may log: the run starts first,
        # from the trial facts Tune passes in the config and the storage argument.
        _check_is_a_trainable(self)
        config = config or {}
        info = config.get(_TRIAL_INFO)
        storage = kwargs.get("storage", args[1] if len(args) > 1 else None)
        self.wandb = None
        self._wandb_trial: TrialInfo | None = None
        self._wandb_failures = _FailureWatch(self)
        if info is not None and storage is not None:
            self._wandb_trial = TrialInfo.of_trial(
                info.trial_id, info.trial_name, info.experiment_name, storage, self
            )
            trial_config = {k: v for k, v in config.items() if k not in _TUNE_PRIVATE_KEYS}
            self.wandb = start_trial_run(
                self._wandb_trial, trial_config, trainable=self, group_by_trainable=True
            )
        try:
            super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        except BaseException:
            self._finish_wandb(exit_code=1)
            raise

    def cleanup(self) -> None:
        """The trainable's own ``cleanup``, then finish the run."""
        try:
            super().cleanup()  # type: ignore[misc]
        finally:
            self._finish_wandb(exit_code=self._wandb_failures.exit_code)

    def _finish_wandb(self, exit_code: int) -> None:
        run, self.wandb = self.wandb, None
        if run is not None and self._wandb_trial is not None:
            finish_trial_run(self._wandb_trial, run, exit_code=exit_code)


def _check_is_a_trainable(instance: Any) -> None:
    """Raise Ray's error, which says what to do, for a mixin on a class that is no Trainable."""
    from ray.tune import Trainable

    if not isinstance(instance, Trainable):
        # ValueError, as Ray's mixin raises: scripts that catch it keep working.
        raise ValueError(  # noqa: TRY004
            f"WandbTrainableMixin can only be used as a mixin for tune.Trainable classes, "
            f"and {type(instance).__name__} is not one. Put both in its bases, the mixin "
            f"first: class {type(instance).__name__}(WandbTrainableMixin, tune.Trainable). "
            "For a function trainable, use @wandb_mixin or setup_wandb instead."
        )


def setup_wandb(
    config: dict[str, Any] | None = None,
    api_key: str | None = None,
    api_key_file: str | None = None,
    rank_zero_only: bool = True,
    **kwargs: Any,
) -> Any:
    """Start a W&B run from inside a function trainable (or any Ray worker); returns it.

    Inside a Tune trial, the run is the trial's, as with :func:`wandb_mixin`:
    id, name and group chosen by Tune (``trial_id``, ``trial_name``,
    ``group`` or any ``wandb.init`` argument in ``kwargs`` override them),
    config = ``config`` without its ``"wandb"`` entry, written in the trial's
    storage directory, and finished when the trial ends even if ``finish()``
    is never called. In a Ray Train worker of rank != 0 it returns a disabled
    run, unless ``rank_zero_only=False``. Elsewhere it is a plain
    ``wandb.init``.

    Example:
        >>> from ray import tune
        >>> from tune_wandb import setup_wandb
        >>> def train_fn(config):
        ...     run = setup_wandb(config, project="my-project")
        ...     for i in range(10):
        ...         run.log({"loss": 1 / (i + 1)})
        ...         tune.report({"loss": 1 / (i + 1)})

    Args:
        config: the trial config; logged as the run config, its ``"wandb"``
            entry configuring the run as for :func:`wandb_mixin`.
        api_key: the W&B key (else the entry's, ``WANDB_API_KEY`` or
            ``wandb login``).
        api_key_file: a file whose first line is the key.
        rank_zero_only: in Ray Train, log from the rank-0 worker only.
        **kwargs: ``wandb.init`` arguments; ``trial_id`` and ``trial_name``
            are Ray's names for ``id`` and ``name``.

    Raises:
        ValueError: both ``api_key`` and ``api_key_file`` were given.
    """
    import wandb

    if api_key and api_key_file:
        raise ValueError("Pass either api_key or api_key_file to setup_wandb, not both.")
    rank = _train_world_rank()
    if rank_zero_only and rank not in (None, 0):
        return wandb.init(mode="disabled")
    config = dict(config or {})
    entry = dict(_filters.wandb_entry(config) or {})
    if api_key or api_key_file:
        entry.pop("api_key", None)
        entry.pop("api_key_file", None)
        entry.update({"api_key": api_key} if api_key else {"api_key_file": api_key_file})
    config[_filters.WANDB_CONFIG_KEY] = entry
    for ray_name, init_name in (("trial_id", "id"), ("trial_name", "name")):
        if ray_name in kwargs:
            kwargs[init_name] = kwargs.pop(ray_name)
    trainable = _running_trainable()
    trial = TrialInfo.of_trainable(trainable) if trainable is not None else _current_trial()
    train_run = trial is None and rank is not None
    if train_run:
        trial = _current_train_run(rank or 0)
    if trial is not None and not train_run and kwargs.get("id") == trial.trial_id:
        # Ray's docs pass the trial's own id (trial_id=self.trial_id): it is
        # Tune's choice, which gets the experiment's suffix as everywhere else.
        del kwargs["id"]
    if trial is None:
        options, entry_kwargs = _settings.split_entry(entry)
        key = _settings.read_api_key(options.get("api_key_file"), options.get("api_key"))
        settings = {"api_key": key} if key else {}
        return wandb.init(
            config=_filters.clean_config(config),
            settings=wandb.Settings(**settings),
            **{**entry_kwargs, **kwargs},
        )
    run = start_trial_run(trial, config, trainable=trainable, **kwargs)
    if train_run:
        _finish_with_the_train_function(trial, run)
    elif trainable is not None and not _is_function_trainable(trainable):
        _finish_with_the_trainable(trainable, trial, run)
    else:
        _finish_with_the_trial(trial, run)
    return run


def _running_trainable() -> Any | None:
    """The Tune ``Trainable`` this process is the actor of (None elsewhere).

    Ray keeps its actor's instance in the worker (``worker.actors``) from before
    ``__init__`` runs, so it is found in a class trainable's ``setup()`` (where
    ``tune.get_context()`` knows no trial: Tune takes the trial's facts out of
    the config before ``setup``) and in a function trainable's thread alike. The
    instance holds the trial's facts (``_trial_info``) and storage (``_storage``).
    """
    try:
        from ray._private import worker as ray_worker
        from ray.tune.trainable import Trainable

        worker = ray_worker.global_worker
        actor = worker.actors.get(worker.actor_id)
    except Exception:
        return None
    if not isinstance(actor, Trainable):
        return None
    if getattr(actor, "_trial_info", None) is None or getattr(actor, "_storage", None) is None:
        return None
    return actor


def _is_function_trainable(trainable: Any) -> bool:
    from ray.tune.trainable.function_trainable import FunctionTrainable

    return isinstance(trainable, FunctionTrainable)


def _finish_with_the_trainable(trainable: Any, trial: TrialInfo, run: Any) -> None:
    """Finish ``run`` when Tune stops the class trainable, after its own ``cleanup``.

    Tune ends a class trainable's actor without ``atexit`` (where wandb would
    finish the run), but first calls its ``stop()``, which calls ``cleanup()``:
    the instance's ``cleanup`` is wrapped. The exit code is 1 if a ``step`` or
    a checkpoint raised (see :class:`_FailureWatch`).
    """
    original_cleanup = trainable.cleanup
    failures = _FailureWatch(trainable)

    def cleanup(*args: Any, **kwargs: Any) -> Any:
        trainable.cleanup = original_cleanup
        try:
            return original_cleanup(*args, **kwargs)
        finally:
            try:
                finish_trial_run(trial, run, exit_code=failures.exit_code)
            except Exception:
                logger.exception("tune-wandb: could not finish the W&B run %s", run.id)

    trainable.cleanup = cleanup


class _FailureWatch:
    """Whether a class trainable's ``step`` or ``save_checkpoint`` raised.

    Either makes Tune mark the trial ERROR, even after its last result (a
    trainable without ``save_checkpoint`` under ``checkpoint_at_end``), and
    Tune still calls ``stop()``/``cleanup()``, where the run is finished: its
    exit code follows the trial's final status. ``Trainable.train`` and
    ``save`` call both through the instance, so the instance's are wrapped.
    """

    def __init__(self, trainable: Any) -> None:
        self.failed = False
        for name in ("step", "save_checkpoint"):
            method = getattr(trainable, name, None)
            if method is not None:
                setattr(trainable, name, self._watched(method))

    @property
    def exit_code(self) -> int:
        """The run's exit code: 1 if the trial failed, else 0."""
        return 1 if self.failed else 0

    def _watched(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except BaseException:
                self.failed = True
                raise

        return watched


def _train_world_rank() -> int | None:
    """The Ray Train world rank of this process, None outside Ray Train."""
    try:
        import ray.train

        return int(ray.train.get_context().get_world_rank())
    except Exception:
        return None


def _current_trial() -> TrialInfo | None:
    """The trial of this process's Tune session, None outside one.

    Asks for the session itself: Ray's own accessors (``get_trial_id``, ...)
    print a warning outside a session, which would be ours to answer for.
    """
    try:
        from ray.train._internal.session import get_session

        if get_session() is None:
            return None
        return TrialInfo.from_tune_context()
    except Exception:
        return None


def _current_train_run(rank: int) -> TrialInfo | None:
    try:
        return TrialInfo.from_train_context(rank)
    except Exception:
        logger.debug("tune-wandb: no Ray Train run storage here", exc_info=True)
        return None


def _finish_with_the_trial(trial: TrialInfo, run: Any) -> None:
    """Finish ``run`` when Tune ends the trial, if the user has not.

    After a function trainable returns, its thread waits in Tune's session
    until Tune stops the trial's actor, and the actor is then killed: neither
    the thread's end nor ``atexit`` is a point where the run can still be
    finished. Tune's stop of a function trainable (and its reset, when actors
    are reused) ends the session with ``session.finish``: the run is finished
    just before it.
    """
    from ray.train._internal.session import get_session

    session = get_session()
    if session is None:
        return
    original = session.finish

    def finish(*args: Any, **kwargs: Any) -> Any:
        session.finish = original
        try:
            finish_trial_run(trial, run, exit_code=0)
        except Exception:
            logger.exception("tune-wandb: could not finish the W&B run %s", run.id)
        return original(*args, **kwargs)

    session.finish = finish


def _finish_with_the_train_function(trial: TrialInfo, run: Any) -> None:
    """Finish ``run`` when the Ray Train worker's training function ends.

    Ray Train V2 runs the function in a thread and kills the worker soon
    after it ends, so neither ``atexit`` nor a thread watching it is reliable.
    The thread's last act is to put ``None`` (returned) or the exception
    (raised) in its runner's exception queue: the run is finished just before,
    with exit code 0 or 1. That queue is a private attribute of Ray's thread
    runner; where it is missing, the run is left to the user to finish.
    """
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        runner = get_train_context().execution_context.training_thread_runner
        original = runner._exc_queue
    except Exception:
        logger.warning(
            "tune-wandb: this Ray Train version cannot tell when the training function "
            "ends; call run.finish() at its end so the W&B run %s is complete",
            run.id,
        )
        return

    training_thread = threading.current_thread()

    class _FinishFirst:
        def put(self, item: Any, *args: Any, **kwargs: Any) -> None:
            if threading.current_thread() is not training_thread:
                # A thread the function started reporting its own error: the
                # function itself goes on.
                original.put(item, *args, **kwargs)
                return
            runner._exc_queue = original
            try:
                finish_trial_run(trial, run, exit_code=0 if item is None else 1)
            except Exception:
                logger.exception("tune-wandb: could not finish the W&B run %s", run.id)
            original.put(item, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

    runner._exc_queue = _FinishFirst()


@dataclass(frozen=True)
class TrialInfo:
    """Where a run started in a trial's (or a Ray Train worker's) process belongs.

    Attributes:
        trial_id: the start of the run id.
        trial_name: the run name.
        experiment: the experiment's name, the run's default group.
        filesystem: the experiment storage's pyarrow filesystem.
        fs_path: the run's directory in storage (``wandb/`` goes below it).
        local_dir: this node's staging directory, used when storage is not local.
        experiment_fs_path: the experiment's directory in storage.
        trainable_name: the trainable's name (Tune's ``trial.trainable_name``),
            the old API's default group; empty if unknown.
    """

    trial_id: str
    trial_name: str
    experiment: str
    filesystem: Any
    fs_path: str
    local_dir: str
    experiment_fs_path: str
    trainable_name: str = ""

    @classmethod
    def of_trial(
        cls,
        trial_id: str,
        trial_name: str,
        experiment: str,
        storage: Any,
        trainable: Any = None,
    ) -> TrialInfo:
        """A Tune trial's, from its ``StorageContext`` (and its ``Trainable``, if known)."""
        return cls(
            trial_id=trial_id,
            trial_name=trial_name,
            experiment=experiment,
            filesystem=storage.storage_filesystem,
            fs_path=str(storage.trial_fs_path),
            local_dir=str(storage.trial_working_directory),
            experiment_fs_path=str(storage.experiment_fs_path),
            trainable_name=_trainable_name(trial_name, trial_id, trainable),
        )

    @classmethod
    def of_trainable(cls, trainable: Any) -> TrialInfo:
        """A Tune trial's, from its ``Trainable`` (its ``_trial_info`` and ``_storage``)."""
        info = trainable._trial_info
        return cls.of_trial(
            info.trial_id, info.trial_name, info.experiment_name, trainable._storage, trainable
        )

    @classmethod
    def from_tune_context(cls) -> TrialInfo:
        """From ``tune.get_context()``, inside a function trainable."""
        from ray import tune

        context = tune.get_context()
        return cls.of_trial(
            context.get_trial_id(),
            context.get_trial_name(),
            context.get_experiment_name(),
            context.get_storage(),
        )

    @classmethod
    def from_train_context(cls, rank: int) -> TrialInfo:
        """From ``ray.train.get_context()``, in a Ray Train V2 worker (no trial).

        The run is the Train run's: named after the experiment, its id taken
        from the experiment's name, and written in the experiment's directory.
        Ranks other than 0 (``rank_zero_only=False``) get runs of their own,
        ``-rank<N>`` added to the id and name.
        """
        import ray.train

        context = ray.train.get_context()
        storage = context.get_storage()
        experiment = context.get_experiment_name()
        suffix = f"-rank{rank}" if rank else ""
        return cls(
            trial_id=_RUN_ID_UNSAFE.sub("-", experiment)[:48] + suffix,
            trial_name=experiment + suffix,
            experiment=experiment,
            filesystem=storage.storage_filesystem,
            fs_path=str(storage.experiment_fs_path),
            local_dir=str(storage.local_working_directory),
            experiment_fs_path=str(storage.experiment_fs_path),
        )


def _trainable_name(trial_name: str, trial_id: str, trainable: Any) -> str:
    """Tune's ``trial.trainable_name``, as a trial's process can tell it.

    Tune names a trial ``<trainable name>_<trial id>`` (the name it registered
    the trainable under, "PPO" for ``tune.run("PPO")``); with a custom trial
    name, the function's or class's name, as Tune registers it.
    """
    if trial_name.endswith("_" + trial_id) and len(trial_name) > len(trial_id) + 1:
        return trial_name[: -len(trial_id) - 1]
    if trainable is None:
        return ""
    cls = type(trainable)
    return str(getattr(cls, "_name", None) or cls.__name__)


#: Characters a W&B run id cannot hold.
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def start_trial_run(
    trial: TrialInfo,
    config: dict[str, Any],
    trainable: Any = None,
    group_by_trainable: bool = False,
    **overrides: Any,
) -> Any:
    """Start the W&B run of ``trial`` in this process, as ``wandb.init``'s module run.

    ``overrides`` are ``wandb.init`` keyword arguments that win over the
    trial's ``"wandb"`` entry. ``group_by_trainable``: the old API's default
    group, the trainable's name (the mixins), rather than the experiment's
    (``setup_wandb``). When the experiment also has a
    :class:`~tune_wandb.WandbLoggerCallback` and ``trainable`` (the trial's
    ``Trainable``) is given, this run is the trial's one run (see
    :mod:`tune_wandb._handoff`): it takes the callback's id, project, group and
    ``wandb.init`` arguments, and also logs the results the trial reports to
    Tune, which the callback then leaves to it.
    """
    import wandb

    callback = _callback_to_stand_in_for(trial, trainable)
    spec = _initargs.trial_run(
        trial_id=trial.trial_id,
        name=trial.trial_name,
        experiment=trial.experiment,
        token=callback.token if callback else _experiment_token(trial),
        config=config,
        run_root=_run_root(trial),
        settings=_IN_TRIAL_SETTINGS,
        group=callback.group if callback else None,
        default_group=_default_group(trial, group_by_trainable, callback),
        project=callback.project if callback else None,
        excludes=callback.excludes if callback else (),
        layers=[callback.init_kwargs] if callback else (),
        overrides=overrides,
    )
    if spec.unknown:
        logger.warning(
            'tune-wandb: trial %s: the "wandb" config entry has keys wandb.init does not '
            "take: %s; they are left out.",
            trial.trial_name,
            _settings.describe_unknown(spec.unknown),
        )
    init_kwargs = dict(spec.init_kwargs)
    if callback is not None:
        # The run stands in for the callback's, which carries it as Ray's does.
        init_kwargs["config"] = {**init_kwargs["config"], _filters.TRIAL_LOG_PATH: trial.fs_path}
    settings = init_kwargs.pop("settings")
    if not _settings.offline_or_disabled(init_kwargs, os.environ):
        options = dict(spec.options)
        if callback and callback.api_key_file and not {"api_key", "api_key_file"} & set(options):
            options["api_key_file"] = callback.api_key_file
        key = _trial_key(options)
        if key:
            settings["api_key"] = key
    run = wandb.init(settings=wandb.Settings(**settings), **init_kwargs)
    # No step metric for the whole run: the trial's code logs with wandb's own
    # step, and rows without training_iteration would be plotted at 0.
    if callback is not None:
        log_config = bool(spec.options.get("log_config", callback.log_config))
        # Published by an earlier tune-wandb, the settings may lack ``metrics``.
        metrics = getattr(callback, "metrics", None)
        _log_tune_results(trainable, run, _filters.Rules(spec.excludes, log_config, metrics))
    return run


def _default_group(
    trial: TrialInfo, group_by_trainable: bool, callback: _handoff.CallbackSettings | None
) -> str | None:
    """The trainable's name when the old API is on the trial (a mixin, or ``WandbLogger``).

    Ray 1.x's ``WandbLogger`` and mixins grouped by the trainable's name, Ray
    2.x's callback and ``setup_wandb`` by the experiment's (None here). When
    both kinds log one trial, the old API's default decides; an explicit
    group (argument, entry, ``WANDB_GROUP_NAME``) always wins.
    """
    if group_by_trainable or (callback is not None and callback.group_by_trainable):
        return trial.trainable_name or None
    return None


def _callback_to_stand_in_for(trial: TrialInfo, trainable: Any) -> _handoff.CallbackSettings | None:
    """The experiment's callback settings, if this process writes the trial's one run."""
    if trainable is None:
        return None
    callback = _handoff.callback_settings()
    if callback is None:
        return None
    if _handoff.claim(trial.experiment_fs_path, trial.trial_id, _handoff.TRIAL) != _handoff.TRIAL:
        logger.warning(
            "tune-wandb: trial %s: the WandbLoggerCallback already logs this trial's run "
            "(the trial reported a result before its W&B run was started), so this run is "
            "a second one. Start it before the trial's first tune.report to have one run.",
            trial.trial_name,
        )
        return None
    return callback


def _log_tune_results(trainable: Any, run: Any, rules: _filters.Rules) -> None:
    """Log each result the trainable reports to Tune into ``run``, as the callback would.

    ``Trainable.train`` hands every result, complete with Tune's own fields
    (``training_iteration``, ...), to ``self.log_result`` in the trial's
    process, before the result reaches the driver: the instance's
    ``log_result`` is wrapped. Tune's results are plotted against
    ``training_iteration``, the trial's own ``wandb.log`` rows against wandb's
    step.
    """
    original = trainable.log_result
    splitter = _filters.Splitter(rules)
    defined = {"training_iteration"}
    warned: set[str] = set()
    run.define_metric("training_iteration")

    def log_result(result: dict[str, Any]) -> Any:
        if not getattr(run, "_is_finished", False):
            try:
                history, config, dropped = splitter.split(result)
                for key in set(dropped or ()) - warned:
                    warned.add(key)
                    logger.warning(
                        "tune-wandb: result key %r holds a value W&B cannot log (see "
                        "docs/bad-input.md), so it is left out of the history; the rest of "
                        "the row is logged (said once per trial).",
                        key,
                    )
                if config:
                    run.config.update(config, allow_val_change=True)
                for key in history.keys() - defined:
                    defined.add(key)
                    run.define_metric(key, step_metric="training_iteration")
                _filters.arrays_to_media(history, {}, {})
                run.log(history)
            except Exception:
                logger.warning(
                    "tune-wandb: could not log a Tune result into the W&B run %s",
                    run.id,
                    exc_info=True,
                )
        return original(result)

    trainable.log_result = log_result


def _trial_key(options: dict[str, Any]) -> str | None:
    """The key of a run started on this node (None: ``wandb login`` has one here).

    The entry's ``api_key`` or ``api_key_file`` (if the file is on this node),
    else ``WANDB_API_KEY``, else ``wandb login`` on this node, else the key the
    driver shared (:func:`tune_wandb.share_api_key`).

    Raises:
        ValueError: no key anywhere, or both ``api_key`` and ``api_key_file``.
    """
    from tune_wandb import keyshare

    if "api_key" in options:
        _warn_of_entry_key()
    key_file = options.get("api_key_file")
    # The file may be on the driver's node only: then another place may have one.
    found = _initargs.find_key(
        key_file,
        options.get("api_key"),
        more=[("the key the driver shared", keyshare.shared_api_key)],
        missing_file_ok=True,
    )
    if found is not None:
        return found.for_wandb
    import socket

    missing = f"the api_key_file {key_file!r} is not on it, " if key_file else ""
    raise ValueError(
        f"No W&B API key on node {socket.gethostname()}: {missing}WANDB_API_KEY is not set "
        "and `wandb login` was not run there. Call tune_wandb.share_api_key() in the "
        "driver before tune.run / Tuner.fit (tune_wandb.run does it for you), or set "
        "WANDB_API_KEY on every node."
    )


@functools.cache
def _warn_of_entry_key() -> None:
    """Warn (once per process) that Ray stores a key written in the trial config."""
    logger.warning(
        'tune-wandb: an api_key in the trial config\'s "wandb" entry is stored by Ray in '
        "params.json, params.pkl, result.json and the experiment state. Use api_key_file, "
        "WANDB_API_KEY or tune_wandb.share_api_key() instead (tune_wandb.run takes it out "
        "of the config for you)."
    )


def finish_trial_run(trial: TrialInfo, run: Any, exit_code: int) -> None:
    """Finish a run started by :func:`start_trial_run`; put it in the experiment's storage.

    A run the user already finished is only put in storage.
    """
    run_dir, run_file = run.settings.sync_dir, run.settings.sync_file
    disabled = bool(getattr(run, "disabled", False))
    # Online, finish() returns once wandb uploaded the run (it raises if not).
    uploaded = not disabled and not getattr(run, "offline", True)
    if not getattr(run, "_is_finished", False):
        run.finish(exit_code=exit_code)
    if disabled:
        return
    _runfile.wait_for_exit_record(run_file, 30.0)
    if uploaded:
        _runfile.mark_uploaded(run_file)
    _copy_to_storage(trial, run_dir)
    _teardown_if_idle()


def _teardown_if_idle() -> None:
    """Stop this process's wandb-core when no run of it is left.

    Tune kills a trial's actor without running ``atexit``, where wandb would
    stop it; its broken connection then prints a traceback in the trial's log.
    """
    import wandb

    # A wandb that cannot tell (None) is left to stop its service itself.
    if _wandb_compat.has_live_run() is False:
        wandb.teardown()


def _experiment_token(trial: TrialInfo) -> str:
    # The callback keeps its token in the experiment state; a trial process
    # cannot read it, so its runs take the experiment's storage path instead,
    # the same again after Tuner.restore of that path.
    return hashlib.sha256(trial.experiment_fs_path.encode()).hexdigest()


def _run_root(trial: TrialInfo) -> str:
    """Where the run is written: its storage directory if storage is local.

    On other filesystems, the node-local staging directory, and the finished
    run is copied to storage (see :func:`_copy_to_storage`).
    """
    if _runfile.is_local_filesystem(trial.filesystem):
        os.makedirs(trial.fs_path, exist_ok=True)
        return trial.fs_path
    os.makedirs(trial.local_dir, exist_ok=True)
    return trial.local_dir


def _copy_to_storage(trial: TrialInfo, run_dir: str) -> None:
    if _runfile.is_local_filesystem(trial.filesystem):
        return
    try:
        _runfile.copy_run_dir(run_dir, trial.filesystem, trial.fs_path)
    except Exception:
        logger.exception(
            "tune-wandb: could not copy the W&B run %s to the experiment's storage; "
            "it stays on this node. Upload it with: wandb sync %s",
            run_dir,
            run_dir,
        )
