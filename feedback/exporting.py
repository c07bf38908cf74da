"""Exports of the feedback as JSONL rows.

- pairs: `{"prompt", "chosen", "rejected"}` (the common RLHF dataset shape, texts) plus
  `context` (the chat up to and including the user turn, as role/content messages),
  `group` (one key per prompt), `source` and the message ids. `feedback import` reads this
  back unchanged.
- sft: `{"prompt", "completion"}` plus `context`, `source` ("human" or "upvoted") and ids.
- trees: one whole conversation per row: every message with its current rating, the
  current rankings, and the shown path.

pairs and sft are read at one snapshot; trees in one read transaction. Files are written to
a temporary name beside the target and renamed, so a failed export leaves no partial file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from feedback.errors import FeedbackError

if TYPE_CHECKING:
    from feedback.store import Store

EXPORT_FORMATS = ("pairs", "sft", "trees")


# The record attributes each row holds, in the order written ("prompt" is a property).
PAIR_FIELDS = ("prompt", "chosen", "rejected", "context", "group_key", "source", "conversation_id", "parent_id",
               "chosen_id", "rejected_id")
SFT_FIELDS = ("prompt", "completion", "context", "source", "conversation_id", "parent_id", "message_id")
COLUMN_NAMES = {"group_key": "group"}  # the name `feedback import` reads back


def _record_rows(records: Iterable[Any], fields: Sequence[str]) -> Iterator[dict[str, Any]]:
    for record in records:
        yield {COLUMN_NAMES.get(name, name): getattr(record, name) for name in fields}


def pair_rows(store: "Store") -> Iterator[dict[str, Any]]:
    return _record_rows(store.preference_pairs(), PAIR_FIELDS)


def sft_rows(store: "Store") -> Iterator[dict[str, Any]]:
    return _record_rows(store.demonstrations(), SFT_FIELDS)


def tree_rows(store: "Store", include_imported: bool = True) -> Iterator[dict[str, Any]]:
    with store._reading():
        for conversation in store.list_conversations(include_imported=include_imported):
            tree = store.load_conversation(conversation.id)
            messages = []
            for message in tree.messages.values():
                row = asdict(message)
                rating = tree.ratings.get(message.id)
                row["rating"] = None if rating is None else {
                    "value": rating.value, "tags": rating.tags, "comment": rating.comment, "created_at": rating.created_at,
                }
                messages.append(row)
            yield {
                **asdict(tree.conversation),
                "shown_path": [message.id for message in tree.shown_path],
                "messages": messages,
                "rankings": [asdict(ranking) for ranking in tree.rankings.values()],
            }


def export_rows(store: "Store", kind: str) -> Iterator[dict[str, Any]]:
    """The rows of export `kind` ("pairs", "sft" or "trees")."""
    if kind == "pairs":
        return pair_rows(store)
    if kind == "sft":
        return sft_rows(store)
    if kind == "trees":
        return tree_rows(store)
    raise FeedbackError(f"export format {kind!r} is not one of {', '.join(EXPORT_FORMATS)}")


def write_jsonl(rows: Iterator[dict[str, Any]], out: IO[str]) -> int:
    """Write rows as JSON lines; returns how many."""
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def export_to_file(store: "Store", kind: str, path: str | os.PathLike[str]) -> int:
    """Write export `kind` to `path` atomically; returns the number of rows."""
    target = Path(path)
    if not target.parent.is_dir():
        raise FeedbackError(f"cannot write export to {str(target)!r}: folder {str(target.parent)!r} does not exist")
    rows = export_rows(store, kind)
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # a read-only folder, a full disk: say so of the file asked for
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            count = write_jsonl(rows, out)
        os.replace(temp_name, target)
    except OSError as exc:
        os.unlink(temp_name)
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    except BaseException:
        os.unlink(temp_name)
        raise
    return count
