"""A W&B-compatible HTTP server for tests: the backend wandb-core talks to.

wandb (through its wandb-core service) uses it as its backend when a process
has ``WANDB_BASE_URL`` pointing at it (:meth:`WandbServer.env` gives the whole
environment). It answers the GraphQL operations a run needs (``Viewer``,
``UpsertBucket``, ``RunResumeStatus``, ``CreateRunFiles``, ...), takes the
``file_stream`` posts and file uploads, and records per run what a test wants
to check: project, group, display name, config, history, summary, exit code,
console lines (:attr:`RunRecord.lines`), the API keys the client sent.

Beyond runs, what wandb 0.31 sends for:

- artifacts (``run.log_artifact``, ``wandb sync`` of an offline run's staged
  ones, ``run.use_artifact`` and ``Artifact.download``): each version's name,
  type, aliases, files, manifest and references
  (:meth:`WandbServer.artifacts`, :attr:`RunRecord.artifacts`);
- sweeps (``wandb.sweep(..., prior_runs=...)``, runs given
  ``settings.sweep_id``, ``wandb sweep --stop``, ``wandb.Api().sweep``): each
  sweep's config, state and runs (:meth:`WandbServer.sweeps`);
- shared mode (``mode="shared"``): the processes writing one run, each with
  its label, rows, lines and whether it finished the run
  (:attr:`RunRecord.writers`).

Like W&B, it keeps a history row only when its ``_step`` moves forward; a row
whose ``_step`` is not past the last kept one is dropped and counted, so a test
of resuming proves that the client continued the step count.

Fault knobs, settable while the server runs: :attr:`WandbServer.require_key`
(401 for any other key), :attr:`WandbServer.latency` (seconds before every
answer), :attr:`WandbServer.hang` (take connections, never answer) and
:attr:`WandbServer.refuse` (stop listening, so connections are refused).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import secrets
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import pytest
import yaml

#: The entity (user) the server says the API key belongs to.
DEFAULT_ENTITY = "test-entity"

#: The project W&B files runs under when the client names none.
DEFAULT_PROJECT = "uncategorized"

#: Operations a run sends that have nothing to answer here; answered with
#: empty data and not counted as unknown. (wandb-core asks which CoreWeave
#: organization the entity belongs to; "none" is a valid answer.)
EMPTY_OPERATIONS = frozenset({"OrganizationCoreWeaveOrganizationID"})

_HISTORY_FILE = "wandb-history.jsonl"
_SUMMARY_FILE = "wandb-summary.json"
_EVENTS_FILE = "wandb-events.jsonl"
_OUTPUT_FILE = "output.log"

#: How many lines of history and events RunResumeStatus returns as the tail.
_TAIL_LINES = 10

#: The server feature that makes wandb-core send console lines as JSON objects.
STRUCTURED_CONSOLE_LOGS = "STRUCTURED_CONSOLE_LOGS"

# A console line in wandb-core's plain format: "ERROR " for stderr, the
# client's time (UTC, microseconds), then "[label] " if the writer has one.
_LEGACY_LINE_RE = re.compile(
    r"(?P<error>ERROR )?(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+) (?P<rest>.*)", re.DOTALL
)
# A writer's label, from its console file (output_<label>.log) or from its
# system metrics' keys (system.cpu/l:<label>).
_LABELLED_OUTPUT_RE = re.compile(r"output_(?P<label>.+)\.log")
_METRIC_LABEL = "/l:"

# In shared mode, wandb-core names the writing process in these headers.
_CLIENT_ID_HEADER = "X-WANDB-CLIENT-ID"
_STREAM_CLIENT_ID_HEADER = "X-WANDB-ASYNC-CLIENT-ID"

# Where artifact files and manifests are uploaded: /artifacts/<n>/manifest
# and /artifacts/<n>/files/<path in the artifact>.
_ARTIFACT_PATH = "/artifacts/"

# Sweep ids: W&B's are 8 characters of lower-case letters and digits.
_SWEEP_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

# The first named operation of a document; fragments may come before it.
_OPERATION_RE = re.compile(r"\b(?:query|mutation|subscription)\s+([A-Za-z_]\w*)")
# The first field of an anonymous document, e.g. `{ viewer { id } }`.
_FIRST_FIELD_RE = re.compile(r"^\s*(?:query|mutation)?\s*\{\s*(?:\w+\s*:\s*)?([A-Za-z_]\w*)")
_COMMENT_RE = re.compile(r"#[^\n]*")


@dataclass(frozen=True)
class _Caller:
    """Who sent a GraphQL request: its API key, and its writer's client id in shared mode."""

    key: str | None
    client_id: str | None = None


def _gql_id(kind: str, value: object) -> str:
    """A GraphQL ID in W&B's style: base64 of ``Kind:value``."""
    return base64.b64encode(f"{kind}:{value}".encode()).decode()


def _is_version(artifact: ArtifactRecord, version: str) -> bool:
    """Whether ``version`` (``v3`` or an alias) names this artifact version."""
    return version in artifact.aliases or version == f"v{artifact.version}"


def make_api_key() -> str:
    """A fresh API key in a format wandb accepts (a prefix and 40 hex digits)."""
    return "local-" + secrets.token_hex(20)


@dataclass(frozen=True)
class OutputLine:
    """One line of a run's console (its Logs tab), as the client sent it.

    ``stream`` is ``"stderr"`` for the lines wandb marks as errors (captured
    stderr) and ``"stdout"`` for the others: captured stdout, and the lines of
    ``Run.write_logs``, which carry no stream. ``label`` is the writing
    process's ``x_label`` (shared mode), ``time`` the client's UTC timestamp.
    """

    stream: str
    text: str
    label: str | None = None
    time: str = ""


def parse_output_line(raw: str, labels: Iterable[str] = ()) -> OutputLine:
    """Read one ``output.log`` line of the file_stream, in either of wandb-core's formats.

    The plain format (``ERROR 2024-01-01T00:00:00.000000 [label] text``) does
    not say whether a line has a label; ``[x] `` is read as one only if ``x``
    is among ``labels``. The JSON format (sent to a server with the
    ``STRUCTURED_CONSOLE_LOGS`` feature) says it.
    """
    if raw.startswith("{"):
        with contextlib.suppress(ValueError):
            line = json.loads(raw)
            if isinstance(line, dict) and "content" in line:
                return OutputLine(
                    "stderr" if line.get("level") == "error" else "stdout",
                    str(line["content"]),
                    line.get("label") or None,
                    str(line.get("ts", "")),
                )
    match = _LEGACY_LINE_RE.fullmatch(raw)
    if match is None:
        return OutputLine("stdout", raw)
    stream = "stderr" if match["error"] else "stdout"
    text, label = match["rest"], None
    for known in labels:
        if text.startswith(f"[{known}] "):
            text, label = text[len(known) + 3 :], known
            break
    return OutputLine(stream, text, label, match["time"])


