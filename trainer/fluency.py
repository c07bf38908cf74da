"""The fluency guard: perplexity of a model on a fixed text.

`trainer/data/fluency_text.txt` is prose written for this project, unlike anything a user
rates; a trained version whose perplexity on it rises far above its parent's has lost
fluency, whatever its rewards say. The benchmark measures the same text.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

FLUENCY_TEXT_FILE = Path(__file__).with_name("data") / "fluency_text.txt"


def fluency_text() -> str:
    return FLUENCY_TEXT_FILE.read_text(encoding="utf-8")


@torch.no_grad()
def perplexity(model: nn.Module, token_ids: list[int], window: int = 512) -> float:
    """exp(mean next-token NLL) over `token_ids`, in non-overlapping windows of `window`
    tokens (each window predicts its own tokens after the first)."""
    device = next(model.parameters()).device
    total_nll, count = 0.0, 0
    for start in range(0, len(token_ids) - 1, window):
        chunk = token_ids[start : start + window + 1]
        if len(chunk) < 2:
            break
        logits = model(torch.tensor([chunk[:-1]], device=device))[0].float()
        targets = torch.tensor(chunk[1:], device=device)
        total_nll += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        count += len(chunk) - 1
    if count == 0:
        raise ValueError("perplexity needs at least two tokens")
    return math.exp(total_nll / count)
