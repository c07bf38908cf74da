"""Base rates of the registry's tastes: how often the base model already satisfies each,
on its held-out replies (the same replies the benchmark's "before" is measured on, from
the candidate cache) and, where the cache holds training candidates, on those too.

Also measured per taste, because a taste that is not about length must not teach
length: the median length of satisfying and of failing candidates of the same prompt,
as a ratio (over prompts with both kinds). `python -m bench.loop baseline` writes the
result, with the held-out replies it was measured on, to data/base_rates.json, which
each taste's `base_rate` reads.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

from bench.loop import measures
from bench.loop.candidates import CandidateSet
from bench.loop.tastes import REGISTRY, Taste
from bench.loop.tastes.base import BASE_RATES_FILE
from bench.loop.tastes.text import count_words

__all__ = ["BASE_RATES_FILE", "measure_base_rates", "rates_on", "write_base_rates"]


def length_ratio(taste: Taste, candidates: CandidateSet) -> float | None:
    """Median over prompts with both kinds of replies of (mean words of satisfying ones /
    mean words of failing ones); None without such prompts."""
    ratios = []
    for group in candidates.train:
        words = [(taste.satisfied(r.text), count_words(r.text)) for r in group.replies]
        good = [w for ok, w in words if ok]
        bad = [w for ok, w in words if not ok]
        if good and bad and statistics.fmean(bad) > 0:
            ratios.append(statistics.fmean(good) / statistics.fmean(bad))
    return statistics.median(ratios) if ratios else None


def rates_on(candidates: CandidateSet, tastes: list[Taste]) -> dict[str, dict[str, Any]]:
    held_out = [g.replies[0].text for g in candidates.held_out]
    train = [r.text for g in candidates.train for r in g.replies]
    out = {}
    for taste in tastes:
        rate = measures.rate([taste.satisfied(t) for t in held_out])
        out[taste.name] = {
            **rate.as_dict(), "kind": taste.kind, "is_about_length": taste.is_about_length,
            "candidate_rate": sum(map(taste.satisfied, train)) / len(train) if train else 0.0,
            "prompts_with_mixed_candidates": sum(
                len({taste.satisfied(r.text) for r in g.replies}) == 2 for g in candidates.train),
            "length_ratio_satisfying_to_failing": length_ratio(taste, candidates),
        }
    return out


def measure_base_rates(config: Any, echo: Callable[[str], None]) -> dict[str, Any]:
    from bench.loop.runner import load_candidates

    out_dir = Path(config.out_dir).expanduser().resolve()
    candidates, _, name, _ = load_candidates(config, out_dir, echo)
    held = [count_words(g.replies[0].text) for g in candidates.held_out]
    return {
        "model": name, "held_out_prompts": len(candidates.held_out), "train_prompts": len(candidates.train),
        "k": config.k, "seed": config.seed, "split_seed": config.split_seed,
        "held_out_median_words": statistics.median(held) if held else 0,
        "rates": rates_on(candidates, list(REGISTRY.values())),
        # The replies themselves, so a test can hold the stated rates to the tastes' current rules.
        "held_out_replies": [{"id": g.prompt_id, "text": g.replies[0].text} for g in candidates.held_out],
    }


def write_base_rates(report: dict[str, Any], path: Path = BASE_RATES_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
