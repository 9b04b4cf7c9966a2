"""Generate the ARM templates from the library's table schema and the Sentinel YAML.

The templates live in ``sentinel_forwarder/templates/`` (``T/`` below), package data that the wheel ships and
``sentinel-forwarder template`` writes out. Run ``python tools/gen_templates.py`` after changing
:data:`sentinel_forwarder._model.schema.AUDIT_TABLE` or any YAML file under ``T/sentinel/``;
``python tools/gen_templates.py --check`` exits 1 when a committed file is out of date (the content tests do
the same comparison).

Sources and what is generated from them:

- ``AUDIT_TABLE`` -> ``T/azuredeploy.json`` (table + DCE + DCR + role assignment),
  ``T/azuredeploy-direct.json`` (table + ``kind: Direct`` DCR + role assignment) and their parameter files.
  The DCR ``properties`` come from ``AUDIT_TABLE.dcr_properties()``, the same function the emulator loads
  its default rule from.
- ``T/sentinel/analytics/*.yaml`` -> ``T/sentinel/analytics-rules.json``
  (``Microsoft.SecurityInsights/alertRules``, kind Scheduled).
- ``T/sentinel/hunting/*.yaml`` -> ``T/sentinel/hunting-queries.json`` (``workspaces/savedSearches`` in
  the ``Hunting Queries`` category).
- :data:`WORKBOOK_PANELS` -> ``T/sentinel/workbook.gallery.json`` (paste into the workbook Advanced Editor)
  and ``T/sentinel/workbook.json`` (``Microsoft.Insights/workbooks``).
"""

from __future__ import annotations

__all__ = [
    "API_VERSIONS",
    "DETECTOR_IDS",
    "MONITORING_METRICS_PUBLISHER",
    "OUTPUTS",
    "ROOT",
    "WORKBOOK_PANELS",
    "arm_duration",
    "dcr_template",
    "load_yaml_dir",
    "main",
    "render_all",
    "rule_resource",
    "transform_kql",
]

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without ``pip install -e .``
    sys.path.append(str(ROOT))

from sentinel_forwarder._model.schema import AUDIT_TABLE, TableSchema  # noqa: E402

#: api-versions of every resource type the templates deploy.
API_VERSIONS: Mapping[str, str] = {
    "Microsoft.OperationalInsights/workspaces/tables": "2022-10-01",
    "Microsoft.Insights/dataCollectionEndpoints": "2023-03-11",
    "Microsoft.Insights/dataCollectionRules": "2023-03-11",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.SecurityInsights/alertRules": "2023-02-01",
    "Microsoft.OperationalInsights/workspaces/savedSearches": "2020-08-01",
    "Microsoft.Insights/workbooks": "2022-04-01",
}

#: Built-in role that may post to a DCR's streams.
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

#: Deployment outputs and the forwarder setting each one feeds.
OUTPUTS: Mapping[str, str] = {
    "endpoint": "SENTINEL_FORWARDER_ENDPOINT",
    "ruleId": "SENTINEL_FORWARDER_RULE_ID",
    "streamName": "SENTINEL_FORWARDER_STREAM_NAME",
}

#: Detector ids the analytics rules match on (``DetectorId`` column).
DETECTOR_IDS: Mapping[str, str] = {
    "pii-leak": "PiiLeakageDetected.yaml",
    "credential-exposure": "CredentialExposureDetected.yaml",
}

#: Where the templates live: package data, so the wheel ships them (``sentinel-forwarder template``).
TEMPLATES = Path("sentinel_forwarder/templates")
SENTINEL = TEMPLATES / "sentinel"
DEPLOYMENT_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
PARAMETERS_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"
DESTINATION = "workspace"
WORKSPACE_ID = "[resourceId('Microsoft.OperationalInsights/workspaces', parameters('workspaceName'))]"

_KUSTO_CASTS: Mapping[str, str] = {"dateTime": "todatetime", "guid": "toguid"}


def transform_kql(table: TableSchema = AUDIT_TABLE) -> str:
    """The DCR transformation: keep exactly the table's columns, typed as the table declares them.

    A column the stream declares with a different type than the table (``guid`` arrives as ``string``) is
    cast; ``TimeGenerated`` is cast explicitly so a row cannot land with an empty time.
    """
    items = []
    for col in table.columns:
        cast = _KUSTO_CASTS.get(col.type)
        items.append(f"{col.name} = {cast}({col.name})" if cast else col.name)
    return "source | project " + ", ".join(items)


def _param(
    type_: str, description: str, default: Any = None, *, allowed: Sequence[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_}
    if default is not None:
        out["defaultValue"] = default
    if allowed is not None:
        out["allowedValues"] = list(allowed)
    out.update(extra)
    out["metadata"] = {"description": description}
    return out


def _table_resource(table: TableSchema) -> dict[str, Any]:
    columns = [dict(c, description=table.column(c["name"]).description) for c in table.table_columns()]
    return {
        "type": "Microsoft.OperationalInsights/workspaces/tables",
        "apiVersion": API_VERSIONS["Microsoft.OperationalInsights/workspaces/tables"],
        "name": f"[format('{{0}}/{{1}}', parameters('workspaceName'), '{table.name}')]",
        "properties": {
            "plan": "[parameters('tablePlan')]",
            # The interactive retention of a Basic table is fixed by the service; only Analytics takes one.
            "retentionInDays": (
                "[if(equals(parameters('tablePlan'), 'Basic'), null(), parameters('retentionInDays'))]"
            ),
            "totalRetentionInDays": "[parameters('totalRetentionInDays')]",
            "schema": {"name": table.name, "columns": columns},
        },
    }


def dcr_template(table: TableSchema = AUDIT_TABLE, *, direct: bool = False) -> dict[str, Any]:
    """The ARM template for the table, the DCR (with a DCE unless *direct*) and the role assignment."""
    dcr_id = "[resourceId('Microsoft.Insights/dataCollectionRules', parameters('dataCollectionRuleName'))]"
    dce_id = (
        "[resourceId('Microsoft.Insights/dataCollectionEndpoints', parameters('dataCollectionEndpointName'))]"
    )
    table_id = (
        "[resourceId('Microsoft.OperationalInsights/workspaces/tables', parameters('workspaceName'), "
        f"'{table.name}')]"
    )
    parameters: dict[str, Any] = {
        "workspaceName": _param(
            "string",
            "Name of the existing (Sentinel-enabled) Log Analytics workspace in this resource group.",
        ),
        "location": _param(
            "string", "Region of the DCR and DCE: the workspace's region.", "[resourceGroup().location]"
        ),
    }
    if not direct:
        parameters["dataCollectionEndpointName"] = _param(
            "string", "Name of the data collection endpoint.", "sentinel-forwarder-dce"
        )
    parameters |= {
        "dataCollectionRuleName": _param(
            "string", "Name of the data collection rule.", "sentinel-forwarder-dcr"
        ),
        "principalId": _param(
            "string",
            "Object id of the identity the forwarder runs as (managed identity or service principal); it "
            "gets Monitoring Metrics Publisher on the DCR. Empty: no role assignment.",
            "",
        ),
        "principalType": _param(
            "string",
            "Kind of principalId.",
            "ServicePrincipal",
            allowed=["ServicePrincipal", "User", "Group"],
        ),
        "tablePlan": _param(
            "string",
            f"Plan of the {table.name} table: Analytics (alert rules, full KQL) or Basic (cheaper ingestion, "
            "no scheduled alert rules).",
            "Analytics",
            allowed=["Analytics", "Basic"],
        ),
        "retentionInDays": _param(
            "int",
            "Interactive (analytics) retention in days; ignored for the Basic plan.",
            90,
            minValue=4,
            maxValue=730,
        ),
        "totalRetentionInDays": _param(
            "int",
            "Total retention in days including long-term (archive) retention; at least retentionInDays.",
            365,
            minValue=4,
            maxValue=4383,
        ),
        "transformKql": _param(
            "string",
            "Ingestion-time transformation of the DCR. Its output columns must be the table's columns; add a "
            "where clause to drop rows you do not want to pay for.",
            transform_kql(table),
        ),
    }

    properties = table.dcr_properties(
        workspace_resource_id=WORKSPACE_ID,
        destination=DESTINATION,
        transform_kql="[parameters('transformKql')]",
    )
    dcr: dict[str, Any] = {
        "type": "Microsoft.Insights/dataCollectionRules",
        "apiVersion": API_VERSIONS["Microsoft.Insights/dataCollectionRules"],
        "name": "[parameters('dataCollectionRuleName')]",
        "location": "[parameters('location')]",
    }
    resources: list[dict[str, Any]] = [_table_resource(table)]
    if direct:
        dcr["kind"] = "Direct"
        dcr["dependsOn"] = [table_id]
        endpoint = f"[reference({dcr_id[1:-1]}).endpoints.logsIngestion]"
    else:
        properties = {"dataCollectionEndpointId": dce_id, **properties}
        dcr["dependsOn"] = [table_id, dce_id]
        resources.append(
            {
                "type": "Microsoft.Insights/dataCollectionEndpoints",
                "apiVersion": API_VERSIONS["Microsoft.Insights/dataCollectionEndpoints"],
                "name": "[parameters('dataCollectionEndpointName')]",
                "location": "[parameters('location')]",
                "properties": {"networkAcls": {"publicNetworkAccess": "Enabled"}},
            }
        )
        endpoint = f"[reference({dce_id[1:-1]}).logsIngestion.endpoint]"
    dcr["properties"] = properties
    resources.append(dcr)
    resources.append(
        {
            "condition": "[not(empty(parameters('principalId')))]",
            "type": "Microsoft.Authorization/roleAssignments",
            "apiVersion": API_VERSIONS["Microsoft.Authorization/roleAssignments"],
            "name": f"[guid({dcr_id[1:-1]}, parameters('principalId'), '{MONITORING_METRICS_PUBLISHER}')]",
            "scope": (
                "[format('Microsoft.Insights/dataCollectionRules/{0}', parameters('dataCollectionRuleName'))]"
            ),
            "dependsOn": [dcr_id],
            "properties": {
                "roleDefinitionId": (
                    f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
                    f"'{MONITORING_METRICS_PUBLISHER}')]"
                ),
                "principalId": "[parameters('principalId')]",
                "principalType": "[parameters('principalType')]",
                "description": "sentinel-forwarder: post audit records to the DCR (Logs Ingestion API).",
            },
        }
    )
    variant = "Direct DCR (no DCE)" if direct else "DCE + DCR"
    return {
        "$schema": DEPLOYMENT_SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": (
                f"sentinel-forwarder: the {table.name} table, a {variant} for the stream {table.stream} and "
                "the Monitoring Metrics Publisher role for the forwarder. Generated by "
                "tools/gen_templates.py from AUDIT_TABLE (sentinel_forwarder._model.schema); "
                "do not edit by hand."
            ),
        },
        "parameters": parameters,
        "resources": resources,
        "outputs": {
            "endpoint": {"type": "string", "value": endpoint},
            "ruleId": {"type": "string", "value": f"[reference({dcr_id[1:-1]}).immutableId]"},
            "streamName": {"type": "string", "value": table.stream},
        },
    }


