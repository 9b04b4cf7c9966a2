"""AuditEntry row mapping, Severity, and the hash chain with its verifier."""

from __future__ import annotations

import dataclasses
import itertools
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from sentinel_forwarder import AUDIT_TABLE, AuditEntry, HashChain, Severity, record_hash, verify_chain


def test_row_has_exactly_the_table_columns() -> None:
    entry = AuditEntry(
        "prompt injection blocked",
        severity="critical",
        detector_id="prompt-injection",
        session_id="s-1",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone(timedelta(hours=2))),
    )
    row = entry.to_row()
    # every column of the table; Heartbeat only on heartbeat rows
    assert list(row) == [c.name for c in AUDIT_TABLE.columns if c.name != "Heartbeat"]
    beat = dataclasses.replace(entry, heartbeat={"sent": 1}).to_row()
    assert list(beat) == [c.name for c in AUDIT_TABLE.columns]
    assert row["TimeGenerated"] == "2026-01-02T01:04:05.006000Z"
    assert row["Severity"] == "Critical"
    assert entry.severity is Severity.CRITICAL


def test_extra_columns_are_top_level_and_checked() -> None:
    row = AuditEntry("x", extra={"TenantName": "contoso", "Score": 0.5}).to_row()
    assert row["TenantName"] == "contoso" and row["Score"] == 0.5
    with pytest.raises(ValueError, match="clashes"):
        AuditEntry("x", extra={"Severity": "High"})
    with pytest.raises(ValueError, match="reserved"):
        AuditEntry("x", extra={"TenantId": "t"})
    with pytest.raises(ValueError, match="start with a letter"):
        AuditEntry("x", extra={"1bad": 1})


def test_entry_is_immutable_and_validated() -> None:
    entry = AuditEntry("x", extra={"A": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.summary = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.extra["A"] = 2  # type: ignore[index]
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditEntry("x", timestamp=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown severity"):
        AuditEntry("x", severity="dire")  # type: ignore[arg-type]


def test_severity_order_and_labels() -> None:
    assert [s.label for s in sorted(Severity)] == ["None", "Low", "Medium", "High", "Critical"]
    assert Severity.parse("HIGH") > Severity.parse(2)


def chain_of(n: int) -> list[AuditEntry]:
    chain = HashChain()
    return [chain.link(AuditEntry(f"event {i}", session_id="s")) for i in range(n)]


def test_chain_links_and_verifies() -> None:
    entries = chain_of(5)
    assert entries[0].previous_hash == ""
    for prev, cur in itertools.pairwise(entries):
        assert cur.previous_hash == prev.hash
    assert [e.sequence for e in entries] == [1, 2, 3, 4, 5]
    assert len({e.hash for e in entries}) == 5 and len({e.chain_id for e in entries}) == 1
    assert verify_chain(entries, previous_hash="").ok
    # landed rows (mappings) verify the same way
    assert not verify_chain([e.to_row() for e in entries])


def test_hash_covers_previous_hash() -> None:
    entry = chain_of(1)[0]
    assert record_hash({**entry.to_row(), "PreviousHash": "forged"}) != entry.hash


def test_verifier_finds_altered_row() -> None:
    rows = [e.to_row() for e in chain_of(5)]
    rows[2]["Summary"] = "nothing to see"
    brk = verify_chain(rows).first
    assert brk is not None and (brk.index, brk.kind, brk.id) == (2, "hash", rows[2]["Id"])
    assert "content does not match" in str(brk)


def test_verifier_finds_missing_row() -> None:
    rows = [e.to_row() for e in chain_of(5)]
    del rows[3]
    brk = verify_chain(rows).first
    assert brk is not None and (brk.index, brk.kind, brk.sequence) == (3, "gap", 4)


def test_verifier_checks_the_start_when_asked() -> None:
    entries = chain_of(3)
    assert verify_chain(entries[1:]).ok
    brk = verify_chain(entries[1:], previous_hash="").first
    assert brk is not None and (brk.index, brk.kind, brk.expected) == (0, "gap", "Sequence 1")


def test_chain_is_thread_safe_and_resumable() -> None:
    chain = HashChain()
    out: list[AuditEntry] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            # A large row: hashing it releases the GIL, so without the chain's lock threads interleave
            # between reading the head and moving it, and the chain forks.
            e = chain.link(AuditEntry("t" * 8192))
            with lock:
                out.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    # every link points at a distinct predecessor: the chain is one line, no forks
    prevs = [e.previous_hash for e in out]
    assert len(set(prevs)) == len(prevs) == 800
    resumed = HashChain(chain.last_hash).link(AuditEntry("next"))
    assert resumed.previous_hash == chain.last_hash
