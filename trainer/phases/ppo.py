"""The PPO phase: rollouts from the engine, the reward model's scores, clipped updates,
and a value model that starts as a copy of the reward model."""

from __future__ import annotations

import copy
from typing import Any

from trainer.datasets import TrainingSets
from trainer.phases.on_policy import rollout_engine, train_on_policy
from trainer.ppo import PPOConfig, PPOTrainer
from trainer.run import TrainingRun, make_head_model_trainable, make_policy_trainable


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, reward_model: Any, pad_id: int) -> dict[str, Any]:
    s = run.settings
    policy = loaded.model
    reference = None if s.use_lora else copy.deepcopy(policy).eval()
    make_policy_trainable(policy, s)
    value_model = copy.deepcopy(reward_model)
    make_head_model_trainable(value_model, s)
    config = PPOConfig.from_settings(s, run.trunk_layers)
    trainer = PPOTrainer(policy, value_model, reward_model, rollout_engine(run, loaded), config, run.accelerator, pad_id,
                         reference)
    return train_on_policy(run, "ppo", trainer, policy, sets)