def _parameter_file(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "$schema": PARAMETERS_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {k: {"value": v} for k, v in values.items()},
    }


# --- Sentinel content -------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)([mhd])$")
OPERATORS: Mapping[str, str] = {"gt": "GreaterThan", "lt": "LessThan", "eq": "Equal", "ne": "NotEqual"}


def arm_duration(value: str) -> str:
    """``5m`` -> ``PT5M``, ``2h`` -> ``PT2H``, ``1d`` -> ``P1D`` (YAML rule form to ARM form)."""
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"duration {value!r} is not <n>m, <n>h or <n>d")
    n, unit = match.groups()
    return f"P{n}D" if unit == "d" else f"PT{n}{unit.upper()}"


def load_yaml_dir(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``*.yaml`` under *folder*, sorted by file name, parsed."""
    out = []
    for path in sorted(folder.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            out.append((path, yaml.safe_load(fh)))
    return out


def rule_resource(rule: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Microsoft.SecurityInsights/alertRules`` resource (kind Scheduled) for one YAML rule."""
    properties: dict[str, Any] = {
        "displayName": rule["name"],
        "description": rule["description"].strip(),
        "severity": rule["severity"],
        "enabled": "[parameters('enableRules')]",
        "query": rule["query"].strip(),
        "queryFrequency": arm_duration(rule["queryFrequency"]),
        "queryPeriod": arm_duration(rule["queryPeriod"]),
        "triggerOperator": OPERATORS[rule["triggerOperator"]],
        "triggerThreshold": rule["triggerThreshold"],
        "suppressionDuration": "PT1H",
        "suppressionEnabled": False,
        "tactics": list(rule.get("tactics", [])),
        "techniques": list(rule.get("relevantTechniques", [])),
        "entityMappings": rule["entityMappings"],
        "templateVersion": str(rule["version"]),
    }
    for key in ("customDetails", "alertDetailsOverride", "eventGroupingSettings"):
        if key in rule:
            properties[key] = rule[key]
    properties["incidentConfiguration"] = {
        "createIncident": True,
        "groupingConfiguration": {
            "enabled": False,
            "reopenClosedIncident": False,
            "lookbackDuration": "PT5H",
            "matchingMethod": "AllEntities",
        },
    }
    return {
        "type": "Microsoft.SecurityInsights/alertRules",
        "apiVersion": API_VERSIONS["Microsoft.SecurityInsights/alertRules"],
        "name": str(rule["id"]),
        "kind": "Scheduled",
        "scope": "[format('Microsoft.OperationalInsights/workspaces/{0}', parameters('workspaceName'))]",
        "properties": properties,
    }


def _workspace_parameter() -> dict[str, Any]:
    return {"workspaceName": _param("string", "Name of the Sentinel-enabled Log Analytics workspace.")}


def _content_template(description: str, parameters: dict[str, Any], resources: list[Any]) -> dict[str, Any]:
    return {
        "$schema": DEPLOYMENT_SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": f"{description} Generated by tools/gen_templates.py; do not edit by hand."
        },
        "parameters": parameters,
        "resources": resources,
    }


