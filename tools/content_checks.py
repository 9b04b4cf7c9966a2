"""Checks for the deployment templates and Sentinel content, used by ``tests/content/``.

Every check returns a list of problems (empty when fine) instead of raising, so a test can show all of them at
once and a deliberately broken fixture can assert that a problem *is* found.

KQL is parsed and type-checked by ``tools/kql/validate.js`` (Kusto.Language from the pinned npm package
``@kusto/language-service-next``); :func:`run_kql` sends every query in one batch to one ``node`` process.
The table schemas it checks against are built here from ``AUDIT_TABLE``, never written down in JavaScript.
"""

from __future__ import annotations

__all__ = [
    "KQL_DIR",
    "LEGACY_TABLE_NAME",
    "STANDARD_COLUMNS",
    "USAGE_TABLE",
    "KqlQuery",
    "KqlResult",
    "NodeMissingError",
    "check_arm_rule",
    "check_dcr_template",
    "check_hunting_yaml",
    "check_parameter_file",
    "check_rule_yaml",
    "check_template_basics",
    "collect_queries",
    "ensure_node_modules",
    "iter_problems",
    "kusto_table",
    "legacy_table",
    "markdown_kusto_blocks",
    "run_kql",
    "source_table",
    "workspace_table",
]

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from gen_templates import API_VERSIONS, MONITORING_METRICS_PUBLISHER, OPERATORS, OUTPUTS, ROOT, arm_duration

from sentinel_forwarder._model.schema import AUDIT_TABLE, TableSchema

KQL_DIR = ROOT / "tools" / "kql"

#: Table type -> Kusto scalar type, and DCR stream type -> Kusto scalar type.
_KUSTO_TYPES: Mapping[str, str] = {
    "string": "string",
    "int": "int",
    "long": "long",
    "real": "real",
    "boolean": "bool",
    "dateTime": "datetime",
    "datetime": "datetime",
    "guid": "guid",
    "dynamic": "dynamic",
}

#: The table the retired HTTP Data Collector API would have made (``docs/migration.md`` queries it).
LEGACY_TABLE_NAME = "AISentinelAuditLegacy_CL"
_LEGACY_SUFFIX: Mapping[str, tuple[str, str]] = {
    "string": ("_s", "string"),
    "int": ("_d", "real"),
    "long": ("_d", "real"),
    "real": ("_d", "real"),
    "boolean": ("_b", "bool"),
    "dateTime": ("_t", "datetime"),
    "guid": ("_g", "guid"),
    "dynamic": ("_s", "string"),
}

Columns = list[tuple[str, str]]


def kusto_table(table: TableSchema = AUDIT_TABLE) -> Columns:
    """The table's columns as (name, Kusto type), from ``properties.schema.columns``."""
    return [(c["name"], _KUSTO_TYPES[c["type"]]) for c in table.table_columns()]


#: Columns Log Analytics adds to every table; queries may use them, a transform's output may not.
STANDARD_COLUMNS: Columns = [
    ("Type", "string"),
    ("TenantId", "string"),
    ("_ResourceId", "string"),
    ("_SubscriptionId", "string"),
    ("_BilledSize", "real"),
    ("_IsBillable", "bool"),
]

#: The workspace's built-in ``Usage`` table (billable volume per table and hour), for cost queries.
USAGE_TABLE: Columns = [
    ("TimeGenerated", "datetime"),
    ("StartTime", "datetime"),
    ("EndTime", "datetime"),
    ("DataType", "string"),
    ("Solution", "string"),
    ("Quantity", "real"),
    ("QuantityUnit", "string"),
    ("IsBillable", "bool"),
    ("Type", "string"),
]


def workspace_table(table: TableSchema = AUDIT_TABLE) -> Columns:
    """The table as a query sees it in the workspace: its columns plus :data:`STANDARD_COLUMNS`."""
    return kusto_table(table) + STANDARD_COLUMNS


def source_table(table: TableSchema = AUDIT_TABLE) -> Columns:
    """The columns a DCR ``transformKql`` sees as ``source``: the stream declaration's."""
    return [(c["name"], _KUSTO_TYPES[c["type"]]) for c in table.stream_columns()]


