"""The forwarder's own evidence: the chain it links in the pump, and its heartbeat rows (asyncio and trio)."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from azure_helpers import sink_for

from sentinel_forwarder import (
    AuditEntry,
    BufferingForwarder,
    ForwarderSettings,
    HashChain,
    SendResult,
    Severity,
    record_hash,
    verify_chain,
)
from sentinel_forwarder._evidence.heartbeat import HEARTBEAT_DETECTOR, LINK_SLICE
from sentinel_forwarder.emulator import Emulator
from sentinel_forwarder.testing import RecordingForwarder

pytestmark = pytest.mark.anyio

KEY = "correct horse battery staple"


def redact(entry: AuditEntry) -> AuditEntry | None:
    if entry.detector_id == "noise":
        return None  # filtered by the transform
    return dataclasses.replace(entry, summary=entry.summary.replace("PIN 1234", "PIN ****"))


def audit_rows(sink: RecordingForwarder) -> list[AuditEntry]:
    return [e for e in sink.rows if e.heartbeat is None]


def beats(sink: RecordingForwarder) -> list[Mapping[str, Any]]:
    return [e.heartbeat for e in sink.rows if e.heartbeat is not None]


async def test_the_chain_covers_exactly_what_is_sent_after_filter_and_transform() -> None:
    sink = RecordingForwarder()
    offered = [
        AuditEntry("low", severity=Severity.LOW),  # below min_severity
        AuditEntry("user typed PIN 1234", severity=Severity.HIGH),  # redacted
        AuditEntry("chatter", severity=Severity.HIGH, detector_id="noise"),  # dropped by the transform
        AuditEntry("blocked", severity=Severity.MEDIUM),
    ]
    async with BufferingForwarder(sink, min_severity="Medium", transform=redact, max_interval=0.01) as fwd:
        for entry in offered:
            fwd.forward(entry)
    sent = sink.rows
    assert [e.summary for e in sent] == ["user typed PIN ****", "blocked"]
    assert [e.sequence for e in sent] == [1, 2] and sent[1].previous_hash == sent[0].hash
    assert fwd._run.evidence.chain is not None and sent[0].chain_id == fwd._run.evidence.chain.chain_id
    assert verify_chain(sent, previous_hash="").ok  # no gap where rows were filtered
    # The hash covers the redacted text: the original cannot be confirmed (or brute-forced) from it.
    original = dataclasses.replace(sent[0], summary="user typed PIN 1234")
    assert [b.kind for b in verify_chain([original, sent[1]]).breaks] == ["hash"]


async def test_each_row_carries_its_place_and_the_verifier_reorders_them() -> None:
    sink = RecordingForwarder()
    fixed = {"max_batch_size": 10, "max_request_rows": 10, "max_batches_in_flight": 4}
    async with BufferingForwarder(sink, max_interval=0.01, **fixed) as fwd:
        for i in range(100):
            fwd.forward(AuditEntry(f"e{i}"))
    rows = [e.to_row() for e in sink.rows]
    assert sorted(r["Sequence"] for r in rows) == list(range(1, 101))
    rows.reverse()  # landed order is not chain order
    report = verify_chain(rows, previous_hash="")
    assert report.ok and report.rows == 100 and [(c.first, c.last) for c in report.chains] == [(1, 100)]


async def test_linking_a_big_delivery_lets_the_applications_tasks_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1,000-row delivery is linked in slices with a checkpoint between them, so a task of the application
    runs while it is linked (in one go it would hold the loop ~4 ms)."""
    ticks = 0
    calls: list[tuple[int, int]] = []  # (rows linked, ticks so far) per call
    link_all = HashChain.link_all

    def recorded(self: HashChain, entries: Any) -> list[AuditEntry]:
        linked = link_all(self, entries)
        calls.append((len(linked), ticks))
        return linked

    monkeypatch.setattr(HashChain, "link_all", recorded)
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10**7):  # bounded; stops when the delivery is done
            if done.is_set():
                return
            ticks += 1
            await anyio.lowlevel.checkpoint()

    sink = RecordingForwarder()
    fixed = {"max_batch_size": 1000, "max_request_rows": 1000}
    async with anyio.create_task_group() as tg, BufferingForwarder(sink, max_interval=60, **fixed) as fwd:
        tg.start_soon(ticker)
        for i in range(1000):
            fwd.forward(AuditEntry(f"e{i}"))
        assert await fwd.flush(30) == 0
        done.set()
    full, rest = divmod(1000, LINK_SLICE)
    assert [n for n, _ in calls] == [LINK_SLICE] * full + [rest] * (rest > 0) and len(calls) >= 4
    # The ticker ran between the first slice and the last (trio may run either task first within a batch,
    # so the bound is one less than the checkpoints in between).
    assert calls[-1][1] - calls[0][1] >= len(calls) - 2
    assert verify_chain(sink.rows, previous_hash="").ok


