"""The one send path of every pump: admit → send → reconcile → contain → back off.

Before it takes a batch, a pump asks :meth:`Delivery.delay` how long to wait: while the service throttles
(the gate) and, for a batch that is not full, until the request budget allows another request
(``_core/throttle.py``). It then hands the batch (and, from a spool, the JSON stored for each row) to
:meth:`Delivery.send`, which calls the sink inside a shielded work scope, makes its answer account for
exactly the rows given (:meth:`SendResult.reconcile`), heeds a throttle the answer reports, and contains
whatever the sink raises: the outcome comes back as an :class:`Attempt`, for the pump to count (memory) or
settle (spool). After a sink raised, :meth:`backoff` says how long to wait before the next batch (doubling
per consecutive failure, full jitter), so a broken sink is not called in a tight loop.
"""

from __future__ import annotations

__all__ = ["SINK_BACKOFF_FIRST", "SINK_BACKOFF_MAX", "Attempt", "Delivery", "reraise_interrupt"]

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._model.entry import AuditEntry
from .._model.protocol import AuditForwarder, SendResult
from .._util.ratelimited import ErrorLog
from .batching import Batching
from .scopes import WorkScopes
from .stages import INTERRUPTS
from .throttle import RequestBudget, ThrottleGate

#: After a sink raised, the pump waits up to this (doubling per consecutive failure, full jitter) before the
#: next batch.
SINK_BACKOFF_FIRST = 0.05
SINK_BACKOFF_MAX = 5.0


@dataclass(frozen=True)
class Attempt:
    """What became of one call to the sink."""

    #: The sink's answer, made to account for every row; ``None``: the drain deadline cut the call short
    #: while the sink had the rows (their fate is unknown).
    result: SendResult | None
    #: Seconds the call took.
    elapsed: float
    #: What the sink raised, if it did (then :attr:`result` drops every row as ``sink_error``).
    raised: BaseException | None = None
    #: Why, when the sink raised: the error the rows are counted with.
    error: str = ""

    def reraise_interrupt(self) -> None:
        """Re-raise a ``KeyboardInterrupt``/``SystemExit`` the sink raised, once the rows are counted."""
        reraise_interrupt(self.raised)


def reraise_interrupt(exc: BaseException | None) -> None:
    """Re-raise *exc* if it is a ``KeyboardInterrupt``/``SystemExit`` and this is the main thread.

    On a background forwarder's own thread, re-raising it would only stop forwarding for the rest of the
    process.
    """
    if isinstance(exc, INTERRUPTS) and threading.current_thread() is threading.main_thread():
        raise exc


