"""The ledger: every counter of one forwarder run, under one lock, and the snapshot they make.

The invariant it keeps: every row offered ends counted exactly once, so after close

    offered + recovered == sent + filtered + sum(dropped) + unconfirmed + spooled

(``recovered`` and ``spooled`` are 0 without a spool; :func:`unaccounted` computes the difference, which is
0 after close). Pumps, stages and sinks never count: they report outcomes here, and the ledger counts first,
then hands the outcome to the :class:`~sentinel_forwarder._core.metrics.Reporter` (metrics and logs, whose
failures are the application's).
"""

from __future__ import annotations

__all__ = ["Ledger", "unaccounted"]

import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .._model.entry import Severity
from .._model.protocol import DROP_REASONS, DropReason, SendResult
from .._model.snapshots import ForwarderStatistics
from .buffer import Buffer
from .metrics import Reporter


def unaccounted(stats: ForwarderStatistics) -> int:
    """Rows offered (or recovered from a spool) that no counter holds yet: rows buffered or in flight while
    the forwarder runs, 0 after close."""
    counted = stats.sent + stats.filtered + stats.dropped_total + stats.unconfirmed + stats.spooled
    return stats.offered + stats.recovered - counted


class Ledger:
    """The counters of one run. Thread-safe: :attr:`lock` guards them, and the buffer's taking.

    :param reporter: told of each count once it is taken.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.lock = threading.Lock()
        self.reporter = reporter
        self._filtered_early = 0
        self._filtered = 0
        self._sent = 0
        self._unconfirmed = 0
        self._dropped: dict[DropReason, int] = dict.fromkeys(DROP_REASONS, 0)
        self._batches_sent = 0
        self._batches_failed = 0
        self._last_error: str | None = None
        self._last_success: float | None = None  # time.time() of the last delivery that landed rows
        self._failures_in_a_row = 0  # deliveries that did not land every row, since the last that did
        self._closed = False
        self._throttles = 0
        self._throttled_seconds = 0.0

    # -- counting ----------------------------------------------------------------------------------------

    def filtered_early(self) -> None:
        """A row below ``min_severity`` was offered (filtered out in ``forward()``)."""
        with self.lock:
            self._filtered_early += 1

    def filtered(self, count: int) -> None:
        """*count* rows were filtered out by the transform."""
        if count:
            with self.lock:
                self._filtered += count

    def dropped(
        self, reason: DropReason, count: int, detail: str | None, *, severity: Severity | None = None
    ) -> None:
        """*count* rows were dropped for *reason* outside a delivery (full buffer, transform, shed…)."""
        with self.lock:
            self._dropped[reason] += count
        self.reporter.dropped(reason, count, detail, severity)

    def lost(self, count: int, reason: DropReason, error: str) -> None:
        """A delivery's *count* rows that the sink never accounted for (it raised, or the deadline passed)."""
        if not count:
            return
        with self.lock:
            self._dropped[reason] += count
            self._batches_failed += 1
            self._failures_in_a_row += 1
            self._last_error = error
        self.reporter.dropped(reason, count, error, None)

    def unconfirmed(self, count: int, error: str) -> None:
        """A delivery's *count* rows were with the sink when the drain deadline passed."""
        with self.lock:
            self._unconfirmed += count
            self._batches_failed += 1
            self._last_error = error
        self.reporter.unconfirmed(count, error)

    def delivered(self, result: SendResult, elapsed: float) -> None:
        """Count a delivery's (reconciled) result, then report it."""
        dropped = {r: n for r, n in result.dropped.items() if n}
        with self.lock:
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
        self.reporter.result(result, elapsed)

    def throttled(self, seconds: float, rate: float | None) -> None:
        """The service throttled a request: new requests pause *seconds* more; the request rate is now *rate*
        a minute (``None``: no budget)."""
        with self.lock:
            self._throttles += 1
            self._throttled_seconds += seconds
        self.reporter.throttled(seconds, rate)

    def error(self, error: str | None) -> None:
        """Note the last error without counting rows (a spool keeps the rows of a failed delivery)."""
        with self.lock:
            self._last_error = error

    def close(self, buffer: Buffer) -> int:
        """Stop *buffer* taking rows for good and count what it still holds as lost (at close).

        :returns: how many rows that was (dropped as ``shutdown_timeout``, not yet reported).
        """
        with self.lock:
            self._closed = True
            left = buffer.discard_all_locked()
            self._dropped["shutdown_timeout"] += left
        return left

    # -- reading -----------------------------------------------------------------------------------------

    def statistics(
        self, buffer: Buffer, *, in_flight: int, extra: Mapping[str, Any] = MappingProxyType({})
    ) -> ForwarderStatistics:
        """A frozen snapshot; *in_flight* and *extra* (the spool's fields) come from the pump."""
        with self.lock:
            queued = len(buffer.rows)
            dropped = dict(self._dropped)
            if self._closed:
                # A forward() racing with close can append after the final count: such rows are lost too.
                dropped["shutdown_timeout"] += queued
            accepted = buffer.taken + queued
            return ForwarderStatistics(
                offered=accepted + self._filtered_early + dropped["queue_full"] + dropped["closed"],
                accepted=accepted,
                sent=self._sent,
                filtered=self._filtered_early + self._filtered,
                dropped=MappingProxyType({r: n for r, n in dropped.items() if n}),
                unconfirmed=self._unconfirmed,
                queue_depth=0 if self._closed else queued,
                batches_in_flight=in_flight,
                batches_sent=self._batches_sent,
                batches_failed=self._batches_failed,
                last_error=self._last_error,
                throttles=self._throttles,
                throttled_seconds=self._throttled_seconds,
                **extra,
            )

    def flush_due_logs(self) -> None:
        """Log the held-back drop counts whose interval has passed (the pump calls it as it goes)."""
        self.reporter.drop_log.flush_due()

    def logs_due_in(self) -> float:
        """Seconds until a held-back drop count is due to be logged (infinity: none is held back)."""
        return self.reporter.drop_log.due_in()

    def progress(self) -> tuple[float | None, int]:
        """(``time.time()`` of the last delivery that landed rows, deliveries since that failed)"""
        with self.lock:
            return self._last_success, self._failures_in_a_row
