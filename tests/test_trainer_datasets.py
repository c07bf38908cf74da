"""Training sets from a snapshot: reply tokens as the engine sees them, rankings kept
together, held-out splits by conversation, and equal shards for data-parallel runs."""

from __future__ import annotations

from feedback.records import Demonstration, PreferencePair, Prompt, Snapshot, TrainingData, group_pairs
from test_trainer_scripted import tiny_chat_model
from trainer.datasets import (
    DatasetLimits, build_training_sets, comparison_group, encode_exchange, held_out_rank, shard, split_by_key,
)

LOADED = tiny_chat_model()
END = LOADED.tokenizer.token_to_id("<|im_end|>")


def pair(conversation: int, turn: int, chosen: tuple[int, str], rejected: tuple[int, str]) -> PreferencePair:
    context = [{"role": "user", "content": f"w{turn} w1"}]
    return PreferencePair(turn, conversation, turn, context, chosen[1], rejected[1], chosen[0], rejected[0], "ranking")


def test_reply_tokens_end_at_the_end_of_turn_token():
    context = [{"role": "user", "content": "w1 w2"}]
    prompt, reply = encode_exchange(LOADED, context, "kind w3")
    assert prompt == LOADED.encode_chat(context)  # ends with "<|im_start|> assistant"
    words = LOADED.tokenizer
    assert reply == [words.token_to_id("kind"), words.token_to_id("w3"), END]  # not the "\n" after it
    full = LOADED.encode_chat(context + [{"role": "assistant", "content": "kind w3"}], add_generation_prompt=False)
    assert full[: len(prompt) + len(reply)] == prompt + reply


def test_a_three_way_ranking_is_one_group_with_three_replies_and_three_pairs():
    a, b, c = (11, "kind warm"), (12, "w3 kind"), (13, "w4 w5")
    pairs = [pair(1, 7, a, b), pair(1, 7, a, c), pair(1, 7, b, c)]
    [group] = [comparison_group(LOADED, g, DatasetLimits()) for g in group_pairs(pairs)]
    assert len(group.replies) == 3 and group.pairs == [(0, 1), (0, 2), (1, 2)]
    assert all(r[-1] == END for r in group.replies)


def test_limits_keep_the_end_of_prompts_and_the_start_of_replies():
    long_context = [{"role": "user", "content": " ".join(f"w{i % 40}" for i in range(50))}]
    group = comparison_group(LOADED, group_pairs([PreferencePair(1, 1, 1, long_context, "kind " * 20, "w1", 2, 3, "ranking")])[0],
                             DatasetLimits(max_prompt_tokens=10, max_reply_tokens=5))
    full_prompt = LOADED.encode_chat(long_context)
    assert group.prompt_ids == full_prompt[-10:]
    assert [len(r) for r in group.replies] == [5, 2]


def test_split_holds_out_whole_conversations_for_every_kind_of_data():
    pairs = [pair(c, 100 + c, (1000 + c, "kind"), (2000 + c, "w1")) for c in range(20)]
    demos = [Demonstration(c, 100 + c, 3000 + c, [{"role": "user", "content": "w1"}], "kind warm", "human") for c in range(20)]
    prompts = [Prompt(c, 100 + c, [{"role": "user", "content": "w1"}]) for c in range(20)]
    data = TrainingData(Snapshot(42, "now"), pairs, demos, prompts)
    sets = build_training_sets(LOADED, data, eval_fraction=0.2, seed=3)
    assert sets.split == "conversation" and sets.snapshot_action_id == 42
    held = {g.conversation_id for g in sets.eval_groups}
    assert held == {c for c in range(20) if held_out_rank(c, 3) < 0.2} and 1 <= len(held) <= 8
    assert held == {d.conversation_id for d in sets.eval_demos} == {p.conversation_id for p in sets.eval_prompts}
    assert not held & {g.conversation_id for g in sets.train_groups}
    assert not held & {d.conversation_id for d in sets.train_demos}
    assert sets.num_train_pairs == 20 - len(held) and sets.num_eval_pairs == len(held)
    again = build_training_sets(LOADED, data, eval_fraction=0.2, seed=3)
    assert {g.conversation_id for g in again.eval_groups} == held  # deterministic
    # More feedback later keeps every conversation on its side of the split, so a model
    # updated run after run is never scored on conversations it trained on.
    more = [pair(c, 100 + c, (1000 + c, "kind"), (2000 + c, "w1")) for c in range(20, 60)]
    grown = build_training_sets(LOADED, TrainingData(Snapshot(43, "now"), pairs + more, demos, prompts),
                                eval_fraction=0.2, seed=3)
    assert {g.conversation_id for g in grown.eval_groups} & set(range(20)) == held


def test_one_conversation_is_split_by_prompt():
    pairs = [pair(1, 100 + t, (1000 + t, "kind"), (2000 + t, "w1")) for t in range(10)]
    sets = build_training_sets(LOADED, TrainingData(Snapshot(1, "now"), pairs, [], []), eval_fraction=0.2)
    assert sets.split == "prompt"
    held = {g.group_key for g in sets.eval_groups}
    assert held == {100 + t for t in range(10) if held_out_rank(100 + t, 0) < 0.2} or len(held) == 1
    assert len(sets.eval_groups) + len(sets.train_groups) == 10
    assert not held & {g.group_key for g in sets.train_groups}


def test_split_and_shard_helpers():
    train, held = split_by_key(list(range(1000)), lambda x: x, 0.3, seed=0)
    assert 250 < len(held) < 350 and sorted(train + held) == list(range(1000))
    assert split_by_key([5], lambda x: x, 0.5, seed=0) == ([5], [])
    # Two keys: one on each side, whatever their ranks say.
    for fraction in (0.01, 0.99):
        train, held = split_by_key([1, 2], lambda x: x, fraction, seed=0)
        assert len(train) == len(held) == 1
    items = list(range(7))
    shards = [shard(items, rank, 2) for rank in range(2)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5, 0]]  # equal counts, padded by wrapping around
    assert shard([1], 1, 3) == [1]


def test_step_items_give_processes_different_items_from_anywhere_and_repeat_on_resume():
    from trainer.datasets import step_items

    items = list(range(40))  # e.g. prompts in conversation order: neighbours share a conversation
    first = [step_items(items, 0, 4, rank, 2, seed=3) for rank in (0, 1)]
    assert not set(first[0]) & set(first[1])
    assert any(abs(a - b) > 1 for a, b in zip(first[0], first[1]))  # not neighbours in the same order
    assert first[0] == step_items(items, 0, 4, 0, 2, seed=3)  # a resumed run picks the same
    # One pass over the data covers every item once before any repeats.
    seen = [x for step in range(5) for rank in (0, 1) for x in step_items(items, step, 4, rank, 2, seed=3)]
    assert sorted(seen) == items
    # Past the end it continues with a new shuffle.
    assert len(step_items(items, 7, 4, 1, 2, seed=3)) == 4
    assert step_items([], 0, 4, 0, 1, seed=0) == []


def test_reward_scale_standardises_on_the_first_batch_and_floors_the_spread():
    import torch

    from trainer.on_policy import RewardScale

    scale = RewardScale()
    first = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(scale(first), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(scale(torch.tensor([4.0])), torch.tensor([2.0]))  # fitted once
    flat = RewardScale()
    flat(torch.tensor([0.5, 0.5]))
    assert flat.std == RewardScale.MIN_SPREAD
    restored = RewardScale()
    restored.load_state_dict(scale.state_dict())
    assert torch.allclose(restored(torch.tensor([4.0])), torch.tensor([2.0]))
