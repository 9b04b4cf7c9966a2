"""The :class:`Emulator`: uvicorn serving the emulator app on a background thread with its own event loop."""

from __future__ import annotations

__all__ = ["Emulator"]

import asyncio
import ipaddress
import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from .._model.schema import AUDIT_TABLE
from ._app import create_app
from ._dcr import DEFAULT_RULE_ID, DataCollectionRule, default_dcr, load_dcrs, table_columns
from ._faults import Faults
from ._identity import CLOUD_AUDIENCES, Roles
from ._losses import Loss, format_loss_report
from ._query import DEFAULT_WORKSPACE_ID, QUERY_AUDIENCES, LocalWorkspace, QueryResult, Timespan, run_query
from ._rules import Rule, RuleReport, run_rules, shipped_rules
from ._stats import EmulatorStats, RequestLog, RequestRecord, StatsRecorder
from ._store import RowStore

_LOGGER = logging.getLogger(__name__)

DcrSource = DataCollectionRule | str | Path | Mapping[str, Any]


def is_loopback(host: str) -> bool:
    """Whether *host* names the loopback interface (``localhost``, ``127.0.0.0/8``, ``::1``).

    :param host: A host name or IP address literal.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    """uvicorn's server, reporting when it listens."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Abort idle keep-alive connections: a graceful TLS close would wait for the peer's close_notify,
        # which a client that leaked its connection never sends. Busy connections still get the grace period.
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if (cycle is None or getattr(cycle, "response_complete", False)) and transport is not None:
                transport.abort()
        await super().shutdown(sockets=sockets)


