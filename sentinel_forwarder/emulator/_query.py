"""KQL over what landed: the Logs Query API's query operation, run on DuckDB through ``duckdb-kql``.

Each query gets a fresh in-memory DuckDB database holding a snapshot of every table the emulator writes: the
declared columns, typed as Log Analytics types them, plus the standard columns Azure adds (``TenantId``: the
workspace id; ``Type``: the table name; ``_ResourceId``: empty, as for rows sent through the Logs Ingestion
API). A ``timespan`` keeps the rows whose ``TimeGenerated`` falls inside it, in every table, as the service
does. The answer has the shape of the service's (``{"tables": [{"name": "PrimaryResult", "columns": [...],
"rows": [...]}]}``) and its errors the service's error shape (``BadArgumentError`` with nested
``innererror``). duckdb-kql refuses what it cannot translate instead of guessing: that is a 400 naming the
construct. Where DuckDB's semantics may differ from Log Analytics: docs/kql.md.

Needs the ``emulator`` extra (duckdb, duckdb-kql); imported lazily, so the rest of the emulator works without.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_WORKSPACE_ID",
    "QUERY_AUDIENCES",
    "LocalWorkspace",
    "QueryError",
    "QueryResult",
    "Timespan",
    "parse_timespan",
    "run_query",
]

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Union
from uuid import UUID

from ._dcr import parse_datetime
from ._store import TableSnapshot

#: The audience a Logs Query API token must have, by cloud (LogsQueryClient requests ``<audience>/.default``;
#: pass ``audience=`` to it, since it defaults to the endpoint). Learn: api/access-api, sovereign clouds.
QUERY_AUDIENCES: Mapping[str, str] = {
    "public": "https://api.loganalytics.io",
    "usgov": "https://api.loganalytics.us",
    "china": "https://api.loganalytics.azure.cn",
}

#: The emulator's workspace id by default: the ``TenantId`` of every row and the ``{workspaceId}`` it answers.
DEFAULT_WORKSPACE_ID = "00000000-0000-0000-0000-000000000000"

#: What ``timespan`` may be, as LogsQueryClient takes it: a duration back from now, a start and a duration,
#: a start and an end, or the ISO 8601 text the service takes (``PT1H``, ``<start>/<end>``,
#: ``<start>/<duration>``).
Timespan = Union[str, timedelta, tuple[datetime, timedelta], tuple[datetime, datetime]]  # noqa: UP007

# DCR stream types -> DuckDB types (those duckdb-kql gives the KQL types).
_DUCK_TYPES: Mapping[str, str] = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "long": "BIGINT",
    "real": "DOUBLE",
    "boolean": "BOOLEAN",
    "datetime": "TIMESTAMP",
    "dynamic": "JSON",
}
# DuckDB result types -> the column types the service answers (REST spec: ColumnDataType).
_RESULT_TYPES: Mapping[str, str] = {
    "VARCHAR": "string",
    "BOOLEAN": "bool",
    "TINYINT": "int",
    "SMALLINT": "int",
    "INTEGER": "int",
    "BIGINT": "long",
    "HUGEINT": "long",
    "UTINYINT": "int",
    "USMALLINT": "int",
    "UINTEGER": "long",
    "UBIGINT": "long",
    "FLOAT": "real",
    "DOUBLE": "real",
    "TIMESTAMP": "datetime",
    "TIMESTAMP WITH TIME ZONE": "datetime",
    "DATE": "datetime",
    "INTERVAL": "timespan",
    "UUID": "guid",
    "JSON": "dynamic",
}
_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_STANDARD_COLUMNS = ("TenantId", "Type", "_ResourceId")


def _duckdb_kql() -> Any:
    """The ``duckdb_kql`` module, or :class:`QueryError` saying why it is missing (it needs Python 3.11+)."""
    try:
        import duckdb_kql
    except ImportError as exc:
        raise QueryError(
            "UnsupportedConstruct",
            "KQL queries in the emulator need the duckdb and duckdb-kql packages (the emulator extra), and "
            f"duckdb-kql needs Python 3.11 or newer; this is Python {sys.version.split()[0]} ({exc}).",
            detail={"code": "KqlEngineMissing"},
        ) from None
    return duckdb_kql


class QueryError(ValueError):
    """A query the emulator cannot answer, in the service's error shape (see :meth:`as_dict`).

    :param code: ``innererror.code``: ``SyntaxError``, ``SemanticError``, ``UnsupportedConstruct`` (the
        emulator's: duckdb-kql does not translate it; Log Analytics may well run it) or ``InvalidTimespan``.
    :param message: What is wrong, for people.
    :param detail: The innermost error: a code (``SYN0002``, ``SEM0100``, or the construct's name) and where.
    """

    def __init__(self, code: str, message: str, *, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = dict(detail or {})

    def as_dict(self, correlation_id: str = "") -> dict[str, Any]:
        """The 400 answer's body: ``{"error": {"code": "BadArgumentError", ..., "innererror": {...}}}``."""
        inner: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail:
            inner["innererror"] = self.detail
        return {
            "error": {
                "message": "The request had some invalid properties",
                "code": "BadArgumentError",
                "correlationId": correlation_id,
                "innererror": inner,
            }
        }


@dataclass(frozen=True)
class QueryResult:
    """The primary result of a query: column names, their Log Analytics types, rows of Python values.

    Values: ``datetime`` (UTC, aware) for ``datetime``, ``timedelta`` for ``timespan``, decoded JSON for
    ``dynamic``, ``str``, ``int``, ``float``, ``bool`` or ``None`` otherwise.
    """

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def dicts(self) -> list[dict[str, Any]]:
        """One ``{column: value}`` per row."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    @classmethod
    def from_response(cls, body: Mapping[str, Any]) -> QueryResult:
        """Read the primary result of a Logs Query API answer (the emulator's or Azure's) back into Python
        values, as :func:`run_query` returns them.

        :raises ValueError: if *body* has no table.
        """
        tables = body.get("tables") or []
        if not tables:
            raise ValueError("the answer has no table")
        table = tables[0]
        columns = tuple(str(c["name"]) for c in table["columns"])
        types = tuple(str(c["type"]) for c in table["columns"])
        rows = tuple(
            tuple(_from_wire(t, v) for t, v in zip(types, row, strict=True)) for row in table["rows"]
        )
        return cls(columns, types, rows)

    def as_response(self) -> dict[str, Any]:
        """The service's answer body: datetimes as ISO 8601 text, timespans as ``[d.]hh:mm:ss[.fffffff]``,
        dynamic values as JSON text (as Log Analytics sends them)."""
        return {
            "tables": [
                {
                    "name": "PrimaryResult",
                    "columns": [
                        {"name": n, "type": t} for n, t in zip(self.columns, self.types, strict=True)
                    ],
                    "rows": [
                        [_wire(t, v) for t, v in zip(self.types, row, strict=True)] for row in self.rows
                    ],
                }
            ]
        }


def _wire(column_type: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, timedelta):
        return format_timespan(value)
    if column_type == "dynamic":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    return value


_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


def _from_wire(column_type: str, value: Any) -> Any:
    if value is None:
        return None
    if column_type == "datetime" and isinstance(value, str):
        return parse_datetime(value)
    if column_type == "timespan" and isinstance(value, str):
        match = _TIMESPAN.match(value)
        if match:
            sign, days, hours, minutes, seconds, fraction = match.groups()
            span = timedelta(
                days=int(days or 0),
                hours=int(hours),
                minutes=int(minutes),
                seconds=int(seconds),
                microseconds=int((fraction or "0").ljust(7, "0")[:6]),
            )
            return -span if sign else span
    if column_type == "dynamic" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def format_timespan(value: timedelta) -> str:
    """A timespan as Kusto writes it: ``[-][d.]hh:mm:ss[.fffffff]``."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if value.days:
        text = f"{value.days}.{text}"
    if value.microseconds:
        text += f".{value.microseconds:06d}0"
    return sign + text


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        raise QueryError(
            "InvalidTimespan",
            f"The timespan {text[:64]!r} is not an ISO 8601 duration in weeks, days, hours, minutes and "
            "seconds (PT1H, P1D, PT3600.0S).",
        )
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(
        weeks=parts.get("w", 0),
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )


def _instant(text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise QueryError("InvalidTimespan", f"The timespan has an invalid date-time: {exc}.") from None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def parse_timespan(timespan: Timespan | None, now: datetime) -> tuple[datetime, datetime] | None:
    """The ``(start, end)`` (UTC, aware) a timespan stands for, or ``None`` for no constraint.

    :param timespan: See :data:`Timespan`.
    :param now: The end of a bare duration.
    :raises QueryError: ``InvalidTimespan``.
    """
    if timespan is None or timespan == "":
        return None
    if isinstance(timespan, timedelta):
        return _utc(now) - timespan, _utc(now)
    if isinstance(timespan, tuple):
        start, other = timespan
        if isinstance(other, timedelta):
            return _utc(start), _utc(start) + other
        return _utc(start), _utc(other)
    if not isinstance(timespan, str):
        raise QueryError("InvalidTimespan", f"The timespan must be a string, not {type(timespan).__name__}.")
    first, slash, second = timespan.strip().partition("/")
    if not slash:
        return _utc(now) - _duration(first), _utc(now)
    if first.upper().startswith("P"):
        end = _instant(second)
        return end - _duration(first), end
    start = _instant(first)
    if second.upper().startswith("P"):
        return start, start + _duration(second)
    return start, _instant(second)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column_types(snapshot: TableSnapshot) -> dict[str, str]:
    """Declared columns, or (for a database that predates the declarations) what the rows hold."""
    if snapshot.columns:
        columns = dict(snapshot.columns)
    else:
        seen: dict[str, str | None] = {}
        for _, text in snapshot.rows:
            for name, value in json.loads(text).items():
                if seen.get(name) is None:
                    seen[name] = _json_type(value)
        columns = {n: t or "string" for n, t in seen.items()}
    columns["TimeGenerated"] = "datetime"
    return columns


def _json_type(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "real"
    return "string" if isinstance(value, str) else "dynamic"


def _load(con: Any, table: str, snapshot: TableSnapshot, workspace_id: str) -> None:
    """Load one table's rows, typed, into ``"__rows__<table>"`` (the view ``"<table>"`` filters them)."""
    selects: list[str] = []
    for name, column_type in _column_types(snapshot).items():
        if name in _STANDARD_COLUMNS:
            continue
        path = _literal('$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"')
        if column_type == "dynamic":
            expr = f"json_extract(r, {path})"
        elif column_type == "datetime":
            expr = f"CAST(TRY_CAST(json_extract_string(r, {path}) AS TIMESTAMPTZ) AS TIMESTAMP)"
            if name == "TimeGenerated":
                # A row without one gets the time it was received (the emulator's choice; Azure's transform
                # would fail or fill it in, depending on the DCR).
                expr = f"coalesce({expr}, CAST(CAST(i AS TIMESTAMPTZ) AS TIMESTAMP))"
        else:
            expr = f"TRY_CAST(json_extract_string(r, {path}) AS {_DUCK_TYPES[column_type]})"
        selects.append(f"{expr} AS {_identifier(name)}")
    selects += [
        f"CAST({_literal(workspace_id)} AS VARCHAR) AS TenantId",
        f"CAST({_literal(table)} AS VARCHAR) AS Type",
        "CAST('' AS VARCHAR) AS _ResourceId",
    ]
    source = "SELECT unnest(?::VARCHAR[]) AS i, unnest(?::VARCHAR[]) AS r"
    con.execute(
        f"CREATE TABLE {_identifier('__rows__' + table)} AS SELECT {', '.join(selects)} FROM ({source})",
        [[i for i, _ in snapshot.rows], [r for _, r in snapshot.rows]],
    )


def _native(column_type: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if column_type == "dynamic":
        return json.loads(value) if isinstance(value, str) else value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    return value


def _result_type(duck_type: str) -> str:
    if duck_type.startswith("DECIMAL"):
        return "real"
    if duck_type.endswith("]") or duck_type.startswith(("STRUCT", "MAP")):
        return "dynamic"
    return _RESULT_TYPES.get(duck_type, "string")


class LocalWorkspace:
    """A snapshot of tables loaded into an in-memory DuckDB database once, to run many queries over (each
    with its own timespan and ``now()``). Not thread-safe: one thread at a time; close it when done.

    :param tables: The tables, by name (``RowStore.snapshot()``, ``read_snapshot(db)``).
    :param workspace_id: The ``TenantId`` of every row.
    """

    def __init__(
        self, tables: Mapping[str, TableSnapshot], *, workspace_id: str = DEFAULT_WORKSPACE_ID
    ) -> None:
        duckdb_kql = _duckdb_kql()
        self._tables = list(tables)
        self._con = duckdb_kql.connect()
        self._translated: dict[str, tuple[str, dict[str, Any]]] = {}
        try:
            for table, snapshot in tables.items():
                _load(self._con, table, snapshot, workspace_id)
        except BaseException:
            self._con.close()
            raise

    def close(self) -> None:
        """Free the database."""
        self._con.close()

    def __enter__(self) -> LocalWorkspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _restrict(self, span: tuple[datetime, datetime] | None) -> None:
        where = ""
        if span is not None:
            low, high = (_literal(t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")) for t in span)
            where = f" WHERE TimeGenerated BETWEEN CAST({low} AS TIMESTAMP) AND CAST({high} AS TIMESTAMP)"
        for table in self._tables:
            self._con.execute(
                f"CREATE OR REPLACE VIEW {_identifier(table)} AS "
                f"SELECT * FROM {_identifier('__rows__' + table)}{where}"
            )

    def _translate(self, kql: str, moment: datetime) -> tuple[str, dict[str, Any]]:
        """The SQL for *kql* and its parameters; the translation (slow: a Python ANTLR parser) is cached per
        query text, with ``now()`` a bound parameter that is set for each run."""
        import duckdb_kql
        from duckdb_kql.engine import schema

        clock = "kqlnow"  # duckdb_kql.translate.CLOCK_SLOT: the parameter now() binds to
        cached = self._translated.get(kql)
        if cached is None:
            translated = duckdb_kql.to_sql(kql, schema=schema(self._con), query_now=moment, allow_write=False)
            if translated.unbound:
                raise duckdb_kql.KqlSchemaError(
                    ", ".join(translated.unbound), hint="query parameter without value"
                )
            cached = (str(translated), dict(translated.parameters))
            if set(cached[1]) <= {clock}:
                self._translated[kql] = cached
        sql, parameters = cached
        if clock in parameters:
            parameters = {**parameters, clock: moment.astimezone(timezone.utc).replace(tzinfo=None)}
        return sql, parameters

    def query(
        self, kql: str, *, timespan: Timespan | None = None, now: datetime | None = None
    ) -> QueryResult:
        """Run *kql* and return its primary result.

        :param kql: The query.
        :param timespan: Keep rows whose ``TimeGenerated`` is inside it (both ends included); ``None``: all.
        :param now: What ``now()`` and ``ago()`` mean, and the end of a bare-duration timespan; default: now.
        :raises QueryError: for a query that does not parse, names an unknown table or column, uses a
            construct duckdb-kql cannot translate, or fails in DuckDB; and for an invalid timespan.
        """
        import duckdb
        import duckdb_kql

        if not isinstance(kql, str) or not kql.strip():
            raise QueryError("SyntaxError", "The query is empty.", detail={"code": "SYN0001"})
        moment = _utc(now) if now is not None else datetime.now(timezone.utc)
        self._restrict(parse_timespan(timespan, moment))
        try:
            sql, parameters = self._translate(kql, moment)
            relation = self._con.execute(sql, parameters) if parameters else self._con.execute(sql)
            description = relation.description or []
            columns = tuple(str(d[0]) for d in description)
            types = tuple(_result_type(str(d[1])) for d in description)
            fetched: Sequence[tuple[Any, ...]] = relation.fetchall()
        except duckdb_kql.KqlUnsupportedError as exc:
            raise QueryError(
                "UnsupportedConstruct",
                f"The emulator cannot run this query: duckdb-kql does not translate {exc.construct!r}"
                + (f" ({exc.hint})" if exc.hint else "")
                + ". Log Analytics may support it; see docs/kql.md.",
                detail={"code": exc.construct, **_where(exc.span)},
            ) from None
        except duckdb_kql.KqlSyntaxError as exc:
            first = exc.diagnostics[0] if exc.diagnostics else None
            raise QueryError(
                "SyntaxError",
                "A recognition error occurred in the query.",
                detail={"code": "SYN0002", "message": str(exc), **_where(first.span if first else None)},
            ) from None
        except (duckdb_kql.KqlError, duckdb.CatalogException, duckdb.BinderException) as exc:
            raise QueryError(
                "SemanticError",
                "A semantic error occurred.",
                detail={"code": "SEM0100", "message": _first_line(exc)},
            ) from None
        except duckdb.Error as exc:
            raise QueryError(
                "SemanticError", f"The query failed in DuckDB: {_first_line(exc)}", detail={"code": "SEM0001"}
            ) from None
        rows = tuple(tuple(_native(t, v) for t, v in zip(types, row, strict=True)) for row in fetched)
        return QueryResult(columns, types, rows)


def run_query(
    tables: Mapping[str, TableSnapshot],
    kql: str,
    *,
    timespan: Timespan | None = None,
    now: datetime | None = None,
    workspace_id: str = DEFAULT_WORKSPACE_ID,
) -> QueryResult:
    """Run *kql* once over *tables* (see :meth:`LocalWorkspace.query`)."""
    with LocalWorkspace(tables, workspace_id=workspace_id) as workspace:
        return workspace.query(kql, timespan=timespan, now=now)


def _where(span: Any) -> dict[str, Any]:
    return {} if span is None else {"line": span.line, "pos": span.column}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
