"""Shared fixtures: one Ray instance per session, offline wandb, process checks."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import settings
from wandb_server import wandb_server  # noqa: F401  (fixture)

#: Command-line fragments of the processes tune-wandb starts.
OUR_PROCESSES = ("tune_wandb._launcher", "wandb-core")


_SESSION_START = time.time()

#: Set in this test process's environment, so inherited by every process it
#: starts: an orphan carrying this value is this session's (pytest-xdist runs
#: several sessions side by side, from the same environment).
_SESSION_TAG = ("TUNE_WANDB_TEST_SESSION", f"{os.getpid()}-{_SESSION_START}")
os.environ[_SESSION_TAG[0]] = _SESSION_TAG[1]
# A plain ray.init() (a user's script run by a test) joins the cluster named
# in /tmp/ray/ray_current_cluster if there is one: with pytest-xdist, another
# session's (tests/multinode_experiment.py's). Each starts its own instead.
os.environ["RAY_ADDRESS"] = "local"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The package's doctests are unit tests (pure logic, run by ``nox -s unit``)."""
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(pytest.mark.unit)


# Property tests: 200 examples each in the full suite; 25 in the matrix
# sessions (`nox -s smoke oldest` pass --hypothesis-profile quick), which look
# for what a Python or a release changes, not for rare inputs. No deadline:
# a loaded CI machine is not a slow test.
settings.register_profile("full", max_examples=200, deadline=None)
settings.register_profile("quick", max_examples=25, deadline=None)
settings.load_profile("full")

#: Modules whose tests share a module fixture that costs minutes (the corpus
#: scripts, the built docs site, the built wheel): one pytest-xdist process
#: runs each of them whole, so the fixture runs once.
_WHOLE_MODULES = ("tests/test_corpus.py", "tests/test_docs.py", "tests/test_packaging.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``-n``: each test on its own, but the modules above each in one process.

    (pytest-xdist's own ``--dist loadgroup`` would do, but its groups are not
    applied with pytest 9; ``loadscope`` alone runs each module in one process,
    so the fault matrix's minutes in a row would set the suite's time.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class _Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in _WHOLE_MODULES else nodeid

    return _Scheduling(config, log)


def our_processes() -> list[psutil.Process]:
    """Every live launcher, worker (forked launchers) and wandb-core of this test session.

    That is, those below this process, and orphans (their parent gone) that
    inherited this session's tag; another test session's processes on the same
    machine (a pytest-xdist sibling's too) are not counted.
    """
    me = psutil.Process()
    mine = {p.pid for p in me.children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "ppid", "create_time"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if not any(fragment in cmdline for fragment in OUR_PROCESSES):
            continue
        if proc.pid in mine or (proc.info["ppid"] == 1 and _tagged(proc)):
            found.append(proc)
    return found


def _tagged(proc: psutil.Process) -> bool:
    try:
        return proc.environ().get(_SESSION_TAG[0]) == _SESSION_TAG[1]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def wait_no_processes(timeout: float = 10.0) -> list[psutil.Process]:
    """Wait until none of our processes is alive; returns the ones left."""
    deadline = time.monotonic() + timeout
    while True:
        left = our_processes()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture(scope="session", autouse=True)
def _wandb_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Offline wandb, with its config, cache and staging dirs inside the test tree."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(name, str(home / name.lower()))
        for name in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_PROJECT_NAME", "WANDB_GROUP_NAME"):
            mp.delenv(name, raising=False)
        # Ray Tune's end-of-run output goes to the terminal; tests read files instead.
        mp.setenv("RAY_AIR_NEW_OUTPUT", "0")
        # The tests' Ray runs with log_to_driver=False (see ray_session): the
        # callback's warning about it is said once per process, here rather
        # than in whichever test comes first (tests/test_console.py checks it).
        from tune_wandb.callback import _warn_once_of_no_output

        _warn_once_of_no_output()
        yield


#: Set while this session's Ray instance (ray_session) is up.
_RAY_SESSION_UP = threading.Event()


#: Tests that left a Ray instance of their own behind (named at the end).
_STRAY_RAY: list[str] = []


@pytest.fixture(autouse=True)
def _ray_only_from_ray_session(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shut down a Ray instance a test started outside ray_session, and name the test.

    ``tune.run`` and ``ray.get_runtime_context()`` start one when none runs:
    left running, ray_session's ``ray.init`` fails in whichever test next
    needs it (with pytest-xdist, in a process that happened to run this one
    first), and every later test of that process errors.
    """
    yield
    ray = sys.modules.get("ray")
    if _RAY_SESSION_UP.is_set() or ray is None or not ray.is_initialized():
        return
    with _rays_own_resource_warnings_ignored():
        ray.shutdown()
    request.node.user_properties.append(("stray_ray", True))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the tests that started Ray outside ray_session (pytest-xdist's reports too)."""
    if report.when == "teardown" and ("stray_ray", True) in report.user_properties:
        _STRAY_RAY.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the tests that started Ray outside ray_session: they should use it."""
    if _STRAY_RAY:
        terminalreporter.write_sep("-", "tests that started Ray outside ray_session")
        for nodeid in _STRAY_RAY:
            terminalreporter.write_line(nodeid)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the whole session (starting Ray costs seconds)."""
    import ray
    import trainables
    from ray import cloudpickle

    # Ray's workers cannot import the tests' modules: send the trainables by value.
    cloudpickle.register_pickle_by_value(trainables)

    # address="local": a new instance even if another Ray runs on this machine.
    with _rays_own_resource_warnings_ignored():
        if ray.is_initialized():  # left by a test before this fixture (see above)
            ray.shutdown()
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    _RAY_SESSION_UP.set()
    yield
    _RAY_SESSION_UP.clear()
    with _rays_own_resource_warnings_ignored():
        ray.shutdown()


@contextlib.contextmanager
def _rays_own_resource_warnings_ignored() -> Iterator[None]:
    """Ignore the ResourceWarnings of Ray's own start and stop, and collect their objects.

    Ray 2.53 leaves the /dev/null it opens for its processes' output unclosed
    in ``ray.init`` and drops its monitor's ``Popen`` unwaited in
    ``ray.shutdown`` (Ray 2.60 does neither): Ray's, not ours, and with
    warnings as errors they would fail whichever test the garbage collector
    happened to run in.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """An experiment storage directory for one test."""
    path = tmp_path / "storage"
    path.mkdir()
    return path


@pytest.fixture
def no_leftover_processes() -> Iterator[None]:
    """Fail the test if a launcher, worker or wandb-core outlives it."""
    before = {p.pid for p in our_processes()}
    yield
    left = [p for p in wait_no_processes(timeout=5.0) if p.pid not in before]
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"
