"""Read queries shared by the store modules: the current ratings, rankings and arena
choices, optionally as of a snapshot. All three are append-only, so "current as of action
N" is the latest row with action_id <= N. Callers run these inside their own read or write transaction.
"""

from __future__ import annotations

import json
import sqlite3

from feedback.records import ArenaChoice, Rating, Ranking

# Enough to mean "no snapshot limit" (SQLite integers are 64-bit).
NO_LIMIT = 2**62


def _latest_rows(
    conn: sqlite3.Connection, table: str, key: str, columns: str, conversation_id: int | None, as_of: int
) -> list[tuple]:
    """`columns` of the latest row of append-only `table` per `key` (a message id), as of
    action `as_of`, in one conversation or in all."""
    where = "AND m.conversation_id = ?" if conversation_id is not None else ""
    params: list[int] = [as_of] + ([conversation_id] if conversation_id is not None else [])
    return conn.execute(
        f"""SELECT {columns}
            FROM {table} j
            JOIN (SELECT {key}, MAX(id) AS last_id FROM {table} WHERE action_id <= ? GROUP BY {key}) last
              ON j.id = last.last_id
            JOIN messages m ON m.id = j.{key}
            WHERE 1 {where}""",
        params,
    ).fetchall()


def current_ratings(
    conn: sqlite3.Connection, conversation_id: int | None = None, as_of: int = NO_LIMIT
) -> dict[int, Rating]:
    """message id -> its current rating (cleared ratings left out)."""
    rows = _latest_rows(conn, "ratings", "message_id", "j.message_id, j.value, j.tags, j.comment, j.action_id, "
                        "j.created_at", conversation_id, as_of)
    return {
        message_id: Rating(message_id, value, json.loads(tags), comment, action_id, created_at)
        for message_id, value, tags, comment, action_id, created_at in rows
        if value != 0
    }


def current_rankings(
    conn: sqlite3.Connection, conversation_id: int | None = None, as_of: int = NO_LIMIT
) -> dict[int, Ranking]:
    """parent message id -> its current ranking."""
    rows = _latest_rows(conn, "rankings", "parent_id", "j.id, j.parent_id, j.is_rankable, j.comment, j.action_id, "
                        "j.created_at", conversation_id, as_of)
    rankings: dict[int, Ranking] = {}
    for ranking_id, parent_id, is_rankable, comment, action_id, created_at in rows:
        ranked_ids = [
            message_id
            for (message_id,) in conn.execute(
                "SELECT message_id FROM ranking_items WHERE ranking_id = ? ORDER BY position", [ranking_id]
            )
        ]
        rankings[parent_id] = Ranking(parent_id, ranked_ids, bool(is_rankable), comment, action_id, created_at)
    return rankings


def current_arena_choices(conn: sqlite3.Connection, as_of: int = NO_LIMIT) -> list[ArenaChoice]:
    """The latest choice per user turn as of action `as_of`, oldest first."""
    rows = conn.execute(
        """SELECT c.parent_id, c.first_id, c.second_id, f.model_version_id, s.model_version_id, c.outcome, c.tags,
                  c.comment, c.action_id, c.created_at
           FROM arena_choices c
           JOIN (SELECT parent_id, MAX(id) AS last_id FROM arena_choices WHERE action_id <= ? GROUP BY parent_id) last
             ON c.id = last.last_id
           JOIN messages f ON f.id = c.first_id
           JOIN messages s ON s.id = c.second_id
           ORDER BY c.id""",
        [as_of],
    ).fetchall()
    return [ArenaChoice(*row[:6], json.loads(row[6]), *row[7:]) for row in rows]
