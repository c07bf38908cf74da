"""The PPO phase: rollouts from the engine, the reward model's scores, clipped updates.

The value model starts as a copy of the reward model. The policy, the trainer state
(value model, optimizers, KL coefficient) and the step history are checkpointed every
`checkpoint_every` steps, so a resumed run continues from the last one.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from engine.engine import LLMEngine
from trainer.checkpoints import load_trainable_state
from trainer.datasets import TrainingSets
from trainer.ppo import PPOConfig, PPOTrainer
from trainer.run import TrainingRun, make_head_model_trainable, make_policy_trainable


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, reward_model: Any, pad_id: int) -> dict[str, Any]:
    s = run.settings
    policy = loaded.model
    reference = None if s.use_lora else copy.deepcopy(policy).eval()
    make_policy_trainable(policy, s)
    value_model = copy.deepcopy(reward_model)
    make_head_model_trainable(value_model, s)
    rows = s.prompts_per_step * s.samples_per_prompt
    engine = LLMEngine(loaded, max_batch_size=rows, max_cached_tokens=rows * (s.max_prompt_tokens + s.max_reply_tokens + 16))
    config = PPOConfig.from_settings(s, run.trunk_layers)
    trainer = PPOTrainer(policy, value_model, reward_model, engine, config, run.accelerator, pad_id, reference)
    history: list[dict[str, float]] = list(run.state.get("ppo_history", []))
    if run.state.get("policy_step", 0):
        step = run.state["policy_step"]
        run.echo(f"ppo: resuming at step {step} of {s.steps}")
        load_trainable_state(policy, run.checkpoint.load_tensors(f"ppo-policy-{step}"))
        trainer.load_state_dict(run.checkpoint.load_object(f"ppo-trainer-{step}"))

    def on_step(step: int, metrics: dict[str, float]) -> None:
        history.append(metrics)
        run.record({"ppo": history})
        if step % s.checkpoint_every == 0 or step == s.steps:
            run.checkpoint_policy("ppo", step, policy, trainer.state_dict(), ppo_history=history)

    started = time.perf_counter()
    trainer.train(sets.train_prompts, run.progress, on_step)
    run.timed("ppo", started)
    return {f"ppo_last_{k}": v for k, v in history[-1].items()} if history else {}
