"""One run of a forwarder: its parts, wired once, and its lifecycle (open → serve → drain → finish).

``BufferingForwarder`` keeps the options and ``forward()``; each run (the first, and a forked child's) is a
:class:`Run`: the buffer, ledger, work scopes, delivery, evidence, stages and the pump the options chose, plus
the events of its lifecycle. Nothing here knows the façade: a run is given what it needs.
"""

from __future__ import annotations

__all__ = ["Run", "RunOptions"]

import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._core.batching import Batching
from .._core.buffer import Buffer
from .._core.delivery import Delivery
from .._core.ledger import Ledger
from .._core.metrics import Instruments, Reporter
from .._core.pump import MemoryPump, Pump
from .._core.scopes import WorkScopes
from .._core.stages import Stages, Transform
from .._core.throttle import RequestBudget
from .._evidence.chain import Key
from .._evidence.heartbeat import Evidence
from .._model.protocol import AuditForwarder
from .._model.snapshots import ForwarderHealth, ForwarderStatistics
from .._spool.pump import SpoolPump
from .._util.ratelimited import DropLog, ErrorLog
from .lifecycle import Lifecycle

logger = logging.getLogger("sentinel_forwarder")


@dataclass(frozen=True)
class RunOptions:
    """What a run needs of the forwarder's options (validated by the forwarder)."""

    name: str
    batching: Batching
    drain_timeout: float
    transform: Transform | None
    chain: bool
    chain_key: Key | None
    heartbeat_interval: float | None
    application: str
    max_requests_per_minute: float | None
    spool: str | None
    spool_max_bytes: int
    spool_max_age: float


