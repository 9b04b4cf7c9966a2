"""A local Azure Monitor Logs Ingestion API emulator (the ``emulator`` extra: starlette, uvicorn, trustme).

.. code-block:: python

    from azure.monitor.ingestion import LogsIngestionClient
    from sentinel_forwarder.emulator import Emulator, EmulatorCredential

    with Emulator(tls=True) as emu:
        client = LogsIngestionClient(emu.endpoint, EmulatorCredential(), connection_verify=str(emu.ca_path))
        client.upload(emu.rule_id, emu.stream_name, [{"TimeGenerated": "2024-05-01T12:00:00Z", "Id": "1"}])
        print(emu.rows(emu.table))  # TimeGenerated replaced by the receive time, as Azure does
        print(emu.loss_report())  # ... and that is recorded; Emulator(strict=True) answers 400 instead
        print(emu.query("AISentinelAudit_CL | summarize count() by SessionId"))  # KQL, as the Logs Query API

See ``docs/emulator.md``.
"""

from __future__ import annotations

__all__ = [
    "CLOUD_AUDIENCES",
    "DEFAULT_RULE_ID",
    "DEFAULT_WORKSPACE_ID",
    "LOSS_KINDS",
    "MAX_BODY_BYTES",
    "MAX_DECODED_BYTES",
    "QUERY_AUDIENCES",
    "AsyncEmulatorCredential",
    "AsyncEmulatorJwtCredential",
    "DataCollectionRule",
    "DcrError",
    "Emulator",
    "EmulatorCredential",
    "EmulatorJwtCredential",
    "EmulatorStats",
    "Faults",
    "Loss",
    "QueryError",
    "QueryResult",
    "RequestRecord",
    "RoleAssignment",
    "Roles",
    "Rule",
    "RuleError",
    "RuleReport",
    "Stream",
    "format_loss_report",
    "load_dcrs",
    "load_rules",
    "read_losses",
    "read_rows",
    "read_snapshot",
    "run_query",
    "shipped_rules",
    "unsigned_jwt",
]

from .._util.credentials import AsyncEmulatorCredential, EmulatorCredential
from ._dcr import DEFAULT_RULE_ID, DataCollectionRule, DcrError, Stream, load_dcrs
from ._faults import Faults
from ._identity import (
    CLOUD_AUDIENCES,
    AsyncEmulatorJwtCredential,
    EmulatorJwtCredential,
    RoleAssignment,
    Roles,
    unsigned_jwt,
)
from ._ingest_request import MAX_BODY_BYTES, MAX_DECODED_BYTES
from ._losses import LOSS_KINDS, Loss, format_loss_report
from ._query import DEFAULT_WORKSPACE_ID, QUERY_AUDIENCES, QueryError, QueryResult, run_query
from ._rules import Rule, RuleError, RuleReport, load_rules, shipped_rules
from ._server import Emulator
from ._stats import EmulatorStats, RequestRecord
from ._store import read_losses, read_rows, read_snapshot
