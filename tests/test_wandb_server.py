"""The W&B test server, driven by the real wandb client in subprocesses, and its fault knobs."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from wandb_server import (
    STRUCTURED_CONSOLE_LOGS,
    OutputLine,
    WandbServer,
    make_api_key,
    parse_output_line,
)

# One wandb client process: init, log `rows` rows from `start`, finish. An
# error talking to the server exits with 3 and says what it was.
CLIENT = textwrap.dedent(
    """
    import json
    import sys

    import wandb

    args = json.loads(sys.argv[1])
    try:
        run = wandb.init(dir=args["dir"], **args["init"])
        print("BASE-URL", run.settings.base_url)
        for i in range(args["start"], args["start"] + args["rows"]):
            run.log({"x": i, "y": i / 2})
        run.finish()
    except wandb.errors.CommError as error:
        print("COMM-ERROR", type(error).__name__, error)
        sys.exit(3)
    finally:
        wandb.teardown()
    """
)

# Anything the client would send past WANDB_BASE_URL goes to this dead proxy
# (the discard port: nothing listens) instead of out to the internet.
DEAD_PROXY = "http://127.0.0.1:9"


def client_env(server: WandbServer, home: Path, api_key: str | None = None) -> dict[str, str]:
    """A clean environment for one online client of ``server``, all state under ``home``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("WANDB_") and "proxy" not in name.lower()
    }
    env.update(server.env(api_key))
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(home / name.lower())
    env.update(
        HOME=str(home),  # whatever still looks in ~ (a .netrc) looks here
        WANDB_ERROR_REPORTING="false",
        HTTP_PROXY=DEAD_PROXY,
        HTTPS_PROXY=DEAD_PROXY,
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def run_client(
    server: WandbServer,
    home: Path,
    *,
    rows: int,
    start: int = 0,
    api_key: str | None = None,
    **init: Any,
) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    args = {"dir": str(home), "init": init, "start": start, "rows": rows}
    return subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(args)],
        env=client_env(server, home, api_key),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def post(
    server: WandbServer, path: str, payload: Any, api_key: str | None = None, timeout: float = 5
) -> Any:
    """POST JSON to the server as wandb-core does (basic auth, user ``api``)."""
    auth = base64.b64encode(f"api:{api_key or server.api_key}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310  (a plain http URL of our own server)
        server.url + path,
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  (same)
        return json.loads(response.read())


def graphql(server: WandbServer, query: str, **variables: Any) -> Any:
    return post(server, "/graphql", {"query": query, "variables": variables})


VIEWER = "query Viewer { viewer { id entity username } }"
RESUME_STATUS = (
    "query RunResumeStatus($project: String, $entity: String, $name: String!) {"
    " model(name: $project, entityName: $entity) { id name bucket(name: $name, missingOk: true)"
    ' { id historyLineCount historyTail summaryMetrics config wandbConfig(keys: ["t"]) } } }'
)


def history_line(step: int, **values: Any) -> str:
    return json.dumps({"_step": step, **values})


# -- the real client ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_a_run_online(wandb_server: WandbServer, tmp_path: Path) -> None:
    done = run_client(
        wandb_server,
        tmp_path,
        rows=200,
        id="run1",
        project="p",
        group="g",
        name="n",
        config={"a": 1},
    )
    assert done.returncode == 0, done.stderr
    assert f"BASE-URL {wandb_server.url}" in done.stdout

    (run,) = wandb_server.wait_finished(["run1"], timeout=10)
    assert (run.entity, run.project, run.run_id) == ("test-entity", "p", "run1")
    assert (run.group, run.name, run.config) == ("g", "n", {"a": 1})
    assert [(row["_step"], row["x"], row["y"]) for row in run.history] == [
        (i, i, i / 2) for i in range(200)
    ]
    assert run.summary["x"] == 199 and run.summary["_step"] == 199
    assert run.exit_code == 0 and run.finished and run.dropped_rows == 0
    assert run.api_keys == {wandb_server.api_key}
    assert {"wandb-metadata.json", "config.yaml"} <= set(run.files)
    assert wandb_server.runs() == [run]
    # Every request a run makes has its answer, and none went wrong.
    assert wandb_server.unknown_operations == []
    assert wandb_server.errors == []
    assert {"Viewer", "UpsertBucket", "CreateRunFiles"} <= set(wandb_server.operations)
    # A key from the environment is used, not saved (in a .netrc in HOME).
    assert not (tmp_path / ".netrc").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_a_resumed_run_continues_its_steps(wandb_server: WandbServer, tmp_path: Path) -> None:
    first = run_client(wandb_server, tmp_path / "first", rows=200, id="again", project="p")
    assert first.returncode == 0, first.stderr
    (run,) = wandb_server.wait_finished(["again"], timeout=10)
    assert run.steps == list(range(200))

    second = run_client(
        wandb_server,
        tmp_path / "second",
        rows=50,
        start=200,
        id="again",
        project="p",
        resume="must",
    )
    assert second.returncode == 0, second.stderr

    (run,) = wandb_server.wait_finished(["again"], timeout=10)
    # Had the client not learned the step count from RunResumeStatus, it would
    # have started again at 0 and the server would have dropped all 50 rows.
    assert run.steps == list(range(250))
    assert [row["x"] for row in run.history] == list(range(250))
    assert run.dropped_rows == 0
    assert run.summary["x"] == 249 and run.exit_code == 0 and run.finished
    assert "RunResumeStatus" in wandb_server.operations
    assert wandb_server.unknown_operations == [] and wandb_server.errors == []


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_a_wrong_key_fails_init_and_the_right_one_works(
    wandb_server: WandbServer, tmp_path: Path
) -> None:
    wandb_server.require_key = wandb_server.api_key
    wrong = make_api_key()

    refused = run_client(wandb_server, tmp_path / "wrong", rows=1, api_key=wrong, project="p")
    assert refused.returncode == 3, refused.stderr
    assert "COMM-ERROR" in refused.stdout and "Invalid API key" in refused.stdout
    assert wrong in wandb_server.api_keys
    assert wandb_server.runs() == []

    accepted = run_client(wandb_server, tmp_path / "right", rows=3, id="keyed", project="p")
    assert accepted.returncode == 0, accepted.stderr
    (run,) = wandb_server.wait_finished(["keyed"], timeout=10)
    assert run.api_keys == {wandb_server.api_key} and len(run.history) == 3


PUBLIC_API = textwrap.dedent(
    """
    import json
    import sys

    import wandb

    api = wandb.Api()
    run = api.run(sys.argv[1])
    print(json.dumps([api.viewer.entity, run.state, run.config, run.summary["x"]]))
    wandb.teardown()
    """
)


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_the_public_api_reads_a_run(wandb_server: WandbServer, tmp_path: Path) -> None:
    upsert = (
        "mutation UpsertBucket($name: String, $project: String, $config: JSONString)"
        " { upsertBucket(input: {name: $name, modelName: $project, config: $config})"
        " { bucket { id } inserted } }"
    )
    graphql(wandb_server, upsert, name="read", project="p", config='{"a": {"value": 1}}')
    summary = {"offset": 0, "content": ['{"x": 7}']}
    stream = {"files": {"wandb-summary.json": summary}, "complete": True, "exitcode": 0}
    post(wandb_server, "/files/test-entity/p/read/file_stream", stream)

    done = subprocess.run(
        [sys.executable, "-c", PUBLIC_API, "test-entity/p/read"],
        env=client_env(wandb_server, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["test-entity", "finished", {"a": 1}, 7]
    assert {"GetViewer", "Run"} <= set(wandb_server.operations)
    assert wandb_server.unknown_operations == [] and wandb_server.errors == []


def run_python(
    server: WandbServer, home: Path, code: str, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as an online client of ``server`` (``"-m"``: run the module in ``args``)."""
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", *args] if code == "-m" else [sys.executable, "-c", code, *args]
    return subprocess.run(
        command,
        env=client_env(server, home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def printed(done: subprocess.CompletedProcess[str], tag: str) -> Any:
    """The JSON a client script printed after ``tag``."""
    (line,) = [line for line in done.stdout.splitlines() if line.startswith(tag + " ")]
    return json.loads(line.removeprefix(tag + " "))


# -- artifacts ------------------------------------------------------------------

# Logs a directory artifact twice (new content, then the same again), and a
# reference artifact; `sys.argv[1]` is "online" or "offline".
LOG_ARTIFACTS = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import wandb

    files = Path("ckpt")
    (files / "sub").mkdir(parents=True)
    (files / "a.txt").write_text("first")
    (files / "sub" / "b.bin").write_bytes(bytes(range(256)))
    refs = Path("bucket")
    refs.mkdir()
    (refs / "r.txt").write_text("referenced")
    run = wandb.init(project="p", id="maker", dir=".", mode=sys.argv[1])
    artifact = wandb.Artifact("ckpt", type="model", metadata={"epoch": 1})
    artifact.add_dir(str(files))
    run.log_artifact(artifact, aliases=["best"])
    run.log({"x": 1})
    (files / "a.txt").write_text("second")
    versions = []
    for alias in ("newer", "same"):
        artifact = wandb.Artifact("ckpt", type="model")
        artifact.add_dir(str(files))
        run.log_artifact(artifact, aliases=[alias])
        if sys.argv[1] == "online":
            versions.append(artifact.wait().version)  # the saved version, read back
    print("VERSIONS", json.dumps(versions))
    reference = wandb.Artifact("data", type="dataset")
    reference.add_reference(refs.resolve().as_uri())
    reference.add_reference("https://example.com/big.csv", checksum=False)
    run.log_artifact(reference)
    run.finish()
    wandb.teardown()
    """
)

USE_ARTIFACT = textwrap.dedent(
    """
    import json
    from pathlib import Path

    import wandb

    run = wandb.init(project="p", id="user", dir=".")
    artifact = run.use_artifact("ckpt:best")
    root = Path(artifact.download(root="downloaded"))
    files = {
        str(path.relative_to(root)): path.read_bytes().hex()
        for path in root.rglob("*")
        if path.is_file()
    }
    print("USED", json.dumps([artifact.name, artifact.type, files]))
    run.finish()
    wandb.teardown()
    """
)


def check_logged_artifacts(server: WandbServer) -> None:
    """What LOG_ARTIFACTS logged, as the server has it."""
    maker = server.run("maker")
    # wandb-core saves artifacts concurrently: versions of one collection in
    # order, the collections in any.
    assert [(a.qualified_name, a.type) for a in server.artifacts("ckpt")] == [
        ("ckpt:v0", "model"),
        ("ckpt:v1", "model"),
    ]
    assert [(a.qualified_name, a.type) for a in server.artifacts("data")] == [
        ("data:v0", "dataset")
    ]
    first, second, data = (
        server.artifact("ckpt:v0"),
        server.artifact("ckpt:v1"),
        server.artifact("data:v0"),
    )
    assert sorted(maker.artifacts, key=lambda a: a.qualified_name) == [first, second, data]
    assert all(a.committed and a.run_id == "maker" for a in server.artifacts())
    assert first.files == {"a.txt": b"first", "sub/b.bin": bytes(range(256))}
    assert second.files == {"a.txt": b"second", "sub/b.bin": bytes(range(256))}
    assert first.metadata == {"epoch": 1} and set(first.entries) == {"a.txt", "sub/b.bin"}
    # Same content again made no new version: the existing one took the alias.
    assert (first.aliases, second.aliases) == (["best"], ["latest", "newer", "same"])
    assert server.artifact("ckpt:best") is first and server.artifact("ckpt") is second
    assert data.files == {}
    assert data.references["r.txt"].startswith("file://")
    assert data.references["r.txt"].endswith("/bucket/r.txt")
    assert data.references["big.csv"] == "https://example.com/big.csv"
    assert server.unknown_operations == [] and server.errors == []


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_artifacts_logged_online_and_used(wandb_server: WandbServer, tmp_path: Path) -> None:
    logged = run_python(wandb_server, tmp_path / "maker", LOG_ARTIFACTS, "online")
    assert logged.returncode == 0, logged.stderr
    wandb_server.wait_finished(["maker"], timeout=10)
    check_logged_artifacts(wandb_server)
    # The same content again is the same version, to the client as well.
    assert printed(logged, "VERSIONS") == ["v1", "v1"]
    assert {"CreateArtifact", "CreateArtifactFiles", "CommitArtifact"} <= set(
        wandb_server.operations
    )

    # Another machine (its own cache) downloads a version by its alias.
    used = run_python(wandb_server, tmp_path / "user", USE_ARTIFACT)
    assert used.returncode == 0, used.stderr
    files = {"a.txt": b"first".hex(), "sub/b.bin": bytes(range(256)).hex()}
    assert printed(used, "USED") == ["ckpt:best", "model", files]
    (user,) = wandb_server.wait_finished(["user"], timeout=10)
    first = wandb_server.artifact("ckpt:v0")
    assert user.used_artifacts == [first] and first.used_by == ["user"]
    assert wandb_server.unknown_operations == [] and wandb_server.errors == []


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_artifacts_of_an_offline_run_upload_with_wandb_sync(
    wandb_server: WandbServer, tmp_path: Path
) -> None:
    logged = run_python(wandb_server, tmp_path, LOG_ARTIFACTS, "offline")
    assert logged.returncode == 0, logged.stderr
    assert wandb_server.requests == []  # offline: nothing sent yet
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")

    synced = run_python(wandb_server, tmp_path, "-m", "wandb", "sync", str(run_dir))
    assert synced.returncode == 0, synced.stderr
    (maker,) = wandb_server.wait_finished(["maker"], timeout=10)
    assert [row["x"] for row in maker.history] == [1]
    # The staged copies of the files upload, though the directory changed since.
    check_logged_artifacts(wandb_server)


# -- console output -------------------------------------------------------------

# A run with every kind of console line, then one with console capture off.
CONSOLE = textwrap.dedent(
    """
    import logging
    import sys

    import wandb

    run = wandb.init(project="p", id="talker", dir=".")
    print("out one")
    print("err one", file=sys.stderr)
    run.write_logs("written 1\\nwritten 2")
    logging.basicConfig(stream=sys.stderr)
    logging.getLogger("trial").warning("careful")
    for i in range(3):
        print(f"\\rprogress {i}", end="", flush=True)
    print()
    print("[tag] not a label")
    # wandb's interface: publish_output_raw marks its stream; wandb-core
    # 0.31 drops publish_output's lines (not implemented in its sender).
    run._interface.publish_output_raw("stderr", "raw err\\n")
    run._interface.publish_output("stderr", "dropped\\n")
    print("out two")
    run.finish()

    quiet = wandb.init(
        project="p", id="quiet", dir=".", settings=wandb.Settings(console="off")
    )
    print("not captured")
    quiet._interface.publish_output_raw("stderr", "not captured either\\n")
    quiet.write_logs("written anyway")
    quiet.finish()
    wandb.teardown()
    """
)


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
@pytest.mark.parametrize("structured", [False, True], ids=["plain", "structured"])
def test_console_lines_and_their_streams(
    wandb_server: WandbServer, tmp_path: Path, structured: bool
) -> None:
    if structured:
        wandb_server.features = {STRUCTURED_CONSOLE_LOGS}
    done = run_python(wandb_server, tmp_path, CONSOLE)
    assert done.returncode == 0, done.stderr
    talker, quiet = wandb_server.wait_finished(["talker", "quiet"], timeout=10)

    assert [(line.stream, line.text) for line in talker.lines] == [
        ("stdout", "out one"),
        ("stderr", "err one"),
        ("stdout", "written 1"),  # write_logs: no stream, shown as stdout
        ("stdout", "written 2"),
        ("stderr", "WARNING:trial:careful"),
        ("stdout", "progress 2"),  # rewritten in place by "\r"
        ("stdout", "[tag] not a label"),
        ("stderr", "raw err"),
        ("stdout", "out two"),
    ]
    assert all(line.label is None and line.time for line in talker.lines)
    # The format on the wire: JSON objects if the server has the feature.
    assert all(raw.startswith("{") == structured for raw in talker.output)
    assert "output.log" in talker.files
    # With console capture off only write_logs lines reach the run.
    assert [(line.stream, line.text) for line in quiet.lines] == [("stdout", "written anyway")]
    assert wandb_server.unknown_operations == [] and wandb_server.errors == []


# -- sweeps -------------------------------------------------------------------

SWEEP_CONFIG = {
    "method": "grid",
    "metric": {"name": "loss", "goal": "minimize"},
    "parameters": {"lr": {"values": [0.1, 0.01, 0.001]}},
}

# Two runs, a sweep made of them afterwards, a third run attached through its
# own settings, and the sweep as the public API reads it.
SWEEP = textwrap.dedent(
    """
    import json
    import sys

    import wandb

    config = json.loads(sys.argv[1])
    for run_id, lr in (("r1", 0.1), ("r2", 0.01)):
        run = wandb.init(project="p", id=run_id, dir=".", config={"lr": lr})
        run.log({"loss": lr * 3})
        run.finish()
    sweep_id = wandb.sweep(config, project="p", prior_runs=["r1", "r2"])
    run = wandb.init(
        project="p",
        id="r3",
        dir=".",
        config={"lr": 0.001},
        settings=wandb.Settings(sweep_id=sweep_id),
    )
    run.log({"loss": 0.003})
    run.finish()
    sweep = wandb.Api().sweep(f"test-entity/p/{sweep_id}")
    print("SWEEP", json.dumps([sweep_id, sweep.state, sweep.config, [r.id for r in sweep.runs]]))
    wandb.teardown()
    """
)


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_a_sweep_of_prior_and_attached_runs_then_stopped(
    wandb_server: WandbServer, tmp_path: Path
) -> None:
    done = run_python(wandb_server, tmp_path, SWEEP, json.dumps(SWEEP_CONFIG))
    assert done.returncode == 0, done.stderr
    sweep_id, state, config, runs = printed(done, "SWEEP")
    assert (state, config, runs) == ("RUNNING", SWEEP_CONFIG, ["r1", "r2", "r3"])

    sweep = wandb_server.sweep(sweep_id)
    assert wandb_server.sweeps() == [sweep]
    assert (sweep.entity, sweep.project, sweep.config) == ("test-entity", "p", SWEEP_CONFIG)
    assert sweep.prior_runs_filters == [{"$or": [{"name": "r1"}, {"name": "r2"}]}]
    assert sweep.run_ids == ["r1", "r2", "r3"]
    assert [wandb_server.run(r).sweep for r in ("r1", "r2", "r3")] == [sweep_id] * 3
    # Attached by its settings, the run kept its own id and project.
    assert (wandb_server.run("r3").project, wandb_server.run("r3").config) == ("p", {"lr": 0.001})

    stopped = run_python(
        wandb_server, tmp_path, "-m", "wandb", "sweep", "--stop", f"test-entity/p/{sweep_id}"
    )
    assert stopped.returncode == 0, stopped.stderr
    assert (sweep.state, sweep.states) == ("FINISHED", ["RUNNING", "FINISHED"])
    assert {"UpsertSweep", "GetSweep", "Runs", "SweepWithRuns"} <= set(wandb_server.operations)
    assert wandb_server.unknown_operations == [] and wandb_server.errors == []


# -- shared mode ----------------------------------------------------------------

# One writer of the shared run "team": argv is its label, "primary" or not,
# its config, and a directory for the signals between the writers and the test.
SHARED_WRITER = textwrap.dedent(
    """
    import json
    import sys
    import time
    from pathlib import Path

    import wandb

    label, role, config, signals = sys.argv[1:]
    primary = role == "primary"
    settings = wandb.Settings(
        mode="shared", x_primary=primary, x_label=label, x_update_finish_state=primary
    )
    run = wandb.init(project="p", id="team", dir=".", config=json.loads(config), settings=settings)
    print(f"out of {label}")
    print(f"err of {label}", file=sys.stderr)
    for i in range(3):
        run.log({f"{label}/x": i})
    (Path(signals) / f"{label}-logged").touch()
    if primary:  # the primary finishes last, once the test says so
        while not (Path(signals) / "finish").exists():
            time.sleep(0.05)
    run.finish(exit_code=0 if primary else 3)
    wandb.teardown()
    """
)


def start_writer(
    server: WandbServer, home: Path, signals: Path, label: str, role: str, config: dict[str, Any]
) -> subprocess.Popen[str]:
    home.mkdir(parents=True)
    return subprocess.Popen(
        [sys.executable, "-c", SHARED_WRITER, label, role, json.dumps(config), str(signals)],
        env=client_env(server, home),
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {path.name} after {timeout}s"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_processes")
def test_shared_mode_writers_of_one_run(wandb_server: WandbServer, tmp_path: Path) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    primary = start_writer(wandb_server, tmp_path / "0", signals, "rank0", "primary", {"a": 1})
    secondary = None
    try:
        wait_for(signals / "rank0-logged", primary)
        secondary = start_writer(wandb_server, tmp_path / "1", signals, "rank1", "other", {"b": 2})
        _, err = secondary.communicate(timeout=60)
        assert secondary.returncode == 0, err
        run = wandb_server.run("team")
        assert not run.finished  # the secondary does not finish the run
        (signals / "finish").touch()
        _, err = primary.communicate(timeout=60)
        assert primary.returncode == 0, err
    finally:
        for process in (primary, secondary):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()

    (run,) = wandb_server.wait_finished(["team"], timeout=10)
    assert wandb_server.runs() == [run]
    assert [writer.label for writer in run.writers.values()] == ["rank0", "rank1"]
    rank0, rank1 = run.writer("rank0"), run.writer("rank1")
    assert rank0.client_id != rank1.client_id
    # Each writer counts its own steps; none of its rows is dropped.
    assert [row["rank0/x"] for row in rank0.history] == [0, 1, 2]
    assert [row["rank1/x"] for row in rank1.history] == [0, 1, 2]
    assert len(run.history) == 6 and run.dropped_rows == 0
    assert (rank0.summary["rank0/x"], rank1.summary["rank1/x"]) == (2, 2)
    # Console lines carry their writer's label; the run has them in the order
    # they arrived, each writer's in its order.
    for writer in (rank0, rank1):
        label = writer.label
        mine = [("stdout", f"out of {label}"), ("stderr", f"err of {label}")]
        assert [(line.stream, line.text) for line in writer.lines] == mine
        assert [(line.stream, line.text) for line in run.lines if line.label == label] == mine
    assert len(run.lines) == 4
    # System metrics are labelled too.
    assert rank1.events
    assert all(key.endswith("/l:rank1") for row in rank1.events for key in row if "." in key)
    # Only the primary uploads the run's files; each its own console file.
    assert rank1.files == ["output_rank1.log"]
    assert {"output_rank0.log", "wandb-metadata.json", "config.yaml"} <= set(rank0.files)
    # The run finished once, by the primary, with its exit code.
    assert (rank0.finished, rank1.finished, run.exit_code) == (True, False, 0)
    # The writers' configs are merged (W&B keeps each writer's environment).
    assert (rank0.config, rank1.config, run.config) == ({"a": 1}, {"b": 2}, {"a": 1, "b": 2})
    assert wandb_server.unknown_operations == [] and wandb_server.errors == []


# -- the server's own behaviour -----------------------------------------------


def test_rows_whose_step_does_not_move_forward_are_dropped(wandb_server: WandbServer) -> None:
    stream = "/files/test-entity/p/direct/file_stream"
    lines = [history_line(0, x=0), history_line(1, x=1), history_line(1, x=99)]
    post(wandb_server, stream, {"files": {"wandb-history.jsonl": {"offset": 0, "content": lines}}})
    lines = [history_line(0, x=98), history_line(2, x=2)]
    reply = post(
        wandb_server,
        stream,
        {
            "files": {
                "wandb-history.jsonl": {"offset": 3, "content": lines},
                "wandb-summary.json": {"offset": 0, "content": ['{"x": 2, "_step": 2}']},
            },
            "complete": True,
            "exitcode": 1,
        },
    )
    assert reply == {"exitcode": None, "limits": {}}

    (run,) = wandb_server.wait_finished(["direct"], timeout=1)
    assert [row["x"] for row in run.history] == [0, 1, 2]
    assert run.dropped_rows == 2
    assert run.summary == {"x": 2, "_step": 2}
    assert (run.exit_code, run.finished) == (1, True)
    assert run.api_keys == {wandb_server.api_key}


def test_resume_status_of_a_new_and_of_a_known_run(wandb_server: WandbServer) -> None:
    new = graphql(wandb_server, RESUME_STATUS, project="p", entity="test-entity", name="r")
    assert new["data"]["model"]["bucket"] is None

    config = {"a": {"value": 1}, "_wandb": {"value": {"t": {"1": [1]}}}}
    upsert = (
        "mutation UpsertBucket($name: String, $project: String, $entity: String,"
        " $config: JSONString) { upsertBucket(input: {name: $name, modelName: $project,"
        " entityName: $entity, config: $config}) { bucket { id } inserted } }"
    )
    graphql(wandb_server, upsert, name="r", project="p", entity=None, config=json.dumps(config))
    lines = [history_line(step, x=step) for step in range(20)]
    post(
        wandb_server,
        "/files/test-entity/p/r/file_stream",
        {"files": {"wandb-history.jsonl": {"offset": 0, "content": lines}}},
    )

    known = graphql(wandb_server, RESUME_STATUS, project="p", entity="test-entity", name="r")
    bucket = known["data"]["model"]["bucket"]
    assert bucket["historyLineCount"] == 20
    assert [json.loads(row)["_step"] for row in json.loads(bucket["historyTail"])][-1] == 19
    assert json.loads(bucket["config"]) == config
    assert json.loads(bucket["wandbConfig"]) == {"t": {"1": [1]}}
    assert wandb_server.run("r").config == {"a": 1}
    assert wandb_server.unknown_operations == []


def test_unknown_operations_get_empty_data_and_are_listed(wandb_server: WandbServer) -> None:
    assert graphql(wandb_server, "query Mystery { mystery { id } }") == {"data": {}}
    assert graphql(wandb_server, "{ viewer { entity } }")["data"]["viewer"]["entity"] == (
        "test-entity"
    )
    assert wandb_server.unknown_operations == ["Mystery"]


def test_console_lines_in_both_formats() -> None:
    plain = "2024-05-06T07:08:09.123456 [rank1] hello"
    assert parse_output_line(plain) == OutputLine(
        "stdout", "[rank1] hello", None, "2024-05-06T07:08:09.123456"
    )
    # A label is read only where the run has a writer so labelled.
    assert parse_output_line(plain, ["rank1"]).label == "rank1"
    assert parse_output_line(plain, ["rank1"]).text == "hello"
    assert parse_output_line("ERROR 2024-05-06T07:08:09.123456 ", ["x"]) == OutputLine(
        "stderr", "", None, "2024-05-06T07:08:09.123456"
    )
    structured = {"level": "error", "ts": "2024-05-06T07:08:09.1", "label": "r", "content": "[x] y"}
    assert parse_output_line(json.dumps(structured)) == OutputLine(
        "stderr", "[x] y", "r", "2024-05-06T07:08:09.1"
    )
    assert parse_output_line('{"ts": "t", "content": "out"}') == OutputLine(
        "stdout", "out", None, "t"
    )
    assert parse_output_line("no time at all") == OutputLine("stdout", "no time at all")


def test_shared_writers_keep_their_own_offsets_and_steps(wandb_server: WandbServer) -> None:
    def stream(client_id: str, payload: dict[str, Any]) -> None:
        auth = base64.b64encode(f"api:{wandb_server.api_key}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310  (our own server)
            wandb_server.url + "/files/test-entity/p/team/file_stream",
            data=json.dumps(payload).encode(),
            headers={
                "Authorization": f"Basic {auth}",
                "X-WANDB-ASYNC-CLIENT-ID": client_id,
                "X-WANDB-USE-ASYNC-FILESTREAM": "true",
            },
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  (same)
            response.read()

    def output(offset: int, *lines: str) -> dict[str, Any]:
        return {"files": {"output.log": {"offset": offset, "content": list(lines)}}}

    ts = "2024-05-06T07:08:09.123456"
    stream("a", output(0, f"{ts} [ra] a0", f"{ts} [ra] a1"))
    stream("b", output(0, f"{ts} [rb] b0"))
    stream("a", output(1, f"{ts} [ra] a1, rewritten", f"{ts} [ra] a2"))
    history = [history_line(0, y=0), history_line(1, y=1)]
    stream("b", {"files": {"wandb-history.jsonl": {"offset": 0, "content": history}}})
    stream("a", {"files": {"wandb-history.jsonl": {"offset": 0, "content": history[:1]}}})
    stream("a", {"complete": True, "exitcode": 0})
    stream("b", output(1, f"{ts} [rb] b1, after a finished"))

    run = wandb_server.run("team")
    assert [w.client_id for w in run.writers.values()] == ["a", "b"]
    assert [w.label for w in run.writers.values()] == [None, None]  # no file or metric named them
    assert [line.text for line in run.lines] == [
        "[ra] a0",
        "[ra] a1, rewritten",
        "[rb] b0",
        "[ra] a2",
        "[rb] b1, after a finished",
    ]
    run.writers["a"].label, run.writers["b"].label = "ra", "rb"
    assert [line.label for line in run.lines] == ["ra", "ra", "rb", "ra", "rb"]
    assert run.steps == [0, 1, 0] and run.dropped_rows == 0
    # Written to after one writer finished it, the run stays finished.
    assert (run.finished, run.writers["a"].finished, run.writers["b"].finished) == (
        True,
        True,
        False,
    )


def test_a_sweep_filter_the_server_cannot_read_is_an_error(wandb_server: WandbServer) -> None:
    upsert = (
        "mutation UpsertSweep($config: String, $priorRunsFilters: JSONString)"
        " { upsertSweep(input: {config: $config, priorRunsFilters: $priorRunsFilters})"
        " { sweep { name } } }"
    )
    graphql(wandb_server, upsert, config="method: grid\n", priorRunsFilters="{}")
    (sweep,) = wandb_server.sweeps()
    assert (sweep.config, sweep.project, sweep.run_ids) == ({"method": "grid"}, "uncategorized", [])
    with pytest.raises(urllib.error.HTTPError) as failed:
        graphql(wandb_server, upsert, config="", priorRunsFilters='{"tags": "x"}')
    assert failed.value.code == 500
    failed.value.close()
    assert "unknown runs filter" in wandb_server.errors[-1]


def test_require_key(wandb_server: WandbServer) -> None:
    wandb_server.require_key = wandb_server.api_key
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(wandb_server, "/graphql", {"query": VIEWER}, make_api_key())
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["errors"][0]["message"] == "Invalid API key"
    refused.value.close()
    assert graphql(wandb_server, VIEWER)["data"]["viewer"]["entity"] == "test-entity"


def test_latency_delays_every_answer(wandb_server: WandbServer) -> None:
    wandb_server.latency = 0.4
    for path in ("/graphql", "/sdk/otel/v1/metrics"):
        started = time.monotonic()
        post(wandb_server, path, {"query": VIEWER})
        assert time.monotonic() - started >= 0.4
    wandb_server.latency = 0
    started = time.monotonic()
    graphql(wandb_server, VIEWER)
    assert time.monotonic() - started < 0.4


def test_hang_holds_requests_until_turned_off(wandb_server: WandbServer) -> None:
    wandb_server.hang = True
    with pytest.raises(TimeoutError):
        post(wandb_server, "/graphql", {"query": VIEWER}, timeout=1)

    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(graphql(wandb_server, VIEWER)))
    waiter.start()
    time.sleep(0.3)
    assert answers == []
    wandb_server.hang = False
    waiter.join(timeout=5)
    assert answers and answers[0]["data"]["viewer"]["entity"] == "test-entity"


def test_stop_closes_hung_connections_quickly(wandb_server: WandbServer) -> None:
    wandb_server.hang = True
    request = b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    clients = [socket.create_connection(("127.0.0.1", wandb_server.port)) for _ in range(3)]
    for client in clients:
        client.sendall(request)
    deadline = time.monotonic() + 5
    while len(wandb_server.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)

    started = time.monotonic()
    wandb_server.stop()
    assert time.monotonic() - started < 3
    for client in clients:
        client.settimeout(3)
        assert client.recv(100) == b""  # closed by the server, no answer
        client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", wandb_server.port), timeout=1).close()


def test_refuse_stops_listening_and_listens_again(wandb_server: WandbServer) -> None:
    port = wandb_server.port
    wandb_server.refuse = True
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    wandb_server.refuse = False
    assert wandb_server.port == port
    assert graphql(wandb_server, VIEWER)["data"]["viewer"]["entity"] == "test-entity"


def test_env_points_only_at_the_server(wandb_server: WandbServer, tmp_path: Path) -> None:
    assert wandb_server.env() == {
        "WANDB_BASE_URL": wandb_server.url,
        "WANDB_MODE": "online",
        "WANDB_API_KEY": wandb_server.api_key,
    }
    assert wandb_server.url.startswith("http://127.0.0.1:")
    # wandb takes the key: a prefix, then 40+ word characters.
    assert len(wandb_server.api_key.split("-", 1)[1]) >= 40
    env = client_env(wandb_server, tmp_path)
    assert {name for name in env if name.startswith("WANDB_")} == {
        "WANDB_BASE_URL",
        "WANDB_MODE",
        "WANDB_API_KEY",
        "WANDB_DIR",
        "WANDB_CONFIG_DIR",
        "WANDB_CACHE_DIR",
        "WANDB_DATA_DIR",
        "WANDB_ERROR_REPORTING",
    }
    dirs = [
        value for name, value in env.items() if name.startswith("WANDB_") and name.endswith("_DIR")
    ]
    assert all(Path(value).is_relative_to(tmp_path) for value in [*dirs, env["HOME"]])
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == DEAD_PROXY