class Emulator:
    """A local Azure Monitor Logs Ingestion API, for tests, demos and CI.

    .. code-block:: python

        with Emulator() as emu:
            client = LogsIngestionClient(emu.endpoint, EmulatorCredential())
            client.upload(emu.rule_id, emu.stream_name, rows, enforce_https=False)
            assert emu.count(emu.table) == len(rows)

    Usable from sync code and from any async framework: the server runs on its own thread and event loop. An
    emulator is one-shot: it cannot be started again after :meth:`stop`.

    By default it answers what Azure answers, including ``204`` for data Azure accepts and then silently drops
    or alters (a bare JSON object, undeclared columns, an integer or object in a ``string`` column, an
    out-of-range ``TimeGenerated``, a string over 64 KB); each such loss is recorded (:meth:`losses`,
    ``GET /_emulator/losses``) and logged as a WARNING. With ``strict=True`` those requests are answered
    ``400`` instead, which is what CI usually wants.

    :param port: TCP port; 0 (the default) picks a free ephemeral port.
    :param host: Interface to bind, ``127.0.0.1`` by default. Anything but loopback requires *allow_remote*.
    :param tls: Serve HTTPS with a certificate from a fresh local CA (see :attr:`ca_path`).
    :param db: SQLite file for landed rows, or ``":memory:"`` (the default).
    :param dcrs: Extra data collection rules: :class:`DataCollectionRule` objects, paths of JSON files or
        decoded JSON (see :func:`load_dcrs`). The built-in rule (:data:`DEFAULT_RULE_ID`) is always there; a
        rule with the same immutable id replaces it.
    :param tokens: Accepted bearer tokens; ``None`` (the default) accepts any non-empty token.
    :param sink: Validate and count, but store no rows (for benchmarks).
    :param allow_remote: Allow binding a non-loopback *host*. The admin endpoints are then not served.
    :param cert_dir: Where to write ``ca.pem``, ``server.pem`` and ``server.key`` when *tls*; default a
        temporary directory removed by :meth:`stop`.
    :param admin: Serve the ``/_emulator/...`` admin endpoints (default true; always off with a remote host).
    :param strict: Answer ``400`` (``413`` for a gzip body over 1 MiB decoded) where Azure would accept the
        request and silently lose or alter data; default false (Azure-faithful, losses recorded).
    :param cloud: ``"public"`` (default), ``"usgov"`` or ``"china"``: a JWT-shaped token whose ``aud`` is not
        that cloud's ingestion audience is answered ``401 InvalidAudience`` (and, on the query endpoint, whose
        ``aud`` is not its query audience, :data:`QUERY_AUDIENCES`). Opaque tokens are not checked.
    :param workspace_id: The Log Analytics workspace id of the Logs Query API endpoint
        (``/v1/workspaces/{workspace_id}/query``) and the ``TenantId`` column of every row a query returns.
    :raises ValueError: for a non-loopback *host* without *allow_remote*, an unknown *cloud*, or an invalid
        DCR.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        tls: bool = False,
        db: str | Path = ":memory:",
        dcrs: Iterable[DcrSource] = (),
        tokens: Iterable[str] | None = None,
        sink: bool = False,
        allow_remote: bool = False,
        cert_dir: str | Path | None = None,
        admin: bool = True,
        strict: bool = False,
        cloud: str = "public",
        workspace_id: str = DEFAULT_WORKSPACE_ID,
    ) -> None:
        loopback = is_loopback(host)
        if not loopback and not allow_remote:
            raise ValueError(
                f"refusing to bind {host!r}: the emulator accepts any token and stores what it gets; bind a "
                "loopback address, or pass allow_remote=True (CLI: --allow-remote) if you really mean it"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port}")
        if cloud not in CLOUD_AUDIENCES:
            raise ValueError(f"unknown cloud {cloud!r}; expected one of {', '.join(CLOUD_AUDIENCES)}")
        rules: dict[str, DataCollectionRule] = {DEFAULT_RULE_ID: default_dcr()}
        for source in dcrs:
            loaded = [source] if isinstance(source, DataCollectionRule) else load_dcrs(source)
            for rule in loaded:
                rules[rule.immutable_id] = rule
        self._rules: Mapping[str, DataCollectionRule] = rules
        self._tokens = None if tokens is None else frozenset(tokens)
        if self._tokens is not None and (not self._tokens or "" in self._tokens):
            raise ValueError("tokens must hold at least one non-empty token (or be None to accept any)")
        self._host = host
        self._port = port
        self._tls = tls
        self._db = str(db)
        self._sink = sink
        self._admin = admin and loopback
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._temp_dir: Path | None = None
        self._ca_path: Path | None = None
        self._strict = strict
        self._cloud = cloud
        self._workspace_id = workspace_id
        self.faults = Faults()
        #: Role assignments (see :class:`Roles`); none by default: every identity may ingest.
        self.roles = Roles()
        self._log = RequestLog()
        self._stats = StatsRecorder()
        self._store: RowStore | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None
        self._state = "new"  # new -> running -> stopped
        self._error: BaseException | None = None
        self._ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, *, timeout: float = 10.0) -> Emulator:
        """Bind, start serving on a background thread and return once the server accepts connections.

        :param timeout: Seconds to wait for the server to come up.
        :raises RuntimeError: if already started or stopped, or the server did not come up.
        :raises OSError: if the address cannot be bound.
        """
        if self._state != "new":
            raise RuntimeError(f"the emulator is one-shot and already {self._state}")
        self._state = "running"
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        store = RowStore(self._db, sink=self._sink)
        self._store = store
        store.create_tables(table_columns(self._rules.values()))

        sock = _bind(self._host, self._port)
        self._bound_port = sock.getsockname()[1]
        ssl_options: dict[str, Any] = {}
        if self._tls:
            ssl_options = self._make_certificates()

        app = create_app(
            rules=self._rules,
            store=store,
            faults=self.faults,
            stats=self._stats,
            tokens=self._tokens,
            admin=self._admin,
            strict=self._strict,
            cloud=self._cloud,
            roles=self.roles,
            log=self._log,
            workspace_id=self._workspace_id,
        )
        config = uvicorn.Config(
            app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
            **ssl_options,
        )
        self._server = _Server(config, self._ready)
        self._thread = threading.Thread(
            target=self._run,
            args=(sock,),
            name=f"sentinel-forwarder-emulator:{self._bound_port}",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the emulator did not start: {self._error or 'timed out'}")
        _LOGGER.debug("emulator serving on %s", self.endpoint)

    def _run(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # SystemExit from uvicorn's startup failure included
            self._error = exc
            _LOGGER.error("emulator server failed", exc_info=exc)
        finally:
            sock.close()
            self._ready.set()  # wakes start() if the server never came up

    def _make_certificates(self) -> dict[str, Any]:
        import trustme

        directory = self._cert_dir
        if directory is None:
            directory = self._temp_dir = Path(tempfile.mkdtemp(prefix="sentinel-forwarder-emulator-"))
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="sentinel-forwarder emulator (local, untrusted)")
        names = ["127.0.0.1", "localhost", "::1"]
        if self._host not in names and self._host not in ("0.0.0.0", "::"):
            names.append(self._host)
        cert = ca.issue_cert(*names)
        ca_path = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        cert_path = directory / "server.pem"
        key_path = directory / "server.key"
        for index, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(cert_path), append=index > 0)
        cert.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        self._ca_path = ca_path
        return {"ssl_certfile": str(cert_path), "ssl_keyfile": str(key_path)}

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop serving (in-flight requests get up to one second), close the database, remove temporary files.

        Safe to call more than once.

        :param timeout: Seconds to wait for the server thread.
        """
        if self._state == "stopped":
            return
        self._state = "stopped"
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                assert self._server is not None
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._store is not None:
            self._store.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.endpoint if self._state == "running" else self._state
        return f"<Emulator {where}>"

    # -- where it is -----------------------------------------------------------------------------------------

    def _running(self) -> None:
        if self._state != "running" or self._bound_port is None:
            raise RuntimeError("the emulator is not running; use start() or 'with Emulator() as emu:'")

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when started with ``port=0``)."""
        self._running()
        assert self._bound_port is not None
        return self._bound_port

    @property
    def host(self) -> str:
        """The bound interface, as given."""
        return self._host

    @property
    def endpoint(self) -> str:
        """The URL to give ``LogsIngestionClient``, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def ca_path(self) -> Path | None:
        """PEM file of the CA that signed the server certificate (``connection_verify=str(emu.ca_path)``);
        ``None`` without TLS."""
        return self._ca_path

    @property
    def rule_id(self) -> str:
        """Immutable id of the built-in DCR, :data:`DEFAULT_RULE_ID`."""
        return DEFAULT_RULE_ID

    @property
    def stream_name(self) -> str:
        """Input stream of the built-in DCR, ``Custom-AISentinelAudit_CL``."""
        return AUDIT_TABLE.stream

    @property
    def table(self) -> str:
        """Output table of the built-in DCR, ``AISentinelAudit_CL``."""
        return AUDIT_TABLE.name

    @property
    def workspace_id(self) -> str:
        """The workspace id the Logs Query API endpoint answers for (``LogsQueryClient.query_workspace``)."""
        return self._workspace_id

    @property
    def query_audience(self) -> str:
        """The token audience of the Logs Query API in the emulator's cloud: give it to ``LogsQueryClient``
        (``audience=emu.query_audience``), which otherwise asks for a token for the endpoint itself."""
        return QUERY_AUDIENCES[self._cloud]

    @property
    def rules(self) -> Mapping[str, DataCollectionRule]:
        """Every loaded DCR, by immutable id."""
        return self._rules

    @property
    def strict(self) -> bool:
        """Whether silent losses are answered ``400`` instead of ``204``."""
        return self._strict

    @property
    def cloud(self) -> str:
        """The cloud whose token audience is expected: ``public``, ``usgov`` or ``china``."""
        return self._cloud

    @property
    def sink(self) -> bool:
        """Whether rows are only counted, not stored."""
        return self._sink

    # -- what arrived ----------------------------------------------------------------------------------------

    def _check_table(self, table: str) -> RowStore:
        if not any(table in rule.tables for rule in self._rules.values()):
            known = sorted({t for rule in self._rules.values() for t in rule.tables})
            raise KeyError(f"no data collection rule writes to table {table!r} (known: {', '.join(known)})")
        if self._store is None:
            raise RuntimeError("the emulator has not been started")
        return self._store

    def rows(self, table: str, *, limit: int | None = None, meta: bool = False) -> list[dict[str, Any]]:
        """Rows that landed in *table*, in arrival order: declared columns only, long strings truncated.

        Always empty in sink mode.

        :param table: Output table, e.g. ``emu.table``.
        :param limit: At most this many (the first ones).
        :param meta: Add ``_Seq``, ``_IngestedAt``, ``_RuleId`` and ``_Stream`` to each row.
        :raises KeyError: if no loaded DCR writes to *table*.
        """
        return self._check_table(table).rows(table, limit=limit, meta=meta)

    def count(self, table: str) -> int:
        """Number of rows accepted into *table* (counted even in sink mode).

        :raises KeyError: if no loaded DCR writes to *table*.
        """
        return self._check_table(table).count(table)

    def query(
        self, kql: str, *, timespan: Timespan | None = None, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Run a KQL query over what landed, as the Logs Query API would (DuckDB through duckdb-kql).

        Every table any DCR writes to is there, with its declared columns and the standard columns
        ``TenantId``, ``Type`` and ``_ResourceId``. Empty tables in sink mode. See docs/kql.md for where the
        semantics may differ from Log Analytics.

        :param kql: The query.
        :param timespan: Only rows whose ``TimeGenerated`` is inside it: a ``timedelta`` back from *now*, a
            ``(start, end)`` or ``(start, timedelta)`` tuple, or ISO 8601 text (``PT1H``, ``<start>/<end>``).
        :param now: What ``now()`` and ``ago()`` mean (default: the current time), to run a rule "as of" a
            moment.
        :returns: One ``{column: value}`` per row: ``datetime`` (UTC) for datetime columns, ``timedelta`` for
            timespans, decoded JSON for dynamic ones.
        :raises QueryError: for a query that does not parse, names an unknown table or column, or uses a
            construct duckdb-kql cannot translate (it names the construct).
        """
        return self.query_result(kql, timespan=timespan, now=now).dicts()

    def query_result(
        self, kql: str, *, timespan: Timespan | None = None, now: datetime | None = None
    ) -> QueryResult:
        """:meth:`query` with the column names and their Log Analytics types (``QueryResult``)."""
        if self._store is None:
            raise RuntimeError("the emulator has not been started")
        return run_query(
            self._store.snapshot(), kql, timespan=timespan, now=now, workspace_id=self._workspace_id
        )

    def run_rules(
        self,
        rules: Sequence[Rule] | None = None,
        *,
        now: datetime | None = None,
        since: datetime | None = None,
    ) -> list[RuleReport]:
        """Run Sentinel analytics rules and hunting queries over what landed (see docs/kql.md).

        :param rules: Rules from :func:`load_rules`; default: the shipped ones (:func:`shipped_rules`).
        :param now: The moment of the latest scheduled run (default: the current time).
        :param since: Also simulate the runs every ``queryFrequency`` back to this moment.
        :returns: One :class:`RuleReport` per rule: whether it fired, its alerts with their entities.
        """

        if self._store is None:
            raise RuntimeError("the emulator has not been started")
        with LocalWorkspace(self._store.snapshot(), workspace_id=self._workspace_id) as workspace:

            def query(kql: str, timespan: Timespan | None, at: datetime) -> QueryResult:
                return workspace.query(kql, timespan=timespan, now=at)

            return run_rules(shipped_rules() if rules is None else rules, query, now=now, since=since)

    def stats(self) -> EmulatorStats:
        """A snapshot of the request counters."""
        return self._stats.snapshot()

    def losses(self, *, limit: int | None = None) -> list[Loss]:
        """What Azure would have accepted with ``204`` and silently dropped or altered, in order.

        Each :class:`Loss` names the request (its ``x-ms-request-id``), the record index, the column and what
        happened. Empty in strict mode (those requests are refused). At most ``MAX_RECORDED_LOSSES`` are kept;
        ``stats().silent_losses`` counts them all.

        :param limit: At most this many (the first ones).
        """
        if self._store is None:
            return []
        return self._store.losses(limit=limit)

    def loss_report(self) -> str:
        """:meth:`losses` as text for people (what ``sentinel-forwarder`` prints), grouped by request."""
        return format_loss_report(self.losses(), total=self._stats.snapshot().silent_losses)

    def requests(self) -> tuple[RequestRecord, ...]:
        """The latest ingestion requests, oldest first: request ids, client request ids, status, rows, losses.

        A request is logged just before it stops counting as in flight (see :meth:`wait_until_idle`).
        """
        return self._log.records()

    def wait_for_answers(self, n: int, *, timeout: float = 10.0) -> bool:
        """Block until *n* ingestion requests in total have been answered (or dropped) since the last reset.

        :param n: Total number of answered requests to wait for.
        :param timeout: Seconds to wait at most.
        :returns: Whether the number was reached in time.
        """
        return self._stats.wait_for_answers(n, timeout)

    def wait_for_rows(self, n: int, *, timeout: float = 10.0) -> bool:
        """Block until *n* rows in total have been accepted since the last reset (any table).

        :param n: Total number of accepted rows to wait for.
        :param timeout: Seconds to wait at most.
        :returns: Whether the number was reached in time.
        """
        return self._stats.wait_for_rows(n, timeout)

    def wait_until_idle(self, *, timeout: float = 10.0) -> bool:
        """Block until no ingestion request is in flight: every answer has been sent.

        A client can see its answer a moment before the emulator counts the request finished; wait on this
        instead of reading ``stats().in_flight`` right after a call.

        :param timeout: Seconds to wait at most.
        :returns: Whether it became idle in time.
        """
        return self._stats.wait_until_idle(timeout)

    def reset(self) -> None:
        """Remove faults and role assignments, zero the counters, delete stored rows and recorded losses, and
        clear the request log (``POST /_emulator/reset``)."""
        self.faults.reset()
        self.roles.clear()
        self._stats.reset()
        if self._store is not None:
            self._store.clear()
        self._log.clear()


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock
