"""Reading Open WebUI's feedback export (Admin > Evaluations > Feedbacks > Export).

The file is one JSON array; each item is one thumbs given in Open WebUI:

    {"id": "...", "type": "rating",
     "data": {"rating": 1 | -1, "model_id": "llama3", "sibling_model_ids": ["qwen2"] | null,
              "reason": "...", "comment": "...", "tags": [...], "details": {"rating": 1-10}},
     "meta": {"arena": true | false, "chat_id": "...", "message_id": "...", ...},
     "snapshot": {"chat": {"id": "...", "title": "...",
                           "chat": {"history": {"messages": {id: {"id", "parentId", "childrenIds",
                                                                  "role", "content", "model"}}},
                                    "messages": [...], "params": {"system": "..."}}}}}

What an item means: the rated reply is `meta.message_id` in the snapshot's message tree.
When its user turn had other replies (`sibling_model_ids`: Open WebUI's arena, or several
models answering at once), a thumbs up says it beat each sibling and a thumbs down that
each sibling beat it, which is how Open WebUI's own leaderboard counts them: one
preference pair per sibling. Without siblings it is a lone thumbs (with its reason,
tags and comment). The context is the path from the root to the reply's user turn.

`read_openwebui_file` checks every item before returning anything: an item of the wrong
shape is an ImportFormatError naming the item and what is wrong, so nothing is imported
from a bad file. Items with no thumbs (details only) are counted as skipped. Writing is
feedback.importing's.
"""

from __future__ import annotations

import json
import os
from typing import Any

from feedback.errors import ImportFormatError
from feedback.importing import (
    ImportedItems, ImportedJudgment, ImportedPair, content_key, lone_surrogate,
)
from feedback.records import ChatMessage

ROLES = ("user", "assistant", "system")


class _ItemError(Exception):
    """A problem with one item; becomes ImportFormatError naming the file and the item."""


def _field(obj: dict, path: str, kind: type | tuple[type, ...]) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise _ItemError(f"has no {path!r}")
        value = value[part]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _ItemError(f"{path!r} is {type(value).__name__}, not {names}")
    return value


def _message_tree(item: dict) -> dict[str, dict]:
    """Message id -> message of the item's snapshot (the tree, else the shown list)."""
    chat = _field(item, "snapshot.chat.chat", dict)
    history = chat.get("history")
    if isinstance(history, dict) and isinstance(history.get("messages"), dict):
        messages = history["messages"]
        return {str(key): value for key, value in messages.items() if isinstance(value, dict)}
    listed = chat.get("messages")
    if not isinstance(listed, list):
        raise _ItemError("has neither 'snapshot.chat.chat.history.messages' nor 'snapshot.chat.chat.messages'")
    tree: dict[str, dict] = {}
    parent = None
    for message in listed:  # the list is one branch: each message's parent is the one before
        if isinstance(message, dict) and "id" in message:
            tree[str(message["id"])] = {"parentId": parent, **message}
            parent = message["id"]
    return tree


def _text(message: dict, what: str) -> tuple[str, str]:
    role, content = message.get("role"), message.get("content")
    if role not in ROLES or not isinstance(content, str):
        raise _ItemError(f"{what} is not a message with a role and text content")
    problem = lone_surrogate(content, what)
    if problem is not None:
        raise _ItemError(problem)
    return role, content


def _context(tree: dict[str, dict], reply: dict, system_prompt: str | None) -> list[ChatMessage]:
    chain: list[dict] = []
    parent_id = reply.get("parentId")
    seen: set[str] = set()
    while parent_id is not None:
        key = str(parent_id)
        if key in seen or key not in tree:
            raise _ItemError(f"the snapshot has no message {key!r} on the path to the rated reply")
        seen.add(key)
        chain.append(tree[key])
        parent_id = tree[key].get("parentId")
    chain.reverse()
    context: list[ChatMessage] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for message in chain:
        role, content = _text(message, f"message {message.get('id')!r}")
        context.append({"role": role, "content": content})
    if not chain or context[-1]["role"] != "user":
        raise _ItemError("the rated reply does not answer a user message")
    return context


