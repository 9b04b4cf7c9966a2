"""Run Sentinel analytics rules and hunting queries locally, over what an emulator holds.

A rule is read from its YAML (the Azure-Sentinel repository's format, the one ``templates/sentinel/`` ships).
Each scheduled run is a query "as of" a moment: ``now()`` is that moment and the rows are those whose
``TimeGenerated`` is inside the rule's ``queryPeriod`` before it (Sentinel limits a scheduled query to its
period). The run *fires* when the number of result rows compares to ``triggerThreshold`` by
``triggerOperator`` (``gt``, ``lt``, ``eq``, ``ne``). With *since*, the runs are those Sentinel would have
made every ``queryFrequency`` from then until now (the latest first), so a burst an hour ago is still found;
without it, one run now. Hunting queries have no trigger: they run once over everything and report their rows.

Entities come from each result row through the rule's ``entityMappings``; custom details through
``customDetails``. KQL runs on DuckDB (see docs/kql.md for where that may differ from Log Analytics).

Needs PyYAML and the query engine's packages (the ``emulator`` extra). Never imported by the core.
"""

from __future__ import annotations

__all__ = [
    "MAX_RUNS",
    "Alert",
    "QueryFunction",
    "Rule",
    "RuleError",
    "RuleReport",
    "database_query",
    "http_query",
    "load_rules",
    "parse_duration",
    "run_rules",
    "shipped_rules",
]

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

from ._query import DEFAULT_WORKSPACE_ID, LocalWorkspace, QueryError, QueryResult, Timespan, parse_timespan
from ._store import read_snapshot

#: At most this many scheduled runs of one rule are simulated (the latest ones).
MAX_RUNS = 10_000

#: ``query(kql, timespan, now) -> QueryResult``: an emulator's :meth:`~Emulator.query_result`, a database
#: file's :func:`run_query`, or the HTTP query API.
QueryFunction = Callable[[str, "Timespan | None", datetime], QueryResult]

_DURATION = re.compile(r"^(\d+)\s*([mhd])$")
_ISO_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$", re.IGNORECASE)
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_OPERATORS: Mapping[str, Callable[[int, int], bool]] = {
    "gt": lambda n, t: n > t,
    "lt": lambda n, t: n < t,
    "eq": lambda n, t: n == t,
    "ne": lambda n, t: n != t,
}
# The ARM spellings (Microsoft.SecurityInsights/alertRules) of the same operators.
_ARM_OPERATORS = {"greaterthan": "gt", "lessthan": "lt", "equal": "eq", "notequal": "ne"}


class RuleError(ValueError):
    """A rule file that cannot be read or run (not YAML, no query, an unknown operator or duration)."""


def parse_duration(text: object) -> timedelta:
    """``5m``, ``1h``, ``14d`` (the YAML form) or ``PT5M``, ``P1D`` (the ARM form).

    :raises RuleError: for anything else.
    """
    value = str(text).strip()
    match = _DURATION.match(value)
    if match:
        return int(match.group(1)) * _UNITS[match.group(2)]
    iso = _ISO_DURATION.match(value)
    if iso and any(iso.groups()):
        days, hours, minutes = (int(g or 0) for g in iso.groups())
        return timedelta(days=days, hours=hours, minutes=minutes)
    raise RuleError(f"invalid duration {value!r}: expected <n>m, <n>h or <n>d (or ISO 8601, PT5M)")


