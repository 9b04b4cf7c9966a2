"""The canonical form and the verifier: rows as the service returns them verify; every problem is reported."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel_forwarder import AuditEntry, HashChain, Severity, canonical_form, record_hash, verify_chain
from sentinel_forwarder._evidence.chain import _entry_form, _linked


def chain_rows(n: int, *, key: str | None = None) -> list[dict[str, Any]]:
    chain = HashChain(key=key)
    when = datetime(2026, 12, 4, 18, 0, 0, 123000, tzinfo=timezone.utc)
    return [
        chain.link(AuditEntry(f"event {i}", severity="High", timestamp=when + timedelta(seconds=i))).to_row()
        for i in range(n)
    ]


def as_queried(row: dict[str, Any]) -> dict[str, Any]:
    """The row as a Log Analytics query returns it: the service's datetime format, numbers as reals, the
    workspace's own columns, dynamic values as JSON text."""
    out = dict(row)
    when = datetime.fromisoformat(row["TimeGenerated"].replace("Z", "+00:00"))
    out["TimeGenerated"] = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    out["Sequence"] = float(row["Sequence"])
    out.update(
        TenantId="ws", Type="AISentinelAudit_CL", _ResourceId="/subscriptions/x", SourceSystem="RestAPI"
    )
    if "Heartbeat" in out:
        out["Heartbeat"] = json.dumps(out["Heartbeat"])
    return out


def test_rows_as_the_service_returns_them_verify() -> None:
    rows = chain_rows(5)
    queried = [as_queried(r) for r in rows]
    assert queried[0]["TimeGenerated"] == "2026-12-04T18:00:00.123Z"
    assert all(canonical_form(q) == canonical_form(r) for q, r in zip(queried, rows, strict=True))
    as_datetimes = [
        dict(r, TimeGenerated=datetime.fromisoformat(r["TimeGenerated"][:-1] + "+00:00")) for r in rows
    ]
    assert verify_chain(queried, previous_hash="").ok and verify_chain(as_datetimes).ok
    # a string column missing (or null) reads as empty, as Log Analytics returns it
    assert canonical_form({**rows[0], "SessionId": None}) == canonical_form(rows[0])
    # a changed value does not verify
    assert not verify_chain([dict(queried[0], Severity="Low")]).ok


def test_every_problem_is_reported_whatever_the_order() -> None:
    rows = chain_rows(12)
    tampered = [dict(r) for r in rows]
    tampered[2]["Summary"] = "altered"  # alteration (its Hash kept)
    del tampered[5:7]  # sequences 6 and 7 removed
    duplicate = dict(tampered[0])
    forged = dict(tampered[8], Id="forged")  # another row claiming sequence 11
    landed = [*tampered, duplicate, forged]
    random.Random(3).shuffle(landed)
    report = verify_chain(landed)
    assert [(b.kind, b.sequence) for b in report.breaks] == [
        ("hash", 3),
        ("gap", 6),
        ("fork", 11),
        ("hash", 11),
    ]
    assert report.breaks[1].expected == "Sequence 6..7"
    (summary,) = report.chains
    assert (summary.rows, summary.first, summary.last, summary.duplicates) == (11, 1, 12, 1)
    assert bool(report) and report.first is report.breaks[0]
    assert "4 problem(s)" in str(report)


def test_a_re_hashed_alteration_breaks_the_next_link() -> None:
    rows = chain_rows(4)
    rows[1] = dict(rows[1], Summary="altered")
    rows[1]["Hash"] = record_hash(rows[1])
    assert [(b.kind, b.sequence) for b in verify_chain(rows).breaks] == [("link", 3)]


def test_chains_are_verified_separately_and_the_start_on_request() -> None:
    first, second = chain_rows(3), chain_rows(4)
    assert verify_chain(first + second).ok and len(verify_chain(second + first).chains) == 2
    report = verify_chain(first[1:] + second, previous_hash="")
    assert [(b.kind, b.sequence, b.chain_id) for b in report.breaks] == [("gap", 1, first[0]["ChainId"])]


def test_a_heartbeat_head_beyond_the_last_row_is_a_gap() -> None:
    rows = chain_rows(5)
    beat = AuditEntry(
        "hb", chain_id=rows[0]["ChainId"], heartbeat={"chain": rows[0]["ChainId"], "sequence": 7}
    )
    report = verify_chain([*rows, as_queried(beat.to_row())])
    assert report.rows == 5 and [(b.kind, b.expected) for b in report.breaks] == [("gap", "Sequence 6..7")]


def test_rows_linked_without_a_chain_id_are_checked_in_the_order_given() -> None:
    chain = HashChain()
    rows = [dict(chain.link(AuditEntry(f"e{i}")).to_row(), ChainId="", Sequence=0) for i in range(4)]
    # (an earlier version's rows carry no ChainId or Sequence; their hash is over the new canonical form here)
    for row in rows:
        row["Hash"] = record_hash(row)
    assert [b.kind for b in verify_chain(rows).breaks] == ["link", "link", "link"]


def test_keyed_hashes_need_the_key() -> None:
    rows = chain_rows(3, key="k")
    assert verify_chain(rows, key="k").ok and verify_chain(rows, key=b"k").ok
    assert [b.kind for b in verify_chain(rows).breaks] == ["hash"] * 3
    assert "k" not in repr(HashChain(key="k")).replace("keyed", "")


@settings(max_examples=200, deadline=None)
@given(
    summary=st.text(),
    session=st.text(max_size=20),
    severity=st.sampled_from(list(Severity)),
    micros=st.integers(min_value=0, max_value=999_999),
    offset=st.integers(min_value=-14 * 60, max_value=14 * 60),
    sequence=st.integers(min_value=1, max_value=2**53),
)
def test_the_pumps_fast_form_is_the_canonical_form(
    summary: str, session: str, severity: Severity, micros: int, offset: int, sequence: int
) -> None:
    when = datetime(2026, 12, 4, 18, 0, 0, micros, tzinfo=timezone(timedelta(minutes=offset)))
    entry = AuditEntry(summary, severity=severity, session_id=session, timestamp=when, extra={"X": 1.0})
    linked = AuditEntry(
        summary,
        severity=severity,
        session_id=session,
        timestamp=when,
        id=entry.id,
        previous_hash="p" * 64,
        chain_id="c",
        sequence=sequence,
    )
    assert _entry_form(entry, "p" * 64, "c", sequence) == canonical_form(linked.to_row())


def test_the_pumps_fast_copy_is_dataclasses_replace() -> None:
    """``_linked`` sets every field by name; a field added to AuditEntry and not copied there fails here."""
    when = datetime(2026, 12, 4, 18, 0, 0, 7, tzinfo=timezone.utc)
    entry = AuditEntry(
        "s", severity=Severity.HIGH, detector_id="d", session_id="x", timestamp=when, extra={"X": 1.0}
    )
    entry = dataclasses.replace(entry, heartbeat={"Offered": 1})
    linked = _linked(entry, "c", 7, "p" * 64, "h" * 64)
    expected = dataclasses.replace(entry, chain_id="c", sequence=7, previous_hash="p" * 64, hash="h" * 64)
    assert all(getattr(linked, f.name) == getattr(expected, f.name) for f in dataclasses.fields(AuditEntry))
    assert linked == expected and linked.extra is entry.extra
