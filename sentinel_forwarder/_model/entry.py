"""The audit record: :class:`AuditEntry` and :class:`Severity`."""

from __future__ import annotations

__all__ = ["AuditEntry", "Severity"]

import enum
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .schema import AUDIT_TABLE, validate_column_name

_CORE_COLUMNS = frozenset(c.name for c in AUDIT_TABLE.columns)
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Severity(enum.IntEnum):
    """How bad an audited event is. Ordered, so ``min_severity`` filters compare with ``<``.

    On the wire a severity is sent as its label: ``None``, ``Low``, ``Medium``, ``High`` or ``Critical``.
    """

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """The value of the ``Severity`` column: ``None``, ``Low``, ``Medium``, ``High`` or ``Critical``."""
        return _LABELS[self]

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        """Accept a :class:`Severity`, its label (any case) or its number.

        :raises ValueError: for anything else.
        """
        if isinstance(value, Severity):
            return value
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(
                    f"unknown severity {value!r}; expected 0 to 4 or one of None, Low, Medium, High, Critical"
                ) from None
        try:
            return _BY_LABEL[value.strip().lower()]
        except (KeyError, AttributeError):
            raise ValueError(
                f"unknown severity {value!r}; expected one of None, Low, Medium, High, Critical"
            ) from None


_LABELS = {s: s.name.capitalize() for s in Severity}
#: Labels by number: indexing a tuple with an IntEnum is cheaper than hashing it (Enum.__hash__ is Python).
_LABEL_OF = tuple(_LABELS[s] for s in sorted(Severity))
_BY_LABEL = {label.lower(): s for s, label in _LABELS.items()}


_UTC = timezone.utc
# Unbound, so an override in a datetime subclass cannot change the check or the wire format.
_astimezone = datetime.astimezone
_isoformat = datetime.isoformat
#: Extra column names already checked, so entries with the same extra columns are not checked again.
#: Bounded, so a stream of distinct names cannot grow it without limit.
_CHECKED_NAMES: set[str] = set()
_MAX_CHECKED_NAMES = 1024


