"""The pump of a :class:`~sentinel_forwarder.BufferingForwarder` with a spool (``spool=directory``).

Data flows one way: buffer → transform → commit to the spool (group commits, on one worker thread) → batches
read back in id order (from memory while delivery keeps up, from disk after a restart, an outage or a shed)
→ the sink, given the JSON stored for each row (``send_encoded``), so rows are serialised once → the rows are
deleted once the service said yes. What the sink reports per row decides each
row's fate:

- delivered, or dropped for a reason that retrying cannot change (the sink says so): deleted;
- refused by the service (``rejected``, ``too_large``, ``invalid_row``, ``sink_error``): moved to the dead
  letters with the service's answer;
- anything that may heal (``retries_exhausted``, ``unauthorized``, ``not_found``, ``credential_error``,
  ``unreachable``, unconfirmed, abandoned at the drain deadline): kept. Delivery then pauses with capped,
  jittered backoff (:data:`RETRY_FIRST` doubling to :data:`RETRY_MAX`), rewinds to the oldest row and probes
  with one batch at a time until one gets through.

The forwarder's counters stay exact: a row is counted once, when its fate is final (sent, dropped by reason,
or still spooled at close). Rows found in the spool at start (an earlier run, a dead process) are counted as
``recovered``.
"""

from __future__ import annotations

__all__ = ["RETRY_FIRST", "RETRY_MAX", "SpoolPump"]

import contextlib
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup

from .._core.batching import Batching
from .._core.buffer import Buffer
from .._core.delivery import Delivery, reraise_interrupt
from .._core.ledger import Ledger
from .._core.scopes import WorkScopes
from .._core.stages import Staged, Stages
from .._evidence.chain import ChainHead
from .._model.entry import AuditEntry, Severity
from .._model.protocol import SendResult
from .._model.wire import encode_row
from .._util.workers import DaemonWorkers
from .fates import DurableWaiters, fates_of
from .store import Appended, Spool

logger = logging.getLogger("sentinel_forwarder")

#: After a delivery from the spool fails in a way that may heal, the first pause; it doubles per failure.
RETRY_FIRST: Final = 1.0
#: The longest pause between delivery attempts while the service keeps failing.
RETRY_MAX: Final = 60.0
#: Expired rows are deleted, dead processes' files adopted and counters checked this often (seconds).
MAINTENANCE_INTERVAL: Final = 60.0
#: Rows taken from the buffer for one group commit, at most.
COMMIT_ROWS: Final = 10_000

#: A delivery: the rows' spool ids, their entries and their stored JSON (handed to the sink as it is).
_Batch = tuple[list[int], list[AuditEntry], list[bytes]]


