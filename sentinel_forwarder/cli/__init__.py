"""The ``sentinel-forwarder`` command line (the ``cli`` extra: click and rich).

.. code-block:: console

    $ sentinel-forwarder emulator --port 0 --json
    {"endpoint": "http://127.0.0.1:40123", "rule_id": "dcr-000…", "stream_name": "Custom-…", …}
    $ sentinel-forwarder rows --db emulator.sqlite --limit 10
"""

from __future__ import annotations

__all__ = ["main"]

import json
import os
import platform
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from .._schema import AUDIT_TABLE


def _version() -> str:
    """This package's version and those of the libraries a bug report needs."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    deps = ", ".join(f"{name} {of(name)}" for name in ("azure-monitor-ingestion", "azure-identity", "anyio"))
    return f"sentinel-forwarder {of('sentinel-forwarder')} (Python {platform.python_version()}; {deps})"


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version (and those of the Azure SDK, azure-identity, anyio) and exit.",
)
def main() -> None:
    """Get security audit records from a running application into Microsoft Sentinel."""


@main.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port; 0 picks one."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind (loopback only, see --allow-remote).",
)
@click.option(
    "--db",
    default=":memory:",
    show_default=True,
    help="SQLite file for landed rows (read them with 'rows --db'), or :memory:.",
)
@click.option(
    "--dcr",
    "dcrs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra DCR JSON (resource, properties or ARM template); repeatable.",
)
@click.option("--tls/--no-tls", default=False, show_default=True, help="Serve HTTPS with a local CA.")
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep ca.pem/server.pem here (default: a temporary directory, removed on exit).",
)
@click.option("--sink", is_flag=True, help="Validate and count rows, store nothing (benchmarks).")
@click.option(
    "--token", "tokens", multiple=True, help="Accept only these bearer tokens (default: any); repeatable."
)
@click.option(
    "--allow-remote", is_flag=True, help="Allow a non-loopback --host (admin endpoints are then off)."
)
@click.option(
    "--strict", is_flag=True, help="Answer 400 where Azure would silently drop or alter data (for CI)."
)
@click.option(
    "--cloud",
    type=click.Choice(["public", "usgov", "china"]),
    default="public",
    show_default=True,
    help="Accept JWT tokens for this cloud's audience only.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line for scripts instead of a table.")
def emulator(
    port: int,
    host: str,
    db: str,
    dcrs: tuple[Path, ...],
    tls: bool,
    cert_dir: Path | None,
    sink: bool,
    tokens: tuple[str, ...],
    allow_remote: bool,
    strict: bool,
    cloud: str,
    as_json: bool,
) -> None:
    """Run the local Logs Ingestion API emulator in the foreground until Ctrl-C or SIGTERM."""
    from ..emulator import DcrError, Emulator

    try:
        emu = Emulator(
            port=port,
            host=host,
            tls=tls,
            db=db,
            dcrs=dcrs,
            tokens=tokens or None,
            sink=sink,
            allow_remote=allow_remote,
            cert_dir=cert_dir,
            strict=strict,
            cloud=cloud,
        )
        emu.start()
    except (DcrError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        info: dict[str, Any] = {
            "endpoint": emu.endpoint,
            "rule_id": emu.rule_id,
            "stream_name": emu.stream_name,
            "table": emu.table,
            "workspace_id": emu.workspace_id,
            "ca_path": str(emu.ca_path) if emu.ca_path else None,
            "db": db,
            "rules": {
                rule.immutable_id: {s.name: list(s.tables) for s in rule.streams.values()}
                for rule in emu.rules.values()
            },
        }
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
        else:
            _print_emulator_info(info, tls=tls, sink=sink, any_token=not tokens)
        while not stop.wait(1.0):
            pass
    finally:
        report = emu.loss_report() if emu.stats().silent_losses else None  # before stop closes the store
        emu.stop()
        if report:
            Console(stderr=True).print(report, markup=False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not as_json:
        Console(stderr=True).print("emulator stopped")


def _print_emulator_info(info: dict[str, Any], *, tls: bool, sink: bool, any_token: bool) -> None:
    console = Console()
    table = Table(title="Logs Ingestion API emulator", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("endpoint", info["endpoint"])
    table.add_row("rule id (default DCR)", info["rule_id"])
    table.add_row("stream", info["stream_name"])
    table.add_row("table", info["table"])
    table.add_row("query workspace id", info["workspace_id"])
    table.add_row("CA certificate", info["ca_path"] or "(no TLS: pass enforce_https=False to upload())")
    table.add_row("rows", "not stored (sink mode)" if sink else info["db"])
    table.add_row("tokens", "any non-empty bearer token" if any_token else "only those given with --token")
    for rule_id, streams in info["rules"].items():
        if rule_id != info["rule_id"]:
            for stream, tables in streams.items():
                table.add_row(f"extra DCR {rule_id}", f"{stream} → {', '.join(tables)}")
    console.print(table)
    client = f'LogsIngestionClient("{info["endpoint"]}", EmulatorCredential()'
    if tls:
        client += f', connection_verify="{info["ca_path"]}")'
    else:
        client += ")  # and upload(..., enforce_https=False)"
    console.print(f"[dim]{client}[/dim]", soft_wrap=True)
    console.print("[dim]Ctrl-C to stop.[/dim]")
    console.file.flush()


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


@main.command()
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


@main.command()
@click.argument("names", nargs=-1, metavar="[FILE]...")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the files into this folder (created if needed), keeping their layout.",
)
@click.option("--force", is_flag=True, help="With --out: overwrite files that differ.")
@click.option("--list", "list_only", is_flag=True, help="List the shipped files and exit.")
def template(names: tuple[str, ...], out: Path | None, force: bool, list_only: bool) -> None:
    """Write the ARM templates, parameter files and Sentinel content.

    With --out DIR, writes FILEs (default: all) into DIR; otherwise prints one FILE to stdout.

    \b
      sentinel-forwarder template --out dcr_templates
      sentinel-forwarder template azuredeploy.json > azuredeploy.json
    """
    from difflib import get_close_matches

    from .template import read_template, template_names

    shipped = template_names()
    if list_only or (not names and out is None):
        for name in shipped:
            click.echo(name)
        if not list_only:
            click.echo("\nGive a FILE to print it, or --out DIR to write them all.", err=True)
        return
    for name in names:
        if name not in shipped:
            close = get_close_matches(name, shipped, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; --list shows the files"
            raise click.BadParameter(f"no template {name!r}{hint}", param_hint="FILE")
    if out is None:
        if len(names) != 1:
            raise click.UsageError("print one FILE at a time, or write several with --out DIR")
        sys.stdout.buffer.write(read_template(names[0]))
        sys.stdout.flush()
        return
    chosen = list(names) or shipped
    planned = [(name, out / name, read_template(name)) for name in chosen]
    differing = [str(path) for _, path, data in planned if path.exists() and path.read_bytes() != data]
    if differing and not force:
        raise click.ClickException(
            f"{len(differing)} file(s) exist and differ (pass --force to overwrite): {', '.join(differing)}"
        )
    for _, path, data in planned:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    click.echo(f"wrote {len(planned)} file(s) to {out}{os.sep}", err=True)
    click.echo(
        f"next: az deployment group create -g <group> --template-file {out / 'azuredeploy.json'} "
        "--parameters workspaceName=<workspace> principalId=<object id>  (docs/deploy.md)",
        err=True,
    )


from .demo import demo  # noqa: E402  (registered after main is defined)
from .send import send  # noqa: E402

main.add_command(demo)
main.add_command(send)

from .spool import spool  # noqa: E402

main.add_command(spool)

from .rules import rules  # noqa: E402

main.add_command(rules)

from .check import check  # noqa: E402

main.add_command(check)

from .verify import verify  # noqa: E402

main.add_command(verify)


@main.command()
@click.option("--db", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per loss.")
def losses(db: Path, as_json: bool) -> None:
    """What Azure would have silently dropped or altered, from an emulator database (emulator --db).

    Exits 1 if there is any.
    """
    from ..emulator import format_loss_report, read_losses

    found = read_losses(db)
    if as_json:
        for loss in found:
            sys.stdout.write(json.dumps(loss.as_dict()) + "\n")
    else:
        click.echo(format_loss_report(found))
    sys.exit(1 if found else 0)
