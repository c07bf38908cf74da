"""The SFT phase: imitate the demonstrations, then fold the adapter into the weights.

The SFT model becomes the base of the policy phase that follows: with LoRA, the adapter
is merged after training so that "adapters disabled" (the policy phase's reference) is
the SFT model.
"""

from __future__ import annotations

import time
from typing import Any

from trainer import lora
from trainer.checkpoints import load_trainable_state
from trainer.datasets import TrainingSets
from trainer.run import TrainingRun, make_policy_trainable
from trainer.sft import SFTConfig, train_sft


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, pad_id: int) -> dict[str, float]:
    policy = loaded.model
    make_policy_trainable(policy, run.settings)
    if "sft" in run.state.get("done", []):
        run.echo("sft: done in an earlier attempt, restoring it")
        load_trainable_state(policy, run.checkpoint.load_tensors("sft"))
        metrics = run.state.get("sft_metrics", {})
    else:
        started = time.perf_counter()
        config = SFTConfig.from_settings(run.settings)
        result = train_sft(policy, sets.train_demos, sets.eval_demos, config, run.accelerator, pad_id, run.progress)
        run.timed("sft", started)
        metrics = result.metrics
        run.save_tensors("sft", policy)
        run.save_state(done=run.state.get("done", []) + ["sft"], sft_metrics=metrics)
        run.record({"sft": metrics})
    lora.merge_and_unload(policy)
    for param in policy.parameters():
        param.requires_grad_(False)
    return {f"sft_{k}": v for k, v in metrics.items()}
