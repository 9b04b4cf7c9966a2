"""Test helpers shipped as public API.

Pure Python with core dependencies only: the credentials here work without the ``emulator`` extra, so the
core package's tests (and users' tests) can use them against any Logs Ingestion endpoint that accepts any
token, such as :class:`sentinel_forwarder.emulator.Emulator`.

.. code-block:: python

    from azure.monitor.ingestion import LogsIngestionClient
    from sentinel_forwarder.testing import EmulatorCredential

    client = LogsIngestionClient(emu.endpoint, EmulatorCredential(), connection_verify=str(emu.ca_path))
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TOKEN",
    "AsyncEmulatorCredential",
    "EmulatorCredential",
    "RecordingForwarder",
]

from ._sinks.recording import RecordingForwarder
from ._util.credentials import DEFAULT_TOKEN, AsyncEmulatorCredential, EmulatorCredential
