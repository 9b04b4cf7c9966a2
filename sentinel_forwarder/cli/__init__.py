"""The ``sentinel-forwarder`` command line (the ``cli`` extra: click and rich).

The group ``main`` (the console script ``sentinel_forwarder.cli:main`` and ``python -m sentinel_forwarder``)
and ``--version`` live here; each command is a module of this package (``cli/send.py`` is ``send``, ...), and
the options two commands share are in ``cli/options.py``. Click and rich are imported in this package only.

.. code-block:: console

    $ sentinel-forwarder emulator --port 0 --json
    {"endpoint": "http://127.0.0.1:40123", "rule_id": "dcr-000…", "stream_name": "Custom-…", …}
    $ sentinel-forwarder rows --db emulator.sqlite --limit 10
"""

from __future__ import annotations

__all__ = ["main"]

import platform

import click

from . import check, demo, emulator, losses, rows, rules, send, spool, template, verify


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


main.add_command(check.check)
main.add_command(demo.demo)
main.add_command(emulator.emulator)
main.add_command(losses.losses)
main.add_command(rows.rows)
main.add_command(rules.rules)
main.add_command(send.send)
main.add_command(spool.spool)
main.add_command(template.template)
main.add_command(verify.verify)
