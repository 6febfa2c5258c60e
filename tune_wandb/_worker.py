"""The worker loop: one process per trial, owning that trial's W&B run.

A worker is forked by the launcher (see :mod:`tune_wandb._launcher`); its entry
point is :func:`worker_main`. It starts the run, then logs what the driver
sends until the end marker (:class:`~tune_wandb._protocol.FinishRun`), finishes
the run and exits. It never takes SIGINT (the driver ends it in order on
Ctrl-C) and it ends its run by itself if the driver's process goes away.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pickle
import select
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from tune_wandb import _filters, _runfile, _settings, _wandb_compat
from tune_wandb._protocol import (
    EXIT_DRIVER_LOST,
    Batch,
    Confirmed,
    FinishRun,
    LogRow,
    PieceSettled,
    RunFinished,
    RunStarted,
    UploadCheckpoint,
    WorkerLog,
    WorkerSetup,
)

#: How often a worker without pidfd support checks that its driver lives.
_DRIVER_POLL_SECONDS = 1.0
#: How often a worker tells the driver which rows are in its run file.
_CONFIRM_SECONDS = 1.0
#: A dead worker's piece is taken as complete once it has not grown for this
#: long (wandb-core writes run files every second), or has its exit record.
_QUIET_SECONDS = 3.0
_QUIET_MAX_SECONDS = 30.0
#: How long a replacement worker gives ``wandb sync`` of its dead predecessor's piece.
_UPLOAD_DEAD_PIECE_SECONDS = 60.0
#: How long after ``wandb.finish`` a worker waits for wandb-core to write the
#: end of the run file.
_FILE_CLOSE_SECONDS = 30.0


def worker_main(
    sock_fd: int,
    payload: bytes,
    inherited_fds: tuple[int, ...] = (),
    service_token: str | None = None,
    requirements: str | None = None,
) -> None:
    """Run one trial's W&B run; the launcher's fork target.

    Args:
        sock_fd: this worker's end of its socket to the driver.
        payload: the cloudpickled :class:`~tune_wandb._protocol.WorkerSetup`.
        inherited_fds: descriptors inherited from the launcher that belong to
            it (its own socket to the driver), closed here so that the driver
            sees the launcher's end when the launcher exits.
        service_token: the address of the experiment's shared wandb-core
            (a ``WANDB_SERVICE`` value), None to start one of its own.
        requirements: the environment's ``requirements.txt``, listed once by
            the launcher, saved with the run instead of wandb listing it again.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    conn = Connection(sock_fd)
    setup: WorkerSetup = cloudpickle.loads(payload)
    code = _Worker(conn, setup, service_token, requirements).run()
    sys.exit(code)


