"""The durable spool's storage: one SQLite file per live process in a shared directory.

Each process owns ``spool-<pid>-<random>.sqlite3`` in the directory while it holds an exclusive lock on the
file's ``.lock`` companion (a POSIX record lock, or ``msvcrt`` on Windows; the kernel releases it when the
process dies, however it dies). A starting forwarder *adopts* the files whose lock it can take: their owner
is dead, so their rows are copied into its own file (oldest first) and the file is deleted. A file SQLite
cannot read is renamed ``*.corrupt`` and logged at ERROR; it never stops the forwarder.

Two tables: ``rows`` (waiting for delivery, in id order, which is arrival order) and ``dead`` (refused by
the service, kept with its answer for an operator to read, replay or purge); and the head of the process's
hash chain (``chain``: id, sequence, last hash), written with the rows it linked, so that the process that
adopts the file continues the chain. ``journal_mode=WAL`` with
``synchronous=NORMAL``: a commit survives the process being killed (the data is in the operating system's
cache); a power failure may lose the last commits.

Not thread-safe: the forwarder calls it from one worker thread at a time. The operator commands
(``_spool_admin``) open the same files through :func:`spool_files`, :func:`connect`, :class:`FileLock` and
:func:`claimed`.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "Appended",
    "FileLock",
    "Spool",
    "SpoolError",
    "claimed",
    "connect",
    "file_name",
    "lock_path",
    "owned_here",
    "remove_files",
    "spool_files",
]

import contextlib
import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("sentinel_forwarder.spool")

_SUFFIX = ".sqlite3"
_PREFIX = "spool-"
#: The tables of a spool file.
SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enqueued REAL NOT NULL,
    severity INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_by_severity ON rows (severity, id);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enqueued REAL NOT NULL,
    severity INTEGER NOT NULL,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    failed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chain (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    chain_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"""
#: Rows copied per statement when adopting a dead process's file.
_COPY_PAGE = 2_000
#: Files owned by spools of this process. A POSIX record lock does not keep out the process that holds it,
#: and closing any descriptor of the file would release it: a file listed here is never opened to be locked.
_owned: set[str] = set()
_owned_lock = threading.Lock()


def _new_owned_lock() -> None:  # a lock another thread held at fork time stays held in the child
    global _owned_lock
    _owned_lock = threading.Lock()
    _owned.clear()  # the parent's files are the parent's: adopted like any other if it dies


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_owned_lock)


def owned_here(path: Path) -> bool:
    """Whether a spool of this process holds *path*: its own file, or one being adopted or written."""
    with _owned_lock:
        return str(path.resolve()) in _owned


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[None]:
    """Hold *path* for this process meanwhile: no spool of this process opens its lock file to adopt it."""
    key = str(path.resolve())
    with _owned_lock:
        _owned.add(key)
    try:
        yield
    finally:
        with _owned_lock:
            _owned.discard(key)


class SpoolError(OSError):
    """The spool directory cannot be used (not creatable, not writable); the message names it."""


@dataclass(frozen=True)
class Appended:
    """What :meth:`Spool.append` did: the ids given to the kept rows, and what it shed to make room."""

    #: Ids of the rows given, in order; ``None`` for a row shed at once (it never went to disk).
    ids: list[int | None]
    #: Rows already spooled that were shed to make room, by severity.
    shed_stored: dict[int, int]
    #: Ids of the stored rows that were shed.
    shed_ids: list[int]


class FileLock:
    """An exclusive, non-blocking lock on a companion file; released by the kernel when the process dies."""

    def __init__(self, path: Path, *, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self._fd = os.open(path, flags, 0o600)
        try:
            self._acquire()
        except OSError:
            os.close(self._fd)
            raise

    def _acquire(self) -> None:
        if sys.platform == "win32":  # pragma: no cover - not exercised on Linux CI
            import msvcrt

            msvcrt.locking(self._fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)  # closing the descriptor releases the lock


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection to the spool file *path* (WAL, ``synchronous=NORMAL``, autocommit)."""
    uri = f"file:{path}?mode={'rwc' if create else 'rw'}"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=5.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def file_name(owner: str) -> str:
    """A new spool file's name, unique to *owner* (a process id, or ``replay``)."""
    return f"{_PREFIX}{owner}-{secrets.token_hex(4)}{_SUFFIX}"


def spool_files(directory: Path) -> list[Path]:
    """The spool files in *directory*, in name order."""
    return sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}"))


