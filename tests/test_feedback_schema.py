"""The feedback schema: a fresh migration, an upgrade of an older database, refusal of a
newer one, file permissions, and that importing `feedback` stays free of torch."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from sqlite_utils import Database

from feedback import DatabaseFileError, SchemaTooNewError, Store
from feedback import schema

# table -> [(column, declared type, not null, primary-key position)]
EXPECTED_COLUMNS = {
    "actions": [
        ("id", "INTEGER", 0, 1),
        ("kind", "TEXT", 1, 0),
        ("conversation_id", "INTEGER", 0, 0),
        ("created_at", "TEXT", 1, 0),
    ],
    "model_versions": [
        ("id", "INTEGER", 0, 1),
        ("name", "TEXT", 1, 0),
        ("path", "TEXT", 1, 0),
        ("parent_id", "INTEGER", 0, 0),
        ("source", "TEXT", 1, 0),
        ("metrics", "TEXT", 1, 0),
        ("is_active", "INTEGER", 1, 0),
        ("created_at", "TEXT", 1, 0),
    ],
    "conversations": [
        ("id", "INTEGER", 0, 1),
        ("title", "TEXT", 1, 0),
        ("system_prompt", "TEXT", 0, 0),
        ("source", "TEXT", 1, 0),
        ("shown_leaf_id", "INTEGER", 0, 0),
        ("created_at", "TEXT", 1, 0),
        ("updated_at", "TEXT", 1, 0),
    ],
    "messages": [
        ("id", "INTEGER", 0, 1),
        ("conversation_id", "INTEGER", 1, 0),
        ("parent_id", "INTEGER", 0, 0),
        ("role", "TEXT", 1, 0),
        ("content", "TEXT", 1, 0),
        ("model_version_id", "INTEGER", 0, 0),
        ("sampling", "TEXT", 0, 0),
        ("finish_reason", "TEXT", 0, 0),
        ("is_human", "INTEGER", 1, 0),
        ("action_id", "INTEGER", 1, 0),
        ("created_at", "TEXT", 1, 0),
    ],
    "ratings": [
        ("id", "INTEGER", 0, 1),
        ("message_id", "INTEGER", 1, 0),
        ("value", "INTEGER", 1, 0),
        ("tags", "TEXT", 1, 0),
        ("comment", "TEXT", 0, 0),
        ("action_id", "INTEGER", 1, 0),
        ("created_at", "TEXT", 1, 0),
    ],
    "rankings": [
        ("id", "INTEGER", 0, 1),
        ("parent_id", "INTEGER", 1, 0),
        ("is_rankable", "INTEGER", 1, 0),
        ("comment", "TEXT", 0, 0),
        ("action_id", "INTEGER", 1, 0),
        ("created_at", "TEXT", 1, 0),
    ],
    "ranking_items": [
        ("ranking_id", "INTEGER", 1, 1),
        ("position", "INTEGER", 1, 2),
        ("message_id", "INTEGER", 1, 0),
    ],
    "training_runs": [
        ("id", "INTEGER", 0, 1),
        ("kind", "TEXT", 1, 0),
        ("config", "TEXT", 1, 0),
        ("status", "TEXT", 1, 0),
        ("metrics", "TEXT", 1, 0),
        ("snapshot_action_id", "INTEGER", 1, 0),
        ("base_version_id", "INTEGER", 0, 0),
        ("result_version_id", "INTEGER", 0, 0),
        ("error", "TEXT", 0, 0),
        ("started_at", "TEXT", 1, 0),
        ("finished_at", "TEXT", 0, 0),
    ],
    "settings": [
        ("key", "TEXT", 0, 1),
        ("value", "TEXT", 1, 0),
        ("updated_at", "TEXT", 1, 0),
    ],
    "_sqlite_migrations": [
        ("id", "INTEGER", 0, 1),
        ("migration_set", "TEXT", 0, 0),
        ("name", "TEXT", 0, 0),
        ("applied_at", "TEXT", 0, 0),
    ],
}

# Explicit indexes: name -> (table, columns, unique)
EXPECTED_INDEXES = {
    "conversations_updated_at": ("conversations", ["updated_at"], 0),
    "messages_conversation": ("messages", ["conversation_id"], 0),
    "messages_parent": ("messages", ["parent_id"], 0),
    "messages_action": ("messages", ["action_id"], 0),
    "messages_model_version": ("messages", ["model_version_id"], 0),
    "model_versions_one_active": ("model_versions", ["is_active"], 1),
    "ratings_message": ("ratings", ["message_id", "action_id"], 0),
    "rankings_parent": ("rankings", ["parent_id", "action_id"], 0),
    "ranking_items_message": ("ranking_items", ["message_id"], 0),
    "training_runs_status": ("training_runs", ["status", "id"], 0),
    "idx__sqlite_migrations_migration_set_name": ("_sqlite_migrations", ["migration_set", "name"], 1),
}

# table -> {(column, referenced table, referenced column, on delete)}
EXPECTED_FOREIGN_KEYS = {
    "actions": set(),
    "model_versions": {("parent_id", "model_versions", "id", "SET NULL")},
    "conversations": {("shown_leaf_id", "messages", "id", "SET NULL")},
    "messages": {
        ("conversation_id", "conversations", "id", "CASCADE"),
        ("parent_id", "messages", "id", "CASCADE"),
        ("model_version_id", "model_versions", "id", "SET NULL"),
        ("action_id", "actions", "id", "NO ACTION"),
    },
    "ratings": {("message_id", "messages", "id", "CASCADE"), ("action_id", "actions", "id", "NO ACTION")},
    "rankings": {("parent_id", "messages", "id", "CASCADE"), ("action_id", "actions", "id", "NO ACTION")},
    "ranking_items": {("ranking_id", "rankings", "id", "CASCADE"), ("message_id", "messages", "id", "CASCADE")},
    "training_runs": {
        ("base_version_id", "model_versions", "id", "SET NULL"),
        ("result_version_id", "model_versions", "id", "SET NULL"),
    },
    "settings": set(),
    "_sqlite_migrations": set(),
}

FTS_TABLES = {
    f"{base}_fts{suffix}"
    for base in ("messages", "conversations")
    for suffix in ("", "_config", "_data", "_docsize", "_idx")
}
EXPECTED_TRIGGERS = {f"{base}_{kind}" for base in ("messages", "conversations") for kind in ("ai", "ad", "au")}


def _file_digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_fresh_database_has_the_whole_schema(tmp_path):
    path = tmp_path / "feedback.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == set(EXPECTED_COLUMNS) | FTS_TABLES | {"sqlite_sequence"}
    for table, columns in EXPECTED_COLUMNS.items():
        found = [(name, type_, notnull, pk) for _, name, type_, notnull, _, pk in conn.execute(f"PRAGMA table_info({table})")]
        assert found == columns, table
    explicit_indexes = {
        name: table
        for name, table in conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    }
    assert set(explicit_indexes) == set(EXPECTED_INDEXES)
    for name, (table, columns, unique) in EXPECTED_INDEXES.items():
        assert explicit_indexes[name] == table
        assert [row[2] for row in conn.execute(f"PRAGMA index_info({name})")] == columns, name
        index_list = {row[1]: row[2] for row in conn.execute(f"PRAGMA index_list({table})")}
        assert index_list[name] == unique, name
    for table, keys in EXPECTED_FOREIGN_KEYS.items():
        found = {(row[3], row[2], row[4], row[6]) for row in conn.execute(f"PRAGMA foreign_key_list({table})")}
        assert found == keys, table
    triggers = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert triggers == EXPECTED_TRIGGERS
    applied = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id", [schema.MIGRATION_SET])]
    assert applied == schema.known_migration_names()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_connection_settings(tmp_path):
    store = Store(tmp_path / "feedback.db", busy_timeout_s=7)
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 7000
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_database_files_are_private(tmp_path):
    path = tmp_path / "sub" / "feedback.db"
    store = Store(path)
    store.create_conversation("x")
    for name in ("feedback.db", "feedback.db-wal", "feedback.db-shm"):
        assert os.stat(path.parent / name).st_mode & 0o777 == 0o600, name
    store.close()
    os.chmod(path, 0o644)
    Store(path).close()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_migrations_run_when_the_store_opens_not_at_import(tmp_path):
    code = "import feedback, feedback.store, feedback.schema, os, sys; print(os.listdir(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_feedback_does_not_import_torch():
    code = (
        "import sys, feedback, feedback.store, feedback.exporting, feedback.importing\n"
        "from feedback import Store\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'chat_tui', 'engine', 'trainer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _build_old_database(path) -> None:
    """A database as the first release left it: migrations up to m003, no search index, with data."""
    db = Database(path)
    schema.migrations.apply(db, stop_before="m004_full_text_search")
    db.conn.commit()
    assert not db["messages_fts"].exists()
    now = "2026-01-01T00:00:00.000000+00:00"
    db.conn.executescript(
        f"""
        INSERT INTO actions (id, kind, conversation_id, created_at) VALUES
            (1, 'create_conversation', 1, '{now}'), (2, 'add_user_message', 1, '{now}'),
            (3, 'add_assistant_replies', 1, '{now}'), (4, 'rank', 1, '{now}'), (5, 'rate', 1, '{now}');
        INSERT INTO model_versions (id, name, path, source, metrics, is_active, created_at)
            VALUES (1, 'smollm2-135m', '/models/smollm2', 'import', '{{"ppl": 12.5}}', 1, '{now}');
        INSERT INTO conversations (id, title, system_prompt, source, shown_leaf_id, created_at, updated_at)
            VALUES (1, 'Penguins', 'Be brief.', 'chat', NULL, '{now}', '{now}');
        INSERT INTO messages (id, conversation_id, parent_id, role, content, model_version_id, sampling,
                              finish_reason, is_human, action_id, created_at) VALUES
            (1, 1, NULL, 'user', 'Where do emperor penguins live?', NULL, NULL, NULL, 1, 2, '{now}'),
            (2, 1, 1, 'assistant', 'Antarctica.', 1, '{{"temperature": 0.7}}', 'stop', 0, 3, '{now}'),
            (3, 1, 1, 'assistant', 'The Arctic.', 1, '{{"temperature": 0.7}}', 'stop', 0, 3, '{now}');
        UPDATE conversations SET shown_leaf_id = 2 WHERE id = 1;
        INSERT INTO rankings (id, parent_id, is_rankable, comment, action_id, created_at) VALUES (1, 1, 1, NULL, 4, '{now}');
        INSERT INTO ranking_items (ranking_id, position, message_id) VALUES (1, 0, 2), (1, 1, 3);
        INSERT INTO ratings (message_id, value, tags, comment, action_id, created_at)
            VALUES (3, -1, '["wrong"]', 'penguins are southern', 5, '{now}');
        INSERT INTO training_runs (kind, config, status, metrics, snapshot_action_id, started_at)
            VALUES ('reward', '{{}}', 'succeeded', '{{"accuracy": 1.0}}', 3, '{now}');
        INSERT INTO settings (key, value, updated_at) VALUES ('sampling', '{{"temperature": 0.7}}', '{now}');
        """
    )
    db.close()


def test_older_database_is_upgraded_without_loss(tmp_path):
    path = tmp_path / "feedback.db"
    _build_old_database(path)
    store = Store(path)
    tree = store.load_conversation(1)
    assert tree.conversation.title == "Penguins"
    assert [m.content for m in tree.shown_path] == ["Where do emperor penguins live?", "Antarctica."]
    assert tree.messages[2].sampling == {"temperature": 0.7}
    assert tree.ratings[3].value == -1 and tree.ratings[3].tags == ["wrong"]
    assert tree.rankings[1].ranked_ids == [2, 3]
    assert store.active_model_version().metrics == {"ppl": 12.5}
    assert store.get_setting("sampling") == {"temperature": 0.7}
    assert store.last_training_run().metrics == {"accuracy": 1.0}
    pairs = store.preference_pairs()
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [(2, 3)]
    # The new search index covers rows written before it existed, and new rows too.
    assert [hit.conversation.id for hit in store.search_conversations("emperor")] == [1]
    assert [hit.conversation.id for hit in store.search_conversations("penguins")] == [1]
    store.add_user_message(1, "And king penguins?")
    assert store.search_conversations("king")[0].message_id is not None
    applied = [row[0] for row in store._conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert applied == schema.known_migration_names()
    store.close()


def test_database_from_a_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "feedback.db"
    store = Store(path)
    store.create_conversation("kept")
    store.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, 'm099_from_the_future', 'later')",
        [schema.MIGRATION_SET],
    )
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = _file_digest(path)
    with pytest.raises(SchemaTooNewError, match="m099_from_the_future"):
        Store(path)
    assert _file_digest(path) == before
    assert sqlite3.connect(path).execute("SELECT title FROM conversations").fetchall() == [("kept",)]


def test_file_that_is_not_a_database_is_refused_untouched(tmp_path):
    path = tmp_path / "feedback.db"
    path.write_text(json.dumps({"not": "sqlite"}) * 100)
    before = _file_digest(path)
    with pytest.raises(DatabaseFileError, match="feedback.db"):
        Store(path)
    assert _file_digest(path) == before


def test_directory_as_database_path_is_refused(tmp_path):
    with pytest.raises(DatabaseFileError, match="is a directory"):
        Store(tmp_path)
