"""The filters: what of a result goes to the history, to the config, or nowhere."""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import functools
import io
import math
import pathlib
import pickle
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tune_wandb._filters import (
    AUTO_CONFIG_KEYS,
    NEVER_LOGGED,
    X_AXIS_KEYS,
    Rules,
    Splitter,
    arrays_to_media,
    as_metrics,
    clean_config,
    flatten,
    history_value,
    split_result,
)

pytestmark = pytest.mark.unit


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


@pytest.mark.parametrize(
    ("metrics", "kept"),
    [
        (None, {"loss", "lossy", "acc/top1", "acc/top5", "training_iteration"}),
        ([], {"training_iteration"}),
        (["loss"], {"loss", "training_iteration"}),
        (["acc"], {"acc/top1", "acc/top5", "training_iteration"}),
        (["acc/top1"], {"acc/top1", "training_iteration"}),
        (["acc/top"], {"training_iteration"}),  # a prefix means a "/"-prefix
        (["nothing/here"], {"training_iteration"}),
    ],
)
def test_metrics_keep_only_the_named_keys_and_the_x_axis(
    metrics: list[str] | None, kept: set[str]
) -> None:
    result = {"loss": 1, "lossy": 2, "acc": {"top1": 3, "top5": 4}, "training_iteration": 5}
    rules = Rules(metrics=as_metrics(metrics))
    assert set(split_result(result, rules).history) == kept
    assert set(Splitter(rules).split(result)[0]) == kept


def test_metrics_leave_the_run_config_alone_and_excludes_win() -> None:
    result = {"loss": 1, "pid": 7, "timesteps_total": 9, "config": {"lr": 0.1}}
    rules = Rules(("timesteps_total",), log_config=True, metrics=("loss",))
    split = split_result(result, rules)
    assert split.history == {"loss": 1}
    assert split.config == {"pid": 7, "lr": 0.1}
    assert Splitter(rules).split(result) == ({"loss": 1}, {"pid": 7, "lr": 0.1}, None)


def test_metrics_name_keys_inside_nested_results_only() -> None:
    rules = Rules(metrics=("eval/loss",))
    result = {"eval": {"loss": 1, "acc": 2}, "train": {"loss": 3}}
    assert split_result(result, rules).history == {"eval/loss": 1}
    # "eval" holding a number is not "eval/loss".
    assert split_result({"eval": 5}, rules).history == {}
    splitter = Splitter(rules)
    assert splitter.split(result)[0] == {"eval/loss": 1}
    assert splitter.split({"eval": 5})[0] == {}


@pytest.mark.parametrize("bad", ["loss", b"loss", 3])
def test_metrics_must_be_a_list(bad: Any) -> None:
    with pytest.raises(TypeError, match="metrics must be a list"):
        as_metrics(bad)


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
        (np.uint8(7), 7),
        (np.bool_(True), True),
        (np.longdouble(1.5), 1.5),
        (np.float16(0.5), 0.5),
        (np.array([3.0]), 3.0),
        (np.array([[4]]), 4),
        (np.array(2.5), 2.5),
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


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class FakeTensor:
    """A torch-like tensor, without torch: ``detach().cpu().numpy()``."""

    def __init__(self, values: Any, bfloat16: bool = False) -> None:
        self.values = np.asarray(values)
        self.bfloat16 = bfloat16
        self.requires_grad = True

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        if self.bfloat16:
            raise TypeError("Got unsupported ScalarType BFloat16")
        return self.values

    def float(self) -> FakeTensor:
        return FakeTensor(self.values.astype(np.float32))


class ArrayLike:
    """A JAX- or pandas-like object with ``__array__``."""

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.arange(3.0)


