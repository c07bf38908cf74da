"""PPO for language models, the InstructGPT recipe with the details that matter.

The step itself (rollouts, scoring, clipped updates) is on_policy.py's; PPO adds:
* rewards: -beta * (log pi - log pi_ref) on every reply token, plus the standardised
  score on the reply's last token;
* advantages: GAE (gamma 1, lambda 0.95) with the value after the last token taken as 0,
  whitened over the reply tokens of every process together;
* a value model (a ScalarHeadModel initialised from the reward model) trained with the
  clipped value loss, with its own optimizer, beside the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn

from engine.engine import LLMEngine
from trainer import ops
from trainer.algorithms import get_algorithm
from trainer.batch import SequenceBatch
from trainer.on_policy import Experience, OnPolicyTrainer, to_grid, value_grid
from trainer.runtime import global_masked_whiten
from trainer.settings import TrainSettings
from trainer.trunk import Trunk


@dataclass
class PPOConfig:
    """PPO's knobs. A run builds it with `from_settings`; every default shared with the
    run's settings is TrainSettings' own, the rest are PPO's internals."""

    lr: float
    steps: int = get_algorithm("ppo").steps_cpu
    prompts_per_step: int = TrainSettings.prompts_per_step
    samples_per_prompt: int = get_algorithm("ppo").samples_per_prompt
    max_new_tokens: int = TrainSettings.max_reply_tokens
    temperature: float = TrainSettings.temperature
    ppo_epochs: int = TrainSettings.ppo_epochs
    minibatch_rows: int = TrainSettings.minibatch_rows
    value_lr: float = TrainSettings.value_lr
    kl_beta: float = TrainSettings.kl_beta
    adaptive_kl: bool = TrainSettings.adaptive_kl
    target_kl: float = TrainSettings.target_kl  # per-reply KL (summed over tokens) the adaptive controller aims at
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    no_eos_penalty: float = TrainSettings.no_eos_penalty  # subtracted from the score of a reply that never ended
    max_grad_norm: float = 1.0
    seed: int = TrainSettings.seed
    # Bottom layers frozen and identical in the policy, reference, value and reward models
    # (top-N training): run once per rollout row and reused by all four (trainer/trunk.py).
    trunk_layers: int = 0

    @classmethod
    def from_settings(cls, settings: TrainSettings, trunk_layers: int = 0) -> "PPOConfig":
        """From resolved settings (steps and policy_lr filled in)."""
        s = settings
        return cls(
            lr=s.policy_lr, steps=s.steps, prompts_per_step=s.prompts_per_step, samples_per_prompt=s.samples_per_prompt,
            max_new_tokens=s.max_reply_tokens, temperature=s.temperature, ppo_epochs=s.ppo_epochs,
            minibatch_rows=s.minibatch_rows, value_lr=s.value_lr, kl_beta=s.kl_beta, adaptive_kl=s.adaptive_kl,
            target_kl=s.target_kl, no_eos_penalty=s.no_eos_penalty, seed=s.seed, trunk_layers=trunk_layers,
        )


class PPOTrainer(OnPolicyTrainer):
    """PPO: the shared on-policy step with GAE advantages and a value model."""

    name = "PPO"

    def __init__(
        self,
        policy: nn.Module,
        value_model: nn.Module,
        reward_model: nn.Module,
        engine: LLMEngine,
        config: PPOConfig,
        accelerator: Accelerator,
        pad_id: int,
        reference: nn.Module | None = None,
    ) -> None:
        super().__init__(policy, reward_model, engine, config, accelerator, pad_id, reference, value_model)

    def compute_advantages(self, exp: Experience) -> None:
        """KL-penalised rewards, GAE, and whitened advantages, filled into `exp`."""
        old, mask = exp.padded(exp.old_logprobs)
        ref, _ = exp.padded(exp.ref_logprobs)
        values, _ = exp.padded(exp.values)
        rewards, kl = ops.kl_penalised_rewards(exp.scores, old, ref, mask, self.kl_controller.beta)
        advantages, returns = ops.gae(rewards, values, mask, self.config.gamma, self.config.lam)
        advantages = global_masked_whiten(self.accelerator, advantages, mask)
        exp.advantages, exp.returns, exp.kl = exp.unpad(advantages), exp.unpad(returns), exp.unpad(kl)

    def extra_loss(self, exp: Experience, index: list[int], batch: SequenceBatch, first: int, trunk: Trunk | None,
                   mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The clipped value loss."""
        with self.accelerator.autocast():
            values = value_grid(self.value_model, batch, first, trunk).float()
        width = values.shape[1]
        pick = lambda name: to_grid([getattr(exp, name)[i] for i in index], batch, first, width)  # noqa: E731
        loss, stats = ops.clipped_value_loss(values, pick("values"), pick("returns"), mask, self.config.value_clip)
        return loss, {"value_loss": float(loss.detach()), "value_clip_fraction": float(stats["value_clip_fraction"])}
