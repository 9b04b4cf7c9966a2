"""Loading data collection rules, and the credentials in sentinel_forwarder.testing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from azure.core.exceptions import ClientAuthenticationError
from hypothesis import given
from hypothesis import strategies as st

from sentinel_forwarder import AUDIT_TABLE
from sentinel_forwarder.emulator import (
    DEFAULT_RULE_ID,
    AsyncEmulatorCredential,
    DataCollectionRule,
    DcrError,
    Emulator,
    EmulatorCredential,
    load_dcrs,
)
from sentinel_forwarder.emulator._dcr import default_dcr, rule_id_for_name

PROPERTIES: dict[str, Any] = {
    "streamDeclarations": {"Custom-Web": {"columns": [{"name": "TimeGenerated", "type": "dateTime"}]}},
    "dataFlows": [{"streams": ["Custom-Web"], "destinations": ["w"], "outputStream": "Custom-Web_CL"}],
}


def test_default_rule_comes_from_the_schema() -> None:
    rule = default_dcr()
    assert rule.immutable_id == DEFAULT_RULE_ID
    stream = rule.streams[AUDIT_TABLE.stream]
    assert stream.tables == (AUDIT_TABLE.name,)
    assert stream.columns == {c["name"]: c["type"] for c in AUDIT_TABLE.stream_columns()}


def test_bare_properties_get_an_id_from_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "web.json"
    path.write_text(json.dumps(PROPERTIES))
    (rule,) = load_dcrs(path)
    assert rule.name == "web"
    assert rule.immutable_id == rule_id_for_name("web")
    assert rule.immutable_id.startswith("dcr-") and len(rule.immutable_id) == 36
    assert rule.streams["Custom-Web"].columns == {
        "TimeGenerated": "datetime"
    }  # type names are case-insensitive
    assert rule.tables == ("Web_CL",)


def test_resource_with_immutable_id() -> None:
    resource = {
        "type": "Microsoft.Insights/dataCollectionRules",
        "name": "web-dcr",
        "properties": {**PROPERTIES, "immutableId": "dcr-abc"},
    }
    (rule,) = load_dcrs(resource)
    assert (rule.immutable_id, rule.name) == ("dcr-abc", "web-dcr")


def test_arm_template_with_several_rules_and_other_resources() -> None:
    template = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "resources": [
            {"type": "Microsoft.OperationalInsights/workspaces/tables", "name": "w/Web_CL", "properties": {}},
            {"type": "Microsoft.Insights/dataCollectionRules", "name": "[parameters('dcrName')]",
             "properties": PROPERTIES},
            {"type": "microsoft.insights/datacollectionrules", "name": "second", "properties": PROPERTIES},
        ],
    }  # fmt: skip
    rules = load_dcrs(template)
    assert [r.name for r in rules] == ["[parameters('dcrName')]", "second"]
    assert len({r.immutable_id for r in rules}) == 2


def test_emulator_serves_loaded_rules(tmp_path: Path) -> None:
    path = tmp_path / "rule.json"
    path.write_text(json.dumps({"name": "web", "properties": PROPERTIES}))
    with Emulator(dcrs=[path]) as emu:
        rule_id = rule_id_for_name("web")
        assert set(emu.rules) == {DEFAULT_RULE_ID, rule_id}
        assert emu.count("Web_CL") == 0
        with pytest.raises(KeyError):
            emu.rows("Nope_CL")


def test_a_rule_can_replace_the_default() -> None:
    rule = DataCollectionRule.from_properties(PROPERTIES, name="x", immutable_id=DEFAULT_RULE_ID)
    with Emulator(dcrs=[rule]) as emu:
        assert emu.rules[DEFAULT_RULE_ID] is rule


@pytest.mark.parametrize(
    ("properties", "match"),
    [
        ({"streamDeclarations": {}, "dataFlows": []}, "no declared stream"),
        ({**PROPERTIES, "dataFlows": [{"streams": ["Custom-Web"], "outputStream": "Microsoft-Syslog"}]},
         "only emulates custom tables"),
        ({**PROPERTIES, "dataFlows": [{"streams": ["Custom-Other"], "outputStream": "Custom-Web_CL"}]},
         "undeclared stream"),
        ({**PROPERTIES, "dataFlows": [{"streams": ["Custom-Web"]}]}, "no outputStream"),
        ({**PROPERTIES, "dataFlows": [{"streams": ["Custom-Web"], "outputStream": "Custom-Web"}]}, "_CL"),
        ({"streamDeclarations": {"Web": {"columns": [{"name": "A", "type": "string"}]}}}, "Custom-"),
        ({"streamDeclarations": {"Custom-Web": {"columns": [{"name": "A", "type": "guid"}]}}}, "type"),
        ({"streamDeclarations": {"Custom-Web": {"columns": []}}}, "declares no columns"),
        ({**PROPERTIES, "immutableId": "bad id!"}, "invalid immutable id"),
    ],
)  # fmt: skip
def test_invalid_rules(properties: dict[str, Any], match: str) -> None:
    with pytest.raises(DcrError, match=match):
        load_dcrs(properties)


def test_unreadable_or_empty_documents(tmp_path: Path) -> None:
    with pytest.raises(DcrError, match="cannot read"):
        load_dcrs(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DcrError, match="cannot read"):
        load_dcrs(tmp_path / "bad.json")
    with pytest.raises(DcrError, match="no data collection rule"):
        load_dcrs({"resources": []})


@given(st.text(max_size=200))
def test_string_values_never_exceed_the_field_limit(text: str) -> None:
    stream = default_dcr().streams[AUDIT_TABLE.stream]
    value = text * 400
    stored = stream.validate(0, {"Summary": value})["Summary"]
    assert len(stored.encode("utf-8")) <= 65_536
    assert value.startswith(stored)
    if len(value.encode("utf-8")) <= 65_536:
        assert stored == value


# -- credentials ------------------------------------------------------------------------------------------


def test_credential_token_and_repr() -> None:
    credential = EmulatorCredential("s3cret-token")
    token = credential.get_token("https://monitor.azure.com/.default")
    assert token.token == "s3cret-token"
    info = credential.get_token_info("https://monitor.azure.com/.default")
    assert info.token == "s3cret-token"
    assert info.expires_on > token.expires_on - 5
    assert "s3cret" not in repr(credential)
    assert credential.calls == 2
    with pytest.raises(ValueError):
        credential.get_token()
    with pytest.raises(ValueError):
        EmulatorCredential("")


def test_credential_fails_on_demand() -> None:
    credential = EmulatorCredential(fail=True)
    with pytest.raises(ClientAuthenticationError):
        credential.get_token("scope")
    with pytest.raises(ClientAuthenticationError):
        credential.get_token_info("scope")
    credential.fail = False
    assert credential.get_token("scope").token


@pytest.mark.anyio
async def test_async_credential(anyio_backend: str) -> None:
    async with AsyncEmulatorCredential("tok") as credential:
        assert (await credential.get_token("scope")).token == "tok"
        assert (await credential.get_token_info("scope")).token == "tok"
        await anyio.lowlevel.checkpoint()
        credential.fail = True
        with pytest.raises(ClientAuthenticationError):
            await credential.get_token("scope")
    assert "tok" not in repr(credential)
