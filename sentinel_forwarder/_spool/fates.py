"""What a delivery's answer means for each spooled row (pure logic), and the waiters of ``forward_durable()``.

What the sink reports per row decides each row's fate:

- delivered, or dropped for a reason that retrying cannot change (the sink says so): deleted;
- refused by the service (``rejected``, ``too_large``, ``invalid_row``, ``sink_error``): moved to the dead
  letters with the service's answer, counted as dropped;
- anything that may heal (:data:`KEEP`): kept, to be retried; not counted until its fate is final.
"""

from __future__ import annotations

__all__ = ["DEAD", "KEEP", "DurableWaiters", "Fates", "fates_of"]

import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from .._model.protocol import DropReason, RowOutcome, SendResult

#: Outcomes that keep a row spooled, to be retried.
KEEP: Final[frozenset[RowOutcome]] = frozenset(
    {
        "retries_exhausted",
        "unauthorized",
        "not_found",
        "credential_error",
        "unreachable",
        "unconfirmed",
        "shutdown_timeout",
    }
)
#: Outcomes that move a row to the dead letters.
DEAD: Final[frozenset[RowOutcome]] = frozenset({"rejected", "too_large", "invalid_row", "sink_error"})


@dataclass(frozen=True)
class Fates:
    """The spooled rows of one delivery, sorted by what becomes of them."""

    #: Ids to delete: delivered, or dropped for good (counted in :attr:`counted`).
    done: list[int]
    #: (id, reason, the service's answer) of rows to keep as dead letters (counted as dropped).
    dead: list[tuple[int, str, str]]
    #: How many rows stay spooled, to be retried.
    kept: int
    #: What to count now: the rows whose fate is final.
    counted: SendResult


def fates_of(ids: list[int], result: SendResult) -> Fates:
    """Sort the rows *ids* (in the order they were sent) by the delivery's *result*."""
    outcomes = result.row_outcomes()
    done: list[int] = []
    dead: list[tuple[int, str, str]] = []
    kept = 0
    sent = 0
    dropped: dict[DropReason, int] = {}
    if outcomes is None:  # mixed, and the sink did not say which rows: keep all if any may heal
        if result.unconfirmed or any(r in KEEP for r, n in result.dropped.items() if n):
            kept = len(ids)
        else:
            done = ids
            sent = result.sent
            dropped = {r: n for r, n in result.dropped.items() if n}
    else:
        for i, (row_id, outcome) in enumerate(zip(ids, outcomes, strict=True)):
            if outcome == "sent":
                done.append(row_id)
                sent += 1
            elif outcome in KEEP:
                kept += 1
            else:
                reason: DropReason = outcome  # type: ignore[assignment]
                dropped[reason] = dropped.get(reason, 0) + 1
                if outcome in DEAD:
                    error = result.row_errors.get(i) or result.error_for(reason) or reason
                    dead.append((row_id, outcome, error))
                else:
                    done.append(row_id)
    errors = {r: e for r, e in result.errors.items() if r in dropped}
    counted = SendResult(
        sent,
        MappingProxyType(dropped),
        result.error if dropped else None,
        errors=MappingProxyType(errors),
    )
    return Fates(done, dead, kept, counted)


class DurableWaiters:
    """The callbacks of ``forward_durable()``, by the position of their row among rows taken. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, Callable[[bool], None]]] = []

    def add(self, position: int, callback: Callable[[bool], None]) -> None:
        """Call ``callback(committed)`` once the row taken at *position* is committed (or will never be).

        Called under the buffer's lock, right after the row was appended: the row cannot have been taken
        yet, so the commit that takes it wakes the waiter with that commit's own outcome.
        """
        with self._lock:
            self._waiters.append((position, callback))

    def resolve(self, through: int | None, failed: frozenset[int] | set[int] = frozenset()) -> None:
        """Rows taken through *through* are settled (those at *failed* positions were not committed); wake
        their waiters. ``None``: the pump stopped, every waiter gets ``False``."""
        with self._lock:
            if through is None:
                ready, self._waiters = self._waiters, []
            else:
                ready = [w for w in self._waiters if w[0] <= through]
                self._waiters = [w for w in self._waiters if w[0] > through]
        for position, callback in ready:
            callback(through is not None and position not in failed)
