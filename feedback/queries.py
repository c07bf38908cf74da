"""Read queries shared by the store modules: the current ratings and rankings, optionally as of
a snapshot. Ratings and rankings are append-only, so "current as of action N" is the latest
row with action_id <= N. Callers run these inside their own read or write transaction.
"""

from __future__ import annotations

import json
import sqlite3

from feedback.records import Rating, Ranking

# Enough to mean "no snapshot limit" (SQLite integers are 64-bit).
NO_LIMIT = 2**62


def current_ratings(
    conn: sqlite3.Connection, conversation_id: int | None = None, as_of: int = NO_LIMIT
) -> dict[int, Rating]:
    """message id -> its current rating (cleared ratings left out)."""
    where = "AND m.conversation_id = ?" if conversation_id is not None else ""
    params: list[int] = [as_of] + ([conversation_id] if conversation_id is not None else [])
    rows = conn.execute(
        f"""SELECT r.message_id, r.value, r.tags, r.comment, r.action_id, r.created_at
            FROM ratings r
            JOIN (SELECT message_id, MAX(id) AS last_id FROM ratings WHERE action_id <= ? GROUP BY message_id) last
              ON r.id = last.last_id
            JOIN messages m ON m.id = r.message_id
            WHERE r.value != 0 {where}""",
        params,
    ).fetchall()
    return {
        message_id: Rating(message_id, value, json.loads(tags), comment, action_id, created_at)
        for message_id, value, tags, comment, action_id, created_at in rows
    }


def current_rankings(
    conn: sqlite3.Connection, conversation_id: int | None = None, as_of: int = NO_LIMIT
) -> dict[int, Ranking]:
    """parent message id -> its current ranking."""
    where = "AND m.conversation_id = ?" if conversation_id is not None else ""
    params: list[int] = [as_of] + ([conversation_id] if conversation_id is not None else [])
    rows = conn.execute(
        f"""SELECT k.id, k.parent_id, k.is_rankable, k.comment, k.action_id, k.created_at
            FROM rankings k
            JOIN (SELECT parent_id, MAX(id) AS last_id FROM rankings WHERE action_id <= ? GROUP BY parent_id) last
              ON k.id = last.last_id
            JOIN messages m ON m.id = k.parent_id
            WHERE 1 {where}""",
        params,
    ).fetchall()
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
