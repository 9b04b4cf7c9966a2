"""The ASGI application, assembled (:func:`create_app`): the Logs Ingestion upload operation, fault injection,
the Logs Query API's query operation and the admin endpoints.

Ingestion request handling, in order (the first failing check answers):

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

Step 1 is the outermost layer's (:mod:`._middleware`); the others are the upload route's (:mod:`._ingest`,
with the limits and body decoding of :mod:`._ingest_request`).

The Logs Query API's query operation (``/v1/workspaces/{workspaceId}/query``) is served by
:class:`~._query_api.QueryEndpoint`, over the same rows.

Every answer carries ``x-ms-request-id`` and echoes ``x-ms-client-request-id``; every ingestion request is
logged (:class:`~._stats.RequestLog`, and an INFO line on this module's logger,
``sentinel_forwarder.emulator._app``; a WARNING line when it lost data).

Admin requests (``/_emulator/...``, loopback-bound emulators only) first pass
:class:`~._admin_guard.AdminGuard`: a ``Host`` header that does not name loopback → 403 ``HostNotAllowed``; a
write without ``Content-Type: application/json`` → 415 ``UnsupportedMediaType`` (against DNS rebinding and
CSRF). The endpoints themselves are in :mod:`._admin`; errors share one shape
(:func:`~._http.error_response`).

Only 403 ``OperationFailed``, 404 ``NotFound``, 413 ``ContentLengthLimitExceeded`` and 401 ``InvalidAudience``
are documented for the real service; the other codes are the emulator's choice (see docs/emulator.md).
"""

from __future__ import annotations

__all__ = ["create_app"]

from collections.abc import Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._admin import admin_routes
from ._admin_guard import AdminGuard
from ._dcr import DataCollectionRule
from ._faults import Faults
from ._http import error_response
from ._identity import CLOUD_AUDIENCES, Roles
from ._ingest import IngestEndpoint
from ._middleware import Faulty
from ._query import DEFAULT_WORKSPACE_ID
from ._query_api import QueryEndpoint
from ._stats import RequestLog, StatsRecorder
from ._store import RowStore


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
            IngestEndpoint(
                rules, store, faults, stats, tokens, strict=strict, cloud=cloud, roles=roles
            ).handle,
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
    return Faulty(app, faults, stats, log)
