"""The public callback: :class:`WandbLoggerCallback`."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ray.tune.logger import LoggerCallback

from tune_wandb import (
    _console,
    _credentials,
    _experiment_sweep,
    _filters,
    _handoff,
    _initargs,
    _report,
    _runfile,
    _settings,
    _sweep,
    _sweep_config,
    sync,
)
from tune_wandb._pool import Prepare, Run, RunState, WorkerPool
from tune_wandb._protocol import EXIT_INTERRUPTED, LogRow, StorageTarget, WorkerSetup

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger("tune_wandb")

#: Ray Train's default sync timeout, which Ray's own callback also waits.
DEFAULT_UPLOAD_TIMEOUT = 600

#: Seconds the W&B server has to answer the key check before any trial starts.
DEFAULT_KEY_CHECK_TIMEOUT = 10.0


@dataclass
class _TrialLog:
    """The Tune loop's record of a trial: its current run, and every run opened for it."""

    run: Run
    #: The filters of the current run's results (its excludes serve the final config).
    rules: _filters.Rules = field(default_factory=_filters.Rules)
    #: The trial ended (its end marker is queued): a result after it opens a new run.
    ended: bool = False
    runs: list[Run] = field(default_factory=list)
    #: The worker process ``(ip, pid)`` whose console lines go to ``run``.
    claimed: tuple[Any, Any, Run] | None = None

    def __post_init__(self) -> None:
        self.runs.append(self.run)

    @property
    def wandb_dir(self) -> str:
        """Where the worker writes its run directories (``<dir>/wandb``)."""
        return os.path.join(self.run.setup.init_kwargs.get("dir") or "", "wandb")


