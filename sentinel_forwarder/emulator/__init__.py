"""A local Azure Monitor Logs Ingestion API emulator (the ``emulator`` extra: starlette, uvicorn, trustme).

.. code-block:: python

    from azure.monitor.ingestion import LogsIngestionClient
    from sentinel_forwarder.emulator import Emulator, EmulatorCredential

    with Emulator(tls=True) as emu:
        client = LogsIngestionClient(emu.endpoint, EmulatorCredential(), connection_verify=str(emu.ca_path))
        client.upload(emu.rule_id, emu.stream_name, [{"TimeGenerated": "2024-05-01T12:00:00Z", "Id": "1"}])
        print(emu.rows(emu.table))

See ``docs/emulator.md``.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_RULE_ID",
    "MAX_BODY_BYTES",
    "AsyncEmulatorCredential",
    "DataCollectionRule",
    "DcrError",
    "Emulator",
    "EmulatorCredential",
    "EmulatorStats",
    "Faults",
    "Stream",
    "load_dcrs",
    "read_rows",
]

from ..testing import AsyncEmulatorCredential, EmulatorCredential
from ._app import MAX_BODY_BYTES
from ._dcr import DEFAULT_RULE_ID, DataCollectionRule, DcrError, Stream, load_dcrs
from ._faults import Faults
from ._server import Emulator
from ._stats import EmulatorStats
from ._store import read_rows
