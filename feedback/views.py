"""The trainer's views of the feedback, as of a snapshot: preference pairs, demonstrations,
prompts. Pure reads; the caller runs them inside one read transaction.

A snapshot is an action id N: the views see messages, ratings and rankings written by
actions 1..N and nothing later, so calling them twice with the same N gives the same
answer however much the chat has written since (deleted conversations excepted: they
leave every view).

A reply's context carries the system prompt in effect when the reply was written (a
prompt set later never reached it); prompts to roll out on carry the one in effect at the
snapshot. Two replies written under different system prompts answered different
contexts, so they form no pair; when one user turn's pairs (or lone thumbs) fall under
several system prompts, the variant with the most of them is kept (the later one on a
tie), so that a prompt's group has one context.

Which pairs come out, per user turn (the "prompt"), in this order, each (chosen, rejected)
pair at most once in either direction:
1. its current ranking, when rankable: every (better, worse) pair, so k replies give
   k*(k-1)/2 pairs (4 -> 6); an arena win is a ranking of two (source "arena");
2. thumbs: every up-voted reply against every down-voted sibling;
3. demonstrations: every human-written reply against every model-written sibling the
   user did not vote up. The user wrote it because the model's replies were not what they
   wanted, so it is preferred over the model's own samples for that prompt (as in DITTO,
   Shaikh et al. 2024).
Each pair carries the newest action behind it (`action_id`).
Demonstrations are human-written replies, plus model replies voted up.
Judgments are the lone thumbs: rated model replies that are in no pair of their prompt.
"""

from __future__ import annotations

import bisect
import sqlite3
from dataclasses import dataclass
from typing import Any

from feedback.queries import current_arena_choices, current_rankings, current_ratings
from feedback.records import ChatMessage, Demonstration, Judgment, PreferencePair, Prompt


@dataclass(frozen=True)
class _Node:
    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    content: str
    is_human: bool
    action_id: int


