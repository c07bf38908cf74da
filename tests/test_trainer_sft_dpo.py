"""SFT's loss covers exactly the reply tokens; DPO starts at ln 2 and resumes exactly."""

from __future__ import annotations

import copy
import math

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
    config = DPOConfig(epochs=1, lr=5e-3, groups_per_batch=4, max_steps=4, seed=2)

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
