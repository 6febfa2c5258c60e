"""Trainables used by the end-to-end tests (sent to Ray's workers by value)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import tune


def report_n(config: dict[str, Any]) -> None:
    """Report ``config["n"]`` results: a loss, a nested metric, a string and a bool."""
    for i in range(config["n"]):
        tune.report(
            {
                "loss": config["x"] / (i + 1),
                "nested": {"acc": i / config["n"], "deep": {"v": i}},
                "note": "text is not a metric",
                "flag": i % 2 == 0,
            }
        )


def fail_after(config: dict[str, Any]) -> None:
    """Report ``config["n"]`` results, then raise if ``config["fail"]``."""
    for i in range(config["n"]):
        tune.report({"loss": float(i)})
    if config.get("fail"):
        raise RuntimeError("trial failed on purpose")


def with_media(config: dict[str, Any]) -> None:
    """Report an image array, a batch of images and a size-1 array."""
    rng = np.random.default_rng(0)
    for i in range(3):
        tune.report(
            {
                "image": rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8),
                "images": rng.integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8),
                "video": rng.integers(0, 255, size=(1, 4, 3, 8, 8), dtype=np.uint8),
                "scalar_array": np.array([i * 1.5]),
                "np_scalar": np.float32(i),
                "vector": np.arange(4),
            }
        )


class CheckpointingTrainable(tune.Trainable):
    """A class trainable that checkpoints, for restore tests."""

    def setup(self, config: dict[str, Any]) -> None:
        self.count = 0

    def step(self) -> dict[str, Any]:
        self.count += 1
        return {"count": self.count}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"count": self.count}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.count = checkpoint["count"]


def checkpointed(config: dict[str, Any]) -> None:
    """Count to ``n``, checkpointing every ``every``; fail once at each iteration in ``fail_at``.

    Each failure happens only while its marker file (``<markers>/failed-<it>``)
    does not exist, so a retried or restored trial goes past it.
    """
    import tempfile
    from pathlib import Path

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = int(Path(d, "it").read_text())
    for it in range(start + 1, config["n"] + 1):
        if it in config.get("fail_at", ()):
            marker = Path(config["markers"], f"failed-{it}")
            if not marker.exists():
                marker.touch()
                raise RuntimeError(f"failing once at iteration {it}")
        metrics = {"value": it * 10}
        if it % config["every"] == 0:
            with tempfile.TemporaryDirectory() as d:
                Path(d, "it").write_text(str(it))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)


def seed_train_fn(config: dict[str, Any]) -> None:
    """The seed document's training function, for Ray 2.60 (report takes a dict)."""
    for i in range(10):
        loss = config["parameter_1"] + config["parameter_2"] + i
        tune.report({"loss": loss})


def ray_docs_train_func(config: dict[str, Any]) -> None:
    """The function of the example in Ray 2.60's WandbLoggerCallback docstring.

    Ray's example calls ``train.report`` without importing ``train``; in a Tune
    function trainable that is ``tune.report``.
    """
    import random

    offset = random.random() / 5
    for epoch in range(2, config["epochs"]):
        acc = 1 - (2 + config["lr"]) ** -epoch - random.random() / epoch - offset
        loss = (2 + config["lr"]) ** -epoch + random.random() / epoch + offset
        tune.report({"acc": acc, "loss": loss})


def seed_mixin_fn(config: dict[str, Any]) -> None:
    """The seed document's @wandb_mixin example, for Ray 2.60 (config, not self.config)."""
    import wandb

    from tune_wandb import wandb_mixin

    @wandb_mixin
    def train_fn(config: dict[str, Any]) -> None:
        for _ in range(10):
            loss = config["a"] + config["b"]
            wandb.log({"loss": loss})
            tune.report({"loss": loss})
        if config.get("fail"):
            raise RuntimeError("failing on purpose after 10 rows")

    train_fn(config)


def mixin_fails_once(config: dict[str, Any], data: list[int] | None = None) -> None:
    """@wandb_mixin trainable with a with_parameters argument; fails once at row 3."""
    from pathlib import Path

    import wandb

    from tune_wandb import wandb_mixin

    @wandb_mixin
    def train(config: dict[str, Any], data: list[int] | None = None) -> None:
        assert data == [1, 2, 3]
        marker = Path(config["marker"])
        for i in range(1, 6):
            if i == 3 and not marker.exists():
                marker.touch()
                raise RuntimeError("failing once")
            wandb.log({"row": i})
            tune.report({"row": i})

    train(config, data=data)


def _wandb_counting() -> type:
    from tune_wandb import WandbTrainableMixin

    class WandbCounting(WandbTrainableMixin, tune.Trainable):  # type: ignore[misc]
        """A class trainable that logs through self.wandb, from setup on."""

        def setup(self, config: dict[str, Any]) -> None:
            self.count = 0
            self.wandb.log({"setup_logged": 1})

        def step(self) -> dict[str, Any]:
            self.count += 1
            self.wandb.log({"count": self.count})
            return {"count": self.count, "done": self.count >= config_steps(self.config)}

    return WandbCounting


def config_steps(config: dict[str, Any]) -> int:
    return int(config.get("steps", 5))


WandbCounting = _wandb_counting()


def uses_setup_wandb(config: dict[str, Any]) -> None:
    """Ray's modern form: setup_wandb in the function, finish() never called."""
    from tune_wandb import setup_wandb

    run = setup_wandb(config, project="setup-project", trial_name="named-by-setup")
    for i in range(1, 8):
        run.log({"row": i})
        tune.report({"row": i})


