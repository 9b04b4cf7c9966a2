"""The ASGI application: the Logs Ingestion upload operation, fault injection and the admin endpoints.

Request handling, in order (the first failing check answers):

1. fault injection (ingestion paths only): latency, dropped connection, scripted or random failure;
2. ``Authorization: Bearer <token>`` → 401 ``InvalidAuthenticationToken``; a JWT-shaped token that has
   expired → 401 ``InvalidAuthenticationToken``, whose ``aud`` is not the cloud's → 401 ``InvalidAudience``;
3. ``api-version`` → 400 ``MissingApiVersionParameter`` / ``UnsupportedApiVersion``;
4. DCR immutable id → 404 ``NotFound``; stream → 404 ``InvalidStream``;
5. role assignments, when any are configured → 403 ``OperationFailed``;
6. ``Content-Type`` → 415 ``UnsupportedMediaType``; ``Content-Encoding`` → 415 ``UnsupportedContentEncoding``;
7. body size as sent → 413 ``ContentLengthLimitExceeded``;
8. per-DCR rate limit → 429 ``TooManyRequests`` with ``Retry-After``;
9. gzip (decoded size: 50 MiB, strict 1 MiB → 413), UTF-8, JSON → 400 ``InvalidContentEncoding``,
   ``InvalidJson``; a bare object → 204 and nothing stored (strict: 400 ``InvalidPayload``);
10. rows against the stream declaration → 400 ``InvalidColumnValue`` / ``InvalidPayload`` naming the record;
    what the service would silently alter is altered and recorded as a loss (strict: 400);
11. rows stored → 204.

The Logs Query API's query operation (``/v1/workspaces/{workspaceId}/query``) is served by
:class:`~._query_api.QueryEndpoint`, over the same rows.

Every answer carries ``x-ms-request-id`` and echoes ``x-ms-client-request-id``; every ingestion request is
logged (:class:`RequestLog`, and an INFO line on this module's logger; a WARNING line when it lost data).

Admin requests (``/_emulator/...``, loopback-bound emulators only) first pass :class:`AdminGuard`: a
``Host`` header that does not name loopback → 403 ``HostNotAllowed``; a write without ``Content-Type:
application/json`` → 415 ``UnsupportedMediaType`` (against DNS rebinding and CSRF).

Only 403 ``OperationFailed``, 404 ``NotFound``, 413 ``ContentLengthLimitExceeded`` and 401 ``InvalidAudience``
are documented for the real service; the other codes are the emulator's choice (see docs/emulator.md).
"""

from __future__ import annotations

__all__ = ["create_app"]

import asyncio
import json
import logging
import math
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._admin import admin_routes
from ._admin_guard import AdminGuard
from ._dcr import DataCollectionRule, RowError
from ._faults import DEFAULT_ERROR_CODES, Fault, Faults
from ._http import LOGGER, OUTCOME_KEY, REQUEST_ID_KEY, error_response
from ._identity import CLOUD_AUDIENCES, Roles, check_bearer
from ._ingest_request import (
    MAX_BODY_BYTES,
    MAX_DECODED_BYTES,
    SUPPORTED_API_VERSIONS,
    decoded_too_large,
    describe,
    gunzip,
    read_body,
    reject_constant,
    too_large,
)
from ._losses import Loss, summarize_losses
from ._query import DEFAULT_WORKSPACE_ID
from ._query_api import QueryEndpoint
from ._stats import RequestLog, RequestRecord, StatsRecorder
from ._store import RowStore

_INGEST_PREFIX = "/dataCollectionRules/"


class _ConnectionDropped(Exception):
    """Raised to make uvicorn close the connection when the transport cannot be aborted directly."""


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _ConnectionDropped))


logging.getLogger("uvicorn.error").addFilter(_DropFilter())


