"""Exports of the feedback as JSONL rows.

- pairs: `{"prompt", "chosen", "rejected"}` (the common RLHF dataset shape, texts) plus
  `context` (the chat up to and including the user turn, as role/content messages),
  `group` (one key per prompt), `source` and the message ids. `feedback import` reads this
  back unchanged.
- sft: `{"prompt", "completion"}` plus `context`, `source` ("human" or "upvoted") and ids.
- trees: one whole conversation per row: every message with its current rating, the
  current rankings, and the shown path.
- trl: the conversational preference rows TRL's DPO and reward trainers read:
  `{"prompt": [messages up to the user turn], "chosen": [the assistant reply], "rejected": [...]}`.
- kto: TRL's conversational unpaired-preference rows (KTO):
  `{"prompt": [messages], "completion": [the assistant reply], "label": true | false}`. Every
  reply of a pair that was only ever chosen is true, only ever rejected is false (a reply
  in the middle of a ranking says both and is left out), and each lone thumbs is its own
  row.

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


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def trl_rows(store: "Store") -> Iterator[dict[str, Any]]:
    for pair in store.preference_pairs():
        yield {"prompt": pair.context, "chosen": _reply(pair.chosen), "rejected": _reply(pair.rejected)}


def kto_rows(store: "Store") -> Iterator[dict[str, Any]]:
    data = store.training_data()
    labels: dict[int, set[bool]] = {}
    replies: dict[int, tuple[list[dict[str, str]], str]] = {}
    for pair in data.pairs:
        for message_id, text, label in ((pair.chosen_id, pair.chosen, True), (pair.rejected_id, pair.rejected, False)):
            labels.setdefault(message_id, set()).add(label)
            replies[message_id] = (pair.context, text)
    for message_id, (context, text) in replies.items():
        if len(labels[message_id]) == 1:
            yield {"prompt": context, "completion": _reply(text), "label": labels[message_id].pop()}
    for judgment in data.judgments:
        yield {"prompt": judgment.context, "completion": _reply(judgment.completion), "label": judgment.label > 0}


EXPORTS = {"pairs": pair_rows, "sft": sft_rows, "trees": tree_rows, "trl": trl_rows, "kto": kto_rows}
EXPORT_FORMATS = tuple(EXPORTS)


def export_rows(store: "Store", kind: str) -> Iterator[dict[str, Any]]:
    """The rows of export `kind` (one of EXPORT_FORMATS)."""
    if kind not in EXPORTS:
        raise FeedbackError(f"export format {kind!r} is not one of {', '.join(EXPORT_FORMATS)}")
    return EXPORTS[kind](store)


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
