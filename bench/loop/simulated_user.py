"""A simulated user who gives feedback through the same store API as the chat app.

For each training prompt it does what a person does in compare mode (chat_tui/screens/
compare_screen.py) and the teach screen (chat_tui/screens/reply_feedback.py): sends the
message through `ChatSession.send` (a new conversation per prompt), stores the k
alternatives as sibling replies with `ChatSession.save_replies`, ranks them best first
with `ChatSession.rank`, shows the best one, thumbs some with `ChatSession.rate`, and,
for at most `max_taught` prompts where none of the k satisfies the taste, writes the
reply it wanted with `ChatSession.teach` on the best one. The judgement is the taste's.

The k alternatives are not sampled here: they come from the candidate cache
(bench/loop/candidates.py), sampled once with the chat's settings for every taste, so
the store holds exactly what the live chat would have written, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chat_tui.services.chat_session import ChatSession, GeneratedReply
from feedback.store import Store

from bench.loop.candidates import PromptReplies
from bench.loop.tastes import Taste
from bench.loop.tastes.text import count_words


@dataclass
class CollectedPrompt:
    prompt_id: str
    user_message_id: int
    reply_ids: list[int]  # best first
    word_counts: list[int]  # best first
    satisfied: list[bool]  # best first
    thumbs: dict[int, int]  # message id -> +1 / -1
    taught_id: int | None = None  # the reply the user wrote, if any


@dataclass
class CollectionSummary:
    prompts: list[CollectedPrompt] = field(default_factory=list)
    generated_tokens: int = 0

    @property
    def num_replies(self) -> int:
        return sum(len(p.reply_ids) for p in self.prompts)

    def as_dict(self) -> dict[str, Any]:
        replies = [s for p in self.prompts for s in p.satisfied]
        words = [w for p in self.prompts for w in p.word_counts]
        return {
            "prompts": len(self.prompts),
            "replies": len(replies),
            "generated_tokens": self.generated_tokens,
            "replies_satisfying": sum(replies),
            "reply_satisfaction_rate": sum(replies) / max(1, len(replies)),
            "prompts_with_a_satisfying_reply": sum(any(p.satisfied) for p in self.prompts),
            "prompts_with_mixed_replies": sum(any(p.satisfied) and not all(p.satisfied) for p in self.prompts),
            "mean_reply_words": sum(words) / max(1, len(words)),
            "thumbs_up": sum(v > 0 for p in self.prompts for v in p.thumbs.values()),
            "thumbs_down": sum(v < 0 for p in self.prompts for v in p.thumbs.values()),
            "taught": sum(p.taught_id is not None for p in self.prompts),
        }


class SimulatedUser:
    def __init__(self, store: Store, model_version_id: int | None, taste: Taste, sampling: dict[str, Any],
                 max_taught: int = 10) -> None:
        """sampling: what the chat stores with each reply (settings and n, as compare mode does)."""
        self.store = store
        self.model_version_id = model_version_id
        self.taste = taste
        self.sampling = dict(sampling)
        self.max_taught = max_taught

    def collect(self, candidates: list[PromptReplies]) -> CollectionSummary:
        """Ask every prompt, store its alternatives, rank, thumb and maybe teach. See the module docstring."""
        summary = CollectionSummary()
        for group in candidates:
            summary.generated_tokens += sum(r.num_tokens for r in group.replies)
            may_teach = sum(p.taught_id is not None for p in summary.prompts) < self.max_taught
            summary.prompts.append(self._judge(group, may_teach))
        return summary

    def _judge(self, group: PromptReplies, may_teach: bool) -> CollectedPrompt:
        session = ChatSession(self.store)
        user_id = session.send(group.prompt_text).id
        replies = [GeneratedReply(r.text, r.finish_reason, self.sampling) for r in group.replies]
        stored = session.save_replies(user_id, replies, self.model_version_id, show_index=None)
        texts = [r.text for r in group.replies]
        order = self.taste.rank(texts)
        best_first = [stored[i].id for i in order]
        session.rank(user_id, best_first)
        session.show(best_first[0])
        thumbs = {}
        for index, value in self.taste.thumbs(texts, order).items():
            session.rate(stored[index].id, value)
            thumbs[stored[index].id] = value
        taught = self.taste.teach(group.prompt_text, texts) if may_teach else None
        taught_id = session.teach(best_first[0], taught).id if taught else None
        return CollectedPrompt(
            group.prompt_id, user_id, best_first, [count_words(texts[i]) for i in order],
            [self.taste.satisfied(texts[i]) for i in order], thumbs, taught_id,
        )
