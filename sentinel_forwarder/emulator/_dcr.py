"""Data collection rules: loading ARM-style DCR JSON and validating rows against stream declarations.

Pure Python (no starlette): the CLI and the tests use it directly.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_RULE_ID",
    "MAX_FIELD_BYTES",
    "MAX_TIME_GENERATED_AGE",
    "MAX_TIME_GENERATED_LEAD",
    "Change",
    "DataCollectionRule",
    "DcrError",
    "RowError",
    "Stream",
    "default_dcr",
    "format_datetime",
    "load_dcrs",
    "merge_rules",
    "parse_datetime",
    "rule_id_for_name",
    "table_columns",
    "tables_of",
]

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .._model.schema import AUDIT_TABLE
from ._losses import LossKind

#: Immutable id of the emulator's built-in DCR (derived from ``AUDIT_TABLE``). Real ids are ``dcr-`` plus 32
#: lower-case hex digits; this one is all zeros so that it is obviously local.
DEFAULT_RULE_ID = "dcr-00000000000000000000000000000000"

#: A string field longer than this many UTF-8 bytes is truncated (documented service limit: 64 KB per field).
MAX_FIELD_BYTES = 65_536
#: A ``TimeGenerated`` older than this, or further ahead than the next one, relative to when the row was
#: received, is replaced by the receive time (Learn: log-standard-columns, "TimeGenerated").
MAX_TIME_GENERATED_AGE = timedelta(days=2)
MAX_TIME_GENERATED_LEAD = timedelta(days=1)

_DCR_TYPE = "microsoft.insights/datacollectionrules"
_STREAM_TYPES = frozenset({"string", "int", "long", "real", "boolean", "dynamic", "datetime"})
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}_CL$")
_IMMUTABLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# ISO 8601 with a date and a time, a 'T' or (as in the service's documented request example) a space between
# them; offset optional (then UTC, as the service assumes).
_DATETIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<clock>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$",
)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class DcrError(ValueError):
    """A data collection rule could not be loaded."""


class RowError(ValueError):
    """A row does not match its stream declaration (or, in strict mode, would be altered by the service)."""

    def __init__(self, index: int, column: str | None, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.column = column
        #: The error code to answer with.
        self.code = code or ("InvalidColumnValue" if column else "InvalidPayload")


@dataclass(frozen=True)
class Change:
    """What the service would silently do to one value of an accepted row (see :class:`Loss`)."""

    column: str
    kind: LossKind
    detail: str
    #: The error code strict mode answers with.
    code: str


def rule_id_for_name(name: str) -> str:
    """Return the deterministic immutable id the emulator gives a DCR that does not declare one.

    :param name: The DCR's resource name (or the file stem when it has none).
    """
    return "dcr-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def _truncate(value: str) -> str:
    encoded = value.encode("utf-8")
    if len(encoded) <= MAX_FIELD_BYTES:
        return value
    # Cut on a character boundary: drop a partial trailing UTF-8 sequence.
    return encoded[:MAX_FIELD_BYTES].decode("utf-8", errors="ignore")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_datetime(value: str) -> datetime:
    """Parse a date-time as the emulator accepts it; naive values are UTC (as the service assumes).

    :raises ValueError: if *value* is not an ISO 8601 date and time (``T`` or a space between them).
    """
    match = _DATETIME.match(value)
    if not match:
        raise ValueError(f"{value[:64]!r} is not an ISO 8601 date-time (YYYY-MM-DDThh:mm[:ss[.f]][Z|±hh:mm])")
    # Python 3.10 knows neither 'Z' nor fractions other than 3 or 6 digits: normalise them.
    date, clock, fraction, offset = match.group("date", "clock", "fraction", "offset")
    micros = (fraction or "").ljust(6, "0")[:6]
    text = f"{date}T{clock}" + (f".{micros}" if fraction else "")
    text += "+00:00" if not offset or offset in "Zz" else offset
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date-time: {exc}") from None


def format_datetime(value: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.ffffffZ`` in UTC."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_value(column_type: str, value: Any) -> tuple[Any, str | None]:
    """Return the value to store and, for a string coerced from another JSON type, a description of it.

    :raises ValueError: with the reason the value is not acceptable.
    """
    if value is None:
        return None, None
    if column_type == "string":
        if isinstance(value, str):
            return value, None
        # Documented leniency: recorded SDK exchanges put an integer and an object into string columns and
        # got 204. How the service renders them is not documented: stored here as their compact JSON text.
        if _is_int(value) or isinstance(value, dict):
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            return text, f"{_json_kind(value)} stored as the string {text[:64]!r}"
        raise ValueError(f"expected a JSON string, got {_json_kind(value)}")
    if column_type in ("int", "long"):
        low, high = _INT32 if column_type == "int" else _INT64
        if not _is_int(value):
            raise ValueError(f"expected a JSON integer, got {_json_kind(value)}")
        if not low <= value <= high:
            raise ValueError(f"integer {value} is out of range for {column_type}")
        return value, None
    if column_type == "real":
        if not (_is_int(value) or isinstance(value, float)):
            raise ValueError(f"expected a JSON number, got {_json_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value, None
    if column_type == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_json_kind(value)}")
        return value, None
    if column_type == "datetime":
        if not isinstance(value, str):
            raise ValueError(f"expected an ISO 8601 date-time string, got {_json_kind(value)}")
        parse_datetime(value)
        return value, None
    # dynamic: any JSON value (strings are stored as given).
    return value, None


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _strict_message(index: int, change: Change, stream: str) -> str:
    return (
        f"Record {index}, column '{change.column}': {change.detail}. Azure would accept this row (204) and "
        f"store it altered; rejected because the emulator runs in strict mode (stream '{stream}')."
    )


@dataclass(frozen=True)
class Stream:
    """A declared input stream of a DCR and the tables its data flows write to."""

    name: str
    columns: Mapping[str, str]
    tables: tuple[str, ...]

    def admit(
        self, index: int, row: object, *, received: datetime, strict: bool = False
    ) -> tuple[dict[str, Any], list[Change]]:
        """Check one row and return what lands in the table, and what the service would silently change.

        As the service does (see docs/emulator.md): columns not declared in the stream are dropped, an integer
        or an object in a ``string`` column is stored as text, strings longer than 64 KB are truncated, and a
        ``TimeGenerated`` more than 2 days before or 1 day after *received* is replaced by *received*.

        :param index: Position of the row in the request body, for messages.
        :param row: The decoded JSON value.
        :param received: When the request arrived (timezone-aware).
        :param strict: Raise :class:`RowError` for any such change instead of applying it.
        :raises RowError: naming the row index and column when a value has the wrong type (or, in strict mode,
            would be changed).
        """
        if not isinstance(row, dict):
            raise RowError(index, None, f"Record {index}: expected a JSON object, got {_json_kind(row)}.")
        out: dict[str, Any] = {}
        changes: list[Change] = []
        for key, value in row.items():
            column_type = self.columns.get(key)
            if column_type is None:
                changes.append(
                    Change(
                        key,
                        "undeclared_column",
                        f"column not declared in stream '{self.name}': dropped",
                        "UndeclaredColumn",
                    )
                )
            else:
                try:
                    stored, coerced = _check_value(column_type, value)
                except ValueError as exc:
                    raise RowError(
                        index, key, f"Record {index}, column '{key}' (type {column_type}): {exc}."
                    ) from None
                if coerced is not None:
                    changes.append(Change(key, "coerced", coerced, "InvalidColumnValue"))
                if isinstance(stored, str) and column_type == "string":
                    cut = _truncate(stored)
                    if cut is not stored:
                        changes.append(
                            Change(
                                key,
                                "truncated",
                                f"{len(stored.encode('utf-8'))} UTF-8 bytes truncated to {MAX_FIELD_BYTES}",
                                "FieldTooLong",
                            )
                        )
                        stored = cut
                if key == "TimeGenerated" and column_type == "datetime" and stored is not None:
                    stored, change = _time_generated(stored, received)
                    if change is not None:
                        changes.append(change)
                out[key] = stored
            if strict and changes:
                raise RowError(
                    index, key, _strict_message(index, changes[0], self.name), code=changes[0].code
                )
        return out, changes

    def validate(self, index: int, row: object) -> dict[str, Any]:
        """:meth:`admit` as the service does it, now, returning only what lands.

        :param index: Position of the row in the request body, for the error message.
        :param row: The decoded JSON value.
        :raises RowError: naming the row index and column when a value has the wrong type.
        """
        return self.admit(index, row, received=datetime.now(timezone.utc))[0]


def _time_generated(value: str, received: datetime) -> tuple[str, Change | None]:
    when = parse_datetime(value)
    if received - MAX_TIME_GENERATED_AGE <= when <= received + MAX_TIME_GENERATED_LEAD:
        return value, None
    relation = "more than 2 days before" if when < received else "more than 1 day after"
    replacement = format_datetime(received)
    return replacement, Change(
        "TimeGenerated",
        "time_replaced",
        f"{value[:64]!r} is {relation} the request was received: replaced by {replacement}",
        "TimeGeneratedOutOfRange",
    )


@dataclass(frozen=True)
class DataCollectionRule:
    """A data collection rule as the emulator sees it: an immutable id and its ingestible streams."""

    immutable_id: str
    name: str
    streams: Mapping[str, Stream]

    @property
    def tables(self) -> tuple[str, ...]:
        """All output tables, in declaration order, without duplicates."""
        seen: dict[str, None] = {}
        for stream in self.streams.values():
            for table in stream.tables:
                seen[table] = None
        return tuple(seen)

    @classmethod
    def from_properties(
        cls, properties: Mapping[str, Any], *, name: str, immutable_id: str | None = None
    ) -> DataCollectionRule:
        """Build a rule from the ``properties`` of a ``Microsoft.Insights/dataCollectionRules`` resource.

        :param properties: ``streamDeclarations``, ``dataFlows`` and (optionally) ``immutableId``.
        :param name: The rule's name, used for messages and to derive an immutable id.
        :param immutable_id: Overrides ``properties.immutableId``; by default that, else
            :func:`rule_id_for_name` of *name*.
        :raises DcrError: if the rule has nothing the emulator can ingest, or something it cannot emulate.
        """
        rule_id = immutable_id or properties.get("immutableId") or rule_id_for_name(name)
        if not isinstance(rule_id, str) or not _IMMUTABLE_ID.match(rule_id):
            raise DcrError(f"DCR {name!r}: invalid immutable id {rule_id!r}")
        declarations = properties.get("streamDeclarations") or {}
        if not isinstance(declarations, Mapping):
            raise DcrError(f"DCR {name!r}: streamDeclarations must be an object")
        columns_by_stream: dict[str, dict[str, str]] = {}
        for stream_name, declaration in declarations.items():
            if not stream_name.startswith("Custom-"):
                raise DcrError(f"DCR {name!r}: stream {stream_name!r} must start with 'Custom-'")
            raw_columns = declaration.get("columns") if isinstance(declaration, Mapping) else None
            if not isinstance(raw_columns, list) or not raw_columns:
                raise DcrError(f"DCR {name!r}: stream {stream_name!r} declares no columns")
            columns: dict[str, str] = {}
            for column in raw_columns:
                col_name = column.get("name") if isinstance(column, Mapping) else None
                col_type = str(column.get("type", "")).lower() if isinstance(column, Mapping) else ""
                if not isinstance(col_name, str) or not col_name:
                    raise DcrError(f"DCR {name!r}: stream {stream_name!r} has a column without a name")
                if col_type not in _STREAM_TYPES:
                    raise DcrError(
                        f"DCR {name!r}: stream {stream_name!r}, column {col_name!r}: unknown type "
                        f"{column.get('type')!r} (expected one of {', '.join(sorted(_STREAM_TYPES))})"
                    )
                columns[col_name] = col_type
            columns_by_stream[stream_name] = columns

        tables_by_stream: dict[str, list[str]] = {s: [] for s in columns_by_stream}
        flows = properties.get("dataFlows") or []
        if not isinstance(flows, list):
            raise DcrError(f"DCR {name!r}: dataFlows must be an array")
        for number, flow in enumerate(flows):
            if not isinstance(flow, Mapping):
                raise DcrError(f"DCR {name!r}: dataFlows[{number}] must be an object")
            output = flow.get("outputStream")
            if not isinstance(output, str) or not output:
                raise DcrError(f"DCR {name!r}: dataFlows[{number}] has no outputStream")
            if not output.startswith("Custom-"):
                raise DcrError(
                    f"DCR {name!r}: dataFlows[{number}] writes to {output!r}; the emulator only emulates "
                    "custom tables (outputStream 'Custom-<Table>_CL')"
                )
            table = output[len("Custom-") :]
            if not _TABLE_NAME.match(table):
                raise DcrError(
                    f"DCR {name!r}: dataFlows[{number}]: {table!r} is not a custom table name (*_CL)"
                )
            for stream_name in flow.get("streams") or []:
                if stream_name not in tables_by_stream:
                    raise DcrError(
                        f"DCR {name!r}: dataFlows[{number}] reads undeclared stream {stream_name!r}"
                    )
                if table not in tables_by_stream[stream_name]:
                    tables_by_stream[stream_name].append(table)
        streams = {
            s: Stream(s, columns_by_stream[s], tuple(tables))
            for s, tables in tables_by_stream.items()
            if tables
        }
        if not streams:
            raise DcrError(f"DCR {name!r}: no declared stream has a data flow to a custom table")
        return cls(rule_id, name, streams)


def default_dcr() -> DataCollectionRule:
    """The built-in rule: ``AUDIT_TABLE.dcr_properties()`` under :data:`DEFAULT_RULE_ID`."""
    return DataCollectionRule.from_properties(
        AUDIT_TABLE.dcr_properties(), name="sentinel-forwarder-emulator", immutable_id=DEFAULT_RULE_ID
    )


def _is_dcr_resource(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("type", "")).lower() == _DCR_TYPE


def load_dcrs(source: str | Path | Mapping[str, Any], *, name: str | None = None) -> list[DataCollectionRule]:
    """Load the data collection rules in a JSON document. Liberal in what it accepts:

    * a DCR resource: ``{"type": "Microsoft.Insights/dataCollectionRules", "name": .., "properties": {..}}``;
    * a bare ``properties`` object (``{"streamDeclarations": ..., "dataFlows": ...}``);
    * an ARM template (or any object) whose ``resources`` list holds DCR resources, also nested ones;
    * a JSON array of any of the above.

    The immutable id comes from ``properties.immutableId`` (or a top-level ``immutableId``), else it is
    derived from the resource name with :func:`rule_id_for_name`.

    :param source: A path to a JSON file, or the already decoded JSON object.
    :param name: Name for a rule without one; default: the file stem, or ``"dcr"``.
    :raises DcrError: if the document holds no usable DCR or a DCR is invalid.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            document: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DcrError(f"cannot read DCR file {str(path)!r}: {exc}") from exc
        fallback = name or path.stem
    else:
        document = source
        fallback = name or "dcr"
    rules: list[DataCollectionRule] = []
    _collect(document, fallback, rules)
    if not rules:
        raise DcrError(
            "no data collection rule found (expected a DCR resource, its properties or an ARM template)"
        )
    return rules


