"""Every use of wandb's private API, in one place.

tune-wandb needs a few things wandb does not publish: attaching to a run
stream another process opened, starting a detached wandb-core and keeping its
process handle, the process of the wandb-core this process started, whether a
run of this process is still live, the protobuf field numbers of the run
file's records, and the parameters of ``wandb.init``. Each function here names
the private attribute path or number it relies on; ``tests/test_wandb_compat.py``
asserts each of them against the installed wandb, so a wandb release that
moves one fails there, loudly, in one place.

Differences between the wandb releases tune-wandb supports are found here
by feature detection (does the installed wandb have it?), never by reading
version numbers.

Nothing here imports wandb at module level: the driver imports this module
and must not pay for wandb.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
from pathlib import Path
from typing import Any

#: ``Record.history``'s field number in ``wandb_internal.proto``.
HISTORY_FIELD = 2
#: ``Record.exit``'s field number: the record that ends a finished run's file.
EXIT_FIELD = 18
#: The field numbers of ``Record``'s ``record_type`` oneof (wandb 0.31).
RECORD_TYPE_FIELDS = frozenset(range(2, 14)) | {17, 18, 20, 21, 22, 23, 24, 25, 26, 27, 100}


def attach(run_id: str) -> Any:
    """Attach to the stream of ``run_id`` in this process's wandb-core; the Run or None.

    ``wandb.sdk.wandb_init._attach``: a shared wandb-core keeps the stream of
    a client that died; attaching to it is the only way to finish it.

    Raises:
        Exception: whatever wandb raises when the service has no such stream.
    """
    from wandb.sdk.wandb_init import _attach

    return _attach(attach_id=run_id)


def start_detached_service(idle_timeout: str) -> tuple[Any, str]:
    """Start a wandb-core that outlives this process: ``(its Popen, its WANDB_SERVICE value)``.

    ``wandb.sdk.lib.service.service_process.start_detached`` starts the process
    and reads its address without starting a thread (so the caller can still
    fork safely); its handle keeps the ``Popen`` in ``_process``.
    """
    from wandb.sdk.lib.service import service_process
    from wandb.sdk.wandb_settings import Settings

    started = service_process.start_detached(Settings(), idle_timeout=idle_timeout)
    return started._process, started.token.env_value


def own_service_process() -> Any:
    """The ``Popen`` of the wandb-core this process started, or None.

    ``wandb_setup._singleton._connection._proc._process``: the singleton's
    connection holds the ``ServiceProcess`` it started (None for a service
    another process started), which holds the ``Popen``.
    """
    from wandb.sdk import wandb_setup

    connection = getattr(getattr(wandb_setup, "_singleton", None), "_connection", None)
    return getattr(getattr(connection, "_proc", None), "_process", None)


def kill_own_service(timeout: float = 5.0) -> None:
    """SIGKILL the wandb-core this process started, if any, and reap it."""
    process = own_service_process()
    if process is None:
        return
    with contextlib.suppress(Exception):
        process.kill()
        process.wait(timeout=timeout)


def has_live_run() -> bool | None:
    """Whether a run of this process is still live; None if wandb cannot tell.

    ``wandb_setup._singleton.most_recent_active_run``.
    """
    try:
        from wandb.sdk import wandb_setup

        setup = wandb_setup._singleton
        live = setup is not None and setup.most_recent_active_run is not None
    except Exception:
        return None
    return live


@functools.cache
def service_lost_errors() -> tuple[type[BaseException], ...]:
    """What wandb raises when its wandb-core is gone, besides a lost connection.

    ``HandleAbandonedError`` (a call waiting on a wandb-core that went,
    ``wandb.sdk.mailbox.mailbox_handle``), ``WandbServiceConnectionError``
    (no wandb-core to connect to, ``wandb.sdk.lib.service.service_token``) and
    ``ServicePollForTokenError`` (a wandb-core that died before it said where
    to reach it, ``wandb.sdk.lib.service.service_port_file``).
    """
    found: list[type[BaseException]] = [ConnectionError]
    for module, name in (
        ("wandb.sdk.mailbox.mailbox_handle", "HandleAbandonedError"),
        ("wandb.sdk.lib.service.service_token", "WandbServiceConnectionError"),
        ("wandb.sdk.lib.service.service_port_file", "ServicePollForTokenError"),
    ):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


def record_class() -> Any:
    """The protobuf class of a run file's records (``wandb.proto.wandb_internal_pb2.Record``)."""
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2.Record


def installed_requirements() -> str | None:
    """This environment's packages as a ``requirements.txt`` (``wandb.util.working_set``)."""
    try:
        from wandb.util import working_set

        return "".join(f"{d.key}=={d.version}\n" for d in working_set())
    except Exception:
        return None