class WandbLoggerCallback(LoggerCallback):  # type: ignore[misc]
    """Log every Tune trial to its own W&B run, from a worker process per trial.

    Each trial's results are filtered on the driver and queued to a worker
    process that owns the trial's W&B run, so a slow upload, a dead network or
    a crashing wandb never holds up the Tune driver. Runs are written inside
    each trial's directory in the experiment's storage and are complete and
    finished when ``tune.run`` / ``Tuner.fit`` returns.

    Example:
        >>> from ray import tune
        >>> from tune_wandb import WandbLoggerCallback
        >>> def train(config):
        ...     for step in range(10):
        ...         tune.report({"loss": config["lr"] / (step + 1)})
        >>> tuner = tune.Tuner(  # doctest: +SKIP
        ...     train,
        ...     param_space={"lr": tune.grid_search([0.1, 0.01])},
        ...     run_config=tune.RunConfig(
        ...         callbacks=[WandbLoggerCallback(project="my-project", mode="offline")]
        ...     ),
        ... )
        >>> tuner.fit()  # doctest: +SKIP

        The peers' extras: only some metrics (``training_iteration`` always
        comes too), tags for every run and each trial's own, the final
        config of a PBT trial, and each trial's directory as an artifact:

        >>> callback = WandbLoggerCallback(
        ...     project="my-project",
        ...     metrics=["loss", "eval"],
        ...     tags=["resnet"],
        ...     log_params_on_trial_end=True,
        ...     save_trial_dir=True,
        ... )
        >>> param_space = {
        ...     "lr": tune.loguniform(1e-4, 1e-1),
        ...     "bs": tune.choice([32, 64]),
        ...     "wandb": {"tags": tune.sample_from(lambda spec: [f"bs={spec.config.bs}"])},
        ... }

    Args:
        project: W&B project. Default: ``WANDB_PROJECT_NAME``, else
            ``WANDB_PROJECT``, else wandb's own default project.
        group: W&B group. Default: ``WANDB_GROUP_NAME``, else the experiment's name.
        api_key_file: path of a file whose first line is the W&B API key (``~``
            is expanded). Not needed offline.
        api_key: the W&B API key itself; prefer ``api_key_file`` or
            ``WANDB_API_KEY``. Never pickled with the callback.
        excludes: result keys logged neither to history nor to config: an exact
            flattened name (``"a/b"``) or a ``"/"``-prefix (``"a"``).
        metrics: the result keys logged to the history, matched as ``excludes``
            are (Aim's ``metrics``). Default ``None``: every key. Tune's step
            counters ``training_iteration`` and ``timesteps_total`` (W&B's
            x-axis) are logged whatever it says, and the run config (the
            trial's facts, ``log_config``) is left alone; ``excludes`` wins
            over it. Example: ``metrics=["loss", "eval"]`` logs ``loss``,
            ``eval/acc``, ``eval/loss`` and ``training_iteration``.
        log_config: also log each result's ``config`` into the run config
            (values that change, as under PBT, are updated).
        upload_checkpoints: upload each checkpoint Tune saves as a W&B artifact,
            from the worker.
        log_params_on_trial_end: when a trial ends, update its run config
            with the trial's final config (MLflow's argument): under PBT, the
            hyperparameters the trial ended with. Default ``False``. Unlike
            MLflow's, the run config still gets the trial's first config when
            the run starts, so that running runs can be filtered by it.
        save_trial_dir: when a trial ends, log its local directory on the
            driver (``trial.local_path``: Tune's ``params.json``,
            ``result.json``, ``progress.csv``, TensorBoard events, ``error.txt``)
            as a W&B artifact of type ``trial_dir`` named
            ``trial_dir_<trial name>``, from the worker, as MLflow's
            ``save_artifact`` does. Default ``False``. Checkpoints are not in
            it: see ``upload_checkpoints``.
        upload_timeout: seconds ``on_experiment_end`` waits for runs to finish
            uploading before it stops their workers and says how to upload them.
        video_kwargs: keyword arguments for ``wandb.Video`` (5-dim arrays).
        image_kwargs: keyword arguments for ``wandb.Image`` (3- and 4-dim arrays).
        log_system_metrics: sample system metrics in the runs. Off by
            default: a worker runs on the driver's node, so it would describe
            the driver's machine, not the trial's (the trial's console is
            ``capture_console``'s).
        shared_service: let all workers of the experiment share one wandb-core
            service: about 0.035 CPU-s and 8 MB less per trial. A wandb-core
            that dies is started again and every run it served continues in
            a new piece, nothing lost; but all of them pause for it at once.
            Off by default, so that a trial with a worker of its own has its
            own wandb-core (a multiplexed worker's wandb-core serves that
            worker's runs either way); see docs/performance.md.
        runs_per_worker: how many runs one worker process (and its
            wandb-core) holds. ``None`` (default): each trial gets a worker of
            its own while fewer than 8 runs are live, then trials share
            workers of up to 64 runs, so that 1,000 concurrent trials take
            24 worker processes instead of 1,000 (see docs/architecture.md).
            ``1``: a worker per trial always (full isolation). ``N > 1``:
            every trial shares workers of up to ``N`` runs.
        key_check_timeout: online, seconds the W&B server has to answer the
            check of the key, made once before any trial starts. A refused key
            raises ``ValueError``; no answer in time is a warning, and the
            experiment goes on. ``0`` skips the check.
        capture_console: send each trial's stdout and stderr lines (log
            records included, as far as they reach them) to its run's Logs
            tab, stderr marked as such. Needs Ray's ``log_to_driver`` (the
            default). See docs/console.md.
        sweep: show the experiment as a W&B sweep: a dict with Tune's
            ``param_space`` and the ``metric`` and ``mode`` it optimizes (and
            optionally the sweep's ``name`` and ``method``); ``True`` for a
            sweep without them. Online, one sweep is created before the first
            run, every trial's run joins it and it is stopped at the end;
            offline, ``python -m tune_wandb sync EXPERIMENT_DIR --sweep``
            makes it from the uploaded runs. See docs/sweeps.md.
        **wandb_init_kwargs: passed to ``wandb.init`` and winning over the
            callback's own choices (``id``, ``name``, ``group``, ``dir``,
            ``mode``, ``settings``, ...). ``tags`` (default: none) are added
            to by each trial's: a trial's ``"wandb"`` entry's ``tags`` come
            after the callback's, each tag once, where its other keys win.

    Run names are ``str(trial)``; run ids are the trial id followed by a short
    suffix derived from the experiment, the same again after ``Tuner.restore``.
    """

    def __init__(
        self,
        project: str | None = None,
        group: str | None = None,
        api_key_file: str | None = None,
        api_key: str | None = None,
        excludes: Iterable[str] = (),
        log_config: bool = False,
        metrics: Iterable[str] | None = None,
        upload_checkpoints: bool = False,
        log_params_on_trial_end: bool = False,
        save_trial_dir: bool = False,
        upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
        video_kwargs: dict[str, Any] | None = None,
        image_kwargs: dict[str, Any] | None = None,
        log_system_metrics: bool = False,
        shared_service: bool = False,
        key_check_timeout: float = DEFAULT_KEY_CHECK_TIMEOUT,
        runs_per_worker: int | None = None,
        sweep: bool | dict[str, Any] | None = None,
        capture_console: bool = True,
        **wandb_init_kwargs: Any,
    ) -> None:
        if api_key_file and api_key:
            raise ValueError(
                "Pass either api_key_file or api_key to WandbLoggerCallback, not both."
            )
        if "save_checkpoints" in wandb_init_kwargs:
            # Ray's deprecated alias, accepted as Ray's callback accepts it.
            warnings.warn(
                "`save_checkpoints` is deprecated. Use `upload_checkpoints` instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            upload_checkpoints = (
                bool(wandb_init_kwargs.pop("save_checkpoints")) or upload_checkpoints
            )
        if upload_timeout < 0:
            raise ValueError(f"upload_timeout must be >= 0 seconds, not {upload_timeout!r}")
        if runs_per_worker is not None and (
            isinstance(runs_per_worker, bool)
            or not isinstance(runs_per_worker, int)
            or runs_per_worker < 1
        ):
            raise ValueError(
                "runs_per_worker must be a whole number >= 1 (1: a worker per trial), or None "
                f"for tune-wandb's policy; not {runs_per_worker!r}"
            )
        if key_check_timeout < 0:
            raise ValueError(
                f"key_check_timeout must be >= 0 seconds (0: no check), not {key_check_timeout!r}"
            )
        _settings.merge_settings(wandb_init_kwargs.get("settings"), log_system_metrics)
        unknown = _settings.unknown_init_kwargs(wandb_init_kwargs)
        if unknown:
            # Checked here: in the workers it would cost every trial its run.
            raise TypeError(
                "WandbLoggerCallback passes extra keyword arguments to wandb.init, which "
                f"does not take {_settings.describe_unknown(unknown)}."
            )
        self.project = project
        self.group = group
        self.api_key_file = api_key_file
        self.api_key = api_key
        self.excludes = _filters.as_excludes(excludes)
        self.metrics = _filters.as_metrics(metrics)
        self.log_config = log_config
        self.upload_checkpoints = upload_checkpoints
        self.log_params_on_trial_end = log_params_on_trial_end
        self.save_trial_dir = save_trial_dir
        self.upload_timeout = upload_timeout
        self.video_kwargs = dict(video_kwargs or {})
        self.image_kwargs = dict(image_kwargs or {})
        self.log_system_metrics = log_system_metrics
        self.shared_service = shared_service
        self.runs_per_worker = runs_per_worker
        self.key_check_timeout = key_check_timeout
        self.sweep = _sweep_config.check_sweep_arg(sweep)
        self.capture_console = capture_console
        self.wandb_init_kwargs = wandb_init_kwargs
        #: Default group: the trainable's name (Ray 1.x's ``WandbLogger``, which
        #: sets it) rather than the experiment's (Ray 2.x's callback).
        self.group_by_trainable = False
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._pool = WorkerPool(
            shared_service=self.shared_service,
            # Callbacks pickled before the argument existed have no attribute.
            runs_per_worker=getattr(self, "runs_per_worker", None),
        )
        #: The pool's queue's own put: one call per result on the Tune loop.
        self._put: Callable[[Any], None] = self._pool.put
        self._trials: dict[str, _TrialLog] = {}
        self._keys: dict[tuple[Any, Any], str | None] = {}
        self._checked: set[tuple[str, str]] = set()
        self._env: dict[str, str] = {}
        self._token: str | None = None
        self._restored_token: str | None = None
        self._said_project = False
        self._said_entry_key = False
        self._said_unknown: set[str] = set()
        self._said_tags: set[str] = set()
        #: Whether the job's trial processes were told this callback's settings.
        self._published = False
        #: The experiments whose trials were claimed (their claims withdrawn at the end).
        self._claimed_in: set[str] = set()
        #: Trials whose one run is written by their own process (a mixin, setup_wandb).
        self._handed_off: set[str] = set()
        self._function_trainables: dict[str, bool] = {}
        #: Function trials started whose run waits for their first result.
        self._deferred: set[str] = set()
        self._sweep: _experiment_sweep.ExperimentSweep | None = None
        self._restored_sweep: _sweep.SweepRef | None = None
        self._sweep_dir: str | None = None
        self._console: _console.ConsoleRouter | None = None
        # Ends the workers if the callback is dropped without on_experiment_end.
        self._finalizer = weakref.finalize(self, self._pool.close)

    # -- pickling: Tune saves the callback with the experiment ----------------

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        # A key is never written with the experiment, wherever it was given.
        state["api_key"] = None
        if self.wandb_init_kwargs.get("settings") is not None:
            settings = _settings.merge_settings(self.wandb_init_kwargs["settings"], False)
            settings.pop("api_key", None)
            state["wandb_init_kwargs"] = {**self.wandb_init_kwargs, "settings": settings}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A callback pickled by an earlier version lacks the newer arguments.
        defaults = {
            "sweep": None,
            "capture_console": True,
            "runs_per_worker": None,
            "metrics": None,
            "log_params_on_trial_end": False,
            "save_trial_dir": False,
        }
        self.__dict__.update({**defaults, "group_by_trainable": False, **state})
        self._init_runtime()

    def get_state(self) -> dict[str, Any] | None:
        """Callback state saved with the experiment: the run-id token, and its sweep."""
        if not self._token:
            return None
        state: dict[str, Any] = {"experiment_token": self._token}
        if self._sweep is not None and self._sweep.ref is not None:
            state["sweep"] = self._sweep.record()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore the run-id token and sweep, so restored trials continue their runs."""
        self._restored_token = state.get("experiment_token")
        self._restored_sweep = _experiment_sweep.ref_from(state.get("sweep"))

    # -- Tune hooks -----------------------------------------------------------

    def setup(self, *args: Any, **info: Any) -> None:
        """Start the launcher (it warms up while Tune starts) and settle the project."""
        self._token = self._restored_token or _settings.experiment_token()
        self._restored_token = None
        # Read once: scanning the environment at every trial start costs the Tune loop.
        self._populate_run_location()
        self._env = _settings.wandb_env(os.environ)
        _report.ensure_console()
        _warn_if_debugging()
        self._check_callback_key()
        self._publish()
        self._pool.start()
        self._start_sweep(_settings.resolve_project(self.project, os.environ))
        self._start_console()

    def _start_console(self) -> None:
        """Route the trials' console lines to their runs, if Ray forwards them here."""
        if not self.capture_console or self._console is not None:
            return
        if _console.ray_forwards_output() is False:
            _warn_once_of_no_output()
            return
        router = _console.ConsoleRouter()
        if router.start():
            self._console = router

    def _start_sweep(self, project: str | None) -> None:
        """With ``sweep=``: have the experiment's sweep made (online) before any run starts."""
        if self.sweep is None:
            return
        init_kwargs = dict(self.wandb_init_kwargs)
        init_kwargs["settings"] = _settings.merge_settings(init_kwargs.get("settings"), False)
        if init_kwargs.get("mode") == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
            return
        self._sweep = _experiment_sweep.ExperimentSweep(
            self.sweep,
            entity=init_kwargs.get("entity") or os.environ.get("WANDB_ENTITY") or None,
            project=init_kwargs.get("project") or project,
            online=not _settings.offline_or_disabled(init_kwargs, os.environ),
            restored=self._restored_sweep,
        )
        self._restored_sweep = None
        self._sweep.start(self._pool.call, self._sweep_access())

    def _sweep_access(self) -> _sweep.Access:
        """The driver's W&B variables and the callback's key, for the sweep's calls."""
        source = (self.api_key_file, self.api_key)
        if source not in self._keys:
            try:
                self._keys[source] = self._find_key(*source).for_wandb
            except ValueError:
                self._keys[source] = None
        return _sweep.Access(self._env, self._keys[source])

    def _publish(self) -> None:
        """Tell the job's trial processes this callback's settings.

        A trial whose own process starts a W&B run (``@wandb_mixin``,
        ``WandbTrainableMixin``, ``setup_wandb``) then writes the trial's one
        run with them, Tune's results included, and this callback opens none
        for it (see :mod:`tune_wandb._handoff`).
        """
        assert self._token is not None
        init_kwargs = dict(self.wandb_init_kwargs)
        if init_kwargs.get("settings") is not None:
            settings = _settings.merge_settings(init_kwargs["settings"], False, quiet=False)
            settings.pop("api_key", None)
            init_kwargs["settings"] = settings
        self._published = _handoff.publish(
            _handoff.CallbackSettings(
                token=self._token,
                project=_settings.resolve_project(self.project, os.environ),
                group=self.group or os.environ.get(_settings.GROUP_ENV_VAR),
                excludes=self.excludes,
                log_config=self.log_config,
                init_kwargs=init_kwargs,
                api_key_file=self.api_key_file,
                group_by_trainable=self.group_by_trainable,
                metrics=self.metrics,
            )
        )

    def _populate_run_location(self) -> None:
        """Ray's WANDB_POPULATE_RUN_LOCATION_HOOK, when no project was given.

        The hook is the user's: it sets WANDB_PROJECT_NAME / WANDB_GROUP_NAME in
        the driver's environment, as it does with Ray's own callback.
        """
        hook = os.environ.get(_settings.POPULATE_RUN_LOCATION_HOOK)
        if not hook or self.project or os.environ.get(_settings.PROJECT_ENV_VARS[0]):
            return
        try:
            _settings.load_hook(hook)()
        except Exception:
            logger.exception(
                "tune-wandb: %s=%s failed; the project and group are chosen without it",
                _settings.POPULATE_RUN_LOCATION_HOOK,
                hook,
            )

    def _key_for(self, options: dict[str, Any], init_kwargs: dict[str, Any]) -> str | None:
        """The API key of a trial's run, read on the driver (once per source).

        In order: the trial entry's ``api_key_file`` / ``api_key``, else the
        callback's, else ``WANDB_API_KEY``, else an earlier ``wandb login``
        (None: wandb reads it in the worker), else Ray's
        ``WANDB_SETUP_API_KEY_HOOK``. Offline and disabled runs need none.

        Raises:
            ValueError: online, and no key anywhere.
        """
        if _settings.offline_or_disabled(init_kwargs, os.environ):
            return None
        if "api_key" in options and not self._said_entry_key:
            self._said_entry_key = True
            logger.warning(
                'tune-wandb: an api_key in the trial config\'s "wandb" entry is stored by Ray '
                "in params.json, params.pkl, result.json and the experiment state. Use "
                "api_key_file or WANDB_API_KEY instead (tune_wandb.run takes it out for you)."
            )
        if "api_key" in options or "api_key_file" in options:
            source = (options.get("api_key_file"), options.get("api_key"))
        else:
            source = (self.api_key_file, self.api_key)
        if source not in self._keys:
            found = self._find_key(*source)
            self._check_key(found.key, found.origin, init_kwargs)
            self._keys[source] = found.for_wandb
        return self._keys[source]

    def _find_key(self, api_key_file: str | None, api_key: str | None) -> _initargs.FoundKey:
        """The key of the given source, else the environment's, else Ray's key hook's.

        Raises:
            ValueError: no key anywhere.
        """
        found = _initargs.find_key(api_key_file, api_key, more=[_key_hook()])
        if found is None:
            raise ValueError(
                "No W&B API key found for an online run. Pass api_key_file= to "
                'WandbLoggerCallback (or put it in the config\'s "wandb" entry), set '
                "WANDB_API_KEY, run `wandb login`, or log offline with WANDB_MODE=offline."
            )
        return found

    def _say_if_no_project(self, init_kwargs: dict[str, Any], trial_name: str) -> None:
        """Say (once) that a run goes to wandb's default project, when one does.

        Said when a run is opened, not in ``setup``: the trials' ``"wandb"``
        entries, which name the project in the old integration's examples,
        are known only then.
        """
        if init_kwargs.get("project") or self._said_project:
            return
        self._said_project = True
        logger.warning(
            'tune-wandb: no W&B project given (argument, the trials\' "wandb" entry, '
            "WANDB_PROJECT_NAME or WANDB_PROJECT); the run of trial %s goes to wandb's "
            "default project, as will others without one (said once).",
            trial_name,
        )

    def _say_unknown(self, unknown: dict[str, str | None]) -> None:
        """Say (once per key) which entry keys ``wandb.init`` does not take: they are left out."""
        new = {k: v for k, v in unknown.items() if k not in self._said_unknown}
        if new:
            self._said_unknown.update(new)
            logger.warning(
                'tune-wandb: the trials\' "wandb" config entry has keys wandb.init does not '
                "take: %s; they are left out (said once).",
                _settings.describe_unknown(new),
            )

    def _say_cut_tags(self, cut: tuple[str, ...]) -> None:
        """Say (once per tag) which tags were cut to the 64 characters W&B takes."""
        new = [tag for tag in cut if tag not in self._said_tags]
        if new:
            self._said_tags.update(new)
            logger.warning(
                "tune-wandb: W&B takes tags of at most %d characters; %s cut to %d "
                "(said once per tag).",
                _initargs.MAX_TAG_LENGTH,
                ", ".join(repr(tag) for tag in new),
                _initargs.MAX_TAG_LENGTH,
            )

    def _check_callback_key(self) -> None:
        """Before any trial starts: check the callback's own key, when online.

        Without one (the trials' ``"wandb"`` entries may carry theirs), the
        check waits for the first trial that needs a key.
        """
        init_kwargs = dict(self.wandb_init_kwargs)
        init_kwargs["settings"] = _settings.merge_settings(init_kwargs.get("settings"), False)
        if _settings.offline_or_disabled(init_kwargs, os.environ):
            return
        source = (self.api_key_file, self.api_key)
        try:
            found = self._find_key(*source)
        except ValueError:
            return
        self._check_key(found.key, found.origin, init_kwargs)
        self._keys[source] = found.for_wandb

    def _check_key(self, key: str, origin: str, init_kwargs: dict[str, Any]) -> None:
        """Ask the W&B server once whether ``key`` is good, within ``key_check_timeout``.

        Raises:
            ValueError: the server refused the key.
        """
        if self.key_check_timeout <= 0:
            return
        url = _settings.base_url(init_kwargs.get("settings"), os.environ)
        fingerprint = (url, hashlib.sha256(key.encode()).hexdigest())
        if fingerprint in self._checked:
            return
        check = _credentials.check_api_key(key, url, self.key_check_timeout)
        if check.status is _credentials.KeyStatus.REJECTED:
            raise ValueError(
                f"W&B at {check.host} refused the API key from {origin} ({check.detail}). "
                "Put a valid key there (https://wandb.ai/authorize, or your W&B server's "
                "/authorize page), or log offline with WANDB_MODE=offline. No run was started."
            )
        self._checked.add(fingerprint)
        if check.status is _credentials.KeyStatus.UNREACHABLE:
            logger.warning(
                "tune-wandb: could not check the W&B API key from %s with %s within %.0f s "
                "(%s); going on. A worker that cannot reach W&B logs its run offline, to be "
                "uploaded later with `wandb sync`.",
                origin,
                check.host,
                self.key_check_timeout,
                check.detail,
            )

    def log_trial_start(self, trial: Trial) -> None:
        """Open the trial's run, or keep the one still logging (a retried trial).

        A function trainable's run is opened at its first result instead: its
        function, which may start the trial's run itself, starts only now.
        """
        state = self._trials.get(trial.trial_id)
        if trial.trial_id in self._handed_off:
            return
        if state is None and self._is_function_trial(trial):
            self._deferred.add(trial.trial_id)
            return
        if state is None or state.ended:
            self._open_or_hand_off(trial, state)

    def _is_function_trial(self, trial: Trial) -> bool:
        """Whether the trial runs a function trainable (False if Tune cannot tell)."""
        name = getattr(trial, "trainable_name", None)
        if name is None:
            return False
        if name not in self._function_trainables:
            try:
                from ray.tune.trainable.function_trainable import FunctionTrainable

                cls = trial.get_trainable_cls()
                self._function_trainables[name] = isinstance(cls, type) and issubclass(
                    cls, FunctionTrainable
                )
            except Exception:
                self._function_trainables[name] = False
        return self._function_trainables[name]

    def _open_or_hand_off(self, trial: Trial, state: _TrialLog | None) -> _TrialLog | None:
        """Open a run for the trial, unless its own process writes its one run (None)."""
        path = getattr(getattr(trial, "storage", None), "experiment_fs_path", None)
        if state is None and self._published and path is not None:
            path = str(path)
            self._claimed_in.add(path)
            if _handoff.claim(path, trial.trial_id, _handoff.CALLBACK) != _handoff.CALLBACK:
                self._handed_off.add(trial.trial_id)
                return None
        return self._open(trial, state)

    def _open(self, trial: Trial, state: _TrialLog | None) -> _TrialLog:
        """Open a run for the trial: its first, or a new piece of it once the last ended."""
        if self._token is None:  # hooks called without setup(), as in some tests of Tune's
            self.setup()
        setup, rules = self._setup_for(trial)
        gate = self._sweep.gate if self._sweep is not None else None
        prepare = _row_maker(str(trial), rules)
        run = self._pool.open(trial.trial_id, str(trial), setup, prepare, gate)
        if self._sweep is not None and self._sweep_dir is None:
            # Kept in the experiment directory for `sync --sweep` and restores.
            self._sweep_dir = _local_experiment_dir([trial])
            if self._sweep_dir is not None:
                _experiment_sweep.write_record(self._sweep_dir, self._sweep.record())
        self._claim_actor(trial, run)
        if state is None:
            state = self._trials[trial.trial_id] = _TrialLog(run, rules)
        else:
            state.runs.append(run)
            state.run, state.rules, state.ended = run, rules, False
        return state

    def _claim_actor(self, trial: Trial, run: Run) -> None:
        """Ask the trial's actor for its ``(ip, pid)``, so lines before its first result are its."""
        router = self._console
        actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
        if router is None or actor is None:
            return
        try:
            pending = actor.get_current_ip_pid.remote().future()
        except Exception:
            return  # its results claim it instead

        def claim(done: Any) -> None:
            if not done.cancelled() and done.exception() is None:
                ip, pid = done.result()
                router.claim(ip, pid, run)

        pending.add_done_callback(claim)

    def _setup_for(self, trial: Trial) -> tuple[WorkerSetup, _filters.Rules]:
        """What the trial's worker needs, and the filters of its results."""
        assert self._token is not None
        run_root, storage = _run_location(trial)
        # The trial's "wandb" entry wins over the callback's own arguments.
        run = _initargs.trial_run(
            trial_id=trial.trial_id,
            name=str(trial),
            experiment=trial.experiment_dir_name,
            token=self._token,
            config=trial.config,
            run_root=run_root,
            settings=_settings.merge_settings(None, self.log_system_metrics),
            group=self.group,
            default_group=trial.trainable_name if self.group_by_trainable else None,
            project=self.project,
            excludes=self.excludes,
            layers=[self.wandb_init_kwargs],
        )
        self._say_unknown(run.unknown)
        self._say_cut_tags(run.cut_tags)
        options, init_kwargs = run.options, run.init_kwargs
        # Ray's callback adds it, and dashboards filter on it.
        init_kwargs["config"][_filters.TRIAL_LOG_PATH] = trial.path
        self._say_if_no_project(init_kwargs, str(trial))
        capture = self._console is not None
        if capture and init_kwargs["settings"].get("console") in ("off", "auto"):
            # wandb-core takes console lines only from a run that captures its console.
            init_kwargs["settings"]["console"] = "wrap"
        log_config = bool(options.get("log_config", self.log_config))
        key = self._key_for(options, init_kwargs)
        setup = WorkerSetup(
            trial_id=trial.trial_id,
            trial_name=str(trial),
            init_kwargs=init_kwargs,
            driver_pid=os.getpid(),
            env=self._env,
            api_key=key,
            storage=storage,
            image_kwargs=self.image_kwargs,
            video_kwargs=self.video_kwargs,
            capture_console=capture,
        )
        return setup, _filters.Rules(run.excludes, log_config, self.metrics)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        """Queue the result for the trial's worker; returns at once.

        The result is filtered and flattened on the pool's thread, from a
        shallow copy taken here (Tune lets later callbacks change the result
        in place).
        """
        if trial.trial_id in self._handed_off:
            return
        state = self._trials.get(trial.trial_id)
        if state is None or state.ended:
            # No run yet, or it ended: a new piece of the same run.
            opened = self._open_or_hand_off(trial, state)
            if opened is None:
                return
            state = opened
        if self._console is not None:
            where = (result.get("node_ip"), result.get("pid"), state.run)
            if where != state.claimed and where[0] is not None and where[1] is not None:
                state.claimed = where
                self._console.claim(where[0], where[1], state.run)
        self._put((state.run, dict(result)))

    def log_trial_save(self, trial: Trial) -> None:
        """Queue the trial's new checkpoint for upload as an artifact, if asked."""
        if not self.upload_checkpoints or trial.checkpoint is None:
            return
        state = self._trials.get(trial.trial_id)
        if state is None or state.ended:
            return
        checkpoint = trial.checkpoint
        filesystem = (
            None if _runfile.is_local_filesystem(checkpoint.filesystem) else checkpoint.filesystem
        )
        iteration = (trial.last_result or {}).get("training_iteration")
        state.run.checkpoint(checkpoint.path, filesystem, iteration)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        """Send the end marker (exit code 1 if the trial failed); returns at once."""
        if trial.trial_id in self._handed_off:
            return
        state = self._trials.get(trial.trial_id)
        if state is None and trial.trial_id in self._deferred:
            # A function trainable that ended before its first result: its run
            # says it ran, and how it ended.
            state = self._open_or_hand_off(trial, None)
        if state is not None and not state.ended:
            self._end_trial(trial, state, 1 if failed else 0)

    def _end_trial(self, trial: Trial | None, state: _TrialLog, exit_code: int) -> None:
        """Queue the trial's final config and directory (if asked), then the end marker."""
        state.ended = True
        if trial is not None and (self.log_params_on_trial_end or self.save_trial_dir):
            config = None
            if self.log_params_on_trial_end:
                config = _filters.clean_config(trial.config, state.rules.excludes)
            trial_dir = None
            if self.save_trial_dir:
                trial_dir = _trial_local_path(trial)
            state.run.trial_end(config, trial_dir)
        self._finish_run(state.run, exit_code)

    def _finish_run(self, run: Run, exit_code: int) -> None:
        """The end marker, once the trial's console lines stopped coming (if they are logged)."""
        if self._console is not None:
            self._console.end(run, exit_code)
        else:
            run.finish(exit_code)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Wait up to ``upload_timeout`` for every run to finish, then end the workers."""
        by_id = {t.trial_id: t for t in trials}
        for trial_id, state in self._trials.items():
            if not state.ended:
                trial = by_id.get(trial_id)
                status = trial.status if trial is not None else None
                self._end_trial(trial, state, _exit_code_for(status))
        self._stop_console()
        runs = [run for state in self._trials.values() for run in state.runs]
        pending = self._wait(runs)
        self._finish_sweep(trials)
        # Stopped before they are reported: a worker still waiting for W&B in
        # wandb.init logs what it holds offline when stopped, and says where.
        self._pool.stop(pending)
        self._pool.close()
        for run in pending:
            self._say_not_uploaded(run)
        if self._trials:
            sync.link_runs(_local_experiment_dir(trials))
            logger.info("%s", _report.summary(self._run_lines(), _local_experiment_dir(trials)))
        if self._published:
            _handoff.withdraw(self._claimed_in)
        self._published = False
        self._claimed_in.clear()
        self._handed_off.clear()
        self._deferred.clear()
        self._trials.clear()
        self._keys.clear()
        self._token = None

    def _say_not_uploaded(self, run: Run) -> None:
        """Say what became of a run still pending at ``upload_timeout``, as the table will.

        A worker stopped while W&B did not answer logs offline what it holds
        and finishes the run there: that run is finished, saved locally and
        not uploaded, which the end table says too. Otherwise it did not
        finish; its data is on disk.
        """
        where = run.run_dir or self._trials[run.key].wandb_dir
        if run.finished is not None and run.finished.offline:
            logger.error(
                "tune-wandb: the W&B run of trial %s was not uploaded within "
                "upload_timeout=%ss; it is finished and saved locally in %s. Upload it "
                "with: wandb sync %s",
                run.name,
                self.upload_timeout,
                where,
                where,
            )
            return
        logger.error(
            "tune-wandb: the W&B run of trial %s did not finish within upload_timeout=%ss; "
            "its data is on disk in %s. Upload it with: wandb sync %s",
            run.name,
            self.upload_timeout,
            where,
            where,
        )

    def _stop_console(self) -> None:
        """Let the last lines come, end the runs waiting for them, say what matched no trial."""
        router, self._console = self._console, None
        if router is None:
            return
        router.flush(_console.MAX_END_WAIT_SECONDS + 1.0)
        router.stop()
        if router.unmatched_lines:
            logger.info(
                "tune-wandb: %d console line(s) from %d Ray worker process(es) belong to no "
                "trial's run (Ray Train workers, other actors, lines after a trial ended); they "
                "are in Ray's console output only.",
                router.unmatched_lines,
                len(router.unmatched_processes),
            )
        for state in self._trials.values():
            dropped = sum(run.console_dropped for run in state.runs)
            if dropped:
                logger.warning(
                    "tune-wandb: trial %s: %d console line(s) were not logged: its W&B worker "
                    "could not keep up, and lines go before rows.",
                    state.run.name,
                    dropped,
                )

    def _finish_sweep(self, trials: list[Trial]) -> None:
        """List the values the trials took in the sweep, stop it, keep its record."""
        sweep, self._sweep = self._sweep, None
        if sweep is None:
            return
        configs = [trial.config for trial in trials]
        sweep.finish(self._pool.call, self._sweep_access(), configs)
        where = _local_experiment_dir(trials) or self._sweep_dir
        if where is not None:
            _experiment_sweep.write_record(where, sweep.record(configs))
        self._sweep_dir = None
        if not sweep.online:
            logger.info(
                "tune-wandb: the runs are offline; once uploaded they make a W&B sweep with: "
                "python -m tune_wandb sync %s --sweep",
                where or "EXPERIMENT_DIR",
            )

    def _wait(self, runs: list[Run]) -> list[Run]:
        """Wait up to ``upload_timeout`` for the runs to finish, saying how it goes."""
        deadline = time.monotonic() + self.upload_timeout
        started = time.monotonic()
        while True:
            step = min(_PROGRESS_SECONDS, max(0.0, deadline - time.monotonic()))
            pending = self._pool.wait(runs, step)
            if not pending or time.monotonic() >= deadline:
                return pending
            logger.info(
                "tune-wandb: waiting for %d of %d W&B runs to finish uploading "
                "(%.0f s of upload_timeout=%s s)...",
                len(pending),
                len(runs),
                time.monotonic() - started,
                self.upload_timeout,
            )

    def _run_lines(self) -> list[_report.RunLine]:
        lines = []
        for state in self._trials.values():
            run = state.run
            finished, started = run.finished, run.started
            lines.append(
                _report.RunLine(
                    trial=run.name,
                    run_id=started.run_id if started is not None else "-",
                    rows=sum(r.rows for r in state.runs),
                    exit_code=finished.exit_code if finished is not None else None,
                    offline=finished.offline if finished is not None else True,
                    finished=finished is not None,
                    given_up=run.state is RunState.GIVEN_UP,
                    unwritten=(
                        finished.unwritten
                        if finished is not None
                        else run.ledger.not_written
                        if run.state is RunState.GIVEN_UP
                        else 0
                    ),
                )
            )
        return lines


def _row_maker(trial_name: str, rules: _filters.Rules) -> Prepare:
    """The filters of one trial's results, run on the pool's thread, off the Tune loop."""
    splitter = _filters.Splitter(rules)
    warned: set[str] = set()

    def prepare(seq: int, result: dict[str, Any]) -> LogRow:
        history, config, dropped = splitter.split(result)
        for key in dropped or ():
            if key not in warned:
                warned.add(key)
                logger.warning(
                    "tune-wandb: trial %s: result key %r holds a value W&B cannot log (an "
                    "object, function, lock, ...; see docs/bad-input.md), so it is left out "
                    "of the history; the rest of the row is logged (said once per trial).",
                    trial_name,
                    key,
                )
        return LogRow(seq, history, config)

    return prepare


#: How often a long wait at the end of an experiment says how it goes.
_PROGRESS_SECONDS = 10.0


def _exit_code_for(status: str | None) -> int:
    """The exit code of a run whose trial Tune never reported complete or failed.

    Tune marks the trials it stops at the end of an interrupted experiment
    TERMINATED without calling ``on_trial_complete``, so the status alone
    cannot tell them from finished ones; reaching here means the experiment
    ended while the trial was still running.
    """
    return 1 if status == "ERROR" else EXIT_INTERRUPTED


def _key_hook() -> _initargs.KeySource:
    """Ray's ``WANDB_SETUP_API_KEY_HOOK`` as a place to find a key (its failure logged)."""
    hook = os.environ.get(_settings.SETUP_API_KEY_HOOK)

    def key() -> str | None:
        if not hook:
            return None
        try:
            return str(_settings.load_hook(hook)())
        except Exception:
            logger.exception(
                "tune-wandb: %s=%s failed to give an API key", _settings.SETUP_API_KEY_HOOK, hook
            )
            return None

    return _settings.SETUP_API_KEY_HOOK, key


