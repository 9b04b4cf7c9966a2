"""sentinel-forwarder: security audit records from a running application into Microsoft Sentinel."""

from __future__ import annotations

from ._schema import AUDIT_TABLE, Column, TableSchema

__all__ = ["AUDIT_TABLE", "Column", "TableSchema"]
