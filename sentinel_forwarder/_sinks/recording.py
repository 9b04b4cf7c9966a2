"""``RecordingForwarder``: an in-memory sink for tests; public API in ``sentinel_forwarder.testing``."""

from __future__ import annotations

__all__ = ["RecordingForwarder"]

from collections import deque
from collections.abc import Callable, Sequence

import anyio

from .._model.entry import AuditEntry
from .._model.protocol import AuditSink, DropReason, SendResult


class RecordingForwarder(AuditSink):
    """Records every batch it is given; failures and stalls can be scripted.

    ::

        sink = RecordingForwarder()
        async with BufferingForwarder(sink, max_batch_size=10) as fwd:
            fwd.forward(AuditEntry("x"))
            await sink.wait_for_rows(1)
        assert sink.rows[0].summary == "x"

    :param outcome: optional function deciding each batch's result (for partial failures); by default every
        row is sent unless a scripted failure is pending.
    """

    def __init__(self, *, outcome: Callable[[Sequence[AuditEntry]], SendResult] | None = None) -> None:
        self.batches: list[list[AuditEntry]] = []
        self.closed = False
        self._outcome = outcome
        self._failures: deque[tuple[DropReason, str | None]] = deque()
        self._raise_next: deque[BaseException] = deque()
        self._throttles: deque[float] = deque()
        self._gate: anyio.Event | None = None
        self._waiters: list[tuple[int, int, anyio.Event]] = []
        self._rows_seen = 0
        self._batches_seen = 0
        self.started = 0  # batches whose send has begun (also those held at the gate)

    @property
    def rows(self) -> list[AuditEntry]:
        """Every row delivered (not those failed by a scripted failure), in order of delivery."""
        return [e for batch in self.batches for e in batch]

    def fail_next(
        self, n: int = 1, reason: DropReason = "retries_exhausted", error: str | None = None
    ) -> None:
        """Report the next *n* batches as wholly dropped for *reason*."""
        self._failures.extend([(reason, error)] * n)

    def throttle_next(self, n: int = 1, retry_after: float = 0.01) -> None:
        """Deliver the next *n* batches, but say the service throttled them and asked to wait *retry_after*
        seconds (as a 429 retried to success would): the forwarder then pauses its new requests."""
        self._throttles.extend([retry_after] * n)

    def raise_next(self, exc: BaseException) -> None:
        """Raise *exc* from the next ``send_batch`` (a misbehaving sink)."""
        self._raise_next.append(exc)

    def hold(self) -> None:
        """Make sends wait until :meth:`release` (to fill the buffer, or outlast a drain deadline)."""
        if self._gate is None:
            self._gate = anyio.Event()

    def release(self) -> None:
        """Let held and future sends through."""
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def wait_for_rows(self, rows: int = 0, *, batches: int = 0) -> None:
        """Wait until at least *rows* rows and *batches* batches have been handled (sent or failed)."""
        if self._rows_seen >= rows and self._batches_seen >= batches:
            return
        event = anyio.Event()
        self._waiters.append((rows, batches, event))
        await event.wait()

    async def send_batch(self, entries: Sequence[AuditEntry], /) -> SendResult:
        self.started += 1
        if self._gate is not None:
            await self._gate.wait()
        try:
            if self._raise_next:
                raise self._raise_next.popleft()
            if self._failures:
                reason, error = self._failures.popleft()
                return SendResult.failed(reason, len(entries), error)
            if self._outcome is not None:
                return self._outcome(entries)
            self.batches.append(list(entries))
            if self._throttles:
                return SendResult(sent=len(entries), retry_after=self._throttles.popleft())
            return SendResult(sent=len(entries))
        finally:
            self._rows_seen += len(entries)
            self._batches_seen += 1
            self._notify()

    def _notify(self) -> None:
        keep = []
        for rows, batches, event in self._waiters:
            if self._rows_seen >= rows and self._batches_seen >= batches:
                event.set()
            else:
                keep.append((rows, batches, event))
        self._waiters = keep

    async def aclose(self) -> None:
        self.closed = True
