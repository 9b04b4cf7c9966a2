"""The forwarder's evidence: it links the rows it sends into a hash chain, and sends heartbeat rows.

Linking happens in the pump, after ``min_severity`` and ``transform``, so the chain covers exactly the rows
handed to the sink (or committed to the spool). A heartbeat row (``DetectorId``
:data:`HEARTBEAT_DETECTOR`) goes straight to the sink every ``heartbeat_interval`` seconds and once more at
close: it never enters the buffer, so a full buffer cannot drop it, and it is not counted in the forwarder's
statistics. Its ``Heartbeat`` column holds the counters *since the previous heartbeat that was delivered*:
a heartbeat the service did not take hands its counts on to the next one, so the deltas that land add up
to the totals, never twice (one the answer was lost for is taken as delivered). See
docs/tamper-evidence.md.
"""

from __future__ import annotations

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "HEARTBEAT_DETECTOR", "Evidence"]

import contextlib
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import anyio
import anyio.lowlevel

from .._model.entry import AuditEntry
from .._model.snapshots import ForwarderStatistics
from .._util.ratelimited import ErrorLog
from .._util.version import VERSION
from .chain import ChainHead, HashChain, Key

#: Hands rows to the sink outside the counts; -> its answer, ``None`` if cut short. May raise.
SendUncounted = Callable[[Sequence[AuditEntry]], Awaitable[object]]

#: Seconds between heartbeats by default.
DEFAULT_HEARTBEAT_INTERVAL: Final = 60.0
#: The ``DetectorId`` of heartbeat rows.
HEARTBEAT_DETECTOR: Final = "sentinel-forwarder.heartbeat"
#: Rows linked between two checkpoints of the event loop (~0.3 ms of work; see :meth:`Evidence.link`).
#: Measured at full speed (benchmarks/, loop lag p99): 1,024 rows 27 ms, 256 rows 15 ms, 64 rows 6-7 ms,
#: 32 rows 6 ms, with no change in CPU per row.
LINK_SLICE: Final = 64
#: The counters a heartbeat reports as deltas.
_DELTAS: Final = ("offered", "sent", "filtered", "unconfirmed")


