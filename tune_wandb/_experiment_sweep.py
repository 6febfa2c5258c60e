"""One W&B sweep per Tune experiment: made before the first run, stopped at the end.

:class:`ExperimentSweep` is the callback's part in it. Online, it has the
launcher create the sweep (or, for a restored experiment, mark its sweep
running again) in a child process as the experiment starts (see
:mod:`tune_wandb._sweep`); each trial's run is opened behind a gate that
opens once the sweep exists and gives the run ``settings.sweep_id``. At the
end it lists the values the trials took for the parameters W&B has no form
for, and stops the sweep (W&B shows a sweep as running until it is stopped).

Offline, it only describes the sweep in the experiment directory
(:data:`SWEEP_FILE`), for ``python -m tune_wandb sync EXPERIMENT --sweep``
to create it from the uploaded runs. The file also keeps the sweep's id.

Example:
    >>> read_record("/nonexistent") is None
    True
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tune_wandb import _sweep, _sweep_config
from tune_wandb._protocol import WorkerSetup

logger = logging.getLogger("tune_wandb")

#: The experiment's sweep, described in its directory.
SWEEP_FILE = "wandb-sweep.json"
#: How long the end of the experiment waits for the sweep to be stopped.
STOP_SECONDS = 60.0

#: Amends a trial's worker setup once the sweep exists.
Attach = Callable[[WorkerSetup], WorkerSetup]


def read_record(experiment_dir: str | Path) -> dict[str, Any] | None:
    """The experiment's sweep record (:data:`SWEEP_FILE`), or None if it has none."""
    try:
        text = (Path(experiment_dir) / SWEEP_FILE).read_text(encoding="utf-8")
        record = json.loads(text)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(experiment_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Write the sweep record atomically (a reader sees the old one or the new one)."""
    path = Path(experiment_dir) / SWEEP_FILE
    tmp = path.with_name(f".{SWEEP_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        logger.warning("tune-wandb: could not write the sweep record %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def ref_from(record: Mapping[str, Any] | None) -> _sweep.SweepRef | None:
    """The sweep a record (or a callback state) names, if it names one."""
    if not record or not record.get("id"):
        return None
    return _sweep.SweepRef(
        str(record["id"]),
        str(record.get("entity") or ""),
        str(record.get("project") or ""),
        record.get("url"),
    )


class ExperimentSweep:
    """The sweep of one experiment, as the callback sees it.

    Args:
        spec: the checked ``sweep=`` argument (see
            :func:`tune_wandb._sweep_config.check_sweep_arg`).
        entity, project: where the runs go (the sweep must be there too).
        online: whether runs go to a W&B server now.
        restored: the sweep of the experiment being restored, if any.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        entity: str | None,
        project: str | None,
        online: bool,
        restored: _sweep.SweepRef | None = None,
    ) -> None:
        described = _sweep_config.describe(
            spec.get("param_space"),
            spec.get("metric"),
            spec.get("mode"),
            spec.get("method"),
            spec.get("name"),
        )
        self.config = described.config
        self.unlisted = described.unlisted
        self.entity = entity
        self.project = project
        self.online = online
        self.ref: _sweep.SweepRef | None = restored
        #: Opens once the sweep exists (or failed to); None offline.
        self.gate: concurrent.futures.Future[Attach] | None = None
        self._said_other_project = False

    def start(
        self, call: Callable[..., concurrent.futures.Future[Any]], access: _sweep.Access
    ) -> None:
        """Online: have the sweep created (or a restored one marked running); returns at once."""
        if not self.online:
            return
        self.gate = concurrent.futures.Future()
        if self.ref is not None:
            pending = call(_sweep.set_state, access, self.ref, "RUNNING")
        else:
            pending = call(_sweep.create, access, self.config, self.entity, self.project)
        pending.add_done_callback(self._created)

    def _created(self, pending: concurrent.futures.Future[Any]) -> None:
        assert self.gate is not None
        error = pending.exception()
        if error is not None:
            logger.warning(
                "tune-wandb: could not %s the W&B sweep of this experiment (%s); the runs are "
                "logged without it. Make one from them later with `python -m tune_wandb sync "
                "EXPERIMENT_DIR --sweep`.",
                "resume" if self.ref is not None else "create",
                error,
            )
            self.ref = None
            self.gate.set_result(lambda setup: setup)
            return
        self.ref = pending.result()
        logger.info("tune-wandb: W&B sweep %s: %s", self.ref.path, self.ref.url or "(no URL known)")
        self.gate.set_result(self._attach)

    def _attach(self, setup: WorkerSetup) -> WorkerSetup:
        """The setup with the run in the sweep, through its own ``settings.sweep_id``."""
        ref = self.ref
        if ref is None:
            return setup
        kwargs = setup.init_kwargs
        run_project, run_entity = kwargs.get("project") or None, kwargs.get("entity") or None
        if run_project != self.project or run_entity not in (None, self.entity, ref.entity):
            if not self._said_other_project:
                self._said_other_project = True
                logger.warning(
                    "tune-wandb: trial %s logs to another project or entity than the "
                    "experiment's sweep (%s); it is left out of the sweep (said once).",
                    setup.trial_name,
                    ref.path,
                )
            return setup
        settings = dict(kwargs.get("settings") or {})
        settings["sweep_id"] = ref.id
        init_kwargs = {**kwargs, "settings": settings}
        # A sweep's runs are in its entity and project: named, in case the
        # defaults of the worker's wandb differ from the server's.
        if run_entity is None and ref.entity:
            init_kwargs["entity"] = ref.entity
        if run_project is None and ref.project:
            init_kwargs["project"] = ref.project
        return replace(setup, init_kwargs=init_kwargs)

    def record(self, trial_configs: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The sweep as stored in the experiment directory (and in the callback's state)."""
        config = _sweep_config.with_sampled_values(self.config, self.unlisted, trial_configs)
        out: dict[str, Any] = {
            "config": config,
            "unlisted": [list(path) for path in self.unlisted],
            "entity": self.entity,
            "project": self.project,
        }
        if self.ref is not None:
            out.update(
                id=self.ref.id,
                entity=self.ref.entity,
                project=self.ref.project,
                url=self.ref.url,
            )
        return out

    def finish(
        self,
        call: Callable[..., concurrent.futures.Future[Any]],
        access: _sweep.Access,
        trial_configs: list[Mapping[str, Any]],
        timeout: float = STOP_SECONDS,
    ) -> None:
        """Online: give the sweep the sampled values and stop it (state FINISHED)."""
        if self.gate is not None and not self.gate.done():
            # Still being created: wait for it, or the sweep stays "running" for ever.
            with contextlib.suppress(concurrent.futures.TimeoutError):
                self.gate.result(timeout)
        if self.ref is None or not self.online:
            return
        config = self.record(trial_configs)["config"]
        stopping = call(_sweep.set_state, access, self.ref, "FINISHED", config)
        try:
            stopping.result(timeout)
        except Exception as exc:
            logger.warning(
                "tune-wandb: could not stop the W&B sweep %s (%s); W&B shows it as running "
                "until it is stopped: wandb sweep --stop %s",
                self.ref.path,
                exc,
                self.ref.path,
            )
