"""The command line, run as subprocesses: ``emulator --port 0 --json``, then ``rows --db``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.monitor.ingestion import LogsIngestionClient
from cli_helpers import SOURCE_ROOT

from sentinel_forwarder.emulator import EmulatorCredential, read_losses

MakeRow = Callable[..., dict[str, Any]]
CLI = [sys.executable, "-m", "sentinel_forwarder.cli"]
ENV = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


@pytest.fixture
def run_emulator() -> Iterator[Callable[..., tuple[subprocess.Popen[str], dict[str, Any]]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        process = subprocess.Popen(
            [*CLI, "emulator", "--port", "0", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the emulator is up (or the process died)
        if not line:
            raise AssertionError(f"emulator did not start: {process.communicate(timeout=10)[1]}")
        return process, json.loads(line)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    process.send_signal(sig)
    assert process.wait(timeout=15) == 0


def rows_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "rows", *args], capture_output=True, text=True, env=ENV, timeout=60)


def test_emulator_json_then_rows(
    run_emulator: Callable[..., tuple[subprocess.Popen[str], dict[str, Any]]],
    tmp_path: Path,
    make_row: MakeRow,
) -> None:
    db = tmp_path / "emulator.sqlite"
    process, info = run_emulator("--db", str(db))
    assert {"endpoint", "rule_id", "stream_name", "table", "ca_path", "workspace_id"} <= set(info)
    assert info["endpoint"].startswith("http://127.0.0.1:")
    assert not info["endpoint"].endswith(":0")
    assert info["rule_id"] == "dcr-00000000000000000000000000000000"
    assert info["stream_name"] == "Custom-AISentinelAudit_CL"
    assert info["table"] == "AISentinelAudit_CL"
    assert info["ca_path"] is None

    rows = [make_row(Summary=f"row {i}") for i in range(3)]
    with LogsIngestionClient(info["endpoint"], EmulatorCredential(), retry_total=0) as client:
        client.upload(info["rule_id"], info["stream_name"], rows, enforce_https=False)
    # Rows are committed before the 204, so another process can read them while the emulator runs.
    live = rows_cli("--db", str(db), "--json")
    assert live.returncode == 0, live.stderr
    assert [json.loads(line) for line in live.stdout.splitlines()] == rows
    stop(process, signal.SIGINT)

    limited = rows_cli("--db", str(db), "--json", "--limit", "2", "--meta")
    lines = [json.loads(line) for line in limited.stdout.splitlines()]
    assert [r["Id"] for r in lines] == [r["Id"] for r in rows[:2]]
    assert lines[0]["_Seq"] == 1 and lines[0]["_IngestedAt"].endswith("Z")

    table = rows_cli("--db", str(db))
    assert table.returncode == 0
    assert "AISentinelAudit_CL (3 rows)" in table.stdout
    assert "row 2" in table.stdout

    missing = rows_cli("--db", str(db), "--table", "Nope_CL")
    assert missing.returncode == 1
    assert "AISentinelAudit_CL" in missing.stderr


def test_emulator_tls_token_and_dcr(
    run_emulator: Callable[..., tuple[subprocess.Popen[str], dict[str, Any]]],
    tmp_path: Path,
    make_row: MakeRow,
) -> None:
    dcr = tmp_path / "web.json"
    dcr.write_text(
        json.dumps(
            {
                "type": "Microsoft.Insights/dataCollectionRules",
                "name": "web",
                "properties": {
                    "immutableId": "dcr-web",
                    "streamDeclarations": {"Custom-Web": {"columns": [{"name": "Url", "type": "string"}]}},
                    "dataFlows": [{"streams": ["Custom-Web"], "outputStream": "Custom-Web_CL"}],
                },
            }
        )
    )
    process, info = run_emulator("--tls", "--token", "only-this", "--dcr", str(dcr), "--sink")
    assert info["endpoint"].startswith("https://")
    assert Path(info["ca_path"]).is_file()
    assert info["rules"]["dcr-web"] == {"Custom-Web": ["Web_CL"]}
    credential = EmulatorCredential("only-this")
    with LogsIngestionClient(info["endpoint"], credential, connection_verify=info["ca_path"]) as client:
        client.upload("dcr-web", "Custom-Web", [{"Url": "https://example.org"}])
        client.upload(info["rule_id"], info["stream_name"], [make_row()])
    stop(process)
    assert not Path(info["ca_path"]).exists()  # temporary certificates are removed


def test_human_output_and_bad_options(run_emulator: Any) -> None:
    process = subprocess.Popen(
        [*CLI, "emulator", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert process.stdout is not None
        seen = ""
        while "Ctrl-C" not in seen:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            seen += line
        assert "dcr-00000000000000000000000000000000" in seen
        assert "http://127.0.0.1:" in seen
        stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    refused = subprocess.run(
        [*CLI, "emulator", "--host", "0.0.0.0"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert refused.returncode == 1
    assert "allow_remote" in refused.stderr


def test_help_lists_commands() -> None:
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 0
    assert "emulator" in result.stdout and "rows" in result.stdout


def test_emulator_prints_a_warning_line_per_request_that_lost_data(
    run_emulator: Callable[..., tuple[subprocess.Popen[str], dict[str, Any]]],
    tmp_path: Path,
    make_row: MakeRow,
) -> None:
    db = tmp_path / "emulator.sqlite"
    process, info = run_emulator("--db", str(db))
    with LogsIngestionClient(info["endpoint"], EmulatorCredential(), retry_total=0) as client:
        client.upload(info["rule_id"], info["stream_name"], [make_row(Nope=1)], enforce_https=False)
        client.upload(info["rule_id"], info["stream_name"], [make_row()], enforce_https=False)
    stop(process)
    assert process.stderr is not None
    warnings = [line for line in process.stderr.read().splitlines() if "silently lose data" in line]
    (loss,) = read_losses(db)
    assert len(warnings) == 1
    assert loss.request_id in warnings[0]
    assert "1 undeclared column value(s) dropped (Nope)" in warnings[0]
