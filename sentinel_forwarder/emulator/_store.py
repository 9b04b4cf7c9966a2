"""Where accepted rows land: one SQLite table per output table, each row stored as JSON text.

Layout of every table (``<Table>_CL``)::

    _Seq        INTEGER PRIMARY KEY AUTOINCREMENT  -- arrival order
    _IngestedAt TEXT    -- ISO 8601 UTC time the emulator accepted the request
    _RuleId     TEXT    -- DCR immutable id
    _Stream     TEXT    -- input stream name
    _Row        TEXT    -- the row as JSON (declared columns only, long strings truncated)

Silent losses (see :class:`~sentinel_forwarder.emulator.Loss`) go to the ``_EmulatorLosses`` table of the same
database, the first :data:`MAX_RECORDED_LOSSES` of them (all are counted). The declared columns of every
table (name and DCR type, from the streams that write to it) go to ``_EmulatorColumns``, so that a query over
the file (``sentinel-forwarder rules test --db``) types them as the emulator did.

Pure Python (no starlette): the CLI reads files with :func:`read_rows` and :func:`read_losses`.
"""

from __future__ import annotations

__all__ = [
    "MAX_RECORDED_LOSSES",
    "RowStore",
    "TableSnapshot",
    "list_tables",
    "read_losses",
    "read_rows",
    "read_snapshot",
]

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from ._losses import LOSS_KINDS, Loss, LossKind

#: At most this many losses are stored (in memory or in the database file); the rest are only counted.
MAX_RECORDED_LOSSES = 100_000

# Starts with an underscore, so it can never be a custom table (those start with a letter).
_LOSS_TABLE = '"_EmulatorLosses"'
_LOSS_COLUMNS = "RequestId, RuleId, Stream, Record, ColumnName, Kind, Detail"
_COLUMNS_TABLE = '"_EmulatorColumns"'

_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")


def _quoted(table: str) -> str:
    if not _TABLE_NAME.match(table):
        raise ValueError(f"invalid table name {table!r}")
    return f'"{table}"'


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class TableSnapshot:
    """One table as a query sees it: its declared columns and its rows as stored."""

    #: Column name -> DCR stream type (``string``, ``int``, ``long``, ``real``, ``boolean``, ``datetime``,
    #: ``dynamic``); empty when the database predates the declarations (then the rows tell).
    columns: Mapping[str, str]
    #: ``(_IngestedAt, _Row)`` pairs in arrival order: the ISO 8601 receive time and the row as JSON text.
    rows: Sequence[tuple[str, str]]


def _decode(record: tuple[Any, ...], meta: bool) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(record[4])
    if meta:
        row = {"_Seq": record[0], "_IngestedAt": record[1], "_RuleId": record[2], "_Stream": record[3], **row}
    return row


