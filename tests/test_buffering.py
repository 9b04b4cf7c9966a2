"""Unit tests of BufferingForwarder against the in-memory RecordingForwarder (asyncio and trio)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sentinel_forwarder import AuditEntry, BufferingForwarder, SendResult, Severity
from sentinel_forwarder.testing import RecordingForwarder

pytestmark = pytest.mark.anyio

FOREVER = 3600.0


def entries(n: int, severity: Severity = Severity.LOW, prefix: str = "e") -> list[AuditEntry]:
    return [AuditEntry(f"{prefix}{i}", severity=severity) for i in range(n)]


def assert_balanced(fwd: BufferingForwarder) -> None:
    s = fwd.statistics()
    assert s.offered == s.sent + s.filtered + s.dropped_total + s.unconfirmed, s


async def test_batches_by_size() -> None:
    sink = RecordingForwarder()
    fixed = {"max_batch_size": 10, "max_request_rows": 10}  # fixed-size batches: no coalescing
    async with BufferingForwarder(sink, max_interval=FOREVER, **fixed) as fwd:
        for e in entries(25):
            assert fwd.forward(e)
        with anyio.fail_after(10):
            await sink.wait_for_rows(20)
        assert [len(b) for b in sink.batches] == [10, 10]
    # the last 5 go out on close, not on the (hour-long) interval
    assert [len(b) for b in sink.batches] == [10, 10, 5]
    assert [e.summary for e in sink.rows] == [f"e{i}" for i in range(25)]
    stats = fwd.statistics()
    assert (stats.offered, stats.accepted, stats.sent, stats.batches_sent) == (25, 25, 25, 3)
    assert sink.closed


async def test_rows_waiting_beyond_a_batch_are_coalesced_up_to_a_request() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(
        sink, max_batch_size=10, max_request_rows=40, max_interval=FOREVER, max_batches_in_flight=1
    ) as fwd:
        for e in entries(95):  # under load: far more than one batch waits when the pump looks
            fwd.forward(e)
        with anyio.fail_after(10):
            await sink.wait_for_rows(95)
        assert [len(b) for b in sink.batches] == [40, 40, 15]  # each delivery took what waited, up to 40
    assert [e.summary for e in sink.rows] == [f"e{i}" for i in range(95)]


def test_max_request_rows_defaults_and_bounds() -> None:
    from sentinel_forwarder import DEFAULT_MAX_REQUEST_ROWS

    assert BufferingForwarder(RecordingForwarder()).batching.max_request_rows == DEFAULT_MAX_REQUEST_ROWS
    big = DEFAULT_MAX_REQUEST_ROWS + 1
    assert BufferingForwarder(RecordingForwarder(), max_batch_size=big).batching.max_request_rows == big
    with pytest.raises(ValueError, match="max_request_rows"):
        BufferingForwarder(RecordingForwarder(), max_batch_size=50, max_request_rows=10)


async def test_batches_by_interval() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_batch_size=1000, max_interval=0.05) as fwd:
        for e in entries(3):
            fwd.forward(e)
        with anyio.fail_after(10):
            await sink.wait_for_rows(3)
        # handed over by age while the forwarder is still open
        assert [len(b) for b in sink.batches] == [3]
        assert fwd.statistics().queue_depth == 0


async def test_full_buffer_drops_newest_and_keeps_oldest() -> None:
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, max_batch_size=100, capacity=5)
    # rows offered before the pump starts are buffered
    results = [fwd.forward(e) for e in entries(7)]
    assert results == [True] * 5 + [False] * 2
    assert fwd.statistics().dropped == {"queue_full": 2}
    async with fwd:
        pass
    assert [e.summary for e in sink.rows] == ["e0", "e1", "e2", "e3", "e4"]
    assert_balanced(fwd)


async def test_forward_after_close_is_counted_closed() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink) as fwd:
        fwd.forward(AuditEntry("in time"))
    assert fwd.forward(AuditEntry("too late")) is False
    stats = fwd.statistics()
    assert stats.dropped == {"closed": 1}
    assert stats.sent == 1
    assert_balanced(fwd)


async def test_reentry_is_refused() -> None:
    fwd = BufferingForwarder(RecordingForwarder())
    async with fwd:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        await fwd.__aenter__()


async def test_forward_from_threads_while_pump_runs() -> None:
    sink = RecordingForwarder()
    per_thread, threads = 2000, 4
    async with BufferingForwarder(sink, max_batch_size=50, max_interval=0.01, capacity=100_000) as fwd:

        def produce(t: int) -> None:
            for e in entries(per_thread, prefix=f"t{t}-"):
                fwd.forward(e)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for t in range(threads):
                    tg.start_soon(anyio.to_thread.run_sync, produce, t)
            await sink.wait_for_rows(per_thread * threads)
    ids = [e.id for e in sink.rows]
    assert len(ids) == per_thread * threads == len(set(ids))
    # each thread's rows stay in its own order
    t0 = [e.summary for e in sink.rows if e.summary.startswith("t0-")]
    assert t0 == [f"t0-{i}" for i in range(per_thread)]
    assert fwd.statistics().sent == per_thread * threads
    assert_balanced(fwd)


async def test_thread_forward_wakes_pump_for_interval_batch() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_batch_size=1000, max_interval=0.02) as fwd:
        await anyio.to_thread.run_sync(fwd.forward, AuditEntry("from a thread"))
        with anyio.fail_after(10):
            await sink.wait_for_rows(1)
    assert sink.rows[0].summary == "from a thread"


async def test_a_full_batch_forwarded_from_a_thread_wakes_the_pump_at_once() -> None:
    # An hour-long interval: only the cross-thread wake-up can get this row out while the forwarder is open.
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_batch_size=1, max_interval=FOREVER) as fwd:
        await anyio.to_thread.run_sync(fwd.forward, AuditEntry("from a thread"))
        with anyio.fail_after(10):
            await sink.wait_for_rows(1)


async def test_a_batch_filling_up_wakes_the_waiting_pump() -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_batch_size=3, max_interval=FOREVER) as fwd:
        fwd.forward(AuditEntry("first"))
        await anyio.wait_all_tasks_blocked()  # the pump took the first wake-up and waits for the interval
        fwd.forward(AuditEntry("second"))
        fwd.forward(AuditEntry("third"))  # the batch is full: this must wake the pump
        with anyio.fail_after(10):
            await sink.wait_for_rows(3)


async def test_drain_deadline_counts_what_it_could_not_send() -> None:
    sink = RecordingForwarder()
    sink.hold()
    fwd = BufferingForwarder(
        sink, max_batch_size=10, max_request_rows=10, max_batches_in_flight=1, drain_timeout=0.05
    )
    async with fwd:
        for e in entries(35):
            fwd.forward(e)
        with anyio.fail_after(10):
            while sink.started < 1:
                await anyio.lowlevel.checkpoint()
    stats = fwd.statistics()
    # 25 still buffered are lost to the deadline; the batch of 10 the sink held may or may not have landed
    assert stats.dropped == {"shutdown_timeout": 25}
    assert stats.unconfirmed == 10
    assert stats.sent == 0
    assert stats.batches_in_flight == 0
    assert_balanced(fwd)


async def test_close_is_shielded_from_outer_cancellation() -> None:
    sink = RecordingForwarder()
    with anyio.CancelScope() as scope:
        async with BufferingForwarder(sink, max_batch_size=100, max_interval=FOREVER) as fwd:
            for e in entries(5):
                fwd.forward(e)
            scope.cancel()
            await anyio.sleep_forever()
    assert len(sink.rows) == 5
    assert_balanced(fwd)


async def test_min_severity_and_transform() -> None:
    sink = RecordingForwarder()

    def transform(e: AuditEntry) -> AuditEntry | None:
        if e.summary == "skip":
            return None
        if e.summary == "boom":
            raise ValueError("bad row")
        return AuditEntry(e.summary.replace("secret", "[redacted]"), severity=e.severity, id=e.id)

    batch = [
        AuditEntry("noise", severity=Severity.LOW),
        AuditEntry("the secret is out", severity=Severity.HIGH),
        AuditEntry("skip", severity=Severity.HIGH),
        AuditEntry("boom", severity=Severity.CRITICAL),
        AuditEntry("fine", severity=Severity.MEDIUM),
    ]
    async with BufferingForwarder(sink, min_severity="Medium", transform=transform) as fwd:
        assert all(fwd.forward(e) for e in batch)
    assert [e.summary for e in sink.rows] == ["the [redacted] is out", "fine"]
    stats = fwd.statistics()
    assert stats.filtered == 2  # below min severity + transform returned None
    assert stats.dropped == {"transform_error": 1}
    assert stats.accepted == 4
    assert_balanced(fwd)


async def test_sink_failures_are_counted_by_reason() -> None:
    sink = RecordingForwarder()
    sink.fail_next(1, "rejected", "(InvalidRow) bad column")
    async with BufferingForwarder(sink, max_batch_size=3, max_request_rows=3, max_interval=FOREVER) as fwd:
        for e in entries(6):
            fwd.forward(e)
    stats = fwd.statistics()
    assert stats.sent == 3
    assert stats.dropped == {"rejected": 3}
    assert (stats.batches_sent, stats.batches_failed) == (1, 1)
    assert stats.last_error == "(InvalidRow) bad column"
    assert_balanced(fwd)


async def test_sink_that_loses_rows_is_caught() -> None:
    def outcome(batch: Sequence[AuditEntry]) -> SendResult:
        return SendResult(sent=len(batch) - 1)

    async with BufferingForwarder(RecordingForwarder(outcome=outcome), max_batch_size=4) as fwd:
        for e in entries(4):
            fwd.forward(e)
    assert fwd.statistics().dropped == {"sink_error": 1}
    assert_balanced(fwd)


async def test_sink_exception_is_contained_counted_and_forwarding_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RecordingForwarder()
    sink.raise_next(RuntimeError("bug in a sink"))
    fwd = BufferingForwarder(
        sink, max_batch_size=2, max_request_rows=2, max_interval=FOREVER, max_batches_in_flight=1
    )
    with caplog.at_level(logging.ERROR, logger="sentinel_forwarder"):
        async with fwd:
            for e in entries(4):
                assert fwd.forward(e)
            with anyio.fail_after(10):
                await sink.wait_for_rows(4)
            # the forwarder is still open and delivering
            assert fwd.forward(AuditEntry("after the failure"))
    stats = fwd.statistics()
    assert stats.dropped == {"sink_error": 2}
    assert stats.sent == 3
    assert "bug in a sink" in (stats.last_error or "")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert_balanced(fwd)
    assert sink.closed


async def test_metrics_and_rate_limited_warning(caplog: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, capacity=2, name="unit", meter_provider=provider)
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder"):
        for e in entries(5):
            fwd.forward(e)
        # the queue depth gauge reads the buffer
        depth = _points(reader, "audit.forward.queue.depth")
        assert depth == {(("forwarder.name", "unit"),): 2}
        async with fwd:
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # first drop logged at once, the next two held back and flushed at close
    assert warnings[0] == "sentinel-forwarder dropped 1 audit row (reason=queue_full)"
    assert warnings[-1] == "sentinel-forwarder dropped 2 audit rows (reason=queue_full)"
    assert len(warnings) == 2
    dropped = _points(reader, "audit.forward.dropped")
    assert dropped == {(("forwarder.name", "unit"), ("reason", "queue_full")): 3}
    assert _points(reader, "audit.forward.sent") == {(("forwarder.name", "unit"),): 2}
    assert _points(reader, "audit.forward.batches") == {
        (("forwarder.name", "unit"), ("outcome", "success")): 1
    }


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, object], ...], float]:
    data = reader.get_metrics_data()
    out: dict[tuple[tuple[str, object], ...], float] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        out[tuple(sorted(p.attributes.items()))] = p.value  # type: ignore[union-attr]
    return out


@pytest.mark.parametrize("bad", [0, -1])
def test_invalid_options_fail_fast(bad: int) -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BufferingForwarder(RecordingForwarder(), max_batch_size=bad)
    with pytest.raises(ValueError, match="capacity"):
        BufferingForwarder(RecordingForwarder(), capacity=bad)


def test_forward_is_safe_without_an_event_loop() -> None:
    fwd = BufferingForwarder(RecordingForwarder())
    results: list[bool] = []
    t = threading.Thread(target=lambda: results.append(fwd.forward(AuditEntry("x"))))
    t.start()
    t.join()
    assert results == [True]
    assert fwd.statistics().queue_depth == 1


def test_forward_rejects_what_is_not_an_entry() -> None:
    fwd = BufferingForwarder(RecordingForwarder())
    with pytest.raises(TypeError, match="AuditEntry, not dict"):
        fwd.forward({"Summary": "x"})  # type: ignore[arg-type]
    assert fwd.statistics().offered == 0


def test_core_import_loads_no_framework_or_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sentinel_forwarder, sentinel_forwarder.testing\n"
        "heavy = {'starlette', 'uvicorn', 'aiohttp', 'click', 'rich', 'fastapi', 'trustme', 'httpx',"
        " 'sentinel_forwarder.emulator', 'sentinel_forwarder.cli'}\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_drop_log_is_rate_limited_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    from sentinel_forwarder._util.ratelimited import DropLog

    now = [0.0]
    log = DropLog(logging.getLogger("sentinel_forwarder.test"), interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder.test"):
        log.record("queue_full", 1)  # first: logged at once
        now[0] = 30.0
        log.record("queue_full", 5, "buffer at capacity")  # held back
        log.record("rejected", 2, "(InvalidColumnValue) bad")  # another reason has its own clock
        now[0] = 61.0
        log.record("queue_full", 1)  # a minute on: logs the 6 since the last line
        log.flush()  # nothing left to flush
    assert [r.getMessage() for r in caplog.records] == [
        "sentinel-forwarder dropped 1 audit row (reason=queue_full)",
        "sentinel-forwarder dropped 2 audit rows (reason=rejected): (InvalidColumnValue) bad",
        "sentinel-forwarder dropped 6 audit rows (reason=queue_full): buffer at capacity",
    ]


async def test_send_batch_reports_what_was_taken_and_what_was_dropped() -> None:
    # A BufferingForwarder is itself an AuditForwarder: another wrapper may hand it batches.
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, capacity=2)
    result = await fwd.send_batch(entries(5))
    assert (result.sent, dict(result.dropped)) == (2, {"queue_full": 3})
    async with fwd:
        pass
    late = await fwd.send_batch(entries(2))
    assert (late.sent, dict(late.dropped)) == (0, {"closed": 2})
    assert len(sink.rows) == 2
    assert_balanced(fwd)


async def test_batches_reach_the_sink_in_the_order_they_were_taken() -> None:
    """A large batch links its rows slice by slice, yielding between slices; a small batch taken after it
    still waits for its turn, so rows reach the sink in the order they were offered."""
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_batch_size=10, max_request_rows=5_000, max_interval=60) as fwd:
        for i in range(5_000):
            fwd.forward(AuditEntry(f"a{i}"))
        with anyio.fail_after(10):
            while fwd.queue_depth():  # the pump takes the large batch and starts linking it
                await anyio.lowlevel.checkpoint()
        for i in range(10):  # a full batch: taken, linked in one slice, ready long before the large one
            fwd.forward(AuditEntry(f"b{i}"))
        assert await fwd.flush(30) == 0
    assert [e.summary for e in sink.rows] == [f"a{i}" for i in range(5_000)] + [f"b{i}" for i in range(10)]
