"""Configuration errors name the setting, its variable and a valid value; credentials chosen by name."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

import sentinel_forwarder
from sentinel_forwarder import AuditEntry, ConfigurationError, ForwarderSettings, add_sentinel_forwarder
from sentinel_forwarder._config.credentials import make_credential
from sentinel_forwarder.emulator import Emulator
from sentinel_forwarder.testing import EmulatorCredential

RULE_ID = "dcr-0123456789abcdef0123456789abcdef"
BASE = {"SENTINEL_FORWARDER_ENDPOINT": "https://dce.example.com", "SENTINEL_FORWARDER_RULE_ID": RULE_ID}


def resolve(**env: str) -> ForwarderSettings:
    return ForwarderSettings.resolve(BASE | {f"SENTINEL_FORWARDER_{k.upper()}": v for k, v in env.items()})


# -- ConfigurationError --------------------------------------------------------------------------------------


def test_configuration_error_shows_its_public_name() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(capacity="lots")
    shown = "".join(traceback.format_exception_only(type(info.value), info.value))
    assert shown.startswith("sentinel_forwarder.ConfigurationError: sentinel-forwarder setting capacity")
    assert ConfigurationError is sentinel_forwarder.ConfigurationError
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ConfigurationError and str(copy) == str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("max_batch_size", "lots", "a whole number of rows"),
        ("max_request_rows", "0", "at least 1"),
        ("max_interval", "-1", "number of seconds"),
        ("capacity", "1e3", "a whole number of rows"),
        ("max_batches_in_flight", "four", "a whole number"),
        ("drain_timeout", "soon", "number of seconds"),
        ("retry_timeout", "0", "number of seconds"),
        ("cloud", "mars", "public, usgov, china"),
        ("min_severity", "dire", "None, Low, Medium, High or Critical"),
        ("connection_verify", "/no/such/ca.pem", "true, false, or the path of a CA bundle"),
        ("drain_on_sigterm", "maybe", "true or false"),
        ("credential", "password", "managed-identity"),
        ("stream_name", "  ", "a stream declared in the DCR"),
        ("rule_id", "dcr-1", "dcr- and 32 hexadecimal digits"),
        ("endpoint", "dce.example.com", "https://"),
    ],
)
def test_every_malformed_setting_names_argument_variable_and_valid_form(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(**{name: value})
    message = str(info.value)
    assert f"argument {name}=" in message
    assert f"environment variable SENTINEL_FORWARDER_{name.upper()}" in message
    assert "the environment variable's value" in message
    assert expected in message


def test_a_malformed_argument_says_it_was_the_argument() -> None:
    with pytest.raises(ConfigurationError, match="the argument's value 0 must be a positive number") as info:
        ForwarderSettings.resolve(BASE, max_interval=0)
    assert "SENTINEL_FORWARDER_MAX_INTERVAL" in str(info.value)


@pytest.mark.parametrize(
    ("value", "seconds"), [("5s", "5"), ("2 min", "120"), ("500ms", "0.5"), ("1h", "3600")]
)
def test_a_duration_with_a_unit_gets_the_number_to_write(value: str, seconds: str) -> None:
    with pytest.raises(ConfigurationError, match=f"durations are plain seconds, write {seconds} instead"):
        resolve(max_interval=value)


def test_rule_id_must_be_the_immutable_id() -> None:
    with pytest.raises(ConfigurationError, match="looks like the DCR's name"):
        resolve(rule_id="sentinel-forwarder-dcr")
    resource_id = (
        "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/my-dcr"
    )
    with pytest.raises(ConfigurationError, match=r"looks like the DCR's resource id.*--query immutableId"):
        resolve(rule_id=resource_id)
    assert resolve(rule_id=RULE_ID.upper().replace("DCR-", "dcr-")).rule_id == RULE_ID


def test_a_malformed_endpoint_names_its_variable_and_hides_a_password() -> None:
    with pytest.raises(ConfigurationError, match="SENTINEL_FORWARDER_ENDPOINT") as info:
        add_sentinel_forwarder(endpoint="https://user:secret@dce.example.com", rule_id=RULE_ID, environ={})
    assert "secret" not in str(info.value)
    assert resolve(endpoint="https://DCE.example.com/").endpoint == "https://dce.example.com"


def test_a_missing_setting_says_what_a_valid_value_looks_like() -> None:
    with pytest.raises(
        ConfigurationError, match="SENTINEL_FORWARDER_RULE_ID to the DCR's immutable id, dcr-"
    ):
        ForwarderSettings.resolve({"SENTINEL_FORWARDER_ENDPOINT": "https://dce.example.com"})


def test_unknown_variables_are_warned_about_with_a_close_match(caplog: pytest.LogCaptureFixture) -> None:
    env = BASE | {"SENTINEL_FORWARDER_RULEID": "x", "SENTINEL_FORWARDER_NONSENSE": "1", "OTHER_THING": "1"}
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder"):
        ForwarderSettings.resolve(env)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    assert (
        "unknown environment variable SENTINEL_FORWARDER_RULEID is ignored; "
        "did you mean SENTINEL_FORWARDER_RULE_ID?" in messages
    )
    assert any(m.startswith("unknown environment variable SENTINEL_FORWARDER_NONSENSE") for m in messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder"):
        ForwarderSettings.resolve(BASE | {"SENTINEL_FORWARDER_CREDENTIAL": "emulator"})
    assert not caplog.records


def test_turning_tls_verification_off_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder"):
        assert resolve(connection_verify="0").connection_verify is False
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "TLS certificate verification is OFF" in record.getMessage()
    assert "SENTINEL_FORWARDER_CONNECTION_VERIFY" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sentinel_forwarder"):
        resolve(connection_verify="true")
    assert not caplog.records


# -- credentials by name -------------------------------------------------------------------------------------


class Recorded:
    """Stands in for an azure-identity credential class: records its arguments."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    for name in ("ManagedIdentityCredential", "WorkloadIdentityCredential", "EnvironmentCredential"):
        monkeypatch.setattr(azure.identity, name, type(name, (Recorded,), {}))