class _Ingest:
    """The upload operation."""

    def __init__(
        self,
        rules: Mapping[str, DataCollectionRule],
        store: RowStore,
        faults: Faults,
        stats: StatsRecorder,
        tokens: frozenset[str] | None,
        *,
        strict: bool,
        cloud: str,
        roles: Roles,
    ) -> None:
        self._rules = rules
        self._store = store
        self._faults = faults
        self._stats = stats
        self._tokens = tokens
        self._strict = strict
        self._cloud = cloud
        self._roles = roles

    async def _reject(self, request: Request, status: int, code: str, message: str, **kw: Any) -> Response:
        # Read (and discard) the body first so that the client gets to read the answer.
        body = await read_body(request.receive, 0, self._stats)
        return error_response(status, code, message, close=not body.complete, **kw)

    async def handle(self, request: Request) -> Response:
        """Serve one upload request (Starlette endpoint).

        :param request: The request; its body is read through ``request.receive`` with a size limit.
        """
        received = datetime.now(timezone.utc)
        rule_id: str = request.path_params["rule_id"]
        stream_name: str = request.path_params["stream"]

        claims, refusal = check_bearer(
            request.headers.get("authorization", ""), self._tokens, CLOUD_AUDIENCES[self._cloud]
        )
        if refusal is not None:
            return await self._reject(request, 401, *refusal)

        api_version = request.query_params.get("api-version")
        if not api_version:
            return await self._reject(
                request, 400, "MissingApiVersionParameter", "The api-version query parameter is required."
            )
        if api_version not in SUPPORTED_API_VERSIONS:
            return await self._reject(
                request,
                400,
                "UnsupportedApiVersion",
                f"The api-version '{api_version[:64]}' is not supported; use one of "
                f"{', '.join(sorted(SUPPORTED_API_VERSIONS))}.",
            )

        rule = self._rules.get(rule_id)
        if rule is None:
            return await self._reject(
                request, 404, "NotFound", f"Data collection rule with immutable Id '{rule_id}' not found."
            )
        stream = rule.streams.get(stream_name)
        if stream is None:
            return await self._reject(
                request,
                404,
                "InvalidStream",
                f"Stream '{stream_name}' is not declared in data collection rule "
                f"with immutable Id '{rule_id}'.",
            )

        object_id = claims.get("oid") if claims is not None else None
        if not self._roles.allows(object_id if isinstance(object_id, str) else None, rule_id):
            # Code and message as documented (azure-monitor-ingestion TROUBLESHOOTING.md).
            return await self._reject(
                request,
                403,
                "OperationFailed",
                "The authentication token provided does not have access to ingest data for the data "
                f"collection rule with immutable Id '{rule_id}'.",
            )

        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return await self._reject(
                request,
                415,
                "UnsupportedMediaType",
                f"Content-Type must be application/json, not '{media_type[:64] or '(missing)'}'.",
            )
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            return await self._reject(
                request,
                415,
                "UnsupportedContentEncoding",
                f"Content-Encoding must be gzip or absent, not '{encoding[:64]}'.",
            )

        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return await self._reject(request, 413, "ContentLengthLimitExceeded", too_large(int(declared)))
        body = await read_body(request.receive, MAX_BODY_BYTES, self._stats)
        if body.data is None:
            return error_response(
                413, "ContentLengthLimitExceeded", too_large(body.size), close=not body.complete
            )

        wait = self._faults.admit(rule_id, body.size)
        if wait is not None:
            return error_response(
                429,
                "TooManyRequests",
                f"Rate limit of data collection rule with immutable Id '{rule_id}' exceeded; retry after "
                f"{math.ceil(wait)} seconds.",
                retry_after=wait,
            )

        raw = body.data
        if encoding == "gzip":
            limit = MAX_BODY_BYTES if self._strict else MAX_DECODED_BYTES
            try:
                decoded, size = gunzip(raw, limit)
            except (zlib.error, ValueError) as exc:
                return error_response(400, "InvalidContentEncoding", f"The body is not valid gzip: {exc}.")
            if decoded is None:
                return error_response(
                    413, "ContentLengthLimitExceeded", decoded_too_large(size, strict=self._strict)
                )
            raw = decoded
        self._stats.decompressed(len(raw))

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return error_response(400, "InvalidJson", f"The body is not valid UTF-8: {exc}.")
        try:
            payload = json.loads(text, parse_constant=reject_constant)
        except (ValueError, RecursionError) as exc:
            return error_response(400, "InvalidJson", f"The body is not valid JSON: {exc}.")
        request_id = str(request.scope.get(REQUEST_ID_KEY, ""))
        if isinstance(payload, dict) and not self._strict:
            # azure-sdk-for-python #32562, azure-docs #112669: 204, and nothing lands.
            self._record(
                request,
                rule_id,
                stream_name,
                [
                    Loss(
                        request_id,
                        rule_id,
                        stream_name,
                        None,
                        None,
                        "bare_object",
                        "the body is a JSON object, not an array of objects: Azure answers 204 and stores "
                        "nothing",
                    )
                ],
            )
            return Response(status_code=204)
        if not isinstance(payload, list):
            return error_response(
                400,
                "InvalidPayload",
                f"The body must be a JSON array of objects, not {describe(payload)}."
                + (
                    " (Azure answers 204 to a bare object and stores nothing; rejected because the emulator "
                    "runs in strict mode.)"
                    if isinstance(payload, dict)
                    else ""
                ),
            )
        rows: list[dict[str, Any]] = []
        losses: list[Loss] = []
        try:
            for index, item in enumerate(payload):
                row, changes = stream.admit(index, item, received=received, strict=self._strict)
                rows.append(row)
                losses.extend(
                    Loss(request_id, rule_id, stream_name, index, c.column, c.kind, c.detail) for c in changes
                )
        except RowError as exc:
            return error_response(400, exc.code, str(exc))

        for table in stream.tables:
            self._store.insert(table, rows, rule_id=rule_id, stream=stream_name)
        self._stats.rows(len(rows))
        if losses:
            self._record(request, rule_id, stream_name, losses)
        request.scope[OUTCOME_KEY] = (len(rows), len(losses))
        return Response(status_code=204)

    def _record(self, request: Request, rule_id: str, stream: str, losses: list[Loss]) -> None:
        self._store.record_losses(losses)
        self._stats.losses(len(losses))
        request.scope[OUTCOME_KEY] = (0, len(losses))
        LOGGER.warning(
            "request %s to %s / %s: Azure would answer 204 and silently lose data: %s "
            "(details: GET /_emulator/losses or Emulator.losses(); strict mode answers 400 instead)",
            losses[0].request_id,
            rule_id,
            stream,
            summarize_losses(losses),
        )


