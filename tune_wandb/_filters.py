"""What of a Tune result goes to W&B, and where: the filters.

Everything here is a pure function of its arguments, run on the Tune driver
for every result, so it is written for speed: no wandb import, no copying of
values, one pass over the keys. The only exception is :func:`arrays_to_media`,
which the worker runs to turn image and video arrays into wandb media (building
media costs far more than the driver may spend on a result).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Result keys that are Tune's bookkeeping, never logged anywhere.
NEVER_LOGGED = frozenset({"done", "should_checkpoint", "checkpoint_dir_name"})

#: Result keys saved in the run config instead of the run history, as Ray's
#: own integration does: they describe the trial, they are not metrics.
AUTO_CONFIG_KEYS = (
    "trial_id",
    "experiment_tag",
    "node_ip",
    "experiment_id",
    "hostname",
    "pid",
    "date",
)
_AUTO_CONFIG = frozenset(AUTO_CONFIG_KEYS)

#: The config entry that configures the integration itself; it may hold an API
#: key, so it is never logged.
WANDB_CONFIG_KEY = "wandb"

#: Config entries that hold Tune machinery rather than hyperparameters.
_CONFIG_DROPPED = frozenset({WANDB_CONFIG_KEY, "callbacks"})

_PLAIN_NUMBERS = (int, float, bool)
_PLAIN_SCALARS = frozenset({int, float, bool, str})
_MEDIA_DIMS = (3, 4, 5)


@dataclass(frozen=True)
class Rules:
    """How results are filtered for one trial.

    Args:
        excludes: keys dropped from history and config, by exact flattened name
            (``"a/b"``) or by ``"/"``-prefix (``"a"`` drops ``"a/b"``).
        log_config: whether the result's ``config`` dict updates the run config.
    """

    excludes: tuple[str, ...] = ()
    log_config: bool = False
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_exact", frozenset(self.excludes))
        object.__setattr__(self, "_prefixes", tuple(f"{e}/" for e in self.excludes))

    def excluded(self, key: str) -> bool:
        """Whether ``key`` (flattened with ``"/"``) is excluded."""
        return key in self._exact or (bool(self._prefixes) and key.startswith(self._prefixes))


@dataclass
class Split:
    """One result, split for W&B.

    Attributes:
        history: the row for ``wandb.log``: numbers, size-1 arrays as Python
            scalars, wandb media, and image/video arrays for the worker to build.
        config: run config entries from this result (Tune's trial facts, and the
            trial config when ``log_config`` is on).
        dropped: flattened keys whose values cannot be logged as history.
    """

    history: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def as_excludes(excludes: Any) -> tuple[str, ...]:
    """The ``excludes`` option as a tuple of keys.

    Example:
        >>> as_excludes(["a", "b/c"])
        ('a', 'b/c')

    Raises:
        TypeError: a single string (a common slip for a one-key list) or not a list.
    """
    if isinstance(excludes, (str, bytes)) or not isinstance(excludes, Iterable):
        raise TypeError(f"excludes must be a list of result keys, not {excludes!r}")
    return tuple(str(e) for e in excludes)


def is_wandb_media(value: object) -> bool:
    """Whether ``value`` is a wandb data type, told without importing wandb."""
    return type(value).__module__.startswith("wandb.")


def history_value(value: object) -> tuple[bool, Any]:  # noqa: PLR0911 - one return per kind
    """Decide whether ``value`` can go into a history row, and in what form.

    Returns ``(True, value_to_log)`` or ``(False, None)``. Kept: numbers
    (including NaN and infinities), bools, numpy scalars, size-1 numeric arrays
    (as Python scalars), arrays of 3, 4 or 5 dims (images and videos, built by
    the worker), wandb media and non-empty sequences of wandb media.
    """
    if type(value) in _PLAIN_NUMBERS:
        return True, value
    if isinstance(value, np.ndarray):
        if value.size == 1 and value.dtype.kind in "biuf":
            return True, value.item()
        if value.ndim in _MEDIA_DIMS and value.size > 0 and value.dtype.kind in "biuf":
            return True, value
        return False, None
    if isinstance(value, (numbers.Number, np.bool_)) and not isinstance(value, complex):
        if isinstance(value, np.generic):
            return True, value.item()
        return True, value
    if is_wandb_media(value):
        return True, value
    if (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) > 0
        and is_wandb_media(value[0])
    ):
        return True, list(value)
    return False, None


def flatten(mapping: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings, joining keys with ``"/"`` (keys made ``str``)."""
    out: dict[str, Any] = {}
    _flatten_into(out, mapping, prefix)
    return out


