"""``BufferingForwarder``: a never-blocking ``forward()`` in front of a batching pump.

Data flows one way: ``forward(entry)`` → bounded buffer → pump (cuts batches by size or age) → up to
``max_batches_in_flight`` concurrent ``inner.send_batch()`` calls. Every offered row ends counted as sent,
filtered or dropped with a reason.

The buffer is a ``collections.deque`` guarded by a ``threading.Lock`` rather than an anyio memory object
stream: anyio streams may only be used from their event loop's thread, and ``forward()`` must also be callable
from other threads. The pump is woken only when a batch may be ready (first row, full batch, close), the same
way as OpenTelemetry's batch processor, so the hot path is an append under an uncontended lock;
``benchmarks/bench_forward.py`` compares it with a bare ``MemoryObjectSendStream.send_nowait``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_BATCHES_IN_FLIGHT", "BufferingForwarder", "ForwarderStatistics", "Transform"]

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from opentelemetry import metrics

from ._entry import AuditEntry, Severity
from ._metrics import DropLog, ForwarderAttributes, instruments_for
from ._protocol import DROP_REASONS, AuditForwarder, DropReason, SendResult

logger = logging.getLogger("sentinel_forwarder")

#: Chosen by measurement (docs/benchmarks.md): throughput grows linearly with batches in flight, so the
#: bound that matters is the DCR's 12,000 requests/min; 4 in flight of 100 rows at ~50 ms is ~80 requests/s,
#: 40 % of one DCR's budget. Raise ``max_batch_size`` before this to go faster.
DEFAULT_MAX_BATCHES_IN_FLIGHT = 4

_NEW, _OPEN, _CLOSING, _CLOSED = range(4)

Transform = Callable[[AuditEntry], "AuditEntry | None"]


@dataclass(frozen=True)
class ForwarderStatistics:
    """A snapshot of a :class:`BufferingForwarder`'s counters.

    After close, ``offered == sent + filtered + sum(dropped.values())``.
    """

    #: Rows passed to ``forward()`` (or ``send_batch()``).
    offered: int
    #: Rows taken into the buffer.
    accepted: int
    #: Rows the sink delivered.
    sent: int
    #: Rows left out on purpose: below ``min_severity`` or dropped by ``transform`` (not losses).
    filtered: int
    #: Rows lost, by reason.
    dropped: Mapping[DropReason, int]
    #: Rows waiting in the buffer now.
    queue_depth: int
    #: Batches being delivered now.
    batches_in_flight: int
    #: Batches whose every row was delivered.
    batches_sent: int
    #: Batches with at least one row dropped by the sink.
    batches_failed: int
    #: The last error reported by the sink, if any.
    last_error: str | None

    @property
    def dropped_total(self) -> int:
        """All rows lost, whatever the reason."""
        return sum(self.dropped.values())


class BufferingForwarder:
    """Buffers audit entries and hands them to *inner* in batches, in the background.

    Use it as an async context manager; the pump runs inside it::

        async with BufferingForwarder(AzureSentinelForwarder(endpoint, rule_id=...)) as forwarder:
            forwarder.forward(AuditEntry("prompt injection blocked", severity=Severity.HIGH))

    :param inner: the sink (or another wrapper) that receives the batches.
    :param max_batch_size: rows per batch; a batch is handed over as soon as it is full.
    :param max_interval: seconds from a batch's first row until it is handed over even if not full.
    :param capacity: rows the buffer holds; when full, new rows are dropped (``reason="queue_full"``).
    :param max_batches_in_flight: batches delivered concurrently.
    :param drain_timeout: seconds that closing may spend delivering what is buffered; the rest is dropped
        (``reason="shutdown_timeout"``).
    :param min_severity: rows below it are filtered out in ``forward()`` (counted as filtered, not dropped).
    :param transform: called on each row in the pump before it is sent; returns the row to send (redacted,
        enriched) or ``None`` to filter it out. If it raises, that row alone is dropped
        (``reason="transform_error"``).
    :param name: the ``forwarder.name`` attribute of this forwarder's metrics.
    :param meter_provider: OpenTelemetry meter provider; the global one by default.
    """

    def __init__(
        self,
        inner: AuditForwarder,
        *,
        max_batch_size: int = 100,
        max_interval: float = 5.0,
        capacity: int = 10_000,
        max_batches_in_flight: int = DEFAULT_MAX_BATCHES_IN_FLIGHT,
        drain_timeout: float = 30.0,
        min_severity: Severity | str = Severity.NONE,
        transform: Transform | None = None,
        name: str = "default",
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if max_interval <= 0:
            raise ValueError(f"max_interval must be positive, not {max_interval}")
        if max_batches_in_flight < 1:
            raise ValueError(f"max_batches_in_flight must be at least 1, not {max_batches_in_flight}")
        if drain_timeout < 0:
            raise ValueError(f"drain_timeout must not be negative, not {drain_timeout}")
        self._inner = inner
        self._max_batch_size = max_batch_size
        self._max_interval = float(max_interval)
        self._capacity = capacity
        self._max_in_flight = max_batches_in_flight
        self._drain_timeout = float(drain_timeout)
        self._min_severity = Severity.parse(min_severity)
        self._transform = transform
        self._name = name

        self._lock = threading.Lock()
        self._queue: deque[AuditEntry] = deque()
        self._state = _NEW
        # forward() appends without the lock (deque.append is atomic) and counts nothing on success; accepted
        # rows are derived: removed from the queue (by the pump, or at close) plus those still queued.
        self._accepting = True  # False once closing: forward() drops with reason "closed"
        self._removed = 0
        self._filtered_early = 0
        self._sent = 0
        self._filtered = 0
        self._dropped: dict[DropReason, int] = dict.fromkeys(DROP_REASONS, 0)
        self._batches_in_flight = 0
        self._batches_sent = 0
        self._batches_failed = 0
        self._last_error: str | None = None

        self._instruments = instruments_for(meter_provider)
        self._attrs = ForwarderAttributes(name)
        self._drop_log = DropLog(logger)
        self._instruments.observe(self)

        self._loop_thread: int | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._wakeup: anyio.Event | None = None  # created on the loop in __aenter__
        self._task_group: TaskGroup | None = None
        self._drained: anyio.Event | None = None
        # The pump and deliveries run shielded, so cancelling the code around ``async with`` still lets
        # the drain deliver; the forwarder cancels them itself at the drain deadline or when the sink fails.
        self._work_scopes: set[anyio.CancelScope] = set()
        self._crashed = False
        self._aborted = False

    # -- the hot path ------------------------------------------------------------------------------------

    def forward(self, entry: AuditEntry) -> bool:
        """Offer *entry* for delivery. Never blocks, never raises for a full buffer; O(1).

        Safe from coroutines on the forwarder's event loop and from any other thread.

        :returns: ``True`` if the entry was taken (or filtered out by ``min_severity``), ``False`` if it was
            dropped because the buffer is full (``reason="queue_full"``) or the forwarder is closed
            (``reason="closed"``).
        :raises TypeError: if *entry* is not an :class:`AuditEntry` (nothing is counted).
        """
        try:
            below = entry.severity < self._min_severity
        except AttributeError:
            raise TypeError(f"forward() takes an AuditEntry, not {type(entry).__name__}") from None
        if below:
            return self._filter_early()
        queue = self._queue
        if len(queue) >= self._capacity or not self._accepting:
            return self._reject()
        queue.append(entry)
        depth = len(queue)
        if depth == 1 or depth == self._max_batch_size:
            self._wake()
        return True

    def _filter_early(self) -> bool:
        with self._lock:
            self._filtered_early += 1
        return True

    def _reject(self) -> bool:
        reason: DropReason = "queue_full" if self._accepting else "closed"
        with self._lock:
            self._dropped[reason] += 1
        self._on_dropped(reason, 1, None)
        return False

    def _wake(self) -> None:
        """Wake the pump: directly on its thread, through the loop's thread-safe queue from others."""
        if self._loop_thread is None:
            return  # not started: the pump looks at the queue when it starts
        if threading.get_ident() == self._loop_thread:
            self._set_wakeup()
        else:
            assert self._token is not None
            # If the loop is gone, close() has accounted for what is queued.
            with contextlib.suppress(anyio.RunFinishedError):
                self._token.backend_class.run_sync_soon(self._set_wakeup, (), self._token.native_token)

    def _set_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _on_dropped(self, reason: DropReason, count: int, detail: str | None) -> None:
        self._instruments.dropped.add(count, self._attrs.by_reason[reason])
        self._drop_log.record(reason, count, detail)

    # -- AuditForwarder ----------------------------------------------------------------------------------

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        """Offer each entry as :meth:`forward` does; ``sent`` counts the ones taken into the buffer."""
        taken = dropped = 0
        reason: DropReason = "queue_full"
        for entry in entries:
            if self.forward(entry):
                taken += 1
            else:
                dropped += 1
                reason = "queue_full" if self._accepting else "closed"
        return SendResult(taken) + SendResult.failed(reason, dropped) if dropped else SendResult(taken)

    @property
    def name(self) -> str:
        """The ``forwarder.name`` metric attribute."""
        return self._name

    @property
    def drain_timeout(self) -> float:
        """Seconds that closing may spend delivering what is buffered."""
        return self._drain_timeout

    def queue_depth(self) -> int:
        """Rows waiting in the buffer."""
        return len(self._queue)

    def statistics(self) -> ForwarderStatistics:
        """A frozen snapshot of the counters."""
        with self._lock:
            queued = len(self._queue)
            dropped = dict(self._dropped)
            if self._state == _CLOSED:
                # A forward() racing with close can append after the final count: such rows are lost too.
                dropped["shutdown_timeout"] += queued
            accepted = self._removed + queued
            return ForwarderStatistics(
                offered=accepted + self._filtered_early + dropped["queue_full"] + dropped["closed"],
                accepted=accepted,
                sent=self._sent,
                filtered=self._filtered_early + self._filtered,
                dropped=MappingProxyType({r: n for r, n in dropped.items() if n}),
                queue_depth=0 if self._state == _CLOSED else queued,
                batches_in_flight=self._batches_in_flight,
                batches_sent=self._batches_sent,
                batches_failed=self._batches_failed,
                last_error=self._last_error,
            )

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> BufferingForwarder:
        if self._state != _NEW:
            raise RuntimeError("a BufferingForwarder can be entered only once; create a new one")
        await self._inner.__aenter__()
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        self._wakeup = anyio.Event()
        self._drained = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._task_group = tg
        with self._lock:
            self._state = _OPEN
        tg.start_soon(self._pump, name="sentinel_forwarder pump")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        """Stop taking rows, deliver what is buffered within ``drain_timeout``, then close *inner*."""
        tg = self._task_group
        assert tg is not None and self._drained is not None, "not entered"
        with self._lock:
            self._state = _CLOSING
            self._accepting = False
        self._set_wakeup()
        try:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self._drain_timeout):
                    await self._drained.wait()
                if not self._drained.is_set():
                    self._abort()
        finally:
            try:
                await tg.__aexit__(exc_type, exc_val, exc_tb)
            finally:
                self._finish()
                with anyio.CancelScope(shield=True):
                    await self._inner.__aexit__(None, None, None)
        return None

    async def aclose(self) -> None:
        """Close without an exception; equivalent to leaving ``async with``."""
        if self._state == _OPEN:
            await self.__aexit__(None, None, None)

    def _abort(self) -> None:
        """Cancel the pump and every delivery in flight, including deliveries started but not yet running."""
        self._aborted = True
        for scope in list(self._work_scopes):
            scope.cancel()

    @contextlib.contextmanager
    def _work_scope(self) -> Iterator[None]:
        scope = anyio.CancelScope(shield=True)
        if self._aborted:
            scope.cancel()
        self._work_scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._work_scopes.discard(scope)

    def _finish(self) -> None:
        """Count what is still queued as lost; stop taking rows for good."""
        reason: DropReason = "sink_error" if self._crashed else "shutdown_timeout"
        left = 0
        with self._lock:
            self._state = _CLOSED
            self._accepting = False
            while self._queue:
                self._queue.popleft()
                left += 1
            self._removed += left
            self._dropped[reason] += left
        if left:
            why = "the sink failed" if self._crashed else "the drain deadline passed"
            self._on_dropped(reason, left, f"{left} rows were still buffered when {why}")
        self._instruments.forget(self)
        self._drop_log.flush()

    # -- the pump ----------------------------------------------------------------------------------------

    async def _pump(self) -> None:
        tg = self._task_group
        assert tg is not None and self._drained is not None
        slots = anyio.Semaphore(self._max_in_flight)
        try:
            with self._work_scope():
                while True:
                    await slots.acquire()
                    batch = await self._next_batch()
                    if not batch:
                        slots.release()
                        break
                    with self._lock:
                        self._batches_in_flight += 1
                    tg.start_soon(self._deliver, batch, slots)
                for _ in range(self._max_in_flight):
                    await slots.acquire()
        finally:
            self._drained.set()

    async def _next_batch(self) -> list[AuditEntry]:
        """Wait for a batch: full, ``max_interval`` after its first row, or what is left when closing."""
        deadline: float | None = None
        while True:
            with self._lock:
                depth = len(self._queue)
                closing = not self._accepting
            if depth >= self._max_batch_size or (depth and closing):
                break
            if not depth and closing:
                return []
            if depth and deadline is None:
                deadline = anyio.current_time() + self._max_interval
            # Idle, wait at most max_interval too: threads racing in forward() can skip the depth == 1
            # wake-up, which must delay their rows by one interval at most, never strand them.
            timeout = self._max_interval if deadline is None else deadline - anyio.current_time()
            if timeout <= 0:
                break
            self._wakeup = event = anyio.Event()
            with anyio.move_on_after(timeout):
                await event.wait()
        with self._lock:
            n = min(len(self._queue), self._max_batch_size)
            self._removed += n
            return [self._queue.popleft() for _ in range(n)]

    async def _deliver(self, batch: list[AuditEntry], slots: anyio.Semaphore) -> None:
        pending = len(batch)  # rows of this batch not yet counted anywhere
        try:
            with self._work_scope():
                rows, filtered = self._apply_transform(batch)
                if filtered:
                    with self._lock:
                        self._filtered += filtered
                pending = len(rows)
                if rows:
                    started = time.perf_counter()
                    result = await self._inner.send_batch(rows)
                    elapsed = time.perf_counter() - started
                    if result.total != len(rows):
                        result = SendResult(
                            min(result.sent, len(rows)),
                            MappingProxyType(
                                {**result.dropped, "sink_error": max(len(rows) - result.total, 0)}
                            ),
                            result.error or f"sink accounted for {result.total} of {len(rows)} rows",
                        )
                    self._account(result, elapsed)
                pending = 0
            if pending:  # cancelled by _abort(): the drain deadline passed or another delivery crashed
                self._count_lost(pending, "sink_error" if self._crashed else "shutdown_timeout", None)
        except Exception as exc:
            self._crashed = True
            self._count_lost(pending, "sink_error", f"{type(exc).__name__}: {exc}")
            self._abort()
            raise
        finally:
            with self._lock:
                self._batches_in_flight -= 1
            slots.release()

    def _count_lost(self, count: int, reason: DropReason, error: str | None) -> None:
        """Count a delivery's rows that the sink never accounted for."""
        if not count:
            return
        with self._lock:
            self._dropped[reason] += count
            self._batches_failed += 1
            if error:
                self._last_error = error
        self._on_dropped(reason, count, error and f"the sink raised {error}")

    def _apply_transform(self, batch: list[AuditEntry]) -> tuple[list[AuditEntry], int]:
        """Run the user's transform on each row; a row it fails on is dropped alone. -> (rows, filtered)"""
        transform = self._transform
        if transform is None:
            return batch, 0
        rows: list[AuditEntry] = []
        filtered = failed = 0
        detail = ""
        for entry in batch:
            try:
                out = transform(entry)
            except Exception as exc:
                failed += 1
                detail = f"transform raised {exc!r} for row Id {entry.id}"
                continue
            if out is None:
                filtered += 1
            elif isinstance(out, AuditEntry):
                rows.append(out)
            else:
                failed += 1
                detail = (
                    f"transform returned {type(out).__name__} for row Id {entry.id}, not AuditEntry or None"
                )
        if failed:
            with self._lock:
                self._dropped["transform_error"] += failed
            self._on_dropped("transform_error", failed, detail)
        return rows, filtered

    def _account(self, result: SendResult, elapsed: float) -> None:
        dropped = {r: n for r, n in result.dropped.items() if n}
        with self._lock:
            self._sent += result.sent
            for reason, n in dropped.items():
                self._dropped[reason] += n
            if dropped:
                self._batches_failed += 1
                if result.error:
                    self._last_error = result.error
            else:
                self._batches_sent += 1
        inst, attrs = self._instruments, self._attrs
        if result.sent:
            inst.sent.add(result.sent, attrs.base)
        outcome = "success" if not dropped else ("partial" if result.sent else "failure")
        inst.batches.add(1, attrs.by_outcome[outcome])
        inst.duration.record(elapsed, attrs.base)
        for reason, n in dropped.items():
            self._on_dropped(reason, n, result.error)