class SpoolPump:
    """Pumps rows from the buffer through a spool in *directory*. Belongs to one run of a forwarder.

    :param buffer: where rows wait before they are committed.
    :param ledger: where every outcome is counted.
    :param stages: transform → filter → link, run before a row is committed.
    :param delivery: the send path.
    :param scopes: the run's work scopes.
    :param batching: batch sizes and timing (``capacity`` bounds the rows kept in memory too).
    :param head: the chain's head now (stored with each commit, so a restart resumes the chain).
    :param resume: continues the chain from the head an earlier run stored.
    :param directory: the spool's directory.
    :param max_bytes: the spool's budget of row JSON.
    :param max_age: seconds a row may wait in the spool.
    """

    durable = True

    def __init__(
        self,
        buffer: Buffer,
        ledger: Ledger,
        stages: Stages,
        delivery: Delivery,
        scopes: WorkScopes,
        batching: Batching,
        *,
        head: Callable[[], ChainHead | None],
        resume: Callable[[ChainHead | None], None],
        directory: str,
        max_bytes: int,
        max_age: float,
    ) -> None:
        self._buffer = buffer
        self._ledger = ledger
        self._stages = stages
        self._delivery = delivery
        self._scopes = scopes
        self._batching = batching
        self._head = head
        self._resume = resume
        self.spool = Spool(directory)
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._worker = DaemonWorkers(1, name="sentinel-forwarder-spool")
        # Persisted rows not yet handed to the sink, in id order, while the disk holds nothing newer that
        # is missing here (else ``_from_disk`` and the cache is empty). (id, entry, monotonic time, JSON)
        self._cache: deque[tuple[int, AuditEntry, float, bytes]] = deque()
        self._from_disk = True
        self._cursor = 0  # the highest id handed to the sink (or dead-lettered unread)
        #: Batches at the sink: first id -> (first id, last id, rows). No other waiting row has an id between.
        self._busy: dict[int, tuple[int, int, int]] = {}
        self._rewind = False  # a delivery failed: start again from the oldest row once none is in flight
        self._probing = False  # one batch at a time until one gets through
        self._failures = 0
        self._backoff_until = 0.0
        self._maintained = 0.0
        #: Rows taken over from earlier runs and dead processes.
        self.recovered = 0
        self.oldest: float | None = None  # time.time() of the oldest spooled row
        self._kept_logged = 0.0
        self._durable = DurableWaiters()  # forward_durable(): rows not yet committed (or dropped)
        self._flush_waiters: list[anyio.Event] = []
        self._committing = 0  # rows taken from the buffer for the commit under way

    # -- spool operations, on the spool's own thread ----------------------------------------------------

    async def _io(self, fn: Callable[..., object], *args: object) -> object:
        # Shielded: a commit or a delete that has begun completes, so the counts say what the disk holds.
        with anyio.CancelScope(shield=True):
            result = await self._worker.run(fn, *args, cancel=threading.Event())
        return result

    async def open(self) -> None:
        """Open the spool and take over what earlier runs and dead processes left.

        :raises SpoolError: if the directory cannot be used.
        """
        await self._io(self.spool.open)
        await self._maintain(force=True)
        head = await self._io(self.spool.chain_head)
        if head is not None:
            assert isinstance(head, tuple)
            self._resume(ChainHead(*head))

    async def close(self) -> None:
        try:
            await self._io(self.spool.close)
        finally:
            self._worker.close()
            self._durable.resolve(None)

    def in_flight(self) -> int:
        return 0  # deliveries from the spool are not counted as batches in flight (rows stay spooled)

    def statistics(self) -> Mapping[str, Any]:
        spool, oldest = self.spool, self.oldest
        return {
            "spooled": spool.rows,
            "spooled_bytes": spool.bytes,
            "oldest_spooled_age": None if oldest is None else max(time.time() - oldest, 0.0),
            "dead_letters": spool.dead_letters,
            "recovered": self.recovered,
        }

    def gauges(self) -> tuple[int, int, float, int] | None:
        spool, oldest = self.spool, self.oldest
        age = 0.0 if oldest is None else max(time.time() - oldest, 0.0)
        return spool.rows, spool.bytes, age, spool.dead_letters

    def consecutive_failures(self) -> int:
        return self._failures  # failing rows are kept, not dropped: the ledger does not see them fail

    # -- forward_durable -------------------------------------------------------------------------------

    def add_durable_waiter(self, position: int, callback: Callable[[bool], None]) -> None:
        self._durable.add(position, callback)

    # -- the pump --------------------------------------------------------------------------------------

    async def run(self, tg: TaskGroup) -> None:
        buffer = self._buffer
        with self._scopes.shielded():
            while True:
                try:
                    wait = await self._step(tg)
                except Exception as exc:  # the disk or a bug: log it, keep pumping (never go quiet)
                    self._delivery.errors.error("sentinel-forwarder: the spool pump failed; it goes on", exc)
                    await buffer.pause(RETRY_MAX if buffer.accepting else 0.0)
                    if not buffer.accepting and not self._busy:
                        break
                    continue
                if wait == 0:
                    continue
                closing = not buffer.accepting
                if closing and not self._busy and (wait is None or self._backoff_until > time.monotonic()):
                    break  # all delivered, or the service is failing: what is left waits in the spool
                self._check_flushes()
                timeout = self._batching.max_interval if wait is None else wait
                await buffer.wait(min(timeout, self._ledger.logs_due_in()))
            self._check_flushes()

    async def _step(self, tg: TaskGroup) -> float | None:
        """Commit what is buffered, or start one delivery. -> 0 if it did something, else as :meth:`_due`."""
        self._ledger.flush_due_logs()
        if self._buffer.rows:
            await self._commit()
            return 0
        await self._maintain()
        closing = not self._buffer.accepting
        wait = self._due(closing)
        if wait == 0:
            # While the service throttles, nothing goes; a small request also waits for the request budget,
            # and grows meanwhile (rows read back from disk come in full requests).
            waiting = self._batching.max_request_rows if self._from_disk else len(self._cache)
            wait = self._delivery.delay(waiting, self._batching, closing=closing)
        if wait == 0:
            batch = await self._take()
            if batch is not None:
                ids = batch[0]
                self._busy[ids[0]] = (ids[0], ids[-1], len(ids))
                tg.start_soon(self._deliver, batch)
        return wait

    def _busy_ranges(self) -> list[tuple[int, int]]:
        return [(lo, hi) for lo, hi, _ in self._busy.values()]

    def _due(self, closing: bool) -> float | None:
        """0 if a batch can be taken now; else seconds until one may be (``None``: nothing to send)."""
        batching = self._batching
        limit = 1 if self._probing else batching.max_in_flight
        if len(self._busy) >= limit:
            return batching.max_interval  # a settling delivery wakes the pump
        now = time.monotonic()
        if self._backoff_until > now:
            return self._backoff_until - now if self.spool.rows else None
        if self._rewind:
            if self._busy:
                return batching.max_interval
            self._rewind = False
            self._cursor = 0
            self._cache.clear()
            self._from_disk = True
        if self._from_disk:  # rows not being delivered are on disk beyond the cursor
            return 0 if self.spool.rows > sum(n for _, _, n in self._busy.values()) else None
        if not self._cache:
            return None
        if len(self._cache) >= batching.max_batch_size or closing or self._flush_waiters:
            return 0
        return max(self._cache[0][2] + batching.max_interval - now, 0.0)

    async def _take(self) -> _Batch | None:
        max_rows = self._batching.max_request_rows
        if not self._from_disk:
            n = min(len(self._cache), max_rows)
            taken = [self._cache.popleft() for _ in range(n)]
            self._cursor = taken[-1][0]
            return [t[0] for t in taken], [t[1] for t in taken], [t[3] for t in taken]
        rows = await self._io(self.spool.read, self._cursor, max_rows)
        assert isinstance(rows, list)
        if len(rows) < max_rows:
            self._from_disk = False  # caught up: from now on, committed rows are sent from memory
        if not rows:
            return None
        ids: list[int] = []
        entries: list[AuditEntry] = []
        stored: list[bytes] = []
        unreadable: list[tuple[int, str, str]] = []
        for row_id, data in rows:
            try:
                entries.append(AuditEntry.from_row(json.loads(data)))
                ids.append(row_id)
                stored.append(data)
            except Exception as exc:  # a row this version cannot read: keep it for an operator
                unreadable.append((row_id, "invalid_row", f"the spooled row cannot be read: {exc}"))
        if unreadable:
            await self._io(self.spool.settle, (), unreadable)
            self._ledger.delivered(SendResult.failed("invalid_row", len(unreadable), unreadable[-1][2]), 0.0)
        self._cursor = rows[-1][0]  # only now: if the settle failed, this page is read again
        return (ids, entries, stored) if ids else None

    # -- committing --------------------------------------------------------------------------------------

    async def _commit(self) -> None:
        start, batch = self._buffer.take(COMMIT_ROWS)
        self._committing = len(batch)  # neither in the buffer nor in the spool: flush() waits for them
        try:
            await self._commit_taken(start, batch)
        finally:
            self._committing = 0

    async def _commit_taken(self, start: int, batch: list[AuditEntry]) -> None:
        interrupt: BaseException | None = None
        lost: list[int] = []
        try:
            staged = await self._stages.run(batch)
        except anyio.get_cancelled_exc_class():
            raise  # the run is being cancelled (linking is shielded, so this is not the drain deadline)
        except BaseException as exc:
            # An interrupt from the transform (or a bug in the stages). A commit holds many batches' rows:
            # stage them one at a time, so that only the rows it fails on are lost (counted), as a batch
            # of the memory pump would be; the pump goes on, and re-raises an interrupt on the main thread
            # once this commit is counted. (The transform runs again for the rows before the failing one.)
            interrupt = exc
            staged, lost = await self._stage_rows_alone(batch)
            error = self._delivery.contain(exc, "the rows it failed on are dropped (sink_error)")
            self._ledger.lost(len(lost), "sink_error", error)
        rows, kept = staged.rows, staged.kept
        # Filtered rows are settled, not failed.
        failed: set[int] = {start + 1 + i for i in (*staged.refused, *lost)}
        records: list[tuple[int, bytes]] = []
        entries: list[AuditEntry] = []
        positions: list[int] = []
        for entry, i in zip(rows, kept, strict=True):
            try:
                data = encode_row(entry)
            except Exception as exc:  # cannot be stored or sent: this row alone
                failed.add(start + 1 + i)
                error = f"row Id {entry.id!r} is not valid JSON: {exc}"
                self._ledger.delivered(SendResult.failed("invalid_row", 1, error), 0.0)
                continue
            records.append((int(entry.severity), data))
            entries.append(entry)
            positions.append(start + 1 + i)
        if records:
            try:
                head = self._head()
                appended = await self._io(
                    self.spool.append,
                    records,
                    self._max_bytes,
                    self._busy_ranges(),
                    None,
                    None if head is None else (head.chain_id, head.sequence, head.hash),
                )
            except Exception as exc:  # the disk failed: these rows are lost, say so
                self._delivery.errors.error("sentinel-forwarder: could not write to the spool", exc)
                error = f"spool write failed: {exc}"
                self._ledger.delivered(SendResult.failed("sink_error", len(records), error), 0.0)
                failed.update(positions)
            else:
                self._remember(appended, entries, [data for _, data in records], positions, failed)
        self._durable.resolve(start + len(batch), failed)
        self._buffer.set_wakeup()
        reraise_interrupt(interrupt)

    async def _stage_rows_alone(self, batch: list[AuditEntry]) -> tuple[Staged, list[int]]:
        """Run the stages on each row of *batch* alone. -> (what they made of the rows that passed, the
        positions of the rows they raised on)"""
        rows: list[AuditEntry] = []
        kept: list[int] = []
        refused: list[int] = []
        lost: list[int] = []
        for position, entry in enumerate(batch):
            try:
                one = await self._stages.run([entry])
            except BaseException:
                lost.append(position)
                continue
            rows += one.rows
            kept += [position] * len(one.kept)
            refused += [position] * len(one.refused)
        return Staged(rows, kept, refused), lost

    def _remember(
        self,
        appended: object,
        entries: list[AuditEntry],
        stored: list[bytes],
        positions: list[int],
        failed: set[int],
    ) -> None:
        assert isinstance(appended, Appended)
        now = time.monotonic()
        shed: dict[int, int] = dict(appended.shed_stored)
        if appended.shed_ids:
            self._cache.clear()  # rows may have left the middle of what is cached
            self._from_disk = True
        fits = not self._from_disk and len(self._cache) + len(entries) <= self._batching.capacity
        for entry, data, row_id, position in zip(entries, stored, appended.ids, positions, strict=True):
            if row_id is None:
                failed.add(position)
                shed[int(entry.severity)] = shed.get(int(entry.severity), 0) + 1
            elif fits:
                self._cache.append((row_id, entry, now, data))
        if not fits and not self._from_disk:
            self._cache.clear()  # delivery is behind: read back from disk when it catches up
            self._from_disk = True
        if self.oldest is None and self.spool.rows:
            self.oldest = time.time()
        for severity, count in shed.items():
            self._count_shed(Severity(severity), count)

    def _count_shed(self, severity: Severity, count: int) -> None:
        detail = (
            f"the spool is full (spool_max_bytes={self._max_bytes:,}): {count} {severity.label}-severity "
            "rows shed to make room for rows of higher severity or newer ones"
        )
        self._ledger.dropped("shed", count, detail, severity=severity)

    # -- delivering --------------------------------------------------------------------------------------

    async def _deliver(self, batch: _Batch) -> None:
        ids, entries, stored = batch
        try:
            # The stored JSON goes to the sink, which need not serialise the rows again.
            attempt = await self._delivery.send(entries, stored, fate="its batch goes to the dead letters")
            if attempt.raised is not None:
                assert attempt.result is not None
                await self._settle_safely(ids, attempt.result, 0.0)
                attempt.reraise_interrupt()
            elif attempt.result is not None:
                await self._settle_safely(ids, attempt.result, attempt.elapsed)
            # else: abandoned at the drain deadline; the rows stay spooled for the next run
        finally:
            del self._busy[ids[0]]
            self._buffer.set_wakeup()

    async def _settle_safely(self, ids: list[int], result: SendResult, elapsed: float) -> None:
        try:
            await self._settle(ids, result, elapsed)
        except Exception as exc:  # the disk failed: the rows stay spooled and are sent again (duplicates)
            self._delivery.errors.error(
                "sentinel-forwarder: could not update the spool after a delivery", exc
            )
            self._failed(len(ids), replace(result, error=f"the spool could not be updated: {exc}"))

    async def _settle(self, ids: list[int], result: SendResult, elapsed: float) -> None:
        fates = fates_of(ids, result)
        await self._io(self.spool.settle, fates.done, fates.dead)
        if fates.counted.total:
            self._ledger.delivered(fates.counted, elapsed)
        with contextlib.suppress(Exception):  # only for statistics
            self.oldest = await self._io(self.spool.oldest)  # type: ignore[assignment]
        if fates.kept:
            self._failed(fates.kept, result)
        else:
            self._succeeded()

    def _failed(self, kept: int, result: SendResult) -> None:
        now = time.monotonic()
        if not self._rewind:  # the first failure since the last rewind sets the pause
            self._failures += 1
            limit = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
            self._backoff_until = now + limit / 2 + random.random() * limit / 2
        self._rewind = True
        self._probing = True
        self._ledger.error(result.error)
        if now - self._kept_logged >= 60.0 or self._failures == 1:
            self._kept_logged = now
            # The application's handlers and filters run here; if one raises, the pump goes on.
            with contextlib.suppress(Exception):
                logger.warning(
                    "sentinel-forwarder: %d rows stay in the spool and will be retried in %.0f s (%s); "
                    "%d rows are spooled",
                    kept,
                    max(self._backoff_until - now, 0.0),
                    result.error,
                    self.spool.rows,
                )

    def _succeeded(self) -> None:
        if self._probing and not self._rewind:
            self._probing = False
            self._failures = 0

    # -- maintenance and flush -------------------------------------------------------------------------

    async def _maintain(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._maintained < MAINTENANCE_INTERVAL:
            return
        self._maintained = now
        before = (self.spool.rows, self.spool.dead_letters)
        await self._io(self.spool.recount)  # an operator's purge or replay may have changed the file
        if (self.spool.rows, self.spool.dead_letters) != before:
            self._cache.clear()
            self._from_disk = True
        adopted = await self._io(self.spool.adopt)
        assert isinstance(adopted, int)
        if adopted:
            self.recovered += adopted
            self._cache.clear()
            self._from_disk = True
        expired = await self._io(self.spool.expire, time.time() - self._max_age, self._busy_ranges())
        assert isinstance(expired, dict)
        if expired:
            self._cache.clear()
            self._from_disk = True
            for severity, count in expired.items():
                self._ledger.dropped(
                    "expired",
                    count,
                    f"{count} {Severity(severity).label}-severity rows waited in the spool longer than "
                    f"spool_max_age ({self._max_age:,.0f} s)",
                )
        self.oldest = await self._io(self.spool.oldest)  # type: ignore[assignment]

    def _waiting(self) -> int:
        """Rows not yet delivered: in the buffer, being committed, or in the spool."""
        return len(self._buffer.rows) + self._committing + self.spool.rows

    def _check_flushes(self) -> None:
        if not self._waiting():
            self.finish()

    # -- flush -------------------------------------------------------------------------------------------

    async def flush(self, timeout: float | None) -> int:  # noqa: ASYNC109
        """Wait until the buffer and the spool are empty (rows offered meanwhile included). -> rows still
        waiting in them."""
        if self._waiting():
            waiter = anyio.Event()
            self._flush_waiters.append(waiter)
            self._buffer.set_wakeup()
            try:
                with anyio.move_on_after(timeout):
                    await waiter.wait()
            finally:
                with contextlib.suppress(ValueError):
                    self._flush_waiters.remove(waiter)
        return self._waiting()

    def finish(self) -> None:
        for event in self._flush_waiters:
            event.set()
