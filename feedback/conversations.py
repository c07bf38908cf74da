"""Conversations as message trees: create, continue, branch, show a path, load, search.

Tree rules the store enforces: a user message's parent is an assistant message or nothing
(a root); an assistant message's parent is a user message; both in the same conversation.
A regeneration, one of k alternatives, or an edit is a sibling (same parent). Messages are
never edited or deleted one by one; a conversation is deleted whole. Ratings and rankings
live in `feedback.judgments`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from feedback.database import StoreBase, record_from_row, utc_now
from feedback.errors import InvalidFeedbackError, NotFoundError
from feedback.queries import current_rankings, current_ratings
from feedback.records import Conversation, ConversationTree, Message, ReplyDraft, SearchHit

TITLE_LENGTH = 60
_MESSAGE_COLUMNS = (
    "id, conversation_id, parent_id, role, content, model_version_id, sampling, "
    "finish_reason, is_human, action_id, created_at"
)


def conversation_from_row(row: sqlite3.Row) -> Conversation:
    return record_from_row(Conversation, row)


def message_from_row(row: sqlite3.Row) -> Message:
    return record_from_row(Message, row, json_columns=("sampling",), flag_columns=("is_human",))


def title_from(text: str) -> str:
    """A conversation title from its first user message: the first line, shortened."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line if len(first_line) <= TITLE_LENGTH else first_line[: TITLE_LENGTH - 1] + "…"


