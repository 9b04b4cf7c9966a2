"""Nothing the sink, a transform or the forwarder's own machinery does reaches the application or ends
forwarding; every row is counted exactly once. Asyncio and trio."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from sentinel_forwarder import AuditEntry, AuditSink, BufferingForwarder, SendResult, Severity
from sentinel_forwarder._util.ratelimited import DropLog
from sentinel_forwarder.testing import RecordingForwarder

pytestmark = pytest.mark.anyio

FOREVER = 3600.0


@pytest.fixture(params=["memory", "spool"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """A test that takes it runs twice: rows buffered in memory, then through a spool (docs/durability.md)."""
    return tmp_path / "spool" if request.param == "spool" else None


def entries(n: int, prefix: str = "e") -> list[AuditEntry]:
    return [AuditEntry(f"{prefix}{i}", severity=Severity.LOW) for i in range(n)]


def assert_balanced(fwd: BufferingForwarder) -> None:
    s = fwd.statistics()
    if not fwd.health().spool:
        assert s.offered == s.sent + s.filtered + s.dropped_total + s.unconfirmed, s
        return
    # With a spool a row is never unconfirmed (it is retried); rows kept for the next run are ``spooled``,
    # and rows taken over from earlier runs are ``recovered`` (docs/durability.md, "Counting").
    assert s.unconfirmed == 0, s
    assert s.offered + s.recovered == s.sent + s.filtered + s.dropped_total + s.unconfirmed + s.spooled, s


class CustomBaseError(BaseException):
    """A BaseException that is neither a cancellation nor an interrupt."""


class ScriptedSink(AuditSink):
    """Answers each batch with the next scripted outcome: an exception to raise, or a value to return."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.delivered: list[AuditEntry] = []
        self.seen = anyio.Event()
        self.expected_calls = len(outcomes) + 1

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        self.calls += 1
        if self.calls >= self.expected_calls:
            self.seen.set()
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome  # type: ignore[no-any-return]
        self.delivered.extend(entries)
        return SendResult(sent=len(entries))


