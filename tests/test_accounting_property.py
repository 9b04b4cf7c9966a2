"""Property: whatever the interleaving of forwards, sink failures and close, every row is accounted once.

Each property runs twice: rows buffered in memory, then through a spool (a fresh directory per example).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel_forwarder import DROP_REASONS, AuditEntry, BufferingForwarder, ForwarderStatistics, Severity
from sentinel_forwarder.testing import RecordingForwarder

SINK_REASONS = [r for r in DROP_REASONS if r not in ("queue_full", "closed", "shutdown_timeout")]
# With a spool (docs/durability.md): a row whose failure may heal is kept and retried, never dropped; a row
# the service refused is dropped and kept as a dead letter.
MAY_HEAL = frozenset({"retries_exhausted", "unauthorized", "not_found", "credential_error", "unreachable"})
REFUSED = frozenset({"rejected", "too_large", "invalid_row", "sink_error"})

op = st.one_of(
    st.tuples(st.just("forward"), st.sampled_from(list(Severity))),
    st.tuples(st.just("fail"), st.sampled_from(SINK_REASONS)),
    st.tuples(st.just("yield"), st.integers(0, 3)),
    st.tuples(st.just("hold"), st.booleans()),
    st.tuples(st.just("throttle"), st.sampled_from([0.001, 0.005])),  # the gate closes for that long
)


SCENARIOS = {
    "ops": st.lists(op, max_size=60),
    "capacity": st.integers(1, 8),
    "batch": st.integers(1, 5),
    "in_flight": st.integers(1, 3),
    "after_close": st.integers(0, 3),
    "drain_timeout": st.sampled_from([0.0, 5.0]),
}


def assert_counted_once(stats: ForwarderStatistics, spool: Path | None) -> None:
    """The accounting invariant after close, and with a spool what each outcome became."""
    if spool is None:
        assert stats.offered == stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed, stats
        return
    # docs/durability.md, "Counting": offered + recovered == sent + filtered + sum(dropped) + unconfirmed
    # + spooled, where spooled is what waits in the spool for the next run
    assert stats.recovered == 0, stats  # a fresh directory
    assert stats.unconfirmed == 0, stats  # with a spool a row is never unconfirmed: it is retried
    out = stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed + stats.spooled
    assert stats.offered + stats.recovered == out, stats
    assert not MAY_HEAL & set(stats.dropped), f"a failure that may heal dropped rows: {stats}"
    assert stats.dead_letters == sum(n for r, n in stats.dropped.items() if r in REFUSED), stats


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**SCENARIOS)
def test_every_row_is_sent_filtered_or_dropped_once(
    backend: str,
    ops: list[tuple[str, object]],
    capacity: int,
    batch: int,
    in_flight: int,
    after_close: int,
    drain_timeout: float,
) -> None:
    every_row_is_counted_once(backend, None, ops, capacity, batch, in_flight, after_close, drain_timeout)


@pytest.mark.usefixtures("fast_spool_retries")  # rows kept after a failure are retried within the example
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**SCENARIOS)
def test_every_row_is_sent_filtered_dropped_or_spooled_once(
    backend: str,
    ops: list[tuple[str, object]],
    capacity: int,
    batch: int,
    in_flight: int,
    after_close: int,
    drain_timeout: float,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        spool = Path(directory) / "spool"
        every_row_is_counted_once(backend, spool, ops, capacity, batch, in_flight, after_close, drain_timeout)


def every_row_is_counted_once(
    backend: str,
    spool: Path | None,
    ops: list[tuple[str, object]],
    capacity: int,
    batch: int,
    in_flight: int,
    after_close: int,
    drain_timeout: float,
) -> None:
    async def scenario() -> None:
        sink = RecordingForwarder()
        fwd = BufferingForwarder(
            sink,
            max_batch_size=batch,
            max_interval=0.001,
            capacity=capacity,
            max_batches_in_flight=in_flight,
            drain_timeout=drain_timeout,
            min_severity=Severity.LOW,
            spool=spool,
        )
        offered: list[AuditEntry] = []
        async with fwd:
            for kind, arg in ops:
                if kind == "forward":
                    entry = AuditEntry("row", severity=arg)  # type: ignore[arg-type]
                    offered.append(entry)
                    fwd.forward(entry)
                elif kind == "fail":
                    sink.fail_next(1, arg)  # type: ignore[arg-type]
                elif kind == "hold":
                    sink.hold() if arg else sink.release()
                elif kind == "throttle":
                    sink.throttle_next(1, arg)  # type: ignore[arg-type]
                else:
                    for _ in range(int(arg)):  # type: ignore[call-overload]
                        await anyio.lowlevel.checkpoint()
            if drain_timeout:
                sink.release()  # a held sink would otherwise outlast the drain
        for _ in range(after_close):
            offered.append(AuditEntry("late", severity=Severity.HIGH))
            assert fwd.forward(offered[-1]) is False
        stats = fwd.statistics()
        assert stats.offered == len(offered)
        assert_counted_once(stats, spool)
        assert stats.throttles <= sum(1 for kind, _ in ops if kind == "throttle")
        sent_ids = [e.id for e in sink.rows]
        assert len(sent_ids) == len(set(sent_ids)), "a row was sent twice"
        assert len(sent_ids) == stats.sent
        assert set(sent_ids) <= {e.id for e in offered}
        below = sum(1 for e in offered if e.severity < Severity.LOW)
        assert stats.filtered == below
        assert stats.queue_depth == 0 and stats.batches_in_flight == 0
        assert Counter(stats.dropped)["closed"] >= after_close
        if drain_timeout:
            # with time to drain and the sink released, nothing is lost to shutdown
            assert "shutdown_timeout" not in stats.dropped
        if spool is None:
            return
        # The next run on the directory delivers exactly the rows counted as spooled: none of them was sent
        # before, each is an offered one, and each is delivered once.
        again = RecordingForwarder()
        async with BufferingForwarder(again, spool=spool, max_interval=0.001) as next_run:
            with anyio.fail_after(30):
                assert await next_run.flush() == 0
        after = next_run.statistics()
        assert after.recovered == after.sent == stats.spooled, (stats, after)
        assert (after.spooled, after.offered, after.dropped_total) == (0, 0, 0), after
        assert after.dead_letters == stats.dead_letters  # taken over too, kept for an operator
        again_ids = [e.id for e in again.rows]
        assert len(again_ids) == len(set(again_ids)) == stats.spooled
        assert not set(again_ids) & set(sent_ids), "a row was sent by both runs"
        assert set(again_ids) <= {e.id for e in offered}

    anyio.run(scenario, backend=backend)


class CustomBaseError(BaseException):
    """Neither a cancellation nor an interrupt: a sink's own BaseException."""