def _utcnow() -> datetime:
    return datetime.now(_UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One immutable audit record, a row of ``AISentinelAudit_CL``.

    :param summary: what happened, for people.
    :param severity: a :class:`Severity`, its label (``"Medium"``, any case) or its number; sent as its label.
    :param detector_id: the detector that produced the record, e.g. ``"pii-leak"``.
    :param session_id: the application session it belongs to.
    :param id: unique id (a random UUID by default); lands in ``Id``.
    :param timestamp: when it happened, timezone-aware (now, UTC, by default); lands in ``TimeGenerated``.
    :param hash: SHA-256 of the record; filled by :class:`~sentinel_forwarder.HashChain`.
    :param previous_hash: ``hash`` of the previous record in the chain.
    :param extra: user-defined columns, sent as top-level columns; the table and DCR must declare them.
        A copy is kept, read-only. Values are not checked here: a row that cannot be sent as JSON is
        dropped alone by the sink.
    :param chain_id: the hash chain the record belongs to (``ChainId``); filled by the chain.
    :param sequence: its position in that chain, from 1 (``Sequence``); 0 for a record not linked.
    :param heartbeat: heartbeat rows only (``Heartbeat``): what the forwarder reports about itself.
    :raises TypeError: if ``summary``, ``detector_id``, ``session_id``, ``id``, ``hash``,
        ``previous_hash`` or ``chain_id`` is not a ``str``; ``sequence`` is not an ``int``; ``timestamp``
        is not a :class:`~datetime.datetime`; ``severity`` is not a :class:`Severity`, ``str`` or ``int``
        (a ``bool`` is refused); or ``extra`` is not a mapping with ``str`` keys.
    :raises ValueError: for a naive timestamp, or one outside years 1 to 9999 once converted to UTC; an
        unknown severity label or number; or an extra column name that is invalid, reserved or clashes
        with a column of the table.
    """

    summary: str
    severity: Severity = Severity.NONE
    detector_id: str = ""
    session_id: str = ""
    id: str = field(default_factory=_new_id)
    timestamp: datetime = field(default_factory=_utcnow)
    hash: str = ""
    previous_hash: str = ""
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, hash=False)
    chain_id: str = ""
    sequence: int = 0
    heartbeat: Mapping[str, Any] | None = field(default=None, hash=False)

    if TYPE_CHECKING:  # what type checkers see of the generated __init__: severity may be a label or number

        def __init__(
            self,
            summary: str,
            severity: Severity | str | int = Severity.NONE,
            detector_id: str = "",
            session_id: str = "",
            id: str = ...,
            timestamp: datetime = ...,
            hash: str = "",
            previous_hash: str = "",
            extra: Mapping[str, Any] = ...,
            chain_id: str = "",
            sequence: int = 0,
            heartbeat: Mapping[str, Any] | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        # On the application's hot path: one cheap test for the common case, details only on failure.
        if not (
            type(self.summary)
            is type(self.detector_id)
            is type(self.session_id)
            is type(self.id)
            is type(self.hash)
            is type(self.previous_hash)
            is type(self.chain_id)
            is str
        ):
            self._check_strings()
        if type(self.sequence) is not int:
            raise TypeError(f"AuditEntry.sequence must be int, not {type(self.sequence).__name__}")
        if type(self.severity) is not Severity:
            object.__setattr__(self, "severity", _parse_severity(self.severity))
        ts = self.timestamp
        if type(ts) is not datetime and not isinstance(ts, datetime):
            raise TypeError(f"AuditEntry.timestamp must be a datetime, not {type(ts).__name__}")
        if ts.tzinfo is not _UTC:
            if ts.tzinfo is None or ts.utcoffset() is None:
                raise ValueError(
                    "AuditEntry.timestamp must be timezone-aware (use datetime.now(timezone.utc))"
                )
            if not 1 < ts.year < 9999:  # an offset is under 24 hours: only these years can overflow
                _check_utc_year(ts)
        if self.extra is not _EMPTY:
            object.__setattr__(self, "extra", _checked_extra(self.extra))

    def _check_strings(self) -> None:
        for name in ("summary", "detector_id", "session_id", "id", "hash", "previous_hash", "chain_id"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"AuditEntry.{name} must be str, not {type(value).__name__}")

    def to_row(self) -> dict[str, Any]:
        """The row as sent to the Logs Ingestion API: column name to JSON value."""
        return self._row(_format_time(self.timestamp))

    def _row(self, time: object) -> dict[str, Any]:
        """:meth:`to_row` with ``TimeGenerated`` given: formatted, or a UTC datetime for an encoder that
        writes it exactly as :func:`_format_time` does (``_wire``)."""
        row: dict[str, Any] = {
            "TimeGenerated": time,
            "Id": self.id,
            "SessionId": self.session_id,
            "Severity": _LABEL_OF[self.severity],
            "DetectorId": self.detector_id,
            "Summary": self.summary,
            "Hash": self.hash,
            "PreviousHash": self.previous_hash,
            "ChainId": self.chain_id,
            "Sequence": self.sequence,
        }
        if self.heartbeat is not None:
            row["Heartbeat"] = self.heartbeat
        if self.extra:
            row.update(self.extra)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditEntry:
        """The entry that :meth:`to_row` made *row* from (columns not of the table become ``extra``).

        :raises ValueError: if a column holds a value of the wrong kind or ``TimeGenerated`` is not ISO 8601.
        :raises TypeError: as the constructor does.
        """
        try:
            when = datetime.fromisoformat(str(row["TimeGenerated"]).replace("Z", "+00:00"))
            return cls(
                summary=row.get("Summary", ""),
                severity=Severity.parse(row.get("Severity", "None")),
                detector_id=row.get("DetectorId", ""),
                session_id=row.get("SessionId", ""),
                id=row.get("Id", ""),
                timestamp=when,
                hash=row.get("Hash", ""),
                previous_hash=row.get("PreviousHash", ""),
                extra={k: v for k, v in row.items() if k not in _CORE_COLUMNS},
                chain_id=row.get("ChainId") or "",
                sequence=int(row.get("Sequence") or 0),
                heartbeat=_dynamic(row.get("Heartbeat")),
            )
        except KeyError as exc:
            raise ValueError(f"the row has no {exc.args[0]} column") from None


def _dynamic(value: Any) -> Mapping[str, Any] | None:
    """A ``dynamic`` column's object as sent, or as read back (a JSON string)."""
    if isinstance(value, str):
        value = json.loads(value) if value else None
    if value is None or isinstance(value, Mapping):
        return value
    raise ValueError(f"Heartbeat must be a JSON object, not {type(value).__name__}")


def encode_row(entry: AuditEntry) -> bytes:
    """*entry*'s row as the JSON sent on the wire (compact UTF-8); the spool stores the same bytes.

    :raises ValueError, TypeError: if a value cannot be sent as JSON (NaN, an unsupported type, ...).
    """
    return json.dumps(entry.to_row(), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _parse_severity(value: object) -> Severity:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(
            "AuditEntry.severity must be a Severity, its label (str) or its number (int), "
            f"not {type(value).__name__}"
        )
    return Severity.parse(value)


def _check_utc_year(ts: datetime) -> None:
    try:
        _astimezone(ts, _UTC)
    except OverflowError:
        raise ValueError(
            f"AuditEntry.timestamp {ts.isoformat()} is outside years 1 to 9999 once converted to UTC"
        ) from None


def _checked_extra(extra: object) -> Mapping[str, Any]:
    """A read-only copy of *extra*, its column names checked.

    :raises TypeError: if *extra* is not a mapping, or a key is not a ``str``.
    :raises ValueError: for an invalid or reserved column name, or one of the table's own columns.
    """
    if type(extra) is not dict and not isinstance(extra, Mapping):
        raise TypeError(f"AuditEntry.extra must be a Mapping, not {type(extra).__name__}")
    # Copied before the check, so a caller's later change to its mapping can neither bypass the check
    # nor alter the frozen entry.
    columns: dict[Any, Any] = dict(extra)
    if not columns:
        return _EMPTY
    for name in columns:
        if type(name) is str and name in _CHECKED_NAMES:
            continue
        if not isinstance(name, str):
            raise TypeError(f"AuditEntry.extra keys must be str, not {type(name).__name__} ({name!r})")
        if name in _CORE_COLUMNS:
            raise ValueError(f"extra column {name!r} clashes with a column of {AUDIT_TABLE.name}")
        validate_column_name(name)
        if len(_CHECKED_NAMES) < _MAX_CHECKED_NAMES:
            _CHECKED_NAMES.add(name)
    return MappingProxyType(columns)


def _format_time(ts: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``, the form Log Analytics parses for ``datetime``.

    Always ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, 27 characters, years padded to four digits (``strftime("%Y")``
    does not pad on Linux). The part up to the minute is cached: consecutive rows mostly share it, and
    formatting it costs more than the rest.
    """
    if ts.tzinfo is not _UTC:
        ts = _astimezone(ts, _UTC)
    minute = (ts.year, ts.month, ts.day, ts.hour, ts.minute)
    last = _LAST_MINUTE[0]
    if last[0] != minute:
        y, mo, d, h, mi = minute
        last = _LAST_MINUTE[0] = (minute, f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:")  # replaced whole
    return f"{last[1]}{_SECONDS[ts.second]}.{ts.microsecond:06d}Z"


_SECONDS = tuple(f"{s:02d}" for s in range(60))
#: The last minute formatted, and its text.
_LAST_MINUTE: list[tuple[tuple[int, ...], str]] = [((), "")]
