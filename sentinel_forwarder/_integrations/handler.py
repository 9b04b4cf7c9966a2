"""``AuditLogHandler``: a stdlib :class:`logging.Handler` that forwards log records as audit rows."""

from __future__ import annotations

__all__ = ["AuditLogHandler"]

import logging
import threading

from .._model.schema import AUDIT_TABLE, TableSchema
from .rows import SupportsForward, entry_from_fields, is_own, severity_for_level, utc_from_seconds

#: Attributes every ``logging.LogRecord`` has: the rest came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class AuditLogHandler(logging.Handler):
    """Forward each record as an audit row; never blocks (``forward()`` is O(1)) and never raises.

    ::

        audit = logging.getLogger("myapp.audit")
        audit.addHandler(AuditLogHandler(forwarder))
        audit.warning("PII redacted from a response", extra={"session_id": sid, "detector_id": "pii"})

    The message is the ``Summary``; the level the ``Severity`` (INFO Low, WARNING Medium, ERROR High,
    CRITICAL Critical, below INFO None); ``extra=`` fields named like a column (``session_id`` or
    ``SessionId``, ``detector_id``, ``severity``, ``id``, and the extra columns of *schema*) fill it, other
    fields are left out; ``DetectorId`` defaults to the logger's name. Records of the forwarder's own
    loggers (``sentinel_forwarder``, ``azure``, ``urllib3``, ...) and records made on its threads are skipped,
    so a handler on the root logger cannot feed itself. A record that cannot become a row goes to
    :meth:`logging.Handler.handleError`.

    :param forwarder: a :class:`BufferingForwarder` or :class:`BackgroundForwarder` (has ``forward``).
    :param level: the handler's level (``logging.NOTSET``: every record that reaches it).
    :param schema: the table, if it declares extra columns that ``extra=`` fields may fill.
    """

    def __init__(
        self, forwarder: SupportsForward, level: int = logging.NOTSET, *, schema: TableSchema = AUDIT_TABLE
    ) -> None:
        super().__init__(level)
        self.forwarder = forwarder
        self._schema = schema
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if is_own(record.name) or getattr(self._busy, "on", False):
            return
        self._busy.on = True  # anything logged while forwarding this record is not forwarded again
        try:
            summary = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                summary += f" ({type(exc).__name__}: {exc})"
            fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
            entry = entry_from_fields(
                summary,
                severity_for_level(record.levelno),
                fields,
                timestamp=utc_from_seconds(record.created),
                detector_id=record.name,
                schema=self._schema,
            )
            self.forwarder.forward(entry)
        except Exception:
            self.handleError(record)
        finally:
            self._busy.on = False
