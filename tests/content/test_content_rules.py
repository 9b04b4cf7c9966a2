"""Rule and hunting YAML meet the Azure-Sentinel repository constraints; the ARM rules agree with the YAML."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from content_fixtures import ROOT, TEMPLATES, cc, gen

ANALYTICS = TEMPLATES / "sentinel/analytics"
HUNTING = TEMPLATES / "sentinel/hunting"
RULES = gen.load_yaml_dir(ANALYTICS)
HUNTS = gen.load_yaml_dir(HUNTING)


def _arm_rules() -> dict[str, dict[str, Any]]:
    template = json.loads((TEMPLATES / "sentinel/analytics-rules.json").read_text(encoding="utf-8"))
    return {r["name"]: r for r in template["resources"]}


@pytest.mark.parametrize(("path", "rule"), RULES, ids=[p.stem for p, _ in RULES])
def test_rule_yaml_meets_repository_constraints(path: Path, rule: dict[str, Any]) -> None:
    assert cc.check_rule_yaml(rule) == []


@pytest.mark.parametrize(("path", "rule"), RULES, ids=[p.stem for p, _ in RULES])
def test_arm_rule_agrees_with_yaml(path: Path, rule: dict[str, Any]) -> None:
    resource = _arm_rules()[str(rule["id"])]
    assert cc.check_arm_rule(rule, resource) == []
    assert resource["properties"]["enabled"] == "[parameters('enableRules')]"
    assert resource["properties"]["suppressionEnabled"] is False


@pytest.mark.parametrize(("path", "hunt"), HUNTS, ids=[p.stem for p, _ in HUNTS])
def test_hunting_yaml_meets_repository_constraints(path: Path, hunt: dict[str, Any]) -> None:
    assert cc.check_hunting_yaml(hunt) == []


def test_ids_are_unique_and_every_rule_is_deployed() -> None:
    ids = [str(doc["id"]) for _, doc in RULES + HUNTS]
    assert len(ids) == len(set(ids))
    assert set(_arm_rules()) == {str(rule["id"]) for _, rule in RULES}


def test_required_scenarios_are_covered() -> None:
    queries = {path.stem: rule["query"] for path, rule in RULES}
    assert 'Severity in ("High", "Critical")' in queries["HighSeverityBurstInSession"]
    chain = queries["BrokenHashChain"]
    # links are looked up by hash (order-independent): missing predecessors and forks
    assert "join kind=leftanti (known) on $left.PreviousHash == $right.Hash" in chain
    assert "Successors > 1" in chain and "isnotempty(PreviousHash)" in chain
    assert '"sentinel-forwarder.heartbeat"' in queries["ForwarderSilent"]
    assert "not(Final)" in queries["ForwarderSilent"] and "by Instance" in queries["ForwarderSilent"]
    assert "Heartbeat.dropped_total" in queries["AuditDroppedAtSource"]
    assert "Missing = Last - First + 1 - Landed" in queries["AuditSequenceGap"]
    assert "baseline" in queries["CriticalSpike"].lower()
    for detector, file in gen.DETECTOR_IDS.items():
        assert f'"{detector}"' in queries[Path(file).stem]


def test_detector_ids_are_documented() -> None:
    kql_doc = (ROOT / "docs/kql.md").read_text(encoding="utf-8")
    for detector in gen.DETECTOR_IDS:
        assert f"`{detector}`" in kql_doc


# --- the checks can fail -----------------------------------------------------------------------------------


FIELD = {"identifier": "Name", "columnName": "A"}
ACCOUNT = {"entityType": "Account", "fieldMappings": [FIELD]}


def _broken(**changes: Any) -> dict[str, Any]:
    rule = copy.deepcopy(RULES[0][1])
    rule.update(changes)
    return rule


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"queryFrequency": "1h", "queryPeriod": "30m"}, "shorter than queryFrequency"),
        ({"queryFrequency": "1m"}, "outside 5m-14d"),
        ({"queryPeriod": "15d"}, "outside 5m-14d"),
        ({"queryPeriod": "PT5M"}, "is not <n>m"),
        ({"severity": "Critical"}, "severity"),
        ({"triggerOperator": "gte"}, "triggerOperator"),
        ({"triggerThreshold": 10001}, "triggerThreshold"),
        ({"id": "not-a-guid"}, "GUID"),
        ({"name": "x" * 257}, "name"),
        ({"description": "x" * 5001}, "description"),
        ({"query": ""}, "query"),
        ({"query": "x" * 10001}, "query"),
        ({"kind": "NRT"}, "kind"),
        ({"entityMappings": []}, "entityMappings"),
        ({"entityMappings": [ACCOUNT] * 6}, "entityMappings"),
        ({"entityMappings": [{"entityType": "Account", "fieldMappings": [FIELD] * 4}]}, "fieldMappings"),
        ({"entityMappings": [{"entityType": "Session", "fieldMappings": [FIELD]}]}, "entityType"),
        ({"tactics": ["Hacking"]}, "tactic"),
    ],
)
def test_broken_rule_yaml_fails(changes: dict[str, Any], expected: str) -> None:
    problems = cc.check_rule_yaml(_broken(**changes))
    assert any(expected in p for p in problems), problems


def test_arm_rule_that_disagrees_with_yaml_fails() -> None:
    rule = RULES[0][1]
    resource = copy.deepcopy(_arm_rules()[str(rule["id"])])
    resource["properties"]["queryPeriod"] = "5m"
    resource["properties"]["triggerOperator"] = "gt"
    del resource["properties"]["suppressionDuration"]
    problems = cc.check_arm_rule(rule, resource)
    assert any("queryPeriod" in p for p in problems)
    assert any("triggerOperator" in p for p in problems)
    assert any("suppressionDuration is missing" in p for p in problems)


def test_durations_convert_to_iso_8601() -> None:
    assert [gen.arm_duration(d) for d in ("5m", "90m", "1h", "14d")] == ["PT5M", "PT90M", "PT1H", "P14D"]
    with pytest.raises(ValueError):
        gen.arm_duration("5 minutes")
