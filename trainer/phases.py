"""The phases of a training run and the state they share: `TrainingRun`.

`TrainingRun` holds what one run's phases need (accelerator, settings, stores, the
checkpoint) and runs each phase: SFT, the reward model, PPO or DPO, the evaluation against
the parent, and saving the new version. Each phase checks the checkpoint first and
restores instead of recomputing what an earlier attempt finished. The order of phases,
recording the run and error handling are pipeline.py's.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from trainer import lora
from trainer.checkpoints import RunCheckpoint, load_trainable_state, run_folder, trainable_state
from trainer.datasets import TrainingSets
from trainer.memory import check_fits, estimate_memory
from trainer.progress import ConsoleProgress, Progress
from trainer.runtime import make_accelerator
from trainer.settings import PhasePlan, TrainSettings

Echo = Callable[[str], None]


@dataclass
class BaseVersion:
    """The model a run starts from: its directory (or store name) and version id."""

    path: str
    version_id: int | None
    name: str

# ---------------------------------------------------------------------------------------
# Which parameters train


def adapter_targets(settings: TrainSettings) -> tuple[str, ...]:
    return lora.ATTENTION_TARGETS + (lora.MLP_TARGETS if settings.lora_mlp else ())


def top_layers_or_all(settings: TrainSettings) -> int | None:
    return settings.top_layers or None


def make_policy_trainable(policy: torch.nn.Module, settings: TrainSettings) -> None:
    """LoRA adapters on the top layers, or the top layers themselves (all with 0)."""
    if settings.use_lora:
        lora.apply_lora(policy, settings.lora_rank, settings.lora_alpha, adapter_targets(settings), top_layers_or_all(settings))
    elif settings.top_layers:
        lora.freeze_except_top_layers(policy, settings.top_layers)
    else:
        for param in policy.parameters():
            param.requires_grad_(True)


def make_head_model_trainable(model: torch.nn.Module, settings: TrainSettings) -> None:
    """Reward and value models train their top layers and head (everything with 0)."""
    if settings.top_layers:
        lora.freeze_except_top_layers(model, settings.top_layers)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    model.head.requires_grad_(True)


def version_name(base: BaseVersion, algo: str, run_id: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9._+-]", "-", base.name or "model").strip("-.") or "model"
    return f"{stem[:80]}-{algo}-run{run_id}"


# ---------------------------------------------------------------------------------------
# The run


class TrainingRun:
    """State shared by the phases of one run. See the module docstring."""

    def __init__(
        self,
        settings: TrainSettings,
        store: Any,
        base: BaseVersion,
        data_dir: Path,
        models_dir: Path,
        progress: Progress | None = None,
        echo: Echo | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        settings.validate()
        self.accelerator = accelerator or make_accelerator(settings.device, settings.gradient_accumulation_steps)
        self.on_gpu = self.accelerator.device.type == "cuda"
        self.requested = settings  # as given: what a rerun must repeat to resume this run
        self.settings = settings.resolved(self.on_gpu)
        self.store = store
        self.base = base
        self.data_dir = Path(data_dir)
        self.models_dir = Path(models_dir)
        self.is_main = self.accelerator.is_main_process
        self.progress = progress or ConsoleProgress(enabled=self.is_main)
        self._echo = echo or print
        self.run_id: int | None = None
        self.checkpoint: RunCheckpoint | None = None
        self.state: dict[str, Any] = {}
        self.phase_seconds: dict[str, float] = {}
        self.trunk_layers = 0  # frozen bottom layers shared by every model (trainer/trunk.py)

    def echo(self, text: str) -> None:
        if self.is_main:
            self._echo(text)

    # -- setup -------------------------------------------------------------------------

    def find_resumable(self) -> Any | None:
        """The newest unfinished run of these settings on this base that left a checkpoint."""
        wanted = self.requested.fingerprint()
        for run in reversed(self.store.list_training_runs()):
            if run.status != "running" or run.base_version_id != self.base.version_id:
                continue
            if run.config.get("settings") != wanted:
                continue
            checkpoint = RunCheckpoint(run_folder(self.data_dir, run.id))
            if checkpoint.exists:
                return run
        return None

    def choose_snapshot(self, dry_run: bool) -> tuple[int | None, int]:
        """(run id to resume or None, snapshot action id), the same on every process."""
        payload: list[Any] = [None, None]
        if self.is_main:
            resumable = None if dry_run else self.find_resumable()
            if resumable is not None:
                payload = [resumable.id, resumable.snapshot_action_id]
            else:
                payload = [None, self.store.snapshot().action_id]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(payload, from_process=0)
        return payload[0], int(payload[1])

    def load_base(self):
        from engine.loading import load_model

        # Master weights in fp32 on every device; bf16 comes from autocast on GPUs.
        return load_model(self.base.path, device=self.device_name, dtype=torch.float32)

    @property
    def device_name(self) -> str:
        """The device as loaders take it: "cpu" (multi-process runs report "cpu:0"), "cuda:N"."""
        device = self.accelerator.device
        return "cpu" if device.type == "cpu" else str(device)

    def estimate(self, loaded, plan: PhasePlan, sets: TrainingSets) -> str:
        """Estimate the run's peak memory; ModelTooLargeError when it will not fit."""
        s = self.settings
        cached_trunk_tokens = 0
        if self.trunk_layers and (plan.reward or plan.policy == "dpo"):
            cached_trunk_tokens = sum(len(g.prompt_ids) * len(g.replies) + sum(map(len, g.replies)) for g in sets.train_groups)
        config = loaded.config
        num_layers = config.num_hidden_layers
        trained_layers = s.top_layers or num_layers
        per_layer = config.num_parameters // max(1, num_layers)
        if s.use_lora:
            d, f = config.hidden_size, config.intermediate_size
            per_layer_adapter = s.lora_rank * (4 * 2 * d + (3 * (d + f) if s.lora_mlp else 0))
            trainable = trained_layers * per_layer_adapter
        else:
            trainable = trained_layers * per_layer
        rows = max(s.minibatch_rows, s.prompts_per_step * s.samples_per_prompt if plan.policy == "ppo" else 8)
        estimate = estimate_memory(
            config, trainable, bytes_per_weight=4,
            needs_reference_copy=plan.policy == "ppo" and not s.use_lora,
            needs_reward_and_value=plan.policy == "ppo",
            rows=s.minibatch_rows, sequence_length=s.max_prompt_tokens + s.max_reply_tokens,
            logit_columns=s.max_reply_tokens + 16, trained_layers=trained_layers,
            kv_cache_tokens=rows * (s.max_prompt_tokens + s.max_reply_tokens),
            cached_trunk_tokens=cached_trunk_tokens,
        )
        check_fits(estimate, self.accelerator.device, self.base.name)
        return estimate.describe()

    # -- checkpoint helpers ------------------------------------------------------------

    def save_state(self, **changes: Any) -> None:
        self.state.update(changes)
        if self.is_main and self.checkpoint is not None:
            self.checkpoint.write_state(self.state)
        self.accelerator.wait_for_everyone()

    def save_tensors(self, name: str, model: torch.nn.Module) -> None:
        if self.is_main and self.checkpoint is not None:
            self.checkpoint.save_tensors(name, trainable_state(model))

    def record(self, metrics: dict[str, Any]) -> None:
        if self.is_main and self.run_id is not None:
            self.store.update_training_run(self.run_id, metrics)

    def timed(self, phase: str, start: float) -> None:
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + time.perf_counter() - start

    # -- phases ------------------------------------------------------------------------

    def run_sft(self, loaded, sets: TrainingSets, pad_id: int) -> dict[str, float]:
        from trainer.sft import SFTConfig, train_sft

        s = self.settings
        policy = loaded.model
        if "sft" in self.state.get("done", []):
            self.echo("sft: done in an earlier attempt, restoring it")
            make_policy_trainable(policy, s)
            load_trainable_state(policy, self.checkpoint.load_tensors("sft"))
            metrics = self.state.get("sft_metrics", {})
        else:
            make_policy_trainable(policy, s)
            started = time.perf_counter()
            config = SFTConfig(epochs=s.sft_epochs, lr=s.sft_lr, examples_per_batch=s.minibatch_rows, seed=s.seed)
            result = train_sft(policy, sets.train_demos, sets.eval_demos, config, self.accelerator, pad_id, self.progress)
            self.timed("sft", started)
            metrics = result.metrics
            self.save_tensors("sft", policy)
            self.save_state(done=self.state.get("done", []) + ["sft"], sft_metrics=metrics)
            self.record({"sft": metrics})
        # The SFT model becomes the new base: fold adapters in, freeze everything again.
        lora.merge_and_unload(policy)
        for param in policy.parameters():
            param.requires_grad_(False)
        return metrics

    def run_reward(self, loaded, sets: TrainingSets, pad_id: int):
        from trainer.reward_model import ScalarHeadModel, load_reward_model, save_reward_model
        from trainer.reward_training import RewardTrainingConfig, train_reward_model

        s = self.settings
        if "reward" in self.state.get("done", []):
            self.echo(f"reward model: done in an earlier attempt, loading {self.state['reward_model_path']}")
            return load_reward_model(Path(self.state["reward_model_path"]), self.device_name), self.state["reward_metrics"]
        reward_model = ScalarHeadModel.from_policy(loaded.model)
        make_head_model_trainable(reward_model, s)
        started = time.perf_counter()
        config = RewardTrainingConfig(epochs=s.reward_epochs, lr=s.reward_lr, groups_per_batch=max(1, s.minibatch_rows // 2),
                                      seed=s.seed, trunk_layers=self.trunk_layers)
        result = train_reward_model(reward_model, sets.train_groups, sets.eval_groups, config, self.accelerator, pad_id, self.progress)
        self.timed("reward", started)
        path = self.data_dir / "reward_models" / f"{version_name(self.base, 'rm', self.run_id or 0)}"
        if self.is_main:
            if path.exists():  # saved by an attempt killed before it could record it
                shutil.rmtree(path)
            save_reward_model(reward_model, path, {"run_id": self.run_id, "base": self.base.name, **result.metrics})
        self.save_state(done=self.state.get("done", []) + ["reward"], reward_model_path=str(path), reward_metrics=result.metrics)
        self.record({"reward": result.metrics})
        return reward_model.eval(), result.metrics

    def run_ppo(self, loaded, sets: TrainingSets, reward_model, pad_id: int) -> list[dict[str, float]]:
        from engine.engine import LLMEngine
        from trainer.ppo import PPOConfig, PPOTrainer

        s = self.settings
        policy = loaded.model
        reference = None if s.use_lora else copy.deepcopy(policy).eval()
        make_policy_trainable(policy, s)
        value_model = copy.deepcopy(reward_model)
        make_head_model_trainable(value_model, s)
        rows = s.prompts_per_step * s.samples_per_prompt
        engine = LLMEngine(loaded, max_batch_size=rows, max_cached_tokens=rows * (s.max_prompt_tokens + s.max_reply_tokens + 16))
        config = PPOConfig(
            steps=s.steps, prompts_per_step=s.prompts_per_step, samples_per_prompt=s.samples_per_prompt,
            max_new_tokens=s.max_reply_tokens, temperature=s.temperature, ppo_epochs=s.ppo_epochs,
            minibatch_rows=s.minibatch_rows, lr=s.ppo_lr, value_lr=s.value_lr, kl_beta=s.kl_beta,
            adaptive_kl=s.adaptive_kl, target_kl=s.target_kl, seed=s.seed, trunk_layers=self.trunk_layers,
        )
        trainer = PPOTrainer(policy, value_model, reward_model, engine, config, self.accelerator, pad_id, reference)
        history: list[dict[str, float]] = list(self.state.get("ppo_history", []))
        if self.state.get("policy_step", 0):
            step = self.state["policy_step"]
            self.echo(f"ppo: resuming at step {step} of {s.steps}")
            load_trainable_state(policy, self.checkpoint.load_tensors(f"ppo-policy-{step}"))
            trainer.load_state_dict(self.checkpoint.load_object(f"ppo-trainer-{step}"))

        def on_step(step: int, metrics: dict[str, float]) -> None:
            history.append(metrics)
            self.record({"ppo": history})
            if step % s.checkpoint_every == 0 or step == s.steps:
                self.checkpoint_policy("ppo", step, policy, trainer.state_dict(), ppo_history=history)

        started = time.perf_counter()
        trainer.train(sets.train_prompts, self.progress, on_step)
        self.timed("ppo", started)
        self.engine = engine
        self.reference = reference
        return history

    def run_dpo(self, loaded, sets: TrainingSets, pad_id: int) -> dict[str, float]:
        from trainer.dpo import DPOConfig, reference_logprobs, train_dpo

        s = self.settings
        policy = loaded.model
        started = time.perf_counter()  # the reference log-probs are part of the phase's cost
        if "dpo_reference" in self.state:
            reference = {int(k): v for k, v in self.checkpoint.load_object("dpo-reference").items()}
        else:
            from trainer.trunk import TrunkCache

            trunks = TrunkCache(policy, self.trunk_layers) if self.trunk_layers else None
            reference = reference_logprobs(policy, sets.train_groups + sets.eval_groups, pad_id, self.accelerator.device, trunks)
            if self.is_main:
                self.checkpoint.save_object("dpo-reference", {str(k): v for k, v in reference.items()})
            self.save_state(dpo_reference=True)
        make_policy_trainable(policy, s)
        groups_per_batch = 4
        per_process = math.ceil(len(sets.train_groups) / self.accelerator.num_processes)
        steps_per_epoch = max(1, math.ceil(per_process / groups_per_batch))
        # Enough epochs to reach --steps, at least --dpo-epochs; max_steps stops it there.
        epochs = max(1, math.ceil(s.steps / steps_per_epoch))
        config = DPOConfig(epochs=epochs, lr=s.dpo_lr, beta=s.dpo_beta, groups_per_batch=groups_per_batch,
                           seed=s.seed, max_steps=s.steps, trunk_layers=self.trunk_layers, nll_weight=s.dpo_nll_weight)
        start_step = self.state.get("policy_step", 0)
        optimizer_state = None
        if start_step:
            self.echo(f"dpo: resuming at step {start_step} of {s.steps}")
            load_trainable_state(policy, self.checkpoint.load_tensors(f"dpo-policy-{start_step}"))
            optimizer_state = self.checkpoint.load_object(f"dpo-trainer-{start_step}")["optimizer"]

        def on_step(step: int, optimizer) -> None:
            if step % s.checkpoint_every == 0 or step == s.steps:
                self.checkpoint_policy("dpo", step, policy, {"optimizer": optimizer.state_dict()})

        result = train_dpo(policy, sets.train_groups, sets.eval_groups, config, self.accelerator, pad_id, self.progress,
                           start_step=start_step, on_step=on_step, reference=reference, optimizer_state=optimizer_state)
        self.timed("dpo", started)
        self.record({"dpo": result.metrics})
        return result.metrics

    def checkpoint_policy(self, algo: str, step: int, policy: torch.nn.Module, trainer_state: dict, **extra: Any) -> None:
        """Step-named files, then the state that points at them, then the old files go."""
        previous = self.state.get("policy_step", 0)
        if self.is_main:
            self.checkpoint.save_tensors(f"{algo}-policy-{step}", trainable_state(policy))
            self.checkpoint.save_object(f"{algo}-trainer-{step}", trainer_state)
        self.save_state(policy_step=step, **extra)
        if self.is_main and previous and previous != step:
            for suffix in (f"{algo}-policy-{previous}.safetensors", f"{algo}-trainer-{previous}.pt"):
                (self.checkpoint.folder / suffix).unlink(missing_ok=True)

    # -- evaluation and saving ------------------------------------------------------------

    def evaluate(self, loaded, sets: TrainingSets, reward_model, pad_id: int) -> tuple[dict[str, float], bool, list[dict[str, str]]]:
        """Compare with the parent version on held-out prompts (main process only)."""
        from engine.engine import LLMEngine
        from trainer.evaluation import compare_with_parent

        s = self.settings
        prompts = (sets.eval_prompts or sets.train_prompts)[: s.num_eval_prompts]
        if not prompts:
            return {}, False, []
        started = time.perf_counter()
        parent_loaded = self.load_base()
        rows = len(prompts)
        max_cached = rows * (s.max_prompt_tokens + s.max_reply_tokens + 16)
        policy_engine = LLMEngine(loaded, max_batch_size=rows, max_cached_tokens=max_cached)
        parent_engine = LLMEngine(parent_loaded, max_batch_size=rows, max_cached_tokens=max_cached)
        with self.accelerator.autocast():
            comparison = compare_with_parent(policy_engine, parent_engine, reward_model, prompts, pad_id,
                                             s.max_reply_tokens, s.temperature, seed=s.seed + 1)
        self.timed("evaluate", started)
        metrics = comparison.metrics()
        if reward_model is None:  # DPO: no reward model to score with, only KL and lengths
            metrics = {k: v for k, v in metrics.items() if "reward" not in k}
        improved = comparison.improved if reward_model is not None else False
        return metrics, improved, comparison.samples

    def save_version(self, loaded, metrics: dict[str, Any], activate: bool) -> tuple[str, str]:
        from engine.loading import ModelStore

        name = version_name(self.base, self.settings.algo if self.state.get("policy_ran") else "sft", self.run_id or 0)
        model_store = ModelStore(self.models_dir)
        if model_store.has(name):  # written by an attempt killed before it registered it
            path = model_store.path_of(name)
        else:
            # Adapters folded in, under HF names; the store leaves a tied LM head out
            # (engine.loading.checkpoint.stored_tensors).
            path = model_store.save_model(loaded, name, source="trained", state_dict=lora.merged_state_dict(loaded.model),
                                          info={"parent": self.base.name, "run_id": self.run_id})
        version = self.store.register_model_version(
            name, str(path), source="train", parent_id=self.base.version_id,
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, activate=activate,
        )
        return version.name, str(path)
