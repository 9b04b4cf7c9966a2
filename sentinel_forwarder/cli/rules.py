"""``sentinel-forwarder rules test``: run Sentinel analytics rules and hunting queries over what an emulator
holds, and say which would fire, with their entities."""

from __future__ import annotations

__all__ = ["rules"]

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table


@click.group()
def rules() -> None:
    """Run analytics rules and hunting queries locally (KQL on DuckDB; see docs/kql.md)."""


def _moment(text: str | None, *, relative_to: datetime | None = None) -> datetime | None:
    """An ISO 8601 date-time, or (with *relative_to*) a duration back from it: ``90m``, ``2h``, ``1d``."""
    if text is None:
        return None
    from ..emulator._dcr import parse_datetime
    from ..emulator._rules import RuleError, parse_duration

    if relative_to is not None:
        try:
            return relative_to - parse_duration(text)
        except RuleError:
            pass
    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _summary(report: Any) -> str:
    """Entities and the session ids of a report's alerts, for one table cell."""
    parts: list[str] = []
    for entity in report.entities()[:3]:
        values = ", ".join(f"{k}={v}" for k, v in entity.items() if k != "entityType")
        parts.append(f"{entity['entityType']}({values})")
    sessions = list(dict.fromkeys(str(a.row["SessionId"]) for a in report.alerts if a.row.get("SessionId")))
    if sessions:
        shown = ", ".join(sessions[:3]) + (f" +{len(sessions) - 3} more" if len(sessions) > 3 else "")
        parts.append(f"SessionId: {shown}")
    return "; ".join(parts)


def _print(reports: Sequence[Any]) -> None:
    console = Console()
    view = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    view.add_column("rule", overflow="fold", ratio=1)
    view.add_column("kind", no_wrap=True)
    view.add_column("result", no_wrap=True)
    view.add_column("runs", justify="right", no_wrap=True)
    view.add_column("alerts", justify="right", no_wrap=True)
    for report in reports:
        if report.error:
            result = "[red]ERROR[/]"
        elif report.rule.kind == "hunting":
            result = "rows" if report.fired else "no rows"
        else:
            result = "[bold red]FIRES[/]" if report.fired else "[green]quiet[/]"
        runs = f"{report.runs_fired}/{report.runs}"
        view.add_row(report.rule.name, report.rule.kind, result, runs, f"{len(report.alerts):,}")
    console.print(view)
    for report in reports:
        if report.error:
            console.print(f"[red]{report.rule.name}[/]: {report.error}", highlight=False)
        elif report.fired and report.rule.kind == "analytics":
            console.print(f"[bold]{report.rule.name}[/]: {_summary(report)}", highlight=False)


@rules.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path), metavar="[RULE.yaml|DIR]...")
@click.option(
    "--db",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The emulator's SQLite file (emulator --db).",
)
@click.option("--url", help="A running emulator's endpoint: queries go through its Logs Query API.")
@click.option(
    "--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="With an https --url."
)
@click.option(
    "--token",
    default="sentinel-forwarder-rules",
    show_default=True,
    help="With --url: the bearer token (one the emulator's --token accepts).",
)
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="Run as of this ISO 8601 time instead of now (with --db).",
)
@click.option(
    "--since",
    "since_text",
    metavar="TIME|DURATION",
    help="Also run every queryFrequency back to this time, or this long before --at (e.g. 2h) (with --db).",
)
@click.option(
    "--expect-fire",
    "expect_fire",
    multiple=True,
    metavar="RULE",
    help="Exit 1 unless this rule fires (its name or part of it, its id or its file name). Repeatable.",
)
@click.option(
    "--expect-quiet",
    "expect_quiet",
    multiple=True,
    metavar="RULE",
    help="Exit 1 if this rule fires ('all': any analytics rule). Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule instead of a table.")
def test(
    paths: tuple[Path, ...],
    db: Path | None,
    url: str | None,
    ca: Path | None,
    token: str,
    at_text: str | None,
    since_text: str | None,
    expect_fire: tuple[str, ...],
    expect_quiet: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run the shipped rules (or the given rule YAML files and folders) over an emulator's rows.

    Exits 0 when every rule ran and every expectation held, 1 otherwise.
    """
    from ..emulator._rules import RuleError, database_query, http_query, load_rules, run_rules, shipped_rules

    if (db is None) == (url is None):
        raise click.UsageError("give the emulator's data: --db FILE or --url URL")
    if url is not None and (at_text or since_text):
        raise click.UsageError("--at and --since need --db: the Logs Query API has no 'as of'")
    try:
        chosen = load_rules(paths) if paths else shipped_rules()
    except RuleError as exc:
        raise click.ClickException(str(exc)) from None
    now = _moment(at_text) or datetime.now(timezone.utc)
    since = _moment(since_text, relative_to=now)
    for name in (*expect_fire, *(q for q in expect_quiet if q != "all")):
        if not any(rule.matches(name) for rule in chosen):
            raise click.BadParameter(f"no rule matches {name!r}", param_hint="--expect-fire/--expect-quiet")
    query = database_query(db) if db is not None else http_query(str(url), ca_path=ca, token=token)
    reports = run_rules(chosen, query, now=now, since=since)
    if as_json:
        for report in reports:
            sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        _print(reports)
    problems = [f"{r.rule.name}: could not run ({r.error})" for r in reports if r.error]
    for name in expect_fire:
        if not any(r.fired for r in reports if r.rule.matches(name)):
            problems.append(f"expected to fire, but quiet: {name}")
    for name in expect_quiet:
        fired = [
            r
            for r in reports
            if r.fired and r.rule.kind == "analytics" and (name == "all" or r.rule.matches(name))
        ]
        problems += [f"expected to stay quiet, but fired: {r.rule.name}" for r in fired]
    for problem in problems:
        click.echo(problem, err=True)
    sys.exit(1 if problems else 0)
