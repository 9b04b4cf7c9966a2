"""``BufferingForwarder``: a never-blocking ``forward()`` in front of a batching pump.

Data flows one way: ``forward(entry)`` → bounded buffer → pump (cuts batches by size or age) → up to
``max_batches_in_flight`` concurrent ``inner.send_batch()`` calls. Every offered row ends counted exactly
once: sent, filtered, dropped with a reason, or unconfirmed (sent, but whether it landed is unknown).

Nothing that goes wrong after the forwarder has opened reaches the application: a sink that raises, returns
junk or loses count, a transform that raises, a row that cannot be serialised, all are counted and logged, and
the pump goes on. Only opening can raise (the sink's own ``__aenter__``: a misconfiguration).

The buffer is a ``collections.deque`` appended to without a lock rather than an anyio memory object stream:
anyio streams may only be used from their event loop's thread, and ``forward()`` must also be callable from
other threads. The pump is woken only when a batch may be ready (first row, full batch, close), the same way
as OpenTelemetry's batch processor; ``benchmarks/bench_forward.py`` compares it with a bare
``MemoryObjectSendStream.send_nowait``.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BATCHES_IN_FLIGHT",
    "DEFAULT_MAX_REQUEST_ROWS",
    "DEFAULT_SPOOL_MAX_AGE",
    "DEFAULT_SPOOL_MAX_BYTES",
    "BufferingForwarder",
    "ForwarderStatistics",
    "Transform",
]

import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus
from opentelemetry import metrics

from ._chain import Key
from ._entry import AuditEntry, Severity
from ._health import ForwarderHealth
from ._heartbeat import Evidence, default_application
from ._metrics import DropLog, ErrorLog, ForwarderAttributes, instruments_for
from ._protocol import DROP_REASONS, AuditForwarder, DropReason, SendResult
from ._spooling import SpoolPump

if TYPE_CHECKING:
    from ._background import BackgroundForwarder

logger = logging.getLogger("sentinel_forwarder")

#: Chosen by measurement (docs/benchmarks.md): throughput grows linearly with batches in flight, so the
#: bound that matters is the DCR's 12,000 requests/min; 4 in flight of 100 rows at ~50 ms is ~80 requests/s,
#: 40 % of one DCR's budget. Raise ``max_batch_size`` before this to go faster.
DEFAULT_MAX_BATCHES_IN_FLIGHT = 4
#: Chosen by measurement (docs/benchmarks.md): the sink cuts a delivery into ~1 MB requests, and only its last
#: request is partly filled, so a delivery should span a few megabytes. Rows are ~550 bytes of JSON with the
#: hash chain (~340 without): 5,000 of them are ~2.7 MB, three requests (~1.1 per MB; 2,500 rows made two
#: requests of 1.4 MB, ~1.5 per MB), and ~1.7 MB, two requests, without the chain.
DEFAULT_MAX_REQUEST_ROWS = 5_000
#: The spool's disk budget: 1 GiB of row JSON is ~3 million rows of ~355 bytes (an hour at 800 rows/s).
DEFAULT_SPOOL_MAX_BYTES = 1 << 30
#: Rows older than this leave the spool as ``expired``: one day, well inside the two days after which Azure
#: replaces a row's ``TimeGenerated`` with the time it received the row.
DEFAULT_SPOOL_MAX_AGE = 86_400.0
#: References to the spools of a parent process, kept in a forked child so that their SQLite connections are
#: never closed (closing would run SQLite's clean-up against files the parent is using).
_INHERITED_SPOOLS: list[object] = []
#: After a sink raised, the pump waits up to this (doubling per consecutive failure, full jitter) before the
#: next batch, so a broken sink is not called in a tight loop.
_SINK_BACKOFF_FIRST = 0.05
_SINK_BACKOFF_MAX = 5.0
#: Exceptions that stop the program on purpose: counted, then re-raised. Everything else is contained.
_INTERRUPTS = (KeyboardInterrupt, SystemExit)

_NEW, _OPEN, _CLOSING, _CLOSED = range(4)

#: Every live forwarder, so a forked child can give each a fresh state (os.register_at_fork below).
_forwarders: weakref.WeakSet[BufferingForwarder] = weakref.WeakSet()

Transform = Callable[[AuditEntry], "AuditEntry | None"]


@dataclass(frozen=True)
class ForwarderStatistics:
    """A snapshot of a :class:`BufferingForwarder`'s counters.

    After close, ``offered == sent + filtered + sum(dropped.values()) + unconfirmed``.
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
    #: Rows sent whose landing is unknown: their answer was lost, or they were on the wire at the deadline.
    unconfirmed: int
    #: Rows waiting in the buffer now.
    queue_depth: int
    #: Batches being delivered now.
    batches_in_flight: int
    #: Batches whose every row was delivered.
    batches_sent: int
    #: Batches with at least one row not delivered.
    batches_failed: int
    #: The last error reported by the sink, if any.
    last_error: str | None
    #: With a spool: rows waiting in it now (on disk, including those being delivered).
    spooled: int = 0
    #: With a spool: bytes of those rows' JSON.
    spooled_bytes: int = 0
    #: With a spool: seconds since the oldest waiting row was spooled (``None``: the spool is empty).
    oldest_spooled_age: float | None = None
    #: With a spool: rows the service refused, kept with its answer (already counted in ``dropped``).
    dead_letters: int = 0
    #: With a spool: rows taken over from an earlier run or a dead process (delivered as if offered now).
    recovered: int = 0

    @property
    def dropped_total(self) -> int:
        """All rows lost, whatever the reason."""
        return sum(self.dropped.values())


