"""Uses the public API as an application does; type-checked (never run) by tests/test_typing.py.

A wrong attribute or keyword must be an error: each ``type: ignore[...]`` below is needed, and mypy --strict
(warn_unused_ignores) fails if one is not, e.g. if ``add_sentinel_forwarder`` returned ``Any`` again.
"""

from __future__ import annotations

from starlette.applications import Starlette
from typing_extensions import assert_type

from sentinel_forwarder import (
    AuditEntry,
    BackgroundForwarder,
    BufferingForwarder,
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
