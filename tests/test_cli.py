"""`python -m sentinel_forwarder`: --version, rows at 80 columns and template, run as subprocesses."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from cli_helpers import SOURCE_ROOT, run_cli

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
            endpoint=emu.endpoint,
            rule_id=emu.rule_id,
            credential="emulator",
            max_batch_size=1,
            environ={},
            heartbeat_interval=0,
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


# -- template ------------------------------------------------------------------------------------------------

TEMPLATES = SOURCE_ROOT / "sentinel_forwarder" / "templates"


def _shipped() -> list[str]:
    return sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*") if p.is_file())


def test_template_writes_every_file_into_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "dcr_templates"
    result = run_cli("template", "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == _shipped()
    assert {"azuredeploy.json", "azuredeploy-direct.json", "sentinel/analytics-rules.json"} <= set(written)
    for name in written:
        assert (out / name).read_bytes() == (TEMPLATES / name).read_bytes()
    assert f"wrote {len(written)} file(s)" in result.stderr
    assert "az deployment group create" in result.stderr


def test_template_keeps_a_changed_file_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "azuredeploy.json"
    target.write_text("{}")
    refused = run_cli("template", "azuredeploy.json", "--out", str(tmp_path))
    assert refused.returncode == 1
    assert "--force" in refused.stderr and target.read_text() == "{}"
    same = run_cli("template", "sentinel/workbook.json", "--out", str(tmp_path))
    assert (
        same.returncode == 0
        and run_cli("template", "sentinel/workbook.json", "-o", str(tmp_path)).returncode == 0
    )
    forced = run_cli("template", "azuredeploy.json", "--out", str(tmp_path), "--force")
    assert forced.returncode == 0
    assert target.read_bytes() == (TEMPLATES / "azuredeploy.json").read_bytes()


def test_template_prints_one_file_to_stdout() -> None:
    result = run_cli("template", "azuredeploy.json")
    assert result.returncode == 0, result.stderr
    template = json.loads(result.stdout)
    assert set(template["outputs"]) == {"endpoint", "ruleId", "streamName"}
    assert result.stdout.encode() == (TEMPLATES / "azuredeploy.json").read_bytes()


def test_template_lists_and_suggests_names() -> None:
    listed = run_cli("template", "--list")
    assert listed.stdout.split() == sorted(listed.stdout.split(), key=lambda n: (n.count("/"), n))
    assert sorted(listed.stdout.split()) == _shipped()
    wrong = run_cli("template", "azuredeploy")
    assert wrong.returncode == 2
    assert "did you mean azuredeploy.json?" in wrong.stderr
    two = run_cli("template", "azuredeploy.json", "azuredeploy-direct.json")
    assert two.returncode == 2 and "--out" in two.stderr


def test_the_wheel_ships_every_template() -> None:
    """Each file under templates/ matches a package-data pattern of pyproject.toml, so the wheel has it."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((SOURCE_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["sentinel_forwarder"]
    for name in _shipped():
        assert any(fnmatch.fnmatchcase(f"templates/{name}", p) for p in patterns), name


def test_the_docs_deploy_from_the_written_folder() -> None:
    """deploy.md writes the templates with the command; every dcr_templates/ path in the docs is shipped."""
    deploy = (SOURCE_ROOT / "docs/deploy.md").read_text(encoding="utf-8")
    assert "sentinel-forwarder template --out dcr_templates" in deploy.split("\n## ", 1)[0]
    shipped = set(_shipped())
    for doc in [SOURCE_ROOT / "README.md", *sorted((SOURCE_ROOT / "docs").glob("*.md"))]:
        for path in re.findall(r"dcr_templates/([\w./$-]+\.(?:json|yaml))", doc.read_text(encoding="utf-8")):
            if "$" not in path:
                assert path in shipped, (doc.name, path)


def test_rows_says_when_a_file_is_no_database(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a database " * 100)
    result = run_cli("rows", "--db", str(bogus))
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_docs_show_every_command() -> None:
    from sentinel_forwarder.cli import main

    doc = (SOURCE_ROOT / "docs/cli.md").read_text(encoding="utf-8")
    for name in [*main.commands, "--version"]:
        assert f"\n## `{name}`\n" in doc, name
        assert f"$ sentinel-forwarder {name}" in doc, name