class _Faulty:
    """Outermost ASGI layer: request ids on every answer; for ingestion requests also the counters, the
    request log and injected faults, before the app."""

    def __init__(self, app: ASGIApp, faults: Faults, stats: StatsRecorder, log: RequestLog) -> None:
        self._app = app
        self._faults = faults
        self._stats = stats
        self._log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope[REQUEST_ID_KEY] = request_id
        client_ids = [v for k, v in scope["headers"] if k == b"x-ms-client-request-id"]
        client_id = client_ids[0] if client_ids else None
        status: int | None = None

        async def identified_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [*message.get("headers", []), (b"x-ms-request-id", request_id.encode("ascii"))]
                if client_id is not None:
                    headers.append((b"x-ms-client-request-id", client_id))
                message = {**message, "headers": headers}
            await send(message)

        if not scope["path"].startswith(_INGEST_PREFIX):
            await self._app(scope, receive, identified_send)
            return
        self._stats.request()
        try:
            await self._ingest(scope, receive, identified_send, send)
        finally:
            # Logged before the request stops counting as in flight: after wait_until_idle() it is there.
            rows, losses = scope.get(OUTCOME_KEY, (0, 0))
            record = RequestRecord(
                request_id,
                None if client_id is None else client_id.decode("latin-1"),
                scope["path"],
                status,
                rows,
                losses,
            )
            self._log.add(record)
            LOGGER.info(
                "%s %s %s rows=%d losses=%d x-ms-request-id=%s x-ms-client-request-id=%s",
                scope["method"],
                scope["path"][:256],
                "dropped" if status is None else status,
                rows,
                losses,
                request_id,
                "-" if record.client_request_id is None else record.client_request_id[:128],
            )
            self._stats.done()

    async def _ingest(self, scope: Scope, receive: Receive, send: Send, raw_send: Send) -> None:
        """Serve an ingestion request; *raw_send* is the server's own, for :meth:`_drop`."""
        stats = self._stats
        latency, fault = self._faults.next_request()

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Latency is a slow answer: the request was read and processed (its rows stored) first, so
                # a client that times out meanwhile cannot know whether its rows landed, as with Azure.
                if latency:
                    await asyncio.sleep(latency)
                stats.response(int(message["status"]))
            await send(message)

        if fault is None:
            await self._app(scope, receive, counting_send)
        elif fault.kind == "drop":
            if latency:
                await asyncio.sleep(latency)
            await self._drop(receive, raw_send)
        else:
            await self._fail(fault, scope, receive, counting_send)

    async def _fail(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, 0, self._stats)
        code = fault.code or DEFAULT_ERROR_CODES.get(fault.status, "EmulatedFault")
        response = error_response(
            fault.status,
            code,
            fault.message or "Injected fault (emulator).",
            retry_after=fault.retry_after,
            close=not body.complete,
        )
        await response(scope, receive, send)

    async def _drop(self, receive: Receive, send: Send) -> None:
        await read_body(receive, 0, self._stats)
        self._stats.dropped()
        # uvicorn's send is a bound method of its request cycle, which holds the asyncio transport: abort it
        # (no response byte is written), then wait for uvicorn to notice the disconnect so it logs nothing.
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if isinstance(transport, asyncio.Transport):
            transport.abort()
            try:
                await asyncio.wait_for(_until_disconnect(receive), 5)
            except asyncio.TimeoutError:  # pragma: no cover - uvicorn always reports the disconnect
                LOGGER.debug("no disconnect event after aborting a connection")
            return
        # Fallback for other servers: start a response that promises a body, then fail; the server closes.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )  # pragma: no cover
        raise _ConnectionDropped  # pragma: no cover


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(status, "BadRequest")
    return error_response(status, code, f"{request.method} {request.url.path}: {code}.")


