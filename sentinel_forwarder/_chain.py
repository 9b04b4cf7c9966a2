"""Tamper evidence: a hash chain over audit records, its canonical form, and its verifier.

Each linked record carries its chain's id (``ChainId``), its position in it (``Sequence``, from 1), the hash
of the record before it (``PreviousHash``) and its own ``Hash``: SHA-256, or HMAC-SHA256 with a key the
application holds, over the record's *canonical form*. The canonical form is a fixed projection of the
table's declared columns (:data:`CHAIN_COLUMNS`), each value normalised by its column type, so it can be
recomputed from what a Log Analytics query returns as well as from the row that was sent: datetimes in any
ISO 8601 spelling (or as ``datetime`` objects), ``1.0`` read back as ``1``, ``dynamic`` values as objects or
JSON text, ``null`` and missing alike. The workspace's own columns (``TenantId``, ``Type``, ``_ResourceId``,
...) and user-defined ``extra`` columns are not covered. See docs/tamper-evidence.md.
"""

from __future__ import annotations

__all__ = [
    "CHAIN_COLUMNS",
    "ChainBreak",
    "ChainHead",
    "ChainReport",
    "ChainSummary",
    "HashChain",
    "canonical_form",
    "record_hash",
    "verify_chain",
]

import dataclasses
import hashlib
import hmac
import json
import os
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from ._entry import _LABELS, AuditEntry, _format_time
from ._schema import AUDIT_TABLE

#: The columns the hash covers, in this order; ``Hash`` itself and ``Heartbeat`` are not among them.
CHAIN_COLUMNS: tuple[str, ...] = (
    "TimeGenerated",
    "Id",
    "SessionId",
    "Severity",
    "DetectorId",
    "Summary",
    "PreviousHash",
    "ChainId",
    "Sequence",
)
#: The first element of every canonical form: a change of projection or encoding gets a new tag.
_FORM = "sf-chain-1"
_TYPES = {name: AUDIT_TABLE.column(name).type for name in CHAIN_COLUMNS}
_MISSING: Any = object()
_ISO = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*(Z|z|[+-]\d\d(?::?\d\d)?)?$"
)

Key = str | bytes


def _key_bytes(key: Key | None) -> bytes | None:
    if key is None or key == "" or key == b"":
        return None
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    raise TypeError(f"a chain key must be str or bytes, not {type(key).__name__}")


def _get(row: Any, name: str) -> Any:
    """A column of a mapping or of anything indexed by column name (an azure-monitor-query row)."""
    if isinstance(row, Mapping):
        return row.get(name, _MISSING)
    try:
        return row[name]
    except (KeyError, IndexError, TypeError, ValueError):
        return _MISSING


