"""The Logs Ingestion API's upload operation: ``POST /dataCollectionRules/{ruleId}/streams/{stream}``.

:class:`IngestEndpoint` checks a request in the order the module docstring of :mod:`._app` lists (from the
bearer token on; faults are injected before, by :mod:`._middleware`), checks each row against the stream
declaration, stores the rows and records what Azure would have silently lost or altered (a WARNING line on
the emulator's request logger, :data:`~._http.LOGGER`). The request's limits and body decoding are in
:mod:`._ingest_request`.
"""

from __future__ import annotations

__all__ = ["IngestEndpoint"]

import json
import math
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ._dcr import DataCollectionRule, RowError
from ._faults import Faults
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
from ._stats import StatsRecorder
from ._store import RowStore


class IngestEndpoint:
    """The upload operation.

    :param rules: DCRs by immutable id.
    :param store: Where accepted rows and recorded losses go.
    :param faults: Consulted for the per-DCR rate limit (the other faults are injected before the route).
    :param stats: Counters.
    :param tokens: Accepted bearer tokens; ``None`` accepts any non-empty token.
    :param strict: Answer 400 (413 for the decoded size) where Azure would silently lose or alter data.
    :param cloud: Whose audience JWT-shaped tokens must have.
    :param roles: Role assignments.
    """

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
