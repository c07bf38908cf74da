"""Per-token log-probs of replies under a causal LM, computing logits only where needed.

`ReplyScorer` wraps a causal LM (engine/models) so that its forward returns logits for
the shifted-grid columns that can predict a reply token: from the earliest reply start in
the batch to the end. Prompts are often longer than replies, and logits are vocab-wide,
so skipping the prompt columns saves most of the memory. It is a module (not a function)
so that accelerate can wrap it for data-parallel gradient averaging, which only works
through `forward`.

Conventions are those of trainer/ops.py; the cropped grid's column c is the full shifted
grid's column `first + c`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer import ops
from trainer.batch import SequenceBatch
from trainer.trunk import Trunk, hidden_states


class ReplyScorer(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, first_column: int, trunk: Trunk | None = None) -> torch.Tensor:
        """Logits (B, T - 1 - first_column, V): column c predicts token first_column + c + 1.

        With `trunk` (trainer/trunk.py), only the layers above it run."""
        hidden = hidden_states(self.model, input_ids, trunk)[:, first_column:-1]  # (B, L, d)
        return self.model.lm_head(hidden)


def first_reply_column(batch: SequenceBatch) -> int:
    """The shifted-grid column predicting the earliest reply token of the batch."""
    return max(0, int(batch.prompt_lengths.min()) - 1)


@dataclass
class ReplyLogprobs:
    logprobs: torch.Tensor  # (B, L) log-prob of each next token, L = T - 1 - first
    mask: torch.Tensor  # (B, L) 1 on reply tokens (eos included)
    entropy: torch.Tensor | None  # (B, L) entropy of the next-token distribution
    first_column: int

    def sums(self) -> torch.Tensor:
        """Summed reply log-prob per row, (B,)."""
        return ops.sequence_logprobs(self.logprobs, self.mask)


def reply_logprobs(
    scorer: nn.Module, batch: SequenceBatch, temperature: float = 1.0, with_entropy: bool = False, trunk: Trunk | None = None
) -> ReplyLogprobs:
    """Log-probs of the batch's reply tokens under `scorer` (a ReplyScorer, maybe wrapped),
    with logits divided by the sampling temperature."""
    first = first_reply_column(batch)
    logits = scorer(batch.input_ids, first, trunk)  # (B, L, V)
    targets = batch.input_ids[:, first + 1 :]  # (B, L)
    logprobs = ops.gather_logprobs(logits, targets, temperature)
    entropy = ops.entropy_from_logits(logits.detach(), temperature) if with_entropy else None
    mask = batch.action_mask[:, first:]
    return ReplyLogprobs(logprobs, mask, entropy, first)
