"""The DPO phase: the reference log-probs once, then DPO steps on the ranked pairs.

The training groups gain DITTO pairs first: each reply the user wrote is preferred over
a few fresh samples of the policy for that prompt (trainer/ditto.py). The reference
log-probs (the policy before this phase, adapters off) are checkpointed with the run,
so a resumed run does not recompute them against a policy that has moved.
"""

from __future__ import annotations

import math
import time
from typing import Any

from engine.engine import LLMEngine
from trainer.checkpoints import load_trainable_state
from trainer.datasets import ComparisonGroup, TrainingSets
from trainer.ditto import add_policy_samples
from trainer.dpo import DPOConfig, reference_logprobs, train_dpo
from trainer.run import TrainingRun, make_policy_trainable
from trainer.trunk import TrunkCache


def with_taught_pairs(run: TrainingRun, loaded: Any, sets: TrainingSets) -> list[ComparisonGroup]:
    """The training groups plus DITTO pairs over fresh policy samples for each taught reply
    (trainer/ditto.py). The samples are seeded, so a resumed run makes the same ones; the
    policy has no adapters yet, so they come from the phase's reference."""
    s = run.settings
    taught = [d for d in sets.train_demos if d.is_taught]
    if not taught or s.ditto_samples < 1:
        return sets.train_groups
    rows = len(taught) * s.ditto_samples
    engine = LLMEngine(loaded, max_batch_size=min(rows, 32), max_cached_tokens=min(rows, 32) * (s.max_prompt_tokens + s.max_reply_tokens + 16))
    groups = add_policy_samples(sets.train_groups, taught, engine, s.ditto_samples, s.max_reply_tokens, s.temperature,
                                s.seed + 17)
    added = sum(g.num_pairs for g in groups) - sets.num_train_pairs
    run.echo(f"dpo: {added} pairs of your {len(taught)} written replies over the model's own samples")
    return groups


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, reward_model: Any, pad_id: int) -> dict[str, Any]:
    s = run.settings
    policy = loaded.model
    started = time.perf_counter()  # the reference log-probs are part of the phase's cost
    train_groups = with_taught_pairs(run, loaded, sets)
    # The frozen bottom layers' outputs, computed once for the reference and kept for training.
    trunks = TrunkCache(policy, run.trunk_layers) if run.trunk_layers else None
    if "dpo_reference" in run.state:
        reference = {int(k): v for k, v in run.checkpoint.load_object("dpo-reference").items()}
    else:
        with run.accelerator.autocast():
            reference = reference_logprobs(policy, train_groups + sets.eval_groups, pad_id, run.accelerator.device, trunks)
        if run.is_main:
            run.checkpoint.save_object("dpo-reference", {str(k): v for k, v in reference.items()})
        run.save_state(dpo_reference=True)
    make_policy_trainable(policy, s)
    config = DPOConfig.from_settings(s, run.trunk_layers)
    per_process = math.ceil(len(train_groups) / run.accelerator.num_processes)
    steps_per_epoch = max(1, math.ceil(per_process / config.groups_per_batch))
    # Enough epochs to reach the step count; max_steps stops it there.
    config.epochs = max(1, math.ceil(s.steps / steps_per_epoch))
    start_step = run.state.get("policy_step", 0)
    optimizer_state = None
    if start_step:
        run.echo(f"dpo: resuming at step {start_step} of {s.steps}")
        load_trainable_state(policy, run.checkpoint.load_tensors(f"dpo-policy-{start_step}"))
        optimizer_state = run.checkpoint.load_object(f"dpo-trainer-{start_step}")["optimizer"]

    def on_step(step: int, optimizer) -> None:
        if step % s.checkpoint_every == 0 or step == s.steps:
            run.checkpoint_policy("dpo", step, policy, {"optimizer": optimizer.state_dict()})

    result = train_dpo(policy, train_groups, sets.eval_groups, config, run.accelerator, pad_id, run.progress,
                       start_step=start_step, on_step=on_step, reference=reference, optimizer_state=optimizer_state,
                       trunks=trunks)
    run.timed("dpo", started)
    run.record({"dpo": result.metrics})
    return {f"dpo_{k}": v for k, v in result.metrics.items()}
