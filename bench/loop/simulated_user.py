"""A simulated user who chats through the same store API as the chat app's compare mode.

For each prompt it does what a person does in compare mode (chat_tui/screens/
compare_screen.py): sends the message through `ChatSession.send` (a new conversation per
prompt), has the engine sample k alternatives in one request (n=k, sharing the prompt's
prefill), stores them as sibling replies with `ChatSession.save_replies`, ranks them best
first with `ChatSession.rank`, shows the best one, and thumbs some of them with
`ChatSession.rate`. The ranking and thumbs come from a `Preference`.

Sampling is the chat's own default settings (`ChatSettings()`), with a fixed seed per
prompt instead of the chat's fresh random one, so runs are reproducible. Several prompts'
requests go to the engine together, which batches up to `max_batch_rows` sequences and
lets a new one join whenever another finishes (a CPU is used best that way); every store
write is still made per prompt, in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from chat_tui.services.chat_session import ChatSession, GeneratedReply
from chat_tui.services.chat_settings import ChatSettings
from engine.bundle import LoadedModel
from engine.engine import LLMEngine
from feedback.store import Store

from bench.loop.preference import Preference, count_words
from bench.loop.prompt_set import BenchPrompt


@dataclass
class CollectedPrompt:
    prompt_id: str
    user_message_id: int
    reply_ids: list[int]  # best first
    word_counts: list[int]  # best first
    satisfied: list[bool]  # best first
    thumbs: dict[int, int]  # message id -> +1 / -1


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
        }


class SimulatedUser:
    def __init__(
        self,
        store: Store,
        loaded: LoadedModel,
        model_version_id: int | None,
        preference: Preference,
        k: int = 4,
        settings: ChatSettings | None = None,
        seed: int = 0,
        prompts_per_batch: int = 32,
        max_batch_rows: int = 32,
    ) -> None:
        self.store = store
        self.loaded = loaded
        self.model_version_id = model_version_id
        self.preference = preference
        self.k = k
        self.settings = (settings or ChatSettings()).validate()
        self.seed = seed
        self.prompts_per_batch = max(1, prompts_per_batch)
        self.engine = LLMEngine(loaded, max_batch_size=max(k, max_batch_rows))

    def sampling_record(self) -> dict[str, Any]:
        """What the chat stores with each reply (as compare mode does)."""
        s = self.settings
        return {"temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens,
                "repetition_penalty": s.repetition_penalty, "n": self.k}

    def collect(self, prompts: list[BenchPrompt], on_progress=None) -> CollectionSummary:
        """Ask every prompt, store k alternatives, rank and thumb them. See the module docstring."""
        summary = CollectionSummary()
        for start in range(0, len(prompts), self.prompts_per_batch):
            chunk = prompts[start : start + self.prompts_per_batch]
            sessions, user_ids, prompt_ids = [], [], []
            for prompt in chunk:
                session = ChatSession(self.store)
                user_ids.append(session.send(prompt.text).id)
                prompt_ids.append(self.loaded.encode_chat(session.context_for(user_ids[-1])))
                sessions.append(session)
            base = self.settings.sampling_params(n=self.k)
            params = [dataclasses.replace(base, seed=self.seed * 100_003 + start + i) for i in range(len(chunk))]
            outputs = self.engine.generate(prompt_ids, params)
            for prompt, session, user_id, output in zip(chunk, sessions, user_ids, outputs):
                completions = sorted(output.completions, key=lambda c: c.index)
                summary.generated_tokens += sum(len(c.token_ids) for c in completions)
                summary.prompts.append(self._judge(prompt, session, user_id, completions))
            if on_progress is not None:
                on_progress(len(summary.prompts), len(prompts))
        return summary

    def _judge(self, prompt: BenchPrompt, session: ChatSession, user_id: int, completions: list) -> CollectedPrompt:
        sampling = self.sampling_record()
        replies = [GeneratedReply(c.text, c.finish_reason, sampling) for c in completions]
        stored = session.save_replies(user_id, replies, self.model_version_id, show_index=None)
        texts = [c.text for c in completions]
        order = self.preference.rank(texts)
        best_first = [stored[i].id for i in order]
        session.rank(user_id, best_first)
        session.show(best_first[0])
        thumbs = {}
        for index, value in self.preference.thumbs(texts, order).items():
            session.rate(stored[index].id, value)
            thumbs[stored[index].id] = value
        return CollectedPrompt(
            prompt.id, user_id, best_first, [count_words(texts[i]) for i in order],
            [self.preference.satisfied(texts[i]) for i in order], thumbs,
        )
