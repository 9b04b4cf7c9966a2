"""flush() without closing, close() from the forwarder's own thread, a second lifespan of the same app."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sentinel_forwarder import (
    AuditEntry,
    BackgroundForwarder,
    BufferingForwarder,
    ConfigurationError,
    DropReason,
    ForwarderSettings,
    SendResult,
    add_sentinel_forwarder,
)
from sentinel_forwarder.emulator import Emulator, EmulatorCredential
from sentinel_forwarder.testing import RecordingForwarder

FOREVER = 3600.0


@pytest.fixture(params=["memory", "spool"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """A test that takes it runs twice: rows buffered in memory, then through a spool (docs/durability.md)."""
    return tmp_path / "spool" if request.param == "spool" else None


@pytest.mark.anyio
async def test_flush_sends_partial_batches_now_and_keeps_the_forwarder_open(spool: Path | None) -> None:
    sink = RecordingForwarder()
    async with BufferingForwarder(sink, max_batch_size=100, max_interval=FOREVER, spool=spool) as fwd:
        for i in range(7):
            fwd.forward(AuditEntry(f"r{i}"))
        with anyio.fail_after(10):
            assert await fwd.flush() == 0
        assert len(sink.rows) == 7  # an hour-long interval did not hold them back
        assert fwd.forward(AuditEntry("after the flush"))
        with anyio.fail_after(10):
            assert await fwd.flush() == 0
        assert len(sink.rows) == 8
        assert await fwd.flush() == 0  # nothing buffered: returns at once


@pytest.mark.anyio
async def test_flush_reports_what_is_still_pending(spool: Path | None) -> None:
    sink = RecordingForwarder()
    sink.hold()
    async with BufferingForwarder(sink, max_batch_size=2, drain_timeout=10, spool=spool) as fwd:
        for i in range(5):
            fwd.forward(AuditEntry(f"r{i}"))
        if spool is not None:  # wait until they are committed: mid-commit, flush() counts them nowhere
            with anyio.fail_after(10):
                while not sink.started:
                    await anyio.lowlevel.checkpoint()
        assert await fwd.flush(timeout=0.05) == 5  # the sink holds them: none is accounted yet
        sink.release()
        with anyio.fail_after(10):
            assert await fwd.flush() == 0


@pytest.mark.anyio
async def test_flush_when_not_running(spool: Path | None) -> None:
    fwd = BufferingForwarder(RecordingForwarder(), spool=spool)
    fwd.forward(AuditEntry("waiting for the pump"))
    assert await fwd.flush() == 1  # not started: nothing can deliver it yet
    async with fwd:
        pass
    assert await fwd.flush() == 0


def test_background_flush_and_its_own_thread(spool: Path | None) -> None:
    sink = RecordingForwarder()
    bg = BackgroundForwarder(BufferingForwarder(sink, max_interval=FOREVER, spool=spool)).start()
    try:
        for i in range(3):
            bg.forward(AuditEntry(f"r{i}"))
        # With a spool, let a row be committed first: mid-commit, flush() counts rows nowhere (returns 0).
        if spool is not None:
            assert bg.forward_durable(AuditEntry("r3"), timeout=10)
        assert bg.flush(timeout=10) == 0
        assert len(sink.rows) == (3 if spool is None else 4)
    finally:
        bg.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_close_on_the_forwarders_own_thread_does_not_block_its_loop(backend: str, spool: Path | None) -> None:
    outcome: list[object] = []
    holder: list[BackgroundForwarder] = []

    def transform(entry: AuditEntry) -> AuditEntry:
        if entry.summary == "close from here":
            outcome.append(holder[0].close())  # on the loop's own thread: starts the close, returns
            try:
                holder[0].flush()
            except RuntimeError as exc:
                outcome.append(exc)
        return entry

    sink = RecordingForwarder()
    bg = BackgroundForwarder(
        BufferingForwarder(sink, max_batch_size=1, drain_timeout=30, transform=transform, spool=spool),
        backend=backend,
    )
    holder.append(bg)
    bg.start()
    bg.forward(AuditEntry("close from here"))
    assert bg._done.wait(10), "the loop stalled: close() blocked its own thread"
    assert len(outcome) == 2 and isinstance(outcome[1], RuntimeError)
    assert [e.summary for e in sink.rows] == ["close from here"]


def test_a_second_lifespan_of_the_same_app_works(emu: Emulator, spool: Path | None) -> None:
    async def audit(request: Request) -> PlainTextResponse:
        request.app.state.sentinel_forwarder.forward(AuditEntry("req"))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", audit)])
    first = add_sentinel_forwarder(
        app,
        endpoint=emu.endpoint,
        rule_id=emu.rule_id,
        credential=EmulatorCredential(),
        environ={},
        spool=None if spool is None else str(spool),
    )
    for _ in range(2):  # two test clients, or a server that restarts its lifespan
        with TestClient(app) as client:
            assert client.get("/").text == "ok"
    assert emu.count(emu.table) == 2
    assert first.statistics().sent == 1
    assert app.state.sentinel_forwarder is not first
    assert app.state.sentinel_forwarder.statistics().sent == 1
    if spool is not None:  # the second lifespan's forwarder found nothing left by the first
        assert app.state.sentinel_forwarder.statistics().recovered == 0
        assert first.statistics().spooled == 0


def test_a_given_forwarder_cannot_serve_a_second_lifespan(spool: Path | None) -> None:
    app = Starlette(routes=[])
    add_sentinel_forwarder(app, forwarder=BufferingForwarder(RecordingForwarder(), spool=spool), environ={})
    with TestClient(app):
        pass
    with pytest.raises(RuntimeError, match="let add_sentinel_forwarder build the forwarder"), TestClient(app):
        pass


# No forwarder, no mode: settings only.
def test_drain_on_sigterm_setting() -> None:
    env = {"SENTINEL_FORWARDER_DRAIN_ON_SIGTERM": "true"}
    assert ForwarderSettings.resolve(env, require_endpoint=False).drain_on_sigterm is True
    assert ForwarderSettings.resolve({}, require_endpoint=False).drain_on_sigterm is False
    with pytest.raises(ConfigurationError, match="SENTINEL_FORWARDER_DRAIN_ON_SIGTERM"):
        ForwarderSettings.resolve({"SENTINEL_FORWARDER_DRAIN_ON_SIGTERM": "maybe"}, require_endpoint=False)


# Memory only: about where BackgroundForwarder may install its signal handler, not about the pump.
def test_sigterm_handler_needs_the_main_thread(caplog: pytest.LogCaptureFixture) -> None:
    result: list[BackgroundForwarder] = []

    def start() -> None:
        result.append(
            BackgroundForwarder(BufferingForwarder(RecordingForwarder()), drain_on_sigterm=True).start()
        )

    t = threading.Thread(target=start)
    t.start()
    t.join(30)
    result[0].close()
    assert any("needs the main thread" in r.getMessage() for r in caplog.records)


# No forwarder, no mode: a unit test of DaemonWorkers (the spool's own thread is one).
@pytest.mark.anyio
async def test_uploads_run_inline_when_no_thread_can_be_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from sentinel_forwarder._util.workers import DaemonWorkers

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")  # what CPython 3.12 says

    workers = DaemonWorkers(2, name="test")
    monkeypatch.setattr(threading.Thread, "start", refuse)
    ran_on: list[int] = []
    with anyio.fail_after(10):  # without the fallback the call waits for a thread that never comes
        result = await workers.run(
            lambda: ran_on.append(threading.get_ident()) or 42, cancel=threading.Event()
        )
    assert result == 42
    assert ran_on == [threading.get_ident()]
    workers.close()


# -- found in review: each of these failed before its fix ------------------------------------------------


def test_the_sigterm_handler_never_waits_on_a_lock_the_main_thread_may_hold(spool: Path | None) -> None:
    import signal

    passed_on = threading.Event()
    sink = RecordingForwarder()
    fwd = BufferingForwarder(sink, max_interval=FOREVER, spool=spool)
    bg = BackgroundForwarder(fwd, drain_on_sigterm=True)
    original = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: passed_on.set())  # the "previous handler"
    try:
        bg.start()  # installs its handler on top of the one above
        bg.forward(AuditEntry("buffered"))
        with fwd._run.ledger.lock:  # the signal lands while the main thread holds the forwarder's lock
            bg._on_sigterm(signal.SIGTERM, None)  # returns at once: a helper thread drains
        assert passed_on.wait(30), "the previous handler never ran"
        assert [e.summary for e in sink.rows] == ["buffered"]  # drained before it was passed on
    finally:
        signal.signal(signal.SIGTERM, original)


@pytest.mark.anyio
async def test_entering_inside_a_cancelled_scope_leaves_the_scopes_intact(spool: Path | None) -> None:
    sink = RecordingForwarder()
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with BufferingForwarder(sink, spool=spool) as fwd:
            fwd.forward(AuditEntry("x"))
    async with anyio.create_task_group():  # the task's cancel scope stack is still sound
        pass
    assert len(sink.rows) == 1


@pytest.mark.anyio
async def test_the_body_exception_wins_over_a_cancelled_surrounding_scope(spool: Path | None) -> None:
    sink = RecordingForwarder()
    with pytest.raises(ValueError, match="the body's"), anyio.CancelScope() as scope:
        async with BufferingForwarder(sink, spool=spool) as fwd:
            fwd.forward(AuditEntry("x"))
            scope.cancel()
            raise ValueError("the body's")
    assert len(sink.rows) == 1


@pytest.mark.anyio
async def test_aclose_while_the_sink_is_still_opening(spool: Path | None) -> None:
    opened = anyio.Event()

    class SlowToOpen(RecordingForwarder):
        async def __aenter__(self) -> SlowToOpen:
            await opened.wait()
            return self

    fwd = BufferingForwarder(SlowToOpen(), spool=spool)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(fwd.run)
            await anyio.wait_all_tasks_blocked()  # run() waits for the sink to open
            tg.start_soon(fwd.aclose)
            await anyio.wait_all_tasks_blocked()
            opened.set()  # once open, the close requested meanwhile is carried out
    assert fwd.forward(AuditEntry("late")) is False
    assert fwd.statistics().dropped == {"closed": 1}


@pytest.mark.anyio
async def test_flush_waits_for_an_older_batch_that_finishes_last(spool: Path | None) -> None:
    gate = anyio.Event()
    holding = anyio.Event()

    class HoldsTheFirst(RecordingForwarder):
        async def send_batch(self, entries: Any, /) -> Any:
            if not self.batches and not gate.is_set() and entries[0].summary == "r0":
                holding.set()
                await gate.wait()
            return await super().send_batch(entries)

    sink = HoldsTheFirst()
    results: list[int] = []
    async with BufferingForwarder(
        sink, max_batch_size=2, max_batches_in_flight=3, max_interval=FOREVER, spool=spool
    ) as fwd:
        for i in range(4):
            fwd.forward(AuditEntry(f"r{i}"))
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(10):  # with a spool, once committed: mid-commit, flush() counts rows nowhere
            await holding.wait()

        async def flush() -> None:
            results.append(await fwd.flush())

        async with anyio.create_task_group() as tg:
            tg.start_soon(flush)
            await anyio.wait_all_tasks_blocked()
            for i in range(4, 6):  # a later batch finishes while the first is still held
                fwd.forward(AuditEntry(f"r{i}"))
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(10):
                await sink.wait_for_rows(2)  # that later batch, r4 and r5, has finished
            assert results == [], "flush() returned while its oldest batch was still in flight"
            gate.set()
        assert results == [0]


# Spool only: the window is the spool's group commit (rows out of the buffer, not yet in the file).
@pytest.mark.anyio
async def test_flush_waits_for_rows_being_committed_to_the_spool(tmp_path: Path) -> None:
    import sqlite3

    taken = anyio.Event()

    def transform(entry: AuditEntry) -> AuditEntry:  # runs in the pump, between the buffer and the commit
        taken.set()
        return entry

    sink = RecordingForwarder()
    returned: list[tuple[int, int]] = []  # (what flush() returned, rows delivered by then)
    async with BufferingForwarder(sink, spool=tmp_path, max_interval=FOREVER, transform=transform) as fwd:
        (path,) = [p async for p in anyio.Path(tmp_path).glob("spool-*.sqlite3")]  # this process's file
        blocker = sqlite3.connect(str(path), isolation_level=None)
        try:
            # Hold SQLite's write lock: the pump's commit waits for it (the spool's busy timeout is 5 s).
            blocker.execute("BEGIN IMMEDIATE")
            for i in range(5):
                fwd.forward(AuditEntry(f"r{i}"))
            with anyio.fail_after(10):
                await taken.wait()  # the pump has taken the rows; its commit waits for the lock

            async def flush() -> None:
                left = await fwd.flush()
                returned.append((left, len(sink.rows)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(flush)
                await anyio.wait_all_tasks_blocked()
                blocker.execute("ROLLBACK")  # let the commit through
        finally:
            blocker.close()
    assert returned == [(0, 5)], "flush() returned 0 before the rows being committed were delivered"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("spool", "reason"),
    [
        ("memory", "rejected"),
        ("memory", "retries_exhausted"),
        ("spool", "rejected"),
        ("spool", "retries_exhausted"),
    ],
    indirect=["spool"],
)
async def test_a_raising_log_filter_neither_double_counts_nor_escapes_forward(
    spool: Path | None, reason: DropReason
) -> None:
    import logging

    class Broken(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise RuntimeError("a broken filter of the application's")

    log = logging.getLogger("sentinel_forwarder")
    broken = Broken()
    log.addFilter(broken)
    try:
        sink = RecordingForwarder(outcome=lambda rows: SendResult.failed(reason, len(rows), "(Bad) row"))
        fwd = BufferingForwarder(sink, capacity=2, max_batch_size=2, spool=spool)
        results = [fwd.forward(AuditEntry(f"r{i}")) for i in range(4)]  # two dropped: the log raises
        assert results == [True, True, False, False]
        async with fwd:
            pass
    finally:
        log.removeFilter(broken)
    stats = fwd.statistics()
    if spool is None:
        assert stats.dropped == {"queue_full": 2, reason: 2}
        assert stats.offered == stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed
    elif reason == "rejected":  # refused rows are dropped and kept as dead letters; none waits
        assert stats.dropped == {"queue_full": 2, "rejected": 2}
        assert (stats.dead_letters, stats.spooled, stats.recovered) == (2, 0, 0)
    else:  # rows whose failure may heal are kept for the next run, not dropped
        assert stats.dropped == {"queue_full": 2}
        assert (stats.dead_letters, stats.spooled, stats.recovered) == (0, 2, 0)
    out = stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed + stats.spooled
    assert stats.offered + stats.recovered == out


@pytest.mark.parametrize(
    "spool",
    [
        "memory",
        "spool",
    ],
    indirect=True,
)
@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=lambda e: type(e).__name__)
def test_an_interrupt_on_the_background_thread_does_not_end_forwarding(
    exc: BaseException, spool: Path | None
) -> None:
    def transform(entry: AuditEntry) -> AuditEntry:
        if entry.summary == "interrupt":
            raise exc
        return entry

    sink = RecordingForwarder()
    one_by_one = {"max_batch_size": 1, "max_request_rows": 1}
    bg = BackgroundForwarder(BufferingForwarder(sink, transform=transform, spool=spool, **one_by_one)).start()
    try:
        bg.forward(AuditEntry("interrupt"))
        bg.forward(AuditEntry("after"))
        assert bg.flush(timeout=30) == 0
        assert bg.forward(AuditEntry("still open"))
    finally:
        stats = bg.close()
    assert [e.summary for e in sink.rows] == ["after", "still open"]
    if spool is None:
        assert stats.dropped == {"sink_error": 1}
    else:  # the interrupted row alone is lost, and counted (the reason is the fix's to choose)
        assert stats.dropped_total == 1 and (stats.spooled, stats.dead_letters) == (0, 0)
        assert stats.offered + stats.recovered == stats.sent + stats.filtered + stats.dropped_total
    assert bg.error is None


def test_an_interrupt_while_reporting_a_counted_batch_does_not_count_it_again(spool: Path | None) -> None:
    # On trio: asyncio stops its loop wherever a KeyboardInterrupt is raised in a task (asyncio's rule).
    from opentelemetry.metrics import NoOpCounter, NoOpMeter, NoOpMeterProvider

    class Interrupting(NoOpCounter):
        def add(self, amount: Any, attributes: Any = None, context: Any = None) -> None:
            raise KeyboardInterrupt  # Ctrl-C lands while the pump reports a batch it has counted

    class Meter(NoOpMeter):
        def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
            return Interrupting(name) if name == "audit.forward.sent" else super().create_counter(name)

    class Provider(NoOpMeterProvider):
        def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
            return Meter(name)

    fwd = BufferingForwarder(
        RecordingForwarder(), meter_provider=Provider(), max_batch_size=1, drain_timeout=1, spool=spool
    )

    async def main() -> None:
        async with fwd:
            fwd.forward(AuditEntry("counted once"))
            await anyio.sleep_forever()

    with pytest.raises(BaseException):  # noqa: B017 (KeyboardInterrupt, possibly in a group)
        anyio.run(main, backend="trio")
    stats = fwd.statistics()
    assert (stats.sent, dict(stats.dropped)) == (1, {})
    assert (stats.spooled, stats.dead_letters) == (0, 0)  # with a spool: deleted once, never kept


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_drain_deadline_holds_when_the_surrounding_scope_is_cancelled(
    backend: str, spool: Path | None
) -> None:
    # A sink that never answers, and the code around the forwarder cancelled: closing must still end at
    # drain_timeout (the drain is shielded) instead of waiting for the sink forever.
    sink = RecordingForwarder()
    sink.hold()
    fwd = BufferingForwarder(sink, max_batch_size=1, drain_timeout=0.05, spool=spool)

    async def main() -> None:
        with anyio.CancelScope() as scope:
            async with fwd:
                fwd.forward(AuditEntry("held by the sink"))
                with anyio.fail_after(10):
                    while sink.started < 1:
                        await anyio.lowlevel.checkpoint()
                scope.cancel()
                await anyio.sleep_forever()

    runner = threading.Thread(target=anyio.run, args=(main,), kwargs={"backend": backend}, daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "closing in a cancelled scope ignored the drain deadline"
    stats = fwd.statistics()
    if spool is None:
        assert stats.unconfirmed == 1
    else:  # abandoned at the deadline, the row stays in the spool for the next run: never unconfirmed
        assert (stats.unconfirmed, stats.spooled, dict(stats.dropped)) == (0, 1, {})
