"""The W&B runs of a Tune experiment on disk: list them, upload what is not uploaded.

``python -m tune_wandb ls EXPERIMENT_DIR`` lists the runs found under a Tune
experiment directory (each trial's ``wandb/`` directory; see ``_listing``);
``python -m tune_wandb sync EXPERIMENT_DIR`` uploads every run that is not
uploaded yet through wandb's own ``wandb sync``, the pieces of a resumed run
together and in order, and says what it did. A run counts as uploaded when
wandb marked each of its pieces synced (a ``run-<id>.wandb.synced`` file, which
``wandb sync`` writes, and tune-wandb's workers write after an online run
finished uploading).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tune_wandb import _commands, _credentials, _listing, _runfile, _settings

#: A run directory's name: ``[offline-]run-<time>-<id>[-partN]``.
_RUN_DIR = re.compile(r"(?P<offline>offline-)?run-(?P<time>\d{8}_\d{6})-(?P<rest>.+)")
_PART = re.compile(r"-part(\d+)$")


@dataclass
class LocalRun:
    """One W&B run of an experiment, as it is on disk (all its pieces).

    Attributes:
        run_id: the W&B run id.
        trial_dir: the trial directory the run is in.
        pieces: the run directories, in the order they were written (a trial
            retried, restored or given a new worker resumes its run in a new
            piece).
        offline: whether any piece was written offline.
    """

    run_id: str
    trial_dir: Path
    pieces: list[Path] = field(default_factory=list)
    offline: bool = False

    @property
    def run_files(self) -> list[Path]:
        """The ``run-<id>.wandb`` file of each piece."""
        return [piece / f"run-{self.run_id}.wandb" for piece in self.pieces]

    @property
    def uploaded(self) -> bool:
        """Whether every piece is marked synced (and there is one)."""
        files = self.run_files
        return bool(files) and all(Path(f"{f}.synced").exists() for f in files)

    def history(self) -> tuple[int, dict[str, Any]]:
        """``(rows, last value of each metric)``, read from the run files."""
        from wandb.proto import wandb_internal_pb2

        rows = 0
        last: dict[str, Any] = {}
        for path in self.run_files:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            for payload in _runfile.iter_payloads(data):
                if _runfile.record_type_field(payload) != 2:
                    continue
                record = wandb_internal_pb2.Record()
                record.ParseFromString(payload)
                rows += 1
                for item in record.history.item:
                    key = "/".join(item.nested_key) if item.nested_key else item.key
                    if key.startswith("_"):
                        continue
                    try:
                        last[key] = json.loads(item.value_json)
                    except ValueError:
                        last[key] = item.value_json
        return rows, last


def find_local_runs(experiment_dir: str | Path) -> list[LocalRun]:
    """Every W&B run under a Tune experiment directory, its pieces in order.

    Example:
        >>> find_local_runs("/nonexistent")
        []
    """
    runs: dict[str, LocalRun] = {}
    root = Path(experiment_dir)
    for run_file in sorted(root.rglob("run-*.wandb")):
        piece = run_file.parent
        match = _RUN_DIR.fullmatch(piece.name)
        if match is None or piece.is_symlink():
            continue  # e.g. wandb's latest-run link, or a copy of it
        run_id = run_file.stem[len("run-") :]
        run = runs.setdefault(run_id, LocalRun(run_id, piece.parent.parent))
        run.pieces.append(piece)
        run.offline = run.offline or bool(match.group("offline"))
    for run in runs.values():
        run.pieces.sort(key=_piece_order)
    return sorted(runs.values(), key=lambda r: (str(r.trial_dir), r.run_id))


#: The experiment's own wandb directory: links to each trial's run
#: directories, so that W&B's tools that browse one wandb directory
#: (``wandb leet DIR``) see the whole experiment.
LINKS_DIR = "wandb"


def link_runs(experiment_dir: str | Path | None) -> Path | None:
    """Link every run directory of the experiment into ``<experiment_dir>/wandb/``.

    Each trial writes its runs into a ``wandb/`` directory of its own, and
    ``wandb leet DIR`` browses a single one: with a link per run directory
    (each piece of a resumed run), ``wandb leet <experiment_dir>/wandb``
    browses them all. Links are relative, so they survive the experiment being
    moved or copied whole; a link whose run is gone is removed; ``ls`` and
    ``sync`` skip links. Never raises: returns the directory, or None when
    there is no run or no link could be made (said in one warning).

    Example:
        >>> link_runs("/nonexistent") is None
        True
    """
    if experiment_dir is None:
        return None
    root = Path(experiment_dir)
    pieces = [piece for run in find_local_runs(root) for piece in run.pieces]
    if not pieces:
        return None
    links = root / LINKS_DIR
    try:
        links.mkdir(exist_ok=True)
        for piece in pieces:
            if piece.parent != links:  # else a run wandb wrote here itself
                _link(links / piece.name, os.path.relpath(piece, links))
        for entry in links.iterdir():
            if entry.is_symlink() and not entry.exists() and _RUN_DIR.fullmatch(entry.name):
                entry.unlink()  # its run was deleted
    except OSError as error:
        logging.getLogger("tune_wandb").warning(
            "tune-wandb: could not link the experiment's W&B runs into %s for `wandb leet` "
            "(%s); each trial's wandb/ directory still holds its runs.",
            links,
            error,
        )
        return None
    return links


def _link(link: Path, target: str) -> None:
    """Point ``link`` at ``target``; a real directory of that name is left alone."""
    if link.is_symlink():
        if os.readlink(link) == target:
            return
        link.unlink()
    elif link.exists():
        return
    link.symlink_to(target, target_is_directory=True)


def _piece_order(piece: Path) -> tuple[int, str]:
    part = _PART.search(piece.name)
    return (int(part.group(1)) if part else 1, piece.name)


#: Seconds the W&B server has to answer the key check before any upload.
KEY_CHECK_TIMEOUT = 10.0

#: Seconds one run's ``wandb sync`` may take before it is stopped.
DEFAULT_RUN_TIMEOUT = 600.0

#: What :func:`wandb_sync` returns when it stopped ``wandb sync`` at its time
#: limit (the exit status of GNU ``timeout``).
TIMED_OUT = 124


def sync(
    experiment_dir: str | Path,
    out: TextIO | None = None,
    run_command: Callable[[list[str]], int] | None = None,
    *,
    timeout: float = DEFAULT_RUN_TIMEOUT,
    key_check_timeout: float = KEY_CHECK_TIMEOUT,
) -> int:
    """Upload every run under ``experiment_dir`` that is not uploaded yet.

    First the API key is checked with the W&B server, once, within
    ``key_check_timeout`` seconds (0: no check): without a key the server
    accepts, nothing is tried. Then each run's pieces go to one ``wandb sync``
    call, which uploads them in the order they were written and is stopped
    after ``timeout`` seconds; a run that fails is counted and the next one is
    tried. Runs already uploaded are skipped. Prints one line per run as it
    goes and, at the end, what to do about the failed ones. Returns how many
    runs were not uploaded.

    Example:
        >>> import io
        >>> sync("/nonexistent", out=io.StringIO())
        0
    """
    out = out or sys.stdout
    if run_command is None:
        run_command = functools.partial(wandb_sync, timeout=timeout)
    runs = find_local_runs(experiment_dir)
    todo = [r for r in runs if not r.uploaded]
    skipped = len(runs) - len(todo)
    print(
        f"{len(runs)} W&B run(s) under {experiment_dir}: {len(todo)} to upload, "
        f"{skipped} already uploaded.",
        file=out,
        flush=True,
    )
    if not todo:
        return 0
    problem = _key_problem(key_check_timeout)
    if problem:
        print(f"{problem} Nothing was uploaded.", file=out)
        return len(todo)
    failed = 0
    timed_out = False
    for number, run in enumerate(todo, 1):
        pieces = f"{len(run.pieces)} pieces" if len(run.pieces) > 1 else "1 piece"
        trial = _listing.trial_name(run.trial_dir.name)
        prefix = f"[{number}/{len(todo)}] {trial} (run {run.run_id}, {pieces})"
        print(f"{prefix}: uploading...", file=out, flush=True)
        code = run_command([str(p) for p in run.pieces])
        if code == 0 and run.uploaded:
            print(f"{prefix}: uploaded", file=out, flush=True)
            continue
        failed += 1
        if code == TIMED_OUT:
            timed_out = True
            reason = f"not uploaded within {timeout:g} s, stopped"
        elif code == 0:
            reason = "wandb sync did not mark it uploaded"
        else:
            reason = f"wandb sync exit code {code}"
        print(f"{prefix}: FAILED ({reason})", file=out, flush=True)
    done = len(todo) - failed
    print(f"Uploaded {done} run(s), {failed} failed, {skipped} skipped.", file=out)
    if failed:
        again = _commands.tune_wandb("sync", str(experiment_dir))
        print(
            f"Upload the failed run(s) with the same command, {again} "
            "(runs already uploaded are skipped); wandb's own messages above say why "
            "each failed."
            + (" Give each run more time with --timeout SECONDS." if timed_out else ""),
            file=out,
        )
    return failed


def sync_sweep(experiment_dir: str | Path, out: TextIO | None = None) -> int:
    """Show the experiment's uploaded runs as its W&B sweep; 0 on success, else 1.

    The sweep is described in the experiment directory by a callback given
    ``sweep=`` (see :mod:`tune_wandb._experiment_sweep`). Made the first
    time (with the uploaded runs as its ``prior_runs``, then stopped); later,
    runs uploaded since join it. Its id is kept in the same record.
    """
    from tune_wandb import _experiment_sweep, _sweep

    out = out or sys.stdout
    record = _experiment_sweep.read_record(experiment_dir)
    if record is None or not isinstance(record.get("config"), dict):
        print(
            f"tune-wandb: {experiment_dir} describes no W&B sweep "
            f"({_experiment_sweep.SWEEP_FILE}): run the experiment with "
            "WandbLoggerCallback(sweep={'param_space': ..., 'metric': ..., 'mode': ...}).",
            file=out,
        )
        return 1
    run_ids = [run.run_id for run in find_local_runs(experiment_dir) if run.uploaded]
    if not run_ids:
        print("tune-wandb: no uploaded run to make the sweep of.", file=out)
        return 1
    found = _settings.find_api_key(None, None, os.environ)
    access = _sweep.Access(_settings.wandb_env(os.environ), found[0] if found else None)
    existing = _experiment_sweep.ref_from(record)
    try:
        if existing is not None:
            ref = _sweep.set_state(access, existing, "FINISHED", record["config"], run_ids)
        else:
            ref = _sweep.create(
                access,
                record["config"],
                record.get("entity"),
                record.get("project"),
                prior_runs=run_ids,
                state="FINISHED",
            )
    except Exception as exc:
        print(f"tune-wandb: could not make the W&B sweep: {type(exc).__name__}: {exc}", file=out)
        return 1
    record.update(id=ref.id, entity=ref.entity, project=ref.project, url=ref.url)
    _experiment_sweep.write_record(experiment_dir, record)
    print(f"W&B sweep {ref.path} ({len(run_ids)} runs): {ref.url or ''}".rstrip(), file=out)
    return 0


def _key_problem(timeout: float) -> str | None:
    """Why no run can be uploaded (no key, a refused key, no server), or None."""
    if timeout <= 0:
        return None
    try:
        found = _settings.find_api_key(None, None, os.environ)
    except ValueError as error:
        return str(error)
    if found is None:
        return (
            "No W&B API key: run `wandb login` (or set WANDB_API_KEY) on this machine, "
            "then run this command again."
        )
    key, origin = found
    url = _settings.base_url(None, os.environ)
    check = _credentials.check_api_key(key, url, timeout)
    if check.status is _credentials.KeyStatus.REJECTED:
        return (
            f"W&B at {check.host} refused the API key from {origin} ({check.detail}): "
            "put a valid key there (https://wandb.ai/authorize, or your W&B server's "
            "/authorize page), then run this command again."
        )
    if check.status is _credentials.KeyStatus.UNREACHABLE:
        return (
            f"Could not reach W&B at {check.host} within {timeout:g} s ({check.detail}): "
            "check the network (and WANDB_BASE_URL, if you set it), then run this "
            "command again."
        )
    return None


def wandb_sync(
    pieces: list[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> int:
    """``wandb sync`` of one run's pieces, in a process of its own; its exit code.

    ``env`` replaces this process's environment for it; past ``timeout``
    seconds it is stopped, and the result is :data:`TIMED_OUT`. Also used
    by a worker that uploads the piece its dead predecessor left.

    Example:
        >>> wandb_sync(["/nonexistent/run-dir"], timeout=60)  # doctest: +SKIP
        0
    """
    # Absolute: wandb's CLI runs in a directory of its own (below).
    paths = [os.path.abspath(piece) for piece in pieces]
    command = [sys.executable, "-m", "wandb", "sync", "--include-online", *paths]
    env = dict(os.environ if env is None else env)
    env.setdefault("WANDB_SILENT", "false")
    # wandb's CLI writes its debug logs into ./wandb/: not into the user's directory.
    with tempfile.TemporaryDirectory(prefix="tune-wandb-sync-") as cwd:
        process = subprocess.Popen(command, env=env, cwd=cwd)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return TIMED_OUT
        finally:
            # Timed out, or interrupted: stop it. Its wandb-core, which watches
            # its parent's pid, stops by itself then.
            if process.returncode is None:
                process.terminate()
                try:
                    process.wait(timeout=_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


#: Seconds a stopped ``wandb sync`` has to exit before it is killed.
_STOP_SECONDS = 5.0