@dataclass
class WriterRecord:
    """One of the processes writing a run in shared mode (``mode="shared"``).

    wandb-core tells the server which writer sent a request by a client id
    (header ``X-WANDB-CLIENT-ID`` on GraphQL, ``X-WANDB-ASYNC-CLIENT-ID`` on
    file_stream). Each writer counts its own ``_step`` and console line
    offsets, so rows and lines are kept per writer as well as in the run;
    ``config`` and ``summary`` are the last this writer sent.
    ``label`` is the writer's ``x_label``, learned from its console file's
    name (``output_<label>.log``), its system metrics (``.../l:<label>``) or
    its JSON console lines. ``finished`` and ``exit_code`` are set if this
    writer finished the run (``x_update_finish_state=False`` writers never do).
    """

    client_id: str
    label: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped_rows: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    finished: bool = False
    exit_code: int | None = None
    # Where each of this writer's console lines is in its run's `output`.
    _slots: list[int] = field(default_factory=list, repr=False)

    @property
    def lines(self) -> list[OutputLine]:
        """This writer's console lines, parsed, in order."""
        labels = [self.label] if self.label else []
        return [parse_output_line(raw, labels) for raw in self.output]


@dataclass
class ArtifactRecord:
    """One artifact version, as a run (or ``wandb sync``) logged it.

    ``name`` is the artifact's collection (``"ckpt"``) and ``version`` its
    index there (``v0`` is 0); ``aliases`` are those it holds now (an alias
    moves to the newest version given it, as on W&B). ``files`` maps the path
    in the artifact of each uploaded file to its bytes; ``manifest`` is the
    uploaded ``wandb_manifest.json``; ``references`` maps the path of each
    reference entry (``add_reference``) to its URI: those are never uploaded.
    ``run_id`` is the run that logged it, ``used_by`` the runs that used it.
    ``state`` is ``"PENDING"`` until the client commits it, then ``"COMMITTED"``.
    """

    id: str
    entity: str
    project: str
    name: str
    type: str
    version: int
    digest: str
    run_id: str | None = None
    aliases: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    history_step: int | None = None
    state: str = "PENDING"
    manifest: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    used_by: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)

    @property
    def qualified_name(self) -> str:
        """``name:v<version>``, as W&B shows it."""
        return f"{self.name}:v{self.version}"

    @property
    def committed(self) -> bool:
        """Whether the client committed this version (its upload completed)."""
        return self.state == "COMMITTED"

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        """The manifest's entries (path to digest, size, ref...); empty before its upload."""
        return dict((self.manifest or {}).get("contents") or {})

    @property
    def references(self) -> dict[str, str]:
        """The path and URI of every reference entry of the manifest."""
        return {path: entry["ref"] for path, entry in self.entries.items() if entry.get("ref")}


@dataclass
class SweepRecord:
    """One sweep, as ``wandb.sweep`` or the ``UpsertSweep`` mutation made it.

    ``id`` is the short name ``wandb.sweep`` returns (a run's ``sweep_id``);
    W&B's GraphQL ID of the sweep is ``storage_id``. ``config`` is the sweep
    configuration (sent as YAML), ``state`` W&B's (``RUNNING``, ``FINISHED``,
    ``PAUSED``, ``CANCELED``), ``states`` every state it was given in order.
    ``run_ids`` are its runs in the order they joined: through
    ``priorRunsFilters`` (``wandb.sweep(prior_runs=...)``, each filter kept
    in ``prior_runs_filters``) or their own ``UpsertBucket`` (``sweep_id``).
    """

    id: str
    storage_id: str
    entity: str
    project: str
    config: dict[str, Any] = field(default_factory=dict)
    state: str = "RUNNING"
    states: list[str] = field(default_factory=list)
    display_name: str | None = None
    description: str | None = None
    prior_runs_filters: list[Any] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    upserts: int = 0
    created_at: float = field(default_factory=time.time)


@dataclass
class RunRecord:
    """What the server knows of one run, keyed by (entity, project, run id).

    ``config`` holds plain values (W&B stores ``{key: {"value": v}}``) without
    wandb's own ``_wandb`` entry, which is in ``wandb_config``. ``history`` holds
    the kept rows in order; ``dropped_rows`` counts the rows refused because
    their ``_step`` did not move forward. ``files`` maps an uploaded file's name
    to its bytes. ``api_keys`` is every key a request about this run carried.
    ``output`` holds the console lines as sent (``lines`` parses them).
    ``sweep`` is the id of the sweep the run belongs to, if any.
    ``artifacts`` are the artifact versions the run created, ``used_artifacts``
    those it used. ``writers`` are the processes that wrote it in shared mode,
    by client id, in the order they came (none for a run of the other modes).
    """

    entity: str
    project: str
    run_id: str
    storage_id: str
    name: str | None = None
    group: str | None = None
    job_type: str | None = None
    notes: str | None = None
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    wandb_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    uploaded: set[str] = field(default_factory=set)
    exit_code: int | None = None
    finished: bool = False
    preempting: bool = False
    dropped_rows: int = 0
    upserts: int = 0
    api_keys: set[str] = field(default_factory=set)
    created_at: float = field(default_factory=time.time)
    sweep: str | None = None
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    used_artifacts: list[ArtifactRecord] = field(default_factory=list)
    writers: dict[str, WriterRecord] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """The run's state as W&B names it: running, finished or failed."""
        if not self.finished:
            return "running"
        return "finished" if self.exit_code == 0 else "failed"

    @property
    def steps(self) -> list[int]:
        """The ``_step`` of every kept history row, in order."""
        return [row["_step"] for row in self.history if "_step" in row]

    @property
    def labels(self) -> list[str]:
        """The labels (``x_label``) of the processes that wrote the run, as far as known.

        Those of its shared-mode writers, and those its console files
        (``output_<label>.log``) and system metrics (``.../l:<label>``) name.
        """
        found = [writer.label for writer in self.writers.values() if writer.label]
        for name in self.files:
            if match := _LABELLED_OUTPUT_RE.fullmatch(name):
                found.append(match["label"])
        for row in self.events:
            found.extend(key.rpartition(_METRIC_LABEL)[2] for key in row if _METRIC_LABEL in key)
        return list(dict.fromkeys(found))

    @property
    def lines(self) -> list[OutputLine]:
        """The console lines (the Logs tab), parsed, in order; see :class:`OutputLine`."""
        # Longest first: a label that starts another label does not take its lines.
        labels = sorted(self.labels, key=len, reverse=True)
        return [parse_output_line(raw, labels) for raw in self.output]

    def writer(self, label: str) -> WriterRecord:
        """The shared-mode writer with this label.

        Raises:
            KeyError: No writer, or more than one, has this label.
        """
        found = [writer for writer in self.writers.values() if writer.label == label]
        if len(found) != 1:
            raise KeyError(f"{len(found)} writers labelled {label!r}")
        return found[0]


class _Handler(BaseHTTPRequestHandler):
    """One connection to the server; every method goes through :meth:`_handle`."""

    # Keep-alive, as wandb-core's Go client expects from W&B.
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request to stderr; tests read the server's records.
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self.server.owner._serve(self)

    def read_body(self) -> bytes:
        """The request body, un-chunked and un-gzipped."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def api_key(self) -> str | None:
        """The key of the request's basic auth (user ``api``), if any."""
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _, _, key = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return key or None

    def reply(self, status: int, payload: Any = None, body: bytes | None = None) -> None:
        """Send a JSON answer (or raw bytes)."""
        data = json.dumps(payload).encode() if body is None else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _HTTPServer(ThreadingHTTPServer):
    """The listening socket; its owner holds the state that outlives a refuse."""

    # Shutdown closes every connection itself; joining the handler threads
    # would wait on hung or idle keep-alive connections.
    block_on_close = False
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: WandbServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own asks the resolver for the host's full name; this
        # server needs no name, and a test needs no DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection closed under a handler (the client dropping an idle
        # keep-alive connection, or the server closing it for hang, refuse or
        # stop) is no error; anything else is recorded for the test to see.
        if not isinstance(sys.exc_info()[1], OSError):
            self.owner._record_error(client_address)


