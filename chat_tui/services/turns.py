"""`Turn`: what the chat view shows of one message, built from a stored conversation tree.

A turn is one message on the shown path plus what the view needs around it: where it
sits among its siblings, its current rating, how it ended. Pure data; no database access
and no widgets here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from feedback.records import ConversationTree, Message


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str
    message_id: int | None = None  # None while a reply is still streaming
    parent_id: int | None = None
    sibling_index: int = 0  # 0-based position among the parent's replies
    sibling_count: int = 1
    rating: int | None = None  # +1, -1 or None
    rating_tags: tuple[str, ...] = ()
    finish_reason: str | None = None  # "stop", "length", "abort", or None
    is_human: bool = False  # a reply the user wrote (teach)
    model_label: str = ""  # the model version that wrote it
    rank: int | None = None  # 1-based place in the parent's ranking, if ranked

    @property
    def is_reply(self) -> bool:
        return self.role == "assistant"

    @property
    def is_stopped(self) -> bool:
        return self.finish_reason == "abort"

    def with_content(self, content: str) -> "Turn":
        return replace(self, content=content)


def turns_from_tree(tree: ConversationTree, version_names: dict[int, str] | None = None) -> list[Turn]:
    """The shown path of a conversation as turns, oldest first."""
    names = version_names or {}
    return [turn_for(tree, message, names) for message in tree.shown_path]


def turn_for(tree: ConversationTree, message: Message, version_names: dict[int, str] | None = None) -> Turn:
    """One message of `tree` as a turn, with its sibling position, rating and rank."""
    siblings = tree.siblings(message.id)
    # Only same-role siblings count: a user turn and a reply never share a parent, but an
    # edited user turn is a sibling of the original user turn.
    siblings = [m for m in siblings if m.role == message.role]
    index = next(i for i, m in enumerate(siblings) if m.id == message.id)
    rating = tree.ratings.get(message.id)
    rank = None
    if message.parent_id is not None:
        ranking = tree.rankings.get(message.parent_id)
        if ranking is not None and message.id in ranking.ranked_ids:
            rank = ranking.ranked_ids.index(message.id) + 1
    model_label = ""
    if message.model_version_id is not None:
        model_label = (version_names or {}).get(message.model_version_id, f"version {message.model_version_id}")
    return Turn(
        role=message.role,
        content=message.content,
        message_id=message.id,
        parent_id=message.parent_id,
        sibling_index=index,
        sibling_count=len(siblings),
        rating=rating.value if rating else None,
        rating_tags=tuple(rating.tags) if rating else (),
        finish_reason=message.finish_reason,
        is_human=message.is_human,
        model_label=model_label,
        rank=rank,
    )
