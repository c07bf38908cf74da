"""The feedback database's schema, as named sqlite-utils migrations.

Migrations are registered here in order and recorded in the `_sqlite_migrations` table
(migration set `chat_tui_feedback`); `feedback.database.open_database` applies the pending
ones when a store opens, never at import time. A migration, once released, is never edited:
a schema change is a new function at the end of the list.

What the tables hold (ids are SQLite rowids):

- `actions`: the log of user actions, one row per transaction that changed feedback. Its
  AUTOINCREMENT id is the store's clock: a *snapshot* is "every row whose action_id is at
  most N", which is how a trainer reads a stable set while the chat keeps writing.
- `conversations`, `messages`: conversations as message trees. A regeneration or one of k
  alternatives is a sibling (same parent). `conversations.shown_leaf_id` remembers the path
  shown. Messages are never edited: editing a turn adds a sibling.
- `ratings`, `rankings`, `ranking_items`: append-only judgments. The current rating of a
  message (as of a snapshot) is its latest row; value 0 records a cleared rating.
- `model_versions` (a removed version keeps its row, with `removed_at`), `training_runs`, `settings`.
- `system_prompt_changes`: every system prompt a conversation had, from the action that
  set it; `arena_choices`: blind arena verdicts between two versions' replies;
  `imported_items`: the key of everything imported, so nothing is imported twice.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database, Migrations

from feedback.errors import DatabaseFileError, SchemaTooNewError, database_error

MIGRATION_SET = "chat_tui_feedback"
MIGRATIONS_TABLE = Migrations.migrations_table

migrations = Migrations(MIGRATION_SET)
_MIGRATION_NAMES: list[str] = []


def migration(fn):
    """Register `fn` as the next named migration of the feedback schema."""
    _MIGRATION_NAMES.append(fn.__name__)
    return migrations(name=fn.__name__)(fn)


@migration
def m001_conversations(db: Database) -> None:
    """Action log, model versions, conversations and their message trees."""
    db.executescript(
        """
        CREATE TABLE actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            -- no foreign key: the log outlives a deleted conversation
            conversation_id INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE TABLE model_versions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            path TEXT NOT NULL,
            parent_id INTEGER REFERENCES model_versions(id) ON DELETE SET NULL,
            source TEXT NOT NULL CHECK (source IN ('import', 'train')),
            metrics TEXT NOT NULL DEFAULT '{}',
            is_active INTEGER NOT NULL DEFAULT 0 CHECK (is_active IN (0, 1)),
            created_at TEXT NOT NULL
        );
        -- at most one active version, enforced by the database itself
        CREATE UNIQUE INDEX model_versions_one_active ON model_versions(is_active) WHERE is_active = 1;
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            system_prompt TEXT,
            source TEXT NOT NULL DEFAULT 'chat' CHECK (source IN ('chat', 'import')),
            shown_leaf_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX conversations_updated_at ON conversations(updated_at);
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            model_version_id INTEGER REFERENCES model_versions(id) ON DELETE SET NULL,
            sampling TEXT,
            finish_reason TEXT,
            is_human INTEGER NOT NULL CHECK (is_human IN (0, 1)),
            action_id INTEGER NOT NULL REFERENCES actions(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX messages_conversation ON messages(conversation_id);
        CREATE INDEX messages_parent ON messages(parent_id);
        CREATE INDEX messages_action ON messages(action_id);
        CREATE INDEX messages_model_version ON messages(model_version_id);
        """
    )


@migration
def m002_judgments(db: Database) -> None:
    """Ratings and rankings, append-only so that any snapshot can be read back."""
    db.executescript(
        """
        CREATE TABLE ratings (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            value INTEGER NOT NULL CHECK (value IN (-1, 0, 1)),
            tags TEXT NOT NULL DEFAULT '[]',
            comment TEXT,
            action_id INTEGER NOT NULL REFERENCES actions(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX ratings_message ON ratings(message_id, action_id);
        CREATE TABLE rankings (
            id INTEGER PRIMARY KEY,
            parent_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            is_rankable INTEGER NOT NULL CHECK (is_rankable IN (0, 1)),
            comment TEXT,
            action_id INTEGER NOT NULL REFERENCES actions(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX rankings_parent ON rankings(parent_id, action_id);
        CREATE TABLE ranking_items (
            ranking_id INTEGER NOT NULL REFERENCES rankings(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            PRIMARY KEY (ranking_id, position)
        );
        CREATE INDEX ranking_items_message ON ranking_items(message_id);
        """
    )


@migration
def m003_training_runs_and_settings(db: Database) -> None:
    """Training runs with the snapshot they read, and the UI's key/value settings."""
    db.executescript(
        """
        CREATE TABLE training_runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            config TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
            metrics TEXT NOT NULL DEFAULT '{}',
            snapshot_action_id INTEGER NOT NULL,
            base_version_id INTEGER REFERENCES model_versions(id) ON DELETE SET NULL,
            result_version_id INTEGER REFERENCES model_versions(id) ON DELETE SET NULL,
            error TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX training_runs_status ON training_runs(status, id);
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        """
    )


@migration
def m004_full_text_search(db: Database) -> None:
    """FTS5 indexes on message text and conversation titles, filled from existing rows."""
    # enable_fts backfills the index from rows already there, so older databases gain
    # search over their whole history; the triggers keep it current from then on.
    db["messages"].enable_fts(["content"], fts_version="FTS5", create_triggers=True)
    db["conversations"].enable_fts(["title"], fts_version="FTS5", create_triggers=True)


@migration
def m005_abandoned_training_runs(db: Database) -> None:
    """Training runs may be 'abandoned': interrupted, and never to be resumed because the
    model they started from is no longer the one being trained. SQLite cannot change a
    CHECK constraint in place, so the table is rebuilt with its rows and index."""
    db.executescript(
        """
        CREATE TABLE training_runs_new (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            config TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'abandoned')),
            metrics TEXT NOT NULL DEFAULT '{}',
            snapshot_action_id INTEGER NOT NULL,
            base_version_id INTEGER REFERENCES model_versions(id) ON DELETE SET NULL,
            result_version_id INTEGER REFERENCES model_versions(id) ON DELETE SET NULL,
            error TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT
        );
        INSERT INTO training_runs_new SELECT id, kind, config, status, metrics, snapshot_action_id, base_version_id,
            result_version_id, error, started_at, finished_at FROM training_runs;
        DROP TABLE training_runs;
        ALTER TABLE training_runs_new RENAME TO training_runs;
        CREATE INDEX training_runs_status ON training_runs(status, id);
        """
    )


@migration
def m006_system_prompt_history(db: Database) -> None:
    """Each conversation's system prompts with the action that set them, so a reply's
    training context carries the system prompt it was generated under, not a later one.
    Existing prompts date from the last action that set them (else the conversation's
    first action), which is when they started to apply."""
    db.executescript(
        """
        CREATE TABLE system_prompt_changes (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            system_prompt TEXT,  -- NULL: cleared
            action_id INTEGER NOT NULL  -- no foreign key, as in actions' own references
        );
        CREATE INDEX system_prompt_changes_conversation ON system_prompt_changes(conversation_id, action_id);
        INSERT INTO system_prompt_changes (conversation_id, system_prompt, action_id)
            SELECT c.id, c.system_prompt, COALESCE(
                (SELECT MAX(a.id) FROM actions a WHERE a.conversation_id = c.id AND a.kind = 'set_system_prompt'),
                (SELECT MIN(a.id) FROM actions a WHERE a.conversation_id = c.id),
                (SELECT MIN(m.action_id) FROM messages m WHERE m.conversation_id = c.id),
                0)
            FROM conversations c WHERE c.system_prompt IS NOT NULL;
        """
    )


@migration
def m007_arena_choices(db: Database) -> None:
    """Blind arena choices between two replies from two model versions: which side won, a
    tie or both bad, with reason tags and a comment. A win is also written as a ranking
    (so it trains like any ranking); this table keeps what a ranking cannot say."""
    db.executescript(
        """
        CREATE TABLE arena_choices (
            id INTEGER PRIMARY KEY,
            parent_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            first_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            second_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            outcome TEXT NOT NULL CHECK (outcome IN ('first', 'second', 'tie', 'both_bad')),
            tags TEXT NOT NULL DEFAULT '[]',
            comment TEXT,
            action_id INTEGER NOT NULL REFERENCES actions(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX arena_choices_parent ON arena_choices(parent_id, action_id);
        """
    )


@migration
def m008_imported_items(db: Database) -> None:
    """A key per imported item (an Open WebUI feedback id, a pair's content digest), so
    importing the same file twice adds nothing the second time."""
    db.executescript(
        """
        CREATE TABLE imported_items (
            key TEXT PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            action_id INTEGER NOT NULL REFERENCES actions(id)
        );
        CREATE INDEX imported_items_conversation ON imported_items(conversation_id);
        """
    )


@migration
def m009_removed_model_versions(db: Database) -> None:
    """A removed model version keeps its row (its replies, arena choices and lineage still
    name it) with the time its files were removed."""
    db.executescript("ALTER TABLE model_versions ADD COLUMN removed_at TEXT;")


def known_migration_names() -> list[str]:
    """The names of every migration this version of chat-tui knows, in order."""
    return list(_MIGRATION_NAMES)


def unknown_applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names recorded as applied in the database that this version does not know."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [MIGRATIONS_TABLE]
    ).fetchone()
    if not has_table:
        return []
    applied = [
        row[0]
        for row in conn.execute(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ? ORDER BY rowid", [MIGRATION_SET]
        )
    ]
    known = set(known_migration_names())
    return [name for name in applied if name not in known]


def refuse_newer_schema(conn: sqlite3.Connection, path: str) -> None:
    """Raise SchemaTooNewError when the database has migrations this version does not know."""
    unknown = unknown_applied_migrations(conn)
    if unknown:
        raise SchemaTooNewError(
            f"{path!r} was written by a newer chat-tui (unknown schema migration {unknown[0]!r}); "
            "upgrade chat-tui to open it"
        )


def apply_pending(db: Database) -> list[str]:
    """Apply pending migrations on an open write transaction; returns the names applied."""
    pending = [migration.name for migration in migrations.pending(db)]
    migrations.apply(db)
    return pending


def check_is_sqlite(conn: sqlite3.Connection, path: str) -> None:
    """Raise DatabaseFileError when the file is not a readable SQLite database."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        # Only a file SQLite finds is not a database (or is corrupt) is called so; a full
        # disk or a locked file is said to be that.
        raise (database_error(exc, path, "read") or DatabaseFileError(f"cannot read {path!r}: {exc}")) from exc
