"""Frozen snapshots of a forwarder: its counters (``statistics()``) and whether it is working (``health()``,
for readiness and liveness endpoints)."""

from __future__ import annotations

__all__ = ["ForwarderHealth", "ForwarderStatistics"]

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .protocol import DropReason


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
    #: Deliveries the service throttled (429, or 503 with ``Retry-After``).
    throttles: int = 0
    #: Seconds new requests were paused because the service throttled.
    throttled_seconds: float = 0.0

    @property
    def dropped_total(self) -> int:
        """All rows lost, whatever the reason."""
        return sum(self.dropped.values())


@dataclass(frozen=True)
class ForwarderHealth:
    """What a readiness endpoint needs to know, from ``forwarder.health()``.

    ::

        @app.get("/ready")
        def ready():
            health = forwarder.health()
            return JSONResponse(health.as_dict(), status_code=200 if health.ready else 503)
    """

    #: The pump task (and, for a :class:`BackgroundForwarder`, its thread) is running: rows move.
    pump_alive: bool
    #: ``time.time()`` of the last delivery that landed at least one row; ``None``: none yet.
    last_success: float | None
    #: Deliveries in a row that did not land every row (0 after one that did).
    consecutive_failures: int
    #: Rows waiting: in the buffer, plus in the spool if there is one.
    backlog: int
    #: Rows in the memory buffer.
    queue_depth: int
    #: Whether a durable spool is configured.
    spool: bool
    #: With a spool: rows waiting in it; 0 without.
    spooled: int
    #: With a spool: rows the service refused, kept as dead letters.
    dead_letters: int
    #: The service is throttling: new requests are paused until the time it asked for.
    throttled: bool = False
    #: The request budget's current rate, requests a minute (``None``: no budget).
    request_rate: float | None = None

    @property
    def ready(self) -> bool:
        """The pump runs. (Failing deliveries do not make an application unready: it can still serve, and
        its rows wait in the buffer or spool; alert on :attr:`consecutive_failures` instead.)"""
        return self.pump_alive

    def seconds_since_success(self, *, now: float | None = None) -> float | None:
        """Seconds since :attr:`last_success`, or ``None`` if nothing was delivered yet."""
        if self.last_success is None:
            return None
        return max((time.time() if now is None else now) - self.last_success, 0.0)

    def as_dict(self) -> dict[str, Any]:
        """The fields and :attr:`ready`, JSON-ready."""
        return {**asdict(self), "ready": self.ready}
