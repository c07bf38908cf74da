"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024), no value model.

The step itself (rollouts, scoring, clipped updates) is on_policy.py's; RLOO adds:
* each reply's sequence reward: its standardised score minus beta times its summed
  per-token KL to the reference (log pi - log pi_ref);
* its advantage: that reward minus the mean reward of the other k - 1 replies to the same
  prompt (`ops.leave_one_out_advantages`), the same for every token of the reply; with
  `normalize_advantages` it is divided by the prompt group's spread instead (GRPO's).
With one epoch per batch each reply is used once and the ratio only departs from 1 by
what earlier minibatches of the same batch moved the policy (REINFORCE, clipped); more
epochs reuse the batch PPO-style. Needs k >= 2 samples per prompt; rows of a
prompt left with fewer (empty replies are dropped) get no advantage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer import ops
from trainer.algorithms import get_algorithm
from trainer.on_policy import Experience, OnPolicyTrainer
from trainer.ppo import PPOConfig
from trainer.settings import TrainSettings


@dataclass
class RLOOConfig(PPOConfig):
    """PPOConfig's fields (value_lr, gamma and lam unused), RLOO's defaults."""

    steps: int = get_algorithm("rloo").steps_cpu
    samples_per_prompt: int = get_algorithm("rloo").samples_per_prompt
    ppo_epochs: int = 1
    normalize_advantages: bool = False  # GRPO-style: divide by the group's spread

    @classmethod
    def from_settings(cls, settings: TrainSettings, trunk_layers: int = 0) -> "RLOOConfig":
        base = PPOConfig.from_settings(settings, trunk_layers)
        return cls(**{**base.__dict__, "ppo_epochs": settings.rloo_epochs})


class RLOOTrainer(OnPolicyTrainer):
    name = "RLOO"

    def compute_advantages(self, exp: Experience) -> None:
        old, mask = exp.padded(exp.old_logprobs)
        ref, _ = exp.padded(exp.ref_logprobs)
        kl = ops.kl_k1(old, ref) * mask
        rewards = exp.scores - self.kl_controller.beta * kl.sum(-1)  # (N,)
        advantages = torch.zeros_like(rewards)
        for prompt in sorted(set(exp.prompt_index)):
            rows = torch.tensor([i for i, p in enumerate(exp.prompt_index) if p == prompt])
            if len(rows) < 2:
                continue
            group = rewards[rows][None, :]
            if self.config.normalize_advantages:
                advantages[rows] = ops.group_normalized_advantages(group)[0]
            else:
                advantages[rows] = ops.leave_one_out_advantages(group)[0]
        exp.advantages = [advantages[i].expand(len(r)).clone() for i, r in enumerate(exp.replies)]
        exp.kl = exp.unpad(kl)