@dataclass(frozen=True)
class Rule:
    """An analytics rule (``triggerOperator`` set) or a hunting query, as read from its YAML."""

    name: str
    query: str
    #: ``None`` for a hunting query.
    query_frequency: timedelta | None = None
    query_period: timedelta | None = None
    trigger_operator: str | None = None
    trigger_threshold: int = 0
    #: ``[(entityType, identifier, columnName), ...]``.
    entity_mappings: tuple[tuple[str, str, str], ...] = ()
    #: ``{detail name: column name}``.
    custom_details: Mapping[str, str] = field(default_factory=dict)
    id: str = ""
    severity: str = ""
    source: str = ""

    @property
    def kind(self) -> str:
        """``analytics`` (it can fire) or ``hunting``."""
        return "hunting" if self.trigger_operator is None else "analytics"

    def matches(self, text: str) -> bool:
        """Whether *text* names this rule: its id, its file name (with or without ``.yaml``), or a
        case-insensitive part of its name."""
        stem = Path(self.source).name
        return text in (self.id, stem, stem.removesuffix(".yaml")) or text.lower() in self.name.lower()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "") -> Rule:
        """Build a rule from decoded YAML.

        :raises RuleError: if it has no query or an invalid trigger or duration.
        """
        where = source or "rule"
        query = data.get("query")
        if not isinstance(query, str) or not query.strip():
            raise RuleError(f"{where}: no query")
        name = str(data.get("name") or Path(source).stem or "rule")
        operator = data.get("triggerOperator")
        if operator is not None:
            operator = _ARM_OPERATORS.get(str(operator).lower(), str(operator).lower())
            if operator not in _OPERATORS:
                raise RuleError(
                    f"{where}: unknown triggerOperator {data['triggerOperator']!r} (gt, lt, eq, ne)"
                )
        threshold = data.get("triggerThreshold", 0)
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise RuleError(f"{where}: triggerThreshold must be an integer, not {threshold!r}")
        try:
            frequency = parse_duration(data["queryFrequency"]) if "queryFrequency" in data else None
            period = parse_duration(data["queryPeriod"]) if "queryPeriod" in data else None
        except RuleError as exc:
            raise RuleError(f"{where}: {exc}") from None
        if operator is not None and (frequency is None or period is None):
            raise RuleError(f"{where}: a scheduled rule needs queryFrequency and queryPeriod")
        mappings: list[tuple[str, str, str]] = []
        for mapping in data.get("entityMappings") or ():
            for fields in mapping.get("fieldMappings") or ():
                mappings.append(
                    (str(mapping.get("entityType")), str(fields["identifier"]), str(fields["columnName"]))
                )
        details = {str(k): str(v) for k, v in (data.get("customDetails") or {}).items()}
        return cls(
            name=name,
            query=query,
            query_frequency=frequency,
            query_period=period,
            trigger_operator=operator,
            trigger_threshold=threshold,
            entity_mappings=tuple(mappings),
            custom_details=details,
            id=str(data.get("id") or ""),
            severity=str(data.get("severity") or ""),
            source=source,
        )


def _parse_yaml(text: str, source: str) -> Rule:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise RuleError(f"{source}: expected a YAML mapping")
    return Rule.from_mapping(data, source=source)


def load_rules(paths: Iterable[str | Path]) -> list[Rule]:
    """Read rule YAML files (a folder: every ``*.yaml`` and ``*.yml`` in it).

    :raises RuleError: for a file that cannot be read or is not a rule.
    """
    rules: list[Rule] = []
    for given in paths:
        path = Path(given)
        found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for item in found:
            try:
                text = item.read_text(encoding="utf-8")
            except OSError as exc:
                raise RuleError(f"cannot read {str(item)!r}: {exc.strerror or exc}") from None
            rules.append(_parse_yaml(text, str(item)))
    return rules


def shipped_rules() -> list[Rule]:
    """The analytics rules and hunting queries this package ships (``templates/sentinel/``), analytics
    first."""
    root = files("sentinel_forwarder") / "templates" / "sentinel"
    rules: list[Rule] = []
    for folder in ("analytics", "hunting"):
        for item in sorted((root / folder).iterdir(), key=lambda i: i.name):
            if item.name.endswith(".yaml"):
                rules.append(_parse_yaml(item.read_text(encoding="utf-8"), f"sentinel/{folder}/{item.name}"))
    return rules


@dataclass(frozen=True)
class Alert:
    """What one result row of a firing run would raise: its entities and custom details."""

    #: The run's moment (``now()`` of the query).
    at: datetime
    #: ``{"entityType": ..., identifier: value}`` per entity mapping with a value.
    entities: tuple[Mapping[str, Any], ...]
    custom_details: Mapping[str, Any]
    row: Mapping[str, Any]