async def run_one_bad_batch(
    outcome: Any, spool: Path | None, rows: int = 3
) -> tuple[BufferingForwarder, ScriptedSink]:
    """One batch gets *outcome*; the next batch must still be delivered."""
    sink = ScriptedSink(outcome)
    fwd = BufferingForwarder(
        sink,
        max_batch_size=rows,
        max_request_rows=rows,
        max_interval=FOREVER,
        max_batches_in_flight=1,
        spool=spool,
    )
    async with fwd:
        for e in entries(rows, "bad"):
            fwd.forward(e)
        for e in entries(rows, "good"):
            fwd.forward(e)
        with anyio.fail_after(10):
            await sink.seen.wait()
        assert fwd.statistics().queue_depth == 0
    assert [e.summary for e in sink.delivered] == [f"good{i}" for i in range(rows)]
    assert_balanced(fwd)
    return fwd, sink


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("bug"), OverflowError("date value out of range"), RecursionError(), CustomBaseError()],
    ids=lambda e: type(e).__name__,
)
async def test_a_sink_exception_costs_its_batch_only(exc: BaseException, spool: Path | None) -> None:
    fwd, _ = await run_one_bad_batch(exc, spool)
    stats = fwd.statistics()
    assert stats.dropped == {"sink_error": 3}
    assert stats.sent == 3
    if spool is not None:  # the raised-on batch is dropped and kept as dead letters; nothing waits
        assert (stats.dead_letters, stats.spooled) == (3, 0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio.Cancelled cannot be raised by user code
async def test_a_foreign_cancellation_from_the_sink_is_a_sink_error(spool: Path | None) -> None:
    import asyncio

    fwd, _ = await run_one_bad_batch(asyncio.CancelledError(), spool)
    assert fwd.statistics().dropped == {"sink_error": 3}
    if spool is not None:
        assert (fwd.statistics().dead_letters, fwd.statistics().spooled) == (3, 0)


@pytest.mark.parametrize(
    ("result", "expected", "dead_letters"),
    [
        (None, {"sink_error": 3}, 3),  # not a SendResult at all
        ("sent", {"sink_error": 3}, 3),
        # lost count of two rows: a mixed result without per-row outcomes, and nothing in it may heal, so a
        # spool deletes the batch as a whole, without dead letters (docs/durability.md, third-party sinks)
        (SendResult(sent=1), {"sink_error": 2}, 0),
        (SendResult.failed("no-such-reason", 3), {"sink_error": 3}, 3),  # type: ignore[arg-type]
    ],
)
async def test_a_sink_result_that_does_not_add_up_is_fixed(
    result: Any, expected: dict[str, int], dead_letters: int, spool: Path | None
) -> None:
    fwd, _ = await run_one_bad_batch(result, spool)
    stats = fwd.statistics()
    assert dict(stats.dropped) == expected
    if spool is not None:
        assert (stats.dead_letters, stats.spooled) == (dead_letters, 0)
    if not isinstance(result, SendResult):  # said plainly, not as a crash with a traceback
        assert f"the sink returned {type(result).__name__}, not a SendResult" == stats.last_error


@pytest.mark.usefixtures("fast_spool_retries")
async def test_a_failure_that_may_heal_costs_its_batch_without_a_spool_and_nothing_with_one(
    spool: Path | None,
) -> None:
    sink = ScriptedSink(SendResult.failed("retries_exhausted", 3, "HTTP 503 (ServiceUnavailable)"))
    fwd = BufferingForwarder(
        sink, max_batch_size=3, max_request_rows=3, max_interval=FOREVER, max_batches_in_flight=1, spool=spool
    )
    async with fwd:
        for e in [*entries(3, "bad"), *entries(3, "good")]:
            fwd.forward(e)
        with anyio.fail_after(10):
            await sink.seen.wait()  # a second batch went out after the failure
            assert await fwd.flush() == 0
    stats = fwd.statistics()
    if spool is None:
        assert stats.dropped == {"retries_exhausted": 3} and stats.sent == 3
        assert [e.summary for e in sink.delivered] == [f"good{i}" for i in range(3)]
    else:  # kept, retried oldest first once the pause is over, delivered once
        assert stats.dropped == {} and (stats.sent, stats.spooled, stats.dead_letters) == (6, 0, 0)
        assert [e.summary for e in sink.delivered] == [f"{p}{i}" for p in ("bad", "good") for i in range(3)]
    assert_balanced(fwd)


# No forwarder, no mode: a unit test of SendResult.reconcile, which both pumps apply to a sink's answer.
def test_reconcile_adds_to_an_existing_sink_error_and_caps_over_reporting() -> None:
    mixed = SendResult(sent=1) + SendResult.failed("sink_error", 1, "the sink's own")
    fixed = SendResult.reconcile(mixed, 4)
    assert (fixed.sent, dict(fixed.dropped)) == (1, {"sink_error": 3})
    over = SendResult.reconcile(SendResult(sent=10) + SendResult.failed("rejected", 5), 4)
    assert (over.sent, dict(over.dropped), over.total) == (4, {}, 4)
    over = SendResult.reconcile(SendResult(sent=2) + SendResult.failed("rejected", 5), 4)
    assert (over.sent, dict(over.dropped)) == (2, {"rejected": 2})
    negative = SendResult.reconcile(SendResult(sent=-1, unconfirmed=5), 3)
    assert (negative.sent, negative.unconfirmed, negative.total) == (0, 3, 3)
    fine = SendResult(sent=2, unconfirmed=1)
    assert SendResult.reconcile(fine, 3) is fine


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_interrupt_from_the_sink_is_counted_and_propagates(backend: str, spool: Path | None) -> None:
    # On asyncio a KeyboardInterrupt in any task stops the loop (asyncio's rule), so run the loop here.
    sink = ScriptedSink(KeyboardInterrupt())
    fwd = BufferingForwarder(sink, max_batch_size=3, max_interval=FOREVER, spool=spool)

    async def main() -> None:
        async with fwd:
            for e in entries(3):
                fwd.forward(e)
            await anyio.sleep_forever()

    with pytest.raises(BaseException) as info:
        anyio.run(main, backend=backend)
    assert isinstance(info.value, KeyboardInterrupt) or info.group_contains(KeyboardInterrupt)
    assert fwd.statistics().dropped == {"sink_error": 3}
    if spool is not None:
        assert fwd.statistics().dead_letters == 3
    assert_balanced(fwd)


@pytest.mark.parametrize(
    "exc", [ValueError("bad"), CustomBaseError(), RecursionError()], ids=lambda e: type(e).__name__
)
async def test_a_transform_failure_costs_its_row_only(exc: BaseException, spool: Path | None) -> None:
    def transform(e: AuditEntry) -> AuditEntry | None:
        if e.summary == "e1":
            raise exc
        if e.summary == "e2":
            return "junk"  # type: ignore[return-value]
        return e

    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_batch_size=4, transform=transform, spool=spool) as fwd:
        for e in entries(4):
            fwd.forward(e)
    assert [e.summary for e in sink.rows] == ["e0", "e3"]
    assert fwd.statistics().dropped == {"transform_error": 2}
    if spool is not None:  # the transform runs before the commit: the failed rows never reach the disk
        assert (fwd.statistics().dead_letters, fwd.statistics().spooled) == (0, 0)
    assert_balanced(fwd)


