"""Poison-row isolation: a 400 for a chunk of many rows costs only the rows the service refuses."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
from azure_helpers import TYPED_RULE_ID, forward_all, landed_ids, sink_for

from sentinel_forwarder import AuditEntry, SendResult
from sentinel_forwarder._model.wire import Codec
from sentinel_forwarder._sinks.azure.poison import MAX_EXTRA_REQUESTS, isolate_refused
from sentinel_forwarder.emulator import Emulator

pytestmark = pytest.mark.anyio


class FakeService:
    """Refuses (400) any request holding a row in *poison*; *whole* refuses every request."""

    def __init__(self, poison: set[str] = frozenset(), whole: bool = False) -> None:  # type: ignore[assignment]
        self.poison = poison
        self.whole = whole
        self.requests = 0
        self.delivered: list[str] = []

    def post(self, rows: Sequence[bytes]) -> SendResult:
        self.requests += 1
        ids = [json.loads(r)["Id"] for r in rows]
        bad = [i for i in ids if i in self.poison]
        if self.whole:
            return SendResult.failed("rejected", len(rows), "HTTP 400 (InvalidStream) no such stream")
        if bad:
            return SendResult.failed("rejected", len(rows), f"HTTP 400 (InvalidColumnValue) row {bad[0]}")
        self.delivered += ids
        return SendResult(sent=len(rows))


def chunk(n: int) -> tuple[list[bytes], list[str]]:
    ids = [f"id-{i}" for i in range(n)]
    return [json.dumps({"Id": i}).encode() for i in ids], ids


def isolate(service: FakeService, n: int, **kwargs: int) -> SendResult:
    rows, ids = chunk(n)
    return isolate_refused(rows, ids, service.post, service.post(rows), **kwargs)


def test_one_poison_row_among_a_thousand() -> None:
    service = FakeService({"id-617"})
    result = isolate(service, 1000)
    assert (result.sent, dict(result.dropped)) == (999, {"rejected": 1})
    assert "Id 'id-617': HTTP 400 (InvalidColumnValue) row id-617" in (result.error or "")
    assert sorted(service.delivered) == sorted(f"id-{i}" for i in range(1000) if i != 617)
    assert service.requests - 1 <= 2 * math.ceil(math.log2(1000))  # the bound the docs state


def test_several_poison_rows() -> None:
    service = FakeService({"id-3", "id-400", "id-401", "id-999"})
    result = isolate(service, 1000)
    assert (result.sent, dict(result.dropped)) == (996, {"rejected": 4})
    assert service.requests - 1 <= MAX_EXTRA_REQUESTS


def test_a_request_refused_as_a_whole_costs_two_requests() -> None:
    service = FakeService(whole=True)
    result = isolate(service, 1000)
    assert dict(result.dropped) == {"rejected": 1000}
    assert service.requests == 3
    assert "the whole request was refused" in (result.error or "")


def test_the_budget_bounds_the_extra_requests() -> None:
    service = FakeService({f"id-{i}" for i in range(20)})  # 20 poison rows, together at the start
    result = isolate(service, 1000, budget=10)
    assert service.requests - 1 == 10
    assert result.total == 1000
    assert "not isolated within 10 extra requests" in (result.error or "")
    assert result.sent > 0  # halves without poison were still delivered


def test_parts_that_fail_otherwise_pass_through() -> None:
    class Flaky(FakeService):
        def post(self, rows: Sequence[bytes]) -> SendResult:
            if self.requests == 1:  # the first half: throttled past the budget, not refused
                self.requests += 1
                return SendResult.failed("retries_exhausted", len(rows), "HTTP 429")
            return super().post(rows)

    service = Flaky({"id-9"})
    result = isolate(service, 16)
    assert dict(result.dropped) == {"retries_exhausted": 8, "rejected": 1}
    assert result.sent == 7


# -- through the real SDK to the emulator ------------------------------------------------------------------


async def test_one_malformed_row_among_a_thousand_in_one_chunk(typed: Emulator, codec: Codec) -> None:
    typed.reset()
    entries = [AuditEntry(f"r{i}", extra={"Score": i}) for i in range(1000)]
    poison = AuditEntry("malformed", extra={"Score": "not a number"})
    entries.insert(500, poison)
    stats = await forward_all(sink_for(typed, rule_id=TYPED_RULE_ID), entries, max_batch_size=1001)
    assert stats.sent == 1000 and stats.dropped == {"rejected": 1}
    assert poison.id in (stats.last_error or "")
    assert sorted(landed_ids(typed)) == sorted(e.id for e in entries if e is not poison)
    assert typed.stats().requests <= 1 + 2 * math.ceil(math.log2(1001))
