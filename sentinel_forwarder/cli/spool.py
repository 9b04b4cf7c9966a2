"""``sentinel-forwarder spool``: look into a spool directory, read, replay and purge its dead letters."""

from __future__ import annotations

__all__ = ["spool"]

import dataclasses
import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .._model.entry import Severity
from .._spool import admin as _spool

_DIRECTORY = click.argument(
    "directory",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="SENTINEL_FORWARDER_SPOOL",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def spool() -> None:
    """Inspect a spool directory (SENTINEL_FORWARDER_SPOOL) and manage its dead letters."""


def _age(then: float | None) -> str:
    if then is None:
        return "-"
    seconds = max(time.time() - then, 0.0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@spool.command()
@_DIRECTORY
@_JSON
def status(directory: Path, as_json: bool) -> None:
    """Rows waiting, their size, the oldest, and dead letters, per spool file."""
    try:
        files = _spool.status(directory)
    except _spool.SpoolError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(f) for f in files], indent=2))
        return
    console = Console()
    if not files:
        console.print(f"{directory}: no spool files (nothing waiting)")
        return
    table = Table(title=f"spool {directory}", title_justify="left")
    for name, justify in (("file", "left"), ("owner", "left"), ("rows", "right"), ("MB", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("oldest", justify="right")
    table.add_column("dead", justify="right")
    for f in files:
        table.add_row(
            Path(f.path).name,
            "running" if f.owner_alive else "gone",
            f"{f.rows:,}",
            f"{f.bytes / 1e6:.1f}",
            _age(f.oldest),
            f"{f.dead_letters:,}",
        )
    console.print(table)


@spool.command("dead-letters")
@_DIRECTORY
@_JSON
@click.option("--limit", type=click.IntRange(1), default=None, help="Show at most this many.")
def dead_letters(directory: Path, as_json: bool, limit: int | None) -> None:
    """Rows the service refused, with its answer."""
    letters = _spool.dead_letters(directory, limit=limit)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(d) for d in letters], indent=2))
        return
    console = Console()
    if not letters:
        console.print("no dead letters")
        return
    table = Table(title=f"{len(letters)} dead letters", title_justify="left")
    table.add_column("Id", overflow="fold")
    table.add_column("severity")
    table.add_column("reason")
    table.add_column("error", overflow="fold")
    for d in letters:
        try:
            row_id = str(_spool.row_json(d.row).get("Id", "?"))
        except ValueError:
            row_id = "?"
        table.add_row(row_id, Severity(d.severity).label, d.reason, d.error)
    console.print(table)


@spool.command()
@_DIRECTORY
def replay(directory: Path) -> None:
    """Send the dead letters again (after fixing the DCR, say): a running forwarder picks them up within a
    minute, else the next one to start."""
    click.echo(f"{_spool.replay(directory):,} dead letters queued for delivery again")


@spool.command()
@_DIRECTORY
@click.option("--all", "everything", is_flag=True, help="Also delete the rows waiting for delivery.")
@click.confirmation_option(prompt="Delete them for good?")
def purge(directory: Path, everything: bool) -> None:
    """Delete the dead letters (with --all, every waiting row too: they are never delivered)."""
    click.echo(f"{_spool.purge(directory, dead_only=not everything):,} rows deleted")
