"""Opening the feedback database and running transactions on it.

`open_database` makes the file (mode 0600), refuses a database written by a newer schema
without touching it, turns on WAL, foreign keys, a busy timeout and full sync, and applies
pending migrations under a write lock. `StoreBase` gives the store its two kinds of
transaction: `_writing()` (BEGIN IMMEDIATE, so a writer waits for the lock up front instead
of failing half way) and `_reading()` (one read transaction, hence one consistent WAL
snapshot); `record_from_row` turns a table's row into its record. Table-level logic lives
in the store modules, not here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlite_utils import Database

from feedback import schema
from feedback.errors import DatabaseFileError, database_error

DEFAULT_BUSY_TIMEOUT_S = 30.0
FILE_MODE = 0o600
Record = TypeVar("Record")


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with microseconds (sorts as text)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def record_from_row(
    record_type: type[Record], row: sqlite3.Row, json_columns: Sequence[str] = (), flag_columns: Sequence[str] = ()
) -> Record:
    """The record (a dataclass in feedback.records) of a table row: each field from the
    column of its name, JSON text decoded (NULL stays None), 0/1 flags made bools."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(record_type):  # type: ignore[arg-type]
        value = row[field.name]
        if field.name in json_columns and value is not None:
            value = json.loads(value)
        elif field.name in flag_columns:
            value = bool(value)
        values[field.name] = value
    return record_type(**values)


def _check_existing_file(path: Path) -> None:
    """Read-only look at an existing file: is it SQLite, and not from a newer schema?

    Uses a read-only connection so that a file we refuse is left byte-for-byte as it was.
    """
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=DEFAULT_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise _open_error(exc, path) from exc
    try:
        schema.check_is_sqlite(conn, str(path))
        schema.refuse_newer_schema(conn, str(path))
    finally:
        conn.close()


def _create_private_file(path: Path) -> bool:
    """Create an empty file readable only by its owner (feedback may be personal);
    whether this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    existed = path.exists()
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE)
    os.close(fd)
    return not existed


def _open_error(exc: sqlite3.Error, path: Path) -> DatabaseFileError:
    found = database_error(exc, path, "open")
    return found if isinstance(found, DatabaseFileError) else DatabaseFileError(
        f"cannot open feedback database {str(path)!r}: {exc}")


def open_database(path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> tuple[sqlite3.Connection, Database]:
    """Open (creating if needed) and migrate the feedback database at `path`.

    Returns the raw connection (autocommit mode: transactions are explicit) and the
    sqlite-utils `Database` wrapping it.
    """
    path = Path(path)
    if path.is_dir():
        raise DatabaseFileError(f"feedback database path {str(path)!r} is a directory")
    created = False
    if path.exists() and path.stat().st_size > 0:
        _check_existing_file(path)
    else:
        created = _create_private_file(path)
    if path.stat().st_mode & 0o777 != FILE_MODE:
        os.chmod(path, FILE_MODE)
    try:
        return _connect(path, busy_timeout_s)
    except BaseException:
        if created and path.stat().st_size == 0:  # a failed first open leaves no empty file behind
            for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
        raise


def _raise_as_storage_error(exc: sqlite3.OperationalError, path: Path, action: str) -> None:
    """Raise what `database_error` makes of `exc`, or `exc` itself when it is a bug."""
    error = database_error(exc, path, action)
    if error is None:
        raise exc
    raise error from exc


def _connect(path: Path, busy_timeout_s: float) -> tuple[sqlite3.Connection, Database]:
    """Connect, set WAL and the other pragmas, and migrate under a write lock."""
    # isolation_level=None: the sqlite3 module opens no implicit transactions; every
    # transaction below is an explicit BEGIN, so we know exactly what is atomic.
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise DatabaseFileError(f"cannot switch {str(path)!r} to WAL journaling (got {mode!r})")
        # FULL: a committed action survives a power cut, not only a crash of the process.
        conn.execute("PRAGMA synchronous = FULL")
        db = Database(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Checked again under the write lock: another process may have migrated meanwhile.
            schema.refuse_newer_schema(conn, str(path))
            schema.apply_pending(db)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _open_error(exc, path) from exc
    except BaseException:
        conn.close()
        raise
    return conn, db


class StoreBase:
    """The connection, its lock, and the transaction helpers every store module uses.

    One connection per Store, shared by the threads of one process under a lock (the UI
    calls from worker threads). Other processes open their own Store.
    """

    def __init__(self, path: str | os.PathLike[str], busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._conn, self.db = open_database(self.path, busy_timeout_s)
        self._lock = threading.RLock()

    def close(self) -> None:
        """Close the connection. The store cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "StoreBase":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of the block commits, or none of it."""
        with self._lock:
            if self._conn.in_transaction:  # nested inside another transaction of ours
                yield self._conn
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:  # the disk or file refused the write?
                _raise_as_storage_error(exc, self.path, "write to")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query in the block sees the same committed state."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            try:
                self._conn.execute("BEGIN")
                try:
                    yield self._conn
                finally:
                    if self._conn.in_transaction:
                        self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                _raise_as_storage_error(exc, self.path, "read")

    @staticmethod
    def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cursor = conn.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(sql, params).fetchall()

    @staticmethod
    def _row(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        cursor = conn.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(sql, params).fetchone()

    @staticmethod
    def _log_action(conn: sqlite3.Connection, kind: str, conversation_id: int | None, now: str) -> int:
        """Record one user action; its id stamps every feedback row the action writes."""
        cursor = conn.execute(
            "INSERT INTO actions (kind, conversation_id, created_at) VALUES (?, ?, ?)", [kind, conversation_id, now]
        )
        return int(cursor.lastrowid)