class BufferingForwarder:
    """Buffers audit entries and hands them to *inner* in batches, in the background.

    Use it as an async context manager; the pump runs inside it::

        async with BufferingForwarder(AzureSentinelForwarder(endpoint, rule_id=...)) as forwarder:
            forwarder.forward(AuditEntry("prompt injection blocked", severity=Severity.HIGH))

    or start it in a task group you own, and close it from any task::

        async with anyio.create_task_group() as tg:
            await tg.start(forwarder.run)
            ...
            await forwarder.aclose()

    :param inner: the sink (or another wrapper) that receives the batches.
    :param max_batch_size: a batch is due as soon as this many rows wait.
    :param max_interval: seconds from a batch's first row until it is handed over even if not full.
    :param max_request_rows: rows one delivery may take when more than a batch is waiting (under load the
        waiting rows are coalesced into requests near the 1 MB limit: fewer requests, more rows per second).
        At least ``max_batch_size``; set it to ``max_batch_size`` for fixed-size batches. ``None``:
        :data:`DEFAULT_MAX_REQUEST_ROWS`, or ``max_batch_size`` if that is larger.
    :param capacity: rows the buffer holds; when full, new rows are dropped (``reason="queue_full"``).
    :param max_batches_in_flight: batches delivered concurrently.
    :param drain_timeout: seconds that closing may spend delivering what is buffered; then rows still buffered
        are dropped (``reason="shutdown_timeout"``) and rows the sink was delivering are *unconfirmed*.
    :param min_severity: rows below it are filtered out in ``forward()`` (counted as filtered, not dropped).
    :param transform: called on each row in the pump before it is sent; returns the row to send (redacted,
        enriched) or ``None`` to filter it out. If it raises or returns anything else, that row alone is
        dropped (``reason="transform_error"``).
    :param name: the ``forwarder.name`` attribute of this forwarder's metrics.
    :param meter_provider: OpenTelemetry meter provider; the global one by default.
    :param spool: a directory for the durable spool (see docs/durability.md): rows are committed to a SQLite
        file there before delivery and deleted only once the service accepted them; failures that may heal
        keep them there, retried with backoff; refused rows become dead letters; rows left at close (or by a
        crash) are delivered by the next forwarder that starts on the directory. Processes may share it.
    :param spool_max_bytes: the spool's budget of row JSON; when full, the lowest-severity, oldest rows are
        shed (``reason="shed"``) and a row never displaces one of higher severity.
    :param spool_max_age: seconds a row may wait in the spool; then it is dropped (``reason="expired"``).
    :param chain: link the rows sent into a hash chain (``ChainId``, ``Sequence``, ``PreviousHash``,
        ``Hash``), after ``min_severity`` and ``transform`` (docs/tamper-evidence.md). With a spool the
        chain continues across restarts; without one each run (and each forked child) starts a new chain.
    :param chain_key: a key for HMAC-SHA256 hashes (``str`` as UTF-8, or ``bytes``); without one, SHA-256.
        Never logged, never in a ``repr``.
    :param heartbeat_interval: seconds between heartbeat rows sent to *inner* (and one more at close);
        ``None`` (the default here; ``add_sentinel_forwarder`` sends one every 60 s) or 0: none.
    :param application: the application name heartbeat rows carry; the program's name by default.
    """

    def __init__(
        self,
        inner: AuditForwarder,
        *,
        max_batch_size: int = 100,
        max_interval: float = 5.0,
        max_request_rows: int | None = None,
        capacity: int = 10_000,
        max_batches_in_flight: int = DEFAULT_MAX_BATCHES_IN_FLIGHT,
        drain_timeout: float = 20.0,
        min_severity: Severity | str = Severity.NONE,
        transform: Transform | None = None,
        name: str = "default",
        meter_provider: metrics.MeterProvider | None = None,
        spool: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        spool_max_age: float = DEFAULT_SPOOL_MAX_AGE,
        chain: bool = True,
        chain_key: Key | None = None,
        heartbeat_interval: float | None = None,
        application: str | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        if max_request_rows is None:
            max_request_rows = max(DEFAULT_MAX_REQUEST_ROWS, max_batch_size)
        if max_request_rows < max_batch_size:
            raise ValueError(
                f"max_request_rows ({max_request_rows}) must be at least max_batch_size ({max_batch_size})"
            )
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if not max_interval > 0:
            raise ValueError(f"max_interval must be positive, not {max_interval}")
        if max_batches_in_flight < 1:
            raise ValueError(f"max_batches_in_flight must be at least 1, not {max_batches_in_flight}")
        if not drain_timeout >= 0:
            raise ValueError(f"drain_timeout must not be negative, not {drain_timeout}")
        if spool_max_bytes < 1:
            raise ValueError(f"spool_max_bytes must be at least 1, not {spool_max_bytes}")
        if not spool_max_age > 0:
            raise ValueError(f"spool_max_age must be positive, not {spool_max_age}")
        if heartbeat_interval is not None and not heartbeat_interval >= 0:
            raise ValueError(f"heartbeat_interval must not be negative, not {heartbeat_interval}")
        self._chain_options = (
            chain,
            chain_key,
            heartbeat_interval or None,
            application or default_application(),
        )
        self._spool_dir = None if spool is None else os.fspath(spool)
        self._spool_max_bytes = spool_max_bytes
        self._spool_max_age = float(spool_max_age)
        self._inner = inner
        self._max_batch_size = max_batch_size
        self._max_request_rows = max_request_rows
        self._max_interval = float(max_interval)
        self._capacity = capacity
        self._max_in_flight = max_batches_in_flight
        self._drain_timeout = float(drain_timeout)
        self._min_severity = Severity.parse(min_severity)
        self._transform = transform
        self._name = name
        self._instruments = instruments_for(meter_provider)
        self._attrs = ForwarderAttributes(name)
        #: The thread that runs this forwarder (a BackgroundForwarder sets itself here), if any.
        self._runner: BackgroundForwarder | None = None
        self._init_state()
        _forwarders.add(self)

    def _init_state(self) -> None:
        """Everything that belongs to one run: buffer, counters, locks, loop objects."""
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
        self._unconfirmed = 0
        self._dropped: dict[DropReason, int] = dict.fromkeys(DROP_REASONS, 0)
        self._batches_sent = 0
        self._batches_failed = 0
        self._last_error: str | None = None
        self._sink_failures = 0  # consecutive batches whose send_batch raised
        self._last_success: float | None = None  # time.time() of the last delivery that landed rows
        self._failures_in_a_row = 0  # deliveries that did not land every row, since the last that did
        # Where each batch in flight starts, counted in rows taken from the buffer: every row before the
        # smallest of them (or before _removed, if none is in flight) has been counted. flush() waits on it.
        self._in_flight_starts: set[int] = set()
        self._flush_target = 0  # cut partial batches until this many rows were taken from the buffer
        self._flush_waiters: list[tuple[int, anyio.Event]] = []
        self._start_in_child = False  # a forked child's forwarder starts its own thread on the first row

        self._drop_log = DropLog(logger)
        self._errors = ErrorLog(logger)
        chain, key, interval, application = self._chain_options
        self._evidence = Evidence(self, chain=chain, key=key, interval=interval, application=application)
        self._spool_pump = (
            None
            if self._spool_dir is None
            else SpoolPump(
                self, self._spool_dir, max_bytes=self._spool_max_bytes, max_age=self._spool_max_age
            )
        )
        self._instruments.observe(self)

        # Created on the event loop when the forwarder opens.
        self._loop_thread: int | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._wakeup: anyio.Event | None = None
        self._close_requested: anyio.Event | None = None
        self._closing: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._host: TaskGroup | None = None  # the task group of ``async with``
        # The pump and deliveries run shielded, so cancelling the code around the forwarder still lets the
        # drain deliver; the forwarder cancels them itself at the drain deadline.
        self._work_scopes: set[anyio.CancelScope] = set()
        self._aborted = False
        self._drain_deadline = 0.0  # when closing, the drain's deadline (anyio.current_time())

    # -- fork ------------------------------------------------------------------------------------------

    def _reset_in_fork_child(self) -> None:
        """In a forked child: an unopened forwarder with the same options, an empty buffer, zero counters and
        new locks (the parent's buffered rows stay the parent's to send). If it was running in the parent,
        the child's first ``forward()`` starts it on a thread of the child's own."""
        state = self._state
        if self._spool_pump is not None:
            _INHERITED_SPOOLS.append(self._spool_pump.spool)
        self._init_state()
        reset = getattr(self._inner, "reset_after_fork", None)
        if callable(reset):
            reset()
        if self._runner is not None:
            self._runner.reset_in_fork_child()
        if state == _CLOSED:  # closed in the parent: closed in the child too (rows count as "closed")
            self._state, self._accepting = _CLOSED, False
        elif state != _NEW:
            self._start_in_child = True  # _wake() starts it: the child's first row always wakes the pump

    def _start_fork_child(self) -> None:
        with self._lock:
            if not self._start_in_child:
                return
            self._start_in_child = False
        try:
            runner = self._runner
            if runner is None:
                from ._background import BackgroundForwarder

                runner = BackgroundForwarder(self)
            runner.start_in_fork_child()
        except Exception as exc:  # no thread to be had: count rows as closed rather than strand them
            self._accepting = False
            self._errors.error("sentinel-forwarder could not start in a forked child", exc)

    # -- the hot path ------------------------------------------------------------------------------------

    def forward(self, entry: AuditEntry) -> bool:
        """Offer *entry* for delivery. Never blocks, never raises for a full buffer; O(1).

        Safe from coroutines on the forwarder's event loop and from any other thread.

        :returns: ``True`` if the entry was taken (or filtered out by ``min_severity``), ``False`` if it was
            dropped because the buffer is full (``reason="queue_full"``) or the forwarder is closed
            (``reason="closed"``).
        :raises TypeError: if *entry* is not an :class:`AuditEntry` (nothing is counted).
        """
        if entry.__class__ is not AuditEntry and not isinstance(entry, AuditEntry):
            raise TypeError(f"forward() takes an AuditEntry, not {type(entry).__name__}")
        if entry.severity < self._min_severity:
            return self._filter_early()
        queue = self._queue
        if len(queue) >= self._capacity or not self._accepting:
            return self._reject()
        queue.append(entry)
        depth = len(queue)
        if depth == 1 or depth == self._max_batch_size:
            self._wake()
        return True

    async def forward_durable(self, entry: AuditEntry, *, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Offer *entry* like :meth:`forward`, then wait until it is committed to the spool.

        For records that must survive a crash: once this returns ``True`` the row is on disk (or was filtered
        out on purpose) and is delivered even if the process is killed now. Call it from the forwarder's
        event loop; ``BackgroundForwarder.forward_durable`` is the blocking twin.

        :returns: ``True`` once committed (or filtered out); ``False`` if the row was dropped (full buffer,
            closed, shed by a full spool, transform failure) or *timeout* passed first (it may still be
            committed later).
        :raises RuntimeError: if the forwarder has no spool.
        :raises TypeError: if *entry* is not an :class:`AuditEntry`.
        """
        done = anyio.Event()
        outcome: list[bool] = []

        def settle(ok: bool) -> None:  # on the forwarder's loop: the pump commits there
            outcome.append(ok)
            done.set()

        answer = self._offer_durable(entry, settle)
        if answer is not None:
            return answer
        with anyio.move_on_after(timeout):
            await done.wait()
        return bool(outcome and outcome[0])

    def _offer_durable(self, entry: AuditEntry, settle: Callable[[bool], None]) -> bool | None:
        """Offer *entry*; ``settle(committed)`` is called once it is committed or dropped. -> the final
        answer at once (filtered, or dropped before it was taken), or ``None``: wait for *settle*."""
        if self._spool_pump is None:
            raise RuntimeError("forward_durable() needs a spool: BufferingForwarder(..., spool=directory)")
        if not isinstance(entry, AuditEntry):
            raise TypeError(f"forward_durable() takes an AuditEntry, not {type(entry).__name__}")
        if entry.severity < self._min_severity:
            return self._filter_early()
        with self._lock:
            queue = self._queue
            if len(queue) >= self._capacity or not self._accepting:
                accepted = False
            else:
                queue.append(entry)
                accepted = True
                self._spool_pump.add_durable_waiter(self._removed + len(queue), settle)
        if not accepted:
            return self._reject()
        self._wake()
        return None

    def _filter_early(self) -> bool:
        with self._lock:
            self._filtered_early += 1
        return True

    def _reject(self) -> bool:
        self._count_dropped("queue_full" if self._accepting else "closed", 1, None)
        return False

    def _count_dropped(
        self, reason: DropReason, count: int, detail: str | None, *, severity: Severity | None = None
    ) -> None:
        """Count *count* rows dropped for *reason*, then report them (metrics and the drop log)."""
        with self._lock:
            self._dropped[reason] += count
        self._on_dropped(reason, count, detail, severity=severity)

    def _wake(self) -> None:
        """Wake the pump: directly on its thread, through the loop's thread-safe queue from others."""
        if self._loop_thread is None:
            if self._start_in_child:
                self._start_fork_child()
            return  # not started: the pump looks at the queue when it starts
        if threading.get_ident() == self._loop_thread:
            self._set_wakeup()
        else:
            assert self._token is not None
            # If the loop is gone, close has accounted for what is queued.
            with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
                self._token.backend_class.run_sync_soon(self._set_wakeup, (), self._token.native_token)

    def _set_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _on_dropped(
        self, reason: DropReason, count: int, detail: str | None, *, severity: Severity | None = None
    ) -> None:
        # Metrics and logging belong to the application (its exporters, handlers, filters). If they fail, the
        # count already taken stands, and forward() must not raise: their failure is not ours to report.
        with contextlib.suppress(Exception):
            attrs = self._attrs.by_reason[reason]
            if severity is not None:
                attrs = {**attrs, "severity": severity.label}
            self._instruments.dropped.add(count, attrs)
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
                unconfirmed=self._unconfirmed,
                queue_depth=0 if self._state == _CLOSED else queued,
                batches_in_flight=len(self._in_flight_starts),
                batches_sent=self._batches_sent,
                batches_failed=self._batches_failed,
                last_error=self._last_error,
                **self._spool_statistics(),
            )

    def health(self) -> ForwarderHealth:
        """A frozen snapshot for a readiness endpoint: pump alive, last success, failures, backlog."""
        stats = self.statistics()
        pump = self._spool_pump
        with self._lock:
            alive = self._state == _OPEN and self._drained is not None and not self._drained.is_set()
            last, failures = self._last_success, self._failures_in_a_row
        if pump is not None:  # with a spool, failing rows are kept, not dropped: its own count says
            failures = max(failures, pump._failures)
        return ForwarderHealth(
            pump_alive=alive,
            last_success=last,
            consecutive_failures=failures,
            backlog=stats.queue_depth + stats.spooled,
            queue_depth=stats.queue_depth,
            spool=pump is not None,
            spooled=stats.spooled,
            dead_letters=stats.dead_letters,
        )

    def _spool_statistics(self) -> dict[str, Any]:
        pump = self._spool_pump
        if pump is None:
            return {}
        spool = pump.spool
        oldest = pump.oldest
        return {
            "spooled": spool.rows,
            "spooled_bytes": spool.bytes,
            "oldest_spooled_age": None if oldest is None else max(time.time() - oldest, 0.0),
            "dead_letters": spool.dead_letters,
            "recovered": pump.recovered,
        }

    def spool_gauges(self) -> tuple[int, int, float, int] | None:
        """For the spool gauges: (rows, bytes, oldest row's age in seconds, dead letters); ``None``
        without a spool."""
        pump = self._spool_pump
        if pump is None:
            return None
        spool, oldest = pump.spool, pump.oldest
        age = 0.0 if oldest is None else max(time.time() - oldest, 0.0)
        return spool.rows, spool.bytes, age, spool.dead_letters

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> BufferingForwarder:
        await self._open()
        host = anyio.create_task_group()
        await host.__aenter__()
        self._host = host
        # start_soon, not start: nothing here may be cancelled, or the host task group would be left open
        # inside the caller's scopes. Rows are buffered from now on; the pump picks them up when it runs.
        host.start_soon(self._serve, name="sentinel_forwarder serve")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        """Stop taking rows, deliver what is buffered within ``drain_timeout``, then close *inner*.

        An exception raised in the body propagates unchanged; the forwarder's own troubles never do.
        """
        host, self._host = self._host, None
        try:
            await self.aclose()
        finally:
            if host is not None:
                # The pump has stopped, so the task group is empty. The body's exception is not passed on: it
                # is the application's, and it propagates as raised (not wrapped in an exception group).
                try:
                    await host.__aexit__(None, None, None)
                except anyio.get_cancelled_exc_class():
                    if exc_val is None:
                        raise
                    # The surrounding scope is cancelled, and the body raised: its exception wins, as it
                    # would without the forwarder (the cancellation is delivered again at the next await).
        return None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open *inner*, then pump until :meth:`aclose` (or cancellation), drain, and close *inner*.

        For ``await task_group.start(forwarder.run)``: it reports started once the forwarder takes rows. If
        the task running it is cancelled, it still drains within ``drain_timeout`` before it returns.

        :raises RuntimeError: if the forwarder was already started.
        :raises Exception: whatever *inner* raises while opening (a misconfiguration); nothing is started.
        """
        await self._open()
        await self._serve(task_status=task_status)

    async def aclose(self) -> None:
        """Stop taking rows, drain within ``drain_timeout``, close *inner*; return when done. Idempotent.

        Works from any task on the forwarder's event loop, and from several at once. Shielded: cancelling
        the caller does not cut the drain short.
        """
        if self._close_requested is None or self._stopped is None:
            if self._state == _NEW:
                self._finish()  # never opened: rows buffered before are lost
            return
        self._close_requested.set()
        with anyio.CancelScope(shield=True):
            await self._stopped.wait()

    async def flush(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 (the twin of a sync API)
        """Deliver what is buffered now, without closing; wait at most *timeout* seconds.

        Partial batches go out at once instead of waiting for ``max_interval``. For jobs that end, tests and
        task queues; ``BackgroundForwarder.flush`` is the blocking twin.

        :returns: how many of the rows buffered at the call are still pending (0: every one was delivered or
            counted); the buffer's depth if the forwarder is not running. With a spool it waits until the
            buffer and the spool are both empty (rows offered meanwhile included) and returns what still
            waits in them.
        """
        with self._lock:
            target = self._removed + len(self._queue)
            running = self._state in (_OPEN, _CLOSING) and self._stopped is not None
        if not running:
            return 0 if self._state == _CLOSED else len(self._queue)
        if self._spool_pump is not None:
            return await self._flush_spool(timeout)
        if target <= self._counted_through():
            return 0
        self._flush_target = max(self._flush_target, target)
        self._set_wakeup()
        waiter = (target, anyio.Event())
        self._flush_waiters.append(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter[1].wait()
        finally:
            with contextlib.suppress(ValueError):
                self._flush_waiters.remove(waiter)
        return max(target - self._counted_through(), 0)

    async def _flush_spool(self, timeout: float | None) -> int:  # noqa: ASYNC109
        """With a spool: wait until the buffer and the spool are empty. -> rows still waiting."""
        assert self._spool_pump is not None
        spool = self._spool_pump.spool
        if self._queue or spool.rows:
            waiter = (0, anyio.Event())
            self._flush_waiters.append(waiter)
            self._set_wakeup()
            try:
                with anyio.move_on_after(timeout):
                    await waiter[1].wait()
            finally:
                with contextlib.suppress(ValueError):
                    self._flush_waiters.remove(waiter)
        return len(self._queue) + spool.rows

    def _counted_through(self) -> int:
        """How many rows taken from the buffer, in order, are all counted (batches finish out of order)."""
        with self._lock:
            return min(self._in_flight_starts, default=self._removed)

    def _settle(self, start: int) -> None:
        """The batch taken from the buffer at *start* is counted; wake the flushes that are complete."""
        with self._lock:
            self._in_flight_starts.discard(start)
        self._wake_flushes()

    def _wake_flushes(self) -> None:
        done = self._counted_through()
        for target, event in self._flush_waiters:
            if done >= target:
                event.set()

    async def _open(self) -> None:
        if self._state != _NEW:
            raise RuntimeError("a BufferingForwarder can be started only once; create a new one")
        self._state = _OPEN  # claimed: a second start fails even while the sink is opening
        # Before the sink opens, so aclose() from another task meanwhile is heard.
        self._wakeup = anyio.Event()
        self._close_requested = anyio.Event()
        self._closing = anyio.Event()
        self._drained = anyio.Event()
        self._stopped = anyio.Event()
        try:
            if self._spool_pump is not None:
                await self._spool_pump.open()  # an unusable directory fails here, at startup
            await self._inner.__aenter__()
        except BaseException:
            self._finish()
            if self._spool_pump is not None:
                with anyio.CancelScope(shield=True):
                    await self._spool_pump.close()
            self._stopped.set()
            raise
        # _token before _loop_thread: forward() on another thread reads them in that order.
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pump until asked to close or cancelled; then drain under the deadline, shielded."""
        assert self._close_requested is not None and self._stopped is not None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, tg, name="sentinel_forwarder pump")
                assert self._closing is not None
                tg.start_soon(self._evidence.run, self._closing, name="sentinel_forwarder heartbeat")
                task_status.started()
                try:
                    await self._close_requested.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
        finally:
            self._finish()
            with anyio.CancelScope(shield=True):
                await self._evidence.final(self._drain_deadline - anyio.current_time())
                await self._close_inner()
                if self._spool_pump is not None:
                    await self._spool_pump.close()
            self._stopped.set()

    async def _drain(self) -> None:
        assert self._closing is not None and self._drained is not None
        with self._lock:
            self._state = _CLOSING
            self._accepting = False
        self._closing.set()
        self._set_wakeup()
        self._drain_deadline = anyio.current_time() + self._drain_timeout
        with anyio.move_on_after(self._drain_timeout):
            await self._drained.wait()
        if not self._drained.is_set():
            self._abort()

    async def _close_inner(self) -> None:
        try:
            await self._inner.__aexit__(None, None, None)
        except Exception as exc:
            self._errors.error("sentinel-forwarder: the sink failed to close", exc)

    def _abort(self) -> None:
        """Cancel the pump and every delivery in flight, including deliveries started but not yet running."""
        self._aborted = True
        for scope in list(self._work_scopes):
            scope.cancel()

    @contextlib.contextmanager
    def _work_scope(self) -> Iterator[anyio.CancelScope]:
        scope = anyio.CancelScope(shield=True)
        if self._aborted:
            scope.cancel()
        self._work_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._work_scopes.discard(scope)

    def _finish(self) -> None:
        """Count what is still queued as lost; stop taking rows for good."""
        left = 0
        with self._lock:
            self._state = _CLOSED
            self._accepting = False
            while self._queue:
                self._queue.popleft()
                left += 1
            self._removed += left
            self._dropped["shutdown_timeout"] += left
        self._wake_flushes()
        if left:
            self._on_dropped("shutdown_timeout", left, f"{left} rows were still buffered at close")
        self._instruments.forget(self)
        self._drop_log.flush()

    # -- the pump ----------------------------------------------------------------------------------------

    async def _pump(self, tg: TaskGroup) -> None:
        assert self._drained is not None
        if self._spool_pump is not None:
            try:
                with self._work_scope():
                    await self._spool_pump.run(tg)
            finally:
                self._drained.set()
            return
        slots = anyio.Semaphore(self._max_in_flight)
        try:
            with self._work_scope():
                while True:
                    await slots.acquire()
                    try:
                        await self._pause_after_sink_failures()
                        batch = await self._next_batch()
                    except Exception as exc:  # a bug in the pump itself: log it, keep pumping
                        slots.release()
                        self._errors.error("sentinel-forwarder: the pump failed; it goes on", exc)
                        await self._pause(_SINK_BACKOFF_MAX)
                        continue
                    if batch is None:
                        slots.release()
                        break
                    start, rows = batch
                    tg.start_soon(self._deliver, rows, start, slots)
                for _ in range(self._max_in_flight):
                    await slots.acquire()
        finally:
            self._drained.set()

    async def _pause_after_sink_failures(self) -> None:
        if self._sink_failures and self._accepting:
            limit = min(_SINK_BACKOFF_MAX, _SINK_BACKOFF_FIRST * 2 ** (self._sink_failures - 1))
            await self._pause(random.random() * limit)

    async def _pause(self, seconds: float) -> None:
        """Wait *seconds*, or less if closing begins."""
        assert self._closing is not None
        with anyio.move_on_after(seconds):
            await self._closing.wait()

    async def _next_batch(self) -> tuple[int, list[AuditEntry]] | None:
        """Wait for a batch: full, ``max_interval`` after its first row, or what is left when closing."""
        deadline: float | None = None
        while True:
            self._drop_log.flush_due()
            with self._lock:
                depth = len(self._queue)
                closing = not self._accepting
            if depth >= self._max_batch_size or (depth and (closing or self._removed < self._flush_target)):
                break
            if not depth and closing:
                return None
            if depth and deadline is None:
                deadline = anyio.current_time() + self._max_interval
            # Idle, wait at most max_interval too: threads racing in forward() can skip the depth == 1
            # wake-up, which must delay their rows by one interval at most, never strand them. Wake up as
            # well when a held-back drop count is due to be logged.
            timeout = self._max_interval if deadline is None else deadline - anyio.current_time()
            if timeout <= 0:
                break
            self._wakeup = event = anyio.Event()
            with anyio.move_on_after(min(timeout, self._drop_log.due_in())):
                await event.wait()
        with self._lock:
            n = min(len(self._queue), self._max_request_rows)  # coalesce what waits, up to a request
            start = self._removed
            self._removed += n
            self._in_flight_starts.add(start)
            return start, [self._queue.popleft() for _ in range(n)]

    async def _deliver(self, batch: list[AuditEntry], start: int, slots: anyio.Semaphore) -> None:
        pending = len(batch)  # rows of this batch not yet counted anywhere
        handed = False  # whether the sink has them (then their fate is unknown if we give up)
        try:
            with self._work_scope():
                rows, filtered, _, _ = self._apply_transform(batch)
                if filtered:
                    with self._lock:
                        self._filtered += filtered
                pending = len(rows)
                rows = await self._evidence.link(rows)
                if rows:
                    started = time.perf_counter()
                    handed = True
                    result = _reconcile(await self._inner.send_batch(rows), len(rows))
                    self._account(result)
                    pending = 0  # counted: nothing below may count these rows again
                    self._sink_failures = 0
                    self._report(result, time.perf_counter() - started)
                pending = 0
            if pending:  # cancelled by _abort(): the drain deadline passed
                if handed:
                    self._count_unconfirmed(pending, "the drain deadline passed while the sink had them")
                else:
                    self._count_lost(pending, "shutdown_timeout", "the drain deadline passed")
        except BaseException as exc:
            # A bug in the sink (or in ours), a foreign cancellation, an interrupt: this batch alone is lost.
            self._sink_failures += 1
            self._count_lost(pending, "sink_error", f"the sink raised {type(exc).__name__}: {exc}")
            self._errors.error("sentinel-forwarder: the sink raised; its batch is dropped (sink_error)", exc)
            # An interrupt stops the program only from the main thread; on a background forwarder's own
            # thread, re-raising it would only stop forwarding for the rest of the process.
            if isinstance(exc, _INTERRUPTS) and threading.current_thread() is threading.main_thread():
                raise
        finally:
            self._settle(start)
            slots.release()

    def _count_lost(self, count: int, reason: DropReason, error: str) -> None:
        """Count a delivery's rows that the sink never accounted for."""
        if not count:
            return
        with self._lock:
            self._dropped[reason] += count
            self._batches_failed += 1
            self._failures_in_a_row += 1
            self._last_error = error
        self._on_dropped(reason, count, error)

    def _count_unconfirmed(self, count: int, error: str) -> None:
        with self._lock:
            self._unconfirmed += count
            self._batches_failed += 1
            self._last_error = error
        self._on_unconfirmed(count, error)

    def _on_unconfirmed(self, count: int, detail: str | None) -> None:
        with contextlib.suppress(Exception):  # see _on_dropped
            self._instruments.unconfirmed.add(count, self._attrs.base)
            self._drop_log.record("unconfirmed", count, detail)

    def _apply_transform(self, batch: list[AuditEntry]) -> tuple[list[AuditEntry], int, list[int], list[int]]:
        """Run the user's transform on each row (a row it fails on is dropped alone); the caller links the
        rows kept (:meth:`Evidence.link`).

        :returns: (rows to send, rows filtered out, the position in *batch* of each row to send, the
            positions of the rows dropped because the transform failed)
        """
        transform = self._transform
        if transform is None:
            return batch, 0, list(range(len(batch))), []
        rows: list[AuditEntry] = []
        kept: list[int] = []
        refused: list[int] = []
        filtered = failed = 0
        detail = ""
        for position, entry in enumerate(batch):
            try:
                out = transform(entry)
            except _INTERRUPTS:
                raise
            except BaseException as exc:  # includes a foreign cancellation: the row alone
                failed += 1
                refused.append(position)
                detail = f"transform raised {exc!r} for row Id {entry.id}"
                continue
            if out is None:
                filtered += 1
            elif isinstance(out, AuditEntry):
                rows.append(out)
                kept.append(position)
            else:
                failed += 1
                refused.append(position)
                detail = (
                    f"transform returned {type(out).__name__} for row Id {entry.id}, not AuditEntry or None"
                )
        if failed:
            self._count_dropped("transform_error", failed, detail)
        return rows, filtered, kept, refused

    def _account(self, result: SendResult) -> None:
        """Count a batch's result (under the lock, nothing that can fail)."""
        dropped = {r: n for r, n in result.dropped.items() if n}
        with self._lock:
            if result.sent:
                self._last_success = time.time()
            self._failures_in_a_row = self._failures_in_a_row + 1 if dropped or result.unconfirmed else 0
            self._sent += result.sent
            self._unconfirmed += result.unconfirmed
            for reason, n in dropped.items():
                self._dropped[reason] += n
            if dropped or result.unconfirmed:
                self._batches_failed += 1
                if result.error:
                    self._last_error = result.error
            else:
                self._batches_sent += 1

    def _report(self, result: SendResult, elapsed: float) -> None:
        """Metrics and logs for a counted batch; their failures are the application's (see _on_dropped)."""
        dropped = {r: n for r, n in result.dropped.items() if n}
        if result.unconfirmed:
            self._on_unconfirmed(result.unconfirmed, result.error)
        for reason, n in dropped.items():
            self._on_dropped(reason, n, result.error_for(reason))
        with contextlib.suppress(Exception):
            inst, attrs = self._instruments, self._attrs
            if result.sent:
                inst.sent.add(result.sent, attrs.base)
            failed = dropped or result.unconfirmed
            outcome = "success" if not failed else ("partial" if result.sent else "failure")
            inst.batches.add(1, attrs.by_outcome[outcome])
            inst.duration.record(elapsed, attrs.base)


