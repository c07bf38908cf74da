"""Per-token log-probs of replies under a causal LM, computing logits only where needed.

`ReplyScorer` wraps a causal LM (engine/models) so that its forward returns logits only
at the positions that predict a reply token, packed into one (tokens, vocab) matrix:
prompts and padding get no vocabulary-wide row at all. Logits are the largest tensors of
training (a 49k vocabulary makes each row 200 KB), so this saves most of the memory and
of the LM head's work. It is a module (not a function) so that accelerate can wrap it for
data-parallel gradient averaging, which only works through `forward`.

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

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, trunk: Trunk | None = None) -> torch.Tensor:
        """Logits (N, V) at the N positions where the boolean `positions` (B, T) is True:
        the logits at position t predict token t + 1. With `trunk` (trainer/trunk.py), only
        the layers above it run."""
        hidden = hidden_states(self.model, input_ids, trunk)  # (B, T, d)
        return self.model.lm_head(hidden[positions])  # (N, d) -> (N, V), one contiguous product


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
    with logits divided by the sampling temperature, on the cropped grid (zero elsewhere)."""
    first = first_reply_column(batch)
    mask = batch.action_mask[:, first:]  # (B, L): grid column c predicts token first + c + 1
    positions = torch.zeros_like(batch.input_ids, dtype=torch.bool)  # (B, T)
    positions[:, first : first + mask.shape[1]] = mask.bool()
    logits = scorer(batch.input_ids, positions, trunk)  # (N, V)
    targets = batch.input_ids[:, first + 1 :][mask.bool()]  # (N,)
    flat = ops.gather_logprobs(logits, targets, temperature)  # (N,)
    logprobs = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
    logprobs[mask.bool()] = flat
    entropy = None
    if with_entropy:
        entropy = torch.zeros(mask.shape, dtype=torch.float32, device=flat.device)
        entropy[mask.bool()] = ops.entropy_from_logits(logits.detach(), temperature)
    return ReplyLogprobs(logprobs, mask, entropy, first)
