"""The RLOO phase: k rollouts per prompt scored by the reward model, leave-one-out baseline.

Checkpointed like PPO's phase (policy, optimizer, reward scale, step history) every
`checkpoint_every` steps.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from engine.engine import LLMEngine
from trainer.checkpoints import load_trainable_state
from trainer.datasets import TrainingSets
from trainer.rloo import RLOOConfig, RLOOTrainer
from trainer.run import TrainingRun, make_policy_trainable


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, reward_model: Any, pad_id: int) -> dict[str, Any]:
    s = run.settings
    policy = loaded.model
    reference = None if s.use_lora else copy.deepcopy(policy).eval()
    make_policy_trainable(policy, s)
    rows = s.prompts_per_step * s.samples_per_prompt
    engine = LLMEngine(loaded, max_batch_size=rows, max_cached_tokens=rows * (s.max_prompt_tokens + s.max_reply_tokens + 16))
    config = RLOOConfig.from_settings(s, run.trunk_layers)
    trainer = RLOOTrainer(policy, reward_model, engine, config, run.accelerator, pad_id, reference)
    history: list[dict[str, float]] = list(run.state.get("rloo_history", []))
    if run.state.get("policy_step", 0):
        step = run.state["policy_step"]
        run.echo(f"rloo: resuming at step {step} of {s.steps}")
        load_trainable_state(policy, run.checkpoint.load_tensors(f"rloo-policy-{step}"))
        trainer.load_state_dict(run.checkpoint.load_object(f"rloo-trainer-{step}"))

    def on_step(step: int, metrics: dict[str, float]) -> None:
        history.append(metrics)
        run.record({"rloo": history})
        if step % s.checkpoint_every == 0 or step == s.steps:
            run.checkpoint_policy("rloo", step, policy, trainer.state_dict(), rloo_history=history)

    started = time.perf_counter()
    trainer.train(sets.train_prompts, run.progress, on_step)
    run.timed("rloo", started)
    return {f"rloo_last_{k}": v for k, v in history[-1].items()} if history else {}
