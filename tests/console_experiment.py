"""A Tune experiment whose trials talk: the console capture tests run it as a script.

``python console_experiment.py STORAGE [--reuse-actors]``, with Ray's
``log_to_driver`` on (the tests' own Ray session has it off). Each trial
prints 1,000 lines, every tenth to stderr, then logs through ``logging``,
reports, and prints once more.
"""

from __future__ import annotations

import sys

import ray
from ray import tune

from tune_wandb import WandbLoggerCallback

LINES = 1000


def chatty(config: dict) -> None:
    import logging
    import sys

    tag = config["tag"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    for i in range(LINES):
        if i % 10 == 0:
            print(f"{tag} err {i}", file=sys.stderr, flush=True)
        else:
            print(f"{tag} out {i}", flush=True)
    logging.getLogger("trial").warning("%s logged", tag)
    tune.report({"loss": 1.0})
    print(f"{tag} after report", flush=True)


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, configure_logging=False)
    tune.run(
        chatty,
        config={"tag": tune.grid_search(["alpha", "beta"])},
        name="console",
        storage_path=sys.argv[1],
        callbacks=[WandbLoggerCallback(project="console-project")],
        verbose=0,
    )
    print("EXPERIMENT-DONE")
