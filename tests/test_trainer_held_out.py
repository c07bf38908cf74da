"""The activation evidence: agreement, what was learned, length, the verdict."""

from __future__ import annotations

import pytest

from trainer import held_out
from trainer.datasets import ComparisonGroup
from trainer.held_out import PairScore, Share


def test_agreement_counts_pairs_whose_preferred_reply_is_more_likely_per_token():
    scores = [PairScore(0, -10.0, -30.0, 10, 10), PairScore(0, -20.0, -10.0, 10, 5), PairScore(1, -8.0, -4.0, 4, 2)]
    # per token: -1 vs -3 (hit), -2 vs -2 (tie, half), -2 vs -2 (tie, half)
    share = held_out.agreement(scores)
    assert share.hits == 2.0 and share.total == 3


def test_learned_is_the_implicit_reward_ordering_against_the_parent():
    parent = [PairScore(0, -10.0, -10.0, 10, 10), PairScore(1, -5.0, -9.0, 5, 30)]
    new = [PairScore(0, -9.0, -11.0, 10, 10), PairScore(1, -6.0, -8.0, 5, 30)]
    # pair 0: +1 vs -1 -> towards the user's choice; pair 1: -1 vs +1 -> away
    assert held_out.learned(new, parent).hits == 1.0
    # Only pair 0 has replies of similar length.
    matched = held_out.learned(new, parent, length_matched=True)
    assert (matched.hits, matched.total) == (1.0, 1)


def test_cluster_bootstrap_interval_is_wider_for_correlated_pairs():
    hits = [1.0] * 30 + [0.0] * 10
    independent = held_out.cluster_share(hits, list(range(40)))
    clustered = held_out.cluster_share(hits, [i // 10 for i in range(40)])  # 4 prompts of 10 pairs
    assert independent.value == clustered.value == 0.75
    assert independent.low <= 0.75 <= independent.high
    assert (clustered.high - clustered.low) > (independent.high - independent.low)


def group(pairs_lengths: list[tuple[int, int]], key: int = 1) -> ComparisonGroup:
    replies, pairs = [], []
    for chosen, rejected in pairs_lengths:
        replies += [[7] * chosen, [8] * rejected]
        pairs.append((len(replies) - 2, len(replies) - 1))
    return ComparisonGroup(key, key, [1], replies, pairs)


def test_length_preference_detects_feedback_about_length():
    shorter = held_out.length_preference([group([(5, 20)] * 40)])
    assert shorter.shorter_share == 1.0 and shorter.is_about_length
    mixed = held_out.length_preference([group([(5, 20), (20, 5)] * 20)])
    assert mixed.shorter_share == 0.5 and not mixed.is_about_length
    few = held_out.length_preference([group([(5, 20)] * 3)])
    assert not few.is_about_length  # too few pairs to say
    assert held_out.length_preference([group([(5, 5)])]).num_pairs == 0


def share(low: float, value: float = 0.7, total: int = 50) -> Share:
    return Share(value * total, total, low, min(1.0, value + 0.1))


def test_verdict_needs_the_interval_above_chance():
    neutral = held_out.length_preference([group([(5, 20), (20, 5)] * 20)])
    assert held_out.decide_activation(share(0.56), share(0.55), 0.05, neutral).activate
    refused = held_out.decide_activation(share(0.45, 0.6), share(0.4), 0.05, neutral)
    assert not refused.activate and "not clearly better than chance" in refused.reason
    assert not held_out.decide_activation(Share(0, 0, 0.0, 0.0), share(0.5), None, neutral).activate


@pytest.mark.parametrize("matched_low,activates", [(0.4, False), (0.6, True)])
def test_verdict_refuses_a_length_change_the_feedback_did_not_ask_for(matched_low, activates):
    neutral = held_out.length_preference([group([(5, 20), (20, 5)] * 20)])
    verdict = held_out.decide_activation(share(0.6), share(matched_low), -0.4, neutral)
    assert verdict.activate == activates
    if not activates:
        assert "replies got 40% shorter" in verdict.reason and "not about length" in verdict.reason
    about_length = held_out.length_preference([group([(5, 20)] * 40)])
    assert held_out.decide_activation(share(0.6), share(0.4), -0.4, about_length).activate
