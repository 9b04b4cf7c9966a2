"""The :class:`Pump` protocol, and the memory pump.

A pump takes rows from the buffer and gets them delivered: the memory pump hands batches straight to the
sink; the spool pump (``_spool/pump.py``) commits them to disk first. Both use the same buffer, ledger,
stages and delivery, handed to them once by the forwarder; neither knows the forwarder.

The memory pump cuts a batch when ``max_batch_size`` rows wait, ``max_interval`` after a batch's first
row, on ``flush()`` or at close; under load it coalesces what waits into one delivery of up to
``max_request_rows``, and keeps up to ``max_batches_in_flight`` deliveries going at once.
"""

from __future__ import annotations

__all__ = ["MemoryPump", "Pump"]

import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from .._model.entry import AuditEntry
from .batching import Batching
from .buffer import Buffer
from .delivery import SINK_BACKOFF_MAX, Delivery, reraise_interrupt
from .ledger import Ledger
from .scopes import WorkScopes
from .stages import Stages

_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
#: While a batch waits for the request budget, how often (seconds) it looks whether it filled up.
ADMISSION_POLL = 0.05


class Pump(Protocol):
    """Moves rows from the buffer to the sink; one per run of a forwarder."""

    #: Whether rows are committed to disk before delivery (``forward_durable()`` needs it).
    durable: bool

    async def open(self) -> None:
        """Prepare, before the sink opens (a spool opens its file here: an unusable one fails start-up)."""

    async def run(self, tg: TaskGroup) -> None:
        """Pump until the buffer is closing and what could be delivered was; deliveries run in *tg*."""

    async def close(self) -> None:
        """Release what :meth:`open` took (after the run; shielded by the caller)."""

    def finish(self) -> None:
        """The run is over and every row is counted: wake the flushes still waiting."""

    async def flush(self, timeout: float | None) -> int:  # noqa: ASYNC109
        """Deliver what waits now; -> rows still pending after at most *timeout* seconds."""

    def in_flight(self) -> int:
        """Batches being delivered now."""

    def statistics(self) -> Mapping[str, Any]:
        """This pump's own fields of :class:`~sentinel_forwarder.ForwarderStatistics`."""

    def gauges(self) -> tuple[int, int, float, int] | None:
        """For the spool gauges: (rows, bytes, oldest row's age in seconds, dead letters), or ``None``."""

    def consecutive_failures(self) -> int:
        """Failures in a row this pump knows of beyond the ledger's (a spool keeps failing rows)."""

    def add_durable_waiter(self, position: int, callback: Callable[[bool], None]) -> None:
        """Call ``callback(committed)`` once the row taken at *position* is on disk (or never will be)."""


