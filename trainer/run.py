"""The state one training run's phases share: `TrainingRun`.

`TrainingRun` holds what the phases need (accelerator, settings, stores, the checkpoint,
the frozen trunk size) and the steps every phase takes the same way: loading the base
model, the up-front memory estimate, checkpointing and resuming policy steps, recording
metrics, comparing the result with its parent, and saving the new version. The phases
themselves (SFT, the reward model, each algorithm's policy phase) live in
trainer/phases/; their order, recording the run and error handling are pipeline.py's.
"""

from __future__ import annotations

import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from trainer import lora
from feedback.versions import RESUMABLE_STATUSES
from trainer.algorithms import get_algorithm
from trainer.checkpoints import RunCheckpoint, run_folder, trainable_state
from trainer import held_out
from trainer.datasets import TrainingSets
from trainer.held_out import Verdict
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
        """The newest interrupted run (cancelled, failed, or left running by a process that
        died: this process holds the run lock) of these settings on this base that left a
        checkpoint."""
        wanted = self.requested.fingerprint()
        for run in reversed(self.store.list_training_runs()):
            if run.status not in RESUMABLE_STATUSES or run.base_version_id != self.base.version_id:
                continue
            if run.config.get("settings") != wanted:
                continue
            checkpoint = RunCheckpoint(run_folder(self.data_dir, run.id))
            if checkpoint.exists:
                return run
        return None

    def abandon_other_bases(self) -> None:
        """Interrupted runs that started from another model than this run's are closed as
        abandoned and their checkpoints removed: their base is no longer what is trained."""
        for run in self.store.list_training_runs():
            if run.status in RESUMABLE_STATUSES and run.base_version_id != self.base.version_id:
                self.store.abandon_training_run(run.id, f"superseded by a run on {self.base.name!r}")
                RunCheckpoint(run_folder(self.data_dir, run.id)).remove()

    def choose_snapshot(self, dry_run: bool) -> tuple[int | None, int]:
        """(run id to resume or None, snapshot action id), the same on every process."""
        payload: list[Any] = [None, None]
        if self.is_main:
            resumable = None
            if not dry_run:
                self.abandon_other_bases()
                resumable = self.find_resumable()
            if resumable is not None:
                if resumable.status != "running":
                    self.store.reopen_training_run(resumable.id)
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
        algorithm = get_algorithm(plan.policy) if plan.policy else None
        offline_policy = algorithm is not None and not algorithm.needs_prompts
        if self.trunk_layers and (plan.reward or offline_policy):
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
        on_policy = algorithm is not None and algorithm.needs_prompts
        rows = max(s.minibatch_rows, s.prompts_per_step * s.samples_per_prompt if on_policy else 8)
        estimate = estimate_memory(
            config, trainable, bytes_per_weight=4,
            needs_reference_copy=on_policy and not s.use_lora,
            needs_reward_and_value=algorithm is not None and algorithm.needs_value_model,
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

    def evaluate(self, loaded, sets: TrainingSets, reward_model, pad_id: int) -> tuple[dict[str, Any], Verdict, list[dict[str, str]]]:
        """The new version against its parent (main process only): held-out feedback, replies
        to held-out prompts, fluency; and the activation verdict (trainer/held_out.py)."""
        from engine.engine import LLMEngine
        from trainer.evaluation import compare_with_parent
        from trainer.fluency import fluency_text, perplexity

        s = self.settings
        started = time.perf_counter()
        # With adapters on an unchanged base, the parent is the policy with them switched
        # off; after SFT (folded in) or full-weight training it is loaded again.
        adapters_are_the_change = lora.has_lora(loaded.model) and "sft" not in self.state.get("done", [])
        parent_loaded = None if adapters_are_the_change else self.load_base()
        parent_model = loaded.model if parent_loaded is None else parent_loaded.model
        as_parent = (lambda: lora.disabled(loaded.model)) if parent_loaded is None else nullcontext
        device = self.accelerator.device
        metrics: dict[str, Any] = {}
        with self.accelerator.autocast():
            new_scores = held_out.pair_logprobs(loaded.model, sets.eval_groups, pad_id, device)
            with as_parent():
                parent_scores = held_out.pair_logprobs(parent_model, sets.eval_groups, pad_id, device)
        learned = held_out.learned(new_scores, parent_scores)
        matched = held_out.learned(new_scores, parent_scores, length_matched=True)
        for name, share in (("agreement_before", held_out.agreement(parent_scores)),
                            ("agreement_after", held_out.agreement(new_scores)), ("learned", learned),
                            ("learned_length_matched", matched)):
            if share.total:
                metrics.update({f"heldout_{name}": share.value, f"heldout_{name}_low": share.low,
                                f"heldout_{name}_high": share.high})
        metrics["heldout_pairs"] = learned.total
        preference = held_out.length_preference(sets.train_groups + sets.eval_groups)
        metrics["feedback_shorter_share"] = preference.shorter_share
        metrics["feedback_about_length"] = preference.is_about_length
        text_ids = loaded.tokenizer.encode(fluency_text())
        with as_parent():
            metrics["perplexity_parent"] = perplexity(parent_model, text_ids)
        metrics["perplexity_new"] = perplexity(loaded.model, text_ids)
        prompts = (sets.eval_prompts or sets.train_prompts)[: s.num_eval_prompts]
        comparison = None
        samples: list[dict[str, str]] = []
        if prompts:
            rows = len(prompts)
            max_cached = rows * (s.max_prompt_tokens + s.max_reply_tokens + 16)
            policy_engine = LLMEngine(loaded, max_batch_size=rows, max_cached_tokens=max_cached)
            parent_engine = None if parent_loaded is None else LLMEngine(parent_loaded, max_batch_size=rows,
                                                                         max_cached_tokens=max_cached)
            with self.accelerator.autocast():
                comparison = compare_with_parent(policy_engine, parent_engine, reward_model, prompts, pad_id,
                                                 s.max_reply_tokens, s.temperature, seed=s.seed + 1)
            metrics.update(comparison.metrics())
            samples = comparison.samples
        verdict = held_out.decide_activation(learned, matched, comparison.length_change if comparison else None, preference)
        metrics["activation_reason"] = verdict.reason
        self.timed("evaluate", started)
        return metrics, verdict, samples

    def save_version(self, loaded, metrics: dict[str, Any], activate: bool) -> tuple[str, str]:
        from engine.loading import ModelStore

        name = version_name(self.base, self.settings.algo if self.state.get("policy_ran") else "sft", self.run_id or 0)
        model_store = ModelStore(self.models_dir)
        if model_store.has(name):  # written by an attempt killed before it registered it
            path = model_store.path_of(name)
        else:
            # Stored as its changes to the base (engine.loading.delta): the weights that
            # differ from the base's, and each adapter as its two factors (scale folded in).
            adapters = {f"{n}.weight": (m.lora_b.detach() * m.scaling, m.lora_a.detach())
                        for n, m in loaded.model.named_modules() if isinstance(m, lora.LoRALinear) and m.enabled}
            weights = {k.replace(".base.", "."): v for k, v in loaded.model.state_dict().items()
                       if not k.endswith((".lora_a", ".lora_b"))}
            path = model_store.save_model(loaded, name, source="trained", state_dict=weights, low_rank=adapters,
                                          base=self.base.path, info={"parent": self.base.name, "run_id": self.run_id})
        version = self.store.register_model_version(
            name, str(path), source="train", parent_id=self.base.version_id,
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, activate=activate,
        )
        return version.name, str(path)