class RowStore:
    """Thread-safe SQLite row store (or, in sink mode, per-table counters only).

    :param db: A file path, or ``":memory:"``.
    :param sink: Store nothing; only count.
    """

    def __init__(self, db: str | Path, *, sink: bool = False) -> None:
        self._lock = threading.Lock()
        self._sink = sink
        self._counts: dict[str, int] = {}
        self._losses = 0
        self._conn = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None)
        if str(db) != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_LOSS_TABLE} (_Seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "_RecordedAt TEXT NOT NULL, RequestId TEXT NOT NULL, RuleId TEXT NOT NULL, Stream TEXT NOT NULL, "
            "Record INTEGER, ColumnName TEXT, Kind TEXT NOT NULL, Detail TEXT NOT NULL)"
        )
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_COLUMNS_TABLE} (TableName TEXT PRIMARY KEY, Columns TEXT NOT NULL)"
        )

    def create_tables(self, tables: Iterable[str] | Mapping[str, Mapping[str, str]]) -> None:
        """Create the tables that do not exist yet.

        :param tables: Output table names, or a mapping of table name to its declared columns (name -> DCR
            type), which are recorded for queries.
        """
        with self._lock:
            for table in tables:
                if isinstance(tables, Mapping):
                    self._conn.execute(
                        f"INSERT OR REPLACE INTO {_COLUMNS_TABLE} (TableName, Columns) VALUES (?, ?)",
                        (table, json.dumps(dict(tables[table]))),
                    )
                self._counts.setdefault(table, 0)
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_quoted(table)} (_Seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                    "_IngestedAt TEXT NOT NULL, _RuleId TEXT NOT NULL, _Stream TEXT NOT NULL, "
                    "_Row TEXT NOT NULL)"
                )

    def insert(self, table: str, rows: Sequence[dict[str, Any]], *, rule_id: str, stream: str) -> None:
        """Append *rows* to *table* in one transaction.

        :param table: Output table; must have been created.
        :param rows: Validated rows.
        :param rule_id: DCR immutable id, stored alongside.
        :param stream: Input stream name, stored alongside.
        """
        with self._lock:
            self._counts[table] = self._counts.get(table, 0) + len(rows)
            if self._sink or not rows:
                return
            stamp = _now()
            encoded = [
                (stamp, rule_id, stream, json.dumps(r, ensure_ascii=False, separators=(",", ":")))
                for r in rows
            ]
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    f"INSERT INTO {_quoted(table)} (_IngestedAt, _RuleId, _Stream, _Row) VALUES (?, ?, ?, ?)",
                    encoded,
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def rows(self, table: str, *, limit: int | None = None, meta: bool = False) -> list[dict[str, Any]]:
        """Rows of *table* in arrival order (always empty in sink mode).

        :param table: Output table.
        :param limit: At most this many (the first ones); ``None`` for all.
        :param meta: Add ``_Seq``, ``_IngestedAt``, ``_RuleId`` and ``_Stream`` to each row.
        """
        with self._lock:
            if self._sink:
                return []
            return _select(self._conn, table, limit, meta)

    def snapshot(self) -> dict[str, TableSnapshot]:
        """Every table with its declared columns and stored rows (all empty in sink mode)."""
        with self._lock:
            tables = _snapshot(self._conn)
            return {t: TableSnapshot(s.columns, []) for t, s in tables.items()} if self._sink else tables

    def count(self, table: str) -> int:
        """Number of rows accepted into *table* (in sink mode: counted, not stored)."""
        with self._lock:
            if self._sink:
                return self._counts.get(table, 0)
            (n,) = self._conn.execute(f"SELECT COUNT(*) FROM {_quoted(table)}").fetchone()
            return int(n)

    def record_losses(self, losses: Sequence[Loss]) -> None:
        """Count *losses* and store them while fewer than :data:`MAX_RECORDED_LOSSES` are stored.

        :param losses: The losses of one request.
        """
        with self._lock:
            room = max(0, MAX_RECORDED_LOSSES - self._losses)
            self._losses += len(losses)
            if not room or not losses:
                return
            stamp = _now()
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    f"INSERT INTO {_LOSS_TABLE} (_RecordedAt, {_LOSS_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (stamp, x.request_id, x.rule_id, x.stream, x.row, x.column, x.kind, x.detail)
                        for x in losses[:room]
                    ],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def losses(self, *, limit: int | None = None) -> list[Loss]:
        """Recorded losses in order (at most :data:`MAX_RECORDED_LOSSES`; see :meth:`loss_count`).

        :param limit: At most this many (the first ones); ``None`` for all.
        """
        with self._lock:
            return _select_losses(self._conn, limit)

    def loss_count(self) -> int:
        """How many losses happened since the last :meth:`clear`, recorded or not."""
        with self._lock:
            return self._losses

    def clear(self) -> None:
        """Delete every stored row and loss and reset the counters."""
        with self._lock:
            self._losses = 0
            self._conn.execute(f"DELETE FROM {_LOSS_TABLE}")
            for table in self._counts:
                self._counts[table] = 0
                if not self._sink:
                    self._conn.execute(f"DELETE FROM {_quoted(table)}")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()


