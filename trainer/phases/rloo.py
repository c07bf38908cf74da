"""The RLOO phase: k rollouts per prompt scored by the reward model, a leave-one-out
baseline, no value model."""

from __future__ import annotations

import copy
from typing import Any

from trainer.datasets import TrainingSets
from trainer.phases.on_policy import rollout_engine, train_on_policy
from trainer.rloo import RLOOConfig, RLOOTrainer
from trainer.run import TrainingRun, make_policy_trainable


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, reward_model: Any, pad_id: int) -> dict[str, Any]:
    s = run.settings
    policy = loaded.model
    reference = None if s.use_lora else copy.deepcopy(policy).eval()
    make_policy_trainable(policy, s)
    config = RLOOConfig.from_settings(s, run.trunk_layers)
    trainer = RLOOTrainer(policy, reward_model, rollout_engine(run, loaded), config, run.accelerator, pad_id, reference)
    return train_on_policy(run, "rloo", trainer, policy, sets)