@functools.cache
def _warn_once_of_no_output() -> None:
    logger.warning(
        "tune-wandb: Ray runs with log_to_driver=False, so the trials' output never reaches "
        "this driver and cannot go to the W&B runs' Logs tabs. Start Ray with "
        "log_to_driver=True (its default) for it, or pass capture_console=False to "
        "WandbLoggerCallback to say you do not want it."
    )


def _warn_if_debugging() -> None:
    if os.environ.get("WANDB_DEBUG", "").lower() in ("", "0", "false", "no", "off"):
        return
    _warn_once_of_debug()


@functools.cache
def _warn_once_of_debug() -> None:
    logger.warning(
        "tune-wandb: WANDB_DEBUG is set: wandb-core writes the API key into each run's "
        "debug-internal.log. Unset it unless you are debugging wandb itself, and do not "
        "share those logs."
    )


def _trial_local_path(trial: Trial) -> str | None:
    """The trial's directory on the driver (``trial.local_path``), None if Tune has none."""
    try:
        path = trial.local_path
    except Exception:  # Tune raises when the trial's directory is not named yet
        return None
    return str(path) if path else None


def _local_experiment_dir(trials: list[Trial]) -> str | None:
    """Where ``tune_wandb sync`` finds the experiment's runs on this machine."""
    if not trials:
        return None
    storage = trials[0].storage
    if _runfile.is_local_filesystem(storage.storage_filesystem):
        return str(storage.experiment_fs_path)
    # Non-local storage: the runs were written on this node first (see _run_location).
    return os.path.join(os.path.dirname(storage.experiment_driver_staging_path), "tune_wandb")


def _run_location(trial: Trial) -> tuple[str, StorageTarget | None]:
    """Where the worker writes the run, and where it copies it afterwards.

    On local storage the run is written straight into the trial's directory in
    the experiment's storage: Tune makes its final sync before it calls
    ``on_experiment_end``, so anything written to its staging copy would miss it.
    On other filesystems the worker writes beside Tune's staging directory (not
    inside it, so Tune never syncs a half-written run) and copies the finished
    run into the trial's storage directory.
    """
    storage = trial.storage
    if _runfile.is_local_filesystem(storage.storage_filesystem):
        return trial.path, None
    staging = os.path.join(
        os.path.dirname(storage.experiment_driver_staging_path),
        "tune_wandb",
        storage.trial_dir_name,
    )
    return staging, StorageTarget(storage.storage_filesystem, trial.path)
