"""Shared data of the content tests: the repository root and deliberately broken KQL fixtures."""

from __future__ import annotations

__all__ = ["AUDIT", "KQL_FIXTURES", "ROOT", "SOURCE", "TEMPLATES", "cc", "gen"]

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

import content_checks as cc  # noqa: E402
import gen_templates as gen  # noqa: E402

from sentinel_forwarder._model.schema import AUDIT_TABLE  # noqa: E402

#: The templates and Sentinel content (package data).
TEMPLATES = ROOT / gen.TEMPLATES
AUDIT = {AUDIT_TABLE.name: cc.kusto_table()}
SOURCE = {"source": cc.source_table()}

#: Deliberately broken (and one good) queries: proof that the validator can fail. name -> (query, must fail).
KQL_FIXTURES: dict[str, tuple[cc.KqlQuery, bool]] = {
    "fixture:suffixed-column": (
        cc.KqlQuery("fixture:suffixed-column", 'AISentinelAudit_CL | where Severity_s == "High"', AUDIT),
        True,
    ),
    "fixture:unknown-table": (
        cc.KqlQuery("fixture:unknown-table", "AISentinelAudit | take 1", AUDIT),
        True,
    ),
    "fixture:unknown-function": (
        cc.KqlQuery("fixture:unknown-function", "AISentinelAudit_CL | extend x = no_such_fn(Id)", AUDIT),
        True,
    ),
    "fixture:type-error": (
        cc.KqlQuery(
            "fixture:type-error", "AISentinelAudit_CL | where TimeGenerated > 5 and Hash > now()", AUDIT
        ),
        True,
    ),
    "fixture:syntax-error": (
        cc.KqlQuery("fixture:syntax-error", "AISentinelAudit_CL | where", AUDIT),
        True,
    ),
    "fixture:transform-drops-column": (
        cc.KqlQuery(
            "fixture:transform-drops-column",
            "source | project-away PreviousHash",
            SOURCE,
            expect_columns=cc.kusto_table(),
        ),
        True,
    ),
    "fixture:transform-retypes-column": (
        cc.KqlQuery(
            "fixture:transform-retypes-column",
            "source | extend TimeGenerated = tostring(TimeGenerated)",
            SOURCE,
            expect_columns=cc.kusto_table(),
        ),
        True,
    ),
    "fixture:transform-ok": (
        cc.KqlQuery(
            "fixture:transform-ok",
            "source | extend TimeGenerated = todatetime(TimeGenerated)",
            SOURCE,
            expect_columns=cc.kusto_table(),
        ),
        False,
    ),
    "fixture:query-ok": (
        cc.KqlQuery(
            "fixture:query-ok",
            'AISentinelAudit_CL | where Severity in ("High", "Critical") | summarize count() by SessionId',
            AUDIT,
        ),
        False,
    ),
}
