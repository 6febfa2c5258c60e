"""Read back the ``run-*.wandb`` files that wandb-core writes.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, a 2-byte magic,
a version byte), then 32 KiB blocks counted from the start of the file, each
holding chunks ``[crc32 LE u32][length LE u16][type u8][data]``. A record may
span chunks (FIRST, MIDDLE..., LAST); each whole record is a protobuf
``wandb_internal_pb2.Record``. An offline run resumed under the same id gets a
second ``offline-run-*-<id>`` directory; :func:`read_run` merges the pieces in
the order they were written.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class CorruptRunFileError(ValueError):
    """Raised when a run file does not follow the log format."""


def iter_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Yield every whole record of one ``.wandb`` file, checking each crc."""
    data = path.read_bytes()
    if data[:4] != _HEADER:
        raise CorruptRunFileError(f"{path}: no :W&B header")
    pos = _HEADER_LEN
    pending: bytearray | None = None
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:
            pos += left_in_block  # the tail of a block too small for a chunk is padding
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:
            pos += left_in_block  # zero padding up to the next block
            continue
        start = pos + _CHUNK_HEADER
        chunk = data[start : start + length]
        if len(chunk) != length:
            break  # a chunk cut short by a crash: the records before it stand
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise CorruptRunFileError(f"{path}: crc mismatch at offset {pos}")
        pos = start + length
        if kind == _FULL:
            yield _parse(chunk)
        elif kind == _FIRST:
            pending = bytearray(chunk)
        elif kind in (_MIDDLE, _LAST):
            if pending is None:
                raise CorruptRunFileError(f"{path}: chunk type {kind} with no FIRST")
            pending += chunk
            if kind == _LAST:
                yield _parse(bytes(pending))
                pending = None
        else:
            raise CorruptRunFileError(f"{path}: unknown chunk type {kind} at {pos}")


def _parse(payload: bytes) -> wandb_internal_pb2.Record:
    record = wandb_internal_pb2.Record()
    record.ParseFromString(payload)
    return record


@dataclass
class RunData:
    """What one W&B run holds, merged over all the files written for it."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_codes: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    #: Each artifact's type and files (path in the artifact -> staged local copy), by name.
    artifact_types: dict[str, str] = field(default_factory=dict)
    artifact_files: dict[str, dict[str, str]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    saved_files: list[str] = field(default_factory=list)
    stats_records: int = 0
    #: Console lines (the Logs tab), ``(stream, text)`` in order: "stdout" or "stderr".
    output: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int | None:
        """The exit code of the last piece of the run, None if it never finished."""
        return self.exit_codes[-1] if self.exit_codes else None

    def column(self, key: str) -> list[Any]:
        """Every value of ``key`` in history order (rows without it skipped)."""
        return [row[key] for row in self.history if key in row]


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else str(item.key)


def _items(items: Any) -> dict[str, Any]:
    return {_key(item): json.loads(item.value_json) for item in items}


def _on_run(run: RunData, record: Any) -> None:
    r = record.run
    run.run_id, run.project, run.group, run.name = r.run_id, r.project, r.run_group, r.display_name
    run.config.update(_items(r.config.update))
    run.tags = list(r.tags)


def _on_artifact(run: RunData, record: Any) -> None:
    a = record.artifact
    run.artifacts.append(a.name)
    run.artifact_types[a.name] = a.type
    run.artifact_files[a.name] = {e.path: e.local_path for e in a.manifest.contents}


def _on_config(run: RunData, record: Any) -> None:
    run.config.update(_items(record.config.update))
    for item in record.config.remove:
        run.config.pop(_key(item), None)


def _on_output(run: RunData, record: Any) -> None:
    """An output record (raw or not): its text may hold several lines."""
    out = record.output_raw if record.WhichOneof("record_type") == "output_raw" else record.output
    stream = out.OutputType.Name(out.output_type).lower()
    run.output.extend((stream, line) for line in out.line.splitlines())


_HANDLERS = {
    "output_raw": _on_output,
    "output": _on_output,
    "run": _on_run,
    "config": _on_config,
    "history": lambda run, rec: run.history.append(_items(rec.history.item)),
    "summary": lambda run, rec: run.summary.update(_items(rec.summary.update)),
    "exit": lambda run, rec: run.exit_codes.append(rec.exit.exit_code),
    "artifact": _on_artifact,
    "files": lambda run, rec: run.saved_files.extend(f.path for f in rec.files.files),
    "stats": lambda run, rec: setattr(run, "stats_records", run.stats_records + 1),
}


def read_run_files(paths: list[Path]) -> RunData:
    """Merge the records of ``paths`` (in that order) into one :class:`RunData`."""
    run = RunData(files=list(paths))
    for path in paths:
        for record in iter_records(path):
            handler = _HANDLERS.get(record.WhichOneof("record_type") or "")
            if handler is not None:
                handler(run, record)
    # wandb stores each config value as {"value": v, "desc": ...}
    run.config = {
        k: (v["value"] if isinstance(v, dict) and "value" in v else v)
        for k, v in run.config.items()
    }
    return run


_RUN_DIR = re.compile(r"(offline-)?run-\d{8}_\d{6}-.+")


def _piece_order(path: Path) -> tuple[str, int, str]:
    """Order the pieces of a run: by start time, then by tune-wandb's partN suffix.

    Directory names are ``{offline-run|run}-{YYYYmmdd_HHMMSS}-{id}[-partN]``.
    """
    name = path.parent.name
    mode_free = name.split("run-", 1)[1]
    stamp = mode_free[:15]
    part = 1
    if "-part" in name:
        tail = name.rsplit("-part", 1)[1]
        part = int(tail) if tail.isdigit() else 1
    return stamp, part, name


def find_runs(root: Path) -> dict[str, RunData]:
    """Every W&B run written under ``root``, by run id, resumed pieces merged."""
    pieces: dict[str, list[Path]] = {}
    # Only run directories: a `latest-run` link copied as a directory (pyarrow's
    # copies do that) would count a run twice.
    files = [p for p in root.rglob("run-*.wandb") if _RUN_DIR.fullmatch(p.parent.name)]
    for path in sorted(files, key=_piece_order):
        run_id = path.stem[len("run-") :]
        pieces.setdefault(run_id, []).append(path)
    return {run_id: read_run_files(paths) for run_id, paths in pieces.items()}


def run_of_trial(runs: dict[str, RunData], trial_id: str) -> RunData:
    """The one run whose id is ``trial_id`` and tune-wandb's experiment suffix."""
    (run_id,) = [r for r in runs if r.startswith(f"{trial_id}-")]
    return runs[run_id]