class Delivery:
    """Sends batches to *sink*, containing its failures.

    :param sink: the sink (anything with ``send_batch``; ``send_encoded`` is used when given stored JSON).
    :param scopes: the run's work scopes (the drain deadline aborts them).
    :param errors: where a sink's exception is logged (rate-limited).
    :param jitter: a source of random numbers in [0, 1), for tests.
    """

    def __init__(
        self,
        sink: AuditForwarder,
        scopes: WorkScopes,
        errors: ErrorLog,
        *,
        gate: ThrottleGate | None = None,
        budget: RequestBudget | None = None,
        on_throttle: Callable[[float, float | None], None] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._sink = sink
        self._scopes = scopes
        #: Closed while the service asked to wait: no new request goes.
        self.gate = gate or ThrottleGate()
        #: This instance's request budget (``None``: no budget).
        self.budget = budget
        self._on_throttle = on_throttle
        # A sink that can say the moment the service throttles (the Azure sink) is listened to: one throttled
        # request pauses every new one at once, not when its own retries are done.
        listen = getattr(sink, "listen_for_throttling", None)
        self._live = callable(listen)
        if self._live:
            listen(self.throttled)  # type: ignore[misc]
        #: Where a sink's exceptions (and the pump's own) are logged, rate-limited.
        self.errors = errors
        self._jitter = jitter
        #: Consecutive calls that raised.
        self.sink_failures = 0

    async def send(
        self, rows: Sequence[AuditEntry], encoded: Sequence[bytes] | None = None, *, fate: str
    ) -> Attempt:
        """Hand *rows* to the sink (with *encoded*, their stored JSON, through ``send_encoded`` if the sink
        has it). Never raises: see :class:`Attempt`.

        :param fate: what becomes of the batch if the sink raises, for the log line.
        """
        started = time.perf_counter()
        result: SendResult | None = None
        if self.budget is not None:
            self.budget.spend()
        try:
            with self._scopes.shielded():
                send = getattr(self._sink, "send_encoded", None) if encoded is not None else None
                answer = await (send(rows, encoded) if send is not None else self._sink.send_batch(rows))
                result = SendResult.reconcile(answer, len(rows))
                self.sink_failures = 0
        except BaseException as exc:
            error = self.contain(exc, fate)
            failed = SendResult.failed("sink_error", len(rows), error)
            return Attempt(failed, time.perf_counter() - started, exc, error)
        if result is not None:
            self._heed(result)
        return Attempt(result, time.perf_counter() - started)

    def delay(self, waiting: int, batching: Batching, *, closing: bool = False) -> float:
        """Seconds the next delivery, of *waiting* rows, should wait: while the gate is closed, and, for a
        small one, until the budget has a token (meanwhile more rows arrive and the request grows). Small:
        under ``batching.large`` rows, or, once the service has throttled and the rate is lowered, under
        ``max_request_rows`` (then only full requests skip the budget). Closing: the gate only. 0: go."""
        wait = self.gate.delay()
        budget = self.budget
        if budget is None or closing:
            return wait
        large = batching.max_request_rows if budget.lowered else batching.large
        if waiting < large:
            wait = max(wait, budget.delay())
        return wait

    def rate(self) -> float | None:
        """The request budget's current rate, requests a minute (``None``: no budget)."""
        return None if self.budget is None else self.budget.rate

    def throttled(self, retry_after: float | None) -> None:
        """The service throttled a request and asked to wait *retry_after* seconds (``None``: unsaid): close
        the gate, lower the rate (once per episode: requests throttled while the gate is already closed do
        not lower it again), and tell ``on_throttle``. Thread-safe; never raises."""
        same_episode = self.gate.delay() > 0
        added = self.gate.close_for(retry_after)
        if self.budget is not None and not same_episode:
            self.budget.throttled()
        if self._on_throttle is not None:
            with contextlib.suppress(Exception):
                self._on_throttle(added, self.rate())

    def _heed(self, result: SendResult) -> None:
        """After a delivery: raise the rate if the service did not throttle it; if it did and the sink could
        not say so at once, do now what :meth:`throttled` does."""
        if result.retry_after is None:
            if self.budget is not None:
                self.budget.succeeded()
        elif not self._live:
            self.throttled(result.retry_after)

    def contain(self, exc: BaseException, fate: str) -> str:
        """A delivery raised (a bug in the sink or in ours, a foreign cancellation, an interrupt): note it,
        log it, and say why its batch alone is lost. -> the error for the counts"""
        self.sink_failures += 1
        self.errors.error(f"sentinel-forwarder: the sink raised; {fate}", exc)
        return f"the sink raised {type(exc).__name__}: {exc}"

    async def send_uncounted(self, rows: Sequence[AuditEntry]) -> object:
        """Hand *rows* to the sink in a work scope, as they are: for rows outside the counts (heartbeats).

        :returns: the sink's answer as it is; ``None`` if the drain deadline cut the call short.
        :raises Exception: whatever the sink raises.
        """
        answer: object = None
        with self._scopes.shielded():
            answer = await self._sink.send_batch(rows)
        return answer

    def backoff(self) -> float:
        """Seconds to wait before the next batch: 0 unless the sink raised last time."""
        if not self.sink_failures:
            return 0.0
        limit: float = min(SINK_BACKOFF_MAX, SINK_BACKOFF_FIRST * 2.0 ** (self.sink_failures - 1))
        return self._jitter() * limit
