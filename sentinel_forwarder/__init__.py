"""sentinel-forwarder: security audit records from a running application into Microsoft Sentinel."""

from __future__ import annotations

from ._config.settings import ConfigurationError, ForwarderSettings
from ._evidence.chain import ChainHead, HashChain, canonical_form, record_hash
from ._evidence.verify import ChainBreak, ChainReport, ChainSummary, verify_chain
from ._forwarders.background import BackgroundForwarder
from ._forwarders.buffering import (
    DEFAULT_MAX_BATCHES_IN_FLIGHT,
    DEFAULT_MAX_REQUEST_ROWS,
    DEFAULT_MAX_REQUESTS_PER_MINUTE,
    BufferingForwarder,
    ForwarderStatistics,
)
from ._integrations.handler import AuditLogHandler
from ._model.entry import AuditEntry, Severity
from ._model.protocol import DROP_REASONS, AuditForwarder, AuditSink, DropReason, SendResult
from ._model.schema import AUDIT_TABLE, Column, TableSchema
from ._model.snapshots import ForwarderHealth
from ._setup import add_sentinel_forwarder
from ._sinks.azure.clouds import CLOUD_AUDIENCES, Cloud
from ._sinks.azure.sink import MAX_REQUEST_BYTES, AzureSentinelForwarder

__all__ = [
    "AUDIT_TABLE",
    "CLOUD_AUDIENCES",
    "DEFAULT_MAX_BATCHES_IN_FLIGHT",
    "DEFAULT_MAX_REQUESTS_PER_MINUTE",
    "DEFAULT_MAX_REQUEST_ROWS",
    "DROP_REASONS",
    "MAX_REQUEST_BYTES",
    "AuditEntry",
    "AuditForwarder",
    "AuditLogHandler",
    "AuditSink",
    "AzureSentinelForwarder",
    "BackgroundForwarder",
    "BufferingForwarder",
    "ChainBreak",
    "ChainHead",
    "ChainReport",
    "ChainSummary",
    "Cloud",
    "Column",
    "ConfigurationError",
    "DropReason",
    "ForwarderHealth",
    "ForwarderSettings",
    "ForwarderStatistics",
    "HashChain",
    "SendResult",
    "Severity",
    "TableSchema",
    "add_sentinel_forwarder",
    "canonical_form",
    "record_hash",
    "verify_chain",
]
