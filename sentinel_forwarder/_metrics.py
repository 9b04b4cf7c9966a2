"""OpenTelemetry instruments (through opentelemetry-api only) and the rate-limited drop log.

Instruments are created once per meter provider and shared by every forwarder that uses it; each forwarder's
rows carry its ``forwarder.name`` attribute. Attribute dicts are built once. The queue depth is an observable
gauge read from the queues at collection time, so ``forward()`` pays nothing for metrics unless it drops.
"""

from __future__ import annotations

__all__ = ["DropLog", "ErrorLog", "Instruments", "instruments_for"]

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, Protocol

from opentelemetry import metrics

from ._protocol import DROP_REASONS, DropReason

METER_NAME = "sentinel_forwarder"
_VERSION = "0.1.0"


class _Observed(Protocol):
    """What the queue-depth gauge reads from a forwarder."""

    @property
    def name(self) -> str: ...

    def queue_depth(self) -> int: ...

    def spool_gauges(self) -> tuple[int, int, float, int] | None:
        """(rows, bytes, age in seconds of the oldest row, dead letters) of the spool, if there is one."""
        ...


class Instruments:
    """The library's instruments on one meter provider."""

    def __init__(self, meter_provider: metrics.MeterProvider | None) -> None:
        meter = metrics.get_meter(METER_NAME, _VERSION, meter_provider=meter_provider)
        self.dropped = meter.create_counter(
            "audit.forward.dropped", unit="{row}", description="Audit rows dropped, by reason."
        )
        self.sent = meter.create_counter(
            "audit.forward.sent", unit="{row}", description="Audit rows accepted by the sink (delivered)."
        )
        self.unconfirmed = meter.create_counter(
            "audit.forward.unconfirmed",
            unit="{row}",
            description="Audit rows sent whose landing is unknown (answer lost, in flight at the deadline).",
        )
        self.batches = meter.create_counter(
            "audit.forward.batches",
            unit="{batch}",
            description="Batches handed to the sink, by outcome (success, partial, failure).",
        )
        self.duration = meter.create_histogram(
            "audit.forward.batch.duration",
            unit="s",
            description="Time to deliver one batch, retries included.",
        )
        self._observed: weakref.WeakSet[_Observed] = weakref.WeakSet()
        meter.create_observable_gauge(
            "audit.forward.queue.depth",
            callbacks=[self._observe_depth],
            unit="{row}",
            description="Rows waiting in the forwarder's buffer.",
        )
        for index, (name, unit, text) in enumerate(
            (
                ("audit.spool.rows", "{row}", "Rows waiting in the spool (on disk), delivery pending."),
                ("audit.spool.bytes", "By", "Bytes of the rows waiting in the spool (their JSON)."),
                ("audit.spool.oldest_age", "s", "Age of the oldest row waiting in the spool."),
                ("audit.spool.dead_letters", "{row}", "Rows the service refused, kept in the spool."),
            )
        ):
            meter.create_observable_gauge(
                name, callbacks=[self._spool_callback(index)], unit=unit, description=text
            )

    def observe(self, forwarder: _Observed) -> None:
        """Report *forwarder*'s queue depth until it is garbage-collected or :meth:`forget` is called."""
        self._observed.add(forwarder)

    def forget(self, forwarder: _Observed) -> None:
        self._observed.discard(forwarder)

    def _spool_callback(
        self, index: int
    ) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            found = []
            for f in list(self._observed):
                gauges = f.spool_gauges()
                if gauges is not None:
                    found.append(metrics.Observation(gauges[index], {"forwarder.name": f.name}))
            return found

        return observe

    def _observe_depth(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(f.queue_depth(), {"forwarder.name": f.name}) for f in list(self._observed)
        ]


_registry: dict[int, Instruments] = {}
_registry_lock = threading.Lock()


def _new_registry_lock() -> None:  # a lock another thread held at fork time stays held in the child
    global _registry_lock
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_registry_lock)


def instruments_for(meter_provider: metrics.MeterProvider | None) -> Instruments:
    """The shared :class:`Instruments` of *meter_provider* (``None``: the global provider)."""
    key = id(meter_provider) if meter_provider is not None else 0
    with _registry_lock:
        inst = _registry.get(key)
        if inst is None:
            inst = _registry[key] = Instruments(meter_provider)
        return inst