async def test_the_body_exception_propagates_unchanged_and_rows_drain(spool: Path | None) -> None:
    sink = RecordingForwarder()
    with pytest.raises(ValueError, match="the application's own") as info:
        async with BufferingForwarder(sink, max_interval=FOREVER, spool=spool) as fwd:
            fwd.forward(AuditEntry("before the error"))
            raise ValueError("the application's own")
    assert type(info.value) is ValueError  # not an exception group
    assert [e.summary for e in sink.rows] == ["before the error"]
    assert_balanced(fwd)


async def test_aclose_from_other_tasks_at_once(spool: Path | None) -> None:
    sink = RecordingForwarder()
    closed = 0
    async with BufferingForwarder(sink, max_interval=FOREVER, spool=spool) as fwd:
        fwd.forward(AuditEntry("x"))

        async def close() -> None:
            nonlocal closed
            await fwd.aclose()
            closed += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(close)
            tg.start_soon(close)
        assert closed == 2
        assert fwd.forward(AuditEntry("late")) is False
    assert len(sink.rows) == 1 and sink.closed
    assert fwd.statistics().dropped == {"closed": 1}


async def test_run_in_a_task_group_drains_when_that_group_is_cancelled(spool: Path | None) -> None:
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, max_interval=FOREVER, spool=spool)
    async with anyio.create_task_group() as tg:
        await tg.start(fwd.run)
        for e in entries(5):
            fwd.forward(e)
        tg.cancel_scope.cancel()
    assert len(sink.rows) == 5 and sink.closed
    assert_balanced(fwd)
    with pytest.raises(RuntimeError, match="only once"):
        await fwd.run()


async def test_opening_a_misconfigured_sink_raises_and_counts_what_was_buffered(
    spool: Path | None,
) -> None:
    class Broken(RecordingForwarder):
        async def __aenter__(self) -> Broken:
            raise ValueError("misconfigured")

    fwd = BufferingForwarder(Broken(), spool=spool)
    fwd.forward(AuditEntry("buffered before open"))
    with pytest.raises(ValueError, match="misconfigured"):
        async with fwd:
            pass
    assert fwd.statistics().dropped == {"shutdown_timeout": 1}
    await fwd.aclose()  # nothing to do, no error
    assert_balanced(fwd)
    if spool is not None:  # the spool opened before the sink failed: it was closed again, and holds nothing
        assert fwd.statistics().spooled == 0
        async with BufferingForwarder(RecordingForwarder(), spool=spool) as after:
            pass
        assert after.statistics().recovered == 0


async def test_a_failing_close_of_the_sink_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture, spool: Path | None
) -> None:
    class BadClose(RecordingForwarder):
        async def aclose(self) -> None:
            raise OSError("disk gone")

    with caplog.at_level(logging.ERROR, logger="sentinel_forwarder"):
        async with BufferingForwarder(BadClose(), spool=spool) as fwd:
            fwd.forward(AuditEntry("x"))
    assert fwd.statistics().sent == 1
    assert any("failed to close" in r.getMessage() for r in caplog.records)


async def test_a_row_racing_close_is_counted(spool: Path | None) -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, spool=spool) as fwd:
        pass
    # forward() checked "accepting" before close and appends after the final count (white box: the race)
    fwd._buffer.rows.append(AuditEntry("raced"))
    stats = fwd.statistics()
    assert stats.dropped == {"shutdown_timeout": 1}
    assert stats.offered == 1
    assert_balanced(fwd)


def test_forward_refuses_an_object_that_merely_looks_like_an_entry(spool: Path | None) -> None:
    class Lookalike:
        severity = Severity.HIGH
        summary = "x"

    fwd = BufferingForwarder(RecordingForwarder(), spool=spool)
    with pytest.raises(TypeError, match="AuditEntry, not Lookalike"):
        fwd.forward(Lookalike())  # type: ignore[arg-type]
    assert fwd.statistics().offered == 0


async def test_held_back_drops_are_logged_without_a_further_drop(
    caplog: pytest.LogCaptureFixture, spool: Path | None
) -> None:
    logged = anyio.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "(reason=queue_full)" in record.getMessage() and record.getMessage().startswith(
                "sentinel-forwarder dropped 2 "
            ):
                logged.set()

    fwd = BufferingForwarder(RecordingForwarder(), capacity=1, max_interval=FOREVER, spool=spool)
    fwd._run.ledger.reporter.drop_log = DropLog(logging.getLogger("sentinel_forwarder"), interval=0.05)
    handler = Spy()
    logging.getLogger("sentinel_forwarder").addHandler(handler)
    try:
        async with fwd:
            for e in entries(4):  # 1 taken, 3 dropped: the first logged at once, two held back
                fwd.forward(e)
            with anyio.fail_after(10):
                await logged.wait()  # the trailing summary comes while the forwarder idles
    finally:
        logging.getLogger("sentinel_forwarder").removeHandler(handler)


