"""PPO for language models, the InstructGPT recipe with the details that matter.

One PPO step:
1. Rollouts: the engine samples n replies per prompt from the current policy (plain
   sampling at `temperature`, no top-k/top-p/penalties, so that the sampling
   distribution is exactly softmax(logits / T), the distribution the loss assumes).
2. Scoring, without gradients: the reward model's score of each full reply (minus a
   penalty when it hit max length without ending); per-token log-probs of the policy
   ("old") and of the frozen reference, both from logits / T; the value model's values.
3. Rewards: -beta * (log pi - log pi_ref) on every reply token, plus the score on the
   reply's last token; GAE (gamma 1, lambda 0.95) with the value after the last token
   taken as 0; advantages whitened over the batch's reply tokens.
4. Updates: a few epochs over shuffled minibatches of the rollouts, clipped policy loss
   (ratio clip 0.2) and clipped value loss, each model with its own optimizer and
   grad-norm clipping. Dropout stays off throughout (models in eval mode), so the "old"
   log-probs equal the first epoch's recomputed ones and the ratio starts at exactly 1.

The reference is either a frozen model or, with LoRA, the policy with its adapters
disabled. The value model is a ScalarHeadModel initialised from the reward model.
Per-row tensors are stored for the reply tokens only and scattered onto each minibatch's
grid, so rows can be regrouped freely. Conventions as in trainer/ops.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from engine.engine import LLMEngine
from engine.sampling import SamplingParams
from trainer import lora, ops
from trainer.batch import SequenceBatch, make_batch
from trainer.datasets import PromptExample, shard
from trainer.logprobs import ReplyScorer, first_reply_column, reply_logprobs
from trainer.progress import Progress, SilentProgress
from trainer.algorithms import get_algorithm
from trainer.runtime import check_finite, gather_mean, make_optimizer
from trainer.settings import TrainSettings
from trainer.trunk import Trunk, check_frozen, pad_rows, run_trunk, same_trunk


@dataclass
class PPOConfig:
    """PPO's knobs. A run builds it with `from_settings`; every default shared with the
    run's settings is TrainSettings' own, the rest are PPO's internals."""

    lr: float
    steps: int = get_algorithm("ppo").steps_cpu
    prompts_per_step: int = TrainSettings.prompts_per_step
    samples_per_prompt: int = TrainSettings.samples_per_prompt
    max_new_tokens: int = TrainSettings.max_reply_tokens
    temperature: float = TrainSettings.temperature
    ppo_epochs: int = TrainSettings.ppo_epochs
    minibatch_rows: int = TrainSettings.minibatch_rows
    value_lr: float = TrainSettings.value_lr
    kl_beta: float = TrainSettings.kl_beta
    adaptive_kl: bool = TrainSettings.adaptive_kl
    target_kl: float = TrainSettings.target_kl  # per-reply KL (summed over tokens) the adaptive controller aims at
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    no_eos_penalty: float = TrainSettings.no_eos_penalty  # subtracted from the score of a reply that never ended
    max_grad_norm: float = 1.0
    seed: int = TrainSettings.seed
    # Bottom layers frozen and identical in the policy, reference, value and reward models
    # (top-N training): run once per rollout row and reused by all four (trainer/trunk.py).
    trunk_layers: int = 0

    @classmethod
    def from_settings(cls, settings: TrainSettings, trunk_layers: int = 0) -> "PPOConfig":
        """From resolved settings (steps and policy_lr filled in)."""
        s = settings
        return cls(
            lr=s.policy_lr, steps=s.steps, prompts_per_step=s.prompts_per_step, samples_per_prompt=s.samples_per_prompt,
            max_new_tokens=s.max_reply_tokens, temperature=s.temperature, ppo_epochs=s.ppo_epochs,
            minibatch_rows=s.minibatch_rows, value_lr=s.value_lr, kl_beta=s.kl_beta, adaptive_kl=s.adaptive_kl,
            target_kl=s.target_kl, no_eos_penalty=s.no_eos_penalty, seed=s.seed, trunk_layers=trunk_layers,
        )


