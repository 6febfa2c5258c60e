"""Where a trial's run goes and how it is named: project, group, id, key, mode.

Pure functions of their arguments and of the environment they are given, so
they are tested without Ray or wandb.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tune_wandb import _wandb_compat

#: Ray's variable for the project, read before wandb's own ``WANDB_PROJECT``.
PROJECT_ENV_VARS = ("WANDB_PROJECT_NAME", "WANDB_PROJECT")
#: Ray's variable for the group.
GROUP_ENV_VAR = "WANDB_GROUP_NAME"
API_KEY_ENV_VAR = "WANDB_API_KEY"

#: Ray's hooks, named by environment variables holding "package.module.function":
#: called with no argument, returns the API key (when none was given);
SETUP_API_KEY_HOOK = "WANDB_SETUP_API_KEY_HOOK"
#: called with no argument, sets WANDB_PROJECT_NAME / WANDB_GROUP_NAME (when no
#: project was given);
POPULATE_RUN_LOCATION_HOOK = "WANDB_POPULATE_RUN_LOCATION_HOOK"
#: called in the worker with each run, after ``wandb.init``.
PROCESS_RUN_INFO_HOOK = "WANDB_PROCESS_RUN_INFO_HOOK"

#: How often wandb-core flushes a run's ``.wandb`` file. wandb's default, 15 s,
#: means a worker killed mid-trial takes up to 15 s of rows with it.
TRANSACTION_LOG_FLUSH_SECONDS = 1.0

#: wandb settings the callback's runs use unless the user sets them: no
#: banners, no console capture and no system metrics (a worker would describe
#: the driver's machine, not the trial's), no git or code scan of the cwd, and
#: the run file flushed every second.
QUIET_SETTINGS: dict[str, Any] = {
    "x_transaction_log_flush_interval": TRANSACTION_LOG_FLUSH_SECONDS,
    "silent": True,
    "console": "off",
    "x_disable_stats": True,
    "x_disable_machine_info": True,
    "disable_git": True,
    "save_code": False,
}

#: What the system-metrics switch turns back on.
SYSTEM_METRICS_SETTINGS: dict[str, Any] = {
    "console": "auto",
    "x_disable_stats": False,
    "x_disable_machine_info": False,
}


def resolve_project(project: str | None, environ: Mapping[str, str]) -> str | None:
    """The W&B project: the argument, else ``WANDB_PROJECT_NAME``, else ``WANDB_PROJECT``.

    None means wandb's own default project.

    Example:
        >>> resolve_project(None, {"WANDB_PROJECT": "p"})
        'p'
    """
    if project:
        return project
    for name in PROJECT_ENV_VARS:
        if environ.get(name):
            return environ[name]
    return None


def resolve_group(group: str | None, environ: Mapping[str, str], experiment_name: str) -> str:
    """The W&B group: the argument, else ``WANDB_GROUP_NAME``, else the experiment's name.

    Example:
        >>> resolve_group(None, {}, "train_2026-11-28_08-00-00")
        'train_2026-11-28_08-00-00'
    """
    return group or environ.get(GROUP_ENV_VAR) or experiment_name


def run_id(trial_id: str, experiment_name: str, token: str) -> str:
    """A W&B run id for a trial: the trial id and a 6-hex-digit experiment suffix.

    A Tune trial id carries only 20 random bits per experiment; with resume
    on, runs of two experiments in one project could merge. The suffix is a
    hash of the experiment's name and of a token drawn when the experiment
    first started and kept in its saved state, so ``Tuner.restore`` gives the
    same ids again.

    Example:
        >>> run_id("a1b2c_00001", "exp", "token")
        'a1b2c_00001-0ce962'
    """
    digest = hashlib.sha256(f"{experiment_name}\0{token}".encode()).hexdigest()
    return f"{trial_id}-{digest[:6]}"


def offline_or_disabled(init_kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """Whether runs will need no key: ``mode`` offline/disabled, or ``WANDB_MODE`` so."""
    mode = init_kwargs.get("mode") or environ.get("WANDB_MODE")
    return mode in ("offline", "disabled", "dryrun")


def read_api_key(api_key_file: str | None, api_key: str | None) -> str | None:
    """The key given to the integration: ``api_key``, or the first line of ``api_key_file``.

    Raises:
        ValueError: both were given, or the file holds no key.
        FileNotFoundError: the file does not exist.
    """
    if api_key_file and api_key:
        raise ValueError(
            "Pass either api_key_file or api_key to tune-wandb, not both: "
            "drop api_key and keep the key in the file."
        )
    if api_key:
        return api_key
    if not api_key_file:
        return None
    path = Path(api_key_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"The W&B API key file {str(path)!r} does not exist. Create it with your key "
            "from https://wandb.ai/authorize on its first line, or set WANDB_API_KEY."
        ) from None
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not key:
        raise ValueError(
            f"The W&B API key file {str(path)!r} is empty: put your key on its first line."
        )
    return key


#: Driver variables a worker never gets: the key (it travels in memory and
#: reaches wandb through its settings), and the process-wide sweep id, which
#: makes ``wandb.init`` ignore the run's project, entity and id (a run joins
#: a sweep through its own ``settings.sweep_id``).
_NOT_FOR_WORKERS = frozenset({API_KEY_ENV_VAR, "WANDB_SWEEP_ID"})


def wandb_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's ``WANDB_*`` variables for a worker, the API key and sweep id left out.

    Example:
        >>> wandb_env({"WANDB_PROJECT": "p", "WANDB_SWEEP_ID": "s", "HOME": "/root"})
        {'WANDB_PROJECT': 'p'}
    """
    return {
        k: v for k, v in environ.items() if k.startswith("WANDB_") and k not in _NOT_FOR_WORKERS
    }


