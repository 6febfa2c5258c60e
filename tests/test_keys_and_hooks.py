"""Where the key comes from, and Ray's three W&B hooks."""

from __future__ import annotations

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
    # The populate hook writes these into the driver's environment: restore them after.
    monkeypatch.delenv("WANDB_PROJECT_NAME", raising=False)
    monkeypatch.delenv("WANDB_GROUP_NAME", raising=False)
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