def parse_item(item: Any) -> ImportedPair | ImportedJudgment | list[ImportedPair] | None:
    """One feedback item as what it says (see the module docstring); None: no thumbs."""
    if not isinstance(item, dict):
        raise _ItemError(f"is {type(item).__name__}, not an object")
    data = _field(item, "data", dict)
    rating = data.get("rating")
    if rating is None:
        return None
    try:
        value = int(rating)
    except (TypeError, ValueError):
        value = 0
    if value not in (1, -1) or isinstance(rating, bool):
        raise _ItemError(f"'data.rating' is {rating!r}, not 1 or -1")
    message_id = str(_field(item, "meta.message_id", (str, int)))
    tree = _message_tree(item)
    if message_id not in tree:
        raise _ItemError(f"the snapshot has no rated message {message_id!r}")
    reply = tree[message_id]
    role, text = _text(reply, "the rated message")
    if role != "assistant":
        raise _ItemError("the rated message is not an assistant reply")
    params = item["snapshot"]["chat"]["chat"].get("params")
    system_prompt = params.get("system") if isinstance(params, dict) and isinstance(params.get("system"), str) else None
    context = _context(tree, reply, system_prompt)
    siblings = []
    parent = tree.get(str(reply.get("parentId")), {})
    for sibling_id in parent.get("childrenIds") or []:
        sibling = tree.get(str(sibling_id))
        if str(sibling_id) != message_id and sibling is not None and sibling.get("role") == "assistant":
            siblings.append(_text(sibling, f"message {sibling_id!r}")[1])
    model = data.get("model_id") if isinstance(data.get("model_id"), str) else None
    if siblings:
        return [ImportedPair(context, text, other) if value == 1 else ImportedPair(context, other, text)
                for other in siblings]
    tags = [t for t in data.get("tags") or [] if isinstance(t, str) and t.strip()]
    reason = data.get("reason")
    if not tags and isinstance(reason, str) and reason.strip():
        tags = [reason.strip()]
    comment = data.get("comment") if isinstance(data.get("comment"), str) and data.get("comment").strip() else None
    return ImportedJudgment(context, text, value, tags, comment, model)


# A whole export is parsed at once; this bounds the memory a hostile file can take.
MAX_EXPORT_BYTES = 512 * 2**20


def read_openwebui_file(path: str | os.PathLike[str]) -> ImportedItems:
    """Every item of an Open WebUI feedback export, keyed by its feedback id."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_EXPORT_BYTES + 1)
    except OSError as exc:
        raise ImportFormatError(f"cannot read import file {str(path)!r}: {exc.strerror}") from exc
    if len(raw) > MAX_EXPORT_BYTES:
        raise ImportFormatError(f"{path}: longer than {MAX_EXPORT_BYTES // 2**20} MiB, more than any feedback export")
    try:
        items = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except RecursionError:
        raise ImportFormatError(f"{path}: JSON nested too deeply") from None
    if not isinstance(items, list):
        raise ImportFormatError(f"{path}: an Open WebUI feedback export is a JSON array, this is a {type(items).__name__}")
    parsed = ImportedItems()
    for number, item in enumerate(items, start=1):
        try:
            result = parse_item(item)
        except _ItemError as exc:
            raise ImportFormatError(f"{path}: item {number}: {exc}") from exc
        key = f"openwebui:{item['id']}" if item.get("id") is not None else content_key("openwebui", item)
        if result is None:
            parsed.num_skipped += 1
        elif isinstance(result, ImportedJudgment):
            parsed.judgments.append((key, result))
        else:
            pairs = result if isinstance(result, list) else [result]
            parsed.pairs.extend((f"{key}:{i}", pair) for i, pair in enumerate(pairs))
    return parsed
