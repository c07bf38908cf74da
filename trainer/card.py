"""A trained version's card: what changed, in a few lines a user reads first.

Built from the metrics a run records on its version (trainer/run.py's evaluation), so the
command line prints it after training and the app shows the same lines for any version
later. Torch-free: plain numbers in, text out.
"""

from __future__ import annotations

from typing import Any


def _share(metrics: dict[str, Any], key: str) -> str | None:
    value = metrics.get(key)
    if value is None:
        return None
    low, high = metrics.get(f"{key}_low"), metrics.get(f"{key}_high")
    interval = f" (95% CI {100 * low:.0f}-{100 * high:.0f}%)" if low is not None and high is not None else ""
    return f"{100 * value:.0f}%{interval}"


def version_card(metrics: dict[str, Any]) -> list[str]:
    """The card's lines, most important first; lines whose numbers are missing are left out."""
    lines = []
    pairs = int(metrics.get("heldout_pairs") or 0)
    learned = _share(metrics, "heldout_learned")
    if learned is not None:
        lines.append(f"learned your taste: on {pairs} held-out comparisons it moved towards your choice in {learned}"
                     f" (50% is chance)")
    reward_accuracy = metrics.get("reward_eval_accuracy")
    if reward_accuracy is not None:
        lines.append(f"reward model: orders {100 * reward_accuracy:.0f}% of {int(metrics.get('reward_eval_pairs', 0))} "
                     f"held-out pairs as you did")
    prior = metrics.get("reward_prior_accuracy")
    if prior is not None:
        lines.append(f"previous reward model on the feedback given since it was trained: {100 * prior:.0f}% of "
                     f"{int(metrics.get('reward_prior_pairs', 0))} pairs")
    before, after = metrics.get("heldout_agreement_before"), metrics.get("heldout_agreement_after")
    if before is not None and after is not None:
        lines.append(f"finds your preferred reply more likely: {100 * before:.0f}% of held-out pairs before, "
                     f"{100 * after:.0f}% after")
    old, new = metrics.get("eval_parent_median_reply_tokens"), metrics.get("eval_new_median_reply_tokens")
    if old and new is not None:
        lines.append(f"reply length: median {old:.0f} -> {new:.0f} tokens ({100 * (new / old - 1):+.0f}%)")
    kl = metrics.get("eval_kl")
    parent_ppl, new_ppl = metrics.get("perplexity_parent"), metrics.get("perplexity_new")
    parts = []
    if kl is not None:
        parts.append(f"KL to parent {kl:.2f} nats per reply")
    if parent_ppl and new_ppl:
        parts.append(f"perplexity {parent_ppl:.2f} -> {new_ppl:.2f} ({100 * (new_ppl / parent_ppl - 1):+.1f}%)")
    if parts:
        lines.append("; ".join(parts))
    reason = metrics.get("activation_reason")
    if reason:
        lines.append(f"verdict: {reason}")
    return lines