def merge_settings(user: Any, log_system_metrics: bool, *, quiet: bool = True) -> dict[str, Any]:
    """The wandb settings of a callback's run: quiet defaults, then the user's own.

    ``user`` is what the user passed as ``settings=`` (a ``wandb.Settings``, a
    dict or None); only the fields the user set override the defaults. A
    default the installed ``wandb.Settings`` lacks is left out. With
    ``quiet=False``, only the user's fields are returned.
    """
    merged = dict(QUIET_SETTINGS) if quiet else {}
    if log_system_metrics:
        merged.update(SYSTEM_METRICS_SETTINGS)
    # Our defaults only where the installed wandb has them (private ones come
    # and go between releases); the user's own are left for wandb to check.
    merged = {name: value for name, value in merged.items() if _wandb_compat.has_setting(name)}
    if user is None:
        return merged
    if isinstance(user, Mapping):
        merged.update(user)
        return merged
    fields_set = getattr(user, "model_fields_set", None)
    if fields_set is None:
        raise TypeError(f"settings must be a wandb.Settings or a dict, not {type(user).__name__}")
    merged.update({name: getattr(user, name) for name in fields_set})
    return merged


def experiment_token() -> str:
    """A fresh random token for a new experiment's run-id suffix."""
    return os.urandom(8).hex()


#: Keys of a trial's ``"wandb"`` config entry that configure the integration
#: itself; every other key goes to ``wandb.init``.
INTEGRATION_KEYS = frozenset({"api_key_file", "api_key", "excludes", "log_config"})

#: The entry's spellings from Ray's old integration, and the ``wandb.init`` names.
_ENTRY_ALIASES = {"run_id": "id", "run_name": "name"}


