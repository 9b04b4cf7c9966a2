"""Tamper evidence: a SHA-256 hash chain over audit records, and its verifier."""

from __future__ import annotations

__all__ = ["ChainBreak", "HashChain", "record_hash", "verify_chain"]

import dataclasses
import hashlib
import json
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._entry import AuditEntry


def record_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical serialisation of a row, ``Hash`` left out and ``PreviousHash`` in.

    The canonical form is JSON with sorted keys, no white space and UTF-8 text, of the row as sent
    (:meth:`AuditEntry.to_row`), so a verifier can recompute it from landed rows.
    """
    body = {k: v for k, v in row.items() if k != "Hash"}
    body.setdefault("PreviousHash", "")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class HashChain:
    """Links entries into a chain: each one's ``previous_hash`` is the ``hash`` of the one before.

    Thread-safe; one chain per ordered stream of records (for example one per application instance)::

        chain = HashChain()
        forwarder.forward(chain.link(AuditEntry("prompt blocked", severity="High")))

    :param previous_hash: the hash to continue from (the last ``Hash`` of an earlier run); empty for a
        new chain.
    """

    def __init__(self, previous_hash: str = "") -> None:
        self._last = previous_hash
        self._lock = threading.Lock()
        _chains.add(self)

    @property
    def last_hash(self) -> str:
        """The hash of the last entry linked, to persist and continue from."""
        return self._last

    def link(self, entry: AuditEntry) -> AuditEntry:
        """Return *entry* with ``previous_hash`` and ``hash`` filled in, and make it the chain's head."""
        with self._lock:
            linked = dataclasses.replace(entry, previous_hash=self._last, hash="")
            digest = record_hash(linked.to_row())
            self._last = digest
        return dataclasses.replace(linked, hash=digest)


_chains: weakref.WeakSet[HashChain] = weakref.WeakSet()


def _new_locks_after_fork() -> None:  # a lock another thread held at fork time stays held in the child
    for chain in list(_chains):
        chain._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


@dataclass(frozen=True)
class ChainBreak:
    """The first broken link found by :func:`verify_chain`."""

    #: Position of the offending row in the sequence given.
    index: int
    #: Its ``Id``.
    id: str
    #: ``"hash"``: the row's content does not match its ``Hash`` (altered).
    #: ``"link"``: its ``PreviousHash`` is
    #: not the previous row's ``Hash`` (a row was removed, inserted or reordered).
    kind: Literal["hash", "link"]
    expected: str
    actual: str

    def __str__(self) -> str:
        what = "content does not match its Hash" if self.kind == "hash" else "PreviousHash breaks the chain"
        return f"row {self.index} (Id {self.id!r}): {what}: expected {self.expected}, found {self.actual}"


def verify_chain(
    rows: Iterable[AuditEntry | Mapping[str, Any]], *, previous_hash: str | None = None
) -> ChainBreak | None:
    """Check an ordered sequence of rows; return the first broken link, or ``None`` if the chain holds.

    :param rows: entries, or rows as landed (mappings with the table's columns), in chain order.
    :param previous_hash: what the first row's ``PreviousHash`` must be; ``None`` accepts any start, so a
        window cut out of a longer chain verifies.
    """
    expected_prev = previous_hash
    for index, item in enumerate(rows):
        row = item.to_row() if isinstance(item, AuditEntry) else item
        row_id = str(row.get("Id", ""))
        prev = str(row.get("PreviousHash", "") or "")
        if expected_prev is not None and prev != expected_prev:
            return ChainBreak(index, row_id, "link", expected_prev, prev)
        actual = str(row.get("Hash", "") or "")
        computed = record_hash(row)
        if actual != computed:
            return ChainBreak(index, row_id, "hash", computed, actual)
        expected_prev = actual
    return None
