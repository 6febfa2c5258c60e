"""A trial's run as ``wandb.init`` takes it, and its API key: built one way for every path.

The callback (for the worker it starts) and the mixins and ``setup_wandb``
(in the trial's own process) start the same kind of run: named and grouped
by Tune, configured by the trial's ``"wandb"`` config entry, written in the
trial's directory, resumed under the same id. :func:`trial_run` builds its
``wandb.init`` arguments and :func:`find_key` finds its key, for both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tune_wandb import _filters, _settings

#: A further place to look for a key: its name for messages, and a function
#: that returns the key or None.
KeySource = tuple[str, Callable[[], str | None]]


@dataclass(frozen=True)
class TrialRun:
    """What :func:`trial_run` builds.

    Attributes:
        init_kwargs: the ``wandb.init`` keyword arguments, ``settings`` a dict.
        options: the entry's keys that configure tune-wandb itself
            (``api_key_file``, ``api_key``, ``excludes``, ``log_config``).
        excludes: the result keys left out.
        unknown: entry keys ``wandb.init`` does not take, left out, each with
            the name likely meant.
        cut_tags: tags W&B would refuse (over 64 characters), each cut to
            its first 64 characters in ``init_kwargs["tags"]``.
    """

    init_kwargs: dict[str, Any]
    options: dict[str, Any]
    excludes: tuple[str, ...]
    unknown: dict[str, str | None]
    cut_tags: tuple[str, ...] = ()


#: The longest tag W&B takes (``wandb.Settings`` refuses longer ones).
MAX_TAG_LENGTH = 64


def merge_tags(*layers: Any) -> tuple[list[str] | None, tuple[str, ...]]:
    """The run's tags: every layer's, in order, each once; and the tags that were cut.

    A layer is a list of tags, a single tag (a string, or any other value
    that is not a list) or None. Tags are made strings; empty ones are left
    out, and ones longer than :data:`MAX_TAG_LENGTH` cut to it (W&B refuses
    both, which would cost the trial its run). None when no layer has tags.

    Example:
        >>> merge_tags(["ray", "tune"], "lr=0.1", None, ["tune", ""])
        (['ray', 'tune', 'lr=0.1'], ())
        >>> merge_tags(None, None)
        (None, ())
    """
    if all(layer is None for layer in layers):
        return None, ()
    tags: dict[str, None] = {}
    cut: list[str] = []
    for layer in layers:
        if layer is None:
            continue
        single = isinstance(layer, (str, bytes)) or not isinstance(layer, Iterable)
        values = [layer] if single else layer
        for value in values:
            tag = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if len(tag) > MAX_TAG_LENGTH:
                cut.append(tag)
                tag = tag[:MAX_TAG_LENGTH]
            if tag:
                tags[tag] = None
    return list(tags), tuple(cut)


def trial_run(
    *,
    trial_id: str,
    name: str,
    experiment: str,
    token: str,
    config: Mapping[str, Any],
    run_root: str,
    settings: Mapping[str, Any],
    group: str | None = None,
    default_group: str | None = None,
    project: str | None = None,
    excludes: Iterable[str] = (),
    layers: Iterable[Mapping[str, Any]] = (),
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> TrialRun:
    """The ``wandb.init`` arguments of a trial's run, and the entry's own options.

    tune-wandb's choices first: the id (the trial id and a suffix of the
    experiment and ``token``), the name, the group (``group``, else
    ``WANDB_GROUP_NAME``, else ``default_group``, else the experiment), the project (``project``,
    else ``WANDB_PROJECT_NAME``, else ``WANDB_PROJECT``), the config (the
    trial's, its ``"wandb"`` entry and ``excludes`` left out), the directory,
    resume. Then each of ``layers`` in order (the callback's own keyword
    arguments, say), then the trial's ``"wandb"`` entry, then ``overrides``
    (``setup_wandb``'s own arguments): each wins over what came before,
    except ``tags``, which add up (see :func:`merge_tags`).
    ``settings`` start from ``settings`` and take each layer's set fields in
    the same order.

    Example:
        >>> run = trial_run(trial_id="a_00001", name="train_a_00001", experiment="exp",
        ...                 token="t", config={"lr": 0.1, "wandb": {"project": "p"}},
        ...                 run_root="/tmp/exp/a", settings={}, environ={})
        >>> run.init_kwargs["id"], run.init_kwargs["project"], run.init_kwargs["config"]
        ('a_00001-0da4d9', 'p', {'lr': 0.1})
    """
    options, entry_kwargs = _settings.split_entry(_filters.wandb_entry(config))
    unknown = _settings.drop_unknown_init_kwargs(entry_kwargs)
    excludes = _filters.as_excludes(options.get("excludes", excludes))
    init_kwargs: dict[str, Any] = {
        "id": _settings.run_id(trial_id, experiment, token),
        "name": name,
        "group": _settings.resolve_group(group, environ, default_group or experiment),
        "config": _filters.clean_config(config, excludes),
        "dir": run_root,
        "resume": "allow",
        "allow_val_change": True,
    }
    resolved_project = _settings.resolve_project(project, environ)
    if resolved_project is not None:
        init_kwargs["project"] = resolved_project
    merged_settings = dict(settings)
    all_layers = (*layers, entry_kwargs, overrides or {})
    for layer in all_layers:
        init_kwargs.update(layer)
        if layer.get("settings") is not None:
            merged_settings.update(_settings.merge_settings(layer["settings"], False, quiet=False))
    init_kwargs["settings"] = merged_settings
    # Tags add up (the callback's, then the trial's own) where other keys override.
    tags, cut = merge_tags(*(layer.get("tags") for layer in all_layers))
    if tags is not None:
        init_kwargs["tags"] = tags
    return TrialRun(init_kwargs, options, excludes, unknown, cut)


@dataclass(frozen=True)
class FoundKey:
    """An API key and where it came from.

    Attributes:
        key: the key.
        origin: where it was found, for messages (never the key itself).
        for_wandb: what to give wandb: the key, or None when ``wandb login``
            stored it (wandb reads it there itself).
    """

    key: str
    origin: str

    @property
    def for_wandb(self) -> str | None:
        """The key to pass to wandb's settings; None if wandb finds it in its login."""
        return None if self.origin == _settings.LOGIN_ORIGIN else self.key


def find_key(
    api_key_file: str | None,
    api_key: str | None,
    *,
    more: Iterable[KeySource] = (),
    missing_file_ok: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> FoundKey | None:
    """The key of a run, or None if no place has one.

    In order: ``api_key`` or ``api_key_file``, ``WANDB_API_KEY``, ``wandb
    login``, then each of ``more``.

    With ``missing_file_ok`` (a node other than the driver's, where the file
    may not exist), a missing ``api_key_file`` lets the other places answer.

    Example:
        >>> find_key(None, None, environ={"WANDB_API_KEY": "k" * 40}).origin
        'WANDB_API_KEY'

    Raises:
        ValueError: both ``api_key`` and ``api_key_file``, or an empty file.
        FileNotFoundError: ``api_key_file`` does not exist (unless ``missing_file_ok``).
    """
    try:
        found = _settings.find_api_key(api_key_file, api_key, environ)
    except FileNotFoundError:
        if not missing_file_ok:
            raise
        found = _settings.find_api_key(None, None, environ)
    if found is not None:
        return FoundKey(*found)
    for origin, get in more:
        key = get()
        if key:
            return FoundKey(key, origin)
    return None
