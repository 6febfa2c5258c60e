"""What of a Tune result goes to W&B, and where: the filters.

Everything here is a pure function of its arguments, run on the Tune driver
for every result, so it is written for speed: no wandb import, no copying of
values, one pass over the keys. Plain numbers take the fast path; every other
kind of value is looked at only after it, and whatever it is, it either gets
a form that pickles and that wandb takes (see docs/bad-input.md) or is
reported as dropped: nothing a user reports raises here. The only exception to
"no wandb" is :func:`arrays_to_media`, which the worker runs to turn arrays
into wandb media and histograms (that costs far more than the driver may
spend on a result).
"""

from __future__ import annotations

import copy
import datetime
import enum
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Result keys that are Tune's bookkeeping, never logged anywhere.
NEVER_LOGGED = frozenset({"done", "should_checkpoint", "checkpoint_dir_name"})

#: Tune's step counters, which W&B charts use as their x-axis: logged even
#: when ``metrics`` leaves them out (Tune's TensorBoard and MLflow loggers use
#: them as the step too). ``excludes`` still drops them.
X_AXIS_KEYS = ("training_iteration", "timesteps_total")

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

#: The run-config key of the trial's directory, which Ray's callback adds to its runs.
TRIAL_LOG_PATH = "trial_log_path"

#: RLlib's config entry for logger settings; Ray 1.x's ``WandbLogger`` read its
#: ``"wandb"`` entry there too, and logged neither.
LOGGER_CONFIG_KEY = "logger_config"

#: Config entries that hold Tune machinery rather than hyperparameters.
_CONFIG_DROPPED = frozenset({WANDB_CONFIG_KEY, "callbacks"})


def wandb_entry(config: Mapping[str, Any]) -> Any:
    """The trial config's ``"wandb"`` entry, else RLlib's ``config["logger_config"]["wandb"]``.

    Example:
        >>> wandb_entry({"logger_config": {"wandb": {"project": "PPO"}}})
        {'project': 'PPO'}
    """
    entry = config.get(WANDB_CONFIG_KEY)
    if entry is None:
        logger_config = config.get(LOGGER_CONFIG_KEY)
        if isinstance(logger_config, Mapping):
            entry = logger_config.get(WANDB_CONFIG_KEY)
    return entry


def _dropped_from_config(name: str, value: Any) -> bool:
    # RLlib's logger_config goes whole when it holds the "wandb" entry, as in Ray 1.x.
    return name in _CONFIG_DROPPED or (
        name == LOGGER_CONFIG_KEY and isinstance(value, Mapping) and WANDB_CONFIG_KEY in value
    )


_PLAIN_SCALARS = frozenset({int, float, bool, str})
#: Values that are JSON as they are: logged unchanged, inside lists too.
_JSON_SCALARS = frozenset({int, float, bool, str, complex, type(None)})
_MEDIA_DIMS = (3, 4, 5)
#: wandb stores an array of at most this many elements as a list, a larger
#: one as a histogram of this many bins.
HISTOGRAM_ABOVE = 32
#: How deep nested dicts and lists are followed; deeper (a dict that holds
#: itself) is not loggable. Results nest a few levels at most.
_MAX_DEPTH = 64
#: Arrays in a config up to this size are kept as lists; larger ones as a repr.
_CONFIG_ARRAY_SIZE = 1024
#: The address in a default repr ("<Foo object at 0x7f...>"): it differs from
#: run to run, so configs holding the same object would never compare equal.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_NO = object()


class _UnloggableError(Exception):
    """Internal: a value that has no history form."""


