"""``health()``: a frozen snapshot of whether a forwarder is working, for readiness and liveness endpoints."""

from __future__ import annotations

__all__ = ["ForwarderHealth"]

import time
from dataclasses import asdict, dataclass
from typing import Any


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
