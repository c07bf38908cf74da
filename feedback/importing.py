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
is imported. Malformed includes what JSON allows but a store cannot hold or a reader
should not have to: text with a lone surrogate (`"\ud800"`, not Unicode), nesting past
the JSON parser's recursion limit, a line over MAX_LINE_BYTES. A pair whose chosen and rejected replies are the same text says nothing and is
skipped (counted). Each pair becomes a conversation (source "import") whose user turn has
the two replies as siblings, ranked chosen first; a lone thumbs (from Open WebUI's export,
read by feedback/openwebui.py) becomes a conversation with its rated reply.

Importing is idempotent: every imported item is recorded under a key (a digest of a
pair's context and replies; an Open WebUI feedback id), and a key seen before is not
imported again. Deleting an imported conversation forgets its key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from feedback.conversations import ConversationsMixin, title_from
from feedback.database import utc_now
from feedback.errors import ImportFormatError
from feedback.records import ChatMessage

CONTEXT_ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 64 * 2**20  # far above any real preference pair; reading stops there


@dataclass(frozen=True)
class ImportedPair:
    context: list[ChatMessage]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class ImportedJudgment:
    """A lone thumbs from another tool: a reply to `context` rated +1 or -1."""

    context: list[ChatMessage]
    reply: str
    value: int
    tags: list[str]
    comment: str | None
    model: str | None  # the other tool's name for the model that wrote it


@dataclass
class ImportedItems:
    """What a file holds, each item with its key (the same item imported again has the
    same key and is not added twice)."""

    pairs: list[tuple[str, ImportedPair]] = field(default_factory=list)
    judgments: list[tuple[str, ImportedJudgment]] = field(default_factory=list)
    num_skipped: int = 0  # items that say nothing to train on


@dataclass(frozen=True)
class ImportResult:
    num_pairs: int
    num_skipped: int  # said nothing: identical chosen and rejected, or no thumbs
    conversation_ids: list[int]
    num_judgments: int = 0  # lone thumbs
    num_known: int = 0  # imported before, so not added again


def content_key(kind: str, item: Any) -> str:
    """A key for an item that has no id of its own: a digest of its content."""
    text = json.dumps(asdict(item) if is_dataclass(item) else item, sort_keys=True, ensure_ascii=False)
    return f"{kind}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


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
    for name in ("chosen", "rejected"):
        if name not in obj:
            raise _LineError(f"missing {name!r}")
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
    pair = ImportedPair(_check_context(context), chosen, rejected)
    for field, text in (("chosen", chosen), ("rejected", rejected),
                        *((f"message {i + 1}", m["content"]) for i, m in enumerate(context))):
        _check_unicode(text, field)
    return pair


def lone_surrogate(text: str, field: str) -> str | None:
    """What is wrong with `text` when it holds a lone surrogate (JSON can spell one,
    "\ud800", which is not text and which SQLite cannot store as UTF-8); else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{field} holds a lone surrogate \\u{ord(text[exc.start]):04x} at character {exc.start}, "
                "which is not valid Unicode text")
    return None


def _check_unicode(text: str, field: str) -> None:
    problem = lone_surrogate(text, field)
    if problem is not None:
        raise _LineError(problem)


def read_pairs_file(path: str | os.PathLike[str]) -> list[ImportedPair]:
    """Every pair in a JSONL file; ImportFormatError at the first bad line."""
    pairs: list[ImportedPair] = []
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ImportFormatError(f"cannot read import file {str(path)!r}: {exc.strerror}") from exc
    with handle:
        for line_number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
            try:
                if len(raw) > MAX_LINE_BYTES:
                    raise _LineError(f"longer than {MAX_LINE_BYTES // 2**20} MiB")
                text = raw.decode("utf-8")
                if not text.strip():
                    continue
                pairs.append(parse_pair(json.loads(text)))
            except UnicodeDecodeError as exc:
                raise ImportFormatError(f"{path}: line {line_number}: not UTF-8 text ({exc.reason})") from exc
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{path}: line {line_number}: not valid JSON ({exc.msg})") from exc
            except RecursionError:
                raise ImportFormatError(f"{path}: line {line_number}: JSON nested too deeply") from None
            except _LineError as exc:
                raise ImportFormatError(f"{path}: line {line_number}: {exc}") from exc
            except MemoryError:
                raise ImportFormatError(
                    f"{path}: line {line_number}: not enough memory to hold the file's pairs; split the file"
                ) from None
    return pairs


def read_import_file(path: str | os.PathLike[str], kind: str) -> ImportedItems:
    """Every item of an import file of `kind` ("pairs": JSONL preference pairs;
    "openwebui": Open WebUI's feedback export), read and checked whole before anything is
    written; ImportFormatError at the first bad item."""
    if kind == "openwebui":
        from feedback.openwebui import read_openwebui_file

        return read_openwebui_file(path)
    return ImportedItems(pairs=[(content_key("pair", pair), pair) for pair in read_pairs_file(path)])


class ImportMixin(ConversationsMixin):
    """Import operations of the Store."""

    def import_pairs(self, path: str | os.PathLike[str]) -> ImportResult:
        """Import a JSONL file of preference pairs, all or nothing; pairs already imported
        (the same context and replies) are not added again."""
        return self.import_items(read_import_file(path, "pairs"))

    def import_openwebui(self, path: str | os.PathLike[str]) -> ImportResult:
        """Import an Open WebUI feedback export (feedback.openwebui), all or nothing; items
        already imported (by their feedback id) are not added again."""
        return self.import_items(read_import_file(path, "openwebui"))

    def import_items(self, items: "ImportedItems") -> ImportResult:
        """Write already-parsed pairs and lone thumbs in one transaction (one action),
        skipping keys imported before and pairs whose two replies are the same text."""
        now = utc_now()
        conversation_ids: list[int] = []
        num_skipped, num_pairs, num_judgments, num_known = items.num_skipped, 0, 0, 0
        with self._writing() as conn:
            action_id = self._log_action(conn, "import", None, now)
            for key, item in [*items.pairs, *items.judgments]:
                if conn.execute("SELECT 1 FROM imported_items WHERE key = ?", [key]).fetchone():
                    num_known += 1
                    continue
                if isinstance(item, ImportedPair) and item.chosen == item.rejected:
                    num_skipped += 1
                    continue
                conversation_id, parent_id = self._imported_context(conn, item.context, action_id, now)
                if isinstance(item, ImportedPair):
                    self._imported_pair(conn, conversation_id, parent_id, item, action_id, now)
                    num_pairs += 1
                else:
                    reply_id = self._insert_message(
                        conn, conversation_id, parent_id, "assistant", item.reply, action_id, now, is_human=False,
                        sampling={"imported_model": item.model} if item.model else None,
                    )
                    conn.execute(
                        "INSERT INTO ratings (message_id, value, tags, comment, action_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        [reply_id, item.value, json.dumps(item.tags), item.comment, action_id, now],
                    )
                    self._show(conn, conversation_id, reply_id, now)
                    num_judgments += 1
                conn.execute("INSERT INTO imported_items (key, conversation_id, action_id) VALUES (?, ?, ?)",
                             [key, conversation_id, action_id])
                conversation_ids.append(conversation_id)
        return ImportResult(num_pairs, num_skipped, conversation_ids, num_judgments, num_known)

    def _imported_context(
        self, conn: sqlite3.Connection, context: list[ChatMessage], action_id: int, now: str
    ) -> tuple[int, int]:
        """A new imported conversation holding `context`; (its id, the last user turn's id)."""
        system_prompt = context[0]["content"] if context[0]["role"] == "system" else None
        turns = context[1:] if system_prompt is not None else context
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
        assert parent_id is not None
        return conversation_id, parent_id

    def _imported_pair(
        self, conn: sqlite3.Connection, conversation_id: int, parent_id: int, pair: ImportedPair, action_id: int, now: str
    ) -> None:
        """The two replies as siblings under the user turn, ranked chosen first, chosen shown."""
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