class WandbServer:
    """A W&B backend on 127.0.0.1 for wandb clients under test.

    Start it with :meth:`start` (or use it as a context manager, or the
    ``wandb_server`` fixture); give a client process :meth:`env`. All
    attributes and methods are safe to use from any thread while it runs.

    Attributes:
        api_key: The key :meth:`env` hands out.
        entity: The entity (user) name of the viewer.
        unknown_operations: Names of GraphQL operations (or ``"METHOD /path"``
            of other requests) the server has no answer for, in arrival order.
        operations: Every GraphQL operation name received, in arrival order.
        requests: Every request as ``"METHOD /path"``, in arrival order.
        api_keys: Every key any request carried.
        errors: Requests whose handling raised, as text.
    """

    def __init__(self, api_key: str | None = None, entity: str = DEFAULT_ENTITY) -> None:
        self.api_key = api_key or make_api_key()
        self.entity = entity
        self.unknown_operations: list[str] = []
        self.operations: list[str] = []
        self.requests: list[str] = []
        self.api_keys: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._runs: dict[tuple[str, str, str], RunRecord] = {}
        self._artifacts: dict[str, ArtifactRecord] = {}
        self._manifests: dict[str, ArtifactRecord] = {}
        self._sweeps: dict[str, SweepRecord] = {}
        self._features: frozenset[str] = frozenset()
        self._connections: set[socket.socket] = set()
        self._closing = threading.Event()
        self._unhang = threading.Event()
        self._require_key: str | None = None
        self._latency = 0.0
        self._hang = False
        self._refuse = False
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- life cycle ---------------------------------------------------------

    def start(self) -> WandbServer:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        with self._lock:
            self._closing.clear()
            if self._hang:
                self._unhang.clear()
            self._listen(self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close every connection, hung ones included; fast."""
        self._closing.set()
        self._unhang.set()  # hung handlers return, and see the server closing
        with self._lock:
            self._close_listener()
            self._close_connections()

    def __enter__(self) -> WandbServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, as ``WANDB_BASE_URL`` wants it."""
        return f"http://127.0.0.1:{self.port}"

    def env(self, api_key: str | None = None) -> dict[str, str]:
        """The environment variables a process needs to log to this server online."""
        return {
            "WANDB_BASE_URL": self.url,
            "WANDB_MODE": "online",
            "WANDB_API_KEY": api_key or self.api_key,
        }

    def _listen(self, port: int) -> None:
        self._httpd = _HTTPServer(("127.0.0.1", port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"wandb-server-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def _close_listener(self) -> None:
        if self._httpd is None:
            return
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=2)

    def _close_connections(self) -> None:
        for conn in list(self._connections):
            with contextlib.suppress(OSError):  # the peer may have gone already
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._connections.clear()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _record_error(self, client_address: Any) -> None:
        with self._lock:
            self.errors.append(f"{client_address}: {traceback.format_exc()}")

    # -- fault knobs --------------------------------------------------------

    @property
    def require_key(self) -> str | None:
        """If set, a request with any other key (or none) gets HTTP 401."""
        return self._require_key

    @require_key.setter
    def require_key(self, key: str | None) -> None:
        with self._lock:
            self._require_key = key

    @property
    def latency(self) -> float:
        """Seconds the server waits before answering any request."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    @property
    def hang(self) -> bool:
        """If true, requests are read and never answered (until turned off or stop)."""
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        with self._lock:
            self._hang = value
            if value:
                self._unhang.clear()
            else:
                self._unhang.set()

    @property
    def refuse(self) -> bool:
        """If true, nothing listens on the port: connections are refused.

        Turning it on also closes the open connections, as a server going
        down would; turning it off listens again on the same port.
        """
        return self._refuse

    @refuse.setter
    def refuse(self, value: bool) -> None:
        with self._lock:
            if value == self._refuse or self._closing.is_set():
                self._refuse = value
                return
            self._refuse = value
            if value:
                self._close_listener()
                self._close_connections()
            else:
                self._listen(self.port)

    @property
    def features(self) -> frozenset[str]:
        """The optional server features the server says it has (none by default).

        wandb-core asks once per run, at its start. E.g. with
        :data:`STRUCTURED_CONSOLE_LOGS`, console lines come as JSON objects that
        say their label.
        """
        return self._features

    @features.setter
    def features(self, names: Iterable[str]) -> None:
        with self._lock:
            self._features = frozenset(names)

    # -- queries for tests --------------------------------------------------

    def runs(self) -> list[RunRecord]:
        """Every run the server knows, in the order they were created.

        The records are live: the server updates them as requests arrive.
        """
        with self._lock:
            return list(self._runs.values())

    def run(self, run_id: str, project: str | None = None, entity: str | None = None) -> RunRecord:
        """The run with this id (narrowed by project and entity if given).

        Raises:
            KeyError: No such run, or the id is ambiguous across projects.
        """
        with self._lock:
            found = [
                record
                for (ent, proj, rid), record in self._runs.items()
                if rid == run_id
                and (project is None or proj == project)
                and (entity is None or ent == entity)
            ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} runs with id {run_id!r}")
        return found[0]

    def artifacts(
        self, name: str | None = None, project: str | None = None, entity: str | None = None
    ) -> list[ArtifactRecord]:
        """Every artifact version the server knows, in the order they were created.

        Narrowed to one collection (``name``, without version), project and
        entity if given. The records are live, as those of :meth:`runs`.
        """
        with self._lock:
            return [
                artifact
                for artifact in self._artifacts.values()
                if (name is None or artifact.name == name)
                and (project is None or artifact.project == project)
                and (entity is None or artifact.entity == entity)
            ]

    def artifact(self, spec: str, project: str | None = None) -> ArtifactRecord:
        """The artifact version ``name:v<N>`` or ``name:<alias>`` (``name`` alone: ``latest``).

        Raises:
            KeyError: No such version, or the name is ambiguous across projects.
        """
        name, _, version = spec.partition(":")
        with self._lock:
            found = [
                artifact
                for artifact in self._artifacts.values()
                if artifact.name == name
                and (project is None or artifact.project == project)
                and _is_version(artifact, version or "latest")
            ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} artifacts {spec!r}")
        return found[0]

    def sweeps(self) -> list[SweepRecord]:
        """Every sweep the server knows, in the order they were created (live records)."""
        with self._lock:
            return list(self._sweeps.values())

    def sweep(self, sweep_id: str) -> SweepRecord:
        """The sweep with this id (the name ``wandb.sweep`` returns).

        Raises:
            KeyError: No such sweep.
        """
        with self._lock:
            return self._sweeps[sweep_id]

    def wait_finished(self, run_ids: Iterable[str], timeout: float = 30.0) -> list[RunRecord]:
        """Wait until every run in ``run_ids`` has finished; returns their records.

        Raises:
            TimeoutError: Some run has not finished in ``timeout`` seconds.
        """
        wanted = list(run_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                done = {r.run_id: r for r in self._runs.values() if r.finished}
                missing = [rid for rid in wanted if rid not in done]
                if not missing:
                    return [done[rid] for rid in wanted]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"runs not finished after {timeout}s: {missing}")
                self._changed.wait(left)

    # -- request handling ---------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        try:
            self._answer(handler)
        except OSError:
            # The connection closed under the request: no one to answer.
            handler.close_connection = True
        except Exception:
            # A request the server cannot take is the test's to see, and the
            # client gets an answer rather than a dropped connection.
            self._record_error(handler.client_address)
            handler.close_connection = True
            handler.reply(500, {"errors": [{"message": "test server error"}]})

    def _answer(self, handler: _Handler) -> None:
        body = handler.read_body()
        key = handler.api_key()
        path = urlsplit(handler.path).path
        graphql = handler.command == "POST" and path.rstrip("/") == "/graphql"
        request = json.loads(body or b"{}") if graphql else {}
        operation = request.get("operationName") or _operation_name(request.get("query") or "")
        with self._lock:
            self.requests.append(f"{handler.command} {path}" + (f" {operation}" if graphql else ""))
            if key is not None:
                self.api_keys.add(key)
        if self._hang:
            # Hold the connection without a word until hang is turned off or
            # the server stops (which closes the socket under the handler).
            self._unhang.wait()
        if self._latency > 0:
            self._closing.wait(self._latency)
        if self._closing.is_set():
            handler.close_connection = True
            return
        required = self._require_key
        if required is not None and key != required:
            # W&B's answer to a bad key; wandb-core does not retry a 401.
            handler.reply(
                401,
                {
                    "errors": [
                        {"message": "Invalid API key", "extensions": {"code": "UNAUTHORIZED"}}
                    ]
                },
            )
        elif graphql:
            caller = _Caller(key, handler.headers.get(_CLIENT_ID_HEADER))
            handler.reply(200, self._graphql(operation, request.get("variables") or {}, caller))
        elif path.startswith("/files/"):
            self._files(handler, path, body, key)
        elif path.startswith(_ARTIFACT_PATH):
            self._artifact_file(handler, path, body)
        elif path.startswith("/sdk/"):
            handler.reply(200, {})  # wandb-core's OpenTelemetry metrics and logs: taken, not kept
        else:
            with self._lock:
                self.unknown_operations.append(f"{handler.command} {path}")
            handler.reply(404, {"errors": [{"message": "not found"}]})

    def _files(self, handler: _Handler, path: str, body: bytes, key: str | None) -> None:
        parts = [unquote(part) for part in path.split("/")[2:]]
        if len(parts) < 4:
            handler.reply(404, {"error": "not found"})
            return
        entity, project, run_id, name = parts[0], parts[1], parts[2], "/".join(parts[3:])
        with self._changed:
            record = self._record(entity, project, run_id, key)
            if handler.command == "POST" and name == "file_stream":
                client_id = handler.headers.get(_STREAM_CLIENT_ID_HEADER)
                writer = None if client_id is None else self._writer(record, client_id)
                self._file_stream(record, json.loads(body or b"{}"), writer)
                self._changed.notify_all()
                handler.reply(200, {"exitcode": None, "limits": {}})
                return
            if handler.command == "PUT":
                record.files[name] = body
                self._changed.notify_all()
                handler.reply(200, {})
                return
            data = record.files.get(name) if handler.command == "GET" else None
        if data is None:
            handler.reply(404, {"error": "not found"})
        else:
            handler.reply(200, body=data)

    def _file_stream(
        self, record: RunRecord, request: dict[str, Any], writer: WriterRecord | None
    ) -> None:
        """Take one file_stream post; ``writer`` is its sender in shared mode."""
        files = request.get("files") or {}
        self._take_history(record, writer, (files.get(_HISTORY_FILE) or {}).get("content") or [])
        summary = (files.get(_SUMMARY_FILE) or {}).get("content") or []
        if summary:
            # Each post carries the writer's whole summary, not a change to it;
            # the writers of a shared run each have theirs.
            whole = json.loads(summary[-1])
            if writer is None:
                record.summary = whole
            else:
                writer.summary = whole
                record.summary.update(whole)
        self._take_events(record, writer, (files.get(_EVENTS_FILE) or {}).get("content") or [])
        output = files.get(_OUTPUT_FILE) or {}
        # Console lines are rewritten in place (progress bars): place them by offset.
        for index, line in enumerate(output.get("content") or [], start=output.get("offset", 0)):
            if writer is None:
                record.output.extend([""] * (index + 1 - len(record.output)))
                record.output[index] = line
            else:
                self._place_writer_line(record, writer, index, line)
        record.uploaded.update(request.get("uploaded") or [])
        if request.get("preempting"):
            record.preempting = True
        if request.get("complete"):
            record.finished = True
            record.exit_code = request.get("exitcode")
            if writer is not None:
                writer.finished, writer.exit_code = True, record.exit_code

    @staticmethod
    def _take_history(record: RunRecord, writer: WriterRecord | None, lines: list[str]) -> None:
        # A shared-mode writer counts its own steps: each is checked against its own.
        kept = writer.history if writer is not None else record.history
        for line in lines:
            row = json.loads(line)
            last = kept[-1].get("_step") if kept else None
            step = row.get("_step")
            if step is not None and last is not None and step <= last:
                record.dropped_rows += 1
                if writer is not None:
                    writer.dropped_rows += 1
            else:
                record.history.append(row)
                if writer is not None:
                    writer.history.append(row)

    @staticmethod
    def _take_events(record: RunRecord, writer: WriterRecord | None, lines: list[str]) -> None:
        events = [json.loads(line) for line in lines]
        record.events.extend(events)
        if writer is None:
            return
        writer.events.extend(events)
        for row in events:
            labels = [key.rpartition(_METRIC_LABEL)[2] for key in row if _METRIC_LABEL in key]
            writer.label = writer.label or next(iter(labels), None)

    @staticmethod
    def _place_writer_line(record: RunRecord, writer: WriterRecord, index: int, line: str) -> None:
        """Put a shared-mode writer's line at its offset, and in the run after those before it."""
        while len(writer.output) <= index:
            # A line the writer has not sent yet gets its place in the run now,
            # so the run's lines keep each writer's order.
            writer.output.append("")
            writer._slots.append(len(record.output))
            record.output.append("")
        writer.output[index] = line
        record.output[writer._slots[index]] = line
        if writer.label is None and line.startswith("{"):
            writer.label = parse_output_line(line).label

    def _writer(self, record: RunRecord, client_id: str) -> WriterRecord:
        """The run's shared-mode writer with this client id, added if new; caller holds the lock."""
        writer = record.writers.get(client_id)
        if writer is None:
            writer = record.writers[client_id] = WriterRecord(client_id)
        return writer

    def _record(
        self, entity: str | None, project: str | None, run_id: str, key: str | None
    ) -> RunRecord:
        """The run's record, created if new; the caller holds the lock."""
        entity, project = entity or self.entity, project or DEFAULT_PROJECT
        record = self._runs.get((entity, project, run_id))
        if record is None:
            storage_id = base64.b64encode(f"Run:v1:{run_id}:{project}:{entity}".encode()).decode()
            record = RunRecord(entity, project, run_id, storage_id)
            self._runs[entity, project, run_id] = record
        if key is not None:
            record.api_keys.add(key)
        return record

    def _find(self, entity: str | None, project: str | None, run_id: str) -> RunRecord | None:
        return self._runs.get((entity or self.entity, project or DEFAULT_PROJECT, run_id))

    # -- GraphQL ------------------------------------------------------------

    _RESOLVERS: ClassVar[dict[str, str]] = {
        "Viewer": "_viewer",
        "GetViewer": "_viewer",
        "GetDefaultEntity": "_viewer",
        "viewer": "_viewer",
        "ServerFeaturesQuery": "_server_features",
        "ServerInfo": "_server_info",
        "UpsertBucket": "_upsert_bucket",
        "RunResumeStatus": "_run_resume_status",
        "CreateRunFiles": "_create_run_files",
        "MarkRunFilesUploaded": "_mark_run_files_uploaded",
        "RunStoppedStatus": "_run_stopped_status",
        "Run": "_public_run",
        "Runs": "_public_runs",
        "ArtifactType": "_artifact_type",
        "CreateArtifact": "_create_artifact",
        "CreateArtifactManifest": "_create_artifact_manifest",
        "UpdateArtifactManifest": "_update_artifact_manifest",
        "CreateArtifactFiles": "_create_artifact_files",
        "CommitArtifact": "_commit_artifact",
        "UseArtifact": "_use_artifact",
        "ArtifactMembershipByName": "_artifact_membership",
        "ArtifactByID": "_artifact_by_id",
        "FetchArtifactManifest": "_fetch_artifact_manifest",
        "GetArtifactMembershipFileUrls": "_artifact_file_urls",
        "UpsertSweep": "_upsert_sweep",
        "GetSweep": "_get_sweep",
        "GetSweepLegacy": "_get_sweep",
        "GetSweepState": "_get_sweep",
        "SweepWithRuns": "_get_sweep",
    }

    def _graphql(
        self, operation: str, variables: dict[str, Any], caller: _Caller
    ) -> dict[str, Any]:
        with self._changed:
            self.operations.append(operation)
            resolver = self._RESOLVERS.get(operation)
            if resolver is None:
                if operation not in EMPTY_OPERATIONS:
                    self.unknown_operations.append(operation)
                return {"data": {}}
            data = getattr(self, resolver)(variables, caller)
            self._changed.notify_all()
        return {"data": data}

    def _viewer(self, _variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        return {
            "viewer": {
                "id": base64.b64encode(f"User:{self.entity}".encode()).decode(),
                "entity": self.entity,
                "name": "Test User",
                "username": "test",
                "email": "test@example.com",
                "admin": False,
                "flags": "{}",
                "deletedAt": None,
                "apiKeys": {"edges": []},
                "teams": {"edges": []},
                "organizations": [],
                "defaultEntity": {"id": "RW50aXR5OjE=", "name": self.entity},
            }
        }

    def _server_features(self, _variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        # None by default: the client uses the plain code paths (no gzip etc.).
        features = [{"name": name, "isEnabled": True} for name in sorted(self._features)]
        return {"serverInfo": {"features": features}}

    def _server_info(self, _variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        return {"serverInfo": {"cliVersionInfo": {}, "latestLocalVersionInfo": None}}

    def _upsert_bucket(self, variables: dict[str, Any], caller: _Caller) -> dict[str, Any]:
        run_id = variables.get("name") or secrets.token_hex(4)
        entity, project = variables.get("entity"), variables.get("project")
        inserted = self._find(entity, project, run_id) is None
        record = self._record(entity, project, run_id, caller.key)
        record.upserts += 1
        writer = None
        joining = caller.client_id is not None and caller.client_id not in record.writers
        if caller.client_id is not None:
            writer = self._writer(record, caller.client_id)
        if record.finished and (writer is None or joining):
            # A finished run upserted again is being resumed, or joined by a
            # new writer in shared mode: it runs again. (The later upserts of
            # a shared run's writers, after another writer finished it, do not.)
            record.finished, record.exit_code = False, None
        # An upsert changes only the fields it names.
        if variables.get("displayName") is not None:
            record.name = variables["displayName"]
        if variables.get("groupName") is not None:
            record.group = variables["groupName"]
        if variables.get("jobType") is not None:
            record.job_type = variables["jobType"]
        if variables.get("notes") is not None:
            record.notes = variables["notes"]
        if variables.get("tags") is not None:
            record.tags = list(variables["tags"])
        if variables.get("config") is not None:
            self._take_config(record, writer, json.loads(variables["config"]))
        if variables.get("summaryMetrics") is not None:
            record.summary.update(json.loads(variables["summaryMetrics"]))
        if variables.get("sweep"):
            self._join_sweep(record, variables["sweep"])
        return {
            "upsertBucket": {
                "bucket": {
                    "id": record.storage_id,
                    "name": record.run_id,
                    "displayName": record.name,
                    "description": record.notes,
                    "config": json.dumps(self._stored_config(record)),
                    "sweepName": record.sweep,
                    "project": {
                        "id": base64.b64encode(f"Project:{record.project}".encode()).decode(),
                        "name": record.project,
                        "entity": {
                            "id": base64.b64encode(f"Entity:{record.entity}".encode()).decode(),
                            "name": record.entity,
                        },
                    },
                    "historyLineCount": len(record.history),
                },
                "inserted": inserted,
            }
        }

    @staticmethod
    def _take_config(
        record: RunRecord, writer: WriterRecord | None, stored: dict[str, Any]
    ) -> None:
        wandb_config = (stored.pop("_wandb", None) or {}).get("value") or {}
        config = {k: v.get("value") for k, v in stored.items()}
        if writer is None:
            record.wandb_config, record.config = wandb_config, config
            return
        # Each writer of a shared run sends only the config it knows (only the
        # primary's has its environment, `_wandb.e`, keyed by writer id: made
        # to be merged). The server merges them, so that no writer wipes out
        # another's keys; whether W&B does is not known here.
        writer.config = config
        environments = {**record.wandb_config.get("e", {}), **wandb_config.get("e", {})}
        record.wandb_config.update(wandb_config)
        if environments:
            record.wandb_config["e"] = environments
        record.config.update(config)

    @staticmethod
    def _stored_config(record: RunRecord) -> dict[str, Any]:
        """The config as W&B stores it: ``{key: {"value": v}}``, ``_wandb`` included."""
        stored = {k: {"value": v} for k, v in record.config.items()}
        if record.wandb_config:
            stored["_wandb"] = {"value": record.wandb_config}
        return stored

    def _run_resume_status(self, variables: dict[str, Any], caller: _Caller) -> dict[str, Any]:
        entity = variables.get("entity") or self.entity
        project = variables.get("project") or DEFAULT_PROJECT
        record = self._find(entity, project, variables.get("name") or "")
        bucket = None
        if record is not None:
            record.api_keys.update([caller.key] if caller.key else [])
            bucket = {
                "id": record.storage_id,
                "name": record.run_id,
                "displayName": record.name,
                # The client continues from the step after the tail's last
                # `_step` (and the summary's), and from these line counts.
                "historyLineCount": len(record.history),
                "eventsLineCount": len(record.events),
                "logLineCount": len(record.output),
                "historyTail": json.dumps(
                    [json.dumps(row) for row in record.history[-_TAIL_LINES:]]
                ),
                "eventsTail": json.dumps([json.dumps(row) for row in record.events[-_TAIL_LINES:]]),
                "summaryMetrics": json.dumps(record.summary),
                "config": json.dumps(self._stored_config(record)),
                # Only the keys asked for (`wandbConfig(keys: ["t"])`); the
                # client takes a run without "t" for one that never started.
                "wandbConfig": json.dumps(
                    {"t": record.wandb_config["t"]} if "t" in record.wandb_config else {}
                ),
                "tags": record.tags,
                "notes": record.notes,
            }
        return {
            "model": {
                "id": base64.b64encode(f"Project:{project}".encode()).decode(),
                "name": project,
                "entity": {
                    "id": base64.b64encode(f"Entity:{entity}".encode()).decode(),
                    "name": entity,
                },
                "bucket": bucket,
            }
        }

    def _create_run_files(self, variables: dict[str, Any], caller: _Caller) -> dict[str, Any]:
        record = self._record(
            variables.get("entity"), variables.get("project"), variables["run"], caller.key
        )
        if caller.client_id is not None:
            writer = self._writer(record, caller.client_id)
            for name in variables.get("files") or []:
                writer.files.append(name)
                if writer.label is None and (match := _LABELLED_OUTPUT_RE.fullmatch(name)):
                    writer.label = match["label"]
        prefix = "/".join(
            quote(part, safe="") for part in (record.entity, record.project, record.run_id)
        )
        return {
            "createRunFiles": {
                "runID": record.storage_id,
                "uploadHeaders": [],
                "files": [
                    {"name": name, "uploadUrl": f"{self.url}/files/{prefix}/{quote(name)}"}
                    for name in variables.get("files") or []
                ],
            }
        }

    def _mark_run_files_uploaded(
        self, variables: dict[str, Any], caller: _Caller
    ) -> dict[str, Any]:
        record = self._record(
            variables.get("entity"), variables.get("project"), variables["run"], caller.key
        )
        record.uploaded.update(variables.get("files") or [])
        return {"markRunFilesUploaded": {"success": True}}

    def _run_stopped_status(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        record = self._find(
            variables.get("entityName"), variables.get("projectName"), variables.get("runId") or ""
        )
        return {"project": {"run": None if record is None else {"stopped": False}}}

    def _public_run(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """The public API's ``Run`` query (``wandb.Api().run(path)``)."""
        record = self._find(variables.get("entity"), variables.get("project"), variables["name"])
        return {"project": {"run": None if record is None else self._run_node(record)}}

    def _public_runs(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """The public API's ``Runs`` query (``api.runs(path, filters)``, a sweep's runs).

        Filters as :func:`_runs_filter` reads them; runs in the order they were
        created (newest first for the order ``-created_at``; other orders are ignored).
        """
        entity = variables.get("entity") or self.entity
        project = variables.get("project") or DEFAULT_PROJECT
        matches = _runs_filter(json.loads(variables.get("filters") or "{}"))
        found = [
            record
            for record in self._runs.values()
            if (record.entity, record.project) == (entity, project) and matches(record)
        ]
        if variables.get("order") == "-created_at":
            found.reverse()
        start = int(variables.get("cursor") or 0)
        end = start + int(variables.get("perPage") or 50)
        edges = [
            {"node": self._run_node(record), "cursor": str(index + 1)}
            for index, record in enumerate(found[start:end], start=start)
        ]
        return {
            "project": {
                "internalId": _gql_id("Project", project),
                "runCount": len(found),
                "readOnly": False,
                "runs": {
                    "edges": edges,
                    "pageInfo": {
                        "endCursor": str(min(end, len(found))),
                        "hasNextPage": end < len(found),
                    },
                },
            }
        }

    def _run_node(self, record: RunRecord) -> dict[str, Any]:
        """A run as the public API's queries want it."""
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created_at))
        return {
            "projectId": "1",
            "id": record.storage_id,
            "name": record.run_id,
            "displayName": record.name,
            "tags": record.tags,
            "sweepName": record.sweep,
            "state": record.state,
            "config": json.dumps(self._stored_config(record)),
            "group": record.group,
            "jobType": record.job_type,
            "commit": None,
            "readOnly": False,
            "createdAt": created,
            "heartbeatAt": created,
            "description": record.notes,
            "notes": record.notes,
            "systemMetrics": "{}",
            "summaryMetrics": json.dumps(record.summary),
            "historyLineCount": len(record.history),
            "user": {"name": "Test User", "username": "test"},
            "historyKeys": None,
        }

    # -- artifacts ----------------------------------------------------------

    def _artifact_type(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """Asked before a run logs an artifact: the type of the collection's ``name:alias``."""
        artifact = self._find_artifact(variables)
        found = None if artifact is None else {"artifactType": {"name": artifact.type}}
        return {"project": {"artifact": found}}

    def _find_artifact(self, variables: dict[str, Any]) -> ArtifactRecord | None:
        """The version that ``name`` (``coll:v1``, ``coll:alias``) names in entity/project."""
        name, _, version = str(variables.get("name") or "").partition(":")
        entity = variables.get("entity") or self.entity
        project = variables.get("project") or DEFAULT_PROJECT
        found = [
            artifact
            for artifact in self._artifacts.values()
            if (artifact.entity, artifact.project, artifact.name) == (entity, project, name)
            and _is_version(artifact, version or "latest")
        ]
        return found[-1] if found else None

    def _artifact_membership(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """The public API's look-up of ``name:version`` (``run.use_artifact``, ``api.artifact``)."""
        artifact = self._find_artifact(variables)
        if artifact is None or not artifact.committed:
            return {"project": {"artifactCollectionMembership": None}}
        node = self._artifact_node(artifact)
        membership = {
            "__typename": "ArtifactCollectionMembership",
            "id": _gql_id("ArtifactCollectionMembership", artifact.id),
            "versionIndex": artifact.version,
            "createdAt": node["createdAt"],
            "aliases": node["aliases"],
            "artifactCollection": node["artifactSequence"],
            "artifact": node,
        }
        return {"project": {"artifactCollectionMembership": membership}}

    def _artifact_by_id(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """Asked by ``Artifact.wait()`` once the artifact is saved."""
        artifact = self._artifacts.get(variables.get("id") or "")
        return {"artifact": None if artifact is None else self._artifact_node(artifact)}

    @staticmethod
    def _artifact_node(artifact: ArtifactRecord) -> dict[str, Any]:
        """An artifact version as the public API's ``ArtifactFragment`` wants it."""
        project = {
            "id": _gql_id("Project", artifact.project),
            "internalId": _gql_id("Project", artifact.project),
            "name": artifact.project,
            "entity": {"name": artifact.entity},
        }
        collection = {"__typename": "ArtifactSequence", "name": artifact.name, "project": project}
        aliases = [
            {
                "__typename": "ArtifactAlias",
                "id": _gql_id("ArtifactAlias", f"{artifact.id}:{alias}"),
                "alias": alias,
                "artifactCollection": collection,
            }
            for alias in artifact.aliases
        ]
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(artifact.created_at))
        return {
            "__typename": "Artifact",
            "id": artifact.id,
            "artifactSequence": collection,
            "versionIndex": artifact.version,
            "artifactType": {"name": artifact.type},
            "description": artifact.description,
            "metadata": json.dumps(artifact.metadata),
            "ttlDurationSeconds": -1,
            "ttlIsInherited": True,
            "tags": [
                {"__typename": "Tag", "id": _gql_id("Tag", tag), "name": tag}
                for tag in artifact.tags
            ],
            "historyStep": artifact.history_step,
            "state": artifact.state,
            "size": sum(int(entry.get("size") or 0) for entry in artifact.entries.values()),
            "digest": artifact.digest,
            "commitHash": None,
            "fileCount": len(artifact.entries),
            "createdAt": created,
            "updatedAt": created,
            "aliases": aliases,
        }

    def _fetch_artifact_manifest(
        self, variables: dict[str, Any], _caller: _Caller
    ) -> dict[str, Any]:
        artifact = self._artifacts.get(variables.get("id") or "")
        if artifact is None:
            return {"artifact": None}
        url = f"{self.url}{self._artifact_url(artifact)}/manifest"
        return {"artifact": {"currentManifest": {"file": {"directUrl": url}}}}

    def _artifact_file_urls(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """Where to download the files of ``collection:alias`` (``Artifact.download``), one page."""
        name = f"{variables.get('collection')}:{variables.get('alias')}"
        artifact = self._find_artifact({**variables, "name": name})
        if artifact is None:
            return {"project": {"artifactCollection": None}}
        prefix = f"{self.url}{self._artifact_url(artifact)}/files/"
        edges = [
            {"node": {"__typename": "File", "name": path, "directUrl": prefix + quote(path)}}
            for path in artifact.files
        ]
        page = {"__typename": "PageInfo", "endCursor": None, "hasNextPage": False}
        files = {"pageInfo": page, "edges": edges}
        return {
            "project": {
                "artifactCollection": {
                    "__typename": "ArtifactSequence",
                    "artifactMembership": {"files": files},
                }
            }
        }

    def _create_artifact(self, variables: dict[str, Any], caller: _Caller) -> dict[str, Any]:
        spec = variables["input"]
        entity = spec.get("entityName") or self.entity
        project = spec.get("projectName") or DEFAULT_PROJECT
        name = spec["artifactCollectionName"]
        siblings = [
            artifact
            for artifact in self._artifacts.values()
            if (artifact.entity, artifact.project, artifact.name) == (entity, project, name)
        ]
        latest = siblings[-1] if siblings else None
        aliases = [alias["alias"] for alias in spec.get("aliases") or []]
        same = [artifact for artifact in siblings if artifact.digest == spec.get("digest")]
        if same and same[-1].committed and spec.get("enableDigestDeduplication"):
            # W&B makes no new version of content it has: the existing one
            # takes the new aliases, and the client uploads nothing.
            artifact = same[-1]
            self._give_aliases(artifact, siblings, aliases)
        else:
            number = len(self._artifacts)
            artifact = ArtifactRecord(
                id=_gql_id("Artifact", number),
                entity=entity,
                project=project,
                name=name,
                type=spec.get("artifactTypeName") or "",
                version=len(siblings),
                digest=spec.get("digest") or "",
                run_id=spec.get("runName"),
                tags=[tag["tagName"] for tag in spec.get("tags") or []],
                description=spec.get("description"),
                metadata=json.loads(spec.get("metadata") or "{}"),
                history_step=spec.get("historyStep"),
            )
            self._artifacts[artifact.id] = artifact
            # W&B's latest version of a collection is always "latest".
            self._give_aliases(artifact, siblings, ["latest", *aliases])
            if artifact.run_id is not None:
                self._record(entity, project, artifact.run_id, caller.key).artifacts.append(
                    artifact
                )
        base = None if latest is None or latest is artifact else {"id": latest.id}
        return {
            "createArtifact": {
                "artifact": {
                    "id": artifact.id,
                    "state": artifact.state,
                    "artifactSequence": {"latestArtifact": base},
                }
            }
        }

    @staticmethod
    def _give_aliases(
        artifact: ArtifactRecord, siblings: list[ArtifactRecord], aliases: Iterable[str]
    ) -> None:
        """Give ``aliases`` to ``artifact``: an alias names one version of a collection."""
        for alias in aliases:
            for sibling in siblings:
                if sibling is not artifact and alias in sibling.aliases:
                    sibling.aliases.remove(alias)
            if alias not in artifact.aliases:
                artifact.aliases.append(alias)

    def _create_artifact_manifest(
        self, variables: dict[str, Any], _caller: _Caller
    ) -> dict[str, Any]:
        artifact = self._artifacts[variables["artifactID"]]
        manifest_id = _gql_id("ArtifactManifest", artifact.id)
        self._manifests[manifest_id] = artifact
        return {"createArtifactManifest": {"artifactManifest": self._manifest_answer(artifact)}}

    def _update_artifact_manifest(
        self, variables: dict[str, Any], _caller: _Caller
    ) -> dict[str, Any]:
        artifact = self._manifests[variables["artifactManifestID"]]
        return {"updateArtifactManifest": {"artifactManifest": self._manifest_answer(artifact)}}

    def _manifest_answer(self, artifact: ArtifactRecord) -> dict[str, Any]:
        return {
            "id": _gql_id("ArtifactManifest", artifact.id),
            "file": {
                "id": _gql_id("File", f"{artifact.id}/manifest"),
                "uploadUrl": f"{self.url}{self._artifact_url(artifact)}/manifest",
                "uploadHeaders": [],
            },
        }

    @staticmethod
    def _artifact_url(artifact: ArtifactRecord) -> str:
        return _ARTIFACT_PATH + quote(artifact.id, safe="")

    def _create_artifact_files(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        # wandb-core 0.31 sends {"input": {"artifactFiles": ...}}; older ones the files alone.
        specs = variables.get("input", variables).get("artifactFiles") or []
        edges = []
        for spec in specs:
            artifact = self._artifacts[spec["artifactID"]]
            # One upload URL per file, also for the big files the client would
            # upload in parts (uploadPartsInput): it then makes one PUT.
            url = f"{self.url}{self._artifact_url(artifact)}/files/{quote(spec['name'])}"
            edges.append(
                {
                    "node": {
                        "storagePath": f"wandb_artifacts/{spec.get('md5')}",
                        "uploadUrl": url,
                        "uploadHeaders": [],
                        "uploadMultipartUrls": None,
                        "artifact": {"id": artifact.id},
                    }
                }
            )
        return {"createArtifactFiles": {"files": {"edges": edges}}}

    def _commit_artifact(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        artifact = self._artifacts[variables["artifactID"]]
        artifact.state = "COMMITTED"
        return {"commitArtifact": {"artifact": {"id": artifact.id, "digest": artifact.digest}}}

    def _use_artifact(self, variables: dict[str, Any], caller: _Caller) -> dict[str, Any]:
        # wandb-core sends {"input": {...}}; the public API (run.use_artifact) the fields.
        spec = variables.get("input", variables)
        artifact = self._artifacts[spec["artifactID"]]
        record = self._record(
            spec.get("entityName"), spec.get("projectName"), spec["runName"], caller.key
        )
        if artifact not in record.used_artifacts:
            record.used_artifacts.append(artifact)
            artifact.used_by.append(record.run_id)
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(artifact.created_at))
        answer = {
            "id": artifact.id,
            "digest": artifact.digest,
            "description": artifact.description,
            "state": artifact.state,
            "createdAt": created,
            "metadata": json.dumps(artifact.metadata),
        }
        return {"useArtifact": {"artifact": answer}}

    def _artifact_file(self, handler: _Handler, path: str, body: bytes) -> None:
        """An upload (PUT) or download (GET) of an artifact's manifest or file."""
        artifact_id, _, rest = path[len(_ARTIFACT_PATH) :].partition("/")
        with self._changed:
            artifact = self._artifacts.get(unquote(artifact_id))
            kind, _, name = rest.partition("/")
            name = unquote(name)
            if artifact is None or (kind, bool(name)) not in {("manifest", False), ("files", True)}:
                self.unknown_operations.append(f"{handler.command} {path}")
                handler.reply(404, {"error": "not found"})
                return
            if handler.command == "PUT":
                if kind == "manifest":
                    artifact.manifest = json.loads(body)
                else:
                    artifact.files[name] = body
                self._changed.notify_all()
                handler.reply(200, {})
                return
            if kind == "manifest":
                data = None if artifact.manifest is None else json.dumps(artifact.manifest).encode()
            else:
                data = artifact.files.get(name)
        if data is None:
            handler.reply(404, {"error": "not found"})
        else:
            handler.reply(200, body=data)

    # -- sweeps ---------------------------------------------------------------

    def _upsert_sweep(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """Create a sweep (no ``id``) or change one (its GraphQL ``id``, e.g. its state)."""
        sweep_gql_id = variables.get("id")
        if sweep_gql_id is None:
            sweep_id = "".join(secrets.choice(_SWEEP_ID_ALPHABET) for _ in range(8))
            sweep = SweepRecord(
                id=sweep_id,
                storage_id=_gql_id("Sweep", sweep_id),
                entity=variables.get("entityName") or self.entity,
                project=variables.get("projectName") or DEFAULT_PROJECT,
            )
            self._sweeps[sweep_id] = sweep
            sweep.states.append(sweep.state)
        else:
            found = [
                sweep
                for sweep in self._sweeps.values()
                if sweep_gql_id in {sweep.storage_id, sweep.id}
            ]
            if not found:
                raise KeyError(f"no sweep with ID {sweep_gql_id!r}")
            sweep = found[0]
        sweep.upserts += 1
        if variables.get("config") is not None:
            sweep.config = yaml.safe_load(variables["config"]) or {}
        if variables.get("state") is not None:
            sweep.state = variables["state"]
            sweep.states.append(sweep.state)
        if variables.get("displayName") is not None:
            sweep.display_name = variables["displayName"]
        if variables.get("description") is not None:
            sweep.description = variables["description"]
        if variables.get("priorRunsFilters"):
            filters = json.loads(variables["priorRunsFilters"])
            matches = _runs_filter(filters)
            sweep.prior_runs_filters.append(filters)
            for record in list(self._runs.values()):
                if (record.entity, record.project) == (sweep.entity, sweep.project) and matches(
                    record
                ):
                    self._join_sweep(record, sweep.id)
        return {
            "upsertSweep": {
                "sweep": {
                    "name": sweep.id,
                    "project": {
                        "id": _gql_id("Project", sweep.project),
                        "name": sweep.project,
                        "entity": {"id": _gql_id("Entity", sweep.entity), "name": sweep.entity},
                    },
                },
                "configValidationWarnings": [],
            }
        }

    def _join_sweep(self, record: RunRecord, sweep_id: str) -> None:
        """Make ``record`` one of the sweep's runs (and of no other sweep's)."""
        if record.sweep is not None and record.sweep in self._sweeps:
            previous = self._sweeps[record.sweep].run_ids
            if record.run_id in previous and record.sweep != sweep_id:
                previous.remove(record.run_id)
        record.sweep = sweep_id
        sweep = self._sweeps.get(sweep_id)
        if sweep is not None and record.run_id not in sweep.run_ids:
            sweep.run_ids.append(record.run_id)

    def _get_sweep(self, variables: dict[str, Any], _caller: _Caller) -> dict[str, Any]:
        """The queries of a sweep by name (public API, ``wandb sweep --stop``, agents)."""
        sweep = self._sweeps.get(variables.get("name") or variables.get("sweep") or "")
        entity = variables.get("entity") or self.entity
        project = variables.get("project") or DEFAULT_PROJECT
        if sweep is None or (sweep.entity, sweep.project) != (entity, project):
            return {"project": {"sweep": None}}
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sweep.created_at))
        runs = [self._find(sweep.entity, sweep.project, run_id) for run_id in sweep.run_ids]
        return {
            "project": {
                "sweep": {
                    "__typename": "Sweep",
                    "id": sweep.storage_id,
                    "name": sweep.id,
                    "displayName": sweep.display_name,
                    "method": sweep.config.get("method"),
                    "state": sweep.state,
                    "description": sweep.description,
                    "bestLoss": None,
                    "config": yaml.safe_dump(sweep.config),
                    "createdAt": created,
                    "updatedAt": created,
                    "heartbeatAt": created,
                    "earlyStopJobRunning": False,
                    "controller": None,
                    "scheduler": None,
                    "runCount": len(sweep.run_ids),
                    "runCountExpected": None,
                    "runs": {
                        "edges": [{"node": self._sweep_run(record)} for record in runs if record]
                    },
                }
            }
        }

    def _sweep_run(self, record: RunRecord) -> dict[str, Any]:
        return {
            "name": record.run_id,
            "state": record.state,
            "config": json.dumps(self._stored_config(record)),
            "exitcode": record.exit_code,
            "heartbeatAt": None,
            "shouldStop": False,
            "failed": record.state == "failed",
            "stopped": False,
            "running": not record.finished,
            "summaryMetrics": json.dumps(record.summary),
            "sampledHistory": [[]],
        }


def _runs_filter(query: Any) -> Callable[[RunRecord], bool]:
    """A W&B runs filter as a test of a run, as far as sweeps use them.

    ``{"$or": [...]}``, ``{"$and": [...]}``, ``{"name": id}``,
    ``{"name": {"$in": [...]}}`` (``name`` is the run id) and ``{"sweep": id}``;
    ``{}`` matches every run.

    Raises:
        ValueError: A filter the server does not understand.
    """
    if not isinstance(query, dict):
        raise ValueError(f"unknown runs filter {query!r}")  # noqa: TRY004  (a bad value)
    tests = [_runs_filter_part(key, value, query) for key, value in query.items()]
    return lambda record: all(test(record) for test in tests)


def _runs_filter_part(key: str, value: Any, query: Any) -> Callable[[RunRecord], bool]:
    if key in {"$or", "$and"} and isinstance(value, list):
        parts = [_runs_filter(part) for part in value]
        combine = any if key == "$or" else all
        return lambda record: combine(part(record) for part in parts)
    if key == "name" and isinstance(value, str):
        return lambda record: record.run_id == value
    if key == "name" and isinstance(value, dict) and set(value) == {"$in"}:
        return lambda record: record.run_id in value["$in"]
    if key == "sweep" and isinstance(value, str):
        return lambda record: record.sweep == value
    raise ValueError(f"unknown runs filter {query!r}")


def _operation_name(query: str) -> str:
    """The operation's name, from the document text (wandb-core may not send operationName)."""
    text = _COMMENT_RE.sub("", query)
    if match := _OPERATION_RE.search(text):
        return match.group(1)
    if match := _FIRST_FIELD_RE.match(text):
        return match.group(1)
    return "<anonymous>"


@pytest.fixture
def wandb_server() -> Iterator[WandbServer]:
    """A running :class:`WandbServer`, stopped after the test."""
    with WandbServer() as server:
        yield server