# No forwarder, no mode: a unit test of DropLog.
def test_drop_log_trailing_summary_with_an_injected_clock(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = DropLog(logging.getLogger("sentinel_forwarder.test"), interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder.test"):
        assert log.due_in() == float("inf")
        log.record("too_large", 1, "row Id 'big' is 1,100,000 bytes")
        log.record("invalid_row", 1, "row Id 'nan' is not valid JSON")
        log.record("too_large", 2, "row Id 'big2' is 2,000,000 bytes")  # held back
        assert log.due_in() == 60.0
        now[0] = 59.0
        log.flush_due()
        assert len(caplog.records) == 2
        now[0] = 60.0
        log.flush_due()
    assert [r.getMessage() for r in caplog.records] == [
        "sentinel-forwarder dropped 1 audit row (reason=too_large): row Id 'big' is 1,100,000 bytes",
        "sentinel-forwarder dropped 1 audit row (reason=invalid_row): row Id 'nan' is not valid JSON",
        "sentinel-forwarder dropped 2 audit rows (reason=too_large): row Id 'big2' is 2,000,000 bytes",
    ]


# Memory only: the spool pump has no pause after a sink raises (its batches go straight to the dead letters).
def test_repeated_sink_failures_back_off() -> None:
    """In trio's virtual time: a sink that always raises is called with growing pauses, not in a loop."""
    import trio
    import trio.testing

    calls: list[float] = []

    async def scenario() -> None:
        eighth = trio.Event()

        class AlwaysRaises(AuditSink):
            async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
                calls.append(trio.current_time())
                if len(calls) == 8:
                    eighth.set()
                raise RuntimeError("broken sink")

        fwd = BufferingForwarder(
            AlwaysRaises(), max_batch_size=1, max_request_rows=1, max_batches_in_flight=1
        )
        async with fwd:
            for e in entries(8):
                fwd.forward(e)
            await eighth.wait()
        assert fwd.statistics().dropped == {"sink_error": 8}

    import random

    state = random.getstate()
    random.seed(7)
    try:
        trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        random.setstate(state)
    pauses = [b - a for a, b in itertools.pairwise(calls)]
    assert sum(pauses) > 0.5, pauses  # 7 pauses of up to 0.05 * 2**n s each, jittered
    assert max(pauses) <= 5.0 + 0.01


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_background_mode_survives_a_sink_exception(backend: Any, spool: Path | None) -> None:
    import threading

    from sentinel_forwarder import BackgroundForwarder

    delivered = threading.Event()

    class RaisesOnce(AuditSink):
        def __init__(self) -> None:
            self.raised = False
            self.rows: list[AuditEntry] = []

        async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
            if not self.raised:
                self.raised = True
                raise RuntimeError("sink bug")
            self.rows.extend(entries)
            delivered.set()
            return SendResult(sent=len(entries))

    sink = RaisesOnce()
    fwd = BufferingForwarder(sink, max_batch_size=1, max_request_rows=1, max_batches_in_flight=1, spool=spool)
    bg = BackgroundForwarder(fwd, backend=backend).start()
    try:
        assert bg.forward(AuditEntry("lost to the bug"))
        assert bg.forward(AuditEntry("delivered after it"))
        assert delivered.wait(10)
        assert bg.error is None
    finally:
        stats = bg.close()
    assert [e.summary for e in sink.rows] == ["delivered after it"]
    assert stats.dropped == {"sink_error": 1}
    if spool is not None:
        assert (stats.dead_letters, stats.spooled) == (1, 0)
    assert_balanced(fwd)


# No forwarder, no mode: a unit test of DropLog.
def test_unconfirmed_rows_are_logged_rate_limited_like_drops(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = DropLog(logging.getLogger("sentinel_forwarder.test"), interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder.test"):
        log.record("unconfirmed", 5, "read timed out")
        log.record("unconfirmed", 7, "read timed out again")  # held back
        now[0] = 60.0
        log.flush_due()
    assert [r.getMessage() for r in caplog.records] == [
        "sentinel-forwarder sent 5 audit rows without knowing whether they landed (unconfirmed): "
        "read timed out",
        "sentinel-forwarder sent 7 audit rows without knowing whether they landed (unconfirmed): "
        "read timed out again",
    ]