def rules_template(root: Path = ROOT) -> dict[str, Any]:
    rules = [rule for _, rule in load_yaml_dir(root / SENTINEL / "analytics")]
    parameters = _workspace_parameter() | {
        "enableRules": _param("bool", "Create the rules enabled.", True),
    }
    return _content_template(
        f"Microsoft Sentinel analytics rules for {AUDIT_TABLE.name}, from sentinel/analytics/*.yaml.",
        parameters,
        [rule_resource(rule) for rule in rules],
    )


def hunting_template(root: Path = ROOT) -> dict[str, Any]:
    resources = []
    for _, hunt in load_yaml_dir(root / SENTINEL / "hunting"):
        resources.append(
            {
                "type": "Microsoft.OperationalInsights/workspaces/savedSearches",
                "apiVersion": API_VERSIONS["Microsoft.OperationalInsights/workspaces/savedSearches"],
                "name": f"[format('{{0}}/{{1}}', parameters('workspaceName'), '{hunt['id']}')]",
                "properties": {
                    "category": "Hunting Queries",
                    "displayName": hunt["name"],
                    "query": hunt["query"].strip(),
                    "version": 2,
                    "tags": [
                        {"name": "description", "value": hunt["description"].strip()},
                        {"name": "tactics", "value": ",".join(hunt.get("tactics", []))},
                        {"name": "techniques", "value": ",".join(hunt.get("relevantTechniques", []))},
                    ],
                },
            }
        )
    return _content_template(
        f"Microsoft Sentinel hunting queries for {AUDIT_TABLE.name}, from sentinel/hunting/*.yaml.",
        _workspace_parameter(),
        resources,
    )