def default_application() -> str:
    """The program's name: what ``application`` defaults to."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name or "python"


class Evidence:
    """The chain and the heartbeat of one run of a forwarder (a forked child gets new ones).

    :param send: hands a heartbeat to the sink (in the run's work scope), outside the counts.
    :param statistics: the forwarder's counters now.
    :param errors: where a sink's exception on a heartbeat is logged.
    :param chain: whether to link rows into a hash chain.
    :param key: the chain's HMAC key, if any.
    :param interval: seconds between heartbeats; ``None``: none.
    :param application: the application name heartbeats carry.
    """

    def __init__(
        self,
        send: SendUncounted,
        statistics: Callable[[], ForwarderStatistics],
        errors: ErrorLog,
        *,
        chain: bool,
        key: Key | None,
        interval: float | None,
        application: str,
    ) -> None:
        self._send = send
        self._statistics = statistics
        self._errors = errors
        self._key = key
        self.chain = HashChain(key=key) if chain else None
        self.interval = interval
        self.application = application
        self.instance_id = str(uuid.uuid4())
        self._baseline: dict[str, Any] = {}
        self.beats = 0  # heartbeats delivered (sent or unconfirmed)

    def __repr__(self) -> str:
        return f"Evidence(chain={self.chain!r}, interval={self.interval!r}, instance={self.instance_id!r})"

    # -- the chain ---------------------------------------------------------------------------------------

    async def link(self, rows: list[AuditEntry]) -> list[AuditEntry]:
        """Link *rows* (already filtered and transformed), in order, :data:`LINK_SLICE` at a time.

        The event loop's other tasks (the application's) run between slices: linking costs a few µs a
        row, so a 5,000-row delivery linked in one go would hold the loop for several milliseconds.
        Shielded: a commit to the spool that the drain deadline interrupts still completes, so its rows
        are counted. Deliveries linking at the same time interleave their sequence numbers; a verifier
        orders rows by sequence, so that is no break.
        """
        chain = self.chain
        if chain is None:
            return rows
        linked: list[AuditEntry] = []
        with anyio.CancelScope(shield=True):
            for start in range(0, len(rows), LINK_SLICE):
                if start:
                    await anyio.lowlevel.checkpoint()
                linked += chain.link_all(rows[start : start + LINK_SLICE])
        return linked

    def head(self) -> ChainHead | None:
        return None if self.chain is None else self.chain.head()

    def resume(self, head: ChainHead | None) -> None:
        """Continue the chain of an earlier run (from the spool) instead of starting a new one."""
        if self.chain is not None and head is not None and head.sequence > 0:
            self.chain = HashChain.resume(head, key=self._key)

    # -- heartbeats --------------------------------------------------------------------------------------

    async def run(self, closing: anyio.Event) -> None:
        """Send a heartbeat every ``interval`` seconds until *closing* is set."""
        if not self.interval:
            return
        while not closing.is_set():
            with anyio.move_on_after(self.interval):
                await closing.wait()
            if closing.is_set():
                return
            await self.beat()

    async def beat(self, *, final: bool = False) -> bool:
        """Send one heartbeat to the sink now. -> whether it was delivered (or its answer lost).

        Never raises for the sink's troubles: a heartbeat that fails leaves its counts to the next one.
        """
        if not self.interval:
            return False
        stats = self._statistics()
        entry = self.heartbeat_entry(stats, final=final)
        try:
            result = await self._send([entry])
        except Exception as exc:
            self._errors.error("sentinel-forwarder: the sink raised on a heartbeat", exc)
            return False
        delivered = bool(getattr(result, "sent", 0) or getattr(result, "unconfirmed", 0))
        if delivered:
            self._baseline = _totals(stats)
            self.beats += 1
        return delivered

    def heartbeat_entry(self, stats: ForwarderStatistics, *, final: bool = False) -> AuditEntry:
        """The heartbeat row for *stats*, with deltas since the last delivered heartbeat."""
        totals = _totals(stats)
        base = self._baseline
        deltas: dict[str, Any] = {k: totals[k] - base.get(k, 0) for k in _DELTAS}
        before: Mapping[str, int] = base.get("dropped", {})
        dropped = {r: n - before.get(r, 0) for r, n in totals["dropped"].items() if n - before.get(r, 0)}
        head = self.head()
        payload: dict[str, Any] = {
            "application": self.application,
            "instance": self.instance_id,
            "version": VERSION,
            "interval": self.interval,
            **deltas,
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "shed": dropped.get("shed", 0),
            "spooled": stats.spooled,
            "chain": "" if head is None else head.chain_id,
            "sequence": 0 if head is None else head.sequence,
            "head": "" if head is None else head.hash,
            "final": final,
        }
        lost = payload["dropped_total"]
        summary = (
            f"sentinel-forwarder heartbeat: {deltas['offered']} offered, {deltas['sent']} sent, "
            f"{lost} dropped{' (final)' if final else ''}"
        )
        return AuditEntry(
            summary,
            detector_id=HEARTBEAT_DETECTOR,
            session_id=self.instance_id,
            chain_id=payload["chain"],
            heartbeat=payload,
        )

    async def final(self, seconds: float) -> None:
        """The last heartbeat, at close, within *seconds*."""
        if not self.interval or seconds <= 0:
            return
        with contextlib.suppress(Exception), anyio.move_on_after(seconds):
            await self.beat(final=True)


def _totals(stats: ForwarderStatistics) -> dict[str, Any]:
    totals: dict[str, Any] = {k: getattr(stats, k) for k in _DELTAS}
    totals["dropped"] = dict(stats.dropped)
    return totals
