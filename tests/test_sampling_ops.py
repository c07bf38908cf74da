"""Batched sampling stages, each checked against a direct computation."""

import math

import pytest
import torch

from engine.sampling_ops import (
    inverse_cdf,
    inverse_cdf_by_chunks,
    penalise_seen_,
    ranked_candidates,
    row_uniforms,
    sample_next_tokens,
    vocabulary_probabilities,
)


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
    weights = torch.tensor([[1.0, math.e, math.e**2, 0.0, 0.0]] * 2)
    uniforms = torch.tensor([1 - 2.0**-53, 2.0**-53], dtype=torch.float64)
    assert inverse_cdf(weights, uniforms).tolist() == [2, 0]


@pytest.mark.parametrize("width", [1000, 49_152])  # a partial last chunk; the default model's vocabulary
def test_chunked_inverse_cdf_draws_as_the_direct_one(width):
    generator = torch.Generator().manual_seed(4)
    weights = torch.softmax(torch.randn(64, width, generator=generator) * 3, -1)
    weights[:, -300:] = 0  # whole chunks and a part of one without weight at the end
    weights[weights < 1e-6] = 0
    uniforms = row_uniforms(torch.arange(64), torch.zeros(64, dtype=torch.long))
    uniforms[:2] = torch.tensor([2.0**-53, 1 - 2.0**-53], dtype=torch.float64)
    chunked = inverse_cdf_by_chunks(weights, uniforms)
    assert torch.equal(chunked, inverse_cdf(weights, uniforms))
    assert (weights.gather(-1, chunked[:, None]) > 0).all()


def reference_draws(logits, temperature, top_k, top_p, min_p, penalty, seen, uniforms):
    """Each row's token by the definition, one row at a time over its whole vocabulary:
    penalise, scale, keep what the filters keep, renormalise, and take the first token in
    vocabulary order whose cumulative probability exceeds the uniform."""
    tokens = []
    for b in range(logits.shape[0]):
        x = logits[b].double().clone()
        x[seen[b]] = torch.where(x[seen[b]] > 0, x[seen[b]] / penalty[b], x[seen[b]] * penalty[b])
        x = x / temperature[b]
        probs = torch.softmax(x, -1)
        ordered, order = probs.sort(descending=True)
        keep = torch.ones_like(ordered, dtype=torch.bool)
        if top_k[b] > 0:
            keep[top_k[b]:] = False
        keep &= ordered.cumsum(0) - ordered < top_p[b]
        keep &= ordered >= min_p[b] * ordered[0]
        kept = torch.zeros_like(probs)
        kept[order[keep]] = probs[order[keep]]
        cdf = (kept / kept.sum()).cumsum(0)
        tokens.append(int((cdf <= uniforms[b]).sum()))
    return torch.tensor(tokens)


