"""DITTO pairs: a taught reply preferred over fresh samples of the policy for its prompt."""

from __future__ import annotations

from engine.engine import LLMEngine
from engine.loading import load_model
from tiny_models import make_tiny_model_dir
from trainer.datasets import ComparisonGroup, SFTExample
from trainer.ditto import add_policy_samples


def test_taught_replies_are_preferred_over_new_policy_samples(tmp_path):
    loaded = load_model(make_tiny_model_dir(tmp_path / "tiny"))
    engine = LLMEngine(loaded, max_batch_size=8)
    prompt = loaded.encode_chat([{"role": "user", "content": "Hello"}])
    other_prompt = loaded.encode_chat([{"role": "user", "content": "Paris?"}])
    taught_reply = loaded.tokenizer.encode("The capital of France is Paris.") + loaded.stop_token_ids[:1]
    existing = ComparisonGroup(7, 1, prompt, [[5, 6], taught_reply], [(1, 0)], labels={0: -1}, newest_action=9)
    taught = [SFTExample(1, prompt, taught_reply, group_key=7, is_taught=True),
              SFTExample(2, other_prompt, [8, 9], group_key=8, is_taught=True)]
    groups = add_policy_samples([existing], taught, engine, samples_per_prompt=3, max_new_tokens=6, temperature=1.0,
                                seed=0)
    assert [g.group_key for g in groups] == [7, 8]
    first, new = groups
    # The existing group keeps its replies, pair, labels and action, and gains 3 pairs
    # with the taught reply (already there, index 1) as the preferred side.
    assert first.replies[:2] == existing.replies and first.labels == {0: -1} and first.newest_action == 9
    assert first.pairs == [(1, 0), (1, 2), (1, 3), (1, 4)]
    assert existing.pairs == [(1, 0)]  # not modified
    # A taught prompt with no group gets one of its own.
    assert new.prompt_ids == other_prompt and new.replies[0] == [8, 9] and new.pairs == [(0, 1), (0, 2), (0, 3)]
    # Seeded: the same samples again.
    again = add_policy_samples([existing], taught, engine, 3, 6, 1.0, seed=0)
    assert [g.replies for g in again] == [g.replies for g in groups]
    assert add_policy_samples([existing], [], engine, 3, 6, 1.0, seed=0) == [existing]