def _flatten_into(out: dict[str, Any], mapping: Mapping[Any, Any], prefix: str) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten_into(out, value, f"{name}/")
        else:
            out[name] = value


def split_result(result: Mapping[str, Any], rules: Rules) -> Split:
    """Split one Tune result into a history row and run-config entries.

    Args:
        result: the result dict Tune passes to ``log_trial_result``.
        rules: the trial's filtering rules.

    Example:
        >>> s = split_result({"loss": 0.5, "done": False, "pid": 7, "msg": "hi"}, Rules())
        >>> s.history, s.config, s.dropped
        ({'loss': 0.5}, {'pid': 7}, ['msg'])
    """
    split = Split()
    history, config, dropped = split.history, split.config, split.dropped
    excluded = rules.excluded
    for raw_key, value in result.items():
        key = str(raw_key)
        if key in NEVER_LOGGED or excluded(key):
            continue
        if key == "config":
            if rules.log_config and isinstance(value, Mapping):
                config.update(clean_config(value, rules.excludes))
            continue
        if key in _AUTO_CONFIG:
            config[key] = _config_value(value)
            continue
        if isinstance(value, Mapping):
            for sub, subvalue in flatten(value, f"{key}/").items():
                if excluded(sub):
                    continue
                _add_history(history, dropped, sub, subvalue)
            continue
        _add_history(history, dropped, key, value)
    return split


def _add_history(history: dict[str, Any], dropped: list[str], key: str, value: object) -> None:
    keep, logged = history_value(value)
    if keep:
        history[key] = logged
    else:
        dropped.append(key)


_SKIP, _HISTORY, _AUTO, _CONFIG = range(4)
_MISSING = object()


class Splitter:
    """:func:`split_result` for one trial's stream of results, made cheap.

    It remembers where each key goes (keys repeat from result to result) and
    which config entries it has already sent, so that a typical result costs
    one dict lookup and one type check per key. ``split`` returns the history
    row, the config entries that changed since the last result (None if
    none), and the dropped keys (None if none). Its rows equal
    :func:`split_result`'s; its config updates, merged, equal them too.

    Example:
        >>> splitter = Splitter(Rules())
        >>> splitter.split({"loss": 0.5, "pid": 7})
        ({'loss': 0.5}, {'pid': 7}, None)
        >>> splitter.split({"loss": 0.4, "pid": 7})
        ({'loss': 0.4}, None, None)
    """

    __slots__ = ("_keys", "_last_config", "_plan", "_sent", "_sent_raw", "rules")

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._keys: tuple[Any, ...] = ()
        self._plan: tuple[int, ...] = ()
        self._sent: dict[str, Any] = {}
        self._sent_raw: dict[str, Any] = {}
        self._last_config: Any = _MISSING

    def _route(self, key: str) -> int:
        rules = self.rules
        if key in NEVER_LOGGED or rules.excluded(key):
            route = _SKIP
        elif key == "config":
            route = _CONFIG if rules.log_config else _SKIP
        elif key in _AUTO_CONFIG:
            route = _AUTO
        else:
            route = _HISTORY
        return route

    def split(
        self, result: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None, list[str] | None]:
        """Split one result; see the class docstring."""
        history: dict[str, Any] = {}
        config: dict[str, Any] = {}
        dropped: list[str] = []
        keys = tuple(result)
        if keys != self._keys:
            # Results of a trial nearly always carry the same keys in the same
            # order: route them once, then walk the plan beside the values.
            self._keys = keys
            self._plan = tuple(self._route(k if type(k) is str else str(k)) for k in keys)
        sent_raw = self._sent_raw
        for key, route, value in zip(keys, self._plan, result.values(), strict=True):
            if route == _HISTORY:
                kind = type(value)
                if kind is float or kind is int or kind is bool:
                    history[key] = value
                elif isinstance(value, Mapping):
                    excluded = self.rules.excluded
                    for sub, subvalue in flatten(value, f"{key}/").items():
                        if not excluded(sub):
                            _add_history(history, dropped, sub, subvalue)
                else:
                    _add_history(history, dropped, str(key), value)
            elif route == _AUTO:
                last = sent_raw.get(key, _MISSING)
                if type(last) is type(value) and type(value) in _PLAIN_SCALARS and last == value:
                    continue
                sent_raw[key] = value
                self._changed(config, key, _config_value(value))
            elif route == _CONFIG and isinstance(value, Mapping) and self._config_moved(value):
                for name, entry in clean_config(value, self.rules.excludes).items():
                    self._changed(config, name, entry)
        return history, config or None, dropped or None

    def _changed(self, config: dict[str, Any], key: str, value: Any) -> None:
        try:
            same = self._sent.get(key, _MISSING) == value
        except Exception:
            same = False
        if same is not True:
            config[key] = value
            self._sent[key] = value

    def _config_moved(self, value: Mapping[str, Any]) -> bool:
        # Tune hands over the same trial config for result after result; only a
        # config that changed (PBT) is cleaned and compared entry by entry.
        try:
            moved = value is not self._last_config and value != self._last_config
        except Exception:
            moved = True
        if moved:
            # A copy, so that a config changed in place still compares unequal.
            try:
                self._last_config = copy.deepcopy(value)
            except Exception:
                self._last_config = value
        return bool(moved)


