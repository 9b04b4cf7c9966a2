"""Fault injection: scripted failures, random failures, latency, dropped connections and per-DCR rate limits.

Every method is thread-safe: tests script faults from their own thread while the server thread consults them.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ERROR_CODES", "Fault", "Faults", "RateLimit"]

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

#: Error codes used when an injected failure does not name one. Only 403, 404 and 413 are documented codes.
DEFAULT_ERROR_CODES: Mapping[int, str] = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "OperationFailed",
    404: "NotFound",
    408: "RequestTimeout",
    409: "Conflict",
    413: "ContentLengthLimitExceeded",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

_WINDOW = 60.0


@dataclass(frozen=True)
class Fault:
    """What the emulator does instead of serving one request."""

    kind: Literal["fail", "drop"]
    status: int = 0
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class RateLimit:
    """A per-DCR limit over a sliding one-minute window; ``None`` means unlimited."""

    requests_per_minute: int | None = None
    bytes_per_minute: int | None = None


@dataclass
class _Scripted:
    remaining: int
    fault: Fault


def _check_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), not {status}")


class Faults:
    """The emulator's fault-injection controls (``emu.faults``).

    Failures are served in this order: dropped connections (:meth:`drop_next`), scripted failures
    (:meth:`fail_next`, first scripted first served), random failures (:meth:`failure_rate`). Latency
    applies to every request before that. Rate limits are checked after authentication, once the body has
    been read.

    :param clock: Monotonic clock in seconds (injectable for tests of the rate limiter).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._scripted: deque[_Scripted] = deque()
        self._drops = 0
        self._rate = 0.0
        self._rate_status = 503
        self._rng = random.Random()
        self._latency = 0.0
        self._limits: dict[str | None, RateLimit] = {}
        self._windows: dict[str, deque[tuple[float, int]]] = {}

    # -- scripting -------------------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next *n* requests with an error response.

        Calls queue up: ``fail_next(1, 503); fail_next(1, 500)`` answers 503 then 500.

        :param n: Number of requests to fail (0 does nothing).
        :param status: HTTP status, 400-599.
        :param retry_after: Seconds for a ``Retry-After`` header (whole seconds are sent as an integer).
        :param code: Error code for the body and ``x-ms-error-code``; default by status (e.g. 503
            ``ServiceUnavailable``), see :data:`DEFAULT_ERROR_CODES`.
        :param message: Error message; default ``"Injected fault (emulator)."``.
        :raises ValueError: for a negative *n* or a non-error status.
        """
        _check_status(status)
        if n < 0:
            raise ValueError("n must not be negative")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if n:
            with self._lock:
                self._scripted.append(_Scripted(n, Fault("fail", status, retry_after, code, message)))

    def failure_rate(self, rate: float, status: int = 503, *, seed: int | None = None) -> None:
        """Fail a random share of requests.

        :param rate: Probability in [0, 1] that a request fails; 0 turns random failures off.
        :param status: HTTP status of the failures (default 503).
        :param seed: Seed for the random generator, for reproducible runs.
        :raises ValueError: for a rate outside [0, 1] or a non-error status.
        """
        _check_status(status)
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        with self._lock:
            self._rate = rate
            self._rate_status = status
            self._rng = random.Random(seed)

    def latency(self, seconds: float) -> None:
        """Delay every answer by *seconds* (an async sleep: concurrent requests overlap); 0 turns it off.

        The request is read and processed first (its rows are stored), then the answer waits: a client that
        times out meanwhile cannot know whether its rows landed, as with the real service.

        :raises ValueError: for a negative delay.
        """
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("latency must be a finite, non-negative number of seconds")
        with self._lock:
            self._latency = seconds

    def drop_next(self, n: int) -> None:
        """Close the connection abruptly, without any response, on the next *n* requests.

        The request body is read first, then the TCP connection is aborted: the client sees a connection error
        (azure-core: ``ServiceResponseError``), never an HTTP status.

        :raises ValueError: for a negative *n*.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        with self._lock:
            self._drops += n

    def rate_limit(
        self,
        rule_id: str | None = None,
        *,
        requests_per_minute: int | None = None,
        bytes_per_minute: int | None = None,
    ) -> None:
        """Throttle a DCR: over the limit the emulator answers 429 ``TooManyRequests`` with ``Retry-After``.

        The window slides over the last 60 seconds; only accepted requests count, bytes are request body bytes
        as received (compressed). Both limits ``None`` removes the limit.

        :param rule_id: Immutable id of the DCR; ``None`` sets a limit every DCR gets (each its own window).
        :param requests_per_minute: Requests per minute (the service documents 12,000).
        :param bytes_per_minute: Body bytes per minute (the service documents 2 GB).
        :raises ValueError: for a limit below 1.
        """
        for value in (requests_per_minute, bytes_per_minute):
            if value is not None and value < 1:
                raise ValueError("rate limits must be at least 1")
        with self._lock:
            if requests_per_minute is None and bytes_per_minute is None:
                self._limits.pop(rule_id, None)
            else:
                self._limits[rule_id] = RateLimit(requests_per_minute, bytes_per_minute)

    def reset(self) -> None:
        """Remove every fault and rate limit (and forget rate-limit windows)."""
        with self._lock:
            self._scripted.clear()
            self._drops = 0
            self._rate = 0.0
            self._rate_status = 503
            self._latency = 0.0
            self._limits.clear()
            self._windows.clear()

    # -- used by the server ----------------------------------------------------------------------------------

    def next_request(self) -> tuple[float, Fault | None]:
        """Consume the faults for one request: its added latency, and what to do instead of serving it."""
        with self._lock:
            latency = self._latency
            if self._drops:
                self._drops -= 1
                return latency, Fault("drop")
            if self._scripted:
                entry = self._scripted[0]
                entry.remaining -= 1
                if not entry.remaining:
                    self._scripted.popleft()
                return latency, entry.fault
            if self._rate and self._rng.random() < self._rate:
                return latency, Fault(
                    "fail", self._rate_status, message="Injected random failure (emulator)."
                )
            return latency, None

    def admit(self, rule_id: str, nbytes: int) -> float | None:
        """Check the rate limit of *rule_id* for a request of *nbytes*; record it when admitted.

        :returns: ``None`` when admitted, else the seconds the client should wait (``Retry-After``).
        """
        with self._lock:
            limit = self._limits.get(rule_id) or self._limits.get(None)
            if limit is None:
                return None
            now = self._clock()
            window = self._windows.setdefault(rule_id, deque())
            while window and window[0][0] <= now - _WINDOW:
                window.popleft()
            wait = 0.0
            if limit.requests_per_minute is not None and len(window) >= limit.requests_per_minute:
                wait = max(wait, window[len(window) - limit.requests_per_minute][0] + _WINDOW - now)
            if limit.bytes_per_minute is not None:
                if nbytes > limit.bytes_per_minute:
                    wait = max(wait, _WINDOW)
                else:
                    excess = sum(b for _, b in window) + nbytes - limit.bytes_per_minute
                    for stamp, size in window:
                        if excess <= 0:
                            break
                        excess -= size
                        wait = max(wait, stamp + _WINDOW - now)
            if wait > 0:
                return wait
            window.append((now, nbytes))
            return None
