"""The engine's parts on their own: ledger, buffer, stages, delivery, lifecycle (pure logic, no forwarder).

The forwarder's tests cover them wired together; these pin each part's contract so a part can be reused by
another pump (the memory pump, the spool pump, later an outbox) without re-reading the façade.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from opentelemetry.metrics import NoOpMeterProvider

from sentinel_forwarder import AuditEntry, AuditSink, SendResult
from sentinel_forwarder._core.buffer import Buffer
from sentinel_forwarder._core.delivery import SINK_BACKOFF_FIRST, SINK_BACKOFF_MAX, Delivery
from sentinel_forwarder._core.ledger import Ledger, unaccounted
from sentinel_forwarder._core.metrics import Reporter, instruments_for
from sentinel_forwarder._core.scopes import WorkScopes
from sentinel_forwarder._core.stages import Stages
from sentinel_forwarder._forwarders.lifecycle import Lifecycle
from sentinel_forwarder._util.ratelimited import DropLog, ErrorLog

log = logging.getLogger("sentinel_forwarder.test_engine")


def ledger() -> Ledger:
    return Ledger(Reporter(instruments_for(NoOpMeterProvider()), "engine", DropLog(log)))


def rows(n: int) -> list[AuditEntry]:
    return [AuditEntry(f"r{i}") for i in range(n)]


# -- the ledger ----------------------------------------------------------------------------------------------


def test_the_ledger_counts_each_outcome_once_and_balances_at_close() -> None:
    led = ledger()
    buf = Buffer(100, 10, led.lock)
    buf.rows.extend(rows(10))
    led.filtered_early()  # offered, below min_severity
    led.dropped("queue_full", 2, None)  # offered, refused
    start, taken = buf.take(6)
    assert (start, len(taken)) == (0, 6)
    led.filtered(1)
    led.delivered(SendResult(3) + SendResult.failed("rejected", 1), 0.1)
    led.unconfirmed(1, "deadline")
    running = led.statistics(buf, in_flight=0)
    assert running.offered == 13 and running.queue_depth == 4
    assert unaccounted(running) == 4  # still buffered
    left = led.close(buf)
    assert left == 4
    stats = led.statistics(buf, in_flight=0)
    assert (stats.sent, stats.filtered, stats.unconfirmed) == (3, 2, 1)
    assert dict(stats.dropped) == {"queue_full": 2, "rejected": 1, "shutdown_timeout": 4}
    assert stats.queue_depth == 0 and unaccounted(stats) == 0
    assert (stats.batches_sent, stats.batches_failed) == (0, 2)


def test_a_row_appended_after_close_counts_as_lost() -> None:
    led = ledger()
    buf = Buffer(100, 10, led.lock)
    led.close(buf)
    buf.rows.append(AuditEntry("raced"))  # forward() checked accepting just before close
    stats = led.statistics(buf, in_flight=0)
    assert dict(stats.dropped) == {"shutdown_timeout": 1} and unaccounted(stats) == 0


def test_progress_follows_deliveries() -> None:
    led = ledger()
    assert led.progress() == (None, 0)
    led.delivered(SendResult.failed("retries_exhausted", 2), 0.0)
    led.lost(1, "sink_error", "boom")
    assert led.progress()[1] == 2
    led.delivered(SendResult(1), 0.0)
    last, failures = led.progress()
    assert last is not None and failures == 0


def test_a_failing_reporter_never_loses_the_count() -> None:
    class Exploding(Reporter):
        def dropped(self, *args: Any) -> None:
            raise RuntimeError("exporter down")

    led = Ledger(Exploding(instruments_for(NoOpMeterProvider()), "x", DropLog(log)))
    with pytest.raises(RuntimeError):
        led.dropped("queue_full", 1, None)
    buf = Buffer(1, 1, led.lock)
    assert dict(led.statistics(buf, in_flight=0).dropped) == {"queue_full": 1}


# -- the buffer ----------------------------------------------------------------------------------------------


def test_take_reports_its_start_under_the_lock_and_in_order() -> None:
    buf = Buffer(10, 5, threading.Lock())
    buf.rows.extend(rows(7))
    seen: list[tuple[int, bool]] = []
    start, first = buf.take(5, lambda s: seen.append((s, buf.lock.locked())))
    _, second = buf.take(5)
    assert start == 0 and seen == [(0, True)]
    assert [e.summary for e in first + second] == [f"r{i}" for i in range(7)]
    assert buf.taken == 7


def test_an_unbound_buffer_calls_its_hook_instead_of_waking() -> None:
    buf = Buffer(10, 5, threading.Lock())
    calls: list[int] = []
    buf.wake()  # nothing bound, no hook: nothing happens
    buf.on_wake_unbound = lambda: calls.append(1)
    buf.wake()
    assert calls == [1]


@pytest.mark.anyio
async def test_close_stops_taking_and_wakes_a_pause() -> None:
    buf = Buffer(10, 5, threading.Lock())
    buf.bind()
    async with anyio.create_task_group() as tg:
        done = anyio.Event()

        async def pause() -> None:
            await buf.pause(3600)
            done.set()

        tg.start_soon(pause)
        await anyio.wait_all_tasks_blocked()
        buf.close()
        with anyio.fail_after(10):
            await done.wait()
    assert not buf.accepting


# -- the stages ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stages_filter_refuse_and_link_only_the_rows_kept() -> None:
    linked: list[list[str]] = []

    async def link(batch: list[AuditEntry]) -> list[AuditEntry]:
        linked.append([e.summary for e in batch])
        return batch

    def transform(entry: AuditEntry) -> Any:
        if entry.summary == "r0":
            return None  # filtered out
        if entry.summary == "r1":
            return "not an entry"  # refused
        if entry.summary == "r2":
            raise ValueError("bug")  # refused
        return entry

    led = ledger()
    staged = await Stages(transform, link, led).run(rows(5))
    assert [e.summary for e in staged.rows] == ["r3", "r4"]
    assert (staged.kept, staged.refused) == ([3, 4], [1, 2])
    assert linked == [["r3", "r4"]]
    stats = led.statistics(Buffer(1, 1, led.lock), in_flight=0)
    assert stats.filtered == 1 and dict(stats.dropped) == {"transform_error": 2}


# -- delivery ------------------------------------------------------------------------------------------------


class Scripted(AuditSink):
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.encoded: list[Sequence[bytes]] = []

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def send_encoded(self, entries: Sequence[AuditEntry], rows: Sequence[bytes], /) -> SendResult:
        self.encoded.append(rows)
        return await self.send_batch(entries)


@pytest.mark.anyio
async def test_delivery_reconciles_contains_and_backs_off() -> None:
    sink = Scripted(SendResult(5), ValueError("bug"), "junk", RuntimeError("again"), SendResult(2))
    delivery = Delivery(sink, WorkScopes(), ErrorLog(log), jitter=lambda: 1.0)
    ok = await delivery.send(rows(2), fate="dropped")
    assert ok.result == SendResult.reconcile(SendResult(5), 2) and ok.raised is None
    assert delivery.backoff() == 0.0
    failed = await delivery.send(rows(3), fate="dropped")
    assert isinstance(failed.raised, ValueError) and failed.result is not None
    assert dict(failed.result.dropped) == {"sink_error": 3} and "ValueError: bug" in failed.error
    assert delivery.backoff() == SINK_BACKOFF_FIRST
    junk = await delivery.send(rows(1), fate="dropped")
    assert junk.raised is None and junk.result is not None and dict(junk.result.dropped) == {"sink_error": 1}
    assert delivery.sink_failures == 0  # an answer, however wrong, is not a raise
    await delivery.send(rows(1), fate="dropped")
    assert delivery.backoff() == SINK_BACKOFF_FIRST
    delivery.sink_failures = 30
    assert delivery.backoff() == SINK_BACKOFF_MAX
    await delivery.send(rows(2), [b"{}", b"{}"], fate="dropped")  # stored JSON goes through send_encoded
    assert sink.encoded == [[b"{}", b"{}"]] and delivery.sink_failures == 0


@pytest.mark.anyio
async def test_an_aborted_delivery_reports_no_result() -> None:
    class Hanging(AuditSink):
        async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
            await anyio.sleep_forever()
            raise AssertionError

    scopes = WorkScopes()
    delivery = Delivery(Hanging(), scopes, ErrorLog(log))
    attempts: list[Any] = []
    outer = anyio.CancelScope()

    async def send() -> None:
        with outer:
            attempts.append(await delivery.send(rows(1), fate="x"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await anyio.wait_all_tasks_blocked()
            outer.cancel()  # the caller's cancellation does not reach the shielded send...
            await anyio.wait_all_tasks_blocked()
            assert attempts == []
            scopes.abort()  # ...the drain deadline does
    assert attempts[0].result is None and attempts[0].raised is None


# -- the lifecycle -------------------------------------------------------------------------------------------


def test_the_fork_policy_per_state() -> None:
    assert Lifecycle.NEW.after_fork() is Lifecycle.NEW
    assert Lifecycle.CLOSED.after_fork() is Lifecycle.CLOSED
    for running in (Lifecycle.FORKED, Lifecycle.OPEN, Lifecycle.CLOSING):
        assert running.after_fork() is Lifecycle.FORKED
