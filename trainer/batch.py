"""Right-padded tensor batches of `prompt + reply` rows, with the masks that go with them.

Every trainer turns token-id lists into a `SequenceBatch` here, so that the layout the
masks in trainer/ops.py assume (prompt, then reply, then padding) is made in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer import ops


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # (B, T) long, right-padded
    prompt_lengths: torch.Tensor  # (B,) long
    reply_lengths: torch.Tensor  # (B,) long

    @property
    def lengths(self) -> torch.Tensor:
        return self.prompt_lengths + self.reply_lengths

    @property
    def action_mask(self) -> torch.Tensor:
        """(B, T-1) float: grid columns whose predicted token is a reply token."""
        return ops.action_mask(self.prompt_lengths, self.reply_lengths, self.input_ids.shape[1])

    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "SequenceBatch":
        return SequenceBatch(self.input_ids.to(device), self.prompt_lengths.to(device), self.reply_lengths.to(device))


def make_batch(
    prompts: list[list[int]], replies: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> SequenceBatch:
    """Rows `prompt + reply`, right-padded with `pad_id` to the longest row."""
    if len(prompts) != len(replies):
        raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
    rows = [list(p) + list(r) for p, r in zip(prompts, replies)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return SequenceBatch(
        ids.to(device),
        torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device),
        torch.tensor([len(r) for r in replies], dtype=torch.long, device=device),
    )


def pad_id_for(config) -> int:
    """A token id to pad with. Padding is never attended to by real tokens (causal attention,
    right padding) nor counted in a loss, so any id in the vocabulary will do."""
    for candidate in (config.pad_token_id, *config.eos_token_ids, 0):
        if candidate is not None and 0 <= candidate < config.vocab_size:
            return int(candidate)
    return 0
