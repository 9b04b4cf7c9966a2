"""The public API as an application uses it; type-checked (never run) by mypy and pyright (test_typing.py).

A wrong attribute or keyword must be an error: each ``type: ignore[...]`` below is needed, and mypy --strict
(warn_unused_ignores) and pyright (reportUnnecessaryTypeIgnoreComment, below) fail if one is not, e.g. if
``add_sentinel_forwarder`` returned ``Any`` again.
"""

# pyright: strict
# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

import logging

from starlette.applications import Starlette
from typing_extensions import assert_type

from sentinel_forwarder import (
    AuditEntry,
    AuditLogHandler,
    BackgroundForwarder,
    BufferingForwarder,
    ForwarderHealth,
    ForwarderStatistics,
    Severity,
    add_sentinel_forwarder,
)


def with_an_app() -> None:
    app = Starlette()
    forwarder = add_sentinel_forwarder(app, credential="emulator", max_batch_size=50)
    assert_type(forwarder, BufferingForwarder)
    accepted: bool = forwarder.forward(AuditEntry("x", severity=Severity.HIGH))
    assert accepted
    forwarder.fowrard(AuditEntry("typo"))  # type: ignore[attr-defined]


def without_an_app() -> None:
    handle = add_sentinel_forwarder(endpoint="https://dce.example.com", rule_id="dcr-" + "0" * 32)
    assert_type(handle, BackgroundForwarder)
    handle.forward(AuditEntry("x"))
    stats: ForwarderStatistics = handle.close()
    assert stats.sent >= 0
    handle.fowrard(AuditEntry("typo"))  # type: ignore[attr-defined]
    add_sentinel_forwarder(max_batch_sise=5)  # type: ignore[call-overload]
    add_sentinel_forwarder(backend="gevent")  # type: ignore[call-overload]
    add_sentinel_forwarder(object())  # type: ignore[call-overload]


def entries() -> None:
    AuditEntry("PII redacted", severity="Medium", detector_id="pii-leak")  # a label, as the README writes
    AuditEntry("x", severity=3)
    AuditEntry("x", severity=Severity.HIGH)
    entry = AuditEntry("x", severity="high")
    assert_type(entry.severity, Severity)  # read back, it is always a Severity
    AuditEntry("x", severity=1.5)  # type: ignore[arg-type]
    AuditEntry("x", sevrity="High")  # type: ignore[call-arg]


def health_and_logging() -> None:
    handle = add_sentinel_forwarder(check_on_start="raise")
    health: ForwarderHealth = handle.health()
    assert_type(health.ready, bool)
    logging.getLogger("audit").addHandler(AuditLogHandler(handle))
    add_sentinel_forwarder(check_on_start="sometimes")  # type: ignore[call-overload]
