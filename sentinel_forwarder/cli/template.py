"""The deployment templates and Sentinel content shipped in the package (``sentinel-forwarder template``).

The files under ``templates/`` are generated from :data:`~sentinel_forwarder.AUDIT_TABLE` and the Sentinel
YAML by ``tools/gen_templates.py`` in the repository, and the wheel ships them as package data:

- ``azuredeploy.json`` / ``azuredeploy-direct.json`` (+ ``.parameters.json``): the table, a DCE + DCR (or a
  Direct DCR) and the Monitoring Metrics Publisher role;
- ``sentinel/``: analytics rules, hunting queries, a workbook, and their YAML sources.
"""

from __future__ import annotations

__all__ = ["read_template", "template", "template_names"]

import os
import sys
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

_SUFFIXES = (".json", ".yaml")


def _root() -> Traversable:
    return files("sentinel_forwarder") / "templates"


def template_names() -> list[str]:
    """Every shipped file, as a ``/``-separated path relative to the templates folder, sorted."""

    def walk(folder: Traversable, prefix: str) -> list[str]:
        out: list[str] = []
        for item in folder.iterdir():
            if item.is_dir():
                out += walk(item, f"{prefix}{item.name}/")
            elif item.name.endswith(_SUFFIXES):
                out.append(prefix + item.name)
        return out

    return sorted(walk(_root(), ""), key=lambda name: (name.count("/"), name))


def read_template(name: str) -> bytes:
    """The contents of one shipped file.

    :param name: as :func:`template_names` lists it, e.g. ``"azuredeploy.json"``.
    :raises KeyError: if there is no such file.
    """
    if name not in template_names():
        raise KeyError(name)
    item = _root()
    for part in name.split("/"):
        item = item / part
    return item.read_bytes()


@click.command()
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
