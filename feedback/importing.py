"""Import of preference pairs from JSONL, to bootstrap from a public dataset.

Each non-blank line is one JSON object in one of these shapes:

- common: `{"prompt": str, "chosen": str, "rejected": str}`;
- chat lists: `chosen` / `rejected` are lists of `{"role", "content"}` messages ending with
  the assistant reply; the messages before it are the context (they must agree between
  chosen and rejected); `prompt` is then optional (a string, or a list of messages);
- this store's own `export --format pairs`: the common shape plus `context` (the chat up to
  the user turn), which wins over `prompt` so an export imports back unchanged.

The whole file is read and checked before anything is written, then written in one
transaction: a malformed line raises ImportFormatError naming its line number and nothing
is imported. A pair whose chosen and rejected replies are the same text says nothing and is
skipped (counted). Each pair becomes a conversation (source "import") whose user turn has
the two replies as siblings, ranked chosen first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from feedback.conversations import ConversationsMixin, title_from
from feedback.database import utc_now
from feedback.errors import ImportFormatError
from feedback.records import ChatMessage

CONTEXT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ImportedPair:
    context: list[ChatMessage]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class ImportResult:
    num_pairs: int
    num_skipped: int
    conversation_ids: list[int]


class _LineError(Exception):
    """A problem with one line; turned into ImportFormatError with the file and line number."""


def _chat_messages(value: Any, field: str) -> list[ChatMessage]:
    if not isinstance(value, list) or not value:
        raise _LineError(f"{field!r} must be a non-empty list of messages")
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str) or not isinstance(item.get("content"), str):
            raise _LineError(f"{field}[{index}] is not a {{\"role\": str, \"content\": str}} message")
        if item["role"] not in CONTEXT_ROLES:
            raise _LineError(f"{field}[{index}] has role {item['role']!r}, not one of {', '.join(CONTEXT_ROLES)}")
        messages.append({"role": item["role"], "content": item["content"]})
    return messages


def _reply(value: Any, field: str) -> tuple[str, list[ChatMessage] | None]:
    """The reply text of `chosen`/`rejected`, and the context before it when given as a chat list."""
    if isinstance(value, str):
        return value, None
    messages = _chat_messages(value, field)
    if messages[-1]["role"] != "assistant":
        raise _LineError(f"the last message of {field!r} must be the assistant's reply, not a {messages[-1]['role']!r} message")
    return messages[-1]["content"], messages[:-1]


def _check_context(context: list[ChatMessage]) -> list[ChatMessage]:
    turns = context[1:] if context and context[0]["role"] == "system" else context
    if not turns:
        raise _LineError("there is no user turn before the replies (give 'prompt' or chat-list replies)")
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise _LineError(f"the conversation must alternate user and assistant turns; turn {index + 1} is {message['role']!r}")
    if turns[-1]["role"] != "user":
        raise _LineError("the conversation before the replies must end with a user turn")
    return context


def parse_pair(obj: Any) -> ImportedPair:
    """One JSON object as a pair (see the module docstring for the accepted shapes)."""
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {type(obj).__name__}")
    for field in ("chosen", "rejected"):
        if field not in obj:
            raise _LineError(f"missing {field!r}")
    chosen, chosen_context = _reply(obj["chosen"], "chosen")
    rejected, rejected_context = _reply(obj["rejected"], "rejected")
    if chosen_context is not None and rejected_context is not None and chosen_context != rejected_context:
        raise _LineError("'chosen' and 'rejected' disagree on the conversation before the reply")
    list_context = chosen_context if chosen_context is not None else rejected_context
    prompt = obj.get("prompt")
    if "context" in obj:
        context = _chat_messages(obj["context"], "context")
    elif list_context:
        context = list_context
    elif isinstance(prompt, str):
        context = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list):
        context = _chat_messages(prompt, "prompt")
    elif prompt is None:
        raise _LineError("missing 'prompt' (needed when 'chosen' and 'rejected' are plain text)")
    else:
        raise _LineError(f"'prompt' must be text or a list of messages, not {type(prompt).__name__}")
    return ImportedPair(_check_context(context), chosen, rejected)


def read_pairs_file(path: str | os.PathLike[str]) -> list[ImportedPair]:
    """Every pair in a JSONL file; ImportFormatError at the first bad line."""
    pairs: list[ImportedPair] = []
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ImportFormatError(f"cannot read import file {str(path)!r}: {exc.strerror}") from exc
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
                if not text.strip():
                    continue
                pairs.append(parse_pair(json.loads(text)))
            except UnicodeDecodeError as exc:
                raise ImportFormatError(f"{path}: line {line_number}: not UTF-8 text ({exc.reason})") from exc
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{path}: line {line_number}: not valid JSON ({exc.msg})") from exc
            except _LineError as exc:
                raise ImportFormatError(f"{path}: line {line_number}: {exc}") from exc
    return pairs


class ImportMixin(ConversationsMixin):
    """Import operation of the Store."""

    def import_pairs(self, path: str | os.PathLike[str]) -> ImportResult:
        """Import a JSONL file of preference pairs, all or nothing."""
        pairs = read_pairs_file(path)
        return self.import_pair_records(pairs)

    def import_pair_records(self, pairs: list[ImportedPair]) -> ImportResult:
        """Write already-parsed pairs in one transaction (one action)."""
        now = utc_now()
        conversation_ids: list[int] = []
        num_skipped = 0
        with self._writing() as conn:
            action_id = self._log_action(conn, "import_pairs", None, now)
            for pair in pairs:
                if pair.chosen == pair.rejected:
                    num_skipped += 1
                    continue
                system_prompt = pair.context[0]["content"] if pair.context[0]["role"] == "system" else None
                turns = pair.context[1:] if system_prompt is not None else pair.context
                cursor = conn.execute(
                    """INSERT INTO conversations (title, system_prompt, source, created_at, updated_at)
                       VALUES (?, ?, 'import', ?, ?)""",
                    [title_from(turns[-1]["content"]), system_prompt, now, now],
                )
                conversation_id = int(cursor.lastrowid)
                if system_prompt is not None:
                    self._record_system_prompt(conn, conversation_id, system_prompt, action_id)
                parent_id = None
                for turn in turns:
                    parent_id = self._insert_message(
                        conn, conversation_id, parent_id, turn["role"], turn["content"], action_id, now,
                        is_human=turn["role"] == "user",
                    )
                chosen_id, rejected_id = (
                    self._insert_message(conn, conversation_id, parent_id, "assistant", text, action_id, now, is_human=False)
                    for text in (pair.chosen, pair.rejected)
                )
                ranking = conn.execute(
                    "INSERT INTO rankings (parent_id, is_rankable, comment, action_id, created_at) VALUES (?, 1, NULL, ?, ?)",
                    [parent_id, action_id, now],
                )
                conn.executemany(
                    "INSERT INTO ranking_items (ranking_id, position, message_id) VALUES (?, ?, ?)",
                    [(ranking.lastrowid, 0, chosen_id), (ranking.lastrowid, 1, rejected_id)],
                )
                self._show(conn, conversation_id, chosen_id, now)
                conversation_ids.append(conversation_id)
        return ImportResult(len(conversation_ids), num_skipped, conversation_ids)
