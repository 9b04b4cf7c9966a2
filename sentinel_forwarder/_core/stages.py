"""The stages a batch goes through in the pump before it is sent or spooled: transform → filter → link.

The user's transform redacts or enriches a row, or returns ``None`` to filter it out; a row it fails on is
dropped alone (``transform_error``). The rows kept are then linked into the hash chain (the evidence's
``link``), so the chain covers exactly the rows handed to the sink. Every pump runs the same stages.
"""

from __future__ import annotations

__all__ = ["INTERRUPTS", "Link", "Staged", "Stages", "Transform"]

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._model.entry import AuditEntry
from .ledger import Ledger

#: The user's transform: the row to send, or ``None`` to filter it out.
Transform = Callable[[AuditEntry], "AuditEntry | None"]
#: Links rows (already transformed) into the hash chain, in order; returns the linked rows.
Link = Callable[[list[AuditEntry]], Awaitable[list[AuditEntry]]]
#: Exceptions that stop the program on purpose: never contained.
INTERRUPTS = (KeyboardInterrupt, SystemExit)


@dataclass(frozen=True)
class Staged:
    """A batch after the stages."""

    #: The rows to send, transformed and linked.
    rows: list[AuditEntry]
    #: For each of :attr:`rows`, its position in the batch.
    kept: list[int]
    #: Positions in the batch of the rows dropped because the transform failed.
    refused: list[int]


class Stages:
    """transform → filter → link, counting what is filtered out or dropped in the ledger.

    :param transform: the user's transform, or ``None``.
    :param link: the evidence's linking.
    :param ledger: where filtered and dropped rows are counted.
    """

    def __init__(self, transform: Transform | None, link: Link, ledger: Ledger) -> None:
        self._transform = transform
        self._link = link
        self._ledger = ledger

    async def run(self, batch: list[AuditEntry]) -> Staged:
        """Run *batch* through the stages (never raises for a row: that row alone is dropped)."""
        rows, kept, refused = self.transform(batch)
        return Staged(await self._link(rows), kept, refused)

    def transform(self, batch: list[AuditEntry]) -> tuple[list[AuditEntry], list[int], list[int]]:
        """Run the user's transform on each row. -> (rows kept, their positions, positions refused)"""
        transform = self._transform
        if transform is None:
            return batch, list(range(len(batch))), []
        rows: list[AuditEntry] = []
        kept: list[int] = []
        refused: list[int] = []
        filtered = 0
        detail = ""
        for position, entry in enumerate(batch):
            try:
                out = transform(entry)
            except INTERRUPTS:
                raise
            except BaseException as exc:  # includes a foreign cancellation: the row alone
                refused.append(position)
                detail = f"transform raised {exc!r} for row Id {entry.id}"
                continue
            if out is None:
                filtered += 1
            elif isinstance(out, AuditEntry):
                rows.append(out)
                kept.append(position)
            else:
                refused.append(position)
                detail = (
                    f"transform returned {type(out).__name__} for row Id {entry.id}, not AuditEntry or None"
                )
        self._ledger.filtered(filtered)
        if refused:
            self._ledger.dropped("transform_error", len(refused), detail)
        return rows, kept, refused
