"""A Tune experiment on a simulated two-node cluster, run in its own process.

``python tests/multinode_experiment.py OUT_DIR`` starts a head node and a
second node (``ray.cluster_utils.Cluster``) and runs two experiments whose
trials can only be placed on the second node: one logged by
``WandbLoggerCallback``, one by ``@wandb_mixin`` (and a third, online, when
``TEST_WANDB_KEY`` is set; the key is taken out of the environment first). Their storage is a
filesystem that records, for every file written into it, the node and
process that wrote it, so the test can tell how the runs reached storage.
Writes ``OUT_DIR/facts.json``: the head and second node ids, each trial's
node and pid, and the driver's pid.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow.fs
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


class RecordingDirFileSystem(DirFileSystem):  # type: ignore[misc]
    """A directory of the local disk that logs who wrote each file, like a bucket's access log."""

    def __init__(self, path: str, log: str, **kwargs: Any) -> None:
        super().__init__(path=path, fs=LocalFileSystem(), **kwargs)
        self.log = log

    def open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode or "a" in mode:
            node = None
            try:
                import ray

                if ray.is_initialized():
                    node = ray.get_runtime_context().get_node_id()
            except ImportError:
                pass
            with open(self.log, "a") as log:
                log.write(json.dumps({"path": path, "node": node, "pid": os.getpid()}) + "\n")
        return super().open(path, mode, *args, **kwargs)


def report_rows(config: dict[str, Any]) -> None:
    """A function trainable: 20 rows, the node and pid it ran on in each."""
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()
    for i in range(20):
        tune.report({"score": config["x"] * i, "node": node, "pid": os.getpid()})


def mixin_rows(config: dict[str, Any]) -> None:
    """The same with @wandb_mixin: wandb.log in the trial's process on its node."""
    import wandb

    from tune_wandb import wandb_mixin

    @wandb_mixin
    def train(config: dict[str, Any]) -> None:
        import ray
        from ray import tune

        node = ray.get_runtime_context().get_node_id()
        for i in range(20):
            wandb.log({"score": config["x"] * i})
            tune.report({"score": config["x"] * i, "node": node, "pid": os.getpid()})

    train(config)


def _where(analysis: Any) -> dict[str, Any]:
    return {
        t.trial_id: {"node": t.last_result["node"], "pid": t.last_result["pid"]}
        for t in analysis.trials
    }


def main(out: Path, key: str | None) -> None:
    """Start the cluster, run the experiments, write the facts.

    With ``key``, also a third, online experiment (``WANDB_BASE_URL`` must
    name a W&B server that takes that key).
    """
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    import tune_wandb
    from tune_wandb import WandbLoggerCallback

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    second = cluster.add_node(num_cpus=2, resources={"second_node": 2})
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    (out / "bucket").mkdir()
    storage = pyarrow.fs.PyFileSystem(
        pyarrow.fs.FSSpecHandler(
            RecordingDirFileSystem(str(out / "bucket"), str(out / "writes.jsonl"))
        )
    )
    trials: dict[str, Any] = {}
    try:
        for name, trainable, callbacks in (
            ("callback", report_rows, [WandbLoggerCallback(project="multinode")]),
            ("mixin", mixin_rows, []),
        ):
            analysis = tune.run(
                tune.with_resources(trainable, {"cpu": 1, "second_node": 1}),
                config={"x": tune.grid_search([1, 2]), "wandb": {"project": "multinode"}},
                callbacks=callbacks,
                storage_path="experiments",
                storage_filesystem=storage,
                name=name,
                verbose=0,
            )
            trials[name] = _where(analysis)
        if key is not None:
            # Online, through tune_wandb.run: the key written in the config is
            # taken out before Ray stores it and shared with the trials, whose
            # node has no key of its own (no WANDB_API_KEY, no wandb login).
            analysis = tune_wandb.run(
                tune.with_resources(mixin_rows, {"cpu": 1, "second_node": 1}),
                config={
                    "x": tune.grid_search([1, 2]),
                    "wandb": {"project": "multinode", "mode": "online", "api_key": key},
                },
                storage_path="experiments",
                storage_filesystem=storage,
                name="online",
                verbose=0,
            )
            trials["online"] = _where(analysis)
        facts = {
            "head": ray.get_runtime_context().get_node_id(),
            "second": second.node_id,
            "driver_pid": os.getpid(),
            "trials": trials,
        }
        (out / "facts.json").write_text(json.dumps(facts))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    # Imported by name, so Ray's workers (with tests/ on their PYTHONPATH) find
    # the trainables and the filesystem by reference, not as __main__.
    import multinode_experiment

    multinode_experiment.main(Path(sys.argv[1]), os.environ.pop("TEST_WANDB_KEY", None))
