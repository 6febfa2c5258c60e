"""Run files: is a run's ``run-*.wandb`` complete, and where does a finished run go.

wandb-core writes every run to a LevelDB-style log: a 7-byte header
(``:W&B``, a 2-byte magic, a version byte), then 32 KiB blocks counted from
the start of the file, each holding chunks ``[crc32 LE][length LE u16][type
u8][data]`` (types FULL=1, FIRST=2, MIDDLE=3, LAST=4); each whole record is a
``wandb_internal_pb2.Record``.

``run.finish()`` returns before a shared wandb-core has written the end of the
file (it flushes on a timer and when it closes the stream), so a worker waits
here until the file ends with the run's exit record before it calls the run
finished or copies it anywhere.
"""

from __future__ import annotations

import contextlib
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tune_wandb import _wandb_compat

_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32 * 1024
_CHUNK = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_payloads(data: bytes) -> Iterator[bytes]:
    """Yield each whole record's bytes; stops at the first torn or corrupt chunk."""
    if data[:4] != _HEADER:
        return
    yield from _RecordReader().feed(data[_HEADER_LEN:])


class _RecordReader:
    """Puts whole records back together from a run file's chunks, read in any steps."""

    def __init__(self) -> None:
        #: The file offset of the next chunk to read.
        self.pos = _HEADER_LEN
        self._pending = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield the whole records in ``data``, the file's bytes from :attr:`pos` on.

        ``pos`` moves past every whole chunk; a torn or corrupt one ends the
        feed, and is read again from its start by the next.
        """
        base, off = self.pos, 0
        while off + _CHUNK <= len(data):
            room = _BLOCK - (base + off) % _BLOCK
            if room < _CHUNK:
                off += room
                continue
            crc, length, kind = struct.unpack_from("<IHB", data, off)
            if crc == 0 and length == 0 and kind == 0:
                off += room
                continue
            chunk = data[off + _CHUNK : off + _CHUNK + length]
            if len(chunk) != length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
                return
            if kind not in (_FULL, _FIRST, _MIDDLE, _LAST):
                return
            off += _CHUNK + length
            self.pos = base + off
            if kind == _FULL:
                yield chunk
            elif kind == _FIRST:
                self._pending = bytearray(chunk)
            else:
                self._pending += chunk
                if kind == _LAST:
                    payload, self._pending = bytes(self._pending), bytearray()
                    yield payload


def record_type_field(payload: bytes) -> int | None:
    """The field number of a serialized Record's ``record_type``, read from its tags.

    Walks the top-level fields without decoding them (no protobuf import):
    a worker counts its history records about once a second.

    Example:
        >>> record_type_field(bytes([0x08, 0x05, 0x12, 0x00]))  # num=5, history={}
        2
    """
    pos, end = 0, len(payload)
    while pos < end:
        tag, pos = _varint(payload, pos)
        number, wire = tag >> 3, tag & 7
        if number in _wandb_compat.RECORD_TYPE_FIELDS:
            return number
        if wire == 0:
            _, pos = _varint(payload, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(payload, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            return None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


class HistoryCounter:
    """Counts the history records of a growing run file, reading only what is new.

    Example:
        >>> counter = HistoryCounter("/nonexistent/run.wandb")
        >>> counter.update()
        0
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self.exited = False
        self._reader = _RecordReader()
        self._checked_header = False

    def update(self) -> int:
        """Read the records written since the last call; returns the count so far."""
        try:
            with open(self.path, "rb") as f:
                if not self._checked_header:
                    if f.read(4) != _HEADER:
                        return self.count
                    self._checked_header = True
                f.seek(self._reader.pos)
                data = f.read()
        except OSError:
            return self.count
        for payload in self._reader.feed(data):
            self._count(payload)
        return self.count

    def _count(self, payload: bytes) -> None:
        try:
            field = record_type_field(payload)
        except ValueError:
            return
        if field == _wandb_compat.HISTORY_FIELD:
            self.count += 1
        elif field == _wandb_compat.EXIT_FIELD:
            self.exited = True


def last_record(path: str | Path) -> Any:
    """The last whole record of a run file, or None."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    last = None
    for last in iter_payloads(data):  # noqa: B007 - only the last one is wanted
        pass
    if last is None:
        return None
    record = _wandb_compat.record_class()()
    record.ParseFromString(last)
    return record


def remove_failed_attempts(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """Remove the directories of online attempts of ``run_id`` that hold no record.

    A ``wandb.init`` that failed online (W&B did not answer) leaves its run
    directory, ``run-<time>-<id>``, with no record in it, beside the offline
    run the worker logs instead; ``wandb sync`` and ``tune-wandb ls`` would
    take it for a run. Pieces that hold records are kept. Returns what was
    removed.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "run-20260101_000000-a_00000-abcdef" / "logs").mkdir(parents=True)
        >>> [p.name for p in remove_failed_attempts(root, "a_00000-abcdef")]
        ['run-20260101_000000-a_00000-abcdef']
    """
    import shutil

    removed = []
    for path in sorted(Path(wandb_dir).glob(f"run-*-{run_id}")):
        if not path.is_dir() or path.is_symlink():
            continue
        if any(next(iter_payloads(f.read_bytes()), None) for f in path.glob("*.wandb")):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def wait_for_exit_record(path: str | Path, timeout: float) -> bool:
    """Wait until the file at ``path`` ends with an exit record; False on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        record = last_record(path)
        if record is not None and record.WhichOneof("record_type") == "exit":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def mark_uploaded(run_file: str | Path) -> None:
    """Mark a run file uploaded, as ``wandb sync`` does (``<file>.synced``).

    ``wandb sync`` and ``python -m tune_wandb sync`` then skip it. Only for an
    online run whose ``finish()`` returned: wandb waited for its upload.
    """
    with contextlib.suppress(OSError):
        Path(f"{run_file}.synced").touch()


def is_local_filesystem(filesystem: Any) -> bool:
    """Whether a pyarrow filesystem (None: the local disk) is this machine's disk."""
    import pyarrow.fs

    return filesystem is None or isinstance(filesystem, pyarrow.fs.LocalFileSystem)


def copy_run_dir(run_dir: str, filesystem: Any, trial_fs_path: str) -> str:
    """Copy a finished run directory to ``<trial_fs_path>/wandb/`` on ``filesystem``.

    Returns the copy's path; raises what pyarrow raises.
    """
    import os

    import pyarrow.fs

    dest = f"{trial_fs_path}/wandb/{os.path.basename(run_dir)}"
    pyarrow.fs.copy_files(run_dir, dest, destination_filesystem=filesystem)
    return dest
