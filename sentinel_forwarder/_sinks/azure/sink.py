"""``AzureSentinelForwarder``: the sink that posts batches to the Azure Monitor Logs Ingestion API.

Built on ``azure-monitor-ingestion``'s ``LogsIngestionClient`` and azure-core's pipeline (bearer-token policy,
a deliberately configured retry policy that honours ``Retry-After``). Rows are serialised once (``_wire``:
orjson and ISA-L with the ``fast`` extra, else ``json`` and ``zlib``), cut into gzip chunks that stay within
the request limit both uncompressed and compressed, and each chunk is posted as a byte stream (``upload()``
posts an ``IO[bytes]`` as-is and detects gzip by its magic bytes), so the SDK does not serialise the rows
again. The transport (``_transport``) reads proxies and the CA bundle from the environment once, at open.

Transport: the synchronous client, run on daemon worker threads (``_workers``). The SDK's async
client needs aiohttp, which runs on asyncio only; threads work the same on asyncio and trio, keep token
acquisition (which may block for seconds) off the event loop, and measured as fast as aiohttp here
(docs/benchmarks.md).
"""

from __future__ import annotations

__all__ = ["MAX_REQUEST_BYTES", "AzureSentinelForwarder"]

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

from ..._model.entry import AuditEntry
from ..._model.protocol import AuditSink, DropReason, RowOutcome, SendResult
from ..._model.schema import AUDIT_TABLE
from ..._model.wire import CODEC, MAX_REQUEST_BYTES, STDLIB, compressed, plan
from ..._util.ratelimited import ErrorLog
from ..._util.workers import DaemonWorkers
from .clouds import AUTHORITY_HOSTS, CLOUD_AUDIENCES, Cloud
from .endpoint import parse_endpoint
from .poison import isolate_refused
from .retry import (
    DEADLINE_OPTION,
    RECORD_OPTION,
    RETRY_STATUSES,
    IngestionRetryPolicy,
    RetryRecord,
    TokenError,
    TokenPolicy,
    UnreachableError,
)
from .transport import ingestion_transport

logger = logging.getLogger("sentinel_forwarder.azure")

#: Seconds one batch may take in all, by default (``retry_timeout``).
DEFAULT_RETRY_TIMEOUT = 20.0