async def test_a_spool_commit_aborted_while_linking_keeps_every_row_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The drain deadline passes while a commit links its rows: the commit completes (rows spooled, counted),
    it does not vanish between the buffer and the disk; and the linking completes in one pass, so the rows
    carry sequences 1..n with no gap (a link cut short and done again would skip the numbers of the rows
    linked before the cut, and the verifier would report rows missing that never existed)."""
    link_all = HashChain.link_all
    fwd: BufferingForwarder | None = None

    def aborting(self: HashChain, entries: Any) -> list[AuditEntry]:
        assert fwd is not None
        fwd._run.scopes.abort()  # what the drain deadline does
        return link_all(self, entries)

    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, spool=tmp_path, max_interval=60, max_batch_size=1000)
    async with fwd:
        monkeypatch.setattr(HashChain, "link_all", aborting)
        for i in range(1000):
            fwd.forward(AuditEntry(f"e{i}"))
        with anyio.fail_after(30):
            await fwd._run._drained.wait()  # type: ignore[union-attr]  # the aborted pump stopped
    stats = fwd.statistics()
    assert stats.offered == 1000 and stats.spooled + stats.sent == 1000, stats
    counted = stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed + stats.spooled
    assert stats.offered == counted
    monkeypatch.setattr(HashChain, "link_all", link_all)
    later = RecordingForwarder()  # the next run delivers what the first left in the spool
    async with BufferingForwarder(later, spool=tmp_path, max_interval=0.01) as again:
        assert await again.flush(60) == 0
    delivered = sink.rows + later.rows
    assert sorted(e.sequence for e in delivered) == list(range(1, 1001))
    assert verify_chain(delivered, previous_hash="").ok


async def test_chain_off_leaves_rows_unlinked() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, chain=False, max_interval=0.01) as fwd:
        fwd.forward(AuditEntry("x"))
    assert (sink.rows[0].hash, sink.rows[0].chain_id, sink.rows[0].sequence) == ("", "", 0)


async def test_a_keyed_chain_verifies_only_with_its_key_and_never_shows_it() -> None:
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, chain_key=KEY, max_interval=0.01, heartbeat_interval=60)
    async with fwd:
        for i in range(5):
            fwd.forward(AuditEntry(f"e{i}"))
    rows = audit_rows(sink)
    assert verify_chain(rows, key=KEY).ok
    unkeyed = verify_chain(rows)
    assert [b.kind for b in unkeyed.breaks] == ["hash"] * 5
    assert not verify_chain(rows, key="another key").ok
    # Whoever can write rows but lacks the key cannot forge one that verifies: recomputing the hash
    # without the key does not help.
    forged = dataclasses.replace(rows[2], summary="nothing happened")
    forged = dataclasses.replace(forged, hash=record_hash(forged.to_row()))
    report = verify_chain([*rows[:2], forged, *rows[3:]], key=KEY)
    assert [(b.kind, b.sequence) for b in report.breaks] == [("hash", 3), ("link", 4)]
    evidence = fwd._run.evidence
    shown = " ".join(
        [repr(fwd), repr(evidence), repr(evidence.chain), str(fwd.statistics()), *map(str, rows)]
    )
    settings = ForwarderSettings.resolve({"SENTINEL_FORWARDER_CHAIN_KEY": KEY}, require_endpoint=False)
    assert settings.chain_key == KEY
    shown += repr(settings)
    assert KEY not in shown and "battery" not in shown


def test_a_malformed_chain_key_is_not_shown_in_the_error() -> None:
    from sentinel_forwarder import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        ForwarderSettings.resolve({"SENTINEL_FORWARDER_CHAIN_KEY": "   "}, require_endpoint=False)
    assert "SENTINEL_FORWARDER_CHAIN_KEY" in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_starts_a_new_chain() -> None:
    fwd = BufferingForwarder(RecordingForwarder())
    assert fwd._run.evidence.chain is not None
    parent_chain = fwd._run.evidence.chain.chain_id
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its chain, then leave without running the parent's clean-ups
        try:
            chain = fwd._run.evidence.chain
            os.write(
                write, f"{chain.chain_id if chain else ''} {chain.head().sequence if chain else -1}".encode()
            )
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_chain, child_sequence = pipe.read().split()
    os.waitpid(pid, 0)
    assert child_chain and child_chain != parent_chain and child_sequence == "0"
    assert fwd._run.evidence.chain.chain_id == parent_chain


# -- heartbeats ------------------------------------------------------------------------------------------


async def wait_for_beats(sink: RecordingForwarder, n: int) -> None:
    with anyio.fail_after(30):
        while len(beats(sink)) < n:
            await sink.wait_for_rows(sink._rows_seen + 1)


async def test_heartbeats_report_true_deltas_and_are_not_counted() -> None:
    sink = RecordingForwarder()
    fwd = BufferingForwarder(
        sink,
        capacity=3,
        max_interval=0.01,
        heartbeat_interval=0.05,
        application="chat-api",
        min_severity="Low",
    )
    async with fwd:
        sink.hold()
        for i in range(5):  # 3 taken, 2 dropped for a full buffer
            fwd.forward(AuditEntry(f"a{i}", severity=Severity.HIGH))
        fwd.forward(AuditEntry("quiet"))  # filtered
        sink.release()
        await wait_for_beats(sink, 1)
        sink.fail_next(1, "rejected")  # the next send fails: a row or a heartbeat, its counts are kept
        for i in range(3):
            fwd.forward(AuditEntry(f"b{i}", severity=Severity.HIGH))
        await wait_for_beats(sink, 3)
    stats = fwd.statistics()
    landed = beats(sink)
    assert landed[-1]["final"] is True and not any(b["final"] for b in landed[:-1])
    assert {b["application"] for b in landed} == {"chat-api"}
    assert len({b["instance"] for b in landed}) == 1
    # heartbeats are not in the statistics: offered/sent count audit rows only
    assert stats.offered == 9 and stats.sent == len(audit_rows(sink))
    # the deltas that landed add up to the totals: none lost, none counted twice
    for name in ("offered", "sent", "filtered", "unconfirmed"):
        assert sum(b[name] for b in landed) == getattr(stats, name), name
    dropped: dict[str, int] = {}
    for b in landed:
        for reason, n in b["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    assert dropped == dict(stats.dropped) and dropped["queue_full"] == 2
    assert landed[-1]["sequence"] == stats.sent + sum(
        n for r, n in stats.dropped.items() if r not in ("queue_full", "closed")
    )
    assert landed[-1]["chain"] == audit_rows(sink)[0].chain_id
    assert all(e.detector_id == HEARTBEAT_DETECTOR for e in sink.rows if e.heartbeat is not None)


async def test_a_heartbeat_is_sent_when_the_buffer_is_full() -> None:
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, capacity=2, max_interval=3600, max_batch_size=100, heartbeat_interval=0.05)
    async with fwd:
        for i in range(10):
            fwd.forward(AuditEntry(f"x{i}"))
        assert fwd.queue_depth() == 2  # full: rows are dropped, the heartbeat never enters the buffer
        await wait_for_beats(sink, 1)
        assert beats(sink)[0]["dropped"] == {"queue_full": 8} and fwd.queue_depth() == 2


async def test_a_failed_heartbeat_hands_its_counts_to_the_next() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_interval=0.01, heartbeat_interval=0.05) as fwd:
        fwd.forward(AuditEntry("one"))
        await sink.wait_for_rows(1)
        sink.raise_next(RuntimeError("sink broke"))  # the next send (a heartbeat) raises
        await sink.wait_for_rows(2)
        await wait_for_beats(sink, 1)
    assert sum(b["offered"] for b in beats(sink)) == 1 == beats(sink)[0]["offered"]


async def test_a_heartbeat_the_service_refused_hands_its_counts_to_the_next() -> None:
    """A heartbeat answered with a failure (not raised) is not delivered: its deltas go to the next."""
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_interval=0.01, heartbeat_interval=0.05) as fwd:
        fwd.forward(AuditEntry("one"))
        await sink.wait_for_rows(1)
        sink.fail_next(1, "retries_exhausted")  # the next send (a heartbeat) is answered: not delivered
        await sink.wait_for_rows(2)
        await wait_for_beats(sink, 1)
    assert sum(b["offered"] for b in beats(sink)) == 1 == beats(sink)[0]["offered"]


async def test_a_heartbeat_the_sink_never_answers_does_not_outlast_the_drain_deadline() -> None:
    """Heartbeats go through the run's work scope: at the drain deadline the abort ends a hanging one, so
    closing returns (the caller's cancellation alone would not reach it)."""
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, max_interval=0.01, heartbeat_interval=0.05, drain_timeout=0.5)
    async with fwd:
        fwd.forward(AuditEntry("one"))
        await sink.wait_for_rows(1)
        sink.hold()  # from now on the sink never answers: the next heartbeat hangs
        with anyio.fail_after(10):
            while sink.started < 2:  # noqa: ASYNC110 (bounded by fail_after)
                await anyio.sleep(0.01)
        with anyio.fail_after(10):  # closing returns at the drain deadline, heartbeat or not
            await fwd.aclose()
    assert [e.summary for e in sink.rows] == ["one"]


