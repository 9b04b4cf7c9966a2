"""The spool with the real SDK and the emulator: outages and refused rows, end to end."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from azure_helpers import TYPED_RULE_ID, landed_ids, rows, sink_for

from sentinel_forwarder import MAX_REQUEST_BYTES, AuditEntry, BufferingForwarder
from sentinel_forwarder._model.wire import Codec
from sentinel_forwarder._spool import admin as _spool_admin
from sentinel_forwarder.emulator import Emulator

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fast_spool_retries")]


@pytest.mark.parametrize("status", [403, 503])
async def test_an_outage_delivers_every_row_once_when_it_ends(
    emu: Emulator, tmp_path: Path, status: int
) -> None:
    """403 (a role assignment not yet applied) or 503 past the retry budget: nothing is dropped."""
    emu.faults.fail_next(40, status)
    entries = rows(1000)
    sink = sink_for(emu, retry_timeout=1.0, max_retries=2)
    async with BufferingForwarder(sink, spool=tmp_path, max_batch_size=100, max_interval=0.01) as fwd:
        for e in entries:
            fwd.forward(e)
        assert await fwd.flush(120) == 0
    stats = fwd.statistics()
    assert stats.sent == 1000 and stats.dropped == {} and stats.spooled == 0
    # Every row once (a 403 or a 503 means nothing landed); the order of starts is checked in test_spool.py,
    # concurrent requests may land in any order.
    assert sorted(landed_ids(emu)) == sorted(e.id for e in entries)


async def test_one_malformed_row_among_a_thousand_becomes_a_dead_letter(
    typed: Emulator, tmp_path: Path
) -> None:
    typed.reset()
    entries = [AuditEntry(f"r{i}", extra={"Score": i}) for i in range(999)]
    poison = AuditEntry("malformed", extra={"Score": "not a number"})
    entries.insert(500, poison)
    sink = sink_for(typed, rule_id=TYPED_RULE_ID)
    async with BufferingForwarder(sink, spool=tmp_path, max_batch_size=1000, max_interval=0.01) as fwd:
        for e in entries:
            fwd.forward(e)
        assert await fwd.flush(120) == 0
    stats = fwd.statistics()
    assert stats.sent == 999 and stats.dropped == {"rejected": 1} and stats.dead_letters == 1
    assert sorted(landed_ids(typed)) == sorted(e.id for e in entries if e is not poison)
    assert typed.stats().requests <= 1 + 2 * math.ceil(math.log2(1000))
    [letter] = _spool_admin.dead_letters(tmp_path)
    assert _spool_admin.row_json(letter.row)["Id"] == poison.id
    assert letter.error.startswith("HTTP 400") and "Score" in letter.error  # the service's own answer


async def test_a_long_403_outage_while_100000_rows_are_forwarded(emu: Emulator, tmp_path: Path) -> None:
    """The service answers 403 (a role not yet applied) until every row has been offered; then it heals.

    Memory stays flat: rows wait on disk, not in the buffer or the spool's cache. Then every row is
    delivered once, oldest first.
    """
    emu.faults.fail_next(10**9, 403)
    entries = rows(100_000)
    sink = sink_for(emu)
    fwd = BufferingForwarder(sink, spool=tmp_path, max_interval=0.01, max_request_rows=2_500)
    async with fwd:
        pump = fwd._run.pump
        assert pump is not None
        high_water = 0
        for i, e in enumerate(entries):
            while fwd.queue_depth() >= 10_000:  # a producer that must not drop waits  # noqa: ASYNC110
                await anyio.sleep(0.001)
            assert fwd.forward(e)
            if i % 1000 == 0:
                await anyio.lowlevel.checkpoint()
                high_water = max(high_water, len(pump._cache) + fwd.queue_depth())
        assert await fwd.flush(0.5) > 0  # still failing: nothing is lost, it waits
        with anyio.fail_after(60):  # a group commit may still be on its way to the disk
            while fwd.statistics().spooled + fwd.queue_depth() < 100_000:
                await fwd.flush(0.5)
        stats = fwd.statistics()
        assert stats.sent == 0 and stats.dropped == {} and stats.spooled + fwd.queue_depth() == 100_000
        assert high_water <= 10_000 + 10_000  # the buffer's capacity plus the cache's bound: flat
        emu.faults.reset()
        assert await fwd.flush(300) == 0
    stats = fwd.statistics()
    assert stats.sent == 100_000 and stats.dropped == {} and stats.spooled == 0
    landed = landed_ids(emu)
    assert sorted(landed) == sorted(e.id for e in entries)  # every row, once
    # Oldest first: batches start in age order, up to 4 deliveries of 2,500 rows at once, and they may land in
    # any order. When the service heals, some of the requests then in flight land while older ones got a 403 a
    # moment before and are sent again after them; the next 4 may land in any order too. So a row lands within
    # two rounds of requests of its place in age order (newest first would put rows ~100,000 away).
    age = {e.id: i for i, e in enumerate(entries)}
    assert max(abs(age[row_id] - i) for i, row_id in enumerate(landed)) <= 2 * 4 * 2_500


async def test_rows_are_serialised_once_for_the_spool_and_the_wire(
    emu: Emulator, tmp_path: Path, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink posts the JSON the spool stored (from memory, and from disk after a restart)."""
    encoded: list[str] = []
    encoder = type(codec.json)
    value = encoder.value

    def counted(self: object, entry: AuditEntry) -> object:
        encoded.append(entry.id)
        return value(self, entry)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "value", counted)
    first, second = rows(300, prefix="a"), rows(200, prefix="b")
    async with BufferingForwarder(sink_for(emu), spool=tmp_path, max_interval=0.01) as fwd:
        for e in first:
            fwd.forward(e)
        assert await fwd.flush(60) == 0
    emu.faults.fail_next(1_000, 503)  # the second run leaves its rows in the spool
    async with BufferingForwarder(
        sink_for(emu, retry_timeout=0.5, max_retries=0), spool=tmp_path, drain_timeout=1
    ) as fwd:
        for e in second:
            fwd.forward(e)
    emu.faults.reset()
    async with BufferingForwarder(sink_for(emu), spool=tmp_path, max_interval=0.01) as fwd:
        assert await fwd.flush(60) == 0  # the third sends them from disk
    assert fwd.statistics().sent == 200
    assert sorted(landed_ids(emu)) == sorted(e.id for e in first + second)
    assert sorted(encoded) == sorted(e.id for e in first + second)  # each once: at the commit


async def test_a_row_too_large_for_any_request_is_the_one_dead_letter_of_its_batch(
    emu: Emulator, tmp_path: Path
) -> None:
    """The sink refuses one row of a batch before posting (too large for any request) and delivers the rest:
    it says which row fared how, so the spool moves that row alone to the dead letters and deletes the
    rows that landed (not: every row deleted as if all had the same fate)."""
    good = rows(3)
    huge = AuditEntry("y" * (MAX_REQUEST_BYTES + 10))
    async with BufferingForwarder(sink_for(emu), spool=tmp_path, max_batch_size=10, max_interval=0.01) as fwd:
        for e in [good[0], huge, *good[1:]]:  # one commit, one delivery
            fwd.forward(e)
        assert await fwd.flush(120) == 0
    stats = fwd.statistics()
    assert stats.sent == 3 and stats.dropped == {"too_large": 1}
    assert stats.dead_letters == 1 and stats.spooled == 0
    assert sorted(landed_ids(emu)) == sorted(e.id for e in good)
    [letter] = _spool_admin.dead_letters(tmp_path)
    assert _spool_admin.row_json(letter.row)["Id"] == huge.id
