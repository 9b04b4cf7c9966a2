"""Sharing a DCR with a fleet: the throttle gate and the request budget, for every pump alike.

The service limits each DCR (12,000 requests and 2 GB a minute, then 429 with ``Retry-After``). A fleet of
instances sharing one DCR stays within it without any coordination if each instance

- **pauses all its new requests** when the service throttles any of them, for as long as it asked (the
  :class:`ThrottleGate`: capped, jittered, so a fleet does not come back in lock-step), and
- **spends its own request budget** (the :class:`RequestBudget`, a token bucket): a small request (under a
  quarter of ``max_request_rows``) waits for a token while rows keep arriving, so requests grow instead of
  multiplying. After a throttle the rate halves; every delivery that is not throttled adds back a
  twentieth of the ceiling (additive increase, multiplicative decrease), so a fleet converges on what the
  DCR serves.

Both are pure logic over an injectable clock; :class:`~sentinel_forwarder._core.delivery.Delivery` owns
one of each, and the pumps ask it how long to wait before they take the next batch.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_REQUESTS_PER_MINUTE",
    "THROTTLE_DEFAULT_WAIT",
    "THROTTLE_MAX_WAIT",
    "RequestBudget",
    "ThrottleGate",
]

import random
import threading
import time
from collections.abc import Callable
from typing import Final

#: A request budget of 30 requests a minute per instance by default (one every 2 s), chosen by measurement
#: (benchmarks/bench_fleet.py, docs/benchmarks.md): with 150 a fleet of 8 instances at 1,000 rows/s filled a
#: DCR scaled to 600 requests a minute in 30 s and then waited out 30-s throttles. Small requests wait for
#: it; large ones (a quarter of ``max_request_rows``) do not until the service has throttled, so a single
#: instance's throughput under load is not capped by it. At 300 rows/s that is ~3 requests per MB, at
#: 1,000 rows/s ~1.5. See docs/fleet.md.
DEFAULT_MAX_REQUESTS_PER_MINUTE: Final = 30
#: The pause after a throttle whose answer did not say how long (seconds).
THROTTLE_DEFAULT_WAIT: Final = 1.0
#: The longest pause one answer can impose (seconds): a ``Retry-After`` beyond it is capped.
THROTTLE_MAX_WAIT: Final = 60.0
#: The jitter added to a pause, as a share of it: a fleet throttled at once comes back spread out.
_JITTER: Final = 0.1
#: After a throttle the rate is multiplied by this; every unthrottled delivery adds this share of the ceiling.
_DECREASE: Final = 0.5
_INCREASE: Final = 0.05


class ThrottleGate:
    """Closed while the service asked the forwarder to wait. Thread-safe.

    :param clock: a monotonic clock.
    :param jitter: random numbers in [0, 1).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._jitter = jitter
        self._lock = threading.Lock()
        self._until = float("-inf")

    def close_for(self, retry_after: float | None) -> float:
        """The service throttled a delivery and asked to wait *retry_after* seconds (``None``: unsaid).

        :returns: the seconds this added to the pause (0 if an earlier pause already covers it), for the
            ledger, which counts throttles and the time paused.
        """
        wait = THROTTLE_DEFAULT_WAIT if not retry_after else min(float(retry_after), THROTTLE_MAX_WAIT)
        wait *= 1.0 + _JITTER * self._jitter()
        now = self._clock()
        with self._lock:
            start = max(now, self._until)
            until = now + wait
            added = max(until - start, 0.0)
            if until > self._until:
                self._until = until
            return added

    def delay(self) -> float:
        """Seconds until the gate opens (0: open)."""
        with self._lock:
            return max(self._until - self._clock(), 0.0)


class RequestBudget:
    """A token bucket whose rate adapts: halved when the service throttles, raised back slowly. Thread-safe.

    :param per_minute: the ceiling, requests a minute; the bucket holds a few seconds' worth (at least 1),
        so a lone request after a quiet spell never waits.
    :param clock: a monotonic clock.
    """

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not per_minute > 0:
            raise ValueError(f"per_minute must be positive, not {per_minute}")
        self.ceiling = float(per_minute)
        self._floor = max(self.ceiling / 20, 1.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = self.ceiling
        self._capacity = max(self.ceiling / 60 * 2, 1.0)  # two seconds' worth
        self._tokens = self._capacity
        self._stamp = clock()

    @property
    def lowered(self) -> bool:
        """Whether the rate is below the ceiling (the service throttled, and the rate has not come back)."""
        with self._lock:
            return self._rate < self.ceiling

    @property
    def rate(self) -> float:
        """The current rate, requests a minute (between a twentieth of the ceiling and the ceiling)."""
        with self._lock:
            return self._rate

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate / 60)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until a token is there (0: now)."""
        with self._lock:
            self._refill(self._clock())
            return 0.0 if self._tokens >= 1 else (1 - self._tokens) * 60 / self._rate

    def spend(self) -> None:
        """A request goes (a full one goes without waiting: the bucket may run empty, never below)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = max(self._tokens - 1, 0.0)

    def throttled(self) -> None:
        """The service throttled a request: halve the rate (not below a twentieth of the ceiling)."""
        with self._lock:
            self._refill(self._clock())
            self._rate = max(self._rate * _DECREASE, self._floor)
            self._tokens = min(self._tokens, 0.0)

    def succeeded(self) -> None:
        """A delivery went through unthrottled: raise the rate by a twentieth of the ceiling."""
        with self._lock:
            if self._rate < self.ceiling:
                self._refill(self._clock())
                self._rate = min(self._rate + self.ceiling * _INCREASE, self.ceiling)