def _sink_exception(kind: str) -> BaseException:
    if kind == "foreign_cancel":
        import asyncio

        return asyncio.CancelledError()
    return RuntimeError("sink bug") if kind == "error" else CustomBaseError()


def _transform(entry: AuditEntry) -> AuditEntry | None:
    if entry.summary.endswith("!"):
        raise CustomBaseError("transform raised a BaseException")
    if entry.summary.endswith("?"):
        return "junk"  # type: ignore[return-value]
    if entry.summary.endswith("-"):
        return None
    return entry


hostile_op = st.one_of(
    st.tuples(st.just("forward"), st.sampled_from(["row", "row!", "row?", "row-"])),
    st.tuples(st.just("fail"), st.sampled_from(SINK_REASONS)),
    st.tuples(st.just("raise"), st.sampled_from(["error", "base", "foreign_cancel"])),
    st.tuples(st.just("yield"), st.integers(0, 3)),
    st.tuples(st.just("hold"), st.booleans()),
)


HOSTILE = {
    "ops": st.lists(hostile_op, max_size=40),
    "threads": st.integers(0, 3),
    "per_thread": st.integers(0, 40),
    "batch": st.integers(1, 5),
    "in_flight": st.integers(1, 3),
    "cancel_outside": st.booleans(),
    "drain_timeout": st.sampled_from([0.0, 5.0]),
}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**HOSTILE)
def test_every_row_is_counted_once_under_hostile_conditions(
    backend: str,
    ops: list[tuple[str, object]],
    threads: int,
    per_thread: int,
    batch: int,
    in_flight: int,
    cancel_outside: bool,
    drain_timeout: float,
) -> None:
    """Producer threads racing the pump and close, a transform that raises or returns junk, a sink that
    raises (BaseExceptions and, on asyncio, a foreign CancelledError), and the surrounding scope cancelled."""
    counted_once_under_hostile_conditions(
        backend, None, ops, threads, per_thread, batch, in_flight, cancel_outside, drain_timeout
    )