class ConversationsMixin(StoreBase):
    """Conversation and message operations of the Store."""

    # ---- reads -------------------------------------------------------------------------

    def get_conversation(self, conversation_id: int) -> Conversation:
        with self._reading() as conn:
            return self._conversation(conn, conversation_id)

    def get_message(self, message_id: int) -> Message:
        with self._reading() as conn:
            return self._message(conn, message_id)

    def list_conversations(self, limit: int | None = None, offset: int = 0, include_imported: bool = False) -> list[Conversation]:
        """Conversations, most recently active first (imported ones only when asked)."""
        where = "" if include_imported else "WHERE source = 'chat'"
        with self._reading() as conn:
            rows = self._rows(
                conn,
                f"SELECT * FROM conversations {where} ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
                [-1 if limit is None else limit, offset],
            )
        return [conversation_from_row(row) for row in rows]

    def shown_path(self, conversation_id: int) -> list[Message]:
        """The messages shown, root first."""
        with self._reading() as conn:
            conversation = self._conversation(conn, conversation_id)
            return self._path_to(conn, conversation.shown_leaf_id)

    def load_conversation(self, conversation_id: int) -> ConversationTree:
        """The whole tree of a conversation, its shown path, current ratings and rankings."""
        with self._reading() as conn:
            conversation = self._conversation(conn, conversation_id)
            rows = self._rows(
                conn, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]
            )
            messages = {row["id"]: message_from_row(row) for row in rows}
            shown: list[Message] = []
            leaf = conversation.shown_leaf_id
            while leaf is not None:
                shown.append(messages[leaf])
                leaf = messages[leaf].parent_id
            shown.reverse()
            ratings = current_ratings(conn, conversation_id=conversation_id)
            rankings = current_rankings(conn, conversation_id=conversation_id)
        return ConversationTree(conversation, messages, shown, ratings, rankings)

    def search_conversations(self, query: str, limit: int = 50, include_imported: bool = False) -> list[SearchHit]:
        """Conversations whose title or messages match `query` (full-text: every word must
        appear, the last as the start of a word too, so a search finds as you type), best
        match first. The words are matched literally: FTS operators are quoted."""
        words = query.split()
        if not words:
            return []
        # Each word as a prefix ("pengu" finds "penguins"): a quoted FTS5 phrase with *.
        match = " ".join(f"{self.db.quote_fts(word)}*" for word in words)
        source_filter = "" if include_imported else "AND c.source = 'chat'"
        hits: dict[int, SearchHit] = {}
        with self._reading() as conn:
            title_rows = self._rows(
                conn,
                f"""SELECT c.* FROM conversations_fts f JOIN conversations c ON c.id = f.rowid
                    WHERE conversations_fts MATCH ? {source_filter} ORDER BY bm25(conversations_fts) LIMIT ?""",
                [match, limit],
            )
            for row in title_rows:
                hits[row["id"]] = SearchHit(conversation_from_row(row), None, row["title"])
            message_rows = self._rows(
                conn,
                f"""SELECT c.*, m.id AS message_id,
                           snippet(messages_fts, 0, '[', ']', '…', 12) AS snippet
                    FROM messages_fts f JOIN messages m ON m.id = f.rowid
                    JOIN conversations c ON c.id = m.conversation_id
                    WHERE messages_fts MATCH ? {source_filter}
                    ORDER BY bm25(messages_fts) LIMIT ?""",
                [match, limit * 20],
            )
            for row in message_rows:
                if row["id"] not in hits:
                    hits[row["id"]] = SearchHit(conversation_from_row(row), row["message_id"], row["snippet"])
        return list(hits.values())[:limit]

    # ---- conversation-level writes ----------------------------------------------------------

    def create_conversation(self, title: str = "", system_prompt: str | None = None) -> Conversation:
        """A new, empty conversation. An empty title is filled from the first user message."""
        now = utc_now()
        with self._writing() as conn:
            cursor = conn.execute(
                "INSERT INTO conversations (title, system_prompt, source, created_at, updated_at) VALUES (?, ?, 'chat', ?, ?)",
                [title, system_prompt, now, now],
            )
            conversation_id = int(cursor.lastrowid)
            action_id = self._log_action(conn, "create_conversation", conversation_id, now)
            if system_prompt is not None:
                self._record_system_prompt(conn, conversation_id, system_prompt, action_id)
            return self._conversation(conn, conversation_id)

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        return self._update_conversation(conversation_id, "rename_conversation", title=title)

    def set_system_prompt(self, conversation_id: int, system_prompt: str | None) -> Conversation:
        """Set (or clear, with None) the system prompt. It applies to replies written from now
        on: the training context of an earlier reply keeps the prompt it was written under."""
        now = utc_now()
        with self._writing() as conn:
            self._conversation(conn, conversation_id)
            conn.execute("UPDATE conversations SET system_prompt = ?, updated_at = ? WHERE id = ?",
                         [system_prompt, now, conversation_id])
            action_id = self._log_action(conn, "set_system_prompt", conversation_id, now)
            self._record_system_prompt(conn, conversation_id, system_prompt, action_id)
            return self._conversation(conn, conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation with its messages, ratings and rankings, from every view."""
        now = utc_now()
        with self._writing() as conn:
            self._conversation(conn, conversation_id)
            conn.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])
            self._log_action(conn, "delete_conversation", conversation_id, now)

    # ---- messages ------------------------------------------------------------------------

    def add_user_message(self, conversation_id: int, content: str, parent_id: int | None = None) -> Message:
        """Continue the conversation with a user turn and show it.

        parent_id None means "after the last message shown" (the usual case); give an
        assistant message's id to continue from a branch that is not shown. To replace the
        first user message, use `add_sibling`.
        """
        if not content.strip():
            raise InvalidFeedbackError("a user message cannot be empty")
        now = utc_now()
        with self._writing() as conn:
            conversation = self._conversation(conn, conversation_id)
            if parent_id is None:
                parent_id = conversation.shown_leaf_id
            action_id = self._log_action(conn, "add_user_message", conversation_id, now)
            message_id = self._insert_message(
                conn, conversation_id, parent_id, "user", content, action_id, now, is_human=True
            )
            if not conversation.title:
                conn.execute("UPDATE conversations SET title = ? WHERE id = ?", [title_from(content), conversation_id])
            self._show(conn, conversation_id, message_id, now)
            return self._message(conn, message_id)

    def add_assistant_reply(
        self,
        parent_id: int,
        content: str,
        model_version_id: int | None = None,
        sampling: dict[str, Any] | None = None,
        finish_reason: str | None = None,
        show: bool = True,
    ) -> Message:
        """Store a model's reply to user message `parent_id` (a regeneration is one more of these)."""
        draft = ReplyDraft(content, model_version_id, sampling, finish_reason)
        return self.add_assistant_replies(parent_id, [draft], show_index=0 if show else None)[0]

    def add_assistant_replies(self, parent_id: int, replies: Sequence[ReplyDraft], show_index: int | None = 0) -> list[Message]:
        """Store k alternative replies to one user message in one transaction; show one of them."""
        if not replies:
            raise InvalidFeedbackError("no replies given to store")
        if show_index is not None and not 0 <= show_index < len(replies):
            raise InvalidFeedbackError(f"show_index {show_index} is out of range for {len(replies)} replies")
        now = utc_now()
        with self._writing() as conn:
            parent = self._message(conn, parent_id)
            action_id = self._log_action(conn, "add_assistant_replies", parent.conversation_id, now)
            ids = [
                self._insert_message(
                    conn, parent.conversation_id, parent_id, "assistant", draft.content, action_id, now,
                    is_human=False, model_version_id=draft.model_version_id, sampling=draft.sampling,
                    finish_reason=draft.finish_reason,
                )
                for draft in replies
            ]
            if show_index is not None:
                self._show(conn, parent.conversation_id, ids[show_index], now)
            else:
                self._touch(conn, parent.conversation_id, now)
            return [self._message(conn, message_id) for message_id in ids]

    def save_demonstration(self, parent_id: int, content: str, show: bool = True) -> Message:
        """Store the reply the user wrote themselves, as a human-written sibling of the model's replies."""
        if not content.strip():
            raise InvalidFeedbackError("a written reply cannot be empty")
        now = utc_now()
        with self._writing() as conn:
            parent = self._message(conn, parent_id)
            action_id = self._log_action(conn, "save_demonstration", parent.conversation_id, now)
            message_id = self._insert_message(
                conn, parent.conversation_id, parent_id, "assistant", content, action_id, now, is_human=True
            )
            if show:
                self._show(conn, parent.conversation_id, message_id, now)
            else:
                self._touch(conn, parent.conversation_id, now)
            return self._message(conn, message_id)

    def add_sibling(
        self,
        message_id: int,
        content: str,
        model_version_id: int | None = None,
        sampling: dict[str, Any] | None = None,
        finish_reason: str | None = None,
        is_human: bool | None = None,
        show: bool = True,
    ) -> Message:
        """A new message beside `message_id` (same parent, same role) and, by default, shown.

        For a user message this is an edit of that turn. For an assistant message it is an
        alternative reply; is_human defaults to False there (True for user messages).
        """
        now = utc_now()
        with self._writing() as conn:
            original = self._message(conn, message_id)
            human = original.role == "user" if is_human is None else is_human
            if original.role == "user" and not content.strip():
                raise InvalidFeedbackError("a user message cannot be empty")
            action_id = self._log_action(conn, "add_sibling", original.conversation_id, now)
            new_id = self._insert_message(
                conn, original.conversation_id, original.parent_id, original.role, content, action_id, now,
                is_human=human, model_version_id=model_version_id, sampling=sampling, finish_reason=finish_reason,
            )
            if show:
                self._show(conn, original.conversation_id, new_id, now)
            return self._message(conn, new_id)

    def switch_path(self, message_id: int) -> list[Message]:
        """Show the branch through `message_id`, down to its newest leaf; returns the new shown path."""
        now = utc_now()
        with self._writing() as conn:
            message = self._message(conn, message_id)
            leaf = message_id
            while True:
                child = conn.execute(
                    "SELECT id FROM messages WHERE parent_id = ? ORDER BY id DESC LIMIT 1", [leaf]
                ).fetchone()
                if child is None:
                    break
                leaf = child[0]
            self._log_action(conn, "switch_path", message.conversation_id, now)
            self._show(conn, message.conversation_id, leaf, now)
            return self._path_to(conn, leaf)

    # ---- helpers (run inside a caller's transaction) ---------------------------------------

    def _conversation(self, conn: sqlite3.Connection, conversation_id: int) -> Conversation:
        row = self._row(conn, "SELECT * FROM conversations WHERE id = ?", [conversation_id])
        if row is None:
            raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        return conversation_from_row(row)

    def _message(self, conn: sqlite3.Connection, message_id: int) -> Message:
        row = self._row(conn, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", [message_id])
        if row is None:
            raise NotFoundError(f"message {message_id!r} does not exist")
        return message_from_row(row)

    def _path_to(self, conn: sqlite3.Connection, leaf_id: int | None) -> list[Message]:
        path: list[Message] = []
        while leaf_id is not None:
            message = self._message(conn, leaf_id)
            path.append(message)
            leaf_id = message.parent_id
        path.reverse()
        return path

    def _insert_message(
        self,
        conn: sqlite3.Connection,
        conversation_id: int,
        parent_id: int | None,
        role: str,
        content: str,
        action_id: int,
        now: str,
        is_human: bool,
        model_version_id: int | None = None,
        sampling: dict[str, Any] | None = None,
        finish_reason: str | None = None,
    ) -> int:
        """Insert one message after checking it fits the tree rules."""
        if not isinstance(content, str):
            raise InvalidFeedbackError(f"message content must be text, not {type(content).__name__}")
        if parent_id is None:
            if role != "user":
                raise InvalidFeedbackError("a conversation must start with a user message")
        else:
            parent = self._message(conn, parent_id)
            if parent.conversation_id != conversation_id:
                raise InvalidFeedbackError(
                    f"message {parent_id} belongs to conversation {parent.conversation_id}, not {conversation_id}"
                )
            if parent.role == role:
                article = {"user": "a user", "assistant": "an assistant"}
                expected = "assistant" if role == "user" else "user"
                raise InvalidFeedbackError(
                    f"{article[role]} message must follow {article[expected]} message; "
                    f"message {parent_id} is {article[parent.role]} message"
                )
        if model_version_id is not None and conn.execute(
            "SELECT 1 FROM model_versions WHERE id = ?", [model_version_id]
        ).fetchone() is None:
            raise NotFoundError(f"model version {model_version_id!r} does not exist")
        cursor = conn.execute(
            """INSERT INTO messages (conversation_id, parent_id, role, content, model_version_id, sampling,
                                     finish_reason, is_human, action_id, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                conversation_id, parent_id, role, content, model_version_id,
                json.dumps(sampling, sort_keys=True) if sampling is not None else None,
                finish_reason, int(is_human), action_id, now,
            ],
        )
        return int(cursor.lastrowid)

    def _record_system_prompt(
        self, conn: sqlite3.Connection, conversation_id: int, system_prompt: str | None, action_id: int
    ) -> None:
        conn.execute(
            "INSERT INTO system_prompt_changes (conversation_id, system_prompt, action_id) VALUES (?, ?, ?)",
            [conversation_id, system_prompt, action_id],
        )

    def _show(self, conn: sqlite3.Connection, conversation_id: int, leaf_id: int, now: str) -> None:
        conn.execute(
            "UPDATE conversations SET shown_leaf_id = ?, updated_at = ? WHERE id = ?", [leaf_id, now, conversation_id]
        )

    def _touch(self, conn: sqlite3.Connection, conversation_id: int, now: str) -> None:
        conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", [now, conversation_id])

    def _update_conversation(self, conversation_id: int, kind: str, **columns: Any) -> Conversation:
        now = utc_now()
        with self._writing() as conn:
            self._conversation(conn, conversation_id)
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(
                f"UPDATE conversations SET {assignments}, updated_at = ? WHERE id = ?",
                [*columns.values(), now, conversation_id],
            )
            self._log_action(conn, kind, conversation_id, now)
            return self._conversation(conn, conversation_id)
