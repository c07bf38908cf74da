"""What the on-policy phases (PPO, RLOO) share: the engine they roll out with, resuming
from the last checkpoint, and checkpointing every `checkpoint_every` steps.

The policy, the trainer's state (optimizers, reward scale, KL coefficient, a value model
where there is one) and the step history are checkpointed together, so a resumed run
continues from the last checkpoint exactly.
"""

from __future__ import annotations

import time
from typing import Any

from engine.engine import LLMEngine
from trainer.checkpoints import load_trainable_state
from trainer.datasets import TrainingSets
from trainer.on_policy import OnPolicyTrainer
from trainer.run import TrainingRun


def rollout_engine(run: TrainingRun, loaded: Any) -> LLMEngine:
    """An engine sized for one step's rollouts, generating with the policy being trained."""
    s = run.settings
    rows = s.prompts_per_step * s.samples_per_prompt
    return LLMEngine(loaded, max_batch_size=rows, max_cached_tokens=rows * (s.max_prompt_tokens + s.max_reply_tokens + 16))


def train_on_policy(run: TrainingRun, name: str, trainer: OnPolicyTrainer, policy: Any, sets: TrainingSets) -> dict[str, Any]:
    """Resume `trainer` if the run checkpointed it, train to the step count, and return the
    last step's metrics under `<name>_last_`."""
    s = run.settings
    history: list[dict[str, float]] = list(run.state.get(f"{name}_history", []))
    if run.state.get("policy_step", 0):
        step = run.state["policy_step"]
        run.echo(f"{name}: resuming at step {step} of {s.steps}")
        load_trainable_state(policy, run.checkpoint.load_tensors(f"{name}-policy-{step}"))
        trainer.load_state_dict(run.checkpoint.load_object(f"{name}-trainer-{step}"))

    def on_step(step: int, metrics: dict[str, float]) -> None:
        history.append(metrics)
        run.record({name: history})
        if step % s.checkpoint_every == 0 or step == s.steps:
            run.checkpoint_policy(name, step, policy, trainer.state_dict(), **{f"{name}_history": history})

    started = time.perf_counter()
    trainer.train(sets.train_prompts, run.progress, on_step)
    run.timed(name, started)
    return {f"{name}_last_{k}": v for k, v in history[-1].items()} if history else {}