@pytest.mark.usefixtures("fast_spool_retries")  # rows kept after a failure are retried within the example
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**HOSTILE)
def test_every_row_is_counted_once_under_hostile_conditions_with_a_spool(
    backend: str,
    ops: list[tuple[str, object]],
    threads: int,
    per_thread: int,
    batch: int,
    in_flight: int,
    cancel_outside: bool,
    drain_timeout: float,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        spool = Path(directory) / "spool"
        counted_once_under_hostile_conditions(
            backend, spool, ops, threads, per_thread, batch, in_flight, cancel_outside, drain_timeout
        )


def counted_once_under_hostile_conditions(
    backend: str,
    spool: Path | None,
    ops: list[tuple[str, object]],
    threads: int,
    per_thread: int,
    batch: int,
    in_flight: int,
    cancel_outside: bool,
    drain_timeout: float,
) -> None:
    import threading

    offered_by_threads: list[int] = []

    async def scenario() -> None:
        sink = RecordingForwarder()
        fwd = BufferingForwarder(
            sink,
            max_batch_size=batch,
            max_interval=0.001,
            capacity=64,
            max_batches_in_flight=in_flight,
            drain_timeout=drain_timeout,
            transform=_transform,
            spool=spool,
        )

        def produce(t: int) -> None:
            for i in range(per_thread):
                fwd.forward(AuditEntry(f"t{t}-{i}"))
            offered_by_threads.append(per_thread)

        workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
        offered = 0
        with anyio.CancelScope() as outside:
            async with fwd:
                for w in workers:
                    w.start()
                for kind, arg in ops:
                    if kind == "forward":
                        offered += 1
                        fwd.forward(AuditEntry(str(arg)))
                    elif kind == "fail":
                        sink.fail_next(1, arg)  # type: ignore[arg-type]
                    elif kind == "raise":
                        if arg == "foreign_cancel" and backend != "asyncio":
                            arg = "base"
                        sink.raise_next(_sink_exception(str(arg)))
                    elif kind == "hold":
                        sink.hold() if arg else sink.release()
                    else:
                        for _ in range(int(arg)):  # type: ignore[call-overload]
                            await anyio.lowlevel.checkpoint()
                if drain_timeout:
                    sink.release()
                if cancel_outside:
                    outside.cancel()
                    await anyio.sleep_forever()
        for w in workers:
            w.join(timeout=30)  # some of their rows race the close: counted as "closed"
        assert not any(w.is_alive() for w in workers)
        stats = fwd.statistics()
        assert stats.offered == offered + sum(offered_by_threads)
        assert_counted_once(stats, spool)
        sent_ids = [e.id for e in sink.rows]
        assert len(sent_ids) == len(set(sent_ids)) == stats.sent
        assert stats.queue_depth == 0 and stats.batches_in_flight == 0
        assert sink.closed

    anyio.run(scenario, backend=backend)
