"""The shipped analytics rules and hunting queries, run locally over rows sent through the real SDK: each rule
fires on the condition it is written for and stays quiet on clean traffic; user rules, operators, simulated
scheduled runs, and ``sentinel-forwarder rules test``.

The rules are the YAML under sentinel_forwarder/templates/sentinel/ (what deploys); their semantics
(queryPeriod limits the data, the trigger compares the number of result rows) are Sentinel's scheduled-rule
model (Learn: "Create a scheduled analytics rule"; the Azure-Sentinel repository's YAML schema).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import SOURCE_ROOT
from emulator_helpers import sync_client, upload_kwargs

from sentinel_forwarder import AuditEntry, HashChain, Severity
from sentinel_forwarder.emulator import Emulator, EmulatorCredential, RuleReport, load_rules, shipped_rules

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="duckdb-kql (KQL queries, the rule runner) needs Python 3.11+"
)

NOW = datetime.now(timezone.utc)
ATTACKER = "session-attacker-1"


@pytest.fixture(scope="module")
def rules_emu() -> Iterator[Emulator]:
    with Emulator(strict=True) as emu:
        yield emu


@pytest.fixture
def emu(rules_emu: Emulator) -> Iterator[Emulator]:
    rules_emu.reset()
    yield rules_emu
    rules_emu.reset()


def clean_traffic(minutes: int = 90) -> list[AuditEntry]:
    """An application's ordinary audit trail: one record a minute for *minutes* up to now, one hash chain,
    Low and Medium findings of detectors no rule singles out."""
    detectors = ("toxicity", "prompt-injection", "jailbreak")
    return [
        AuditEntry(
            "ordinary finding",
            severity=Severity.LOW if i % 3 else Severity.MEDIUM,
            detector_id=detectors[i % 3],
            session_id=f"session-{i % 7}",
            timestamp=NOW - timedelta(minutes=minutes - i),
        )
        for i in range(minutes)
    ]


def send(emu: Emulator, entries: list[AuditEntry], *, chain: bool = True) -> list[dict[str, Any]]:
    linker = HashChain()
    rows = [(linker.link(e) if chain else e).to_row() for e in entries]
    with sync_client(emu) as client:
        client.upload(emu.rule_id, emu.stream_name, rows, **upload_kwargs(emu))
    return rows


def fired(reports: list[RuleReport]) -> set[str]:
    return {Path(r.rule.source).stem for r in reports if r.fired and r.rule.kind == "analytics"}


def attack(
    n: int, severity: Severity = Severity.HIGH, detector: str = "prompt-injection"
) -> list[AuditEntry]:
    return [
        AuditEntry(
            f"attempt {i}",
            severity=severity,
            detector_id=detector,
            session_id=ATTACKER,
            timestamp=NOW - timedelta(minutes=2, seconds=-i),
        )
        for i in range(n)
    ]


def test_every_shipped_rule_runs_and_clean_traffic_fires_none(emu: Emulator) -> None:
    send(emu, clean_traffic())
    reports = emu.run_rules(now=NOW)
    assert [r.error for r in reports] == [None] * len(shipped_rules()) == [None] * 11
    assert fired(reports) == set()
    hunting = {Path(r.rule.source).stem: r for r in reports if r.rule.kind == "hunting"}
    assert set(hunting) == {"SessionsByRisk", "SeverityTrend", "TopDetectors"}
    assert all(r.fired and r.alerts for r in hunting.values())


def test_burst_rule_fires_on_the_attacking_session_with_its_entities(emu: Emulator) -> None:
    send(emu, clean_traffic() + attack(5))
    reports = emu.run_rules(now=NOW)
    assert fired(reports) == {"HighSeverityBurstInSession"}
    (burst,) = [r for r in reports if r.fired and r.rule.kind == "analytics"]
    (alert,) = burst.alerts
    assert alert.custom_details["SessionId"] == ATTACKER and alert.custom_details["Events"] == 5
    assert burst.entities() == [{"entityType": "CloudApplication", "Name": "AISentinelAudit_CL"}]
    # Four are not a burst (threshold 5).
    emu.reset()
    send(emu, clean_traffic() + attack(4))
    assert fired(emu.run_rules(now=NOW)) == set()


@pytest.mark.parametrize(
    ("detector", "rule"),
    [("credential-exposure", "CredentialExposureDetected"), ("pii-leak", "PiiLeakageDetected")],
)
def test_detector_rules_fire_on_their_detector(emu: Emulator, detector: str, rule: str) -> None:
    send(emu, clean_traffic() + attack(1, Severity.MEDIUM, detector))
    reports = emu.run_rules(now=NOW)
    assert fired(reports) == {rule}
    (report,) = [r for r in reports if r.fired and r.rule.kind == "analytics"]
    assert [a.custom_details["SessionId"] for a in report.alerts] == [ATTACKER]


def test_critical_spike_fires_above_the_baseline(emu: Emulator) -> None:
    send(emu, clean_traffic() + attack(6, Severity.CRITICAL, "data-exfiltration"))
    reports = emu.run_rules(now=NOW)
    # Six Critical records in five minutes are also a burst.
    assert fired(reports) == {"CriticalSpike", "HighSeverityBurstInSession"}
    (spike,) = [r for r in reports if Path(r.rule.source).stem == "CriticalSpike"]
    assert spike.alerts[0].custom_details["CriticalEvents"] == 6


def test_hash_chain_rule_fires_on_a_missing_record_and_a_fork(emu: Emulator) -> None:
    linker = HashChain()
    rows = [linker.link(e).to_row() for e in clean_traffic()]
    del rows[45]  # 45 minutes old: inside the rule's 15-75 minute reporting window
    with sync_client(emu) as client:
        client.upload(emu.rule_id, emu.stream_name, rows, **upload_kwargs(emu))
    reports = emu.run_rules(now=NOW)
    # the chain's sequence numbers show the same loss (tests/test_evidence_rules.py)
    assert fired(reports) == {"BrokenHashChain", "AuditSequenceGap"}
    (chain,) = [r for r in reports if r.fired and Path(r.rule.source).stem == "BrokenHashChain"]
    assert [a.custom_details["Problem"] for a in chain.alerts] == ["predecessor missing"]
    assert chain.alerts[0].custom_details["RecordId"] == rows[45]["Id"]

    emu.reset()
    rows = send(emu, clean_traffic())
    forged = dict(rows[40], Id="forged-record", Hash="f" * 64)  # a second successor of rows[39]
    with sync_client(emu) as client:
        client.upload(emu.rule_id, emu.stream_name, [forged], **upload_kwargs(emu))
    chain_report = next(r for r in emu.run_rules(now=NOW) if Path(r.rule.source).stem == "BrokenHashChain")
    assert [a.custom_details["Problem"] for a in chain_report.alerts] == ["chain forked"]


def test_scheduled_runs_since_find_an_older_burst(emu: Emulator) -> None:
    old = [
        AuditEntry("old", severity=Severity.HIGH, session_id=ATTACKER, timestamp=NOW - timedelta(minutes=42))
        for _ in range(5)
    ]
    send(emu, clean_traffic() + old, chain=False)
    burst = [r for r in shipped_rules() if Path(r.source).stem == "HighSeverityBurstInSession"]
    (now_only,) = emu.run_rules(burst, now=NOW)
    assert not now_only.fired and now_only.runs == 1
    (report,) = emu.run_rules(burst, now=NOW, since=NOW - timedelta(hours=1))
    assert report.fired and report.runs == 13 and report.runs_fired == 1
    (alert,) = report.alerts
    assert NOW - timedelta(minutes=42) <= alert.at <= NOW - timedelta(minutes=37)


def write_rule(tmp_path: Path, name: str, **fields: Any) -> Path:
    rule = {
        "name": name,
        "query": "AISentinelAudit_CL | where Severity == 'High'",
        "queryFrequency": "5m",
        "queryPeriod": "1h",
        "triggerOperator": "gt",
        "triggerThreshold": 0,
        "entityMappings": [
            {"entityType": "Account", "fieldMappings": [{"identifier": "Name", "columnName": "SessionId"}]}
        ],
        **fields,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(rule))  # JSON is YAML
    return path


@pytest.mark.parametrize(
    ("operator", "threshold", "fires"),
    [("gt", 1, True), ("gt", 2, False), ("lt", 3, True), ("lt", 2, False), ("eq", 2, True), ("ne", 2, False)],
)
def test_user_rule_trigger_operators(
    emu: Emulator, tmp_path: Path, operator: str, threshold: int, fires: bool
) -> None:
    send(emu, attack(2))
    path = write_rule(tmp_path, "Mine", triggerOperator=operator, triggerThreshold=threshold)
    (report,) = emu.run_rules(load_rules([path]), now=NOW)
    assert report.fired is fires
    if fires:
        assert report.entities() == [{"entityType": "Account", "Name": ATTACKER}]


def test_query_period_limits_the_rows(emu: Emulator, tmp_path: Path) -> None:
    send(emu, [AuditEntry("x", severity=Severity.HIGH, timestamp=NOW - timedelta(minutes=30))])
    recent = write_rule(tmp_path, "Recent", query="AISentinelAudit_CL", queryPeriod="10m")
    wide = write_rule(tmp_path, "Wide", query="AISentinelAudit_CL", queryPeriod="1h")
    assert [r.fired for r in emu.run_rules(load_rules([recent, wide]), now=NOW)] == [False, True]


def test_a_rule_duckdb_cannot_run_reports_the_construct(emu: Emulator, tmp_path: Path) -> None:
    path = write_rule(tmp_path, "Plugin", query="AISentinelAudit_CL | evaluate bag_unpack(Summary)")
    (report,) = emu.run_rules(load_rules([path]), now=NOW)
    assert not report.fired and report.error is not None and "EvaluateOperator" in report.error


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel_forwarder", "rules", "test", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(SOURCE_ROOT), "COLUMNS": "160", "PATH": "", "PYTHONIOENCODING": "utf-8"},
    )


def test_cli_over_a_database_file(tmp_path: Path) -> None:
    db = tmp_path / "emulator.sqlite"
    with Emulator(db=db, strict=True) as emu:
        send(emu, clean_traffic() + attack(5))
    at = NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ok = cli("--db", str(db), "--at", at, "--expect-fire", "burst", "--expect-quiet", "PiiLeakageDetected")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "FIRES" in ok.stdout and ATTACKER in ok.stdout
    unmet = cli("--db", str(db), "--at", at, "--expect-quiet", "all")
    assert unmet.returncode == 1
    assert "expected to stay quiet, but fired: AI audit - burst of High or Critical" in unmet.stderr
    as_json = cli("--db", str(db), "--at", at, "--json")
    reports = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(reports) == 11 and {r["rule"] for r in reports if r["fired"] and r["kind"] == "analytics"} == {
        "AI audit - burst of High or Critical events in one session"
    }
    later = cli("--db", str(db), "--at", at, "--since", "1h", "--expect-fire", "ForwarderSilent")
    assert later.returncode == 1 and "expected to fire, but quiet: ForwarderSilent" in later.stderr
    assert cli("--db", str(db), "--expect-fire", "no such rule").returncode == 2


def test_cli_through_the_query_api_over_https(tmp_path: Path) -> None:
    with Emulator(tls=True, strict=True, tokens=["ci-token"]) as emu:
        with sync_client(emu, credential=EmulatorCredential("ci-token")) as client:
            client.upload(emu.rule_id, emu.stream_name, [e.to_row() for e in attack(5)])
        rule = write_rule(tmp_path, "HighRecords")
        url = ("--url", emu.endpoint, "--ca", str(emu.ca_path))
        done = cli(*url, "--token", "ci-token", str(rule), "--expect-fire", "HighRecords")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Account(Name=" in done.stdout
        refused = cli(*url, "--at", "2026-01-01T00:00:00Z")
        assert refused.returncode == 2 and "--at and --since need --db" in refused.stderr
        wrong_token = cli(*url, str(rule))
        assert wrong_token.returncode == 1 and "InvalidAuthenticationToken" in wrong_token.stderr
