"""Supervised fine-tuning on demonstrations: next-token loss on the reply tokens only.

The prompt (system prompt, earlier turns, the user's message) is context, not a target:
its tokens are masked out; the reply's tokens, its end-of-turn token included, are the
targets, so the model also learns where to stop. The loss is the mean over reply tokens
of the whole batch (long replies count per token, not per reply).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import nn

from trainer import ops
from trainer.batch import make_batch
from trainer.datasets import SFTExample, batches, batches_per_epoch, epoch_batches
from trainer.logprobs import ReplyScorer, reply_logprobs
from trainer.progress import Progress, SilentProgress
from trainer.runtime import gather_mean, make_optimizer, train_step
from trainer.settings import TrainSettings


@dataclass
class SFTConfig:
    """SFT's knobs. A run builds it with `from_settings`; the run-level defaults
    (epochs, rows per batch, seed) are TrainSettings'."""

    lr: float
    epochs: int = TrainSettings.sft_epochs
    examples_per_batch: int = TrainSettings.minibatch_rows
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = TrainSettings.seed

    @classmethod
    def from_settings(cls, settings: TrainSettings) -> "SFTConfig":
        """From resolved settings (sft_lr filled in)."""
        return cls(lr=settings.sft_lr, epochs=settings.sft_epochs, examples_per_batch=settings.minibatch_rows,
                   seed=settings.seed)


@dataclass
class SFTResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def sft_loss(scorer: nn.Module, examples: list[SFTExample], pad_id: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Mean negative log-likelihood of the reply tokens, and how many there were."""
    batch = make_batch([e.prompt_ids for e in examples], [e.reply_ids for e in examples], pad_id, device)
    scored = reply_logprobs(scorer, batch)
    return -ops.masked_mean(scored.logprobs, scored.mask), int(scored.mask.sum())


@torch.no_grad()
def evaluate_sft(scorer: nn.Module, examples: list[SFTExample], pad_id: int, device: torch.device, per_batch: int = 8) -> float:
    """Token-weighted mean NLL of the replies of `examples` (nan when there are none)."""
    total, count = 0.0, 0
    for chunk in batches(examples, per_batch):
        loss, tokens = sft_loss(scorer, chunk, pad_id, device)
        total += float(loss) * tokens
        count += tokens
    return total / count if count else float("nan")


def train_sft(
    policy: nn.Module,
    train: list[SFTExample],
    held_out: list[SFTExample],
    config: SFTConfig,
    accelerator: Accelerator,
    pad_id: int,
    progress: Progress | None = None,
) -> SFTResult:
    """Fine-tune `policy` (trainable parameters already chosen) in place."""
    progress = progress or SilentProgress()
    scorer = ReplyScorer(policy)
    eval_before = evaluate_sft(scorer, held_out, pad_id, accelerator.device)
    optimizer = make_optimizer(scorer, config.lr, config.weight_decay)
    prepared, optimizer = accelerator.prepare(scorer, optimizer)
    prepared.eval()  # dropout off
    rng = random.Random(config.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    phase = progress.phase("sft", batches_per_epoch(len(train), config.examples_per_batch, world) * config.epochs)
    history = []
    step = 0
    try:
        for chunk in epoch_batches(train, config.epochs, config.examples_per_batch, rng, rank, world):
            value, _ = train_step(accelerator, prepared, optimizer, lambda: (sft_loss(prepared, chunk, pad_id, accelerator.device)[0], {}),
                                  config.max_grad_norm, "SFT loss", step)
            step += 1
            metrics = gather_mean(accelerator, {"loss": value})
            history.append(metrics)
            phase.advance(1, metrics)
    finally:
        phase.close()
    with accelerator.autocast():
        eval_after = evaluate_sft(scorer, held_out, pad_id, accelerator.device)
    metrics = {"steps": float(step),
               "eval_loss_before": eval_before, "eval_loss_after": eval_after}
    if history:  # none when a resumed run had no steps left
        metrics["train_loss"] = history[-1]["loss"]
    return SFTResult(metrics, history)