#: Each kind of value docs/bad-input.md lists as kept, and what it becomes.
KEPT = [
    ("none", None, None),
    ("text", "héllo ☃", "héllo ☃"),
    ("empty text", "", ""),
    ("complex", 1 + 2j, 1 + 2j),
    ("numpy complex", np.complex64(1 + 2j), 1 + 2j),
    ("list", [1, 2.5, None, "a"], [1, 2.5, None, "a"]),
    ("tuple", (1, 2), [1, 2]),
    ("empty list", [], []),
    ("nested list", [[1, 2], (3,)], [[1, 2], [3]]),
    ("list of numpy", [np.float32(0.5), np.array(2), np.arange(2)], [0.5, 2, [0, 1]]),
    ("list of dicts", [{"a": 1, 2: "b"}], [{"a": 1, "2": "b"}]),
    ("set", {3, 1, 2}, [1, 2, 3]),
    ("frozenset of mixed", frozenset({1, "a"}), None),  # unordered: checked below
    ("bytes", b"ab\xff", "ab\\xff"),
    ("datetime", datetime.datetime(2024, 1, 2, 3, 4), "2024-01-02T03:04:00"),
    ("date", datetime.date(2024, 1, 2), "2024-01-02"),
    ("time", datetime.time(3, 4), "03:04:00"),
    ("timedelta", datetime.timedelta(minutes=1, milliseconds=500), 60.5),
    ("decimal", decimal.Decimal("1.25"), 1.25),
    ("fraction", fractions.Fraction(1, 4), 0.25),
    ("enum", Color.RED, "RED"),
    ("int enum", Level.HIGH, 3),
    ("path", pathlib.PurePosixPath("/data/x"), "/data/x"),
    ("numpy string", np.str_("s"), "s"),
    ("numpy datetime", np.datetime64("2024-01-02T03:04"), "2024-01-02T03:04"),
    ("numpy timedelta", np.timedelta64(90, "s"), 90.0),
    ("string array", np.array(["a", "b"]), ["a", "b"]),
    ("bytes array", np.array([b"a", b"\xff"]), ["a", "\\xff"]),
    ("object array", np.array([1, "a", None], dtype=object), [1, "a", None]),
    ("complex array", np.array([1 + 2j, 3j]), [1 + 2j, 3j]),
    ("datetime array", np.array(["2024-01-02", "NaT"], dtype="datetime64[D]"), None),
    ("record array", np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")]), [[1, 2.5]]),
    ("empty string array", np.array([], dtype="U1"), []),
    ("tensor", FakeTensor([0.5, 1.5]), None),
    ("scalar tensor", FakeTensor(3.0), 3.0),
    ("bfloat16 tensor", FakeTensor([1.0, 2.0], bfloat16=True), None),
    ("array-like", ArrayLike(), None),
]


@pytest.mark.parametrize(("value", "logged"), [k[1:] for k in KEPT], ids=[k[0] for k in KEPT])
def test_other_kinds_are_kept_in_a_loggable_form(value: Any, logged: Any) -> None:
    keep, out = history_value(value)
    assert keep
    if logged is not None:
        assert out == logged
        assert type(out) is type(logged)
    pickle.dumps(out)
    split = split_result({"value": value, "ok": 1}, Rules())
    assert split.history.keys() == {"value", "ok"} and not split.dropped


def test_kinds_without_a_fixed_form() -> None:
    assert sorted(history_value(frozenset({1, "a"}))[1], key=str) == [1, "a"]
    assert history_value(np.array(["2024-01-02", "NaT"], dtype="datetime64[D]")) == (
        True,
        ["2024-01-02", "NaT"],
    )
    for tensor, values in [
        (FakeTensor([0.5, 1.5]), [0.5, 1.5]),
        (FakeTensor([1.0, 2.0], bfloat16=True), [1.0, 2.0]),
        (ArrayLike(), [0.0, 1.0, 2.0]),
    ]:
        keep, out = history_value(tensor)
        assert keep and isinstance(out, np.ndarray) and out.tolist() == values


def test_pandas_objects_are_array_likes() -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert history_value(frame) == (True, [[1, "x"], [2, "y"]])
    keep, out = history_value(pd.Series([0.5, 1.5]))
    assert keep and out.tolist() == [0.5, 1.5]
    assert history_value(pd.Timestamp("2024-01-02")) == (True, "2024-01-02T00:00:00")


@pytest.mark.parametrize(
    "array",
    [
        np.arange(4),
        np.zeros((2, 2)),
        np.arange(100.0),
        np.zeros((2,) * 6),
        np.zeros((0, 2, 2)),
        np.array([True, False] * 20),
        np.array([np.nan] * 40),
        np.ones(3, dtype=np.float16),
        np.arange(4.0).view(type("Subclass", (np.ndarray,), {})),
    ],
)
def test_other_numeric_arrays_go_to_wandb_as_arrays(array: np.ndarray) -> None:
    keep, out = history_value(array)
    assert keep and type(out) is np.ndarray
    np.testing.assert_array_equal(out, np.asarray(array))


def test_timedelta_arrays_become_seconds_and_long_doubles_float64() -> None:
    keep, out = history_value(np.array([60, "NaT"], dtype="timedelta64[s]"))
    assert keep and out[0] == 60.0 and math.isnan(out[1])
    assert history_value(np.array([1, 2], dtype="timedelta64[Y]")) == (True, ["1 years", "2 years"])
    keep, out = history_value(np.ones(3, dtype=np.longdouble))
    assert keep and out.dtype == np.float64


class Weird:
    """An object whose every look raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("no attributes")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


def _generator() -> Iterator[int]:
    yield 1


def _cyclic() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


UNLOGGABLE = [
    ("lock", threading.Lock()),
    ("lambda", lambda: 1),
    ("function", len),
    ("class", dict),
    ("generator", _generator()),
    ("object", object()),
    ("open file", io.StringIO("text")),
    ("module", math),
    ("partial", functools.partial(print, 1)),
    ("weird", Weird()),
    ("list holding a lock", [1, threading.Lock()]),
    ("object array holding a lock", np.array([threading.Lock()], dtype=object)),
    ("list holding itself", _cyclic()),
    ("list holding media after a number", [1, type("Media", (), {"__module__": "wandb.x"})()]),
]


@pytest.mark.parametrize("value", [u[1] for u in UNLOGGABLE], ids=[u[0] for u in UNLOGGABLE])
def test_unloggable_values_are_dropped(value: Any) -> None:
    assert history_value(value) == (False, None)
    split = split_result({"bad": value, "good": 1}, Rules())
    assert split.history == {"good": 1}
    assert split.dropped == ["bad"]
    history, _, dropped = Splitter(Rules()).split({"bad": value, "good": 1})
    assert history == {"good": 1} and dropped == ["bad"]


def test_a_text_file_is_not_taken_for_a_tensor() -> None:
    # TextIOWrapper has detach(), which would break the file.
    with io.TextIOWrapper(io.BytesIO()) as file:
        assert history_value(file) == (False, None)
        assert not file.closed
        file.write("still usable")


def test_empty_dicts_vanish_and_deep_ones_are_flattened() -> None:
    deep: dict[str, Any] = {"v": 1}
    for level in range(6):
        deep = {f"l{level}": deep}
    split = split_result({"empty": {}, "deep": deep, "ok": 1}, Rules())
    assert split.history == {"deep/l5/l4/l3/l2/l1/l0/v": 1, "ok": 1}
    assert not split.dropped


def test_a_dict_holding_itself_costs_one_key() -> None:
    loop: dict[str, Any] = {"x": 1}
    loop["self"] = loop
    for splitter in (Splitter(Rules()).split, lambda r: _as_tuple(split_result(r, Rules()))):
        history, _, dropped = splitter({"loop": loop, "ok": 1})
        assert history["ok"] == 1 and history["loop/x"] == 1
        assert dropped is not None and len(dropped) == 1
        assert dropped[0].startswith("loop/self/self/")


def _as_tuple(split: Any) -> tuple[Any, Any, Any]:
    return split.history, split.config or None, split.dropped or None


class BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 1


def test_a_mapping_that_raises_costs_its_key_only() -> None:
    result = {"broken": BrokenMapping(), "ok": 1}
    assert Splitter(Rules()).split(result) == ({"ok": 1}, None, ["broken"])
    assert split_result(result, Rules()).dropped == ["broken"]


class BadKey:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_keys_are_made_strings_and_odd_keys_kept() -> None:
    result = {
        1: 1.0,
        ("t", 2): 2,
        None: "n",
        "a/b": 3,
        "a.b": 4,
        "sp ace": 5,
        "ключ ☃": 6,
        "tab\t": 7,
        BadKey(): 8,
        "nested": {3: {"x y": 9}},
    }
    expected = {
        "1": 1.0,
        "('t', 2)": 2,
        "None": "n",
        "a/b": 3,
        "a.b": 4,
        "sp ace": 5,
        "ключ ☃": 6,
        "tab\t": 7,
        "<BadKey key>": 8,
        "nested/3/x y": 9,
    }
    history, _, dropped = Splitter(Rules()).split(result)
    assert history == expected and dropped is None
    assert all(type(k) is str for k in history)
    assert split_result(result, Rules()).history == expected


def test_ten_thousand_keys() -> None:
    result = {f"k{i}": float(i) for i in range(10_000)} | {"text": "t", "none": None}
    splitter = Splitter(Rules())
    started = time.perf_counter()
    history, _, dropped = splitter.split(result)
    history, _, dropped = splitter.split(result)
    assert time.perf_counter() - started < 0.5
    assert len(history) == 10_002 and dropped is None
    pickle.dumps(history)


def test_wandb_media_and_lists_of_media_are_kept() -> None:
    import wandb

    html = wandb.Html("<b>x</b>")
    assert history_value(html) == (True, html)
    assert history_value([html, html]) == (True, [html, html])
    assert history_value((html,)) == (True, [html])


def test_clean_config_drops_wandb_entry_and_names_objects(tmp_path: Path) -> None:
    lock = threading.Lock()

    class Model:
        pass

    def build() -> None:
        pass

    with (tmp_path / "notes.txt").open("w") as file:
        config = {
            "lr": 0.1,
            "wandb": {"api_key": "secret"},
            "callbacks": [object()],
            "fn": len,
            "local_fn": build,
            "lambda": lambda: 0,
            "cls": Model,
            "method": Path.exists,
            "lock": lock,
            "file": file,
            "object": object(),
            "partial": functools.partial(build),
            "weird": Weird(),
            "nested": {"lock": lock, "n": 1, "t": (1, "a"), 2: {3}},
            "np": np.float64(2.0),
            "arr": np.arange(3),
            "big_arr": np.arange(2000),
            "none": None,
            "when": datetime.date(2024, 1, 2),
            "enum": Color.RED,
            "path": pathlib.PurePosixPath("/x"),
            "decimal": decimal.Decimal("0.5"),
            "tensor": FakeTensor([1, 2]),
        }
        cleaned = clean_config(config)
        assert file.name in cleaned["file"]
        assert cleaned["file"].startswith("<_io.TextIOWrapper name=")
    assert cleaned["lr"] == 0.1
    assert "wandb" not in cleaned and "callbacks" not in cleaned
    assert cleaned["fn"] == "builtins.len"
    assert cleaned["local_fn"] == f"{__name__}.{build.__qualname__}"
    assert cleaned["lambda"].endswith("<lambda>")
    assert cleaned["cls"] == f"{__name__}.{Model.__qualname__}"
    # Named where it is defined: pathlib.Path on Python 3.10-3.12, a base class
    # in pathlib._abc on 3.13.
    defined = Path.exists
    assert cleaned["method"] == f"{defined.__module__}.{defined.__qualname__}"
    assert cleaned["method"].endswith(".exists") and cleaned["method"].startswith("pathlib.")
    # No memory addresses: the same object gives the same text in every run.
    assert cleaned["lock"] == "<unlocked _thread.lock object>"
    assert cleaned["object"] == "<object object>"
    assert " at 0x" not in cleaned["partial"] and "functools.partial" in cleaned["partial"]
    assert cleaned["weird"] == "<Weird object>"
    assert cleaned["nested"] == {
        "lock": "<unlocked _thread.lock object>",
        "n": 1,
        "t": [1, "a"],
        "2": [3],
    }
    assert cleaned["np"] == 2.0 and cleaned["arr"] == [0, 1, 2] and cleaned["none"] is None
    assert cleaned["big_arr"].startswith("array([")
    assert cleaned["when"] == "2024-01-02" and cleaned["enum"] == "RED"
    assert cleaned["path"] == "/x" and cleaned["decimal"] == 0.5
    assert cleaned["tensor"] == [1, 2]
    pickle.dumps(cleaned)


def test_clean_config_survives_a_config_holding_itself() -> None:
    config: dict[str, Any] = {"lr": 0.1}
    config["self"] = config
    cleaned = clean_config(config)
    assert cleaned["lr"] == 0.1
    pickle.dumps(cleaned)


def test_arrays_to_media_builds_images_and_falls_back_to_arrays() -> None:
    import wandb

    row: dict[str, Any] = {
        "img": np.zeros((4, 4, 3), dtype=np.uint8),
        "one": np.zeros((1, 4, 4, 3), dtype=np.uint8),
        "many": np.zeros((3, 4, 4, 3), dtype=np.uint8),
        "chw": np.zeros((3, 8, 8), dtype=np.uint8),  # wandb.Image takes no channels-first array
        "six": np.zeros((2,) * 6, dtype=np.uint8),
        "small": np.arange(4),
        "n": 1,
    }
    notes = arrays_to_media(row)
    assert isinstance(row["img"], wandb.Image)
    assert isinstance(row["one"], wandb.Image)
    assert isinstance(row["many"], list) and len(row["many"]) == 3
    assert set(notes) == {"chw"} and "(3, 8, 8)" in notes["chw"]
    assert isinstance(row["chw"], np.ndarray)  # wandb makes it a histogram
    assert isinstance(row["six"], np.ndarray) and isinstance(row["small"], np.ndarray)
    assert row["n"] == 1


def test_arrays_to_media_readies_histograms_wandb_would_refuse() -> None:
    import wandb

    row: dict[str, Any] = {
        "nan": np.r_[np.arange(40.0), np.nan, np.inf],
        "all_nan": np.full(40, np.nan),
        "bools": np.arange(40) % 2 == 0,
        "fine": np.arange(40.0),
        "small_nan": np.array([1.0, np.nan]),
    }
    notes = arrays_to_media(row)
    assert set(notes) == {"nan", "all_nan"} and "40 of 42" in notes["nan"]
    assert isinstance(row["nan"], wandb.Histogram) and sum(row["nan"].histogram) == 40
    assert isinstance(row["all_nan"], wandb.Histogram)
    assert row["bools"].dtype == np.uint8
    assert row["fine"].dtype == np.float64 and np.isnan(row["small_nan"][1])


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


def test_splitter_sends_config_only_when_it_changes() -> None:
    splitter = Splitter(Rules(log_config=True))
    first = {"loss": 1.0, "pid": 5, "date": "d1", "config": {"lr": 0.1}}
    assert splitter.split(first)[1] == {"pid": 5, "date": "d1", "lr": 0.1}
    assert splitter.split({**first, "loss": 0.5})[1] is None
    assert splitter.split({**first, "date": "d2"})[1] == {"date": "d2"}
    config = {"lr": 0.1}
    splitter.split({**first, "config": config})
    config["lr"] = 0.2  # PBT may change a config in place
    assert splitter.split({**first, "config": config})[1] == {"lr": 0.2}


# -- property-based: random nested results --------------------------------

_LOCK = threading.Lock()

_keys = st.text(min_size=1, max_size=8)
_numbers = st.one_of(
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
_arrays = hnp.arrays(
    dtype=st.one_of(
        hnp.scalar_dtypes(),
        hnp.unicode_string_dtypes(max_len=4),
        hnp.byte_string_dtypes(max_len=4),
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=3),
)
_plain = st.one_of(_numbers, st.none(), st.text(max_size=6))
_lists = st.lists(_plain, max_size=4)
#: Values with no loggable form; fresh generators and lambdas each time.
_unloggable = st.one_of(
    st.just(_LOCK),
    st.builds(lambda: lambda: 1),
    st.builds(lambda: (i for i in range(2))),
    st.builds(object),
    st.builds(lambda: [1, _LOCK]),
)
_leaves = st.one_of(
    _plain,
    _lists,
    _lists.map(tuple),
    _arrays,
    _arrays.map(FakeTensor),
    _unloggable,
)
_values = st.recursive(
    _leaves,
    lambda children: st.dictionaries(_keys, children, max_size=4),
    max_leaves=20,
)
_results = st.dictionaries(_keys, _values, max_size=8)

_NOT_HISTORY = {*NEVER_LOGGED, "config", *AUTO_CONFIG_KEYS}


def _leaves_of(result: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The flattened leaves, written apart from the code under test (last key wins)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(_leaves_of(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _exact_seconds(durations: np.ndarray) -> np.ndarray:
    """Each duration in seconds, computed exactly and rounded once (NaT: NaN)."""
    unit, step = np.datetime_data(durations.dtype)
    whole = {"W": 604800, "D": 86400, "h": 3600, "m": 60, "s": 1}
    digits = {"ms": 3, "us": 6, "ns": 9, "ps": 12, "fs": 15, "as": 18}
    unit_seconds = (
        fractions.Fraction(whole[unit])
        if unit in whole
        else fractions.Fraction(1, 10 ** digits[unit])
    )
    out = [
        math.nan if np.isnat(d) else float(int(d.astype(np.int64)) * step * unit_seconds)
        for d in durations.reshape(-1)
    ]
    return np.asarray(out, dtype=np.float64).reshape(durations.shape)


def _expected(value: Any) -> tuple[bool, Any]:  # noqa: PLR0911 - one return per kind
    """What the history should hold for a leaf: (loggable, value as NumPy sees it)."""
    if isinstance(value, FakeTensor):
        value = value.values
    if type(value) in (int, float, bool, str, type(None)):
        return True, value
    if isinstance(value, (list, tuple)):
        return all(type(v) in (int, float, bool, str, type(None)) for v in value), list(value)
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind == "m" and np.datetime_data(value.dtype)[0] in ("Y", "M"):
            return True, value.astype(str)
        if kind == "m":
            return True, _exact_seconds(value)
        if kind == "M":
            return True, np.asarray(np.datetime_as_string(value))
        if kind == "S":
            return True, np.asarray(np.char.decode(value, "utf-8", "backslashreplace"))
        if kind == "f" and value.dtype.itemsize > 8:
            return True, value.astype(np.float64)
        return True, value
    return False, None


def _same(logged: Any, expected: Any) -> None:
    if isinstance(expected, np.ndarray):
        if expected.dtype.kind == "f" and expected.size == 1:
            item = float(expected.reshape(()))
            assert type(logged) is float
            assert logged == item or (math.isnan(logged) and math.isnan(item))
            return
        if expected.size == 0:
            assert np.size(logged) == 0  # a list keeps no shape for no elements
            return
        if expected.size == 1 and expected.dtype.kind in "biu":
            assert logged == expected.reshape(()).item() and type(logged) in (int, bool)
            return
        np.testing.assert_array_equal(np.asarray(logged, dtype=expected.dtype), expected)
        return
    if isinstance(expected, list):
        assert isinstance(logged, list) and len(logged) == len(expected)
        for a, b in zip(logged, expected, strict=True):
            _same(a, b)
        return
    assert type(logged) is type(expected)
    np.testing.assert_equal(logged, expected)  # NaN equals NaN


@given(_results)
def test_every_loggable_leaf_arrives_and_nothing_raises(result: dict[str, Any]) -> None:
    split = split_result(result, Rules())
    history, config, dropped = Splitter(Rules()).split(result)
    for key, value in _leaves_of(result).items():
        if key.split("/", 1)[0] in _NOT_HISTORY:
            continue
        loggable, expected = _expected(value)
        if loggable:
            assert key in split.history and key in history, key
            _same(split.history[key], expected)
            _same(history[key], expected)
        else:
            assert key not in split.history and key not in history
            assert key in split.dropped and key in (dropped or [])
    # Nothing that cannot cross to the worker is in the output.
    pickle.dumps((split.history, split.config, history, config))


@given(_results, st.lists(_keys, max_size=3))
def test_excluded_keys_never_arrive(result: dict[str, Any], excludes: list[str]) -> None:
    rules = Rules(tuple(excludes), log_config=True)
    split = split_result(result, rules)
    history, config, dropped = Splitter(rules).split(result)
    for key in [*split.history, *split.dropped, *split.config, *history, *(config or {})]:
        assert not any(key == e or key.startswith(f"{e}/") for e in excludes)
    for key in dropped or []:
        assert not any(key == e or key.startswith(f"{e}/") for e in excludes)


@given(_results, st.data())
def test_only_metrics_and_the_x_axis_reach_the_history(
    result: dict[str, Any], data: st.DataObject
) -> None:
    # Named metrics: the result's own keys, their "/"-prefixes, and keys it lacks.
    names = sorted({k.rsplit("/", i)[0] for k in _leaves_of(result) for i in range(2)})
    named_keys = st.sampled_from(names) | _keys if names else _keys
    metrics = data.draw(st.lists(named_keys, max_size=3))
    rules = Rules(metrics=tuple(metrics))
    unfiltered = split_result(result, Rules())
    split = split_result(result, rules)
    history, _, dropped = Splitter(rules).split(result)

    def named(key: str) -> bool:
        return key in X_AXIS_KEYS or any(key == m or key.startswith(f"{m}/") for m in metrics)

    for rows in (split.history, history):
        # Exactly the unfiltered history's keys that metrics names, values unchanged.
        assert set(rows) == {k for k in unfiltered.history if named(k)}
    for key in [*split.dropped, *(dropped or [])]:
        assert named(key)
    assert split.config == unfiltered.config


@given(st.dictionaries(_keys, _values, max_size=6))
def test_clean_config_is_picklable_and_never_holds_the_wandb_entry(config: dict[str, Any]) -> None:
    config = {**config, "wandb": {"api_key": "k"}, "fn": lambda: 0, "lock": _LOCK}
    cleaned = clean_config(config)
    assert "wandb" not in cleaned
    pickle.dumps(cleaned)


_sequences = st.lists(_results, min_size=1, max_size=4)


@given(
    _sequences,
    st.booleans(),
    st.lists(_keys, max_size=2),
    st.none() | st.lists(_keys, max_size=2).map(tuple),
)
def test_splitter_matches_split_result(
    results: list[dict[str, Any]],
    log_config: bool,
    excludes: list[str],
    metrics: tuple[str, ...] | None,
) -> None:
    rules = Rules(tuple(excludes), log_config, metrics)
    splitter = Splitter(rules)
    merged_fast: dict[str, Any] = {}
    merged_ref: dict[str, Any] = {}
    for result in results:
        history, config, dropped = splitter.split(result)
        reference = split_result(result, rules)
        assert history.keys() == reference.history.keys()
        for key, value in history.items():
            np.testing.assert_equal(value, reference.history[key])  # NaN equals NaN
        assert sorted(dropped or []) == sorted(reference.dropped)
        merged_fast.update(config or {})
        merged_ref.update(reference.config)
        assert merged_fast.keys() == merged_ref.keys()


def test_durations_of_any_length_become_their_seconds() -> None:
    # Hypothesis found it: days past ~292 billion years wrapped to -9.2e18 s.
    days = np.array([106751991167301, -3, 0], dtype="timedelta64[D]")
    keep, out = history_value(days)
    assert keep
    assert list(out) == [106751991167301 * 86400.0, -259200.0, 0.0]
    keep, out = history_value(np.array([3, "NaT"], dtype="timedelta64[ns]"))
    assert out[0] == 3e-9 and math.isnan(out[1])