def split_entry(entry: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a trial's ``"wandb"`` config entry: (integration options, ``wandb.init`` kwargs).

    ``run_id`` and ``run_name`` are the old integration's names for ``id`` and
    ``name``.

    Example:
        >>> split_entry({"project": "p", "api_key_file": "~/k", "run_name": "a"})
        ({'api_key_file': '~/k'}, {'project': 'p', 'name': 'a'})

    Raises:
        TypeError: the entry is not a dict.
    """
    if entry is None:
        return {}, {}
    if not isinstance(entry, Mapping):
        raise TypeError(
            f'The "wandb" entry of a Tune config must be a dict of wandb.init arguments, '
            f"not {type(entry).__name__}: write config={{'wandb': {{'project': ...}}}}."
        )
    options: dict[str, Any] = {}
    init_kwargs: dict[str, Any] = {}
    for raw_key, value in entry.items():
        key = str(raw_key)
        if key in INTEGRATION_KEYS:
            options[key] = value
        else:
            init_kwargs[_ENTRY_ALIASES.get(key, key)] = value
    return options, init_kwargs


def load_hook(path: str) -> Any:
    """The function a hook variable names, as ``package.module.function``.

    Example:
        >>> load_hook("os.path.join")("a", "b")
        'a/b'

    Raises:
        ValueError: the name has no module part.
    """
    import importlib

    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"a hook is named as package.module.function, not {path!r}")
    return getattr(importlib.import_module(module), name)


def base_url(settings: Mapping[str, Any] | None, environ: Mapping[str, str]) -> str:
    """The W&B server runs talk to: ``settings["base_url"]``, ``WANDB_BASE_URL`` or W&B's.

    Example:
        >>> base_url(None, {"WANDB_BASE_URL": "http://127.0.0.1:8080"})
        'http://127.0.0.1:8080'
    """
    url = (settings or {}).get("base_url") or environ.get("WANDB_BASE_URL")
    return str(url or "https://api.wandb.ai")


def unknown_init_kwargs(kwargs: Mapping[str, Any]) -> dict[str, str | None]:
    """The names in ``kwargs`` ``wandb.init`` does not take, each with a likely meant name.

    Example:
        >>> unknown_init_kwargs({"projet": "p", "group": "g"})
        {'projet': 'project'}
    """
    import difflib

    known = _wandb_compat.init_parameters()
    if known is None:
        return {}
    out: dict[str, str | None] = {}
    for name in kwargs:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            out[name] = close[0] if close else None
    return out


def drop_unknown_init_kwargs(kwargs: dict[str, Any]) -> dict[str, str | None]:
    """Take the names ``wandb.init`` does not take out of ``kwargs``; returns them.

    Example:
        >>> kwargs = {"grup": "g", "notes": "n"}
        >>> drop_unknown_init_kwargs(kwargs), kwargs
        ({'grup': 'group'}, {'notes': 'n'})
    """
    unknown = unknown_init_kwargs(kwargs)
    for name in unknown:
        del kwargs[name]
    return unknown


def describe_unknown(unknown: Mapping[str, str | None]) -> str:
    """``'projet' (did you mean 'project'?)``, for messages."""
    return ", ".join(
        f"{name!r}" + (f" (did you mean {meant!r}?)" if meant else "")
        for name, meant in unknown.items()
    )


#: Where :func:`find_api_key` says a key stored by ``wandb login`` came from.
LOGIN_ORIGIN = "`wandb login` (~/.netrc)"


def find_api_key(
    api_key_file: str | None, api_key: str | None, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """The API key and where it came from, or None when there is none.

    In order: ``api_key`` or ``api_key_file``, ``WANDB_API_KEY``, the key of
    ``wandb login`` (its origin is :data:`LOGIN_ORIGIN`).

    Raises:
        ValueError: both ``api_key`` and ``api_key_file``, or an empty file.
        FileNotFoundError: ``api_key_file`` does not exist.
    """
    key = read_api_key(api_key_file, api_key)
    if key:
        return key, (f"api_key_file {api_key_file!r}" if api_key_file else "api_key")
    if environ.get(API_KEY_ENV_VAR):
        return environ[API_KEY_ENV_VAR], API_KEY_ENV_VAR
    stored = netrc_key(environ)
    if stored:
        return stored, LOGIN_ORIGIN
    return None


def netrc_key(environ: Mapping[str, str]) -> str | None:
    """The key ``wandb login`` stored for the W&B host in ``~/.netrc``, or None.

    Read without importing wandb, which the driver never needs.
    """
    import netrc
    from urllib.parse import urlparse

    host = urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        entry = netrc.netrc().authenticators(host) if host else None
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry and entry[2] else None
