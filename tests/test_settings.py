"""Project, group, run id, key and settings resolution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tune_wandb import _settings, _wandb_compat

pytestmark = pytest.mark.unit


def test_project_order() -> None:
    env = {"WANDB_PROJECT_NAME": "ray", "WANDB_PROJECT": "wandb"}
    assert _settings.resolve_project("arg", env) == "arg"
    assert _settings.resolve_project(None, env) == "ray"
    assert _settings.resolve_project(None, {"WANDB_PROJECT": "wandb"}) == "wandb"
    assert _settings.resolve_project(None, {}) is None


def test_group_order() -> None:
    assert _settings.resolve_group("arg", {"WANDB_GROUP_NAME": "env"}, "exp") == "arg"
    assert _settings.resolve_group(None, {"WANDB_GROUP_NAME": "env"}, "exp") == "env"
    assert _settings.resolve_group(None, {}, "exp") == "exp"


def test_run_id_is_stable_and_experiment_specific() -> None:
    a = _settings.run_id("abcde_00001", "exp", "token-1")
    assert a == _settings.run_id("abcde_00001", "exp", "token-1")
    assert a.startswith("abcde_00001-") and len(a) == len("abcde_00001-") + 6
    assert a != _settings.run_id("abcde_00001", "exp", "token-2")
    assert a != _settings.run_id("abcde_00001", "exp2", "token-1")


@given(st.text(alphabet="0123456789abcdef_", min_size=1, max_size=20), st.text(), st.text())
def test_run_id_uses_only_wandb_safe_characters(trial_id: str, exp: str, token: str) -> None:
    run_id = _settings.run_id(trial_id, exp, token)
    assert all(c.isalnum() or c in "-_" for c in run_id)


def test_read_api_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("  abc123  \nsecond line\n")
    assert _settings.read_api_key(str(key_file), None) == "abc123"
    assert _settings.read_api_key(None, "direct") == "direct"
    assert _settings.read_api_key(None, None) is None
    with pytest.raises(ValueError, match="not both"):
        _settings.read_api_key(str(key_file), "direct")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _settings.read_api_key(str(tmp_path / "missing"), None)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        _settings.read_api_key(str(tmp_path / "empty"), None)


def test_read_api_key_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".wandb-key").write_text("homekey\n")
    assert _settings.read_api_key("~/.wandb-key", None) == "homekey"


def test_wandb_env_leaves_the_key_out() -> None:
    env = {"WANDB_API_KEY": "k", "WANDB_MODE": "offline", "HOME": "/root"}
    assert _settings.wandb_env(env) == {"WANDB_MODE": "offline"}


def test_offline_or_disabled() -> None:
    assert _settings.offline_or_disabled({"mode": "offline"}, {})
    assert _settings.offline_or_disabled({}, {"WANDB_MODE": "disabled"})
    assert not _settings.offline_or_disabled({}, {})
    assert not _settings.offline_or_disabled({"mode": "online"}, {"WANDB_MODE": "offline"})


def test_merge_settings_gives_only_the_defaults_the_installed_wandb_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A wandb without the timed flush (before 0.31): its own flush timing, no error.
    fields = frozenset(_settings.QUIET_SETTINGS) - {"x_transaction_log_flush_interval"}
    monkeypatch.setattr(_wandb_compat, "settings_fields", lambda: fields)
    merged = _settings.merge_settings({"x_user_choice": 1}, log_system_metrics=False)
    assert "x_transaction_log_flush_interval" not in merged
    assert merged["silent"] is True
    # The user's own settings are wandb's to accept or refuse, with its message.
    assert merged["x_user_choice"] == 1
    # Where wandb's fields cannot be read, every default is given.
    monkeypatch.setattr(_wandb_compat, "settings_fields", lambda: None)
    assert _settings.merge_settings(None, False) == _settings.QUIET_SETTINGS


def test_merge_settings_user_fields_win() -> None:
    import wandb

    merged = _settings.merge_settings(None, log_system_metrics=False)
    assert merged["silent"] is True and merged["x_disable_stats"] is True
    assert _settings.merge_settings(None, log_system_metrics=True)["x_disable_stats"] is False
    from_obj = _settings.merge_settings(wandb.Settings(console="wrap"), log_system_metrics=False)
    assert from_obj["console"] == "wrap" and from_obj["silent"] is True
    assert _settings.merge_settings({"silent": False}, False)["silent"] is False
    with pytest.raises(TypeError, match=r"wandb\.Settings or a dict"):
        _settings.merge_settings(42, False)


def test_unknown_wandb_init_arguments_are_caught_on_the_driver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from tune_wandb import WandbLoggerCallback

    with pytest.raises(TypeError, match=r"does not take 'projet' \(did you mean 'project'\?\)"):
        WandbLoggerCallback(projet="typo")
    from tune_wandb import _initargs

    callback = WandbLoggerCallback(tags=["fine"], job_type="fine")
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    experiment_token = _settings.experiment_token()
    for _ in range(2):
        run = _initargs.trial_run(
            trial_id="t",
            name="t",
            experiment="e",
            token=experiment_token,
            config={"wandb": {"grup": "g", "notes": "kept"}},
            run_root="/tmp",
            settings={},
        )
        assert "grup" not in run.init_kwargs and run.init_kwargs["notes"] == "kept"
        callback._say_unknown(run.unknown)  # said once per key
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "'grup' (did you mean 'group'?)" in warning and "left out" in warning


def test_checking_wandb_init_arguments_does_not_import_wandb() -> None:
    # The driver reads wandb.init's signature from its source: importing wandb
    # would cost every Tune script most of a second.
    code = (
        "import sys\n"
        "from tune_wandb import _settings\n"
        "assert _settings.unknown_init_kwargs({'projet': 'p'}) == {'projet': 'project'}\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def _run_with_tags(layer_tags: Any, entry_tags: Any) -> Any:
    from tune_wandb import _initargs

    entry = {} if entry_tags is None else {"tags": entry_tags}
    layer = {} if layer_tags is None else {"tags": layer_tags}
    return _initargs.trial_run(
        trial_id="t",
        name="t",
        experiment="e",
        token=_settings.experiment_token(),
        config={"wandb": entry},
        run_root="/tmp",
        settings={},
        layers=[layer],
    )


@pytest.mark.parametrize(
    ("callback_tags", "entry_tags", "merged"),
    [
        (["ray", "tune"], ["lr=0.1", "tune"], ["ray", "tune", "lr=0.1"]),
        (None, ["lr=0.1"], ["lr=0.1"]),
        (("ray",), None, ["ray"]),
        ("ray", "resnet", ["ray", "resnet"]),  # a string is one tag, not its letters
        (["ray", 3], [None, ""], ["ray", "3", "None"]),  # made strings, empty ones left out
    ],
)
def test_a_trials_tags_add_to_the_callbacks(
    callback_tags: Any, entry_tags: Any, merged: list[str]
) -> None:
    assert _run_with_tags(callback_tags, entry_tags).init_kwargs["tags"] == merged


def test_no_tags_anywhere_leaves_wandb_its_default() -> None:
    assert "tags" not in _run_with_tags(None, None).init_kwargs


def test_a_tag_wandb_would_refuse_is_cut_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import wandb

    from tune_wandb import WandbLoggerCallback

    long = "x" * 80
    run = _run_with_tags(["ok"], [long])
    assert run.init_kwargs["tags"] == ["ok", "x" * 64] and run.cut_tags == (long,)
    # What W&B takes: the cut tag passes its own check.
    assert wandb.Settings(run_tags=tuple(run.init_kwargs["tags"])).run_tags == ("ok", "x" * 64)
    callback = WandbLoggerCallback()
    caplog.set_level(logging.WARNING, logger="tune_wandb")
    callback._say_cut_tags(run.cut_tags)
    callback._say_cut_tags(run.cut_tags)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "at most 64 characters" in warning and long in warning
