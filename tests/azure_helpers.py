"""Shared by the Azure sink's integration tests: emulator fixtures' helpers, rows, a forwarding run."""

from __future__ import annotations

from typing import Any

from sentinel_forwarder import (
    AuditEntry,
    AzureSentinelForwarder,
    BufferingForwarder,
    ForwarderStatistics,
    Severity,
)
from sentinel_forwarder.emulator import Emulator, EmulatorCredential

#: The rule of the ``typed`` fixture's emulator (tests/conftest.py).
TYPED_RULE_ID = "dcr-" + "5c" * 16


def sink_for(emu: Emulator, **kwargs: Any) -> AzureSentinelForwarder:
    options: dict[str, Any] = {
        "rule_id": emu.rule_id,
        "retry_backoff": 0.01,
        "connection_verify": str(emu.ca_path) if emu.ca_path else True,
    }
    options.update(kwargs)
    credential = options.pop("credential", EmulatorCredential())
    return AzureSentinelForwarder(emu.endpoint, credential, **options)


def rows(n: int, *, size: int = 0, prefix: str = "r") -> list[AuditEntry]:
    pad = "x" * size
    return [
        AuditEntry(
            f"{prefix}{i}{pad}", severity=Severity.HIGH, session_id=f"s{i % 7}", detector_id="pii-leak"
        )
        for i in range(n)
    ]


async def forward_all(
    sink: AzureSentinelForwarder, entries: list[AuditEntry], **options: Any
) -> ForwarderStatistics:
    options.setdefault("max_batch_size", 100)
    options.setdefault("max_interval", 3600)
    async with BufferingForwarder(sink, **options) as fwd:
        for e in entries:
            assert fwd.forward(e)
    stats = fwd.statistics()
    assert stats.offered == stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed
    return stats


def landed_ids(emu: Emulator) -> list[str]:
    return [r["Id"] for r in emu.rows(emu.table)]
