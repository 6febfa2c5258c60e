"""Checking a W&B API key with the server before any trial starts.

One GraphQL ``viewer`` query over plain HTTP from the driver: no wandb
import, no wandb-core process, no ``~/.netrc`` or any other file written. A
key the server refuses stops the experiment before a run exists; a server
that does not answer in time delays the start by the time limit at most,
and the experiment goes on (workers fall back to offline runs).
"""

from __future__ import annotations

import base64
import enum
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

_VIEWER_QUERY = "query Viewer { viewer { id entity username } }"


class KeyStatus(enum.Enum):
    """What the server said of a key."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class KeyCheck:
    """The outcome of :func:`check_api_key`.

    Attributes:
        status: accepted, rejected, or the server could not be asked.
        host: the server's host name, for messages.
        detail: the server's or the network's reason (never the key).
    """

    status: KeyStatus
    host: str
    detail: str = ""


def check_api_key(key: str, base_url: str, timeout: float) -> KeyCheck:
    """Ask the W&B server at ``base_url`` who ``key`` belongs to, within ``timeout`` seconds.

    Example:
        >>> check_api_key("x" * 40, "http://127.0.0.1:9", 1.0).status
        <KeyStatus.UNREACHABLE: 'unreachable'>
    """
    url = urlparse(base_url)
    host = url.hostname or base_url
    if url.scheme not in ("http", "https"):
        return KeyCheck(KeyStatus.UNREACHABLE, host, f"not an http(s) URL: {base_url!r}")
    token = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - the user's W&B URL, http(s) only (above)
        base_url.rstrip("/") + "/graphql",
        data=json.dumps({"query": _VIEWER_QUERY}).encode(),
        headers={
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "User-Agent": "tune-wandb key check",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return KeyCheck(KeyStatus.REJECTED, host, _server_message(error))
        return KeyCheck(KeyStatus.UNREACHABLE, host, f"HTTP {error.code}")
    except (OSError, ValueError) as error:
        # URLError, timeouts, refused connections, a reply that is not JSON.
        return KeyCheck(KeyStatus.UNREACHABLE, host, _reason(error))
    viewer = (body.get("data") or {}).get("viewer") if isinstance(body, dict) else None
    if not viewer:
        # W&B answers an unknown key's viewer query with no viewer.
        return KeyCheck(KeyStatus.REJECTED, host, "the server knows no user with this key")
    return KeyCheck(KeyStatus.ACCEPTED, host)


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read() or b"{}")
        messages = [e.get("message", "") for e in body.get("errors", [])]
        message = "; ".join(m for m in messages if m)
    except (OSError, ValueError, AttributeError):
        message = ""
    return f"HTTP {error.code}" + (f": {message}" if message else "")


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason if reason is not None else error) or type(error).__name__