def _datetime(value: Any) -> str | None:
    if value is None or value is _MISSING or value == "":
        return None
    if isinstance(value, datetime):
        ts = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        ts = ts.astimezone(timezone.utc)
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}Z"
    match = _ISO.match(str(value).strip())
    if match is None:
        return str(value)  # not a datetime: hashed as text, so it verifies only if unchanged
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))  # the service keeps 100 ns ticks; we send µs
    parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros)
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 60 + int(digits[2:4] or 0))
        return _datetime(parsed.replace(tzinfo=timezone(timedelta(minutes=offset))))
    return _datetime(parsed.replace(tzinfo=timezone.utc))


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return _number(float(value)) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def _plain(value: Any) -> Any:
    """A ``dynamic`` value normalised: integral floats as ints, keys sorted by the encoder."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _normalise(column_type: str, value: Any) -> Any:
    if column_type == "dateTime":
        return _datetime(value)
    if value is None or value is _MISSING:
        return "" if column_type in ("string", "guid") else None
    if column_type in ("string", "guid"):
        return str(value)
    if column_type in ("int", "long"):
        return _number(value)
    if column_type == "real":
        return float(value)
    if column_type == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if isinstance(value, str):  # dynamic, read back as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return _plain(value)


def canonical_form(row: Any) -> bytes:
    """The bytes a record's hash is computed over: its :data:`CHAIN_COLUMNS`, normalised, as compact JSON.

    :param row: a row as sent (:meth:`AuditEntry.to_row`), as stored by the emulator, as read from a JSON
        export, or as returned by a Log Analytics query (a mapping, or an ``azure-monitor-query`` row).
    """
    values = [_FORM, *(_normalise(_TYPES[name], _get(row, name)) for name in CHAIN_COLUMNS)]
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
    # (sort_keys orders the keys of dynamic values; _entry_form has none, so it leaves it out). A lone
    # surrogate (which the service refuses: such a row never lands) is hashed as its code unit, not raised:
    # linking must never fail a batch for one row.
    return text.encode("utf-8", "surrogatepass")


def record_hash(row: Any, *, key: Key | None = None) -> str:
    """The ``Hash`` of a row (hex): SHA-256 over :func:`canonical_form`, or HMAC-SHA256 with *key*.

    The row's own ``Hash`` is not part of the canonical form; its ``PreviousHash`` is.
    """
    data = canonical_form(row)
    secret = _key_bytes(key)
    if secret is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """Where a chain stands: to persist, and to continue from (:meth:`HashChain.resume`)."""

    chain_id: str
    #: The ``Sequence`` of the last record linked (0: none yet).
    sequence: int
    #: The ``Hash`` of the last record linked (empty: none yet).
    hash: str


class HashChain:
    """Links entries into a chain: each gets the chain's id, the next sequence number, the previous hash.

    The forwarder links the rows it sends itself (``BufferingForwarder(chain=True)``, the default), after
    ``min_severity`` and ``transform``. Use a chain of your own only with ``chain=False``::

        chain = HashChain(key=os.environ["MY_CHAIN_KEY"])
        forwarder.forward(chain.link(AuditEntry("prompt blocked", severity="High")))

    Thread-safe. The key is never logged and never shown by ``repr``.

    :param previous_hash: the hash to continue from (the last ``Hash`` of an earlier run); empty for a
        new chain.
    :param chain_id: the chain's id; a new random UUID by default.
    :param sequence: the ``Sequence`` of the last record already linked (the next one gets this plus 1).
    :param key: an HMAC-SHA256 key (``str`` as UTF-8, or ``bytes``); without one, plain SHA-256.
    """

    def __init__(
        self,
        previous_hash: str = "",
        *,
        chain_id: str | None = None,
        sequence: int = 0,
        key: Key | None = None,
    ) -> None:
        if sequence < 0:
            raise ValueError(f"sequence must not be negative, not {sequence}")
        self._chain_id = chain_id or str(uuid.uuid4())
        self._sequence = sequence
        self._last = previous_hash
        self._key = _key_bytes(key)
        self._lock = threading.Lock()
        _chains.add(self)

    @classmethod
    def resume(cls, head: ChainHead, *, key: Key | None = None) -> HashChain:
        """Continue the chain *head* describes."""
        return cls(head.hash, chain_id=head.chain_id, sequence=head.sequence, key=key)

    def __repr__(self) -> str:
        keyed = "keyed" if self._key else "unkeyed"
        return f"HashChain(chain_id={self._chain_id!r}, sequence={self._sequence}, {keyed})"

    @property
    def chain_id(self) -> str:
        """The chain's id (``ChainId``)."""
        return self._chain_id

    @property
    def keyed(self) -> bool:
        """Whether hashes are HMAC-SHA256 with a key."""
        return self._key is not None

    @property
    def last_hash(self) -> str:
        """The hash of the last entry linked, to persist and continue from."""
        return self._last

    def head(self) -> ChainHead:
        """Where the chain stands now."""
        with self._lock:
            return ChainHead(self._chain_id, self._sequence, self._last)

    def link(self, entry: AuditEntry) -> AuditEntry:
        """Return *entry* with ``chain_id``, ``sequence``, ``previous_hash`` and ``hash`` filled in, and make
        it the chain's head."""
        with self._lock:
            return self._link(entry)

    def link_all(self, entries: Iterable[AuditEntry]) -> list[AuditEntry]:
        """:meth:`link` each of *entries*, in order, under one acquisition of the lock."""
        with self._lock:
            return [self._link(entry) for entry in entries]

    def _link(self, entry: AuditEntry) -> AuditEntry:
        chain_id, sequence, previous = self._chain_id, self._sequence + 1, self._last
        data = _entry_form(entry, previous, chain_id, sequence)
        if self._key is None:
            digest = hashlib.sha256(data).hexdigest()
        else:
            digest = hmac.new(self._key, data, hashlib.sha256).hexdigest()
        self._sequence = sequence
        self._last = digest
        return _linked(entry, chain_id, sequence, previous, digest)