@dataclass
class Experience:
    """One rollout batch, scored. Per-row lists hold reply-token vectors (length = reply)."""

    prompts: list[list[int]]
    replies: list[list[int]]
    finished: list[bool]
    scores: torch.Tensor  # (N,) reward-model score, after the no-eos penalty
    raw_scores: torch.Tensor  # (N,) reward-model score as given
    old_logprobs: list[torch.Tensor]
    ref_logprobs: list[torch.Tensor]
    values: list[torch.Tensor]
    advantages: list[torch.Tensor] = field(default_factory=list)
    returns: list[torch.Tensor] = field(default_factory=list)
    kl: list[torch.Tensor] = field(default_factory=list)
    trunk_rows: list[torch.Tensor] = field(default_factory=list)  # (len_i, d) per row, when shared

    @property
    def num_rows(self) -> int:
        return len(self.replies)


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
# The trainer


class PPOTrainer:
    """Holds the policy, reference, value and reward models, the engine, and the optimizers.

    policy: a causal LM from engine/models (LoRA-wrapped or with frozen lower layers);
    the engine must generate with this same module. value_model and reward_model:
    ScalarHeadModels. reference: a frozen causal LM, or None to use the policy with its
    LoRA adapters disabled.
    """

    def __init__(
        self,
        policy: nn.Module,
        value_model: nn.Module,
        reward_model: nn.Module,
        engine: LLMEngine,
        config: PPOConfig,
        accelerator: Accelerator,
        pad_id: int,
        reference: nn.Module | None = None,
    ) -> None:
        if reference is None and not lora.has_lora(policy):
            raise ValueError("PPO needs a frozen reference model unless the policy has LoRA adapters")
        if engine.model is not policy:
            raise ValueError("the engine must generate with the policy module being trained")
        if config.trunk_layers:
            check_frozen(policy, config.trunk_layers)
            check_frozen(value_model, config.trunk_layers)
            shared = [policy, value_model, reward_model] + ([reference] if reference is not None else [])
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
        self.value_optimizer = make_optimizer(value_model, config.value_lr)
        self.scorer, self.policy_optimizer, self.value_model, self.value_optimizer = accelerator.prepare(
            ReplyScorer(policy), self.policy_optimizer, value_model, self.value_optimizer
        )
        # Dropout off everywhere, including during updates: PPO's ratio must start at 1.
        self.scorer.eval()
        self.value_model.eval()
        if config.adaptive_kl:
            self.kl_controller: Any = ops.AdaptiveKLController(config.kl_beta, config.target_kl, config.kl_horizon)
        else:
            self.kl_controller = ops.FixedKLController(config.kl_beta)
        self.step_count = 0

    # -- checkpoint state ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs besides the policy weights: value model, optimizers, beta."""
        return {
            "value_model": self.accelerator.unwrap_model(self.value_model).state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "value_optimizer": self.value_optimizer.state_dict(),
            "kl_beta": self.kl_controller.beta,
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accelerator.unwrap_model(self.value_model).load_state_dict(state["value_model"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])
        self.kl_controller.beta = state["kl_beta"]
        self.step_count = state["step"]

    # -- 1. rollouts -----------------------------------------------------------------------

    def sampling_params(self, seed: int) -> SamplingParams:
        return SamplingParams(
            temperature=self.config.temperature, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
            max_new_tokens=self.config.max_new_tokens, n=self.config.samples_per_prompt, logprobs=True, seed=seed,
        )

    @torch.no_grad()
    def rollout(self, prompts: list[PromptExample], seed: int) -> tuple[list[list[int]], list[list[int]], list[bool], list[list[float]]]:
        """(prompts, replies, finished, engine log-probs), one row per sample.

        A reply that ended holds its stop token as its last token; one that hit
        max_new_tokens has none and is marked unfinished.
        """
        # A distinct seed per prompt: one shared seed would give every prompt the same
        # random stream, and near-identical replies from a policy that ignores its prompt.
        params = [self.sampling_params(seed * 1_009 + i) for i in range(len(prompts))]
        outputs = self.engine.generate([p.prompt_ids for p in prompts], params)
        rows_prompt, rows_reply, finished, logprobs = [], [], [], []
        for prompt, output in zip(prompts, outputs):
            for completion in output.completions:
                if not completion.token_ids:
                    continue
                rows_prompt.append(prompt.prompt_ids)
                rows_reply.append(list(completion.token_ids))
                finished.append(completion.finish_reason == "stop")
                logprobs.append(list(completion.logprobs or []))
        return rows_prompt, rows_reply, finished, logprobs

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
    def make_experience(self, prompts: list[list[int]], replies: list[list[int]], finished: list[bool]) -> Experience:
        device = self.accelerator.device
        rows = self.config.minibatch_rows
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
                values = value_grid(self.value_model, batch, first, trunk)
                raw_scores.append(self.reward_model(batch.input_ids, batch.lengths, trunk).float().cpu())
            old_rows += from_grid(old, batch, first)
            ref_rows += from_grid(ref, batch, first)
            value_rows += from_grid(values, batch, first)
        raw = torch.cat(raw_scores)
        penalty = torch.tensor([0.0 if f else self.config.no_eos_penalty for f in finished])
        return Experience(prompts, replies, finished, raw - penalty, raw, old_rows, ref_rows, value_rows, trunk_rows=trunk_rows)

    def compute_advantages(self, exp: Experience) -> None:
        """KL-penalised rewards, GAE, and batch-whitened advantages, filled into `exp`."""
        width = max(len(r) for r in exp.replies)
        mask = torch.zeros(exp.num_rows, width)
        pad = lambda vectors: torch.stack([torch.nn.functional.pad(v, (0, width - len(v))) for v in vectors])  # noqa: E731
        for row, reply in enumerate(exp.replies):
            mask[row, : len(reply)] = 1.0
        old, ref, values = pad(exp.old_logprobs), pad(exp.ref_logprobs), pad(exp.values)
        rewards, kl = ops.kl_penalised_rewards(exp.scores, old, ref, mask, self.kl_controller.beta)
        advantages, returns = ops.gae(rewards, values, mask, self.config.gamma, self.config.lam)
        advantages = ops.masked_whiten(advantages, mask)
        lengths = [len(r) for r in exp.replies]
        exp.advantages = [advantages[i, :n] for i, n in enumerate(lengths)]
        exp.returns = [returns[i, :n] for i, n in enumerate(lengths)]
        exp.kl = [kl[i, :n] for i, n in enumerate(lengths)]

    # -- 4. updates ----------------------------------------------------------------------------

    def minibatch_losses(self, exp: Experience, index: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        device = self.accelerator.device
        batch = make_batch([exp.prompts[i] for i in index], [exp.replies[i] for i in index], self.pad_id, device)
        first = first_reply_column(batch)
        trunk = None
        if self.config.trunk_layers:
            trunk = pad_rows([exp.trunk_rows[i] for i in index], self.config.trunk_layers, batch.input_ids.shape[1])
        with self.accelerator.autocast():
            current = reply_logprobs(self.scorer, batch, self.config.temperature, with_entropy=True, trunk=trunk)
            values = value_grid(self.value_model, batch, first, trunk).float()
        width = current.logprobs.shape[1]
        pick = lambda name: to_grid([getattr(exp, name)[i] for i in index], batch, first, width)  # noqa: E731
        mask = current.mask
        policy_loss, policy_stats = ops.clipped_policy_loss(
            current.logprobs, pick("old_logprobs"), pick("advantages"), mask, self.config.clip
        )
        value_loss, value_stats = ops.clipped_value_loss(values, pick("values"), pick("returns"), mask, self.config.value_clip)
        stats = {
            "policy_loss": float(policy_loss.detach()),
            "value_loss": float(value_loss.detach()),
            "clip_fraction": float(policy_stats["clip_fraction"]),
            "approx_kl": float(policy_stats["approx_kl"]),
            "value_clip_fraction": float(value_stats["value_clip_fraction"]),
            "entropy": float(ops.masked_mean(current.entropy, mask)),
        }
        return policy_loss, value_loss, stats

    def update(self, exp: Experience, rng: random.Random) -> dict[str, float]:
        """PPO epochs over shuffled minibatches; returns the mean of each statistic."""
        totals: dict[str, float] = {}
        count = 0
        rows = list(range(exp.num_rows))
        for _ in range(self.config.ppo_epochs):
            rng.shuffle(rows)
            for start in range(0, len(rows), self.config.minibatch_rows):
                index = rows[start : start + self.config.minibatch_rows]
                with self.accelerator.accumulate(self.scorer, self.value_model):
                    policy_loss, value_loss, stats = self.minibatch_losses(exp, index)
                    check_finite(policy_loss, "PPO policy loss", self.step_count)
                    check_finite(value_loss, "PPO value loss", self.step_count)
                    self.accelerator.backward(policy_loss + value_loss)  # disjoint parameters
                    if self.accelerator.sync_gradients and self.config.max_grad_norm > 0:
                        self.accelerator.clip_grad_norm_(self.scorer.parameters(), self.config.max_grad_norm)
                        self.accelerator.clip_grad_norm_(self.value_model.parameters(), self.config.max_grad_norm)
                    self.policy_optimizer.step()
                    self.value_optimizer.step()
                    self.policy_optimizer.zero_grad()
                    self.value_optimizer.zero_grad()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                count += 1
        return {k: v / max(count, 1) for k, v in totals.items()}

    # -- the loop ------------------------------------------------------------------------------

    def step(self, prompts: list[PromptExample]) -> dict[str, float]:
        """One rollout + update; returns this step's metrics (averaged over processes)."""
        seed = (self.config.seed * 1_000_003 + self.step_count * 7_919 + self.accelerator.process_index * 104_729) % (1 << 31)
        rng = random.Random(seed)
        rows_prompt, rows_reply, finished, _ = self.rollout(prompts, seed)
        if not rows_reply:
            raise ValueError("the engine returned no replies")
        exp = self.make_experience(rows_prompt, rows_reply, finished)
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
        check_finite(metrics["reward"], "PPO reward", self.step_count)
        self.kl_controller.update(metrics["kl"], len(rows_reply) * self.accelerator.num_processes)
        self.step_count += 1
        return metrics

    def train(
        self,
        prompts: list[PromptExample],
        progress: Progress | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run PPO steps until `config.steps`, from `self.step_count` (non-zero when resumed).

        Each step draws `prompts_per_step` prompts (seeded by the step number, so a resumed
        run draws what the uninterrupted one would) from this process's shard.
        """
        progress = progress or SilentProgress()
        mine = shard(prompts, self.accelerator.process_index, self.accelerator.num_processes)
        if not mine:
            raise ValueError("PPO has no prompts to roll out")
        phase = progress.phase("ppo", self.config.steps)
        phase.advance(self.step_count)
        history = []
        try:
            while self.step_count < self.config.steps:
                rng = random.Random(self.config.seed * 7_919 + self.step_count)
                chosen = rng.sample(mine, min(self.config.prompts_per_step, len(mine)))
                metrics = self.step(chosen)
                history.append(metrics)
                phase.advance(1, {k: metrics[k] for k in ("reward", "kl", "entropy", "clip_fraction", "reply_length")})
                if on_step is not None:
                    on_step(self.step_count, metrics)
        finally:
            phase.close()
        return history
