"""``sentinel-forwarder send``: rows from JSON lines, CSV or stdin, through the forwarder an application uses.

Each input record becomes an :class:`~sentinel_forwarder.AuditEntry`: its fields are the table's columns
(``TimeGenerated``, ``Id``, ``SessionId``, ``Severity``, ``DetectorId``, ``Summary``, ``Hash``,
``PreviousHash``), after ``--map COLUMN=FIELD`` renames. A record that cannot become an entry is dropped as
``invalid_row`` with its line number. The rows then go through ``BufferingForwarder`` and
``AzureSentinelForwarder``, configured like ``add_sentinel_forwarder`` (options, else
``SENTINEL_FORWARDER_*`` variables).
"""

from __future__ import annotations

__all__ = ["SendSummary", "record_to_entry", "send"]

import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import anyio
import anyio.lowlevel
import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .._config.build import build_forwarder
from .._config.settings import ConfigurationError, ForwarderSettings
from .._model.entry import AuditEntry
from .._model.protocol import DROP_REASONS, DropReason
from .._model.schema import AUDIT_TABLE
from .._sinks.azure.sink import MAX_REQUEST_BYTES
from .options import ConfigError, connection_options

Unknown = Literal["error", "ignore", "extra"]

#: Table column -> AuditEntry field, for the string columns.
_TEXT_COLUMNS: Mapping[str, str] = {
    "Id": "id",
    "SessionId": "session_id",
    "DetectorId": "detector_id",
    "Summary": "summary",
    "Hash": "hash",
    "PreviousHash": "previous_hash",
    "ChainId": "chain_id",
}
_COLUMNS = frozenset(c.name for c in AUDIT_TABLE.columns)
#: Errors shown in full; later ones are counted only.
_SHOWN_ERRORS = 10


class _Invalid(ValueError):
    """A record that cannot become an audit entry."""