# Each field's slot setter: assigning through it skips the frozen dataclass's __setattr__ (a tuple of
# setters by position would not be faster than these module-level names, and would hide which is which).
_slot = {f.name: getattr(AuditEntry, f.name).__set__ for f in dataclasses.fields(AuditEntry)}
_set_summary, _set_severity, _set_detector_id = _slot["summary"], _slot["severity"], _slot["detector_id"]
_set_session_id, _set_id, _set_timestamp = _slot["session_id"], _slot["id"], _slot["timestamp"]
_set_extra, _set_heartbeat = _slot["extra"], _slot["heartbeat"]
_set_chain_id, _set_sequence = _slot["chain_id"], _slot["sequence"]
_set_previous_hash, _set_hash = _slot["previous_hash"], _slot["hash"]
_new = object.__new__


def _linked(entry: AuditEntry, chain_id: str, sequence: int, previous: str, digest: str) -> AuditEntry:
    """*entry* with its chain fields filled in: ``dataclasses.replace`` without re-running the constructor's
    checks, which *entry* has passed and the chain's own values need not (about 6x cheaper, on the pump).
    Every field is set here by name; a test checks this equals ``dataclasses.replace`` for every field."""
    linked: AuditEntry = _new(AuditEntry)
    _set_summary(linked, entry.summary)
    _set_severity(linked, entry.severity)
    _set_detector_id(linked, entry.detector_id)
    _set_session_id(linked, entry.session_id)
    _set_id(linked, entry.id)
    _set_timestamp(linked, entry.timestamp)
    _set_extra(linked, entry.extra)
    _set_heartbeat(linked, entry.heartbeat)
    _set_chain_id(linked, chain_id)
    _set_sequence(linked, sequence)
    _set_previous_hash(linked, previous)
    _set_hash(linked, digest)
    return linked


def _entry_form(entry: AuditEntry, previous: str, chain_id: str, sequence: int) -> bytes:
    """:func:`canonical_form` of *entry* once linked, straight from its fields (the pump's hot path; a
    property test checks that both agree). The same JSON ``json.dumps`` writes for the list, each string
    from its C string encoder (the timestamp needs no escaping: digits, ``-:.TZ``); every value is text but
    ``sequence``, an ``int``."""
    return (
        f'[{_FORM_JSON},"{_format_time(entry.timestamp)}",{_encode_text(entry.id)},'
        f"{_encode_text(entry.session_id)},{_LABEL_JSON[entry.severity]},{_encode_text(entry.detector_id)},"
        f"{_encode_text(entry.summary)},{_encode_text(previous)},{_encode_text(chain_id)},{int(sequence)}]"
    ).encode("utf-8", "surrogatepass")


_encode_text = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a str
_FORM_JSON = _encode_text(_FORM)
_LABEL_JSON = {severity: _encode_text(label) for severity, label in _LABELS.items()}


_chains: weakref.WeakSet[HashChain] = weakref.WeakSet()


def _new_locks_after_fork() -> None:  # a lock another thread held at fork time stays held in the child
    for chain in list(_chains):
        chain._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


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
    value = _get(row, name)
    return "" if value is None or value is _MISSING else str(value)


def _heartbeat(row: Any) -> Mapping[str, Any] | None:
    value = _get(row, "Heartbeat")
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
    secret = _key_bytes(key)
    chains: dict[str, dict[int, list[tuple[int, Any]]]] = {}
    legacy: list[tuple[int, Any]] = []
    heads: dict[str, int] = {}
    count = 0
    for index, row in enumerate(_expand(rows)):
        beat = _heartbeat(row)
        if beat is not None:
            chain_id, seq = str(beat.get("chain", "")), _number(beat.get("sequence", 0))
            if chain_id and isinstance(seq, int):
                heads[chain_id] = max(heads.get(chain_id, 0), seq)
            continue
        count += 1
        chain_id = _text(row, "ChainId")
        seq = _number(_get(row, "Sequence"))
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
