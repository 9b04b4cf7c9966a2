"""Evidence that survives the trip: rows forwarded through a filter and a transform verify when read back
with Microsoft's LogsQueryClient from the emulator's query API, and the heartbeat and sequence rules fire on a
simulated drop, silence and gap and stay quiet on a clean run (the shipped YAML, run by the rule runner)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.monitor.query import LogsQueryClient
from azure_helpers import sink_for

from sentinel_forwarder import AuditEntry, BufferingForwarder, Severity, verify_chain
from sentinel_forwarder.emulator import Emulator, EmulatorCredential, RuleReport

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        sys.version_info < (3, 11), reason="duckdb-kql (KQL queries, the rule runner) needs Python 3.11+"
    ),
]

KEY = b"\x00application-held key\xff"
TABLE = "AISentinelAudit_CL"
EVIDENCE_RULES = {"AuditDroppedAtSource", "ForwarderSilent", "AuditSequenceGap"}


@pytest.fixture
def emu(tls_emulator: Emulator) -> Iterator[Emulator]:
    tls_emulator.reset()
    yield tls_emulator
    tls_emulator.reset()


def redact(entry: AuditEntry) -> AuditEntry | None:
    if entry.detector_id == "noise":
        return None
    return dataclasses.replace(entry, summary=entry.summary.replace("4111-1111", "****"))


def old(i: int, **kwargs: Any) -> AuditEntry:
    """A record from an hour ago (the gap rule judges records once they are 15 minutes old)."""
    when = datetime.now(timezone.utc) - timedelta(minutes=60) + timedelta(seconds=i, microseconds=123_000)
    return AuditEntry(f"card 4111-1111 seen #{i}", severity=Severity.HIGH, timestamp=when, **kwargs)


def fired(reports: list[RuleReport]) -> set[str]:
    return {Path(r.rule.source).stem for r in reports if r.fired} & EVIDENCE_RULES


def run_rules(emu: Emulator, later: timedelta = timedelta(seconds=5)) -> list[RuleReport]:
    return emu.run_rules(now=datetime.now(timezone.utc) + later)


async def test_filtered_and_transformed_rows_verify_after_a_round_trip_through_logs_query_client(
    emu: Emulator,
) -> None:
    fwd = BufferingForwarder(
        sink_for(emu),
        min_severity="Medium",
        transform=redact,
        chain_key=KEY,
        max_interval=0.01,
        heartbeat_interval=3600,
    )
    async with fwd:
        for i in range(40):
            fwd.forward(old(i, detector_id="noise" if i % 4 == 1 else "pii-leak"))
            fwd.forward(AuditEntry("below the filter", severity=Severity.LOW))
    with LogsQueryClient(
        EmulatorCredential(),
        endpoint=emu.endpoint,
        audience=emu.query_audience,
        connection_verify=str(emu.ca_path),
        retry_total=0,
    ) as client:
        result = client.query_workspace(emu.workspace_id, TABLE, timespan=timedelta(hours=3))
    (table,) = result.tables
    # What the service hands back is not what was sent: its own columns, datetimes parsed by the SDK,
    # Sequence as the service's number, the Heartbeat as JSON.
    assert {"TenantId", "Type", "_ResourceId"} <= set(table.columns)
    audit = [row for row in table.rows if row["Sequence"]]
    assert len(audit) == 30 and isinstance(audit[0]["TimeGenerated"], datetime)
    assert all("****" in row["Summary"] for row in audit)
    report = verify_chain(result, key=KEY, previous_hash="")  # the whole result, heartbeat included
    assert report.ok and report.rows == 30, report
    assert report.chains[0].reported_head == 30
    # Without the key, or with a row removed, it says so, precisely.
    assert {b.kind for b in verify_chain(table, previous_hash="").breaks} == {"hash"}
    gone = [row for row in table.rows if row["Sequence"] not in (7, 8)]
    assert [(b.kind, b.sequence, b.expected) for b in verify_chain(gone, key=KEY).breaks] == [
        ("gap", 7, "Sequence 7..8")
    ]


async def test_a_clean_run_raises_none_of_the_evidence_rules(emu: Emulator) -> None:
    async with BufferingForwarder(sink_for(emu), max_interval=0.01, heartbeat_interval=60) as fwd:
        for i in range(30):
            fwd.forward(old(i))
        await fwd._run.evidence.beat()  # a heartbeat before the final one
    assert fired(run_rules(emu, timedelta(minutes=10))) == set()


async def test_drops_at_the_source_raise_an_alert_with_their_reasons(emu: Emulator) -> None:
    fwd = BufferingForwarder(
        sink_for(emu), capacity=5, max_interval=3600, heartbeat_interval=60, application="chat-api"
    )
    async with fwd:
        for i in range(12):  # 7 dropped for a full buffer
            fwd.forward(old(i))
    reports = run_rules(emu)
    assert fired(reports) == {"AuditDroppedAtSource"}
    (report,) = [r for r in reports if Path(r.rule.source).stem == "AuditDroppedAtSource"]
    (alert,) = report.alerts
    assert alert.custom_details["Dropped"] == 7 and "queue_full" in str(alert.custom_details["Reasons"])
    assert report.entities() == [{"entityType": "CloudApplication", "Name": "chat-api"}]


async def test_a_forwarder_that_stops_without_its_final_heartbeat_is_reported_silent(emu: Emulator) -> None:
    fwd = BufferingForwarder(sink_for(emu), max_interval=0.01, heartbeat_interval=60, drain_timeout=5)
    async with fwd:
        fwd.forward(old(0))
        assert await fwd._run.evidence.beat()
        emu.faults.fail_next(10**6, 400)  # cut off: the final heartbeat never lands
    assert fired(run_rules(emu)) == set()  # one interval has not passed
    assert fired(run_rules(emu, timedelta(minutes=2))) == set()  # nor three
    reports = run_rules(emu, timedelta(minutes=4))
    assert fired(reports) == {"ForwarderSilent"}
    (report,) = [r for r in reports if Path(r.rule.source).stem == "ForwarderSilent"]
    assert [a.custom_details["Instance"] for a in report.alerts] == [fwd._run.evidence.instance_id]


async def test_a_gap_in_the_sequence_raises_an_alert(emu: Emulator) -> None:
    fixed = {"max_batch_size": 10, "max_request_rows": 10, "max_batches_in_flight": 1}
    async with BufferingForwarder(sink_for(emu), max_interval=3600, heartbeat_interval=0, **fixed) as fwd:
        for part in range(3):
            if part == 1:
                emu.faults.fail_next(10**6, 400)  # the service refuses the second ten rows
            for i in range(10):
                fwd.forward(old(part * 10 + i))
            assert await fwd.flush(30) == 0
            emu.faults.reset()
    assert fwd.statistics().dropped == {"rejected": 10}
    reports = run_rules(emu)
    assert fired(reports) == {"AuditSequenceGap"}
    (report,) = [r for r in reports if Path(r.rule.source).stem == "AuditSequenceGap"]
    (alert,) = report.alerts
    assert (alert.custom_details["Missing"], alert.custom_details["First"], alert.custom_details["Last"]) == (
        10,
        1,
        30,
    )
