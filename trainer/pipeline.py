"""A whole training run: feedback snapshot -> SFT -> reward model -> PPO or DPO -> new version.

`run_training` is what `chat-tui train` (under `accelerate launch -m chat_tui train` too) calls:

1. Finds an interrupted run with the same settings and base version and resumes it, or
   records a new run with the store's current snapshot. Every process reads that same
   snapshot (the main process broadcasts it).
2. Loads the base model, tokenizes and splits the data, plans the phases (settings.py),
   estimates memory up front (memory.py); `dry_run` stops here after describing it.
3. Runs the phases, checkpointing after each one and every few policy steps
   (checkpoints.py). With LoRA, an SFT adapter is folded into the weights after SFT, so
   the policy phase's reference (adapters disabled) is the SFT model.
4. Evaluates the result against its parent version on held-out prompts, writes the new
   version into the model store atomically under a new name (the version in use is never
   touched), registers it, and activates it only when asked or when evaluation improved.

A NaN loss stops the run: it is recorded as failed and nothing is saved or activated.
Only the main process writes to the stores and the checkpoint; the others train in step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from trainer.batch import pad_id_for
from trainer.checkpoints import RunCheckpoint, run_folder
from trainer.datasets import DatasetLimits, TrainingSets, build_training_sets
from trainer.errors import TrainerError, TrainingCancelled, TrainingDivergedError
from trainer.algorithms import get_algorithm
from trainer.progress import Progress
from trainer.run import BaseVersion, Echo, TrainingRun
from trainer.run_lock import RunLock
from trainer.runtime import seed_everything
from trainer.settings import PhasePlan, TrainSettings, plan_phases

__all__ = ["BaseVersion", "RunOutcome", "TrainSettings", "describe_plan", "run_training"]


@dataclass
class RunOutcome:
    run_id: int | None
    plan: PhasePlan
    summary: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    version_name: str | None = None
    version_id: int | None = None
    version_path: str | None = None
    activated: bool = False
    improved: bool | None = None
    samples: list[dict[str, str]] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None


def describe_plan(sets: TrainingSets, plan: PhasePlan, settings: TrainSettings, memory: str, base: BaseVersion) -> list[str]:
    s = sets.summary()
    lines = [
        f"base model: {base.name} ({base.path})",
        f"feedback snapshot: action {s['snapshot_action_id']}; held out by {s['split']}",
        f"preference pairs: {s['train_pairs']} train / {s['eval_pairs']} held out, "
        f"in {s['train_prompt_groups']} / {s['eval_prompt_groups']} prompt groups",
        f"demonstrations: {s['train_demonstrations']} train / {s['eval_demonstrations']} held out",
        f"prompts: {s['train_prompts']} train / {s['eval_prompts']} held out",
        f"phases: {' -> '.join(plan.names)}",
        f"training: {'LoRA r=' + str(settings.lora_rank) if settings.use_lora else 'full weights'}, "
        f"{'top ' + str(settings.top_layers) + ' layers' if settings.top_layers else 'all layers'}, "
        f"{settings.steps} {settings.algo.upper()} steps",
        f"estimated peak memory: {memory}",
    ]
    return lines + [f"note: {n}" for n in plan.notes]


def run_training(
    settings: TrainSettings,
    store: Any,
    base: BaseVersion,
    data_dir: Path,
    models_dir: Path,
    dry_run: bool = False,
    progress: Progress | None = None,
    echo: Echo | None = None,
    accelerator: Accelerator | None = None,
) -> RunOutcome:
    """Run (or with dry_run, describe) a training run; see the module docstring."""
    run = TrainingRun(settings, store, base, data_dir, models_dir, progress, echo, accelerator)
    lock = RunLock(data_dir) if run.is_main and not dry_run else None
    if lock is not None:
        lock.acquire()
    try:
        return _run_locked(run, store, base, dry_run, lock)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(run: TrainingRun, store: Any, base: BaseVersion, dry_run: bool, lock: RunLock | None) -> RunOutcome:
    settings = run.requested
    s = run.settings
    seed_everything(s.seed, run.accelerator.process_index)
    resume_id, snapshot_id = run.choose_snapshot(dry_run)
    data = store.training_data(snapshot_id)
    setup_started = time.perf_counter()
    loaded = run.load_base()
    num_layers = loaded.config.num_hidden_layers
    if settings.top_layers is None and s.top_layers > num_layers:
        s.top_layers = 0  # the CPU default asks for more layers than the model has: all of them
    elif s.top_layers > num_layers:
        raise TrainerError(f"--top-layers {s.top_layers} is more than the model's {num_layers} layers")
    for param in loaded.model.parameters():  # each phase unfreezes what it trains
        param.requires_grad_(False)
    # With only the top layers training, every model shares the frozen bottom ones.
    run.trunk_layers = num_layers - s.top_layers if s.top_layers else 0
    pad_id = pad_id_for(loaded.config)
    limits = DatasetLimits(s.max_prompt_tokens, s.max_reply_tokens)
    sets = build_training_sets(loaded, data, limits, s.eval_fraction, s.seed)
    plan = plan_phases(s, sets)
    memory = run.estimate(loaded, plan, sets)
    run.timed("setup", setup_started)  # loading the model, tokenizing and splitting the data
    outcome = RunOutcome(None, plan, sets.summary())
    for line in describe_plan(sets, plan, s, memory, base):
        run.echo(line)
    if dry_run:
        return outcome

    if run.is_main:
        if resume_id is not None:
            run.run_id = resume_id
        else:
            config = {"settings": run.requested.fingerprint(), "resolved": s.fingerprint(), "phases": plan.names,
                      "data": sets.summary()}
            record = store.start_training_run(s.algo, config, base.version_id, snapshot_id)
            run.run_id = record.id
    ids = [run.run_id]
    if run.accelerator.num_processes > 1:
        broadcast_object_list(ids, from_process=0)
    run.run_id = ids[0]
    if lock is not None:
        lock.note(run.run_id)
    run.checkpoint = RunCheckpoint(run_folder(run.data_dir, run.run_id))
    run.state = run.checkpoint.read_state() if resume_id is not None else {}
    if resume_id is not None:
        outcome.resumed_from = str(run.checkpoint.folder)
        run.echo(f"resuming training run {resume_id} from {run.checkpoint.folder}")
    outcome.run_id = run.run_id
    run.save_state(run_id=run.run_id, snapshot_action_id=snapshot_id)

    metrics: dict[str, Any] = {}
    try:
        if plan.sft:
            from trainer.phases import sft

            metrics.update(sft.run_phase(run, loaded, sets, pad_id))
        reward_model = None
        if plan.reward:
            from trainer.phases import reward

            reward_model, reward_metrics = reward.run_phase(run, loaded, sets, pad_id)
            metrics.update({f"reward_{k}": v for k, v in reward_metrics.items()})
        if plan.policy is not None:
            run_phase = get_algorithm(plan.policy).load_phase()
            metrics.update(run_phase(run, loaded, sets, reward_model, pad_id))
        run.state["policy_ran"] = plan.policy is not None
        improved: bool | None = None
        samples: list[dict[str, str]] = []
        if run.is_main:
            eval_metrics, verdict, samples = run.evaluate(loaded, sets, reward_model, pad_id)
            metrics.update(eval_metrics)
            improved = verdict.activate
            if plan.policy is None:
                # SFT only: improvement is a lower loss on the held-out demonstrations.
                before, after = metrics.get("sft_eval_loss_before"), metrics.get("sft_eval_loss_after")
                improved = before is not None and after is not None and math.isfinite(after) and after < before
                metrics["activation_reason"] = (
                    "its loss on held-out written replies went down" if improved
                    else "its loss on held-out written replies did not go down")
            for key, value in metrics.items():
                if isinstance(value, float) and not math.isfinite(value) and key.endswith("loss"):
                    raise TrainingDivergedError(f"{key} is {value} after training; nothing was saved")
            activate = s.activate or bool(improved)
            save_started = time.perf_counter()
            name, path = run.save_version(loaded, metrics, activate)
            run.timed("save", save_started)
            outcome.version_name, outcome.version_path, outcome.activated = name, path, activate
            metrics["phase_seconds"] = dict(run.phase_seconds)
            outcome.version_id = store.get_model_version(name).id
            store.finish_training_run(run.run_id, "succeeded", outcome.version_id, metrics)
            run.checkpoint.remove()
        run.accelerator.wait_for_everyone()
        outcome.improved, outcome.samples = improved, samples
    except TrainerError as exc:
        if run.is_main and run.run_id is not None:
            # A cancelled or failed run keeps its checkpoint: the same command resumes it. A
            # diverged one does not (its training went to NaN; starting over is the fix).
            status = "cancelled" if isinstance(exc, TrainingCancelled) else "failed"
            store.finish_training_run(run.run_id, status, None, metrics, error=str(exc))
            if isinstance(exc, TrainingDivergedError):
                run.checkpoint.remove()
        raise
    outcome.metrics = metrics
    outcome.phase_seconds = dict(run.phase_seconds)
    return outcome

