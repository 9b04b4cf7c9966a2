"""The bounded buffer between ``forward()`` and the pump, and the pump's wake-up.

A ``collections.deque`` appended to without a lock rather than an anyio memory object stream: anyio streams
may only be used from their event loop's thread, and ``forward()`` must also be callable from other threads.
The pump is woken only when a batch may be ready (first row, full batch, close), the same way as
OpenTelemetry's batch processor; ``benchmarks/bench_forward.py`` compares it with a bare
``MemoryObjectSendStream.send_nowait``.
"""

from __future__ import annotations

__all__ = ["Buffer"]

import contextlib
import threading
from collections import deque
from collections.abc import Callable

import anyio
import anyio.lowlevel

from .._model.entry import AuditEntry


class Buffer:
    """Rows offered and not yet taken by the pump, with the events the pump waits on.

    ``forward()`` appends to :attr:`rows` directly (``deque.append`` is atomic) and counts nothing on success;
    rows accepted are derived: :attr:`taken` (by the pump, or at close) plus those still in :attr:`rows`.
    Taking happens under *lock* (the ledger's), so a snapshot of the counters sees each row once.

    :param capacity: rows it holds; the hot path refuses a row when it is full.
    :param batch_size: a batch is due as soon as this many rows wait (the hot path wakes the pump then).
    :param lock: the ledger's lock.
    """

    def __init__(self, capacity: int, batch_size: int, lock: threading.Lock) -> None:
        self.rows: deque[AuditEntry] = deque()
        self.capacity = capacity
        self.batch_size = batch_size
        self.lock = lock
        #: False once closing: ``forward()`` then drops with reason ``"closed"``.
        self.accepting = True
        #: Rows removed from :attr:`rows` so far (taken by a pump, or counted as lost at close).
        self.taken = 0
        #: Called instead of a wake-up while no loop is bound (a forked child restarts its forwarder).
        self.on_wake_unbound: Callable[[], None] | None = None
        # Bound on the event loop when the forwarder opens.
        self._loop_thread: int | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._wakeup: anyio.Event | None = None
        #: Set once the buffer stops taking rows (created on the loop by :meth:`bind`).
        self.closed: anyio.Event | None = None

    # -- the event loop's side ---------------------------------------------------------------------------

    def bind(self) -> None:
        """Create the loop-side events (on the forwarder's event loop, before anything waits on them)."""
        self._wakeup = anyio.Event()
        self.closed = anyio.Event()

    def bind_thread(self) -> None:
        """From now on, wake the pump on this loop (other threads go through its thread-safe queue)."""
        # The token before the thread: forward() on another thread reads them in that order.
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()

    def close(self) -> None:
        """Stop taking rows and wake the pump, which drains what is left (on the loop)."""
        with self.lock:
            self.accepting = False
        if self.closed is not None:
            self.closed.set()
        self.set_wakeup()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (woken, or at most this long)
        """Wait until woken, or *timeout* seconds."""
        self._wakeup = event = anyio.Event()
        with anyio.move_on_after(timeout):
            await event.wait()

    async def pause(self, seconds: float) -> None:
        """Wait *seconds*, or less if closing begins."""
        assert self.closed is not None
        with anyio.move_on_after(seconds):
            await self.closed.wait()

    def set_wakeup(self) -> None:
        """Wake the pump (on the loop's thread)."""
        if self._wakeup is not None:
            self._wakeup.set()

    # -- any thread --------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Wake the pump: directly on its thread, through the loop's thread-safe queue from others."""
        if self._loop_thread is None:
            if self.on_wake_unbound is not None:
                self.on_wake_unbound()
            return  # not started: the pump looks at the buffer when it starts
        if threading.get_ident() == self._loop_thread:
            self.set_wakeup()
        else:
            assert self._token is not None
            # If the loop is gone, close has accounted for what is buffered.
            with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
                self._token.backend_class.run_sync_soon(self.set_wakeup, (), self._token.native_token)

    def take(self, limit: int, on_taken: Callable[[int], None] | None = None) -> tuple[int, list[AuditEntry]]:
        """Take up to *limit* rows, oldest first. -> (how many rows were taken before these, the rows)

        :param on_taken: called with that first number under the lock, so that no snapshot of the counters
            sees the rows neither in the buffer nor where the caller keeps them.
        """
        with self.lock:
            n = min(len(self.rows), limit)
            start = self.taken
            self.taken += n
            if on_taken is not None:
                on_taken(start)
            return start, [self.rows.popleft() for _ in range(n)]

    def discard_all_locked(self) -> int:
        """Stop taking rows for good and empty the buffer (at close; the caller holds the lock).

        :returns: how many rows were left.
        """
        self.accepting = False
        left = 0
        while self.rows:
            self.rows.popleft()
            left += 1
        self.taken += left
        return left