def clean_config(config: Mapping[Any, Any], excludes: Sequence[str] = ()) -> dict[str, Any]:
    """The trial config as it is logged to W&B.

    Drops the ``"wandb"`` entry (it may hold an API key) and Tune's
    ``"callbacks"``, drops ``excludes`` (exact keys or ``"/"``-prefixes of the
    flattened names), and replaces every value that is not plain data (numbers,
    strings, None, numpy values, and lists, tuples and dicts of those) by its
    ``repr``, so that functions, classes, locks or open files in a config can
    neither break pickling nor reach W&B as objects.

    Example:
        >>> clean_config({"lr": 0.1, "wandb": {"api_key": "k"}, "fn": len})
        {'lr': 0.1, 'fn': '<built-in function len>'}
    """
    rules = Rules(excludes=tuple(excludes))
    return {
        str(k): _config_value(v, f"{k}/", rules)
        for k, v in config.items()
        if k not in _CONFIG_DROPPED and not rules.excluded(str(k))
    }


def _config_value(value: Any, prefix: str = "", rules: Rules | None = None) -> Any:  # noqa: PLR0911
    if value is None or type(value) in (int, float, bool, str):
        return value
    if isinstance(value, Mapping):
        return {
            str(k): _config_value(v, f"{prefix}{k}/", rules)
            for k, v in value.items()
            if rules is None or not rules.excluded(f"{prefix}{k}")
        }
    if isinstance(value, (list, tuple)):
        return [_config_value(v, prefix, rules) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 1024 and value.dtype.kind in "biufU":
        return value.tolist()
    if isinstance(value, (numbers.Number, str)) and not isinstance(value, complex):
        return value
    return repr(value)


def arrays_to_media(
    history: dict[str, Any],
    image_kwargs: Mapping[str, Any] | None = None,
    video_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Exception]:
    """Turn the image and video arrays of a history row into wandb media, in place.

    Runs in the worker. A 3-dim array becomes a ``wandb.Image``, a 4-dim one a
    list of images (one image when N = 1), a 5-dim one a list of videos (one
    video when N = 1). Returns the keys whose media could not be built, with
    the reason; they are removed from the row.
    """
    import wandb

    failed: dict[str, Exception] = {}
    for key, value in history.items():
        if not isinstance(value, np.ndarray):
            continue
        try:
            history[key] = _media(wandb, value, image_kwargs or {}, video_kwargs or {})
        except Exception as exc:
            failed[key] = exc
    for key in failed:
        del history[key]
    return failed


def _media(
    wandb: Any, array: np.ndarray, image_kwargs: Mapping[str, Any], video_kwargs: Mapping[str, Any]
) -> Any:
    if array.ndim == 3:
        return wandb.Image(array, **image_kwargs)
    if array.ndim == 4:
        images = [wandb.Image(a, **image_kwargs) for a in array]
        return images[0] if len(images) == 1 else images
    if array.ndim == 5:
        # wandb 0.31 wants a format for a video made from an array; Ray's
        # callback passed none, so GIF (wandb's old default) unless one is given.
        video_kwargs = {"format": "gif", **video_kwargs}
        videos = [wandb.Video(a, **video_kwargs) for a in array]
        return videos[0] if len(videos) == 1 else videos
    raise ValueError(f"no wandb media for a {array.ndim}-dim array")
