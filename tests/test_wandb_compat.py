"""wandb's private API as tune_wandb._wandb_compat uses it, checked against the installed wandb.

Each test names the attribute path, signature or number one function of the
compatibility module uses: a wandb release that changes one fails here.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tune_wandb import _runfile, _settings, _wandb_compat

# In the smoke subset: where a release of wandb moves what we rely on, it fails here.
pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("no_leftover_processes")]


def test_record_field_numbers_are_wandbs() -> None:
    record = _wandb_compat.record_class()
    fields = record.DESCRIPTOR.fields_by_name
    assert fields["history"].number == _wandb_compat.HISTORY_FIELD
    assert fields["exit"].number == _wandb_compat.EXIT_FIELD
    oneof = record.DESCRIPTOR.oneofs_by_name["record_type"]
    assert {f.number for f in oneof.fields} == _wandb_compat.RECORD_TYPE_FIELDS


def test_init_parameters_are_wandb_inits() -> None:
    import wandb

    assert _wandb_compat.init_parameters() == frozenset(inspect.signature(wandb.init).parameters)


def test_settings_fields_are_wandb_settings() -> None:
    import wandb

    assert _wandb_compat.settings_fields() == frozenset(wandb.Settings.model_fields)
    # Every default tune-wandb gives is one the installed wandb takes.
    wandb.Settings(**_settings.merge_settings(None, log_system_metrics=True))


def test_attach_is_wandbs_private_attach() -> None:
    from wandb.sdk import wandb_init

    assert "attach_id" in inspect.signature(wandb_init._attach).parameters


def test_service_lost_errors_are_wandbs() -> None:
    from wandb.sdk.lib.service.service_port_file import ServicePollForTokenError
    from wandb.sdk.lib.service.service_token import WandbServiceConnectionError
    from wandb.sdk.mailbox.mailbox_handle import HandleAbandonedError

    errors = _wandb_compat.service_lost_errors()
    expected = {
        ConnectionError,
        HandleAbandonedError,
        WandbServiceConnectionError,
        ServicePollForTokenError,
    }
    assert expected == set(errors)


def test_installed_requirements_lists_wandb() -> None:
    import wandb

    assert f"wandb=={wandb.__version__}\n" in (_wandb_compat.installed_requirements() or "")


def test_detached_service_gives_its_process_and_address() -> None:
    process, token = _wandb_compat.start_detached_service("30s")
    try:
        assert process.poll() is None
        assert isinstance(token, str) and token
    finally:
        process.kill()
        process.wait(10)


# A run written by the installed wandb in a process of its own: the service
# this process started, whether a run is live, and the run file it wrote.
_RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    import wandb
    from tune_wandb import _runfile, _wandb_compat

    assert _wandb_compat.has_live_run() is False  # no wandb set up yet
    run = wandb.init(mode="offline", dir=sys.argv[1], project="p",
                     settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    service = _wandb_compat.own_service_process()
    assert service is not None and service.poll() is None, service
    assert _wandb_compat.has_live_run() is True
    for i in range(25):
        run.log({"i": i})
    run.finish()
    assert _wandb_compat.has_live_run() is False
    # finish() may return before wandb-core has written the end of the file.
    assert _runfile.wait_for_exit_record(run.settings.sync_file, 30)
    print(run.settings.sync_file, flush=True)
    _wandb_compat.kill_own_service()
    assert service.poll() is not None
    """
)


def test_service_handle_live_run_and_run_file(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(_RUN_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_file = proc.stdout.strip().splitlines()[-1]
    counter = _runfile.HistoryCounter(run_file)
    assert counter.update() == 25
    assert counter.exited
    record = _runfile.last_record(run_file)
    assert record.WhichOneof("record_type") == "exit"


def test_upsert_sweep_is_wandbs_private_upsert() -> None:
    from wandb.apis.public import sweeps

    parameters = inspect.signature(sweeps._upsert_sweep).parameters
    assert {"obj_id", "entity", "project", "state", "prior_runs"} <= set(parameters)
    # It returns the sweep and the server's config warnings.
    assert "tuple" in str(inspect.signature(sweeps._upsert_sweep).return_annotation)


def test_console_lines_use_wandbs_raw_output_record_and_run_restore() -> None:
    from wandb.sdk.interface.interface import InterfaceBase
    from wandb.sdk.wandb_run import Run

    # publish_console: the interface's raw output, by stream name.
    assert list(inspect.signature(InterfaceBase.publish_output_raw).parameters)[:3] == [
        "self",
        "name",
        "data",
    ]
    # release_own_console: the run's own stream wrappers, removed.
    assert list(inspect.signature(Run._restore).parameters) == ["self"]
