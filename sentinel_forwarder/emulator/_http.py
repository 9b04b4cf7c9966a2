"""What the emulator's ASGI layers and routes share: the error answer, the request log's logger, scope keys.

Every refusal, from the ingestion route, the admin endpoints or the outer layers, is the same JSON shape
(:func:`error_response`); the query route has its own (the Logs Query API's error shape, in
:mod:`._query_api`).
"""

from __future__ import annotations

__all__ = ["LOGGER", "OUTCOME_KEY", "REQUEST_ID_KEY", "error_response"]

import logging
import math

from starlette.responses import JSONResponse, Response

#: The logger of the per-request INFO line and the data-loss WARNING line. Its name is documented
#: (docs/emulator.md), so it stays that of the module that assembles the app, whichever module logs.
LOGGER = logging.getLogger("sentinel_forwarder.emulator._app")
#: Scope key of the request's ``x-ms-request-id``, set by the outermost layer before any route runs.
REQUEST_ID_KEY = "sentinel_forwarder.emulator.request_id"
#: Scope key of an ingestion request's ``(rows stored, losses recorded)``, set by the route, for the
#: request log.
OUTCOME_KEY = "sentinel_forwarder.emulator.outcome"


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: float | None = None,
    close: bool = False,
) -> Response:
    """An error answer as the Logs Ingestion API gives it: ``{"error": {"code": ..., "message": ...}}``.

    :param status: The HTTP status.
    :param code: The error code, also sent as ``x-ms-error-code``.
    :param message: The error message.
    :param retry_after: Seconds for ``Retry-After`` (rounded up to whole seconds), if any.
    :param close: Ask the server to close the connection after answering (``Connection: close``): for a
        request whose body was not read completely.
    """
    headers = {"x-ms-error-code": code}
    if retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)
