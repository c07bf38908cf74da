"""SFT's loss covers exactly the reply tokens; DPO starts at ln 2 and resumes exactly."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from test_trainer_reward import scripted_groups, tiny_policy
from trainer import lora
from trainer.datasets import SFTExample
from trainer.dpo import DPOConfig, reference_logprobs, train_dpo
from trainer.logprobs import ReplyScorer
from trainer.runtime import make_accelerator
from trainer.sft import sft_loss


def test_sft_loss_is_the_mean_nll_of_reply_tokens_only():
    model = tiny_policy()
    examples = [SFTExample(1, [5, 6, 7], [8, 9, 1]), SFTExample(2, [5, 6, 7, 10, 11], [12, 1])]
    with torch.no_grad():
        loss, count = sft_loss(ReplyScorer(model), examples, pad_id=0, device="cpu")
    assert count == 5
    # By hand: run each row alone, take log p(reply token | everything before it).
    total = 0.0
    for example in examples:
        ids = torch.tensor([example.prompt_ids + example.reply_ids])
        logp = torch.log_softmax(model(ids)[0].float(), -1).detach()
        start = len(example.prompt_ids)
        for offset, token in enumerate(example.reply_ids):
            total -= float(logp[start + offset - 1, token])
    assert math.isclose(float(loss), total / 5, rel_tol=1e-5)


def test_dpo_starts_at_ln2_and_a_resumed_run_matches_an_uninterrupted_one():
    groups = scripted_groups(24, seed=5)
    accelerator = make_accelerator("cpu")
    base = tiny_policy()
    lora.apply_lora(base, rank=2, alpha=4)
    reference = reference_logprobs(base, groups, 0, "cpu")
    config = DPOConfig(epochs=1, lr=5e-3, groups_per_batch=4, max_steps=4, seed=2, nll_weight=0.0)

    straight = copy.deepcopy(base)
    result = train_dpo(straight, groups, [], config, accelerator, 0, reference=reference)
    assert abs(result.history[0]["loss"] - math.log(2)) < 1e-5  # policy == reference at step 0

    saved = {}

    def on_step(step, optimizer):
        if step == 2:
            saved["weights"] = {k: v.clone() for k, v in lora.adapter_state_dict(first).items()}
            saved["optimizer"] = copy.deepcopy(optimizer.state_dict())

    first = copy.deepcopy(base)
    train_dpo(first, groups, [], DPOConfig(**{**config.__dict__, "max_steps": 2}), accelerator, 0,
              reference=reference, on_step=on_step)
    resumed = copy.deepcopy(base)
    resumed.load_state_dict(saved["weights"], strict=False)
    train_dpo(resumed, groups, [], config, accelerator, 0, start_step=2, reference=reference,
              optimizer_state=saved["optimizer"])
    for key, value in lora.adapter_state_dict(straight).items():
        assert torch.allclose(lora.adapter_state_dict(resumed)[key], value, atol=1e-6), key


def test_dpo_nll_term_is_the_per_token_nll_of_each_groups_best_reply():
    from trainer.batch import make_batch
    from trainer.dpo import best_reply_rows, dpo_batch_loss
    from trainer.logprobs import reply_logprobs

    groups = scripted_groups(3, seed=7)
    policy = tiny_policy()
    reference = reference_logprobs(policy, groups, 0, "cpu")
    scorer = ReplyScorer(policy)
    plain, _ = dpo_batch_loss(scorer, groups, reference, DPOConfig(lr=1e-3, nll_weight=0.0), 0, torch.device("cpu"))
    with_nll, stats = dpo_batch_loss(scorer, groups, reference, DPOConfig(lr=1e-3, nll_weight=0.5), 0, torch.device("cpu"))
    # By hand: each group ranks 3 replies (pairs 0>1, 0>2, 1>2); its best reply is row 0.
    assert best_reply_rows(torch.tensor([[0, 1], [0, 2], [1, 2], [3, 5], [4, 5], [3, 4]])).tolist() == [0, 3]
    nlls = []
    for group in groups:  # replies preferred in a pair and never beaten
        for top in sorted({p for p, _ in group.pairs} - {o for _, o in group.pairs}):
            best = group.replies[top]
            batch = make_batch([group.prompt_ids], [best], 0, "cpu")
            nlls.append(-float(reply_logprobs(scorer, batch).sums()[0]) / len(best))
    expected = sum(nlls) / len(nlls)
    assert abs(float(stats["best_nll"]) - expected) < 1e-5
    assert abs(float(with_nll - plain) - 0.5 * expected) < 1e-5


def test_preference_loss_combines_dpo_kto_and_nll_by_hand():
    """One batch of two groups: a ranked pair, and a prompt with two lone thumbs."""
    from trainer.datasets import ComparisonGroup
    from trainer.dpo import preference_loss
    from trainer import ops

    ranked = ComparisonGroup(1, 1, [5], [[6, 1], [7, 1]], pairs=[(0, 1)])
    thumbed = ComparisonGroup(2, 2, [5], [[8, 1], [9, 1]], pairs=[], labels={0: 1, 1: -1})
    sums = torch.tensor([-4.0, -6.0, -3.0, -5.0])  # rows: ranked 0, 1, thumbed 0, 1
    reference = torch.tensor([-5.0, -5.0, -4.0, -4.0])
    tokens = torch.tensor([2, 2, 2, 2])
    config = DPOConfig(lr=1e-3, beta=0.5, nll_weight=0.25, kto_weight=2.0)
    loss, stats = preference_loss(sums, reference, tokens, [ranked, thumbed], config)
    # DPO: z = 0.5 * ((-4 + 5) - (-6 + 5)) = 1 -> ln(1 + e^-1)
    dpo = math.log1p(math.exp(-1))
    # KTO: implicit rewards 1, -1, 1, -1 -> z0 = max(0, 0) = 0; row 2 desirable r = 1,
    # row 3 undesirable r = -1: each 1 - sigmoid(0.5) -> mean 1 - sigmoid(0.5)
    kto = 1 - 1 / (1 + math.exp(-0.5))
    # NLL: best rows are ranked 0 (preferred, never beaten) and thumbed 0 (voted up): 4/2 and 3/2.
    nll = (2.0 + 1.5) / 2
    assert abs(float(loss) - (dpo + 2.0 * kto + 0.25 * nll)) < 1e-5
    assert abs(float(stats["kto_loss"]) - kto) < 1e-6 and abs(float(stats["dpo_loss"]) - dpo) < 1e-6
    assert float(stats["kto_accuracy"]) == 1.0
    # A batch of lone thumbs only still has every statistic (processes average them by key).
    alone, alone_stats = preference_loss(sums[2:], reference[2:], tokens[2:], [thumbed], config)
    assert set(alone_stats) == set(stats)
    assert abs(float(alone) - (2.0 * kto + 0.25 * 1.5)) < 1e-5
    assert ops is not None


@pytest.fixture
def bf16_accelerator():
    """A CPU accelerator with bf16 autocast. Accelerate keeps one process-wide state, so it
    is reset before and after (the other tests run without mixed precision)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        yield make_accelerator("cpu", mixed_precision="bf16")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_dpo_reference_under_bf16_autocast_starts_at_ln2(bf16_accelerator):
    """The reference log-probs are computed the way training computes the policy's (here
    bf16 autocast on the CPU), so the first loss is ln 2."""
    groups = scripted_groups(8, seed=11)
    policy = tiny_policy()
    lora.apply_lora(policy, rank=2, alpha=4)  # policy == reference (adapters off) at step 0
    config = DPOConfig(epochs=1, lr=1e-3, groups_per_batch=4, max_steps=1, seed=0, nll_weight=0.0)
    result = train_dpo(policy, groups, [], config, bf16_accelerator, 0)
    assert abs(result.history[0]["loss"] - math.log(2)) < 1e-6
    # What the shared autocast avoids: an fp32 reference against the bf16 policy is off at step 0.
    fp32_reference = reference_logprobs(policy, groups, 0, "cpu")
    with bf16_accelerator.autocast():
        bf16_reference = reference_logprobs(policy, groups, 0, "cpu")
    gaps = [float((fp32_reference[g.group_key] - bf16_reference[g.group_key]).abs().max()) for g in groups]
    assert max(gaps) > 1e-3