#: Workbook panels: (title, visualization, query). The workbook's TimeRange parameter sets the time window.
WORKBOOK_PANELS: Sequence[tuple[str, str, str]] = (
    (
        "Severity trend",
        "timechart",
        "AISentinelAudit_CL\n| summarize Events = count() by bin(TimeGenerated, 1h), Severity\n"
        "| order by TimeGenerated asc",
    ),
    (
        "Top detectors",
        "barchart",
        'AISentinelAudit_CL\n| where Severity != "None"\n| summarize Events = count() by DetectorId\n'
        "| top 15 by Events desc",
    ),
    (
        "Sessions by risk",
        "table",
        'AISentinelAudit_CL\n| extend Weight = case(Severity == "Critical", 10, Severity == "High", 5, '
        'Severity == "Medium", 2, Severity == "Low", 1, 0)\n'
        '| summarize RiskScore = sum(Weight), Events = count(), Critical = countif(Severity == "Critical"), '
        "Detectors = make_set(DetectorId, 10), LastSeen = max(TimeGenerated) by SessionId\n"
        "| where RiskScore > 0\n| top 25 by RiskScore desc",
    ),
    (
        "Hash chain breaks (tampering or loss)",
        "table",
        "AISentinelAudit_CL\n| summarize arg_min(TimeGenerated, *) by Id\n"
        "| order by SessionId asc, TimeGenerated asc\n"
        "| extend PriorSessionId = prev(SessionId), PriorHash = prev(Hash)\n"
        "| where SessionId == PriorSessionId and PreviousHash != PriorHash\n"
        "| project TimeGenerated, SessionId, Id, PreviousHash, PriorHash, DetectorId",
    ),
    (
        "Last record received",
        "table",
        "AISentinelAudit_CL\n| summarize LastSeen = max(TimeGenerated), Records = count()\n"
        "| extend MinutesSilent = datetime_diff('minute', now(), LastSeen)",
    ),
    (
        "Forwarder health (heartbeats per instance)",
        "table",
        'AISentinelAudit_CL\n| where DetectorId == "sentinel-forwarder.heartbeat"\n'
        "| extend Application = tostring(Heartbeat.application), Instance = tostring(Heartbeat.instance)\n"
        "| summarize LastHeartbeat = max(TimeGenerated), Offered = sum(toint(Heartbeat.offered)), "
        "Sent = sum(toint(Heartbeat.sent)), Dropped = sum(toint(Heartbeat.dropped_total)), "
        "Unconfirmed = sum(toint(Heartbeat.unconfirmed)) "
        "by Application, Instance\n"
        "| extend MinutesSilent = datetime_diff('minute', now(), LastHeartbeat)\n"
        "| order by Dropped desc, MinutesSilent desc",
    ),
)


