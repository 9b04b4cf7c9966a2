"""The ``AISentinelAudit_CL`` table schema: the single source of truth.

The row mapping of :class:`~sentinel_forwarder.AuditEntry`, the emulator's default data collection rule
and the ARM templates in ``templates/`` are all derived from :data:`AUDIT_TABLE`. A test fails when
any of them disagrees with it.
"""

from __future__ import annotations

__all__ = [
    "AUDIT_TABLE",
    "Column",
    "ColumnType",
    "TableSchema",
    "dcr_stream_type",
    "validate_column_name",
]

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: Column types of a Log Analytics table (``Microsoft.OperationalInsights/workspaces/tables``).
ColumnType = Literal["string", "int", "long", "real", "boolean", "dateTime", "guid", "dynamic"]

#: DCR stream declarations know fewer types, spelt differently: ``datetime`` and no ``guid``.
_DCR_TYPES: Mapping[str, str] = {
    "string": "string",
    "int": "int",
    "long": "long",
    "real": "real",
    "boolean": "boolean",
    "dateTime": "datetime",
    "guid": "string",
    "dynamic": "dynamic",
}

#: Column names a custom table may not use (Azure Monitor limits, custom logs).
RESERVED_COLUMN_NAMES = frozenset(
    {"_ResourceId", "id", "_SubscriptionId", "TenantId", "Type", "UniqueId", "Title"}
)
_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,44}$")
_MAX_COLUMNS = 500


def dcr_stream_type(column_type: ColumnType) -> str:
    """Return the DCR stream-declaration type for a table column type."""
    return _DCR_TYPES[column_type]


def validate_column_name(name: str) -> None:
    """Check a column name against the documented limits.

    :raises ValueError: if the name is reserved, too long, or does not start with a letter.
    """
    # Matched exactly: KQL column names are case-sensitive, and the table's own ``Id`` column is not ``id``.
    # (Whether the service also refuses other casings is unverified; AISentinelAudit_CL uses ``Id``.)
    if name in RESERVED_COLUMN_NAMES:
        raise ValueError(f"column name {name!r} is reserved by Azure Monitor")
    if not _COLUMN_NAME.match(name):
        raise ValueError(
            f"column name {name!r} must start with a letter; at most 45 letters, digits or underscores"
        )


@dataclass(frozen=True)
class Column:
    """One column of a Log Analytics table."""

    name: str
    type: ColumnType
    description: str = ""

    def __post_init__(self) -> None:
        if self.name != "TimeGenerated":
            validate_column_name(self.name)
        if self.type not in _DCR_TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.type!r}")


@dataclass(frozen=True)
class TableSchema:
    """A custom table, the DCR stream that feeds it, and their columns."""

    name: str
    stream: str
    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        if not self.name.endswith("_CL"):
            raise ValueError(f"custom table name {self.name!r} must end with '_CL'")
        if not self.stream.startswith("Custom-"):
            raise ValueError(f"stream name {self.stream!r} must start with 'Custom-'")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name!r} declares a column twice")
        if "TimeGenerated" not in names:
            raise ValueError(f"table {self.name!r} must have a TimeGenerated column")
        if len(names) > _MAX_COLUMNS:
            raise ValueError(f"table {self.name!r} has more than {_MAX_COLUMNS} columns")

    @property
    def output_stream(self) -> str:
        """The DCR ``outputStream`` that writes into this table."""
        return f"Custom-{self.name}"

    def column(self, name: str) -> Column:
        """Return the column called *name*.

        :raises KeyError: if there is no such column.
        """
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def with_columns(self, extra: Iterable[Column]) -> TableSchema:
        """Return this schema with user-defined columns appended (for ``AuditEntry.extra``)."""
        return TableSchema(self.name, self.stream, self.columns + tuple(extra))

    def table_columns(self) -> list[dict[str, str]]:
        """Columns as ``properties.schema.columns`` of a ``workspaces/tables`` resource."""
        return [{"name": c.name, "type": c.type} for c in self.columns]

    def stream_columns(self) -> list[dict[str, str]]:
        """Columns as ``streamDeclarations[stream].columns`` of a data collection rule."""
        return [{"name": c.name, "type": dcr_stream_type(c.type)} for c in self.columns]

    def dcr_properties(
        self,
        *,
        workspace_resource_id: str = "",
        destination: str = "workspace",
        transform_kql: str = "source",
    ) -> dict[str, Any]:
        """The ``properties`` of a data collection rule that sends this stream to this table."""
        return {
            "streamDeclarations": {self.stream: {"columns": self.stream_columns()}},
            "destinations": {
                "logAnalytics": [{"workspaceResourceId": workspace_resource_id, "name": destination}]
            },
            "dataFlows": [
                {
                    "streams": [self.stream],
                    "destinations": [destination],
                    "transformKql": transform_kql,
                    "outputStream": self.output_stream,
                }
            ],
        }


#: The library's table. ``Timestamp`` of an entry lands in ``TimeGenerated``.
AUDIT_TABLE = TableSchema(
    name="AISentinelAudit_CL",
    stream="Custom-AISentinelAudit_CL",
    columns=(
        Column("TimeGenerated", "dateTime", "When the audited event happened (AuditEntry.timestamp), UTC."),
        Column("Id", "string", "Unique id of the audit record; use it to de-duplicate."),
        Column("SessionId", "string", "The application session (conversation, request chain) it belongs to."),
        Column("Severity", "string", "None, Low, Medium, High or Critical."),
        Column("DetectorId", "string", "The detector that produced the record, e.g. pii-leak."),
        Column("Summary", "string", "Human-readable description of the event."),
        Column("Hash", "string", "SHA-256, or HMAC-SHA256 when keyed (hex), over the canonical record."),
        Column("PreviousHash", "string", "Hash of the previous record in the chain; empty for the first."),
        Column(
            "ChainId", "string", "The hash chain the record belongs to: one per forwarder instance and run."
        ),
        Column("Sequence", "long", "Position of the record in its chain, from 1 (0: not linked)."),
        Column(
            "Heartbeat", "dynamic", "Heartbeat rows only: the forwarder's identity, counters and chain head."
        ),
    ),
)
