"""Token-level training sets from a feedback-store snapshot, split by conversation.

The store hands over chat-message lists (`feedback.records.TrainingData`); this module
renders them with the model's own chat template and cuts them into what the trainers eat:

* `ComparisonGroup`: one prompt, its distinct replies, which reply beat which, and the
  lone thumbs on replies that are in no pair (unpaired labels). All pairs of a k-way
  ranking stay together, so every reply is scored once per step and a ranking lands
  wholly on one side of the train / held-out split.
* `SFTExample`: a prompt and a reply worth imitating.
* `PromptExample`: a prompt for PPO rollouts or evaluation.

A reply's tokens are what the engine would have generated: the template's rendering of
the assistant turn up to and including its end-of-turn token (e.g. ChatML's
`<|im_end|>`), without what the template puts after it. Held-out splits are by
conversation (a conversation's turns share context, so splitting inside one leaks).

Nothing here touches torch, the database or the model weights.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from feedback.records import ChatMessage, Judgment, PreferenceGroup, TrainingData
from trainer.errors import TrainerError

T = TypeVar("T")


class ChatEncoder(Protocol):
    """What the datasets need from a loaded model (engine.bundle.LoadedModel has it)."""

    def encode_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> list[int]: ...

    @property
    def stop_token_ids(self) -> list[int]: ...


@dataclass
class ComparisonGroup:
    group_key: int
    conversation_id: int
    prompt_ids: list[int]
    replies: list[list[int]]  # token ids of each distinct reply, ending at end-of-turn
    pairs: list[tuple[int, int]]  # (preferred, other) indices into `replies`
    labels: dict[int, int] = field(default_factory=dict)  # reply index -> +1 / -1: lone thumbs
    newest_action: int = 0  # the newest feedback action behind the group's pairs and labels

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    @property
    def num_labels(self) -> int:
        return len(self.labels)


@dataclass
class SFTExample:
    conversation_id: int
    prompt_ids: list[int]
    reply_ids: list[int]
    group_key: int = 0  # the user turn it answers
    is_taught: bool = False  # written by the user (not a model reply voted up)


@dataclass
class PromptExample:
    conversation_id: int
    prompt_ids: list[int]
    context: list[ChatMessage] = field(default_factory=list)


@dataclass
class DatasetLimits:
    """Token budgets: prompts keep their end (the latest turns), replies their start."""

    max_prompt_tokens: int = 384
    max_reply_tokens: int = 128


@dataclass
class TrainingSets:
    """Everything one run trains and evaluates on, already tokenized and split."""

    train_groups: list[ComparisonGroup]
    eval_groups: list[ComparisonGroup]
    train_demos: list[SFTExample]
    eval_demos: list[SFTExample]
    train_prompts: list[PromptExample]
    eval_prompts: list[PromptExample]
    split: str  # "conversation" or "prompt" (fallback when there is one conversation)
    snapshot_action_id: int = 0

    @property
    def num_train_pairs(self) -> int:
        return sum(g.num_pairs for g in self.train_groups)

    @property
    def num_eval_pairs(self) -> int:
        return sum(g.num_pairs for g in self.eval_groups)

    @property
    def num_labels(self) -> int:
        return sum(g.num_labels for g in self.train_groups + self.eval_groups)

    def summary(self) -> dict[str, int | str]:
        return {
            "snapshot_action_id": self.snapshot_action_id,
            "split": self.split,
            "train_pairs": self.num_train_pairs,
            "eval_pairs": self.num_eval_pairs,
            "lone_thumbs": self.num_labels,
            "train_prompt_groups": len(self.train_groups),
            "eval_prompt_groups": len(self.eval_groups),
            "train_demonstrations": len(self.train_demos),
            "eval_demonstrations": len(self.eval_demos),
            "train_prompts": len(self.train_prompts),
            "eval_prompts": len(self.eval_prompts),
        }


# ---------------------------------------------------------------------------------------
# Tokenizing one exchange


def encode_exchange(encoder: ChatEncoder, context: list[ChatMessage], reply: str) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids) of `context` answered by `reply`, as the engine sees them.

    The prompt is the template's rendering with the generation prompt; the reply is the
    rest of the full rendering, cut after its first end-of-turn token. A template that
    renders the prompt differently once the reply is there (so the prompt is not a prefix)
    falls back to the reply rendered alone.
    """
    prompt = encoder.encode_chat(context, add_generation_prompt=True)
    full = encoder.encode_chat(list(context) + [{"role": "assistant", "content": reply}], add_generation_prompt=False)
    stops = set(encoder.stop_token_ids)
    if full[: len(prompt)] == prompt:
        tail = full[len(prompt) :]
    else:
        tail = full[len(encoder.encode_chat(list(context), add_generation_prompt=False)) :]
    for i, token in enumerate(tail):
        if token in stops:
            return prompt, tail[: i + 1]
    # No end-of-turn marker in the template: end the reply the way generation would.
    stop = next(iter(encoder.stop_token_ids), None)
    return prompt, tail + ([stop] if stop is not None else [])