def _select(conn: sqlite3.Connection, table: str, limit: int | None, meta: bool) -> list[dict[str, Any]]:
    sql = f"SELECT _Seq, _IngestedAt, _RuleId, _Stream, _Row FROM {_quoted(table)} ORDER BY _Seq"
    params: tuple[int, ...] = ()
    if limit is not None:
        sql += " LIMIT ?"
        params = (max(limit, 0),)
    return [_decode(record, meta) for record in conn.execute(sql, params)]


def _snapshot(conn: sqlite3.Connection) -> dict[str, TableSnapshot]:
    declared: dict[str, dict[str, str]] = {}
    has_columns = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_EmulatorColumns'"
    ).fetchone()
    if has_columns:
        declared = {
            name: json.loads(columns)
            for name, columns in conn.execute(f"SELECT TableName, Columns FROM {_COLUMNS_TABLE}")
        }
    out: dict[str, TableSnapshot] = {}
    for table in _row_tables(conn):
        rows = conn.execute(f"SELECT _IngestedAt, _Row FROM {_quoted(table)} ORDER BY _Seq").fetchall()
        out[table] = TableSnapshot(declared.get(table, {}), rows)
    return out


def _row_tables(conn: sqlite3.Connection) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND substr(name, 1, 1) != '_' ORDER BY name"
        )
    ]


def _select_losses(conn: sqlite3.Connection, limit: int | None) -> list[Loss]:
    sql = f"SELECT {_LOSS_COLUMNS} FROM {_LOSS_TABLE} ORDER BY _Seq"
    params: tuple[int, ...] = ()
    if limit is not None:
        sql += " LIMIT ?"
        params = (max(limit, 0),)
    out: list[Loss] = []
    for request_id, rule_id, stream, record, column, kind, detail in conn.execute(sql, params):
        if kind in LOSS_KINDS:
            out.append(Loss(request_id, rule_id, stream, record, column, cast(LossKind, kind), detail))
    return out


def _open_read_only(db: str | Path) -> sqlite3.Connection:
    path = Path(db)
    if not path.exists():
        raise FileNotFoundError(f"no emulator database at {str(path)!r}")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def list_tables(db: str | Path) -> list[str]:
    """Names of the row tables in an emulator database file.

    :param db: Path of the SQLite file the emulator wrote (``--db``).
    :raises FileNotFoundError: if there is no such file.
    """
    conn = _open_read_only(db)
    try:
        return _row_tables(conn)
    finally:
        conn.close()


def read_snapshot(db: str | Path) -> dict[str, TableSnapshot]:
    """Every table of an emulator database file with its declared columns and rows, for queries.

    :param db: Path of the SQLite file the emulator wrote (``--db``).
    :raises FileNotFoundError: if there is no such file.
    """
    conn = _open_read_only(db)
    try:
        return _snapshot(conn)
    finally:
        conn.close()


def read_rows(
    db: str | Path, table: str, *, limit: int | None = None, meta: bool = False
) -> list[dict[str, Any]]:
    """Read landed rows back from an emulator database file, in arrival order.

    :param db: Path of the SQLite file the emulator wrote (``--db``).
    :param table: Output table, e.g. ``AISentinelAudit_CL``.
    :param limit: At most this many (the first ones); ``None`` for all.
    :param meta: Add ``_Seq``, ``_IngestedAt``, ``_RuleId`` and ``_Stream`` to each row.
    :raises FileNotFoundError: if there is no such file.
    :raises KeyError: if the file has no such table.
    """
    if table not in list_tables(db):
        raise KeyError(table)
    conn = _open_read_only(db)
    try:
        return _select(conn, table, limit, meta)
    finally:
        conn.close()


def read_losses(db: str | Path, *, limit: int | None = None) -> list[Loss]:
    """Read the silent losses an emulator recorded in its database file, in order.

    Format them with :func:`~sentinel_forwarder.emulator.format_loss_report`.

    :param db: Path of the SQLite file the emulator wrote (``--db``).
    :param limit: At most this many (the first ones); ``None`` for all.
    :raises FileNotFoundError: if there is no such file.
    """
    conn = _open_read_only(db)
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_EmulatorLosses'"
        ).fetchone()
        return _select_losses(conn, limit) if exists else []
    finally:
        conn.close()
