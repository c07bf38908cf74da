"""What the user says about replies: thumbs (+1/-1 with reason tags and a comment) and
rankings of sibling replies, best first (or "not rankable").

Judgments are append-only: rating a message again, or clearing its rating, adds a row, and
the newest row is the current one. That keeps every older snapshot readable as it was.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from feedback.conversations import ConversationsMixin
from feedback.database import utc_now
from feedback.errors import InvalidFeedbackError
from feedback.queries import current_rankings, current_ratings
from feedback.records import Message, Ranking, Rating


def _check_rating_value(value: object) -> int:
    # bool is an int subclass; True is not a rating.
    if type(value) is not int or value not in (1, -1):
        raise InvalidFeedbackError(f"rating value {value!r} is not +1 or -1")
    return value


def check_tags(tags: Sequence[str]) -> list[str]:
    if isinstance(tags, str):
        raise InvalidFeedbackError(f"rating tags must be a list of words, not the string {tags!r}")
    cleaned = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidFeedbackError(f"rating tag {tag!r} is not a non-empty string")
        cleaned.append(tag.strip())
    return cleaned


class JudgmentsMixin(ConversationsMixin):
    """Ratings and rankings operations of the Store."""

    def rate(self, message_id: int, value: int, tags: Sequence[str] = (), comment: str | None = None) -> Rating:
        """Thumbs up (+1) or down (-1) on an assistant reply, replacing any earlier rating."""
        value = _check_rating_value(value)
        clean_tags = check_tags(tags)
        now = utc_now()
        with self._writing() as conn:
            message = self._message(conn, message_id)
            if message.role != "assistant":
                raise InvalidFeedbackError(f"message {message_id} is a {message.role} message; only replies are rated")
            action_id = self._log_action(conn, "rate", message.conversation_id, now)
            self._insert_rating(conn, message_id, value, clean_tags, comment, action_id, now)
            self._touch(conn, message.conversation_id, now)
            return current_ratings(conn, message.conversation_id)[message_id]

    def clear_rating(self, message_id: int) -> None:
        """Take back the rating of a reply (it then counts as unrated)."""
        now = utc_now()
        with self._writing() as conn:
            message = self._message(conn, message_id)
            action_id = self._log_action(conn, "clear_rating", message.conversation_id, now)
            self._insert_rating(conn, message_id, 0, [], None, action_id, now)
            self._touch(conn, message.conversation_id, now)

    def rank(self, parent_id: int, ranked_ids: Sequence[int], comment: str | None = None) -> Ranking:
        """Order replies to user message `parent_id`, best first; replaces any earlier ranking.

        Every id must be a distinct assistant reply whose parent is `parent_id`; at least two.
        """
        ids = list(ranked_ids)
        now = utc_now()
        with self._writing() as conn:
            parent = self._ranked_parent(conn, parent_id)
            if len(ids) < 2:
                raise InvalidFeedbackError(f"a ranking needs at least two replies, got {ids!r}")
            seen: set[int] = set()
            for message_id in ids:
                if message_id in seen:
                    raise InvalidFeedbackError(f"message {message_id} appears twice in the ranking")
                seen.add(message_id)
                message = self._message(conn, message_id)
                if message.parent_id != parent_id or message.role != "assistant":
                    raise InvalidFeedbackError(
                        f"message {message_id} is not a reply to message {parent_id}; a ranking orders sibling replies"
                    )
            self._insert_ranking(conn, parent, ids, True, comment, now)
            return current_rankings(conn, parent.conversation_id)[parent_id]

    def mark_not_rankable(self, parent_id: int, comment: str | None = None) -> Ranking:
        """Record that the replies to `parent_id` cannot be ordered (e.g. all equally bad)."""
        now = utc_now()
        with self._writing() as conn:
            parent = self._ranked_parent(conn, parent_id)
            self._insert_ranking(conn, parent, [], False, comment, now)
            return current_rankings(conn, parent.conversation_id)[parent_id]

    # ---- helpers ---------------------------------------------------------------------------

    def _ranked_parent(self, conn: sqlite3.Connection, parent_id: int) -> Message:
        """The user message whose replies a ranking orders."""
        parent = self._message(conn, parent_id)
        if parent.role != "user":
            raise InvalidFeedbackError(f"message {parent_id} is an assistant message; rank the replies to a user message")
        return parent

    def _insert_rating(
        self, conn: sqlite3.Connection, message_id: int, value: int, tags: list[str], comment: str | None,
        action_id: int, now: str,
    ) -> None:
        conn.execute(
            "INSERT INTO ratings (message_id, value, tags, comment, action_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [message_id, value, json.dumps(tags), comment, action_id, now],
        )

    def _insert_ranking(
        self, conn: sqlite3.Connection, parent: Message, ids: list[int], is_rankable: bool, comment: str | None, now: str,
        action_id: int | None = None,
    ) -> None:
        """A ranking row, under `action_id` (default: a new "rank" action)."""
        if action_id is None:
            action_id = self._log_action(conn, "rank", parent.conversation_id, now)
        cursor = conn.execute(
            "INSERT INTO rankings (parent_id, is_rankable, comment, action_id, created_at) VALUES (?, ?, ?, ?, ?)",
            [parent.id, int(is_rankable), comment, action_id, now],
        )
        ranking_id = int(cursor.lastrowid)
        conn.executemany(
            "INSERT INTO ranking_items (ranking_id, position, message_id) VALUES (?, ?, ?)",
            [(ranking_id, position, message_id) for position, message_id in enumerate(ids)],
        )
        self._touch(conn, parent.conversation_id, now)
