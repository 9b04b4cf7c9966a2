"""``sentinel-forwarder check``: the command line face of :func:`sentinel_forwarder._check.run.run_check`."""

from __future__ import annotations

__all__ = ["check"]

import json
import shutil
import sys
import textwrap
from typing import Any

import click
from rich.console import Console

from .._check.run import EXIT_CODES, CheckReport, CheckStep, run_check
from .._config.settings import ConfigurationError, ForwarderSettings
from .options import connection_options

_LABELS = {
    "endpoint": "endpoint",
    "dns": "DNS",
    "tcp": "TCP",
    "tls": "TLS",
    "token": "token",
    "probe": "ingestion",
    "probe_row": "probe row",
    "query": "query",
}


_INDENT = " " * 15


def _line(step: CheckStep) -> str:
    """A step as text wrapped to the terminal; a hint's indented lines (commands) are left whole."""
    width = max(shutil.get_terminal_size().columns, 40)
    mark = "FAIL" if not step.ok else "warn" if step.warning else "ok  "
    head = f"{mark} {_LABELS.get(step.name, step.name):<9} "
    lines = textwrap.wrap(
        step.detail, width, initial_indent=head, subsequent_indent=_INDENT, break_on_hyphens=False
    )
    for i, part in enumerate((step.hint or "").splitlines()):
        if part.startswith("  "):
            lines.append(_INDENT + part.strip())
        else:
            first = _INDENT + ("-> " if i == 0 else "")
            lines += textwrap.wrap(
                part, width, initial_indent=first, subsequent_indent=_INDENT + "   ", break_on_hyphens=False
            )
    return "\n".join(lines)


def _exit_codes() -> str:
    return ", ".join(f"{code} {name}" for name, code in EXIT_CODES.items())


@click.command(epilog=f"Exit status: 0 every step passed; {_exit_codes()}.")
@connection_options
@click.option("--cloud", default=None, help="public, usgov or china. [env: SENTINEL_FORWARDER_CLOUD]")
@click.option(
    "--probe-row", is_flag=True, help="Also send one marked probe row (DetectorId sentinel-forwarder-check)."
)
@click.option(
    "--workspace-id",
    default=None,
    help="With it, send the probe row and poll the Logs Query API until it is queryable (the query extra).",
)
@click.option(
    "--query-endpoint",
    default=None,
    help="The Logs Query API [default: the cloud's; for a loopback endpoint, the emulator's].",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="With --workspace-id: seconds to wait for the probe row.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds for each network step.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show the step being checked on stderr [default: when stderr is a terminal].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def check(
    connection: dict[str, Any],
    cloud: str | None,
    probe_row: bool,
    workspace_id: str | None,
    query_endpoint: str | None,
    wait: float,
    timeout: float,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Check the configuration end to end, writing nothing: endpoint, DNS, TCP, TLS, token, ingestion.

    Settings come from the options, else the SENTINEL_FORWARDER_* variables the application uses. Stops at
    the first failure and says what to do. The ingestion probe posts an empty array, which the service
    accepts without storing anything; --probe-row sends one marked row too, and --workspace-id waits until
    that row is queryable and reports the ingestion latency.
    """
    try:
        settings = ForwarderSettings.resolve(None, cloud=cloud, **connection)
    except ConfigurationError as exc:
        _configuration_error(str(exc), as_json)
        return
    show = sys.stderr.isatty() if progress is None else progress
    console = Console(stderr=True, force_terminal=show)
    if not as_json:
        click.echo(f"checking {settings.endpoint} ({settings.rule_id}, {settings.stream_name})")
    status = console.status("checking", spinner="dots") if show else None

    def on_start(name: str) -> None:
        if status is not None:
            status.update(f"checking {_LABELS.get(name, name)}...")

    def on_step(step: CheckStep) -> None:
        if not as_json:
            if status is not None:
                status.stop()
            click.echo(_line(step))
            if status is not None:
                status.start()

    if status is not None:
        status.start()
    try:
        report = run_check(
            settings,
            probe_row=probe_row,
            workspace_id=workspace_id,
            query_endpoint=query_endpoint,
            wait=wait,
            timeout=timeout,
            on_start=on_start,
            on_step=on_step,
        )
    except ConfigurationError as exc:  # the credential's own settings (workload identity variables, ...)
        if status is not None:
            status.stop()
        _configuration_error(str(exc), as_json)
        return
    finally:
        if status is not None:
            status.stop()
    _finish(report, settings, as_json)


def _configuration_error(message: str, as_json: bool) -> None:
    if as_json:
        step = CheckStep("settings", False, message, None, "configuration")
        click.echo(json.dumps(CheckReport((step,)).as_dict()))
    else:
        click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_CODES["configuration"])


def _finish(report: CheckReport, settings: ForwarderSettings, as_json: bool) -> None:
    if as_json:
        out: dict[str, Any] = report.as_dict()
        out["settings"] = {
            "endpoint": settings.endpoint,
            "rule_id": settings.rule_id,
            "stream_name": settings.stream_name,
            "cloud": settings.cloud,
            "credential": settings.credential,
        }
        click.echo(json.dumps(out))
    elif report.ok:
        click.echo("all checks passed: the forwarder can deliver with these settings")
    else:
        click.echo(f"check failed: {report.failure} (exit status {report.exit_code})")
    sys.exit(report.exit_code)
