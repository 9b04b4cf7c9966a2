"""The Logs Query API's query operation over HTTP: ``POST /v1/workspaces/{workspaceId}/query`` (and
``GET`` with ``?query=&timespan=``), answering what ``azure-monitor-query``'s ``LogsQueryClient`` parses.

Request handling, in order: bearer token (as for ingestion, but a JWT-shaped token's ``aud`` must be the
cloud's query audience, :data:`QUERY_AUDIENCES`) → 401; workspace id → 404 ``WorkspaceNotFoundError``; body
as JSON ``{"query": ..., "timespan": ..., "workspaces": ...}`` (at most 1 MiB) → 400 / 413; the query
(:func:`run_query`, on a worker thread) → 400 ``BadArgumentError`` or 200. Role assignments (``emu.roles``)
are for ingestion and are not checked here.
"""

from __future__ import annotations

__all__ = ["QueryEndpoint"]

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._http import REQUEST_ID_KEY
from ._identity import check_bearer
from ._query import QUERY_AUDIENCES, QueryError, QueryResult, run_query
from ._store import RowStore

_MAX_QUERY_BODY = 1_048_576


def _failure(status: int, code: str, message: str, request: Request) -> Response:
    body = {"error": {"message": message, "code": code, "correlationId": _request_id(request)}}
    headers = {"x-ms-error-code": code}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, headers=headers)


def _request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_KEY, ""))


class QueryEndpoint:
    """The query operation over a :class:`RowStore`.

    :param store: Where the rows are.
    :param tokens: Accepted bearer tokens; ``None`` accepts any non-empty token.
    :param cloud: Whose query audience JWT-shaped tokens must have.
    :param workspace_id: The only ``{workspaceId}`` answered, and every row's ``TenantId``.
    """

    def __init__(
        self, store: RowStore, tokens: frozenset[str] | None, *, cloud: str, workspace_id: str
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._audience = QUERY_AUDIENCES[cloud]
        self._workspace_id = workspace_id

    async def handle(self, request: Request) -> Response:
        """Serve one query request (Starlette endpoint)."""
        _, refusal = check_bearer(request.headers.get("authorization", ""), self._tokens, self._audience)
        if refusal is not None:
            return _failure(401, *refusal, request)
        workspace = request.path_params["workspace_id"]
        if workspace.lower() != self._workspace_id.lower():
            return _failure(
                404,
                "WorkspaceNotFoundError",
                f"Workspace '{workspace[:64]}' not found; the emulator's workspace id is "
                f"'{self._workspace_id}'.",
                request,
            )
        if request.method == "GET":
            spec: Any = {
                "query": request.query_params.get("query"),
                "timespan": request.query_params.get("timespan"),
            }
        else:
            size = 0
            chunks: list[bytes] = []
            async for chunk in request.stream():
                size += len(chunk)
                if size > _MAX_QUERY_BODY:
                    return _failure(
                        413, "RequestTooLarge", f"The request body is over {_MAX_QUERY_BODY} bytes.", request
                    )
                chunks.append(chunk)
            try:
                spec = json.loads(b"".join(chunks))
            except ValueError as exc:
                return _failure(
                    400, "BadArgumentError", f"The request body is not valid JSON: {exc}.", request
                )
        if not isinstance(spec, dict) or not isinstance(spec.get("query"), str):
            return _failure(400, "BadArgumentError", "The request must have a 'query' string.", request)
        if spec.get("workspaces"):
            return _failure(
                400,
                "BadArgumentError",
                "The emulator has one workspace: 'workspaces' (additional_workspaces) is not supported.",
                request,
            )
        try:
            result = await run_in_threadpool(self._run, spec["query"], spec.get("timespan"))
        except QueryError as exc:
            return JSONResponse(
                exc.as_dict(_request_id(request)),
                status_code=400,
                headers={"x-ms-error-code": "BadArgumentError"},
            )
        return JSONResponse(result.as_response())

    def _run(self, query: str, timespan: Any) -> QueryResult:
        return run_query(self._store.snapshot(), query, timespan=timespan, workspace_id=self._workspace_id)
