"""``sentinel-forwarder verify``: check the hash chains of landed rows (docs/tamper-evidence.md)."""

from __future__ import annotations

__all__ = ["verify"]

import dataclasses
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click
from rich.console import Console
from rich.table import Table

from .._evidence.verify import ChainReport, verify_chain
from .._model.schema import AUDIT_TABLE

KEY_VARIABLE = "SENTINEL_FORWARDER_CHAIN_KEY"


def _json_rows(stream: TextIO, name: str) -> Iterator[dict[str, Any]]:
    """Rows from JSON lines, or from one JSON array (``az monitor log-analytics query -o json``)."""
    text = stream.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise click.ClickException(f"{name}: not a JSON array: {exc}") from None
        yield from (row for row in data if isinstance(row, dict))
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise click.ClickException(f"{name}, line {number}: not JSON: {exc}") from None
        if isinstance(row, dict):
            yield row


@click.command()
@click.argument("file", required=False, type=click.File("r", encoding="utf-8"))
@click.option(
    "--db",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An emulator database (emulator --db) instead of FILE.",
)
@click.option("--table", default=AUDIT_TABLE.name, show_default=True, help="With --db: the table.")
@click.option(
    "--key-env",
    default=KEY_VARIABLE,
    show_default=True,
    help="The environment variable holding the HMAC key the rows were linked with (unkeyed if unset).",
)
@click.option("--from-start", is_flag=True, help="Each chain must start at Sequence 1 (no window cut).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
def verify(
    file: TextIO | None, db: Path | None, table: str, key_env: str, from_start: bool, as_json: bool
) -> None:
    """Verify the hash chains of landed audit rows: every gap, alteration, broken link and fork.

    FILE holds the rows as JSON lines or a JSON array ('-' for standard input): an export, or a query's
    output (az monitor log-analytics query ... -o json). Rows may come in any order. Exits 0 if every
    chain is intact, 1 if not.
    """
    if (file is None) == (db is None):
        raise click.UsageError("give the rows: FILE (JSON lines or a JSON array, '-' for stdin) or --db FILE")
    if db is not None:
        from ..emulator._store import read_rows

        try:
            rows: list[Any] = read_rows(db, table)
        except KeyError:
            raise click.ClickException(f"no table {table!r} in {str(db)!r}") from None
        except sqlite3.Error as exc:
            raise click.ClickException(f"cannot read {str(db)!r} as an emulator database: {exc}") from None
    else:
        assert file is not None
        rows = list(_json_rows(file, file.name))
    key = os.environ.get(key_env) or None
    report = verify_chain(rows, key=key, previous_hash="" if from_start else None)
    if as_json:
        click.echo(json.dumps(_as_dict(report, keyed=key is not None), ensure_ascii=False))
    else:
        _print(Console(), report, keyed=key is not None, key_env=key_env)
    sys.exit(0 if report.ok else 1)


def _as_dict(report: ChainReport, *, keyed: bool) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "keyed": keyed,
        "rows": report.rows,
        "chains": [dataclasses.asdict(c) for c in report.chains],
        "breaks": [dataclasses.asdict(b) for b in report.breaks],
    }


def _print(console: Console, report: ChainReport, *, keyed: bool, key_env: str) -> None:
    how = f"HMAC-SHA256, key from ${key_env}" if keyed else f"SHA-256, unkeyed (${key_env} not set)"
    table = Table(title=f"Hash chains ({how})")
    for column in ("ChainId", "rows", "Sequence", "duplicates", "heartbeat head", "problems"):
        table.add_column(column, justify="left" if column == "ChainId" else "right")
    for chain in report.chains:
        problems = sum(1 for b in report.breaks if b.chain_id == chain.chain_id)
        table.add_row(
            chain.chain_id,
            f"{chain.rows:,}",
            f"{chain.first:,}..{chain.last:,}",
            f"{chain.duplicates:,}",
            f"{chain.reported_head:,}" if chain.reported_head else "-",
            f"[red]{problems}[/]" if problems else "[green]0[/]",
        )
    console.print(table)
    for brk in report.breaks:
        console.print(f"[red]✗[/] {brk}", highlight=False, soft_wrap=True)
    if report.ok:
        console.print(f"[green]✓ {report.rows:,} rows in {len(report.chains)} chain(s): intact[/]")
    else:
        console.print(f"[red]✗ {report.rows:,} rows: {len(report.breaks)} problem(s)[/]")
        if not keyed and report.breaks and all(b.kind == "hash" for b in report.breaks):
            console.print(f"  every row fails its hash: were they linked with a key? Set ${key_env}.")