def clip_tokens(prompt: list[int], reply: list[int], limits: DatasetLimits) -> tuple[list[int], list[int]]:
    return prompt[-limits.max_prompt_tokens :], reply[: limits.max_reply_tokens]


# ---------------------------------------------------------------------------------------
# Building the sets


def comparison_group(
    encoder: ChatEncoder, group: PreferenceGroup | None, limits: DatasetLimits, judgments: Sequence[Judgment] = ()
) -> ComparisonGroup | None:
    """Tokenize one prompt's pairs and lone thumbs; replies shared by several pairs are
    kept once. `group` may be None when the prompt has only lone thumbs."""
    index_of: dict[int, int] = {}
    texts: list[str] = []
    pairs: list[tuple[int, int]] = []

    def index(message_id: int, text: str) -> int:
        if message_id not in index_of:
            index_of[message_id] = len(texts)
            texts.append(text)
        return index_of[message_id]

    newest = 0
    for pair in group.pairs if group is not None else []:
        chosen, rejected = index(pair.chosen_id, pair.chosen), index(pair.rejected_id, pair.rejected)
        if chosen != rejected and (chosen, rejected) not in pairs:
            pairs.append((chosen, rejected))
            newest = max(newest, pair.action_id)
    labels = {}
    for judgment in judgments:
        labels[index(judgment.message_id, judgment.completion)] = 1 if judgment.label > 0 else -1
        newest = max(newest, judgment.action_id)
    if not pairs and not labels:
        return None
    context = group.context if group is not None else judgments[0].context
    key = group.group_key if group is not None else judgments[0].parent_id
    conversation = group.conversation_id if group is not None else judgments[0].conversation_id
    replies = []
    prompt_ids: list[int] = []
    for text in texts:
        prompt_ids, reply = clip_tokens(*encode_exchange(encoder, context, text), limits)
        replies.append(reply)
    return ComparisonGroup(key, conversation, prompt_ids, replies, pairs, labels, newest)


def comparison_groups(encoder: ChatEncoder, data: TrainingData, limits: DatasetLimits) -> list[ComparisonGroup]:
    """One group per prompt with pairs or lone thumbs, in the order the store gave them."""
    judged: dict[int, list[Judgment]] = {}
    for judgment in data.judgments:
        judged.setdefault(judgment.parent_id, []).append(judgment)
    groups = []
    for pair_group in data.pair_groups():
        groups.append(comparison_group(encoder, pair_group, limits, judged.pop(pair_group.group_key, [])))
    for judgments in judged.values():
        groups.append(comparison_group(encoder, None, limits, judgments))
    return [g for g in groups if g is not None]


def held_out_rank(key: int, seed: int) -> float:
    """A key's place in [0, 1) for the held-out split: a hash of the key and the seed alone,
    so a key stays on its side of the split however much data arrives later (a model
    updated from run to run is never scored on what an earlier run trained it on)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_by_key(items: Sequence[T], key: Callable[[T], int], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Items whose key ranks below `eval_fraction` (held_out_rank) go to eval; with two or
    more keys at least one is held out and at least one is kept for training."""
    keys = sorted({key(item) for item in items})
    if len(keys) < 2 or eval_fraction <= 0:
        return list(items), []
    ranked = sorted(keys, key=lambda k: held_out_rank(k, seed))
    held_out = {k for k in ranked if held_out_rank(k, seed) < eval_fraction}
    if not held_out:
        held_out = {ranked[0]}
    if len(held_out) == len(keys):
        held_out.discard(ranked[-1])
    return [i for i in items if key(i) not in held_out], [i for i in items if key(i) in held_out]


