"""The verdict on one trained version against its base, for one taste: the rates and
whether the gain counts (bench/loop/measures.gain_counts), reply-length drift, the
fluency guard, KL, training time, and whatever held-out accuracy the trainer reported.

Works on the dictionaries `VersionEval.as_dict` writes, so `run` and `matrix` (and a
results.json read back later) share one source for every figure in their tables.
"""

from __future__ import annotations

from typing import Any

from bench.loop import measures

MAX_LENGTH_DRIFT = 0.25  # a taste not about length may move the median reply length by at most this much
MAX_PERPLEXITY_RATIO = 1.10
MAX_TRAIN_S = 600.0


def rate_of(evaluation: dict[str, Any]) -> measures.Rate:
    r = evaluation["preference_rate"]
    return measures.Rate(int(r["hits"]), int(r["total"]), float(r["ci95_low"]), float(r["ci95_high"]))


def accuracy_metrics(metrics: Any, prefix: str = "") -> dict[str, float]:
    """Every number under a key containing "accuracy" in a run's metrics, nested keys
    joined with dots (the trainer's metric names change; this reads whichever exist),
    and the activation gate's `heldout_learned`. A nested value the trainer also reports
    flat ("dpo.eval_accuracy" beside "dpo_eval_accuracy") is listed once."""
    found: dict[str, float] = {}
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            path = f"{prefix}{key}"
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if is_number and ("accuracy" in str(key).lower() or path == "heldout_learned"):
                found[path] = float(value)
            elif isinstance(value, dict):
                found.update(accuracy_metrics(value, f"{path}."))
    if not prefix:
        found = {k: v for k, v in found.items() if "." not in k or k.replace(".", "_") not in found}
    return found


def length_change(before: float, after: float) -> float:
    """Relative change of a median length; 0 when both are 0."""
    if before == 0:
        return 0.0 if after == 0 else float("inf")
    return after / before - 1


def verdict(base: dict[str, Any], after: dict[str, Any], is_about_length: bool, train_s: float | None = None,
            metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the benchmark's result: `base` and `after` are `VersionEval.as_dict()`s."""
    before_rate, after_rate = rate_of(base), rate_of(after)
    median_change = length_change(base["median_words"], after["median_words"])
    ppl_ratio = after["perplexity"] / base["perplexity"]
    kl = after.get("kl_to_parent")
    return {
        "rate_before": before_rate.value, "rate_after": after_rate.value,
        "ci95_after": [after_rate.low, after_rate.high],
        "gain_points": 100 * (after_rate.value - before_rate.value),
        "z": measures.two_proportion_z(before_rate, after_rate),
        "gain_counts": measures.gain_counts(before_rate, after_rate),
        "median_words_before": base["median_words"], "median_words_after": after["median_words"],
        "mean_words_before": base["mean_words"], "mean_words_after": after["mean_words"],
        "median_words_change": median_change,
        "length_drift": (not is_about_length) and abs(median_change) > MAX_LENGTH_DRIFT,
        "perplexity_ratio": ppl_ratio, "fluency_within_10pct": ppl_ratio <= MAX_PERPLEXITY_RATIO,
        "kl_per_reply": kl["kl_per_reply"] if kl else None,
        "train_s": train_s, "train_within_10_min": None if train_s is None else train_s <= MAX_TRAIN_S,
        "accuracy": accuracy_metrics(metrics or {}),
    }
