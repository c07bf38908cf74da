"""Taught replies against the policy's own samples, made on the fly (DITTO, Shaikh et al. 2024).

A reply the user wrote is preferred over what the model says for that prompt. The store
already pairs it with the model replies shown beside it (feedback/views.py); here the
policy, as it stands when the policy phase starts, samples a few more replies to each
taught prompt, and each becomes the rejected side of a pair with the taught reply. A
user who wrote one reply in a plain chat (one model reply beside it) thus gives several
pairs, and the pairs are against what this policy says now, not what an older version
said. Samples identical to the taught reply are dropped.
"""

from __future__ import annotations

from engine.engine import LLMEngine
from trainer.datasets import ComparisonGroup, SFTExample
from trainer.rollouts import sample_rollouts


def add_policy_samples(
    groups: list[ComparisonGroup], taught: list[SFTExample], engine: LLMEngine, samples_per_prompt: int,
    max_new_tokens: int, temperature: float, seed: int,
) -> list[ComparisonGroup]:
    """`groups` with, for every taught reply, pairs (taught > sample) over new samples; a
    taught prompt without a group gets one. The input groups are not modified."""
    if not taught or samples_per_prompt < 1:
        return list(groups)
    rollouts = sample_rollouts(engine, [t.prompt_ids for t in taught], samples_per_prompt, max_new_tokens, temperature,
                               seed)
    by_key = {g.group_key: g for g in groups}
    out = {g.group_key: g for g in groups}
    for index, example in enumerate(taught):
        samples = [r for r, p in zip(rollouts.replies, rollouts.prompt_index) if p == index and r != example.reply_ids]
        if not samples:
            continue
        existing = out.get(example.group_key) or by_key.get(example.group_key)
        if existing is None:
            existing = ComparisonGroup(example.group_key, example.conversation_id, example.prompt_ids, [], [])
        replies = list(existing.replies)
        pairs = list(existing.pairs)
        if example.reply_ids in replies:
            chosen = replies.index(example.reply_ids)
        else:
            replies.append(example.reply_ids)
            chosen = len(replies) - 1
        for sample in samples:
            replies.append(sample)
            pairs.append((chosen, len(replies) - 1))
        out[example.group_key] = ComparisonGroup(existing.group_key, existing.conversation_id, existing.prompt_ids,
                                                 replies, pairs, dict(existing.labels), existing.newest_action)
    order = [g.group_key for g in groups] + [k for k in out if k not in by_key]
    return [out[k] for k in order]