def build_training_sets(
    encoder: ChatEncoder,
    data: TrainingData,
    limits: DatasetLimits | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> TrainingSets:
    """Tokenize a snapshot's pairs, demonstrations and prompts and split them.

    Held-out conversations are chosen once and apply to all three kinds. When the whole
    snapshot is one conversation, prompts (user turns) are held out instead.
    """
    limits = limits or DatasetLimits()
    if not 0 <= eval_fraction < 1:
        raise TrainerError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    groups = comparison_groups(encoder, data, limits)
    demos = []
    for demo in data.demonstrations:
        prompt, reply = clip_tokens(*encode_exchange(encoder, demo.context, demo.completion), limits)
        demos.append((demo.parent_id, SFTExample(demo.conversation_id, prompt, reply, demo.parent_id, demo.source == "human")))
    prompts = []
    for p in data.prompts:
        ids = encoder.encode_chat(p.context, add_generation_prompt=True)[-limits.max_prompt_tokens :]
        prompts.append((p.message_id, PromptExample(p.conversation_id, ids, list(p.context))))

    conversations = {g.conversation_id for g in groups} | {d.conversation_id for _, d in demos}
    conversations |= {p.conversation_id for _, p in prompts}
    if len(conversations) >= 2:
        split = "conversation"
        _, held = split_by_key(sorted(conversations), lambda c: c, eval_fraction, seed)
        is_held = lambda conversation_id, turn_id: conversation_id in held  # noqa: E731
    else:
        # One conversation: hold out user turns (the group key of a pair is its user turn).
        split = "prompt"
        turns = sorted({g.group_key for g in groups} | {t for t, _ in demos} | {t for t, _ in prompts})
        _, held_turns = split_by_key(turns, lambda t: t, eval_fraction, seed)
        is_held = lambda conversation_id, turn_id: turn_id in held_turns  # noqa: E731

    def divide(items: list[tuple[int, T]], conversation: Callable[[T], int]) -> tuple[list[T], list[T]]:
        train = [x for turn, x in items if not is_held(conversation(x), turn)]
        held_out = [x for turn, x in items if is_held(conversation(x), turn)]
        return train, held_out

    train_groups, eval_groups = divide([(g.group_key, g) for g in groups], lambda g: g.conversation_id)
    train_demos, eval_demos = divide(demos, lambda d: d.conversation_id)
    train_prompts, eval_prompts = divide(prompts, lambda p: p.conversation_id)
    return TrainingSets(
        train_groups, eval_groups, train_demos, eval_demos, train_prompts, eval_prompts, split,
        snapshot_action_id=data.snapshot.action_id,
    )


# ---------------------------------------------------------------------------------------
# Sharding for data-parallel runs


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This process's share: every world_size-th item, padded by wrapping around so that
    every process gets the same count (unequal counts would hang gradient averaging)."""
    if world_size <= 1 or not items:
        return list(items)
    per_process = math.ceil(len(items) / world_size)
    padded = list(items) + list(items)[: per_process * world_size - len(items)]
    while len(padded) < per_process * world_size:  # fewer items than processes
        padded += list(items)
    return padded[rank : per_process * world_size : world_size]


def epoch_batches(items: Sequence[T], epochs: int, batch_size: int, rng: random.Random, rank: int = 0, world_size: int = 1):
    """Every epoch's batches of this process's share, in order: each epoch shuffles all
    items with `rng` (the same seed on every process, so the same order), then takes this
    process's shard and cuts it into batches."""
    for _ in range(epochs):
        order = list(items)
        rng.shuffle(order)
        yield from batches(shard(order, rank, world_size), batch_size)


def batches_per_epoch(num_items: int, batch_size: int, world_size: int = 1) -> int:
    """How many batches `epoch_batches` yields per epoch on each process."""
    if num_items == 0:
        return 0
    per_process = num_items if world_size <= 1 else math.ceil(num_items / world_size)
    return math.ceil(per_process / batch_size)


def step_items(items: Sequence[T], step: int, per_process: int, rank: int, world_size: int, seed: int) -> list[T]:
    """This process's items for one on-policy step: the items in a seeded random order
    (the same on every process, reshuffled each pass), the step's block of
    per_process * world_size of them, and this process's slice of the block. Processes
    get different items, from anywhere in the data, and a resumed run picks what the
    uninterrupted one would (the choice depends only on the step)."""
    if not items:
        return []
    block = per_process * world_size
    start = step * block
    chosen: list[T] = []
    order: list[T] = []
    current_pass = -1
    for position in range(start + rank * per_process, start + (rank + 1) * per_process):
        pass_number, offset = divmod(position, len(items))
        if pass_number != current_pass:
            order = list(items)
            random.Random(seed * 1_000_003 + pass_number).shuffle(order)
            current_pass = pass_number
        chosen.append(order[offset])
    return chosen


def batches(items: Sequence[T], batch_size: int, rng: random.Random | None = None) -> list[list[T]]:
    """Consecutive batches, after a shuffle when `rng` is given."""
    order = list(items)
    if rng is not None:
        rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
