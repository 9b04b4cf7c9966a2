"""``AuditLogExporter``: an OpenTelemetry logs exporter that forwards log records as audit rows.

For an application that already logs through OpenTelemetry (the ``otel`` extra: ``opentelemetry-sdk``):

.. code-block:: python

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from sentinel_forwarder.opentelemetry import AuditLogExporter

    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(AuditLogExporter(forwarder)))

``SimpleLogRecordProcessor`` is enough: :meth:`AuditLogExporter.export` only calls ``forward()``, which
never blocks; the forwarder batches and sends.
"""

from __future__ import annotations

__all__ = ["AuditLogExporter"]

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

try:
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
except ImportError:  # opentelemetry-sdk before the rename: the same interface under its old names
    from opentelemetry.sdk._logs.export import (  # type: ignore[attr-defined,no-redef,assignment,unused-ignore]
        LogExporter as LogRecordExporter,
    )
    from opentelemetry.sdk._logs.export import (  # type: ignore[attr-defined,no-redef,assignment,unused-ignore]
        LogExportResult as LogRecordExportResult,
    )

from ._integrations.rows import SupportsForward, entry_from_fields, is_own, severity_for_otel
from ._model.schema import AUDIT_TABLE, TableSchema

logger = logging.getLogger("sentinel_forwarder.logs")


class AuditLogExporter(LogRecordExporter):
    """Forward each OpenTelemetry log record as an audit row.

    The body is the ``Summary``; the severity number the ``Severity`` (INFO Low, WARN Medium, ERROR High,
    FATAL Critical, below INFO None); attributes named like a column (``session_id`` or ``SessionId``,
    ``detector_id``, ``severity``, ``id``, and the extra columns of *schema*) fill it, other attributes are
    left out; ``DetectorId`` defaults to the instrumentation scope's name (the logger's, through
    OpenTelemetry's ``LoggingHandler``). Records of the forwarder's own loggers and threads are skipped.

    ``export`` always reports success: rows the forwarder cannot take are counted by the forwarder
    (``audit.forward.dropped``), and a record that cannot become a row is logged at DEBUG and skipped.
    ``shutdown`` leaves the forwarder open: it belongs to the application.

    :param forwarder: a :class:`BufferingForwarder` or :class:`BackgroundForwarder`.
    :param schema: the table, if it declares extra columns that attributes may fill.
    """

    def __init__(self, forwarder: SupportsForward, *, schema: TableSchema = AUDIT_TABLE) -> None:
        self.forwarder = forwarder
        self._schema = schema

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        for data in batch:
            record = data.log_record
            scope = getattr(data, "instrumentation_scope", None)
            name = str(getattr(scope, "name", "") or "")
            if is_own(name):
                continue
            try:
                when = record.timestamp or record.observed_timestamp
                number = record.severity_number
                entry = entry_from_fields(
                    "" if record.body is None else str(record.body),
                    severity_for_otel(None if number is None else number.value),
                    dict(record.attributes or {}),
                    timestamp=None if when is None else datetime.fromtimestamp(when / 1e9, timezone.utc),
                    detector_id=name,
                    schema=self._schema,
                )
                self.forwarder.forward(entry)
            except Exception as exc:
                logger.debug("sentinel-forwarder: an OpenTelemetry log record was not forwarded: %r", exc)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the forwarder is the application's to close."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is held here: rows are in the forwarder (flush that to deliver them)."""
        return True
