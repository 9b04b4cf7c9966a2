"""`sentinel-forwarder send`, run as a subprocess against the emulator; and its record conversion."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_helpers import run_cli

from sentinel_forwarder.cli.send import record_to_entry
from sentinel_forwarder.emulator import Emulator

#: A fixed time inside the service's window (Azure replaces a TimeGenerated older than 2 days).
RECENT = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
RECENT_TEXT = RECENT.strftime("%Y-%m-%dT%H:%M:%SZ")

ROWS = [
    {
        "Summary": "Prompt injection blocked",
        "Severity": "High",
        "DetectorId": "prompt-injection",
        "SessionId": "s-1",
    },
    {
        "Summary": "PII redacted",
        "Severity": "Medium",
        "DetectorId": "pii-leak",
        "TimeGenerated": RECENT_TEXT,
    },
    {"Summary": "Jailbreak", "Severity": 4, "Id": "fixed-id-3"},
]


def env_for(emu: Emulator, **more: str) -> dict[str, str]:
    return {
        "SENTINEL_FORWARDER_ENDPOINT": emu.endpoint,
        "SENTINEL_FORWARDER_RULE_ID": emu.rule_id,
        "SENTINEL_FORWARDER_CREDENTIAL": "emulator",
        **more,
    }


def jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_send_a_jsonl_file(emu: Emulator, tmp_path: Path) -> None:
    result = run_cli("send", str(jsonl(tmp_path / "audit.jsonl", list(ROWS))), env=env_for(emu))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"sent 3 of 3 rows to {emu.endpoint} ({emu.rule_id}, {emu.stream_name}) in "
    )
    landed = emu.rows(emu.table)
    assert [(r["Summary"], r["Severity"]) for r in landed] == [
        ("Prompt injection blocked", "High"),
        ("PII redacted", "Medium"),
        ("Jailbreak", "Critical"),
    ]
    assert landed[1]["TimeGenerated"] == RECENT.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert landed[2]["Id"] == "fixed-id-3"
    assert landed[0]["SessionId"] == "s-1"


def test_send_csv_and_stdin_with_a_mapping(emu: Emulator, tmp_path: Path) -> None:
    csv_file = tmp_path / "export.csv"
    csv_file.write_text("message,level,host\nlogin failed,High,web-1\nlogin ok,,web-2\n", encoding="utf-8")
    result = run_cli(
        "send", str(csv_file), "--map", "Summary=message", "--map", "Severity=level", "--unknown", "ignore",
        env=env_for(emu),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [(r["Summary"], r["Severity"]) for r in emu.rows(emu.table)] == [
        ("login failed", "High"),
        ("login ok", "None"),
    ]
    stdin = json.dumps({"msg": "from stdin", "context": {"session": "abc"}}) + "\n"
    piped = run_cli(
        "send", "--map", "Summary=msg", "--map", "SessionId=context.session", env=env_for(emu), stdin=stdin
    )
    assert piped.returncode == 0, piped.stderr
    assert emu.rows(emu.table)[-1]["SessionId"] == "abc"


def test_invalid_rows_are_dropped_by_line_and_the_exit_status_says_so(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps(ROWS[0]) + "\n"
        "not json\n"
        + json.dumps({"Severity": "Low"}) + "\n"
        + json.dumps({"Summary": "x", "Severity": "dire"}) + "\n"
        + json.dumps({"Summary": "naive", "TimeGenerated": "2024-05-01T12:00:00"}) + "\n"
        + json.dumps({"Summary": "y", "level": 3}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = run_cli("send", str(path), env=env_for(emu))
    assert result.returncode == 1
    assert "sent 1 of 6 rows" in result.stdout
    assert "dropped, invalid_row: 5" in result.stdout
    for line, why in [
        (2, "not JSON"),
        (3, "no Summary"),
        (4, "unknown severity"),
        (5, "no time zone"),
        (6, "--map"),
    ]:
        assert f"mixed.jsonl:{line}: " in result.stderr and why in result.stderr
    assert emu.count(emu.table) == 1


def test_rows_the_service_drops_are_counted_by_reason(emu: Emulator, tmp_path: Path) -> None:
    unknown_rule = "dcr-" + "f" * 32
    env = env_for(emu, SENTINEL_FORWARDER_RULE_ID=unknown_rule)
    result = run_cli("send", "--json", str(jsonl(tmp_path / "a.jsonl", list(ROWS))), env=env)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["sent"] == 0 and summary["dropped"] == {"not_found": 3}
    assert summary["service_error"]


def test_dry_run_validates_without_settings_or_sending(emu: Emulator, tmp_path: Path) -> None:
    good = jsonl(tmp_path / "good.jsonl", list(ROWS))
    result = run_cli("send", "--dry-run", str(good))  # no SENTINEL_FORWARDER_* at all
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dry run: 3 of 3 rows are valid; nothing was sent")
    bad = jsonl(tmp_path / "bad.jsonl", [*ROWS, {"Summary": 5}])
    refused = run_cli("send", "--dry-run", str(bad), env=env_for(emu))
    assert refused.returncode == 1
    assert "invalid: 1" in refused.stdout and "bad.jsonl:4: Summary must be a string" in refused.stderr
    extra = jsonl(tmp_path / "extra.jsonl", [{"Summary": "s", "TenantName": "contoso"}])
    assert run_cli("send", "--dry-run", str(extra)).returncode == 1
    assert run_cli("send", "--dry-run", "--unknown", "extra", str(extra)).returncode == 0
    assert emu.count(emu.table) == 0


def test_more_rows_than_the_buffer_holds_wait_instead_of_dropping(emu: Emulator, tmp_path: Path) -> None:
    rows = [{"Summary": f"row {i}"} for i in range(250)]
    env = env_for(emu, SENTINEL_FORWARDER_CAPACITY="20", SENTINEL_FORWARDER_MAX_BATCH_SIZE="7")
    result = run_cli("send", "--json", str(jsonl(tmp_path / "many.jsonl", list(rows))), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["sent"] == 250 == emu.count(emu.table)
    assert [r["Summary"] for r in emu.rows(emu.table)][:3] == ["row 0", "row 1", "row 2"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "SENTINEL_FORWARDER_ENDPOINT"),
        ({"SENTINEL_FORWARDER_MAX_INTERVAL": "5s"}, "write 5 instead of 5s"),
        ({"SENTINEL_FORWARDER_CREDENTIAL": "workload-identity"}, "AZURE_TENANT_ID"),
    ],
)
def test_configuration_errors_exit_2(
    emu: Emulator, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    full = env_for(emu, **env) if env else {}
    result = run_cli("send", str(jsonl(tmp_path / "a.jsonl", list(ROWS))), env=full)
    assert result.returncode == 2
    assert expected in result.stderr
    assert emu.count(emu.table) == 0


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("send", str(tmp_path / "missing.jsonl")).returncode == 2
    wrong = run_cli("send", "--dry-run", "--map", "Message=msg", str(jsonl(tmp_path / "a.jsonl", [])))
    assert wrong.returncode == 2 and "no column of AISentinelAudit_CL" in wrong.stderr


# -- record conversion ---------------------------------------------------------------------------------------


def test_record_to_entry_reads_the_columns() -> None:
    entry = record_to_entry(
        {"Summary": "s", "Severity": "high", "TimeGenerated": "2024-05-01T12:00:00+02:00", "Hash": "h"}
    )
    assert entry.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert entry.severity.label == "High" and entry.hash == "h"
    assert record_to_entry({"m": {"x": "deep"}}, mapping={"Summary": "m.x"}).summary == "deep"
    assert record_to_entry({"Summary": "s", "Tenant": "t"}, unknown="extra").extra == {"Tenant": "t"}


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"Summary": "s", "Id": 5}, "Id must be a string"),
        ({"Summary": "s", "TimeGenerated": "yesterday"}, "not an ISO 8601 time"),
        ({"Summary": "s", "TimeGenerated": 1714564800}, "must be an ISO 8601 string"),
        ({"Summary": "x" * 1_000_001}, "one request holds at most"),
        ({"Summary": "s", "Tenant": "t"}, "--unknown extra"),
        ({"Summary": "s", "id": "t"}, "no column"),
    ],
)
def test_record_to_entry_refuses(record: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        record_to_entry(record)


def test_progress_on_stderr_only_when_asked_or_on_a_terminal(emu: Emulator, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "a.jsonl", list(ROWS))
    shown = run_cli("send", "--progress", str(path), env=env_for(emu))
    assert shown.returncode == 0, shown.stderr
    assert "3 rows read, 3 sent, 0 dropped" in shown.stderr
    assert shown.stdout.startswith("sent 3 of 3 rows")  # stdout keeps only the summary
    quiet = run_cli("send", str(path), env=env_for(emu))  # stderr is a pipe here, not a terminal
    assert quiet.returncode == 0 and "rows read" not in quiet.stderr
