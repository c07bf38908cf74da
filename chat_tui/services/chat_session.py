"""The conversation on screen and every write the chat makes to the feedback store.

A `ChatSession` knows which conversation is open and turns the UI's intents (send,
save a reply, rate, rank, teach, switch sibling, rename...) into store calls, returning
what the view should show next. It holds no widgets and never touches the model: the
screens run generation and hand finished text here.

A new conversation is created lazily, by the first message sent, so opening the app
and closing it again leaves no empty conversation behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedback.records import ConversationTree, Message, ReplyDraft
from feedback.store import Store

from chat_tui.services.turns import Turn, turns_from_tree


@dataclass(frozen=True)
class GeneratedReply:
    """A finished completion to store: text, why it ended, how it was sampled."""

    text: str
    finish_reason: str
    sampling: dict[str, Any]


class ChatSession:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.conversation_id: int | None = None
        self.tree: ConversationTree | None = None
        self.pending_system_prompt: str | None = None  # for a conversation not created yet

    # ---- what is shown --------------------------------------------------------------

    def version_names(self) -> dict[int, str]:
        return {version.id: version.name for version in self.store.list_model_versions()}

    def turns(self) -> list[Turn]:
        if self.conversation_id is None:
            return []
        self.tree = self.store.load_conversation(self.conversation_id)
        return turns_from_tree(self.tree, self.version_names())

    @property
    def title(self) -> str:
        if self.conversation_id is None:
            return "New conversation"
        return self.store.get_conversation(self.conversation_id).title or "Untitled"

    @property
    def system_prompt(self) -> str | None:
        if self.conversation_id is None:
            return self.pending_system_prompt
        return self.store.get_conversation(self.conversation_id).system_prompt

    def sidebar_items(self, query: str = "") -> list[tuple[int, str, str]]:
        """(id, title, detail) rows for the sidebar: all conversations, or the search hits."""
        if query:
            return [
                (hit.conversation.id, hit.conversation.title or "Untitled", hit.snippet if hit.message_id else "")
                for hit in self.store.search_conversations(query)
            ]
        return [
            (conversation.id, conversation.title or "Untitled", conversation.updated_at[:16].replace("T", " "))
            for conversation in self.store.list_conversations()
        ]

    def context_for(self, user_message_id: int) -> list[dict[str, str]]:
        """The chat up to and including a user message, system prompt first, for the template."""
        message = self.store.get_message(user_message_id)
        path: list[Message] = []
        current: Message | None = message
        while current is not None:
            path.append(current)
            current = self.store.get_message(current.parent_id) if current.parent_id is not None else None
        path.reverse()
        chat = [{"role": m.role, "content": m.content} for m in path]
        system_prompt = self.system_prompt
        if system_prompt:
            chat.insert(0, {"role": "system", "content": system_prompt})
        return chat

    # ---- conversations --------------------------------------------------------------

    def new(self) -> None:
        self.conversation_id = None
        self.tree = None
        self.pending_system_prompt = None

    def open(self, conversation_id: int) -> list[Turn]:
        self.store.get_conversation(conversation_id)  # NotFoundError for a stale id
        self.conversation_id = conversation_id
        return self.turns()

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename_conversation(conversation_id, title)

    def delete(self, conversation_id: int) -> None:
        self.store.delete_conversation(conversation_id)
        if conversation_id == self.conversation_id:
            self.new()

    def set_system_prompt(self, text: str | None) -> None:
        if self.conversation_id is None:
            self.pending_system_prompt = text or None
        else:
            self.store.set_system_prompt(self.conversation_id, text or None)

    # ---- messages ---------------------------------------------------------------------

    def send(self, text: str) -> Message:
        """Store a user message at the end of the shown path (creating the conversation)."""
        if self.conversation_id is None:
            conversation = self.store.create_conversation(system_prompt=self.pending_system_prompt)
            self.conversation_id = conversation.id
            self.pending_system_prompt = None
        leaf_id = self.store.get_conversation(self.conversation_id).shown_leaf_id
        if leaf_id is not None and self.store.get_message(leaf_id).role == "user":
            # The last message got no reply (generation failed): the new one replaces it
            # as a sibling, and the unanswered turn stays in the tree as a branch.
            return self.store.add_sibling(leaf_id, text)
        return self.store.add_user_message(self.conversation_id, text)

    def save_replies(
        self, parent_id: int, replies: list[GeneratedReply], model_version_id: int | None, show_index: int | None = 0
    ) -> list[Message]:
        """Store one reply, or k alternatives as siblings, under user message `parent_id`."""
        drafts = [
            ReplyDraft(r.text, model_version_id=model_version_id, sampling=r.sampling, finish_reason=r.finish_reason)
            for r in replies
        ]
        return self.store.add_assistant_replies(parent_id, drafts, show_index=show_index)

    def show(self, message_id: int) -> None:
        """Show the branch through `message_id` (a sibling, or one of k alternatives)."""
        self.store.switch_path(message_id)

    def num_replies(self, user_message_id: int) -> int:
        """How many replies a user message has (regenerations and alternatives included)."""
        message = self.store.get_message(user_message_id)
        return len(self.store.load_conversation(message.conversation_id).children(user_message_id))

    def shown_sibling(self, message_id: int) -> int:
        """Of `message_id` and its siblings, the one on the shown path now (itself if none is)."""
        conversation = self.store.get_message(message_id).conversation_id
        shown = {m.id for m in self.store.shown_path(conversation)}
        tree = self.store.load_conversation(conversation)
        return next((m.id for m in tree.siblings(message_id) if m.id in shown), message_id)

    def edit(self, user_message_id: int, text: str) -> Message:
        """Your message sent again with `text`: a sibling of it, shown (a new branch)."""
        return self.store.add_sibling(user_message_id, text)

    def sibling_of(self, message_id: int, step: int) -> int | None:
        """The id of the sibling `step` places away (same role), or None at either end."""
        siblings = [m for m in self.store.load_conversation(self.conversation_id).siblings(message_id)]
        role = self.store.get_message(message_id).role
        ids = [m.id for m in siblings if m.role == role]
        index = ids.index(message_id) + step
        return ids[index] if 0 <= index < len(ids) else None

    def rate(self, message_id: int, value: int, tags: list[str] | None = None, comment: str | None = None) -> None:
        """Thumbs up (+1) or down (-1), replacing an earlier rating; tags and comment optional."""
        self.store.rate(message_id, value, tags or [], comment)

    def rank(self, parent_id: int, best_first: list[int]) -> None:
        self.store.rank(parent_id, best_first)

    def choose_in_arena(self, left_id: int, right_id: int, outcome: str, tags: list[str] | None = None,
                        comment: str | None = None) -> None:
        """The user's blind verdict on two replies from two versions (a later one replaces it)."""
        self.store.record_arena_choice(left_id, right_id, outcome, tags or [], comment)

    def mark_not_rankable(self, parent_id: int) -> None:
        self.store.mark_not_rankable(parent_id)

    def teach(self, reply_id: int, text: str) -> Message:
        """Store the reply the user wrote instead of `reply_id`, as a demonstration, shown."""
        reply = self.store.get_message(reply_id)
        return self.store.save_demonstration(reply.parent_id, text)