def _collect(document: Any, fallback: str, rules: list[DataCollectionRule]) -> None:
    if isinstance(document, list):
        for item in document:
            _collect(item, fallback, rules)
        return
    if not isinstance(document, Mapping):
        return
    if _is_dcr_resource(document) or (
        "properties" in document and "streamDeclarations" in document["properties"]
    ):
        properties = document.get("properties") or {}
        rule_name = document["name"] if isinstance(document.get("name"), str) else fallback
        immutable_id = document.get("immutableId") if isinstance(document.get("immutableId"), str) else None
        rules.append(
            DataCollectionRule.from_properties(properties, name=rule_name, immutable_id=immutable_id)
        )
        return
    if "streamDeclarations" in document:
        immutable_id = document.get("immutableId") if isinstance(document.get("immutableId"), str) else None
        rules.append(DataCollectionRule.from_properties(document, name=fallback, immutable_id=immutable_id))
        return
    resources = document.get("resources")
    if isinstance(resources, (list, Mapping)):
        # ARM templates: "resources" is a list; language version 2.0 templates use a symbolic-name object.
        _collect(list(resources.values()) if isinstance(resources, Mapping) else resources, fallback, rules)


def merge_rules(rules: Iterable[DataCollectionRule]) -> dict[str, DataCollectionRule]:
    """Index rules by immutable id; a later rule with the same id replaces an earlier one."""
    return {rule.immutable_id: rule for rule in rules}


def tables_of(rules: Sequence[DataCollectionRule]) -> tuple[str, ...]:
    """All output tables of *rules*, without duplicates."""
    seen: dict[str, None] = {}
    for rule in rules:
        for table in rule.tables:
            seen[table] = None
    return tuple(seen)


def table_columns(rules: Iterable[DataCollectionRule]) -> dict[str, dict[str, str]]:
    """The columns of every output table of *rules* (name -> stream type), sorted by table name: those of
    every stream that writes to it, in declaration order (the first declaration of a name wins)."""
    out: dict[str, dict[str, str]] = {}
    for rule in rules:
        for stream in rule.streams.values():
            for table in stream.tables:
                columns = out.setdefault(table, {})
                for name, column_type in stream.columns.items():
                    columns.setdefault(name, column_type)
    return dict(sorted(out.items()))
