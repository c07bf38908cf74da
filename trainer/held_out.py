"""Did the new version learn what the user said? Evidence from held-out feedback.

The training never saw the held-out conversations' rankings and thumbs. On their pairs:

* agreement: the share of pairs in which a model finds the user's preferred reply more
  likely, per token, than the other one. Measured for the parent and for the new
  version: the before and after a user reads on the version's card.
* learned: the share of pairs in which the new version moved towards the user's choice,
  i.e. log pi_new - log pi_parent is larger for the preferred reply (DPO's implicit
  reward ordering the pair as the user did). 50% is chance. Its 95% interval comes from a
  bootstrap over prompts (the pairs of one ranking are not independent), and activation
  needs its lower end above 50%.
* the same on length-matched pairs (replies within 25% of each other's length): if the
  version learned the taste and not only a length, it holds there too.

`length_preference` says whether the user's feedback itself is about length (preferred
replies systematically shorter or longer), and `decide_activation` refuses a version
that mostly changed its reply length when the feedback is not about length.

Pure arithmetic on log-probs and lengths, apart from `pair_logprobs`, which scores replies.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import nn

from trainer.batch import make_batch
from trainer.datasets import ComparisonGroup
from trainer.logprobs import ReplyScorer, reply_logprobs

LENGTH_MATCH = 0.25  # replies within this fraction of each other's length count as matched
LENGTH_DRIFT = 0.25  # a median reply-length change beyond this is a length change
LENGTH_TASTE_SHARE = 0.65  # feedback preferring the shorter (or longer) reply this often ...
LENGTH_TASTE_Z = 3.0  # ... and this significantly is about length


@dataclass(frozen=True)
class Share:
    """A share of pairs with its 95% bootstrap interval over prompt groups."""

    hits: float
    total: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else float("nan")

    def __str__(self) -> str:
        if not self.total:
            return "n/a (no held-out pairs)"
        return f"{100 * self.value:.0f}% of {self.total} (95% CI {100 * self.low:.0f}-{100 * self.high:.0f}%)"


@dataclass(frozen=True)
class PairScore:
    """One held-out pair: which group it is in, and each side's numbers."""

    group: int
    chosen_sum: float  # summed reply log-prob under the model
    rejected_sum: float
    chosen_tokens: int
    rejected_tokens: int


@torch.no_grad()
def pair_logprobs(model: nn.Module, groups: list[ComparisonGroup], pad_id: int, device: torch.device | str,
                  rows_per_batch: int = 16) -> list[PairScore]:
    """Every pair of `groups` scored under `model` (summed reply log-probs)."""
    scorer = ReplyScorer(model)
    out = []
    for number, group in enumerate(groups):
        if not group.pairs:
            continue
        sums = []
        for start in range(0, len(group.replies), rows_per_batch):
            replies = group.replies[start : start + rows_per_batch]
            batch = make_batch([group.prompt_ids] * len(replies), replies, pad_id, device)
            sums += reply_logprobs(scorer, batch).sums().float().cpu().tolist()
        for chosen, rejected in group.pairs:
            out.append(PairScore(number, sums[chosen], sums[rejected], len(group.replies[chosen]),
                                 len(group.replies[rejected])))
    return out


def cluster_share(hits: list[float], clusters: list[int], resamples: int = 2000, seed: int = 0) -> Share:
    """The mean of `hits` (1, 0 or 0.5 for a tie) with a percentile bootstrap interval that
    resamples whole clusters (prompt groups)."""
    if not hits:
        return Share(0.0, 0, float("nan"), float("nan"))
    by_cluster: dict[int, list[float]] = {}
    for hit, cluster in zip(hits, clusters):
        by_cluster.setdefault(cluster, []).append(hit)
    groups = list(by_cluster.values())
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        drawn = [groups[rng.randrange(len(groups))] for _ in groups]
        total = sum(len(g) for g in drawn)
        means.append(sum(sum(g) for g in drawn) / total)
    means.sort()
    low = means[int(0.025 * (resamples - 1))]
    high = means[int(math.ceil(0.975 * (resamples - 1)))]
    return Share(sum(hits), len(hits), low, high)


def _hit(margin: float) -> float:
    return 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0


def agreement(scores: list[PairScore]) -> Share:
    """Pairs whose preferred reply the model finds more likely per token."""
    hits = [_hit(s.chosen_sum / max(1, s.chosen_tokens) - s.rejected_sum / max(1, s.rejected_tokens)) for s in scores]
    return cluster_share(hits, [s.group for s in scores])


def learned(new: list[PairScore], parent: list[PairScore], length_matched: bool = False) -> Share:
    """Pairs in which the new version moved towards the preferred reply (see the docstring)."""
    hits, clusters = [], []
    for n, p in zip(new, parent):
        if length_matched and not is_length_matched(n.chosen_tokens, n.rejected_tokens):
            continue
        hits.append(_hit((n.chosen_sum - p.chosen_sum) - (n.rejected_sum - p.rejected_sum)))
        clusters.append(n.group)
    return cluster_share(hits, clusters)


def is_length_matched(a: int, b: int) -> bool:
    return abs(a - b) <= LENGTH_MATCH * max(a, b, 1)


@dataclass(frozen=True)
class LengthPreference:
    shorter_share: float  # share of pairs (of unequal length) whose preferred reply is shorter
    num_pairs: int
    z: float  # against 50%

    @property
    def is_about_length(self) -> bool:
        lopsided = max(self.shorter_share, 1 - self.shorter_share) >= LENGTH_TASTE_SHARE
        return self.num_pairs > 0 and lopsided and abs(self.z) >= LENGTH_TASTE_Z

    def describe(self) -> str:
        if not self.num_pairs:
            return "no pairs of unequal length"
        return (f"the preferred reply is the shorter one in {100 * self.shorter_share:.0f}% of {self.num_pairs} pairs "
                f"({'about length' if self.is_about_length else 'not about length'})")


def length_preference(groups: list[ComparisonGroup]) -> LengthPreference:
    """How often the user preferred the shorter reply, over every pair of unequal length."""
    shorter = total = 0
    for group in groups:
        for chosen, rejected in group.pairs:
            a, b = len(group.replies[chosen]), len(group.replies[rejected])
            if a == b:
                continue
            total += 1
            shorter += a < b
    if not total:
        return LengthPreference(0.5, 0, 0.0)
    share = shorter / total
    return LengthPreference(share, total, (share - 0.5) / math.sqrt(0.25 / total))


@dataclass(frozen=True)
class Verdict:
    activate: bool
    reason: str


def decide_activation(learned_share: Share, matched_share: Share, length_change: float | None,
                      preference: LengthPreference) -> Verdict:
    """Whether the held-out evidence supports activating the new version, and why.

    length_change: the new version's median reply length over its parent's, minus 1, on
    the evaluation prompts (None when not measured).
    """
    if not learned_share.total:
        return Verdict(False, "no held-out comparisons to check the new version against")
    if not learned_share.low > 0.5:
        return Verdict(False, f"on held-out feedback it moved towards your choice in {learned_share}: "
                              f"not clearly better than chance (50%)")
    drifted = length_change is not None and abs(length_change) > LENGTH_DRIFT
    if drifted and not preference.is_about_length and not (matched_share.total and matched_share.low > 0.5):
        direction = "longer" if length_change > 0 else "shorter"
        return Verdict(False, f"its replies got {100 * abs(length_change):.0f}% {direction}, your feedback is not about "
                              f"length ({preference.describe()}), and on pairs of similar length it is not clearly "
                              f"better ({matched_share})")
    return Verdict(True, f"on held-out feedback it moved towards your choice in {learned_share}")
