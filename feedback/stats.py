"""Counts of what the store holds, per kind and per model version (for `feedback stats`)."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from feedback.queries import current_arena_choices, current_rankings, current_ratings
from feedback.views import SnapshotReader


@dataclass(frozen=True)
class VersionStats:
    id: int
    name: str
    is_active: bool
    num_replies: int
    num_up: int
    num_down: int


@dataclass(frozen=True)
class FeedbackStats:
    """counts: name -> number (see `collect_stats` for the names); per_version: one row per model version."""

    counts: dict[str, int]
    per_version: list[VersionStats]

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "per_version": [asdict(v) for v in self.per_version]}


def _count(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def collect_stats(conn: sqlite3.Connection) -> FeedbackStats:
    """Everything counted inside the caller's read transaction, so the numbers agree."""
    ratings = current_ratings(conn)
    rankings = current_rankings(conn)
    reader = SnapshotReader(conn, as_of=_count(conn, "SELECT COALESCE(MAX(id), 0) FROM actions"))
    counts = {
        "conversations": _count(conn, "SELECT count(*) FROM conversations WHERE source = 'chat'"),
        "imported_conversations": _count(conn, "SELECT count(*) FROM conversations WHERE source = 'import'"),
        "user_messages": _count(conn, "SELECT count(*) FROM messages WHERE role = 'user'"),
        "model_replies": _count(conn, "SELECT count(*) FROM messages WHERE role = 'assistant' AND is_human = 0"),
        "human_replies": _count(conn, "SELECT count(*) FROM messages WHERE role = 'assistant' AND is_human = 1"),
        "ratings_up": sum(1 for r in ratings.values() if r.value == 1),
        "ratings_down": sum(1 for r in ratings.values() if r.value == -1),
        "rankings": sum(1 for r in rankings.values() if r.is_rankable),
        "not_rankable": sum(1 for r in rankings.values() if not r.is_rankable),
        "arena_choices": len(current_arena_choices(conn)),
        "preference_pairs": len(reader.preference_pairs()),
        "demonstrations": len(reader.demonstrations()),
        "prompts": len(reader.user_turns()),
        "model_versions": _count(conn, "SELECT count(*) FROM model_versions"),
        "training_runs": _count(conn, "SELECT count(*) FROM training_runs"),
    }
    per_version = []
    for version_id, name, is_active in conn.execute("SELECT id, name, is_active FROM model_versions ORDER BY id"):
        reply_ids = [row[0] for row in conn.execute("SELECT id FROM messages WHERE model_version_id = ?", [version_id])]
        per_version.append(
            VersionStats(
                id=version_id,
                name=name,
                is_active=bool(is_active),
                num_replies=len(reply_ids),
                num_up=sum(1 for mid in reply_ids if mid in ratings and ratings[mid].value == 1),
                num_down=sum(1 for mid in reply_ids if mid in ratings and ratings[mid].value == -1),
            )
        )
    return FeedbackStats(counts, per_version)
