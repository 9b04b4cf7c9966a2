"""``sentinel-forwarder verify`` over an emulator database, a JSON-lines export and a query's JSON array."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from azure_helpers import sink_for
from cli_helpers import run_cli

from sentinel_forwarder import AuditEntry, BufferingForwarder, Severity
from sentinel_forwarder.emulator import Emulator

KEY = "a key the application holds"


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An emulator database with 20 keyed, chained rows and the forwarder's final heartbeat."""
    db = tmp_path_factory.mktemp("verify") / "emulator.sqlite"

    async def forward(emu: Emulator) -> None:
        fwd = BufferingForwarder(sink_for(emu), chain_key=KEY, max_interval=0.01, heartbeat_interval=3600)
        async with fwd:
            for i in range(20):
                fwd.forward(AuditEntry(f"event {i}", severity=Severity.HIGH, session_id=f"s-{i % 3}"))

    with Emulator(db=str(db)) as emu:
        anyio.run(forward, emu)
    yield db


def export(db: Path) -> list[dict[str, object]]:
    out = run_cli("rows", "--db", str(db), "-c", "all", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_an_intact_database_verifies_with_the_key(landed: Path) -> None:
    ok = run_cli("verify", "--db", str(landed), "--from-start", env={"SENTINEL_FORWARDER_CHAIN_KEY": KEY})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "20 rows in 1 chain(s): intact" in ok.stdout and "HMAC-SHA256" in ok.stdout
    assert KEY not in ok.stdout + ok.stderr
    unkeyed = run_cli("verify", "--db", str(landed))
    assert unkeyed.returncode == 1 and "were they linked with a key?" in unkeyed.stdout


def test_a_tampered_export_shows_every_problem(landed: Path, tmp_path: Path) -> None:
    rows = export(landed)
    audit = sorted((r for r in rows if not r.get("Heartbeat")), key=lambda r: int(str(r["Sequence"])))
    audit[4]["Summary"] = "nothing to see"
    removed = {audit[9]["Id"], audit[19]["Id"]}  # one in the middle, the last one
    kept = [r for r in rows if r.get("Id") not in removed]
    lines = tmp_path / "export.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in reversed(kept)), encoding="utf-8")
    env = {"SENTINEL_FORWARDER_CHAIN_KEY": KEY}
    broken = run_cli("verify", str(lines), "--json", env=env)
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert [(b["kind"], b["sequence"]) for b in report["breaks"]] == [("hash", 5), ("gap", 10), ("gap", 20)]
    # the same rows as a query returns them, a JSON array on standard input
    array = run_cli("verify", "-", stdin=json.dumps(kept), env=env)
    assert array.returncode == 1 and "3 problem(s)" in array.stdout
    assert run_cli("verify").returncode == 2
