"""Sharing a DCR with a fleet: the throttle gate and the request budget (pure logic, injected clocks), and the
forwarder under throttling in memory and spool mode, through a recording sink and through the real SDK to
the emulator: new requests pause as the service asked, rows coalesce into fewer, fuller requests, every row
lands once and every count stays true."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from azure_helpers import rows, sink_for

from sentinel_forwarder import AuditEntry, BufferingForwarder, SendResult
from sentinel_forwarder._core.throttle import (
    THROTTLE_DEFAULT_WAIT,
    THROTTLE_MAX_WAIT,
    RequestBudget,
    ThrottleGate,
)
from sentinel_forwarder.emulator import Emulator
from sentinel_forwarder.testing import RecordingForwarder


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the gate ------------------------------------------------------------------------------------------------


def test_the_gate_closes_for_what_the_service_asked_capped_and_jittered() -> None:
    clock = Clock()
    gate = ThrottleGate(clock=clock, jitter=lambda: 0.0)
    assert gate.delay() == 0.0
    assert gate.close_for(2.0) == 2.0 and gate.delay() == 2.0
    clock.now += 1.5
    assert gate.delay() == 0.5
    assert gate.close_for(1.0) == 0.5  # overlaps: only what it adds is counted
    assert gate.close_for(0.2) == 0.0 and gate.delay() == 1.0  # a shorter ask never shortens the pause
    clock.now += 10
    assert gate.close_for(None) == THROTTLE_DEFAULT_WAIT  # unsaid: the default pause
    clock.now += 10
    assert gate.close_for(3600) == THROTTLE_MAX_WAIT  # capped
    jittered = ThrottleGate(clock=clock, jitter=lambda: 0.999)
    assert 2.0 < jittered.close_for(2.0) < 2.2  # up to a tenth more: a fleet comes back spread out


# -- the budget ----------------------------------------------------------------------------------------------


def test_the_budget_lets_a_burst_go_then_paces_to_its_rate() -> None:
    clock = Clock()
    budget = RequestBudget(60, clock=clock)  # one a second, two in the bucket
    for _ in range(2):
        assert budget.delay() == 0.0
        budget.spend()
    assert budget.delay() == pytest.approx(1.0)
    clock.now += 0.5
    assert budget.delay() == pytest.approx(0.5)
    clock.now += 0.5
    assert budget.delay() == 0.0


def test_the_budget_halves_when_throttled_and_comes_back_slowly() -> None:
    clock = Clock()
    budget = RequestBudget(600, clock=clock)
    budget.throttled()
    assert budget.rate == 300
    budget.throttled()
    assert budget.rate == 150
    for _ in range(3):
        budget.succeeded()
    assert budget.rate == pytest.approx(150 + 3 * 30)
    for _ in range(100):
        budget.throttled()
    assert budget.rate == 30  # never below a twentieth of the ceiling
    for _ in range(100):
        budget.succeeded()
    assert budget.rate == 600  # never above the ceiling


def test_a_throttle_empties_the_bucket() -> None:
    clock = Clock()
    budget = RequestBudget(60, clock=clock)
    budget.throttled()  # rate 30/min: a token every 2 s
    assert budget.delay() == pytest.approx(2.0)


def test_a_full_request_spends_without_waiting_and_never_below_empty() -> None:
    budget = RequestBudget(60, clock=Clock())
    for _ in range(5):
        budget.spend()
    assert budget.delay() == pytest.approx(1.0)


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RequestBudget(0)


# -- the forwarder under throttling --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "spool"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "spool"


class Throttling(RecordingForwarder):
    """Delivers every row; the first *throttled* calls also say the service asked to wait *wait* seconds."""

    def __init__(self, throttled: int, wait: float) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.called = anyio.Event()
        self._throttled = throttled
        self._wait = wait

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        await super().send_batch(entries)
        self.calls.append(len(entries))
        self.called.set()
        throttled = len(self.calls) <= self._throttled
        return SendResult(len(entries), retry_after=self._wait if throttled else None)


async def offer(fwd: BufferingForwarder, entries: list[AuditEntry]) -> None:
    for entry in entries:
        assert fwd.forward(entry)


@pytest.mark.anyio
async def test_while_throttled_rows_wait_and_leave_in_one_fuller_request(spool: Path | None) -> None:
    sink = Throttling(throttled=1, wait=3)  # long enough for the rows below to arrive, even on a busy machine
    entries = [AuditEntry(f"r{i}") for i in range(1_000)]
    options: dict[str, Any] = {"max_batch_size": 100, "max_interval": 60, "max_requests_per_minute": None}
    async with BufferingForwarder(sink, spool=spool, **options) as fwd:
        await offer(fwd, entries[:100])
        with anyio.fail_after(30):
            await sink.called.wait()  # the first request went, and the service said: wait
            assert fwd.health().throttled
            for start in range(100, 1_000, 100):  # nine more batches' worth arrive while the gate is closed
                await offer(fwd, entries[start : start + 100])
                await anyio.wait_all_tasks_blocked()  # the pump could take them now, if it did not wait
            assert await fwd.flush(30) == 0
    assert sink.calls == [100, 900]  # not nine more requests of 100: one, as full as it could be
    assert [e.id for e in sink.rows] == [e.id for e in entries]  # every row once, in order
    stats = fwd.statistics()
    assert stats.sent == 1_000 and stats.dropped == {} and stats.throttles == 1
    assert stats.throttled_seconds >= 3
    assert (
        stats.offered + stats.recovered == stats.sent + stats.filtered + stats.dropped_total + stats.spooled
    )


@pytest.mark.anyio
async def test_the_request_budget_makes_requests_grow(spool: Path | None) -> None:
    sink = Throttling(throttled=0, wait=0)
    entries = [AuditEntry(f"r{i}") for i in range(1_000)]
    # 20 a minute: the bucket holds one request, then one every 3 s (long enough for the rows below to arrive)
    options: dict[str, Any] = {"max_batch_size": 100, "max_interval": 60, "max_requests_per_minute": 20}
    async with BufferingForwarder(sink, spool=spool, **options) as fwd:
        await offer(fwd, entries[:100])
        with anyio.fail_after(30):
            await sink.called.wait()
            for start in range(100, 1_000, 100):  # what arrives while the budget is spent joins the next
                await offer(fwd, entries[start : start + 100])
                await anyio.wait_all_tasks_blocked()  # the pump could take it now, if it did not wait
            assert await fwd.flush(30) == 0
    assert sink.calls == [100, 900]
    assert fwd.statistics().sent == 1_000 and fwd.health().request_rate == 20


@pytest.mark.anyio
async def test_a_lone_row_is_not_held_by_the_budget() -> None:
    sink = Throttling(throttled=0, wait=0)
    async with BufferingForwarder(sink, max_interval=0.05, max_requests_per_minute=1) as fwd:
        fwd.forward(AuditEntry("lone"))
        with anyio.fail_after(30):
            await sink.called.wait()
    assert sink.calls == [1]


@pytest.mark.anyio
async def test_closing_while_throttled_keeps_the_drain_deadline(spool: Path | None) -> None:
    sink = Throttling(throttled=1, wait=3600)  # the service asks for an hour (capped to a minute)
    async with BufferingForwarder(sink, spool=spool, max_batch_size=1, drain_timeout=0.5) as fwd:
        fwd.forward(AuditEntry("first"))
        with anyio.fail_after(30):
            await sink.called.wait()
        fwd.forward(AuditEntry("held at the gate"))
        with anyio.fail_after(30):  # the close returns at the drain deadline, not after the pause
            await fwd.aclose()
    stats = fwd.statistics()
    assert sink.calls == [1]
    if spool is None:
        assert stats.dropped == {"shutdown_timeout": 1}
    else:
        assert stats.spooled == 1 and stats.dropped == {}  # it waits in the spool for the next run
    assert (
        stats.offered + stats.recovered == stats.sent + stats.filtered + stats.dropped_total + stats.spooled
    )


@pytest.mark.anyio
async def test_through_the_sdk_a_throttle_pauses_new_requests_and_every_row_lands_once(
    emu: Emulator, spool: Path | None
) -> None:
    emu.faults.fail_next(1, 429, retry_after=3)
    entries = rows(1_000)
    sink = sink_for(emu)
    # A budget so large that no request waits for it; what the throttle does to its rate is checked below.
    options: dict[str, Any] = {"max_batch_size": 100, "max_interval": 60, "max_requests_per_minute": 6000}
    async with BufferingForwarder(sink, spool=spool, **options) as fwd:
        await offer(fwd, entries[:100])
        with anyio.fail_after(30):
            while not fwd.health().throttled:  # noqa: ASYNC110 (bounded by fail_after)
                await anyio.sleep(0.01)
            # The sink said so the moment the 429 came: its request still waits out the 3 s it was asked.
            assert fwd.statistics().sent == 0
            for start in range(100, 1_000, 100):
                await offer(fwd, entries[start : start + 100])
                await anyio.wait_all_tasks_blocked()
            assert await fwd.flush(30) == 0
    landed = [r["Id"] for r in emu.rows(emu.table)]
    assert sorted(landed) == sorted(e.id for e in entries)  # every row, once
    assert emu.stats().requests == 3  # the throttled one, its retry after the wait, and one for the rest
    stats = fwd.statistics()
    assert stats.sent == 1_000 and stats.dropped == {} and stats.throttles == 1
    # halved by the throttle; the throttled delivery did not raise it back, the next one did by a twentieth
    assert fwd.health().request_rate == 3_300


# -- what an operator sees -----------------------------------------------------------------------------------


def test_the_throttle_warning_is_logged_once_a_minute_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from opentelemetry.metrics import NoOpMeterProvider

    from sentinel_forwarder._core.metrics import Reporter, instruments_for
    from sentinel_forwarder._util.ratelimited import DropLog

    clock = Clock()
    log = logging.getLogger("sentinel_forwarder")
    reporter = Reporter(instruments_for(NoOpMeterProvider()), "t", DropLog(log), clock=clock)
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder"):
        reporter.throttled(2.0, 75.0)
        clock.now += 30
        reporter.throttled(1.0, 37.5)  # within the minute: held back
        clock.now += 31
        reporter.throttled(1.5, None)
    lines = [r.getMessage() for r in caplog.records if "throttled" in r.getMessage()]
    assert len(lines) == 2
    assert "(1 time since the last such line): new requests pause for 2.0 s" in lines[0]
    assert "request rate is lowered to 75/min" in lines[0]
    assert "(2 times since the last such line): new requests pause for 1.5 s" in lines[1]
    assert "request rate" not in lines[1]  # no budget


@pytest.mark.anyio
async def test_throttling_shows_in_the_metrics() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    sink = Throttling(throttled=1, wait=0.2)
    provider = MeterProvider(metric_readers=[reader])
    async with BufferingForwarder(
        sink, name="fleet", meter_provider=provider, max_requests_per_minute=120
    ) as fwd:
        fwd.forward(AuditEntry("x"))
        assert await fwd.flush(30) == 0
        points: dict[str, float] = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        if dict(point.attributes or {}).get("forwarder.name") == "fleet" and hasattr(
                            point, "value"
                        ):
                            points[metric.name] = point.value
    assert points["audit.forward.throttled"] >= 0.2
    assert points["audit.forward.request_rate"] == 60  # halved from 120 by the throttle


class Live(RecordingForwarder):
    """A sink that says the moment the service throttles, as the Azure sink does, and in its result too."""

    def __init__(self) -> None:
        super().__init__()
        self.listener: Any = None
        self.go = anyio.Event()
        self.heard = anyio.Event()

    def listen_for_throttling(self, listener: Any) -> None:
        self.listener = listener

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        self.listener(30.0)  # a 429 came back: the forwarder hears it now
        self.listener(30.0)  # a second request of the same episode
        self.heard.set()
        await self.go.wait()  # ...while this request waits out what it was asked
        await super().send_batch(entries)
        return SendResult(len(entries), retry_after=30.0)


@pytest.mark.anyio
async def test_a_sink_that_says_it_at_once_pauses_everything_at_once_and_is_counted_once() -> None:
    sink = Live()
    async with BufferingForwarder(
        sink, max_batch_size=1, max_requests_per_minute=600, drain_timeout=5
    ) as fwd:
        fwd.forward(AuditEntry("x"))
        with anyio.fail_after(10):
            await sink.heard.wait()
        assert fwd.health().throttled
        assert fwd.statistics().sent == 0  # the throttled request has not come back yet
        assert fwd.health().request_rate == 300  # halved once for the episode, not once per request
        sink.go.set()
        with anyio.fail_after(10):
            await sink.wait_for_rows(1)
    stats = fwd.statistics()
    assert stats.throttles == 2 and stats.sent == 1  # each throttled request counted; the result not again


@pytest.mark.anyio
async def test_a_large_request_does_not_wait_for_the_budget(spool: Path | None) -> None:
    sink = Throttling(throttled=0, wait=0)
    # 6 a minute: after the first request the next token is 10 s away; a large request (a quarter of
    # max_request_rows, 100 rows here) goes anyway, so throughput under load is not capped by the budget.
    options: dict[str, Any] = {"max_batch_size": 10, "max_request_rows": 400, "max_requests_per_minute": 6}
    async with BufferingForwarder(sink, spool=spool, max_interval=60, **options) as fwd:
        await offer(fwd, [AuditEntry(f"a{i}") for i in range(100)])
        with anyio.fail_after(5):  # well under the 10 s a small request would wait
            await sink.called.wait()
            await offer(fwd, [AuditEntry(f"b{i}") for i in range(100)])
            await sink.wait_for_rows(batches=2)
    assert sink.calls[:2] == [100, 100]


def test_once_throttled_only_full_requests_skip_the_budget() -> None:
    from sentinel_forwarder._core.batching import Batching
    from sentinel_forwarder._core.delivery import Delivery
    from sentinel_forwarder._core.scopes import WorkScopes
    from sentinel_forwarder._util.ratelimited import ErrorLog

    clock = Clock()
    budget = RequestBudget(60, clock=clock)
    gate = ThrottleGate(clock=clock, jitter=lambda: 0.0)
    delivery = Delivery(
        RecordingForwarder(),
        WorkScopes(),
        ErrorLog(__import__("logging").getLogger("t")),
        gate=gate,
        budget=budget,
    )
    batching = Batching(
        max_batch_size=10, max_interval=5.0, max_request_rows=400, max_in_flight=4, capacity=10
    )
    for _ in range(2):
        budget.spend()  # the bucket is empty: a small request waits a second
    assert delivery.delay(10, batching) == pytest.approx(1.0)
    assert delivery.delay(100, batching) == 0.0  # large (a quarter of 400): goes
    assert delivery.delay(10, batching, closing=True) == 0.0  # closing: the gate only
    delivery.throttled(5.0)  # the rate is lowered and the gate closed
    clock.now += 5.0
    budget.spend()
    budget.spend()  # the bucket is empty again
    assert delivery.delay(100, batching) > 0  # large is no longer enough...
    assert delivery.delay(400, batching) == 0.0  # ...only a full request skips the budget