def _lookup(record: Mapping[str, Any], path: str) -> Any:
    """``record[path]``, or a dotted path into nested objects (``context.session``); ``None`` if absent."""
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _Invalid(f"TimeGenerated must be an ISO 8601 string, not {type(value).__name__}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" and text else text)
    except ValueError:
        raise _Invalid(f"TimeGenerated {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise _Invalid(f"TimeGenerated {value!r} has no time zone; add Z for UTC")
    return parsed


def record_to_entry(
    record: Mapping[str, Any], *, mapping: Mapping[str, str] | None = None, unknown: Unknown = "error"
) -> AuditEntry:
    """Turn one input record into an :class:`AuditEntry`.

    :param record: field name to value (a JSON object, or a CSV row whose empty cells count as absent).
    :param mapping: table column to the record's field name (a dotted path reaches into nested objects).
    :param unknown: what to do with fields that are no column: ``"error"`` refuses the record, ``"ignore"``
        leaves them out, ``"extra"`` sends them as extra columns (the DCR must declare them).
    :raises ValueError: naming what is wrong with the record.
    """
    mapping = mapping or {}
    used = {source.split(".")[0] for source in (mapping or {}).values()}  # a nested field uses its object
    values: dict[str, Any] = {}
    for column in _COLUMNS:
        value = _lookup(record, mapping[column]) if column in mapping else record.get(column)
        if value is not None and value != "":
            values[column] = value
    rest = {k: v for k, v in record.items() if k not in _COLUMNS and k not in used}
    if rest and unknown == "error":
        raise _Invalid(
            f"field(s) {', '.join(sorted(rest))} are no column of {AUDIT_TABLE.name}: rename them with "
            "--map COLUMN=FIELD, or pass --unknown ignore (leave them out) or --unknown extra (send them)"
        )
    if "Summary" not in values:
        raise _Invalid("no Summary (map a field to it with --map Summary=FIELD)")
    kwargs: dict[str, Any] = {}
    for column, name in _TEXT_COLUMNS.items():
        if column in values:
            value = values[column]
            if not isinstance(value, str):
                raise _Invalid(f"{column} must be a string, not {type(value).__name__} ({value!r})")
            kwargs[name] = value
    if "Severity" in values:
        kwargs["severity"] = values["Severity"]
    if "TimeGenerated" in values:
        kwargs["timestamp"] = _parse_time(values["TimeGenerated"])
    if rest and unknown == "extra":
        kwargs["extra"] = rest
    try:
        entry = AuditEntry(**kwargs)
        size = len(json.dumps(entry.to_row(), ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise _Invalid(str(exc)) from None
    if size + 2 > MAX_REQUEST_BYTES:
        raise _Invalid(f"the row is {size:,} bytes as JSON; one request holds at most {MAX_REQUEST_BYTES:,}")
    return entry


# -- reading ---------------------------------------------------------------------------------------------


def _records(stream: TextIO, fmt: str) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """``(line number, record)`` for each record; an error message instead of a record that cannot be read."""
    if fmt == "csv":
        reader = csv.DictReader(stream)
        for row in reader:
            if None in row:
                yield reader.line_num, "more cells than the header has columns"
                continue
            yield reader.line_num, {k: v for k, v in row.items() if v is not None}
        return
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON: {exc.msg} (column {exc.colno})"
            continue
        if not isinstance(value, dict):
            yield number, f"not a JSON object but {type(value).__name__}"
            continue
        yield number, value


def _format_of(path: str, given: str) -> str:
    if given != "auto":
        return given
    return "csv" if path.lower().endswith(".csv") else "jsonl"


def _open(path: str) -> TextIO:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


# -- sending ---------------------------------------------------------------------------------------------


@dataclass
class SendSummary:
    """What became of the input: read, sent, filtered, dropped by reason, unconfirmed; how long it took."""

    read: int = 0
    valid: int = 0
    sent: int = 0
    filtered: int = 0
    unconfirmed: int = 0
    dropped: dict[DropReason, int] = field(default_factory=dict)
    #: The first invalid rows, ``file:line: why``.
    errors: list[str] = field(default_factory=list)
    #: The last error the service or the sink reported, if rows were dropped after reading.
    service_error: str | None = None
    seconds: float = 0.0

    def drop(self, reason: DropReason, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    @property
    def lost(self) -> int:
        """Rows not known to have landed: dropped or unconfirmed."""
        return sum(self.dropped.values()) + self.unconfirmed

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "valid": self.valid,
            "sent": self.sent,
            "filtered": self.filtered,
            "dropped": {r: self.dropped[r] for r in DROP_REASONS if r in self.dropped},
            "unconfirmed": self.unconfirmed,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "service_error": self.service_error,
        }


def _entries(
    paths: Sequence[str], fmt: str, mapping: Mapping[str, str], unknown: Unknown, summary: SendSummary
) -> Iterator[AuditEntry]:
    for path in paths:
        shown = "stdin" if path == "-" else path
        with _open(path) as stream:
            for number, record in _records(stream, _format_of(path, fmt)):
                summary.read += 1
                try:
                    if isinstance(record, str):
                        raise _Invalid(record)
                    entry = record_to_entry(record, mapping=mapping, unknown=unknown)
                except ValueError as exc:
                    summary.drop("invalid_row")
                    if len(summary.errors) < _SHOWN_ERRORS:
                        summary.errors.append(f"{shown}:{number}: {exc}")
                    continue
                summary.valid += 1
                yield entry


async def _forward_all(
    entries: Iterator[AuditEntry],
    settings: ForwarderSettings,
    credential: Any,
    summary: SendSummary,
    progress: bool,
) -> None:
    assert settings.endpoint is not None and settings.rule_id is not None
    # The same forwarder as an app's, without a spool: a command reports what it delivered before it ends.
    forwarder = build_forwarder(
        replace(settings, spool=None, heartbeat_interval=0.0),
        credential,
        None,
        None,
        name="sentinel-forwarder-send",
    )
    bar = Progress(
        SpinnerColumn(),
        TextColumn(
            "{task.fields[read]:,} rows read, {task.fields[sent]:,} sent, {task.fields[dropped]:,} dropped"
        ),
        TimeElapsedColumn(),
        console=Console(stderr=True, force_terminal=progress),
        transient=True,
        disable=not progress,
    )

    def show() -> None:
        stats = forwarder.statistics()
        dropped = stats.dropped_total + summary.dropped.get("invalid_row", 0)
        bar.update(task, read=summary.read, sent=stats.sent, dropped=dropped)

    with bar:
        task = bar.add_task("send", total=None, read=0, sent=0, dropped=0)
        async with forwarder:
            for n, entry in enumerate(entries, start=1):
                if forwarder.queue_depth() >= settings.capacity:
                    await forwarder.flush()  # a file is not an application: wait rather than drop
                forwarder.forward(entry)
                if n % settings.max_batch_size == 0:
                    show()
                    await anyio.lowlevel.checkpoint()  # let the pump hand out full batches while reading
            await forwarder.flush()
            show()
    stats = forwarder.statistics()
    summary.sent += stats.sent
    summary.filtered += stats.filtered
    summary.unconfirmed += stats.unconfirmed
    for reason, count in stats.dropped.items():
        summary.drop(reason, count)
    if stats.dropped or stats.unconfirmed:
        summary.service_error = stats.last_error


def _print_summary(summary: SendSummary, *, dry_run: bool, target: str) -> None:
    out = click.echo
    if dry_run:
        out(f"dry run: {summary.valid:,} of {summary.read:,} rows are valid; nothing was sent")
    else:
        out(f"sent {summary.sent:,} of {summary.read:,} rows to {target} in {summary.seconds:.1f} s")
    if summary.filtered:
        out(f"  filtered (below min_severity): {summary.filtered:,}")
    for reason in DROP_REASONS:
        if reason in summary.dropped:
            what = "invalid" if dry_run else f"dropped, {reason}"
            out(f"  {what}: {summary.dropped[reason]:,}")
    if summary.unconfirmed:
        out(f"  unconfirmed (sent, answer lost): {summary.unconfirmed:,}")
    for error in summary.errors:
        out(f"  {error}", err=True)
    hidden = summary.dropped.get("invalid_row", 0) - len(summary.errors)
    if hidden > 0:
        out(f"  ... and {hidden:,} more invalid rows", err=True)


def _mapping(pairs: Sequence[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, source = pair.partition("=")
        column, source = column.strip(), source.strip()
        if not sep or not column or not source:
            raise click.BadParameter(f"{pair!r} is not COLUMN=FIELD", param_hint="--map")
        if column not in _COLUMNS:
            columns = ", ".join(c.name for c in AUDIT_TABLE.columns)
            raise click.BadParameter(
                f"{column!r} is no column of {AUDIT_TABLE.name} ({columns})", param_hint="--map"
            )
        mapping[column] = source
    return mapping


@click.command()
@click.argument("paths", nargs=-1, metavar="[FILE]...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv"]),
    default="auto",
    show_default=True,
    help="Input format; auto: .csv is CSV, anything else (and stdin) JSON lines.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Take COLUMN from the input's FIELD (a dotted path reaches into JSON objects); repeatable.",
)
@click.option(
    "--unknown",
    type=click.Choice(["error", "ignore", "extra"]),
    default="error",
    show_default=True,
    help="Fields that are no column: refuse the row, leave them out, or send them as extra columns.",
)
@click.option("--dry-run", is_flag=True, help="Validate every row against the table schema; send nothing.")
@connection_options
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on stderr [default: when stderr is a terminal].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def send(
    paths: tuple[str, ...],
    fmt: str,
    maps: tuple[str, ...],
    unknown: Unknown,
    dry_run: bool,
    connection: dict[str, Any],
    progress: bool | None,
    as_json: bool,
) -> None:
    """Send audit rows from JSON lines or CSV files (or stdin, '-') to the DCR's stream.

    Each record's fields are the table's columns (TimeGenerated, Id, SessionId, Severity, DetectorId,
    Summary, Hash, PreviousHash); only Summary is required. Other settings come from SENTINEL_FORWARDER_*
    variables, as for add_sentinel_forwarder. Exit status: 0 when every row was sent (or, with --dry-run, is
    valid), 1 when any was dropped or unconfirmed, 2 for a usage or configuration error.
    """
    mapping = _mapping(maps)
    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise click.BadParameter(f"no file {path!r}", param_hint="FILE")
    inputs = list(paths) or ["-"]
    summary = SendSummary()
    started = time.monotonic()
    target = ""
    if dry_run:
        for _ in _entries(inputs, fmt, mapping, unknown, summary):
            pass
    else:
        try:
            settings = ForwarderSettings.resolve(None, **connection)
            from .._config.credentials import make_credential

            token_credential = make_credential(settings.credential, cloud=settings.cloud, environ=os.environ)
        except ConfigurationError as exc:
            raise ConfigError(str(exc)) from None
        target = f"{settings.endpoint} ({settings.rule_id}, {settings.stream_name})"
        entries = _entries(inputs, fmt, mapping, unknown, summary)
        show = sys.stderr.isatty() if progress is None else progress
        anyio.run(_forward_all, entries, settings, token_credential, summary, show)
    summary.seconds = time.monotonic() - started
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        _print_summary(summary, dry_run=dry_run, target=target)
    if summary.lost:
        sys.exit(1)
