"""The calls to W&B's sweep API, made in a child process the launcher forks.

Never called in the driver: wandb's API starts a wandb-core there and sets
``WANDB_SERVICE``, ``WANDB_PROJECT`` and ``WANDB_ENTITY`` in ``os.environ``,
which the callback would then pass to every worker. The driver sends each
function here to the launcher (:meth:`tune_wandb._pool.WorkerPool.call`),
which runs it in a fork of its own and sends back what it returned; the
command line (``tune_wandb sync --sweep``) calls them directly.

Example:
    >>> ref = SweepRef("abcd1234", "me", "tuning")
    >>> ref.path
    'me/tuning/abcd1234'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tune_wandb import _wandb_compat

#: Seconds each request to the W&B server may take.
_API_TIMEOUT = 30


@dataclass(frozen=True)
class SweepRef:
    """Where a sweep is: its id (a run's ``settings.sweep_id``), entity and project."""

    id: str
    entity: str
    project: str
    url: str | None = None

    @property
    def path(self) -> str:
        """``entity/project/id``, as ``wandb sweep --stop`` and ``wandb.Api().sweep`` take it."""
        return f"{self.entity}/{self.project}/{self.id}"


@dataclass(frozen=True)
class Access:
    """How the child reaches W&B: the driver's ``WANDB_*`` variables and the key.

    ``api_key`` is kept out of ``repr``; it reaches wandb through the child's
    own environment, which ends with the child.
    """

    env: Mapping[str, str]
    api_key: str | None = None

    def __repr__(self) -> str:
        return f"Access(env={sorted(self.env)!r})"


def create(
    access: Access,
    config: dict[str, Any],
    entity: str | None,
    project: str | None,
    prior_runs: list[str] | None = None,
    state: str | None = None,
) -> SweepRef:
    """Create a sweep with ``config`` (and ``prior_runs``, run ids of its project)."""
    with _api(access) as api:
        sweep = _wandb_compat.upsert_sweep(
            api,
            config,
            entity=entity or _default_entity(api),
            project=project,
            prior_runs=prior_runs or None,
            state=state,
        )
        return _ref(api, sweep)


def set_state(
    access: Access,
    ref: SweepRef,
    state: str,
    config: dict[str, Any] | None = None,
    prior_runs: list[str] | None = None,
) -> SweepRef:
    """Give the sweep a W&B state (``RUNNING``, ``FINISHED``), a new config, more runs."""
    with _api(access) as api:
        sweep = api.sweep(ref.path)
        current = config if config is not None else dict(sweep.config)
        _wandb_compat.upsert_sweep(
            api,
            current,
            entity=ref.entity,
            project=ref.project,
            storage_id=sweep.id,
            state=state,
            prior_runs=prior_runs or None,
        )
        return ref


@contextlib.contextmanager
def _api(access: Access) -> Any:
    # This process is a child of our own: its environment is ours to set.
    for name in [n for n in os.environ if n.startswith("WANDB_")]:
        del os.environ[name]
    os.environ.update(access.env)
    os.environ.pop("WANDB_SWEEP_ID", None)
    os.environ["WANDB_SILENT"] = "true"
    if access.api_key:
        os.environ["WANDB_API_KEY"] = access.api_key
    import wandb

    try:
        yield wandb.Api(timeout=_API_TIMEOUT)
    finally:
        with contextlib.suppress(Exception):
            wandb.teardown()


def _default_entity(api: Any) -> str | None:
    with contextlib.suppress(Exception):
        return str(api.default_entity) if api.default_entity else None
    return None


def _ref(api: Any, sweep: Mapping[str, Any]) -> SweepRef:
    project = sweep.get("project") or {}
    entity = (project.get("entity") or {}).get("name") or ""
    ref = SweepRef(str(sweep["name"]), str(entity), str(project.get("name") or ""))
    url = None
    with contextlib.suppress(Exception):
        from wandb import util

        url = f"{util.app_url(api.settings['base_url'])}/{ref.entity}/{ref.project}/sweeps/{ref.id}"
    return SweepRef(ref.id, ref.entity, ref.project, url)
