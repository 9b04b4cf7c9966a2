"""check_on_start (the non-writing probe as the forwarder opens) and health() (readiness)."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sentinel_forwarder import (
    AuditEntry,
    BackgroundForwarder,
    BufferingForwarder,
    ConfigurationError,
    ForwarderHealth,
    ForwarderSettings,
    add_sentinel_forwarder,
)
from sentinel_forwarder.emulator import Emulator, EmulatorCredential
from sentinel_forwarder.testing import RecordingForwarder

MISSING_RULE = "dcr-" + "f" * 32


def start(emu: Emulator, mode: str, **more: object) -> BackgroundForwarder:
    options: dict[str, object] = {
        "endpoint": emu.endpoint,
        "rule_id": emu.rule_id,
        "credential": EmulatorCredential(),
        "check_on_start": mode,
        "environ": {},
        **more,
    }
    return add_sentinel_forwarder(**options)  # type: ignore[arg-type, no-any-return]


# -- check_on_start ---------------------------------------------------------------------------------------


def test_check_on_start_passes_and_writes_nothing(emu: Emulator) -> None:
    handle = start(emu, "raise")
    try:
        assert emu.stats().by_status == {204: 1}
        assert emu.count(emu.table) == 0
    finally:
        handle.close()


def test_check_on_start_raise_for_what_cannot_heal(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match=r"probe failed \(not_found\).*check the DCR immutable id"):
        start(emu, "raise", rule_id=MISSING_RULE)


def test_check_on_start_log_logs_at_error_and_starts(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder.check"):
        handle = start(emu, "log", rule_id=MISSING_RULE)
    handle.close()
    [record] = [r for r in caplog.records if r.name == "sentinel_forwarder.check"]
    assert record.levelno == logging.ERROR and "(not_found)" in record.getMessage()


def test_check_on_start_403_may_heal_so_it_only_warns(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.roles.assign("someone-else", emu.rule_id)  # the opaque emulator token names nobody: 403
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder.check"):
        handle = start(emu, "raise")
    handle.close()
    [record] = [r for r in caplog.records if r.name == "sentinel_forwarder.check"]
    assert record.levelno == logging.WARNING and "az role assignment create" in record.getMessage()


def test_check_on_start_off_by_default(emu: Emulator) -> None:
    handle = add_sentinel_forwarder(
        endpoint=emu.endpoint, rule_id=MISSING_RULE, credential=EmulatorCredential(), environ={}
    )
    handle.close()
    assert emu.stats().requests == 0


def test_check_on_start_fails_an_app_startup(emu: Emulator) -> None:
    app = Starlette()
    add_sentinel_forwarder(
        app,
        endpoint=emu.endpoint,
        rule_id=MISSING_RULE,
        credential=EmulatorCredential(),
        environ={"SENTINEL_FORWARDER_CHECK_ON_START": "raise"},
    )
    with pytest.raises(ConfigurationError, match="not_found"), TestClient(app):
        pass


def test_check_on_start_setting_is_validated() -> None:
    env = {"SENTINEL_FORWARDER_CHECK_ON_START": "yes"}
    with pytest.raises(ConfigurationError, match=r"SENTINEL_FORWARDER_CHECK_ON_START.*off, log or raise"):
        ForwarderSettings.resolve(env, require_endpoint=False)
    assert ForwarderSettings.resolve({}, require_endpoint=False).check_on_start == "off"


# -- health() ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_health_follows_the_pump_and_deliveries() -> None:
    sink = RecordingForwarder()
    forwarder = BufferingForwarder(sink, max_batch_size=1, max_request_rows=1)
    assert forwarder.health().pump_alive is False
    async with forwarder:
        assert forwarder.health().ready
        assert forwarder.health().last_success is None
        sink.fail_next(2)
        forwarder.forward(AuditEntry("a"))
        forwarder.forward(AuditEntry("b"))
        await sink.wait_for_rows(batches=2)
        await forwarder.flush()
        failing = forwarder.health()
        assert failing.consecutive_failures == 2 and failing.last_success is None
        forwarder.forward(AuditEntry("c"))
        await forwarder.flush()
        healthy = forwarder.health()
        assert healthy.consecutive_failures == 0
        assert healthy.last_success is not None and healthy.seconds_since_success() is not None
        assert healthy.backlog == 0 and healthy.spool is False
    closed = forwarder.health()
    assert not closed.ready and closed.as_dict()["ready"] is False


@pytest.mark.anyio
async def test_health_counts_a_sink_that_raises() -> None:
    sink = RecordingForwarder()
    sink.raise_next(RuntimeError("boom"))
    async with BufferingForwarder(sink, max_batch_size=1) as forwarder:
        forwarder.forward(AuditEntry("a"))
        await forwarder.flush()
        assert forwarder.health().consecutive_failures == 1


def test_background_health_and_backlog() -> None:
    sink = RecordingForwarder()
    handle = add_sentinel_forwarder(forwarder=sink, max_batch_size=1000, max_interval=60, environ={})
    handle.forward(AuditEntry("waiting"))
    health = handle.health()
    assert isinstance(health, ForwarderHealth)
    assert health.ready and health.backlog == 1 == health.queue_depth
    handle.close()
    assert not handle.health().ready
