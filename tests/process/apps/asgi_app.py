"""A Starlette app for uvicorn with two workers: the forwarder runs in each worker's lifespan."""

from __future__ import annotations

from _common import rows
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sentinel_forwarder import add_sentinel_forwarder
from sentinel_forwarder.testing import EmulatorCredential


async def audited(request: Request) -> PlainTextResponse:
    for entry in rows(1, "request"):
        request.app.state.sentinel_forwarder.forward(entry)
    return PlainTextResponse("audited\n")


app = Starlette(routes=[Route("/", audited)])
add_sentinel_forwarder(app, credential=EmulatorCredential(), max_interval=3600)
