"""Clients nobody here wrote, against the emulator: Microsoft's JavaScript Logs Ingestion client from npm
(``@azure/monitor-ingestion`` 1.2.0, pinned in tools/js-sdk/package-lock.json) over HTTPS with
``NODE_EXTRA_CA_CERTS``, including its ``onError`` path; and the stock async Python SDK's ``on_error`` with a
chunk the service refuses. (The stock Python SDK's sync and async ``upload()`` of 12,000 plain rows is in
test_emulator_fidelity.py.)

The JS client gzips every chunk and splits the rows into chunks of about 1 MB; in 1.2.0 a failed chunk goes
to ``onError`` and the upload still rejects with ``AggregateLogsUploadError`` (logsIngestionClient.js).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulator_helpers import TYPED_DCR, TYPED_RULE_ID, audit_row

from sentinel_forwarder.emulator import Emulator

JS_SDK = Path(__file__).resolve().parents[2] / "tools" / "js-sdk"
ROWS = 12_000


@pytest.fixture(scope="module")
def js_sdk() -> Path:
    """Node and the pinned JS SDK, installed with ``npm ci`` when missing (CI installs it in .ci/run)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found on PATH: the JS SDK test needs Node.js >= 20 and npm")
    if not (JS_SDK / "node_modules" / "@azure" / "monitor-ingestion").is_dir():
        subprocess.run(
            ["npm", "ci", "--prefix", str(JS_SDK), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return JS_SDK


@pytest.fixture(scope="module")
def js_emu() -> Iterator[Emulator]:
    with Emulator(tls=True, strict=True) as emu:
        yield emu


@pytest.fixture
def emu(js_emu: Emulator) -> Iterator[Emulator]:
    js_emu.reset()
    yield js_emu
    js_emu.reset()


def js_upload(js_sdk: Path, emu: Emulator, logs: list[dict[str, Any]], *, on_error: bool) -> dict[str, Any]:
    spec = {"endpoint": emu.endpoint, "ruleId": emu.rule_id, "stream": emu.stream_name, "logs": logs}
    done = subprocess.run(
        ["node", str(js_sdk / "upload.mjs")],
        input=json.dumps({**spec, "onError": on_error}),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(emu.ca_path)},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def rows() -> list[dict[str, Any]]:
    return [audit_row(Summary=f"row {n:05d} " + "x" * 60) for n in range(ROWS)]


def test_js_sdk_uploads_12000_rows_over_https(js_sdk: Path, emu: Emulator) -> None:
    logs = rows()
    result = js_upload(js_sdk, emu, logs, on_error=True)
    assert result == {
        "ok": True,
        "failedChunks": 0,
        "failedRows": 0,
        "causes": [],
        "scopes": ["https://monitor.azure.com/.default"],
    }
    assert emu.count(emu.table) == ROWS
    assert sorted(r["Id"] for r in emu.rows(emu.table)) == sorted(r["Id"] for r in logs)
    requests = emu.requests()
    assert len(requests) > 1 and all(r.status == 204 for r in requests)
    # The JS client sends its own x-ms-client-request-id, which the emulator echoes and logs.
    assert all(r.client_request_id for r in requests)
    assert emu.losses() == []


def test_js_sdk_on_error_gets_the_refused_chunk(js_sdk: Path, emu: Emulator) -> None:
    logs = rows()
    logs[ROWS - 1000]["Severity"] = 5  # strict mode refuses the chunk holding it (Azure would store "5")
    result = js_upload(js_sdk, emu, logs, on_error=True)
    assert result["failedChunks"] == 1
    (cause,) = result["causes"]
    assert (cause["statusCode"], cause["code"]) == (400, "InvalidColumnValue")
    assert "column 'Severity'" in cause["message"]
    # Every row either landed or went to onError, and the refused ones are exactly those that did not land.
    assert emu.count(emu.table) + result["failedRows"] == ROWS
    assert logs[ROWS - 1000]["Id"] not in {r["Id"] for r in emu.rows(emu.table)}
    # 1.2.0 rejects the upload as well, even with onError.
    assert result["ok"] is False and result["error"]["name"] == "AggregateLogsUploadError"


def test_js_sdk_without_on_error_rejects_with_the_cause(js_sdk: Path, emu: Emulator) -> None:
    result = js_upload(js_sdk, emu, [audit_row(Severity=5)], on_error=False)
    assert result["ok"] is False
    assert result["error"]["name"] == "AggregateLogsUploadError"
    assert [e["code"] for e in result["error"]["errors"]] == ["InvalidColumnValue"]
    assert emu.count(emu.table) == 0


@pytest.mark.anyio
async def test_stock_async_sdk_on_error_gets_the_refused_chunk(anyio_backend: str) -> None:
    """The async Python SDK's on_error with a chunk the (strict) emulator refuses: the chunker's first chunk
    is over 1 MiB decoded (see test_emulator_fidelity.py), so strict mode answers 413 for it."""
    from azure.monitor.ingestion import LogsUploadError
    from azure.monitor.ingestion.aio import LogsIngestionClient as AsyncLogsIngestionClient
    from emulator_helpers import recent

    from sentinel_forwarder.emulator import AsyncEmulatorCredential

    kwargs: dict[str, Any] = {"retry_total": 0}
    if anyio_backend == "trio":
        from azure.core.pipeline.transport import TrioRequestsTransport

        kwargs["transport"] = TrioRequestsTransport()
    errors: list[LogsUploadError] = []

    async def on_error(error: LogsUploadError) -> None:
        errors.append(error)

    logs = [{"TimeGenerated": recent(), "S": f"row {n:05d} " + "x" * 40, "I": n} for n in range(ROWS)]
    with Emulator(dcrs=[TYPED_DCR], strict=True) as strict:
        async with AsyncLogsIngestionClient(strict.endpoint, AsyncEmulatorCredential(), **kwargs) as client:
            await client.upload(TYPED_RULE_ID, "Custom-Typed", logs, enforce_https=False, on_error=on_error)
        failed = [row for error in errors for row in error.failed_logs]
        assert errors and all(getattr(e.error, "status_code", None) == 413 for e in errors)
        assert strict.count("Typed_CL") + len(failed) == ROWS
        assert {r["I"] for r in failed}.isdisjoint(r["I"] for r in strict.rows("Typed_CL"))
