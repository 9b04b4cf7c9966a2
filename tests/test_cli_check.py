"""`sentinel-forwarder check` as a subprocess against the emulator: each failure class, and success."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from cli_helpers import run_cli

from sentinel_forwarder._check.run import EXIT_CODES, PROBE_DETECTOR, role_assignment_command, run_check
from sentinel_forwarder._config.settings import ForwarderSettings
from sentinel_forwarder.emulator import Emulator
from sentinel_forwarder.emulator._identity import unsigned_jwt
from sentinel_forwarder.testing import EmulatorCredential

OBJECT_ID = "11111111-2222-3333-4444-555555555555"
#: Far in the future, so the token never expires during a test.
EXP = 4_102_444_800


def jwt(**claims: Any) -> str:
    return unsigned_jwt({"aud": "https://monitor.azure.com", "tid": "t-1", "exp": EXP, **claims})


@pytest.fixture
def emu(tls_emulator: Emulator) -> Iterator[Emulator]:
    tls_emulator.reset()
    yield tls_emulator
    tls_emulator.reset()


def env_for(emu: Emulator, **more: str) -> dict[str, str]:
    return {
        "SENTINEL_FORWARDER_ENDPOINT": emu.endpoint,
        "SENTINEL_FORWARDER_RULE_ID": emu.rule_id,
        "SENTINEL_FORWARDER_CREDENTIAL": "emulator",
        "SENTINEL_FORWARDER_CONNECTION_VERIFY": str(emu.ca_path),
        **more,
    }


def check_json(*args: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = run_cli("check", "--json", "--timeout", "30", *args, env=env)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def failed_step(report: dict[str, Any]) -> dict[str, Any]:
    failed = [s for s in report["steps"] if not s["ok"]]
    assert len(failed) == 1 and failed[0] is report["steps"][-1], report
    return failed[0]


def test_every_step_passes_and_nothing_is_written(emu: Emulator) -> None:
    result = run_cli("check", "--timeout", "30", env=env_for(emu))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"checking {emu.endpoint} ({emu.rule_id}, {emu.stream_name})"
    marks = [line.split()[:2] for line in lines if line[:4] in ("ok  ", "FAIL", "warn")]
    assert marks == [["ok", n] for n in ("endpoint", "DNS", "TCP", "TLS", "token", "ingestion")]
    assert lines[-1] == "all checks passed: the forwarder can deliver with these settings"
    assert emu.count(emu.table) == 0
    assert emu.stats().by_status == {204: 1}  # the probe: one request, answered 2xx, nothing stored


def test_json_report_and_the_probe_row(emu: Emulator) -> None:
    token = jwt(oid=OBJECT_ID, idtyp="app")
    code, report = check_json("--probe-row", env=env_for(emu, SENTINEL_FORWARDER_EMULATOR_TOKEN=token))
    assert code == 0 and report["ok"] and report["failure"] is None, report
    assert [s["name"] for s in report["steps"]] == [
        "endpoint", "dns", "tcp", "tls", "token", "probe", "probe_row",
    ]  # fmt: skip
    claims = report["steps"][4]["data"]["claims"]
    assert claims["oid"] == OBJECT_ID and claims["aud"] == "https://monitor.azure.com"
    assert token not in json.dumps(report)  # the token itself is never shown
    landed = emu.rows(emu.table)
    assert len(landed) == 1 and landed[0]["DetectorId"] == PROBE_DETECTOR
    assert landed[0]["Id"] == report["steps"][-1]["data"]["id"]


def test_configuration_error(emu: Emulator) -> None:
    env = env_for(emu)
    del env["SENTINEL_FORWARDER_ENDPOINT"]
    code, report = check_json(env=env)
    assert code == EXIT_CODES["configuration"] == 2
    assert "SENTINEL_FORWARDER_ENDPOINT" in failed_step(report)["detail"]


@pytest.mark.parametrize(
    ("endpoint", "said"),
    [
        ("https://myworkspace.ods.opinsights.azure.com", "retired HTTP Data Collector API"),
        ("https://my-dce-a1b2.usgovvirginia-1.ingest.monitor.azure.us", "SENTINEL_FORWARDER_CLOUD=usgov"),
    ],
)
def test_endpoint_of_another_kind_or_cloud(emu: Emulator, endpoint: str, said: str) -> None:
    code, report = check_json("--endpoint", endpoint, env=env_for(emu))
    assert code == EXIT_CODES["endpoint"]
    step = failed_step(report)
    assert step["name"] == "endpoint" and said in step["detail"] + step["hint"]


def test_unresolvable_host(emu: Emulator) -> None:
    code, report = check_json("--endpoint", "https://no-such-host.invalid", env=env_for(emu))
    assert code == EXIT_CODES["dns"], report
    assert failed_step(report)["detail"].startswith("no-such-host.invalid does not resolve")


def test_connection_refused(emu: Emulator) -> None:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, report = check_json("--endpoint", f"https://127.0.0.1:{port}", env=env_for(emu))
    assert code == EXIT_CODES["tcp"], report
    assert failed_step(report)["detail"] == f"connection refused to 127.0.0.1:{port}"


def test_certificate_not_trusted(emu: Emulator) -> None:
    code, report = check_json("--connection-verify", "true", env=env_for(emu))
    assert code == EXIT_CODES["tls"], report
    step = failed_step(report)
    assert step["detail"].startswith("certificate verify failed for 127.0.0.1")
    assert "SENTINEL_FORWARDER_CONNECTION_VERIFY" in step["hint"]


def test_no_token(emu: Emulator) -> None:
    env = env_for(emu, SENTINEL_FORWARDER_CREDENTIAL="azure-cli", PATH="/nonexistent")  # no az on PATH
    code, report = check_json(env=env)
    assert code == EXIT_CODES["token"], report
    assert failed_step(report)["detail"].startswith("AzureCliCredential got no token")


def test_token_of_another_audience(emu: Emulator) -> None:
    token = jwt(aud="https://management.azure.com", oid=OBJECT_ID)
    code, report = check_json(env=env_for(emu, SENTINEL_FORWARDER_EMULATOR_TOKEN=token))
    assert code == EXIT_CODES["unauthorized"], report
    step = failed_step(report)
    assert step["name"] == "token" and "401 InvalidAudience" in step["detail"]


def test_token_refused_by_the_service() -> None:
    with Emulator(tls=True, tokens=["the-only-token"]) as emu:
        code, report = check_json(env=env_for(emu))
    assert code == EXIT_CODES["unauthorized"], report
    step = failed_step(report)
    assert step["name"] == "probe" and step["data"]["status"] == 401


def test_forbidden_prints_the_role_assignment_then_passes_once_assigned(emu: Emulator) -> None:
    emu.roles.assign("someone-else", emu.rule_id)
    env = env_for(emu, SENTINEL_FORWARDER_EMULATOR_TOKEN=jwt(oid=OBJECT_ID, idtyp="app"))
    result = run_cli("check", "--timeout", "30", env=env)
    assert result.returncode == EXIT_CODES["forbidden"] == 9, result.stdout + result.stderr
    command = role_assignment_command(OBJECT_ID, emu.rule_id, "app")
    assert f"\n               {command}\n" in result.stdout  # whole, on its own line, to copy
    assert result.stdout.endswith("check failed: forbidden (exit status 9)\n")
    emu.roles.assign(OBJECT_ID, emu.rule_id)
    assert run_cli("check", "--timeout", "30", env=env).returncode == 0


def test_role_assignment_command() -> None:
    command = role_assignment_command(OBJECT_ID, "dcr-" + "a" * 32, "user")
    assert command == (
        f"az role assignment create --assignee-object-id {OBJECT_ID} --assignee-principal-type User "
        '--role "Monitoring Metrics Publisher" --scope "$(az monitor data-collection rule list --query '
        f'"[?immutableId==\'dcr-{"a" * 32}\'].id" -o tsv)"'
    )
    assert "--assignee-object-id <object id>" in role_assignment_command(None, "dcr-x")


@pytest.mark.parametrize("what", ["rule", "stream"])
def test_not_found(emu: Emulator, what: str) -> None:
    args = ("--rule-id", "dcr-" + "f" * 32) if what == "rule" else ("--stream-name", "Custom-Nope_CL")
    code, report = check_json(*args, env=env_for(emu))
    assert code == EXIT_CODES["not_found"], report
    assert failed_step(report)["data"]["status"] == 404


def test_other_answers(emu: Emulator) -> None:
    emu.faults.fail_next(1, 503)
    code, report = check_json(env=env_for(emu))
    assert code == EXIT_CODES["service"], report
    assert failed_step(report)["data"]["status"] == 503


def test_from_python_with_a_credential_object(emu: Emulator) -> None:
    settings = ForwarderSettings.resolve(
        {}, endpoint=emu.endpoint, rule_id=emu.rule_id, connection_verify=str(emu.ca_path)
    )
    started: list[str] = []
    report = run_check(settings, credential=EmulatorCredential(), on_start=started.append)
    assert report.ok and report.exit_code == 0
    assert started == ["endpoint", "dns", "tcp", "tls", "token", "probe"]


def test_exit_codes_are_distinct() -> None:
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert 0 not in EXIT_CODES.values() and 1 not in EXIT_CODES.values()


_NEEDS_KQL = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="duckdb-kql (KQL queries, the rule runner) needs Python 3.11+"
)


# -- --workspace-id: the Logs Query API ---------------------------------------------------------------------


@_NEEDS_KQL
def test_workspace_id_waits_until_the_probe_row_is_queryable(emu: Emulator) -> None:
    code, report = check_json("--workspace-id", emu.workspace_id, env=env_for(emu))
    assert code == 0, report
    row, query = report["steps"][-2:]
    assert (row["name"], query["name"]) == ("probe_row", "query")
    assert query["data"]["latency"] >= 0 and query["data"]["polls"] == 1
    assert row["data"]["id"] in query["data"]["query"]


@_NEEDS_KQL
def test_workspace_not_found(emu: Emulator) -> None:
    code, report = check_json("--workspace-id", "11111111-1111-1111-1111-111111111111", env=env_for(emu))
    assert code == EXIT_CODES["query"] == 12
    step = failed_step(report)
    assert step["data"]["status"] == 404 and "customerId" in step["hint"]


@_NEEDS_KQL
def test_probe_row_not_queryable_in_time(emu: Emulator) -> None:
    """Through the real LogsQueryClient: a row that never lands is reported after the wait."""
    from sentinel_forwarder._check.query import query_step
    from sentinel_forwarder._check.run import Stop

    settings = ForwarderSettings.resolve(
        {}, endpoint=emu.endpoint, rule_id=emu.rule_id, connection_verify=str(emu.ca_path)
    )
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # a fake clock: the test never waits
        slept.append(seconds)
        now[0] += seconds

    with pytest.raises(Stop) as stopped:
        query_step(
            settings, EmulatorCredential(), "never-sent", 0.0, workspace_id=emu.workspace_id,
            query_endpoint=None, wait=12.0, timeout=30.0, on_start=lambda _: None,
            clock=lambda: now[0], sleep=sleep,
        )  # fmt: skip
    step = stopped.value.step
    assert step.failure == "query" and "not queryable" in step.detail
    assert slept == [1.0, 2.0, 3.0, 5.0, 1.0] and step.data["polls"] == 6


def test_the_credential_of_a_chain_that_answered(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import AzureCliCredential, ChainedTokenCredential

    monkeypatch.setenv("PATH", "/nonexistent")  # no az: the CLI credential is unavailable, the next answers
    settings = ForwarderSettings.resolve(
        {}, endpoint=emu.endpoint, rule_id=emu.rule_id, connection_verify=str(emu.ca_path)
    )
    chain = ChainedTokenCredential(AzureCliCredential(), EmulatorCredential())
    report = run_check(settings, credential=chain)
    assert report.ok
    token = next(s for s in report.steps if s.name == "token")
    assert token.data["credential"] == "ChainedTokenCredential (EmulatorCredential)"


def test_progress_goes_to_stderr(emu: Emulator) -> None:
    plain = run_cli("check", "--no-progress", env=env_for(emu))
    shown = run_cli("check", "--progress", env=env_for(emu))
    assert plain.returncode == shown.returncode == 0
    assert plain.stderr == "" and "checking token..." in shown.stderr
    assert shown.stdout == plain.stdout  # the report itself is the same
