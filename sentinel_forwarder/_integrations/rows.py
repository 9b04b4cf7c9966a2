"""Log records into audit rows: what the logging handler, the structlog processor and the OTel exporter share.

A level becomes a :class:`Severity`; fields named like a column of the table (``SessionId`` or
``session_id``, ``DetectorId``/``detector_id``, ``Severity``/``severity``, ``Id``/``id``, ``Hash``,
``PreviousHash``, and any extra column of the given schema) become that column; other fields are left out.
Records of the forwarder's own loggers, of the Azure SDK and HTTP libraries it uses, and any record made on
one of the forwarder's threads are never forwarded: an audit row about sending audit rows would feed itself.
"""

from __future__ import annotations

__all__ = ["SupportsForward", "entry_from_fields", "is_own", "severity_for_level", "severity_for_otel"]

import contextlib
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from .._model.entry import AuditEntry, Severity
from .._model.schema import AUDIT_TABLE, TableSchema

#: Loggers whose records are never forwarded (prefixes): the forwarder's own and those it drives.
OWN_LOGGERS: tuple[str, ...] = ("sentinel_forwarder", "azure", "urllib3", "requests", "msal")

_FIELDS: Mapping[str, str] = {
    "SessionId": "session_id",
    "session_id": "session_id",
    "DetectorId": "detector_id",
    "detector_id": "detector_id",
    "Id": "id",
    "id": "id",
    "Hash": "hash",
    "hash": "hash",
    "PreviousHash": "previous_hash",
    "previous_hash": "previous_hash",
}
_CORE_COLUMNS = frozenset(c.name for c in AUDIT_TABLE.columns)


class SupportsForward(Protocol):
    """What a log integration forwards to: a :class:`BufferingForwarder` or :class:`BackgroundForwarder`."""

    def forward(self, entry: AuditEntry, /) -> bool: ...


def severity_for_level(level: int) -> Severity:
    """A stdlib logging level as a severity: below INFO None, INFO Low, WARNING Medium, ERROR High,
    CRITICAL (and above) Critical."""
    if level >= 50:
        return Severity.CRITICAL
    if level >= 40:
        return Severity.HIGH
    if level >= 30:
        return Severity.MEDIUM
    return Severity.LOW if level >= 20 else Severity.NONE


def severity_for_otel(number: int | None) -> Severity:
    """An OpenTelemetry severity number (TRACE 1-4, DEBUG 5-8, INFO 9-12, WARN 13-16, ERROR 17-20,
    FATAL 21-24) as a severity, as :func:`severity_for_level` maps the stdlib levels."""
    if number is None:
        return Severity.NONE
    for floor, severity in ((21, Severity.CRITICAL), (17, Severity.HIGH), (13, Severity.MEDIUM)):
        if number >= floor:
            return severity
    return Severity.LOW if number >= 9 else Severity.NONE


def is_own(logger_name: str) -> bool:
    """Whether a record must not be forwarded: from the forwarder's loggers or on one of its threads."""
    if threading.current_thread().name.startswith("sentinel-forwarder"):
        return True
    return any(logger_name == p or logger_name.startswith(p + ".") for p in OWN_LOGGERS)


def entry_from_fields(
    summary: str,
    severity: Severity,
    fields: Mapping[str, Any],
    *,
    timestamp: datetime | None = None,
    detector_id: str = "",
    schema: TableSchema = AUDIT_TABLE,
) -> AuditEntry:
    """The audit row for one log record.

    :param summary: the message.
    :param severity: from the record's level; a ``severity``/``Severity`` field wins if it is valid.
    :param fields: the record's structured fields (``extra=``, structlog's event dict, OTel attributes).
    :param timestamp: when it was logged (timezone-aware); now by default.
    :param detector_id: used when no ``detector_id``/``DetectorId`` field is given (the logger's name).
    :param schema: the table; its columns beyond :data:`AUDIT_TABLE`'s are sent as extra columns.
    :raises ValueError: if the row cannot be made (an invalid value for a column).
    """
    kwargs: dict[str, Any] = {"detector_id": detector_id}
    extra: dict[str, Any] = {}
    columns = {c.name for c in schema.columns} - _CORE_COLUMNS
    for key, value in fields.items():
        if key in _FIELDS and value is not None:
            kwargs[_FIELDS[key]] = str(value)
        elif key in ("severity", "Severity"):
            with contextlib.suppress(ValueError):  # else the level's severity stands
                severity = Severity.parse(value)
        elif key in columns:
            extra[key] = value
    kwargs["severity"] = severity
    if timestamp is not None:
        kwargs["timestamp"] = timestamp
    if extra:
        kwargs["extra"] = extra
    try:
        return AuditEntry(summary, **kwargs)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def utc_from_seconds(seconds: float) -> datetime:
    """A POSIX time as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, timezone.utc)