class MemoryPump:
    """Delivers batches from the buffer straight to the sink.

    :param buffer: where rows wait.
    :param ledger: where every outcome is counted.
    :param stages: transform → filter → link.
    :param delivery: the send path.
    :param scopes: the run's work scopes.
    :param batching: batch sizes and timing.
    """

    durable = False

    def __init__(
        self,
        buffer: Buffer,
        ledger: Ledger,
        stages: Stages,
        delivery: Delivery,
        scopes: WorkScopes,
        batching: Batching,
    ) -> None:
        self._buffer = buffer
        self._ledger = ledger
        self._stages = stages
        self._delivery = delivery
        self._scopes = scopes
        self._batching = batching
        # Where each batch in flight starts, counted in rows taken from the buffer: every row before the
        # smallest of them (or before buffer.taken, if none is in flight) has been counted. flush() waits on
        # it.
        self._in_flight_starts: set[int] = set()
        self._flush_target = 0  # cut partial batches until this many rows were taken from the buffer
        self._flush_waiters: list[tuple[int, anyio.Event]] = []
        # Batches not yet handed to the sink, in the order they were taken: each waits for its turn after its
        # stages (a large batch links longer than a small one taken after it), so rows reach the sink in the
        # order they were offered. The head's event is set: it may go.
        self._turns: deque[tuple[int, anyio.Event]] = deque()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def in_flight(self) -> int:
        return len(self._in_flight_starts)

    def statistics(self) -> Mapping[str, Any]:
        return _NO_EXTRA

    def gauges(self) -> tuple[int, int, float, int] | None:
        return None

    def consecutive_failures(self) -> int:
        return 0

    def add_durable_waiter(self, position: int, callback: Callable[[bool], None]) -> None:
        raise RuntimeError("forward_durable() needs a spool: BufferingForwarder(..., spool=directory)")

    # -- the pump ----------------------------------------------------------------------------------------

    async def run(self, tg: TaskGroup) -> None:
        max_in_flight = self._batching.max_in_flight
        slots = anyio.Semaphore(max_in_flight)
        with self._scopes.shielded():
            while True:
                await slots.acquire()
                try:
                    wait = self._delivery.backoff()
                    if wait and self._buffer.accepting:
                        await self._buffer.pause(wait)
                    batch = await self._next_batch()
                except Exception as exc:  # a bug in the pump itself: log it, keep pumping
                    slots.release()
                    self._delivery.errors.error("sentinel-forwarder: the pump failed; it goes on", exc)
                    await self._buffer.pause(SINK_BACKOFF_MAX)
                    continue
                if batch is None:
                    slots.release()
                    break
                start, rows = batch
                tg.start_soon(self._deliver, rows, start, slots)
            for _ in range(max_in_flight):
                await slots.acquire()

    async def _next_batch(self) -> tuple[int, list[AuditEntry]] | None:
        """Wait for a batch: full, ``max_interval`` after its first row, or what is left when closing."""
        buffer, batching = self._buffer, self._batching
        deadline: float | None = None
        while True:
            self._ledger.flush_due_logs()
            with buffer.lock:
                depth = len(buffer.rows)
                closing = not buffer.accepting
            flushing = buffer.taken < self._flush_target
            if depth >= batching.max_batch_size or (depth and (closing or flushing)):
                break
            if not depth and closing:
                return None
            if depth and deadline is None:
                deadline = anyio.current_time() + batching.max_interval
            # Idle, wait at most max_interval too: threads racing in forward() can skip the depth == 1
            # wake-up, which must delay their rows by one interval at most, never strand them. Wake up as
            # well when a held-back drop count is due to be logged.
            timeout = batching.max_interval if deadline is None else deadline - anyio.current_time()
            if timeout <= 0:
                break
            await buffer.wait(min(timeout, self._ledger.logs_due_in()))
        await self._admitted()
        # Coalesce what waits, up to a request; in flight from the moment it leaves the buffer.
        start, rows = buffer.take(batching.max_request_rows, self._in_flight_starts.add)
        self._turns.append((start, anyio.Event()))
        if len(self._turns) == 1:
            self._turns[0][1].set()
        return start, rows

    async def _admitted(self) -> None:
        """Wait while the service throttles, and for the request budget unless the request is large
        (:attr:`Batching.large`); rows that arrive meanwhile join it (up to ``max_request_rows``)."""
        buffer = self._buffer
        while True:
            wait = self._delivery.delay(len(buffer.rows), self._batching, closing=not buffer.accepting)
            if wait <= 0:
                return
            # Look again soon: the request may fill up meanwhile, and then it goes.
            await anyio.sleep(min(wait, ADMISSION_POLL))

    async def _deliver(self, batch: list[AuditEntry], start: int, slots: anyio.Semaphore) -> None:
        ledger = self._ledger
        pending = len(batch)  # rows of this batch not yet counted anywhere
        handed = False  # whether the sink has them (then their fate is unknown if we give up)
        try:
            with self._scopes.shielded():
                staged = await self._stages.run(batch)
                pending = len(staged.rows)
                await self._my_turn(start)
                self._pass_turn(start)  # the next batch may go once this one is with the sink
                if staged.rows:
                    handed = True
                    attempt = await self._delivery.send(staged.rows, fate="its batch is dropped (sink_error)")
                    # Counting cannot fail; what reports a count (the application's metrics and logs) can
                    # raise (an interrupt): zero ``pending`` first, so nothing below counts these rows again.
                    if attempt.raised is not None:
                        count, pending = pending, 0
                        ledger.lost(count, "sink_error", attempt.error)
                        attempt.reraise_interrupt()
                    elif attempt.result is not None:
                        pending = 0
                        ledger.delivered(attempt.result, attempt.elapsed)
                    # else: cut short at the drain deadline (pending, handed)
                else:
                    pending = 0
            if pending:  # cancelled by the abort: the drain deadline passed
                if handed:
                    ledger.unconfirmed(pending, "the drain deadline passed while the sink had them")
                else:
                    ledger.lost(pending, "shutdown_timeout", "the drain deadline passed")
        except BaseException as exc:
            # A bug in the stages (or an interrupt from the transform or a report): this batch alone.
            count, pending = pending, 0
            ledger.lost(count, "sink_error", self._delivery.contain(exc, "its batch is dropped (sink_error)"))
            reraise_interrupt(exc)
        finally:
            self._pass_turn(start)  # if it never got its turn (aborted, or the stages raised)
            self._settle(start)
            slots.release()

    async def _my_turn(self, start: int) -> None:
        """Wait until every batch taken before the one at *start* was handed to the sink."""
        for ticket, event in self._turns:
            if ticket == start:
                await event.wait()
                return

    def _pass_turn(self, start: int) -> None:
        """The batch at *start* is with the sink (or never will be): let the next one go."""
        for i, (ticket, _) in enumerate(self._turns):
            if ticket == start:
                del self._turns[i]
                if i == 0 and self._turns:
                    self._turns[0][1].set()
                return

    # -- flush -------------------------------------------------------------------------------------------

    async def flush(self, timeout: float | None) -> int:  # noqa: ASYNC109
        with self._buffer.lock:
            target = self._buffer.taken + len(self._buffer.rows)
        if target <= self._counted_through():
            return 0
        self._flush_target = max(self._flush_target, target)
        self._buffer.set_wakeup()
        waiter = (target, anyio.Event())
        self._flush_waiters.append(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter[1].wait()
        finally:
            with contextlib.suppress(ValueError):
                self._flush_waiters.remove(waiter)
        return max(target - self._counted_through(), 0)

    def finish(self) -> None:
        self._wake_flushes()

    def _counted_through(self) -> int:
        """How many rows taken from the buffer, in order, are all counted (batches finish out of order)."""
        with self._buffer.lock:
            return min(self._in_flight_starts, default=self._buffer.taken)

    def _settle(self, start: int) -> None:
        """The batch taken from the buffer at *start* is counted; wake the flushes that are complete."""
        with self._buffer.lock:
            self._in_flight_starts.discard(start)
        self._wake_flushes()

    def _wake_flushes(self) -> None:
        done = self._counted_through()
        for target, event in self._flush_waiters:
            if done >= target:
                event.set()
