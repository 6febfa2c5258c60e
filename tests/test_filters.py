"""The filters: what of a result goes to the history, to the config, or nowhere."""

from __future__ import annotations

import math
import pickle
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune_wandb._filters import (
    AUTO_CONFIG_KEYS,
    Rules,
    arrays_to_media,
    clean_config,
    flatten,
    history_value,
    split_result,
)


def test_flatten_joins_nested_keys_with_slash() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": 2}, "e": 3, 4: {5: 6}}) == {
        "a/b/c": 1,
        "a/d": 2,
        "e": 3,
        "4/5": 6,
    }


def test_bookkeeping_never_logged() -> None:
    split = split_result(
        {"done": True, "should_checkpoint": True, "checkpoint_dir_name": None, "loss": 1.0},
        Rules(),
    )
    assert split.history == {"loss": 1.0}
    assert split.config == {}
    assert split.dropped == []


def test_auto_config_keys_go_to_config_not_history() -> None:
    result = {key: f"v-{key}" for key in AUTO_CONFIG_KEYS} | {"loss": 0.5}
    split = split_result(result, Rules())
    assert split.history == {"loss": 0.5}
    assert split.config == {key: f"v-{key}" for key in AUTO_CONFIG_KEYS}


def test_config_only_with_log_config() -> None:
    result = {"loss": 1, "config": {"lr": 0.1, "wandb": {"api_key": "k"}, "nested": {"a": 1}}}
    assert split_result(result, Rules()).config == {}
    assert "config/lr" not in split_result(result, Rules()).history
    split = split_result(result, Rules(log_config=True))
    assert split.config == {"lr": 0.1, "nested": {"a": 1}}
    assert split.history == {"loss": 1}


@pytest.mark.parametrize(
    ("excludes", "kept"),
    [
        (["loss"], {"acc/top1", "acc/top5", "lossy"}),
        (["acc"], {"loss", "lossy"}),
        (["acc/top1"], {"loss", "lossy", "acc/top5"}),
        (["acc/top"], {"loss", "lossy", "acc/top1", "acc/top5"}),  # prefix means "/"-prefix
    ],
)
def test_excludes_by_exact_name_or_slash_prefix(excludes: list[str], kept: set[str]) -> None:
    result = {"loss": 1, "lossy": 2, "acc": {"top1": 3, "top5": 4}}
    assert set(split_result(result, Rules(tuple(excludes))).history) == kept


def test_excludes_apply_to_config() -> None:
    result = {"pid": 1, "config": {"lr": 1, "opt": {"name": "adam", "beta": 0.9}}}
    split = split_result(result, Rules(("pid", "opt/beta"), log_config=True))
    assert split.config == {"lr": 1, "opt": {"name": "adam"}}
    assert clean_config({"lr": 1, "opt": {"beta": 2, "eps": 3}}, ["opt/beta"]) == {
        "lr": 1,
        "opt": {"eps": 3},
    }


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        (1, 1),
        (2.5, 2.5),
        (True, True),
        (np.float32(1.5), 1.5),
        (np.int64(7), 7),
        (np.bool_(True), True),
        (np.array([3.0]), 3.0),
        (np.array([[4]]), 4),
    ],
)
def test_numbers_are_kept(value: Any, logged: Any) -> None:
    keep, out = history_value(value)
    assert keep
    assert out == logged
    assert type(out) in (int, float, bool)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_kept(value: float) -> None:
    keep, out = history_value(value)
    assert keep and (out == value or (math.isnan(out) and math.isnan(value)))


@pytest.mark.parametrize("dims", [3, 4, 5])
def test_media_arrays_are_kept_for_the_worker(dims: int) -> None:
    array = np.zeros((2,) * dims, dtype=np.uint8)
    keep, out = history_value(array)
    assert keep and out is array


@pytest.mark.parametrize(
    "value",
    [
        None,
        "text",
        b"bytes",
        [1, 2],
        (1, 2),
        np.arange(4),
        np.zeros((2, 2)),
        np.array(["a"]),
        np.zeros((0, 2, 2)),
        1 + 2j,
        threading.Lock(),
        lambda: 1,
        object(),
    ],
)
def test_unloggable_values_are_dropped(value: Any) -> None:
    assert history_value(value) == (False, None)
    split = split_result({"bad": value, "good": 1}, Rules())
    assert split.history == {"good": 1}
    assert split.dropped == ["bad"]


def test_wandb_media_and_lists_of_media_are_kept() -> None:
    import wandb

    html = wandb.Html("<b>x</b>")
    assert history_value(html) == (True, html)
    assert history_value([html, html]) == (True, [html, html])
    assert history_value([]) == (False, None)


def test_clean_config_drops_wandb_entry_and_reprs_objects() -> None:
    lock = threading.Lock()

    class Model:
        pass

    config = {
        "lr": 0.1,
        "wandb": {"api_key": "secret"},
        "callbacks": [object()],
        "fn": len,
        "cls": Model,
        "lock": lock,
        "nested": {"lock": lock, "n": 1, "t": (1, "a")},
        "np": np.float64(2.0),
        "arr": np.arange(3),
        "none": None,
    }
    cleaned = clean_config(config)
    assert cleaned["lr"] == 0.1
    assert "wandb" not in cleaned and "callbacks" not in cleaned
    assert cleaned["fn"] == repr(len)
    assert cleaned["cls"] == repr(Model)
    assert cleaned["lock"] == repr(lock)
    assert cleaned["nested"] == {"lock": repr(lock), "n": 1, "t": [1, "a"]}
    assert cleaned["np"] == 2.0 and cleaned["arr"] == [0, 1, 2] and cleaned["none"] is None
    pickle.dumps(cleaned)


