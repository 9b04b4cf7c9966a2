"""What the emulator saw: counters (requests by status, rows accepted, bytes received) and a request log."""

from __future__ import annotations

__all__ = ["MAX_LOGGED_REQUESTS", "EmulatorStats", "RequestLog", "RequestRecord", "StatsRecorder"]

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of the emulator's counters (ingestion requests only; admin requests are not counted)."""

    #: Ingestion requests received, including those answered by an injected fault or dropped.
    requests: int = 0
    #: Responses by HTTP status. Dropped connections have no status; see :attr:`connections_dropped`.
    by_status: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    #: Rows accepted (counted once per request, however many tables the data flows write to).
    rows_accepted: int = 0
    #: Request body bytes read from the wire, as sent (compressed when gzip).
    bytes_received: int = 0
    #: Body bytes after gzip decoding (equal to the body for uncompressed requests), of decodable bodies.
    bytes_decompressed: int = 0
    #: Connections closed abruptly by :meth:`~sentinel_forwarder.emulator.Faults.drop_next`.
    connections_dropped: int = 0
    #: Ingestion requests being served right now.
    in_flight: int = 0
    #: The largest number of ingestion requests served at the same time (overlap, e.g. under latency).
    max_in_flight: int = 0
    #: Silent losses: values, rows or bodies Azure would have accepted with 204 and dropped or altered
    #: (see :meth:`~sentinel_forwarder.emulator.Emulator.losses`). Always 0 in strict mode.
    silent_losses: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (status keys become strings)."""
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rows_accepted": self.rows_accepted,
            "bytes_received": self.bytes_received,
            "bytes_decompressed": self.bytes_decompressed,
            "connections_dropped": self.connections_dropped,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "silent_losses": self.silent_losses,
        }


class StatsRecorder:
    """Thread-safe counters behind :class:`EmulatorStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._clear()

    def _clear(self) -> None:
        self._requests = 0
        self._by_status: dict[int, int] = {}
        self._rows = 0
        self._received = 0
        self._decompressed = 0
        self._dropped = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._losses = 0

    def request(self) -> None:
        """Count one incoming ingestion request (and one more in flight until :meth:`done`)."""
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def done(self) -> None:
        """One ingestion request finished."""
        with self._condition:
            self._in_flight = max(0, self._in_flight - 1)
            self._condition.notify_all()

    def response(self, status: int) -> None:
        """Count one response by status."""
        with self._condition:
            self._by_status[status] = self._by_status.get(status, 0) + 1
            self._condition.notify_all()

    def dropped(self) -> None:
        """Count one abruptly closed connection."""
        with self._condition:
            self._dropped += 1
            self._condition.notify_all()

    def received(self, nbytes: int) -> None:
        """Count body bytes read from the wire."""
        with self._lock:
            self._received += nbytes

    def decompressed(self, nbytes: int) -> None:
        """Count decoded body bytes."""
        with self._lock:
            self._decompressed += nbytes

    def losses(self, n: int) -> None:
        """Count silent losses."""
        with self._lock:
            self._losses += n

    def rows(self, n: int) -> None:
        """Count accepted rows."""
        with self._condition:
            self._rows += n
            self._condition.notify_all()

    def snapshot(self) -> EmulatorStats:
        """The current counters."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> EmulatorStats:
        return EmulatorStats(
            requests=self._requests,
            by_status=MappingProxyType(dict(self._by_status)),
            rows_accepted=self._rows,
            bytes_received=self._received,
            bytes_decompressed=self._decompressed,
            connections_dropped=self._dropped,
            in_flight=self._in_flight,
            max_in_flight=self._max_in_flight,
            silent_losses=self._losses,
        )

    def wait_for_answers(self, n: int, timeout: float) -> bool:
        """Block until at least *n* ingestion requests were answered or dropped.

        :param n: Number of answered (responded or dropped) requests to wait for.
        :param timeout: Seconds to wait at most.
        :returns: Whether the count was reached.
        """
        with self._condition:
            return self._condition.wait_for(
                lambda: sum(self._by_status.values()) + self._dropped >= n, timeout
            )

    def wait_for_rows(self, n: int, timeout: float) -> bool:
        """Block until at least *n* rows were accepted.

        :param n: Number of accepted rows to wait for.
        :param timeout: Seconds to wait at most.
        :returns: Whether the count was reached.
        """
        with self._condition:
            return self._condition.wait_for(lambda: self._rows >= n, timeout)

    def wait_until_idle(self, timeout: float) -> bool:
        """Block until no ingestion request is in flight (each one counts until its answer is sent).

        :param timeout: Seconds to wait at most.
        :returns: Whether it became idle in time.
        """
        with self._condition:
            return self._condition.wait_for(lambda: self._in_flight == 0, timeout)

    def reset(self) -> None:
        """Set every counter back to zero (requests still in flight stay counted as such)."""
        with self._condition:
            in_flight = self._in_flight
            self._clear()
            self._in_flight = in_flight
            self._condition.notify_all()


#: The request log keeps this many of the latest ingestion requests.
MAX_LOGGED_REQUESTS = 10_000


@dataclass(frozen=True)
class RequestRecord:
    """One ingestion request as the emulator answered it."""

    #: The ``x-ms-request-id`` the emulator answered with.
    request_id: str
    #: The client's ``x-ms-client-request-id`` (echoed in the answer), if it sent one.
    client_request_id: str | None
    #: The request path (without the query).
    path: str
    #: The answer's status; ``None`` for a connection dropped by fault injection.
    status: int | None
    #: Rows accepted by this request.
    rows: int = 0
    #: Silent losses recorded for this request.
    losses: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "path": self.path,
            "status": self.status,
            "rows": self.rows,
            "losses": self.losses,
        }


class RequestLog:
    """The latest :data:`MAX_LOGGED_REQUESTS` ingestion requests, oldest first. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=MAX_LOGGED_REQUESTS)

    def add(self, record: RequestRecord) -> None:
        """Append one record (the oldest goes when full)."""
        with self._lock:
            self._records.append(record)

    def records(self) -> tuple[RequestRecord, ...]:
        """The logged requests, oldest first."""
        with self._lock:
            return tuple(self._records)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
