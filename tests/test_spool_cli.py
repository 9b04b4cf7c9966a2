"""``sentinel-forwarder spool``: the operator's commands, run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import anyio
import pytest
from cli_helpers import SOURCE_ROOT

from sentinel_forwarder import AuditEntry, BufferingForwarder, SendResult
from sentinel_forwarder._model.protocol import RowOutcome
from sentinel_forwarder.testing import RecordingForwarder


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel_forwarder.cli", "spool", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(SOURCE_ROOT), "COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )


def refuse_poison(batch: Sequence[AuditEntry]) -> SendResult:
    fates: list[RowOutcome] = ["rejected" if e.summary == "poison" else "retries_exhausted" for e in batch]
    n = fates.count("rejected")
    return SendResult(
        0,
        MappingProxyType({"rejected": n, "retries_exhausted": len(batch) - n}),
        "HTTP 400 (InvalidArgument) Score is not an int",
        outcomes=tuple(fates),
    )


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A spool left by a forwarder whose service was down: 9 rows waiting, 1 dead letter."""

    async def fill() -> None:
        sink = RecordingForwarder(outcome=refuse_poison)
        async with BufferingForwarder(sink, spool=tmp_path, max_interval=0.01) as fwd:
            for i in range(9):
                fwd.forward(AuditEntry(f"r{i}"))
            fwd.forward(AuditEntry("poison", id="poison-id"))
            await sink.wait_for_rows(10)

    anyio.run(fill)
    return tmp_path


def test_status_shows_rows_waiting_and_dead_letters(spool_dir: Path) -> None:
    out = cli("status", str(spool_dir))
    assert out.returncode == 0, out.stderr
    assert ("gone" in out.stdout and "│    9 │" in out.stdout.replace("  ", " ")) or " 9 " in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    [entry] = json.loads(cli("status", "--json", str(spool_dir)).stdout)
    assert entry["rows"] == 9 and entry["dead_letters"] == 1 and entry["owner_alive"] is False


def test_dead_letters_replay_and_purge(spool_dir: Path) -> None:
    [letter] = json.loads(cli("dead-letters", "--json", str(spool_dir)).stdout)
    assert letter["reason"] == "rejected" and "Score is not an int" in letter["error"]
    assert "poison-id" in cli("dead-letters", str(spool_dir)).stdout
    assert "1 dead letters queued" in cli("replay", str(spool_dir)).stdout
    statuses = json.loads(cli("status", "--json", str(spool_dir)).stdout)
    assert sum(s["rows"] for s in statuses) == 10 and sum(s["dead_letters"] for s in statuses) == 0
    assert "10 rows deleted" in cli("purge", "--all", "--yes", str(spool_dir)).stdout
    assert sum(s["rows"] for s in json.loads(cli("status", "--json", str(spool_dir)).stdout)) == 0


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    out = cli("status", str(tmp_path / "nope"))
    assert out.returncode != 0 and "does not exist" in out.stderr


def test_losses_prints_what_azure_would_silently_drop_and_strict_refuses_it(tmp_path: Path) -> None:
    """`losses --db` reports an undeclared column; `Emulator(strict=True)` (emulator --strict) answers 400."""
    from datetime import datetime, timezone

    from azure.core.exceptions import HttpResponseError
    from azure.monitor.ingestion import LogsIngestionClient

    from sentinel_forwarder.emulator import Emulator
    from sentinel_forwarder.testing import EmulatorCredential

    db = tmp_path / "emulator.sqlite"
    row = {"TimeGenerated": datetime.now(timezone.utc).isoformat(), "Id": "a1", "Summary": "x", "Tenant": "c"}
    for strict in (False, True):
        with Emulator(db=str(db), strict=strict) as emu:
            client = LogsIngestionClient(emu.endpoint, EmulatorCredential())
            if strict:
                with pytest.raises(HttpResponseError, match="Tenant"):
                    client.upload(emu.rule_id, emu.stream_name, [row], enforce_https=False)
            else:
                client.upload(emu.rule_id, emu.stream_name, [row], enforce_https=False)
            client.close()
    out = subprocess.run(
        [sys.executable, "-m", "sentinel_forwarder.cli", "losses", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
    )
    assert out.returncode == 1 and "1 silent loss" in out.stdout and "'Tenant'" in out.stdout, out