def lock_path(db: Path) -> Path:
    """The lock file of the spool file *db*."""
    return db.with_name(db.name + ".lock")


def remove_files(db: Path) -> None:
    """Delete the spool file *db* with its WAL, shared-memory and lock files."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), lock_path(db)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _quarantine(db: Path, exc: BaseException) -> None:
    target = db.with_name(f"{db.name}.{int(time.time())}.corrupt")
    logger.error(
        "sentinel-forwarder: spool file %s cannot be read (%s); moved aside to %s", db, exc, target.name
    )
    with contextlib.suppress(OSError):
        db.rename(target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            db.with_name(db.name + suffix).rename(target.with_name(target.name + suffix))
    with contextlib.suppress(OSError):
        lock_path(db).unlink()


class Spool:
    """The spool of one process: its own file in *directory*, plus the files it adopts.

    :param directory: shared by every process of the application (gunicorn workers, pool processes).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path: Path | None = None
        self._db: sqlite3.Connection | None = None
        self._lock: FileLock | None = None
        #: Waiting rows and their bytes (the ``data`` column), kept in step with every change.
        self.rows = 0
        self.bytes = 0
        self.dead_letters = 0
        self.dead_bytes = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory and this process's file, under its lock.

        :raises SpoolError: naming the directory, if it cannot be created or written.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = file_name(str(os.getpid()))
            path = self.path = self.directory / name
            with _owned_lock:
                _owned.add(str(path.resolve()))
            self._lock = FileLock(lock_path(path), create=True)
            self._db = connect(path, create=True)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise SpoolError(
                f"the spool directory {str(self.directory)!r} cannot be used: {exc} "
                "(it must be a writable directory; it is created if missing)"
            ) from exc

    def close(self) -> None:
        """Close the file and release its lock; its rows wait for the next forwarder. Idempotent."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
        if self.path is not None:
            with _owned_lock:
                _owned.discard(str(self.path.resolve()))

    def forget(self) -> None:
        """In a forked child: drop the parent's connection and lock without touching them."""
        self._db = None
        self._lock = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the spool is not open")
        return self._db

    # -- adoption --------------------------------------------------------------------------------------

    def adopt(self) -> int:
        """Copy the rows of every file whose owner is dead into this one, oldest file first; delete them.

        :returns: rows adopted (dead letters are adopted too, not counted).
        """
        adopted = 0
        for other in spool_files(self.directory):
            key = str(other.resolve())
            with _owned_lock:
                if key in _owned:
                    continue  # this process's: its own, another forwarder's, or being adopted by one
                _owned.add(key)  # claimed: no other forwarder of this process opens its lock file now
            try:
                adopted += self._adopt_locked(other)
            finally:
                with _owned_lock:
                    _owned.discard(key)
        return adopted

    def _adopt_locked(self, other: Path) -> int:
        try:
            lock = FileLock(lock_path(other), create=False)
        except FileNotFoundError:
            # No lock file: a file written by ``replay``, or one whose owner died before locking.
            try:
                lock = FileLock(lock_path(other), create=True)
            except OSError:
                return 0
        except OSError:
            return 0  # its owner is alive
        try:
            return self._adopt_file(other) if other.exists() else 0
        finally:
            lock.release()

    def _adopt_file(self, other: Path) -> int:
        """Copy *other*'s rows and dead letters into this file in one transaction, then delete *other*.

        A source SQLite cannot read is moved aside; a failure to write this file leaves *other* as it is
        (the next maintenance tries again).
        """
        try:
            source = connect(other, create=False)
            check = source.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
        except sqlite3.Error as exc:
            with contextlib.suppress(UnboundLocalError, sqlite3.Error):
                source.close()
            _quarantine(other, exc)
            return 0
        copied = size = dead_rows = dead_size = 0
        source_error: BaseException | None = None

        def read(sql: str, *args: object) -> list[Any]:
            nonlocal source_error
            try:
                return source.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                source_error = exc
                raise

        try:
            with self._transaction() as db:
                after: object = 0
                while page := read(
                    "SELECT id, enqueued, severity, data FROM rows WHERE id > ? ORDER BY id LIMIT ?",
                    after,
                    _COPY_PAGE,
                ):
                    db.executemany(
                        "INSERT INTO rows (enqueued, severity, data) VALUES (?, ?, ?)", [r[1:] for r in page]
                    )
                    after = page[-1][0]
                    copied += len(page)
                    size += sum(len(r[3]) for r in page)
                dead = read("SELECT enqueued, severity, data, reason, error, failed FROM dead ORDER BY id")
                db.executemany(
                    "INSERT INTO dead (enqueued, severity, data, reason, error, failed) VALUES (?,?,?,?,?,?)",
                    dead,
                )
                dead_rows = len(dead)
                dead_size = sum(len(d[2]) for d in dead)
                with contextlib.suppress(sqlite3.Error):  # a file of an earlier version has no chain table
                    head = source.execute("SELECT chain_id, sequence, hash FROM chain").fetchall()
                    db.executemany("INSERT OR IGNORE INTO chain VALUES (1, ?, ?, ?)", head)
        except sqlite3.Error as exc:  # rolled back, counters read again
            with contextlib.suppress(sqlite3.Error):
                source.close()
            if source_error is exc:
                _quarantine(other, exc)
            else:
                logger.error("sentinel-forwarder: could not adopt %s (will try again): %s", other.name, exc)
            return 0
        source.close()
        self.rows += copied
        self.bytes += size
        self.dead_letters += dead_rows
        self.dead_bytes += dead_size
        remove_files(other)
        if copied:
            logger.info("sentinel-forwarder: adopted %d spooled rows from %s", copied, other.name)
        return copied

    def chain_head(self) -> tuple[str, int, str] | None:
        """The head of the chain stored here (its own, or taken over from a dead process's file)."""
        found = self.db.execute("SELECT chain_id, sequence, hash FROM chain").fetchone()
        return None if found is None else (str(found[0]), int(found[1]), str(found[2]))

    def recount(self) -> None:
        """Read the counters from the file (after an operator command changed it)."""
        self.rows, self.bytes = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM rows"
        ).fetchone()
        self.dead_letters, self.dead_bytes = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM dead"
        ).fetchone()

    # -- the forwarder's operations --------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; if anything fails it is rolled back and the counters are read again
        (the operations adjust them as they go)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self.recount()
            raise

    def append(
        self,
        rows: Sequence[tuple[int, bytes]],
        max_bytes: int,
        busy: Sequence[tuple[int, int]] = (),
        now: float | None = None,
        head: tuple[str, int, str] | None = None,
    ) -> Appended:
        """Store *rows* (severity, JSON) in one transaction, shedding to stay within *max_bytes*.

        When full, the lowest-severity rows go first and, among equals, the oldest: a row never displaces
        one of higher severity (a new row is shed itself instead). Rows in the id ranges *busy* (being
        delivered) are never shed. *head* (chain id, sequence, hash) is stored in the same transaction.
        """
        now = time.time() if now is None else now
        incoming = sum(len(d) for _, d in rows)
        excess = self.bytes + self.dead_bytes + incoming - max_bytes
        keep = [True] * len(rows)
        shed_stored: dict[int, int] = {}
        shed_ids: list[int] = []
        with self._transaction() as db:
            if excess > 0:
                excess = self._shed(rows, keep, shed_stored, shed_ids, excess, busy)
            kept = [(now, s, d) for (s, d), k in zip(rows, keep, strict=True) if k]
            ids: list[int | None] = [None] * len(rows)
            if kept:
                db.executemany("INSERT INTO rows (enqueued, severity, data) VALUES (?, ?, ?)", kept)
                last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
                first = last - len(kept) + 1  # one writer, one transaction: the ids are consecutive
                n = 0
                for i, k in enumerate(keep):
                    if k:
                        ids[i] = first + n
                        n += 1
            if head is not None:
                db.execute("INSERT OR REPLACE INTO chain VALUES (1, ?, ?, ?)", head)
        self.rows += len(kept)
        self.bytes += sum(len(d) for _, _, d in kept)
        return Appended(ids, shed_stored, shed_ids)

    def _shed(
        self,
        rows: Sequence[tuple[int, bytes]],
        keep: list[bool],
        shed_stored: dict[int, int],
        shed_ids: list[int],
        excess: int,
        busy: Sequence[tuple[int, int]],
    ) -> int:
        """Pick rows to shed (stored or incoming) by (severity, age) until *excess* bytes are freed."""
        # Incoming rows by (severity, arrival); stored rows by (severity, id); a stored row is older than any
        # incoming one, so at equal severity it goes first.
        order = sorted(range(len(rows)), key=lambda i: (rows[i][0], i))
        nxt = 0
        not_busy, params = _not_busy(busy)
        cursor = self.db.execute(
            f"SELECT id, severity, LENGTH(data) FROM rows WHERE {not_busy} ORDER BY severity, id",
            params,
        )
        stored = cursor.fetchone()
        victims: list[int] = []
        while excess > 0:
            new = order[nxt] if nxt < len(order) else None
            if stored is not None and (new is None or stored[1] <= rows[new][0]):
                victims.append(stored[0])
                shed_stored[stored[1]] = shed_stored.get(stored[1], 0) + 1
                excess -= stored[2]
                self.rows -= 1
                self.bytes -= stored[2]
                stored = cursor.fetchone()
            elif new is not None:
                keep[new] = False
                excess -= len(rows[new][1])
                nxt += 1
            else:
                break  # nothing left to shed: only busy rows and dead letters remain
        cursor.close()
        for start in range(0, len(victims), 500):
            page = victims[start : start + 500]
            self.db.execute(f"DELETE FROM rows WHERE id IN ({','.join('?' * len(page))})", page)
        shed_ids.extend(victims)
        return excess

    def read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to *limit* waiting rows with ids above *after*, oldest first: ``(id, data)``."""
        return self.db.execute(
            "SELECT id, data FROM rows WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()

    def settle(
        self, done: Sequence[int], dead: Sequence[tuple[int, str, str]] = (), *, now: float | None = None
    ) -> None:
        """Delete the rows *done* (delivered, or dropped for good); move *dead* ``(id, reason, error)`` rows
        to the dead letters. One transaction."""
        if not done and not dead:
            return
        now = time.time() if now is None else now
        with self._transaction() as db:
            for row_id, reason, error in dead:
                found = db.execute(
                    "SELECT enqueued, severity, data FROM rows WHERE id = ?", (row_id,)
                ).fetchone()
                if found is None:
                    continue
                db.execute(
                    "INSERT INTO dead (enqueued, severity, data, reason, error, failed) VALUES (?,?,?,?,?,?)",
                    (*found, reason, error, now),
                )
                db.execute("DELETE FROM rows WHERE id = ?", (row_id,))
                self.rows -= 1
                self.bytes -= len(found[2])
                self.dead_letters += 1
                self.dead_bytes += len(found[2])
            removed = 0
            freed = 0
            for ids in _pages(done):
                marks = ",".join("?" * len(ids))
                n, size = db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM rows WHERE id IN ({marks})",
                    ids,
                ).fetchone()
                db.execute(f"DELETE FROM rows WHERE id IN ({marks})", ids)
                removed += n
                freed += size
        self.rows -= removed
        self.bytes -= freed

    def expire(self, before: float, busy: Sequence[tuple[int, int]] = ()) -> dict[int, int]:
        """Delete waiting rows spooled before *before* (not in *busy* id ranges). -> count by severity."""
        not_busy, ranges = _not_busy(busy)
        params: list[float] = [before, *ranges]
        with self._transaction() as db:
            found = db.execute(
                f"SELECT severity, COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM rows "
                f"WHERE enqueued < ? AND {not_busy} GROUP BY severity",
                params,
            ).fetchall()
            db.execute(f"DELETE FROM rows WHERE enqueued < ? AND {not_busy}", params)
        for _, n, size in found:
            self.rows -= n
            self.bytes -= size
        return {severity: n for severity, n, _ in found}

    def oldest(self) -> float | None:
        """``time.time()`` of the oldest waiting row, or ``None``."""
        row = self.db.execute("SELECT enqueued FROM rows ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])


def _not_busy(busy: Sequence[tuple[int, int]]) -> tuple[str, list[int]]:
    """A SQL condition (and its parameters) that leaves out the rows in the id ranges *busy*."""
    return " AND ".join("NOT (id BETWEEN ? AND ?)" for _ in busy) or "1", [x for r in busy for x in r]


def _pages(ids: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
