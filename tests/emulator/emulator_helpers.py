"""Shared helpers of the emulator tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

from azure.monitor.ingestion import LogsIngestionClient

from sentinel_forwarder.emulator import Emulator, EmulatorCredential

_ids = itertools.count()

#: A DCR with one column of every stream type, as a full ARM resource; "Extra_CL" also gets the rows.
TYPED_RULE_ID = "dcr-" + "1" * 32
TYPED_DCR: dict[str, Any] = {
    "type": "Microsoft.Insights/dataCollectionRules",
    "name": "typed",
    "properties": {
        "immutableId": TYPED_RULE_ID,
        "streamDeclarations": {
            "Custom-Typed": {
                "columns": [
                    {"name": "TimeGenerated", "type": "datetime"},
                    {"name": "S", "type": "string"},
                    {"name": "I", "type": "int"},
                    {"name": "L", "type": "long"},
                    {"name": "R", "type": "real"},
                    {"name": "B", "type": "boolean"},
                    {"name": "D", "type": "dynamic"},
                ]
            }
        },
        "dataFlows": [
            {"streams": ["Custom-Typed"], "transformKql": "source", "outputStream": "Custom-Typed_CL"},
            {"streams": ["Custom-Typed"], "transformKql": "source", "outputStream": "Custom-Extra_CL"},
        ],
    },
}


def recent(**delta: float) -> str:
    """A ``TimeGenerated`` value: now (UTC) plus *delta* (``timedelta`` keywords), microseconds, ``Z``."""
    return (datetime.now(timezone.utc) + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_row(**overrides: Any) -> dict[str, Any]:
    """A realistic AISentinelAudit_CL row, timed an hour ago (Azure replaces times more than 2 days old)."""
    n = next(_ids)
    row: dict[str, Any] = {
        "TimeGenerated": recent(hours=-1),
        "Id": f"0190a0c2-7c1e-7d4e-9a55-{n:012x}",
        "SessionId": "session-42",
        "Severity": "High",
        "DetectorId": "pii-leak",
        "Summary": "Model output contained an e-mail address of a customer; redacted before delivery.",
        "Hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "PreviousHash": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
    }
    row.update(overrides)
    return row


def sync_client(emu: Emulator, **kwargs: Any) -> LogsIngestionClient:
    """The unmodified SDK client for *emu*: no retries unless asked, no backoff waits."""
    kwargs.setdefault("retry_total", 0)
    kwargs.setdefault("retry_backoff_factor", 0)
    credential = kwargs.pop("credential", None) or EmulatorCredential()
    if emu.ca_path is not None:
        kwargs.setdefault("connection_verify", str(emu.ca_path))
    return LogsIngestionClient(emu.endpoint, credential, **kwargs)


def upload_kwargs(emu: Emulator) -> dict[str, Any]:
    """Per-call options: plain http needs ``enforce_https=False`` for the bearer-token policy."""
    return {} if emu.endpoint.startswith("https://") else {"enforce_https": False}