def _wandb_sdk_module(name: str) -> ast.Module | None:
    """The syntax tree of ``wandb/sdk/<name>.py``, found and read without importing wandb."""
    try:
        # The top-level spec only: finding ``wandb.sdk.<name>`` would import wandb.
        spec = importlib.util.find_spec("wandb")
        if spec is None or spec.origin is None:
            return None
        source = Path(spec.origin).parent / "sdk" / f"{name}.py"
        return ast.parse(source.read_text(encoding="utf-8"))
    except (ImportError, OSError, SyntaxError, ValueError):
        return None


@functools.cache
def init_parameters() -> frozenset[str] | None:
    """The keyword arguments the installed ``wandb.init`` takes; None if unknown.

    Read from wandb's source (``wandb/sdk/wandb_init.py``, its module-level
    ``def init``) with :mod:`ast`, without importing wandb, which costs the
    driver most of a second.

    Example:
        >>> {"project", "group", "settings"} <= init_parameters()
        True
    """
    tree = _wandb_sdk_module("wandb_init")
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.FunctionDef) and node.name == "init":
            args = node.args
            return frozenset(a.arg for a in [*args.args, *args.kwonlyargs])
    return None


@functools.cache
def settings_fields() -> frozenset[str] | None:
    """The fields the installed ``wandb.Settings`` takes; None if unknown.

    ``wandb.Settings`` refuses a field it does not know, so a setting that
    only some releases have is given only where this lists it. Read from
    wandb's source (``wandb/sdk/wandb_settings.py``, the annotated fields of
    its ``class Settings``) with :mod:`ast`, without importing wandb.

    Example:
        >>> {"silent", "console", "x_disable_stats"} <= settings_fields()
        True
    """
    tree = _wandb_sdk_module("wandb_settings")
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            return frozenset(
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            )
    return None


def has_setting(name: str) -> bool:
    """Whether the installed ``wandb.Settings`` takes ``name`` (True if that is unknown).

    ``x_transaction_log_flush_interval``, which makes wandb-core write a run's
    file on a timer (so a killed worker loses at most that much), came in
    wandb 0.31: a release without it gets wandb's own flush timing.

    Example:
        >>> has_setting("silent"), has_setting("x_no_such_setting")
        (True, False)
    """
    fields = settings_fields()
    return fields is None or name in fields


def upsert_sweep(
    api: Any,
    config: dict[str, Any],
    *,
    entity: str | None = None,
    project: str | None = None,
    storage_id: str | None = None,
    state: str | None = None,
    prior_runs: list[str] | None = None,
) -> dict[str, Any]:
    """Create a sweep (``storage_id`` None) or change one: the sweep as the server returned it.

    ``wandb.apis.public.sweeps._upsert_sweep``, the ``UpsertSweep`` mutation
    ``wandb.sweep`` and ``wandb sweep --stop`` send; public ``wandb.sweep``
    cannot change a sweep (its config, its state) and prints to stdout.
    ``storage_id`` is the sweep's GraphQL ID (``wandb.Api().sweep(path).id``).
    """
    from wandb.apis.public.sweeps import _upsert_sweep

    sweep, _warnings = _upsert_sweep(
        api,
        config,
        obj_id=storage_id,
        entity=entity,
        project=project,
        state=state,
        prior_runs=prior_runs,
    )
    return dict(sweep)


def publish_console(run: Any, stream: str, lines: tuple[str, ...] | list[str]) -> None:
    """Write console lines into ``run``'s Logs tab, marked as ``stream`` wrote them.

    ``Run._interface.publish_output_raw``: the record wandb's own console
    capture sends, the only one that carries the stream (``Run.write_logs``
    has none) and that wandb-core writes to the run file and ``output.log``.
    wandb-core drops it when the run's ``console`` setting is ``"off"``.
    """
    interface = getattr(run, "_interface", None)
    if interface is None or not lines:
        return
    text = "".join(line if line.endswith("\n") else f"{line}\n" for line in lines)
    interface.publish_output_raw("stderr" if stream == "stderr" else "stdout", text)


def release_own_console(run: Any) -> None:
    """Stop ``run`` capturing this process's own stdout and stderr (``Run._restore``).

    The run keeps its ``console`` setting, so wandb-core still takes the lines
    of :func:`publish_console`; only the stream wrappers ``wandb.init``
    installed in this process are removed (``wandb.finish`` removes them
    again, harmlessly).
    """
    restore = getattr(run, "_restore", None)
    if restore is not None:
        restore()