def create_app(
    *,
    rules: Mapping[str, DataCollectionRule],
    store: RowStore,
    faults: Faults,
    stats: StatsRecorder,
    tokens: frozenset[str] | None,
    admin: bool,
    strict: bool = False,
    cloud: str = "public",
    roles: Roles | None = None,
    log: RequestLog | None = None,
    workspace_id: str = DEFAULT_WORKSPACE_ID,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Build the emulator's ASGI application.

    :param rules: DCRs by immutable id.
    :param store: Where accepted rows and recorded losses go.
    :param faults: Fault-injection controls.
    :param stats: Counters.
    :param tokens: Accepted bearer tokens; ``None`` accepts any non-empty token.
    :param admin: Serve the ``/_emulator/...`` admin endpoints (only on a loopback-bound emulator).
    :param strict: Answer 400 (413 for the decoded size) where Azure would silently lose or alter data.
    :param cloud: ``public``, ``usgov`` or ``china``: the audience JWT-shaped tokens must have.
    :param roles: Role assignments (default: none, everyone may ingest).
    :param log: The request log (default: a fresh one).
    :param workspace_id: The workspace the Logs Query API endpoint answers for
        (``/v1/workspaces/{id}/query``).
    :raises ValueError: for an unknown *cloud*.
    """
    if cloud not in CLOUD_AUDIENCES:
        raise ValueError(f"unknown cloud {cloud!r}; expected one of {', '.join(CLOUD_AUDIENCES)}")
    roles = roles if roles is not None else Roles()
    log = log if log is not None else RequestLog()
    routes = [
        Route(
            "/dataCollectionRules/{rule_id}/streams/{stream}",
            _Ingest(rules, store, faults, stats, tokens, strict=strict, cloud=cloud, roles=roles).handle,
            methods=["POST"],
        ),
        Route(
            "/v1/workspaces/{workspace_id}/query",
            QueryEndpoint(store, tokens, cloud=cloud, workspace_id=workspace_id).handle,
            methods=["GET", "POST"],
        ),
    ]
    if admin:
        routes += admin_routes(rules, store, faults, stats, log, roles)
    app: ASGIApp = Starlette(routes=routes, exception_handlers={HTTPException: _not_found})
    if admin:
        app = AdminGuard(app)
    return _Faulty(app, faults, stats, log)