def _reconcile(result: Any, count: int) -> SendResult:
    """Make a sink's result account for exactly *count* rows; what it got wrong is ``sink_error``.

    Over-reporting is capped (sent first, then drops, then unconfirmed); unknown reasons, negative numbers
    and missing rows become ``sink_error``; a result that is not a :class:`SendResult` makes all rows
    ``sink_error``.
    """
    if not isinstance(result, SendResult):
        return SendResult.failed(
            "sink_error", count, f"the sink returned {type(result).__name__}, not a SendResult"
        )
    known = all(r in DROP_REASONS and n >= 0 for r, n in result.dropped.items())
    if known and result.total == count and result.sent >= 0 and result.unconfirmed >= 0:
        if result.outcomes is not None and not _outcomes_agree(result):
            return replace(result, outcomes=None)  # unusable: a spool then treats the batch as a whole
        return result
    left = count

    def take(n: int) -> int:
        nonlocal left
        n = min(max(n, 0), left)
        left -= n
        return n

    sent = take(result.sent)
    dropped: dict[DropReason, int] = {}
    for reason, n in result.dropped.items():
        if reason in DROP_REASONS and (n := take(n)):
            dropped[reason] = n
    unconfirmed = take(result.unconfirmed)
    message = f"the sink accounted for {result.total} of {count} rows"
    errors = dict(result.errors)
    if left:
        dropped["sink_error"] = dropped.get("sink_error", 0) + left
        errors["sink_error"] = message
    return SendResult(sent, MappingProxyType(dropped), result.error or message, unconfirmed, errors)


def _outcomes_agree(result: SendResult) -> bool:
    """Whether a result's per-row outcomes add up to its counts."""
    outcomes = result.outcomes or ()
    counts: Counter[str] = Counter(outcomes)
    expected: Counter[str] = Counter({r: n for r, n in result.dropped.items() if n})
    if result.sent:
        expected["sent"] = result.sent
    if result.unconfirmed:
        expected["unconfirmed"] = result.unconfirmed
    return len(outcomes) == result.total and counts == expected


def _after_fork_in_child() -> None:
    for forwarder in list(_forwarders):
        forwarder._reset_in_fork_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
