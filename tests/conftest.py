from __future__ import annotations

from collections.abc import Iterator

import pytest

from sentinel_forwarder._model.wire import Codec
from sentinel_forwarder.emulator import Emulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One plain-HTTP emulator per test module (tests/emulator has its own fixtures), in strict mode: a
    request whose data Azure would silently drop or alter fails the test instead of passing with a 204."""
    with Emulator(strict=True) as emu:
        yield emu


@pytest.fixture(scope="module")
def tls_emulator() -> Iterator[Emulator]:
    """One HTTPS emulator per test module, with its own CA (``ca_path``), in strict mode."""
    with Emulator(tls=True, strict=True) as emu:
        yield emu


@pytest.fixture(scope="module")
def typed() -> Iterator[Emulator]:
    """An emulator whose DCR (``azure_helpers.TYPED_RULE_ID``) declares an extra int column, Score: a string
    there is refused (400)."""
    from azure_helpers import TYPED_RULE_ID

    from sentinel_forwarder import AUDIT_TABLE, Column
    from sentinel_forwarder.emulator._dcr import DataCollectionRule

    schema = AUDIT_TABLE.with_columns([Column("Score", "int")])
    rule = DataCollectionRule.from_properties(
        schema.dcr_properties(), name="scored", immutable_id=TYPED_RULE_ID
    )
    with Emulator(dcrs=[rule]) as emu:
        yield emu


@pytest.fixture
def fast_spool_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry a failing service from the spool every few milliseconds instead of every second or minute."""
    from sentinel_forwarder._spool import pump as _spooling

    monkeypatch.setattr(_spooling, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(_spooling, "RETRY_MAX", 0.02)


@pytest.fixture
def emu(emulator: Emulator) -> Iterator[Emulator]:
    """The module's emulator, reset before and after the test."""
    emulator.reset()
    yield emulator
    emulator.reset()


@pytest.fixture(autouse=True)
def _no_default_heartbeats(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``add_sentinel_forwarder`` sends a heartbeat row every 60 s and one at close by default; tests that
    count landed audit rows would see it. Here the default is no heartbeats (also in child processes), unless
    a test is marked ``@pytest.mark.heartbeats``; tests that pass ``heartbeat_interval`` get what they ask."""
    if request.node.get_closest_marker("heartbeats") is not None:
        return
    from sentinel_forwarder._evidence import heartbeat as _heartbeat

    monkeypatch.setattr(_heartbeat, "DEFAULT_HEARTBEAT_INTERVAL", 0.0)
    monkeypatch.setenv("SENTINEL_FORWARDER_HEARTBEAT_INTERVAL", "0")


@pytest.fixture(params=["installed", "stdlib"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Codec:
    """Each wire codec in turn: the one installed (orjson and ISA-L, the ``fast`` extra, which the ``test``
    extra installs), then the standard library's fallback (json and zlib), for sinks made in the test."""
    from sentinel_forwarder._model import wire as _wire
    from sentinel_forwarder._sinks.azure import sink as _azure

    chosen = _wire.CODEC if request.param == "installed" else _wire.STDLIB
    monkeypatch.setattr(_azure, "CODEC", chosen)
    monkeypatch.setattr(_wire, "CODEC", chosen)
    return chosen