def train_v2_worker(config: dict[str, Any]) -> None:
    """A Ray Train V2 worker logging through setup_wandb, finish() never called."""
    import ray.train

    from tune_wandb import setup_wandb

    run = setup_wandb(config, project="train-v2", rank_zero_only=config["rank_zero_only"])
    rank = ray.train.get_context().get_world_rank()
    for i in range(5):
        run.log({"row": i, "rank": rank})
    ray.train.report({"row": 4})
    if config.get("fail"):
        raise RuntimeError("worker failed on purpose")


class FakeTensor:
    """A torch-like tensor without torch: ``detach().cpu().numpy()`` gives its values."""

    def __init__(self, values: Any) -> None:
        self.values = np.asarray(values)

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self.values


class Opaque:
    """An object with no loggable form."""


def bad_input(config: dict[str, Any]) -> None:
    """Report ``config["n"]`` results holding every kind of awkward value beside ``ok``."""
    import datetime

    rng = np.random.default_rng(0)
    for i in range(config["n"]):
        tune.report(
            {
                "ok": i,
                "nan": float("nan"),
                "inf": float("inf"),
                "ninf": -float("inf"),
                "none": None,
                "text": "héllo ☃",
                "flag": i % 2 == 0,
                "deep": {"l2": {"l3": {"l4": {"l5": {"l6": i, "s": "six deep"}}}}},
                "empty": {},
                "list": [1, 2.5, None],
                "tuple": (3, 4),
                "arr0": np.array(2.5),
                "arr1": np.arange(5),
                "arr1_big": np.arange(100.0),
                "arr2": np.ones((2, 3), dtype=np.int8),
                "arr6": np.zeros((2,) * 6),
                "f16_big": np.ones(40, dtype=np.float16),
                "bool_big": np.arange(40) % 2 == 0,
                "nan_big": np.r_[np.arange(40.0), np.nan, np.inf],
                "image": rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8),
                "chw": rng.integers(0, 255, size=(3, 8, 8), dtype=np.uint8),
                "complex_arr": np.array([1 + 2j, 3j]),
                "dates": np.array(["2024-01-02", "NaT"], dtype="datetime64[D]"),
                "str_arr": np.array(["a", "b"]),
                "obj_arr": np.array([1, "a", None], dtype=object),
                "tensor": FakeTensor([0.5, 1.5]),
                "tensor_scalar": FakeTensor(3.0),
                "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
                "duration": datetime.timedelta(minutes=2),
                "lambda": lambda: 1,
                "opaque": Opaque(),
                "key/with/slash": 1,
                "key.with.dot": 2,
                "key with space": 3,
                "ключ ☃": 4,
                "_step": 100,
            }
        )


def many_keys(config: dict[str, Any]) -> None:
    """Report ``config["n"]`` results of ``config["keys"]`` numbers each."""
    for i in range(config["n"]):
        tune.report({"ok": i, **{f"k{j:05d}": float(i + j) for j in range(config["keys"])}})


def broken_media(config: dict[str, Any]) -> None:
    """Report ``n`` rows; the one at ``bad_at`` also holds a wandb.Table of a plain object.

    The table is wandb media, so it passes the driver's filters and pickles,
    but ``wandb.log`` raises (TypeError: not JSON serializable) in the worker.
    """
    import wandb

    for i in range(1, config["n"] + 1):
        row: dict[str, Any] = {"ok": i, "loss": 1.0 / i}
        if i == config["bad_at"]:
            row["bad"] = wandb.Table(columns=["what"], data=[[object()]])
        tune.report(row)


def paced(config: dict[str, Any]) -> None:
    """Report ``n`` rows, one every ``pause`` seconds (a trial of fixed length)."""
    import time

    for i in range(config["n"]):
        time.sleep(config["pause"])
        tune.report({"loss": 1.0 / (i + 1)})


class SetupWandbClass(tune.Trainable):
    """Ray's documented pattern: setup_wandb in a class trainable's setup(), with the
    trial's id and name; fails in step ``config["fail_at"]`` if given."""

    def setup(self, config: dict[str, Any]) -> None:
        from tune_wandb import setup_wandb

        self.run = setup_wandb(
            config, trial_id=self.trial_id, trial_name=self.trial_name, group="G", project="cls"
        )

    def step(self) -> dict[str, Any]:
        if self.iteration + 1 == self.config.get("fail_at"):
            raise RuntimeError("step failed on purpose")
        self.run.log({"row": self.iteration + 1})
        return {"row": self.iteration + 1, "done": self.iteration + 1 >= 3}


class NoCheckpoints(tune.Trainable):
    """A class trainable without save_checkpoint: Tune's end-of-run checkpoint raises
    NotImplementedError after its last result, and Tune marks the trial ERROR."""

    def step(self) -> dict[str, Any]:
        return {"row": self.iteration + 1}


def _mixin_no_checkpoints() -> type:
    from tune_wandb import WandbTrainableMixin

    class MixinNoCheckpoints(WandbTrainableMixin, NoCheckpoints):  # type: ignore[misc]
        """NoCheckpoints with the mixin's run."""

    return MixinNoCheckpoints


MixinNoCheckpoints = _mixin_no_checkpoints()


class SetupWandbNoCheckpoints(NoCheckpoints):
    """NoCheckpoints whose setup() starts the run with setup_wandb, as Ray's docs do."""

    def setup(self, config: dict[str, Any]) -> None:
        from tune_wandb import setup_wandb

        setup_wandb(config, trial_id=self.trial_id, trial_name=self.trial_name, project="p")
