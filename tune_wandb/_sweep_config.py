"""A Tune search space as a W&B sweep configuration: ``parameters``, ``metric``, ``method``.

Pure functions: the space is read, never sampled. Each Tune domain becomes the
W&B distribution with the same support (``tune.randint``'s exclusive upper
bound becomes W&B's inclusive ``max``); a domain without a W&B form
(``tune.sample_from``, a custom sampler) is left out of the first
configuration and listed later as the values the trials took
(:func:`with_sampled_values`).

Example:
    >>> from ray import tune
    >>> config = sweep_config(
    ...     {"lr": tune.loguniform(1e-4, 1e-1), "layers": tune.grid_search([2, 4])},
    ...     metric="loss",
    ...     mode="min",
    ... )
    >>> config["parameters"]["lr"]
    {'distribution': 'log_uniform_values', 'min': 0.0001, 'max': 0.1}
    >>> config["parameters"]["layers"], config["metric"]
    ({'values': [2, 4]}, {'name': 'loss', 'goal': 'minimize'})
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The keys ``WandbLoggerCallback(sweep=...)`` takes.
SWEEP_KEYS = frozenset({"param_space", "metric", "mode", "method", "name"})
#: W&B's search methods (the sweep page shows the method; Tune does the search).
METHODS = frozenset({"grid", "random", "bayes"})
#: Tune's modes and W&B's goals.
GOALS = {"min": "minimize", "max": "maximize"}
#: A quantized integer range with at most this many values is listed value by value.
MAX_LISTED_VALUES = 1000
#: The config entries of the integration itself, never a search parameter.
_NOT_PARAMETERS = frozenset({"wandb"})


@dataclass(frozen=True)
class SweepSpec:
    """What the user asked for with ``sweep=``, checked.

    ``unlisted`` are the config paths (tuples of keys) of parameters that have
    no W&B form: the values the trials took are listed at the experiment's end.
    """

    config: dict[str, Any]
    unlisted: tuple[tuple[str, ...], ...] = field(default=())


def check_sweep_arg(sweep: Any) -> dict[str, Any] | None:
    """``sweep=`` as given to the callback, checked: None, or a dict of :data:`SWEEP_KEYS`.

    ``True`` means a sweep without a search space (the metric and mode alone,
    filled in by ``tune_wandb.run``).

    Raises:
        TypeError: not a dict (or bool), or keys it does not take.
        ValueError: a mode other than "min"/"max", or an unknown method.

    Example:
        >>> check_sweep_arg({"metric": "loss", "mode": "min"})
        {'metric': 'loss', 'mode': 'min'}
    """
    if sweep is None or sweep is False:
        return None
    if sweep is True:
        return {}
    if not isinstance(sweep, Mapping):
        raise TypeError(
            "sweep= takes a dict such as {'param_space': ..., 'metric': 'loss', 'mode': 'min'} "
            f"(or True), not {type(sweep).__name__}."
        )
    unknown = sorted(str(k) for k in sweep if k not in SWEEP_KEYS)
    if unknown:
        raise TypeError(
            f"sweep= does not take {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(map(repr, sorted(SWEEP_KEYS)))}."
        )
    mode = sweep.get("mode")
    if mode is not None and mode not in GOALS:
        raise ValueError(f'sweep mode must be "min" or "max" (as Tune\'s), not {mode!r}.')
    method = sweep.get("method")
    if method is not None and method not in METHODS:
        raise ValueError(f"sweep method must be one of {sorted(METHODS)}, not {method!r}.")
    space = sweep.get("param_space")
    if space is not None and not isinstance(space, Mapping):
        raise TypeError(
            f"sweep param_space must be Tune's param_space dict, not {type(space).__name__}."
        )
    checked = dict(sweep)
    if space is not None:
        # The integration's own entry (it may hold a key) is never kept with the sweep.
        checked["param_space"] = {k: v for k, v in space.items() if k not in _NOT_PARAMETERS}
    return checked


def sweep_config(
    param_space: Mapping[str, Any] | None,
    metric: str | None = None,
    mode: str | None = None,
    method: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The W&B sweep configuration describing a Tune search.

    ``method`` defaults to ``"grid"`` when every parameter is a finite list,
    else ``"random"`` (Tune does the search; W&B shows the method). A
    ``metric`` without a ``mode`` is minimized, as W&B does.

    Example:
        >>> from ray import tune
        >>> config = sweep_config({"x": tune.randint(0, 10)}, "acc", "max")
        >>> config["method"], config["parameters"]["x"]
        ('random', {'distribution': 'int_uniform', 'min': 0, 'max': 9})
    """
    return describe(param_space, metric, mode, method, name).config


def describe(
    param_space: Mapping[str, Any] | None,
    metric: str | None = None,
    mode: str | None = None,
    method: str | None = None,
    name: str | None = None,
) -> SweepSpec:
    """:func:`sweep_config`, with the paths of the parameters it could not describe."""
    unlisted: list[tuple[str, ...]] = []
    parameters = _parameters(param_space or {}, (), unlisted)
    config: dict[str, Any] = {"method": method or _method(parameters)}
    if name:
        config["name"] = str(name)
    if metric:
        config["metric"] = {"name": str(metric), "goal": GOALS.get(mode or "min", "minimize")}
    config["parameters"] = parameters
    return SweepSpec(config, tuple(unlisted))


