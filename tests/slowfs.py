"""A storage filesystem whose writes are slow, so that a copy to storage can be cut short.

Kept apart from tests/support.py (which imports Ray): the worker that copies
a run imports this module to unpickle the filesystem.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.fs
from fsspec.implementations.local import LocalFileSystem


class SlowLocalFileSystem(LocalFileSystem):  # type: ignore[misc]
    """The local disk, each file opened for writing ``delay`` seconds late."""

    def __init__(self, delay: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode or "a" in mode:
            time.sleep(self.delay)
        return super()._open(path, mode, *args, **kwargs)


def slow_filesystem(root: str, delay: float = 0.3) -> pyarrow.fs.FileSystem:
    """A pyarrow filesystem rooted at ``root`` whose file writes each wait ``delay`` s."""
    handler = pyarrow.fs.FSSpecHandler(SlowLocalFileSystem(delay=delay))
    return pyarrow.fs.SubTreeFileSystem(root, pyarrow.fs.PyFileSystem(handler))