def test_draws_follow_the_definition_for_every_mix_of_settings():
    generator = torch.Generator().manual_seed(3)
    B, V = 96, 49_152
    logits = torch.randn(B, V, generator=generator) * 4
    settings = [  # (temperature, top_k, top_p, min_p, penalty), each on 16 rows of one batch
        (0.7, 0, 0.9, 0.0, 1.1),  # the chat's defaults
        (1.0, 0, 1.0, 0.0, 1.0),  # PPO rollouts: the whole vocabulary
        (0.8, 40, 1.0, 0.0, 1.0),
        (1.3, 0, 0.95, 0.05, 1.3),
        (0.5, 0, 1.0, 0.1, 1.0),  # min-p alone: the whole-vocabulary path
        (1.0, 20, 0.5, 0.2, 0.8),
    ]
    rows = [s for s in settings for _ in range(B // len(settings))]
    temperature, top_k, top_p, min_p, penalty = (torch.tensor(column) for column in zip(*rows))
    seen = torch.rand(B, V, generator=generator) < 0.005
    seeds, steps = torch.arange(B) * 104_729, torch.full((B,), 11)
    tokens, _ = _sample(logits, temperature=temperature.float(), top_k=top_k, top_p=top_p.float(),
                        min_p=min_p.float(), repetition_penalty=penalty.float(), seen=seen, seeds=seeds, steps=steps)
    expected = reference_draws(logits, temperature, top_k, top_p, min_p, penalty, seen, row_uniforms(seeds, steps))
    assert torch.equal(tokens, expected)


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


def _kept(scaled, top_k, top_p, min_p):
    """The (B, V) mask of the tokens ranked_candidates keeps for each row."""
    ids, probs = ranked_candidates(scaled, top_k, top_p, min_p)
    mask = torch.zeros_like(scaled, dtype=torch.bool)
    for b in range(scaled.shape[0]):
        mask[b, ids[b][probs[b] > 0]] = True
    return mask


NO_K, NO_P, NO_MIN_P = torch.zeros(1, dtype=torch.long), torch.ones(1), torch.zeros(1)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    assert _kept(logits, torch.tensor([2]), NO_P, NO_MIN_P).tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    # 0.4 alone < 0.6, 0.4 + 0.3 >= 0.6: keep tokens 1 and 3.
    assert _kept(probs.log(), NO_K, torch.tensor([0.6]), NO_MIN_P).tolist() == [[False, True, False, True]]


def test_candidates_come_in_vocabulary_order_with_their_probabilities():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    ids, probs = ranked_candidates(logits, torch.tensor([3]), NO_P, NO_MIN_P)
    assert ids[0, :3].tolist() == [1, 2, 3] and (ids[0, 3:] == 5).all()
    assert torch.allclose(probs[0, :3], torch.softmax(logits, -1)[0, [1, 2, 3]])
    assert (probs[0, 3:] == 0).all()


@pytest.mark.parametrize("k", [3, 200, 1500])  # within the first candidates, the second, neither
def test_top_k_keeps_exactly_the_k_largest_at_any_size(k):
    logits = torch.randn(2, 5000, generator=torch.Generator().manual_seed(0))
    kept = _kept(logits, torch.tensor([k, 7]), torch.ones(2), torch.zeros(2))
    assert kept[0].sum() == k
    assert torch.equal(kept[0], logits[0] >= logits[0].topk(k).values[-1])


def test_a_row_without_filters_draws_from_its_whole_vocabulary_beside_a_top_k_row():
    logits = (torch.randn(1, 5000, generator=torch.Generator().manual_seed(1)) * 0.1).expand(400, -1).clone()
    top_k = torch.tensor([5, 0] * 200)
    seeds = torch.arange(400)
    tokens, _ = _sample(logits, top_k=top_k, seeds=seeds)
    top_five = set(logits[0].topk(5).indices.tolist())
    assert set(tokens[0::2].tolist()) <= top_five
    beyond_candidates = set(logits[0].topk(1024).indices.tolist())
    assert len(set(tokens[1::2].tolist())) > 150 and not set(tokens[1::2].tolist()) <= beyond_candidates
    alone, _ = _sample(logits[1:2].clone(), seeds=seeds[1:2])
    assert alone[0] == tokens[1]


def test_top_p_needing_more_than_the_first_candidates_keeps_the_whole_nucleus():
    probs = torch.softmax(torch.randn(1, 5000, generator=torch.Generator().manual_seed(2)) * 0.5, -1)
    kept = _kept(probs.log(), NO_K, torch.tensor([0.3]), NO_MIN_P)
    ordered = probs[0].sort(descending=True).values
    want = int((ordered.cumsum(0) - ordered < 0.3).sum())  # the nucleus, by a full sort
    assert 64 < want < 1024
    assert kept.sum() == want


def test_top_k_alone_never_sorts_the_whole_vocabulary(monkeypatch):
    widths = []
    for owner in (torch, torch.Tensor):
        original = owner.sort

        def recording_sort(tensor, *args, _original=original, **kwargs):
            widths.append(tensor.shape[-1])
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(owner, "sort", recording_sort)
    logits = torch.randn(4, 49_152)
    assert (_kept(logits, torch.full((4,), 50), torch.ones(4), torch.zeros(4)).sum(-1) == 50).all()
    assert widths and max(widths) < 49_152


def test_top_p_beyond_candidates_falls_back_to_full_sort():
    logits = torch.zeros(1, 3000)  # flat: the nucleus for p=0.9 needs 2700 tokens
    assert _kept(logits, NO_K, torch.tensor([0.9]), NO_MIN_P).all()  # ties with the last kept are kept


def test_min_p_drops_tokens_below_fraction_of_the_top():
    probs = torch.tensor([[0.6, 0.3, 0.07, 0.03]])
    assert (vocabulary_probabilities(probs.log(), torch.tensor([0.1])) > 0).tolist() == [[True, True, True, False]]
    # Beside top-k, on the candidates:
    assert _kept(probs.log(), torch.tensor([3]), NO_P, torch.tensor([0.2])).tolist() == [[True, True, False, False]]


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    scaled = torch.tensor([[2.0, -2.0, 2.0], [1.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False], [False, False, True]])
    penalise_seen_(scaled, seen, torch.tensor([2.0, 3.0]))
    assert scaled.tolist() == [[1.0, -4.0, 2.0], [1.0, 1.0, -3.0]]