class Run:
    """The parts of one run and its lifecycle.

    :param sink: the forwarder's *inner*.
    :param options: the forwarder's options.
    :param instruments: the shared instruments; the run reports its gauges there while it lives.
    :param on_wake_unbound: called by the first row while no loop runs the buffer (a forked child).
    :param state: where the run starts (a forked child's run starts where the fork policy says).
    """

    def __init__(
        self,
        sink: AuditForwarder,
        options: RunOptions,
        instruments: Instruments,
        *,
        on_wake_unbound: Callable[[], None] | None = None,
        state: Lifecycle = Lifecycle.NEW,
    ) -> None:
        self.name = options.name
        self._sink = sink
        self._drain_timeout = options.drain_timeout
        self._instruments = instruments
        self.state = state
        self.errors = errors = ErrorLog(logger)
        self.ledger = ledger = Ledger(Reporter(instruments, options.name, DropLog(logger)))
        batching = options.batching
        self.buffer = buffer = Buffer(batching.capacity, batching.max_batch_size, ledger.lock)
        buffer.on_wake_unbound = on_wake_unbound
        if state is Lifecycle.CLOSED:  # rows offered count as "closed"
            buffer.accepting = False
        self.scopes = scopes = WorkScopes()
        rpm = options.max_requests_per_minute
        self.delivery = delivery = Delivery(
            sink,
            scopes,
            errors,
            budget=None if rpm is None else RequestBudget(rpm),
            on_throttle=ledger.throttled,
        )
        self.evidence = evidence = Evidence(
            delivery.send_uncounted,
            self.statistics,
            errors,
            chain=options.chain,
            key=options.chain_key,
            interval=options.heartbeat_interval,
            application=options.application,
        )
        stages = Stages(options.transform, evidence.link, ledger)
        self.pump: Pump
        if options.spool is None:
            self.pump = MemoryPump(buffer, ledger, stages, delivery, scopes, batching)
        else:
            self.pump = SpoolPump(
                buffer,
                ledger,
                stages,
                delivery,
                scopes,
                batching,
                head=evidence.head,
                resume=evidence.resume,
                directory=options.spool,
                max_bytes=options.spool_max_bytes,
                max_age=options.spool_max_age,
            )
        instruments.observe(self)
        # Created on the event loop when the run opens.
        self._close_requested: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._beats_done: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._drain_deadline = 0.0  # when closing, the drain's deadline (anyio.current_time())

    # -- reading (any thread) ----------------------------------------------------------------------------

    def queue_depth(self) -> int:
        return len(self.buffer.rows)

    def statistics(self) -> ForwarderStatistics:
        pump = self.pump
        return self.ledger.statistics(self.buffer, in_flight=pump.in_flight(), extra=pump.statistics())

    def health(self) -> ForwarderHealth:
        stats = self.statistics()
        last, failures = self.ledger.progress()
        drained = self._drained
        alive = self.state is Lifecycle.OPEN and drained is not None and not drained.is_set()
        return ForwarderHealth(
            pump_alive=alive,
            last_success=last,
            consecutive_failures=max(failures, self.pump.consecutive_failures()),
            backlog=stats.queue_depth + stats.spooled,
            queue_depth=stats.queue_depth,
            spool=self.pump.durable,
            spooled=stats.spooled,
            dead_letters=stats.dead_letters,
            throttled=self.delivery.gate.delay() > 0,
            request_rate=self.request_rate(),
        )

    def request_rate(self) -> float | None:
        return self.delivery.rate()

    def spool_gauges(self) -> tuple[int, int, float, int] | None:
        return self.pump.gauges()

    # -- the lifecycle (on the forwarder's event loop) ---------------------------------------------------

    async def open(self) -> None:
        """Open the pump and the sink.

        :raises RuntimeError: if the run was already started.
        :raises Exception: whatever the sink (or the spool) raises while opening; nothing is started.
        """
        if self.state is not Lifecycle.NEW:
            raise RuntimeError("a BufferingForwarder can be started only once; create a new one")
        self.state = Lifecycle.OPEN  # claimed: a second start fails even while the sink is opening
        # Before the sink opens, so aclose() from another task meanwhile is heard.
        self.buffer.bind()
        self._close_requested = anyio.Event()
        self._drained = anyio.Event()
        self._beats_done = anyio.Event()
        self._stopped = anyio.Event()
        try:
            await self.pump.open()  # an unusable spool directory fails here, at startup
            await self._sink.__aenter__()
        except BaseException:
            self.finish()
            with anyio.CancelScope(shield=True):
                await self.pump.close()
            self._stopped.set()
            raise
        self.buffer.bind_thread()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pump until asked to close or cancelled; then drain under the deadline, shielded."""
        assert self._close_requested is not None and self._stopped is not None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump_until_drained, tg, name="sentinel_forwarder pump")
                tg.start_soon(self._beat_until_closed, name="sentinel_forwarder heartbeat")
                task_status.started()
                try:
                    await self._close_requested.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
        finally:
            self.finish()
            with anyio.CancelScope(shield=True):
                await self.evidence.final(self._drain_deadline - anyio.current_time())
                await self._close_sink()
                await self.pump.close()
            self._stopped.set()

    async def aclose(self) -> None:
        """Ask the run to close and wait until it has (shielded); at once if it never opened."""
        if self._close_requested is None or self._stopped is None:
            if self.state in (Lifecycle.NEW, Lifecycle.FORKED):
                self.finish()  # never opened: rows buffered before are lost
            return
        self._close_requested.set()
        with anyio.CancelScope(shield=True):
            await self._stopped.wait()

    async def flush(self, timeout: float | None) -> int:  # noqa: ASYNC109 (the twin of a sync API)
        running = self.state in (Lifecycle.OPEN, Lifecycle.CLOSING) and self._stopped is not None
        if not running:
            return 0 if self.state is Lifecycle.CLOSED else len(self.buffer.rows)
        return await self.pump.flush(timeout)

    async def _beat_until_closed(self) -> None:
        assert self.buffer.closed is not None and self._beats_done is not None
        try:
            await self.evidence.run(self.buffer.closed)
        finally:
            self._beats_done.set()

    async def _pump_until_drained(self, tg: TaskGroup) -> None:
        assert self._drained is not None
        try:
            await self.pump.run(tg)
        finally:
            self._drained.set()

    async def _drain(self) -> None:
        assert self._drained is not None
        with self.ledger.lock:
            self.state = Lifecycle.CLOSING
        self.buffer.close()
        self._drain_deadline = anyio.current_time() + self._drain_timeout
        assert self._beats_done is not None
        with anyio.move_on_after(self._drain_timeout):
            await self._drained.wait()
            await self._beats_done.wait()  # a heartbeat under way, too, ends by the deadline
        if not (self._drained.is_set() and self._beats_done.is_set()):
            self.scopes.abort()

    async def _close_sink(self) -> None:
        try:
            await self._sink.__aexit__(None, None, None)
        except Exception as exc:
            self.errors.error("sentinel-forwarder: the sink failed to close", exc)

    def finish(self) -> None:
        """Count what is still buffered as lost; stop taking rows for good."""
        self.state = Lifecycle.CLOSED
        left = self.ledger.close(self.buffer)
        self.pump.finish()
        if left:
            self.ledger.reporter.dropped(
                "shutdown_timeout", left, f"{left} rows were still buffered at close", None
            )
        self._instruments.forget(self)
        self.ledger.reporter.drop_log.flush()
