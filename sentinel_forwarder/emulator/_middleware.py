"""The outermost ASGI layer: request ids on every answer; for ingestion requests also the counters, the
request log (and its INFO line), and the injected faults: latency, failures and dropped connections.

A dropped connection is an aborted transport (no response byte is written); uvicorn's error logger is told
not to report the exception that other servers need to close the connection.
"""

from __future__ import annotations

__all__ = ["Faulty"]

import asyncio
import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._faults import DEFAULT_ERROR_CODES, Fault, Faults
from ._http import LOGGER, OUTCOME_KEY, REQUEST_ID_KEY, error_response
from ._ingest_request import read_body
from ._stats import RequestLog, RequestRecord, StatsRecorder

_INGEST_PREFIX = "/dataCollectionRules/"


class _ConnectionDropped(Exception):
    """Raised to make uvicorn close the connection when the transport cannot be aborted directly."""


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _ConnectionDropped))


logging.getLogger("uvicorn.error").addFilter(_DropFilter())


class Faulty:
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
