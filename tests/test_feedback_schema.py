"""The feedback schema by what it does: migrations applied in order, once, and recorded;
an older database upgraded with its data; the rules the database enforces whoever writes
(one active version, checks, foreign keys and what deleting a row does to its
references); an index behind each frequent read; a newer or foreign file refused
untouched; private files; and that importing `feedback` stays free of torch.

Not a copy of the DDL: a new migration changes none of these tests unless it changes
what they check.
"""

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


def _file_digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _applied_migrations(db) -> list[str]:
    return [row[0] for row in db.execute(
        f"SELECT name FROM {schema.MIGRATIONS_TABLE} WHERE migration_set = ? ORDER BY id", [schema.MIGRATION_SET])]


def test_migrations_run_in_order_once_each_and_are_recorded(tmp_path):
    path = tmp_path / "feedback.db"
    Store(path).close()
    with Store(path) as store:  # opening again applies nothing twice
        applied = _applied_migrations(store.db)
        assert applied == schema.known_migration_names()
        assert applied == sorted(applied)  # numbered, so a new migration can only go last
        assert schema.apply_pending(store.db) == []
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.fixture
def store(tmp_path):
    """A store holding one conversation: a user turn, two rated and ranked replies from a
    version trained from another, and a training run between the two versions."""
    with Store(tmp_path / "feedback.db") as store:
        base = store.register_model_version("base", "/m/base")
        tuned = store.register_model_version("tuned", "/m/tuned", source="train", parent_id=base.id, activate=True)
        conversation = store.create_conversation("Penguins")
        user = store.add_user_message(conversation.id, "Where do emperor penguins live?")
        first = store.add_assistant_reply(user.id, "Antarctica.", tuned.id)
        second = store.add_assistant_reply(user.id, "The Arctic.", tuned.id)
        store.rate(second.id, -1)
        store.rank(user.id, [first.id, second.id])
        run = store.start_training_run("dpo", base_version_id=base.id)
        store.finish_training_run(run.id, "succeeded", result_version_id=tuned.id)
        yield store


NOW = "'2026-01-01T00:00:00+00:00'"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE model_versions SET is_active = 1",  # one active version at the most
        f"INSERT INTO model_versions (name, path, source, created_at) VALUES ('base', '/x', 'import', {NOW})",
        f"INSERT INTO model_versions (name, path, source, created_at) VALUES ('x', '/x', 'download', {NOW})",
        f"INSERT INTO messages (conversation_id, parent_id, role, content, is_human, action_id, created_at)"
        f" VALUES (99, NULL, 'user', 'hi', 1, 1, {NOW})",  # no such conversation
        f"INSERT INTO messages (conversation_id, parent_id, role, content, is_human, action_id, created_at)"
        f" VALUES (1, 99, 'assistant', 'hi', 0, 1, {NOW})",  # no such parent
        f"INSERT INTO messages (conversation_id, parent_id, role, content, is_human, action_id, created_at)"
        f" VALUES (1, NULL, 'system', 'hi', 1, 1, {NOW})",
        f"INSERT INTO ratings (message_id, value, action_id, created_at) VALUES (2, 2, 1, {NOW})",
        f"INSERT INTO ratings (message_id, value, action_id, created_at) VALUES (99, 1, 1, {NOW})",
        "INSERT INTO ranking_items (ranking_id, position, message_id) VALUES (1, 0, 3)",  # place taken
        f"INSERT INTO training_runs (kind, status, snapshot_action_id, started_at) VALUES ('dpo', 'done', 1, {NOW})",
    ],
)
def test_the_database_refuses_rows_that_break_its_rules_whoever_writes_them(store, statement):
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute(statement)


def test_deletes_cascade_to_what_hangs_on_a_row_and_clear_plain_references(store):
    tuned = store.get_model_version("tuned")
    store.db.execute("DELETE FROM model_versions WHERE name = 'base'")
    assert store.get_model_version("tuned").parent_id is None
    assert store.last_training_run().base_version_id is None
    store.db.execute("DELETE FROM model_versions WHERE id = ?", [tuned.id])
    tree = store.load_conversation(1)
    assert [m.model_version_id for m in tree.messages.values() if m.role == "assistant"] == [None, None]
    assert store.last_training_run().result_version_id is None

    shown = tree.shown_path[-1].id
    store.db.execute("DELETE FROM messages WHERE id = ?", [shown])
    assert store.get_conversation(1).shown_leaf_id is None
    store.db.execute("DELETE FROM messages WHERE parent_id IS NULL")  # the user turn: its replies go too
    for table in ("messages", "ratings", "rankings", "ranking_items"):
        assert store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert store.db.execute("SELECT count(*) FROM actions").fetchone()[0] > 0  # the log outlives its rows


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM conversations ORDER BY updated_at DESC, id DESC LIMIT 50",  # the sidebar
        "SELECT * FROM messages WHERE conversation_id = 1 ORDER BY id",  # opening a conversation
        "SELECT id FROM messages WHERE parent_id = 1 ORDER BY id DESC LIMIT 1",  # a turn's replies
        "SELECT * FROM messages WHERE model_version_id = 1",  # feedback per version
        "SELECT * FROM model_versions WHERE is_active = 1",
        "SELECT MAX(id) FROM ratings WHERE message_id = 2 AND action_id <= 9",  # a rating as of a snapshot
        "SELECT MAX(id) FROM rankings WHERE parent_id = 1 AND action_id <= 9",
        "SELECT ranking_id FROM ranking_items WHERE message_id = 2",
        "SELECT * FROM training_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1",
    ],
)
def test_the_stores_frequent_reads_find_their_rows_through_an_index(store, query):
    plan = [row[3] for row in store.db.execute(f"EXPLAIN QUERY PLAN {query}")]
    reads = [step for step in plan if step.startswith(("SCAN", "SEARCH"))]
    assert reads and all("USING" in step for step in reads), plan  # "SCAN t" alone reads every row
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_store_connection_settings(tmp_path):
    store = Store(tmp_path / "feedback.db", busy_timeout_s=7)
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 7000
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
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
    # The system prompt set before the replies still applies to them.
    assert pairs[0].context[0] == {"role": "system", "content": "Be brief."}
    # The new search index covers rows written before it existed, and new rows too.
    assert [hit.conversation.id for hit in store.search_conversations("emperor")] == [1]
    assert [hit.conversation.id for hit in store.search_conversations("penguins")] == [1]
    store.add_user_message(1, "And king penguins?")
    assert store.search_conversations("king")[0].message_id is not None
    assert _applied_migrations(store.db) == schema.known_migration_names()
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
