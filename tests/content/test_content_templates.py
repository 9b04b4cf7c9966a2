"""The ARM templates (package data) are valid, up to date with the generator and agree with AUDIT_TABLE."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from content_fixtures import ROOT, TEMPLATES, cc, gen

from sentinel_forwarder._model.schema import AUDIT_TABLE, Column

DCR_TEMPLATES = {"azuredeploy.json": False, "azuredeploy-direct.json": True}


def _load(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TEMPLATES / rel).read_text(encoding="utf-8"))
    return data


def _resource(template: dict[str, Any], type_: str) -> dict[str, Any]:
    (res,) = [r for r in template["resources"] if r["type"] == type_]
    return res


def test_committed_files_match_the_generator() -> None:
    stale = [
        str(rel)
        for rel, text in gen.render_all(ROOT).items()
        if not (ROOT / rel).exists() or (ROOT / rel).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run `python tools/gen_templates.py` and commit: {stale}"


def test_every_json_file_is_valid_json() -> None:
    files = sorted(TEMPLATES.rglob("*.json"))
    assert len(files) >= 9
    for path in files:
        json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("name", "direct"), sorted(DCR_TEMPLATES.items()))
def test_dcr_template_matches_the_library_schema(name: str, direct: bool) -> None:
    template = _load(name)
    assert cc.check_dcr_template(template, AUDIT_TABLE, direct=direct) == []
    params = _load(name.replace(".json", ".parameters.json"))
    assert cc.check_parameter_file(params, template) == []


@pytest.mark.parametrize("name", sorted(DCR_TEMPLATES))
def test_dcr_properties_are_the_library_function(name: str) -> None:
    """The template's DCR is AUDIT_TABLE.dcr_properties() (what the emulator loads) plus ARM wiring."""
    dcr = _resource(_load(name), "Microsoft.Insights/dataCollectionRules")
    props = dict(dcr["properties"])
    props.pop("dataCollectionEndpointId", None)
    assert props == AUDIT_TABLE.dcr_properties(
        workspace_resource_id=gen.WORKSPACE_ID,
        destination=gen.DESTINATION,
        transform_kql="[parameters('transformKql')]",
    )


@pytest.mark.parametrize("name", sorted(DCR_TEMPLATES))
def test_outputs_are_exactly_what_the_forwarder_needs(name: str) -> None:
    outputs = _load(name)["outputs"]
    assert set(outputs) == {"endpoint", "ruleId", "streamName"}
    assert outputs["streamName"]["value"] == AUDIT_TABLE.stream
    assert all(o["type"] == "string" for o in outputs.values())


def test_direct_variant_has_no_dce_and_the_other_has_one() -> None:
    direct, dce = _load("azuredeploy-direct.json"), _load("azuredeploy.json")
    assert _resource(direct, "Microsoft.Insights/dataCollectionRules")["kind"] == "Direct"
    assert not [r for r in direct["resources"] if r["type"] == "Microsoft.Insights/dataCollectionEndpoints"]
    assert "kind" not in _resource(dce, "Microsoft.Insights/dataCollectionRules")
    _resource(dce, "Microsoft.Insights/dataCollectionEndpoints")


def test_table_plan_and_retention_are_parameters() -> None:
    template = _load("azuredeploy.json")
    table = _resource(template, "Microsoft.OperationalInsights/workspaces/tables")["properties"]
    assert table["plan"] == "[parameters('tablePlan')]"
    assert "parameters('retentionInDays')" in table["retentionInDays"]
    assert table["totalRetentionInDays"] == "[parameters('totalRetentionInDays')]"
    assert template["parameters"]["tablePlan"]["allowedValues"] == ["Analytics", "Basic"]


def test_role_assignment_is_monitoring_metrics_publisher_on_the_dcr() -> None:
    role = _resource(_load("azuredeploy.json"), "Microsoft.Authorization/roleAssignments")
    assert role["apiVersion"] == "2022-04-01"
    assert "3913510d-42f4-4e42-8a64-420c390055eb" in role["properties"]["roleDefinitionId"]
    assert role["scope"].startswith("[format('Microsoft.Insights/dataCollectionRules/")


# --- the checks can fail -----------------------------------------------------------------------------------


