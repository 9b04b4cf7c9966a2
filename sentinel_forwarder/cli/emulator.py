"""``sentinel-forwarder emulator``: the local Logs Ingestion API emulator in the foreground.

.. code-block:: console

    $ sentinel-forwarder emulator --port 0 --json
    {"endpoint": "http://127.0.0.1:40123", "rule_id": "dcr-000…", "stream_name": "Custom-…", …}
"""

from __future__ import annotations

__all__ = ["emulator"]

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.table import Table


@click.command()
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