def with_sampled_values(
    config: Mapping[str, Any],
    unlisted: Iterable[tuple[str, ...]],
    trial_configs: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """``config`` with each unlisted parameter given the values the trials took.

    Values are listed once each, in the order first seen; a parameter no
    trial took stays out.

    Example:
        >>> with_sampled_values(
        ...     {"method": "random", "parameters": {}}, [("seed",)], [{"seed": 3}, {"seed": 1}]
        ... )["parameters"]
        {'seed': {'values': [3, 1]}}
    """
    out = json.loads(json.dumps(config))
    trials = list(trial_configs)
    for path in unlisted:
        values: list[Any] = []
        seen: set[str] = set()
        for trial in trials:
            found, value = _lookup(trial, path)
            if not found:
                continue
            value = _plain(value)
            key = json.dumps(value, sort_keys=True)
            if key not in seen:
                seen.add(key)
                values.append(value)
        if not values:
            continue
        node = out.setdefault("parameters", {})
        for part in path[:-1]:
            node = node.setdefault(part, {}).setdefault("parameters", {})
        node[path[-1]] = {"values": values}
    if "method" in out and out["method"] == "grid" and not _all_listed(out.get("parameters", {})):
        out["method"] = "random"
    return dict(out)


# -- the parameters ----------------------------------------------------------


def _parameters(
    space: Mapping[str, Any], path: tuple[str, ...], unlisted: list[tuple[str, ...]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_key, value in space.items():
        key = str(raw_key)
        if not path and key in _NOT_PARAMETERS:
            continue
        here = (*path, key)
        if _is_grid(value):
            out[key] = {"values": [_plain(v) for v in value["grid_search"]]}
        elif isinstance(value, Mapping):
            nested = _parameters(value, here, unlisted)
            if nested:
                out[key] = {"parameters": nested}
        else:
            described = _domain(value)
            if described is None:
                unlisted.append(here)
            else:
                out[key] = described
    return out


def _is_grid(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"grid_search"}


def _domain(value: Any) -> dict[str, Any] | None:
    """A Tune domain (or a constant) as a W&B parameter; None if it has no W&B form."""
    from ray.tune.search import sample

    if not isinstance(value, sample.Domain):
        return {"value": _plain(value)}
    sampler = value.get_sampler()
    q = None
    if isinstance(sampler, sample.Quantized):
        q, sampler = sampler.q, sampler.get_sampler()
    if isinstance(value, sample.Categorical):
        return {"values": [_plain(v) for v in value.categories]}
    if isinstance(value, sample.Float):
        return _float(value, sampler, q)
    if isinstance(value, sample.Integer):
        return _integer(value, sampler, q)
    return None


def _float(domain: Any, sampler: Any, q: Any) -> dict[str, Any] | None:
    from ray.tune.search import sample

    if isinstance(sampler, sample.Normal):
        out = {"distribution": "normal", "mu": float(sampler.mean), "sigma": float(sampler.sd)}
        if q is not None:
            out.update(distribution="q_normal", q=q)
        return out
    lower, upper = float(domain.lower), float(domain.upper)
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return None
    if isinstance(sampler, sample.LogUniform):
        kind = "log_uniform_values"
    elif isinstance(sampler, sample.Uniform):
        kind = "uniform"
    else:
        return None
    out = {"distribution": kind, "min": lower, "max": upper}
    if q is not None:
        out.update(distribution=f"q_{kind}", q=q)
    return out


def _integer(domain: Any, sampler: Any, q: Any) -> dict[str, Any] | None:
    from ray.tune.search import sample

    lower, upper = int(domain.lower), int(domain.upper)
    step = int(q) if q is not None else 1
    # Tune's upper bound is exclusive, except for a quantized range (q > 1).
    top = upper if step > 1 else upper - 1
    if isinstance(sampler, sample.LogUniform):
        return {"distribution": "q_log_uniform_values", "min": lower, "max": top, "q": step}
    if not isinstance(sampler, sample.Uniform):
        return None
    if step == 1:
        if top <= lower:
            return {"values": [lower]}
        return {"distribution": "int_uniform", "min": lower, "max": top}
    # Tune draws the multiples of q between the bounds.
    first = -(-lower // step) * step
    count = (top - first) // step + 1 if top >= first else 0
    if 0 < count <= MAX_LISTED_VALUES:
        return {"values": [first + i * step for i in range(count)]}
    return {"distribution": "q_uniform", "min": lower, "max": top, "q": step}


def _method(parameters: Mapping[str, Any]) -> str:
    return "grid" if _all_listed(parameters) else "random"


def _all_listed(parameters: Mapping[str, Any]) -> bool:
    """Whether every parameter is a finite list (or a constant): a grid."""
    for spec in parameters.values():
        if "parameters" in spec:
            if not _all_listed(spec["parameters"]):
                return False
        elif "values" not in spec and "value" not in spec:
            return False
    return True


def _lookup(config: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = config
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _plain(value: Any) -> Any:
    """A value as W&B's sweep config (YAML) can hold it: JSON's types, else its ``str``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        pass
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        try:
            return json.loads(json.dumps(tolist(), allow_nan=False))
        except (TypeError, ValueError):
            pass
    return str(value)
