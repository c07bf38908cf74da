"""Batched sampling stages, each checked against a direct computation."""

import math

import pytest
import torch

from engine.sampling_ops import apply_repetition_penalty, filter_logits, row_uniforms, sample_by_inverse_cdf, sample_next_tokens


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


def test_row_uniforms_are_uniform_and_depend_only_on_seed_and_step():
    seeds = torch.arange(50_000)
    a = row_uniforms(seeds, torch.zeros(50_000, dtype=torch.long))
    b = row_uniforms(seeds[7:8], torch.zeros(1, dtype=torch.long))
    assert a[7] == b[0]  # same (seed, step) gives the same value wherever the row sits
    assert 0 < a.min() and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.01
    assert torch.histc(a, bins=10, min=0, max=1).min() > 4_700  # 5,000 expected per tenth
    c = row_uniforms(seeds, torch.ones(50_000, dtype=torch.long))
    assert (a != c).float().mean() > 0.999  # the next step draws afresh


def test_sampling_matches_the_softmax_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20_000, -1).clone()
    tokens, _ = _sample(logits, seeds=torch.arange(20_000))
    freq = torch.bincount(tokens, minlength=4).float() / 20_000
    assert torch.allclose(freq, probs, atol=0.015), freq


def test_inverse_cdf_never_draws_a_filtered_token():
    # A uniform as close to 1 as row_uniforms gives, and the last tokens filtered out: the
    # draw is the last token still in, not one past the cumulative sum's rounding.
    logits = torch.tensor([[0.0, 1.0, 2.0, -math.inf, -math.inf]] * 2)
    uniforms = torch.tensor([1 - 2.0**-53, 2.0**-53], dtype=torch.float64)
    assert sample_by_inverse_cdf(logits, uniforms).tolist() == [2, 0]


def test_a_row_draws_the_same_token_alone_and_in_a_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 49_152, generator=generator) * 3
    seeds, steps = torch.arange(16) * 7_919, torch.arange(16)
    together, _ = _sample(logits, seeds=seeds, steps=steps, temperature=torch.full((16,), 0.7))
    for row in (0, 5, 15):
        alone, _ = _sample(logits[row:row + 1].clone(), seeds=seeds[row:row + 1], steps=steps[row:row + 1],
                           temperature=torch.full((1,), 0.7))
        assert alone[0] == together[row]


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


def _kept(out):
    return out > torch.finfo(out.dtype).min


@pytest.mark.parametrize("k", [3, 200, 1500])  # within the first candidates, the second, neither
def test_top_k_keeps_exactly_the_k_largest_at_any_size(k):
    logits = torch.randn(2, 5000, generator=torch.Generator().manual_seed(0))
    out = filter_logits(logits, torch.tensor([k, 0]), torch.ones(2), torch.zeros(2))
    assert _kept(out)[0].sum() == k
    assert torch.equal(_kept(out)[0], logits[0] >= logits[0].topk(k).values[-1])
    assert _kept(out)[1].all()  # the row without filters keeps everything


def test_a_row_without_filters_keeps_its_whole_vocabulary_beside_a_top_p_row():
    logits = torch.randn(2, 5000, generator=torch.Generator().manual_seed(1))
    out = filter_logits(logits, torch.zeros(2, dtype=torch.long), torch.tensor([0.5, 1.0]), torch.zeros(2))
    assert _kept(out)[0].sum() < 5000
    assert _kept(out)[1].all()


def test_top_p_needing_more_than_the_first_candidates_keeps_the_whole_nucleus():
    probs = torch.softmax(torch.randn(1, 5000, generator=torch.Generator().manual_seed(2)) * 0.5, -1)
    out = filter_logits(probs.log(), torch.zeros(1, dtype=torch.long), torch.tensor([0.3]), torch.zeros(1))
    ordered = probs[0].sort(descending=True).values
    want = int((ordered.cumsum(0) - ordered < 0.3).sum())  # the nucleus, by a full sort
    assert 64 < want < 1024
    assert _kept(out).sum() == want


def test_top_k_alone_never_sorts_the_whole_vocabulary(monkeypatch):
    def no_sort(*args, **kwargs):
        raise AssertionError("sorted the whole vocabulary")

    monkeypatch.setattr(torch, "sort", no_sort)
    logits = torch.randn(4, 49_152)
    out = filter_logits(logits, torch.full((4,), 50), torch.ones(4), torch.zeros(4))
    assert (_kept(out).sum(-1) == 50).all()


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
