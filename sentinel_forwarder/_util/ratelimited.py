"""Logs that cannot flood: drops counted per reason and logged at most once a minute, unexpected errors
logged at most once a minute with a count of those held back.

Thread-safe, with an injectable clock. The application's handlers and filters run inside them: if one
raises, the count stands and the caller goes on.
"""

from __future__ import annotations

__all__ = ["DropLog", "ErrorLog", "LogKey"]

import contextlib
import logging
import threading
import time
from collections.abc import Callable

#: What the drop log counts under: a drop reason, or ``"unconfirmed"`` for rows whose landing is unknown.
LogKey = str


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
