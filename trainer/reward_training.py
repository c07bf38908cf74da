"""Training and evaluating the reward model on comparison groups (Bradley-Terry).

One step takes a few prompts' groups, scores every distinct reply once, and applies
-log sigmoid(r_preferred - r_other) to each pair, each prompt weighted equally however many
pairs its ranking has. Held-out pair accuracy is the share of held-out pairs the model
orders like the user did.

Runs under accelerate: groups are sharded over processes, gradients averaged by the
prepared (DDP-wrapped) model. The model itself is built in reward_model.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import nn

from trainer import ops
from trainer.batch import make_batch
from trainer.datasets import ComparisonGroup, batches_per_epoch, epoch_batches
from trainer.progress import Progress, SilentProgress
from trainer.runtime import gather_mean, make_optimizer, train_step
from trainer.settings import TrainSettings
from trainer.trunk import TrunkCache


@dataclass
class RewardTrainingConfig:
    """The reward model's knobs. A run builds it with `from_settings`; shared defaults
    are TrainSettings'."""

    epochs: int = 1
    lr: float = TrainSettings.reward_lr
    groups_per_batch: int = TrainSettings.minibatch_rows // 2
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = TrainSettings.seed
    eval_rows_per_batch: int = 16
    trunk_layers: int = 0  # bottom layers that are frozen: computed once per reply, cached

    @classmethod
    def from_settings(cls, settings: TrainSettings, trunk_layers: int = 0) -> "RewardTrainingConfig":
        """From resolved settings (reward_epochs filled in)."""
        return cls(epochs=settings.reward_epochs, lr=settings.reward_lr, groups_per_batch=max(1, settings.minibatch_rows // 2),
                   seed=settings.seed, trunk_layers=trunk_layers)


@dataclass
class RewardTrainingResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def row_keys(groups: list[ComparisonGroup]) -> list[tuple[int, int]]:
    """(group key, reply index) of each row of `flatten_groups`, to cache rows under."""
    return [(g.group_key, i) for g in groups for i in range(len(g.replies))]


def flatten_groups(groups: list[ComparisonGroup]) -> tuple[list[list[int]], list[list[int]], list[tuple[int, int]], list[float]]:
    """Rows (prompt, reply) of every reply, and the pairs as row indices with their weights."""
    prompts, replies, pairs, weights = [], [], [], []
    for group in groups:
        offset = len(replies)
        for reply in group.replies:
            prompts.append(group.prompt_ids)
            replies.append(reply)
        for preferred, other in group.pairs:
            pairs.append((offset + preferred, offset + other))
            weights.append(1.0 / group.num_pairs)
    return prompts, replies, pairs, weights


def flatten_labels(groups: list[ComparisonGroup]) -> tuple[list[int], list[int]]:
    """Rows of `flatten_groups` that carry a lone thumbs, and their labels (+1 / -1)."""
    rows, labels, offset = [], [], 0
    for group in groups:
        for index, label in sorted(group.labels.items()):
            rows.append(offset + index)
            labels.append(label)
        offset += len(group.replies)
    return rows, labels


def groups_loss(
    model: nn.Module, groups: list[ComparisonGroup], pad_id: int, device: torch.device, trunks: TrunkCache | None = None,
    pointwise_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry loss and pair accuracy of one batch of groups, plus the pointwise term
    on lone thumbs: -log sigmoid(label * score), so a reply voted up alone scores above 0
    and one voted down below (pairs fix only differences; the thumbs anchor the level)."""
    prompts, replies, pairs, weights = flatten_groups(groups)
    batch = make_batch(prompts, replies, pad_id, device)
    trunk = trunks.batch(row_keys(groups), batch.input_ids, batch.lengths.tolist()) if trunks else None
    scores = model(batch.input_ids, batch.lengths, trunk)  # (rows,)
    loss = scores.new_zeros(())
    accuracy = scores.new_zeros(())
    if pairs:
        index = torch.tensor(pairs, dtype=torch.long, device=device)  # (P, 2)
        loss, accuracy = ops.bradley_terry_loss(scores[index[:, 0]], scores[index[:, 1]], torch.tensor(weights, device=device))
    label_rows, labels = flatten_labels(groups)
    if label_rows and pointwise_weight > 0:
        signed = scores[torch.tensor(label_rows, device=device)] * torch.tensor(labels, device=device, dtype=scores.dtype)
        loss = loss - pointwise_weight * torch.nn.functional.logsigmoid(signed).mean()
    return loss, accuracy


@torch.no_grad()
def score_rows(
    model: nn.Module, prompts: list[list[int]], replies: list[list[int]], pad_id: int, device: torch.device, rows_per_batch: int = 16
) -> torch.Tensor:
    """Reward of each (prompt, reply) row, (N,) float32 on the CPU."""
    out = []
    # Sorting by length keeps padding low; the result is put back in the input order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(replies[i]))
    for start in range(0, len(order), rows_per_batch):
        chunk = order[start : start + rows_per_batch]
        batch = make_batch([prompts[i] for i in chunk], [replies[i] for i in chunk], pad_id, device)
        out.append(model(batch.input_ids, batch.lengths).float().cpu())
    scores = torch.empty(len(prompts))
    if out:
        scores[torch.tensor(order)] = torch.cat(out)
    return scores


@torch.no_grad()
def pair_accuracy(
    model: nn.Module, groups: list[ComparisonGroup], pad_id: int, device: torch.device, rows_per_batch: int = 16
) -> dict[str, float]:
    """Held-out pair accuracy, mean margin and loss over every pair of `groups`."""
    groups = [g for g in groups if g.pairs]
    if not groups:
        return {}
    prompts, replies, pairs, weights = flatten_groups(groups)
    scores = score_rows(model, prompts, replies, pad_id, device, rows_per_batch)
    index = torch.tensor(pairs, dtype=torch.long)
    margin = scores[index[:, 0]] - scores[index[:, 1]]
    loss, accuracy = ops.bradley_terry_loss(scores[index[:, 0]], scores[index[:, 1]], torch.tensor(weights))
    return {"accuracy": float(accuracy), "margin": float(margin.mean()), "loss": float(loss), "pairs": float(len(pairs))}


def train_reward_model(
    model: nn.Module,
    train_groups: list[ComparisonGroup],
    eval_groups: list[ComparisonGroup],
    config: RewardTrainingConfig,
    accelerator: Accelerator,
    pad_id: int,
    progress: Progress | None = None,
) -> RewardTrainingResult:
    """Train `model` (a ScalarHeadModel, its trainable parameters already chosen) in place."""
    progress = progress or SilentProgress()
    trunks = TrunkCache(model, config.trunk_layers) if config.trunk_layers else None
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    prepared.eval()  # no dropout anywhere: scores must be deterministic functions of the text
    rng = random.Random(config.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    phase = progress.phase("reward", batches_per_epoch(len(train_groups), config.groups_per_batch, world) * config.epochs)
    history: list[dict[str, float]] = []
    step = 0
    try:
        for chunk in epoch_batches(train_groups, config.epochs, config.groups_per_batch, rng, rank, world):
            def compute() -> tuple[torch.Tensor, dict]:
                loss, accuracy = groups_loss(prepared, chunk, pad_id, accelerator.device, trunks)
                return loss, {"accuracy": float(accuracy)}

            loss_value, stats = train_step(accelerator, prepared, optimizer, compute, config.max_grad_norm,
                                           "reward model loss", step)
            step += 1
            metrics = gather_mean(accelerator, {"loss": loss_value, **stats})
            history.append(metrics)
            phase.advance(1, metrics)
    finally:
        phase.close()
    unwrapped = accelerator.unwrap_model(prepared)
    metrics = {"steps": float(step)}
    if history:  # none when a resumed run had no steps left
        metrics["train_loss"] = history[-1]["loss"]
    with accelerator.autocast():
        held = pair_accuracy(unwrapped, eval_groups, pad_id, accelerator.device, config.eval_rows_per_batch)
    metrics.update({f"eval_{k}": v for k, v in held.items()})
    return RewardTrainingResult(metrics, history)
