"""Direct preference optimisation on comparison groups: the offline alternative to PPO.

The reference is the policy as it stands when DPO starts (after SFT, if SFT ran): its
reply log-probs are computed once up front, so no second copy of the model is kept. With
LoRA they are computed with the adapters disabled, which is the same model. Each step
scores every distinct reply of a few prompts once and applies, all from trainer/ops.py:

* the DPO loss to every pair of those prompts (rankings, thumbs, and the replies the
  user wrote over the model's own samples);
* a KTO term to every lone thumbs (a reply voted up or down with no sibling to compare
  it with), against the batch's reference point;
* the per-token NLL of each prompt's best replies (preferred and never rejected, or voted
  up), which holds preferred text up while the margin grows.

The reference log-probs must be computed the way training computes the policy's, under
the same autocast, or the loss does not start at ln 2 (a bf16 policy against an fp32
reference already disagrees at step 0).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import nn

from trainer import lora, ops
from trainer.batch import make_batch
from trainer.datasets import ComparisonGroup, batches_per_epoch, epoch_batches
from trainer.logprobs import ReplyScorer, reply_logprobs
from trainer.progress import Progress, SilentProgress
from trainer.reward_training import flatten_groups, flatten_labels, row_keys
from trainer.runtime import gather_mean, make_optimizer, train_step
from trainer.settings import TrainSettings
from trainer.trunk import TrunkCache


@dataclass
class DPOConfig:
    """DPO's knobs. A run builds it with `from_settings`; every default shared with the
    run's settings is TrainSettings' own."""

    lr: float
    epochs: int = 1
    beta: float = TrainSettings.dpo_beta
    label_smoothing: float = 0.0
    groups_per_batch: int = 4
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = TrainSettings.seed
    max_steps: int | None = None  # stop early after this many optimizer steps
    trunk_layers: int = 0  # frozen bottom layers: run once per reply and cached
    # Weight of the per-token NLL of each group's best reply, added to the DPO loss (see
    # TrainSettings.dpo_nll_weight).
    nll_weight: float = TrainSettings.dpo_nll_weight
    kto_weight: float = TrainSettings.kto_weight  # weight of the KTO term on lone thumbs

    @classmethod
    def from_settings(cls, settings: TrainSettings, trunk_layers: int = 0) -> "DPOConfig":
        """From resolved settings (steps and policy_lr filled in); `epochs` is set by the
        caller from the data size so that `max_steps` is reached."""
        return cls(lr=settings.policy_lr, beta=settings.dpo_beta, seed=settings.seed, max_steps=settings.steps,
                   trunk_layers=trunk_layers, nll_weight=settings.dpo_nll_weight, kto_weight=settings.kto_weight)


@dataclass
class DPOResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def summed_reply_logprobs(
    scorer: nn.Module, groups: list[ComparisonGroup], pad_id: int, device: torch.device, rows_per_batch: int = 8,
    trunks: TrunkCache | None = None,
) -> dict[int, torch.Tensor]:
    """group_key -> (num_replies,) summed reply log-probs, on the CPU."""
    out = {}
    for group in groups:
        sums = []
        for start in range(0, len(group.replies), rows_per_batch):
            replies = group.replies[start : start + rows_per_batch]
            batch = make_batch([group.prompt_ids] * len(replies), replies, pad_id, device)
            keys = [(group.group_key, i) for i in range(start, start + len(replies))]
            trunk = trunks.batch(keys, batch.input_ids, batch.lengths.tolist()) if trunks else None
            sums.append(reply_logprobs(scorer, batch, trunk=trunk).sums().float().cpu())
        out[group.group_key] = torch.cat(sums)
    return out


def reference_logprobs(
    policy: nn.Module, groups: list[ComparisonGroup], pad_id: int, device: torch.device, trunks: TrunkCache | None = None
) -> dict[int, torch.Tensor]:
    """The reference model's summed reply log-probs: the policy now, adapters off."""
    with lora.disabled(policy):
        return summed_reply_logprobs(ReplyScorer(policy), groups, pad_id, device, trunks=trunks)


