"""``BufferingForwarder``: a never-blocking ``forward()`` in front of a batching pump.

Data flows one way: ``forward(entry)`` → bounded buffer → pump (cuts batches by size or age) → stages
(transform → filter → link) → up to ``max_batches_in_flight`` concurrent deliveries to the sink. Every offered
row ends counted exactly once in the ledger: sent, filtered, dropped with a reason, or unconfirmed (sent, but
whether it landed is unknown).

This class is the façade (the options, ``forward()``, the public lifecycle methods). Each run's parts, wired
once, and its lifecycle are a :class:`~sentinel_forwarder._forwarders.run.Run`; the parts themselves live in
``_core`` (buffer, ledger, stages, delivery, throttle, the memory pump) and ``_spool`` (the spool pump). See
docs/architecture.md.

Nothing that goes wrong after the forwarder has opened reaches the application: a sink that raises, returns
junk or loses count, a transform that raises, a row that cannot be serialised, all are counted and logged, and
the pump goes on. Only opening can raise (the sink's own ``__aenter__``: a misconfiguration).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_BATCHES_IN_FLIGHT",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_INTERVAL",
    "DEFAULT_MAX_REQUESTS_PER_MINUTE",
    "DEFAULT_MAX_REQUEST_ROWS",
    "DEFAULT_SPOOL_MAX_AGE",
    "DEFAULT_SPOOL_MAX_BYTES",
    "BufferingForwarder",
    "ForwarderStatistics",
    "Lifecycle",
    "Transform",
]

import os
from collections.abc import Callable, Sequence
from types import TracebackType

import anyio
from anyio.abc import TaskGroup, TaskStatus
from opentelemetry import metrics

from .._core.batching import Batching
from .._core.metrics import instruments_for
from .._core.stages import Transform
from .._core.throttle import DEFAULT_MAX_REQUESTS_PER_MINUTE
from .._evidence.chain import Key
from .._evidence.heartbeat import default_application
from .._model.entry import AuditEntry, Severity
from .._model.protocol import AuditForwarder, DropReason, SendResult
from .._model.snapshots import ForwarderHealth, ForwarderStatistics
from . import fork
from .background import BackgroundForwarder
from .lifecycle import Lifecycle
from .run import Run, RunOptions

#: A batch is due as soon as this many rows wait.
DEFAULT_MAX_BATCH_SIZE = 100
#: Seconds from a batch's first row until it is handed over even if not full.
DEFAULT_MAX_INTERVAL = 5.0
#: Rows the buffer holds; when full, new rows are dropped (``queue_full``).
DEFAULT_CAPACITY = 10_000
#: Seconds closing may spend delivering what is buffered (fits a 30 s shutdown grace period).
DEFAULT_DRAIN_TIMEOUT = 20.0
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
    :param max_requests_per_minute: this instance's request budget: a small request (under a quarter of
        ``max_request_rows``) waits for it, so rows coalesce instead of multiplying requests; the rate
        halves when the service throttles and comes back slowly (docs/fleet.md). ``None`` or 0: no budget.
        Whatever the budget, when the service throttles (429, or 503 with ``Retry-After``) every new request
        of this forwarder pauses for the time it asked.
    """

    def __init__(
        self,
        inner: AuditForwarder,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_interval: float = DEFAULT_MAX_INTERVAL,
        max_request_rows: int | None = None,
        capacity: int = DEFAULT_CAPACITY,
        max_batches_in_flight: int = DEFAULT_MAX_BATCHES_IN_FLIGHT,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
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
        max_requests_per_minute: float | None = DEFAULT_MAX_REQUESTS_PER_MINUTE,
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
        if max_requests_per_minute is not None and not max_requests_per_minute >= 0:
            raise ValueError(f"max_requests_per_minute must not be negative, not {max_requests_per_minute}")
        self._inner = inner
        self._batching = batching = Batching(
            max_batch_size=max_batch_size,
            max_interval=float(max_interval),
            max_request_rows=max_request_rows,
            max_in_flight=max_batches_in_flight,
            capacity=capacity,
        )
        self._drain_timeout = float(drain_timeout)
        self._min_severity = Severity.parse(min_severity)
        self._name = name
        self._options = RunOptions(
            name=name,
            batching=batching,
            drain_timeout=float(drain_timeout),
            transform=transform,
            chain=chain,
            chain_key=chain_key,
            heartbeat_interval=heartbeat_interval or None,
            application=application or default_application(),
            max_requests_per_minute=max_requests_per_minute or None,
            spool=None if spool is None else os.fspath(spool),
            spool_max_bytes=spool_max_bytes,
            spool_max_age=float(spool_max_age),
        )
        self._instruments = instruments_for(meter_provider)
        self._new_run(Lifecycle.NEW)
        self._host: TaskGroup | None = None  # the task group of ``async with``
        fork.reinit_at_fork(self)

    def _at_fork_reinit(self) -> None:
        """In a forked child: a forwarder with the same options, an empty buffer, zero counters and new
        locks (the parent's buffered rows stay the parent's to send); the fork policy decides whether it
        starts again (:meth:`Lifecycle.after_fork`)."""
        fork.keep_inherited(self._run)  # never closed here: the parent still uses what it holds
        self._new_run(self._run.state.after_fork())
        reset = getattr(self._inner, "reset_after_fork", None)
        if callable(reset):
            reset()

    def _new_run(self, state: Lifecycle) -> None:
        """A run's parts, wired once (docs/architecture.md); ``forward()`` appends to its buffer."""
        self._run = Run(
            self._inner, self._options, self._instruments, on_wake_unbound=self._start_fork_child, state=state
        )
        self._buffer = self._run.buffer

    def _start_fork_child(self) -> None:
        """The first row in a forked child whose parent ran this forwarder: start it on a thread."""
        run = self._run
        with run.ledger.lock:
            if run.state is not Lifecycle.FORKED:
                return
            run.state = Lifecycle.NEW
        try:
            runner = fork.runner_of(self) or BackgroundForwarder(self)
            runner.start_in_fork_child()
        except Exception as exc:  # no thread to be had: count rows as closed rather than strand them
            run.buffer.accepting = False
            run.errors.error("sentinel-forwarder could not start in a forked child", exc)

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
            self._run.ledger.filtered_early()
            return True
        buffer = self._buffer
        rows = buffer.rows
        if len(rows) >= buffer.capacity or not buffer.accepting:
            return self._reject()
        rows.append(entry)
        depth = len(rows)
        if depth == 1 or depth == buffer.batch_size:
            buffer.wake()
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

        answer = self.offer_durable(entry, settle)
        if answer is not None:
            return answer
        with anyio.move_on_after(timeout):
            await done.wait()
        return bool(outcome and outcome[0])

    def offer_durable(self, entry: AuditEntry, settle: Callable[[bool], None]) -> bool | None:
        """Offer *entry*; ``settle(committed)`` is called once it is committed or dropped (on the
        forwarder's loop). The building block of :meth:`forward_durable` and its blocking twin.

        :returns: the final answer at once (filtered, or dropped before it was taken), or ``None``: wait for
            *settle*.
        :raises RuntimeError: if the forwarder has no spool.
        :raises TypeError: if *entry* is not an :class:`AuditEntry`.
        """
        run = self._run
        if not run.pump.durable:
            raise RuntimeError("forward_durable() needs a spool: BufferingForwarder(..., spool=directory)")
        if not isinstance(entry, AuditEntry):
            raise TypeError(f"forward_durable() takes an AuditEntry, not {type(entry).__name__}")
        if entry.severity < self._min_severity:
            run.ledger.filtered_early()
            return True
        buffer = run.buffer
        with buffer.lock:
            if len(buffer.rows) >= buffer.capacity or not buffer.accepting:
                accepted = False
            else:
                buffer.rows.append(entry)
                accepted = True
                run.pump.add_durable_waiter(buffer.taken + len(buffer.rows), settle)
        if not accepted:
            return self._reject()
        buffer.wake()
        return None

    def _reject(self) -> bool:
        self._run.ledger.dropped("queue_full" if self._buffer.accepting else "closed", 1, None)
        return False

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
                reason = "queue_full" if self._buffer.accepting else "closed"
        return SendResult(taken) + SendResult.failed(reason, dropped) if dropped else SendResult(taken)

    @property
    def name(self) -> str:
        """The ``forwarder.name`` metric attribute."""
        return self._name

    @property
    def drain_timeout(self) -> float:
        """Seconds that closing may spend delivering what is buffered."""
        return self._drain_timeout

    @property
    def batching(self) -> Batching:
        """When a batch is due and how much one delivery takes (from the options, resolved)."""
        return self._batching

    @property
    def state(self) -> Lifecycle:
        """Where the forwarder is in its lifecycle."""
        return self._run.state

    def queue_depth(self) -> int:
        """Rows waiting in the buffer."""
        return len(self._buffer.rows)

    def statistics(self) -> ForwarderStatistics:
        """A frozen snapshot of the counters."""
        return self._run.statistics()

    def health(self) -> ForwarderHealth:
        """A frozen snapshot for a readiness endpoint: pump alive, last success, failures, backlog."""
        return self._run.health()

    def request_rate(self) -> float | None:
        """The request budget's current rate, requests a minute (``None``: no budget)."""
        return self._run.request_rate()

    def spool_gauges(self) -> tuple[int, int, float, int] | None:
        """For the spool gauges: (rows, bytes, oldest row's age in seconds, dead letters); ``None``
        without a spool."""
        return self._run.spool_gauges()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> BufferingForwarder:
        await self._run.open()
        host = anyio.create_task_group()
        await host.__aenter__()
        self._host = host
        # start_soon, not start: nothing here may be cancelled, or the host task group would be left open
        # inside the caller's scopes. Rows are buffered from now on; the pump picks them up when it runs.
        host.start_soon(self._run.serve, name="sentinel_forwarder serve")
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
        run = self._run
        await run.open()
        await run.serve(task_status=task_status)

    async def aclose(self) -> None:
        """Stop taking rows, drain within ``drain_timeout``, close *inner*; return when done. Idempotent.

        Works from any task on the forwarder's event loop, and from several at once. Shielded: cancelling
        the caller does not cut the drain short.
        """
        await self._run.aclose()

    async def flush(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 (the twin of a sync API)
        """Deliver what is buffered now, without closing; wait at most *timeout* seconds.

        Partial batches go out at once instead of waiting for ``max_interval``. For jobs that end, tests and
        task queues; ``BackgroundForwarder.flush`` is the blocking twin.

        :returns: how many of the rows buffered at the call are still pending (0: every one was delivered or
            counted); the buffer's depth if the forwarder is not running. With a spool it waits until the
            buffer and the spool are both empty (rows offered meanwhile included) and returns what still
            waits in them.
        """
        return await self._run.flush(timeout)
