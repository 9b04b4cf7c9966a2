"""The spool's operator commands: what ``sentinel-forwarder spool`` shows and does to a spool directory.

Each spool file's status (rows waiting, their bytes, the oldest, dead letters, whether its owner runs); the
dead letters, read, replayed (into a new file that a forwarder adopts) or purged. They open the files the
forwarders use (``_spool``) while those run: SQLite's locking keeps each change whole, and a running
forwarder reads its counters again at its next maintenance.
"""

from __future__ import annotations

__all__ = [
    "DeadLetter",
    "SpoolError",
    "SpoolFileStatus",
    "dead_letters",
    "purge",
    "replay",
    "row_json",
    "status",
]

import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .store import (
    SCHEMA,
    FileLock,
    SpoolError,
    claimed,
    connect,
    file_name,
    lock_path,
    owned_here,
    remove_files,
    spool_files,
)

logger = logging.getLogger("sentinel_forwarder.spool")


@dataclass(frozen=True)
class SpoolFileStatus:
    """One spool file, for ``sentinel-forwarder spool status``."""

    path: str
    owner_alive: bool
    rows: int
    bytes: int
    oldest: float | None  # time.time() of the oldest waiting row
    dead_letters: int


@dataclass(frozen=True)
class DeadLetter:
    """A row the service refused, kept with its answer."""

    file: str
    id: int
    enqueued: float
    severity: int
    reason: str
    error: str
    failed: float
    row: str


def _alive(db: Path) -> bool:
    if owned_here(db):
        return True
    try:
        lock = FileLock(lock_path(db), create=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    lock.release()
    return False


def _directory(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    if not path.is_dir():
        raise SpoolError(f"{str(path)!r} is not a spool directory")
    return path


def status(directory: str | os.PathLike[str]) -> list[SpoolFileStatus]:
    """Each spool file in *directory*: rows waiting, their bytes, the oldest, dead letters."""
    result = []
    for db_path in spool_files(_directory(directory)):
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
            try:
                rows, size, oldest = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0), MIN(enqueued) FROM rows"
                ).fetchone()
                (dead,) = db.execute("SELECT COUNT(*) FROM dead").fetchone()
            finally:
                db.close()
        except sqlite3.Error as exc:
            logger.error("sentinel-forwarder: cannot read spool file %s: %s", db_path, exc)
            continue
        result.append(SpoolFileStatus(str(db_path), _alive(db_path), rows, size, oldest, dead))
    return result


def dead_letters(directory: str | os.PathLike[str], *, limit: int | None = None) -> list[DeadLetter]:
    """The dead letters of every file in *directory*, oldest first."""
    found: list[DeadLetter] = []
    for db_path in spool_files(_directory(directory)):
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
        try:
            for row in db.execute(
                "SELECT id, enqueued, severity, reason, error, failed, data FROM dead ORDER BY id"
            ):
                data = row[6].decode("utf-8", "replace") if isinstance(row[6], bytes) else str(row[6])
                row_id, enqueued, severity, reason, error, failed = row[:6]
                found.append(
                    DeadLetter(str(db_path), row_id, enqueued, severity, reason, error, failed, data)
                )
        finally:
            db.close()
    found.sort(key=lambda d: d.failed)
    return found[:limit] if limit is not None else found


def replay(directory: str | os.PathLike[str]) -> int:
    """Move every dead letter back to delivery: into a new unowned file that the next forwarder (or a
    running one, within a minute) adopts. -> rows replayed."""
    path = _directory(directory)
    moved = 0
    target = path / file_name("replay")
    with claimed(target):  # no forwarder of this process adopts it while it is written
        lock = FileLock(lock_path(target), create=True)  # nor one of another process
        try:
            out = connect(target, create=True)
            out.executescript(SCHEMA)
            for db_path in spool_files(path):
                if db_path == target:
                    continue
                db = connect(db_path, create=False)
                try:
                    db.execute("BEGIN IMMEDIATE")
                    dead = db.execute("SELECT id, enqueued, severity, data FROM dead ORDER BY id").fetchall()
                    out.execute("BEGIN IMMEDIATE")
                    out.executemany(
                        "INSERT INTO rows (enqueued, severity, data) VALUES (?, ?, ?)", [d[1:] for d in dead]
                    )
                    out.execute("COMMIT")
                    db.execute("DELETE FROM dead")
                    db.execute("COMMIT")
                    moved += len(dead)
                finally:
                    db.close()
            out.close()
        finally:
            lock.release()
    if not moved:
        remove_files(target)
    return moved


def purge(directory: str | os.PathLike[str], *, dead_only: bool = True) -> int:
    """Delete the dead letters (or, with ``dead_only=False``, every waiting row too). -> rows deleted."""
    deleted = 0
    for db_path in spool_files(_directory(directory)):
        db = connect(db_path, create=False)
        try:
            db.execute("BEGIN IMMEDIATE")
            deleted += db.execute("DELETE FROM dead").rowcount
            if not dead_only:
                deleted += db.execute("DELETE FROM rows").rowcount
            db.execute("COMMIT")
        finally:
            db.close()
    return deleted


def row_json(data: bytes | str) -> dict[str, object]:
    """A spooled row's columns."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a spooled row is not a JSON object")
    return value
