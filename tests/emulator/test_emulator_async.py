"""The unmodified async SDK client (aiohttp on asyncio, azure-core's trio transport on trio), httpx async."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.monitor.ingestion.aio import LogsIngestionClient

from sentinel_forwarder.emulator import AsyncEmulatorCredential, Emulator

pytestmark = pytest.mark.anyio
MakeRow = Callable[..., dict[str, Any]]


def async_client(emu: Emulator, anyio_backend: str, **kwargs: Any) -> LogsIngestionClient:
    kwargs.setdefault("retry_total", 0)
    kwargs.setdefault("retry_backoff_factor", 0)
    credential = kwargs.pop("credential", None) or AsyncEmulatorCredential()
    if anyio_backend == "trio":
        from azure.core.pipeline.transport import TrioRequestsTransport

        kwargs["transport"] = TrioRequestsTransport(
            connection_verify=str(emu.ca_path) if emu.ca_path else True
        )
    elif emu.ca_path is not None:
        kwargs["connection_verify"] = str(emu.ca_path)
    return LogsIngestionClient(emu.endpoint, credential, **kwargs)


def options(emu: Emulator) -> dict[str, Any]:
    return {} if emu.ca_path else {"enforce_https": False}


async def test_async_upload(emu: Emulator, anyio_backend: str, make_row: MakeRow) -> None:
    rows = [make_row() for _ in range(50)]
    async with async_client(emu, anyio_backend) as client:
        await client.upload(emu.rule_id, emu.stream_name, rows, **options(emu))
    assert emu.rows(emu.table) == rows


async def test_async_errors(emu: Emulator, anyio_backend: str, make_row: MakeRow) -> None:
    async with async_client(emu, anyio_backend) as client:
        with pytest.raises(ResourceNotFoundError) as info:
            await client.upload("dcr-nope", emu.stream_name, [make_row()], **options(emu))
        assert info.value.status_code == 404
        assert info.value.error is not None
        assert info.value.error.code == "NotFound"
        assert info.value.error.message == "Data collection rule with immutable Id 'dcr-nope' not found."

        with pytest.raises(HttpResponseError) as info2:
            await client.upload(emu.rule_id, emu.stream_name, [make_row(Severity=["x"])], **options(emu))
        assert info2.value.status_code == 400
        assert info2.value.response is not None
        assert info2.value.response.headers["x-ms-error-code"] == "InvalidColumnValue"

        emu.faults.fail_next(1, 503, retry_after=3)
        with pytest.raises(HttpResponseError) as info3:
            await client.upload(emu.rule_id, emu.stream_name, [make_row()], **options(emu))
        assert info3.value.status_code == 503
        assert info3.value.response is not None
        assert info3.value.response.headers["Retry-After"] == "3"


async def test_async_retry_recovers(emu: Emulator, anyio_backend: str, make_row: MakeRow) -> None:
    emu.faults.fail_next(2, 503, retry_after=0)
    async with async_client(emu, anyio_backend, retry_total=3) as client:
        await client.upload(emu.rule_id, emu.stream_name, [make_row()], **options(emu))
    assert dict(emu.stats().by_status) == {503: 2, 204: 1}


async def test_async_drop(emu: Emulator, anyio_backend: str, make_row: MakeRow) -> None:
    emu.faults.drop_next(1)
    async with async_client(emu, anyio_backend) as client:
        with pytest.raises((ServiceResponseError, ServiceRequestError)):
            await client.upload(emu.rule_id, emu.stream_name, [make_row()], **options(emu))
        await client.upload(emu.rule_id, emu.stream_name, [make_row()], **options(emu))
    assert emu.stats().connections_dropped == 1
    assert emu.count(emu.table) == 1


async def test_async_failing_credential(emu: Emulator, anyio_backend: str, make_row: MakeRow) -> None:
    async with async_client(emu, anyio_backend, credential=AsyncEmulatorCredential(fail=True)) as client:
        with pytest.raises(ClientAuthenticationError):
            await client.upload(emu.rule_id, emu.stream_name, [make_row()], **options(emu))
    assert emu.stats().requests == 0


async def test_concurrent_async_uploads_overlap_under_latency(
    emu: Emulator, anyio_backend: str, make_row: MakeRow
) -> None:
    emu.faults.latency(0.2)
    verify: Any = ssl.create_default_context(cafile=str(emu.ca_path)) if emu.ca_path else True
    headers = {"Authorization": "Bearer t", "Content-Type": "application/json"}
    url = f"/dataCollectionRules/{emu.rule_id}/streams/{emu.stream_name}?api-version=2023-01-01"
    statuses: list[int] = []

    async with httpx.AsyncClient(base_url=emu.endpoint, verify=verify, timeout=30) as http:

        async def one() -> None:
            response = await http.post(url, headers=headers, content=json.dumps([make_row()]))
            statuses.append(response.status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert statuses == [204] * 5
    assert emu.stats().max_in_flight >= 2
    assert emu.count(emu.table) == 5
