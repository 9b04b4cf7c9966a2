"""What every test program shares: a forwarder on the emulator named by the environment, and rows."""

from __future__ import annotations

import os
from typing import Any

from sentinel_forwarder import AuditEntry, add_sentinel_forwarder
from sentinel_forwarder.testing import EmulatorCredential


def start(**options: Any) -> Any:
    """The background-thread forwarder, endpoint and rule id from SENTINEL_FORWARDER_* variables."""
    options.setdefault("max_interval", 3600)  # rows stay buffered until something drains them
    return add_sentinel_forwarder(credential=EmulatorCredential(), **options)


def rows(n: int, tag: str) -> list[AuditEntry]:
    return [AuditEntry(f"{tag} {i}", session_id=f"pid-{os.getpid()}") for i in range(n)]