async def test_heartbeats_off() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_interval=0.01, heartbeat_interval=0) as fwd:
        fwd.forward(AuditEntry("x"))
    assert beats(sink) == [] and len(sink.rows) == 1


@pytest.mark.heartbeats
def test_add_sentinel_forwarder_sends_a_heartbeat_every_minute_by_default() -> None:
    from sentinel_forwarder import add_sentinel_forwarder

    handle = add_sentinel_forwarder(forwarder=RecordingForwarder(), environ={})
    try:
        assert handle.forwarder._run.evidence.interval == 60.0
        assert handle.forwarder._run.evidence.application == (os.path.basename(sys.argv[0]) or "python")
    finally:
        handle.close()
    off = add_sentinel_forwarder(
        forwarder=RecordingForwarder(), environ={"SENTINEL_FORWARDER_HEARTBEAT_INTERVAL": "0"}
    )
    try:
        assert off.forwarder._run.evidence.interval is None
    finally:
        off.close()


# -- through the real SDK to the emulator ----------------------------------------------------------------


async def test_rows_and_heartbeats_land_and_verify_through_the_sdk(emu: Emulator) -> None:
    # An hour between heartbeats: only the one sent at close lands, after the drain.
    fwd = BufferingForwarder(
        sink_for(emu), transform=redact, max_interval=0.01, heartbeat_interval=3600, chain_key=KEY
    )
    async with fwd:
        for i in range(30):
            noise = "noise" if i % 3 else ""
            fwd.forward(AuditEntry(f"PIN 1234 #{i}", severity=Severity.HIGH, detector_id=noise))
    landed = emu.rows(emu.table)
    beat_rows = [r for r in landed if r.get("Heartbeat")]
    audit = [r for r in landed if not r.get("Heartbeat")]
    assert len(audit) == 10 and all("****" in r["Summary"] for r in audit)
    assert len(beat_rows) == 1 and beat_rows[0]["DetectorId"] == HEARTBEAT_DETECTOR
    beat = beat_rows[0]["Heartbeat"]
    assert beat["final"] is True and (beat["offered"], beat["sent"], beat["filtered"]) == (30, 10, 20)
    report = verify_chain(landed, key=KEY, previous_hash="")
    assert report.ok and report.rows == 10 and report.chains[0].reported_head == 10
    # the last audit row removed from the table: the heartbeat's chain head shows it
    report = verify_chain([r for r in landed if r.get("Sequence") != 10], key=KEY)
    assert [(b.kind, b.sequence) for b in report.breaks] == [("gap", 10)]


