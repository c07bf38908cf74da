"""Plain dataclasses the store returns. No database access here.

A chat message in a training context is a plain dict `{"role": ..., "content": ...}` (the
shape chat templates and RLHF datasets use), with roles "system", "user", "assistant".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ChatMessage = dict[str, str]
Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Snapshot:
    """A point in the store's history: every action with id <= action_id, nothing after."""

    action_id: int
    taken_at: str


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system_prompt: str | None
    source: Literal["chat", "import"]
    shown_leaf_id: int | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    parent_id: int | None
    role: Role
    content: str
    model_version_id: int | None
    sampling: dict[str, Any] | None
    finish_reason: str | None
    is_human: bool
    action_id: int
    created_at: str


@dataclass(frozen=True)
class ReplyDraft:
    """One generated reply to store: its text and how it was produced."""

    content: str
    model_version_id: int | None = None
    sampling: dict[str, Any] | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Rating:
    """The current thumbs on a message. value is +1 or -1 (0 never reaches callers)."""

    message_id: int
    value: int
    tags: list[str]
    comment: str | None
    action_id: int
    created_at: str


@dataclass(frozen=True)
class Ranking:
    """The current ranking of a parent's replies, best first; empty when not rankable."""

    parent_id: int
    ranked_ids: list[int]
    is_rankable: bool
    comment: str | None
    action_id: int
    created_at: str


@dataclass(frozen=True)
class ArenaChoice:
    """The user's blind verdict on two replies to one user turn from two model versions.

    outcome: "first" or "second" (that reply won), "tie", or "both_bad".
    """

    parent_id: int
    first_id: int
    second_id: int
    first_version_id: int | None
    second_version_id: int | None
    outcome: Literal["first", "second", "tie", "both_bad"]
    tags: list[str]
    comment: str | None
    action_id: int
    created_at: str


@dataclass
class ConversationTree:
    """A whole conversation: every message, the shown path, current ratings and rankings."""

    conversation: Conversation
    messages: dict[int, Message]
    shown_path: list[Message]
    ratings: dict[int, Rating] = field(default_factory=dict)
    rankings: dict[int, Ranking] = field(default_factory=dict)

    def children(self, parent_id: int | None) -> list[Message]:
        """Messages under `parent_id` (None: the roots), oldest first."""
        return [m for m in self.messages.values() if m.parent_id == parent_id]

    def siblings(self, message_id: int) -> list[Message]:
        """The message and its siblings (same parent), oldest first."""
        return self.children(self.messages[message_id].parent_id)


@dataclass(frozen=True)
class SearchHit:
    """A conversation matching a search, with the best-matching message and a snippet."""

    conversation: Conversation
    message_id: int | None
    snippet: str


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    path: str
    parent_id: int | None
    source: Literal["import", "train"]
    metrics: dict[str, Any]
    is_active: bool
    created_at: str
    removed_at: str | None = None  # when its files were removed (the record stays)

    @property
    def is_removed(self) -> bool:
        return self.removed_at is not None


@dataclass(frozen=True)
class TrainingRun:
    id: int
    kind: str
    config: dict[str, Any]
    status: Literal["running", "succeeded", "failed", "cancelled", "abandoned"]
    metrics: dict[str, Any]
    snapshot_action_id: int
    base_version_id: int | None
    result_version_id: int | None
    error: str | None
    started_at: str
    finished_at: str | None


class _AnswersAPrompt:
    """For records whose `context` ends with the user turn they answer."""

    context: list[ChatMessage]

    @property
    def prompt(self) -> str:
        """The text of that user turn."""
        return self.context[-1]["content"]


@dataclass(frozen=True)
class PreferencePair(_AnswersAPrompt):
    """One comparison: `chosen` was preferred over `rejected` as a reply to `context`.

    context: the chat up to and including the user turn both replies answer (system prompt
    first when the conversation has one). group_key: the id of that user turn; all pairs
    with the same key share a prompt and belong together (e.g. in one train/eval split).
    source: "ranking", "arena" (a blind arena choice between two versions' replies),
    "thumbs" (up-voted vs down-voted sibling) or "demonstration" (a human-written reply
    vs a model-written sibling the user did not vote up).
    action_id: the newest action behind the pair (its ranking, thumbs or written reply),
    so a trainer can tell the feedback given since an earlier snapshot.
    """

    group_key: int
    conversation_id: int
    parent_id: int
    context: list[ChatMessage]
    chosen: str
    rejected: str
    chosen_id: int
    rejected_id: int
    source: Literal["ranking", "arena", "thumbs", "demonstration"]
    action_id: int = 0


@dataclass(frozen=True)
class PreferenceGroup:
    """Every pair sharing one prompt."""

    group_key: int
    conversation_id: int
    parent_id: int
    context: list[ChatMessage]
    pairs: list[PreferencePair]


@dataclass(frozen=True)
class Demonstration(_AnswersAPrompt):
    """A reply worth imitating: human-written ("human") or a model reply voted up ("upvoted")."""

    conversation_id: int
    parent_id: int
    message_id: int
    context: list[ChatMessage]
    completion: str
    source: Literal["human", "upvoted"]


@dataclass(frozen=True)
class Judgment:
    """A lone thumbs: a model reply voted up (+1) or down (-1) that is in no preference
    pair, because none of its siblings was ranked or voted the other way. An unpaired
    signal: it says the reply was good or bad, not better than another."""

    conversation_id: int
    parent_id: int
    message_id: int
    context: list[ChatMessage]
    completion: str
    label: int
    action_id: int

    @property
    def prompt(self) -> str:
        return self.context[-1]["content"]


@dataclass(frozen=True)
class Prompt:
    """A user turn with the chat before it; context ends with that user turn."""

    conversation_id: int
    message_id: int
    context: list[ChatMessage]


@dataclass(frozen=True)
class TrainingData:
    """All the training views read in one transaction at one snapshot."""

    snapshot: Snapshot
    pairs: list[PreferencePair]
    demonstrations: list[Demonstration]
    prompts: list[Prompt]
    judgments: list[Judgment] = field(default_factory=list)

    def pair_groups(self) -> list[PreferenceGroup]:
        return group_pairs(self.pairs)


@dataclass(frozen=True)
class FeedbackCounts:
    """What was added since a snapshot (by default, that of the last successful training run)."""

    since_action_id: int
    until_action_id: int
    num_user_messages: int
    num_replies: int
    num_demonstrations: int
    num_ratings: int
    num_rankings: int
    num_new_pairs: int


def group_pairs(pairs: list[PreferencePair]) -> list[PreferenceGroup]:
    """Pairs gathered per prompt, groups in the order their first pair appears."""
    groups: dict[int, list[PreferencePair]] = {}
    for pair in pairs:
        groups.setdefault(pair.group_key, []).append(pair)
    return [
        PreferenceGroup(
            group_key=key,
            conversation_id=members[0].conversation_id,
            parent_id=members[0].parent_id,
            context=members[0].context,
            pairs=members,
        )
        for key, members in groups.items()
    ]
