"""Reward model: last-token readout, Bradley-Terry training on a scripted preference,
held-out accuracy, and the saved artifact."""

from __future__ import annotations

import random

import pytest
import torch

from engine.models.llama import LlamaForCausalLM
from tiny_models import tiny_llama
from trainer import lora
from trainer.datasets import ComparisonGroup
from trainer.errors import TrainerError, TrainingDivergedError
from trainer.reward_model import ScalarHeadModel, load_reward_model, reward_model_metadata, save_reward_model
from trainer.reward_training import RewardTrainingConfig, pair_accuracy, train_reward_model
from trainer.runtime import make_accelerator, seed_everything

GOOD = range(2, 10)  # the scripted rater prefers replies with more of these tokens
EOS = 1


def tiny_policy(seed: int = 0) -> LlamaForCausalLM:
    return tiny_llama(64, seed, tie_word_embeddings=True, max_position_embeddings=128, eos_token_id=EOS)


def good_share(reply: list[int]) -> float:
    return sum(t in GOOD for t in reply) / len(reply)


def scripted_groups(num: int, seed: int) -> list[ComparisonGroup]:
    """Prompts with 3 replies each, ranked by their share of GOOD tokens (clear gaps only)."""
    rng = random.Random(seed)

    def reply() -> list[int]:
        p = rng.random()
        return [rng.randrange(2, 10) if rng.random() < p else rng.randrange(10, 64) for _ in range(rng.randint(4, 8))] + [EOS]

    groups = []
    for i in range(num):
        prompt = [rng.randrange(10, 64) for _ in range(4)]
        replies = [reply() for _ in range(3)]
        order = sorted(range(3), key=lambda j: -good_share(replies[j]))
        pairs = [(a, b) for k, a in enumerate(order) for b in order[k + 1 :] if good_share(replies[a]) - good_share(replies[b]) > 0.15]
        if pairs:
            groups.append(ComparisonGroup(i, i, prompt, replies, pairs))
    return groups


def test_score_is_read_at_the_last_real_token_whatever_the_padding():
    rm = ScalarHeadModel.from_policy(tiny_policy())
    row = torch.tensor([[5, 6, 7, 8]])
    alone = rm(row, torch.tensor([4]))
    padded = rm(torch.tensor([[5, 6, 7, 8, 0, 0, 0]]), torch.tensor([4]))
    assert torch.allclose(alone, padded, atol=1e-6)
    # Equal to the head applied to the hidden state at position 3, by hand.
    by_hand = rm.head(rm.body.hidden_states(row)[0, 3]).squeeze()
    assert torch.allclose(alone[0], by_hand, atol=1e-6)
    # Different from reading the padding position.
    assert not torch.allclose(rm(torch.tensor([[5, 6, 7, 8, 0, 0, 0]]), torch.tensor([7])), alone)
    # Per-position scores (the value model's view) agree at that position.
    assert torch.allclose(rm(row)[0, 3], alone[0], atol=1e-6)
    with pytest.raises(TrainerError, match="lengths"):
        rm(row, torch.tensor([0]))


def test_from_policy_copies_and_leaves_the_policy_alone():
    policy = tiny_policy()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    rm = ScalarHeadModel.from_policy(policy)
    with torch.no_grad():
        for p in rm.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert policy.lm_head is not None and not isinstance(policy.lm_head, torch.nn.Identity)
    lora.apply_lora(policy)
    with pytest.raises(TrainerError, match="LoRA"):
        ScalarHeadModel.from_policy(policy)


def test_reward_model_learns_a_scripted_preference_above_90_percent_held_out():
    seed_everything(0)
    groups = scripted_groups(400, seed=1)
    train, held_out = groups[:300], groups[300:]
    rm = ScalarHeadModel.from_policy(tiny_policy())
    accelerator = make_accelerator("cpu")
    before = pair_accuracy(rm, held_out, 0, accelerator.device)
    result = train_reward_model(rm, train, held_out, RewardTrainingConfig(epochs=3, lr=3e-3), accelerator, pad_id=0)
    assert 0.3 < before["accuracy"] < 0.7  # untrained: chance
    assert result.metrics["eval_accuracy"] > 0.9
    assert result.metrics["eval_pairs"] > 100
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_top_layer_training_with_frozen_backbone_still_learns():
    seed_everything(0)
    groups = scripted_groups(300, seed=2)
    rm = ScalarHeadModel.from_policy(tiny_policy())
    lora.freeze_except_top_layers(rm, 1)
    rm.head.requires_grad_(True)
    embed_before = rm.body.model.embed_tokens.weight.clone()
    result = train_reward_model(rm, groups[:220], groups[220:], RewardTrainingConfig(epochs=3, lr=3e-3), make_accelerator("cpu"), 0)
    assert torch.equal(rm.body.model.embed_tokens.weight, embed_before)
    assert result.metrics["eval_accuracy"] > 0.8


def test_nan_loss_stops_training():
    rm = ScalarHeadModel.from_policy(tiny_policy())
    with torch.no_grad():
        rm.head.weight.fill_(float("nan"))
    groups = scripted_groups(20, seed=3)
    with pytest.raises(TrainingDivergedError, match="nan at step 0"):
        train_reward_model(rm, groups, [], RewardTrainingConfig(epochs=1), make_accelerator("cpu"), 0)


def test_save_and_load_round_trip(tmp_path):
    rm = ScalarHeadModel.from_policy(tiny_policy())
    lora.apply_lora(rm, rank=2)
    with torch.no_grad():
        for m in lora.lora_modules(rm):
            m.lora_b.normal_()
    ids = torch.tensor([[3, 4, 5, 6, 0], [7, 8, 9, 10, 11]])
    lengths = torch.tensor([4, 5])
    expected = rm(ids, lengths)
    target = tmp_path / "reward-models" / "rm-1"
    save_reward_model(rm, target, {"eval_accuracy": 0.93})
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert not any(p.name.startswith(".") for p in target.parent.iterdir())
    loaded = load_reward_model(target)
    assert not lora.has_lora(loaded)
    assert torch.allclose(loaded(ids, lengths), expected, atol=1e-5)
    assert reward_model_metadata(target)["eval_accuracy"] == 0.93
    with pytest.raises(TrainerError, match="already exists"):
        save_reward_model(rm, target)
    with pytest.raises(TrainerError, match="not a reward model"):
        load_reward_model(tmp_path)