def test_arrays_to_media_builds_images_and_reports_failures() -> None:
    import wandb

    row: dict[str, Any] = {
        "img": np.zeros((4, 4, 3), dtype=np.uint8),
        "one": np.zeros((1, 4, 4, 3), dtype=np.uint8),
        "many": np.zeros((3, 4, 4, 3), dtype=np.uint8),
        "bad": np.zeros((2, 2, 2, 2, 2, 2), dtype=np.uint8),
        "n": 1,
    }
    failed = arrays_to_media(row)
    assert isinstance(row["img"], wandb.Image)
    assert isinstance(row["one"], wandb.Image)
    assert isinstance(row["one"], wandb.Image)
    assert isinstance(row["many"], list) and len(row["many"]) == 3
    assert set(failed) == {"bad"} and "bad" not in row
    assert row["n"] == 1


# -- property-based: random nested results --------------------------------

_keys = st.text(min_size=1, max_size=8)
_numbers = st.one_of(
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
_others = st.one_of(st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
_values = st.recursive(
    st.one_of(_numbers, _others),
    lambda children: st.dictionaries(_keys, children, max_size=4),
    max_leaves=20,
)
_results = st.dictionaries(_keys, _values, max_size=8)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float, bool)


@settings(max_examples=300, deadline=None)
@given(_results)
def test_every_number_arrives_and_nothing_raises(result: dict[str, Any]) -> None:
    split = split_result(result, Rules())
    flat = flatten(result)
    for key, value in flat.items():
        top = key.split("/", 1)[0]
        if top in {"done", "should_checkpoint", "checkpoint_dir_name", "config", *AUTO_CONFIG_KEYS}:
            continue
        if _is_number(value):
            assert key in split.history
            logged = split.history[key]
            assert logged == value or (math.isnan(logged) and math.isnan(value))
        else:
            assert key not in split.history
            assert key in split.dropped
    pickle.dumps(split.history)


@settings(max_examples=200, deadline=None)
@given(_results, st.lists(_keys, max_size=3))
def test_excluded_keys_never_arrive(result: dict[str, Any], excludes: list[str]) -> None:
    rules = Rules(tuple(excludes))
    split = split_result(result, rules)
    for key in [*split.history, *split.dropped, *split.config]:
        assert not any(key == e or key.startswith(f"{e}/") for e in excludes)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_clean_config_is_picklable_and_never_holds_the_wandb_entry(config: dict[str, Any]) -> None:
    config = {**config, "wandb": {"api_key": "k"}, "fn": lambda: 0}
    cleaned = clean_config(config)
    assert "wandb" not in cleaned
    pickle.dumps(cleaned)


_sequences = st.lists(_results, min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_sequences, st.booleans(), st.lists(_keys, max_size=2))
def test_splitter_matches_split_result(
    results: list[dict[str, Any]], log_config: bool, excludes: list[str]
) -> None:
    from tune_wandb._filters import Splitter

    rules = Rules(tuple(excludes), log_config)
    splitter = Splitter(rules)
    merged_fast: dict[str, Any] = {}
    merged_ref: dict[str, Any] = {}
    for result in results:
        history, config, dropped = splitter.split(result)
        reference = split_result(result, rules)
        assert history.keys() == reference.history.keys()
        for key, value in history.items():
            ref = reference.history[key]
            assert value == ref or (math.isnan(value) and math.isnan(ref))
        assert sorted(dropped or []) == sorted(reference.dropped)
        merged_fast.update(config or {})
        merged_ref.update(reference.config)
        assert merged_fast.keys() == merged_ref.keys()


def test_splitter_sends_config_only_when_it_changes() -> None:
    from tune_wandb._filters import Splitter

    splitter = Splitter(Rules(log_config=True))
    first = {"loss": 1.0, "pid": 5, "date": "d1", "config": {"lr": 0.1}}
    assert splitter.split(first)[1] == {"pid": 5, "date": "d1", "lr": 0.1}
    assert splitter.split({**first, "loss": 0.5})[1] is None
    assert splitter.split({**first, "date": "d2"})[1] == {"date": "d2"}
    config = {"lr": 0.1}
    splitter.split({**first, "config": config})
    config["lr"] = 0.2  # PBT may change a config in place
    assert splitter.split({**first, "config": config})[1] == {"lr": 0.2}


def test_arrays_to_media_builds_videos() -> None:
    import wandb

    rng = np.random.default_rng(0)
    row: dict[str, Any] = {
        "one": rng.integers(0, 255, size=(1, 4, 3, 8, 8), dtype=np.uint8),
        "two": rng.integers(0, 255, size=(2, 4, 3, 8, 8), dtype=np.uint8),
    }
    assert arrays_to_media(row, video_kwargs={"fps": 2}) == {}
    assert isinstance(row["one"], wandb.Video)
    assert isinstance(row["two"], list) and all(isinstance(v, wandb.Video) for v in row["two"])
