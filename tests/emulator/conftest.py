from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.monitor.ingestion import LogsIngestionClient
from emulator_helpers import TYPED_DCR, audit_row, sync_client, upload_kwargs

from sentinel_forwarder.emulator import Emulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def http_emu() -> Iterator[Emulator]:
    with Emulator(dcrs=[TYPED_DCR], strict=True) as emu:
        yield emu


@pytest.fixture(scope="module")
def https_emu() -> Iterator[Emulator]:
    with Emulator(tls=True, dcrs=[TYPED_DCR], strict=True) as emu:
        yield emu


@pytest.fixture(params=["http", "https"])
def emu(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """A shared strict-mode emulator over HTTP or HTTPS, reset before each test."""
    emulator: Emulator = request.getfixturevalue(f"{request.param}_emu")
    emulator.reset()
    yield emulator
    emulator.reset()


@pytest.fixture
def client(emu: Emulator) -> Iterator[LogsIngestionClient]:
    with sync_client(emu) as c:
        yield c


@pytest.fixture
def upload(emu: Emulator, client: LogsIngestionClient) -> Callable[..., None]:
    """``upload(logs, rule_id=emu.rule_id, stream=emu.stream_name, **kw)`` with the sync SDK client."""

    def _upload(logs: Any, *, rule_id: str | None = None, stream: str | None = None, **kw: Any) -> None:
        client.upload(rule_id or emu.rule_id, stream or emu.stream_name, logs, **upload_kwargs(emu), **kw)

    return _upload


@pytest.fixture
def make_row() -> Callable[..., dict[str, Any]]:
    """Factory of realistic audit rows: ``make_row(Severity="Low")``."""
    return audit_row
