"""What the benchmark measures about a model version: a taste's rate with a Wilson
interval, whether a rise counts as a gain, and the exact KL to a parent version along
replies (perplexity on the fixed text is trainer/fluency.py's, the same guard the trainer
reports).

Works on `engine` models (LoadedModel) directly with plain forward passes; the KL here is
exact over the vocabulary, unlike the trainer's sampled estimate, so the two check each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    hits: int
    total: int
    low: float  # Wilson 95% interval
    high: float

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"hits": self.hits, "total": self.total, "rate": self.value, "ci95_low": self.low, "ci95_high": self.high}

    def __str__(self) -> str:
        return f"{100 * self.value:.1f}% ({self.hits}/{self.total}; 95% CI {100 * self.low:.1f}-{100 * self.high:.1f}%)"


def wilson_interval(hits: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (good at small n and near 0 or 1)."""
    if total <= 0:
        return 0.0, 1.0
    p = hits / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(flags: list[bool]) -> Rate:
    hits = sum(bool(f) for f in flags)
    low, high = wilson_interval(hits, len(flags))
    return Rate(hits, len(flags), low, high)


def two_proportion_z(before: Rate, after: Rate) -> float:
    """z statistic of after - before (pooled), for a quick significance read."""
    n1, n2 = before.total, after.total
    if not n1 or not n2:
        return 0.0
    pooled = (before.hits + after.hits) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return (after.value - before.value) / spread if spread else 0.0


MIN_Z = 2.0
MIN_RATIO = 2.0
MIN_POINTS = 0.20


def gain_counts(before: Rate, after: Rate) -> bool:
    """The benchmark's rule for a gain: significant (two-proportion z of after against
    before at least 2) and large (the rate at least doubles, or rises 20 points)."""
    eps = 1e-9
    large = after.value >= MIN_RATIO * before.value - eps or after.value - before.value >= MIN_POINTS - eps
    return two_proportion_z(before, after) >= MIN_Z - eps and large


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """Full-sequence logits (T, V) in fp32 from a plain forward pass (no KV cache)."""
    tokens = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)
    return model(tokens)[0].float()


@dataclass(frozen=True)
class KLSummary:
    per_reply: float  # mean over replies of the summed per-token KL, nats
    per_token: float  # mean over all reply tokens, nats
    num_replies: int
    num_tokens: int

    def as_dict(self) -> dict[str, float | int]:
        return {"kl_per_reply": self.per_reply, "kl_per_token": self.per_token,
                "num_replies": self.num_replies, "num_tokens": self.num_tokens}


@torch.no_grad()
def kl_along_replies(new: torch.nn.Module, parent: torch.nn.Module, prompts: list[list[int]], replies: list[list[int]]) -> KLSummary:
    """KL(new || parent) of the next-token distributions, summed over each reply's positions.

    Exact over the vocabulary at every position of the given replies (the new version's
    own held-out replies), so it is never negative and needs no sampling of its own.
    """
    totals = []
    num_tokens = 0
    for prompt, reply in zip(prompts, replies):
        if not reply:
            continue
        ids = list(prompt) + list(reply)
        start = len(prompt) - 1  # the position that predicts the reply's first token
        new_logp = torch.log_softmax(_logits(new, ids)[start:-1], dim=-1)  # (R, V)
        parent_logp = torch.log_softmax(_logits(parent, ids)[start:-1], dim=-1)
        per_position = (new_logp.exp() * (new_logp - parent_logp)).sum(-1)  # (R,)
        totals.append(float(per_position.sum()))
        num_tokens += len(reply)
    if not totals:
        return KLSummary(0.0, 0.0, 0, 0)
    return KLSummary(sum(totals) / len(totals), sum(totals) / num_tokens, len(totals), num_tokens)
