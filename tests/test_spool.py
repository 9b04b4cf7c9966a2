"""The durable spool: what it keeps, what it sheds, what it dead-letters, and what the next run delivers."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType

import pytest

from sentinel_forwarder import (
    AuditEntry,
    BackgroundForwarder,
    BufferingForwarder,
    ForwarderStatistics,
    SendResult,
    Severity,
    verify_chain,
)
from sentinel_forwarder._model.protocol import RowOutcome
from sentinel_forwarder._spool import admin as _spool_admin
from sentinel_forwarder._spool import store as _spool
from sentinel_forwarder.testing import RecordingForwarder

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fast_spool_retries")]


def entries(n: int, *, prefix: str = "r", severity: Severity = Severity.HIGH) -> list[AuditEntry]:
    return [AuditEntry(f"{prefix}{i}", severity=severity) for i in range(n)]


def balanced(stats: ForwarderStatistics) -> bool:
    """Every row offered (or recovered) is counted exactly once, or still waits in the spool."""
    out = stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed + stats.spooled
    return stats.offered + stats.recovered == out


def down(entries: Sequence[AuditEntry]) -> SendResult:
    return SendResult.failed("retries_exhausted", len(entries), "HTTP 503 (ServiceUnavailable)")


def files(directory: Path, pattern: str = "spool-*.sqlite3") -> list[str]:
    return sorted(p.name for p in directory.glob(pattern))


def spooled_ids(directory: Path) -> list[str]:
    ids = []
    for path in sorted(directory.glob("spool-*.sqlite3")):
        db = sqlite3.connect(path)
        ids += [_spool_admin.row_json(d)["Id"] for (d,) in db.execute("SELECT data FROM rows ORDER BY id")]
        db.close()
    return [str(i) for i in ids]


# -- outages -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["retries_exhausted", "unauthorized", "not_found", "credential_error"])
async def test_failures_that_may_heal_keep_rows_until_delivered_in_age_order(
    tmp_path: Path, reason: str
) -> None:
    sink = RecordingForwarder()
    sink.fail_next(6, reason, "the service said no")  # type: ignore[arg-type]
    rows = entries(200)
    async with BufferingForwarder(sink, spool=tmp_path, max_batch_size=10, max_interval=0.01) as fwd:
        for e in rows:
            fwd.forward(e)
        assert await fwd.flush(60) == 0
    stats = fwd.statistics()
    assert stats.sent == 200 and stats.dropped == {} and stats.spooled == 0
    assert balanced(stats)
    assert [e.id for e in sink.rows] == [e.id for e in rows]  # nothing lost, nothing twice, oldest first
    assert spooled_ids(tmp_path) == []


async def test_without_a_spool_the_same_failures_drop_rows(tmp_path: Path) -> None:
    sink = RecordingForwarder()
    sink.fail_next(1, "unauthorized")
    async with BufferingForwarder(sink, max_batch_size=10, max_interval=0.01) as fwd:
        for e in entries(10):
            fwd.forward(e)
    assert fwd.statistics().dropped == {"unauthorized": 10}


async def test_rows_left_at_close_are_delivered_first_by_the_next_forwarder(tmp_path: Path) -> None:
    old = entries(50, prefix="old")
    async with BufferingForwarder(RecordingForwarder(outcome=down), spool=tmp_path, max_interval=0.01) as f1:
        for e in old:
            f1.forward(e)
    first = f1.statistics()
    assert first.spooled == 50 and first.dropped == {} and first.sent == 0 and balanced(first)
    assert "503" in (first.last_error or "")
    assert spooled_ids(tmp_path) == [e.id for e in old]

    sink = RecordingForwarder()
    new = entries(10, prefix="new")
    async with BufferingForwarder(sink, spool=tmp_path, max_interval=0.01) as f2:
        for e in new:
            f2.forward(e)
        assert await f2.flush(60) == 0
    second = f2.statistics()
    assert second.recovered == 50 and second.sent == 60 and balanced(second)
    assert [e.id for e in sink.rows] == [e.id for e in old + new]
    # read back from disk as it was linked (not linked again), and the new run continued the same chain
    assert dataclasses.replace(sink.rows[0], hash="", chain_id="", sequence=0, previous_hash="") == old[0]
    assert [e.sequence for e in sink.rows] == list(range(1, 61))
    assert len({e.chain_id for e in sink.rows}) == 1
    assert verify_chain(sink.rows, previous_hash="").ok


async def test_closing_does_not_wait_out_a_failing_service(tmp_path: Path) -> None:
    """The rows are safe on disk: closing does not spend drain_timeout retrying a service that fails."""
    sink = RecordingForwarder(outcome=down)
    fwd = BufferingForwarder(sink, spool=tmp_path, max_interval=0.01, drain_timeout=3600)
    async with fwd:
        fwd.forward(AuditEntry("x"))
        await sink.wait_for_rows(1)
    assert fwd.statistics().spooled == 1  # reached at all: a 3600 s drain would time the test out


async def test_a_mixed_result_without_per_row_outcomes_keeps_the_whole_batch(tmp_path: Path) -> None:
    calls: list[int] = []

    def outcome(batch: Sequence[AuditEntry]) -> SendResult:
        calls.append(len(batch))
        if len(calls) == 1:  # one row failed, the sink does not say which
            return SendResult(len(batch) - 1, MappingProxyType({"retries_exhausted": 1}))
        return SendResult(sent=len(batch))

    sink = RecordingForwarder(outcome=outcome)
    async with BufferingForwarder(sink, spool=tmp_path, max_batch_size=5, max_interval=0.01) as fwd:
        for e in entries(5):
            fwd.forward(e)
        assert await fwd.flush(60) == 0
    stats = fwd.statistics()
    assert calls == [5, 5] and stats.sent == 5 and stats.dropped == {} and balanced(stats)


# -- dead letters ----------------------------------------------------------------------------------------


def refuse(summary: str) -> Callable[[Sequence[AuditEntry]], SendResult]:
    def outcome(batch: Sequence[AuditEntry]) -> SendResult:
        fates: list[RowOutcome] = ["rejected" if e.summary == summary else "sent" for e in batch]
        bad = [i for i, e in enumerate(batch) if e.summary == summary]
        if not bad:
            return SendResult(sent=len(batch))
        errors = {i: f"HTTP 400 (InvalidArgument) row {batch[i].id}" for i in bad}
        return SendResult(
            len(batch) - len(bad),
            MappingProxyType({"rejected": len(bad)}),
            "HTTP 400",
            outcomes=tuple(fates),
            row_errors=MappingProxyType(errors),
        )

    return outcome


async def test_refused_rows_become_dead_letters_that_can_be_replayed(tmp_path: Path) -> None:
    rows = entries(99)
    poison = AuditEntry("poison")
    rows.insert(40, poison)
    sink = RecordingForwarder(outcome=refuse("poison"))
    async with BufferingForwarder(sink, spool=tmp_path, max_batch_size=100, max_interval=0.01) as fwd:
        for e in rows:
            fwd.forward(e)
        assert await fwd.flush(60) == 0
        assert fwd.statistics().dead_letters == 1
    stats = fwd.statistics()
    assert stats.sent == 99 and stats.dropped == {"rejected": 1} and balanced(stats)
    [letter] = _spool_admin.dead_letters(tmp_path)
    assert letter.reason == "rejected" and letter.error == f"HTTP 400 (InvalidArgument) row {poison.id}"
    assert _spool_admin.row_json(letter.row)["Id"] == poison.id

    assert _spool_admin.replay(tmp_path) == 1
    assert _spool_admin.dead_letters(tmp_path) == []
    again = RecordingForwarder()
    async with BufferingForwarder(again, spool=tmp_path, max_interval=0.01) as fwd2:
        assert await fwd2.flush(60) == 0
    assert [e.id for e in again.rows] == [poison.id] and fwd2.statistics().recovered == 1


async def test_a_sink_that_raises_dead_letters_its_batch(tmp_path: Path) -> None:
    sink = RecordingForwarder()
    sink.raise_next(ValueError("bug in the sink"))
    async with BufferingForwarder(sink, spool=tmp_path, max_batch_size=3, max_interval=0.01) as fwd:
        for e in entries(3):
            fwd.forward(e)
        assert await fwd.flush(60) == 0
        for e in entries(3, prefix="after"):
            fwd.forward(e)
        assert await fwd.flush(60) == 0
    stats = fwd.statistics()
    assert stats.dropped == {"sink_error": 3} and stats.sent == 3 and stats.dead_letters == 3
    assert [d.error for d in _spool_admin.dead_letters(tmp_path)] == [
        "the sink raised ValueError: bug in the sink"
    ] * 3


# -- a full spool ----------------------------------------------------------------------------------------


async def test_a_full_spool_sheds_the_lowest_severity_oldest_rows_first(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    critical = entries(10, prefix="crit", severity=Severity.CRITICAL)
    flood = entries(2000, prefix="low", severity=Severity.LOW)
    budget = 40_000  # about 200 rows
    fwd = BufferingForwarder(
        RecordingForwarder(outcome=down),
        spool=tmp_path,
        spool_max_bytes=budget,
        max_interval=0.01,
        max_batch_size=10,  # rows being delivered are never shed: keep them few
        max_request_rows=10,
        meter_provider=provider,
    )
    async with fwd:
        for i, e in enumerate(flood):
            fwd.forward(e)
            if i % 200 == 100:
                fwd.forward(critical[i // 200])
    stats = fwd.statistics()
    assert balanced(stats) and stats.spooled_bytes <= budget
    assert stats.dropped == {"shed": 2010 - stats.spooled}
    left = spooled_ids(tmp_path)
    assert {e.id for e in critical} <= set(left)  # every Critical row kept
    lows = [i for i in left if i not in {e.id for e in critical}]
    assert lows == [e.id for e in flood][-len(lows) :]  # the Low rows kept are the newest

    shed = {
        tuple(sorted(p.attributes.items())): p.value
        for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        if m.name == "audit.forward.dropped"
        for p in m.data.data_points
    }
    assert shed == {
        (("forwarder.name", "default"), ("reason", "shed"), ("severity", "Low")): 2010 - stats.spooled
    }

    sink = RecordingForwarder()
    async with BufferingForwarder(sink, spool=tmp_path, max_interval=0.01) as fwd2:
        assert await fwd2.flush(60) == 0
    assert {e.id for e in critical} <= {e.id for e in sink.rows}


async def test_a_new_row_never_displaces_one_of_higher_severity(tmp_path: Path) -> None:
    high = entries(100, severity=Severity.HIGH)
    fwd = BufferingForwarder(
        RecordingForwarder(outcome=down),
        spool=tmp_path,
        spool_max_bytes=10_000,
        max_interval=0.01,
        max_batch_size=10,  # rows being delivered are never shed: keep them few
        max_request_rows=10,
    )
    async with fwd:
        for e in high:
            fwd.forward(e)
        assert await fwd.forward_durable(high[0]) is True  # committed (a row may be offered twice)
        low = AuditEntry("late and unimportant", severity=Severity.LOW)
        assert await fwd.forward_durable(low) is False  # shed on arrival
    assert low.id not in spooled_ids(tmp_path)
    assert fwd.statistics().dropped.get("shed", 0) >= 1


async def test_rows_older_than_spool_max_age_expire(tmp_path: Path) -> None:
    async with BufferingForwarder(RecordingForwarder(outcome=down), spool=tmp_path, max_interval=0.01) as f1:
        for e in entries(7):
            f1.forward(e)
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, spool=tmp_path, spool_max_age=1e-9) as f2:
        pass
    stats = f2.statistics()
    assert stats.recovered == 7 and stats.dropped == {"expired": 7} and sink.rows == [] and balanced(stats)


# -- durable forward -------------------------------------------------------------------------------------


async def test_forward_durable_returns_once_the_row_is_on_disk(tmp_path: Path) -> None:
    sink = RecordingForwarder()
    sink.hold()  # nothing is delivered: the row can only be in the spool
    async with BufferingForwarder(sink, spool=tmp_path, drain_timeout=0) as fwd:
        entry = AuditEntry("must not be lost", severity=Severity.CRITICAL)
        assert await fwd.forward_durable(entry) is True
        assert entry.id in spooled_ids(tmp_path)
    assert fwd.statistics().spooled == 1


async def test_forward_durable_needs_a_spool() -> None:
    async with BufferingForwarder(RecordingForwarder()) as fwd:
        with pytest.raises(RuntimeError, match="needs a spool"):
            await fwd.forward_durable(AuditEntry("x"))


def test_background_forward_durable_blocks_until_committed(tmp_path: Path) -> None:
    sink = RecordingForwarder(outcome=down)
    bg = BackgroundForwarder(BufferingForwarder(sink, spool=tmp_path, max_interval=0.01)).start()
    try:
        entry = AuditEntry("durable from a thread")
        assert bg.forward_durable(entry, timeout=30) is True
        assert entry.id in spooled_ids(tmp_path)
    finally:
        stats = bg.close()
    assert stats.spooled == 1 and balanced(stats)


# -- the directory ---------------------------------------------------------------------------------------


async def test_an_unusable_spool_directory_fails_at_startup_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    fwd = BufferingForwarder(RecordingForwarder(), spool=blocker / "spool")
    with pytest.raises(_spool.SpoolError, match="a-file"):
        async with fwd:
            pass


async def test_a_corrupt_spool_file_is_moved_aside_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spool-1-deadbeef.sqlite3").write_bytes(b"this is not a database" * 100)
    sink = RecordingForwarder()
    with caplog.at_level(logging.ERROR, logger="sentinel_forwarder.spool"):
        async with BufferingForwarder(sink, spool=tmp_path, max_interval=0.01) as fwd:
            fwd.forward(AuditEntry("still works"))
            assert await fwd.flush(60) == 0
    assert len(sink.rows) == 1
    assert files(tmp_path, "spool-1-deadbeef.sqlite3.*.corrupt")
    assert any("cannot be read" in r.getMessage() for r in caplog.records)


async def test_live_forwarders_share_a_directory_and_a_later_one_adopts_their_files(tmp_path: Path) -> None:
    f1 = BufferingForwarder(RecordingForwarder(outcome=down), spool=tmp_path, max_interval=0.01)
    f2 = BufferingForwarder(RecordingForwarder(outcome=down), spool=tmp_path, max_interval=0.01)
    async with f1, f2:
        for e in entries(5, prefix="a"):
            assert await f1.forward_durable(e)
        for e in entries(4, prefix="b"):
            assert await f2.forward_durable(e)
        assert f1.statistics().recovered == f2.statistics().recovered == 0  # neither took the other's
        assert len(files(tmp_path)) == 2
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, spool=tmp_path, max_interval=0.01) as f3:
        assert await f3.flush(60) == 0
    assert f3.statistics().recovered == 9 and len(sink.rows) == 9
    assert files(tmp_path) == [f3._run.pump.spool.path.name]  # type: ignore[union-attr]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_the_file_of_a_killed_process_is_adopted(tmp_path: Path) -> None:
    """A real process commits rows with forward_durable, then is killed with SIGKILL."""
    import subprocess

    script = f"""