class ForwarderAttributes:
    """Attribute dicts of one forwarder, built once."""

    def __init__(self, name: str) -> None:
        self.base: Mapping[str, str] = {"forwarder.name": name}
        self.by_reason: Mapping[DropReason, Mapping[str, str]] = {
            r: {"forwarder.name": name, "reason": r} for r in DROP_REASONS
        }
        self.by_outcome: Mapping[str, Mapping[str, str]] = {
            o: {"forwarder.name": name, "outcome": o} for o in ("success", "partial", "failure")
        }


#: What the drop log counts: each drop reason, and rows whose landing is unknown.
LogKey = DropReason | Literal["unconfirmed"]


class DropLog:
    """Logs drops (and unconfirmed rows) as WARNINGs, at most once per *interval* per reason, with the count
    since the last line.

    Thread-safe. The clock is injectable for tests.

    :param logger: where to log.
    :param interval: seconds between two lines for the same reason.
    :param clock: a monotonic clock.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[LogKey, int] = {}
        self._detail: dict[LogKey, str] = {}
        self._next_at: dict[LogKey, float] = {}

    def record(self, reason: LogKey, count: int, detail: str | None = None) -> None:
        """Note *count* rows dropped for *reason*; log now if the last line for it is old enough.

        Held-back counts are logged by :meth:`flush_due` once their interval has passed, even if no further
        drop happens: call it periodically (the pump does, see :meth:`due_in`).
        """
        now = self._clock()
        with self._lock:
            self._pending[reason] = self._pending.get(reason, 0) + count
            if detail:
                self._detail[reason] = detail
            if now < self._next_at.get(reason, float("-inf")):
                return
            self._next_at[reason] = now + self._interval
            pending = self._pending.pop(reason)
            last = self._detail.pop(reason, None)
        self._emit(reason, pending, last)

    def due_in(self) -> float:
        """Seconds until a held-back count is due to be logged; infinity if none is held back."""
        with self._lock:
            if not self._pending:
                return float("inf")
            return max(min(self._next_at[r] for r in self._pending) - self._clock(), 0.0)

    def flush_due(self) -> None:
        """Log the held-back counts whose interval has passed (the trailing summary)."""
        now = self._clock()
        with self._lock:
            due = [r for r in self._pending if self._next_at[r] <= now]
            items = [(r, self._pending.pop(r), self._detail.pop(r, None)) for r in due]
            for r in due:
                self._next_at[r] = now + self._interval
        for reason, count, detail in items:
            self._emit(reason, count, detail)

    def flush(self) -> None:
        """Log every count not yet logged (at close)."""
        with self._lock:
            items = [(r, n, self._detail.pop(r, None)) for r, n in self._pending.items()]
            self._pending.clear()
        for reason, count, detail in items:
            self._emit(reason, count, detail)

    def _emit(self, reason: LogKey, count: int, detail: str | None) -> None:
        rows = f"{count} audit row{'' if count == 1 else 's'}"
        if reason == "unconfirmed":
            what = f"sentinel-forwarder sent {rows} without knowing whether they landed (unconfirmed)"
        else:
            what = f"sentinel-forwarder dropped {rows} (reason={reason})"
        # The application's handlers and filters run here; if one raises, the count stands and the
        # forwarder goes on (the metric still carries it).
        with contextlib.suppress(Exception):
            self._logger.warning("%s%s", what, f": {detail}" if detail else "")


class ErrorLog:
    """Logs unexpected exceptions at ERROR with their traceback, at most once per *interval*.

    A bug that fires on every batch must not flood the log; the next line says how many were held back.
    Thread-safe; the clock is injectable for tests.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = float("-inf")
        self._held = 0

    def error(self, message: str, exc: BaseException) -> None:
        """Log *message* with *exc*'s traceback, unless a line was logged less than *interval* ago."""
        now = self._clock()
        with self._lock:
            if now < self._next_at:
                self._held += 1
                return
            self._next_at = now + self._interval
            held, self._held = self._held, 0
        more = f" ({held} more since the last such line)" if held else ""
        with contextlib.suppress(Exception):  # see DropLog._emit
            self._logger.error("%s%s", message, more, exc_info=exc)
