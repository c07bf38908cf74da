"""Errors the feedback store raises for bad input. Each message names the offending value.

Every error here is a `FeedbackError`, which the CLI prints as one line. What SQLite
reports about the file or the disk under it (full, read-only, locked, not a database) is
turned into a `DatabaseFileError` saying so by `database_error`; other `sqlite3`
exceptions are bugs and are left as they are.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 3, 5, 6, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26
# Below this many free bytes an I/O failure is taken to be the disk being full: SQLite
# reports a failed write on a full disk as an I/O or open error as often as SQLITE_FULL.
NEARLY_FULL_BYTES = 1 << 20


class FeedbackError(Exception):
    """Base class of the feedback store's user-facing errors."""


class NotFoundError(FeedbackError):
    """A conversation, message, model version or training run id that does not exist."""


class InvalidFeedbackError(FeedbackError):
    """A rating, ranking or message that breaks the store's rules (bad value, wrong role, not siblings)."""


class DatabaseFileError(FeedbackError):
    """A database file that cannot be used: not SQLite, corrupt, or unreadable."""


class SchemaTooNewError(DatabaseFileError):
    """A database written by a newer chat-tui, whose migrations this version does not know."""


class ImportFormatError(FeedbackError):
    """A line of an import file that is not a preference pair; names the file and line number."""


class StorageError(DatabaseFileError):
    """The database cannot be written or opened because of the disk or file under it:
    full, read-only, locked by another process."""


def database_error(exc: sqlite3.Error, path: str | Path, action: str) -> FeedbackError | None:
    """The FeedbackError that says, in one line, why `action` (e.g. "write to") on the
    database at `path` failed; None when `exc` is not about the file or the disk (a bug)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    where = f"cannot {action} feedback database {str(path)!r}"
    if code in (SQLITE_NOTADB, SQLITE_CORRUPT):
        return DatabaseFileError(f"{str(path)!r} is not a chat-tui feedback database ({exc})")
    if code == SQLITE_FULL or (code in (SQLITE_IOERR, SQLITE_CANTOPEN) and _nearly_full(path)):
        return StorageError(f"{where}: the disk is full (ENOSPC)")
    if code == SQLITE_READONLY:
        return StorageError(f"{where}: it or its folder is read-only (EROFS or no write permission)")
    if code == SQLITE_PERM:
        return StorageError(f"{where}: permission denied (EACCES)")
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return StorageError(f"{where}: another process holds it locked ({exc})")
    if code in (SQLITE_IOERR, SQLITE_CANTOPEN):
        return StorageError(f"{where}: {exc}")
    return None


def _nearly_full(path: str | Path) -> bool:
    folder = Path(path).parent
    try:
        return shutil.disk_usage(folder if folder.exists() else Path.cwd()).free < NEARLY_FULL_BYTES
    except OSError:
        return False