import os, signal
from sentinel_forwarder import AuditEntry, BackgroundForwarder, BufferingForwarder, SendResult
from sentinel_forwarder.testing import RecordingForwarder
down = lambda rows: SendResult.failed("retries_exhausted", len(rows), "down")
sink = RecordingForwarder(outcome=down)
bg = BackgroundForwarder(BufferingForwarder(sink, spool={str(tmp_path)!r})).start()
for i in range(25):
    assert bg.forward_durable(AuditEntry(f"k{{i}}"), timeout=30)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], timeout=120, check=False)
    assert proc.returncode == -9
    sink = RecordingForwarder()
    bg = BackgroundForwarder(BufferingForwarder(sink, spool=tmp_path, max_interval=0.01)).start()
    assert bg.flush(60) == 0
    stats = bg.close()
    assert [e.summary for e in sink.rows] == [f"k{i}" for i in range(25)]
    assert stats.recovered == 25 and stats.sent == 25


async def test_a_failing_spool_operation_does_not_stop_forwarding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = _spool.Spool.read
    calls: list[int] = []

    def flaky(self: _spool.Spool, after: int, limit: int) -> list[tuple[int, bytes]]:
        calls.append(after)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, after, limit)

    monkeypatch.setattr(_spool.Spool, "read", flaky)
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, spool=tmp_path, max_interval=0.01) as fwd:
        for e in entries(10):
            fwd.forward(e)
        assert await fwd.flush(60) == 0
    assert len(sink.rows) == 10 and len(calls) >= 2
    assert "the spool pump failed; it goes on" in caplog.text and "disk I/O error" in caplog.text


async def test_forward_durable_is_true_for_a_row_the_transform_filters_and_false_if_it_fails(
    tmp_path: Path,
) -> None:
    def transform(entry: AuditEntry) -> AuditEntry | None:
        if entry.summary == "boom":
            raise ValueError("boom")
        return None if entry.summary == "skip" else entry

    async with BufferingForwarder(RecordingForwarder(), spool=tmp_path, transform=transform) as fwd:
        assert await fwd.forward_durable(AuditEntry("skip")) is True  # filtered on purpose: settled
        assert await fwd.forward_durable(AuditEntry("boom")) is False  # dropped: transform_error
        assert await fwd.forward_durable(AuditEntry("kept")) is True
    assert fwd.statistics().dropped == {"transform_error": 1}