class AzureSentinelForwarder(AuditSink):
    """Posts batches of audit entries to a data collection rule's stream.

    ::

        sink = AzureSentinelForwarder(
            "https://my-dce-abcd.westeurope-1.ingest.monitor.azure.com",
            rule_id="dcr-00000000000000000000000000000000",
        )
        async with BufferingForwarder(sink) as forwarder:
            forwarder.forward(AuditEntry("jailbreak attempt", severity=Severity.HIGH))

    :param endpoint: the Data Collection Endpoint, or the DCR's own ingestion endpoint for a Direct DCR.
        ``https://`` is required except for loopback hosts (a local emulator); no user info, path, query or
        fragment.
    :param credential: an azure-core ``TokenCredential``; ``None`` means ``DefaultAzureCredential`` for
        *cloud* (created and closed by this sink).
    :param rule_id: the DCR's immutable id (``dcr-…``).
    :param stream_name: the stream declared in the DCR.
    :param cloud: ``"public"``, ``"usgov"`` or ``"china"``: sets the token audience.
    :param retry_timeout: seconds one batch's failures may take in all, every chunk, attempt, backoff and
        token request included; then its undelivered rows are dropped (``reason="retries_exhausted"``). Each
        attempt's connect and read timeouts are clamped to what is left, and a failure's ``Retry-After``
        longer than what is left ends the retries at once. A throttle's wait (429, or 503 with
        ``Retry-After``) is not charged to it (docs/fleet.md); the result's ``retry_after`` reports it.
    :param max_retries: attempts after the first, per chunk.
    :param retry_backoff: seconds; without ``Retry-After`` the n-th retry waits a random time up to
        ``retry_backoff * 2**(n-1)`` (full jitter), at most 30 s.
    :param max_concurrent_uploads: worker threads and pooled connections for concurrent batches; keep it at
        least the buffering forwarder's ``max_batches_in_flight``.
    :param connection_timeout: seconds to connect, at most.
    :param read_timeout: seconds to wait for an answer, at most. A request that timed out after it was sent
        may still have landed: if no later attempt settles it, its rows are counted *unconfirmed*.
    :param connection_verify: ``True`` (system CAs), ``False``, or the path of a CA bundle (the emulator's).
    :param compress_level: gzip level, 1 (fast) to 9 (small); with ISA-L (the ``fast`` extra) 1-3, 4-6 and
        7-9 are its levels 1, 2 and 3.
    :raises ValueError: for a malformed endpoint, an ``http://`` endpoint that is not loopback, an unknown
        cloud, an empty ``rule_id``/``stream_name``, or an option out of range.
    """

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential | None = None,
        *,
        rule_id: str,
        stream_name: str = AUDIT_TABLE.stream,
        cloud: Cloud = "public",
        retry_timeout: float = DEFAULT_RETRY_TIMEOUT,
        max_retries: int = 10,
        retry_backoff: float = 0.5,
        max_concurrent_uploads: int = 8,
        connection_timeout: float = 5.0,
        read_timeout: float = 10.0,
        connection_verify: bool | str = True,
        compress_level: int = 6,
    ) -> None:
        parsed = parse_endpoint(endpoint)
        if cloud not in CLOUD_AUDIENCES:
            raise ValueError(f"cloud must be one of {', '.join(CLOUD_AUDIENCES)}, not {cloud!r}")
        if not rule_id:
            raise ValueError("rule_id (the DCR immutable id) must not be empty")
        if not stream_name:
            raise ValueError("stream_name must not be empty")
        if not 1 <= compress_level <= 9:
            raise ValueError(f"compress_level must be 1 to 9, not {compress_level}")
        if max_concurrent_uploads < 1:
            raise ValueError(f"max_concurrent_uploads must be at least 1, not {max_concurrent_uploads}")
        for name, value in (
            ("retry_timeout", retry_timeout),
            ("connection_timeout", connection_timeout),
            ("read_timeout", read_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if max_retries < 0 or retry_backoff < 0:
            raise ValueError("max_retries and retry_backoff must not be negative")
        self.endpoint = parsed.url
        self.rule_id = rule_id
        self.stream_name = stream_name
        self.cloud = cloud
        self._credential = credential
        self._owns_credential = credential is None
        self._retry_timeout = float(retry_timeout)
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._max_uploads = max_concurrent_uploads
        self._connection_timeout = connection_timeout
        self._read_timeout = read_timeout
        self._verify = connection_verify
        self._level = compress_level
        self._codec = CODEC
        self._http = parsed.scheme == "http"
        self._client: Any = None
        self._workers = DaemonWorkers(max_concurrent_uploads, name="sentinel-forwarder-upload")
        self._closed = False
        self._errors = ErrorLog(logger)
        self._throttle_listener: Callable[[float | None], None] | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, rule_id={self.rule_id!r}, "
            f"stream_name={self.stream_name!r}, cloud={self.cloud!r})"
        )

    def listen_for_throttling(self, listener: Callable[[float | None], None]) -> None:
        """Call ``listener(retry_after)`` (from an upload thread) the moment the service throttles a request
        (429, or 503 with ``Retry-After``), with the seconds it asked to wait (``None``: unsaid).

        ``BufferingForwarder`` listens, so that one throttled request pauses all its new requests at once;
        without a listener the sink's results still say it (``SendResult.retry_after``).
        """
        self._throttle_listener = listener

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> AzureSentinelForwarder:
        self.open()
        return self

    def open(self) -> None:
        """Create the SDK client (idempotent). ``async with`` calls it for you.

        :raises RuntimeError: if the sink was closed (a sink is one-shot).
        """
        if self._closed:
            raise RuntimeError("this AzureSentinelForwarder is closed; create a new one")
        if self._client is not None:
            return
        from azure.monitor.ingestion import LogsIngestionClient

        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential(authority=AUTHORITY_HOSTS[self.cloud])
        transport = ingestion_transport(
            self.endpoint,
            pool_size=self._max_uploads,
            connection_timeout=self._connection_timeout,
            read_timeout=self._read_timeout,
            verify=self._verify,
        )
        retry = IngestionRetryPolicy(
            max_retries=self._max_retries,
            backoff=self._retry_backoff,
            backoff_max=30.0,
            budget=self._retry_timeout,
            connection_timeout=self._connection_timeout,
            read_timeout=self._read_timeout,
        )
        scope = CLOUD_AUDIENCES[self.cloud]
        self._workers.start()
        self._client = LogsIngestionClient(
            self.endpoint,
            self._credential,
            credential_scopes=[scope],
            transport=transport,
            retry_policy=retry,
            authentication_policy=TokenPolicy(self._credential, scope),
        )

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's client, connections and threads (without closing them, which
        would disturb the parent); the next :meth:`open` makes new ones. ``BufferingForwarder`` calls it.

        A credential this sink created is created anew too; one you passed is kept as it is.
        """
        self._client = None
        self._closed = False
        self._workers = DaemonWorkers(self._max_uploads, name="sentinel-forwarder-upload")
        self._errors = ErrorLog(logger)
        if self._owns_credential:
            self._credential = None

    async def aclose(self) -> None:
        """Close the SDK client, and the credential if this sink created it."""
        self.close()

    def close(self) -> None:
        """Blocking twin of :meth:`aclose` (it never waits on the network), for scripts and threads."""
        if self._closed:
            return
        self._closed = True
        self._workers.close()
        client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._owns_credential and self._credential is not None:
            close = getattr(self._credential, "close", None)
            if close is not None:
                close()

    # -- sending -----------------------------------------------------------------------------------------

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        """Serialise, chunk, compress and post *entries*; report what landed and what was dropped, by reason.

        Runs on a daemon worker thread. If the caller is cancelled, the thread stops before its next attempt
        or chunk; a chunk already on the wire may still land (the caller counts such rows as unconfirmed).

        :raises RuntimeError: if the sink is not open.
        """
        if self._client is None:
            raise RuntimeError("AzureSentinelForwarder is not open; use 'async with' or call open()")
        cancel = threading.Event()
        return await self._workers.run(self._send, list(entries), cancel, cancel=cancel)

    async def send_encoded(self, entries: Sequence[AuditEntry], rows: Sequence[bytes], /) -> SendResult:
        """:meth:`send_batch` for entries already serialised: *rows* holds ``encode_row(entry)`` for each
        entry (the spool's stored rows), posted as they are instead of serialised again.

        :raises RuntimeError: if the sink is not open.
        """
        if self._client is None:
            raise RuntimeError("AzureSentinelForwarder is not open; use 'async with' or call open()")
        cancel = threading.Event()
        return await self._workers.run(self._send, list(entries), cancel, list(rows), cancel=cancel)

    def _send(
        self, entries: Sequence[AuditEntry], cancel: threading.Event, encoded: Sequence[bytes] | None = None
    ) -> SendResult:
        client = self._client
        if client is None:
            raise RuntimeError("AzureSentinelForwarder is not open; use 'async with' or call open()")
        # One deadline for the batch's failures; a chunk's throttle wait (no failure) moves it for the rest.
        deadline = [time.monotonic() + self._retry_timeout]
        codec = self._codec if encoded is None else self._codec.pre_encoded()
        # Each row's outcome is kept in order (SendResult.outcomes), so a spool keeps exactly the right rows.
        parts: list[tuple[list[int], SendResult]] = []  # (positions in entries, their outcome)
        chunks, refused = plan(entries, codec, encoded)
        for position, reason, text in refused:
            parts.append(([position], self._drop(reason, 1, text)))
        for chunk in chunks:
            for body, start, end in compressed(chunk, codec, self._level):
                outcome = self._post_chunk(client, body, end - start, cancel, deadline)
                if end - start > 1 and outcome.dropped.get("rejected") == end - start:
                    # A 400 for a chunk of several rows: find the rows the service refuses, deliver the rest.
                    outcome = isolate_refused(
                        [codec.json.one(v) for v in chunk.values[start:end]],
                        [entries[i].id for i in chunk.positions[start:end]],
                        lambda rows: self._post_chunk(
                            client,
                            codec.gzip(STDLIB.json.dumps(rows), self._level),
                            len(rows),
                            cancel,
                            deadline,
                        ),
                        outcome,
                    )
                parts.append((chunk.positions[start:end], outcome))
        return _assemble(len(entries), parts)

    def _post_chunk(
        self, client: Any, body: bytes, count: int, cancel: threading.Event, deadline: list[float]
    ) -> SendResult:
        """Post one chunk before ``deadline[0]``; what the service asked this chunk to wait when it
        throttled moves the batch's deadline for the chunks after it too (throttling is not a failure)."""
        if cancel.is_set():
            return self._drop("shutdown_timeout", count, "abandoned at the drain deadline")
        if time.monotonic() >= deadline[0]:
            return self._drop(
                "retries_exhausted", count, "the batch's retry budget was spent on earlier chunks"
            )
        record = RetryRecord(cancel=cancel, on_throttle=self._throttle_listener)
        try:
            return self._post(client, body, count, record, deadline[0])
        finally:
            deadline[0] += record.throttled_wait

    def probe(self, entries: Sequence[AuditEntry] = ()) -> None:
        """Post *entries* in one request through the same pipeline as batches, and raise what the SDK raises.

        With no entries the body is an empty JSON array, which the service accepts (2xx) and stores nothing
        from: a check of endpoint, token, role, DCR and stream that writes nothing. For
        ``sentinel-forwarder check`` and ``check_on_start``; retries as configured (``max_retries``).

        :raises azure.core.exceptions.HttpResponseError: the service's refusal (``status_code``, ``error``).
        :raises azure.core.exceptions.AzureError: no answer (:class:`UnreachableError` if it cannot heal),
            or no token (:class:`TokenError`).
        :raises RuntimeError: if the sink is not open.
        """
        client = self._client
        if client is None:
            raise RuntimeError("AzureSentinelForwarder is not open; use 'async with' or call open()")
        codec = self._codec
        body = codec.gzip(codec.json.dumps([codec.json.value(entry) for entry in entries]), self._level)
        self._upload(client, body, RetryRecord(), time.monotonic() + self._retry_timeout)

    def _upload(self, client: Any, body: bytes, record: RetryRecord, deadline: float) -> None:
        kwargs: dict[str, Any] = {RECORD_OPTION: record, DEADLINE_OPTION: deadline}
        if self._http:
            kwargs["enforce_https"] = False  # loopback only, checked in __init__
        client.upload(self.rule_id, self.stream_name, io.BytesIO(body), **kwargs)

    def _post(self, client: Any, body: bytes, count: int, record: RetryRecord, deadline: float) -> SendResult:
        result = self._post_once(client, body, count, record, deadline)
        if record.throttled is not None:  # the forwarder pauses new requests and lowers its rate
            return replace(result, retry_after=record.throttled)
        return result

    def _post_once(
        self, client: Any, body: bytes, count: int, record: RetryRecord, deadline: float
    ) -> SendResult:
        try:
            self._upload(client, body, record, deadline)
        except UnreachableError as exc:
            text = f"{exc.message} (not retried: it cannot heal by itself)"
            return self._failed("unreachable", count, record, text)
        except TokenError as exc:
            text = record.explain() if exc.transient else exc.message
            return self._failed("credential_error", count, record, text)
        except ClientAuthenticationError as exc:
            if exc.response is None:
                return self._failed("credential_error", count, record, f"no access token: {_message(exc)}")
            return self._classify(exc, count, record)
        except HttpResponseError as exc:
            return self._classify(exc, count, record)
        except AzureError:  # transport failures that outlasted the budget
            return self._failed("retries_exhausted", count, record, record.explain())
        except Exception as exc:  # a bug here or in the SDK: this chunk alone, and say so loudly
            self._errors.error("sentinel-forwarder: unexpected error while uploading a chunk", exc)
            return self._failed("sink_error", count, record, f"{type(exc).__name__}: {exc}")
        return SendResult(sent=count)

    def _classify(self, exc: HttpResponseError, count: int, record: RetryRecord) -> SendResult:
        status = exc.status_code or 0
        text = f"HTTP {status} {_message(exc)}"
        reason: DropReason
        if status in (401, 403):
            reason = "unauthorized"
            text += (
                f" (the identity needs the 'Monitoring Metrics Publisher' role on the data collection rule "
                f"{self.rule_id}; a new assignment can take up to 30 minutes to apply)"
            )
        elif status == 404:
            reason = "not_found"
            text += f" (check the DCR immutable id {self.rule_id!r} and stream {self.stream_name!r})"
        elif status == 413:
            reason = "too_large"
        elif status in RETRY_STATUSES:
            reason = "retries_exhausted"
            text = record.explain()
        else:
            reason = "rejected"
        return self._failed(reason, count, record, text)

    def _failed(self, reason: DropReason, count: int, record: RetryRecord, message: str) -> SendResult:
        """A chunk that did not get a yes: dropped, unless an earlier attempt may have landed it."""
        if record.ambiguous:
            text = (
                f"whether {count} rows landed is unknown: an attempt reached the service but its answer "
                f"was lost; then {message}"
            )
            logger.debug("%s", text)
            return SendResult.uncertain(count, text)
        return self._drop(reason, count, message)

    def _drop(self, reason: DropReason, count: int, message: str) -> SendResult:
        logger.debug("dropping %d rows (%s): %s", count, reason, message)
        return SendResult.failed(reason, count, message)


def _assemble(count: int, parts: list[tuple[list[int], SendResult]]) -> SendResult:
    """One result for *count* rows from results of parts of them (each with its rows' positions)."""
    if len(parts) == 1 and parts[0][0] == list(range(count)):
        return parts[0][1]
    total = SendResult()
    fates: list[RowOutcome] = ["sent"] * count
    row_errors: dict[int, str] = {}
    for where, part in parts:
        total += SendResult(
            part.sent, part.dropped, part.error, part.unconfirmed, part.errors, retry_after=part.retry_after
        )
        outcomes = part.row_outcomes()
        if outcomes is None:  # parts are uniform or carry their outcomes; never mixed without them
            raise AssertionError("a part's outcome is mixed and unknown")
        for position, fate in zip(where, outcomes, strict=True):
            fates[position] = fate
        for i, answer in part.row_errors.items():
            row_errors[where[i]] = answer
    mixed = len(set(fates)) > 1
    return replace(total, outcomes=tuple(fates) if mixed else None, row_errors=MappingProxyType(row_errors))


def _message(exc: AzureError) -> str:
    """The service's error code and message when it sent one, else the exception's first line."""
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return f"({error.code}) {error.message}"
    text = str(getattr(exc, "message", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