def legacy_table(table: TableSchema = AUDIT_TABLE) -> Columns:
    """The Data Collector API shape of *table*: type-suffixed names, plus ``TimeGenerated``."""
    cols: Columns = [("TimeGenerated", "datetime")]
    for col in table.columns:
        if col.name == "TimeGenerated":
            continue
        suffix, kusto = _LEGACY_SUFFIX[col.type]
        cols.append((col.name + suffix, kusto))
    return cols


# --- KQL ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KqlQuery:
    """One query to check; *expect_columns* set means the result columns must equal it (transforms)."""

    name: str
    query: str
    tables: Mapping[str, Columns]
    expect_columns: Columns | None = None


@dataclass(frozen=True)
class KqlResult:
    name: str
    errors: list[str]
    warnings: list[str]
    columns: Columns | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.problems


class NodeMissingError(RuntimeError):
    """``node`` or ``npm`` is not on PATH, so KQL cannot be validated."""


def ensure_node_modules(kql_dir: Path = KQL_DIR) -> None:
    """Install the pinned validator package with ``npm ci`` unless ``node_modules`` is there.

    :raises NodeMissingError: if node or npm is missing.
    :raises subprocess.CalledProcessError: if ``npm ci`` fails.
    """
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise NodeMissingError(
            f"{' and '.join(missing)} not found on PATH: the KQL content tests need Node.js (>= 18) and npm "
            f"to run Kusto.Language from tools/kql (npm ci --prefix {kql_dir.relative_to(ROOT)})"
        )
    if not (kql_dir / "node_modules" / "@kusto" / "language-service-next").is_dir():
        subprocess.run(
            ["npm", "ci", "--prefix", str(kql_dir), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=300,
        )


def _location(query: str, start: int) -> str:
    line = query.count("\n", 0, start) + 1
    col = start - (query.rfind("\n", 0, start) + 1) + 1
    return f"{line}:{col}"


def run_kql(queries: Sequence[KqlQuery], kql_dir: Path = KQL_DIR) -> dict[str, KqlResult]:
    """Parse and type-check *queries* in one ``node`` process; results by query name."""
    payload = [
        {
            "name": q.name,
            "query": q.query,
            "tables": {t: [list(c) for c in cols] for t, cols in q.tables.items()},
        }
        for q in queries
    ]
    proc = subprocess.run(
        ["node", str(kql_dir / "validate.js")],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tools/kql/validate.js failed ({proc.returncode}): {proc.stderr.strip()}")
    results: dict[str, KqlResult] = {}
    for q, raw in zip(queries, json.loads(proc.stdout), strict=True):
        errors: list[str] = []
        warnings: list[str] = []
        for d in raw["diagnostics"]:
            text = f"{d['code']} at {_location(q.query, d['start'])}: {d['message']}"
            (errors if d["severity"] == "Error" else warnings).append(text)
        columns = [(c[0], c[1]) for c in raw["columns"]] if raw["columns"] is not None else None
        problems = []
        if columns is None:
            problems.append("the query has no tabular result")
        elif q.expect_columns is not None and columns != q.expect_columns:
            problems.append(f"result columns {columns} != table columns {q.expect_columns}")
        results[q.name] = KqlResult(q.name, errors, warnings, columns, problems)
    return results


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*$")


def markdown_kusto_blocks(text: str) -> list[tuple[int, str]]:
    """Fenced ``kusto`` (or ``kql``) code blocks of a Markdown text: (first line number, code)."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m["fence"], m["lang"].lower(), i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(m["indent"]) :] if lines[i].startswith(m["indent"]) else lines[i])
            i += 1
        i += 1
        if lang in ("kusto", "kql"):
            blocks.append((start + 1, "\n".join(body)))
    return blocks


def _resolve_parameter(template: Mapping[str, Any], value: str) -> str:
    m = re.fullmatch(r"\[parameters\('(\w+)'\)\]", value)
    return str(template["parameters"][m[1]]["defaultValue"]) if m else value


def collect_queries(root: Path = ROOT, table: TableSchema = AUDIT_TABLE) -> list[KqlQuery]:
    """Every KQL query of the repository's content, docs and README, named ``<file>[#<where>]``.

    A Markdown block that starts with ``source`` is a DCR transformation example and is checked like the
    templates' ``transformKql``: against the stream's columns, its result columns equal to the table's.
    """
    audit = {table.name: workspace_table(table)}
    docs_tables = audit | {LEGACY_TABLE_NAME: legacy_table(table) + STANDARD_COLUMNS, "Usage": USAGE_TABLE}
    out: list[KqlQuery] = []

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    for kind in ("analytics", "hunting"):
        for path in sorted((root / "sentinel_forwarder" / "templates" / "sentinel" / kind).glob("*.yaml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            out.append(KqlQuery(rel(path), str(doc.get("query", "")), audit))
    gallery = root / "sentinel_forwarder" / "templates" / "sentinel" / "workbook.gallery.json"
    if gallery.exists():
        for item in json.loads(gallery.read_text(encoding="utf-8"))["items"]:
            if item.get("type") == 3:
                out.append(KqlQuery(f"{rel(gallery)}#{item['name']}", item["content"]["query"], audit))
    for path in sorted((root / "sentinel_forwarder" / "templates").glob("*.json")):
        template = json.loads(path.read_text(encoding="utf-8"))
        for res in template.get("resources", []):
            if res.get("type") != "Microsoft.Insights/dataCollectionRules":
                continue
            for n, flow in enumerate(res["properties"].get("dataFlows", [])):
                kql = _resolve_parameter(template, flow.get("transformKql", "source"))
                out.append(
                    KqlQuery(
                        f"{rel(path)}#dataFlows[{n}].transformKql",
                        kql,
                        {"source": source_table(table)},
                        expect_columns=kusto_table(table),
                    )
                )
    md_files = [*sorted((root / "docs").glob("*.md")), root / "README.md"]
    for path in md_files:
        if path.exists():
            for line, code in markdown_kusto_blocks(path.read_text(encoding="utf-8")):
                if re.match(r"\s*source\b", code):  # a DCR transformation example
                    out.append(
                        KqlQuery(
                            f"{rel(path)}:{line}",
                            code,
                            {"source": source_table(table)},
                            expect_columns=kusto_table(table),
                        )
                    )
                else:
                    out.append(KqlQuery(f"{rel(path)}:{line}", code, docs_tables))
    return out


# --- Sentinel YAML and ARM ----------------------------------------------------------------------------------

_YAML_DURATION = re.compile(r"^(\d+)([mhd])$")
_MINUTES = {"m": 1, "h": 60, "d": 1440}
SEVERITIES = ("Informational", "Low", "Medium", "High")
_ENTITY_TYPES = (
    "Account Host IP Malware File Process CloudApplication DNS AzureResource FileHash RegistryKey \
RegistryValue SecurityGroup URL Mailbox MailCluster MailMessage SubmissionMail"
)
ENTITY_TYPES = frozenset(_ENTITY_TYPES.split())
_TACTICS = "Reconnaissance ResourceDevelopment InitialAccess Execution Persistence PrivilegeEscalation \
DefenseEvasion CredentialAccess Discovery LateralMovement Collection Exfiltration CommandAndControl Impact \
ImpairProcessControl InhibitResponseFunction PreAttack"
TACTICS = frozenset(_TACTICS.split())


def _minutes(value: Any) -> int | None:
    m = _YAML_DURATION.match(str(value))
    return int(m[1]) * _MINUTES[m[2]] if m else None


def _is_guid(value: Any) -> bool:
    try:
        return str(uuid.UUID(str(value))) == str(value).lower()
    except ValueError:
        return False


def _check_common(doc: Mapping[str, Any]) -> list[str]:
    problems = []
    if not _is_guid(doc.get("id")):
        problems.append(f"id {doc.get('id')!r} is not a GUID")
    name = doc.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 256:
        problems.append("name must be a string of 1-256 characters")
    desc = doc.get("description")
    if not isinstance(desc, str) or not 1 <= len(desc) <= 5000:
        problems.append("description must be a string of 1-5000 characters")
    query = doc.get("query")
    if not isinstance(query, str) or not 1 <= len(query) <= 10000:
        problems.append("query must be a string of 1-10,000 characters")
    if not isinstance(doc.get("requiredDataConnectors"), list):
        problems.append("requiredDataConnectors must be a list")
    for tactic in doc.get("tactics") or []:
        if tactic not in TACTICS:
            problems.append(f"unknown tactic {tactic!r}")
    for technique in doc.get("relevantTechniques") or []:
        if not re.fullmatch(r"T\d{4}(\.\d{3})?", str(technique)):
            problems.append(f"technique {technique!r} is not T#### or T####.###")
    return problems


def _check_entity_mappings(mappings: Any) -> list[str]:
    if not isinstance(mappings, list) or not 1 <= len(mappings) <= 5:
        return ["entityMappings must hold 1-5 entries"]
    problems = []
    for n, mapping in enumerate(mappings):
        if mapping.get("entityType") not in ENTITY_TYPES:
            problems.append(f"entityMappings[{n}]: unknown entityType {mapping.get('entityType')!r}")
        fields = mapping.get("fieldMappings")
        if not isinstance(fields, list) or not 1 <= len(fields) <= 3:
            problems.append(f"entityMappings[{n}]: fieldMappings must hold 1-3 entries")
            continue
        for f in fields:
            if not f.get("identifier") or not f.get("columnName"):
                problems.append(f"entityMappings[{n}]: a field mapping needs identifier and columnName")
    return problems


def check_rule_yaml(rule: Mapping[str, Any]) -> list[str]:
    """Azure-Sentinel repository constraints for a scheduled analytics rule in YAML form."""
    problems = _check_common(rule)
    if rule.get("kind") != "Scheduled":
        problems.append(f"kind must be Scheduled, not {rule.get('kind')!r}")
    if rule.get("severity") not in SEVERITIES:
        problems.append(f"severity {rule.get('severity')!r} not in {SEVERITIES}")
    freq, period = _minutes(rule.get("queryFrequency")), _minutes(rule.get("queryPeriod"))
    for key, value in (("queryFrequency", freq), ("queryPeriod", period)):
        if value is None:
            problems.append(f"{key} {rule.get(key)!r} is not <n>m, <n>h or <n>d")
        elif not 5 <= value <= 14 * 1440:
            problems.append(f"{key} {rule.get(key)!r} is outside 5m-14d")
    if freq is not None and period is not None and period < freq:
        problems.append(f"queryPeriod {rule.get('queryPeriod')} is shorter than queryFrequency")
    if rule.get("triggerOperator") not in OPERATORS:
        problems.append(f"triggerOperator {rule.get('triggerOperator')!r} not in {sorted(OPERATORS)}")
    threshold = rule.get("triggerThreshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= 10000:
        problems.append("triggerThreshold must be an integer 0-10,000")
    problems += _check_entity_mappings(rule.get("entityMappings"))
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(rule.get("version"))):
        problems.append("version must be x.y.z")
    if len(rule.get("customDetails") or {}) > 20:
        problems.append("customDetails holds more than 20 entries")
    return problems


def check_hunting_yaml(hunt: Mapping[str, Any]) -> list[str]:
    """Azure-Sentinel repository constraints for a hunting query in YAML form."""
    problems = _check_common(hunt)
    if "entityMappings" in hunt:
        problems += _check_entity_mappings(hunt["entityMappings"])
    return problems


def check_arm_rule(rule: Mapping[str, Any], resource: Mapping[str, Any]) -> list[str]:
    """The ARM ``alertRules`` resource agrees with the YAML rule and has what the resource provider needs."""
    problems = []
    if resource.get("type") != "Microsoft.SecurityInsights/alertRules":
        problems.append(f"type {resource.get('type')!r} is not Microsoft.SecurityInsights/alertRules")
    if resource.get("apiVersion") != API_VERSIONS["Microsoft.SecurityInsights/alertRules"]:
        problems.append(f"apiVersion {resource.get('apiVersion')!r}")
    if resource.get("kind") != "Scheduled":
        problems.append("kind must be Scheduled")
    if resource.get("name") != str(rule.get("id")):
        problems.append("resource name must be the rule id")
    props = resource.get("properties", {})
    for key in ("displayName", "enabled", "suppressionDuration", "suppressionEnabled", "query", "severity"):
        if key not in props:
            problems.append(f"properties.{key} is missing")
    expected = {
        "displayName": rule.get("name"),
        "description": str(rule.get("description", "")).strip(),
        "severity": rule.get("severity"),
        "query": str(rule.get("query", "")).strip(),
        "triggerOperator": OPERATORS.get(str(rule.get("triggerOperator")), "?"),
        "triggerThreshold": rule.get("triggerThreshold"),
        "tactics": list(rule.get("tactics", [])),
        "techniques": list(rule.get("relevantTechniques", [])),
        "entityMappings": rule.get("entityMappings"),
    }
    for key in ("queryFrequency", "queryPeriod"):
        try:
            expected[key] = arm_duration(str(rule.get(key)))
        except ValueError as exc:
            problems.append(str(exc))
    for key, value in expected.items():
        if props.get(key) != value:
            problems.append(f"properties.{key} {props.get(key)!r} != YAML {value!r}")
    for key in ("queryFrequency", "queryPeriod", "suppressionDuration"):
        if not re.fullmatch(r"P(\d+D)?(T(\d+H)?(\d+M)?)?", str(props.get(key, ""))):
            problems.append(f"properties.{key} {props.get(key)!r} is not an ISO 8601 duration")
    if props.get("triggerOperator") not in OPERATORS.values():
        problems.append(f"properties.triggerOperator {props.get('triggerOperator')!r}")
    return problems


# --- ARM templates ------------------------------------------------------------------------------------------


def _by_type(template: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for res in template.get("resources", []):
        out.setdefault(res.get("type", "?"), []).append(res)
    return out


def _referenced(template: Mapping[str, Any], kind: str) -> set[str]:
    text = json.dumps({k: v for k, v in template.items() if k != "parameters"})
    return set(re.findall(kind + r"\('(\w+)'\)", text))


def check_template_basics(template: Mapping[str, Any]) -> list[str]:
    """Schema, contentVersion, api-versions, and every ``parameters('x')`` declared."""
    problems = []
    if "deploymentTemplate.json" not in str(template.get("$schema", "")):
        problems.append("$schema is not a deploymentTemplate schema")
    if not template.get("contentVersion"):
        problems.append("contentVersion is missing")
    for res in template.get("resources", []):
        expected = API_VERSIONS.get(res.get("type", ""))
        if expected is None:
            problems.append(f"unexpected resource type {res.get('type')!r}")
        elif res.get("apiVersion") != expected:
            problems.append(f"{res['type']}: apiVersion {res.get('apiVersion')!r} != {expected}")
        if not res.get("name"):
            problems.append(f"{res.get('type')}: name is missing")
    undeclared = _referenced(template, "parameters") - set(template.get("parameters", {}))
    if undeclared:
        problems.append(f"undeclared parameters: {sorted(undeclared)}")
    undeclared = _referenced(template, "variables") - set(template.get("variables", {}))
    if undeclared:
        problems.append(f"undeclared variables: {sorted(undeclared)}")
    return problems


def check_dcr_template(
    template: Mapping[str, Any], table: TableSchema = AUDIT_TABLE, *, direct: bool | None = None
) -> list[str]:
    """A table + DCR (+ DCE) + role assignment template against the library schema *table*."""
    problems = check_template_basics(template)
    res = _by_type(template)
    tables = res.get("Microsoft.OperationalInsights/workspaces/tables", [])
    dcrs = res.get("Microsoft.Insights/dataCollectionRules", [])
    dces = res.get("Microsoft.Insights/dataCollectionEndpoints", [])
    roles = res.get("Microsoft.Authorization/roleAssignments", [])
    if len(tables) != 1 or len(dcrs) != 1 or len(roles) != 1:
        return [*problems, "expected exactly one table, one DCR and one role assignment"]
    tprops = tables[0].get("properties", {})
    if f"'{table.name}'" not in str(tables[0].get("name")):
        problems.append(f"table resource name {tables[0].get('name')!r} does not name {table.name}")
    schema = tprops.get("schema", {})
    if schema.get("name") != table.name:
        problems.append(f"table schema name {schema.get('name')!r} != {table.name}")
    table_cols = [{"name": c.get("name"), "type": c.get("type")} for c in schema.get("columns", [])]
    if table_cols != table.table_columns():
        problems.append(f"table columns {table_cols} != AUDIT_TABLE {table.table_columns()}")
    for key in ("plan", "retentionInDays", "totalRetentionInDays"):
        if key not in tprops:
            problems.append(f"table properties.{key} is missing")
    params = template.get("parameters", {})
    if sorted(params.get("tablePlan", {}).get("allowedValues", [])) != ["Analytics", "Basic"]:
        problems.append("parameter tablePlan must allow Analytics and Basic")
    for key in ("retentionInDays", "totalRetentionInDays", "principalId"):
        if key not in params:
            problems.append(f"parameter {key} is missing")

    dcr = dcrs[0]
    props = dcr.get("properties", {})
    decl = props.get("streamDeclarations", {}).get(table.stream)
    if decl is None:
        problems.append(f"streamDeclarations has no {table.stream}")
    elif decl.get("columns") != table.stream_columns():
        problems.append(f"stream columns {decl.get('columns')} != AUDIT_TABLE {table.stream_columns()}")
    if decl is not None:
        stream_names = [c.get("name") for c in decl.get("columns", [])]
        if stream_names != [c["name"] for c in table_cols]:
            problems.append("stream columns and table columns differ")
    dest_names = [d.get("name") for d in props.get("destinations", {}).get("logAnalytics", [])]
    if not dest_names:
        problems.append("no logAnalytics destination")
    flows = props.get("dataFlows", [])
    if not 1 <= len(flows) <= 10:
        problems.append("dataFlows must hold 1-10 entries")
    for flow in flows:
        if flow.get("streams") != [table.stream]:
            problems.append(f"dataFlow streams {flow.get('streams')} != [{table.stream}]")
        if flow.get("outputStream") != table.output_stream:
            problems.append(f"dataFlow outputStream {flow.get('outputStream')!r} != {table.output_stream}")
        if not set(flow.get("destinations", [])) <= set(dest_names) or not flow.get("destinations"):
            problems.append("dataFlow destinations do not name a declared destination")
        kql = _resolve_parameter(template, flow.get("transformKql", "source"))
        if len(kql) > 15360:
            problems.append("transformKql is longer than 15,360 characters")
    is_direct = dcr.get("kind") == "Direct"
    if direct is not None and is_direct != direct:
        problems.append(f"DCR kind {dcr.get('kind')!r}, expected {'Direct' if direct else 'no kind'}")
    if is_direct:
        if dces or "dataCollectionEndpointId" in props:
            problems.append("a Direct DCR needs no DCE")
    else:
        if len(dces) != 1:
            problems.append("a DCR without kind Direct needs exactly one DCE")
        if "dataCollectionEndpointId" not in props:
            problems.append("DCR properties.dataCollectionEndpointId is missing")

    role = roles[0].get("properties", {})
    if MONITORING_METRICS_PUBLISHER not in str(role.get("roleDefinitionId")):
        problems.append("role assignment is not Monitoring Metrics Publisher")
    if "dataCollectionRules" not in str(roles[0].get("scope")):
        problems.append("role assignment is not scoped to the DCR")
    if not role.get("principalId"):
        problems.append("role assignment principalId is missing")

    outputs = template.get("outputs", {})
    if set(outputs) != set(OUTPUTS):
        problems.append(f"outputs {sorted(outputs)} != {sorted(OUTPUTS)}")
    else:
        if outputs["streamName"].get("value") != table.stream:
            problems.append("output streamName is not the stream name")
        if "immutableId" not in str(outputs["ruleId"].get("value")):
            problems.append("output ruleId is not the DCR immutableId")
        want = "endpoints.logsIngestion" if is_direct else "logsIngestion.endpoint"
        if want not in str(outputs["endpoint"].get("value")):
            problems.append(f"output endpoint does not read {want}")
    return problems


def check_parameter_file(parameters: Mapping[str, Any], template: Mapping[str, Any]) -> list[str]:
    """Every value names a declared parameter; every parameter without a default has a value."""
    problems = []
    if "deploymentParameters.json" not in str(parameters.get("$schema", "")):
        problems.append("$schema is not a deploymentParameters schema")
    declared = template.get("parameters", {})
    values = parameters.get("parameters", {})
    problems += [f"unknown parameter {k!r}" for k in values if k not in declared]
    problems += [
        f"required parameter {k!r} has no value"
        for k, v in declared.items()
        if "defaultValue" not in v and k not in values
    ]
    for k, v in values.items():
        allowed = declared.get(k, {}).get("allowedValues")
        if allowed is not None and v.get("value") not in allowed:
            problems.append(f"parameter {k!r}: {v.get('value')!r} not in {allowed}")
    return problems


def iter_problems(named: Iterable[tuple[str, list[str]]]) -> list[str]:
    """Flatten ``(name, problems)`` pairs into ``name: problem`` lines."""
    return [f"{name}: {p}" for name, problems in named for p in problems]