class _DriverWatch:
    """Tells when the driver's process is gone (a forked worker's parent is the launcher)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.fd = os.pidfd_open(pid)

    def waitables(self) -> list[Any]:
        return [] if self.fd is None else [self.fd]

    def gone(self) -> bool:
        if self.fd is not None:
            readable, _, _ = select.select([self.fd], [], [], 0)
            return bool(readable)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class _Worker:
    def __init__(
        self,
        conn: Connection,
        setup: WorkerSetup,
        service_token: str | None,
        requirements: str | None,
    ) -> None:
        self.conn = conn
        self.setup = setup
        self.service_token = service_token
        self.requirements = requirements
        self.wb: Any = None
        self.rows = 0
        self.warned: set[str] = set()
        self.driver = _DriverWatch(setup.driver_pid)
        #: Seqs of rows logged (each a history record) not yet seen in the run file.
        self.logged: collections.deque[int] = collections.deque()
        self.counter: _runfile.HistoryCounter | None = None
        self.confirmed_history = 0
        self.last_confirm = 0.0

    # -- messages to the driver --------------------------------------------

    def _send(self, message: object) -> None:
        # The driver may be gone; the run's data is on disk either way.
        with contextlib.suppress(OSError):
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _say(self, level: int, text: str) -> None:
        self._send(WorkerLog(level, f"trial {self.setup.trial_name}: {text}"))

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self._say(logging.WARNING, text)

    # -- the run ------------------------------------------------------------

    def run(self) -> int:
        self._apply_env()
        try:
            self._start_run()
        except Exception as exc:
            self._say(logging.ERROR, f"could not start a W&B run, not even offline: {exc!r}")
            return 1
        exit_code = self._loop()
        self._finish(exit_code)
        return 0

    def _apply_env(self) -> None:
        # The launcher's environment is the driver's as it was when the
        # launcher started; a worker takes the driver's WANDB_* variables as the
        # callback read them when the experiment started (the key left out: it
        # comes through the settings).
        for name in [n for n in os.environ if n.startswith("WANDB_")]:
            del os.environ[name]
        os.environ.update(self.setup.env)
        # wandb prints outside any run's settings too (e.g. "Encoding video...").
        os.environ.setdefault("WANDB_SILENT", "true")
        if self.service_token and "WANDB_SERVICE" not in self.setup.env:
            os.environ["WANDB_SERVICE"] = self.service_token

    def _start_run(self) -> None:
        import wandb

        if self.setup.replaces is not None:
            self._take_over(self.setup.replaces)

        kwargs = dict(self.setup.init_kwargs)
        settings = dict(kwargs.pop("settings", None) or {})
        suffix = _piece_suffix(kwargs.get("dir"), kwargs.get("id"))
        if suffix and "x_sync_dir_suffix" not in settings:
            settings["x_sync_dir_suffix"] = suffix
        save_requirements = self.requirements is not None and "x_save_requirements" not in settings
        if save_requirements:
            settings["x_save_requirements"] = False
        if self.setup.api_key:
            settings["api_key"] = self.setup.api_key
        offline = _settings.offline_or_disabled(kwargs, os.environ)
        failed: Exception | None = None
        if not offline:
            # wandb.init waits for W&B up to its init_timeout (90 s by default),
            # longer than the driver may wait (upload_timeout): stopped meanwhile,
            # the worker logs offline what it was sent instead of dying with it.
            signal.signal(signal.SIGTERM, _stop_waiting)
        try:
            self.wb = wandb.init(settings=wandb.Settings(**settings), **kwargs)
        except Exception as exc:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if offline:
                raise
            failed = exc
            # The failed run's stream stays in wandb-core, its id "in use" for
            # the offline run, and a graceful teardown waits on the W&B that did
            # not answer: end this worker's own wandb-core, and start again on
            # a new one of its own (a shared one is left alone).
            os.environ.pop("WANDB_SERVICE", None)
            _wandb_compat.kill_own_service()
            with contextlib.suppress(Exception, SystemExit):
                wandb.teardown()
            settings.pop("api_key", None)
            kwargs["mode"] = "offline"
            self.wb = wandb.init(settings=wandb.Settings(**settings), **kwargs)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run = self.wb
        if failed is not None:
            where = run.settings.sync_dir
            self._say(
                logging.WARNING,
                f"wandb.init failed ({failed!r}); logging offline instead, in {where}. "
                f"Upload it later with: wandb sync {where}",
            )
        self.counter = _runfile.HistoryCounter(run.settings.sync_file)
        if run.offline:
            # wandb stages artifact files in a per-user directory until they are
            # uploaded; an offline run's must travel with the run (to storage,
            # to the machine that runs `wandb sync`).
            os.environ["WANDB_DATA_DIR"] = os.path.join(run.settings.sync_dir, _STAGING_DIR)
        if save_requirements:
            self._save_requirements(run)
        self._run_info_hook(run)
        # Restored trials report iterations again; with training_iteration as the
        # x-axis instead of wandb's _step, no row is dropped for going backwards.
        run.define_metric("training_iteration")
        run.define_metric("*", step_metric="training_iteration")
        self._send(
            RunStarted(
                run_id=run.id,
                name=run.name or self.setup.trial_name,
                url=None if run.offline else run.url,
                run_dir=run.settings.sync_dir,
                offline=bool(run.offline),
            )
        )

    def _take_over(self, run_file: str) -> None:
        """Before resuming the run: settle the piece a dead predecessor left."""
        uploaded = False
        if os.environ.get("WANDB_SERVICE"):
            # A shared wandb-core keeps a dead client's stream open: the run
            # id stays "in use" (wandb.init fails) and the rows it holds are
            # neither all written nor uploaded. Finish that stream first.
            uploaded = self._finish_dead_stream(self.setup.init_kwargs.get("id"))
        # The dead worker's wandb-core may still be writing its piece; once it is
        # complete, the driver learns how many rows landed there, and sends the
        # rows it handed over beyond those.
        self._send(PieceSettled(_wait_until_quiet(run_file)))
        if not uploaded:
            self._upload_dead_piece(run_file)

    def _upload_dead_piece(self, run_file: str) -> None:
        """Upload what a dead predecessor wrote and its wandb-core did not upload.

        An online piece's rows are in its run file, but its wandb-core died
        with the worker (or exits when it sees its parent gone) before
        uploading them all; the driver does not send those rows again, as
        they are on disk, so they must reach W&B from the file. ``wandb sync`` sends the
        piece again, and W&B keeps only the rows it did not have (each row's
        ``_step`` must move forward).
        """
        from tune_wandb.sync import wandb_sync

        piece = os.path.dirname(run_file)
        offline_run = os.path.basename(piece).startswith("offline-")
        if offline_run or _settings.offline_or_disabled(self.setup.init_kwargs, os.environ):
            return
        if os.path.exists(f"{run_file}.synced"):
            return
        env = dict(os.environ)
        if self.setup.api_key:
            env["WANDB_API_KEY"] = self.setup.api_key  # the child's environment, no file
        env["WANDB_SILENT"] = "true"
        if wandb_sync([piece], env=env, timeout=_UPLOAD_DEAD_PIECE_SECONDS) != 0:
            self._say(
                logging.WARNING,
                f"could not upload the piece a dead worker left in {piece}; it is on disk. "
                f"Upload it later with: wandb sync --include-online {piece}",
            )

    def _finish_dead_stream(self, run_id: str | None) -> bool:
        """Finish the stream a dead predecessor left open in a shared wandb-core.

        Returns whether it did (then the service wrote and uploaded it all).

        Attaching to it and finishing it writes and uploads every row the
        service took from the dead worker, and frees the run id to resume.
        (Closing it with ``inform_finish`` alone drops what it had not uploaded.)
        """
        if not run_id:
            return False
        try:
            dead = _wandb_compat.attach(run_id)
        except Exception:
            return False  # no such stream in the service: nothing to finish
        try:
            if dead is not None:
                dead.finish(exit_code=1)
                return True
        except Exception as exc:
            self._say(logging.WARNING, f"could not finish the dead worker's stream: {exc!r}")
        return False

    def _run_info_hook(self, run: Any) -> None:
        """Ray's WANDB_PROCESS_RUN_INFO_HOOK: the user's function, called with the run."""
        hook = os.environ.get(_settings.PROCESS_RUN_INFO_HOOK)
        if not hook:
            return
        try:
            _settings.load_hook(hook)(run)
        except Exception as exc:
            self._say(logging.WARNING, f"{_settings.PROCESS_RUN_INFO_HOOK}={hook} failed: {exc!r}")

    def _save_requirements(self, run: Any) -> None:
        assert self.requirements is not None
        try:
            path = os.path.join(run.dir, "requirements.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.requirements)
            run.save(path, base_path=run.dir, policy="now")
        except Exception as exc:
            self._say(logging.WARNING, f"could not save requirements.txt with the run: {exc!r}")

    def _loop(self) -> int:
        waitables = [self.conn, *self.driver.waitables()]
        while True:
            ready = wait(waitables, timeout=_DRIVER_POLL_SECONDS)
            self._confirm()
            if not ready:
                if self.driver.gone():
                    return self._driver_lost()
                continue
            if self.conn not in ready:
                return self._driver_lost()
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                return self._driver_lost()
            try:
                batch = pickle.loads(data)
            except Exception as exc:
                # A value the driver could pickle and this process cannot load
                # (a class from the user's __main__ inside a wandb.Table): the
                # batch is lost, the worker lives on.
                self._say(logging.ERROR, f"could not read a batch of results ({exc!r}); skipped")
                continue
            assert isinstance(batch, Batch), f"unexpected message {type(batch).__name__}"
            for message in batch.messages:
                if isinstance(message, FinishRun):
                    return message.exit_code
                self._handle(message)

    def _handle(self, message: LogRow | UploadCheckpoint) -> None:
        if isinstance(message, LogRow):
            if self._log(message):
                self.logged.append(message.seq)
        elif isinstance(message, UploadCheckpoint):
            self._upload_checkpoint(message)

    def _confirm(self) -> None:
        """Tell the driver which rows are in the run file, about once a second.

        The driver keeps every row it sent until then, to send again to a
        replacement if this worker dies.
        """
        now = time.monotonic()
        if not self.logged or self.counter is None or now - self.last_confirm < _CONFIRM_SECONDS:
            return
        self.last_confirm = now
        count = self.counter.update()
        seq = None
        while self.confirmed_history < count and self.logged:
            seq = self.logged.popleft()
            self.confirmed_history += 1
        if seq is not None:
            self._send(Confirmed(seq=seq, history=count))

    def _driver_lost(self) -> int:
        self._say(logging.WARNING, "lost the Tune driver; finishing the run with what it has")
        return EXIT_DRIVER_LOST

    def _log(self, message: LogRow) -> bool:
        """Log one row; whether it made a history record (confirmations count them)."""
        run = self.wb
        row = message.history
        if message.config:
            try:
                run.config.update(message.config, allow_val_change=True)
            except Exception as exc:
                self._warn_once("config", f"could not update the run config: {exc!r}")
        for key in _WANDB_OWN_KEYS:
            if key in row:
                del row[key]
                self._warn_once(
                    key,
                    f"result key {key!r} is not logged: wandb ignores it or uses it for its own "
                    "column (_step, _runtime, _timestamp, _wandb); rename it to log it",
                )
        notes = _filters.arrays_to_media(row, self.setup.image_kwargs, self.setup.video_kwargs)
        for key, note in notes.items():
            self._warn_once(key, note)
        self.rows += 1
        try:
            run.log(row)
        except Exception:
            return self._log_keywise(row)
        return True

    def _log_keywise(self, row: dict[str, Any]) -> bool:
        """Log a row wandb refused key by key, into one history row as always.

        Each key goes in its own ``log(commit=False)`` call, which encodes it
        whole before it adds anything, so a key wandb refuses is left out and
        the others land together when the row is committed.
        """
        run = self.wb
        for key, value in row.items():
            try:
                run.log({key: value}, commit=False)
            except Exception as exc:
                name = _utf8_key(key)
                if name == key:
                    self._warn_once(key, f"wandb.log refused {key!r} ({exc!r}); skipped")
                    continue
                try:
                    run.log({name: value}, commit=False)
                except Exception as again:
                    self._warn_once(key, f"wandb.log refused {key!r} ({again!r}); skipped")
                else:
                    self._warn_once(key, f"key {key!r} is not valid UTF-8; logged as {name!r}")
        try:
            run.log({}, commit=True)
        except Exception as exc:
            self._warn_once("<row>", f"wandb.log failed for a row ({exc!r}); row skipped")
            return False
        return True

    def _upload_checkpoint(self, message: UploadCheckpoint) -> None:
        import wandb

        try:
            path = message.path
            if message.filesystem is not None:
                path = _download(message.filesystem, message.path)
            artifact = wandb.Artifact(
                name=f"checkpoint_{_artifact_safe(self.setup.trial_name)}", type="model"
            )
            artifact.add_dir(path)
            aliases = ["latest"]
            if message.iteration is not None:
                aliases.append(f"iteration_{message.iteration}")
            self.wb.log_artifact(artifact, aliases=aliases)
        except Exception as exc:
            self._say(logging.WARNING, f"could not upload checkpoint {message.path}: {exc!r}")

    def _finish(self, exit_code: int) -> None:
        import wandb

        run = self.wb
        run_dir = run.settings.sync_dir
        run_file = run.settings.sync_file
        offline = bool(run.offline)
        disabled = bool(getattr(run, "disabled", False))
        # Online, finish() returns once wandb uploaded the run.
        uploaded = not offline and not disabled
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:
            uploaded = False
            self._say(logging.ERROR, f"wandb.finish failed ({exc!r}); the run is in {run_dir}")
        # A shared wandb-core writes the end of the file after finish() returns.
        if not disabled and not _runfile.wait_for_exit_record(run_file, _FILE_CLOSE_SECONDS):
            self._say(
                logging.WARNING,
                f"the run file {run_file} had no exit record {_FILE_CLOSE_SECONDS:g}s after "
                "wandb.finish; what it holds is kept",
            )
        if uploaded:
            # So that `python -m tune_wandb sync` (and `wandb sync`) leave it alone.
            _runfile.mark_uploaded(run_file)
        if self.setup.storage is not None:
            run_dir = self._copy_to_storage(run_dir)
        self._send(RunFinished(exit_code, self.rows, run_dir, offline))
        # Ends this worker's wandb-core service, if it has one of its own, now
        # rather than at interpreter exit.
        wandb.teardown()

    def _copy_to_storage(self, local_dir: str) -> str:
        target = self.setup.storage
        assert target is not None
        for attempt in range(3):
            try:
                return _runfile.copy_run_dir(local_dir, target.filesystem, target.fs_path)
            except Exception as exc:
                if attempt == 2:
                    self._say(
                        logging.ERROR,
                        f"could not copy the run to the experiment storage ({exc!r}); "
                        f"it stays in {local_dir}",
                    )
                    break
                time.sleep(1.0 + attempt)
        return local_dir


class _StoppedWaitingError(Exception):
    """The driver stopped the worker (SIGTERM) while ``wandb.init`` waited for W&B."""


def _stop_waiting(signum: int, frame: Any) -> None:
    # Once: a second SIGTERM ends the worker as SIGTERM does.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise _StoppedWaitingError("stopped by the driver while wandb.init waited for W&B")


def _piece_suffix(root: str | None, run_id: str | None) -> str | None:
    """A directory suffix for a run id that already has pieces under ``root``.

    wandb names a run's directory after the second it started and the run id;
    a trial resumed within the same second would otherwise share (and
    overwrite) the directory of the piece before it.
    """
    if not root or not run_id:
        return None
    wandb_dir = os.path.join(root, "wandb")
    try:
        names = os.listdir(wandb_dir)
    except OSError:
        return None
    pieces = [n for n in names if n.endswith(f"-{run_id}") or f"-{run_id}-part" in n]
    return f"part{len(pieces) + 1}" if pieces else None


#: Keys wandb keeps for itself: a result's ``_step`` and ``_runtime`` are
#: ignored, its ``_timestamp`` replaces the row's time, its ``_wandb`` the
#: summary's run facts, and an empty key is dropped without a word.
_WANDB_OWN_KEYS = ("_step", "_runtime", "_timestamp", "_wandb", "")


def _utf8_key(key: str) -> str:
    """``key`` with each lone surrogate (wandb cannot encode it) as U+FFFD, as in values."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in key)


def _download(filesystem: Any, path: str) -> str:
    import tempfile

    import pyarrow.fs

    local = tempfile.mkdtemp(prefix="tune-wandb-ckpt-")
    pyarrow.fs.copy_files(path, local, source_filesystem=filesystem)
    return local


#: Where an offline run's artifact files are staged, inside its run directory.
_STAGING_DIR = "artifact-staging"


def _wait_until_quiet(run_file: str) -> int:
    """Wait until a dead worker's run file is complete; its history record count."""
    counter = _runfile.HistoryCounter(run_file)
    deadline = time.monotonic() + _QUIET_MAX_SECONDS
    last_size, last_change = -1, time.monotonic()
    while True:
        counter.update()
        try:
            size = os.stat(run_file).st_size
        except OSError:
            size = -1
        now = time.monotonic()
        if size != last_size:
            last_size, last_change = size, now
        if counter.exited or now - last_change >= _QUIET_SECONDS or now >= deadline:
            return counter.count
        time.sleep(0.2)


def _artifact_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
