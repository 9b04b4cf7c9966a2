"""``AuditProcessor``: a structlog processor that forwards events as audit rows (the ``structlog`` extra).

.. code-block:: python

    import structlog
    from sentinel_forwarder.structlog import AuditProcessor

    structlog.configure(processors=[
        structlog.processors.add_log_level,
        AuditProcessor(forwarder),          # before the renderer: it reads the event dict
        structlog.processors.JSONRenderer(),
    ])
    structlog.get_logger().warning("PII redacted", session_id=sid, detector_id="pii-leak")
"""

from __future__ import annotations

__all__ = ["AuditProcessor"]

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from ._integrations.rows import SupportsForward, entry_from_fields, is_own, severity_for_level
from ._model.schema import AUDIT_TABLE, TableSchema

logger = logging.getLogger("sentinel_forwarder.logs")

#: structlog's method names as stdlib levels.
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class AuditProcessor:
    """Forward each event at or above *level* as an audit row, and pass the event dict on unchanged.

    The ``event`` is the ``Summary``; the method's level (or a ``level`` key) the ``Severity``; keys named
    like a column (``session_id`` or ``SessionId``, ``detector_id``, ``severity``, ``id``, and the extra
    columns of *schema*) fill it, other keys are left out. ``DetectorId`` defaults to a ``logger`` key
    (structlog's ``add_logger_name``), else *detector_id*. Never blocks, never raises: an event that cannot
    become a row is logged at DEBUG on ``sentinel_forwarder.logs`` and skipped.

    :param forwarder: a :class:`BufferingForwarder` or :class:`BackgroundForwarder`.
    :param level: the lowest stdlib level forwarded (``logging.INFO`` by default).
    :param predicate: if given, only events for which it returns true are forwarded (say, ``audit=True``).
    :param detector_id: the ``DetectorId`` of events without one.
    :param schema: the table, if it declares extra columns that event keys may fill.
    """

    def __init__(
        self,
        forwarder: SupportsForward,
        *,
        level: int = logging.INFO,
        predicate: Callable[[MutableMapping[str, Any]], bool] | None = None,
        detector_id: str = "",
        schema: TableSchema = AUDIT_TABLE,
    ) -> None:
        self.forwarder = forwarder
        self._level = level
        self._predicate = predicate
        self._detector_id = detector_id
        self._schema = schema

    def __call__(
        self, logger_: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        name = str(event_dict.get("logger") or "")
        level_name = str(event_dict.get("level") or method_name).lower()
        level = _LEVELS.get(level_name, logging.INFO)
        if level < self._level or is_own(name):
            return event_dict
        try:
            if self._predicate is not None and not self._predicate(event_dict):
                return event_dict
            fields = {k: v for k, v in event_dict.items() if k not in ("event", "level", "logger")}
            entry = entry_from_fields(
                str(event_dict.get("event", "")),
                severity_for_level(level),
                fields,
                detector_id=name or self._detector_id,
                schema=self._schema,
            )
            self.forwarder.forward(entry)
        except Exception as exc:  # the application's logging must go on
            logger.debug("sentinel-forwarder: a structlog event was not forwarded: %r", exc)
        return event_dict