class SnapshotReader:
    """Loads the message trees as of action `as_of` and derives the training views from them."""

    def __init__(self, conn: sqlite3.Connection, as_of: int) -> None:
        self.as_of = as_of
        rows = conn.execute(
            """SELECT id, conversation_id, parent_id, role, content, is_human, action_id FROM messages
               WHERE action_id <= ? ORDER BY id""",
            [as_of],
        ).fetchall()
        self.nodes = {row[0]: _Node(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6]) for row in rows}
        # conversation -> [(action id, system prompt or None)], oldest first
        self.system_prompt_history: dict[int, list[tuple[int, str | None]]] = {}
        for conversation_id, text, action_id in conn.execute(
            "SELECT conversation_id, system_prompt, action_id FROM system_prompt_changes WHERE action_id <= ? "
            "ORDER BY action_id, id", [as_of]
        ):
            self.system_prompt_history.setdefault(conversation_id, []).append((action_id, text))
        self.children: dict[int, list[_Node]] = {}
        for node in self.nodes.values():
            if node.parent_id is not None:
                self.children.setdefault(node.parent_id, []).append(node)
        self.rating_records = {mid: r for mid, r in current_ratings(conn, as_of=as_of).items() if mid in self.nodes}
        self.ratings = {mid: r.value for mid, r in self.rating_records.items()}
        self.rankings = {pid: r for pid, r in current_rankings(conn, as_of=as_of).items() if pid in self.nodes}
        # Rankings written by an arena choice share its action.
        self.arena_actions = {c.action_id for c in current_arena_choices(conn, as_of)}
        self._contexts: dict[tuple[int, str | None], list[ChatMessage]] = {}

    def system_prompt_at(self, conversation_id: int, action_id: int) -> str | None:
        """The conversation's system prompt as it was at action `action_id`."""
        history = self.system_prompt_history.get(conversation_id, [])
        index = bisect.bisect_right(history, action_id, key=lambda change: change[0])
        return history[index - 1][1] if index else None

    def system_prompt_of(self, node: _Node) -> str | None:
        """The system prompt `node` was written under."""
        return self.system_prompt_at(node.conversation_id, node.action_id)

    def context(self, message_id: int, system_prompt: str | None = None) -> list[ChatMessage]:
        """The chat from the start to `message_id` inclusive, `system_prompt` first if any."""
        cached = self._contexts.get((message_id, system_prompt))
        if cached is not None:
            return cached
        chain: list[_Node] = []
        node: _Node | None = self.nodes[message_id]
        while node is not None:
            chain.append(node)
            node = self.nodes.get(node.parent_id) if node.parent_id is not None else None
        chain.reverse()
        messages: list[ChatMessage] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.extend({"role": n.role, "content": n.content} for n in chain)
        self._contexts[(message_id, system_prompt)] = messages
        return messages

    def user_turns(self) -> list[_Node]:
        return [node for node in self.nodes.values() if node.role == "user"]

    def preference_pairs(self) -> list[PreferencePair]:
        pairs: list[PreferencePair] = []
        for prompt in self.user_turns():
            replies = [child for child in self.children.get(prompt.id, []) if child.role == "assistant"]
            if len(replies) < 2:
                continue
            ordered = self._ordered_pairs(prompt.id, replies)
            prompts = {r.id: self.system_prompt_of(r) for r in replies}
            ordered = [pair for pair in ordered if prompts[pair[0]] == prompts[pair[1]]]
            if not ordered:
                continue
            system_prompt = _most_common([(prompts[pair[0]], pair[3]) for pair in ordered])
            context = self.context(prompt.id, system_prompt)
            for chosen_id, rejected_id, source, action_id in ordered:
                if prompts[chosen_id] != system_prompt:
                    continue
                pairs.append(
                    PreferencePair(
                        group_key=prompt.id,
                        conversation_id=prompt.conversation_id,
                        parent_id=prompt.id,
                        context=context,
                        chosen=self.nodes[chosen_id].content,
                        rejected=self.nodes[rejected_id].content,
                        chosen_id=chosen_id,
                        rejected_id=rejected_id,
                        source=source,
                        action_id=action_id,
                    )
                )
        return pairs

    def _rating_action(self, message_id: int) -> int:
        record = self.rating_records.get(message_id)
        return record.action_id if record is not None else 0

    def _ordered_pairs(self, prompt_id: int, replies: list[_Node]) -> list[tuple[int, int, str, int]]:
        """(chosen, rejected, source, newest action behind it) per pair, by the rules above."""
        found: list[tuple[int, int, str, int]] = []
        seen: set[frozenset[int]] = set()

        def add(chosen: int, rejected: int, source: str, action_id: int) -> None:
            key = frozenset((chosen, rejected))
            if chosen != rejected and key not in seen:
                seen.add(key)
                found.append((chosen, rejected, source, action_id))

        ranking = self.rankings.get(prompt_id)
        if ranking is not None and ranking.is_rankable:
            ranked = [mid for mid in ranking.ranked_ids if mid in self.nodes]
            source = "arena" if ranking.action_id in self.arena_actions else "ranking"
            for i, better in enumerate(ranked):
                for worse in ranked[i + 1 :]:
                    add(better, worse, source, ranking.action_id)
        up = [r.id for r in replies if self.ratings.get(r.id) == 1]
        down = [r.id for r in replies if self.ratings.get(r.id) == -1]
        for chosen in up:
            for rejected in down:
                add(chosen, rejected, "thumbs", max(self._rating_action(chosen), self._rating_action(rejected)))
        human = [r for r in replies if r.is_human and self.ratings.get(r.id) != -1]
        model_written = [r for r in replies if not r.is_human and self.ratings.get(r.id) != 1]
        for chosen in human:
            for rejected in model_written:
                add(chosen.id, rejected.id, "demonstration", max(chosen.action_id, self._rating_action(rejected.id)))
        return found

    def judgments(self, pairs: list[PreferencePair] | None = None) -> list[Judgment]:
        """Rated model replies that are in no pair (pass the pairs when already read)."""
        pairs = pairs if pairs is not None else self.preference_pairs()
        paired = {m for p in pairs for m in (p.chosen_id, p.rejected_id)}
        # A prompt's group has one context: that of its pairs, else its thumbs' commonest.
        group_prompt = {p.parent_id: self.system_prompt_of(self.nodes[p.chosen_id]) for p in pairs}
        candidates: dict[int, list[tuple[_Node, Any]]] = {}
        for message_id, record in self.rating_records.items():
            node = self.nodes[message_id]
            if node.role != "assistant" or node.is_human or node.parent_id is None or message_id in paired:
                continue
            candidates.setdefault(node.parent_id, []).append((node, record))
        out: list[Judgment] = []
        for parent_id, rated in candidates.items():
            system_prompt = group_prompt.get(parent_id, _most_common([(self.system_prompt_of(n), n.action_id) for n, _ in rated]))
            for node, record in rated:
                if self.system_prompt_of(node) == system_prompt:
                    out.append(Judgment(node.conversation_id, parent_id, node.id, self.context(parent_id, system_prompt),
                                        node.content, record.value, record.action_id))
        return sorted(out, key=lambda j: j.message_id)

    def demonstrations(self) -> list[Demonstration]:
        demos: list[Demonstration] = []
        for node in self.nodes.values():
            if node.role != "assistant" or node.parent_id is None:
                continue
            if node.is_human and self.ratings.get(node.id) != -1:
                source = "human"
            elif self.ratings.get(node.id) == 1:
                source = "upvoted"
            else:
                continue
            demos.append(
                Demonstration(
                    conversation_id=node.conversation_id,
                    parent_id=node.parent_id,
                    message_id=node.id,
                    context=self.context(node.parent_id, self.system_prompt_of(node)),
                    completion=node.content,
                    source=source,
                )
            )
        return demos

    def prompts(self) -> list[Prompt]:
        return [
            Prompt(node.conversation_id, node.id, self.context(node.id, self.system_prompt_at(node.conversation_id, self.as_of)))
            for node in self.user_turns()
        ]


def _most_common(values: list[tuple[Any, int]]) -> Any:
    """Of (value, action id) items, the value that occurs most often; on a tie, the one
    with the newest action."""
    counts: dict[Any, tuple[int, int]] = {}
    for value, action_id in values:
        count, newest = counts.get(value, (0, 0))
        counts[value] = (count + 1, max(newest, action_id))
    return max(counts, key=lambda value: counts[value])
