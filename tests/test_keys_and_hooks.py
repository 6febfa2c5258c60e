"""Where the key comes from, and Ray's three W&B hooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trainables
from ray import tune
from wandb_reader import find_runs

from tune_wandb import WandbLoggerCallback

ONLINE = {"mode": "online"}


@pytest.fixture
def no_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key in the environment and no `wandb login` (an empty HOME)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for hook in ("WANDB_SETUP_API_KEY_HOOK", "WANDB_POPULATE_RUN_LOCATION_HOOK"):
        monkeypatch.delenv(hook, raising=False)


@pytest.mark.usefixtures("no_login")
def test_offline_needs_no_key_and_reads_no_file() -> None:
    callback = WandbLoggerCallback(api_key_file="/path/to/file")
    assert callback._key_for({}, {"mode": "offline"}) is None


@pytest.mark.usefixtures("no_login")
def test_key_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-the-file\n")
    callback = WandbLoggerCallback(api_key_file=str(key_file))
    assert callback._key_for({}, ONLINE) == "from-the-file"
    # The trial's entry wins over the callback's arguments.
    assert callback._key_for({"api_key": "from-the-entry"}, ONLINE) == "from-the-entry"
    monkeypatch.setenv("WANDB_API_KEY", "from-the-environment")
    assert WandbLoggerCallback()._key_for({}, ONLINE) == "from-the-environment"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_SETUP_API_KEY_HOOK", "hooks.api_key")
    assert WandbLoggerCallback()._key_for({}, ONLINE).startswith("key-from-the-hook-")


@pytest.mark.usefixtures("no_login")
def test_wandb_login_is_used_as_it_is(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password stored-key\n")
    netrc.chmod(0o600)
    # wandb reads the login itself, in the worker: no key crosses the socket.
    assert WandbLoggerCallback()._key_for({}, ONLINE) is None


@pytest.mark.usefixtures("no_login")
def test_online_without_any_key_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="No W&B API key found") as info:
        WandbLoggerCallback()._key_for({}, ONLINE)
    assert "api_key_file" in str(info.value) and "WANDB_MODE=offline" in str(info.value)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session", "no_leftover_processes")
def test_run_location_and_run_info_hooks(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "hook-out.txt"
    # The populate hook writes these into the driver's environment: restore them
    # after (set first, so monkeypatch records them and removes them again).
    for name in ("WANDB_PROJECT_NAME", "WANDB_GROUP_NAME"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_POPULATE_RUN_LOCATION_HOOK", "hooks.populate_run_location")
    monkeypatch.setenv("WANDB_PROCESS_RUN_INFO_HOOK", "hooks.record_run")
    monkeypatch.setenv("WANDB_TEST_HOOK_OUT", str(out))
    tune.run(
        trainables.report_n,
        config={"x": tune.grid_search([1, 2]), "n": 3},
        name="hooks",
        storage_path=str(storage),
        callbacks=[WandbLoggerCallback()],
        verbose=0,
    )
    runs = find_runs(storage / "hooks")
    assert {(r.project, r.group) for r in runs.values()} == {
        ("project-from-hook", "group-from-hook")
    }
    recorded = sorted(out.read_text().split("\n")[:-1])
    assert recorded == sorted(f"{run_id} project-from-hook" for run_id in runs)


#: A W&B host no `wandb login` has a key for (Ray's workers need the real HOME).
_NO_LOGIN_HOST = "http://127.0.0.1:9"


def _trial_key_on_a_worker(options: dict[str, str]) -> str | None:
    """What a trial's process finds, in a fresh Ray task with no key of its own."""
    import ray

    @ray.remote(num_cpus=0, runtime_env={"env_vars": {"WANDB_BASE_URL": _NO_LOGIN_HOST}})
    def find(options: dict[str, str]) -> str | None:
        from tune_wandb import mixin

        return mixin._trial_key(options)

    return ray.get(find.remote(options))  # type: ignore[no-any-return]


@pytest.mark.usefixtures("ray_session", "no_login")
def test_trials_on_other_nodes_get_the_shared_key(tmp_path: Path) -> None:
    import ray

    import tune_wandb
    from tune_wandb import keyshare

    # A key file that only the driver's machine has.
    missing = {"api_key_file": str(tmp_path / "only-on-the-driver")}
    with pytest.raises(ray.exceptions.RayTaskError, match="share_api_key"):
        _trial_key_on_a_worker(missing)
    key_file = tmp_path / "key"
    key_file.write_text("shared-by-the-driver\n")
    tune_wandb.share_api_key(api_key_file=str(key_file))
    try:
        assert _trial_key_on_a_worker(missing) == "shared-by-the-driver"
        # The node's own key file wins.
        assert _trial_key_on_a_worker({"api_key_file": str(key_file)}) == "shared-by-the-driver"
        tune_wandb.share_api_key(api_key="replaced")
        assert _trial_key_on_a_worker({}) == "replaced"
    finally:
        ray.kill(keyshare._DRIVER_HANDLES.pop(ray.get_runtime_context().get_job_id()))
    with pytest.raises(ValueError, match="found no W&B API key"):
        tune_wandb.share_api_key()


@pytest.mark.slow
def test_the_callback_never_starts_ray_itself(tmp_path: Path) -> None:
    # Ray's get_runtime_context() starts a whole Ray instance when none runs:
    # the callback used outside Tune, or before ray.init, must not.
    code = (
        "import ray\n"
        "from tune_wandb import WandbLoggerCallback\n"
        "callback = WandbLoggerCallback(project='p')\n"
        "callback.setup()\n"
        "callback.on_experiment_end([])\n"
        "print('ray started:', ray.is_initialized())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ray started: False", done.stdout + done.stderr
