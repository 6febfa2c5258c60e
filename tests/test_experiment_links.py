"""``<experiment>/wandb/``: links to every run, so W&B's own viewer sees the experiment."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from offline_runs import Piece, tune_rows, write_offline_runs

from tune_wandb import WandbLoggerCallback, sync

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def write_experiment(experiment: Path) -> None:
    """Two trials; the first one's run was resumed (two pieces)."""
    write_offline_runs(
        [
            Piece(experiment / "trial_a", "run-a", tune_rows(range(1, 4), loss=1.0)),
            Piece(
                experiment / "trial_a", "run-a", tune_rows(range(4, 6), loss=0.5), suffix="part2"
            ),
            Piece(experiment / "trial_b", "run-b", tune_rows(range(1, 4), loss=0.25)),
        ]
    )


def test_links_to_every_piece_which_ls_and_sync_skip(tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    write_experiment(experiment)
    before = [(run.run_id, run.pieces) for run in sync.find_local_runs(experiment)]

    links = sync.link_runs(experiment)
    assert links == experiment / "wandb"
    pieces = [piece for _, run_pieces in before for piece in run_pieces]
    assert sorted(p.name for p in links.iterdir()) == sorted(p.name for p in pieces)
    for piece in pieces:
        link = links / piece.name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == piece.resolve()
    # ls and sync see the same runs as before, each piece once.
    assert [(run.run_id, run.pieces) for run in sync.find_local_runs(experiment)] == before

    # Moved whole, the links still lead to the runs; made again, nothing changes.
    moved = tmp_path / "moved"
    experiment.rename(moved)
    assert all(link.exists() for link in (moved / "wandb").iterdir())
    assert sync.link_runs(moved) == moved / "wandb"
    assert len(list((moved / "wandb").iterdir())) == 3

    # A deleted trial's links go.
    shutil.rmtree(moved / "trial_b")
    sync.link_runs(moved)
    left = [link.name for link in (moved / "wandb").iterdir()]
    assert len(left) == 2 and all(name.split("-run-")[-1].startswith("a") for name in left)


def test_no_runs_no_directory_and_errors_are_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert sync.link_runs(tmp_path) is None
    assert sync.link_runs(None) is None
    assert not (tmp_path / "wandb").exists()

    experiment = tmp_path / "experiment"
    write_experiment(experiment)
    (experiment / "wandb").write_text("a file where the directory would go")
    assert sync.link_runs(experiment) is None
    (record,) = [r for r in caplog.records if r.name == "tune_wandb"]
    assert "could not link the experiment's W&B runs" in record.getMessage()


_CONTROL = re.compile(r"\x1b(\[[0-9;?>=$]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9]|[=>])")


def leet_screen(path: Path, until: str, timeout: float = 60.0) -> str:
    """What ``wandb leet PATH`` shows in a 160x40 terminal, once ``until`` appears on it.

    Compared without white space, which a terminal program may draw by moving
    the cursor instead.
    """
    until = "".join(until.split())
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    viewer = subprocess.Popen(
        [sys.executable, "-m", "wandb", "leet", str(path)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**env, "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(terminal)
    screen = ""
    deadline = time.monotonic() + timeout
    try:
        while until not in "".join(screen.split()) and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the viewer closed the terminal
                    break
                # Drop the terminal's control sequences; keep the text.
                screen += _CONTROL.sub("", chunk.decode(errors="replace"))
    finally:
        # The viewer runs wandb-core in its process group: stop them both.
        os.killpg(viewer.pid, signal.SIGKILL)
        viewer.wait()
        os.close(controller)
    return screen


@pytest.mark.slow
def test_wandb_leet_browses_the_whole_experiment(tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    write_experiment(experiment)
    # Without the links, W&B's viewer finds nothing at the experiment level.
    assert "Norunsfound" in "".join(leet_screen(experiment, until="No runs found").split())

    sync.link_runs(experiment)
    # The list's title ("Runs [3 items]") may be drawn in pieces, between other ones.
    screen = leet_screen(experiment / "wandb", until="[3 items]")
    assert "[3items]" in "".join(screen.split()), screen[-2000:]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_the_callback_links_the_experiments_runs_at_its_end(tmp_path: Path) -> None:
    import trainables
    from ray import tune

    tune.run(
        trainables.report_n,
        config={"n": 3, "x": tune.grid_search([1.0, 2.0])},
        storage_path=str(tmp_path),
        name="linked",
        callbacks=[WandbLoggerCallback(project="links", mode="offline")],
        verbose=0,
    )
    runs = sync.find_local_runs(tmp_path / "linked")
    assert len(runs) == 2
    links = (tmp_path / "linked" / "wandb").iterdir()
    assert {link.resolve() for link in links} == {run.pieces[0].resolve() for run in runs}