def test_a_dcr_with_a_missing_column_fails() -> None:
    template = copy.deepcopy(_load("azuredeploy.json"))
    dcr = _resource(template, "Microsoft.Insights/dataCollectionRules")
    dcr["properties"]["streamDeclarations"][AUDIT_TABLE.stream]["columns"].pop()
    problems = cc.check_dcr_template(template)
    assert any("stream columns" in p for p in problems), problems


def test_a_table_with_a_wrong_type_fails() -> None:
    template = copy.deepcopy(_load("azuredeploy.json"))
    table = _resource(template, "Microsoft.OperationalInsights/workspaces/tables")
    table["properties"]["schema"]["columns"][0]["type"] = "string"
    assert any("table columns" in p for p in cc.check_dcr_template(template))


def test_schema_drift_is_caught() -> None:
    """A column added to the library but not to the committed template fails, and the generator follows."""
    grown = AUDIT_TABLE.with_columns([Column("Model", "string", "LLM deployment name.")])
    assert cc.check_dcr_template(_load("azuredeploy.json"), grown)
    regenerated = gen.dcr_template(grown)
    assert cc.check_dcr_template(regenerated, grown, direct=False) == []
    assert gen.render_all(ROOT, grown)[gen.TEMPLATES / "azuredeploy.json"] != (
        TEMPLATES / "azuredeploy.json"
    ).read_text(encoding="utf-8")


def test_wrong_outputs_api_version_and_missing_dce_fail() -> None:
    template = copy.deepcopy(_load("azuredeploy.json"))
    template["outputs"].pop("ruleId")
    template["resources"] = [
        r for r in template["resources"] if r["type"] != "Microsoft.Insights/dataCollectionEndpoints"
    ]
    _resource(template, "Microsoft.Insights/dataCollectionRules")["apiVersion"] = "2021-09-01-preview"
    problems = cc.check_dcr_template(template)
    assert any("outputs" in p for p in problems)
    assert any("apiVersion" in p for p in problems)
    assert any("DCE" in p for p in problems)


def test_undeclared_parameter_fails() -> None:
    template = copy.deepcopy(_load("azuredeploy.json"))
    _resource(template, "Microsoft.Insights/dataCollectionRules")["location"] = "[parameters('nowhere')]"
    assert any("undeclared parameters" in p for p in cc.check_template_basics(template))


def test_transform_in_template_is_generated_from_the_schema() -> None:
    template = _load("azuredeploy.json")
    assert template["parameters"]["transformKql"]["defaultValue"] == gen.transform_kql(AUDIT_TABLE)
    grown = AUDIT_TABLE.with_columns([Column("Tenant", "guid")])
    assert gen.transform_kql(grown).endswith(", Tenant = toguid(Tenant)")


# --- Sentinel content templates ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["analytics-rules.json", "hunting-queries.json", "workbook.json"])
def test_sentinel_templates_are_valid(name: str) -> None:
    template = _load(f"sentinel/{name}")
    assert cc.check_template_basics(template) == []
    assert cc.check_parameter_file(_load("sentinel/sentinel.parameters.json"), template) == []
    assert template["resources"]


def test_workbook_serialized_data_is_the_gallery_json() -> None:
    workbook = _resource(_load("sentinel/workbook.json"), "Microsoft.Insights/workbooks")
    gallery = _load("sentinel/workbook.gallery.json")
    assert json.loads(workbook["properties"]["serializedData"]) == gallery
    assert gallery["version"] == "Notebook/1.0"
    titles = {item["content"].get("title") for item in gallery["items"] if item["type"] == 3}
    assert {"Top detectors", "Sessions by risk", "Severity trend"} <= titles
    for item in gallery["items"]:
        if item["type"] == 3:
            assert item["content"]["timeContextFromParameter"] == "TimeRange"


def test_hunting_template_matches_yaml() -> None:
    template = _load("sentinel/hunting-queries.json")
    hunts = {str(h["id"]): h for _, h in gen.load_yaml_dir(TEMPLATES / "sentinel/hunting")}
    assert len(template["resources"]) == len(hunts)
    for res in template["resources"]:
        hunt_id = res["name"].split("'")[-2]
        assert res["properties"]["category"] == "Hunting Queries"
        assert res["properties"]["query"] == hunts[hunt_id]["query"].strip()
        assert res["properties"]["displayName"] == hunts[hunt_id]["name"]
