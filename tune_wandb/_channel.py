"""The sockets between our processes: frames, and a driver-side end that never blocks.

Frames are those of ``multiprocessing.connection.Connection.send_bytes``
(a 4-byte big-endian length, or ``-1`` and an 8-byte length past 2 GiB), so
a worker reads and writes its socket with a plain ``Connection``. The
driver's pool thread serves every socket at once, so its end,
:class:`Channel`, never blocks: it reads what has arrived and writes what
the socket takes, keeping the rest for later. A frame can carry file
descriptors (``SCM_RIGHTS``): the pool hands the launcher each new worker's
end of its socket that way.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import struct
from collections.abc import Iterator

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")

#: The most bytes one :meth:`Channel.receive` reads: a busy worker cannot
#: keep the pool thread from its other sockets.
_READ_LIMIT = 1 << 20
#: The most descriptors one ``recvmsg`` takes.
_MAX_FDS = 64


def frame(data: bytes) -> bytes:
    """``data`` framed as ``Connection.send_bytes`` frames it.

    Example:
        >>> frame(b"abc") == (3).to_bytes(4, "big") + b"abc"
        True
    """
    if len(data) > 0x7FFFFFFF:
        return _SHORT.pack(-1) + _LONG.pack(len(data)) + data
    return _SHORT.pack(len(data)) + data


class FrameReader:
    """Cuts a byte stream into frames, however it was split.

    Example:
        >>> reader = FrameReader()
        >>> list(reader.feed(frame(b"ab")[:3])), list(reader.feed(frame(b"ab")[3:] + frame(b"")))
        ([], [b'ab', b''])
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add ``data``; yield each frame it completes."""
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _SHORT.size:
            (size,) = _SHORT.unpack_from(buffer)
            start = _SHORT.size
            if size == -1:
                if len(buffer) < start + _LONG.size:
                    return
                (size,) = _LONG.unpack_from(buffer, start)
                start += _LONG.size
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            del buffer[: start + size]
            yield payload


class Channel:
    """The driver's end of a socket to the launcher or a worker; never blocks.

    Owned by one thread (the pool's). Frames queued with :meth:`send` are
    written by :meth:`flush` as far as the socket takes them; :meth:`receive`
    returns the frames that have arrived. A closed or broken socket sets
    :attr:`eof`; what was read before it is still returned.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._reader = FrameReader()
        #: Frames not yet written whole: (what is left of the bytes, descriptors
        #: still to pass with their first byte).
        self._out: collections.deque[tuple[memoryview, list[int]]] = collections.deque()
        #: The peer closed its end (or the socket broke): nothing more comes.
        self.eof = False
        #: Writing failed: nothing more can be sent.
        self.broken = False

    def fileno(self) -> int:
        """The socket's descriptor, for selectors."""
        return self.sock.fileno()

    def send(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Queue a frame; ``fds`` are passed with it and then closed here."""
        self._out.append((memoryview(frame(data)), list(fds)))

    @property
    def writing(self) -> bool:
        """Whether frames wait to be written."""
        return bool(self._out)

    def flush(self) -> int:
        """Write what the socket takes now; the number of frames written whole."""
        done = 0
        while self._out and not self.broken:
            data, fds = self._out[0]
            try:
                if fds:
                    rights = struct.pack(f"{len(fds)}i", *fds)
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
                    sent = self.sock.sendmsg([data], ancillary, socket.MSG_DONTWAIT)
                else:
                    sent = self.sock.send(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.broken = True
                break
            if fds:
                # The descriptors went with the first byte: the peer has its copies.
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                fds.clear()
            if sent < len(data):
                self._out[0] = (data[sent:], fds)
                break
            self._out.popleft()
            done += 1
        return done

    def receive(self) -> list[bytes]:
        """The frames that have arrived (reads at most about 1 MiB)."""
        frames: list[bytes] = []
        read = 0
        while read < _READ_LIMIT and not self.eof:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.eof = True
                break
            if not data:
                self.eof = True
                break
            read += len(data)
            frames.extend(self._reader.feed(data))
        return frames

    def close(self) -> None:
        """Close the socket, and any descriptor still waiting to be passed."""
        for _, fds in self._out:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._out.clear()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.eof = True


def receive_with_fds(sock: socket.socket, fds: collections.deque[int]) -> bytes:
    """Read what has arrived on a blocking ``sock``; descriptors passed go to ``fds``.

    For the launcher, whose requests carry the new workers' sockets. Returns
    b"" at end of file.
    """
    data, ancillary, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(_MAX_FDS * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
    return data
