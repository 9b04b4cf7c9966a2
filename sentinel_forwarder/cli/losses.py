"""``sentinel-forwarder losses``: what Azure would have silently dropped or altered (exit status 1 if any)."""

from __future__ import annotations

__all__ = ["losses"]

import json
import sys
from pathlib import Path

import click


@click.command()
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
