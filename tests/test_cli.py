"""``python -m sentinel_forwarder``: ``--version`` and ``rows`` at 80 columns, run as subprocesses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from cli_helpers import run_cli

from sentinel_forwarder import AuditEntry, Severity, add_sentinel_forwarder
from sentinel_forwarder.emulator import Emulator

SUMMARIES = [
    "Prompt injection attempt blocked in user input",
    "Model response contained an e-mail address; redacted before delivery",
    "Jailbreak template matched (role-play override)",
]


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An emulator database with 12 rows, row i has Summary ``#i ...``."""
    db = tmp_path_factory.mktemp("rows") / "emulator.sqlite"
    with Emulator(db=str(db)) as emu:
        handle = add_sentinel_forwarder(
            endpoint=emu.endpoint, rule_id=emu.rule_id, credential="emulator", max_batch_size=1, environ={}
        )
        for i in range(12):
            entry = AuditEntry(
                f"#{i} {SUMMARIES[i % 3]}",
                severity=Severity.HIGH,
                detector_id="prompt-injection",
                session_id=f"session-{i:04d}",
            )
            handle.forward(entry)
            handle.flush(10)  # one request per row: arrival order is forward order
        assert handle.close().sent == 12
    yield db


def test_version_names_the_package_and_its_sdk() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"sentinel-forwarder {version('sentinel-forwarder')} (Python 3.")
    assert "azure-monitor-ingestion" in result.stdout


def test_python_dash_m_is_the_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: sentinel-forwarder [OPTIONS] COMMAND")
    for command in ("demo", "emulator", "rows"):
        assert command in result.stdout


def test_rows_fit_80_columns_with_the_default_columns(landed: Path) -> None:
    result = run_cli("rows", "--db", str(landed))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "TimeGenerated" in line)
    assert header.split() == ["TimeGenerated", "Severity", "DetectorId", "Summary"]
    assert "Hash" not in result.stdout and "_Seq" not in result.stdout
    # Every word of every summary is shown, wrapped, not cut.
    words = result.stdout.split()
    for summary in SUMMARIES:
        for word in summary.split():
            assert word in words


def test_rows_tail_count_and_columns(landed: Path) -> None:
    tail = run_cli("rows", "--db", str(landed), "--tail", "2", "--json")
    assert [json.loads(line)["Summary"][:3] for line in tail.stdout.splitlines()] == ["#10", "#11"]

    count = run_cli("rows", "--db", str(landed), "--count")
    assert count.stdout == "12\n"
    assert run_cli("rows", "--db", str(landed), "--count", "--tail", "5").stdout == "5\n"

    chosen = run_cli("rows", "--db", str(landed), "-c", "SessionId,Severity", "--head", "3", "--json")
    assert [json.loads(line) for line in chosen.stdout.splitlines()] == [
        {"SessionId": f"session-{i:04d}", "Severity": "High"} for i in range(3)
    ]
    table = run_cli("rows", "--db", str(landed), "--columns", "SessionId", "--tail", "1", "--meta")
    header = next(line for line in table.stdout.splitlines() if "SessionId" in line)
    assert header.split() == ["_Seq", "_IngestedAt", "_RuleId", "_Stream", "SessionId"]
    assert "(1 row)" in table.stdout

    everything = run_cli("rows", "--db", str(landed), "-c", "all", "--tail", "1", "--json")
    assert set(json.loads(everything.stdout)) >= {"Hash", "PreviousHash", "Id", "SessionId"}


def test_rows_refuses_unknown_columns_and_head_with_tail(landed: Path) -> None:
    unknown = run_cli("rows", "--db", str(landed), "-c", "Severity,Sevrity")
    assert unknown.returncode == 2
    assert "no column Sevrity" in unknown.stderr and "DetectorId" in unknown.stderr
    both = run_cli("rows", "--db", str(landed), "--head", "1", "--tail", "1")
    assert both.returncode == 2
    assert "not both" in both.stderr