def workbook_gallery(table: TableSchema = AUDIT_TABLE) -> dict[str, Any]:
    """The workbook in gallery form (Advanced Editor JSON)."""
    items: list[dict[str, Any]] = [
        {
            "type": 1,
            "content": {
                "json": (
                    f"## AI audit ({table.name})\nAudit records sent by sentinel-forwarder. Pick the "
                    "workspace and the time range; every panel follows them."
                )
            },
            "name": "header",
        },
        {
            "type": 9,
            "content": {
                "version": "KqlParameterItem/1.0",
                "parameters": [
                    {
                        "id": "6c1e0cd5-3f0b-4a53-9c86-0b1d4f8a0f01",
                        "version": "KqlParameterItem/1.0",
                        "name": "TimeRange",
                        "label": "Time range",
                        "type": 4,
                        "isRequired": True,
                        "value": {"durationMs": 604800000},
                        "typeSettings": {
                            "selectableValues": [
                                {"durationMs": 3600000},
                                {"durationMs": 86400000},
                                {"durationMs": 604800000},
                                {"durationMs": 2592000000},
                            ],
                            "allowCustom": True,
                        },
                    }
                ],
                "style": "pills",
                "queryType": 0,
                "resourceType": "microsoft.operationalinsights/workspaces",
            },
            "name": "parameters",
        },
    ]
    for title, visualization, query in WORKBOOK_PANELS:
        items.append(
            {
                "type": 3,
                "content": {
                    "version": "KqlItem/1.0",
                    "query": query,
                    "size": 0,
                    "title": title,
                    "timeContextFromParameter": "TimeRange",
                    "queryType": 0,
                    "resourceType": "microsoft.operationalinsights/workspaces",
                    "visualization": visualization,
                },
                "name": re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
            }
        )
    return {
        "version": "Notebook/1.0",
        "items": items,
        "fallbackResourceIds": [],
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    }


def workbook_template(table: TableSchema = AUDIT_TABLE) -> dict[str, Any]:
    parameters = _workspace_parameter() | {
        "workbookDisplayName": _param(
            "string", "Display name of the workbook.", "AI audit (sentinel-forwarder)"
        ),
        "location": _param("string", "Region of the workbook.", "[resourceGroup().location]"),
    }
    return _content_template(
        f"Azure Monitor workbook for {table.name} (severity trend, top detectors, sessions by risk).",
        parameters,
        [
            {
                "type": "Microsoft.Insights/workbooks",
                "apiVersion": API_VERSIONS["Microsoft.Insights/workbooks"],
                "name": (
                    "[guid(resourceGroup().id, parameters('workspaceName'), 'sentinel-forwarder-workbook')]"
                ),
                "location": "[parameters('location')]",
                "kind": "shared",
                "properties": {
                    "displayName": "[parameters('workbookDisplayName')]",
                    "serializedData": json.dumps(workbook_gallery(table), separators=(",", ":")),
                    "version": "1.0",
                    "sourceId": WORKSPACE_ID,
                    "category": "sentinel",
                },
            }
        ],
    )


def render_all(root: Path = ROOT, table: TableSchema = AUDIT_TABLE) -> dict[Path, str]:
    """Every generated file: path relative to the repository -> its text."""
    workspace_only = {"workspaceName": "my-sentinel-workspace"}
    deploy_values = {
        "workspaceName": "my-sentinel-workspace",
        "principalId": "",
        "tablePlan": "Analytics",
        "retentionInDays": 90,
        "totalRetentionInDays": 365,
    }
    docs: dict[Path, Any] = {
        TEMPLATES / "azuredeploy.json": dcr_template(table),
        TEMPLATES / "azuredeploy.parameters.json": _parameter_file(deploy_values),
        TEMPLATES / "azuredeploy-direct.json": dcr_template(table, direct=True),
        TEMPLATES / "azuredeploy-direct.parameters.json": _parameter_file(deploy_values),
        SENTINEL / "analytics-rules.json": rules_template(root),
        SENTINEL / "hunting-queries.json": hunting_template(root),
        SENTINEL / "workbook.json": workbook_template(table),
        SENTINEL / "workbook.gallery.json": workbook_gallery(table),
        SENTINEL / "sentinel.parameters.json": _parameter_file(workspace_only),
    }
    return {path: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for path, doc in docs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed file is out of date; write nothing"
    )
    args = parser.parse_args(argv)
    stale = []
    for rel, text in render_all().items():
        path = ROOT / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for rel in stale:
        print(f"{'stale' if args.check else 'wrote'}: {rel}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
