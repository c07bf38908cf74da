"""The version card: what a user reads first after training, from the version's metrics."""

from trainer.card import version_card


def test_card_puts_what_was_learned_first_and_skips_what_is_missing():
    metrics = {
        "heldout_learned": 0.72, "heldout_learned_low": 0.61, "heldout_learned_high": 0.82, "heldout_pairs": 60,
        "heldout_agreement_before": 0.48, "heldout_agreement_after": 0.66,
        "eval_parent_median_reply_tokens": 140.0, "eval_new_median_reply_tokens": 133.0,
        "eval_kl": 3.21, "perplexity_parent": 29.8, "perplexity_new": 30.1,
        "activation_reason": "on held-out feedback it moved towards your choice in 72%",
    }
    lines = version_card(metrics)
    assert lines[0] == ("learned your taste: on 60 held-out comparisons it moved towards your choice in 72% "
                        "(95% CI 61-82%) (50% is chance)")
    assert "48% of held-out pairs before, 66% after" in lines[1]
    assert "median 140 -> 133 tokens (-5%)" in lines[2]
    assert "KL to parent 3.21 nats per reply; perplexity 29.80 -> 30.10 (+1.0%)" in lines[3]
    assert lines[-1].startswith("verdict: ")
    assert not any("reward model" in line for line in lines)
    with_rm = version_card({**metrics, "reward_eval_accuracy": 0.65, "reward_eval_pairs": 54.0})
    assert with_rm[1] == "reward model: orders 65% of 54 held-out pairs as you did"
    assert version_card({}) == []
