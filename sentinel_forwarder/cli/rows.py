"""``sentinel-forwarder rows``: the rows that landed in an emulator database, as a table or JSON lines.

.. code-block:: console

    $ sentinel-forwarder rows --db emulator.sqlite --limit 10
"""

from __future__ import annotations

__all__ = ["DEFAULT_COLUMNS", "rows"]

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from .._model.schema import AUDIT_TABLE

#: Columns ``rows`` shows by default: what fits 80 columns and says what happened.
DEFAULT_COLUMNS = ("TimeGenerated", "Severity", "DetectorId", "Summary")
_META_COLUMNS = ("_Seq", "_IngestedAt", "_RuleId", "_Stream")


def _columns(text: str | None) -> list[str] | None:
    if text is None or text.strip().lower() == "all":
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("give column names separated by commas, or 'all'")
    return names


@click.command()
@click.option(
    "--db",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The emulator's SQLite file (emulator --db).",
)
@click.option("--table", default=AUDIT_TABLE.name, show_default=True, help="Output table.")
@click.option(
    "-c",
    "--columns",
    "columns_text",
    default=None,
    metavar="A,B,...|all",
    help=f"Columns to show, comma-separated, or 'all' [default: {','.join(DEFAULT_COLUMNS)}; JSON: all].",
)
@click.option("--count", "count_only", is_flag=True, help="Print only the number of rows.")
@click.option(
    "--limit",
    "--head",
    type=click.IntRange(min=0),
    default=None,
    help="Show at most N rows, the first ones.",
)
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Show the last N rows.")
@click.option("--meta", is_flag=True, help="Add _Seq, _IngestedAt, _RuleId and _Stream.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines for scripts instead of a table.")
def rows(
    db: Path,
    table: str,
    columns_text: str | None,
    count_only: bool,
    limit: int | None,
    tail: int | None,
    meta: bool,
    as_json: bool,
) -> None:
    """Print rows that landed in an emulator database, in arrival order."""
    from ..emulator._store import list_tables, read_rows

    if limit is not None and tail is not None:
        raise click.UsageError("give --limit (the first rows) or --tail (the last rows), not both")
    chosen = _columns(columns_text)
    try:
        found = read_rows(db, table, limit=limit, meta=True)
    except KeyError:
        tables = ", ".join(list_tables(db)) or "none"
        raise click.ClickException(f"no table {table!r} in {str(db)!r} (tables: {tables})") from None
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot read {str(db)!r} as an emulator database: {exc}") from None
    if tail is not None:
        found = found[len(found) - tail :] if tail else []
    if count_only:
        click.echo(len(found))
        return
    if chosen is None:
        columns: dict[str, None] = {}
        for row in found:
            columns.update((k, None) for k in row if k not in _META_COLUMNS)
        if columns_text is None and not as_json:  # the default view
            columns = dict.fromkeys(c for c in DEFAULT_COLUMNS if c in columns or not found)
        chosen = list(columns)
    elif found:
        present = {column for row in found for column in row}
        unknown = [column for column in chosen if column not in present]
        if unknown:
            known = ", ".join(c for c in dict.fromkeys(k for row in found for k in row))
            raise click.BadParameter(
                f"no column {', '.join(unknown)} (columns: {known})", param_hint="--columns"
            )
    if meta:
        chosen = [*(c for c in _META_COLUMNS if c not in chosen), *chosen]
    if as_json:
        out = sys.stdout
        for row in found:
            out.write(json.dumps({c: row[c] for c in chosen if c in row}, ensure_ascii=False) + "\n")
        out.flush()
        return
    console = Console()
    if not found:
        console.print(f"{table}: no rows")
        return
    view = Table(
        title=f"{table} ({len(found)} row{'' if len(found) == 1 else 's'})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in chosen:
        if column == "Summary":
            view.add_column(column, overflow="fold", ratio=1)
        elif column in _FIXED:
            view.add_column(column, no_wrap=True, min_width=_FIXED[column])
        else:
            view.add_column(column, overflow="fold", max_width=_WIDTHS.get(column))
    for row in found:
        view.add_row(*(_cell(column, row.get(column)) for column in chosen))
    console.print(view)
    console.file.flush()


#: Widths for known columns so the Summary keeps most of the line: never wrapped, and at most.
_FIXED = {"TimeGenerated": 19, "Severity": 8}
_WIDTHS = {"DetectorId": 20, "SessionId": 22}


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "TimeGenerated" and isinstance(value, str) and len(value) == 27 and value.endswith("Z"):
        return value[:10] + " " + value[11:19]  # to the second: the full value is in --json
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
