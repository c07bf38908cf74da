"""Batched sampling stages, each checked against a direct computation."""

import math

import torch

from engine.sampling_ops import apply_repetition_penalty, filter_logits, sample_next_tokens, uniform_noise


def _sample(logits, **overrides):
    B = logits.shape[0]
    args = dict(
        temperature=torch.ones(B),
        top_k=torch.zeros(B, dtype=torch.long),
        top_p=torch.ones(B),
        min_p=torch.zeros(B),
        repetition_penalty=torch.ones(B),
        seen=torch.zeros_like(logits, dtype=torch.bool),
        seeds=torch.arange(B),
        steps=torch.zeros(B, dtype=torch.long),
        want_logprobs=True,
    )
    args.update(overrides)
    return sample_next_tokens(logits, **args)


def test_noise_is_uniform_and_depends_only_on_seed_step_token():
    a = uniform_noise(torch.tensor([1, 2]), torch.tensor([0, 0]), 50_000)
    b = uniform_noise(torch.tensor([2]), torch.tensor([0]), 50_000)
    assert torch.equal(a[1], b[0])  # same (seed, step) gives the same row wherever it sits
    assert not torch.equal(a[0], a[1])
    assert 0 < a.min() and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.01
    c = uniform_noise(torch.tensor([1]), torch.tensor([1]), 50_000)
    assert not torch.equal(a[0], c[0])


def test_gumbel_sampling_matches_the_softmax_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20_000, -1).clone()
    tokens, _ = _sample(logits, seeds=torch.arange(20_000))
    freq = torch.bincount(tokens, minlength=4).float() / 20_000
    assert torch.allclose(freq, probs, atol=0.015), freq


def test_greedy_rows_take_the_argmax_and_logprob_is_log_softmax():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    tokens, logprobs = _sample(logits, temperature=torch.zeros(2))
    assert tokens.tolist() == [1, 0]
    expected = torch.log_softmax(logits, -1)[[0, 1], [1, 0]]
    assert torch.allclose(logprobs, expected)


def test_logprobs_use_the_sampling_temperature():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    tokens, logprobs = _sample(logits, temperature=torch.tensor([0.5]))
    expected = torch.log_softmax(logits / 0.5, -1)[0, tokens[0]]
    assert math.isclose(logprobs.item(), expected.item(), rel_tol=1e-6)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = filter_logits(logits, torch.tensor([2]), torch.ones(1), torch.zeros(1))
    kept = out > torch.finfo(out.dtype).min
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    out = filter_logits(probs.log(), torch.zeros(1, dtype=torch.long), torch.tensor([0.6]), torch.zeros(1))
    kept = out > torch.finfo(out.dtype).min
    # 0.4 alone < 0.6, 0.4 + 0.3 >= 0.6: keep tokens 1 and 3.
    assert kept.tolist() == [[False, True, False, True]]


def test_top_p_beyond_candidates_falls_back_to_full_sort():
    logits = torch.zeros(1, 3000)  # flat: the nucleus for p=0.9 needs 2700 tokens
    out = filter_logits(logits, torch.zeros(1, dtype=torch.long), torch.tensor([0.9]), torch.zeros(1))
    assert (out > torch.finfo(out.dtype).min).all()  # ties with the threshold are kept


def test_min_p_drops_tokens_below_fraction_of_the_top():
    probs = torch.tensor([[0.6, 0.3, 0.07, 0.03]])
    out = filter_logits(probs.log(), torch.zeros(1, dtype=torch.long), torch.ones(1), torch.tensor([0.1]))
    kept = out > torch.finfo(out.dtype).min
    assert kept.tolist() == [[True, True, True, False]]


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.tensor([[2.0, -2.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    assert out.tolist() == [[1.0, -4.0, 2.0]]
