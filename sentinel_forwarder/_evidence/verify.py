"""Tamper evidence: the verifier, which checks landed rows against their hash chain.

:func:`verify_chain` takes rows as they come back (a query's result, a JSON export, the rows sent), groups
them by chain, orders them by ``Sequence`` and reports every gap, alteration, broken link and fork in a
:class:`ChainReport`. It recomputes each row's hash over the canonical form of ``_chain``, where rows are
linked. See docs/tamper-evidence.md.
"""

from __future__ import annotations

__all__ = ["BreakKind", "ChainBreak", "ChainReport", "ChainSummary", "verify_chain"]

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._model.entry import AuditEntry
from .chain import MISSING, Key, canonical_form, column, key_bytes, number

BreakKind = Literal["hash", "link", "gap", "fork"]


@dataclass(frozen=True)
class ChainBreak:
    """One problem :func:`verify_chain` found."""

    #: Position of the offending row in the rows given (for a gap: of the row after it; -1 at the end).
    index: int
    #: Its ``Id``.
    id: str
    #: ``"hash"``: the row's content does not match its ``Hash`` (altered, or another key).
    #: ``"link"``: its ``PreviousHash`` is not the ``Hash`` of the row before it in its chain (that row
    #: was altered and re-hashed, or replaced).
    #: ``"gap"``: sequence numbers are missing (rows removed or lost); ``expected`` names them.
    #: ``"fork"``: two different rows claim the same place in the chain (forged or replayed).
    kind: BreakKind
    expected: str
    actual: str
    #: The chain (``ChainId``; empty for rows linked without one, checked in the order given).
    chain_id: str = ""
    #: The row's ``Sequence`` (for a gap: the first missing one).
    sequence: int | None = None

    def __str__(self) -> str:
        where = f"chain {self.chain_id} #{self.sequence}" if self.chain_id else f"row {self.index}"
        if self.kind == "gap":
            return f"{where}: missing rows: expected {self.expected}, found {self.actual}"
        what = {
            "hash": "content does not match its Hash",
            "link": "PreviousHash breaks the chain",
            "fork": "two different rows hold this place",
        }[self.kind]
        return f"{where} (Id {self.id!r}): {what}: expected {self.expected}, found {self.actual}"


@dataclass(frozen=True)
class ChainSummary:
    """One chain as found in the rows."""

    chain_id: str
    #: Distinct rows of the chain found (duplicates counted once).
    rows: int
    #: Lowest and highest ``Sequence`` found.
    first: int
    last: int
    #: Rows that landed more than once (same ``Id`` and ``Hash``): normal with at-least-once delivery.
    duplicates: int
    #: The highest sequence a heartbeat reported for this chain (0: no heartbeat seen).
    reported_head: int = 0


@dataclass(frozen=True)
class ChainReport:
    """Everything :func:`verify_chain` found: each chain, and every break, in chain order.

    ``bool(report)`` is ``True`` when something is broken, as the single :class:`ChainBreak` returned by
    earlier versions was, so ``if verify_chain(rows): ...`` keeps its meaning.
    """

    #: Rows checked (heartbeat rows excluded).
    rows: int
    chains: tuple[ChainSummary, ...]
    breaks: tuple[ChainBreak, ...]

    @property
    def ok(self) -> bool:
        """No gap, alteration, broken link or fork."""
        return not self.breaks

    @property
    def first(self) -> ChainBreak | None:
        """The first break, or ``None``."""
        return self.breaks[0] if self.breaks else None

    def of_kind(self, kind: BreakKind) -> list[ChainBreak]:
        return [b for b in self.breaks if b.kind == kind]

    def __bool__(self) -> bool:
        return bool(self.breaks)

    def __str__(self) -> str:
        dup = sum(c.duplicates for c in self.chains)
        head = f"{self.rows} rows in {len(self.chains)} chain(s), {dup} duplicate(s): " + (
            "chain intact" if self.ok else f"{len(self.breaks)} problem(s)"
        )
        return "\n".join([head, *(str(b) for b in self.breaks)])


def _expand(rows: Any) -> Iterator[Any]:
    """Rows from a list of rows/entries, an azure-monitor-query table or result (``.tables``)."""
    tables = getattr(rows, "tables", None)
    if tables is not None and not isinstance(rows, Mapping):
        for table in tables:
            yield from _expand(table)
        return
    if hasattr(rows, "columns") and hasattr(rows, "rows") and not isinstance(rows, Mapping):
        yield from rows.rows  # LogsTableRow: indexed by column name
        return
    for item in rows:
        yield item.to_row() if isinstance(item, AuditEntry) else item


def _text(row: Any, name: str) -> str:
    value = column(row, name)
    return "" if value is None or value is MISSING else str(value)


def _heartbeat(row: Any) -> Mapping[str, Any] | None:
    value = column(row, "Heartbeat")
    if isinstance(value, str) and value:
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) and value else None


