"""What the on-policy algorithms (PPO, RLOO) share: rollouts, scoring, clipped updates.

One step of either:
1. Rollouts: this process's prompts for the step (`datasets.step_items`), n plain samples
   each from the current policy (trainer/rollouts.py).
2. Scoring, without gradients: per-token log-probs of the policy ("old") and of the
   reference, both from logits / T; the reward model's score of each reply, standardised
   by the mean and spread of the scores of the first step's rollouts (which come from the
   reference policy), so the KL coefficient and the no-end penalty mean the same whatever
   scale the reward model happened to learn; a value model's values when there is one.
3. Advantages: the algorithm's own (`compute_advantages`: GAE in ppo.py, leave-one-out in
   rloo.py).
4. Updates: epochs over shuffled minibatches of the rollouts with the clipped policy
   loss (plus the algorithm's extra loss, e.g. PPO's value loss), one optimizer step
   per minibatch. Dropout stays off throughout (models in eval mode), so the "old"
   log-probs equal the first epoch's recomputed ones and the ratio starts at exactly 1.

The reference is either a frozen model or, with LoRA, the policy with its adapters
disabled. Per-row tensors are stored for the reply tokens only and scattered onto each
minibatch's grid, so rows can be regrouped freely. Conventions as in trainer/ops.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from engine.engine import LLMEngine
from trainer import lora, ops
from trainer.batch import SequenceBatch, make_batch
from trainer.datasets import PromptExample, step_items
from trainer.logprobs import ReplyScorer, first_reply_column, reply_logprobs
from trainer.progress import Progress, SilentProgress
from trainer.rollouts import Rollouts, sample_rollouts
from trainer.runtime import check_finite, gather_mean, make_optimizer
from trainer.trunk import Trunk, check_frozen, pad_rows, run_trunk, same_trunk


@dataclass
class Experience:
    """One rollout batch, scored. Per-row lists hold reply-token vectors (length = reply)."""

    prompts: list[list[int]]
    replies: list[list[int]]
    finished: list[bool]
    prompt_index: list[int]  # which of the step's prompts each row answers
    scores: torch.Tensor  # (N,) standardised reward-model score, after the no-end penalty
    raw_scores: torch.Tensor  # (N,) reward-model score as given
    old_logprobs: list[torch.Tensor]
    ref_logprobs: list[torch.Tensor]
    values: list[torch.Tensor] = field(default_factory=list)
    advantages: list[torch.Tensor] = field(default_factory=list)
    returns: list[torch.Tensor] = field(default_factory=list)
    kl: list[torch.Tensor] = field(default_factory=list)
    trunk_rows: list[torch.Tensor] = field(default_factory=list)  # (len_i, d) per row, when shared

    @property
    def num_rows(self) -> int:
        return len(self.replies)

    def padded(self, vectors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row reply vectors as a right-padded (N, longest) grid, and its mask."""
        width = max(len(r) for r in self.replies)
        mask = torch.zeros(self.num_rows, width)
        grid = torch.zeros(self.num_rows, width)
        for row, vector in enumerate(vectors):
            mask[row, : len(vector)] = 1.0
            grid[row, : len(vector)] = vector
        return grid, mask

    def unpad(self, grid: torch.Tensor) -> list[torch.Tensor]:
        return [grid[i, : len(r)] for i, r in enumerate(self.replies)]


class RewardScale:
    """Standardises reward-model scores by the mean and spread of the first batch it sees
    (the reference policy's rollouts). The spread is floored, so a reward model that
    scores every reply alike does not turn its noise into large rewards."""

    MIN_SPREAD = 1e-2

    def __init__(self) -> None:
        self.mean: float | None = None
        self.std = 1.0

    def fit(self, raw: torch.Tensor) -> None:
        self.mean = float(raw.mean())
        self.std = max(float(raw.std()) if len(raw) > 1 else 0.0, self.MIN_SPREAD)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            self.fit(raw)
        return (raw - self.mean) / self.std

    def state_dict(self) -> dict[str, float | None]:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.mean, self.std = state["mean"], float(state["std"] or 1.0)


# ---------------------------------------------------------------------------------------
# Moving per-row reply vectors to and from a batch's cropped grid


def reply_slices(batch: SequenceBatch, first: int) -> list[slice]:
    """For each row, the columns of the cropped grid (starting at `first`) that predict its
    reply tokens: [prompt_len - 1 - first, prompt_len - 1 - first + reply_len)."""
    starts = (batch.prompt_lengths - 1 - first).tolist()
    return [slice(s, s + n) for s, n in zip(starts, batch.reply_lengths.tolist())]