def test_default_leaves_the_credential_to_the_sink() -> None:
    assert make_credential("default", cloud="public", environ={}) is None
    assert ForwarderSettings.resolve(BASE).credential == "default"


def test_emulator_credential() -> None:
    assert isinstance(make_credential("emulator", cloud="public", environ={}), EmulatorCredential)
    assert resolve(credential="Emulator").credential == "emulator"


@pytest.mark.usefixtures("recorded")
def test_managed_identity_user_assigned_from_azure_client_id() -> None:
    system = make_credential("managed-identity", cloud="public", environ={})
    assert type(system).__name__ == "ManagedIdentityCredential"
    assert system.kwargs == {"client_id": None}  # type: ignore[union-attr]
    user = make_credential("managed-identity", cloud="public", environ={"AZURE_CLIENT_ID": "1234"})
    assert user.kwargs == {"client_id": "1234"}  # type: ignore[union-attr]


@pytest.mark.usefixtures("recorded")
def test_workload_identity_needs_its_variables(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE are not set"):
        make_credential("workload-identity", cloud="public", environ={"AZURE_TENANT_ID": "t"})
    env = {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "f")}
    cred = make_credential("workload-identity", cloud="usgov", environ=env)
    assert cred.kwargs == {  # type: ignore[union-attr]
        "tenant_id": "t",
        "client_id": "c",
        "token_file_path": str(tmp_path / "f"),
        "authority": "login.microsoftonline.us",
    }


@pytest.mark.usefixtures("recorded")
def test_environment_credential_needs_a_service_principal() -> None:
    with pytest.raises(ConfigurationError, match="AZURE_CLIENT_SECRET"):
        make_credential("environment", cloud="public", environ={"AZURE_TENANT_ID": "t"})
    env = {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s"}
    cred = make_credential("environment", cloud="china", environ=env)
    assert type(cred).__name__ == "EnvironmentCredential"
    assert cred.kwargs == {"authority": "login.chinacloudapi.cn"}  # type: ignore[union-attr]


def test_azure_cli_credential() -> None:
    from azure.identity import AzureCliCredential

    assert isinstance(make_credential("azure-cli", cloud="public", environ={}), AzureCliCredential)


def test_a_credential_name_as_argument_wins_over_the_variable(emu: Emulator) -> None:
    env = {"SENTINEL_FORWARDER_CREDENTIAL": "workload-identity"}  # would fail: no AZURE_* variables
    handle = add_sentinel_forwarder(
        endpoint=emu.endpoint, rule_id=emu.rule_id, credential="emulator", environ=env
    )
    handle.forward(AuditEntry("by name"))
    assert handle.close().sent == 1 == emu.count(emu.table)
    with pytest.raises(ConfigurationError, match="workload-identity"):
        add_sentinel_forwarder(endpoint=emu.endpoint, rule_id=emu.rule_id, environ=env)


def test_only_environment_variables_reach_the_emulator(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTINEL_FORWARDER_ENDPOINT", emu.endpoint)
    monkeypatch.setenv("SENTINEL_FORWARDER_RULE_ID", emu.rule_id)
    monkeypatch.setenv("SENTINEL_FORWARDER_CREDENTIAL", "emulator")
    handle = add_sentinel_forwarder()
    for i in range(3):
        handle.forward(AuditEntry(f"from the environment {i}"))
    stats = handle.close()
    assert stats.sent == 3 == emu.count(emu.table)
    assert stats.dropped == {}


def test_only_environment_variables_reach_the_tls_emulator_and_load_no_emulator_code(
    tls_emulator: Emulator,
) -> None:
    """A plain script, configured by its environment alone, over HTTPS with the emulator's CA."""
    script = (
        "import sys\n"
        "from sentinel_forwarder import AuditEntry, add_sentinel_forwarder\n"
        "handle = add_sentinel_forwarder()\n"
        "handle.forward(AuditEntry('hello from a script'))\n"
        "stats = handle.close()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('sentinel_forwarder.emulator', "
        "'sentinel_forwarder.cli', 'click', 'rich', 'starlette', 'uvicorn')))\n"
        "print(stats.sent, dict(stats.dropped), loaded)\n"
    )
    env = {
        "PYTHONPATH": str(Path(sentinel_forwarder.__file__).parent.parent),
        "SENTINEL_FORWARDER_ENDPOINT": tls_emulator.endpoint,
        "SENTINEL_FORWARDER_RULE_ID": tls_emulator.rule_id,
        "SENTINEL_FORWARDER_CREDENTIAL": "emulator",
        "SENTINEL_FORWARDER_CONNECTION_VERIFY": str(tls_emulator.ca_path),
    }
    before = tls_emulator.count(tls_emulator.table)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 {} []"
    # the row, and the forwarder's final heartbeat (on by default, one every 60 s and one at close)
    assert tls_emulator.count(tls_emulator.table) == before + 2
