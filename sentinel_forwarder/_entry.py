"""The audit record: :class:`AuditEntry` and :class:`Severity`."""

from __future__ import annotations

__all__ = ["AuditEntry", "Severity"]

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from ._schema import AUDIT_TABLE, validate_column_name

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
            return cls(value)
        try:
            return _BY_LABEL[value.strip().lower()]
        except (KeyError, AttributeError):
            raise ValueError(
                f"unknown severity {value!r}; expected one of None, Low, Medium, High, Critical"
            ) from None


_LABELS = {s: s.name.capitalize() for s in Severity}
_BY_LABEL = {label.lower(): s for s, label in _LABELS.items()}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One immutable audit record, a row of ``AISentinelAudit_CL``.

    :param summary: what happened, for people.
    :param severity: a :class:`Severity` (or its label); sent as its label.
    :param detector_id: the detector that produced the record, e.g. ``"pii-leak"``.
    :param session_id: the application session it belongs to.
    :param id: unique id (a random UUID by default); lands in ``Id``.
    :param timestamp: when it happened, timezone-aware (now, UTC, by default); lands in ``TimeGenerated``.
    :param hash: SHA-256 of the record; filled by :class:`~sentinel_forwarder.HashChain`.
    :param previous_hash: ``hash`` of the previous record in the chain.
    :param extra: user-defined columns, sent as top-level columns; the table and DCR must declare them.
    :raises ValueError: for a naive timestamp, an unknown severity, or a bad or clashing extra column.
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

    def __post_init__(self) -> None:
        if not isinstance(self.severity, Severity):
            object.__setattr__(self, "severity", Severity.parse(self.severity))
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("AuditEntry.timestamp must be timezone-aware (use datetime.now(timezone.utc))")
        if self.extra:
            for name in self.extra:
                if name in _CORE_COLUMNS:
                    raise ValueError(f"extra column {name!r} clashes with a column of {AUDIT_TABLE.name}")
                validate_column_name(name)
            if not isinstance(self.extra, MappingProxyType):
                object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def to_row(self) -> dict[str, Any]:
        """The row as sent to the Logs Ingestion API: column name to JSON value."""
        row: dict[str, Any] = {
            "TimeGenerated": _format_time(self.timestamp),
            "Id": self.id,
            "SessionId": self.session_id,
            "Severity": _LABELS[self.severity],
            "DetectorId": self.detector_id,
            "Summary": self.summary,
            "Hash": self.hash,
            "PreviousHash": self.previous_hash,
        }
        if self.extra:
            row.update(self.extra)
        return row


def _format_time(ts: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``, the form Log Analytics parses for ``datetime``."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