@dataclass(frozen=True)
class Rules:
    """How results are filtered for one trial.

    Args:
        excludes: keys dropped from history and config, by exact flattened name
            (``"a/b"``) or by ``"/"``-prefix (``"a"`` drops ``"a/b"``).
        log_config: whether the result's ``config`` dict updates the run config.
        metrics: the history keys logged, matched as ``excludes`` are (None:
            all of them); :data:`X_AXIS_KEYS` are logged whatever it says.
            It leaves the run config alone; ``excludes`` wins over it.

    Example:
        >>> rules = Rules(metrics=("eval/loss",))
        >>> rules.logs_metric("eval/loss"), rules.logs_metric("eval/acc")
        (True, False)
        >>> rules.logs_metric("training_iteration"), rules.may_hold_metric("eval")
        (True, True)
    """

    excludes: tuple[str, ...] = ()
    log_config: bool = False
    metrics: tuple[str, ...] | None = None
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _included: frozenset[str] = field(init=False, repr=False, compare=False)
    _included_prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _parents: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_exact", frozenset(self.excludes))
        object.__setattr__(self, "_prefixes", tuple(f"{e}/" for e in self.excludes))
        metrics = self.metrics or ()
        object.__setattr__(self, "_included", frozenset((*metrics, *X_AXIS_KEYS)))
        object.__setattr__(self, "_included_prefixes", tuple(f"{m}/" for m in metrics))
        # "a" and "a/b" for "a/b/c": results that nest it under dicts.
        parents = {m.rsplit("/", i)[0] for m in metrics for i in range(1, m.count("/") + 1)}
        object.__setattr__(self, "_parents", frozenset(parents))

    def excluded(self, key: str) -> bool:
        """Whether ``key`` (flattened with ``"/"``) is excluded."""
        return key in self._exact or (bool(self._prefixes) and key.startswith(self._prefixes))

    def logs_metric(self, key: str) -> bool:
        """Whether ``metrics`` lets the history key ``key`` (flattened) through."""
        if self.metrics is None or key in self._included:
            return True
        return bool(self._included_prefixes) and key.startswith(self._included_prefixes)

    def may_hold_metric(self, key: str) -> bool:
        """Whether a dict under ``key`` may hold a key that ``metrics`` lets through."""
        return self.logs_metric(key) or key in self._parents