async def test_a_row_the_chain_cannot_encode_as_utf8_costs_that_row_alone(emu: Emulator) -> None:
    """A lone surrogate in a summary (a crafted row) is hashed, not raised on: linking fails no batch.
    The service's wire refuses that row alone (``invalid_row``); the other rows land and verify, and the
    verifier reports the gap the refused row left."""
    sink = sink_for(emu)
    async with BufferingForwarder(sink, max_batch_size=10, max_interval=0.01) as fwd:
        for i in range(10):
            summary = "crafted \ud800" if i == 5 else f"ok {i}"
            fwd.forward(AuditEntry(summary, severity=Severity.HIGH))
    stats = fwd.statistics()
    assert stats.sent == 9 and dict(stats.dropped) == {"invalid_row": 1}
    landed = emu.rows(emu.table)
    assert len(landed) == 9
    report = verify_chain(landed)
    assert [b.kind for b in report.breaks] == ["gap"]


class SlowHeartbeatSink(RecordingForwarder):
    """The first periodic heartbeat hangs at this sink until ``let_go`` is set (a slow service); the sink
    notes whether that send was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.beat_started = anyio.Event()
        self.let_go = anyio.Event()
        self.beat_cancelled = False

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        if entries[0].heartbeat is not None and not self.beat_started.is_set():
            self.beat_started.set()
            try:
                await self.let_go.wait()
            except anyio.get_cancelled_exc_class():
                self.beat_cancelled = True
                raise
        return await super().send_batch(entries)


async def test_cancelling_the_forwarders_task_does_not_cut_a_heartbeat_in_flight_short() -> None:
    """The application's scope around ``run()`` is cancelled while a heartbeat is with the sink: the
    heartbeat is shielded like a delivery (the run's work scope), so it completes and lands, and the final
    one follows."""
    sink = SlowHeartbeatSink()
    fwd = BufferingForwarder(sink, heartbeat_interval=0.01, drain_timeout=60)
    around = anyio.CancelScope()

    async def serve(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with around:
            await fwd.run(task_status=task_status)

    async with anyio.create_task_group() as tg:
        await tg.start(serve)
        with anyio.fail_after(30):
            await sink.beat_started.wait()
        around.cancel()
        await anyio.wait_all_tasks_blocked()  # the cancellation has reached every task it can reach
        assert not sink.beat_cancelled and not sink.closed  # the heartbeat is still with the sink
        sink.let_go.set()
    assert not sink.beat_cancelled
    assert [b["final"] for b in beats(sink)] == [False, True]
