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

import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32 * 1024
_CHUNK = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_payloads(data: bytes) -> Iterator[bytes]:
    """Yield each whole record's bytes; stops at the first torn or corrupt chunk."""
    if data[:4] != _HEADER:
        return
    pos = _HEADER_LEN
    pending = bytearray()
    while pos + _CHUNK <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK:
            pos += room
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:
            pos += room
            continue
        chunk = data[pos + _CHUNK : pos + _CHUNK + length]
        if len(chunk) != length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += _CHUNK + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = bytearray(chunk)
        elif kind in (_MIDDLE, _LAST):
            pending += chunk
            if kind == _LAST:
                yield bytes(pending)
        else:
            return


def last_record(path: str | Path) -> Any:
    """The last whole record of a run file, or None."""
    from wandb.proto import wandb_internal_pb2

    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    last = None
    for last in iter_payloads(data):  # noqa: B007 - only the last one is wanted
        pass
    if last is None:
        return None
    record = wandb_internal_pb2.Record()
    record.ParseFromString(last)
    return record


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
