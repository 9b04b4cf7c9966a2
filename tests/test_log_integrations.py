"""Logging integrations: the stdlib handler, the structlog processor and the OpenTelemetry logs exporter, with
the real libraries, into a RecordingForwarder; and one through the emulator."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import structlog
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

from sentinel_forwarder import (
    AUDIT_TABLE,
    AuditEntry,
    AuditLogHandler,
    BackgroundForwarder,
    Column,
    Severity,
    add_sentinel_forwarder,
)
from sentinel_forwarder.emulator import Emulator, EmulatorCredential
from sentinel_forwarder.opentelemetry import AuditLogExporter
from sentinel_forwarder.structlog import AuditProcessor
from sentinel_forwarder.testing import RecordingForwarder


class Forwarding:
    """A background forwarder around a RecordingForwarder: rows() closes it and returns what it sent."""

    def __init__(self) -> None:
        self.sink = RecordingForwarder()
        self.forwarder: BackgroundForwarder = add_sentinel_forwarder(forwarder=self.sink, environ={})

    def rows(self) -> list[AuditEntry]:
        stats = self.forwarder.close()
        assert stats.offered == stats.sent  # nothing dropped on the way
        return self.sink.rows


@pytest.fixture
def fwd() -> Iterator[Forwarding]:
    forwarding = Forwarding()
    yield forwarding
    forwarding.forwarder.close()


@pytest.fixture
def audit_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("myapp.audit")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


# -- stdlib logging ---------------------------------------------------------------------------------------


def test_handler_turns_records_into_rows(fwd: Forwarding, audit_logger: logging.Logger) -> None:
    audit_logger.addHandler(AuditLogHandler(fwd.forwarder))
    audit_logger.debug("debug line")
    audit_logger.info("user signed in", extra={"session_id": "s-1", "not_a_column": "left out"})
    audit_logger.warning("PII redacted", extra={"SessionId": "s-2", "detector_id": "pii-leak"})
    audit_logger.error("jailbreak blocked", extra={"severity": "critical"})  # an explicit severity wins
    try:
        raise ValueError("bad input")
    except ValueError:
        audit_logger.critical("detector crashed", exc_info=True)
    rows = fwd.rows()
    assert [(r.summary, r.severity, r.session_id, r.detector_id) for r in rows] == [
        ("debug line", Severity.NONE, "", "myapp.audit"),
        ("user signed in", Severity.LOW, "s-1", "myapp.audit"),
        ("PII redacted", Severity.MEDIUM, "s-2", "pii-leak"),
        ("jailbreak blocked", Severity.CRITICAL, "", "myapp.audit"),
        ("detector crashed (ValueError: bad input)", Severity.CRITICAL, "", "myapp.audit"),
    ]
    assert all(r.extra == {} for r in rows)
    assert abs((rows[0].timestamp - datetime.now(timezone.utc)).total_seconds()) < 600


def test_handler_fills_extra_columns_of_the_schema(fwd: Forwarding, audit_logger: logging.Logger) -> None:
    schema = AUDIT_TABLE.with_columns([Column("Score", "int")])
    audit_logger.addHandler(AuditLogHandler(fwd.forwarder, schema=schema))
    audit_logger.warning("risky prompt", extra={"Score": 87, "other": 1})
    [row] = fwd.rows()
    assert row.extra == {"Score": 87}


def test_handler_on_the_root_logger_never_feeds_itself(fwd: Forwarding) -> None:
    root = logging.getLogger()
    handler = AuditLogHandler(fwd.forwarder)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("sentinel_forwarder.buffering").warning("the forwarder's own line")
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: ...")
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTPS connection")
        on_its_thread = threading.Thread(
            target=logging.getLogger("myapp").warning, args=("on a forwarder thread",),
            name="sentinel-forwarder-upload_0",
        )  # fmt: skip
        on_its_thread.start()
        on_its_thread.join()
        logging.getLogger("myapp").warning("the application's line")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert [r.summary for r in fwd.rows()] == ["the application's line"]


def test_handler_does_not_recurse_when_forwarding_logs() -> None:
    """Pure logic: a forwarder whose forward() logs to the same logger gets one row, not a loop."""
    logger = logging.getLogger("myapp.reentrant")
    logger.propagate = False
    offered: list[AuditEntry] = []

    class Chatty:
        def forward(self, entry: AuditEntry, /) -> bool:
            offered.append(entry)
            logger.warning("forwarding %s", entry.summary)  # back into the handler
            return True

    handler = AuditLogHandler(Chatty())
    logger.addHandler(handler)
    try:
        logger.warning("once")
    finally:
        logger.removeHandler(handler)
    assert [e.summary for e in offered] == ["once"]


def test_handler_never_raises(audit_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def forward(self, entry: AuditEntry, /) -> bool:
            raise RuntimeError("forwarder bug")

    handler = AuditLogHandler(Broken())
    failed: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", failed.append)
    audit_logger.addHandler(handler)
    audit_logger.warning("still fine")
    assert [r.getMessage() for r in failed] == ["still fine"]


# -- structlog --------------------------------------------------------------------------------------------


def test_structlog_processor(fwd: Forwarding) -> None:
    rendered = structlog.testing.CapturingLogger()
    log = structlog.wrap_logger(
        rendered,
        processors=[
            structlog.processors.add_log_level,
            AuditProcessor(fwd.forwarder, detector_id="myapp"),
            structlog.processors.JSONRenderer(),
        ],
    )
    log.debug("below the level")
    log.info("user signed in", session_id="s-1", elapsed_ms=12)
    log.warning("PII redacted", session_id="s-2", detector_id="pii-leak")
    log.error("jailbreak blocked", severity="Critical")
    rows = fwd.rows()
    assert [(r.summary, r.severity, r.session_id, r.detector_id) for r in rows] == [
        ("user signed in", Severity.LOW, "s-1", "myapp"),
        ("PII redacted", Severity.MEDIUM, "s-2", "pii-leak"),
        ("jailbreak blocked", Severity.CRITICAL, "", "myapp"),
    ]
    assert len(rendered.calls) == 4  # every event still reaches the renderer, unchanged
    assert '"elapsed_ms": 12' in rendered.calls[1].args[0]


def test_structlog_predicate_and_own_loggers(fwd: Forwarding) -> None:
    processor = AuditProcessor(fwd.forwarder, predicate=lambda event: bool(event.get("audit")))
    log = structlog.wrap_logger(
        structlog.testing.CapturingLogger(),
        processors=[structlog.processors.add_log_level, processor, structlog.processors.KeyValueRenderer()],
    )
    log.info("not audit")
    log.info("audit", audit=True)
    log.info("own", audit=True, logger="sentinel_forwarder.azure")
    assert [r.summary for r in fwd.rows()] == ["audit"]


# -- OpenTelemetry ----------------------------------------------------------------------------------------


def test_opentelemetry_exporter_through_the_sdk(fwd: Forwarding) -> None:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(AuditLogExporter(fwd.forwarder)))
    logger = provider.get_logger("myapp.otel")
    info, error = SeverityNumber.INFO, SeverityNumber.ERROR
    logger.emit(LogRecord(body="user signed in", severity_number=info, attributes={"session_id": "s-1"}))
    logger.emit(
        LogRecord(
            body="prompt injection blocked",
            severity_number=error,
            attributes={"detector_id": "prompt-injection", "http.route": "/chat"},
        )
    )
    logger.emit(LogRecord(body="below INFO", severity_number=SeverityNumber.DEBUG))
    own = provider.get_logger("sentinel_forwarder.azure")  # the forwarder's own: never forwarded
    own.emit(LogRecord(body="own line", severity_number=error))
    provider.shutdown()
    rows = fwd.rows()
    assert [(r.summary, r.severity, r.session_id, r.detector_id) for r in rows] == [
        ("user signed in", Severity.LOW, "s-1", "myapp.otel"),
        ("prompt injection blocked", Severity.HIGH, "", "prompt-injection"),
        ("below INFO", Severity.NONE, "", "myapp.otel"),
    ]
    assert rows[1].extra == {}


def test_the_core_import_stays_light() -> None:
    import subprocess

    code = (
        "import sys, sentinel_forwarder; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'structlog'"
        " or m.startswith('opentelemetry.sdk')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- end to end -------------------------------------------------------------------------------------------


def test_handler_through_the_emulator(emu: Emulator, audit_logger: logging.Logger) -> None:
    forwarder = add_sentinel_forwarder(
        endpoint=emu.endpoint, rule_id=emu.rule_id, credential=EmulatorCredential(), environ={}
    )
    audit_logger.addHandler(AuditLogHandler(forwarder, level=logging.INFO))
    audit_logger.warning("PII redacted", extra={"session_id": "s-9", "detector_id": "pii-leak"})
    audit_logger.debug("below the handler's level")
    stats = forwarder.close()
    assert stats.sent == 1
    [row] = emu.rows(emu.table)
    assert (row["Summary"], row["Severity"], row["SessionId"], row["DetectorId"]) == (
        "PII redacted", "Medium", "s-9", "pii-leak",
    )  # fmt: skip
