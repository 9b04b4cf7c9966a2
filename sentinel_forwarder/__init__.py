"""sentinel-forwarder: security audit records from a running application into Microsoft Sentinel."""

from __future__ import annotations

from ._azure import MAX_REQUEST_BYTES, AzureSentinelForwarder
from ._background import BackgroundForwarder
from ._buffering import (
    DEFAULT_MAX_BATCHES_IN_FLIGHT,
    DEFAULT_MAX_REQUEST_ROWS,
    BufferingForwarder,
    ForwarderStatistics,
)
from ._chain import ChainHead, HashChain, canonical_form, record_hash
from ._clouds import CLOUD_AUDIENCES, Cloud
from ._entry import AuditEntry, Severity
from ._log_handler import AuditLogHandler
from ._protocol import DROP_REASONS, AuditForwarder, AuditSink, DropReason, SendResult
from ._schema import AUDIT_TABLE, Column, TableSchema
from ._settings import ConfigurationError, ForwarderSettings
from ._setup import add_sentinel_forwarder
from ._snapshots import ForwarderHealth
from ._verify import ChainBreak, ChainReport, ChainSummary, verify_chain

__all__ = [
    "AUDIT_TABLE",
    "CLOUD_AUDIENCES",
    "DEFAULT_MAX_BATCHES_IN_FLIGHT",
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
