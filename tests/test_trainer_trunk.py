"""The shared frozen trunk: splitting the forward pass changes no number, and training
with a cached trunk gives the same result as training without one."""

from __future__ import annotations

import copy

import pytest
import torch

from test_trainer_reward import scripted_groups, tiny_policy
from tiny_models import tiny_llama, tiny_palm
from trainer import lora
from trainer.reward_model import ScalarHeadModel
from trainer.reward_training import RewardTrainingConfig, train_reward_model
from trainer.runtime import make_accelerator, seed_everything
from trainer.trunk import TrunkCache, hidden_states, pad_rows, run_trunk, same_trunk

IDS = torch.tensor([[3, 9, 4, 7, 1, 0, 0], [5, 6, 2, 8, 10, 11, 1]])


def models():
    return [tiny_llama(40, num_hidden_layers=4), tiny_palm(40, num_hidden_layers=4)]


@pytest.mark.parametrize("index", [0, 1], ids=["llama", "palm"])
@pytest.mark.parametrize("num_layers", [1, 3, 4])
def test_trunk_then_top_equals_the_full_forward(index, num_layers):
    model = models()[index]
    full = model.hidden_states(IDS)
    split = hidden_states(model, IDS, run_trunk(model, IDS, num_layers))
    assert torch.allclose(split, full, atol=1e-5)


def test_cached_rows_repadded_give_the_same_real_positions():
    model = models()[0]
    lengths = [5, 7]
    trunk = run_trunk(model, IDS, 2)
    rows = [trunk.hidden[i, :n] for i, n in enumerate(lengths)]
    wider = pad_rows(rows, 2, 9)  # padded further than the original batch
    out = hidden_states(model, torch.cat([IDS, torch.zeros(2, 2, dtype=torch.long)], 1), wider)
    full = model.hidden_states(IDS)
    for i, n in enumerate(lengths):
        assert torch.allclose(out[i, :n], full[i, :n], atol=1e-5)


def test_trunk_cache_refuses_trainable_bottom_layers_and_checks_sameness():
    model = models()[0]
    with pytest.raises(ValueError, match="frozen"):
        TrunkCache(model, 2)
    lora.freeze_except_top_layers(model, 2)
    TrunkCache(model, 2)
    other = copy.deepcopy(model)
    assert same_trunk([model, other], 2)
    with torch.no_grad():
        other.model.layers[1].mlp.up_proj.weight.add_(1e-3)
    assert not same_trunk([model, other], 2) and same_trunk([model, other], 1)


def test_reward_training_with_a_cached_trunk_matches_training_without():
    groups = scripted_groups(60, seed=4)
    results = []
    for trunk_layers in (0, 1):
        seed_everything(0)
        rm = ScalarHeadModel.from_policy(tiny_policy())
        lora.freeze_except_top_layers(rm, 1)
        rm.head.requires_grad_(True)
        config = RewardTrainingConfig(epochs=2, lr=3e-3, trunk_layers=trunk_layers)
        result = train_reward_model(rm, groups[:50], groups[50:], config, make_accelerator("cpu"), 0)
        results.append(([h["loss"] for h in result.history], rm.head.weight.detach().clone()))
    (losses_a, head_a), (losses_b, head_b) = results
    assert losses_a == pytest.approx(losses_b, abs=1e-4)
    assert torch.allclose(head_a, head_b, atol=1e-4)


def test_dpo_computes_each_rows_trunk_once_for_the_reference_and_every_epoch(monkeypatch):
    """The reference pass and the training steps share one cache: the bottom layers run
    once per reply, not once for the reference and again in training."""
    from trainer import trunk as trunk_module
    from trainer.dpo import DPOConfig, reference_logprobs, train_dpo

    groups = scripted_groups(8, seed=3)
    policy = tiny_policy()
    lora.freeze_except_top_layers(policy, 1)
    for param in policy.parameters():
        param.requires_grad_(False)
    rows_computed = []
    real_run_trunk = trunk_module.run_trunk

    def counting(model, input_ids, num_layers):
        rows_computed.append(input_ids.shape[0])
        return real_run_trunk(model, input_ids, num_layers)

    monkeypatch.setattr(trunk_module, "run_trunk", counting)
    trunks = TrunkCache(policy, 1)
    reference = reference_logprobs(policy, groups, 0, "cpu", trunks)
    lora.apply_lora(policy, rank=2, alpha=4, top_layers=1)
    config = DPOConfig(lr=1e-3, epochs=2, groups_per_batch=4, trunk_layers=1, nll_weight=0.0)
    train_dpo(policy, groups, [], config, make_accelerator("cpu"), 0, reference=reference, trunks=trunks)
    assert sum(rows_computed) == sum(len(g.replies) for g in groups)
