"""A Tune search space as a W&B sweep configuration (pure logic)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ray import tune

from tune_wandb import _sweep_config

pytestmark = pytest.mark.unit


def test_every_tune_domain_has_its_w_and_b_form() -> None:
    space = {
        "grid": tune.grid_search([1, 2, 3]),
        "choice": tune.choice(["a", "b"]),
        "uniform": tune.uniform(0.0, 1.0),
        "quniform": tune.quniform(0.0, 1.0, 0.1),
        "loguniform": tune.loguniform(1e-4, 1e-1),
        "qloguniform": tune.qloguniform(1e-4, 1e-1, 5e-5),
        "randn": tune.randn(0.5, 2.0),
        "qrandn": tune.qrandn(0.5, 2.0, 0.25),
        "randint": tune.randint(0, 10),
        "qrandint": tune.qrandint(0, 20, 5),
        "lograndint": tune.lograndint(1, 100),
        "constant": 7,
        "nested": {"depth": tune.choice([1, 2]), "fixed": "x"},
        "wandb": {"project": "p"},
    }
    config = _sweep_config.sweep_config(space, "loss", "min")
    assert config["method"] == "random"
    assert config["metric"] == {"name": "loss", "goal": "minimize"}
    assert config["parameters"] == {
        "grid": {"values": [1, 2, 3]},
        "choice": {"values": ["a", "b"]},
        "uniform": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        "quniform": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.1},
        "loguniform": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "qloguniform": {
            "distribution": "q_log_uniform_values",
            "min": 1e-4,
            "max": 1e-1,
            "q": 5e-5,
        },
        "randn": {"distribution": "normal", "mu": 0.5, "sigma": 2.0},
        "qrandn": {"distribution": "q_normal", "mu": 0.5, "sigma": 2.0, "q": 0.25},
        # Tune's upper bound is exclusive, W&B's max inclusive.
        "randint": {"distribution": "int_uniform", "min": 0, "max": 9},
        "qrandint": {"values": [0, 5, 10, 15, 20]},
        "lograndint": {"distribution": "q_log_uniform_values", "min": 1, "max": 99, "q": 1},
        "constant": {"value": 7},
        "nested": {"parameters": {"depth": {"values": [1, 2]}, "fixed": {"value": "x"}}},
    }


def test_a_grid_is_a_grid_and_max_is_maximize() -> None:
    config = _sweep_config.sweep_config(
        {"a": tune.grid_search([1, 2]), "b": tune.choice([np.int64(3), object])}, "acc", "max"
    )
    assert config["method"] == "grid"
    assert config["metric"] == {"name": "acc", "goal": "maximize"}
    # numpy scalars become numbers, other objects their str.
    assert config["parameters"]["b"] == {"values": [3, str(object)]}


def test_no_metric_no_space() -> None:
    assert _sweep_config.sweep_config(None) == {"method": "grid", "parameters": {}}


def test_what_has_no_w_and_b_form_is_listed_as_sampled() -> None:
    spec = _sweep_config.describe(
        {
            "seed": tune.sample_from(lambda _: 1),
            "deep": {"f": tune.sample_from(lambda _: 2)},
            "lr": tune.grid_search([0.1]),
        },
        "loss",
    )
    assert spec.unlisted == (("seed",), ("deep", "f"))
    assert spec.config["method"] == "grid"
    assert "seed" not in spec.config["parameters"]
    trials = [{"seed": 4, "deep": {"f": 1.5}}, {"seed": 4, "deep": {"f": 2.5}}, {"lr": 0.1}]
    full = _sweep_config.with_sampled_values(spec.config, spec.unlisted, trials)
    assert full["parameters"]["seed"] == {"values": [4]}
    assert full["parameters"]["deep"] == {"parameters": {"f": {"values": [1.5, 2.5]}}}
    assert full["parameters"]["lr"] == {"values": [0.1]}
    # Nothing taken in place.
    assert "seed" not in spec.config["parameters"]


def test_the_sweep_argument_is_checked() -> None:
    assert _sweep_config.check_sweep_arg(None) is None
    assert _sweep_config.check_sweep_arg(False) is None
    assert _sweep_config.check_sweep_arg(True) == {}
    with pytest.raises(TypeError, match="param_space"):
        _sweep_config.check_sweep_arg("yes")
    with pytest.raises(TypeError, match="'metrc'"):
        _sweep_config.check_sweep_arg({"metrc": "loss"})
    with pytest.raises(ValueError, match='"min" or "max"'):
        _sweep_config.check_sweep_arg({"mode": "minimize"})
    with pytest.raises(ValueError, match="method"):
        _sweep_config.check_sweep_arg({"method": "hyperband"})
    with pytest.raises(TypeError, match="param_space"):
        _sweep_config.check_sweep_arg({"param_space": [1, 2]})


# -- every value Tune samples lies in the W&B parameter's support ---------------


def _in_support(parameter: dict[str, Any], value: Any) -> bool:
    if "values" in parameter:
        return value in parameter["values"]
    kind = parameter["distribution"]
    if kind in ("normal", "q_normal"):
        return math.isfinite(value)
    low, high = parameter["min"], parameter["max"]
    slack = parameter.get("q", 0) * 0.5 + 1e-9 * max(1.0, abs(high))
    if kind == "int_uniform":
        return isinstance(value, int) and low <= value <= high
    return low - slack <= value <= high + slack


_bounds = st.tuples(
    st.floats(1e-6, 1e3, allow_nan=False), st.floats(1e-6, 1e3, allow_nan=False)
).filter(lambda b: b[1] > b[0] * 1.001)
_int_bounds = st.tuples(st.integers(1, 10_000), st.integers(2, 50_000)).filter(
    lambda b: b[1] > b[0] + 1
)


@st.composite
def _domains(draw: st.DrawFn) -> Any:
    kind = draw(
        st.sampled_from(
            ["uniform", "loguniform", "randn", "randint", "qrandint", "lograndint", "choice"]
        )
    )
    if kind in ("uniform", "loguniform"):
        low, high = draw(_bounds)
        return getattr(tune, kind)(low, high)
    if kind == "randn":
        return tune.randn(draw(st.floats(-100, 100)), draw(st.floats(0.01, 100)))
    if kind == "choice":
        return tune.choice(draw(st.lists(st.integers() | st.text(max_size=5), min_size=1)))
    low, high = draw(_int_bounds)
    if kind == "qrandint":
        q = draw(st.integers(2, 50))
        # Multiples of q, at least one step apart (Ray 2.53 cannot sample low == high).
        low = -(-low // q) * q
        high = max(high // q * q, low + q)
        return tune.qrandint(low, high, q)
    return getattr(tune, kind)(low, high)


@given(domain=_domains(), seed=st.integers(0, 2**32 - 1))
def test_tune_samples_lie_in_the_w_and_b_support(domain: Any, seed: int) -> None:
    (parameter,) = _sweep_config.sweep_config({"x": domain})["parameters"].values()
    samples = domain.sample(size=20, random_state=np.random.default_rng(seed))
    values = samples.tolist() if isinstance(samples, np.ndarray) else list(samples)
    for value in values:
        assert _in_support(parameter, value), (parameter, value)


@given(
    trials=st.lists(
        st.dictionaries(st.sampled_from(["a", "b"]), st.integers() | st.text(max_size=3)),
        max_size=8,
    )
)
def test_sampled_values_listed_once_each_in_order(trials: list[dict[str, Any]]) -> None:
    config = _sweep_config.with_sampled_values({"parameters": {}}, [("a",)], trials)
    seen = [t["a"] for t in trials if "a" in t]
    expected = list(dict.fromkeys(seen))
    if expected:
        assert config["parameters"]["a"] == {"values": expected}
    else:
        assert "a" not in config["parameters"]