def verify_chain(
    rows: Iterable[Any] | Any, *, key: Key | None = None, previous_hash: str | None = None
) -> ChainReport:
    """Check landed rows, in any order; report every gap, alteration, broken link and fork.

    Rows with a ``ChainId`` are grouped by chain and ordered by ``Sequence``; rows without one (linked by
    an earlier version) are checked in the order given. A chain may start anywhere (a query's time window
    cuts it) unless *previous_hash* is given. Heartbeat rows are not part of a chain: the chain head each
    reports makes rows missing at the end of a chain show up as a gap.

    :param rows: :class:`AuditEntry` objects, row mappings (as sent, as the emulator stores them, from a
        JSON export), or ``azure-monitor-query`` results (a ``LogsQueryResult``, ``LogsTable`` or rows).
    :param key: the HMAC key the rows were linked with; ``None`` for plain SHA-256.
    :param previous_hash: what each chain's first row's ``PreviousHash`` must be; ``""`` requires every
        chain to start at its beginning (``Sequence`` 1).
    """
    secret = key_bytes(key)
    chains: dict[str, dict[int, list[tuple[int, Any]]]] = {}
    legacy: list[tuple[int, Any]] = []
    heads: dict[str, int] = {}
    count = 0
    for index, row in enumerate(_expand(rows)):
        beat = _heartbeat(row)
        if beat is not None:
            chain_id, seq = str(beat.get("chain", "")), number(beat.get("sequence", 0))
            if chain_id and isinstance(seq, int):
                heads[chain_id] = max(heads.get(chain_id, 0), seq)
            continue
        count += 1
        chain_id = _text(row, "ChainId")
        seq = number(column(row, "Sequence"))
        if chain_id and isinstance(seq, int) and seq > 0:
            chains.setdefault(chain_id, {}).setdefault(seq, []).append((index, row))
        else:
            legacy.append((index, row))
    breaks: list[ChainBreak] = []
    summaries: list[ChainSummary] = []
    if legacy:
        breaks += _verify_ordered(legacy, secret, previous_hash)
    for chain_id in sorted(chains):
        found, summary = _verify_chain(chain_id, chains[chain_id], secret, previous_hash, heads.get(chain_id))
        breaks += found
        summaries.append(summary)
    return ChainReport(count, tuple(summaries), tuple(breaks))


def _digest(row: Any, secret: bytes | None) -> str:
    data = canonical_form(row)
    if secret is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def _verify_ordered(rows: list[tuple[int, Any]], secret: bytes | None, start: str | None) -> list[ChainBreak]:
    """Rows without a chain id, linked in the order given."""
    breaks: list[ChainBreak] = []
    expected_prev = start
    for index, row in rows:
        row_id, prev, actual = _text(row, "Id"), _text(row, "PreviousHash"), _text(row, "Hash")
        if expected_prev is not None and prev != expected_prev:
            breaks.append(ChainBreak(index, row_id, "link", expected_prev, prev))
        computed = _digest(row, secret)
        if actual != computed:
            breaks.append(ChainBreak(index, row_id, "hash", computed, actual))
        expected_prev = actual
    return breaks


def _verify_chain(
    chain_id: str,
    places: dict[int, list[tuple[int, Any]]],
    secret: bytes | None,
    start: str | None,
    reported_head: int | None,
) -> tuple[list[ChainBreak], ChainSummary]:
    breaks: list[ChainBreak] = []
    duplicates = distinct = 0
    previous: tuple[int, set[str]] | None = None  # (sequence, hashes of the rows there)
    order = sorted(places)
    if start is not None and order and order[0] != 1:
        index, row = places[order[0]][0]
        breaks.append(_gap(chain_id, index, _text(row, "Id"), 1, order[0] - 1))
    for seq in order:
        candidates = places[seq]
        unique: dict[tuple[str, str], tuple[int, Any]] = {}
        for index, row in candidates:
            unique.setdefault((_text(row, "Id"), _text(row, "Hash")), (index, row))
        duplicates += len(candidates) - len(unique)
        distinct += len(unique)
        rows = list(unique.values())
        if len(rows) > 1:
            index, row = rows[1]
            first_id = _text(rows[0][1], "Id")
            breaks.append(
                ChainBreak(
                    index,
                    _text(row, "Id"),
                    "fork",
                    f"one row (Id {first_id!r})",
                    f"{len(rows)} different rows",
                    chain_id,
                    seq,
                )
            )
        hashes: set[str] = set()
        for index, row in rows:
            row_id, prev, actual = _text(row, "Id"), _text(row, "PreviousHash"), _text(row, "Hash")
            if previous is not None and previous[0] == seq - 1 and prev not in previous[1]:
                breaks.append(
                    ChainBreak(index, row_id, "link", " or ".join(sorted(previous[1])), prev, chain_id, seq)
                )
            elif previous is None and start is not None and seq == 1 and prev != start:
                breaks.append(ChainBreak(index, row_id, "link", start, prev, chain_id, seq))
            computed = _digest(row, secret)
            if actual != computed:
                breaks.append(ChainBreak(index, row_id, "hash", computed, actual, chain_id, seq))
            hashes.add(actual)
        if previous is not None and seq > previous[0] + 1:
            index, row = rows[0]
            breaks.append(_gap(chain_id, index, _text(row, "Id"), previous[0] + 1, seq - 1))
        previous = (seq, hashes)
    last = order[-1] if order else 0
    if reported_head and reported_head > last:
        breaks.append(_gap(chain_id, -1, "", last + 1, reported_head))
    breaks.sort(key=lambda b: (b.sequence or 0, b.kind != "gap"))
    summary = ChainSummary(chain_id, distinct, order[0] if order else 0, last, duplicates, reported_head or 0)
    return breaks, summary


def _gap(chain_id: str, index: int, row_id: str, first: int, last: int) -> ChainBreak:
    missing = str(first) if first == last else f"{first}..{last}"
    return ChainBreak(
        index, row_id, "gap", f"Sequence {missing}", f"{last - first + 1} missing", chain_id, first
    )