@dataclass
class Split:
    """One result, split for W&B.

    Attributes:
        history: the row for ``wandb.log``: numbers, strings, None, lists,
            size-1 arrays as Python scalars, other numeric arrays (image and
            video arrays for the worker to build), and wandb media; see
            :func:`history_value`.
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


def as_metrics(metrics: Any) -> tuple[str, ...] | None:
    """The ``metrics`` option as a tuple of keys, or None (every metric).

    Example:
        >>> as_metrics(["loss", "eval/acc"]), as_metrics(None)
        (('loss', 'eval/acc'), None)

    Raises:
        TypeError: a single string (a common slip for a one-key list) or not a list.
    """
    if metrics is None:
        return None
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Iterable):
        raise TypeError(f"metrics must be a list of result keys (or None for all), not {metrics!r}")
    return tuple(str(m) for m in metrics)


def is_wandb_media(value: object) -> bool:
    """Whether ``value`` is a wandb data type, told without importing wandb."""
    return type(value).__module__.startswith("wandb.")


def history_value(value: object) -> tuple[bool, Any]:
    """Decide whether ``value`` can go into a history row, and in what form.

    Returns ``(True, value_to_log)`` or ``(False, None)``; never raises. Kept
    as they are: numbers (NaN and infinities too), bools, strings, None,
    complex numbers, wandb media and lists of media. Converted: NumPy scalars
    and size-1 arrays to Python scalars; other numeric arrays stay arrays
    (images and videos for the worker, the rest for wandb: a list up to
    :data:`HISTOGRAM_ABOVE` elements, a histogram above); arrays of strings,
    objects, datetimes or complex numbers to lists; lists, tuples and sets of
    such values to lists; tensors (``.detach().cpu().numpy()``) and other
    array-likes (``__array__``) to arrays; ``Decimal`` and ``Fraction`` to
    float; dates and times to ISO strings; ``timedelta`` to seconds; enum
    members to their name; bytes to text; paths to strings. Anything else
    (functions, classes, locks, generators, files, other objects) is not
    loggable. See docs/bad-input.md.

    Example:
        >>> history_value(np.float32(0.5)), history_value("warmup")
        ((True, 0.5), (True, 'warmup'))
        >>> history_value((1, np.int64(2))), history_value(len)
        ((True, [1, 2]), (False, None))
    """
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True, value
    try:
        return True, _history_form(value)
    except Exception:
        # _UnloggableError, or whatever a user's object raised while being
        # looked at: either way the value is reported as dropped.
        return False, None


def _history_form(value: Any) -> Any:  # noqa: PLR0911 - one return per kind
    if isinstance(value, np.ndarray):
        return _array_form(value)
    if isinstance(value, np.generic):
        kind = value.dtype.kind
        if kind in "biu":
            return value.item()
        if kind == "f":
            return float(value)  # item() keeps a longdouble a NumPy scalar
        return _array_form(np.asarray(value))
    if is_wandb_media(value):
        return value
    if isinstance(value, (list, tuple)):
        if value and is_wandb_media(value[0]):
            return list(value)
        return _json_list(value, 0)
    converted = _scalar_form(value)
    if converted is not _NO:
        return converted
    if isinstance(value, (set, frozenset)):
        return _json_list(value, 0)
    array = _as_array(value)
    if array is not None:
        return _array_form(array)
    raise _UnloggableError


def _seconds(durations: np.ndarray) -> np.ndarray:
    """Durations as float seconds, NaT as NaN, without overflow.

    NumPy's ``durations / np.timedelta64(1, "s")`` first converts days or
    weeks to integer seconds, which wraps past ~292 billion years and gives a
    huge negative number; counting in the array's own unit does not.
    """
    unit, step = np.datetime_data(durations.dtype)
    counts = durations.astype(np.int64).astype(np.float64) * step  # any byte order
    one = np.array(1, dtype=np.int64).astype(f"m8[{unit}]")
    per_second = float(np.timedelta64(1, "s") / one)
    # Dividing by a whole number of units per second, or multiplying by a
    # whole number of seconds per unit, rounds once, as NumPy's own division.
    if per_second >= 1:
        seconds = counts / per_second
    else:
        seconds = counts * float(one / np.timedelta64(1, "s"))
    return np.where(np.isnat(durations), np.nan, seconds)


def _array_form(array: np.ndarray) -> Any:
    if type(array) is not np.ndarray:
        array = np.asarray(array)  # subclasses (matrix, memmap) as plain arrays
    kind = array.dtype.kind
    if kind == "m":
        # Durations in seconds, as numbers (NaT becomes NaN); years and months
        # have no fixed length in seconds, so those are written out.
        unit, _ = np.datetime_data(array.dtype)
        if unit in ("Y", "M"):
            array, kind = array.astype(str), "U"
        else:
            array, kind = _seconds(array), "f"
    if kind in "biuf":
        if array.size == 1:
            item = array.item()
            return float(item) if kind == "f" else item
        if kind == "f" and array.dtype.itemsize > 8:
            return array.astype(np.float64)  # long doubles have no JSON or histogram form
        return array
    if kind == "M":
        array = np.datetime_as_string(array)
    if array.ndim == 0:
        return _json_leaf(array.item(), 0)
    # Strings, objects, complex numbers, records: what each element becomes.
    return _json_list(array.tolist(), 0)


def _json_list(values: Iterable[Any], depth: int) -> list[Any]:
    if depth > _MAX_DEPTH:
        raise _UnloggableError
    if isinstance(values, (set, frozenset)):
        values = _sorted(values)
    out = []
    for item in values:
        kind = type(item)
        if kind in _JSON_SCALARS:
            out.append(item)
        elif kind is list or kind is tuple:
            out.append(_json_list(item, depth + 1))
        else:
            out.append(_json_leaf(item, depth + 1))
    return out


def _json_leaf(value: Any, depth: int) -> Any:
    """An element of a list (or a 0-dim array) in a form wandb stores as JSON."""
    if type(value) in _JSON_SCALARS:
        return value
    if depth > _MAX_DEPTH:
        raise _UnloggableError
    if isinstance(value, (list, tuple, set, frozenset)):
        return _json_list(value, depth + 1)
    if isinstance(value, Mapping):
        return {_key_name(k): _json_leaf(v, depth + 1) for k, v in value.items()}
    converted = _scalar_form(value)
    if converted is not _NO:
        return converted
    array = _as_array(value)
    if array is None:
        raise _UnloggableError
    form = _array_form(array)
    return form.tolist() if isinstance(form, np.ndarray) else form


def _scalar_form(value: Any) -> Any:  # noqa: PLR0911 - one return per kind
    """A scalar's JSON-friendly form, or ``_NO``; wandb would store most as strings."""
    if isinstance(value, int):  # subclasses: IntEnum, IntFlag
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)  # the text itself, whatever __str__ a subclass has
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Number):
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) or not isinstance(value, numbers.Complex):
            return float(value)  # type: ignore[arg-type]  # Fraction, Decimal: plotted as numbers
        return complex(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        return path if isinstance(path, str) else path.decode("utf-8", "backslashreplace")
    return _NO


_TENSOR_METHODS = ("detach", "cpu", "numpy")


def _as_array(value: Any) -> np.ndarray | None:
    """A tensor or array-like as a NumPy array; None for anything else.

    Looked up on the type, so that an object's ``__getattr__`` is not called
    and a class is not taken for one of its instances. A tensor is told by
    ``detach``, ``cpu`` and ``numpy`` together: ``detach`` alone is also a
    method of text files, which it would break.
    """
    kind = type(value)
    if isinstance(value, type):
        return None
    if all(callable(getattr(kind, name, None)) for name in _TENSOR_METHODS):
        # A torch tensor (or alike), without importing torch.
        tensor = value.detach().cpu()
        try:
            return np.asarray(tensor.numpy())
        except Exception:
            # bfloat16 and other dtypes NumPy lacks.
            return np.asarray(tensor.float().numpy())
    if hasattr(kind, "__array__"):
        return np.asarray(value)
    return None


def _sorted(values: Iterable[Any]) -> list[Any]:
    try:
        return sorted(values)
    except Exception:
        return list(values)


def flatten(mapping: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings, joining keys with ``"/"`` (keys made ``str``).

    Mappings nested deeper than 64 levels (one that holds itself) are left as
    values. A key that comes twice (``{"a/b": 1, "a": {"b": 2}}``) keeps the
    later value.
    """
    out: dict[str, Any] = {}
    _flatten_into(out, mapping, prefix, 0)
    return out


def _flatten_into(out: dict[str, Any], mapping: Mapping[Any, Any], prefix: str, depth: int) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}" if type(key) is str else f"{prefix}{_key_name(key)}"
        if isinstance(value, Mapping) and depth < _MAX_DEPTH:
            _flatten_into(out, value, f"{name}/", depth + 1)
        else:
            out[name] = value


def _key_name(key: Any) -> str:
    """A result key as a string; never raises."""
    if type(key) is str:
        return key
    try:
        return str(key)
    except Exception:
        return f"<{type(key).__name__} key>"


def split_result(result: Mapping[str, Any], rules: Rules) -> Split:
    """Split one Tune result into a history row and run-config entries.

    Args:
        result: the result dict Tune passes to ``log_trial_result``.
        rules: the trial's filtering rules.

    Example:
        >>> s = split_result({"loss": 0.5, "done": False, "pid": 7, "fn": len}, Rules())
        >>> s.history, s.config, s.dropped
        ({'loss': 0.5}, {'pid': 7}, ['fn'])
    """
    split = Split()
    history, config, dropped = split.history, split.config, split.dropped
    excluded = rules.excluded
    for raw_key, value in result.items():
        key = _key_name(raw_key)
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
            if rules.may_hold_metric(key):
                _add_mapping(history, dropped, key, value, rules)
            continue
        if rules.logs_metric(key):
            _add_history(history, dropped, key, value)
    return split


def _add_history(history: dict[str, Any], dropped: list[str], key: str, value: object) -> None:
    keep, logged = history_value(value)
    if keep:
        history[key] = logged
    else:
        dropped.append(key)


def _add_mapping(
    history: dict[str, Any], dropped: list[str], key: str, value: Mapping[Any, Any], rules: Rules
) -> None:
    try:
        flat = flatten(value, f"{key}/")
    except Exception:
        # A mapping whose items() raises: its key is reported, the row goes on.
        dropped.append(key)
        return
    excluded = rules.excluded
    # Without metrics (the default) no call per key for them: this runs per result.
    logs_metric = None if rules.metrics is None else rules.logs_metric
    for sub, subvalue in flat.items():
        if not excluded(sub) and (logs_metric is None or logs_metric(sub)):
            _add_history(history, dropped, sub, subvalue)


#: Where a result key goes; _NESTED: only a dict under it is looked into
#: (``metrics`` names keys inside it, not the key itself).
_SKIP, _HISTORY, _AUTO, _CONFIG, _NESTED = range(5)
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

    __slots__ = ("_keys", "_last_config", "_names", "_plan", "_sent", "_sent_raw", "rules")

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._keys: tuple[Any, ...] = ()
        self._names: tuple[str, ...] = ()
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
        elif rules.logs_metric(key):
            route = _HISTORY
        elif rules.may_hold_metric(key):
            route = _NESTED
        else:
            route = _SKIP
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
            # Keys are made strings here, once (wandb takes no other keys).
            self._keys = keys
            self._names = tuple(_key_name(k) for k in keys)
            self._plan = tuple(self._route(k) for k in self._names)
        sent_raw = self._sent_raw
        for key, route, value in zip(self._names, self._plan, result.values(), strict=True):
            if route == _HISTORY:
                kind = type(value)
                if kind is float or kind is int or kind is bool:
                    history[key] = value
                elif isinstance(value, Mapping):
                    _add_mapping(history, dropped, key, value, self.rules)
                else:
                    _add_history(history, dropped, key, value)
            elif route == _AUTO:
                last = sent_raw.get(key, _MISSING)
                if type(last) is type(value) and type(value) in _PLAIN_SCALARS and last == value:
                    continue
                sent_raw[key] = value
                self._changed(config, key, _config_value(value))
            elif route == _NESTED and isinstance(value, Mapping):
                _add_mapping(history, dropped, key, value, self.rules)
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
    """The trial config as it is logged to W&B; never raises.

    Drops the ``"wandb"`` entry (it may hold an API key), RLlib's
    ``"logger_config"`` when it holds one, and Tune's ``"callbacks"``, drops
    ``excludes`` (exact keys or ``"/"``-prefixes of the flattened names), and
    keeps plain data (numbers, strings, None, NumPy values, arrays up to 1024
    elements, and lists, tuples, sets and dicts of those). Everything else
    becomes text, so that functions, classes, locks or open files in a config
    can neither break pickling nor reach W&B as objects: a function, class or
    method its ``module.qualname``, any other object its ``repr`` without the
    memory address (so that the same object gives the same text in every run).
    Dates, paths, enums, ``Decimal`` and tensors are converted as in the
    history (see :func:`history_value`).

    Example:
        >>> clean_config({"lr": 0.1, "wandb": {"api_key": "k"}, "fn": len, "cls": dict})
        {'lr': 0.1, 'fn': 'builtins.len', 'cls': 'builtins.dict'}
    """
    rules = Rules(excludes=tuple(excludes))
    cleaned = {}
    for k, v in config.items():
        name = _key_name(k)
        if not _dropped_from_config(name, v) and not rules.excluded(name):
            cleaned[name] = _config_value(v, f"{name}/", rules)
    return cleaned


def _config_value(value: Any, prefix: str = "", rules: Rules | None = None, depth: int = 0) -> Any:
    if value is None or type(value) in _PLAIN_SCALARS:
        return value
    try:
        return _config_form(value, prefix, rules, depth)
    except Exception:
        return _readable(value)


def _config_form(value: Any, prefix: str, rules: Rules | None, depth: int) -> Any:  # noqa: PLR0911
    if depth > _MAX_DEPTH:
        return _readable(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            name = _key_name(k)
            if rules is None or not rules.excluded(f"{prefix}{name}"):
                out[name] = _config_value(v, f"{prefix}{name}/", rules, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = _sorted(value) if isinstance(value, (set, frozenset)) else value
        return [_config_value(v, prefix, rules, depth + 1) for v in items]
    if isinstance(value, type) or callable(value):
        qualified = _qualified_name(value)
        if qualified is not None:
            return qualified
    array = value if isinstance(value, (np.ndarray, np.generic)) else None
    if array is None:
        converted = _scalar_form(value)
        if converted is not _NO:
            return converted
        array = _as_array(value)
    if array is not None and np.size(array) <= _CONFIG_ARRAY_SIZE:
        form = _array_form(np.asarray(array))
        return form.tolist() if isinstance(form, np.ndarray) else form
    return _readable(value)


def _qualified_name(value: Any) -> str | None:
    """``module.qualname`` of a function, class or method; None for other callables."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return None


def _readable(value: Any) -> str:
    """``repr(value)`` without memory addresses; never raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__} object>"
    return _ADDRESS.sub("", text)


def arrays_to_media(
    history: dict[str, Any],
    image_kwargs: Mapping[str, Any] | None = None,
    video_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Turn the arrays of a history row into what wandb logs, in place.

    Runs in the worker. A 3-dim array becomes a ``wandb.Image``, a 4-dim one a
    list of images (one image when N = 1), a 5-dim one a list of videos (one
    video when N = 1). Other arrays are left to wandb, which stores up to
    :data:`HISTOGRAM_ABOVE` elements as a list and larger arrays as a
    histogram; those wandb cannot histogram are made ready here (bools counted
    as 0 and 1, NaN and infinities left out of the counts). An array whose
    media cannot be built is logged as those arrays are.

    Returns, by key, what had to be done otherwise, for a warning.
    """
    import wandb

    notes: dict[str, str] = {}
    for key, value in history.items():
        if not isinstance(value, np.ndarray):
            continue
        if value.ndim in _MEDIA_DIMS and value.size > 0:
            try:
                history[key] = _media(wandb, value, image_kwargs or {}, video_kwargs or {})
                continue
            except Exception as exc:
                notes[key] = (
                    f"could not build W&B media from the {value.ndim}-dim array {key!r} "
                    f"of shape {value.shape} ({exc!r}); logged as a plain array instead "
                    f"(a histogram above {HISTOGRAM_ABOVE} values)"
                )
        if value.size > HISTOGRAM_ABOVE:
            history[key], note = _histogram_ready(wandb, key, value)
            if note and key not in notes:
                notes[key] = note
    return notes


def _histogram_ready(wandb: Any, key: str, array: np.ndarray) -> tuple[Any, str | None]:
    """An array wandb will histogram, or a histogram made here when wandb would fail."""
    if array.dtype.kind == "b":
        # wandb's histogram converts bools itself, with a RuntimeWarning.
        return array.astype(np.uint8), None
    if array.dtype.kind != "f":
        return array, None
    finite = np.isfinite(array)
    if finite.all():
        return array, None
    # NumPy cannot bin NaN or infinities: wandb.log would refuse the array.
    values = array[finite]
    counts = np.histogram(values, bins=HISTOGRAM_ABOVE)
    note = (
        f"the array {key!r} holds NaN or infinite values; its histogram counts "
        f"its finite values only ({values.size} of {array.size})"
    )
    return wandb.Histogram(np_histogram=counts), note


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