@dataclass(frozen=True)
class RuleReport:
    """What running one rule found."""

    rule: Rule
    #: Analytics: whether any run fired; hunting: whether the query returned rows.
    fired: bool
    #: How many runs were made and how many fired (hunting: one run).
    runs: int
    runs_fired: int
    #: Result rows of the runs that fired (hunting: every row), latest run first.
    alerts: tuple[Alert, ...]
    #: Why the rule could not run (then nothing else is meaningful), e.g. an unsupported KQL construct.
    error: str | None = None

    def entities(self) -> list[Mapping[str, Any]]:
        """The distinct entities of every alert, in order."""
        seen: dict[tuple[tuple[str, Any], ...], Mapping[str, Any]] = {}
        for alert in self.alerts:
            for entity in alert.entities:
                seen.setdefault(tuple(sorted(entity.items(), key=lambda kv: kv[0])), entity)
        return list(seen.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: rule name, id, kind, source, fired, runs, alerts (entities, details), error."""
        return {
            "rule": self.rule.name,
            "id": self.rule.id,
            "kind": self.rule.kind,
            "source": self.rule.source,
            "severity": self.rule.severity,
            "fired": self.fired,
            "runs": self.runs,
            "runs_fired": self.runs_fired,
            "entities": [dict(e) for e in self.entities()],
            "alerts": [
                {
                    "at": _iso(a.at),
                    "entities": [dict(e) for e in a.entities],
                    "custom_details": _jsonable(a.custom_details),
                }
                for a in self.alerts
            ],
            "error": self.error,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _alert(rule: Rule, at: datetime, row: Mapping[str, Any]) -> Alert:
    by_type: dict[str, dict[str, Any]] = {}
    for entity_type, identifier, column in rule.entity_mappings:
        value = row.get(column)
        if value is not None and value != "":
            by_type.setdefault(entity_type, {"entityType": entity_type})[identifier] = value
    details = {name: row.get(column) for name, column in rule.custom_details.items()}
    return Alert(at, tuple(by_type.values()), details, dict(row))


def _run_times(rule: Rule, now: datetime, since: datetime | None) -> list[datetime]:
    if rule.query_frequency is None or since is None or since >= now:
        return [now]
    count = min(MAX_RUNS, int((now - since) / rule.query_frequency) + 1)
    return [now - i * rule.query_frequency for i in range(count)]


def run_rule(rule: Rule, query: QueryFunction, *, now: datetime, since: datetime | None = None) -> RuleReport:
    """Run one rule (see the module docstring).

    :param rule: The rule.
    :param query: Runs KQL: ``query(kql, timespan, now)``.
    :param now: The latest run's moment.
    :param since: Simulate the runs every ``queryFrequency`` back to this moment (at most :data:`MAX_RUNS`).
    """
    alerts: list[Alert] = []
    times = _run_times(rule, now, since)
    fired_runs = 0
    for at in times:
        try:
            result = query(rule.query, rule.query_period, at)
        except QueryError as exc:
            return RuleReport(rule, False, len(times), 0, (), error=f"{exc.code}: {exc.message}")
        rows = result.dicts()
        if rule.trigger_operator is None:
            fires = bool(rows)
        else:
            fires = _OPERATORS[rule.trigger_operator](len(rows), rule.trigger_threshold)
        if fires:
            fired_runs += 1
            alerts += [_alert(rule, at, row) for row in rows]
    return RuleReport(rule, fired_runs > 0, len(times), fired_runs, tuple(alerts))


def run_rules(
    rules: Sequence[Rule], query: QueryFunction, *, now: datetime | None = None, since: datetime | None = None
) -> list[RuleReport]:
    """Run every rule in *rules*; see :func:`run_rule`.

    :param now: The latest run's moment; default: the current time.
    """
    moment = now or datetime.now(timezone.utc)
    return [run_rule(rule, query, now=moment, since=since) for rule in rules]


# -- where the rows are ------------------------------------------------------------------------------------


def database_query(db: str | Path, *, workspace_id: str = DEFAULT_WORKSPACE_ID) -> QueryFunction:
    """Queries over an emulator's database file (``emulator --db``), read once into a :class:`LocalWorkspace`
    (freed when the process exits).

    :raises FileNotFoundError: if there is no such file.
    """
    workspace = LocalWorkspace(read_snapshot(db), workspace_id=workspace_id)

    def query(kql: str, timespan: Timespan | None, now: datetime) -> QueryResult:
        return workspace.query(kql, timespan=timespan, now=now)

    return query


def http_query(
    url: str,
    *,
    workspace_id: str = DEFAULT_WORKSPACE_ID,
    token: str = "sentinel-forwarder-rules",
    ca_path: str | Path | None = None,
    timeout: float = 60.0,
) -> QueryFunction:
    """Queries through a running emulator's Logs Query API (``POST {url}/v1/workspaces/{id}/query``).

    The API has no "as of": ``now()`` is the emulator's clock, so *now* must be about the current time (the
    timespan still ends at *now*).

    :param url: The emulator's endpoint, ``http(s)://127.0.0.1:<port>``.
    :param ca_path: The emulator's CA file for ``https://``.
    """
    import json
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca_path)) if ca_path else None
    target = f"{url.rstrip('/')}/v1/workspaces/{workspace_id}/query"

    def query(kql: str, timespan: Timespan | None, now: datetime) -> QueryResult:
        span = parse_timespan(timespan, now)
        body = {"query": kql, "timespan": None if span is None else f"{_iso(span[0])}/{_iso(span[1])}"}
        request = urllib.request.Request(
            target,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
                return QueryResult.from_response(json.loads(answer.read()))
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                inner = error.get("innererror") or {}
                detail = inner.get("innererror") or {}
                raise QueryError(
                    str(inner.get("code") or error.get("code")),
                    str(inner.get("message") or error["message"]),
                    detail=detail,
                ) from None
            except (ValueError, KeyError, TypeError):
                raise QueryError("HttpError", f"{target}: HTTP {exc.code}") from None

    return query