def to_grid(vectors: list[torch.Tensor], batch: SequenceBatch, first: int, width: int) -> torch.Tensor:
    """Scatter per-row reply vectors onto a (B, width) zero grid."""
    grid = torch.zeros(len(vectors), width, device=batch.input_ids.device)
    for row, (vector, cols) in enumerate(zip(vectors, reply_slices(batch, first))):
        grid[row, cols] = vector.to(grid.device, grid.dtype)
    return grid


def from_grid(grid: torch.Tensor, batch: SequenceBatch, first: int) -> list[torch.Tensor]:
    """Per-row reply vectors out of a (B, L) grid, on the CPU."""
    return [grid[row, cols].detach().float().cpu() for row, cols in enumerate(reply_slices(batch, first))]


def value_grid(value_model: nn.Module, batch: SequenceBatch, first: int, trunk: Trunk | None = None) -> torch.Tensor:
    """Values on the cropped grid: column c is V(state up to token first + c), (B, L)."""
    return value_model(batch.input_ids, None, trunk)[:, first:-1]


# ---------------------------------------------------------------------------------------
# The shared trainer


class OnPolicyTrainer:
    """Holds the policy, reference, reward model (and value model), the engine, and the
    optimizers; subclasses say how advantages are estimated and what else the loss has.

    policy: a causal LM from engine/models (LoRA-wrapped or with frozen lower layers);
    the engine must generate with this same module. reward_model, value_model:
    ScalarHeadModels (value_model None for algorithms without one). reference: a frozen
    causal LM, or None to use the policy with its LoRA adapters disabled. The config has
    the fields of ppo.PPOConfig.
    """

    name = "on-policy"

    def __init__(
        self,
        policy: nn.Module,
        reward_model: nn.Module,
        engine: LLMEngine,
        config: Any,
        accelerator: Accelerator,
        pad_id: int,
        reference: nn.Module | None = None,
        value_model: nn.Module | None = None,
    ) -> None:
        if reference is None and not lora.has_lora(policy):
            raise ValueError(f"{self.name} needs a frozen reference model unless the policy has LoRA adapters")
        if engine.model is not policy:
            raise ValueError("the engine must generate with the policy module being trained")
        if config.trunk_layers:
            check_frozen(policy, config.trunk_layers)
            if value_model is not None:
                check_frozen(value_model, config.trunk_layers)
            shared = [policy, reward_model] + [m for m in (value_model, reference) if m is not None]
            if not same_trunk(shared, config.trunk_layers):
                raise ValueError(f"the bottom {config.trunk_layers} layers differ between the models; cannot share them")
        self.config = config
        self.accelerator = accelerator
        self.pad_id = pad_id
        self.engine = engine
        self.policy = policy
        self.reference = reference
        # The reward model and the reference are only ever run under no_grad; their
        # requires_grad flags are left alone (the value model may be a copy of the former).
        self.reward_model = reward_model.eval()
        if reference is not None:
            reference.eval()
        self.policy_optimizer = make_optimizer(policy, config.lr)
        self.value_optimizer = make_optimizer(value_model, config.value_lr) if value_model is not None else None
        if value_model is not None:
            self.scorer, self.policy_optimizer, self.value_model, self.value_optimizer = accelerator.prepare(
                ReplyScorer(policy), self.policy_optimizer, value_model, self.value_optimizer
            )
            self.value_model.eval()
        else:
            self.scorer, self.policy_optimizer = accelerator.prepare(ReplyScorer(policy), self.policy_optimizer)
            self.value_model = None
        # Dropout off everywhere, including during updates: the ratio must start at 1.
        self.scorer.eval()
        if config.adaptive_kl:
            self.kl_controller: Any = ops.AdaptiveKLController(config.kl_beta, config.target_kl, config.kl_horizon)
        else:
            self.kl_controller = ops.FixedKLController(config.kl_beta)
        self.reward_scale = RewardScale()
        self.step_count = 0

    # -- checkpoint state ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs besides the policy weights."""
        state = {
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "kl_beta": self.kl_controller.beta,
            "reward_scale": self.reward_scale.state_dict(),
            "step": self.step_count,
        }
        if self.value_model is not None:
            state["value_model"] = self.accelerator.unwrap_model(self.value_model).state_dict()
            state["value_optimizer"] = self.value_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.kl_controller.beta = state["kl_beta"]
        self.reward_scale.load_state_dict(state["reward_scale"])
        self.step_count = state["step"]
        if self.value_model is not None:
            self.accelerator.unwrap_model(self.value_model).load_state_dict(state["value_model"])
            self.value_optimizer.load_state_dict(state["value_optimizer"])

    # -- 1. rollouts -----------------------------------------------------------------------

    def rollout(self, prompts: list[PromptExample], seed: int) -> Rollouts:
        """`samples_per_prompt` plain samples per prompt. A reply that ended holds its stop
        token as its last token; one that hit max_new_tokens has none and is unfinished."""
        c = self.config
        return sample_rollouts(self.engine, [p.prompt_ids for p in prompts], c.samples_per_prompt, c.max_new_tokens,
                               c.temperature, seed, logprobs=True)

    # -- 2. scoring --------------------------------------------------------------------------

    @torch.no_grad()
    def policy_and_reference_logprobs(
        self, batch: SequenceBatch, trunk: Trunk | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(old logp, reference logp, mask) on the cropped grid, and its first column."""
        T = self.config.temperature
        with self.accelerator.autocast():
            old = reply_logprobs(self.scorer, batch, T, trunk=trunk)
            if self.reference is None:
                with lora.disabled(self.policy):
                    ref = reply_logprobs(self.scorer, batch, T, trunk=trunk)
            else:
                ref = reply_logprobs(ReplyScorer(self.reference), batch, T, trunk=trunk)
        return old.logprobs, ref.logprobs, old.mask, old.first_column

    @torch.no_grad()
    def make_experience(self, rollouts: Rollouts) -> Experience:
        device = self.accelerator.device
        rows = self.config.minibatch_rows
        prompts, replies = rollouts.prompts, rollouts.replies
        raw_scores, old_rows, ref_rows, value_rows, trunk_rows = [], [], [], [], []
        for start in range(0, len(replies), rows):
            batch = make_batch(prompts[start : start + rows], replies[start : start + rows], self.pad_id, device)
            trunk = None
            if self.config.trunk_layers:
                with self.accelerator.autocast():
                    trunk = run_trunk(self.policy, batch.input_ids, self.config.trunk_layers)
                trunk_rows += [trunk.hidden[i, :n] for i, n in enumerate(batch.lengths.tolist())]
            old, ref, mask, first = self.policy_and_reference_logprobs(batch, trunk)
            with self.accelerator.autocast():
                if self.value_model is not None:
                    value_rows += from_grid(value_grid(self.value_model, batch, first, trunk), batch, first)
                raw_scores.append(self.reward_model(batch.input_ids, batch.lengths, trunk).float().cpu())
            old_rows += from_grid(old, batch, first)
            ref_rows += from_grid(ref, batch, first)
        raw = torch.cat(raw_scores)
        penalty = torch.tensor([0.0 if f else self.config.no_eos_penalty for f in rollouts.finished])
        scores = self.reward_scale(raw) - penalty
        return Experience(prompts, replies, list(rollouts.finished), list(rollouts.prompt_index), scores, raw,
                          old_rows, ref_rows, value_rows, trunk_rows=trunk_rows)

    # -- 3. advantages (the algorithm's) ------------------------------------------------------

    def compute_advantages(self, exp: Experience) -> None:
        """Fill exp.advantages and exp.kl (and exp.returns where a value model learns)."""
        raise NotImplementedError

    def extra_loss(self, exp: Experience, index: list[int], batch: SequenceBatch, first: int, trunk: Trunk | None,
                   mask: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, float]]:
        """A loss beside the policy's (PPO's value loss), or None."""
        return None, {}

    # -- 4. updates ----------------------------------------------------------------------------

    def minibatch_losses(self, exp: Experience, index: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        device = self.accelerator.device
        batch = make_batch([exp.prompts[i] for i in index], [exp.replies[i] for i in index], self.pad_id, device)
        first = first_reply_column(batch)
        trunk = None
        if self.config.trunk_layers:
            trunk = pad_rows([exp.trunk_rows[i] for i in index], self.config.trunk_layers, batch.input_ids.shape[1])
        with self.accelerator.autocast():
            current = reply_logprobs(self.scorer, batch, self.config.temperature, trunk=trunk)
        width = current.logprobs.shape[1]
        pick = lambda name: to_grid([getattr(exp, name)[i] for i in index], batch, first, width)  # noqa: E731
        mask = current.mask
        policy_loss, policy_stats = ops.clipped_policy_loss(
            current.logprobs, pick("old_logprobs"), pick("advantages"), mask, self.config.clip
        )
        stats = {
            "policy_loss": float(policy_loss.detach()),
            "clip_fraction": float(policy_stats["clip_fraction"]),
            "approx_kl": float(policy_stats["approx_kl"]),
        }
        extra, extra_stats = self.extra_loss(exp, index, batch, first, trunk, mask)
        stats.update(extra_stats)
        return (policy_loss if extra is None else policy_loss + extra), stats

    def update(self, exp: Experience, rng: random.Random) -> dict[str, float]:
        """Epochs over shuffled minibatches; returns the mean of each statistic."""
        totals: dict[str, float] = {}
        count = 0
        rows = list(range(exp.num_rows))
        models = [self.scorer] + ([self.value_model] if self.value_model is not None else [])
        optimizers = [self.policy_optimizer] + ([self.value_optimizer] if self.value_optimizer is not None else [])
        for _ in range(self.config.ppo_epochs):
            rng.shuffle(rows)
            for start in range(0, len(rows), self.config.minibatch_rows):
                index = rows[start : start + self.config.minibatch_rows]
                with self.accelerator.accumulate(*models):
                    loss, stats = self.minibatch_losses(exp, index)
                    check_finite(loss, f"{self.name} loss", self.step_count)
                    self.accelerator.backward(loss)  # the models' parameters are disjoint
                    if self.accelerator.sync_gradients and self.config.max_grad_norm > 0:
                        for model in models:
                            self.accelerator.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
                    for optimizer in optimizers:
                        optimizer.step()
                        optimizer.zero_grad()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                count += 1
        return {k: v / max(count, 1) for k, v in totals.items()}

    # -- the loop ------------------------------------------------------------------------------

    def step(self, prompts: list[PromptExample]) -> dict[str, float]:
        """One rollout + update; returns this step's metrics (averaged over processes)."""
        seed = (self.config.seed * 1_000_003 + self.step_count * 7_919 + self.accelerator.process_index * 104_729) % (1 << 31)
        rng = random.Random(seed)
        rollouts = self.rollout(prompts, seed)
        if not rollouts.replies:
            raise ValueError("the engine returned no replies")
        exp = self.make_experience(rollouts)
        self.compute_advantages(exp)
        stats = self.update(exp, rng)
        sequence_kl = torch.stack([k.sum() for k in exp.kl])
        metrics = {
            "reward": float(exp.raw_scores.mean()),
            "score": float(exp.scores.mean()),
            "kl": float(sequence_kl.mean()),
            "reply_length": float(sum(len(r) for r in exp.replies) / exp.num_rows),
            "no_eos_fraction": float(1.0 - sum(exp.finished) / exp.num_rows),
            "kl_beta": float(self.kl_controller.beta),
            **stats,
        }
        metrics = gather_mean(self.accelerator, metrics)
        check_finite(metrics["reward"], f"{self.name} reward", self.step_count)
        self.kl_controller.update(metrics["kl"], exp.num_rows * self.accelerator.num_processes)
        self.step_count += 1
        return metrics

    def train(
        self,
        prompts: list[PromptExample],
        progress: Progress | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run steps until `config.steps`, from `self.step_count` (non-zero when resumed).

        Each step takes this process's share of the step's prompts (`datasets.step_items`):
        processes get different prompts, and a resumed run draws what the uninterrupted one
        would.
        """
        if not prompts:
            raise ValueError(f"{self.name} has no prompts to roll out")
        progress = progress or SilentProgress()
        phase = progress.phase(self.name.lower(), self.config.steps)
        phase.advance(self.step_count)
        history = []
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        per_process = min(self.config.prompts_per_step, math.ceil(len(prompts) / world))
        try:
            while self.step_count < self.config.steps:
                chosen = step_items(prompts, self.step_count, per_process, rank, world, self.config.seed)
                metrics = self.step(chosen)
                history.append(metrics)
                phase.advance(1, {k: metrics[k] for k in ("reward", "kl", "clip_fraction", "reply_length") if k in metrics})
                if on_step is not None:
                    on_step(self.step_count, metrics)
        finally:
            phase.close()
        return history
