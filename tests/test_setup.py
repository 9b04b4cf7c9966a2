"""add_sentinel_forwarder: settings, a real Starlette app's lifespan, and the background-thread mode."""

from __future__ import annotations

import threading

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sentinel_forwarder import (
    AuditEntry,
    BufferingForwarder,
    ConfigurationError,
    ForwarderSettings,
    Severity,
    add_sentinel_forwarder,
)
from sentinel_forwarder.emulator import Emulator, EmulatorCredential
from sentinel_forwarder.testing import RecordingForwarder


def test_settings_come_from_arguments_then_environment() -> None:
    env = {
        "SENTINEL_FORWARDER_ENDPOINT": "https://dce.example.com",
        "SENTINEL_FORWARDER_RULE_ID": "dcr-" + "e" * 32,
        "SENTINEL_FORWARDER_MAX_BATCH_SIZE": "50",
        "SENTINEL_FORWARDER_MIN_SEVERITY": "high",
    }
    s = ForwarderSettings.resolve(env, rule_id="dcr-" + "a" * 32, max_interval=2)
    assert (s.endpoint, s.rule_id, s.max_batch_size, s.max_interval) == (
        "https://dce.example.com",
        "dcr-" + "a" * 32,
        50,
        2.0,
    )
    assert s.min_severity is Severity.HIGH
    assert s.stream_name == "Custom-AISentinelAudit_CL"


def test_missing_setting_is_named() -> None:
    with pytest.raises(ConfigurationError, match="SENTINEL_FORWARDER_RULE_ID"):
        ForwarderSettings.resolve({"SENTINEL_FORWARDER_ENDPOINT": "https://dce.example.com"})
    with pytest.raises(ConfigurationError, match="SENTINEL_FORWARDER_ENDPOINT"):
        add_sentinel_forwarder(environ={})


@pytest.mark.parametrize(
    ("var", "value"),
    [("MAX_BATCH_SIZE", "lots"), ("MAX_INTERVAL", "-1"), ("CLOUD", "mars"), ("MIN_SEVERITY", "dire")],
)
def test_malformed_setting_is_named(var: str, value: str) -> None:
    env = {
        "SENTINEL_FORWARDER_ENDPOINT": "https://x.example.com",
        "SENTINEL_FORWARDER_RULE_ID": "dcr-" + "1" * 32,
    }
    env[f"SENTINEL_FORWARDER_{var}"] = value
    with pytest.raises(ConfigurationError, match=f"SENTINEL_FORWARDER_{var}"):
        ForwarderSettings.resolve(env)


def test_malformed_endpoint_fails_at_startup() -> None:
    with pytest.raises(ConfigurationError, match=r"SENTINEL_FORWARDER_ENDPOINT.*uses http://"):
        add_sentinel_forwarder(endpoint="http://dce.example.com", rule_id="dcr-" + "1" * 32, environ={})


def audit_app() -> Starlette:
    async def audit(request: Request) -> JSONResponse:
        forwarder: BufferingForwarder = request.app.state.sentinel_forwarder
        accepted = forwarder.forward(AuditEntry(request.query_params["q"], severity=Severity.HIGH))
        return JSONResponse({"accepted": accepted})

    return Starlette(routes=[Route("/audit", audit)])


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_starlette_lifespan_starts_and_drains(emu: Emulator, backend: str) -> None:
    app = audit_app()
    fwd = add_sentinel_forwarder(
        app,
        endpoint=emu.endpoint,
        rule_id=emu.rule_id,
        credential=EmulatorCredential(),
        max_interval=3600,
        environ={},
    )
    assert app.state.sentinel_forwarder is fwd
    with TestClient(app, backend=backend) as client:
        for i in range(30):
            assert client.get("/audit", params={"q": f"req {i}"}).json() == {"accepted": True}
        assert emu.count(emu.table) == 0  # still buffered: the hour-long interval has not passed
    # shutdown drained the buffer
    assert emu.count(emu.table) == 30 == fwd.statistics().sent


def test_starlette_app_keeps_its_own_lifespan(emu: Emulator) -> None:
    events: list[str] = []
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        events.append("app up")
        yield
        events.append("app down")

    app = Starlette(routes=[], lifespan=lifespan)
    fwd = add_sentinel_forwarder(app, forwarder=RecordingForwarder(), environ={})
    with TestClient(app):
        fwd.forward(AuditEntry("during"))
    assert events == ["app up", "app down"]
    assert fwd.statistics().sent == 1


def test_non_starlette_app_is_refused() -> None:
    with pytest.raises(TypeError, match="Starlette"):
        add_sentinel_forwarder(object(), forwarder=RecordingForwarder(), environ={})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_background_thread_mode(emu: Emulator, backend: str) -> None:
    handle = add_sentinel_forwarder(
        endpoint=emu.endpoint,
        rule_id=emu.rule_id,
        credential=EmulatorCredential(),
        max_batch_size=25,
        environ={},
        backend=backend,
    )

    def produce(t: int) -> None:
        for i in range(100):
            handle.forward(AuditEntry(f"t{t} {i}", severity=Severity.MEDIUM))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = handle.close()
    assert stats.sent == 400 == emu.count(emu.table)
    assert stats.offered == stats.sent
    assert handle.forward(AuditEntry("after close")) is False
    assert handle.close().dropped == {"closed": 1}


def test_user_built_forwarder_is_used_as_is() -> None:
    sink = RecordingForwarder()
    mine = BufferingForwarder(sink, max_batch_size=50, max_interval=2.0, capacity=5000)
    handle = add_sentinel_forwarder(forwarder=mine, environ={})
    assert handle.forwarder is mine
    handle.forward(AuditEntry("x"))
    assert handle.close().sent == 1
    assert sink.closed


def test_own_sink_is_wrapped_with_settings() -> None:
    sink = RecordingForwarder()
    handle = add_sentinel_forwarder(forwarder=sink, environ={"SENTINEL_FORWARDER_MIN_SEVERITY": "Medium"})
    handle.forward(AuditEntry("low", severity=Severity.LOW))
    handle.forward(AuditEntry("high", severity=Severity.HIGH))
    stats = handle.close()
    assert (stats.sent, stats.filtered) == (1, 1)
    assert [e.summary for e in sink.rows] == ["high"]


def test_startup_failure_is_raised() -> None:
    class Broken(RecordingForwarder):
        async def __aenter__(self) -> Broken:
            raise OSError("cannot open")

    with pytest.raises(RuntimeError, match="failed to start") as info:
        add_sentinel_forwarder(forwarder=Broken(), environ={})
    assert isinstance(info.value.__cause__, OSError)


def test_boolean_for_a_number_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"max_batch_size .*is a boolean"):
        ForwarderSettings.resolve({}, require_endpoint=False, max_batch_size=True)
    assert (
        ForwarderSettings.resolve({}, require_endpoint=False, connection_verify=False).connection_verify
        is False
    )