def pair_tensors(groups: list[ComparisonGroup], reference: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row indices (P, 2) of preferred/other replies in the flattened batch and their
    reference log-probs (P,), (P,)."""
    _, _, pairs, _ = flatten_groups(groups)
    ref = torch.cat([reference[g.group_key] for g in groups])
    index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return index, ref[index[:, 0]], ref[index[:, 1]]


def best_reply_rows(pairs: torch.Tensor, label_rows: list[int] = (), labels: list[int] = ()) -> torch.Tensor:
    """Rows preferred in some pair and never the other side (each group's top reply: a
    ranking has one, thumbs alone can leave several), plus rows voted up alone."""
    preferred = set(pairs[:, 0].tolist()) - set(pairs[:, 1].tolist())
    preferred |= {row for row, label in zip(label_rows, labels) if label > 0}
    return torch.tensor(sorted(preferred), dtype=torch.long, device=pairs.device)


STAT_KEYS = ("chosen_reward", "rejected_reward", "reward_margin", "accuracy", "dpo_loss", "kto_loss", "kto_accuracy",
             "kto_reference_point", "best_nll")


def preference_loss(
    sums: torch.Tensor, reference: torch.Tensor, tokens: torch.Tensor, groups: list[ComparisonGroup], config: DPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO + KTO + NLL objective of the module docstring for one batch of groups.

    sums: summed reply log-probs of every flattened row (R,) under the policy; reference:
    the same under the reference (R,); tokens: each row's reply length (R,).
    """
    _, _, pairs, _ = flatten_groups(groups)
    label_rows, labels = flatten_labels(groups)
    index = torch.tensor(pairs, dtype=torch.long, device=sums.device).reshape(-1, 2)
    loss = sums.new_zeros(())
    # The same keys whatever the batch holds: processes average them key by key.
    zero = sums.new_zeros(()).detach()
    stats: dict[str, torch.Tensor] = {key: zero for key in STAT_KEYS}
    if len(index):
        dpo, dpo_stats = ops.dpo_loss(sums[index[:, 0]], sums[index[:, 1]], reference[index[:, 0]], reference[index[:, 1]],
                                      config.beta, config.label_smoothing)
        loss = loss + dpo
        stats.update(dpo_stats)
        stats["dpo_loss"] = dpo.detach()
    if label_rows and config.kto_weight > 0:
        rows = torch.tensor(label_rows, dtype=torch.long, device=sums.device)
        z0 = ops.kto_reference_point(sums, reference)
        kto, kto_stats = ops.kto_loss(sums[rows], reference[rows], torch.tensor(labels, device=sums.device), z0, config.beta)
        loss = loss + config.kto_weight * kto
        stats.update(kto_stats)
        stats["kto_loss"] = kto.detach()
    if config.nll_weight > 0:
        best = best_reply_rows(index, label_rows, labels)
        if len(best):
            nll = -(sums[best] / tokens[best].clamp(min=1)).mean()
            loss = loss + config.nll_weight * nll
            stats["best_nll"] = nll.detach()
    return loss, stats


def dpo_batch_loss(
    scorer: nn.Module, groups: list[ComparisonGroup], reference: dict[int, torch.Tensor], config: DPOConfig, pad_id: int,
    device: torch.device, trunks: TrunkCache | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    prompts, replies, _, _ = flatten_groups(groups)
    batch = make_batch(prompts, replies, pad_id, device)
    trunk = trunks.batch(row_keys(groups), batch.input_ids, batch.lengths.tolist()) if trunks else None
    scored = reply_logprobs(scorer, batch, trunk=trunk)
    ref = torch.cat([reference[g.group_key] for g in groups]).to(device)
    return preference_loss(scored.sums(), ref, scored.mask.sum(dim=1), groups, config)


@torch.no_grad()
def evaluate_dpo(
    policy: nn.Module, groups: list[ComparisonGroup], reference: dict[int, torch.Tensor], config: DPOConfig, pad_id: int, device: torch.device
) -> dict[str, float]:
    """Held-out implicit-reward accuracy and margin, and the mean change of reply log-prob."""
    groups = [g for g in groups if g.pairs]
    if not groups:
        return {}
    current = summed_reply_logprobs(ReplyScorer(policy), groups, pad_id, device)
    index, ref_chosen, ref_rejected = pair_tensors(groups, reference)
    now = torch.cat([current[g.group_key] for g in groups])
    loss, metrics = ops.dpo_loss(now[index[:, 0]], now[index[:, 1]], ref_chosen, ref_rejected, config.beta, config.label_smoothing)
    ref_all = torch.cat([reference[g.group_key] for g in groups])
    return {
        "loss": float(loss),
        "accuracy": float(metrics["accuracy"]),
        "reward_margin": float(metrics["reward_margin"]),
        "logprob_change": float((now - ref_all).mean()),
    }


def train_dpo(
    policy: nn.Module,
    train: list[ComparisonGroup],
    held_out: list[ComparisonGroup],
    config: DPOConfig,
    accelerator: Accelerator,
    pad_id: int,
    progress: Progress | None = None,
    start_step: int = 0,
    on_step: Callable[[int, torch.optim.Optimizer], None] | None = None,
    reference: dict[int, torch.Tensor] | None = None,
    optimizer_state: dict | None = None,
    trunks: TrunkCache | None = None,
) -> DPOResult:
    """Train `policy` (trainable parameters already chosen) in place with DPO.

    `reference` (from `reference_logprobs`) must be passed when resuming, since the policy
    has moved by then, with the saved `optimizer_state`; `on_step(step, optimizer)` runs
    after each optimizer step (that is where checkpoints are written). `trunks`: the frozen
    bottom layers' outputs already computed for these groups (with the reference), reused.
    """
    progress = progress or SilentProgress()
    if trunks is None and config.trunk_layers:
        trunks = TrunkCache(policy, config.trunk_layers)
    if reference is None:
        with accelerator.autocast():
            reference = reference_logprobs(policy, train + held_out, pad_id, accelerator.device, trunks)
    scorer = ReplyScorer(policy)
    optimizer = make_optimizer(scorer, config.lr, config.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    prepared, optimizer = accelerator.prepare(scorer, optimizer)
    prepared.eval()  # dropout off
    rng = random.Random(config.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    total = batches_per_epoch(len(train), config.groups_per_batch, world) * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    phase = progress.phase("dpo", total)
    phase.advance(min(start_step, total))
    history = []
    step = 0
    try:
        for chunk in epoch_batches(train, config.epochs, config.groups_per_batch, rng, rank, world):
            if step >= total:
                break
            if step < start_step:  # resuming: replay the shuffles, skip the work
                step += 1
                continue
            value, stats = train_step(
                accelerator, prepared, optimizer,
                lambda: dpo_batch_loss(prepared, chunk, reference, config, pad_id, accelerator.device, trunks),
                config.max_grad_norm, "DPO loss", step,
            )
            step += 1
            metrics = gather_mean(accelerator, {"loss": value, **{k: float(v) for k, v in stats.items()}})
            history.append(metrics)
            phase.advance(1, {"loss": metrics["loss"], "margin": metrics["reward_margin"]})
            if on_step is not None:
                on_step(step, optimizer)
    finally:
        phase.close()
    with accelerator.autocast():
        held = evaluate_dpo(policy, held_out, reference, config, pad_id, accelerator.device)
    metrics = {"steps": float(step)}
    if history:  # none when a resumed run had no steps left
        metrics["train_loss"] = history[-1]["loss"]
    metrics.update({f"eval_{k}": v for k, v in held.items()})
    return DPOResult(metrics, history)
